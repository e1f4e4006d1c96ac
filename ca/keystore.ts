/**
 * The CA's signing material: a self-signed root generated at first start and persisted in the
 * data dir (key 0600), or bring-your-own files checked at start (Istio's plugged CA).
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../common/fs';
import type { Logger } from '../common/logging';
import {
  createCertificate,
  encodeName,
  generateKey,
  isSignedBy,
  keyIdentifier,
  type Issuer,
  type KeyAlgorithm,
  Oid,
  type ParsedCertificate,
  parseCertificate,
  parseCertificatesPem,
  privateKeyToPem,
  randomSerial,
  toPem,
} from '../common/pki';
import type { PluggedCaFiles } from './config';
import { PluggedCertsError } from './errors';

/** Everything the issuer signs with, and what it hands out. */
export interface SigningMaterial {
  readonly mode: 'self-signed' | 'plugged';
  readonly key: crypto.KeyObject;
  /** The certificate whose key signs leaves (the root when self-signed). */
  readonly signingCert: ParsedCertificate;
  readonly signingPublicKey: crypto.KeyObject;
  readonly issuer: Issuer;
  /** PEM of the signing certificate and intermediates below the root; empty when the root signs. */
  readonly intermediatesPem: readonly string[];
  /** The trust bundle, PEM each, current root first. */
  readonly rootsPem: readonly string[];
}

function issuerFrom(key: crypto.KeyObject, cert: ParsedCertificate): Issuer {
  return {
    key,
    subjectDer: cert.subjectDer,
    keyId: cert.subjectKeyId ?? keyIdentifier(cert.publicKeySpki),
  };
}

function sameKey(priv: crypto.KeyObject, cert: ParsedCertificate): boolean {
  const spki = crypto.createPublicKey(priv).export({ type: 'spki', format: 'der' });
  return spki.equals(cert.publicKeySpki);
}

/** Paths of the self-signed root inside the data dir. */
export function rootPaths(dataDir: string) {
  return {
    dir: path.join(dataDir, 'ca'),
    key: path.join(dataDir, 'ca', 'root-key.pem'),
    cert: path.join(dataDir, 'ca', 'root-cert.pem'),
    /** The public root for operators and `sail join --ca-root` (DESIGN §3.1). */
    publicRoot: path.join(dataDir, 'root-cert.pem'),
  };
}

/**
 * Loads the self-signed root from the data dir, or generates and persists one at first start.
 * A restart therefore keeps the same root.
 */
