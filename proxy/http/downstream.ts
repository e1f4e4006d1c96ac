/**
 * The downstream side of one request, the same for HTTP/1.1 (Node's `IncomingMessage` and
 * `ServerResponse`) and HTTP/2 (a raw `ServerHttp2Stream`, not the compatibility API, so the
 * exchange controls END_STREAM, 1xx and trailers exactly as gRPC needs).
 */
import type * as http from 'node:http';
import * as http2 from 'node:http2';
import type { Readable } from 'node:stream';
import type { HeaderMap } from './headers';

const { NGHTTP2_INTERNAL_ERROR, NGHTTP2_NO_ERROR } = http2.constants;

/** One downstream request and its response. */
export interface Downstream {
  readonly protocol: 'http1' | 'http2';
  readonly method: string;
  readonly authority: string;
  /** `:path` with the query string. */
  readonly path: string;
  readonly scheme: string;
  /** The request headers as received (HTTP/2: pseudo-headers included). */
  readonly headers: HeaderMap;
  /** The request body. */
  readonly body: Readable;
  /** True when the request has no body at all (nothing to read). */
  readonly bodyEmpty: boolean;
  /** Emits 'drain' (response writable again) and 'close' (response done or connection gone). */
  readonly events: NodeJS.EventEmitter;
  /** Headers of the response were sent. */
  readonly headersSent: boolean;
  /** The response was completely written. */
  readonly complete: boolean;
  /** Sends response headers. `trailersExpected`: `end` may carry trailers (HTTP/2 waits for them).
   * @throws Error when a header is invalid (nothing was sent then) */
  respond(status: number, headers: HeaderMap, endStream: boolean, trailersExpected: boolean): void;
  /** Writes response body; false when the caller should wait for 'drain'. */
  write(chunk: Buffer): boolean;
  /** Ends the response, with trailers when given. */
  end(trailers: HeaderMap | undefined): void;
  /** Sends `100 Continue`. */
  writeContinue(): void;
  /** Aborts the response (HTTP/2 RST_STREAM, HTTP/1.1 closes the connection). */
  reset(): void;
  /** HTTP/1.1: the connection closes after this response (drain). */
  closeConnection(): void;
}

/** HTTP/1.1: IncomingMessage + ServerResponse. */
export class H1Downstream implements Downstream {
  readonly protocol = 'http1';
  readonly method: string;
  readonly authority: string;
  readonly path: string;
  readonly headers: HeaderMap;
  readonly bodyEmpty: boolean;

  constructor(
    readonly body: http.IncomingMessage,
    private readonly res: http.ServerResponse,
    readonly scheme: string,
  ) {
    this.method = body.method ?? 'GET';
    this.path = body.url ?? '/';
    this.headers = body.headers as HeaderMap;
    this.authority = body.headers.host ?? '';
    // RFC 9112 §6.3: without content-length or transfer-encoding a request has no body.
    const h = body.headers;
    this.bodyEmpty =
      h['transfer-encoding'] === undefined &&
      (h['content-length'] === undefined || h['content-length'] === '0');
  }

  get events(): NodeJS.EventEmitter {
    return this.res;
  }

  get headersSent(): boolean {
    return this.res.headersSent;
  }

  get complete(): boolean {
    return this.res.writableFinished;
  }

  respond(status: number, headers: HeaderMap, endStream: boolean): void {
    this.res.writeHead(status, headers as http.OutgoingHttpHeaders);
    if (endStream) this.res.end();
  }

  write(chunk: Buffer): boolean {
    return this.res.write(chunk);
  }

  end(trailers: HeaderMap | undefined): void {
    // Node sends trailers only on chunked responses and drops them otherwise (as HTTP/1.1 must).
    if (trailers) this.res.addTrailers(trailers as http.OutgoingHttpHeaders);
    this.res.end();
  }

  writeContinue(): void {
    this.res.writeContinue();
  }

  reset(): void {
    this.res.destroy();
  }

  closeConnection(): void {
    this.res.shouldKeepAlive = false;
  }
}

const kTrailers = Symbol('sail.trailers');
type TrailerStream = http2.ServerHttp2Stream & { [kTrailers]?: HeaderMap };

function onWantTrailers(this: TrailerStream): void {
  const t = this[kTrailers];
  this[kTrailers] = undefined;
  try {
    this.sendTrailers((t ?? {}) as http2.OutgoingHttpHeaders);
  } catch {
    // Invalid trailer values from upstream: end the stream rather than leave it open.
    this.close(NGHTTP2_INTERNAL_ERROR);
  }
}

/** HTTP/2: one server stream. */
export class H2Downstream implements Downstream {
  readonly protocol = 'http2';
  readonly method: string;
  readonly authority: string;
  readonly path: string;
  readonly scheme: string;
  private sent = false;
  private ended = false;

  constructor(
    private readonly stream: TrailerStream,
    readonly headers: HeaderMap,
    readonly bodyEmpty: boolean,
    defaultScheme: string,
  ) {
    this.method = (headers[':method'] as string | undefined) ?? 'GET';
    this.path = (headers[':path'] as string | undefined) ?? '/';
    this.authority =
      (headers[':authority'] as string | undefined) ?? (headers.host as string | undefined) ?? '';
    this.scheme = (headers[':scheme'] as string | undefined) ?? defaultScheme;
  }

  get body(): Readable {
    return this.stream;
  }

  get events(): NodeJS.EventEmitter {
    return this.stream;
  }

  get headersSent(): boolean {
    return this.sent;
  }

  get complete(): boolean {
    return this.ended && this.stream.rstCode === NGHTTP2_NO_ERROR;
  }

  respond(status: number, headers: HeaderMap, endStream: boolean, trailersExpected: boolean): void {
    headers[':status'] = String(status);
    const waitForTrailers = trailersExpected && !endStream;
    if (waitForTrailers) this.stream.once('wantTrailers', onWantTrailers);
    this.stream.respond(headers as http2.OutgoingHttpHeaders, { endStream, waitForTrailers });
    this.sent = true;
    if (endStream) this.ended = true;
  }

  write(chunk: Buffer): boolean {
    return this.stream.write(chunk);
  }

  end(trailers: HeaderMap | undefined): void {
    if (this.ended) return;
    this.ended = true;
    if (trailers) this.stream[kTrailers] = trailers;
    this.stream.end();
  }

  writeContinue(): void {
    try {
      this.stream.additionalHeaders({ ':status': 100 });
    } catch {
      // The stream is already closing; the client gets nothing more anyway.
    }
  }

  reset(): void {
    if (!this.stream.destroyed) this.stream.close(NGHTTP2_INTERNAL_ERROR);
  }

  closeConnection(): void {
    // HTTP/2 drains through GOAWAY on the session, not per response.
  }
}
