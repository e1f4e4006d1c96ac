/**
 * The workload identity on disk (DESIGN §3.3): `cert-chain.pem`, `key.pem` (0600) and
 * `root-cert.pem` (the trust bundle) in one directory, replaced together atomically so a reader
 * (the proxy, an application doing its own mTLS) never sees a key from one rotation and a
 * certificate from another. Also the checks that decide whether a stored or issued certificate
 * can be used.
 */
import * as crypto from 'node:crypto';
import * as path from 'node:path';
import { writeFileSetAtomic } from '../../common/fs';
import {
  CERT_CHAIN_FILE,
  KEY_FILE,
  ROOT_CERT_FILE,
  readIdentityFile,
  readIdentityFiles,
} from '../../common/identity-files';
import {
  type ParsedCertificate,
  parseCertificate,
  parseCertificatesPem,
  parseSpiffeId,
  toPem,
} from '../../common/pki';
import { CertStoreError } from '../errors';
import { parsePrivateKeyPem, publicKeySpki } from './keys';

/** A usable workload identity: a certificate chain, its key and the roots it chains to. */
export interface WorkloadIdentity {
  /** The SPIFFE ID in the leaf's URI SAN. */
  readonly spiffeId: string;
  /** Leaf first, then intermediates (and the root, as the CA returns it), PEM. */
  readonly certChainPem: string;
  /** PKCS#8 PEM. Never logged (the field name is on the logger's redaction list). */
  readonly privateKeyPem: string;
  /** The trust bundle: every root to trust, PEM. */
  readonly rootsPem: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** Lowercase hex serial of the leaf, for logs. */
  readonly serialHex: string;
}

/** Identity material to validate or store. */
export interface IdentityMaterial {
  readonly certChainPem: string;
  readonly privateKeyPem: string;
  readonly rootsPem: string;
}

interface Cert {
  readonly parsed: ParsedCertificate;
  readonly x509: crypto.X509Certificate;
}

function toCert(der: Buffer): Cert {
  return { parsed: parseCertificate(der), x509: new crypto.X509Certificate(der) };
}

function describe(c: Cert): string {
  return `certificate ${c.x509.subject.replace(/\n/g, ', ') || '(no subject)'} serial ${c.parsed.serialHex}`;
}

function checkTime(c: Cert, nowMs: number): void {
  if (nowMs < c.parsed.notBefore.getTime())
    throw new Error(`${describe(c)} is not valid before ${c.parsed.notBefore.toISOString()}`);
  if (nowMs >= c.parsed.notAfter.getTime())
    throw new Error(`${describe(c)} expired at ${c.parsed.notAfter.toISOString()}`);
}

/**
 * Verifies that `chain` (leaf first) leads to one of `roots` at time `nowMs`: each certificate is
 * signed by the next one, which must be a CA, every certificate is within its validity, and the
 * walk ends at a root (either a root signs the last certificate, or the chain ends with the root).
 * Signatures are checked with native node:crypto.
 * @throws Error saying which link failed
 */
export function verifyChain(
  chain: readonly Buffer[],
  roots: readonly Buffer[],
  nowMs: number,
): void {
  if (chain.length === 0) throw new Error('certificate chain is empty');
  if (roots.length === 0) throw new Error('no trusted root certificates');
  const trusted = roots.map(toCert);
  const certs = chain.map(toCert);
  for (let i = 0; i < certs.length; i++) {
    const cert = certs[i] as Cert;
    if (i > 0 && trusted.some(r => r.parsed.der.equals(cert.parsed.der))) {
      checkTime(cert, nowMs);
      return;
    }
    checkTime(cert, nowMs);
    const root = trusted.find(
      r => r.parsed.subjectDer.equals(cert.parsed.issuerDer) && cert.x509.verify(r.x509.publicKey),
    );
    if (root) {
      checkTime(root, nowMs);
      return;
    }
    const next = certs[i + 1];
    if (!next) throw new Error(`${describe(cert)} is not signed by a trusted root`);
    if (!next.parsed.isCa)
      throw new Error(`${describe(next)} signs another certificate but is not a CA`);
    if (
      !next.parsed.subjectDer.equals(cert.parsed.issuerDer) ||
      !cert.x509.verify(next.x509.publicKey)
    ) {
      throw new Error(`${describe(cert)} is not signed by the next certificate in the chain`);
    }
  }
  throw new Error('certificate chain does not lead to a trusted root');
}

/**
 * Checks identity material and describes it: the chain parses and verifies against the roots at
 * `nowMs`, the leaf is not a CA and carries exactly one SPIFFE URI SAN, and the key belongs to the
 * leaf.
 * @throws CertStoreError with AGENT_CERT_EXPIRED, AGENT_KEY_MISMATCH or AGENT_CERT_INVALID
 */
