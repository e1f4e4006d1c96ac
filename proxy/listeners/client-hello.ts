/**
 * TLS ClientHello sniffing (Envoy's tls_inspector): from the first bytes of a connection, tells
 * whether it starts TLS and, if so, which server name (SNI) and application protocols (ALPN) the
 * client asks for. Filter chains match on these before the proxy decides whether to terminate
 * TLS. Pure: no sockets, no allocation beyond the result strings.
 *
 * Layout (RFC 8446 §5.1, §4.1.2; RFC 6066 §3; RFC 7301 §3.1):
 *   record:      type(1)=22 version(2) length(2) fragment
 *   handshake:   msg_type(1)=1 length(3) body   — may span several records
 *   ClientHello: legacy_version(2) random(32) session_id<0..32> cipher_suites<2..2^16-2>
 *                compression_methods<1..2^8-1> extensions<0..2^16-1>
 *   extension:   type(2) length(2) data; server_name = 0, application_layer_protocol_negotiation = 16
 */

/** What the first bytes of a connection say. */
export type ClientHelloResult =
  /** A TLS record has started but the ClientHello is not complete yet: read more. */
  | { readonly kind: 'incomplete' }
  /** Not TLS (or a TLS record that is not a well-formed ClientHello): raw_buffer. */
  | { readonly kind: 'notTls' }
  | {
      readonly kind: 'tls';
      /** SNI host name, lowercase; '' when the client sent none. */
      readonly serverName: string;
      /** ALPN protocols in the client's order; empty when it sent none. */
      readonly alpn: readonly string[];
    };

const RECORD_HEADER_BYTES = 5;
const HANDSHAKE_HEADER_BYTES = 4;
const CONTENT_TYPE_HANDSHAKE = 22;
const HANDSHAKE_CLIENT_HELLO = 1;
const EXT_SERVER_NAME = 0;
const EXT_ALPN = 16;
const SERVER_NAME_HOST = 0;
/** A record's fragment is at most 2^14 bytes (RFC 8446 §5.1); more means this is not TLS. */
const MAX_RECORD_BYTES = 1 << 14;
/**
 * The largest ClientHello accepted (Envoy's tls_inspector allows 64 KiB); a bigger one is not
 * sniffed (the connection is treated as TLS without SNI/ALPN).
 */
export const MAX_CLIENT_HELLO_BYTES = 64 * 1024;

const INCOMPLETE: ClientHelloResult = Object.freeze({ kind: 'incomplete' });
const NOT_TLS: ClientHelloResult = Object.freeze({ kind: 'notTls' });
const NO_ALPN: readonly string[] = Object.freeze([]);
/** TLS whose hello could not be read in full (too large): match as TLS with no SNI or ALPN. */
export const TLS_UNKNOWN: ClientHelloResult = Object.freeze({
  kind: 'tls',
  serverName: '',
  alpn: NO_ALPN,
});

/**
 * Parses the start of a connection. Call again with more bytes while it says `incomplete`.
 * The input is not modified or retained.
 */
