/**
 * The contract between the xDS server (`ads.ts`: streams, versions, nonces, ordering) and the
 * generators (`generate/`: the mesh model translated into Envoy v3 resources).
 *
 * Generated resources are plain objects in the shape protobufjs' `Type.fromObject` takes for the
 * Envoy v3 message (camelCase field names; `google.protobuf.Any` fields as
 * `{ '@type': 'type.googleapis.com/<full.name>', ...fields }`; Durations as
 * `{ seconds: number, nanos?: number }`; wrappers like UInt32Value as `{ value: n }`; enums as their
 * names). `encode.ts` turns them into `Any`s once per distinct object.
 */
import type { ConfigObject, Kind, SpecOf } from '../config/types';
import type { ProxyIdentity, ServiceDiscovery } from '../registry/types';

export const TYPE_URL_PREFIX = 'type.googleapis.com/';
export const LISTENER_TYPE = 'type.googleapis.com/envoy.config.listener.v3.Listener';
export const ROUTE_TYPE = 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration';
export const CLUSTER_TYPE = 'type.googleapis.com/envoy.config.cluster.v3.Cluster';
export const ENDPOINT_TYPE = 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment';

/** Push order: a route never names a cluster the proxy does not have yet (Istio 0.2's 404s). */
export const PUSH_ORDER = [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE] as const;
export type XdsType = (typeof PUSH_ORDER)[number];

/** The short names used in metrics, logs and `sail proxy-config --type`. */
export const TYPE_SHORT_NAMES: Record<XdsType, 'clusters' | 'endpoints' | 'listeners' | 'routes'> =
  {
    [CLUSTER_TYPE]: 'clusters',
    [ENDPOINT_TYPE]: 'endpoints',
    [LISTENER_TYPE]: 'listeners',
    [ROUTE_TYPE]: 'routes',
  };

/** Mesh-wide settings (Istio's MeshConfig, the parts pilot uses). */
export interface MeshConfig {
  /** SPIFFE trust domain, default `cluster.local`. */
  readonly trustDomain: string;
  /** Suffix short hostnames expand with: `name.namespace.svc.<domainSuffix>`, default `cluster.local`. */
  readonly domainSuffix: string;
  /** What a sidecar does with destinations not in the registry, unless a Sidecar resource says otherwise. */
  readonly outboundTrafficPolicy: 'ALLOW_ANY' | 'REGISTRY_ONLY';
  /** Outbound capture port (15001) and inbound capture port (15006). */
  readonly proxyOutboundPort: number;
  readonly proxyInboundPort: number;
  /** Default connect timeout for clusters, ms (Istio 10 s). */
  readonly connectTimeoutMs: number;
  /**
   * Istio's root config namespace: Sidecar, DestinationRule and PeerAuthentication objects here
   * apply mesh-wide (as istio-system's do in Istio). Default `sail-system`.
   */
  readonly rootNamespace?: string;
}

export const DEFAULT_MESH_CONFIG: MeshConfig = {
  trustDomain: 'cluster.local',
  domainSuffix: 'cluster.local',
  outboundTrafficPolicy: 'ALLOW_ANY',
  proxyOutboundPort: 15001,
  proxyInboundPort: 15006,
  connectTimeoutMs: 10_000,
};

/** A connected xDS client, as the generators see it. */
export interface ProxyNode {
  /** The node id the client sent (`sidecar~10.0.0.5~vm-1.default~default.svc.cluster.local`, or anything for proxyless). */
  readonly id: string;
  /**
   * `sidecar` and `router` (gateway) from Istio's node id TYPE; `proxyless` for gRPC's xDS client
   * (a node id not in Istio's form, or metadata `GRPC_XDS`/`PROXYLESS`).
   */
  readonly type: 'sidecar' | 'router' | 'proxyless';
  /** Who it is: from the client certificate when the stream is authenticated, else from the node id. */
  readonly identity: ProxyIdentity;
  /** The authenticated SPIFFE ID, when the stream is mTLS. */
  readonly spiffeId?: string;
  /** Labels of the workload on this host (from its registration, or metadata `LABELS`). */
  readonly labels: Readonly<Record<string, string>>;
  /** The node's metadata struct, as JSON. */
  readonly metadata: Readonly<Record<string, unknown>>;
}

/** A read-only view of the stored configuration, indexed for generators. */
export interface ConfigView {
  list<K extends Kind>(kind: K, namespace?: string): readonly ConfigObject<K>[];
  get<K extends Kind>(kind: K, namespace: string, name: string): ConfigObject<K> | undefined;
}

/** Everything one push generates from. Built once per push, shared by every proxy. */
export interface PushContext {
  /** Monotonic version of this push (also the version_info pilot sends). */
  readonly version: string;
  readonly mesh: MeshConfig;
  readonly config: ConfigView;
  readonly registry: ServiceDiscovery;
  /**
   * Per-push memo for generators: results that depend only on (push, key) and not the proxy, e.g.
   * a namespace's route tables. Cleared with the push.
   */
  readonly cache: Map<string, unknown>;
  /**
   * Registered nodes whose proxyless gRPC servers (XdsServer) serve these ports, by node name:
   * such a port cannot take mTLS and plaintext at once, so clients' auto mTLS follows its own
   * (see endpoints.ts autoMtlsEligible). From the nodes' own listener subscriptions.
   */
  readonly proxylessServers?: ReadonlyMap<string, ReadonlySet<number>>;
}

/** One generated resource. */
export interface GeneratedResource {
  readonly name: string;
  /** The Envoy v3 message as a protobufjs plain object (see the file comment). */
  readonly resource: Readonly<Record<string, unknown>>;
}

/** What changed since the last push, so generators and the server can skip work. */
export interface PushRequest {
  /** True: everything may have changed. */
  readonly full: boolean;
  /** Config kinds that changed. */
  readonly kinds: ReadonlySet<Kind>;
  /** Hostnames whose endpoints changed (EDS-only push when `full` is false and kinds is empty). */
  readonly endpointHosts: ReadonlySet<string>;
}

export interface Generator {
  /**
   * The resources of `type` for `proxy`. `names`: what the client subscribed to; empty means
   * wildcard (all of this type that apply to the proxy). For EDS and RDS the client always names
   * them. A name the generator cannot serve is simply absent from the result.
   */
  generate(
    type: XdsType,
    proxy: ProxyNode,
    push: PushContext,
    names: readonly string[],
  ): GeneratedResource[];
  /**
   * Proxies with the same key get the same resources of `type` for the same names in one push,
   * so the server generates, encodes and serializes them once. Undefined: per proxy (e.g. a
   * sidecar's clusters and listeners, which include its own inbound ports).
   */
  cacheKey?(type: XdsType, proxy: ProxyNode, push: PushContext): string | undefined;
}

/** Spec helper for generators. */
export type Spec<K extends Kind> = SpecOf<K>;
