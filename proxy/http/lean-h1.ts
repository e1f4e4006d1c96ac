/**
 * A lean HTTP/1.1 upstream client: the alternative to Node's `http.Agent` + `ClientRequest`
 * (selected by `h1UpstreamClient: 'lean'`). Node's client spends most of a proxied request's CPU
 * in machinery a proxy does not need (agent bookkeeping, OutgoingMessage header storage and
 * validation, IncomingMessage streams); this one keeps its own keep-alive sockets per host,
 * writes the request head as one string, and parses responses with Node's own llhttp binding
 * (the parser `_http_client` uses), delivering exactly the events {@link H1UpstreamRequest} does.
 *
 * One parser per connection, reused across the requests on it. Body chunks are reported from the
 * parser's callbacks; while the listener has paused, they queue in the request (and the socket
 * stops reading), as a paused IncomingMessage buffers.
 */
import type * as net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Cluster } from '../model';
import type { ClusterManager, UpstreamHost } from '../types';
import type { HeaderMap } from './headers';
import { CRLF, HTTP_TOKEN, LAST_CHUNK, headerValueLines, invalidHeader } from './h1-wire';
import {
  type ConsumableSocket,
  consumeSocket,
  foldHeaders,
  isParseError,
  type LlhttpParser as Parser,
  newParser,
  type ParserCallbacks,
  unconsumeSocket,
} from './llhttp';
import {
  upstreamAlpn,
  type UpstreamFailure,
  type UpstreamListener,
  type UpstreamRequest,
  type UpstreamRequestHead,
} from './upstream-types';

/** `SAIL_H1_CLIENT_CONSUME=0`: read through 'data' events only (for comparisons). */
const CONSUME = process.env.SAIL_H1_CLIENT_CONSUME !== '0';

/** Which head lean-h1 writes, for error messages. */
const SIDE = 'upstream request';

/** Node's check for request paths (`_http_client`). */
const INVALID_PATH = /[^\u0021-\u00ff]/;

/** Methods whose empty body gets no `content-length: 0` (Node's useChunkedEncodingByDefault). */
const NO_BODY_METHODS: ReadonlySet<string> = new Set([
  'GET',
  'HEAD',
  'DELETE',
  'OPTIONS',
  'TRACE',
  'CONNECT',
]);

/** Marks errors of `ClusterManager.connect`. */
type ErrorWithCode = Error & { code?: string };

/** Idle sockets close after about this long unless the cluster says otherwise (see
 * upstream-pool.ts: shorter than Node's default server keep-alive of 5 s). */
const DEFAULT_IDLE_MS = 4_000;

