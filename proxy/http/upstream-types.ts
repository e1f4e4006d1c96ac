/**
 * The contract between the exchange and the upstream clients (upstream-pool.ts: Node's HTTP/1.1
 * agent and HTTP/2 sessions; lean-h1.ts: the lean HTTP/1.1 client), kept apart so both client
 * modules can implement it without importing each other.
 */
import type { UpstreamHost } from '../types';
import type { HeaderMap } from './headers';

/**
 * ALPN toward an upstream: the transport's own values first (for mesh mTLS `istio-peer-exchange`,
 * `istio`, which the peer's PERMISSIVE/STRICT inbound chain matches on, as Istio's do), then the
 * codec this connection will speak, which the peer's server picks. Undefined for plaintext.
 */
export function upstreamAlpn(
  host: UpstreamHost,
  codec: 'h2' | 'http/1.1',
): { alpn: readonly string[] } | undefined {
  const tls = host.transport.tls;
  if (!tls) return undefined;
  return { alpn: tls.alpn.includes(codec) ? tls.alpn : [...tls.alpn, codec] };
}

/** Why an attempt failed before its response completed. */
export type UpstreamFailure =
  /** No connection could be made (the request never reached the upstream). */
  | 'connect'
  /** The upstream refused the stream before processing it (HTTP/2 REFUSED_STREAM, GOAWAY, or a
   * reused keep-alive socket the server had already closed). */
  | 'refused'
  /** The connection or stream was reset after the request was sent. */
  | 'reset';

/** Receives the events of one upstream request. */
export interface UpstreamListener {
  /** A connection (or stream) was obtained: the request is no longer pending. */
  onUpstreamConnected(u: UpstreamRequest): void;
  /** The upstream answered `100 Continue`. */
  onUpstreamContinue(u: UpstreamRequest): void;
  /** Response headers; `endStream` when the response has no body (and no trailers follow). */
  onUpstreamHeaders(
    u: UpstreamRequest,
    status: number,
    headers: HeaderMap,
    endStream: boolean,
  ): void;
  /** A response body chunk; never before {@link onUpstreamHeaders}. */
  onUpstreamData(u: UpstreamRequest, chunk: Buffer): void;
  /** The response completed; `trailers` when the upstream sent any. */
  onUpstreamEnd(u: UpstreamRequest, trailers: HeaderMap | undefined): void;
  /** The request failed; nothing more is reported for it. */
  onUpstreamError(u: UpstreamRequest, kind: UpstreamFailure, err: Error): void;
  /** The request body may be written again after `write` returned false. */
  onUpstreamDrain(u: UpstreamRequest): void;
}

/** What is sent upstream: the request line and end-to-end headers (`host` included for h1). */
export interface UpstreamRequestHead {
  readonly method: string;
  readonly path: string;
  readonly authority: string;
  readonly scheme: string;
  /** End-to-end request headers; `host` is ignored for HTTP/2 (`:authority` carries it). */
  readonly headers: HeaderMap;
}

/** One request to one upstream host. */
export interface UpstreamRequest {
  readonly host: UpstreamHost;
  readonly protocol: 'http1' | 'http2';
  /** Opaque owner data (the exchange that sent it). */
  owner: unknown;
  /** Writes request body; false when the caller should wait for `onUpstreamDrain`. */
  write(chunk: Buffer): boolean;
  /** Ends the request body. */
  end(): void;
  /** Abandons the request (resets the stream or destroys the h1 socket). No further events. */
  abort(): void;
  /** Stops / restarts the response body flow (backpressure toward the downstream). */
  pause(): void;
  resume(): void;
}
