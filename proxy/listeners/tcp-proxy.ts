/**
 * The `tcp_proxy` network filter: one upstream connection per downstream connection, bytes copied
 * both ways with backpressure and half-close, an idle timeout, Istio's TCP metrics and the
 * upstream bookkeeping (breaker `connections`, active requests for least-request balancing).
 */
import type * as net from 'node:net';
import { type Clock, systemClock } from '../../common/clock';
import type { Logger } from '../../common/logging';
import { BLACKHOLE_CLUSTER, type TcpProxyHandler } from '../model';
import type {
  ClusterManager,
  DownstreamContext,
  ProxyTelemetry,
  TrafficLabels,
  UpstreamCluster,
  UpstreamHost,
  UpstreamOutcome,
} from '../types';

/** Envoy's default `idle_timeout` of tcp_proxy: 1 hour. */
export const DEFAULT_TCP_IDLE_TIMEOUT_MS = 3_600_000;

/** Options of {@link TcpProxy}. */
export interface TcpProxyOptions {
  readonly logger: Logger;
  readonly clock?: Clock;
  readonly clusters: ClusterManager;
  readonly telemetry: ProxyTelemetry;
}

/** Envoy response flags a TCP connection can end with. */
type TcpFlag = '-' | 'NC' | 'UH' | 'UO' | 'UF' | 'UC';

/**
 * Proxies TCP connections to the handler's clusters. One instance serves every tcp_proxy chain;
 * the configuration is read from the handler given with each connection.
 */
export class TcpProxy {
  private readonly log: Logger;
  /** @internal read by sessions */
  readonly clock: Clock;
  /** @internal read by sessions */
  readonly clusters: ClusterManager;
  /** @internal read by sessions */
  readonly telemetry: ProxyTelemetry;
  /** @internal read by sessions */
  readonly debug: boolean;
  private readonly sessions = new Set<TcpSession>();

  constructor(opts: TcpProxyOptions) {
    this.log = opts.logger.child({ component: 'proxy', subsystem: 'tcp-proxy' });
    this.clock = opts.clock ?? systemClock;
    this.clusters = opts.clusters;
    this.telemetry = opts.telemetry;
    this.debug = this.log.isLevelEnabled('debug');
  }

  /** Connections being proxied (or connecting upstream). */
  get active(): number {
    return this.sessions.size;
  }

  /**
   * Takes ownership of `downstream` (bytes already read from it were `unshift`ed back) and proxies
   * it to a cluster of `handler`; closes it when no upstream can be had.
   */
  handle(downstream: net.Socket, handler: TcpProxyHandler, ctx: DownstreamContext): void {
    const clusterName = pickWeighted(handler);
    const session = new TcpSession(this, downstream, handler, ctx, clusterName);
    this.sessions.add(session);
    session.start();
  }

  /** @internal a session is over */
  ended(session: TcpSession): void {
    this.sessions.delete(session);
  }

  /** @internal per-connection detail, only when debug is on */
  logDebug(fields: Record<string, unknown>, msg: string): void {
    this.log.debug(fields, msg);
  }
}

/** A cluster of a weighted list, by weight (the single-cluster case draws no random number). */
function pickWeighted(handler: TcpProxyHandler): string {
  const list = handler.clusters;
  if (list.length === 1) return list[0]!.name;
  let r = Math.random() * handler.totalWeight;
  for (const c of list) {
    r -= c.weight;
    if (r < 0) return c.name;
  }
  return list[list.length - 1]!.name;
}

/** One proxied connection. */
class TcpSession {
  private readonly startMs: number;
  private cluster: UpstreamCluster | undefined;
  private host: UpstreamHost | undefined;
  private upstream: net.Socket | undefined;
  private labels: TrafficLabels | undefined;
  private flag: TcpFlag = '-';
  private outcome: UpstreamOutcome = 'success';
  private holdsBreaker = false;
  /** Bytes downstream → upstream. */
  private received = 0;
  /** Bytes upstream → downstream. */
  private sent = 0;
  private downClosed = false;
  private upClosed = false;
  private finished = false;

  constructor(
    private readonly proxy: TcpProxy,
    private readonly down: net.Socket,
    private readonly handler: TcpProxyHandler,
    private readonly ctx: DownstreamContext,
    private readonly clusterName: string,
  ) {
    this.startMs = proxy.clock.now();
  }

  start(): void {
    const down = this.down;
    down.on('error', this.onDownError);
    down.on('close', this.onDownClose);
    const idleMs = this.handler.idleTimeoutMs ?? DEFAULT_TCP_IDLE_TIMEOUT_MS;
    if (idleMs > 0) {
      // Every byte either way passes through the downstream socket, so its inactivity timer is
      // the connection's.
      down.setTimeout(idleMs);
      down.on('timeout', this.onIdle);
    }

    const cluster = this.proxy.clusters.get(this.clusterName);
    this.cluster = cluster;
    if (!cluster) return this.fail('NC');
    const host =
      this.clusterName === BLACKHOLE_CLUSTER
        ? undefined
        : cluster.pick({ originalDst: this.ctx.originalDst });
    if (!host) return this.fail('UH');
    if (!cluster.tryAcquire('connections')) return this.fail('UO');
    this.holdsBreaker = true;
    this.host = host;
    cluster.requestStarted(host);
    this.opened();
    this.proxy.clusters.connect(host).then(this.onConnected, this.onConnectFailed);
  }

