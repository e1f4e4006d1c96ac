/**
 * Peer certificate checks shared by the server and client sides: what a peer's certificate says
 * (PeerIdentity, read once per connection), SAN matching (Node's checkServerIdentity matches host
 * names only; the mesh matches SPIFFE URI SANs) and the chain verdict of the handshake.
 */
import * as crypto from 'node:crypto';
import type * as tls from 'node:tls';
import { parseCertificate } from '../../common/pki';
import type { CertificateValidation, SanMatcher, StringMatcher } from '../model';
import type { PeerIdentity } from '../types';

/** A peer's SANs by type, including the rarely used EMAIL and IP_ADDRESS ones. */
interface PeerSans {
  readonly identity: PeerIdentity;
  /** Filled on first use: only SAN matchers of those types need them. */
  emails?: readonly string[];
  ips?: readonly string[];
  readonly x509: crypto.X509Certificate;
}

/** One entry per TLS socket; `null` means the peer sent no certificate. */
const peerBySocket = new WeakMap<tls.TLSSocket, PeerSans | null>();

/** RFC 4514 special characters that must be escaped in an attribute value. */
const RDN_SPECIAL = /[,+"\\<>;]/g;

/**
 * RFC 4514 order (most specific first) of Node's subject, which lists RDNs one per line in
 * certificate order (`O=cluster.local\nCN=vm-1` → `CN=vm-1,O=cluster.local`), as Envoy writes
 * `Subject=` in x-forwarded-client-cert.
 */
function rfc4514Subject(subject: string): string {
  if (subject === '') return '';
  const parts = subject.split('\n');
  const out: string[] = [];
  for (let i = parts.length - 1; i >= 0; i--) {
    const p = parts[i] as string;
    const eq = p.indexOf('=');
    out.push(eq < 0 ? p : p.slice(0, eq + 1) + p.slice(eq + 1).replace(RDN_SPECIAL, '\\$&'));
  }
  return out.join(',');
}

function describePeer(x509: crypto.X509Certificate): PeerSans {
  const raw = x509.raw;
  let uris: string[];
  let dns: string[];
  try {
    const parsed = parseCertificate(raw);
    uris = parsed.uris;
    dns = parsed.dnsNames;
  } catch {
    // OpenSSL accepted a certificate our DER reader does not: fall back to Node's SAN text.
    uris = altNames(x509, 'URI');
    dns = altNames(x509, 'DNS');
  }
  const spiffeId = uris.find(u => u.startsWith('spiffe://')) ?? '';
  return {
    identity: {
      spiffeId,
      uris,
      dns,
      subject: rfc4514Subject(x509.subject),
      hash: crypto.createHash('sha256').update(raw).digest('hex'),
    },
    x509,
  };
}

function peerOf(socket: tls.TLSSocket): PeerSans | undefined {
  let peer = peerBySocket.get(socket);
  if (peer === undefined) {
    // A connection's peer certificate is fixed at its handshake (no renegotiation), so it is read
    // once per connection. Not getPeerX509Certificate(): on Node 20 client sockets it hands the
    // certificate over once, and every later call (ours or another reader's) gets nothing.
    const raw = socket.getPeerCertificate().raw as Buffer | undefined;
    peer = raw && raw.length > 0 ? describePeer(new crypto.X509Certificate(raw)) : null;
    peerBySocket.set(socket, peer);
  }
  return peer ?? undefined;
}

/**
 * The peer's identity from its certificate, cached per socket. Undefined when it sent none.
 * Read the peer certificate only through here: Node 20 gives a client socket's certificate to
 * getPeerX509Certificate() once, so a reader that calls that first leaves nothing for the others.
 */
export function peerIdentityOf(socket: tls.TLSSocket): PeerIdentity | undefined {
  return peerOf(socket)?.identity;
}

/** Whether `value` satisfies a compiled StringMatcher. */
export function matchString(m: StringMatcher, value: string): boolean {
  const v = m.ignoreCase && m.kind !== 'regex' ? value.toLowerCase() : value;
  const want = m.ignoreCase ? m.value.toLowerCase() : m.value;
  switch (m.kind) {
    case 'exact':
      return v === want;
    case 'prefix':
      return v.startsWith(want);
    case 'suffix':
      return v.endsWith(want);
    case 'contains':
      return v.includes(want);
    case 'regex':
      return m.regex !== undefined && m.regex.test(value);
  }
}

/**
 * Splits Node's `subjectAltName` text (`DNS:a, URI:b, IP Address:1.2.3.4, email:x@y`) into the
 * values of one type. Values with special characters come JSON-quoted (Node ≥ 17.3.1).
 */
function altNames(x509: crypto.X509Certificate, prefix: string): string[] {
  const text = x509.subjectAltName;
  if (text === undefined) return [];
  const out: string[] = [];
  let i = 0;
  while (i < text.length) {
    const colon = text.indexOf(':', i);
    if (colon < 0) break;
    const type = text.slice(i, colon);
    let value: string;
    let end: number;
    if (text[colon + 1] === '"') {
      // A quoted value: find the closing quote that is not escaped.
      let j = colon + 2;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      try {
        value = JSON.parse(text.slice(colon + 1, j + 1)) as string;
      } catch {
        value = text.slice(colon + 2, j);
      }
      end = j + 1;
    } else {
      const comma = text.indexOf(', ', colon + 1);
      end = comma < 0 ? text.length : comma;
      value = text.slice(colon + 1, end);
    }
    if (type === prefix) out.push(value);
    i = end + 2;
  }
  return out;
}

function sansOfType(peer: PeerSans, type: SanMatcher['sanType']): readonly string[] {
  switch (type) {
    case 'URI':
      return peer.identity.uris;
    case 'DNS':
      return peer.identity.dns;
    case 'EMAIL':
      return (peer.emails ??= altNames(peer.x509, 'email'));
    case 'IP_ADDRESS':
      return (peer.ips ??= altNames(peer.x509, 'IP Address'));
  }
}

/** Whether one of `matchers` matches a SAN of the peer (true when there are no matchers). */
function sansMatch(peer: PeerSans, matchers: readonly SanMatcher[]): boolean {
  if (matchers.length === 0) return true;
  for (const m of matchers) {
    for (const san of sansOfType(peer, m.sanType)) if (matchString(m.matcher, san)) return true;
  }
  return false;
}

function describeSans(peer: PeerSans): string {
  const all = [...peer.identity.uris, ...peer.identity.dns];
  return all.length === 0 ? '(none)' : all.join(',');
}

/**
 * checkServerIdentity for tls.connect: the SAN matchers instead of Node's host name rule (peers
 * are dialled by IP, and the mesh names them by SPIFFE ID). No matchers: any certificate that
 * chains to the trust roots is accepted, as Envoy does without `match_subject_alt_names`.
 */
export function sanChecker(
  matchers: readonly SanMatcher[],
): (host: string, cert: tls.PeerCertificate) => Error | undefined {
  if (matchers.length === 0) return () => undefined;
  return (_host, cert) => {
    const x509 = new crypto.X509Certificate(cert.raw);
    const peer = describePeer(x509);
    if (sansMatch(peer, matchers)) return undefined;
    return Object.assign(
      new Error(`peer certificate SANs ${describeSans(peer)} match no allowed subject alt name`),
      { code: 'ERR_TLS_CERT_SAN_MISMATCH' },
    );
  };
}

/** The chain verdict OpenSSL reached during the handshake, through the TLS handle. */
interface HandleWithVerify {
  verifyError?: () => (Error & { code?: string }) | null;
}

/**
 * The handshake's chain verification error, or undefined when the chain verified. OpenSSL checks
 * the chain against the context's CA store during every handshake with a peer certificate, but
 * Node publishes the result (`socket.authorized`) only for sockets of a tls.Server or tls.connect;
 * the listeners wrap accepted sockets themselves, so the verdict is read from the handle.
 * `peer.test.ts` checks that the handle still has this shape.
 */
export function chainError(socket: tls.TLSSocket): string | undefined {
  const handle = (socket as unknown as { _handle?: HandleWithVerify | null })._handle;
  if (typeof handle?.verifyError !== 'function') {
    // Fail closed: without the verdict the chain cannot be trusted.
    return socket.authorized ? undefined : 'certificate chain verdict unavailable';
  }
  const err = handle.verifyError();
  return err ? `certificate chain rejected: ${err.code ?? err.message}` : undefined;
}

/**
 * Checks a completed handshake's peer against `validation` (see TlsProvider.verifyPeer). A peer
 * without a certificate passes: when one is required the handshake itself failed.
 */
export function verifyPeerSocket(
  socket: tls.TLSSocket,
  validation: CertificateValidation | undefined,
): string | undefined {
  if (validation === undefined) return undefined;
  const peer = peerOf(socket);
  if (!peer) return undefined;
  if (validation.trust !== undefined) {
    const err = chainError(socket);
    if (err !== undefined) return err;
  }
  if (!sansMatch(peer, validation.sanMatchers)) {
    return `peer certificate SANs ${describeSans(peer)} match no allowed subject alt name`;
  }
  return undefined;
}
