/**
 * Node's llhttp binding (the parser `_http_client` and `_http_server` use) as the lean HTTP/1.1
 * client (lean-h1.ts) and server (lean-h1-server.ts) drive it: the parser class and its callback
 * slots, IncomingMessage's header folding, and handing a socket's reads to the parser natively.
 */
import type * as net from 'node:net';
import type { HeaderMap } from './headers';

/** The llhttp binding as `_http_common` exposes it (Node 20); `C` is the connection it reads for. */
export interface LlhttpParser<C> {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(data: Buffer): number | (Error & { code?: string; bytesParsed?: number });
  finish(): number | Error | undefined;
  free(): void;
  close(): void;
  consume(handle: object): void;
  unconsume(): void;
  getCurrentBuffer(): Buffer;
  [callback: number]: unknown;
  /** Ours: the connection this parser reads for. */
  conn: C | undefined;
  /** Ours: the parser reads its socket's handle natively (see consumeSocket). */
  consuming?: boolean;
}
interface LlhttpParserClass {
  new <C>(): LlhttpParser<C>;
  readonly REQUEST: number;
  readonly RESPONSE: number;
  readonly kOnHeaders: number;
  readonly kOnHeadersComplete: number;
  readonly kOnBody: number;
  readonly kOnMessageComplete: number;
  readonly kOnExecute: number;
  readonly kOnMessageBegin: number;
  readonly kLenientNone: number;
}

// eslint-disable-next-line @typescript-eslint/no-require-imports
const common = require('_http_common') as {
  HTTPParser: LlhttpParserClass;
  methods: readonly string[];
};
const { HTTPParser } = common;
export const { methods: METHODS } = common;

/** What a parser calls (`this` is the parser); the argument lists are llhttp's binding's. */
export interface ParserCallbacks<C> {
  /** Header fields delivered ahead of headers-complete (a long head: llhttp's slow path). */
  readonly onHeaders: (this: LlhttpParser<C>, headers: string[], url: string) => void;
  readonly onHeadersComplete: (
    this: LlhttpParser<C>,
    versionMajor: number,
    versionMinor: number,
    headers: string[] | undefined,
    method: number,
    url: string | undefined,
    statusCode: number,
    statusMessage: string,
    upgrade: boolean,
    shouldKeepAlive: boolean,
  ) => number;
  readonly onBody: (this: LlhttpParser<C>, chunk: Buffer) => void;
  readonly onMessageComplete: (this: LlhttpParser<C>) => void;
  /** After each read the parser consumed natively, with what execute() returned. */
  readonly onExecute: (this: LlhttpParser<C>, ret: number | (Error & { code?: string })) => void;
  /** Optional: each callback from C++ into JavaScript costs, and this one comes per message. */
  readonly onMessageBegin?: (this: LlhttpParser<C>) => void;
}

/**
 * A parser for requests (a server's) or responses (a client's) reading for `conn`.
 * `maxHeaderSize` 0: Node's default (`--max-http-header-size`).
 */
export function newParser<C>(
  kind: 'request' | 'response',
  conn: C,
  maxHeaderSize: number,
  cb: ParserCallbacks<C>,
): LlhttpParser<C> {
  const p = new HTTPParser<C>();
  const type = kind === 'request' ? HTTPParser.REQUEST : HTTPParser.RESPONSE;
  p.initialize(type, {}, maxHeaderSize, HTTPParser.kLenientNone);
  p[HTTPParser.kOnHeaders] = cb.onHeaders;
  p[HTTPParser.kOnHeadersComplete] = cb.onHeadersComplete;
  p[HTTPParser.kOnBody] = cb.onBody;
  p[HTTPParser.kOnMessageComplete] = cb.onMessageComplete;
  p[HTTPParser.kOnExecute] = cb.onExecute;
  if (cb.onMessageBegin) p[HTTPParser.kOnMessageBegin] = cb.onMessageBegin;
  p.conn = conn;
  return p;
}

/**
 * Whether `execute()` / `finish()` returned an error. Not `instanceof Error`: the parser's errors
 * come from Node's realm, which is not the code's under jest's vm contexts.
 */
export function isParseError(ret: number | Error | undefined): ret is Error & { code?: string } {
  return ret !== undefined && typeof ret !== 'number';
}

/**
 * Headers of which IncomingMessage keeps the first and drops later duplicates (`_http_incoming`'s
 * matchKnownFields, Node 20). Every other header's duplicates are joined with `, ` (`cookie`:
 * `; `), and `set-cookie` is kept as an array.
 */
const FIRST_WINS: ReadonlySet<string> = new Set([
  'age',
  'authorization',
  'content-length',
  'content-type',
  'etag',
  'expires',
  'from',
  'host',
  'if-modified-since',
  'if-unmodified-since',
  'last-modified',
  'location',
  'max-forwards',
  'proxy-authorization',
  'referer',
  'retry-after',
  'server',
  'user-agent',
]);

/**
 * `[name, value, name, value, ...]` from the parser folded into a header map exactly as
 * IncomingMessage folds `req.headers` / `res.headers` / trailers (names lower-cased; duplicates
 * dropped, joined or, for set-cookie, kept as an array). Written out rather than calling
 * `IncomingMessage.prototype._addHeaderLine`, which builds and slices a flagged copy of every
 * name it does not know: the fold runs twice per proxied request and side.
 */
export function foldHeaders(raw: readonly string[]): HeaderMap {
  const h: HeaderMap = {};
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] ?? '').toLowerCase();
    const value = raw[i + 1] ?? '';
    const cur = h[name];
    if (name === 'set-cookie') {
      if (cur === undefined) h[name] = [value];
      else (cur as string[]).push(value);
    } else if (typeof cur !== 'string') {
      // First of its name (or a name Object.prototype has, which Node also overwrites).
      h[name] = value;
    } else if (!FIRST_WINS.has(name)) {
      h[name] = cur + (name === 'cookie' ? '; ' : ', ') + value;
    }
  }
  return h;
}

/** The socket's native handle (a TCP handle or the TLS layer over it). */
interface StreamHandle {
  isStreamBase?: boolean;
  _consumed?: boolean;
}
/** A socket whose native handle a parser may consume. */
export type ConsumableSocket = net.Socket & { _handle?: StreamHandle | null };

/**
 * Hands the socket's reads to the parser natively, as Node's server does (`parser.consume`): reads
 * go from libuv (or the TLS layer) straight into llhttp, with no Buffer, stream push or 'data'
 * event per read. A read Buffer is an ArrayBuffer with its own malloc'd memory that every
 * scavenge sweeps; that sweep was half of a proxy's scavenge pause. End of stream and read errors
 * still reach the socket ('end', 'error', 'close'). Not while bytes wait in the socket's JS buffer
 * (they would be parsed after later ones): a later call does it once they are read. No-op
 * when `parser` is undefined or reads natively already.
 */
export function consumeSocket<C>(
  socket: ConsumableSocket,
  parser: LlhttpParser<C> | undefined,
): void {
  if (parser === undefined || parser.consuming === true) return;
  const h = socket._handle;
  if (!h || h.isStreamBase !== true || h._consumed === true || socket.readableLength > 0) return;
  h._consumed = true;
  parser.consuming = true;
  parser.consume(h);
}

/** Gives the socket's reads back to its JS stream ('data' events). No-op unless consumed. */
export function unconsumeSocket<C>(
  socket: ConsumableSocket,
  parser: LlhttpParser<C> | undefined,
): void {
  if (parser?.consuming !== true) return;
  parser.consuming = false;
  const h = socket._handle;
  if (h) h._consumed = false;
  parser.unconsume();
}
