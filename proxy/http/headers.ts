/**
 * Header work of the HTTP layer: hop-by-hop stripping (HTTP/1.1 ↔ HTTP/2), Envoy header edits,
 * x-forwarded-client-cert, redirect locations, consistent-hash inputs and local replies for gRPC.
 * Pure functions; the connection manager calls them per request.
 */
import * as crypto from 'node:crypto';
import type {
  ForwardClientCert,
  HashPolicy,
  HeaderEdits,
  HttpHandler,
  RedirectAction,
} from '../model';
import type { PeerIdentity } from '../types';
import { combineHashes, hashString } from '../upstream/hash';
import { queryParameter } from './routing';

/** A header map as Node gives and takes them (lowercase names). */
export type HeaderMap = Record<string, string | string[] | undefined>;

/**
 * Connection-specific headers (RFC 9110 §7.6.1, RFC 9113 §8.2.2): never forwarded, and HTTP/2
 * forbids them. `te` is kept only as `trailers` (gRPC needs it). `host` is handled separately.
 */
const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'te',
  'http2-settings',
  'host',
]);

/** Removes header `name` from a header map (header maps are keyed by name by design). */
export function deleteHeader(h: HeaderMap, name: string): void {
  // eslint-disable-next-line @typescript-eslint/no-dynamic-delete
  delete h[name];
}

/**
 * Copies `src` without pseudo-headers, hop-by-hop headers and the headers the `connection` header
 * names. Keeps `te: trailers`. The result is a fresh object the caller may edit.
 */
export function copyEndToEnd(src: HeaderMap): HeaderMap {
  const out: HeaderMap = {};
  const connection = src.connection;
  for (const name of Object.keys(src)) {
    if (name.charCodeAt(0) === 0x3a /* : */) continue;
    if (HOP_BY_HOP.has(name)) {
      if (name === 'te') {
        const te = src.te;
        if (typeof te === 'string' && te.toLowerCase().includes('trailers')) out.te = 'trailers';
      }
      continue;
    }
    const v = src[name];
    if (v !== undefined) out[name] = v;
  }
  // RFC 9110 §7.6.1: headers listed in Connection are hop-by-hop too.
  if (typeof connection === 'string' && connection.includes(',')) {
    for (const token of connection.split(',')) deleteHeader(out, token.trim().toLowerCase());
  } else if (typeof connection === 'string') {
    const token = connection.trim().toLowerCase();
    if (token !== 'keep-alive' && token !== 'close' && token !== 'upgrade')
      deleteHeader(out, token);
  }
  return out;
}

/** Applies Envoy header edits in Envoy's order: removals, then `set`, then `add`. */
export function applyHeaderEdits(h: HeaderMap, e: HeaderEdits): void {
  for (const name of e.remove) deleteHeader(h, name);
  for (const { name, value } of e.set) h[name] = value;
  for (const { name, value } of e.add) appendHeader(h, name, value);
}

/** Adds a value to a header, keeping earlier values. */
export function appendHeader(h: HeaderMap, name: string, value: string): void {
  const cur = h[name];
  if (cur === undefined) h[name] = value;
  else if (typeof cur === 'string') h[name] = [cur, value];
  else h[name] = [...cur, value];
}

/** The first value of a header. */
export function firstValue(v: string | string[] | undefined): string | undefined {
  return typeof v === 'string' ? v : v?.[0];
}

/** Quotes an XFCC value when it holds a separator (Envoy quotes Subject always). */
function xfccQuote(v: string): string {
  return '"' + v.replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"';
}

/**
 * The element this proxy adds to `x-forwarded-client-cert` for a peer: `By` (our identity),
 * `Hash`, then `Subject`, `URI` and `DNS` as `details` asks. `Cert` needs the PEM, which the
 * PeerIdentity does not carry, so it is left out.
 */
export function buildXfccElement(
  localPrincipal: string,
  peer: PeerIdentity,
  details: HttpHandler['clientCertDetails'],
): string {
  const parts: string[] = [];
  if (localPrincipal !== '') parts.push('By=' + localPrincipal);
  parts.push('Hash=' + peer.hash);
  if (details.subject && peer.subject !== '') parts.push('Subject=' + xfccQuote(peer.subject));
  if (details.uri && peer.spiffeId !== '') parts.push('URI=' + peer.spiffeId);
  if (details.dns) for (const d of peer.dns) parts.push('DNS=' + d);
  return parts.join(';');
}

/**
 * Applies `forward_client_cert_details` to request headers `h`. `element` is this hop's XFCC
 * element when the client connection is mTLS (see {@link buildXfccElement}), else undefined.
 */
export function applyXfcc(
  h: HeaderMap,
  mode: ForwardClientCert,
  element: string | undefined,
): void {
  const name = 'x-forwarded-client-cert';
  switch (mode) {
    case 'SANITIZE':
      deleteHeader(h, name);
      return;
    case 'ALWAYS_FORWARD_ONLY':
      return;
    case 'FORWARD_ONLY':
      if (element === undefined) deleteHeader(h, name);
      return;
    case 'APPEND_FORWARD': {
      if (element === undefined) {
        deleteHeader(h, name);
        return;
      }
      const cur = h[name];
      const existing = typeof cur === 'string' ? cur : cur?.join(',');
      h[name] = existing ? existing + ',' + element : element;
      return;
    }
    case 'SANITIZE_SET':
      if (element === undefined) deleteHeader(h, name);
      else h[name] = element;
      return;
  }
}

