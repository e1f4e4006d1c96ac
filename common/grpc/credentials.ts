/**
 * TLS credentials for gRPC: a certificate provider whose files can be swapped at run time (so a
 * server rotates its serving certificate without a restart), server credentials that ask for but
 * do not require a client certificate, and client credentials that check the server's SPIFFE ID
 * instead of its host name (VMs are reached by IP, and IPs change).
 */
import * as crypto from 'node:crypto';
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

/** The verified peer certificate of a call, as DER, or undefined when the client sent none. */
export function peerCertificate(call: {
  getAuthContext(): { sslPeerCertificate?: { raw?: Buffer } };
}): Buffer | undefined {
  const ctx = call.getAuthContext();
  const raw = ctx.sslPeerCertificate?.raw;
  return raw && raw.length > 0 ? raw : undefined;
}

/** The SHA-256 fingerprints of every certificate in a PEM bundle. */
export function bundleFingerprints(pem: string): string[] {
  return parseCertificatesPem(pem).map(d => crypto.createHash('sha256').update(d).digest('hex'));
}
