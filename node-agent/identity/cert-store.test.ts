import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  type Issuer,
  Oid,
  createCertificate,
  encodeName,
  generateKey,
  keyIdentifier,
  privateKeyToPem,
  randomSerial,
  toPem,
} from '../../common/pki';
import { FakeClock } from '../../test/helpers/fake-clock';
import { TestCa } from '../../test/helpers/test-ca';
import { makeTmpDir } from '../../test/helpers/tmp-dir';
import { CertStoreError } from '../errors';
import { CertStore, type IdentityMaterial, validateIdentity, verifyChain } from './cert-store';

const H = 3600_000;
const SPIFFE = 'spiffe://cluster.local/ns/default/sa/reviews';

let ca: TestCa;
let clock: FakeClock;
let tmp: { dir: string; cleanup: () => void };

beforeAll(async () => {
  clock = new FakeClock();
  ca = await TestCa.create({ clock });
});
beforeEach(() => {
  tmp = makeTmpDir('sail-cert-store-');
});
afterEach(() => tmp.cleanup());

async function material(
  opts: {
    notBeforeMs?: number;
    notAfterMs?: number;
    spiffeId?: string;
    signer?: 'root' | 'other';
  } = {},
): Promise<IdentityMaterial> {
  const issued = await ca.issueWorkloadCert({
    node: 'vm-1',
    spiffeId: opts.spiffeId ?? SPIFFE,
    notBeforeMs: opts.notBeforeMs ?? clock.now() - 60_000,
    notAfterMs: opts.notAfterMs ?? clock.now() + 24 * H,
    ...(opts.signer ? { signer: opts.signer } : {}),
  });
  return { certChainPem: issued.certChainPem, privateKeyPem: issued.keyPem, rootsPem: ca.rootPem };
}

describe('CertStore', () => {
  it('writes the AtomicWriter layout with the key 0600 and reads it back', async () => {
    const dir = path.join(tmp.dir, 'certs');
    const store = new CertStore({ dir });
    const m = await material();
    await store.write(m);

    expect(fs.readlinkSync(path.join(dir, '..data'))).toMatch(/^\.\.\d{4}-/);
    for (const name of ['cert-chain.pem', 'key.pem', 'root-cert.pem']) {
      expect(fs.readlinkSync(path.join(dir, name))).toBe(path.join('..data', name));
    }
    expect(fs.statSync(store.paths.key).mode & 0o777).toBe(0o600);
    expect(fs.statSync(store.paths.certChain).mode & 0o777).toBe(0o644);
    expect(fs.statSync(store.paths.root).mode & 0o777).toBe(0o644);
    expect(fs.readFileSync(store.paths.key, 'utf8')).toBe(m.privateKeyPem);

    const loaded = await store.load(clock.now());
    expect(loaded.spiffeId).toBe(SPIFFE);
    expect(loaded.privateKeyPem).toBe(m.privateKeyPem);
    expect(loaded.rootsPem).toBe(ca.rootPem);
    expect(loaded.notAfter.getTime()).toBe(Math.floor((clock.now() + 24 * H) / 1000) * 1000);
  });

  it('replaces the whole set at once and drops the old version', async () => {
    const dir = path.join(tmp.dir, 'certs');
    const store = new CertStore({ dir });
    await store.write(await material());
    const first = fs.readlinkSync(path.join(dir, '..data'));
    const second = await material();
    await store.write(second);
    const current = fs.readlinkSync(path.join(dir, '..data'));
    expect(current).not.toBe(first);
    expect(fs.existsSync(path.join(dir, first))).toBe(false);
    expect((await store.load(clock.now())).privateKeyPem).toBe(second.privateKeyPem);
    expect(fs.readdirSync(dir).sort()).toEqual(
      ['..data', current, 'cert-chain.pem', 'key.pem', 'root-cert.pem'].sort(),
    );
  });

  it('reports a missing certificate as AGENT_CERT_MISSING', async () => {
    const store = new CertStore({ dir: path.join(tmp.dir, 'none') });
    await expect(store.load(clock.now())).rejects.toMatchObject({ code: 'AGENT_CERT_MISSING' });
    expect(await store.readRoots()).toBeUndefined();
  });

  it('verifies against the fallback roots when the directory has no root-cert.pem', async () => {
    const m = await material();
    fs.writeFileSync(path.join(tmp.dir, 'cert-chain.pem'), m.certChainPem);
    fs.writeFileSync(path.join(tmp.dir, 'key.pem'), m.privateKeyPem, { mode: 0o600 });
    const store = new CertStore({ dir: tmp.dir });
    await expect(store.load(clock.now())).rejects.toMatchObject({ code: 'AGENT_CERT_INVALID' });
    expect((await store.load(clock.now(), ca.rootPem)).spiffeId).toBe(SPIFFE);
  });

  const rejected: {
    name: string;
    make: () => Promise<IdentityMaterial>;
    code: string;
    message: string;
  }[] = [
    {
      name: 'a key that does not belong to the certificate',
      make: async () => ({
        ...(await material()),
        privateKeyPem: privateKeyToPem(await generateKey('ec-p256')),
      }),
      code: 'AGENT_KEY_MISMATCH',
      message: 'private key does not belong to certificate',
    },
    {
      name: 'an expired certificate',
      make: () => material({ notBeforeMs: clock.now() - 2 * H, notAfterMs: clock.now() - 1 }),
      code: 'AGENT_CERT_EXPIRED',
      message: 'expired at',
    },
    {
      name: 'a certificate from a CA the mesh does not trust',
      make: () => material({ signer: 'other' }),
      code: 'AGENT_CERT_INVALID',
      message: 'certificate chain does not verify',
    },
    {
      name: 'a certificate that is not valid yet',
      make: () => material({ notBeforeMs: clock.now() + H, notAfterMs: clock.now() + 2 * H }),
      code: 'AGENT_CERT_INVALID',
      message: 'is not valid before',
    },
    {
      name: 'a certificate without a workload SPIFFE ID',
      make: () => material({ spiffeId: 'spiffe://cluster.local/something-else' }),
      code: 'AGENT_CERT_INVALID',
      message: 'must carry exactly one workload SPIFFE ID',
    },
    {
      name: 'a chain file with no certificate',
      make: async () => ({ ...(await material()), certChainPem: 'not pem' }),
      code: 'AGENT_CERT_INVALID',
      message: 'certificate chain is unreadable',
    },
    {
      name: 'an unreadable key',
      make: async () => ({
        ...(await material()),
        privateKeyPem: '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n',
      }),
      code: 'AGENT_KEY_MISMATCH',
      message: 'private key is unreadable',
    },
  ];
  it.each(rejected)('rejects $name', async ({ make, code, message }) => {
    const store = new CertStore({ dir: path.join(tmp.dir, 'certs') });
    await store.write(await make());
    const err = await store.load(clock.now()).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CertStoreError);
    expect(err).toMatchObject({ code });
    expect((err as Error).message).toContain(message);
  });
});

