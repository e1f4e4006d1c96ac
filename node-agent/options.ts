/**
 * The node agent's runtime options: typed, durations in milliseconds, paths resolved, every default
 * filled in. `config.ts` is the only code that turns a config file into these (STYLE 2.4).
 */
import type { Clock } from '../common/clock';
import type { Logger, LogLevel } from '../common/logging';
import type { KeyAlgorithm } from '../common/pki';

/** Where the control plane is and how the agent first proves who it is. */
export interface ControlPlaneOptions {
  /** The CA's `HOST:PORT` (gRPC over TLS, normally :15012). */
  readonly caAddress: string;
  /** Pilot's `HOST:PORT` (normally :15010); used by registration and the proxy (later issues). */
  readonly pilotAddress: string;
  /** Mixer's `HOST:PORT` (normally :9091); used by the proxy (later issues). */
  readonly mixerAddress: string;
  /**
   * The SPIFFE ID the CA's serving certificate must carry. The agent checks this URI SAN instead
   * of a host name, because VMs reach the control plane by IP and IPs change.
   */
  readonly caSpiffeId: string;
  /** PEM trust anchor for the first connection to the CA (`sail join` writes it). */
  readonly rootCertFile: string;
  /** File holding a single-use join token; deleted once it has been exchanged for a certificate. */
  readonly tokenFile: string;
  /** Optional bootstrap certificate (PEM) signed by a bootstrap CA the CA trusts. */
  readonly bootstrapCertFile?: string;
  /** Private key (PEM) of the bootstrap certificate. */
  readonly bootstrapKeyFile?: string;
}

/** One named port of the workload; the name's prefix carries the protocol (`http-`, `grpc-`, …). */
export interface WorkloadPort {
  readonly name: string;
  readonly port: number;
}

/** How the agent probes the local workload; exactly one of http, tcp and exec. */
export interface HealthCheckOptions {
  readonly http?: { readonly port: number; readonly path: string };
  readonly tcp?: { readonly port: number };
  readonly exec?: { readonly command: readonly string[] };
  readonly intervalMs: number;
  readonly timeoutMs: number;
  /** Consecutive failures that make a healthy workload unhealthy. */
  readonly failureThreshold: number;
  /** Consecutive successes that make an unhealthy workload healthy. */
  readonly successThreshold: number;
}

/** The workload this host runs: its identity and what it serves. */
export interface WorkloadOptions {
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly ports: readonly WorkloadPort[];
  /** `auto` (the host's source address toward the control plane) or an IP address. */
  readonly address: string;
  readonly health?: HealthCheckOptions;
  /** WorkloadGroup `NAMESPACE/NAME` whose template fills in what the host does not say. */
  readonly group?: string;
}

/** The workload certificate: where it lives, how long it lives, what key it has. */
export interface CertsOptions {
  /** Directory for cert-chain.pem, key.pem (0600) and root-cert.pem, replaced atomically. */
  readonly dir: string;
  /** Requested lifetime of each certificate in milliseconds (the CA may cap it). */
  readonly ttlMs: number;
  readonly keyAlgorithm: KeyAlgorithm;
  /** Owner to give the files (the `sail-proxy` user); unset leaves them owned by the agent. */
  readonly owner?: { readonly uid: number; readonly gid: number };
}

/** Traffic capture settings (Istio 1.0 semantics: `*` all, empty none, excludes first). */
export interface CaptureOptions {
  readonly mode: 'redirect' | 'tproxy' | 'none';
  readonly includeOutboundCidrs: string;
  readonly excludeOutboundCidrs: string;
  readonly includeInboundPorts: string;
  readonly excludeInboundPorts: string;
  readonly excludeOutboundPorts: string;
  /** `auto`: ip6tables rules too where the host has IPv6 and ip6tables works. */
  readonly ipv6: 'auto' | boolean;
  /**
   * tproxy mode: the proxy's connections to local applications keep the caller's address as
   * their source (Envoy's original_src), so applications see who called. The proxy then runs with
   * CAP_NET_ADMIN (ambient, through setpriv). Default true; false keeps it capability-free, and
   * applications see the proxy's address as with redirect.
   */
  readonly preserveSourceAddress: boolean;
}

/** The agent's DNS server for mesh names. */
export interface DnsOptions {
  readonly enabled: boolean;
  readonly listen: string;
  /** The host's resolver config; its nameservers are where non-mesh names go. */
  readonly resolvConf: string;
  /** Explicit upstream nameservers (IP or IP:PORT), instead of resolvConf's. */
  readonly upstreams?: readonly string[];
  /**
   * Answer a mesh name followed by one of resolvConf's `search` domains as the mesh name
   * (`reviews.corp.example` → `reviews`), instead of forwarding it. Default true.
   */
  readonly stripSearchDomains: boolean;
}