export function parseClientHello(data: Buffer): ClientHelloResult {
  if (data.length === 0) return INCOMPLETE;
  if (data[0] !== CONTENT_TYPE_HANDSHAKE) return NOT_TLS;
  if (data.length >= 2 && data[1] !== 3) return NOT_TLS;

  // Gather the handshake message from as many records as it takes. The common case is one record
  // holding the whole hello: parse it in place without copying.
  let offset = 0;
  let msgLen = -1;
  let parts: Buffer[] | undefined;
  let first: Buffer | undefined;
  let have = 0;
  for (;;) {
    if (data.length - offset < RECORD_HEADER_BYTES) return INCOMPLETE;
    if (data[offset] !== CONTENT_TYPE_HANDSHAKE || data[offset + 1] !== 3) return NOT_TLS;
    const recordLen = data.readUInt16BE(offset + 3);
    if (recordLen === 0 || recordLen > MAX_RECORD_BYTES) return NOT_TLS;
    const fragmentEnd = offset + RECORD_HEADER_BYTES + recordLen;
    const available = Math.min(fragmentEnd, data.length);
    const fragment = data.subarray(offset + RECORD_HEADER_BYTES, available);
    if (first === undefined) first = fragment;
    else (parts ??= [first]).push(fragment);
    have += fragment.length;
    if (msgLen < 0 && have >= HANDSHAKE_HEADER_BYTES) {
      const head = parts ? Buffer.concat(parts) : first;
      if (head[0] !== HANDSHAKE_CLIENT_HELLO) return NOT_TLS;
      msgLen = head.readUIntBE(1, 3);
      if (msgLen + HANDSHAKE_HEADER_BYTES > MAX_CLIENT_HELLO_BYTES) return TLS_UNKNOWN;
    }
    if (msgLen >= 0 && have >= msgLen + HANDSHAKE_HEADER_BYTES) break;
    if (available < fragmentEnd) return INCOMPLETE;
    offset = fragmentEnd;
  }
  const msg = parts ? Buffer.concat(parts) : first;
  return parseHello(msg.subarray(HANDSHAKE_HEADER_BYTES, HANDSHAKE_HEADER_BYTES + msgLen));
}

/** Parses a ClientHello body; a malformed one is `notTls` (the handshake would fail anyway). */
function parseHello(b: Buffer): ClientHelloResult {
  let p = 2 + 32; // legacy_version, random
  if (p + 1 > b.length) return NOT_TLS;
  p += 1 + b[p]!; // session_id
  if (p + 2 > b.length) return NOT_TLS;
  p += 2 + b.readUInt16BE(p); // cipher_suites
  if (p + 1 > b.length) return NOT_TLS;
  p += 1 + b[p]!; // compression_methods
  if (p > b.length) return NOT_TLS;
  if (p === b.length) return TLS_UNKNOWN; // no extensions at all (SSL 3.0 style hello)
  if (p + 2 > b.length) return NOT_TLS;
  const extEnd = p + 2 + b.readUInt16BE(p);
  if (extEnd > b.length) return NOT_TLS;
  p += 2;
  let serverName = '';
  let alpn = NO_ALPN;
  while (p + 4 <= extEnd) {
    const type = b.readUInt16BE(p);
    const len = b.readUInt16BE(p + 2);
    const start = p + 4;
    const end = start + len;
    if (end > extEnd) return NOT_TLS;
    if (type === EXT_SERVER_NAME) {
      const name = readServerName(b, start, end);
      if (name === undefined) return NOT_TLS;
      serverName = name;
    } else if (type === EXT_ALPN) {
      const protocols = readAlpn(b, start, end);
      if (protocols === undefined) return NOT_TLS;
      alpn = protocols;
    }
    p = end;
  }
  if (p !== extEnd) return NOT_TLS;
  return { kind: 'tls', serverName, alpn };
}

/** server_name extension: ServerNameList; the first host_name entry (RFC 6066 allows one). */
function readServerName(b: Buffer, start: number, end: number): string | undefined {
  if (start === end) return ''; // a server's empty acknowledgement; never sent by clients, harmless
  if (start + 2 > end || start + 2 + b.readUInt16BE(start) !== end) return undefined;
  let p = start + 2;
  while (p + 3 <= end) {
    const nameType = b[p]!;
    const len = b.readUInt16BE(p + 1);
    const nameEnd = p + 3 + len;
    if (nameEnd > end) return undefined;
    if (nameType === SERVER_NAME_HOST) return b.toString('latin1', p + 3, nameEnd).toLowerCase();
    p = nameEnd;
  }
  return p === end ? '' : undefined;
}

/** ALPN extension: ProtocolNameList of 1-byte-length-prefixed names. */
function readAlpn(b: Buffer, start: number, end: number): string[] | undefined {
  if (start + 2 > end || start + 2 + b.readUInt16BE(start) !== end) return undefined;
  const out: string[] = [];
  let p = start + 2;
  while (p < end) {
    const len = b[p]!;
    if (len === 0 || p + 1 + len > end) return undefined;
    out.push(b.toString('latin1', p + 1, p + 1 + len));
    p += 1 + len;
  }
  return out;
}
