/**
 * The contracts between the proxy's subsystems. Each subsystem folder implements one of these and
 * codes against the others only through them, so they can be built and tested separately:
 *
 *   xds/        XdsClient: ADS stream to pilot → compiled ProxyConfig (config/compile.ts)
 *   config/     compile: Envoy JSON → model.ts, the proxy's own file config (proxy-config.ts)
 *   tls/        TlsProvider: the workload certificate from the agent's files, contexts, SAN checks
 *   upstream/   ClusterManager: clusters, endpoints, load balancing, breakers, connect()
 *   listeners/  ListenerManager: bound sockets, original destination, chain selection, TLS
 *               termination, TCP proxying; hands HTTP chains to the HttpConnectionManager
 *   http/       HttpConnectionManager: HTTP/1.1, h2, h2c, gRPC, WebSocket; routing, retries…
 *   telemetry/  ProxyTelemetry: Istio metrics, access log
 *   admin/      the admin server (127.0.0.1:15000) and the metrics server (:15090)
 *   native/     the N-API addon reading SO_ORIGINAL_DST
 *   proxy.ts    the Proxy component that wires them
 */
import type * as net from 'node:net';
import type * as tls from 'node:tls';
import type {
  CertificateValidation,
  Cluster,
  DownstreamTls,
  FilterChain,
  HttpHandler,
  Listener,
  ProxyConfig,
  SocketAddress,
  TransportChoice,
  UpstreamTls,
} from './model';

// ---------------------------------------------------------------------------------------------
// The configuration in force

/** Holds the configuration in force; the data path reads `current` at each connection/request. */
export interface ConfigHolder {
  readonly current: ProxyConfig;
}

// ---------------------------------------------------------------------------------------------
// Identity

/** This proxy's workload: the labels telemetry reports and peer metadata carries. */
export interface LocalWorkload {
  /** Workload name (the node name, e.g. `vm-1`). */
  readonly name: string;
  readonly namespace: string;
  /** `app` label, or the workload name. */
  readonly app: string;
  /** `version` label, or `unknown`. */
  readonly version: string;
  /** `spiffe://…` of this host's certificate; '' until one is loaded. */
  readonly principal: string;
  readonly labels: Readonly<Record<string, string>>;
}

/** What a peer's certificate says, read once per TLS connection. */
export interface PeerIdentity {
  /** The SPIFFE ID (first `spiffe://` URI SAN), '' when none. */
  readonly spiffeId: string;
  readonly uris: readonly string[];
  readonly dns: readonly string[];
  /** RFC 4514-ish subject, for x-forwarded-client-cert `Subject=`. */
  readonly subject: string;
  /** SHA-256 of the DER certificate, hex, for x-forwarded-client-cert `Hash=`. */
  readonly hash: string;
}

// ---------------------------------------------------------------------------------------------
// TLS (tls/)

/**
 * TLS material and checks. The workload certificate, key and roots come from the node agent's
 * certificate directory (`cert-chain.pem`, `key.pem`, `root-cert.pem`), reloaded when the files
 * change or on SIGHUP; new connections use the new certificate, open ones are not touched.
 */
export interface TlsProvider {
  /** True once a usable workload certificate is loaded. */
  readonly ready: boolean;
  /** The SPIFFE ID of the loaded workload certificate ('' before). */
  readonly spiffeId: string;
  /** A server context for a filter chain's TLS. Cached; rebuilt after a rotation.
   * @throws Error when a named secret or file is not available */
  serverContext(config: DownstreamTls): tls.SecureContext;
  /** `tls.connect` options toward an upstream (context, SNI, ALPN; verification is done by
   * {@link verifyPeer} after the handshake, since Node cannot match URI SANs itself). */
  clientOptions(config: UpstreamTls): tls.ConnectionOptions;
  /** Checks a completed handshake's peer against `validation`: chain (when trust is set) and SAN
   * matchers. Returns undefined when acceptable, else why not (for logs and response flags). */
  verifyPeer(
    socket: tls.TLSSocket,
    validation: CertificateValidation | undefined,
  ): string | undefined;
  /** The peer's identity (cached per socket). Undefined when it sent no certificate. */
  peerIdentity(socket: tls.TLSSocket): PeerIdentity | undefined;
  /** Called after each rotation. Returns an unsubscribe function. */
  onRotate(listener: () => void): () => void;
}

