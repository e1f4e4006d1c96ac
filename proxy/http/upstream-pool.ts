/**
 * Upstream connection pools and requests. Pools are keyed by `UpstreamHost.key` (address, port and
 * transport), which stays the same across config pushes while the endpoint does, so pushes do not
 * drop warm connections.
 *
 * - HTTP/1.1: one keep-alive `http.Agent` per host whose sockets come from
 *   `ClusterManager.connect` (callback form of `createConnection`), honouring the cluster's
 *   `maxRequestsPerConnection` and `idleTimeoutMs`.
 * - HTTP/2: multiplexed sessions per host over a socket from `connect(host, { alpn: ['h2'] })`;
 *   a session that closes or receives GOAWAY leaves the pool and the next request opens another.
 *
 * A request reports to an {@link UpstreamListener} through method calls (no per-request closures:
 * the Node event listeners are module functions that find the request through a symbol).
 */
import * as http from 'node:http';
import * as http2 from 'node:http2';
import type * as net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from '../../common/logging';
import type { Cluster } from '../model';
import type { ClusterManager, UpstreamHost } from '../types';
import type { HeaderMap } from './headers';
import { LeanH1Pool, LeanH1Request } from './lean-h1';
import {
  upstreamAlpn,
  type UpstreamFailure,
  type UpstreamListener,
  type UpstreamRequest,
  type UpstreamRequestHead,
} from './upstream-types';

export {
  upstreamAlpn,
  type UpstreamFailure,
  type UpstreamListener,
  type UpstreamRequest,
  type UpstreamRequestHead,
};

/** Marks errors of `ClusterManager.connect` so they are told apart from resets. */
const kConnectFailure = Symbol('sail.connectFailure');
/** The UpstreamRequest behind a Node object. */
const kUpstream = Symbol('sail.upstream');
/** Requests served on a socket, for maxRequestsPerConnection. */
const kRequests = Symbol('sail.requests');

/** Upstream HTTP/1.1 keep-alive sockets close after this idle time unless the cluster says
 * otherwise: shorter than Node's default server keep-alive (5 s), so the pool, not the server,
 * closes idle sockets and a request rarely lands on one the server is closing. */
const DEFAULT_H1_IDLE_MS = 4_000;
/** Idle HTTP/2 sessions close after this (Envoy's cluster idle_timeout default is 1 h). */
const DEFAULT_H2_IDLE_MS = 300_000;
/** Streams per HTTP/2 session before another session is opened. */
const MAX_STREAMS_PER_SESSION = 1000;
/** HTTP/2 flow-control windows: large enough that one stream can fill a fast link. */
const H2_STREAM_WINDOW = 1 << 20;
const H2_SESSION_WINDOW = 16 << 20;
/** Body bytes an HTTP/2 request holds before its session is ready. */
const H2_PENDING_HIGH_WATER = 64 * 1024;

/** Shared HTTP/2 settings of client and server sessions. */
export const H2_SETTINGS: http2.Settings = {
  enablePush: false,
  initialWindowSize: H2_STREAM_WINDOW,
};
export { H2_SESSION_WINDOW };

type Tagged<T> = T & { [kUpstream]?: UpstreamRequest };
type ErrorWithCode = Error & { code?: string; [kConnectFailure]?: boolean };

// ---------------------------------------------------------------------------------------------
// HTTP/1.1

/** A keep-alive agent for one upstream host. */
class HostAgent extends http.Agent {
  /** The latest host object for the key (pushes replace host objects with equal keys). */
  host: UpstreamHost;
  /** From the cluster in force (refreshed on each request: a push may change it). */
  maxRequests: number;

  constructor(
    private readonly clusters: ClusterManager,
    host: UpstreamHost,
    cluster: Cluster,
  ) {
    super({
      keepAlive: true,
      maxSockets: Infinity,
      maxFreeSockets: 1024,
      scheduling: 'lifo',
      timeout: cluster.idleTimeoutMs ?? DEFAULT_H1_IDLE_MS,
    });
    this.host = host;
    this.maxRequests = cluster.maxRequestsPerConnection ?? 0;
  }

