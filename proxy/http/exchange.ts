/**
 * One downstream request through the router: route, fault, redirect / direct response, or
 * forwarding with header edits, retries, timeouts and mirrors, then exactly one telemetry record.
 *
 * Event plumbing avoids per-request closures: Node listeners are module functions that reach the
 * Exchange through a symbol on the emitter, and timers pass the Exchange as their argument.
 */
import { performance } from 'node:perf_hooks';
import type { Clock } from '../../common/clock';
import type { Logger } from '../../common/logging';
import type {
  Cluster,
  FaultPolicy,
  HttpHandler,
  MirrorPolicy,
  RetryPolicy,
  RouteAction,
  RouteTable,
  WeightedCluster,
} from '../model';
import {
  type ClusterManager,
  type ConfigHolder,
  type DownstreamContext,
  type Labeler,
  PEER_METADATA_HEADER,
  type PeerMetadata,
  type ProxyTelemetry,
  type TrafficLabels,
  type UpstreamCluster,
  type UpstreamHost,
  type UpstreamOutcome,
} from '../types';
import { newRequestId } from './request-id';
import type { Downstream } from './downstream';
import {
  type HeaderMap,
  appendHeader,
  applyHeaderEdits,
  applyXfcc,
  buildRedirectLocation,
  buildXfccElement,
  computeHash,
  copyEndToEnd,
  deleteHeader,
  firstValue,
  httpToGrpcStatus,
  isGrpcContentType,
} from './headers';
import {
  type CompiledRoute,
  findRoute,
  headerForMatch,
  pickWeightedCluster,
  rewritePath,
} from './routing';
import { dialHost } from '../upstream/source-bound-host';
import {
  type UpstreamFailure,
  type UpstreamListener,
  UpstreamPools,
  type UpstreamRequest,
  type UpstreamRequestHead,
} from './upstream-pool';

/** Methods that may be retried after the request reached the upstream (RFC 9110 §9.2.2). */
const IDEMPOTENT: ReadonlySet<string> = new Set([
  'GET',
  'HEAD',
  'OPTIONS',
  'PUT',
  'DELETE',
  'TRACE',
]);

/** gRPC status codes and the retry conditions naming them. */
const GRPC_RETRY: ReadonlyMap<string, string> = new Map([
  ['1', 'cancelled'],
  ['4', 'deadline-exceeded'],
  ['8', 'resource-exhausted'],
  ['13', 'internal'],
  ['14', 'unavailable'],
]);

/** Retry conditions that cover each kind of failure before response headers (Envoy
 * `RetryStateImpl::wouldRetryFromReset`). */
const RETRY_ON_FAILURE: Readonly<Record<UpstreamFailure | 'timeout', readonly string[]>> = {
  connect: ['5xx', 'gateway-error', 'reset', 'connect-failure'],
  refused: ['5xx', 'gateway-error', 'reset', 'refused-stream'],
  reset: ['5xx', 'gateway-error', 'reset'],
  timeout: ['5xx', 'gateway-error', 'reset'],
};

/** A slow mirror is dropped once this much body waits for it: mirrors never hold memory long. */
const MIRROR_MAX_BACKLOG_BYTES = 1 << 20;

/** Envoy's local reply texts. */
const TEXT_NO_ROUTE = 'no route';
const TEXT_NO_CLUSTER = 'cluster not found';
const TEXT_NO_HEALTHY = 'no healthy upstream';
const TEXT_TIMEOUT = 'upstream request timeout';
const TEXT_OVERFLOW =
  'upstream connect error or disconnect/reset before headers. reset reason: overflow';
const TEXT_FAULT = 'fault filter abort';
const RESET_TEXT: Readonly<Record<UpstreamFailure, string>> = {
  connect:
    'upstream connect error or disconnect/reset before headers. reset reason: connection failure',
  refused:
    'upstream connect error or disconnect/reset before headers. reset reason: remote refused stream reset',
  reset:
    'upstream connect error or disconnect/reset before headers. reset reason: connection termination',
};
const RESET_FLAG: Readonly<Record<UpstreamFailure, string>> = {
  connect: 'UF',
  refused: 'UR',
  reset: 'UC',
};

/** What every exchange of one connection manager shares. */
export interface ExchangeEnv {
  readonly log: Logger;
  readonly clock: Clock;
  readonly config: ConfigHolder;
  readonly clusters: ClusterManager;
  readonly telemetry: ProxyTelemetry;
  readonly pools: UpstreamPools;
  readonly localPrincipal: () => string;
  readonly meshUpstreamProtocol: 'http1' | 'http2';
  readonly maxBufferedRequestBytes: number;
  /** Set by drain(): responses close their HTTP/1.1 connection. */
  readonly draining: boolean;
}