// ---------------------------------------------------------------------------------------------
// Upstreams (upstream/)

/** Inputs a load balancer may use. */
export interface LbContext {
  /** Consistent hash (RING_HASH / MAGLEV); computed by the caller from the route's hash policies. */
  readonly hash?: number;
  /** For ORIGINAL_DST clusters (PassthroughCluster): where the client was going. */
  readonly originalDst?: SocketAddress;
  /** Hosts tried already by this request (retries pick another when possible). */
  readonly exclude?: ReadonlySet<UpstreamHost>;
}

/** One endpoint of one cluster, with the transport it gets. Identity is stable across pushes
 * while the endpoint and its transport do not change, so pools keyed by it survive pushes. */
export interface UpstreamHost {
  readonly cluster: string;
  readonly address: string;
  readonly port: number;
  /** `address:port` plus the transport name: the pool key. */
  readonly key: string;
  readonly transport: TransportChoice;
  readonly healthy: boolean;
  /** Requests in flight (least request). Maintained by the caller through {@link UpstreamCluster}. */
  readonly activeRequests: number;
  /**
   * Set on a copy of a host that a connection keeping its caller's address dials
   * (upstream/source-bound-host.ts): connect from `address` (the caller's, with IP_TRANSPARENT)
   * to `destination` instead of the host's own address.
   */
  readonly source?: { readonly address: string; readonly destination: string };
}

export type CircuitBreakerKind = 'connections' | 'pending' | 'requests' | 'retries';

/** The outcome of one attempt, for outlier detection and /clusters counters. */
export type UpstreamOutcome = 'success' | '5xx' | 'gatewayError' | 'connectFailure' | 'localReset';

export interface UpstreamCluster {
  readonly config: Cluster;
  /** An endpoint for a new attempt; undefined when the cluster has none that can be used
   * (Envoy's `UH`: no healthy upstream → 503). */
  pick(ctx: LbContext): UpstreamHost | undefined;
  /** Takes one unit of a breaker; false when it is full (Envoy `UO` overflow → 503). */
  tryAcquire(kind: CircuitBreakerKind): boolean;
  release(kind: CircuitBreakerKind): void;
  /** Marks a request started / finished on `host` (least request, /clusters rq_active). */
  requestStarted(host: UpstreamHost): void;
  requestFinished(host: UpstreamHost, outcome: UpstreamOutcome): void;
}

/** One endpoint's state for the admin `/clusters` page. */
export interface HostStatus {
  readonly address: string;
  readonly port: number;
  readonly healthy: boolean;
  readonly ejected: boolean;
  readonly weight: number;
  readonly activeRequests: number;
  readonly totalRequests: number;
  readonly failedRequests: number;
  readonly transport: string;
}

export interface ClusterStatus {
  readonly name: string;
  readonly type: Cluster['type'];
  readonly lbPolicy: Cluster['lbPolicy'];
  readonly hosts: readonly HostStatus[];
}

/**
 * The clusters in force, with their endpoints and per-endpoint state (active requests, outlier
 * ejections, breaker counts). `update` keeps the state of clusters and hosts that did not change.
 */