export function validateIdentity(m: IdentityMaterial, nowMs: number): WorkloadIdentity {
  let chain: Buffer[];
  let roots: Buffer[];
  let leaf: ParsedCertificate;
  try {
    chain = parseCertificatesPem(m.certChainPem);
    roots = parseCertificatesPem(m.rootsPem);
    if (chain.length === 0) throw new Error('no certificate in the chain');
    leaf = parseCertificate(chain[0] as Buffer);
  } catch (err) {
    throw new CertStoreError(
      'AGENT_CERT_INVALID',
      `certificate chain is unreadable: ${(err as Error).message}`,
      { cause: err },
    );
  }
  if (nowMs >= leaf.notAfter.getTime()) {
    throw new CertStoreError(
      'AGENT_CERT_EXPIRED',
      `certificate serial ${leaf.serialHex} expired at ${leaf.notAfter.toISOString()}`,
    );
  }
  if (leaf.isCa)
    throw new CertStoreError(
      'AGENT_CERT_INVALID',
      `certificate serial ${leaf.serialHex} is a CA certificate, not a workload certificate`,
    );
  if (leaf.uris.length !== 1 || !parseSpiffeId(leaf.uris[0] as string)) {
    throw new CertStoreError(
      'AGENT_CERT_INVALID',
      `certificate serial ${leaf.serialHex} must carry exactly one workload SPIFFE ID, has ${JSON.stringify(leaf.uris)}`,
    );
  }
  let key: crypto.KeyObject;
  try {
    key = parsePrivateKeyPem(m.privateKeyPem);
  } catch (err) {
    throw new CertStoreError(
      'AGENT_KEY_MISMATCH',
      `private key is unreadable: ${(err as Error).message}`,
      { cause: err },
    );
  }
  if (!publicKeySpki(key).equals(leaf.publicKeySpki)) {
    throw new CertStoreError(
      'AGENT_KEY_MISMATCH',
      `private key does not belong to certificate serial ${leaf.serialHex}`,
    );
  }
  try {
    verifyChain(chain, roots, nowMs);
  } catch (err) {
    throw new CertStoreError(
      'AGENT_CERT_INVALID',
      `certificate chain does not verify: ${(err as Error).message}`,
      { cause: err },
    );
  }
  return {
    spiffeId: leaf.uris[0] as string,
    certChainPem: chain.map(d => toPem('CERTIFICATE', d)).join(''),
    privateKeyPem: m.privateKeyPem,
    rootsPem: roots.map(d => toPem('CERTIFICATE', d)).join(''),
    notBefore: leaf.notBefore,
    notAfter: leaf.notAfter,
    serialHex: leaf.serialHex,
  };
}

/** Options of {@link CertStore}. */
export interface CertStoreOptions {
  /** The certificate directory (`certs.dir`). */
  readonly dir: string;
  /** Owner of the written files (the `sail-proxy` user), when the agent runs as root. */
  readonly owner?: { readonly uid: number; readonly gid: number };
}

/** Reads and writes the identity files of one directory. The agent is the only writer. */
export class CertStore {
  constructor(private readonly opts: CertStoreOptions) {}

  /** Paths of the three visible files. */
  get paths(): { certChain: string; key: string; root: string } {
    return {
      certChain: path.join(this.opts.dir, CERT_CHAIN_FILE),
      key: path.join(this.opts.dir, KEY_FILE),
      root: path.join(this.opts.dir, ROOT_CERT_FILE),
    };
  }

  /**
   * The directory holding one consistent version of the files: the target of `..data` when the
   * AtomicWriter layout is there, so a concurrent write cannot give us parts of two versions.
   */
  /** The stored trust bundle (root-cert.pem), or undefined when there is none yet. */
  async readRoots(): Promise<string | undefined> {
    const text = await readIdentityFile(this.opts.dir, ROOT_CERT_FILE);
    return text !== undefined && parseCertificatesPem(text).length > 0 ? text : undefined;
  }

  /**
   * Loads and validates the stored identity at time `nowMs`. The chain is verified against the
   * stored root-cert.pem, or `fallbackRootsPem` when the directory has none.
   * @throws CertStoreError: AGENT_CERT_MISSING when there is nothing to load; AGENT_CERT_INVALID,
   *   AGENT_CERT_EXPIRED or AGENT_KEY_MISMATCH when what is there cannot be used
   */
  async load(nowMs: number, fallbackRootsPem?: string): Promise<WorkloadIdentity> {
    const {
      certChainPem,
      keyPem: privateKeyPem,
      rootsPem: storedRoots,
    } = await readIdentityFiles(this.opts.dir);
    if (certChainPem === undefined || privateKeyPem === undefined) {
      throw new CertStoreError('AGENT_CERT_MISSING', `no certificate and key in ${this.opts.dir}`);
    }
    const rootsPem = storedRoots ?? fallbackRootsPem;
    if (rootsPem === undefined)
      throw new CertStoreError(
        'AGENT_CERT_INVALID',
        `no root certificate to verify the certificate in ${this.opts.dir} against`,
      );
    return validateIdentity({ certChainPem, privateKeyPem, rootsPem }, nowMs);
  }

  /**
   * Replaces the three files at once (AtomicWriter layout: a new version directory, then one
   * rename of the `..data` symlink). The key is written 0600 from creation, the others 0644.
   */
  async write(m: IdentityMaterial): Promise<void> {
    await writeFileSetAtomic(
      this.opts.dir,
      [
        { name: CERT_CHAIN_FILE, data: m.certChainPem, mode: 0o644 },
        { name: KEY_FILE, data: m.privateKeyPem, mode: 0o600 },
        { name: ROOT_CERT_FILE, data: m.rootsPem, mode: 0o644 },
      ],
      this.opts.owner,
    );
  }
}
