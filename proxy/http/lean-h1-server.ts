/**
 * A lean HTTP/1.1 downstream server: the alternative to Node's `http.Server` (selected by
 * `h1DownstreamServer: 'lean'`). Node's server spends much of a proxied request's CPU in
 * machinery a proxy does not need (IncomingMessage and ServerResponse streams, OutgoingMessage
 * header storage, per-response 'finish' bookkeeping); this one parses requests with Node's own
 * llhttp binding (the parser `_http_server` uses, strict mode: conflicting Content-Length /
 * Transfer-Encoding is a 400) and writes each response head as one string, corked together with
 * the first body chunk.
 *
 * Requests on a connection are served one at a time in order: pipelined requests that arrive
 * while one is being answered are parsed and queued (the socket stops reading until the queue
 * is empty), and the next starts once the previous response ended. The request object is its
 * own body stream (data / end, pause / resume) and its own response event emitter (drain /
 * close), the shape {@link Downstream} gives {@link Exchange}.
 */
import { EventEmitter } from 'node:events';
import * as http from 'node:http';
import type * as net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import type { Downstream } from './downstream';
import { type ConnState, Exchange, type ExchangeEnv } from './exchange';
import type { HeaderMap } from './headers';
import { CRLF, HTTP_TOKEN, LAST_CHUNK, headerValueLines, invalidHeader } from './h1-wire';
import {
  type ConsumableSocket,
  consumeSocket,
  foldHeaders,
  isParseError,
  type LlhttpParser as Parser,
  METHODS,
  newParser,
  type ParserCallbacks,
  unconsumeSocket,
} from './llhttp';
import { handleUpgrade } from './upgrade';

/** `SAIL_H1_SERVER_CONSUME=0`: read through 'data' events only (for comparisons). */
const CONSUME = process.env.SAIL_H1_SERVER_CONSUME !== '0';

/** Node's `continueExpression` and `chunkExpression`. */
const CONTINUE_EXPRESSION = /(?:^|\W)100-continue(?:$|\W)/i;
const CHUNK_EXPRESSION = /(?:^|\W)chunked(?:$|\W)/i;

const CONTINUE = 'HTTP/1.1 100 Continue\r\n\r\n';
/**
 * A first body chunk up to this size is copied behind the head into one buffer from Node's
 * Buffer pool (below half its size allocUnsafe slices the pool); larger ones are corked with it.
 * Heads are latin1: header values are checked against INVALID_HEADER_CHAR (nothing above \xff).
 */
const COALESCE_MAX = Buffer.poolSize >>> 1;
/** A request body buffered without a reader beyond this stops the socket reading. */
const BODY_HIGH_WATER = 64 * 1024;

/** Options of {@link LeanH1Server}. */
export interface LeanH1ServerOptions {
  /** Idle keep-alive connections close after this. */
  readonly keepAliveTimeoutMs: number;
  /** A request head must be complete this long after its first byte. */
  readonly headersTimeoutMs: number;
  /** Largest request head accepted (larger: 431). */
  readonly maxHeaderBytes: number;
}

// ---------------------------------------------------------------------------------------------
// Date header (Node's utcDate: one string per second)

let dateCache = '';
let dateSecond = 0;
function utcDate(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateCache = new Date(now).toUTCString();
  }
  return dateCache;
}

