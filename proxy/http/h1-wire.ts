/**
 * HTTP/1.1 wire helpers shared by the lean client (lean-h1.ts) and the lean server
 * (lean-h1-server.ts): Node's checks for outgoing header names and values, and the serialisation
 * of one header into `name: value` lines, so both write exactly what Node's own client and server
 * would accept.
 */

/** Node's checks for outgoing header values and names (`_http_common`). */
export const INVALID_HEADER_CHAR = /[^\t\x20-\x7e\x80-\xff]/;
export const HTTP_TOKEN = /^[\^_`a-zA-Z\-0-9!#$%&'*+.|~]+$/;

export const CRLF = '\r\n';
export const LAST_CHUNK = '0\r\n\r\n';

/**
 * The error Node throws for a bad outgoing header (same `code`), naming the header and whether it
 * is a request or a response header.
 */
export function invalidHeader(
  name: string,
  what: 'name' | 'character',
  side: 'upstream request' | 'response',
): Error {
  const err: Error & { code?: string } = new TypeError(
    `invalid ${what} in ${side} header "${name}"`,
  );
  err.code = what === 'name' ? 'ERR_INVALID_HTTP_TOKEN' : 'ERR_INVALID_CHAR';
  return err;
}

/**
 * `name: value\r\n` for each value of one header (a value containing CR, LF or other characters
 * Node refuses throws, so a header edit cannot split the head).
 * @throws TypeError with code ERR_INVALID_CHAR
 */
export function headerValueLines(
  name: string,
  v: string | readonly string[],
  side: 'upstream request' | 'response',
): string {
  if (typeof v === 'string') {
    if (INVALID_HEADER_CHAR.test(v)) throw invalidHeader(name, 'character', side);
    return name + ': ' + v + CRLF;
  }
  let s = '';
  for (const one of v) {
    if (INVALID_HEADER_CHAR.test(one)) throw invalidHeader(name, 'character', side);
    s += name + ': ' + one + CRLF;
  }
  return s;
}