/** Per downstream connection: the handler, how we got the connection, and cached values. */
export class ConnState {
  /** Requests in flight on this connection (HTTP/1.1 drain closes idle ones at once). */
  active = 0;
  /** The downstream socket (set by the manager), closed after the last response when draining. */
  socket: { end(): void } | undefined;
  private xfcc: string | null | undefined;
  /** This connection's own pools when it keeps its caller's address (see {@link poolsFor}). */
  private ownPools: UpstreamPools | undefined;

  constructor(
    readonly handler: HttpHandler,
    readonly ctx: DownstreamContext,
    /** `https` when the connection is TLS. */
    readonly scheme: string,
    /** `addr:port` of the client, for the access log. */
    readonly remote: string,
  ) {}

  /**
   * The pools an upstream request of this connection uses: the manager's, shared by every
   * connection; or, when this connection keeps its caller's address (original_src), pools of its
   * own, since their connections are bound to that address and no other caller may use them.
   * Bounded by the connection: {@link close} releases them.
   */
  poolsFor(env: ExchangeEnv): UpstreamPools {
    if (this.ctx.originalSource === undefined) return env.pools;
    this.ownPools ??= new UpstreamPools(env.clusters, env.log, env.pools.h1Client);
    return this.ownPools;
  }

  /** The downstream connection closed: its own upstream connections close too. */
  close(): void {
    this.ownPools?.close();
    this.ownPools = undefined;
  }

  /** This hop's XFCC element, computed once per connection; undefined without a peer cert. */
  xfccElement(localPrincipal: () => string): string | undefined {
    if (this.xfcc === undefined) {
      const peer = this.ctx.tls?.peer;
      this.xfcc = peer
        ? buildXfccElement(localPrincipal(), peer, this.handler.clientCertDetails)
        : null;
    }
    return this.xfcc ?? undefined;
  }

  /**
   * The labels of one request on this connection: inbound ones name the peer that called us,
   * outbound ones the cluster we called (`mtls` and `peerMeta` come from the upstream hop).
   */
  requestLabels(
    labeler: Labeler,
    clusterName: string,
    mtls: boolean,
    peerMeta: PeerMetadata | undefined,
  ): TrafficLabels {
    const ctx = this.ctx;
    return ctx.direction === 'inbound'
      ? labeler.inbound(
          ctx.originalDst,
          ctx.tls?.peer,
          peerMeta,
          ctx.connectionSecurity === 'mutual_tls',
        )
      : labeler.outbound(clusterName, ctx.originalDst, mtls, peerMeta);
  }
}

/** The routing table a handler uses now. */
export function routeTableOf(handler: HttpHandler, config: ConfigHolder): RouteTable | undefined {
  if (handler.routeTable) return handler.routeTable;
  return handler.rdsName !== undefined ? config.current.routes.get(handler.rdsName) : undefined;
}

/** The protocol toward `host` for a request that arrived over `downstream`. */
export function upstreamProtocolFor(
  cluster: Cluster,
  host: UpstreamHost,
  downstream: 'http1' | 'http2',
  meshProtocol: 'http1' | 'http2',
): 'http1' | 'http2' {
  let p: 'http1' | 'http2';
  switch (cluster.upstreamProtocol) {
    case 'http2':
      p = 'http2';
      break;
    case 'downstream':
      p = downstream;
      break;
    default:
      p = 'http1';
  }
  // Between two Sail proxies, HTTP/1.1 from the application rides pooled, multiplexed h2.
  if (p === 'http1' && host.transport.tls?.mesh === true) p = meshProtocol;
  return p;
}

/** `host-shadow[:port]`: Envoy's authority for mirrored requests. */
function shadowAuthority(authority: string): string {
  const colon = authority.lastIndexOf(':');
  if (colon > 0 && authority.lastIndexOf(']') < colon) {
    return authority.slice(0, colon) + '-shadow' + authority.slice(colon);
  }
  return authority + '-shadow';
}

const kExchange = Symbol('sail.exchange');
type Tagged = NodeJS.EventEmitter & { [kExchange]?: Exchange };

function onBodyData(this: Tagged, chunk: Buffer): void {
  this[kExchange]?.onRequestData(chunk);
}
function onBodyEnd(this: Tagged): void {
  this[kExchange]?.onRequestEnd();
}
function onBodyError(this: Tagged): void {
  // A broken request body is seen as the downstream closing ('close' follows).
}
function onDownDrain(this: Tagged): void {
  this[kExchange]?.onDownstreamDrain();
}
function onDownClose(this: Tagged): void {
  this[kExchange]?.onDownstreamClose();
}
function onGlobalTimeout(ex: Exchange): void {
  ex.onGlobalTimeout();
}
function onPerTryTimeout(ex: Exchange): void {
  ex.onPerTryTimeout();
}
function onBackoffDone(ex: Exchange): void {
  ex.onBackoffDone();
}
function onFaultDelayDone(ex: Exchange): void {
  ex.onFaultDelayDone();
}

