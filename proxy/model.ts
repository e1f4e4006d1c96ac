/**
 * The proxy's compiled configuration: what the data path reads. Pilot sends Envoy v3 resources
 * (Listener, RouteConfiguration, Cluster, ClusterLoadAssignment); `config/compile.ts` turns each
 * decoded resource (protobufjs JSON, as in a config dump) into the types below, once per push, so
 * the data path never parses strings, regexes or durations per request. A resource that cannot be
 * compiled is NACKed and the previous version stays in force.
 *
 * Conventions: durations are milliseconds (`…Ms`), percentages are fractions in [0, 1], header
 * names are lowercase, and every list is present (possibly empty) so the data path needs no
 * `?? []`.
 */

/** The four xDS types the proxy consumes, by the short names config dumps and metrics use. */
export type XdsKind = 'clusters' | 'endpoints' | 'listeners' | 'routes';

/** An immutable, complete configuration. A push produces a new one; the old one is not mutated. */
export interface ProxyConfig {
  /** `version_info` of the last ACKed response per type ('' before the first). */
  readonly versions: Readonly<Record<XdsKind, string>>;
  /** By listener name (`virtualOutbound`, `0.0.0.0_9080`, `virtualInbound`, …). */
  readonly listeners: ReadonlyMap<string, Listener>;
  /** By route configuration name (`9080`, …), from RDS. Inline route tables live on their handler. */
  readonly routes: ReadonlyMap<string, RouteTable>;
  /** By cluster name (`outbound|9080|v1|reviews.default.svc.cluster.local`, …). */
  readonly clusters: ReadonlyMap<string, Cluster>;
  /** EDS load assignments by `cluster_name` (the cluster's EDS service name). */
  readonly endpoints: ReadonlyMap<string, LoadAssignment>;
}

// ---------------------------------------------------------------------------------------------
// Matching primitives

/**
 * A compiled Envoy StringMatcher. `regex` is set (and anchored, RE2 semantics) for kind `regex`.
 * With `ignoreCase`, `value` is already lowercase: compare it with the lowercased input.
 */
export interface StringMatcher {
  readonly kind: 'exact' | 'prefix' | 'suffix' | 'contains' | 'regex';
  readonly value: string;
  readonly ignoreCase: boolean;
  readonly regex?: RegExp;
}

/** An IP range (`filter_chain_match.prefix_ranges`, …). */
export interface CidrRange {
  readonly address: string;
  readonly prefixLen: number;
}

/** `host:port`. */
export interface SocketAddress {
  readonly address: string;
  readonly port: number;
}

// ---------------------------------------------------------------------------------------------
// TLS

/**
 * Where certificate material comes from. `sds` names an SDS secret: the proxy serves `default`
 * (the workload key and chain) and `ROOTCA` (the mesh roots) from the node agent's certificate
 * directory (DESIGN §3.3), so no SDS server is involved. `files` are paths on this host, as a
 * DestinationRule's SIMPLE/MUTUAL settings name them.
 */
export type SecretRef =
  | { readonly kind: 'sds'; readonly name: string }
  | { readonly kind: 'files'; readonly certChainPath: string; readonly privateKeyPath: string };

/** Where trusted roots come from. */
export type TrustRef =
  | { readonly kind: 'sds'; readonly name: string }
  | { readonly kind: 'files'; readonly path: string }
  /** The system's default CAs (SIMPLE TLS without `caCertificates`). */
  | { readonly kind: 'system' };

/** A peer certificate check: one of `sanMatchers` must match a SAN of type `sanType`. */
export interface SanMatcher {
  readonly sanType: 'URI' | 'DNS' | 'EMAIL' | 'IP_ADDRESS';
  readonly matcher: StringMatcher;
}

export interface CertificateValidation {
  /** Undefined: the peer certificate is not verified at all (insecureSkipVerify). */
  readonly trust?: TrustRef;
  /** Empty: any certificate that chains to `trust` is accepted. */
  readonly sanMatchers: readonly SanMatcher[];
}

