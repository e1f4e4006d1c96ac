/**
 * The proxy's HTTP connection manager (Envoy's `http_connection_manager` with the router): takes
 * connections the listeners accepted, picks the codec (sniffing the HTTP/2 preface for AUTO), and
 * serves each request through an {@link Exchange}.
 *
 * Codecs run on two shared servers that never listen: connections are handed to them with
 * `emit('connection', socket)`, so Node's own parsers (llhttp, nghttp2) do the protocol work.
 */
import * as http from 'node:http';
import * as http2 from 'node:http2';
import type * as net from 'node:net';
import type * as tls from 'node:tls';
import { type Clock, systemClock } from '../../common/clock';
import type { Logger } from '../../common/logging';
import type { HttpHandler } from '../model';
import type {
  ClusterManager,
  ConfigHolder,
  DownstreamContext,
  HttpConnectionManager,
  ProxyTelemetry,
} from '../types';
import { H1Downstream, H2Downstream } from './downstream';
import { ConnState, Exchange, type ExchangeEnv } from './exchange';
import type { HeaderMap } from './headers';
import { LeanH1Server } from './lean-h1-server';
import { handleUpgrade } from './upgrade';
import {
  H2_SESSION_WINDOW,
  H2_SETTINGS,
  type H1UpstreamClient,
  UpstreamPools,
} from './upstream-pool';

/** Options of {@link DefaultHttpConnectionManager}. */
export interface HttpConnectionManagerOptions {
  readonly logger: Logger;
  readonly clock?: Clock;
  readonly config: ConfigHolder;
  readonly clusters: ClusterManager;
  readonly telemetry: ProxyTelemetry;
  /** This proxy's SPIFFE ID now (`By=` of x-forwarded-client-cert); '' before a certificate. */
  readonly localPrincipal: () => string;
  /** What HTTP/1.1 traffic becomes between two Sail proxies over mesh mTLS (default http1). */
  readonly meshUpstreamProtocol?: 'http2' | 'http1';
  /** Request body kept for retries (default 64 KiB); larger bodies are not retried. */
  readonly maxBufferedRequestBytes?: number;
  /**
   * The HTTP/1.1 upstream client: the lean one (`lean`, the default, lean-h1.ts: a quarter to a
   * third less CPU per request and twice the maximum rate of Node's, BENCHMARKS.md) or Node's
   * `http.Agent` (`node`). Unset: the environment variable `SAIL_H1_CLIENT=node` selects Node's,
   * an escape hatch for operators and for tests that compare the two.
   */
  readonly h1UpstreamClient?: H1UpstreamClient;
  /**
   * The HTTP/1.1 downstream server: the lean one (`lean`, the default, lean-h1-server.ts: llhttp
   * on the raw socket, one write per response head; about a fifth more maximum rate) or Node's
   * `http.Server` (`node`). Unset: the environment variable `SAIL_H1_SERVER=node` selects Node's,
   * the same escape hatch as `SAIL_H1_CLIENT`.
   */
  readonly h1DownstreamServer?: 'node' | 'lean';
}

/** Default of {@link HttpConnectionManagerOptions.maxBufferedRequestBytes}. */
export const DEFAULT_MAX_BUFFERED_REQUEST_BYTES = 64 * 1024;
/** Idle HTTP/1.1 keep-alive connections from clients close after this. */
const KEEP_ALIVE_TIMEOUT_MS = 60_000;
/** A client must complete its request headers (and the first bytes, for sniffing) in this time. */
const HEADERS_TIMEOUT_MS = 60_000;
/** Largest request head accepted (Envoy's default max_request_headers_kb is 60). */
const MAX_HEADER_BYTES = 60 * 1024;

/** The HTTP/2 client connection preface (RFC 9113 §3.4). */
const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

const kConn = Symbol('sail.conn');
type TaggedSession = http2.ServerHttp2Session & { [kConn]?: ConnState };
type TaggedSocket = net.Socket & {
  [kConn]?: ConnState;
  alpnProtocol?: string | false | null;
  secureConnecting?: boolean;
  _secureEstablished?: boolean;
};

function onIgnoredError(): void {
  // Socket and stream errors surface as 'close'; a listener keeps them from being thrown.
}

/**
 * Serves HTTP/1.1, HTTP/2 (h2c and h2 over TLS), gRPC and WebSocket on connections handed over
 * by the listeners. `drain()` stops new requests; `close()` releases everything at once.
 */
export class DefaultHttpConnectionManager implements HttpConnectionManager {
  /** What every exchange shares; `draining` is set by drain(): no new connections, HTTP/1.1
   * responses close their connection. */
  private readonly env: ExchangeEnv & { draining: boolean };

  private readonly h1: http.Server;
  /** The lean HTTP/1.1 server, when selected (h1DownstreamServer). */
  private readonly lean: LeanH1Server | undefined;
  private readonly h2: http2.Http2Server;
  /** Every connection handed to us and still open. */
  private readonly sockets = new Set<TaggedSocket>();
  private readonly h2Sessions = new Set<http2.ServerHttp2Session>();
  /** The connection being handed to the HTTP/2 server (its 'session' event is synchronous). */
  private handingOver: ConnState | undefined;
  private idleWaiters: (() => void)[] = [];
  private closed = false;

