/**
 * The clusters in force (ClusterManager): built from each pushed ProxyConfig, keeping the state of
 * clusters and hosts that stay, and the upstream connect path (TCP with the cluster's connect
 * timeout, then TLS when the host's transport has it).
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import { type Clock, systemClock } from '../../common/clock';
import { transparentSocket } from '../../common/native';
import { LogField, type Logger } from '../../common/logging';
import type { ProxyConfig } from '../model';
import type {
  ClusterManager,
  ClusterStatus,
  TlsProvider,
  UpstreamCluster,
  UpstreamHost,
} from '../types';
import { type HostResolver, UpstreamClusterImpl, lookupAll } from './cluster';

/** Used when a host's cluster is gone (a push removed it while a request was choosing). */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

/** Options of {@link DefaultClusterManager}. */
export interface ClusterManagerOptions {
  readonly logger: Logger;
  readonly tls: TlsProvider;
  /** Outlier sweeps, DNS refresh and original-dst clean-up run on it. Default: the system clock. */
  readonly clock?: Clock;
  /** Resolves DNS cluster host names. Default: `getaddrinfo`, IPv4 when there is any. */
  readonly resolver?: HostResolver;
  /**
   * `traffic.originalSourceMark`: hosts with a `source` are dialed from it with IP_TRANSPARENT
   * and this SO_MARK. Undefined: every connection is a plain one.
   */
  readonly originalSourceMark?: number;
  /**
   * Makes the socket a `source` host is dialed from. Default: the native addon's.
   * @internal tests stand in a proxy without CAP_NET_ADMIN here
   */
  readonly transparentSocket?: (host: string, mark: number) => number;
}

/** An upstream connect failure; `code` says which (`ETIMEDOUT`, `ECONNREFUSED`, `UPSTREAM_TLS`…). */
function connectError(message: string, code: string, cause?: unknown): Error & { code: string } {
  return Object.assign(new Error(message, cause === undefined ? undefined : { cause }), { code });
}

/** ClusterManager over the pushed clusters and endpoints. */
export class DefaultClusterManager implements ClusterManager {
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly resolver: HostResolver;
  private readonly tls: TlsProvider;
  private readonly clusters = new Map<string, UpstreamClusterImpl>();
  /** Cleared when the proxy may not bind a foreign address (no CAP_NET_ADMIN): said once. */
  private originalSourceMark: number | undefined;
  private readonly transparentSocket: (host: string, mark: number) => number;
  /** `address:port` of local applications found listening on loopback only (said once each). */
  private readonly loopbackOnly = new Set<string>();
  private closed = false;

  constructor(opts: ClusterManagerOptions) {
    this.log = opts.logger.child({ component: 'proxy', subsystem: 'upstream' });
    this.clock = opts.clock ?? systemClock;
    this.resolver = opts.resolver ?? lookupAll;
    this.tls = opts.tls;
    this.originalSourceMark = opts.originalSourceMark;
    this.transparentSocket = opts.transparentSocket ?? transparentSocket;
  }

  update(config: ProxyConfig): void {
    if (this.closed) return;
    for (const [name, c] of config.clusters) {
      const assignment =
        c.type === 'EDS' ? config.endpoints.get(c.edsServiceName ?? c.name) : c.loadAssignment;
      let cluster = this.clusters.get(name);
      if (!cluster) {
        cluster = new UpstreamClusterImpl(c, {
          log: this.log,
          clock: this.clock,
          resolver: this.resolver,
        });
        this.clusters.set(name, cluster);
      }
      cluster.update(c, assignment);
    }
    for (const [name, cluster] of this.clusters) {
      if (!config.clusters.has(name)) {
        cluster.close();
        this.clusters.delete(name);
      }
    }
  }

  get(name: string): UpstreamCluster | undefined {
    return this.clusters.get(name);
  }

  status(): ClusterStatus[] {
    return [...this.clusters.values()].map(c => c.status());
  }

