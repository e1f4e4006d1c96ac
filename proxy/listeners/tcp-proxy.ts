/**
 * The `tcp_proxy` network filter: one upstream connection per downstream connection, bytes copied
 * both ways with backpressure and half-close, an idle timeout, Istio's TCP metrics and the
 * upstream bookkeeping (breaker `connections`, active requests for least-request balancing).
 * Between two Sail proxies over mesh mTLS it also exchanges peer metadata (peer-exchange.ts), so
 * the TCP metrics name the workload on the other side.
 */
import type * as net from 'node:net';
import type * as tls from 'node:tls';
import { type Clock, systemClock } from '../../common/clock';
import type { Logger } from '../../common/logging';
import { BLACKHOLE_CLUSTER, type TcpProxyHandler } from '../model';
import { dialHost } from '../upstream/source-bound-host';
import {
  type ClusterManager,
  type DownstreamContext,
  PEER_EXCHANGE_ALPN,
  type PeerMetadata,
  type ProxyTelemetry,
  type TrafficLabels,
  type UpstreamCluster,
  type UpstreamHost,
  type UpstreamOutcome,
} from '../types';
import {
  encodePeerExchangeFrame,
  parsePeerExchangeFrame,
  PEER_EXCHANGE_TIMEOUT_MS,
  peerExchangeConnectOptions,
} from './peer-exchange';

/** Envoy's default `idle_timeout` of tcp_proxy: 1 hour. */
export const DEFAULT_TCP_IDLE_TIMEOUT_MS = 3_600_000;

/** Options of {@link TcpProxy}. */
export interface TcpProxyOptions {
  readonly logger: Logger;
  readonly clock?: Clock;
  readonly clusters: ClusterManager;
  readonly telemetry: ProxyTelemetry;
}

/**
 * Envoy response flags a TCP connection can end with. `DPE`/`UPE` (downstream/upstream protocol
 * error): the peer's metadata exchange frame was malformed, too long, or did not come in time.
 */