  private opened(): void {
    const ctx = this.ctx;
    this.labels =
      ctx.direction === 'inbound'
        ? this.proxy.telemetry.labels.inbound(
            ctx.originalDst,
            ctx.tls?.peer,
            undefined,
            ctx.connectionSecurity === 'mutual_tls',
          )
        : this.proxy.telemetry.labels.outbound(
            this.clusterName,
            ctx.originalDst,
            this.host?.transport.tls?.mesh === true,
          );
    this.proxy.telemetry.tcpOpened(this.labels);
  }

  /** No upstream: record the connection with `flag` and close downstream. */
  private fail(flag: TcpFlag): void {
    this.flag = flag;
    if (this.proxy.debug) {
      this.proxy.logDebug(
        { cluster: this.clusterName, responseFlags: flag, remote: this.ctx.remoteAddress },
        'TCP connection has no upstream',
      );
    }
    this.opened();
    this.down.destroy();
  }

  private readonly onConnected = (up: net.Socket): void => {
    this.upstream = up;
    if (this.downClosed) {
      up.destroy();
      this.upClosed = true;
      this.maybeFinish();
      return;
    }
    // Half-close both ways: a FIN from one side is passed on and the other direction keeps going
    // (Envoy's tcp_proxy). The downstream server socket was created with allowHalfOpen.
    up.allowHalfOpen = true;
    up.on('error', this.onUpError);
    up.on('close', this.onUpClose);
    up.on('data', this.onUpData);
    up.on('end', this.onUpEnd);
    up.on('drain', this.onUpDrain);
    const down = this.down;
    down.on('data', this.onDownData);
    down.on('end', this.onDownEnd);
    down.on('drain', this.onDownDrain);
    // The downstream may have ended while the upstream was connecting ('end' already emitted).
    if (down.readableEnded) up.end();
  };

  private readonly onConnectFailed = (err: unknown): void => {
    if (this.proxy.debug) {
      this.proxy.logDebug(
        { err, cluster: this.clusterName, upstream: this.host?.key },
        'TCP upstream connect failed',
      );
    }
    this.flag = 'UF';
    this.outcome = 'connectFailure';
    this.upClosed = true;
    this.down.destroy();
    this.maybeFinish();
  };

  private readonly onDownData = (chunk: Buffer): void => {
    this.received += chunk.length;
    if (!this.upstream!.write(chunk)) this.down.pause();
  };

  private readonly onUpData = (chunk: Buffer): void => {
    this.sent += chunk.length;
    if (!this.down.write(chunk)) this.upstream!.pause();
  };

  private readonly onUpDrain = (): void => {
    this.down.resume();
  };

  private readonly onDownDrain = (): void => {
    this.upstream?.resume();
  };

  private readonly onDownEnd = (): void => {
    this.upstream?.end();
  };

  private readonly onUpEnd = (): void => {
    this.down.end();
  };

  private readonly onIdle = (): void => {
    if (this.proxy.debug) {
      this.proxy.logDebug({ cluster: this.clusterName }, 'TCP connection idle timeout');
    }
    this.down.destroy();
    this.upstream?.destroy();
  };

  private readonly onDownError = (err: Error): void => {
    if (this.proxy.debug) this.proxy.logDebug({ err }, 'TCP downstream error');
    this.upstream?.destroy();
  };

  private readonly onUpError = (err: Error): void => {
    if (this.proxy.debug) this.proxy.logDebug({ err }, 'TCP upstream error');
    if (this.flag === '-') this.flag = 'UC';
    this.down.destroy();
  };

  private readonly onDownClose = (): void => {
    this.downClosed = true;
    const up = this.upstream;
    // A clean close means both directions finished: the upstream was ended by us and closes on its
    // own once its writes are flushed. Anything else (reset, timeout) takes the upstream down too.
    if (up && !up.writableEnded) up.destroy();
    if (!up && this.host === undefined) this.upClosed = true;
    this.maybeFinish();
  };

  private readonly onUpClose = (): void => {
    this.upClosed = true;
    if (!this.down.writableEnded) this.down.destroy();
    this.maybeFinish();
  };

  private maybeFinish(): void {
    if (this.finished || !this.downClosed || !this.upClosed) return;
    this.finished = true;
    this.proxy.ended(this);
    const cluster = this.cluster;
    const host = this.host;
    if (cluster && host) {
      cluster.requestFinished(host, this.outcome);
      if (this.holdsBreaker) cluster.release('connections');
    }
    this.proxy.telemetry.tcpClosed({
      labels: this.labels!,
      sentBytes: this.sent,
      receivedBytes: this.received,
      durationMs: this.proxy.clock.now() - this.startMs,
      responseFlags: this.flag,
      upstreamHost: host ? `${host.address}:${host.port}` : '',
      upstreamCluster: this.clusterName,
      downstreamRemote: `${this.ctx.remoteAddress}:${this.ctx.remotePort}`,
    });
  }
}
