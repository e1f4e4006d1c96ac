/**
 * TLS credentials for gRPC: a certificate provider whose files can be swapped at run time (so a
 * server rotates its serving certificate without a restart), server credentials that ask for but
 * do not require a client certificate, and client credentials that check the server's SPIFFE ID
 * instead of its host name (VMs are reached by IP, and IPs change).
 */
import * as crypto from 'node:crypto';
import * as tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { experimental } from '@grpc/grpc-js';
import { parseCertificatesPem } from '../pki/pem';
import { parseCertificate } from '../pki/x509';

type CaListener = experimental.CaCertificateUpdateListener;
type IdentityListener = experimental.IdentityCertificateUpdateListener;

/** A CertificateProvider holding PEM in memory; `update` pushes new material to live servers. */
export class StaticCertificateProvider implements experimental.CertificateProvider {
  private readonly caListeners = new Set<CaListener>();
  private readonly identityListeners = new Set<IdentityListener>();
  private ca: Buffer;
  private identity: { certificate: Buffer; privateKey: Buffer };

  constructor(caPem: string, certChainPem: string, keyPem: string) {
    this.ca = Buffer.from(caPem);
    this.identity = { certificate: Buffer.from(certChainPem), privateKey: Buffer.from(keyPem) };
  }

  /** Replaces the trust roots and/or identity; listeners get it on their next handshake. */
  update(material: { caPem?: string; certChainPem?: string; keyPem?: string }): void {
    if (material.caPem !== undefined) {
      this.ca = Buffer.from(material.caPem);
      for (const l of this.caListeners) l({ caCertificate: this.ca });
    }
    if (material.certChainPem !== undefined && material.keyPem !== undefined) {
      this.identity = {
        certificate: Buffer.from(material.certChainPem),
        privateKey: Buffer.from(material.keyPem),
      };
      for (const l of this.identityListeners) l(this.identity);
    }
  }

  // The first delivery is deferred: grpc-js's CertificateProviderServerCredentials adds its
  // listeners before it registers its own watcher, so a synchronous answer would be lost and the
  // server would reset every handshake.
  addCaCertificateListener(listener: CaListener): void {
    this.caListeners.add(listener);
    queueMicrotask(() => {
      if (this.caListeners.has(listener)) listener({ caCertificate: this.ca });
    });
  }
  removeCaCertificateListener(listener: CaListener): void {
    this.caListeners.delete(listener);
  }
  addIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.add(listener);
    queueMicrotask(() => {
      if (this.identityListeners.has(listener)) listener(this.identity);
    });
  }
  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.delete(listener);
  }
}

/**
 * Server credentials from a provider. With `requireClientCert` false the server still asks for a
 * client certificate and verifies any it gets against the provider's roots, but lets clients
 * without one in (a host's first CSR comes with a join token, not a certificate).
 */
export function serverCredentials(
  provider: StaticCertificateProvider,
  requireClientCert: boolean,
): grpc.ServerCredentials {
  return experimental.createCertificateProviderServerCredentials(
    provider,
    provider,
    requireClientCert,
  );
}

/** A client identity: certificate chain and key, PEM. */
export interface ClientIdentity {
  readonly certChainPem: string;
  readonly keyPem: string;
}

/**
 * Client credentials that trust `rootsPem`, present `identity` when given, and accept the server
 * only if its leaf certificate carries `expectedSpiffeId` as a URI SAN (host names are not checked).
 */
export function clientCredentials(
  rootsPem: string,
  expectedSpiffeId: string | undefined,
  identity?: ClientIdentity,
): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(
    Buffer.from(rootsPem),
    identity ? Buffer.from(identity.keyPem) : null,
    identity ? Buffer.from(identity.certChainPem) : null,
    {
      checkServerIdentity: (_host, cert) => {
        if (expectedSpiffeId === undefined) return undefined;
        const uris = cert.raw ? parseCertificate(cert.raw).uris : [];
        if (uris.includes(expectedSpiffeId)) return undefined;
        return new Error(
          `server identity ${uris.join(',') || '(none)'} is not ${expectedSpiffeId}`,
        );
      },
    },
  );
}

/** A call's TLS-verified client certificate, read once per connection. */
export interface PeerCertificate {
  /** The leaf certificate, DER. */
  readonly der: Buffer;
  /** Lowercase hex SHA-256 of `der`. */
  readonly fingerprint: string;
}

/** What peerCertificate needs of a server call (grpc-js's ServerUnaryCall and friends). */
export interface AuthContextCall {
  getAuthContext(): { sslPeerCertificate?: { raw?: Buffer } };
}

/**
 * The peer certificate of each TLS connection, or null for one without a verified certificate.
 * A connection's peer certificate is fixed at its handshake (TLS 1.3 has no renegotiation and
 * Node refuses client-initiated TLS 1.2 renegotiation), so it is read once per connection rather
 * than once per call: grpc-js's getAuthContext() converts the whole certificate to a JS object
 * on every call, which profiled at 5 % of the CA's CPU (BENCHMARKS.md).
 */
const peerBySocket = new WeakMap<object, PeerCertificate | null>();

/**
 * The TLS socket under a grpc-js server call, through grpc-js's internal fields (1.14: the
 * handler's call object holds an interceptor chain whose innermost call holds the HTTP/2 stream).
 * Undefined when the shape differs (another grpc-js version): callers then fall back to the
 * public getAuthContext(). `credentials.test.ts` checks that the shape is found.
 */
export function tlsSocketOf(call: unknown): tls.TLSSocket | undefined {
  let c = (call as { call?: unknown }).call;
  for (let depth = 0; depth < 8 && c !== null && typeof c === 'object'; depth++) {
    const stream = (c as { stream?: { session?: { socket?: unknown } } }).stream;
    if (stream !== undefined) {
      const socket = stream.session?.socket;
      return socket instanceof tls.TLSSocket ? socket : undefined;
    }
    c = (c as { nextCall?: unknown }).nextCall;
  }
  return undefined;
}

function fromAuthContext(call: AuthContextCall): PeerCertificate | null {
  const raw = call.getAuthContext().sslPeerCertificate?.raw;
  if (!raw || raw.length === 0) return null;
  return { der: raw, fingerprint: crypto.createHash('sha256').update(raw).digest('hex') };
}

/**
 * The verified peer certificate of a call and its fingerprint, or undefined when the client sent
 * none or one that failed verification (grpc-js's getAuthContext() rule: `socket.authorized`).
 * Cached per TLS connection.
 */
export function peerCertificateOf(call: AuthContextCall): PeerCertificate | undefined {
  const socket = tlsSocketOf(call);
  if (!socket) return fromAuthContext(call) ?? undefined;
  let peer = peerBySocket.get(socket);
  if (peer === undefined) {
    // HTTP/2 streams flow only after the handshake, so the answer is already final here.
    peer = fromAuthContext(call);
    peerBySocket.set(socket, peer);
  }
  return peer ?? undefined;
}

/** The verified peer certificate of a call, as DER, or undefined when the client sent none. */
export function peerCertificate(call: AuthContextCall): Buffer | undefined {
  return peerCertificateOf(call)?.der;
}

/** The SHA-256 fingerprints of every certificate in a PEM bundle. */
export function bundleFingerprints(pem: string): string[] {
  return parseCertificatesPem(pem).map(d => crypto.createHash('sha256').update(d).digest('hex'));
}
