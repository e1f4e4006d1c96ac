/**
 * Small conversions shared by the generators: Istio's JSON values (durations as `"5s"`, percents)
 * into the protobufjs plain-object shapes of Envoy messages, label matching, and type URLs.
 */
import { isIP } from 'node:net';
import { parseDuration } from '../../../common/duration';
import { TYPE_URL_PREFIX } from '../model';
import type { Protocol } from '../../registry/types';

/** A protobufjs plain object (see pilot/xds/model.ts). */
export type Obj = Record<string, unknown>;

/** Type URLs of the messages generated resources pack into `Any`s. */
export const TYPES = {
  httpConnectionManager: `${TYPE_URL_PREFIX}envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager`,
  tcpProxy: `${TYPE_URL_PREFIX}envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy`,
  router: `${TYPE_URL_PREFIX}envoy.extensions.filters.http.router.v3.Router`,
  fault: `${TYPE_URL_PREFIX}envoy.extensions.filters.http.fault.v3.HTTPFault`,
  cors: `${TYPE_URL_PREFIX}envoy.extensions.filters.http.cors.v3.Cors`,
  corsPolicy: `${TYPE_URL_PREFIX}envoy.extensions.filters.http.cors.v3.CorsPolicy`,
  upstreamTls: `${TYPE_URL_PREFIX}envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext`,
  downstreamTls: `${TYPE_URL_PREFIX}envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext`,
  rawBuffer: `${TYPE_URL_PREFIX}envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer`,
  httpProtocolOptions: `${TYPE_URL_PREFIX}envoy.extensions.upstreams.http.v3.HttpProtocolOptions`,
  tlsInspector: `${TYPE_URL_PREFIX}envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector`,
  originalDst: `${TYPE_URL_PREFIX}envoy.extensions.filters.listener.original_dst.v3.OriginalDst`,
} as const;

/** Envoy's well-known extension names. */
export const FILTERS = {
  httpConnectionManager: 'envoy.filters.network.http_connection_manager',
  tcpProxy: 'envoy.filters.network.tcp_proxy',
  router: 'envoy.filters.http.router',
  fault: 'envoy.filters.http.fault',
  cors: 'envoy.filters.http.cors',
  tls: 'envoy.transport_sockets.tls',
  rawBuffer: 'envoy.transport_sockets.raw_buffer',
  tlsInspector: 'envoy.filters.listener.tls_inspector',
  originalDst: 'envoy.filters.listener.original_dst',
  httpProtocolOptions: 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
} as const;

/** The largest value of a uint32 field: Istio's "no limit" for circuit breakers. */
export const UINT32_MAX = 4_294_967_295;

/** `{ seconds, nanos? }` for a number of milliseconds. */
export function durationFromMs(ms: number): Obj {
  const seconds = Math.floor(ms / 1000);
  const nanos = Math.round((ms - seconds * 1000) * 1e6);
  return nanos === 0 ? { seconds } : { seconds, nanos };
}

/**
 * An Istio duration string (`"5s"`, `"250ms"`, `"1h30m"`) as a protobuf Duration; undefined when
 * absent or malformed (validation rejects malformed ones before they are stored; a generator
 * never fails a push over one field).
 */
export function duration(text: string | undefined): Obj | undefined {
  const ms = durationMs(text);
  return ms === undefined ? undefined : durationFromMs(ms);
}

/** An Istio duration string in milliseconds; undefined when absent or malformed. */
export function durationMs(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  try {
    return parseDuration(text);
  } catch {
    // Validation rejects malformed durations before they are stored; see duration().
    return undefined;
  }
}

/**
 * Istio's percentage (a double 0–100, e.g. 0.1) as an Envoy FractionalPercent over a million,
 * the precision Istio uses; the integer `percent` of v1alpha3 over a hundred.
 */
export function fractionalPercent(percentage?: { value: number }, percent?: number): Obj {
  if (percentage !== undefined) {
    const clamped = Math.min(100, Math.max(0, percentage.value));
    return { numerator: Math.round(clamped * 10_000), denominator: 'MILLION' };
  }
  const p = Math.min(100, Math.max(0, Math.round(percent ?? 0)));
  return { numerator: p, denominator: 'HUNDRED' };
}

/** Whether every label of `selector` is on `labels` (an empty selector selects everything). */
export function labelsMatch(
  selector: Readonly<Record<string, string>> | undefined,
  labels: Readonly<Record<string, string>>,
): boolean {
  if (!selector) return true;
  for (const [k, v] of Object.entries(selector)) if (labels[k] !== v) return false;
  return true;
}

/** HTTP-family protocols get an HttpConnectionManager; the rest are proxied as opaque TCP. */
export function isHttpProtocol(p: Protocol): boolean {
  return p === 'HTTP' || p === 'HTTP2' || p === 'GRPC';
}

/** Protocols that need HTTP/2 to the upstream. */
export function isHttp2Protocol(p: Protocol): boolean {
  return p === 'HTTP2' || p === 'GRPC';
}

/** IPv4 or IPv6 literal (EDS and gRPC accept only those). */
export function isIpAddress(address: string): boolean {
  return isIP(address) !== 0;
}

/** gRPC status names (Istio writes `grpcStatus: "UNAVAILABLE"`) to codes. */
export const GRPC_STATUS_CODES: Readonly<Record<string, number>> = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
};

/** A gRPC status as Istio writes it (name or number); undefined when neither. */
export function grpcStatusCode(text: string): number | undefined {
  if (/^\d+$/.test(text)) {
    const n = Number(text);
    return n <= 16 ? n : undefined;
  }
  return GRPC_STATUS_CODES[text.toUpperCase()];
}

/** A `google.protobuf.Struct` of string values, in protobufjs' shape. */
export function stringStruct(values: Readonly<Record<string, string>>): Obj {
  const fields: Obj = {};
  for (const [k, v] of Object.entries(values)) fields[k] = { stringValue: v };
  return { fields };
}

/** Compares by `creationTimestamp`, then namespace/name: Istio's "oldest wins" for conflicts. */
export function byAge(
  a: { metadata: { creationTimestamp?: string; namespace: string; name: string } },
  b: { metadata: { creationTimestamp?: string; namespace: string; name: string } },
): number {
  const ta = a.metadata.creationTimestamp ?? '';
  const tb = b.metadata.creationTimestamp ?? '';
  if (ta !== tb) return ta < tb ? -1 : 1;
  const ka = `${a.metadata.namespace}/${a.metadata.name}`;
  const kb = `${b.metadata.namespace}/${b.metadata.name}`;
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

/** Sorted, de-duplicated copy. */
export function uniqueSorted<T extends string | number>(values: Iterable<T>): T[] {
  return [...new Set(values)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** Memoizes `make()` in the push cache under `key`. */
export function memo<T>(cache: Map<string, unknown>, key: string, make: () => T): T {
  if (cache.has(key)) return cache.get(key) as T;
  const value = make();
  cache.set(key, value);
  return value;
}
