/**
 * The workload's private keys: generated on this host and never sent anywhere. A key is written to
 * disk before the request that uses it goes out (the "pending key"), so a retry after a lost answer
 * or a restart sends the same public key: the CA accepts a join token again only for the key it
 * first saw.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../../common/fs';
import { type KeyAlgorithm, generateKey, privateKeyToPem } from '../../common/pki';

/** File name of the pending key inside the identity state directory. */
export const PENDING_KEY_FILE = 'pending-key.pem';

/** The DER SubjectPublicKeyInfo of a private or public key, for comparing keys. */
export function publicKeySpki(key: crypto.KeyObject): Buffer {
  const pub = key.type === 'private' ? crypto.createPublicKey(key) : key;
  return pub.export({ type: 'spki', format: 'der' });
}

/** True when `key` is of algorithm `alg` (so a config change to the algorithm takes effect). */
export function keyMatchesAlgorithm(key: crypto.KeyObject, alg: KeyAlgorithm): boolean {
  const d = key.asymmetricKeyDetails ?? {};
  switch (alg) {
    case 'ec-p256':
      return key.asymmetricKeyType === 'ec' && d.namedCurve === 'prime256v1';
    case 'ec-p384':
      return key.asymmetricKeyType === 'ec' && d.namedCurve === 'secp384r1';
    case 'rsa-2048':
      return key.asymmetricKeyType === 'rsa' && d.modulusLength === 2048;
    case 'rsa-3072':
      return key.asymmetricKeyType === 'rsa' && d.modulusLength === 3072;
    case 'rsa-4096':
      return key.asymmetricKeyType === 'rsa' && d.modulusLength === 4096;
  }
}

/**
 * Parses a PEM private key.
 * @throws Error when `pem` holds no private key node:crypto can read
 */
export function parsePrivateKeyPem(pem: string): crypto.KeyObject {
  return crypto.createPrivateKey({ key: pem, format: 'pem' });
}

/** A private key with its PEM (PKCS#8), as it is written to key.pem. */
export interface KeyPair {
  readonly key: crypto.KeyObject;
  readonly pem: string;
}

/**
 * The pending key of the certificate request in progress, in `dir` (created 0700; the file is
 * 0600). Not safe for concurrent use from several processes: one agent owns a state directory.
 */
export class PendingKeyStore {
  private readonly file: string;

  constructor(private readonly dir: string) {
    this.file = path.join(dir, PENDING_KEY_FILE);
  }

  /** Path of the pending key file. */
  get path(): string {
    return this.file;
  }

  /**
   * Returns the pending key when there is one of algorithm `alg`, else generates a key and
   * persists it (0600, atomically) before returning it. `unless` rejects a stored key that must
   * not be reused (the key of the current certificate, after a crash between writing the new
   * certificate and removing the pending key).
   */
  async loadOrCreate(
    alg: KeyAlgorithm,
    unless?: (key: crypto.KeyObject) => boolean,
  ): Promise<KeyPair & { reused: boolean }> {
    const existing = await this.load();
    if (existing && keyMatchesAlgorithm(existing.key, alg) && !unless?.(existing.key))
      return { ...existing, reused: true };
    const key = await generateKey(alg);
    const pem = privateKeyToPem(key);
    await fs.promises.mkdir(this.dir, { recursive: true, mode: 0o700 });
    await writeFileAtomic(this.file, pem, 0o600);
    return { key, pem, reused: false };
  }

  /** The stored pending key, or undefined when there is none or it is unreadable (a new one is made). */
  async load(): Promise<KeyPair | undefined> {
    let pem: string;
    try {
      pem = await fs.promises.readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    try {
      return { key: parsePrivateKeyPem(pem), pem };
    } catch {
      // A torn or corrupt file (writes are atomic, so only by outside hands): a fresh key replaces it.
      return undefined;
    }
  }

  /** Forgets the pending key (after its certificate is stored, or when the CA rejected the key). Idempotent. */
  async remove(): Promise<void> {
    await fs.promises.rm(this.file, { force: true });
  }
}