/** Proxy supervision. `enabled: false` means identity only. */
export interface ProxyOptions {
  readonly enabled: boolean;
  /** The system user the proxy runs as; capture exempts its uid and gid. */
  readonly user: string;
  /** The proxy's admin address (`/ready` is polled there). */
  readonly adminListen: string;
  /** SIGTERM, then at most this long for the proxy's drain, then SIGKILL. */
  readonly stopGraceMs: number;
  /** The proxy's log level; default: the agent's. */
  readonly logLevel?: LogLevel;
  readonly accessLog: boolean;
  /** NODE_OPTIONS for the proxy process (e.g. `--max-semi-space-size=2`). */
  readonly nodeOptions: string;
  /** The proxy's worker processes (its `concurrency`): 1 none, 0 one per core. */
  readonly concurrency: number;
}

/** The local xDS endpoint for proxyless gRPC applications. */
export interface ProxylessOptions {
  readonly enabled: boolean;
  /** The unix socket the agent serves xDS on (relayed to pilot). */
  readonly socket: string;
  /** Where the gRPC xDS bootstrap for applications is written (GRPC_XDS_BOOTSTRAP). */
  readonly bootstrapFile: string;
}

/** Tuning of the identity subsystem; the defaults suit production. */
export interface IdentityTuning {
  /** Deadline of each CA call. Default DEFAULT_CA_REQUEST_TIMEOUT_MS. */
  readonly caRequestTimeoutMs?: number;
  /** First retry delay after a failed rotation. Default DEFAULT_RETRY_INITIAL_MS. */
  readonly retryInitialMs?: number;
  /** Cap of the retry delay (and of gRPC's reconnect backoff). Default DEFAULT_RETRY_MAX_MS. */
  readonly retryMaxMs?: number;
}

/** Everything a config file can set, resolved: NodeAgentOptions without the injected dependencies. */
export interface NodeAgentSettings {
  /** The node name the CA knows this host by (the certificate's subject CN). */
  readonly nodeName: string;
  /** Trust domain of the mesh; the workload SPIFFE ID is spiffe://<trustDomain>/ns/<ns>/sa/<sa>. */
  readonly trustDomain: string;
  readonly controlPlane: ControlPlaneOptions;
  readonly workload: WorkloadOptions;
  readonly certs: CertsOptions;
  /** Durable state: the pending key of an unfinished certificate request, proxy state (later). */
  readonly stateDir: string;
  readonly capture: CaptureOptions;
  readonly dns: DnsOptions;
  readonly proxy: ProxyOptions;
  readonly proxyless: ProxylessOptions;
  /** Runtime directory (sockets, the proxy's config and pid file): /run/sail. */
  readonly runDir: string;
  /** `HOST:PORT` of the status server (`/healthz/ready`, `/metrics`); port 0 picks one. */
  readonly status: { readonly listen: string };
}

/** Options of {@link NodeAgent}: the resolved settings plus injected dependencies. */
export interface NodeAgentOptions extends NodeAgentSettings {
  /** pino logger; the agent makes children of it and never creates its own. */
  readonly logger: Logger;
  /** Time source for every timer and validity check; a FakeClock in tests. Default systemClock. */
  readonly clock?: Clock;
  /** Returns a number in [0, 1) for rotation and retry jitter. Default Math.random. */
  readonly random?: () => number;
  /**
   * Called if a background task fails in a way the agent cannot recover from (a bug: the rotator
   * retries every expected failure forever). `sail node-agent` logs it at fatal and exits 1.
   */
  readonly onFatal?: (err: unknown) => void;
  /** Bound on close(): after this, remaining work is abandoned. Default DEFAULT_SHUTDOWN_GRACE_MS. */
  readonly shutdownGraceMs?: number;
  /** Add Node's process metrics to /metrics (off in tests that run many agents). Default true. */
  readonly processMetrics?: boolean;
  /** Retry and deadline tuning of the identity subsystem (tests shorten them). */
  readonly identityTuning?: IdentityTuning;
  /**
   * The proxy's system user (`proxy.user`, looked up by `sail node-agent`): the proxy runs as it,
   * the certificate files and the proxy's state belong to it, and capture exempts its uid and gid.
   * Absent: the proxy runs as the agent's own user.
   */
  readonly proxyUser?: { readonly uid: number; readonly gid: number };
  /** How to run `sail proxy`; default: this program (node + sail.js, or the single binary). */
  readonly proxyCommand?: readonly string[];
  /** The agent's log level (the proxy's default). */
  readonly logLevel?: LogLevel;
  /** `pipe`: the proxy's log lines are re-logged by the agent (tests). Default `inherit`. */
  readonly proxyStdio?: 'inherit' | 'pipe';
}