  /** Set by {@link retire}: sockets are not kept for reuse. */
  private retired = false;

  override createConnection(
    _options: http.ClientRequestArgs,
    callback?: (err: Error | null, stream: Duplex) => void,
  ): Duplex | null | undefined {
    const host = this.host;
    // ALPN: an upstream TLS transport may offer h2 first; this socket speaks HTTP/1.1.
    const alpn = upstreamAlpn(host, 'http/1.1');
    this.clusters.connect(host, alpn).then(
      socket => {
        callback?.(null, socket);
      },
      (err: unknown) => {
        const e: ErrorWithCode =
          err instanceof Error ? err : new Error('upstream connect failed', { cause: err });
        e[kConnectFailure] = true;
        callback?.(e, undefined as unknown as Duplex);
      },
    );
    return undefined;
  }

  override keepSocketAlive(socket: Duplex): boolean {
    const s = socket as Duplex & { [kRequests]?: number };
    const n = (s[kRequests] ?? 0) + 1;
    s[kRequests] = n;
    if (this.retired || (this.maxRequests > 0 && n >= this.maxRequests)) return false;
    // The base class sets the idle timeout and unrefs the socket.
    return (super.keepSocketAlive as (s: Duplex) => boolean)(socket);
  }

  /** Keeps no socket for reuse any more: idle ones close now, busy ones when they are freed. */
  retire(): void {
    this.retired = true;
    for (const list of Object.values(this.freeSockets)) {
      for (const socket of list ?? []) socket.destroy();
    }
  }
}

class H1UpstreamRequest implements UpstreamRequest {
  readonly protocol = 'http1';
  owner: unknown;
  private readonly req: Tagged<http.ClientRequest>;
  private res: Tagged<http.IncomingMessage> | undefined;
  /** The listener has been told the outcome (end or error) or the request was aborted. */
  private settled = false;

  constructor(
    readonly host: UpstreamHost,
    agent: HostAgent,
    head: UpstreamRequestHead,
    private readonly listener: UpstreamListener,
    endStream: boolean,
  ) {
    const req: Tagged<http.ClientRequest> = http.request({
      agent,
      host: host.address,
      port: host.port,
      method: head.method,
      path: head.path,
      headers: head.headers as http.OutgoingHttpHeaders,
      setHost: false,
    });
    req[kUpstream] = this;
    this.req = req;
    req.on('socket', onH1Socket);
    req.on('response', onH1Response);
    req.on('error', onH1Error);
    req.on('continue', onH1Continue);
    req.on('drain', onH1Drain);
    if (endStream) req.end();
  }

  write(chunk: Buffer): boolean {
    if (this.settled) return true;
    return this.req.write(chunk);
  }

  end(): void {
    if (!this.settled) this.req.end();
  }

  abort(): void {
    if (this.settled) return;
    this.settled = true;
    this.req.destroy();
  }

  pause(): void {
    this.res?.pause();
  }

  resume(): void {
    this.res?.resume();
  }

  /** @internal */
  onSocket(): void {
    if (!this.settled) this.listener.onUpstreamConnected(this);
  }

  /** @internal */
  onResponse(res: Tagged<http.IncomingMessage>): void {
    if (this.settled) {
      res.resume();
      return;
    }
    this.res = res;
    res[kUpstream] = this;
    res.on('data', onH1ResData);
    res.on('end', onH1ResEnd);
    res.on('close', onH1ResClose);
    res.on('error', onH1ResError);
    this.listener.onUpstreamHeaders(this, res.statusCode ?? 502, res.headers as HeaderMap, false);
  }