/** Server side TLS of a filter chain (DownstreamTlsContext). */
export interface DownstreamTls {
  readonly certificate: SecretRef;
  readonly validation?: CertificateValidation;
  readonly requireClientCertificate: boolean;
  /** ALPN the server prefers; the handshake never fails for want of a common protocol. */
  readonly alpn: readonly string[];
}

/** Client side TLS toward an upstream (UpstreamTlsContext). */
export interface UpstreamTls {
  /** Undefined: no client certificate (SIMPLE). */
  readonly certificate?: SecretRef;
  readonly validation?: CertificateValidation;
  readonly sni?: string;
  readonly alpn: readonly string[];
  /** True for the mesh's own mTLS (SDS `default` + `ROOTCA`): metrics say `mutual_tls`. */
  readonly mesh: boolean;
}

// ---------------------------------------------------------------------------------------------
// Listeners

export interface Listener {
  readonly name: string;
  readonly address: SocketAddress;
  /**
   * Whether the proxy binds `address` itself. False for `0.0.0.0_PORT` outbound listeners, which
   * are reached through `virtualOutbound`'s hand-off by original destination port (Envoy
   * `bind_to_port: false`) or through explicit outbound listeners (proxy config `traffic.mode`).
   */
  readonly bindToPort: boolean;
  /** Hand each connection to the listener for its original destination port (virtualOutbound). */
  readonly useOriginalDst: boolean;
  readonly direction: 'inbound' | 'outbound' | 'unspecified';
  readonly filterChains: readonly FilterChain[];
  readonly defaultFilterChain?: FilterChain;
  /**
   * A chain matches on transport protocol, server name or ALPN: the first bytes are read (TLS
   * ClientHello sniffing, Envoy's tls_inspector) before a chain is picked.
   */
  readonly inspectTls: boolean;
}

/** Envoy's `FilterChainMatch`, the parts pilot uses. Empty lists and undefined fields match all. */
export interface FilterChainMatch {
  readonly destinationPort?: number;
  readonly prefixRanges: readonly CidrRange[];
  readonly sourcePrefixRanges: readonly CidrRange[];
  /** `tls` when the connection starts with a TLS ClientHello, else `raw_buffer`. */
  readonly transportProtocol?: 'tls' | 'raw_buffer';
  /** ALPN values from the ClientHello; the chain matches when any is offered. */
  readonly applicationProtocols: readonly string[];
  /** SNI from the ClientHello; `*.example.com` wildcards allowed. */
  readonly serverNames: readonly string[];
}

export interface FilterChain {
  readonly name: string;
  readonly match: FilterChainMatch;
  /** Terminate TLS before the handler (the chain's `transport_socket`). */
  readonly tls?: DownstreamTls;
  readonly handler: TcpProxyHandler | HttpHandler;
}

/** A weighted upstream cluster of a TCP proxy or a route. */
export interface WeightedCluster {
  readonly name: string;
  readonly weight: number;
  readonly requestHeaders: HeaderEdits;
  readonly responseHeaders: HeaderEdits;
}

/** The `tcp_proxy` network filter. */
export interface TcpProxyHandler {
  readonly kind: 'tcp';
  readonly statPrefix: string;
  /** One entry with weight 1 for a single cluster. */
  readonly clusters: readonly WeightedCluster[];
  /** Total weight of `clusters`, precomputed. */
  readonly totalWeight: number;
  /** Undefined: Envoy's default 1 h; 0 disables. */
  readonly idleTimeoutMs?: number;
}

/** `forward_client_cert_details` of the HTTP connection manager. */
export type ForwardClientCert =
  'SANITIZE' | 'FORWARD_ONLY' | 'APPEND_FORWARD' | 'SANITIZE_SET' | 'ALWAYS_FORWARD_ONLY';

