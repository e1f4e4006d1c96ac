/**
 * Resource names pilot gives Envoy and gRPC clients (Istio's conventions, docs/xds.md): clusters
 * `outbound|PORT|SUBSET|HOST` and `inbound|PORT||`, the fixed `PassthroughCluster`,
 * `BlackHoleCluster`, `virtualOutbound` and `virtualInbound`, outbound listeners `0.0.0.0_PORT`
 * with route configs named by the port, and host names as Istio resolves them.
 */

/** Sends a connection on to the address it was originally for (ALLOW_ANY). */
export const PASSTHROUGH_CLUSTER = 'PassthroughCluster';
/** Drops the connection (REGISTRY_ONLY, or a destination that must not be reached). */
export const BLACKHOLE_CLUSTER = 'BlackHoleCluster';
/** The listener on the outbound capture port (15001) that hands connections to `0.0.0.0_PORT`. */
export const VIRTUAL_OUTBOUND_LISTENER = 'virtualOutbound';
/** The listener on the inbound capture port (15006). */
export const VIRTUAL_INBOUND_LISTENER = 'virtualInbound';
/** The SDS secret names a sidecar asks its node agent for (as Istio's `sds-grpc`). */
export const SDS_CLUSTER = 'sds-grpc';
export const SDS_CERT_NAME = 'default';
export const SDS_ROOT_NAME = 'ROOTCA';

export type TrafficDirection = 'outbound' | 'inbound';

/** The parts of a cluster name `DIRECTION|PORT|SUBSET|HOST`. */
export interface ClusterKey {
  readonly direction: TrafficDirection;
  readonly port: number;
  /** Empty for the whole service. */
  readonly subset: string;
  /** Empty for inbound clusters. */
  readonly host: string;
}

/** `outbound|9080|v1|reviews.default.svc.cluster.local` (Istio's `BuildSubsetKey`). */
export function clusterName(
  direction: TrafficDirection,
  port: number,
  subset: string,
  host: string,
): string {
  return `${direction}|${port}|${subset}|${host}`;
}

/** `outbound|PORT|SUBSET|HOST` for a service port, and subset (`''` for none). */
export function outboundClusterName(host: string, port: number, subset = ''): string {
  return clusterName('outbound', port, subset, host);
}

/** `inbound|PORT||`: the local workload listening on PORT. */
export function inboundClusterName(port: number): string {
  return clusterName('inbound', port, '', '');
}

/** Parses a cluster name; undefined when it is not of the `DIRECTION|PORT|SUBSET|HOST` form. */
export function parseClusterName(name: string): ClusterKey | undefined {
  const parts = name.split('|');
  if (parts.length !== 4) return undefined;
  const [direction, portText, subset, host] = parts as [string, string, string, string];
  if (direction !== 'outbound' && direction !== 'inbound') return undefined;
  if (!/^\d{1,5}$/.test(portText)) return undefined;
  const port = Number(portText);
  if (port < 1 || port > 65535) return undefined;
  if (direction === 'outbound' && host === '') return undefined;
  return { direction, port, subset, host };
}

/** `0.0.0.0_9080`: the outbound listener for a port (Istio's name). */
export function outboundListenerName(port: number): string {
  return `0.0.0.0_${port}`;
}

/** Istio's short-name rule, shared with validation: `reviews` in `default` → `reviews.default.svc.SUFFIX`. */
export { resolveHost } from '../../config/names';

/**
 * Whether `pattern` (an exact host, `*`, or `*.suffix`) covers `host`. Both are fully resolved.
 */
export function hostMatches(pattern: string, host: string): boolean {
  if (pattern === '*') return true;
  if (pattern.startsWith('*')) return host.endsWith(pattern.slice(1));
  return pattern === host;
}

/**
 * How specific a matching host pattern is, for picking the best of several: an exact match beats
 * every wildcard, and a longer wildcard beats a shorter one.
 */
export function hostMatchRank(pattern: string): number {
  return pattern.startsWith('*') ? pattern.length - 1 : Number.MAX_SAFE_INTEGER;
}

/** Splits a proxyless listener name `HOST:PORT` (or bare `HOST`). */
export function parseHostPort(name: string): { host: string; port?: number } | undefined {
  const i = name.lastIndexOf(':');
  if (i < 0) return name === '' ? undefined : { host: name };
  const host = name.slice(0, i);
  const portText = name.slice(i + 1);
  if (host === '' || !/^\d{1,5}$/.test(portText)) return undefined;
  const port = Number(portText);
  if (port < 1 || port > 65535) return undefined;
  return { host, port };
}

/**
 * The names a client may use for `hostname`, Istio style: the FQDN, and for Kubernetes-style
 * names (`NAME.NS.svc.<suffix>`) the shortened forms. A client in the same namespace may also
 * write just `NAME`; every client may write `NAME.NS` and `NAME.NS.svc`.
 */
export function hostAliases(
  hostname: string,
  clientNamespace: string,
  domainSuffix: string,
): string[] {
  const out = [hostname];
  const svcSuffix = `.svc.${domainSuffix}`;
  if (!hostname.endsWith(svcSuffix)) return out;
  const head = hostname.slice(0, -svcSuffix.length); // NAME.NS
  const dot = head.lastIndexOf('.');
  if (dot <= 0) return out;
  const name = head.slice(0, dot);
  const ns = head.slice(dot + 1);
  if (ns === clientNamespace) out.push(name);
  out.push(head, `${head}.svc`);
  return out;
}