  /** @internal */
  onResponseEnd(): void {
    if (this.settled) return;
    this.settled = true;
    const res = this.res;
    const trailers = res && res.rawTrailers.length > 0 ? (res.trailers as HeaderMap) : undefined;
    this.listener.onUpstreamEnd(this, trailers);
  }

  /** @internal */
  onResponseClose(): void {
    if (this.settled) return;
    const res = this.res;
    if (res && !res.complete) {
      this.settled = true;
      this.listener.onUpstreamError(this, 'reset', new Error('upstream response aborted'));
    }
  }

  /** @internal */
  onError(err: ErrorWithCode): void {
    if (this.settled) return;
    this.settled = true;
    let kind: UpstreamFailure = 'reset';
    if (err[kConnectFailure] === true) kind = 'connect';
    else if (
      this.req.reusedSocket &&
      this.res === undefined &&
      (err.code === 'ECONNRESET' || err.code === 'EPIPE')
    ) {
      // The server closed the idle keep-alive socket as we reused it: never processed.
      kind = 'refused';
    }
    this.listener.onUpstreamError(this, kind, err);
  }

  /** @internal */
  onContinue(): void {
    if (!this.settled) this.listener.onUpstreamContinue(this);
  }

  /** @internal */
  onDrain(): void {
    if (!this.settled) this.listener.onUpstreamDrain(this);
  }

  /** @internal */
  onData(chunk: Buffer): void {
    if (!this.settled) this.listener.onUpstreamData(this, chunk);
  }
}

function h1Of(x: Tagged<object>): H1UpstreamRequest | undefined {
  return x[kUpstream] as H1UpstreamRequest | undefined;
}
function onH1Socket(this: Tagged<http.ClientRequest>): void {
  h1Of(this)?.onSocket();
}
function onH1Response(this: Tagged<http.ClientRequest>, res: http.IncomingMessage): void {
  const u = h1Of(this);
  if (u) u.onResponse(res);
  else res.resume();
}
function onH1Error(this: Tagged<http.ClientRequest>, err: Error): void {
  h1Of(this)?.onError(err);
}
function onH1Continue(this: Tagged<http.ClientRequest>): void {
  h1Of(this)?.onContinue();
}
function onH1Drain(this: Tagged<http.ClientRequest>): void {
  h1Of(this)?.onDrain();
}
function onH1ResData(this: Tagged<http.IncomingMessage>, chunk: Buffer): void {
  h1Of(this)?.onData(chunk);
}
function onH1ResEnd(this: Tagged<http.IncomingMessage>): void {
  h1Of(this)?.onResponseEnd();
}
function onH1ResClose(this: Tagged<http.IncomingMessage>): void {
  h1Of(this)?.onResponseClose();
}
function onH1ResError(this: Tagged<http.IncomingMessage>): void {
  // Reported through 'close' (response incomplete); the listener keeps 'error' from throwing.
}

// ---------------------------------------------------------------------------------------------
// HTTP/2

const { NGHTTP2_REFUSED_STREAM, NGHTTP2_CANCEL } = http2.constants;

/** One HTTP/2 session to a host. */
class H2Conn {
  active = 0;
  total = 0;
  usable = true;

  constructor(
    readonly session: http2.ClientHttp2Session,
    readonly pool: H2HostPool,
  ) {}

  capacity(): number {
    const max = this.session.remoteSettings.maxConcurrentStreams ?? MAX_STREAMS_PER_SESSION;
    return Math.min(max, MAX_STREAMS_PER_SESSION);
  }
}

type TaggedSession = http2.ClientHttp2Session & { [kConn]?: H2Conn };
const kConn = Symbol('sail.h2conn');

/** The HTTP/2 sessions of one host. */
class H2HostPool {
  host: UpstreamHost;
  private readonly conns: H2Conn[] = [];
  private connecting = 0;
  private readonly waiters: H2UpstreamRequest[] = [];
  private closed = false;

