/** Signs leaf certificates with the CA's key. Pure: no I/O, time comes in as an argument. */
import type * as crypto from 'node:crypto';
import {
  createCertificate,
  type Name,
  Oid,
  type ParsedCertificate,
  randomSerial,
  type SubjectAltNames,
  toPem,
} from '../common/pki';
import type { SigningMaterial } from './keystore';

/** Clock-skew allowance: notBefore is backdated by this much, at most 10 % of the lifetime. */
export const MAX_BACKDATE_MS = 60_000;

/** An issued certificate and the chain to hand out: leaf, intermediates, root. */
export interface Issued {
  readonly der: Buffer;
  readonly serialHex: string;
  /** Whole seconds, as encoded in the certificate. */
  readonly notAfter: Date;
  readonly chainPem: string[];
}

export class CertIssuer {
  constructor(private readonly material: SigningMaterial) {}

  /**
   * Issues a leaf for `publicKeySpki`. The lifetime is `ttlMs`, backdated by min(60 s, 10 %) for
   * clock skew (linkerd2's tls.Validity habit) and never past the signing certificate's end.
   * Nothing from the request is copied except the public key: the caller chose the SANs.
   */
  issue(opts: {
    publicKeySpki: Buffer;
    subject: Name;
    sans: SubjectAltNames;
    ttlMs: number;
    now: number;
  }): Issued {
    const backdate = Math.min(MAX_BACKDATE_MS, Math.floor(opts.ttlMs / 10));
    const notAfter = Math.min(opts.now + opts.ttlMs, this.material.signingCert.notAfter.getTime());
    const serial = randomSerial();
    const der = createCertificate(
      {
        serial,
        subject: opts.subject,
        publicKeySpki: opts.publicKeySpki,
        notBefore: new Date(opts.now - backdate),
        notAfter: new Date(notAfter),
        isCa: false,
        sans: opts.sans,
      },
      this.material.issuer,
    );
    // Built from what we encoded rather than parsed back: issuing is the CA's hot path.
    return {
      der,
      serialHex: serial.toString('hex'),
      notAfter: new Date(Math.floor(notAfter / 1000) * 1000),
      chainPem: [
        toPem('CERTIFICATE', der),
        ...this.material.intermediatesPem,
        ...this.material.rootsPem.slice(0, 1),
      ],
    };
  }

  /** The key that signs leaves (to recognise our own certificates). */
  get signingPublicKey(): crypto.KeyObject {
    return this.material.signingPublicKey;
  }
}

/** The subject Sail puts in workload certificates: the trust domain and the node name. */
export function workloadSubject(trustDomain: string, node: string): Name {
  return [
    [Oid.organization, trustDomain],
    [Oid.commonName, node],
  ];
}

/** The node name in a certificate: its subject common name, else its first DNS SAN. */
export function nodeNameOf(cert: ParsedCertificate): string | undefined {
  const cn = cert.subject.find(([oid]) => oid === Oid.commonName)?.[1];
  return cn ?? cert.dnsNames[0];
}