export interface ClusterManager {
  update(config: ProxyConfig): void;
  get(name: string): UpstreamCluster | undefined;
  status(): ClusterStatus[];
  /**
   * Opens a connection to `host`: TCP with the cluster's connect timeout, then TLS when the host's
   * transport says so (SNI, ALPN, client certificate, and the peer checked with verifyPeer).
   * `alpn` overrides the transport's ALPN (the HTTP layer asks for `h2`).
   * @throws Error with `code` 'ECONNREFUSED'|'ETIMEDOUT'|… or 'UPSTREAM_TLS' (handshake or peer check)
   */
  connect(host: UpstreamHost, options?: { alpn?: readonly string[] }): Promise<net.Socket>;
  /** Stops DNS refresh timers and outlier sweeps. Idempotent. */
  close(): void;
}

// ---------------------------------------------------------------------------------------------
// Downstream connections (listeners/ → http/)

/** How the proxy reached a connection's handler; read by HTTP handling and telemetry. */
export interface DownstreamContext {
  readonly listener: Listener;
  readonly chain: FilterChain;
  readonly direction: 'inbound' | 'outbound';
  /** The client. */
  readonly remoteAddress: string;
  readonly remotePort: number;
  /** Where the client was going (SO_ORIGINAL_DST, or the local address of an explicit listener). */
  readonly originalDst: SocketAddress;
  /**
   * The caller's address when connections to the local application keep it as their source
   * (TPROXY inbound capture with `traffic.originalSourceMark`); undefined otherwise.
   */
  readonly originalSource?: string;
  /** Set when the chain terminated TLS. */
  readonly tls?: {
    readonly peer?: PeerIdentity;
    readonly sni?: string;
    readonly alpn?: string;
  };
  /** `mutual_tls` when the chain terminated TLS with a verified client certificate. */
  readonly connectionSecurity: 'mutual_tls' | 'none';
}

/** Serves HTTP on a connection a listener accepted (after TLS termination when the chain has it). */
export interface HttpConnectionManager {
  /** Takes ownership of `socket`. Bytes already read from it have been `unshift`ed back. */
  handle(socket: net.Socket, handler: HttpHandler, ctx: DownstreamContext): void;
  /** Stops taking new requests on open connections (GOAWAY / Connection: close) and resolves when
   * they are done or `graceMs` passed, then destroys what is left. */
  drain(graceMs: number): Promise<void>;
  /** After a certificate rotation: pooled upstream connections take no new requests (the ones in
   * flight finish), so new requests open connections that present the new certificate. */
  retireUpstreamConnections(): void;
}

// ---------------------------------------------------------------------------------------------
// Telemetry (telemetry/)

/** Labels of Istio's standard metrics (`istio_requests_total`, …). */
export interface TrafficLabels {
  readonly reporter: 'source' | 'destination';
  readonly sourceWorkload: string;
  readonly sourceWorkloadNamespace: string;
  readonly sourcePrincipal: string;
  readonly sourceApp: string;
  readonly sourceVersion: string;
  readonly destinationWorkload: string;
  readonly destinationWorkloadNamespace: string;
  readonly destinationPrincipal: string;
  readonly destinationApp: string;
  readonly destinationVersion: string;
  /** The service host (`reviews.default.svc.cluster.local`), or the original destination. */
  readonly destinationService: string;
  readonly destinationServiceName: string;
  readonly destinationServiceNamespace: string;
  readonly destinationCluster: string;
  readonly connectionSecurityPolicy: 'mutual_tls' | 'none' | 'unknown';
  /** source_cluster (Istio's cluster id of the source workload); `unknown` when absent. */
  readonly sourceCluster?: string;
}

export interface RequestRecord {
  readonly labels: TrafficLabels;
  readonly requestProtocol: 'http' | 'grpc';
  readonly responseCode: number;
  /** gRPC status as a number string, '' for HTTP. */
  readonly grpcResponseStatus: string;
  /** Envoy response flags (`UH`, `UF`, `UO`, `NR`, `URX`, `UT`, `DI`, `FI`, `DC`, …), '-' for none. */
  readonly responseFlags: string;
  readonly durationMs: number;
  readonly requestBytes: number;
  readonly responseBytes: number;
  /** For the access log. */
  readonly method: string;
  readonly authority: string;
  readonly path: string;
  readonly requestId: string;
  readonly upstreamHost: string;
  readonly upstreamCluster: string;
  readonly routeName: string;
  readonly downstreamRemote: string;
  readonly userAgent: string;
  readonly startTime: number;
  /** For the access log: `HTTP/1.1`, `HTTP/2`; derived from requestProtocol when absent. */
  readonly protocol?: string;
}