/** The `http_connection_manager` network filter with the HTTP filters Sail implements. */
export interface HttpHandler {
  readonly kind: 'http';
  readonly statPrefix: string;
  /** AUTO sniffs the HTTP/2 connection preface. */
  readonly codec: 'AUTO' | 'HTTP1' | 'HTTP2';
  /** RDS: the route configuration's name, looked up in `ProxyConfig.routes` per request. */
  readonly rdsName?: string;
  /** An inline `route_config` (inbound chains). Exactly one of `rdsName` / `routeTable` is set. */
  readonly routeTable?: RouteTable;
  /** `envoy.filters.http.fault` is in the filter chain (routes' fault configs take effect). */
  readonly faultFilter: boolean;
  /** `envoy.filters.http.cors` is in the filter chain. */
  readonly corsFilter: boolean;
  readonly forwardClientCert: ForwardClientCert;
  /** Which parts of the peer certificate go into `x-forwarded-client-cert` (SANITIZE_SET, APPEND_FORWARD). */
  readonly clientCertDetails: {
    readonly subject: boolean;
    readonly uri: boolean;
    readonly dns: boolean;
    readonly cert: boolean;
  };
  /** Upgrade types allowed (`websocket`), lowercase. */
  readonly upgrades: readonly string[];
  /** Undefined: no limit. */
  readonly streamIdleTimeoutMs?: number;
  readonly requestTimeoutMs?: number;
}

// ---------------------------------------------------------------------------------------------
// Routes

export interface RouteTable {
  readonly name: string;
  readonly virtualHosts: readonly VirtualHost[];
}

/** Header edits: `set` overwrites, `add` appends, `remove` deletes (names lowercase). */
export interface HeaderEdits {
  readonly set: readonly HeaderValue[];
  readonly add: readonly HeaderValue[];
  readonly remove: readonly string[];
}

export interface HeaderValue {
  readonly name: string;
  readonly value: string;
}

export interface VirtualHost {
  readonly name: string;
  /** As Envoy writes them: exact (`reviews:9080`), `*.suffix`, `prefix.*` or `*`; lowercase. */
  readonly domains: readonly string[];
  readonly routes: readonly Route[];
  readonly requestHeaders: HeaderEdits;
  readonly responseHeaders: HeaderEdits;
  readonly cors?: CorsPolicy;
}

export interface Route {
  /** '' when the route has no name. */
  readonly name: string;
  readonly match: RouteMatch;
  readonly action: RouteAction | RedirectAction | DirectResponseAction;
  readonly requestHeaders: HeaderEdits;
  readonly responseHeaders: HeaderEdits;
  /** From `typed_per_filter_config['envoy.filters.http.fault']`, inherited from the virtual host
   * and route configuration when the route has none; applies only with the fault filter. */
  readonly fault?: FaultPolicy;
  /** From `typed_per_filter_config['envoy.filters.http.cors']` (or the legacy route field);
   * undefined: use the virtual host's `cors`. */
  readonly cors?: CorsPolicy;
}

export interface RouteMatch {
  /** `path` is the exact path, `prefix` a prefix, `regex` the whole path (query string excluded). */
  readonly path:
    | { readonly kind: 'prefix'; readonly value: string }
    | { readonly kind: 'path'; readonly value: string }
    | { readonly kind: 'regex'; readonly regex: RegExp }
    | { readonly kind: 'pathSeparatedPrefix'; readonly value: string };
  readonly caseSensitive: boolean;
  readonly headers: readonly HeaderMatcher[];
  readonly queryParameters: readonly QueryParameterMatcher[];
  /** Fraction of requests the route applies to (runtime_fraction); undefined: all. */
  readonly fraction?: number;
}

export interface HeaderMatcher {
  /** Lowercase; pseudo-headers `:method`, `:authority`, `:scheme`, `:path` are matched too. */
  readonly name: string;
  /** `present`: the header exists (or, with `present: false`, does not). */
  readonly match: StringMatcher | { readonly kind: 'present'; readonly present: boolean };
  readonly invert: boolean;
}