type TcpFlag = '-' | 'NC' | 'UH' | 'UO' | 'UF' | 'UC' | 'DPE' | 'UPE';

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
  /** The PEER_METADATA_HEADER value {@link frame} was built from. */
  private frameValue = '';
  /** This workload's exchange frame, shared by all connections (rebuilt when the value changes). */
  private frame: Buffer | undefined;

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

  /** @internal this workload's peer exchange frame */
  ownFrame(): Buffer {
    const value = this.telemetry.labels.peerMetadataHeader;
    if (this.frame === undefined || value !== this.frameValue) {
      this.frame = encodePeerExchangeFrame(value);
      this.frameValue = value;
    }
    return this.frame;
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
  /** Which side's exchange frame is being read, if any. */
  private exchanging: 'down' | 'up' | undefined;
  /** Bytes of the frame being read, received so far. */
  private frameBuf: Buffer | undefined;
  private frameTimer: NodeJS.Timeout | undefined;
  /** True once this side wrote its frame to the downstream (closes then flush it first). */
  private answeredDown = false;
  /** The upstream was asked for PEER_EXCHANGE_ALPN (a mesh mTLS host): labels wait for its answer. */
  private offeredExchange = false;
  /** What the downstream's proxy said about its workload (the source, inbound). */
  private downPeerMeta: PeerMetadata | undefined;
  /** What the upstream's proxy said about its workload (the destination, outbound). */
  private upPeerMeta: PeerMetadata | undefined;
  /** Downstream bytes that came behind its exchange frame, for the upstream once connected. */
  private pendingDown: Buffer | undefined;

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
    // The TLS server selected the exchange (listeners terminated mesh mTLS for a Sail client):
    // the client's frame comes first, and its metadata is needed for the labels.
    if (this.ctx.tls?.alpn === PEER_EXCHANGE_ALPN) {
      this.exchanging = 'down';
      this.frameTimer = setTimeout(this.onFrameTimeout, PEER_EXCHANGE_TIMEOUT_MS);
      down.on('data', this.onDownFrameData);
      down.on('end', this.onFrameEnd);
      return;
    }
    this.route();
  }

  /** Picks the upstream and connects to it. */
  private route(): void {
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
    const meshTls = host.transport.tls?.mesh === true ? host.transport.tls : undefined;
    if (meshTls) {
      // The labels wait for the peer's metadata (or for learning there is none).
      this.offeredExchange = true;
      this.proxy.clusters
        .connect(host, peerExchangeConnectOptions(meshTls))
        .then(this.onConnected, this.onConnectFailed);
      return;
    }
    this.opened();
    this.proxy.clusters
      .connect(dialHost(host, this.ctx))
      .then(this.onConnected, this.onConnectFailed);
  }

  /** Labels the connection and counts it opened; once per connection. */
  private opened(): void {
    if (this.labels) return;
    const ctx = this.ctx;
    this.labels =
      ctx.direction === 'inbound'
        ? this.proxy.telemetry.labels.inbound(
            ctx.originalDst,
            ctx.tls?.peer,
            this.downPeerMeta,
            ctx.connectionSecurity === 'mutual_tls',
          )
        : this.proxy.telemetry.labels.outbound(
            this.clusterName,
            ctx.originalDst,
            this.host?.transport.tls?.mesh === true,
            this.upPeerMeta,
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
    this.closeDown();
  }

  /** Closes the downstream; after our exchange frame, once it is flushed (the peer wants it). */
  private closeDown(): void {
    if (this.answeredDown) this.down.destroySoon();
    else this.down.destroy();
  }

  // -------------------------------------------------------------------------------------------
  // Peer metadata exchange

  /** Accumulates the downstream's frame; once whole, answers with ours and routes. */
  private readonly onDownFrameData = (chunk: Buffer): void => {
    const buf = this.frameBuf ? Buffer.concat([this.frameBuf, chunk]) : chunk;
    const r = parsePeerExchangeFrame(buf);
    if (r.kind === 'incomplete') {
      this.frameBuf = buf;
      return;
    }
    const down = this.down;
    down.off('data', this.onDownFrameData);
    down.off('end', this.onFrameEnd);
    if (r.kind === 'invalid') return this.exchangeFailed('DPE', r.reason);
    this.downPeerMeta = this.exchangeDone(r.payload);
    // Held until the upstream connects (onConnected resumes the socket).
    down.pause();
    if (buf.length > r.frameBytes) this.pendingDown = buf.subarray(r.frameBytes);
    down.write(this.proxy.ownFrame());
    this.answeredDown = true;
    this.route();
  };

  /** Accumulates the upstream's frame; once whole, labels the connection and relays the rest. */
  private readonly onUpFrameData = (chunk: Buffer): void => {
    const buf = this.frameBuf ? Buffer.concat([this.frameBuf, chunk]) : chunk;
    const r = parsePeerExchangeFrame(buf);
    if (r.kind === 'incomplete') {
      this.frameBuf = buf;
      return;
    }
    const up = this.upstream!;
    up.off('data', this.onUpFrameData);
    up.off('end', this.onFrameEnd);
    if (r.kind === 'invalid') return this.exchangeFailed('UPE', r.reason);
    this.upPeerMeta = this.exchangeDone(r.payload);
    this.opened();
    up.on('data', this.onUpData);
    up.on('end', this.onUpEnd);
    if (buf.length > r.frameBytes) this.onUpData(buf.subarray(r.frameBytes));
  };

  /** Ends the exchange; returns the peer's metadata. */
  private exchangeDone(payload: string): PeerMetadata | undefined {
    clearTimeout(this.frameTimer);
    this.exchanging = undefined;
    this.frameBuf = undefined;
    // A frame whose payload is not metadata keeps the stream usable; only the labels stay unknown
    // (decodePeerMetadata ignores fields it does not know, so a newer peer's payload still reads).
    const meta = this.proxy.telemetry.labels.decodePeerMetadata(payload);
    if (meta === undefined && this.proxy.debug) {
      this.proxy.logDebug({ cluster: this.clusterName }, 'Peer exchange metadata is malformed');
    }
    return meta;
  }

  /** The side being read ended before its frame was whole. */
  private readonly onFrameEnd = (): void => {
    this.exchangeFailed(this.exchanging === 'up' ? 'UPE' : 'DPE', 'ended before its frame');
  };

  private readonly onFrameTimeout = (): void => {
    this.frameTimer = undefined;
    this.exchangeFailed(this.exchanging === 'up' ? 'UPE' : 'DPE', 'no frame in time');
  };

  /** Closes the connection: past a bad frame, metadata and application bytes cannot be told apart. */
  private exchangeFailed(flag: TcpFlag, reason: string): void {
    clearTimeout(this.frameTimer);
    this.frameBuf = undefined;
    this.exchanging = undefined;
    this.flag = flag;
    if (flag === 'UPE') this.outcome = 'gatewayError';
    if (this.proxy.debug) {
      this.proxy.logDebug(
        { cluster: this.clusterName, responseFlags: flag, reason, remote: this.ctx.remoteAddress },
        'TCP peer exchange failed',
      );
    }
    this.down.destroy();
    this.upstream?.destroy();
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
    if (this.offeredExchange && (up as tls.TLSSocket).alpnProtocol === PEER_EXCHANGE_ALPN) {
      // Our frame goes first; the client's bytes may follow it at once. The upstream's bytes
      // reach the client only after its frame (onUpFrameData).
      up.write(this.proxy.ownFrame());
      this.exchanging = 'up';
      this.frameTimer = setTimeout(this.onFrameTimeout, PEER_EXCHANGE_TIMEOUT_MS);
      up.on('data', this.onUpFrameData);
      up.on('end', this.onFrameEnd);
    } else {
      // Any other ALPN: an Envoy or older peer, no exchange.
      this.opened();
      up.on('data', this.onUpData);
      up.on('end', this.onUpEnd);
    }
    up.on('drain', this.onUpDrain);
    const down = this.down;
    down.on('data', this.onDownData);
    down.on('end', this.onDownEnd);
    down.on('drain', this.onDownDrain);
    // After an inbound exchange the downstream was paused (adding a 'data' listener does not
    // resume a paused stream): resume it unless the bytes that came behind the frame already
    // filled the upstream's buffer (onUpDrain resumes it then).
    let flowing = true;
    const pending = this.pendingDown;
    if (pending) {
      this.pendingDown = undefined;
      this.received += pending.length;
      flowing = up.write(pending);
    }
    if (flowing) down.resume();
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
    this.closeDown();
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
    clearTimeout(this.frameTimer);
    const up = this.upstream;
    // A clean close means both directions finished: the upstream was ended by us and closes on its
    // own once its writes are flushed. Anything else (reset, timeout) takes the upstream down too.
    if (up && !up.writableEnded) up.destroy();
    if (!up && this.host === undefined) this.upClosed = true;
    this.maybeFinish();
  };

  private readonly onUpClose = (): void => {
    this.upClosed = true;
    clearTimeout(this.frameTimer);
    if (!this.down.writableEnded) this.down.destroy();
    this.maybeFinish();
  };

  private maybeFinish(): void {
    if (this.finished || !this.downClosed || !this.upClosed) return;
    this.finished = true;
    clearTimeout(this.frameTimer);
    // Closed before the labels were settled (a failed connect or exchange toward a mesh host, or a
    // downstream that never sent its frame): counted opened now, with what is known.
    this.opened();
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