export async function loadOrCreateSelfSigned(opts: {
  dataDir: string;
  trustDomain: string;
  algorithm: KeyAlgorithm;
  ttlMs: number;
  now: number;
  log: Logger;
}): Promise<SigningMaterial> {
  const p = rootPaths(opts.dataDir);
  await fs.promises.mkdir(p.dir, { recursive: true, mode: 0o700 });
  let keyPem: string | undefined;
  let certPem: string | undefined;
  try {
    [keyPem, certPem] = await Promise.all([
      fs.promises.readFile(p.key, 'utf8'),
      fs.promises.readFile(p.cert, 'utf8'),
    ]);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (keyPem === undefined || certPem === undefined) {
    if (fs.existsSync(p.key) !== fs.existsSync(p.cert)) {
      throw new PluggedCertsError(
        `${p.dir} holds only one of root-key.pem and root-cert.pem; restore the other or remove both to make a new root`,
      );
    }
    const key = await generateKey(opts.algorithm);
    const spki = crypto.createPublicKey(key).export({ type: 'spki', format: 'der' });
    const subject: [string, string][] = [
      [Oid.organization, opts.trustDomain],
      [Oid.commonName, 'Sail Root CA'],
    ];
    const der = createCertificate(
      {
        serial: randomSerial(),
        subject,
        publicKeySpki: spki,
        notBefore: new Date(opts.now - 60_000),
        notAfter: new Date(opts.now + opts.ttlMs),
        isCa: true,
      },
      { key, subjectDer: encodeName(subject), keyId: keyIdentifier(spki) },
    );
    keyPem = privateKeyToPem(key);
    certPem = toPem('CERTIFICATE', der);
    // Key first: a crash between the two writes leaves a key without a cert, which the check
    // above reports instead of silently minting a second root.
    await writeFileAtomic(p.key, keyPem, 0o600);
    await writeFileAtomic(p.cert, certPem, 0o644);
    opts.log.info(
      { path: p.cert, algorithm: opts.algorithm },
      'Generated self-signed root certificate',
    );
  }
  await writeFileAtomic(p.publicRoot, certPem, 0o644);
  const key = crypto.createPrivateKey(keyPem);
  const [rootDer] = parseCertificatesPem(certPem);
  if (!rootDer) throw new PluggedCertsError(`${p.cert} holds no certificate`);
  const root = parseCertificate(rootDer);
  if (!sameKey(key, root)) throw new PluggedCertsError(`${p.key} does not match ${p.cert}`);
  if (root.notAfter.getTime() <= opts.now) {
    throw new PluggedCertsError(
      `root certificate ${p.cert} expired at ${root.notAfter.toISOString()}`,
    );
  }
  return {
    mode: 'self-signed',
    key,
    signingCert: root,
    signingPublicKey: crypto.createPublicKey(key),
    issuer: issuerFrom(key, root),
    intermediatesPem: [],
    rootsPem: [toPem('CERTIFICATE', rootDer)],
  };
}

function readPem(file: string, what: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new PluggedCertsError(
      `cannot read ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
    );
  }
}

function certsIn(file: string, what: string): ParsedCertificate[] {
  const ders = parseCertificatesPem(readPem(file, what));
  if (ders.length === 0) throw new PluggedCertsError(`${what} ${file} holds no PEM certificate`);
  try {
    return ders.map(parseCertificate);
  } catch (err) {
    throw new PluggedCertsError(
      `${what} ${file} is not a valid certificate: ${(err as Error).message}`,
    );
  }
}

/**
 * Loads bring-your-own CA files and checks them: the key matches the signing certificate, which
 * is a CA, is within its validity, and chains through cert-chain to the root.
 * @throws PluggedCertsError naming the file and the failed check
 */
export function loadPlugged(files: PluggedCaFiles, now: number): SigningMaterial {
  const [signing] = certsIn(files.caCertFile, 'CA certificate');
  if (!signing) throw new PluggedCertsError(`CA certificate ${files.caCertFile} is empty`);
  let key: crypto.KeyObject;
  try {
    key = crypto.createPrivateKey(readPem(files.caKeyFile, 'CA key'));
  } catch (err) {
    if (err instanceof PluggedCertsError) throw err;
    throw new PluggedCertsError(
      `CA key ${files.caKeyFile} is not a private key: ${(err as Error).message}`,
    );
  }
  if (!sameKey(key, signing))
    throw new PluggedCertsError(
      `CA key ${files.caKeyFile} does not match CA certificate ${files.caCertFile}`,
    );
  if (!signing.isCa)
    throw new PluggedCertsError(
      `CA certificate ${files.caCertFile} is not a CA (basicConstraints CA:FALSE)`,
    );
  if (signing.notAfter.getTime() <= now) {
    throw new PluggedCertsError(
      `CA certificate ${files.caCertFile} expired at ${signing.notAfter.toISOString()}`,
    );
  }
  if (signing.notBefore.getTime() > now) {
    throw new PluggedCertsError(
      `CA certificate ${files.caCertFile} is not valid until ${signing.notBefore.toISOString()}`,
    );
  }
  const roots = certsIn(files.rootCertFile, 'root certificate');
  const root = roots[0] as ParsedCertificate;
  if (!root.isCa) throw new PluggedCertsError(`root certificate ${files.rootCertFile} is not a CA`);
  // The chain file conventionally starts with the signing certificate itself; drop it and the root.
  const chain = certsIn(files.certChainFile, 'certificate chain').filter(
    c => !c.der.equals(signing.der) && !c.der.equals(root.der),
  );
  const path_ = [signing, ...chain];
  for (let i = 0; i < path_.length; i++) {
    const child = path_[i] as ParsedCertificate;
    const parent = path_[i + 1] ?? root;
    if (
      !isSignedBy(
        child.der,
        crypto.createPublicKey({ key: parent.publicKeySpki, format: 'der', type: 'spki' }),
      )
    ) {
      const which =
        i === 0
          ? `CA certificate ${files.caCertFile}`
          : `certificate ${i + 1} of ${files.certChainFile}`;
      throw new PluggedCertsError(
        `${which} does not chain to root certificate ${files.rootCertFile}`,
      );
    }
  }
  const selfIsRoot = signing.der.equals(root.der);
  return {
    mode: 'plugged',
    key,
    signingCert: signing,
    signingPublicKey: crypto.createPublicKey(key),
    issuer: issuerFrom(key, signing),
    intermediatesPem: selfIsRoot ? [] : path_.map(c => toPem('CERTIFICATE', c.der)),
    rootsPem: roots.map(r => toPem('CERTIFICATE', r.der)),
  };
}