/** A fire-and-forget copy of the request to a mirror cluster; its response is discarded. */
class MirrorSink implements UpstreamListener {
  request: UpstreamRequest | undefined;
  private blocked = false;
  private backlog = 0;
  private finished = false;

  constructor(
    private readonly log: Logger,
    private readonly cluster: UpstreamCluster,
    private readonly host: UpstreamHost,
  ) {}

  write(chunk: Buffer): void {
    const u = this.request;
    if (!u || this.finished) return;
    if (this.blocked) {
      this.backlog += chunk.length;
      if (this.backlog > MIRROR_MAX_BACKLOG_BYTES) {
        this.abort();
        return;
      }
    }
    if (!u.write(chunk)) this.blocked = true;
  }

  end(): void {
    if (!this.finished) this.request?.end();
  }

  abort(): void {
    if (this.finished) return;
    this.request?.abort();
    this.done('localReset');
  }

  private done(outcome: UpstreamOutcome): void {
    if (this.finished) return;
    this.finished = true;
    this.cluster.requestFinished(this.host, outcome);
    this.cluster.release('requests');
  }

  onUpstreamConnected(): void {}
  onUpstreamContinue(): void {}
  onUpstreamHeaders(_u: UpstreamRequest, status: number): void {
    if (status >= 500) this.status5xx = true;
  }
  private status5xx = false;
  onUpstreamData(): void {
    // Discarded: a mirror's response never reaches anyone.
  }
  onUpstreamEnd(): void {
    this.done(this.status5xx ? '5xx' : 'success');
  }
  onUpstreamError(_u: UpstreamRequest, kind: UpstreamFailure, err: Error): void {
    if (this.log.isLevelEnabled('debug')) {
      this.log.debug({ err, reason: kind, cluster: this.host.cluster }, 'Mirror request failed');
    }
    this.done(kind === 'connect' ? 'connectFailure' : 'gatewayError');
  }
  onUpstreamDrain(): void {
    this.blocked = false;
    this.backlog = 0;
  }
}

/** One downstream request. */
export class Exchange implements UpstreamListener {
  private readonly startMs = performance.now();
  private readonly startTime: number;
  private flags = '';
  private route: CompiledRoute | undefined;
  private action: RouteAction | undefined;
  private weighted: WeightedCluster | undefined;
  private clusterName = '';
  private cluster: UpstreamCluster | undefined;
  private head: UpstreamRequestHead | undefined;
  private hash: number | undefined;
  private setCookie: string | undefined;
  private readonly isGrpc: boolean;
  private requestId = '';
  private peerMeta: PeerMetadata | undefined;
  private mtls = false;

  // Request body
  /** Body chunks kept for a retry; undefined when retries are off or the body outgrew the limit. */
  private replay: Buffer[] | undefined;
  private replayBytes = 0;
  private bodyDone: boolean;
  private bodyPaused = false;
  private requestBytes = 0;
  private continueSent = false;

  // Attempts
  private attempt: UpstreamRequest | undefined;
  private attemptHost: UpstreamHost | undefined;
  private holdsPending = false;
  private holdsRetry = false;
  private tried: Set<UpstreamHost> | undefined;
  private retriesUsed = 0;
  private backingOff = false;
  private upstreamPaused = false;
  private globalTimer: NodeJS.Timeout | undefined;
  private perTryTimer: NodeJS.Timeout | undefined;
  private waitTimer: NodeJS.Timeout | undefined;
  private mirrors: MirrorSink[] | undefined;

  // Response
  private status = 0;
  private grpcStatus = '';
  private responseBytes = 0;
  private upstreamHost = '';
  private done = false;
  private resetByUs = false;

  constructor(
    private readonly env: ExchangeEnv,
    private readonly conn: ConnState,
    private readonly down: Downstream,
    private readonly expectContinue: boolean,
  ) {
    this.startTime = env.clock.now();
    this.isGrpc = isGrpcContentType(down.headers['content-type']);
    this.bodyDone = down.bodyEmpty;
  }

  /** Routes and serves the request. Never throws. */
  start(): void {
    const events = this.down.events as Tagged;
    events[kExchange] = this;
    events.on('drain', onDownDrain);
    events.on('close', onDownClose);
    this.conn.active++;
    try {
      this.route_();
    } catch (err) {
      // A bug or an unexpected input must not take the proxy down: answer 500 and log.
      this.env.log.error({ err }, 'Request handling failed');
      this.localReply(500, '', 'internal error');
    }
  }