  constructor(
    readonly pools: UpstreamPools,
    host: UpstreamHost,
    /** The cluster in force (refreshed on each request: a push may change it). */
    public cluster: Cluster,
  ) {
    this.host = host;
  }

  get idle(): boolean {
    return this.conns.length === 0 && this.connecting === 0 && this.waiters.length === 0;
  }

  acquire(u: H2UpstreamRequest): void {
    for (const c of this.conns) {
      if (c.usable && c.active < c.capacity()) {
        this.assign(c, u);
        return;
      }
    }
    this.waiters.push(u);
    if (this.connecting === 0) this.connect();
  }

  /** Takes a waiter back (aborted before its session was ready). */
  cancel(u: H2UpstreamRequest): void {
    const i = this.waiters.indexOf(u);
    if (i >= 0) this.waiters.splice(i, 1);
  }

  private assign(c: H2Conn, u: H2UpstreamRequest): void {
    c.active++;
    c.total++;
    const max = this.cluster.maxRequestsPerConnection ?? 0;
    if (max > 0 && c.total >= max) this.retire(c);
    u.attach(c);
  }

  release(c: H2Conn): void {
    c.active--;
    if (!c.usable && c.active === 0) {
      c.session.close();
    }
    this.serveWaiters();
  }

  /** Retires every session of this host (see UpstreamPools.retireAll). */
  retireAll(): void {
    for (const c of [...this.conns]) this.retire(c);
  }

  /** No new streams on `c`; it closes once its streams are done. */
  retire(c: H2Conn): void {
    if (!c.usable) return;
    c.usable = false;
    const i = this.conns.indexOf(c);
    if (i >= 0) this.conns.splice(i, 1);
    if (c.active === 0) c.session.close();
  }

  private serveWaiters(): void {
    while (this.waiters.length > 0) {
      let conn: H2Conn | undefined;
      for (const c of this.conns) {
        if (c.usable && c.active < c.capacity()) {
          conn = c;
          break;
        }
      }
      if (!conn) {
        if (this.connecting === 0 && !this.closed) this.connect();
        return;
      }
      const u = this.waiters.shift();
      if (u) this.assign(conn, u);
    }
  }

  private connect(): void {
    this.connecting++;
    const host = this.host;
    this.pools.clusters.connect(host, upstreamAlpn(host, 'h2')).then(
      socket => {
        this.connecting--;
        if (this.closed) {
          socket.destroy();
          return;
        }
        this.open(socket);
        this.serveWaiters();
      },
      (err: unknown) => {
        this.connecting--;
        const e = err instanceof Error ? err : new Error('upstream connect failed', { cause: err });
        // Every request waiting now fails: they asked for a connection and none could be made.
        const failed = this.waiters.splice(0);
        for (const u of failed) u.fail('connect', e);
      },
    );
  }

  private open(socket: net.Socket): void {
    const scheme = this.host.transport.tls ? 'https' : 'http';
    const session: TaggedSession = http2.connect(
      `${scheme}://${this.host.address}:${String(this.host.port)}`,
      {
        createConnection: () => socket,
        settings: H2_SETTINGS,
        maxSessionMemory: 64,
      },
    );
    const conn = new H2Conn(session, this);
    session[kConn] = conn;
    this.conns.push(conn);
    session.on('error', onH2SessionError);
    session.on('goaway', onH2SessionGoaway);
    session.on('close', onH2SessionClose);
    session.on('connect', onH2SessionConnect);
    session.setTimeout(this.cluster.idleTimeoutMs ?? DEFAULT_H2_IDLE_MS, onH2SessionTimeout);
    this.pools.sessions.add(session);
  }

  /** @internal the session closed or went away. */
  remove(c: H2Conn): void {
    c.usable = false;
    const i = this.conns.indexOf(c);
    if (i >= 0) this.conns.splice(i, 1);
  }

  close(): void {
    this.closed = true;
    for (const c of this.conns.splice(0)) c.session.destroy();
    const failed = this.waiters.splice(0);
    for (const u of failed) u.fail('connect', new Error('upstream pool closed'));
  }
}