export interface QueryParameterMatcher {
  readonly name: string;
  /** Undefined: the parameter is present. */
  readonly match?: StringMatcher;
}

export interface RetryPolicy {
  /** Envoy conditions: `5xx`, `gateway-error`, `reset`, `connect-failure`, `refused-stream`,
   * `retriable-4xx`, `retriable-status-codes`, and the gRPC ones `cancelled`, `deadline-exceeded`,
   * `internal`, `resource-exhausted`, `unavailable`. */
  readonly retryOn: ReadonlySet<string>;
  readonly numRetries: number;
  readonly perTryTimeoutMs?: number;
  readonly retriableStatusCodes: readonly number[];
  /** Envoy's default: 25 ms base, 10× max, full jitter. */
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
}

export interface MirrorPolicy {
  readonly cluster: string;
  /** 0–1. */
  readonly fraction: number;
}

export type HashPolicy =
  | { readonly kind: 'header'; readonly name: string; readonly terminal: boolean }
  | {
      readonly kind: 'cookie';
      readonly name: string;
      readonly ttlMs?: number;
      readonly path?: string;
      readonly terminal: boolean;
    }
  | { readonly kind: 'sourceIp'; readonly terminal: boolean }
  | { readonly kind: 'queryParameter'; readonly name: string; readonly terminal: boolean };

export interface RouteAction {
  readonly kind: 'route';
  readonly clusters: readonly WeightedCluster[];
  readonly totalWeight: number;
  /** 0: no timeout (Istio's default). */
  readonly timeoutMs: number;
  readonly retry?: RetryPolicy;
  readonly prefixRewrite?: string;
  /** `regex` is global and unanchored, `substitution` in replace syntax (`$1`): apply it as
   * `path.replace(regex, substitution)` (Envoy replaces every match). */
  readonly regexRewrite?: { readonly regex: RegExp; readonly substitution: string };
  readonly hostRewrite?: string;
  readonly mirrors: readonly MirrorPolicy[];
  readonly hashPolicies: readonly HashPolicy[];
  /** Upgrade types this route allows, lowercase (added to the handler's). */
  readonly upgrades: readonly string[];
}

export interface RedirectAction {
  readonly kind: 'redirect';
  readonly scheme?: string;
  readonly host?: string;
  readonly port?: number;
  readonly path?: string;
  readonly prefixRewrite?: string;
  /** 301, 302, 303, 307 or 308. */
  readonly responseCode: number;
  readonly stripQuery: boolean;
}

export interface DirectResponseAction {
  readonly kind: 'direct';
  readonly status: number;
  readonly body?: string;
}

export interface FaultPolicy {
  readonly delay?: { readonly delayMs: number; readonly fraction: number };
  /** Exactly one of httpStatus / grpcStatus. */
  readonly abort?: {
    readonly httpStatus?: number;
    readonly grpcStatus?: number;
    readonly fraction: number;
  };
}

export interface CorsPolicy {
  readonly allowOrigins: readonly StringMatcher[];
  readonly allowMethods: string;
  readonly allowHeaders: string;
  readonly exposeHeaders: string;
  readonly maxAge?: string;
  readonly allowCredentials: boolean;
}

// ---------------------------------------------------------------------------------------------
// Clusters and endpoints

export type LbPolicy = 'ROUND_ROBIN' | 'LEAST_REQUEST' | 'RANDOM' | 'RING_HASH' | 'MAGLEV';

/** Envoy's circuit breaker thresholds (default priority). Istio's "unlimited" is 2^32-1. */
export interface CircuitBreakers {
  readonly maxConnections: number;
  readonly maxPendingRequests: number;
  readonly maxRequests: number;
  readonly maxRetries: number;
}

