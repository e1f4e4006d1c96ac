/**
 * The clusters in force (ClusterManager): built from each pushed ProxyConfig, keeping the state of
 * clusters and hosts that stay, and the upstream connect path (TCP with the cluster's connect
 * timeout, then TLS when the host's transport has it).
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import { type Clock, systemClock } from '../../common/clock';
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
  private closed = false;

  constructor(opts: ClusterManagerOptions) {
    this.log = opts.logger.child({ component: 'proxy', subsystem: 'upstream' });
    this.clock = opts.clock ?? systemClock;
    this.resolver = opts.resolver ?? lookupAll;
    this.tls = opts.tls;
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
      const raw = net.connect({ host: host.address, port: host.port, noDelay: true });
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
      const onRawError = (err: Error) => fail(err);
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
      raw.once('error', onRawError);
      raw.once('connect', () => {
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
      });
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const c of this.clusters.values()) c.close();
  }
}