describe('verifyChain', () => {
  const now = Date.UTC(2026, 5, 1);
  const longAgo = new Date(Date.UTC(2020, 0, 1));
  const farAhead = new Date(Date.UTC(2040, 0, 1));
  interface Made {
    der: Buffer;
    issuer: Issuer;
  }
  async function makeCa(
    cn: string,
    parent?: Issuer,
    validity = { notBefore: longAgo, notAfter: farAhead },
    isCa = true,
  ): Promise<Made> {
    const key = await generateKey('ec-p256');
    const spki = crypto.createPublicKey(key).export({ type: 'spki', format: 'der' });
    const subject = [[Oid.commonName, cn]] as const;
    const self: Issuer = { key, subjectDer: encodeName(subject), keyId: keyIdentifier(spki) };
    const der = createCertificate(
      {
        serial: randomSerial(),
        subject,
        publicKeySpki: spki,
        ...validity,
        isCa,
        ...(isCa ? { pathLength: 1 } : { sans: { uris: [SPIFFE] } }),
      },
      parent ?? self,
    );
    return { der, issuer: self };
  }

  let root: Made, inter: Made, leafViaInter: Made, leafViaRoot: Made;
  beforeAll(async () => {
    root = await makeCa('root');
    inter = await makeCa('intermediate', root.issuer);
    leafViaInter = await makeCa('leaf', inter.issuer, undefined, false);
    leafViaRoot = await makeCa('leaf2', root.issuer, undefined, false);
  });

  it.each([
    { name: 'a leaf signed by the root', chain: () => [leafViaRoot.der] },
    {
      name: 'a leaf followed by the root, as the CA returns it',
      chain: () => [leafViaRoot.der, root.der],
    },
    { name: 'a leaf through an intermediate', chain: () => [leafViaInter.der, inter.der] },
    {
      name: 'a leaf, an intermediate and the root',
      chain: () => [leafViaInter.der, inter.der, root.der],
    },
  ])('accepts $name', ({ chain }) => {
    expect(() => verifyChain(chain(), [root.der], now)).not.toThrow();
  });

  it('rejects a chain missing its intermediate', () => {
    expect(() => verifyChain([leafViaInter.der], [root.der], now)).toThrow(
      'is not signed by a trusted root',
    );
  });

  it('rejects a chain whose "intermediate" is not a CA', async () => {
    const notCa = await makeCa('not-a-ca', root.issuer, undefined, false);
    const leaf = await makeCa('leaf3', notCa.issuer, undefined, false);
    expect(() => verifyChain([leaf.der, notCa.der], [root.der], now)).toThrow(
      'signs another certificate but is not a CA',
    );
  });

  it('rejects a chain through an expired intermediate', async () => {
    const old = await makeCa('old', root.issuer, {
      notBefore: longAgo,
      notAfter: new Date(now - 1000),
    });
    const leaf = await makeCa('leaf4', old.issuer, undefined, false);
    expect(() => verifyChain([leaf.der, old.der], [root.der], now)).toThrow('expired at');
  });

  it('rejects an empty chain and an empty bundle', () => {
    expect(() => verifyChain([], [root.der], now)).toThrow('certificate chain is empty');
    expect(() => verifyChain([leafViaRoot.der], [], now)).toThrow('no trusted root certificates');
  });

  it('describes the identity it validates', async () => {
    const key = await generateKey('ec-p256');
    const spki = crypto.createPublicKey(key).export({ type: 'spki', format: 'der' });
    const der = createCertificate(
      {
        serial: randomSerial(),
        subject: [[Oid.commonName, 'vm-1']],
        publicKeySpki: spki,
        notBefore: longAgo,
        notAfter: farAhead,
        isCa: false,
        sans: { uris: [SPIFFE] },
      },
      root.issuer,
    );
    const id = validateIdentity(
      {
        certChainPem: toPem('CERTIFICATE', der),
        privateKeyPem: privateKeyToPem(key),
        rootsPem: toPem('CERTIFICATE', root.der),
      },
      now,
    );
    expect(id).toMatchObject({ spiffeId: SPIFFE, notBefore: longAgo, notAfter: farAhead });
    expect(id.serialHex).toMatch(/^[0-9a-f]+$/);
  });
});