  constructor(opts: HttpConnectionManagerOptions) {
    const log = opts.logger.child({ component: 'proxy', subsystem: 'http' });
    this.env = {
      log,
      clock: opts.clock ?? systemClock,
      config: opts.config,
      clusters: opts.clusters,
      telemetry: opts.telemetry,
      pools: new UpstreamPools(
        opts.clusters,
        log,
        opts.h1UpstreamClient ?? (process.env.SAIL_H1_CLIENT === 'node' ? 'node' : 'lean'),
      ),
      localPrincipal: opts.localPrincipal,
      meshUpstreamProtocol: opts.meshUpstreamProtocol ?? 'http1',
      maxBufferedRequestBytes: opts.maxBufferedRequestBytes ?? DEFAULT_MAX_BUFFERED_REQUEST_BYTES,
      draining: false,
    };

    this.h1 = http.createServer({
      keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
      headersTimeout: HEADERS_TIMEOUT_MS,
      requestTimeout: 0,
      maxHeaderSize: MAX_HEADER_BYTES,
    });
    this.h1.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
      this.onH1Request(req, res, false);
    });
    this.h1.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => {
      this.onH1Request(req, res, true);
    });
    this.h1.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      this.onH1Upgrade(req, socket, head);
    });
    this.h1.on('clientError', (err: Error, socket: net.Socket) => {
      this.onClientError(err, socket);
    });

    const server =
      opts.h1DownstreamServer ?? (process.env.SAIL_H1_SERVER === 'node' ? 'node' : 'lean');
    this.lean =
      server === 'lean'
        ? new LeanH1Server(this.env, {
            keepAliveTimeoutMs: KEEP_ALIVE_TIMEOUT_MS,
            headersTimeoutMs: HEADERS_TIMEOUT_MS,
            maxHeaderBytes: MAX_HEADER_BYTES,
          })
        : undefined;

    this.h2 = http2.createServer({
      settings: H2_SETTINGS,
      maxSessionMemory: 64,
      maxHeaderListPairs: 256,
    });
    this.h2.on('session', (session: TaggedSession) => {
      this.onH2Session(session);
    });
    this.h2.on(
      'stream',
      (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number) => {
        this.onH2Stream(stream, headers, flags);
      },
    );
    this.h2.on('sessionError', onIgnoredError);
  }

  /** Takes ownership of `socket`: serves HTTP on it until it closes. */
  handle(socket: net.Socket, handler: HttpHandler, ctx: DownstreamContext): void {
    const s = socket as TaggedSocket;
    s.on('error', onIgnoredError);
    if (this.env.draining || this.closed) {
      s.destroy();
      return;
    }
    const tlsSocket = s as Partial<tls.TLSSocket>;
    const secure = ctx.tls !== undefined || tlsSocket.encrypted === true;
    const conn = new ConnState(
      handler,
      ctx,
      secure ? 'https' : 'http',
      `${ctx.remoteAddress}:${String(ctx.remotePort)}`,
    );
    conn.socket = s;
    s[kConn] = conn;
    this.sockets.add(s);
    s.once('close', () => {
      this.sockets.delete(s);
      conn.close();
      if (this.sockets.size === 0 && this.idleWaiters.length > 0) {
        for (const w of this.idleWaiters.splice(0)) w();
      }
    });
    // Nagle would hold small responses back for the client's delayed ACK.
    if (typeof s.setNoDelay === 'function') s.setNoDelay(true);
    const alpn = ctx.tls?.alpn;
    if (handler.codec === 'HTTP2' || alpn === 'h2') {
      this.serveH2(s, conn);
    } else if (handler.codec === 'HTTP1' || alpn === 'http/1.1') {
      this.serveH1(s, conn, false);
    } else {
      this.sniff(s, conn);
    }
  }

  /** Reads until the first bytes tell HTTP/2's preface from an HTTP/1.1 request line. */
  private sniff(s: TaggedSocket, conn: ConnState): void {
    let buf: Buffer | undefined;
    const decide = (h2: boolean): void => {
      s.removeListener('data', onData);
      s.removeListener('timeout', onTimeout);
      s.setTimeout(0);
      s.pause();
      if (buf) s.unshift(buf);
      if (h2) this.serveH2(s, conn);
      else this.serveH1(s, conn, true);
    };
    const onData = (chunk: Buffer): void => {
      buf = buf ? Buffer.concat([buf, chunk]) : chunk;
      const n = Math.min(buf.length, H2_PREFACE.length);
      if (buf.compare(H2_PREFACE, 0, n, 0, n) !== 0) decide(false);
      else if (buf.length >= H2_PREFACE.length) decide(true);
    };
    const onTimeout = (): void => {
      s.destroy();
    };
    s.on('data', onData);
    s.setTimeout(HEADERS_TIMEOUT_MS, onTimeout);
  }

  private serveH1(s: TaggedSocket, conn: ConnState, sniffed: boolean): void {
    if (this.lean) {
      this.lean.serve(s, conn);
      // The sniffer paused the socket to put its bytes back; the lean parser reads from here on.
      if (sniffed) s.resume();
      return;
    }
    this.h1.emit('connection', s);
    // The sniffer paused the socket to put its bytes back; the HTTP parser reads from here on.
    if (sniffed) s.resume();
  }

  private serveH2(s: TaggedSocket, conn: ConnState): void {
    // Node's HTTP/2 server refuses TLS sockets whose ALPN was not h2 (its 'unknownProtocol'
    // path); here the preface itself proved HTTP/2 (h2 with prior knowledge inside TLS).
    if (s.alpnProtocol === false || s.alpnProtocol === 'http/1.1') s.alpnProtocol = 'h2';
    // A server-side TLSSocket made with `new TLSSocket(raw, { isServer: true })` keeps
    // `secureConnecting` true after its handshake; Http2Session would then wait for a
    // 'secureConnect' that never comes. The listeners hand sockets over only once secure.
    if (s.secureConnecting === true && s._secureEstablished === true) s.secureConnecting = false;
    this.handingOver = conn;
    try {
      this.h2.emit('connection', s);
    } finally {
      this.handingOver = undefined;
    }
  }

  private onH2Session(session: TaggedSession): void {
    const conn = this.handingOver;
    if (!conn) {
      session.destroy();
      return;
    }
    session[kConn] = conn;
    this.h2Sessions.add(session);
    session.on('error', onIgnoredError);
    session.once('close', () => {
      this.h2Sessions.delete(session);
    });
    session.once('connect', () => {
      try {
        session.setLocalWindowSize(H2_SESSION_WINDOW);
      } catch {
        // The session is already closing; nothing to tune.
      }
    });
    if (this.env.draining) session.close();
  }

  private onH2Stream(
    stream: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    flags: number,
  ): void {
    stream.on('error', onIgnoredError);
    const conn = (stream.session as TaggedSession | undefined)?.[kConn];
    if (!conn) {
      stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      return;
    }
    const endStream = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
    const down = new H2Downstream(stream, headers as HeaderMap, endStream, conn.scheme);
    const expect = headers.expect === '100-continue';
    new Exchange(this.env, conn, down, expect).start();
  }

  private onH1Request(req: http.IncomingMessage, res: http.ServerResponse, expect: boolean): void {
    const conn = (req.socket as TaggedSocket)[kConn];
    if (!conn) {
      res.destroy();
      return;
    }
    const down = new H1Downstream(req, res, conn.scheme);
    new Exchange(this.env, conn, down, expect).start();
  }

  private onH1Upgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    const conn = (socket as TaggedSocket)[kConn];
    if (!conn) {
      socket.destroy();
      return;
    }
    handleUpgrade(this.env, conn, req, socket, head);
  }

  private onClientError(err: Error & { code?: string }, socket: net.Socket): void {
    if (this.env.log.isLevelEnabled('debug')) {
      this.env.log.debug({ err, code: err.code }, 'Malformed HTTP/1.1 request');
    }
    // Node's default answer, which a 'clientError' listener replaces.
    if (socket.writable && err.code !== 'ECONNRESET') {
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
      socket.end(`HTTP/1.1 ${String(status)} Bad Request\r\nconnection: close\r\n\r\n`);
    }
    socket.destroy();
  }

  /**
   * Stops taking requests: HTTP/2 sessions get GOAWAY, idle HTTP/1.1 connections close and busy
   * ones close after their current response. Resolves when every connection is gone or after
   * `graceMs`, when the rest is destroyed.
   */
  async drain(graceMs: number): Promise<void> {
    this.env.draining = true;
    for (const session of this.h2Sessions) session.close();
    for (const s of this.sockets) {
      const conn = s[kConn];
      if (conn && conn.active === 0 && !this.isH2(s)) s.end();
    }
    if (this.sockets.size > 0) {
      const ac = new AbortController();
      const idle = new Promise<void>(resolve => {
        this.idleWaiters.push(resolve);
      });
      await Promise.race([idle, this.env.clock.sleep(graceMs, ac.signal).catch(() => undefined)]);
      ac.abort();
    }
    for (const s of this.sockets) s.destroy();
    for (const session of this.h2Sessions) session.destroy();
  }

  private isH2(s: TaggedSocket): boolean {
    for (const session of this.h2Sessions) {
      if ((session as TaggedSession)[kConn] === s[kConn]) return true;
    }
    return false;
  }

  /** See {@link HttpConnectionManager.retireUpstreamConnections}. */
  retireUpstreamConnections(): void {
    this.env.pools.retireAll();
  }

  /**
   * Destroys every downstream connection and upstream pool at once. Idempotent. (Not part of
   * HttpConnectionManager: the proxy calls it after drain() on shutdown.)
   */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    this.env.draining = true;
    this.lean?.close();
    for (const s of this.sockets) s.destroy();
    for (const session of this.h2Sessions) session.destroy();
    this.env.pools.close();
    return Promise.resolve();
  }
}