/** Default ports, so a redirect to a scheme's own port leaves the port out. */
function defaultPort(scheme: string): number {
  return scheme === 'https' ? 443 : 80;
}

/**
 * The `Location` of a redirect route (Envoy `RedirectAction`): scheme, host, port and path are
 * replaced when the action says so; `prefixRewrite` swaps the matched `prefix`; the query string is
 * kept unless `stripQuery` (a `path` with its own query replaces it).
 */
export function buildRedirectLocation(
  action: RedirectAction,
  req: { scheme: string; authority: string; path: string },
  matchedPrefix: string | undefined,
): string {
  const scheme = action.scheme ?? req.scheme;
  let host: string;
  let port: number | undefined;
  const authority = action.host ?? req.authority;
  const colon = authority.lastIndexOf(':');
  if (colon > 0 && authority.lastIndexOf(']') < colon) {
    host = authority.slice(0, colon);
    const p = Number(authority.slice(colon + 1));
    port = Number.isInteger(p) && p > 0 ? p : undefined;
  } else {
    host = authority;
  }
  if (action.port !== undefined) port = action.port;
  // A scheme change drops the old scheme's default port.
  if (
    action.scheme !== undefined &&
    port === defaultPort(req.scheme) &&
    action.port === undefined
  ) {
    port = undefined;
  }
  if (port === defaultPort(scheme)) port = undefined;
  const q = req.path.indexOf('?');
  const reqPath = q < 0 ? req.path : req.path.slice(0, q);
  const reqQuery = q < 0 ? '' : req.path.slice(q);
  let path: string;
  let query = action.stripQuery ? '' : reqQuery;
  if (action.path !== undefined) {
    const pq = action.path.indexOf('?');
    if (pq >= 0) {
      path = action.path.slice(0, pq);
      query = action.path.slice(pq);
    } else {
      path = action.path;
    }
  } else if (action.prefixRewrite !== undefined && matchedPrefix !== undefined) {
    path = action.prefixRewrite + reqPath.slice(matchedPrefix.length);
  } else {
    path = reqPath;
  }
  return `${scheme}://${host}${port !== undefined ? ':' + String(port) : ''}${path}${query}`;
}

/** The value of cookie `name` in a `cookie` header, or undefined. */
export function cookieValue(
  header: string | string[] | undefined,
  name: string,
): string | undefined {
  if (header === undefined) return undefined;
  const all = typeof header === 'string' ? header : header.join('; ');
  let start = 0;
  while (start < all.length) {
    let end = all.indexOf(';', start);
    if (end < 0) end = all.length;
    const eq = all.indexOf('=', start);
    if (eq > start && eq < end && all.slice(start, eq).trim() === name) {
      let v = all.slice(eq + 1, end).trim();
      if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1);
      return v;
    }
    start = end + 1;
  }
  return undefined;
}

/** What the hash policies need from a request. */
export interface HashInput {
  readonly headers: HeaderMap;
  readonly path: string;
  readonly sourceIp: string;
}

/** The consistent hash of a request, and a cookie to set when a cookie policy generated one. */
export interface HashResult {
  readonly hash: number | undefined;
  readonly setCookie?: string;
}

/**
 * Envoy's hash policies: each policy that finds its input contributes (combined in order); a
 * `terminal` policy that produced a hash stops the walk. A cookie policy with a TTL generates the
 * cookie when the request has none (and the response must set it).
 */
export function computeHash(
  policies: readonly HashPolicy[],
  input: HashInput,
  headerValue: (name: string) => string | undefined,
): HashResult {
  let hash: number | undefined;
  let setCookie: string | undefined;
  for (const p of policies) {
    let key: string | undefined;
    switch (p.kind) {
      case 'header':
        key = headerValue(p.name);
        break;
      case 'cookie': {
        key = cookieValue(input.headers.cookie, p.name);
        if (key === undefined && p.ttlMs !== undefined) {
          key = crypto.randomBytes(8).toString('hex');
          const maxAge = Math.floor(p.ttlMs / 1000);
          setCookie =
            `${p.name}="${key}"` +
            (maxAge > 0 ? `; Max-Age=${String(maxAge)}` : '') +
            (p.path !== undefined ? `; Path=${p.path}` : '') +
            '; HttpOnly';
        }
        break;
      }
      case 'sourceIp':
        key = input.sourceIp === '' ? undefined : input.sourceIp;
        break;
      case 'queryParameter':
        key = queryParameter(input.path, p.name);
        break;
    }
    if (key === undefined) continue;
    const h = hashString(key);
    hash = hash === undefined ? h : combineHashes(hash, h);
    if (p.terminal) break;
  }
  return setCookie !== undefined ? { hash, setCookie } : { hash };
}

/** gRPC status for an HTTP status of a local reply (Envoy `Grpc::Utility::httpToGrpcStatus`). */
export function httpToGrpcStatus(status: number): number {
  switch (status) {
    case 400:
      return 13; // INTERNAL
    case 401:
      return 16; // UNAUTHENTICATED
    case 403:
      return 7; // PERMISSION_DENIED
    case 404:
      return 12; // UNIMPLEMENTED
    case 429:
    case 502:
    case 503:
    case 504:
      return 14; // UNAVAILABLE
    default:
      return 2; // UNKNOWN
  }
}

/** True for a gRPC request (`content-type: application/grpc…`). */
export function isGrpcContentType(ct: string | string[] | undefined): boolean {
  const v = firstValue(ct);
  return v !== undefined && v.startsWith('application/grpc');
}