  private route_(): void {
    const down = this.down;
    const handler = this.conn.handler;
    const xri = down.headers['x-request-id'];
    if (xri !== undefined) this.requestId = firstValue(xri) ?? '';
    if (this.conn.ctx.direction === 'inbound') {
      const pm = firstValue(down.headers[PEER_METADATA_HEADER]);
      if (pm !== undefined) this.peerMeta = this.env.telemetry.labels.decodePeerMetadata(pm);
    }
    const table = routeTableOf(handler, this.env.config);
    const r = table ? findRoute(table, down) : undefined;
    if (!r) {
      this.localReply(404, 'NR', TEXT_NO_ROUTE);
      return;
    }
    this.route = r;
    const fault = r.route.fault;
    if (handler.faultFilter && fault && this.applyFault(fault)) return;
    this.dispatch();
  }

  /** True when the fault filter took over (a delay is running or the request was aborted). */
  private applyFault(f: FaultPolicy): boolean {
    if (f.delay && f.delay.delayMs > 0 && Math.random() < f.delay.fraction) {
      this.addFlag('DI');
      this.waitTimer = setTimeout(onFaultDelayDone, f.delay.delayMs, this);
      return true;
    }
    return this.applyAbort(f);
  }

  private applyAbort(f: FaultPolicy): boolean {
    const a = f.abort;
    if (!a || !(Math.random() < a.fraction)) return false;
    this.addFlag('FI');
    if (a.grpcStatus !== undefined) this.grpcReply(a.grpcStatus, TEXT_FAULT);
    else this.localReply(a.httpStatus ?? 503, '', TEXT_FAULT);
    return true;
  }

  /** @internal timer */
  onFaultDelayDone(): void {
    this.waitTimer = undefined;
    if (this.done) return;
    const fault = this.route?.route.fault;
    if (fault && this.applyAbort(fault)) return;
    this.dispatch();
  }

  private dispatch(): void {
    const r = this.route;
    if (!r) return;
    const action = r.route.action;
    switch (action.kind) {
      case 'redirect': {
        const prefix =
          r.route.match.path.kind === 'prefix' || r.route.match.path.kind === 'pathSeparatedPrefix'
            ? r.route.match.path.value
            : undefined;
        const location = buildRedirectLocation(action, this.down, prefix);
        this.respondLocal(action.responseCode, { location }, undefined);
        return;
      }
      case 'direct':
        this.respondLocal(
          action.status,
          action.body !== undefined ? { 'content-type': 'text/plain' } : {},
          action.body,
        );
        return;
      case 'route':
        this.forward(action, r);
        return;
    }
  }

  private forward(action: RouteAction, r: CompiledRoute): void {
    const env = this.env;
    const down = this.down;
    const conn = this.conn;
    const wc = pickWeightedCluster(action);
    if (!wc) {
      this.localReply(503, 'NC', TEXT_NO_CLUSTER);
      return;
    }
    this.weighted = wc;
    this.clusterName = wc.name;
    const cluster = env.clusters.get(wc.name);
    if (!cluster) {
      this.localReply(503, 'NC', TEXT_NO_CLUSTER);
      return;
    }
    this.cluster = cluster;

    // Request headers toward the upstream.
    const h = copyEndToEnd(down.headers);
    deleteHeader(h, PEER_METADATA_HEADER);
    if (this.requestId === '') {
      this.requestId = newRequestId();
      h['x-request-id'] = this.requestId;
    }
    if (h['x-forwarded-proto'] === undefined) h['x-forwarded-proto'] = down.scheme;
    const xff = firstValue(h['x-forwarded-for']);
    const remote = conn.ctx.remoteAddress;
    h['x-forwarded-for'] = xff ? xff + ', ' + remote : remote;
    applyXfcc(h, conn.handler.forwardClientCert, conn.xfccElement(env.localPrincipal));
    for (const e of r.requestEdits) applyHeaderEdits(h, e);
    const we = wc.requestHeaders;
    if (we.set.length > 0 || we.add.length > 0 || we.remove.length > 0) applyHeaderEdits(h, we);
    if (!this.expectContinue) delete h.expect;
    const authority = action.hostRewrite ?? down.authority;
    h.host = authority;
    this.head = {
      method: down.method,
      path: rewritePath(r, action, down.path),
      authority,
      scheme: down.scheme,
      headers: h,
    };
    if (r.hasHashPolicies) {
      const res = computeHash(
        action.hashPolicies,
        { headers: down.headers, path: down.path, sourceIp: remote },
        name => headerForMatch(down, name),
      );
      this.hash = res.hash;
      this.setCookie = res.setCookie;
    }
    this.action = action;
    if (action.retry && action.retry.numRetries > 0) this.replay = [];
    if (action.timeoutMs > 0) {
      this.globalTimer = setTimeout(onGlobalTimeout, action.timeoutMs, this);
    }
    for (const m of action.mirrors) {
      if (m.fraction >= 1 || Math.random() < m.fraction) this.startMirror(m);
    }
    this.startAttempt();
    if (!this.bodyDone && !this.done) {
      const body = down.body as Tagged;
      body[kExchange] = this;
      body.on('data', onBodyData);
      body.on('end', onBodyEnd);
      body.on('error', onBodyError);
    }
  }