function connOf(s: TaggedSession): H2Conn | undefined {
  return s[kConn];
}
function onH2SessionError(this: TaggedSession): void {
  // The session's streams report their own failure; 'close' follows and removes the session.
}
function onH2SessionGoaway(this: TaggedSession): void {
  const c = connOf(this);
  if (c) c.pool.remove(c);
}
function onH2SessionClose(this: TaggedSession): void {
  const c = connOf(this);
  if (c) {
    c.pool.remove(c);
    c.pool.pools.sessions.delete(this);
  }
}
function onH2SessionConnect(this: TaggedSession): void {
  // A larger connection window than the 64 KiB default: many streams share one session.
  try {
    this.setLocalWindowSize(H2_SESSION_WINDOW);
  } catch {
    // Only fails on a session already closing; nothing to tune then.
  }
}
function onH2SessionTimeout(this: TaggedSession): void {
  const c = connOf(this);
  if (c && c.active === 0) {
    c.pool.retire(c);
  }
}

type TaggedStream = http2.ClientHttp2Stream & { [kUpstream]?: UpstreamRequest };

class H2UpstreamRequest implements UpstreamRequest {
  readonly protocol = 'http2';
  owner: unknown;
  private stream: TaggedStream | undefined;
  private conn: H2Conn | undefined;
  private pending: Buffer[] | undefined;
  private pendingBytes = 0;
  private ended: boolean;
  private settled = false;
  private responded = false;
  private needDrain = false;
  private trailers: HeaderMap | undefined;
  private readonly headers: http2.OutgoingHttpHeaders;

  constructor(
    readonly host: UpstreamHost,
    private readonly pool: H2HostPool,
    head: UpstreamRequestHead,
    private readonly listener: UpstreamListener,
    endStream: boolean,
  ) {
    const h: http2.OutgoingHttpHeaders = {
      ':method': head.method,
      ':path': head.path,
      ':authority': head.authority,
      ':scheme': head.scheme,
    };
    const src = head.headers;
    for (const name of Object.keys(src)) {
      if (name === 'host') continue;
      const v = src[name];
      if (v !== undefined) h[name] = v;
    }
    this.headers = h;
    this.ended = endStream;
    pool.acquire(this);
  }

  /** @internal a session stream slot was assigned. */
  attach(conn: H2Conn): void {
    if (this.settled) {
      conn.pool.release(conn);
      return;
    }
    this.conn = conn;
    let stream: TaggedStream;
    try {
      const endStream = this.ended && this.pending === undefined;
      stream = conn.session.request(this.headers, { endStream });
    } catch (err) {
      // The session closed between the pool's check and now: the request was never sent.
      // Reported on the next tick: the caller may still be inside UpstreamPools.request().
      conn.pool.retire(conn);
      conn.pool.release(conn);
      this.conn = undefined;
      const e = err instanceof Error ? err : new Error('http2 request failed');
      process.nextTick(failLater, this, e);
      return;
    }
    this.stream = stream;
    stream[kUpstream] = this;
    stream.on('response', onH2Response);
    stream.on('continue', onH2Continue);
    // No 'data' listener yet: see onResponse.
    stream.on('trailers', onH2Trailers);
    stream.on('end', onH2End);
    stream.on('error', onH2Error);
    stream.on('close', onH2Close);
    stream.on('drain', onH2Drain);
    this.listener.onUpstreamConnected(this);
    const pending = this.pending;
    if (pending) {
      this.pending = undefined;
      this.pendingBytes = 0;
      for (const c of pending) stream.write(c);
      if (this.ended) stream.end();
      if (this.needDrain) {
        this.needDrain = false;
        this.listener.onUpstreamDrain(this);
      }
    }
  }

