/**
 * The proxy's runtime options (STYLE 2.4: `config/proxy-config.ts` turns the YAML file and flags
 * into these; nothing else reads the file). Durations in milliseconds, paths resolved.
 */
import type { Clock } from '../common/clock';
import type { Logger } from '../common/logging';

/** Where traffic reaches the proxy. */
export interface TrafficOptions {
  /**
   * `capture`: iptables sends traffic to the capture listeners (`virtualOutbound` :15001,
   * `virtualInbound` :15006) and the original destination is read with SO_ORIGINAL_DST.
   * `explicit`: no capture; the proxy binds one listener per outbound service port on
   * `outboundBindHost` (applications dial `127.0.0.1:PORT`) and one per inbound workload port on
   * `inboundBindHost` (the workload's address; the application itself listens on 127.0.0.1).
   */
  readonly mode: 'capture' | 'explicit';
  /** Capture mode: where `virtualOutbound` binds instead of the address pilot sends (tests). */
  readonly outboundListen?: string;
  /** Capture mode: where `virtualInbound` binds instead of the address pilot sends (tests). */
  readonly inboundListen?: string;
  /**
   * Capture mode with TPROXY: `virtualInbound` listens on this inherited file descriptor, a
   * listening socket with IP_TRANSPARENT that the node agent created (the proxy itself holds no
   * capability to set it), instead of binding. Its connections keep their original destination
   * as their local address.
   */
  readonly inboundFd?: number;
  /**
   * With `inboundFd` (TPROXY): connections from `virtualInbound` to the local application keep
   * the caller's address as their source (Envoy's original_src): bound to it with IP_TRANSPARENT
   * and marked with this SO_MARK, which the capture rules and the host's policy route use to bring
   * the application's replies back to the proxy. Needs CAP_NET_ADMIN (the node agent grants it).
   * Undefined: the application sees the proxy as its caller.
   */
  readonly originalSourceMark?: number;
  /** Explicit mode: host of the outbound listeners (default 127.0.0.1). */
  readonly outboundBindHost: string;
  /** Explicit mode: host of the inbound listeners (default: the node's IP from its node id). */
  readonly inboundBindHost?: string;
}

export interface ProxyOptions {
  readonly logger: Logger;
  readonly clock?: Clock;
  /** Istio form `sidecar~IP~NAME.NS~NS.svc.cluster.local`. */
  readonly nodeId: string;
  /** This workload (telemetry labels, peer metadata). */
  readonly workload: {
    readonly name: string;
    readonly namespace: string;
    readonly labels: Readonly<Record<string, string>>;
  };
  readonly trustDomain: string;
  /** pilot's xDS address `host:port` (mTLS with the workload certificate). */
  readonly pilotAddress: string;
  /** The SPIFFE ID pilot's serving certificate must carry (default: the control plane's). */
  readonly pilotSpiffeId: string;
  /** The node agent's certificate directory: `cert-chain.pem`, `key.pem`, `root-cert.pem`. */
  readonly certsDir: string;
  /** Last-known-good xDS is kept in `stateDir/proxy-xds.json`; undefined: not kept. */
  readonly stateDir?: string;
  readonly traffic: TrafficOptions;
  /** Admin server (`/ready`, `/stats`, `/config_dump`, `/clusters`), default 127.0.0.1:15000. */
  readonly adminListen: string;
  /** Allow `adminListen` off loopback (default false: the admin port has no authentication). */
  readonly adminAllowRemote?: boolean;
  /** Prometheus (`/stats/prometheus`, `/metrics`), default 0.0.0.0:15090. */
  readonly metricsListen: string;
  /** JSON access log lines on stdout (one per request / TCP connection). */
  readonly accessLog: boolean;
  /** What HTTP from an application travels as between two proxies over mesh mTLS: pooled
   * HTTP/1.1 keep-alive connections (default: the benchmark measured them cheaper than Node's
   * HTTP/2, BENCHMARKS.md), or pooled, multiplexed HTTP/2. */
  readonly meshUpstreamProtocol?: 'http2' | 'http1';
  /** How long a removed or changed listener keeps serving its open connections. */
  readonly drainMs: number;
  /** Upper bound for `close()`. */
  readonly shutdownGraceMs: number;
  /** Ready without a resource pilot never sent after this long (Envoy's initial_fetch_timeout). */
  readonly initialFetchTimeoutMs: number;
}

export const DEFAULT_ADMIN_LISTEN = '127.0.0.1:15000';
export const DEFAULT_METRICS_LISTEN = '0.0.0.0:15090';
export const DEFAULT_DRAIN_MS = 5_000;
export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000;
export const DEFAULT_INITIAL_FETCH_TIMEOUT_MS = 15_000;
/** The file in `stateDir` holding the last ACKed xDS resources. */
export const XDS_STATE_FILE = 'proxy-xds.json';