  private startMirror(m: MirrorPolicy): void {
    const head = this.head;
    const cluster = this.env.clusters.get(m.cluster);
    if (!head || !cluster) return;
    const host = cluster.pick({
      ...(this.hash !== undefined ? { hash: this.hash } : {}),
      originalDst: this.conn.ctx.originalDst,
    });
    if (!host || !cluster.tryAcquire('requests')) return;
    cluster.requestStarted(host);
    const sink = new MirrorSink(this.env.log, cluster, host);
    const authority = shadowAuthority(head.authority);
    const headers: HeaderMap = { ...head.headers, host: authority };
    delete headers.expect;
    if (host.transport.tls?.mesh === true) {
      headers[PEER_METADATA_HEADER] = this.env.telemetry.labels.peerMetadataHeader;
    }
    const protocol = upstreamProtocolFor(
      cluster.config,
      host,
      this.down.protocol,
      this.env.meshUpstreamProtocol,
    );
    sink.request = this.conn
      .poolsFor(this.env)
      .request(
        dialHost(host, this.conn.ctx),
        cluster.config,
        protocol,
        { method: head.method, path: head.path, authority, scheme: head.scheme, headers },
        sink,
        this.bodyDone,
      );
    (this.mirrors ??= []).push(sink);
  }

  private startAttempt(): void {
    const cluster = this.cluster;
    const head = this.head;
    if (!cluster || !head || this.done) return;
    const ctx = this.conn.ctx;
    const host = cluster.pick({
      ...(this.hash !== undefined ? { hash: this.hash } : {}),
      originalDst: ctx.originalDst,
      ...(this.tried ? { exclude: this.tried } : {}),
    });
    if (!host) {
      this.localReply(503, 'UH', TEXT_NO_HEALTHY);
      return;
    }
    if (!cluster.tryAcquire('requests')) {
      this.localReply(503, 'UO', TEXT_OVERFLOW);
      return;
    }
    if (!cluster.tryAcquire('pending')) {
      cluster.release('requests');
      this.localReply(503, 'UO', TEXT_OVERFLOW);
      return;
    }
    this.holdsPending = true;
    this.attemptHost = host;
    this.upstreamHost = host.address + ':' + String(host.port);
    cluster.requestStarted(host);
    const protocol = upstreamProtocolFor(
      cluster.config,
      host,
      this.down.protocol,
      this.env.meshUpstreamProtocol,
    );
    this.mtls = host.transport.tls?.mesh === true;
    if (this.mtls)
      head.headers[PEER_METADATA_HEADER] = this.env.telemetry.labels.peerMetadataHeader;
    else deleteHeader(head.headers, PEER_METADATA_HEADER);
    if (this.expectContinue && !this.continueSent && protocol === 'http2') {
      // HTTP/2 upstreams get the body without waiting; tell the client to send it.
      delete head.headers.expect;
      this.continueSent = true;
      this.down.writeContinue();
    }
    const endStream = this.bodyDone && this.requestBytes === 0;
    const u = this.conn
      .poolsFor(this.env)
      .request(dialHost(host, ctx), cluster.config, protocol, head, this, endStream);
    this.attempt = u;
    const retry = this.action?.retry;
    if (retry?.perTryTimeoutMs !== undefined && retry.perTryTimeoutMs > 0) {
      this.perTryTimer = setTimeout(onPerTryTimeout, retry.perTryTimeoutMs, this);
    }
    if (!endStream) {
      const replay = this.replay;
      if (replay) for (const c of replay) u.write(c);
      if (this.bodyDone) u.end();
    }
    if (this.bodyPaused) {
      this.bodyPaused = false;
      this.down.body.resume();
    }
  }

  // -------------------------------------------------------------------------------------------
  // Request body

  /** @internal */
  onRequestData(chunk: Buffer): void {
    if (this.done) return;
    this.requestBytes += chunk.length;
    const replay = this.replay;
    if (replay) {
      this.replayBytes += chunk.length;
      if (this.replayBytes > this.env.maxBufferedRequestBytes) {
        // Too large to replay: retries are off for this request.
        this.replay = undefined;
      } else {
        replay.push(chunk);
      }
    }
    const mirrors = this.mirrors;
    if (mirrors) for (const m of mirrors) m.write(chunk);
    const u = this.attempt;
    if (u) {
      if (!u.write(chunk)) {
        this.bodyPaused = true;
        this.down.body.pause();
      }
    } else if (this.backingOff) {
      if (this.replay === undefined) {
        // Between attempts with nothing to replay from: the request cannot be completed.
        this.failNow();
      } else {
        // Between attempts: hold the rest of the body until the next attempt.
        this.bodyPaused = true;
        this.down.body.pause();
      }
    }
    // Otherwise the response is already complete: the rest of the body has nowhere to go.
  }