  connect(host: UpstreamHost, options?: { alpn?: readonly string[] }): Promise<net.Socket> {
    const config = this.clusters.get(host.cluster)?.config;
    const timeoutMs = config?.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const keepalive = config?.tcpKeepalive;
    const transportTls = host.transport.tls;
    return new Promise<net.Socket>((resolve, reject) => {
      const dialed = this.dial(host);
      let raw = dialed.socket;
      // Dialed from the caller's address (to the address it called, for a loopback host).
      let fromSource = dialed.fromSource;
      let secure: tls.TLSSocket | undefined;
      let settled = false;
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        (secure ?? raw).destroy();
        raw.destroy();
        reject(err);
      };
      const done = (socket: net.Socket) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        raw.off('error', onRawError);
        secure?.off('error', onTlsError);
        resolve(socket);
      };
      const onRawError = (err: Error) => {
        const source = host.source;
        if (
          fromSource &&
          source !== undefined &&
          source.destination !== host.address &&
          (err as NodeJS.ErrnoException).code === 'ECONNREFUSED'
        ) {
          // The application may listen on loopback only: reachable, but not from the caller's
          // address. Connect as without original_src (said once it works).
          fromSource = false;
          raw.destroy();
          raw = net.connect({ host: host.address, port: host.port, noDelay: true });
          raw.once('error', onRawError);
          raw.once('connect', onRawConnect);
          return;
        }
        fail(err);
      };
      const onTlsError = (err: Error) =>
        fail(
          connectError(
            `tls handshake with ${host.address}:${host.port} failed: ${err.message}`,
            'UPSTREAM_TLS',
            err,
          ),
        );
      // The connect timeout covers the TLS handshake too: a peer that accepts and then stalls is
      // as unusable as one that never answers.
      const timer = setTimeout(() => {
        fail(
          connectError(
            `connect to ${host.address}:${host.port} timed out after ${timeoutMs} ms`,
            'ETIMEDOUT',
          ),
        );
      }, timeoutMs);
      const onRawConnect = () => {
        // Dialed from the caller's address at first, and now not: the fallback worked.
        if (dialed.fromSource && !fromSource) this.warnLoopbackOnly(host);
        if (keepalive) raw.setKeepAlive(true, (keepalive.timeSeconds ?? 0) * 1000);
        if (!transportTls) {
          done(raw);
          return;
        }
        let tlsOptions: tls.ConnectionOptions;
        try {
          tlsOptions = { ...this.tls.clientOptions(transportTls), socket: raw };
        } catch (err) {
          fail(
            connectError(
              `no tls material for ${host.address}:${host.port}: ${(err as Error).message}`,
              'UPSTREAM_TLS',
              err,
            ),
          );
          return;
        }
        const alpn = options?.alpn;
        if (alpn !== undefined) {
          if (alpn.length > 0) tlsOptions.ALPNProtocols = [...alpn];
          else delete tlsOptions.ALPNProtocols;
        }
        secure = tls.connect(tlsOptions);
        secure.once('error', onTlsError);
        secure.once('secureConnect', () => {
          const s = secure as tls.TLSSocket;
          const v = transportTls.validation;
          // With trust, tls.connect already verified the chain and the SANs (checkServerIdentity);
          // without it only the SAN matchers remain to check.
          if (v && v.trust === undefined && v.sanMatchers.length > 0) {
            const reason = this.tls.verifyPeer(s, v);
            if (reason !== undefined) {
              fail(
                connectError(
                  `upstream ${host.address}:${host.port} rejected: ${reason}`,
                  'UPSTREAM_TLS',
                ),
              );
              return;
            }
          }
          if (this.log.isLevelEnabled('debug')) {
            this.log.debug(
              { [LogField.address]: `${host.address}:${host.port}`, alpn: s.alpnProtocol },
              'Upstream TLS established',
            );
          }
          done(s);
        });
      };
      raw.once('error', onRawError);
      raw.once('connect', onRawConnect);
    });
  }

  /**
   * A connecting socket to `host`: bound to its `source` address when it has one and the proxy
   * may (Envoy's original_src), else a plain `net.connect`.
   */
  private dial(host: UpstreamHost): { socket: net.Socket; fromSource: boolean } {
    const source = host.source;
    const mark = this.originalSourceMark;
    if (source !== undefined && mark !== undefined) {
      let fd: number | undefined;
      try {
        fd = this.transparentSocket(source.address, mark);
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code === 'ERRNO_1' || code === 'ERRNO_13') {
          // Without CAP_NET_ADMIN none will work: say so once, and connect as before from now on.
          this.originalSourceMark = undefined;
          this.log.error(
            { err },
            "traffic.originalSourceMark: cannot bind a caller's address (the proxy needs CAP_NET_ADMIN, which the node agent grants in capture mode tproxy); applications see the proxy as their caller",
          );
        } else if (this.log.isLevelEnabled('debug')) {
          // Anything else (out of file descriptors, an address the kernel refuses) is this
          // connection's: it goes as without original_src.
          this.log.debug({ err, source: source.address }, "Could not bind a caller's address");
        }
      }
      if (fd !== undefined) {
        const socket = new net.Socket({ fd, manualStart: true } as net.SocketConstructorOpts);
        socket.setNoDelay(true);
        return { socket: socket.connect(host.port, source.destination), fromSource: true };
      }
    }
    return {
      socket: net.connect({ host: host.address, port: host.port, noDelay: true }),
      fromSource: false,
    };
  }

  private warnLoopbackOnly(host: UpstreamHost): void {
    const where = `${host.address}:${String(host.port)}`;
    if (this.loopbackOnly.has(where)) return;
    this.loopbackOnly.add(where);
    this.log.warn(
      { [LogField.address]: where, cluster: host.cluster },
      "The application listens on loopback only, where connections cannot come from the caller's address: it sees the proxy as its caller (listen on the host's address, or 0.0.0.0, to see callers)",
    );
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const c of this.clusters.values()) c.close();
  }
}
