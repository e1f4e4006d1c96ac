/**
 * The four xDS resource types the proxy consumes: their type URLs, how a resource is named, how it
 * is decoded from the wire and compiled into the proxy's model (proxy/model.ts).
 */
import type * as protobuf from 'protobufjs';
import { ENVOY_JSON_OPTIONS, proxyEnvoyType } from '../../api/envoy';
import {
  compileCluster,
  compileListener,
  compileLoadAssignment,
  compileRouteTable,
} from '../config/compile';
import type { Cluster, Listener, LoadAssignment, RouteTable, XdsKind } from '../model';

/** Every kind, in a fixed order (status, state file, metrics). */
export const XDS_KINDS: readonly XdsKind[] = ['clusters', 'endpoints', 'listeners', 'routes'];

/** The v3 type URL of each kind. */
export const TYPE_URLS: Readonly<Record<XdsKind, string>> = {
  clusters: 'type.googleapis.com/envoy.config.cluster.v3.Cluster',
  endpoints: 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment',
  listeners: 'type.googleapis.com/envoy.config.listener.v3.Listener',
  routes: 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration',
};

const KIND_BY_TYPE_URL: ReadonlyMap<string, XdsKind> = new Map(
  XDS_KINDS.map(k => [TYPE_URLS[k], k] as const),
);

/** The kind a type URL names, or undefined for a type the proxy does not consume. */
export function kindOfTypeUrl(typeUrl: string): XdsKind | undefined {
  return KIND_BY_TYPE_URL.get(typeUrl);
}

/**
 * Kinds whose State-of-the-World response is the whole set (a name missing from a response is
 * removed), subscribed with a wildcard. Endpoints and routes are named subscriptions instead.
 * xDS: "Resource types: Listener and Cluster ... the server must return all resources" (envoy
 * docs, xds_protocol "Resource updates" / "When to send an update").
 */
export function isWildcardKind(kind: XdsKind): kind is 'clusters' | 'listeners' {
  return kind === 'clusters' || kind === 'listeners';
}

/** The compiled type of each kind. */
export interface CompiledResources {
  clusters: Cluster;
  endpoints: LoadAssignment;
  listeners: Listener;
  routes: RouteTable;
}

/** Compiles one decoded resource of `kind`. @throws CompileError (or any Error) when it is unusable */
export function compileResource<K extends XdsKind>(
  kind: K,
  json: Record<string, unknown>,
): CompiledResources[K] {
  switch (kind) {
    case 'clusters':
      return compileCluster(json) as CompiledResources[K];
    case 'endpoints':
      return compileLoadAssignment(json) as CompiledResources[K];
    case 'listeners':
      return compileListener(json) as CompiledResources[K];
    case 'routes':
      return compileRouteTable(json) as CompiledResources[K];
  }
  throw new Error(`unknown xds kind ${String(kind)}`);
}

/** A resource's name as the protocol uses it: `cluster_name` for endpoints, `name` otherwise. */
export function nameOf(kind: XdsKind, resource: Record<string, unknown>): string {
  const v = kind === 'endpoints' ? resource.clusterName : resource.name;
  return typeof v === 'string' ? v : '';
}

/** One `google.protobuf.Any` as protobufjs decodes it (its own Any keeps `type_url`). */
export interface WireAny {
  readonly type_url: string;
  readonly value: Uint8Array;
}

const RESOURCE_WRAPPER_TYPE = 'type.googleapis.com/envoy.service.discovery.v3.Resource';

const types = new Map<XdsKind, protobuf.Type>();

function typeOf(kind: XdsKind): protobuf.Type {
  let t = types.get(kind);
  if (!t) {
    const url = TYPE_URLS[kind];
    t = proxyEnvoyType(url.slice(url.lastIndexOf('/') + 1));
    types.set(kind, t);
  }
  return t;
}

/** A resource decoded far enough to know its name; `toJson` finishes the (costlier) conversion. */
export interface DecodedResource {
  readonly name: string;
  /** The resource's own encoding: equal bytes mean an unchanged resource. */
  readonly bytes: Uint8Array;
  toJson(): Record<string, unknown>;
}

/**
 * Decodes one resource of a response of `kind`. Resources wrapped in
 * `envoy.service.discovery.v3.Resource` (allowed in SotW responses) are unwrapped.
 * @throws Error naming the problem (wrong type, undecodable bytes)
 */
export function decodeResource(kind: XdsKind, any: WireAny): DecodedResource {
  let { type_url: typeUrl, value } = any;
  if (typeUrl === RESOURCE_WRAPPER_TYPE) {
    const wrapper = proxyEnvoyType('envoy.service.discovery.v3.Resource').decode(
      value,
    ) as unknown as {
      resource?: WireAny | null;
    };
    if (!wrapper.resource) throw new Error('resource wrapper holds no resource');
    ({ type_url: typeUrl, value } = wrapper.resource);
  }
  if (typeUrl !== TYPE_URLS[kind])
    throw new Error(`resource type ${typeUrl || '(none)'} is not ${TYPE_URLS[kind]}`);
  const type = typeOf(kind);
  const message = type.decode(value);
  // protobufjs messages expose fields as camelCase properties.
  const raw = (
    kind === 'endpoints'
      ? (message as unknown as { clusterName?: unknown }).clusterName
      : (message as unknown as { name?: unknown }).name
  ) as unknown;
  const name = typeof raw === 'string' ? raw : '';
  return {
    name,
    bytes: value,
    toJson: () => type.toObject(message, ENVOY_JSON_OPTIONS),
  };
}