  /** @internal */
  onRequestEnd(): void {
    if (this.done) return;
    this.bodyDone = true;
    this.attempt?.end();
    const mirrors = this.mirrors;
    if (mirrors) for (const m of mirrors) m.end();
  }

  /** @internal */
  onUpstreamDrain(): void {
    if (this.bodyPaused && !this.done) {
      this.bodyPaused = false;
      this.down.body.resume();
    }
  }

  // -------------------------------------------------------------------------------------------
  // Upstream events

  onUpstreamConnected(): void {
    this.releasePending();
  }

  onUpstreamContinue(): void {
    if (!this.continueSent && this.expectContinue) {
      this.continueSent = true;
      this.down.writeContinue();
    }
  }

  onUpstreamHeaders(
    u: UpstreamRequest,
    status: number,
    headers: HeaderMap,
    endStream: boolean,
  ): void {
    if (this.done || u !== this.attempt) return;
    this.releasePending();
    this.clearPerTry();
    const retry = this.action?.retry;
    if (retry && this.retriableResponse(retry, status, headers)) {
      if (this.canRetry(retry, true)) {
        this.attempt = undefined;
        u.abort();
        this.finishAttempt('5xx');
        this.scheduleRetry(retry);
        return;
      }
    }
    this.status = status;
    const out = copyEndToEnd(headers);
    if (this.conn.ctx.direction === 'inbound') {
      // Answer a mesh peer with our own metadata so it can label the destination.
      if (this.peerMeta) out[PEER_METADATA_HEADER] = this.env.telemetry.labels.peerMetadataHeader;
      else deleteHeader(out, PEER_METADATA_HEADER);
    } else {
      const pm = firstValue(out[PEER_METADATA_HEADER]);
      if (pm !== undefined) {
        this.peerMeta = this.env.telemetry.labels.decodePeerMetadata(pm);
        deleteHeader(out, PEER_METADATA_HEADER);
      }
    }
    const wre = this.weighted?.responseHeaders;
    if (wre && (wre.set.length > 0 || wre.add.length > 0 || wre.remove.length > 0)) {
      applyHeaderEdits(out, wre);
    }
    const r = this.route;
    if (r) for (const e of r.responseEdits) applyHeaderEdits(out, e);
    if (this.setCookie !== undefined) appendHeader(out, 'set-cookie', this.setCookie);
    if (endStream) {
      const gs = firstValue(headers['grpc-status']);
      if (gs !== undefined) this.grpcStatus = gs;
    }
    if (this.env.draining) this.down.closeConnection();
    if (endStream) {
      // Complete with its headers (HTTP/2 END_STREAM): done with the upstream now, so a
      // downstream 'close' arriving before the upstream stream's 'end' is not seen as an abort.
      this.attempt = undefined;
      this.clearTimers();
      this.finishAttempt(status >= 500 ? '5xx' : 'success');
    }
    const trailersExpected = isGrpcContentType(out['content-type']) || out.trailer !== undefined;
    try {
      this.down.respond(status, out, endStream, trailersExpected);
    } catch (err) {
      if (this.env.log.isLevelEnabled('debug')) {
        this.env.log.debug({ err }, 'Upstream response headers rejected');
      }
      this.attempt = undefined;
      u.abort();
      this.finishAttempt('gatewayError');
      this.localReply(502, 'UPE', 'upstream sent invalid headers');
    }
  }

  onUpstreamData(u: UpstreamRequest, chunk: Buffer): void {
    if (this.done || u !== this.attempt) return;
    this.responseBytes += chunk.length;
    if (!this.down.write(chunk)) {
      this.upstreamPaused = true;
      u.pause();
    }
  }

  onUpstreamEnd(u: UpstreamRequest, trailers: HeaderMap | undefined): void {
    if (u !== this.attempt) return;
    this.attempt = undefined;
    if (trailers) {
      const gs = firstValue(trailers['grpc-status']);
      if (gs !== undefined) this.grpcStatus = gs;
    }
    this.clearTimers();
    this.finishAttempt(this.status >= 500 ? '5xx' : 'success');
    if (!this.done) this.down.end(trailers);
  }