  /** @internal fails before a stream exists. */
  fail(kind: UpstreamFailure, err: Error): void {
    if (this.settled) return;
    this.settled = true;
    this.listener.onUpstreamError(this, kind, err);
  }

  write(chunk: Buffer): boolean {
    if (this.settled) return true;
    const s = this.stream;
    if (s) return s.write(chunk);
    (this.pending ??= []).push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pendingBytes >= H2_PENDING_HIGH_WATER) {
      this.needDrain = true;
      return false;
    }
    return true;
  }

  end(): void {
    if (this.settled || this.ended) return;
    this.ended = true;
    this.stream?.end();
  }

  abort(): void {
    if (this.settled) return;
    this.settled = true;
    const s = this.stream;
    if (s) s.close(NGHTTP2_CANCEL);
    else this.pool.cancel(this);
  }

  pause(): void {
    this.stream?.pause();
  }

  resume(): void {
    this.stream?.resume();
  }

  /** @internal */
  onResponse(headers: http2.IncomingHttpHeaders, flags: number): void {
    if (this.settled) return;
    this.responded = true;
    const status = Number(headers[':status']);
    const endStream = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
    this.listener.onUpstreamHeaders(this, status, headers as HeaderMap, endStream);
    // The body flows only now. Node emits 'response' on a later tick than the HEADERS frame
    // arrived, but pushes DATA frames of the same read into a flowing stream at once: with a
    // 'data' listener from the start, body could reach the listener before the headers (an
    // HTTP/1.1 downstream then sent an implicit `200` and had to be reset when the real
    // headers came). Until here the stream buffers, and HTTP/2 flow control holds the rest.
    const s = this.stream;
    if (s && !this.settled) s.on('data', onH2Data);
  }

  /** @internal */
  onContinue(): void {
    if (!this.settled) this.listener.onUpstreamContinue(this);
  }

  /** @internal */
  onData(chunk: Buffer): void {
    if (!this.settled) this.listener.onUpstreamData(this, chunk);
  }

  /** @internal */
  onTrailers(trailers: http2.IncomingHttpHeaders): void {
    this.trailers = trailers as HeaderMap;
  }

  /** @internal */
  onEnd(): void {
    if (this.settled || !this.responded) return;
    this.settled = true;
    this.listener.onUpstreamEnd(this, this.trailers);
  }

  /** @internal */
  onClose(): void {
    const conn = this.conn;
    if (conn) {
      this.conn = undefined;
      conn.pool.release(conn);
    }
    if (this.settled) return;
    const s = this.stream;
    if (s && !this.responded && s.rstCode === NGHTTP2_REFUSED_STREAM) {
      this.fail('refused', new Error('upstream refused the stream'));
    } else if (s && this.responded && s.readableEnded) {
      this.onEnd();
    } else {
      this.fail('reset', new Error(`upstream stream reset (code ${String(s?.rstCode ?? 0)})`));
    }
  }

  /** @internal */
  onDrain(): void {
    if (!this.settled) this.listener.onUpstreamDrain(this);
  }
}

function failLater(u: H2UpstreamRequest, err: Error): void {
  u.fail('refused', err);
}
function h2Of(s: TaggedStream): H2UpstreamRequest | undefined {
  return s[kUpstream] as H2UpstreamRequest | undefined;
}
function onH2Response(this: TaggedStream, headers: http2.IncomingHttpHeaders, flags: number): void {
  h2Of(this)?.onResponse(headers, flags);
}
function onH2Continue(this: TaggedStream): void {
  h2Of(this)?.onContinue();
}
function onH2Data(this: TaggedStream, chunk: Buffer): void {
  h2Of(this)?.onData(chunk);
}
function onH2Trailers(this: TaggedStream, trailers: http2.IncomingHttpHeaders): void {
  h2Of(this)?.onTrailers(trailers);
}
function onH2End(this: TaggedStream): void {
  h2Of(this)?.onEnd();
}
function onH2Error(this: TaggedStream): void {
  // Reported through 'close' with the stream's rstCode; the listener keeps 'error' from throwing.
}
function onH2Close(this: TaggedStream): void {
  h2Of(this)?.onClose();
}
function onH2Drain(this: TaggedStream): void {
  h2Of(this)?.onDrain();
}