/** `name: value` lines of the head (no framing header, no blank line). @throws on bad input */
function headerLines(method: string, path: string, h: HeaderMap, out: LeanH1Request): string {
  if (INVALID_PATH.test(path)) {
    const err: ErrorWithCode = new TypeError('upstream request path contains unescaped characters');
    err.code = 'ERR_UNESCAPED_CHARACTERS';
    throw err;
  }
  let s = method + ' ' + path + ' HTTP/1.1\r\n';
  for (const name of Object.keys(h)) {
    const v = h[name];
    if (v === undefined) continue;
    if (!HTTP_TOKEN.test(name)) throw invalidHeader(name, 'name', SIDE);
    if (name === 'content-length') out.hasLength = true;
    else if (name === 'transfer-encoding') {
      // Set by a header edit: its framing is what the upstream will read.
      out.hasLength = true;
      out.chunked = String(v).toLowerCase().endsWith('chunked');
    } else if (name === 'expect') out.expect = true;
    // Node joins cookie values (RFC 6265 §5.4: one cookie header).
    const value = typeof v !== 'string' && name === 'cookie' && v.length > 1 ? v.join('; ') : v;
    s += headerValueLines(name, value, SIDE);
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Connections

const kConn = Symbol('sail.leanConn');
type TaggedSocket = ConsumableSocket & { [kConn]?: LeanConn };
type LlhttpParser = Parser<LeanConn>;

/** One upstream socket with its parser. */
class LeanConn {
  /** The request being served; undefined while idle. */
  req: LeanH1Request | undefined;
  /** Requests assigned to this socket so far. */
  requests = 0;
  /** When it became idle (performance.now()). */
  idleSince = 0;
  closed = false;
  /** The socket ended: it must not go back to the pool. */
  ending = false;
  /** The parser was told the input ended. */
  finished = false;
  /** The socket is paused for the request's backpressure. */
  paused = false;
  /** The current message is a 1xx interim response. */
  interim = false;
  error: ErrorWithCode | undefined;
  /** Header / trailer fields delivered ahead of their completion (llhttp's slow path). */
  fields: string[] = [];
  parser: LlhttpParser | undefined;

  constructor(
    readonly socket: TaggedSocket,
    readonly pool: LeanH1Pool,
  ) {
    this.parser = newParser<LeanConn>('response', this, 0, PARSER_CALLBACKS);
    // An upstream connection never keeps the process alive, idle (as Node's agent's) or busy: a
    // busy one serves a downstream request, whose own socket does. Once, not per request: ref()
    // and unref() go through the TLS socket's method proxy, ~2 % of a proxy's CPU when toggled.
    socket.unref();
    socket[kConn] = this;
    socket.on('data', onSocketData);
    socket.on('end', onSocketEnd);
    socket.on('error', onSocketError);
    socket.on('close', onSocketClose);
    socket.on('drain', onSocketDrain);
    this.maybeConsume();
  }

  /** Hands the socket's reads to the parser natively (see consumeSocket). */
  maybeConsume(): void {
    if (CONSUME && !this.paused) consumeSocket(this.socket, this.parser);
  }

  /** Stops the parser reading the handle natively (the JS stream reads it again). */
  unconsume(): void {
    unconsumeSocket(this.socket, this.parser);
  }

  pauseReading(): void {
    if (!this.paused) {
      this.paused = true;
      // Backpressure is rare: the JS stream's own pausing does it.
      this.unconsume();
      this.socket.pause();
    }
  }

  resumeReading(): void {
    if (this.paused) {
      this.paused = false;
      this.socket.resume();
      this.maybeConsume();
    }
  }
}

function connOf(s: TaggedSocket): LeanConn | undefined {
  return s[kConn];
}

function onSocketData(this: TaggedSocket, d: Buffer): void {
  const conn = connOf(this);
  const parser = conn?.parser;
  if (!conn || !parser) return;
  if (conn.req === undefined) {
    // Bytes on an idle connection: nothing asked for them, and the framing is now unknown.
    this.destroy();
    return;
  }
  afterExecute(conn, parser.execute(d));
  conn.maybeConsume();
}

function afterExecute(conn: LeanConn, ret: number | Error): void {
  if (isParseError(ret)) {
    conn.socket.destroy();
    const req = conn.req;
    if (req) req.connLost(conn, 'reset', ret);
  }
}

function onSocketEnd(this: TaggedSocket): void {
  const conn = connOf(this);
  if (!conn) return;
  conn.ending = true;
  conn.finished = true;
  // A response delimited by the end of the connection completes here.
  conn.parser?.finish();
  this.destroy();
}

function onSocketError(this: TaggedSocket, err: Error): void {
  const conn = connOf(this);
  if (conn) conn.error ??= err;
  this.destroy();
}

function onSocketClose(this: TaggedSocket): void {
  const conn = connOf(this);
  if (!conn || conn.closed) return;
  conn.closed = true;
  conn.ending = true;
  conn.unconsume();
  const parser = conn.parser;
  if (parser) {
    if (!conn.finished) parser.finish();
    conn.parser = undefined;
    parser.conn = undefined;
    setImmediate(closeParser, parser);
  }
  conn.pool.remove(conn);
  const req = conn.req;
  if (req) {
    const err = conn.error;
    if (req.responded) {
      req.connLost(conn, 'reset', new Error('upstream response aborted', { cause: err }));
    } else {
      const e: ErrorWithCode = err ?? new Error('socket hang up');
      if (err === undefined) e.code = 'ECONNRESET';
      // A reused keep-alive socket the server had closed: the request was never processed.
      const refused = req.reused && (e.code === 'ECONNRESET' || e.code === 'EPIPE');
      req.connLost(conn, refused ? 'refused' : 'reset', e);
    }
  }
}

function closeParser(p: LlhttpParser): void {
  p.free();
  p.close();
}

function onSocketDrain(this: TaggedSocket): void {
  connOf(this)?.req?.onDrain();
}

// Parser callbacks (`this` is the parser).

const PARSER_CALLBACKS: ParserCallbacks<LeanConn> = {
  onHeaders(headers): void {
    const conn = this.conn;
    if (conn) for (const h of headers) conn.fields.push(h);
  },

  onHeadersComplete(
    _versionMajor,
    _versionMinor,
    headers,
    _method,
    _url,
    statusCode,
    _statusMessage,
    upgrade,
    shouldKeepAlive,
  ): number {
    const conn = this.conn;
    let raw = headers;
    if (conn && raw === undefined) {
      raw = conn.fields;
      conn.fields = [];
    }
    const req = conn?.req;
    if (!conn || !req || req.responded) {
      // A response nobody asked for (or a second one): the connection is unusable.
      conn?.socket.destroy();
      return 0;
    }
    if (upgrade) {
      // 101 without having asked for an upgrade (upgrades take their own path): unusable.
      conn.socket.destroy();
      req.connLost(conn, 'reset', new Error('upstream switched protocols unasked'));
      return 2;
    }
    if (statusCode >= 100 && statusCode < 200) {
      conn.interim = true;
      if (statusCode === 100) req.onContinue();
      return 1;
    }
    req.onHeaders(statusCode, raw ?? [], shouldKeepAlive);
    if (req.isHead || statusCode === 304) return 1;
    return 0;
  },

  onMessageComplete(): void {
    const conn = this.conn;
    if (!conn) return;
    const trailers = conn.fields;
    if (trailers.length > 0) conn.fields = [];
    if (conn.interim) {
      conn.interim = false;
      return;
    }
    conn.req?.onComplete(conn, trailers);
  },

  /** kOnExecute: the parser consumed a read natively (`this` is the parser). */
  onExecute(ret): void {
    const conn = this.conn;
    if (conn) afterExecute(conn, ret);
  },

  /** A response starts: on an idle connection nothing asked for it (see onSocketData). */
  onMessageBegin(): void {
    const conn = this.conn;
    if (conn !== undefined && conn.req === undefined) conn.socket.destroy();
  },

  onBody(chunk): void {
    this.conn?.req?.onBody(chunk);
  },
};

// ---------------------------------------------------------------------------------------------
// Pool

/** The keep-alive sockets of one upstream host. */
export class LeanH1Pool {
  /** The latest host object for the key (pushes replace host objects with equal keys). */
  host: UpstreamHost;
  /** From the cluster in force (refreshed on each request: a push may change them). */
  maxRequests: number;
  idleMs: number;
  /** Idle connections, most recently used last (LIFO: warm sockets stay warm). */
  private readonly idle: LeanConn[] = [];
  private readonly conns = new Set<LeanConn>();
  private sweeper: NodeJS.Timeout | undefined;
  private retired = false;
  private closed = false;

  constructor(
    private readonly clusters: ClusterManager,
    host: UpstreamHost,
    cluster: Cluster,
  ) {
    this.host = host;
    this.maxRequests = cluster.maxRequestsPerConnection ?? 0;
    this.idleMs = cluster.idleTimeoutMs ?? DEFAULT_IDLE_MS;
  }

  /** Refreshes host and cluster settings before a request. */
  update(host: UpstreamHost, cluster: Cluster): void {
    this.host = host;
    this.maxRequests = cluster.maxRequestsPerConnection ?? 0;
    this.idleMs = cluster.idleTimeoutMs ?? DEFAULT_IDLE_MS;
  }

  /** Gives `req` an idle connection now, or opens one for it. */
  acquire(req: LeanH1Request): void {
    const idle = this.idle;
    while (idle.length > 0) {
      const conn = idle.pop();
      if (conn && !conn.closed && !conn.ending) {
        req.attach(conn);
        return;
      }
    }
    this.connect(req);
  }

  private connect(req: LeanH1Request): void {
    const host = this.host;
    this.clusters.connect(host, upstreamAlpn(host, 'http/1.1')).then(
      socket => {
        this.onConnected(socket, req);
      },
      (err: unknown) => {
        const e = err instanceof Error ? err : new Error('upstream connect failed', { cause: err });
        req.connectFailed(e);
      },
    );
  }

  private onConnected(socket: net.Socket, req: LeanH1Request): void {
    if (this.closed) {
      socket.destroy();
      req.connectFailed(new Error('upstream pool closed'));
      return;
    }
    const conn = new LeanConn(socket, this);
    this.conns.add(conn);
    if (req.settled) {
      // Aborted while connecting: the fresh connection serves the next request.
      this.release(conn);
      return;
    }
    req.attach(conn);
  }

  /** The response on `conn` completed: keep it for reuse or close it. */
  release(conn: LeanConn): void {
    conn.req = undefined;
    conn.resumeReading();
    if (
      this.retired ||
      conn.ending ||
      conn.closed ||
      (this.maxRequests > 0 && conn.requests >= this.maxRequests)
    ) {
      conn.socket.destroy();
      return;
    }
    conn.idleSince = performance.now();
    this.idle.push(conn);
    if (this.sweeper === undefined) {
      const every = Math.max(10, Math.min(1000, this.idleMs / 8));
      this.sweeper = setInterval(sweepPool, every, this);
      this.sweeper.unref();
    }
  }

  /** @internal the connection closed. */
  remove(conn: LeanConn): void {
    this.conns.delete(conn);
    const i = this.idle.indexOf(conn);
    if (i >= 0) this.idle.splice(i, 1);
  }

  /** @internal closes connections idle for longer than the idle timeout. */
  sweep(): void {
    const limit = performance.now() - this.idleMs;
    const idle = this.idle;
    // Oldest first: the stack's bottom.
    while (idle.length > 0) {
      const conn = idle[0];
      if (!conn || conn.idleSince > limit) break;
      idle.shift();
      conn.socket.destroy();
    }
    if (idle.length === 0 && this.sweeper !== undefined) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }

  /** Keeps no connection for reuse any more: idle ones close now, busy ones when freed. */
  retire(): void {
    this.retired = true;
    for (const conn of this.idle.splice(0)) conn.socket.destroy();
    this.stopSweeper();
  }

  /** Destroys every connection (requests on busy ones fail with 'reset'). Idempotent. */
  close(): void {
    this.closed = true;
    this.retired = true;
    this.idle.length = 0;
    for (const conn of [...this.conns]) conn.socket.destroy();
    this.stopSweeper();
  }

  private stopSweeper(): void {
    if (this.sweeper !== undefined) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }
}

function sweepPool(pool: LeanH1Pool): void {
  pool.sweep();
}

// ---------------------------------------------------------------------------------------------
// Requests

/** One HTTP/1.1 request on a {@link LeanH1Pool} connection. */
export class LeanH1Request implements UpstreamRequest {
  readonly protocol = 'http1';
  owner: unknown;
  /** The request carries content-length (or a transfer-encoding from a header edit). */
  hasLength = false;
  /** The body is sent with chunked framing. */
  chunked = false;
  expect = false;
  readonly isHead: boolean;
  /** The listener has been told the outcome (end or error) or the request was aborted. */
  settled = false;
  /** Response headers were reported. */
  responded = false;
  /** The connection had served a request before this one. */
  reused = false;
  private conn: LeanConn | undefined;
  /** Head lines without framing; undefined once written. */
  private head: string | undefined;
  private readonly method: string;
  /** Body written before the connection was ready. */
  private pending: Buffer[] | undefined;
  private pendingBytes = 0;
  private ended: boolean;
  private bodyBytes = 0;
  private needDrain = false;
  private keepAlive = true;
  private paused = false;
  /** Response body held while paused; `endHeld`: the response completed behind it. */
  private held: Buffer[] | undefined;
  private endHeld = false;
  private trailers: HeaderMap | undefined;

  /** @throws Error when the path or a header is invalid (nothing is sent then) */
  constructor(
    readonly host: UpstreamHost,
    pool: LeanH1Pool,
    head: UpstreamRequestHead,
    private readonly listener: UpstreamListener,
    endStream: boolean,
  ) {
    this.method = head.method;
    this.isHead = head.method === 'HEAD';
    this.head = headerLines(head.method, head.path, head.headers, this);
    this.ended = endStream;
    pool.acquire(this);
  }

  /** @internal a connection was assigned. */
  attach(conn: LeanConn): void {
    this.conn = conn;
    this.reused = conn.requests > 0;
    conn.requests++;
    conn.req = this;
    this.listener.onUpstreamConnected(this);
    if (this.settled || this.conn !== conn) return;
    const pending = this.pending;
    if (pending || this.ended || this.expect) {
      this.pending = undefined;
      this.pendingBytes = 0;
      const socket = conn.socket;
      // The usual request (no body, or its body still to come) is one write: no cork needed.
      const many = pending !== undefined || (this.ended && this.chunked);
      if (many) socket.cork();
      this.flushHead(socket, pending !== undefined);
      let ok = true;
      if (pending) for (const c of pending) ok = this.writeBody(socket, c);
      if (this.ended && this.chunked) ok = socket.write(LAST_CHUNK, 'latin1');
      if (many) socket.uncork();
      // Below the socket's high-water mark no 'drain' will come: the caller may write now.
      if (this.needDrain && ok) {
        this.needDrain = false;
        this.listener.onUpstreamDrain(this);
      }
    }
  }

  /** Writes the head with its framing; `body`: body bytes follow. */
  private flushHead(socket: net.Socket, body: boolean): void {
    let s = this.head ?? '';
    this.head = undefined;
    if (!this.hasLength) {
      if (body || !this.ended) {
        this.chunked = true;
        s += 'transfer-encoding: chunked\r\n';
      } else if (!NO_BODY_METHODS.has(this.method)) {
        s += 'content-length: 0\r\n';
      }
    }
    socket.write(s + CRLF, 'latin1');
  }

  private writeBody(socket: net.Socket, chunk: Buffer): boolean {
    this.bodyBytes += chunk.length;
    if (!this.chunked) return socket.write(chunk);
    socket.write(chunk.length.toString(16) + CRLF, 'latin1');
    socket.write(chunk);
    return socket.write(CRLF, 'latin1');
  }

  /** @internal the connection could not be made. */
  connectFailed(err: Error): void {
    if (this.settled) return;
    this.settled = true;
    this.listener.onUpstreamError(this, 'connect', err);
  }

  write(chunk: Buffer): boolean {
    if (this.settled || this.ended || chunk.length === 0) return true;
    const conn = this.conn;
    if (!conn) {
      (this.pending ??= []).push(chunk);
      this.pendingBytes += chunk.length;
      if (this.pendingBytes >= PENDING_HIGH_WATER) {
        this.needDrain = true;
        return false;
      }
      return true;
    }
    const socket = conn.socket;
    let ok: boolean;
    if (this.head !== undefined) {
      socket.cork();
      this.flushHead(socket, true);
      ok = this.writeBody(socket, chunk);
      socket.uncork();
    } else {
      ok = this.writeBody(socket, chunk);
    }
    if (!ok) this.needDrain = true;
    return ok;
  }

  end(): void {
    if (this.settled || this.ended) return;
    this.ended = true;
    const conn = this.conn;
    if (!conn) return;
    if (this.head !== undefined) this.flushHead(conn.socket, this.bodyBytes > 0);
    else if (this.chunked) conn.socket.write(LAST_CHUNK, 'latin1');
  }

  abort(): void {
    if (this.settled) return;
    this.settled = true;
    const conn = this.conn;
    if (conn) {
      this.conn = undefined;
      if (conn.req === this) {
        conn.req = undefined;
        conn.socket.destroy();
      }
    }
    // Without a connection yet: the pool keeps the one being opened for the next request.
  }

  pause(): void {
    this.paused = true;
    const conn = this.conn;
    if (conn && conn.req === this) conn.pauseReading();
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    const held = this.held;
    if (held) {
      while (held.length > 0 && !this.paused && !this.settled) {
        const c = held.shift();
        if (c) this.listener.onUpstreamData(this, c);
      }
      if (held.length > 0 || this.paused) return;
      this.held = undefined;
    }
    if (this.endHeld && !this.settled) {
      this.endHeld = false;
      this.settled = true;
      this.listener.onUpstreamEnd(this, this.trailers);
      return;
    }
    const conn = this.conn;
    if (conn && conn.req === this) conn.resumeReading();
  }

  /** @internal */
  onContinue(): void {
    if (!this.settled) this.listener.onUpstreamContinue(this);
  }

  /** @internal */
  onHeaders(status: number, raw: string[], keepAlive: boolean): void {
    this.responded = true;
    this.keepAlive = keepAlive;
    if (this.settled) return;
    const headers = foldHeaders(raw);
    this.listener.onUpstreamHeaders(this, status, headers, false);
  }

  /** @internal */
  onBody(chunk: Buffer): void {
    if (this.settled) return;
    if (this.paused || this.held !== undefined) {
      (this.held ??= []).push(chunk);
      return;
    }
    this.listener.onUpstreamData(this, chunk);
  }

  /** @internal the response is complete on `conn`. */
  onComplete(conn: LeanConn, rawTrailers: string[]): void {
    this.conn = undefined;
    // Reusable only after a complete exchange: the request body fully written too.
    if (this.keepAlive && this.ended && !this.settled) conn.pool.release(conn);
    else {
      conn.req = undefined;
      conn.socket.destroy();
    }
    if (this.settled) return;
    if (rawTrailers.length > 0) {
      this.trailers = foldHeaders(rawTrailers);
    }
    if (this.paused || this.held !== undefined) {
      this.endHeld = true;
      return;
    }
    this.settled = true;
    this.listener.onUpstreamEnd(this, this.trailers);
  }

  /** @internal the connection failed or closed before the response completed. */
  connLost(conn: LeanConn, kind: UpstreamFailure, err: Error): void {
    if (conn.req === this) conn.req = undefined;
    this.conn = undefined;
    if (this.settled) return;
    this.settled = true;
    this.listener.onUpstreamError(this, kind, err);
  }

  /** @internal */
  onDrain(): void {
    if (this.needDrain && !this.settled) {
      this.needDrain = false;
      this.listener.onUpstreamDrain(this);
    }
  }
}

/** Body bytes a request holds before its connection is ready. */
const PENDING_HIGH_WATER = 64 * 1024;