export interface TcpRecord {
  readonly labels: TrafficLabels;
  readonly sentBytes: number;
  readonly receivedBytes: number;
  readonly durationMs: number;
  readonly responseFlags: string;
  readonly upstreamHost: string;
  readonly upstreamCluster: string;
  readonly downstreamRemote: string;
}

/** What a peer proxy says about its workload (PEER_METADATA_HEADER). */
export interface PeerMetadata {
  readonly workload: string;
  readonly namespace: string;
  readonly app: string;
  readonly version: string;
  readonly principal: string;
}

/**
 * Builds TrafficLabels. Results are interned (equal inputs give the same object), so metrics can
 * cache their label children by object identity instead of hashing label strings per request.
 */
export interface Labeler {
  /** Labels of traffic this proxy sends (reporter `source`). `clusterName` is Istio's
   * `outbound|PORT|SUBSET|HOST` (destination_service = HOST) or Passthrough/BlackHole (then the
   * original destination `ip:port` is the service). `peer` comes from the response's metadata. */
  outbound(
    clusterName: string,
    originalDst: SocketAddress,
    mtls: boolean,
    peer?: PeerMetadata,
  ): TrafficLabels;
  /** Labels of traffic this proxy receives (reporter `destination`): source from the peer's
   * metadata, else from its certificate's SPIFFE ID (namespace, service account). */
  inbound(
    originalDst: SocketAddress,
    peer: PeerIdentity | undefined,
    peerMeta: PeerMetadata | undefined,
    mtls: boolean,
  ): TrafficLabels;
  /** This workload's PEER_METADATA_HEADER value (precomputed). */
  readonly peerMetadataHeader: string;
  /** Parses a PEER_METADATA_HEADER value (cached); undefined when malformed. */
  decodePeerMetadata(value: string): PeerMetadata | undefined;
}

/** Records Istio's standard metrics and writes the access log. Cheap enough to call per request. */
export interface ProxyTelemetry {
  readonly labels: Labeler;
  recordRequest(record: RequestRecord): void;
  /** A TCP connection was opened through the proxy (istio_tcp_connections_opened_total). */
  tcpOpened(labels: TrafficLabels): void;
  /** A TCP connection closed; also adds its bytes (istio_tcp_sent/received_bytes_total). */
  tcpClosed(record: TcpRecord): void;
}

/**
 * Peer metadata between two Sail proxies, in the spirit of Istio's `x-envoy-peer-metadata`: the
 * outbound proxy adds `PEER_METADATA_HEADER` (base64 JSON of its LocalWorkload) to requests it
 * sends over mesh mTLS; the inbound proxy reads and removes it (and answers with its own on the
 * response), so both sides can fill source_* and destination_* labels.
 */
export const PEER_METADATA_HEADER = 'x-sail-peer-metadata';

/**
 * The ALPN value of Sail's TCP peer metadata exchange (listeners/peer-exchange.ts): over mesh mTLS
 * for tcp_proxy traffic, where no HTTP header can carry PEER_METADATA_HEADER, the outbound proxy
 * offers it before the transport's own ALPN; when the inbound proxy selects it, each side sends
 * one frame with its PEER_METADATA_HEADER value before any application byte. Distinct from
 * Istio's `istio-peer-exchange`, so an Envoy peer never selects it and never sees a frame.
 */
export const PEER_EXCHANGE_ALPN = 'sail-peer-exchange';