/** `name: value\r\n` lines; validates as Node's setHeader does. @throws on bad input */
function headerLines(h: HeaderMap, out: LeanH1Downstream | undefined): string {
  let s = '';
  for (const name of Object.keys(h)) {
    const v = h[name];
    if (v === undefined) continue;
    if (!HTTP_TOKEN.test(name)) throw invalidHeader(name, 'name', 'response');
    if (out !== undefined) {
      switch (name) {
        case 'content-length':
          out.hasLength = true;
          break;
        case 'transfer-encoding':
          out.hasTe = true;
          out.chunked = CHUNK_EXPRESSION.test(String(v));
          break;
        case 'connection':
          out.hasConnection = true;
          if (String(v).toLowerCase().includes('close')) out.keepAlive = false;
          break;
        case 'date':
          out.hasDate = true;
          break;
        case 'trailer':
          out.hasTrailer = true;
          break;
      }
    }
    s += headerValueLines(name, v, 'response');
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// One request and its response

/**
 * One HTTP/1.1 request (its own body stream: 'data', 'end', pause, resume) and its response
 * (its own event emitter: 'drain', 'close').
 */
export class LeanH1Downstream extends EventEmitter implements Downstream {
  readonly protocol = 'http1';
  readonly authority: string;
  readonly bodyEmpty: boolean;
  /** Request: HTTP/1.0 (or older). */
  readonly http10: boolean;

  // Request body
  /** Body chunks not yet delivered (no reader yet, or paused). */
  private buffered: Buffer[] | undefined;
  private bufferedBytes = 0;
  /** The request message was completely parsed. */
  messageComplete = false;
  private endEmitted = false;
  private paused = false;
  private flushScheduled = false;
  /** The response ended before the body: the rest of the body is read and dropped. */
  discarding = false;

  // Response
  keepAlive: boolean;
  /** Set from the response headers by headerLines(). */
  hasLength = false;
  hasTe = false;
  chunked = false;
  hasConnection = false;
  hasDate = false;
  hasTrailer = false;
  /** The response has a body (not HEAD, 204, 304). */
  private hasBody = true;
  /** The response head, built but not yet written (it goes out with the first chunk). */
  private pendingHead: string | undefined;
  private sent = false;
  private ended = false;
  private sent100 = false;
  private closeEmitted = false;
  /** The response is delimited by closing the connection (HTTP/1.0 without length). */
  private last = false;

  constructor(
    readonly conn: LeanServerConn,
    readonly method: string,
    readonly path: string,
    readonly headers: HeaderMap,
    readonly scheme: string,
    keepAlive: boolean,
    http10: boolean,
    /** The request asked for `100-continue`. */
    readonly expectContinue: boolean,
  ) {
    super();
    this.keepAlive = keepAlive;
    this.http10 = http10;
    const host = headers.host;
    this.authority = typeof host === 'string' ? host : '';
    // RFC 9112 §6.3: without content-length or transfer-encoding a request has no body.
    this.bodyEmpty =
      headers['transfer-encoding'] === undefined &&
      (headers['content-length'] === undefined || headers['content-length'] === '0');
  }

  get body(): Readable {
    return this as unknown as Readable;
  }

  get events(): NodeJS.EventEmitter {
    return this;
  }

  get headersSent(): boolean {
    return this.sent;
  }

  get complete(): boolean {
    return this.ended;
  }

  // --- request body -------------------------------------------------------------------------

  /** A body reader attaching gets what was buffered (as a Readable starts flowing). */
  override on(event: string | symbol, listener: (...args: never[]) => void): this {
    super.on(event, listener as (...args: unknown[]) => void);
    if (event === 'data') this.scheduleFlush();
    return this;
  }

  pause(): this {
    if (!this.paused) {
      this.paused = true;
      this.conn.updateReading();
    }
    return this;
  }

  resume(): this {
    if (this.paused) {
      this.paused = false;
      this.scheduleFlush();
      this.conn.updateReading();
    }
    return this;
  }

  /** The socket should stop reading for this body's sake. */
  get bodyBlocked(): boolean {
    return this.paused || this.bufferedBytes > BODY_HIGH_WATER;
  }

  /** @internal parser */
  onBody(chunk: Buffer): void {
    if (this.discarding) return;
    if (this.buffered === undefined && !this.paused && this.listenerCount('data') > 0) {
      this.emit('data', chunk);
      return;
    }
    // The parser's buffer is reused for the next read: keep a copy.
    (this.buffered ??= []).push(Buffer.from(chunk));
    this.bufferedBytes += chunk.length;
    if (this.bufferedBytes > BODY_HIGH_WATER) this.conn.updateReading();
  }

  /** @internal parser */
  onMessageComplete(): void {
    this.messageComplete = true;
    if (this.discarding) return;
    if (this.buffered === undefined && !this.paused && this.listenerCount('data') > 0) {
      this.endEmitted = true;
      this.emit('end');
    }
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    if (this.buffered === undefined && !(this.messageComplete && !this.endEmitted)) return;
    this.flushScheduled = true;
    process.nextTick(flushBody, this);
  }

  /** @internal nextTick */
  flush(): void {
    this.flushScheduled = false;
    if (this.discarding || this.listenerCount('data') === 0) return;
    const b = this.buffered;
    while (b !== undefined && b.length > 0 && !this.paused) {
      const chunk = b.shift() as Buffer;
      this.bufferedBytes -= chunk.length;
      this.emit('data', chunk);
    }
    if (b !== undefined && b.length === 0) this.buffered = undefined;
    if (this.buffered === undefined && this.messageComplete && !this.endEmitted && !this.paused) {
      this.endEmitted = true;
      this.emit('end');
    }
    this.conn.updateReading();
  }

  /** The response ended first: drop the rest of the body so the next request can be read. */
  discard(): void {
    this.discarding = true;
    this.paused = false;
    this.buffered = undefined;
    this.bufferedBytes = 0;
  }

  // --- response -----------------------------------------------------------------------------

  respond(status: number, headers: HeaderMap, endStream: boolean): void {
    if (this.sent) throw new Error('response headers already sent');
    if (!(status >= 100 && status <= 999)) throw new RangeError('invalid response status code');
    this.hasLength = false;
    this.hasTe = false;
    this.chunked = false;
    this.hasConnection = false;
    this.hasDate = false;
    this.hasTrailer = false;
    const keepAliveBefore = this.keepAlive;
    let lines: string;
    try {
      lines = headerLines(headers, this);
    } catch (err) {
      this.keepAlive = keepAliveBefore;
      throw err;
    }
    // Node's ServerResponse: the client may or may not send the body it announced.
    if (this.expectContinue && !this.sent100) this.keepAlive = false;
    let head = 'HTTP/1.1 ' + String(status) + ' ' + (http.STATUS_CODES[status] ?? 'unknown') + CRLF;
    head += lines;
    if (!this.hasDate) head += 'Date: ' + utcDate() + CRLF;
    const hasBody = !(
      this.method === 'HEAD' ||
      status === 204 ||
      status === 304 ||
      (status >= 100 && status < 200)
    );
    this.hasBody = hasBody;
    let framed = this.hasLength || this.hasTe;
    if (!framed) {
      if (!hasBody) {
        framed = true;
      } else if (endStream && !this.hasTrailer) {
        head += 'Content-Length: 0\r\n';
        framed = true;
      } else if (!this.http10) {
        head += 'Transfer-Encoding: chunked\r\n';
        this.chunked = true;
        framed = true;
      }
    }
    if (!this.hasBody) this.chunked = false;
    if (!this.hasConnection) {
      if (this.keepAlive && framed && !this.conn.server.env.draining) {
        head += this.conn.server.keepAliveHeader;
      } else {
        this.keepAlive = false;
        head += 'Connection: close\r\n';
      }
    }
    if (!framed) this.last = true;
    this.sent = true;
    this.pendingHead = head + CRLF;
    if (endStream) this.end(undefined);
    else process.nextTick(flushHead, this);
  }

  /** @internal nextTick: a head whose body has not come yet goes out on its own. */
  flushHead(): void {
    const head = this.pendingHead;
    if (head === undefined) return;
    this.pendingHead = undefined;
    const s = this.conn.socket;
    if (!s.destroyed) s.write(head, 'latin1');
  }

  write(chunk: Buffer): boolean {
    const s = this.conn.socket;
    if (this.ended || s.destroyed) return true;
    const len = chunk.length;
    if (!this.hasBody || len === 0) return true;
    const head = this.pendingHead;
    this.pendingHead = undefined;
    const chunked = this.chunked;
    // What goes before the chunk: the head (with the first chunk only) and the chunk-size line.
    const before = (head ?? '') + (chunked ? len.toString(16) + CRLF : '');
    if (before === '') return s.write(chunk);
    if (head !== undefined && len <= COALESCE_MAX) {
      // The usual small response: head and body in one buffer, one write (no cork, no writev).
      const out = Buffer.allocUnsafe(before.length + len + (chunked ? 2 : 0));
      const o = out.write(before, 0, 'latin1');
      chunk.copy(out, o);
      if (chunked) out.write(CRLF, o + len, 'latin1');
      return s.write(out);
    }
    s.cork();
    s.write(before, 'latin1');
    let ok = s.write(chunk);
    if (chunked) ok = s.write(CRLF, 'latin1');
    s.uncork();
    return ok;
  }

  end(trailers: HeaderMap | undefined): void {
    if (this.ended) return;
    this.ended = true;
    const s = this.conn.socket;
    if (!s.destroyed) {
      let out = this.pendingHead ?? '';
      this.pendingHead = undefined;
      if (this.chunked) {
        let t = '';
        if (trailers) {
          try {
            t = headerLines(trailers, undefined);
          } catch {
            // Node drops the response then; here the trailers go and the body ends cleanly.
            t = '';
          }
        }
        out += t === '' ? LAST_CHUNK : '0\r\n' + t + CRLF;
      }
      if (out !== '') s.write(out, 'latin1');
    }
    process.nextTick(emitResponseClose, this);
  }

  writeContinue(): void {
    if (this.sent || this.sent100) return;
    this.sent100 = true;
    const s = this.conn.socket;
    if (!s.destroyed) s.write(CONTINUE, 'latin1');
  }

  reset(): void {
    this.conn.socket.destroy();
  }

  closeConnection(): void {
    this.keepAlive = false;
  }

  /** @internal the response ended or the connection closed: tell the exchange once. */
  emitClose(): void {
    if (this.closeEmitted) return;
    this.closeEmitted = true;
    this.emit('close');
  }

  /** @internal nextTick after end() */
  responseDone(): void {
    this.emitClose();
    this.conn.onResponseDone(this, !this.keepAlive || this.last);
  }
}

function flushBody(d: LeanH1Downstream): void {
  d.flush();
}
function flushHead(d: LeanH1Downstream): void {
  d.flushHead();
}
function emitResponseClose(d: LeanH1Downstream): void {
  d.responseDone();
}

// ---------------------------------------------------------------------------------------------
// Connections

const kLean = Symbol('sail.leanServerConn');
type TaggedSocket = ConsumableSocket & { [kLean]?: LeanServerConn };
type LlhttpParser = Parser<LeanServerConn>;

/** One downstream connection with its parser. */
export class LeanServerConn {
  parser: LlhttpParser | undefined;
  /** The request being answered (its exchange runs). */
  active: LeanH1Downstream | undefined;
  /** The request whose message the parser is in (may be `active` or queued). */
  parsing: LeanH1Downstream | undefined;
  /** Parsed requests waiting for `active` to finish, oldest first. */
  readonly queue: LeanH1Downstream[] = [];
  /** Header fields (and URL pieces) delivered ahead of headers-complete (llhttp's slow path). */
  fields: string[] = [];
  url = '';
  /**
   * performance.now() of the first read of a request head; 0 when not inside a head. Set after
   * the read (afterExecute) rather than from llhttp's message-begin callback, which would cost a
   * call from C++ into JavaScript per request.
   */
  headStart = 0;
  /** A head or a message completed in the read being parsed (see afterExecute). */
  boundary = false;
  /** performance.now() since the connection has been idle between requests. */
  idleSince: number;
  private readPaused = false;
  /** No more requests: the client ended its side, the parser failed, or a response closed it. */
  noMore = false;
  /** An upgrade request waiting for the responses before it. */
  pendingUpgrade: { req: http.IncomingMessage; head: Buffer } | undefined;
  /** An upgrade request just parsed (execute() stops after its head). */
  upgradeReq: http.IncomingMessage | undefined;
  closed = false;

  constructor(
    readonly server: LeanH1Server,
    readonly socket: TaggedSocket,
    readonly state: ConnState,
  ) {
    this.parser = newParser<LeanServerConn>(
      'request',
      this,
      server.opts.maxHeaderBytes,
      PARSER_CALLBACKS,
    );
    this.idleSince = performance.now();
    socket[kLean] = this;
    socket.on('data', onSocketData);
    socket.on('end', onSocketEnd);
    socket.on('close', onSocketClose);
    socket.on('drain', onSocketDrain);
    this.maybeConsume();
  }

  /**
   * Hands the socket's reads to the parser natively once nothing waits in the socket's JS
   * buffer (a sniffed connection's first bytes were put back there).
   */
  maybeConsume(): void {
    if (CONSUME && !this.readPaused) consumeSocket(this.socket, this.parser);
  }

  /** Stops the parser reading the handle natively (the JS stream reads it again). */
  unconsume(): void {
    unconsumeSocket(this.socket, this.parser);
  }

  /** Whether the socket should read: not while requests queue or a body's reader is behind. */
  updateReading(): void {
    const p = this.parsing;
    const stop = this.queue.length > 0 || this.pendingUpgrade !== undefined || p?.bodyBlocked;
    if (stop === true) {
      if (!this.readPaused) {
        this.readPaused = true;
        // Rare (pipelining, a body's backpressure): back to the JS stream's own pausing.
        this.unconsume();
        this.socket.pause();
      }
    } else if (this.readPaused) {
      this.readPaused = false;
      this.socket.resume();
    }
  }

  /** A request's headers were parsed. */
  onRequest(d: LeanH1Downstream): void {
    this.parsing = d;
    if (this.active === undefined && this.queue.length === 0) this.start(d);
    else {
      this.queue.push(d);
      this.updateReading();
    }
  }

  private start(d: LeanH1Downstream): void {
    this.active = d;
    const env = this.server.env;
    if (env.draining) d.closeConnection();
    const expect = d.headers.expect;
    if (expect !== undefined && !d.http10) {
      if (!d.expectContinue) {
        // Node's answer to an expectation it cannot meet.
        d.respond(417, {}, true);
        return;
      }
    }
    if (!d.http10 && d.headers.host === undefined) {
      // Node's requireHostHeader: HTTP/1.1 requires Host (RFC 9112 §3.2).
      d.closeConnection();
      d.respond(400, {}, true);
      return;
    }
    new Exchange(env, this.state, d, d.expectContinue).start();
  }

  /** @internal the response of `d` ended ('close' was emitted). */
  onResponseDone(d: LeanH1Downstream, close: boolean): void {
    if (this.active !== d) return;
    this.active = undefined;
    if (close || this.closed) {
      this.noMore = true;
      this.queue.length = 0;
      this.socket.destroySoon();
      return;
    }
    if (!d.messageComplete) {
      // Node's req._dump(): read and drop the rest of the body, keep the connection.
      d.discard();
    }
    const next = this.queue.shift();
    if (next !== undefined) {
      this.start(next);
    } else {
      const up = this.pendingUpgrade;
      if (up !== undefined && d.messageComplete) {
        this.pendingUpgrade = undefined;
        this.upgrade(up.req, up.head);
        return;
      }
      this.idleSince = performance.now();
      if (this.noMore) this.socket.destroySoon();
    }
    this.updateReading();
  }

  /** Hands the connection to the upgrade path (it owns the socket from here). */
  upgrade(req: http.IncomingMessage, head: Buffer): void {
    if (this.active !== undefined || this.queue.length > 0) {
      this.pendingUpgrade = { req, head };
      this.socket.removeListener('data', onSocketData);
      this.updateReading();
      return;
    }
    this.detach();
    const s = this.socket;
    // Paused until the tunnel pipes it: nothing may be emitted with no listener.
    s.pause();
    handleUpgrade(this.server.env, this.state, req, s, head);
  }

  /** Malformed input: 400 (431 for an oversized head) when nothing is being answered. */
  onParseError(err: Error & { code?: string }): void {
    const env = this.server.env;
    if (env.log.isLevelEnabled('debug')) {
      env.log.debug({ err, code: err.code }, 'Malformed HTTP/1.1 request');
    }
    this.noMore = true;
    const s = this.socket;
    if (this.active === undefined && s.writable) {
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
      s.end(`HTTP/1.1 ${String(status)} Bad Request\r\nconnection: close\r\n\r\n`);
    }
    s.destroy();
  }

  /** Stops parsing and listening: the socket is closing or belongs to someone else now. */
  detach(): void {
    const s = this.socket;
    s.removeListener('data', onSocketData);
    s.removeListener('end', onSocketEnd);
    s.removeListener('close', onSocketClose);
    s.removeListener('drain', onSocketDrain);
    s[kLean] = undefined;
    this.server.conns.delete(this);
    this.unconsume();
    const parser = this.parser;
    if (parser) {
      this.parser = undefined;
      parser.conn = undefined;
      // Never freed from inside its own execute().
      setImmediate(closeParser, parser);
    }
  }
}

function closeParser(p: LlhttpParser): void {
  p.free();
  p.close();
}

function onSocketData(this: TaggedSocket, d: Buffer): void {
  const conn = this[kLean];
  const parser = conn?.parser;
  if (!conn || !parser) return;
  afterExecute(conn, parser.execute(d), d);
  conn.maybeConsume();
}

function afterExecute(
  conn: LeanServerConn,
  ret: number | (Error & { code?: string }),
  d: Buffer | undefined,
): void {
  if (isParseError(ret)) {
    conn.onParseError(ret);
    return;
  }
  // The headers timeout runs from the first read of a request head: a read that ended no head
  // and no message, with no request being parsed or answered, left one unfinished. (Bytes of a
  // next request read together with the end of one start it at the next read; while a response
  // is in progress, a pipelined head is timed from the first read after it.)
  if (conn.boundary) conn.boundary = false;
  else if (
    ret > 0 &&
    conn.headStart === 0 &&
    conn.parsing === undefined &&
    conn.active === undefined
  )
    conn.headStart = performance.now();
  const up = conn.upgradeReq;
  if (up !== undefined) {
    // llhttp stopped after an upgrade request's head: the rest belongs to the tunnel.
    conn.upgradeReq = undefined;
    const buf = d ?? conn.parser?.getCurrentBuffer() ?? Buffer.alloc(0);
    conn.upgrade(up, ret < buf.length ? Buffer.from(buf.subarray(ret)) : Buffer.alloc(0));
  }
}

function onSocketEnd(this: TaggedSocket): void {
  const conn = this[kLean];
  if (!conn) return;
  conn.noMore = true;
  const parser = conn.parser;
  if (parser) {
    if (isParseError(parser.finish())) {
      this.destroy();
      return;
    }
  }
  if (conn.active === undefined && conn.queue.length === 0) this.destroySoon();
}

function onSocketClose(this: TaggedSocket): void {
  const conn = this[kLean];
  if (!conn || conn.closed) return;
  conn.closed = true;
  conn.noMore = true;
  conn.detach();
  conn.queue.length = 0;
  const d = conn.active;
  conn.active = undefined;
  // The exchange sees the connection go (an unfinished response: the client went away).
  d?.emitClose();
}

function onSocketDrain(this: TaggedSocket): void {
  const d = this[kLean]?.active;
  if (d !== undefined && !d.complete) d.emit('drain');
}

// Parser callbacks (`this` is the parser).

const PARSER_CALLBACKS: ParserCallbacks<LeanServerConn> = {
  onHeaders(headers, url): void {
    const conn = this.conn;
    if (!conn) return;
    for (const h of headers) conn.fields.push(h);
    if (url) conn.url += url;
  },

  onHeadersComplete(
    versionMajor,
    versionMinor,
    headers,
    method,
    url,
    _statusCode,
    _statusMessage,
    upgrade,
    shouldKeepAlive,
  ): number {
    const conn = this.conn;
    if (!conn) return 0;
    conn.headStart = 0;
    conn.boundary = true;
    let raw = headers;
    if (raw === undefined) {
      raw = conn.fields;
      conn.fields = [];
    }
    let path = url;
    if (!path) {
      path = conn.url;
      conn.url = '';
    }
    const h = foldHeaders(raw);
    const m = METHODS[method] ?? 'GET';
    if (upgrade) {
      if (m === 'CONNECT') {
        // Node's server without a 'connect' listener closes such connections.
        conn.noMore = true;
        conn.socket.destroy();
        return 2;
      }
      // Adapted for upgrade.ts, which reads method, url and headers of Node's IncomingMessage.
      conn.upgradeReq = { method: m, url: path, headers: h } as unknown as http.IncomingMessage;
      return 2;
    }
    const http10 = versionMajor < 1 || (versionMajor === 1 && versionMinor === 0);
    const expect = h.expect;
    const expectContinue =
      !http10 && typeof expect === 'string' && CONTINUE_EXPRESSION.test(expect);
    const d = new LeanH1Downstream(
      conn,
      m,
      path,
      h,
      conn.state.scheme,
      shouldKeepAlive,
      http10,
      expectContinue,
    );
    conn.onRequest(d);
    return 0;
  },

  onBody(chunk): void {
    this.conn?.parsing?.onBody(chunk);
  },

  onMessageComplete(): void {
    const conn = this.conn;
    if (!conn) return;
    if (conn.fields.length > 0) conn.fields = []; // request trailers: dropped, as Node's server
    conn.boundary = true;
    const d = conn.parsing;
    if (d === undefined) return;
    conn.parsing = undefined;
    d.onMessageComplete();
    conn.updateReading();
  },

  /** kOnExecute: the parser consumed a read natively (`this` is the parser). */
  onExecute(ret): void {
    const conn = this.conn;
    if (!conn) return;
    afterExecute(conn, ret, undefined);
  },
  // No onMessageBegin: afterExecute starts the headers timeout.
};

// ---------------------------------------------------------------------------------------------
// Server

/** Serves HTTP/1.1 connections handed over by the connection manager. */
export class LeanH1Server {
  readonly conns = new Set<LeanServerConn>();
  /** `Connection: keep-alive` and Node's `Keep-Alive: timeout=N` lines. */
  readonly keepAliveHeader: string;
  private sweeper: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    readonly env: ExchangeEnv,
    readonly opts: LeanH1ServerOptions,
  ) {
    this.keepAliveHeader =
      'Connection: keep-alive\r\nKeep-Alive: timeout=' +
      String(Math.floor(opts.keepAliveTimeoutMs / 1000)) +
      CRLF;
  }

  /** Serves `socket` (already tagged and tracked by the manager) until it closes. */
  serve(socket: net.Socket, state: ConnState): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    const conn = new LeanServerConn(this, socket, state);
    this.conns.add(conn);
    if (this.sweeper === undefined) {
      const every = Math.max(
        50,
        Math.min(this.opts.keepAliveTimeoutMs, this.opts.headersTimeoutMs) / 4,
      );
      this.sweeper = setInterval(sweep, every, this);
      this.sweeper.unref();
    }
  }

  /** @internal timer: closes connections idle too long or too slow with their request head. */
  sweep(now = performance.now()): void {
    const { keepAliveTimeoutMs, headersTimeoutMs } = this.opts;
    for (const c of this.conns) {
      if (c.headStart > 0 && now - c.headStart > headersTimeoutMs) {
        c.onParseError(Object.assign(new Error('request headers timeout'), { code: 'ETIMEDOUT' }));
      } else if (
        c.active === undefined &&
        c.parsing === undefined &&
        c.queue.length === 0 &&
        c.headStart === 0 &&
        now - c.idleSince > keepAliveTimeoutMs
      ) {
        c.socket.destroy();
      }
    }
  }

  /** Stops the timer; the manager destroys the sockets. Idempotent. */
  close(): void {
    this.closed = true;
    if (this.sweeper !== undefined) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }
}

function sweep(server: LeanH1Server): void {
  server.sweep();
}