export interface OutlierDetection {
  /** 0: off. */
  readonly consecutive5xx: number;
  readonly consecutiveGatewayFailure: number;
  readonly intervalMs: number;
  readonly baseEjectionTimeMs: number;
  /** Percent 0–100. */
  readonly maxEjectionPercent: number;
}

/** Which transport an endpoint gets: the first entry whose `match` is a subset of the endpoint's
 * `envoy.transport_socket_match` metadata; `match: {}` matches every endpoint. */
export interface TransportChoice {
  readonly name: string;
  readonly match: Readonly<Record<string, string>>;
  /** Undefined: plaintext. */
  readonly tls?: UpstreamTls;
}

export interface Cluster {
  readonly name: string;
  readonly type: 'EDS' | 'STATIC' | 'STRICT_DNS' | 'LOGICAL_DNS' | 'ORIGINAL_DST';
  /** EDS: the `cluster_name` of the ClusterLoadAssignment to use (defaults to `name`). */
  readonly edsServiceName?: string;
  /** STATIC / STRICT_DNS / LOGICAL_DNS: the inline endpoints (host names for the DNS types). */
  readonly loadAssignment?: LoadAssignment;
  readonly lbPolicy: LbPolicy;
  readonly ringHash: { readonly minimumRingSize: number; readonly maximumRingSize: number };
  readonly connectTimeoutMs: number;
  readonly circuitBreakers: CircuitBreakers;
  readonly outlierDetection?: OutlierDetection;
  /** Percent 0–100 (Envoy default 50): below it, unhealthy endpoints are used too (panic). */
  readonly healthyPanicThreshold: number;
  /** Transport per endpoint, in order; `transportSocket` alone becomes one entry with `match: {}`;
   * none at all means plaintext. */
  readonly transports: readonly TransportChoice[];
  /** The protocol to speak upstream: HTTP/2 when the cluster says so (GRPC/HTTP2 ports,
   * h2UpgradePolicy), `downstream` to mirror the client's. */
  readonly upstreamProtocol: 'http1' | 'http2' | 'downstream';
  /** Undefined: unlimited. */
  readonly maxRequestsPerConnection?: number;
  /** Idle upstream connections are closed after this long (Envoy default 1 h); undefined: never. */
  readonly idleTimeoutMs?: number;
  readonly tcpKeepalive?: {
    readonly probes?: number;
    readonly timeSeconds?: number;
    readonly intervalSeconds?: number;
  };
  /** DNS types: how often to resolve again (Envoy default 5 s). */
  readonly dnsRefreshRateMs: number;
}

export interface Locality {
  readonly region: string;
  readonly zone: string;
  readonly subZone: string;
}

export interface Endpoint {
  /** An IP for EDS and STATIC, a host name for the DNS types. */
  readonly address: string;
  readonly port: number;
  /** At least 1. */
  readonly weight: number;
  /** HEALTHY and UNKNOWN are healthy; UNHEALTHY, DRAINING, TIMEOUT, DEGRADED are not. */
  readonly healthy: boolean;
  readonly locality: Locality;
  readonly priority: number;
  /** `filter_metadata['envoy.transport_socket_match']` as strings (e.g. `{ tlsMode: 'istio' }`). */
  readonly transportMatch: Readonly<Record<string, string>>;
}

export interface LoadAssignment {
  readonly clusterName: string;
  readonly endpoints: readonly Endpoint[];
}

/** Empty edits, shared. */
export const NO_HEADER_EDITS: HeaderEdits = Object.freeze({
  set: Object.freeze([]),
  add: Object.freeze([]),
  remove: Object.freeze([]),
}) as HeaderEdits;

/** Cluster names with fixed meanings (pilot/xds/generate/names.ts). */
export const PASSTHROUGH_CLUSTER = 'PassthroughCluster';
export const BLACKHOLE_CLUSTER = 'BlackHoleCluster';
/** SDS secret names pilot uses; the proxy serves them from the certificate directory. */
export const SDS_CERT_NAME = 'default';
export const SDS_ROOT_NAME = 'ROOTCA';