  onUpstreamError(u: UpstreamRequest, kind: UpstreamFailure, err: Error): void {
    if (u !== this.attempt) return;
    this.attempt = undefined;
    this.releasePending();
    this.clearPerTry();
    this.finishAttempt(kind === 'connect' ? 'connectFailure' : 'gatewayError');
    if (this.done) return;
    if (this.env.log.isLevelEnabled('debug')) {
      this.env.log.debug(
        { err, reason: kind, upstream: this.upstreamHost },
        'Upstream request failed',
      );
    }
    if (this.down.headersSent) {
      this.addFlag('UC');
      this.resetDownstream();
      return;
    }
    const retry = this.action?.retry;
    if (retry && this.retriableFailure(retry, kind) && this.canRetry(retry, kind === 'reset')) {
      this.scheduleRetry(retry);
      return;
    }
    this.localReply(503, RESET_FLAG[kind], RESET_TEXT[kind]);
  }

  // -------------------------------------------------------------------------------------------
  // Retries and timeouts

  private retriableResponse(retry: RetryPolicy, status: number, headers: HeaderMap): boolean {
    const on = retry.retryOn;
    if (status >= 500 && on.has('5xx')) return true;
    if ((status === 502 || status === 503 || status === 504) && on.has('gateway-error'))
      return true;
    if (status === 409 && on.has('retriable-4xx')) return true;
    if (on.has('retriable-status-codes') && retry.retriableStatusCodes.includes(status))
      return true;
    // gRPC: only a trailers-only response carries grpc-status in its headers (Envoy does the same).
    const gs = headers['grpc-status'];
    if (gs !== undefined) {
      const cond = GRPC_RETRY.get(firstValue(gs) ?? '');
      if (cond !== undefined && on.has(cond)) return true;
    }
    return false;
  }

  private retriableFailure(retry: RetryPolicy, kind: UpstreamFailure | 'timeout'): boolean {
    for (const c of RETRY_ON_FAILURE[kind]) if (retry.retryOn.has(c)) return true;
    return false;
  }

  /** Whether one more attempt may be made; `reached`: the upstream may have seen the request. */
  private canRetry(retry: RetryPolicy, reached: boolean): boolean {
    if (this.done || this.down.headersSent) return false;
    if (this.retriesUsed >= retry.numRetries) {
      this.addFlag('URX');
      return false;
    }
    // A request the upstream may have processed is repeated only when repeating is harmless.
    if (reached && !IDEMPOTENT.has(this.down.method)) return false;
    if (this.replay === undefined && this.requestBytes > 0) return false;
    const cluster = this.cluster;
    if (!cluster || !cluster.tryAcquire('retries')) return false;
    this.holdsRetry = true;
    return true;
  }

  private scheduleRetry(retry: RetryPolicy): void {
    if (this.attemptHost) (this.tried ??= new Set()).add(this.attemptHost);
    this.retriesUsed++;
    // Envoy: full jitter over an exponentially growing window, capped at the max interval.
    const window = Math.min(retry.backoffMaxMs, retry.backoffBaseMs * 2 ** (this.retriesUsed - 1));
    const delay = Math.floor(Math.random() * window);
    if (!this.bodyDone && !this.bodyPaused) {
      this.bodyPaused = true;
      this.down.body.pause();
    }
    this.backingOff = true;
    this.waitTimer = setTimeout(onBackoffDone, delay, this);
  }

  /** @internal timer */
  onBackoffDone(): void {
    this.waitTimer = undefined;
    this.backingOff = false;
    if (!this.done) this.startAttempt();
  }

  /** @internal timer */
  onGlobalTimeout(): void {
    this.globalTimer = undefined;
    if (this.done) return;
    this.abortAttempt();
    this.localReply(504, 'UT', TEXT_TIMEOUT);
  }

  /** @internal timer */
  onPerTryTimeout(): void {
    this.perTryTimer = undefined;
    if (this.done || !this.attempt) return;
    this.abortAttempt();
    const retry = this.action?.retry;
    if (retry && this.retriableFailure(retry, 'timeout') && this.canRetry(retry, true)) {
      this.scheduleRetry(retry);
      return;
    }
    this.localReply(504, 'UT', TEXT_TIMEOUT);
  }

  private abortAttempt(): void {
    const u = this.attempt;
    if (!u) return;
    this.attempt = undefined;
    u.abort();
    this.releasePending();
    this.finishAttempt('gatewayError');
  }

  private releasePending(): void {
    if (this.holdsPending) {
      this.holdsPending = false;
      this.cluster?.release('pending');
    }
  }

  private finishAttempt(outcome: UpstreamOutcome): void {
    const host = this.attemptHost;
    const cluster = this.cluster;
    if (!host || !cluster) return;
    this.attemptHost = undefined;
    cluster.requestFinished(host, outcome);
    cluster.release('requests');
    if (this.holdsRetry) {
      this.holdsRetry = false;
      cluster.release('retries');
    }
  }

  private clearPerTry(): void {
    if (this.perTryTimer) {
      clearTimeout(this.perTryTimer);
      this.perTryTimer = undefined;
    }
  }

