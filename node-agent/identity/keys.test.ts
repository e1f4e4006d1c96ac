import * as fs from 'node:fs';
import * as path from 'node:path';
import { Oid, parseCsr, parsePem } from '../../common/pki';
import { hasOpenssl, openssl } from '../../test/helpers/openssl';
import { makeTmpDir } from '../../test/helpers/tmp-dir';
import { buildCsr } from './csr';
import { PendingKeyStore, keyMatchesAlgorithm, publicKeySpki } from './keys';

let tmp: { dir: string; cleanup: () => void };
beforeEach(() => {
  tmp = makeTmpDir('sail-keys-');
});
afterEach(() => tmp.cleanup());

describe('PendingKeyStore', () => {
  it('persists a new key 0600 in a 0700 directory before handing it out', async () => {
    const dir = path.join(tmp.dir, 'identity');
    const store = new PendingKeyStore(dir);
    const k = await store.loadOrCreate('ec-p256');
    expect(k.reused).toBe(false);
    expect(fs.statSync(store.path).mode & 0o777).toBe(0o600);
    expect(fs.statSync(dir).mode & 0o777).toBe(0o700);
    expect(fs.readFileSync(store.path, 'utf8')).toBe(k.pem);
  });

  it('hands out the same key until it is removed, so a retry sends the same public key', async () => {
    const store = new PendingKeyStore(tmp.dir);
    const first = await store.loadOrCreate('ec-p256');
    const again = await new PendingKeyStore(tmp.dir).loadOrCreate('ec-p256');
    expect(again.reused).toBe(true);
    expect(publicKeySpki(again.key).equals(publicKeySpki(first.key))).toBe(true);
    await store.remove();
    await store.remove(); // idempotent
    const fresh = await store.loadOrCreate('ec-p256');
    expect(publicKeySpki(fresh.key).equals(publicKeySpki(first.key))).toBe(false);
  });

  it('replaces a key of another algorithm, a key it must not reuse, and a corrupt file', async () => {
    const store = new PendingKeyStore(tmp.dir);
    const p256 = await store.loadOrCreate('ec-p256');
    const p384 = await store.loadOrCreate('ec-p384');
    expect(p384.reused).toBe(false);
    expect(keyMatchesAlgorithm(p384.key, 'ec-p384')).toBe(true);
    expect(keyMatchesAlgorithm(p256.key, 'ec-p384')).toBe(false);
    const vetoed = await store.loadOrCreate('ec-p384', () => true);
    expect(vetoed.reused).toBe(false);
    fs.writeFileSync(store.path, 'garbage');
    expect((await store.loadOrCreate('ec-p384')).reused).toBe(false);
  });
});

describe('buildCsr', () => {
  it('asks for the workload SPIFFE ID with subject O=<trust domain>, CN=<node>', async () => {
    const store = new PendingKeyStore(tmp.dir);
    const { key } = await store.loadOrCreate('ec-p256');
    const { csrPem, spiffeId } = buildCsr(key, {
      trustDomain: 'example.org',
      namespace: 'shop',
      serviceAccount: 'reviews',
      nodeName: 'vm-1',
    });
    expect(spiffeId).toBe('spiffe://example.org/ns/shop/sa/reviews');
    const block = parsePem(csrPem)[0];
    expect(block?.label).toBe('CERTIFICATE REQUEST');
    const csr = parseCsr(block!.der);
    expect(csr.uris).toEqual([spiffeId]);
    expect(csr.subject).toEqual([
      [Oid.organization, 'example.org'],
      [Oid.commonName, 'vm-1'],
    ]);
    expect(csr.publicKeySpki.equals(publicKeySpki(key))).toBe(true);
    if (hasOpenssl()) {
      const r = openssl(['req', '-verify', '-noout', '-text'], csrPem);
      expect(r.output).toMatch(/verify OK|Certificate request self-signature verify OK/);
      expect(r.output).toContain('URI:spiffe://example.org/ns/shop/sa/reviews');
    } else {
      console.warn('openssl not found; skipping the openssl check of the CSR');
    }
  });
});