// ---------------------------------------------------------------------------------------------
// Pools

/** Which HTTP/1.1 client sends upstream requests: Node's `http.Agent` + `ClientRequest`, or the
 * lean client of lean-h1.ts (own keep-alive pool, llhttp response parsing). */
export type H1UpstreamClient = 'node' | 'lean';

/** The upstream connection pools of one HTTP connection manager. */
export class UpstreamPools {
  /** Open client sessions, destroyed by {@link close}. */
  readonly sessions = new Set<http2.ClientHttp2Session>();
  private readonly agents = new Map<string, HostAgent>();
  private readonly lean = new Map<string, LeanH1Pool>();
  private readonly h2 = new Map<string, H2HostPool>();

  constructor(
    readonly clusters: ClusterManager,
    readonly log: Logger,
    /** The HTTP/1.1 client (default 'node'). */
    readonly h1Client: H1UpstreamClient = 'node',
  ) {}

  /**
   * Sends a request to `host` over `protocol`. `endStream`: the request has no body (`end()`
   * is implied). Failures are reported to `listener`, never thrown.
   */
  request(
    host: UpstreamHost,
    cluster: Cluster,
    protocol: 'http1' | 'http2',
    head: UpstreamRequestHead,
    listener: UpstreamListener,
    endStream: boolean,
  ): UpstreamRequest {
    if (protocol === 'http2') {
      let pool = this.h2.get(host.key);
      if (!pool) {
        pool = new H2HostPool(this, host, cluster);
        this.h2.set(host.key, pool);
      } else {
        pool.host = host;
        pool.cluster = cluster;
      }
      return new H2UpstreamRequest(host, pool, head, listener, endStream);
    }
    // CONNECT answers as a tunnel, which only Node's client handles (and nothing here uses).
    if (this.h1Client === 'lean' && head.method !== 'CONNECT') {
      let pool = this.lean.get(host.key);
      if (!pool) {
        pool = new LeanH1Pool(this.clusters, host, cluster);
        this.lean.set(host.key, pool);
      } else {
        pool.update(host, cluster);
      }
      return new LeanH1Request(host, pool, head, listener, endStream);
    }
    let agent = this.agents.get(host.key);
    if (!agent) {
      agent = new HostAgent(this.clusters, host, cluster);
      this.agents.set(host.key, agent);
    } else {
      agent.host = host;
      agent.maxRequests = cluster.maxRequestsPerConnection ?? 0;
    }
    return new H1UpstreamRequest(host, agent, head, listener, endStream);
  }

  /**
   * Retires every pooled connection after a certificate rotation: requests in flight finish on
   * the connection they have, new requests open new connections (with the new certificate).
   * HTTP/1.1: idle sockets close now, busy ones when their response ends; HTTP/2: no new streams
   * on the old sessions, which close when their streams are done.
   */
  retireAll(): void {
    for (const a of this.agents.values()) a.retire();
    this.agents.clear();
    for (const p of this.lean.values()) p.retire();
    this.lean.clear();
    for (const p of this.h2.values()) p.retireAll();
  }

  /** Closes idle HTTP/2 sessions gracefully (GOAWAY) so that new requests open new ones. */
  drain(): void {
    for (const s of this.sessions) s.close();
  }

  /** Destroys every pooled connection. Idempotent. */
  close(): void {
    for (const a of this.agents.values()) a.destroy();
    this.agents.clear();
    for (const p of this.lean.values()) p.close();
    this.lean.clear();
    for (const p of this.h2.values()) p.close();
    this.h2.clear();
    for (const s of this.sessions) s.destroy();
    this.sessions.clear();
  }
}
