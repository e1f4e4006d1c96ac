/**
 * The service model pilot serves from (Istio's `model.Service` / `ServiceInstance` /
 * `ServiceDiscovery`, pilot/pkg/model/service.go@1.0.0), independent of where services come from.
 * The built-in registry derives it from ServiceEntry, WorkloadEntry, WorkloadGroup and hosts that
 * register themselves; a Consul or Eureka registry would implement {@link ServiceDiscovery} too.
 */
import type { ConfigKey, Location, Resolution } from '../config/types';

/** Protocols, from a port's `protocol` or its name prefix (`http-`, `grpc-`, ...). */
export type Protocol =
  'HTTP' | 'HTTP2' | 'GRPC' | 'HTTPS' | 'TLS' | 'TCP' | 'MONGO' | 'REDIS' | 'UDP';

export interface ServicePortModel {
  readonly name: string;
  readonly port: number;
  readonly protocol: Protocol;
  /** The port on the endpoints when it differs and the endpoint names none. */
  readonly targetPort?: number;
}

export interface Service {
  /** Fully qualified as written in the ServiceEntry hosts, e.g. `reviews.default.svc.cluster.local`. */
  readonly hostname: string;
  readonly namespace: string;
  /** VIPs from ServiceEntry addresses (may be empty). */
  readonly addresses: readonly string[];
  readonly ports: readonly ServicePortModel[];
  readonly location: Location;
  readonly resolution: Resolution;
  /** SPIFFE IDs the endpoints may present (from subjectAltNames and the instances' service accounts). */
  readonly serviceAccounts: readonly string[];
  /** Namespaces this service is visible to; `*` = all (the default), `.` resolved to its own. */
  readonly exportTo: readonly string[];
  /** Where it came from, for `sail get` and debugging. */
  readonly source: ConfigKey;
}

export interface Endpoint {
  readonly address: string;
  readonly port: number;
}

export interface ServiceInstance {
  readonly hostname: string;
  /** The service port (ServicePortModel.port) this instance serves. */
  readonly servicePort: number;
  readonly endpoint: Endpoint;
  readonly labels: Readonly<Record<string, string>>;
  /** SPIFFE ID of the workload, when known. */
  readonly serviceAccount?: string;
  /** The workload this came from: `namespace/name` of a WorkloadEntry, registered host or static endpoint. */
  readonly workload: string;
  /** Registered node name (hosts that registered themselves). */
  readonly node?: string;
  readonly healthy: boolean;
  readonly locality?: string;
  /** Load-balancing weight, default 1. */
  readonly weight: number;
  /** `istio` when the endpoint runs a Sail/Istio proxy (mTLS capable), else `disabled`. */
  readonly tlsMode: 'istio' | 'disabled';
}

/** A proxy as the registry needs to know it, to find the workloads on its host. */
export interface ProxyIdentity {
  /** Authenticated node name (the certificate's CN), or the node id's ID part for plaintext clients. */
  readonly node: string;
  readonly namespace: string;
  /** IP addresses of the host (from the node id / registration). */
  readonly ips: readonly string[];
}

export interface ServiceDiscovery {
  services(): readonly Service[];
  getService(hostname: string): Service | undefined;
  /** Instances of `hostname` on service port `port`, healthy or not (callers filter). */
  instances(hostname: string, port: number): readonly ServiceInstance[];
  /** Instances served by the workload(s) on this proxy's host: its inbound side. */
  proxyInstances(proxy: ProxyIdentity): readonly ServiceInstance[];
  /** Called after any change to services or instances (coalesced by the caller's debounce). */
  onChange(listener: (change: RegistryChange) => void): () => void;
}

export interface RegistryChange {
  /** Hostnames whose services changed (added, removed, ports...). Empty for endpoint-only changes. */
  readonly services: readonly string[];
  /** Hostnames whose instances changed (endpoints, health). */
  readonly endpoints: readonly string[];
}