  private clearTimers(): void {
    this.clearPerTry();
    if (this.globalTimer) {
      clearTimeout(this.globalTimer);
      this.globalTimer = undefined;
    }
    if (this.waitTimer) {
      clearTimeout(this.waitTimer);
      this.waitTimer = undefined;
    }
  }

  // -------------------------------------------------------------------------------------------
  // Downstream events

  /** @internal */
  onDownstreamDrain(): void {
    if (this.upstreamPaused) {
      this.upstreamPaused = false;
      this.attempt?.resume();
    }
  }

  /** @internal the response completed or the client went away. */
  onDownstreamClose(): void {
    if (this.done) return;
    if (!this.down.complete) {
      if (!this.resetByUs) this.addFlag('DC');
      const mirrors = this.mirrors;
      if (mirrors && !this.bodyDone) for (const m of mirrors) m.abort();
    }
    this.abortAttempt();
    this.finalize();
  }

  /** The request cannot go on (body lost between attempts): answer or reset. */
  private failNow(): void {
    this.localReply(503, 'URX', RESET_TEXT.reset);
  }

  // -------------------------------------------------------------------------------------------
  // Local replies

  private respondLocal(status: number, headers: HeaderMap, body: string | undefined): void {
    if (this.down.headersSent) {
      this.resetDownstream();
      return;
    }
    this.status = status;
    if (this.env.draining) this.down.closeConnection();
    try {
      if (body !== undefined && body !== '') {
        const buf = Buffer.from(body);
        headers['content-length'] = String(buf.length);
        this.down.respond(status, headers, false, false);
        this.responseBytes += buf.length;
        this.down.write(buf);
        this.down.end(undefined);
      } else {
        headers['content-length'] = '0';
        this.down.respond(status, headers, true, false);
      }
    } catch (err) {
      if (this.env.log.isLevelEnabled('debug')) {
        this.env.log.debug({ err }, 'Local reply failed');
      }
      this.resetDownstream();
    }
  }

  /** Envoy's local reply: a short text body, or a gRPC trailers-only answer for gRPC requests. */
  private localReply(status: number, flag: string, text: string): void {
    if (flag !== '') this.addFlag(flag);
    this.abortAttempt();
    this.clearTimers();
    if (this.isGrpc) {
      this.grpcReply(httpToGrpcStatus(status), text);
      return;
    }
    this.respondLocal(status, { 'content-type': 'text/plain' }, text);
  }

  /** A gRPC trailers-only response (HTTP 200, grpc-status, grpc-message). */
  private grpcReply(grpcStatus: number, message: string): void {
    this.abortAttempt();
    this.clearTimers();
    this.grpcStatus = String(grpcStatus);
    this.respondLocal(
      200,
      {
        'content-type': 'application/grpc',
        'grpc-status': this.grpcStatus,
        'grpc-message': encodeURIComponent(message),
      },
      undefined,
    );
  }

  /** Aborts the downstream response; its 'close' is then not the client's doing (no DC). */
  private resetDownstream(): void {
    this.resetByUs = true;
    this.down.reset();
  }

  private addFlag(flag: string): void {
    if (this.flags === '') this.flags = flag;
    else if (!this.flags.split(',').includes(flag)) this.flags += ',' + flag;
  }

  // -------------------------------------------------------------------------------------------
  // Completion

  private finalize(): void {
    this.done = true;
    this.clearTimers();
    this.releasePending();
    this.conn.active--;
    if (this.env.draining && this.down.protocol === 'http1' && this.conn.active === 0) {
      this.conn.socket?.end();
    }
    const events = this.down.events as Tagged;
    events[kExchange] = undefined;
    const body = this.down.body as Tagged;
    body[kExchange] = undefined;
    const env = this.env;
    try {
      const labels = this.conn.requestLabels(
        env.telemetry.labels,
        this.clusterName,
        this.mtls,
        this.peerMeta,
      );
      const down = this.down;
      env.telemetry.recordRequest({
        labels,
        requestProtocol: this.isGrpc ? 'grpc' : 'http',
        responseCode: this.status,
        grpcResponseStatus: this.grpcStatus,
        responseFlags: this.flags === '' ? '-' : this.flags,
        durationMs: performance.now() - this.startMs,
        requestBytes: this.requestBytes,
        responseBytes: this.responseBytes,
        method: down.method,
        authority: down.authority,
        path: down.path,
        requestId: this.requestId,
        upstreamHost: this.upstreamHost,
        upstreamCluster: this.clusterName,
        routeName: this.route?.route.name ?? '',
        downstreamRemote: this.conn.remote,
        userAgent: firstValue(down.headers['user-agent']) ?? '',
        startTime: this.startTime,
      });
    } catch (err) {
      env.log.warn({ err }, 'Request telemetry failed');
    }
  }
}
