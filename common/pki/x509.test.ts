import { execFile, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import * as der from './der';
import { DerError } from './der';
import { toPem } from './pem';
import {
  CsrError,
  DEFAULT_KEY_POLICY,
  type Issuer,
  KEY_ALGORITHMS,
  type KeyAlgorithm,
  type Name,
  Oid,
  type SubjectAltNames,
  checkKeyPolicy,
  createCertificate,
  createCsr,
  encodeName,
  fingerprintSha256,
  generateKey,
  isSignedBy,
  keyIdentifier,
  parseCertificate,
  importPublicKey,
  importPublicKeyAsync,
  type KeyPolicy,
  type ParsedCsr,
  parseCsr,
  parseCsrAsync,
  privateKeyToPem,
  randomSerial,
} from './x509';

const execFileAsync = promisify(execFile);

// These tests check our DER against a second, independent implementation: the openssl CLI.
const HAVE_OPENSSL = spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;
if (!HAVE_OPENSSL) {
  console.warn('x509.test.ts: skipping the openssl cross-checks: the openssl CLI is not installed');
}
const describeOpenssl = HAVE_OPENSSL ? describe : describe.skip;

const MINUTE_MS = 60_000;
const DAY_MS = 86_400_000;
const SPIFFE_ID = 'spiffe://cluster.local/ns/default/sa/web';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sail-x509-test-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Writes `data` to a fresh file in the test's temporary directory and returns its path. */
function writeTmp(name: string, data: string | Buffer): string {
  const file = path.join(tmp, `${crypto.randomBytes(4).toString('hex')}-${name}`);
  fs.writeFileSync(file, data);
  return file;
}

/** Runs openssl; resolves with stdout+stderr, rejects (with both in the message) on a non-zero exit. */
async function openssl(...args: string[]): Promise<string> {
  try {
    const { stdout, stderr } = await execFileAsync('openssl', args, { cwd: tmp });
    return stdout + stderr;
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(
      `openssl ${args.join(' ')} failed: ${e.message}\n${e.stdout ?? ''}${e.stderr ?? ''}`,
    );
  }
}

function spkiOf(key: crypto.KeyObject): Buffer {
  return crypto.createPublicKey(key).export({ type: 'spki', format: 'der' });
}

interface TestCa {
  readonly key: crypto.KeyObject;
  readonly cert: Buffer;
  readonly issuer: Issuer;
}

const ROOT_SUBJECT: Name = [
  [Oid.organization, 'Sail test'],
  [Oid.commonName, 'Sail test root'],
];

function makeRoot(key: crypto.KeyObject, notAfter = new Date(Date.now() + 365 * DAY_MS)): TestCa {
  const spki = spkiOf(key);
  const self: Issuer = { key, subjectDer: encodeName(ROOT_SUBJECT), keyId: keyIdentifier(spki) };
  const cert = createCertificate(
    {
      serial: randomSerial(),
      subject: ROOT_SUBJECT,
      publicKeySpki: spki,
      notBefore: new Date(Date.now() - MINUTE_MS),
      notAfter,
      isCa: true,
      pathLength: 0,
    },
    self,
  );
  return { key, cert, issuer: self };
}

function makeLeaf(
  ca: TestCa,
  key: crypto.KeyObject,
  opts: {
    sans?: SubjectAltNames;
    subject?: Name;
    notBefore?: Date;
    notAfter?: Date;
    serial?: Buffer;
  } = {},
): Buffer {
  return createCertificate(
    {
      serial: opts.serial ?? randomSerial(),
      subject: opts.subject ?? [],
      publicKeySpki: spkiOf(key),
      notBefore: opts.notBefore ?? new Date(Date.now() - MINUTE_MS),
      notAfter: opts.notAfter ?? new Date(Date.now() + DAY_MS),
      isCa: false,
      sans: opts.sans ?? { uris: [SPIFFE_ID] },
    },
    ca.issuer,
  );
}

/** Builds a CSR around a hand-made CertificationRequestInfo, signed by `key`. */
function signRawCsr(
  info: Buffer,
  key: crypto.KeyObject,
  algOid: string = Oid.ecdsaWithSha256,
): Buffer {
  const hash = algOid === Oid.ecdsaWithSha384 ? 'sha384' : 'sha256';
  return der.sequence(
    info,
    der.sequence(der.oid(algOid)),
    der.bitString(crypto.sign(hash, info, key)),
  );
}

/**
 * parseCsrAsync (the CA's path) must agree with parseCsr on every request in this file: the
 * helpers below check both, and the async half is awaited after each test.
 */
const asyncChecks: Promise<void>[] = [];
afterEach(async () => {
  await Promise.all(asyncChecks.splice(0));
});

function expectMessage(thrown: unknown, message: string | RegExp): void {
  expect(thrown).toBeInstanceOf(CsrError);
  if (typeof message === 'string') expect((thrown as Error).message).toBe(message);
  else expect((thrown as Error).message).toMatch(message);
}

function expectCsrError(csr: Buffer, message: string | RegExp, policy?: KeyPolicy): void {
  let thrown: unknown;
  try {
    parseCsr(csr, policy);
  } catch (err) {
    thrown = err;
  }
  expectMessage(thrown, message);
  asyncChecks.push(
    parseCsrAsync(csr, policy).then(
      () => {
        throw new Error(`parseCsrAsync accepted a request parseCsr refused: ${String(message)}`);
      },
      (err: unknown) => expectMessage(err, message),
    ),
  );
}

/** parseCsr, with parseCsrAsync checked to give the same result. */
function parseBoth(csr: Buffer): ParsedCsr {
  const parsed = parseCsr(csr);
  asyncChecks.push(
    parseCsrAsync(csr).then(a => {
      expect(a.publicKey.equals(parsed.publicKey)).toBe(true);
      expect({ ...a, publicKey: undefined }).toEqual({ ...parsed, publicKey: undefined });
    }),
  );
  return parsed;
}

const SIGNATURE_NAMES: Record<string, string> = {
  'ec-p256': 'ecdsa-with-SHA256',
  'ec-p384': 'ecdsa-with-SHA384',
  'rsa-2048': 'sha256WithRSAEncryption',
};
const MATRIX: readonly KeyAlgorithm[] = ['ec-p256', 'ec-p384', 'rsa-2048'];

describe('generateKey', () => {
  it.each([
    { alg: 'ec-p256', type: 'ec', curve: 'prime256v1', bits: undefined },
    { alg: 'ec-p384', type: 'ec', curve: 'secp384r1', bits: undefined },
    { alg: 'rsa-2048', type: 'rsa', curve: undefined, bits: 2048 },
    { alg: 'rsa-3072', type: 'rsa', curve: undefined, bits: 3072 },
    { alg: 'rsa-4096', type: 'rsa', curve: undefined, bits: 4096 },
  ] as const)('$alg makes a $type private key', async ({ alg, type, curve, bits }) => {
    const key = await generateKey(alg);
    expect(key.type).toBe('private');
    expect(key.asymmetricKeyType).toBe(type);
    expect(key.asymmetricKeyDetails?.namedCurve).toBe(curve);
    expect(key.asymmetricKeyDetails?.modulusLength).toBe(bits);
    expect(checkKeyPolicy(crypto.createPublicKey(key))).toBeUndefined();
  });

  it('covers every advertised algorithm', () => {
    expect([...KEY_ALGORITHMS].sort()).toEqual([
      'ec-p256',
      'ec-p384',
      'rsa-2048',
      'rsa-3072',
      'rsa-4096',
    ]);
  });

  it('exports PKCS#8 PEM that reads back as the same key', async () => {
    const key = await generateKey('ec-p256');
    const pem = privateKeyToPem(key);
    expect(pem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(crypto.createPrivateKey(pem).equals(key)).toBe(true);
  });
});

describe('randomSerial', () => {
  it('is 16 bytes, positive and never starts with a zero byte', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const s = randomSerial();
      expect(s.length).toBe(16);
      expect(s[0]! & 0x80).toBe(0);
      expect(s[0]).not.toBe(0);
      seen.add(s.toString('hex'));
    }
    expect(seen.size).toBe(200);
  });

  it('stays unique and unchanged across refills of its random pool', () => {
    const serials = Array.from({ length: 1000 }, () => randomSerial());
    const copies = serials.map(s => Buffer.from(s).toString('hex'));
    expect(new Set(copies).size).toBe(1000);
    for (let i = 0; i < 1000; i++) randomSerial();
    // Later serials do not overwrite earlier ones.
    expect(serials.map(s => s.toString('hex'))).toEqual(copies);
  });
});

describe.each(MATRIX)('certificates with %s keys', alg => {
  let root: TestCa;
  let leafKey: crypto.KeyObject;
  let leaf: Buffer;
  const notAfter = new Date(Math.floor((Date.now() + DAY_MS) / 1000) * 1000);
  const serial = randomSerial();
  const sans: SubjectAltNames = {
    uris: [SPIFFE_ID],
    dnsNames: ['web.default.svc.cluster.local'],
    ips: ['10.0.0.5', '2001:db8::1'],
  };

  beforeAll(async () => {
    root = makeRoot(await generateKey(alg));
    leafKey = await generateKey(alg);
    leaf = makeLeaf(root, leafKey, { sans, notAfter, serial });
  });

  it('round-trips through parseCertificate', () => {
    const parsed = parseCertificate(leaf);
    expect(parsed.der).toBe(leaf);
    expect(parsed.serialHex).toBe(serial.toString('hex'));
    expect(parsed.notAfter.getTime()).toBe(notAfter.getTime());
    expect(parsed.isCa).toBe(false);
    expect(parsed.uris).toEqual([SPIFFE_ID]);
    expect(parsed.dnsNames).toEqual(['web.default.svc.cluster.local']);
    expect(parsed.subject).toEqual([]);
    expect(parsed.issuerDer.equals(root.issuer.subjectDer)).toBe(true);
    expect(parsed.publicKeySpki.equals(spkiOf(leafKey))).toBe(true);
    expect(parsed.subjectKeyId?.equals(keyIdentifier(spkiOf(leafKey)))).toBe(true);

    const parsedRoot = parseCertificate(root.cert);
    expect(parsedRoot.isCa).toBe(true);
    expect(parsedRoot.subject).toEqual(ROOT_SUBJECT);
    expect(parsedRoot.subjectDer.equals(parsedRoot.issuerDer)).toBe(true);
    expect(parsedRoot.uris).toEqual([]);
  });

  it('is read the same way by node:crypto (OpenSSL inside)', () => {
    const x = new crypto.X509Certificate(leaf);
    const r = new crypto.X509Certificate(root.cert);
    expect(x.serialNumber.toLowerCase()).toBe(serial.toString('hex'));
    expect(x.ca).toBe(false);
    expect(r.ca).toBe(true);
    expect(x.checkIssued(r)).toBe(true);
    expect(x.verify(r.publicKey)).toBe(true);
    expect(r.verify(r.publicKey)).toBe(true);
    expect(new Date(x.validTo).getTime()).toBe(notAfter.getTime());
    expect(x.checkIP('10.0.0.5')).toBe('10.0.0.5');
    expect(x.checkIP('2001:db8::1')).toBe('2001:db8::1');
    expect(x.checkHost('web.default.svc.cluster.local')).toBe('web.default.svc.cluster.local');
    expect(x.subjectAltName).toContain(`URI:${SPIFFE_ID}`);
    expect(x.fingerprint256.replace(/:/g, '').toLowerCase()).toBe(fingerprintSha256(leaf));
  });

  it('isSignedBy checks the issuer key', async () => {
    expect(isSignedBy(leaf, crypto.createPublicKey(root.key))).toBe(true);
    expect(isSignedBy(leaf, crypto.createPublicKey(leafKey))).toBe(false);
    expect(isSignedBy(leaf, crypto.createPublicKey(await generateKey(alg)))).toBe(false);
    expect(isSignedBy(Buffer.from('not a certificate'), crypto.createPublicKey(root.key))).toBe(
      false,
    );
  });

  describeOpenssl('checked by the openssl CLI', () => {
    let rootFile: string;
    let leafFile: string;
    beforeAll(() => {
      rootFile = writeTmp('root.pem', toPem('CERTIFICATE', root.cert));
      leafFile = writeTmp('leaf.pem', toPem('CERTIFICATE', leaf));
    });

    it.each(['sslclient', 'sslserver'])(
      'verifies strictly against the root for purpose %s',
      async purpose => {
        const out = await openssl(
          'verify',
          '-x509_strict',
          '-purpose',
          purpose,
          '-CAfile',
          rootFile,
          leafFile,
        );
        expect(out).toContain(`${leafFile}: OK`);
      },
    );

    it('fails verification against another root', async () => {
      const other = makeRoot(await generateKey(alg));
      const otherFile = writeTmp('other-root.pem', toPem('CERTIFICATE', other.cert));
      await expect(openssl('verify', '-CAfile', otherFile, leafFile)).rejects.toThrow(
        /unable to get local issuer certificate/,
      );
    });

    it('prints the fields we put in', async () => {
      const text = await openssl('x509', '-in', leafFile, '-noout', '-text');
      expect(text).toContain(`Signature Algorithm: ${SIGNATURE_NAMES[alg]!}`);
      expect(text).toContain('Version: 3 (0x2)');
      expect(text).toMatch(
        /X509v3 Subject Alternative Name: critical\n\s+URI:spiffe:\/\/cluster.local\/ns\/default\/sa\/web, DNS:web.default.svc.cluster.local, IP Address:10.0.0.5, IP Address:2001:DB8:0:0:0:0:0:1\n/,
      );
      expect(text).toMatch(/X509v3 Basic Constraints: critical\n\s+CA:FALSE\n/);
      expect(text).toMatch(/X509v3 Key Usage: critical\n\s+Digital Signature, Key Encipherment\n/);
      expect(text).toMatch(
        /X509v3 Extended Key Usage: \n\s+TLS Web Server Authentication, TLS Web Client Authentication\n/,
      );
      const ski = keyIdentifier(spkiOf(leafKey))
        .toString('hex')
        .toUpperCase()
        .match(/../g)!
        .join(':');
      expect(text).toMatch(new RegExp(`X509v3 Subject Key Identifier: \\n\\s+${ski}\\n`));
      const aki = root.issuer.keyId.toString('hex').toUpperCase().match(/../g)!.join(':');
      expect(text).toContain(aki);

      const rootText = await openssl('x509', '-in', rootFile, '-noout', '-text');
      expect(rootText).toMatch(/X509v3 Basic Constraints: critical\n\s+CA:TRUE, pathlen:0\n/);
      expect(rootText).toMatch(
        /X509v3 Key Usage: critical\n\s+Digital Signature, Certificate Sign, CRL Sign\n/,
      );
      expect(rootText).toContain('Subject: O = Sail test, CN = Sail test root');
    });

    it('agrees with openssl on the serial and the SHA-256 fingerprint', async () => {
      const out = await openssl(
        'x509',
        '-in',
        leafFile,
        '-noout',
        '-serial',
        '-fingerprint',
        '-sha256',
      );
      expect(out).toContain(`serial=${serial.toString('hex').toUpperCase()}`);
      const fp = /Fingerprint=([0-9A-F:]+)/.exec(out)?.[1];
      expect(fp?.replace(/:/g, '').toLowerCase()).toBe(fingerprintSha256(leaf));
    });

    it('makes CSRs that openssl verifies and reads', async () => {
      const csr = createCsr(leafKey, [[Oid.organization, 'x']], {
        uris: [SPIFFE_ID],
        dnsNames: ['web'],
      });
      const file = writeTmp('req.pem', toPem('CERTIFICATE REQUEST', csr));
      const out = await openssl('req', '-in', file, '-verify', '-noout', '-text');
      expect(out).toMatch(/verify OK/);
      expect(out).toContain('Subject: O = x');
      expect(out).toContain(`URI:${SPIFFE_ID}, DNS:web`);
      expect(out).toContain(`Signature Algorithm: ${SIGNATURE_NAMES[alg]!}`);
    });
  });

  it('makes CSRs that parse back to the same key and names', () => {
    const csr = createCsr(leafKey, [[Oid.organization, 'x']], {
      uris: [SPIFFE_ID],
      dnsNames: ['web'],
    });
    const parsed = parseBoth(csr);
    expect(parsed.uris).toEqual([SPIFFE_ID]);
    expect(parsed.dnsNames).toEqual(['web']);
    expect(parsed.subject).toEqual([[Oid.organization, 'x']]);
    expect(parsed.publicKeySpki.equals(spkiOf(leafKey))).toBe(true);
    expect(parsed.publicKey.equals(crypto.createPublicKey(leafKey))).toBe(true);
  });

  it('rejects a CSR whose signature was tampered with', () => {
    const csr = Buffer.from(createCsr(leafKey, [], { uris: [SPIFFE_ID] }));
    csr[csr.length - 1] = csr[csr.length - 1]! ^ 0x01;
    expectCsrError(csr, 'certificate request signature does not verify');
  });

  it('rejects a CSR whose requested name was changed after signing', () => {
    const csr = Buffer.from(createCsr(leafKey, [], { uris: [SPIFFE_ID] }));
    const at = csr.indexOf('sa/web');
    csr.write('sa/adm', at, 'ascii');
    expectCsrError(csr, 'certificate request signature does not verify');
  });
});

describe('certificate chains across key types', () => {
  it('an RSA root signs an EC leaf and an EC root signs an RSA leaf', async () => {
    for (const [rootAlg, leafAlg] of [
      ['rsa-2048', 'ec-p256'],
      ['ec-p384', 'rsa-2048'],
    ] as const) {
      const root = makeRoot(await generateKey(rootAlg));
      const leaf = makeLeaf(root, await generateKey(leafAlg));
      expect(isSignedBy(leaf, crypto.createPublicKey(root.key))).toBe(true);
      if (HAVE_OPENSSL) {
        const rootFile = writeTmp('root.pem', toPem('CERTIFICATE', root.cert));
        const leafFile = writeTmp('leaf.pem', toPem('CERTIFICATE', leaf));
        await expect(
          openssl('verify', '-x509_strict', '-CAfile', rootFile, leafFile),
        ).resolves.toContain(': OK');
      }
    }
  });

  it('signs with an Ed25519 issuer key', async () => {
    const root = makeRoot(crypto.generateKeyPairSync('ed25519').privateKey);
    const leaf = makeLeaf(root, await generateKey('ec-p256'));
    expect(isSignedBy(leaf, crypto.createPublicKey(root.key))).toBe(true);
    expect(new crypto.X509Certificate(leaf).verify(crypto.createPublicKey(root.key))).toBe(true);
  });
});

describe('subject alternative names', () => {
  let root: TestCa;
  beforeAll(async () => {
    root = makeRoot(await generateKey('ec-p256'));
  });

  it.each([
    { name: 'loopback', ip: '::1' },
    { name: 'the unspecified address', ip: '::' },
    { name: 'a documentation address', ip: '2001:db8::1' },
    { name: 'a link-local address with groups after ::', ip: 'fe80::a:b:c:d' },
    { name: 'all eight groups', ip: '1:2:3:4:5:6:7:8' },
    { name: 'leading zeros and upper case', ip: '2001:0DB8:0000:0000:0000:FF00:0042:8329' },
    { name: 'a trailing ::', ip: '2001:db8::' },
    { name: 'IPv4', ip: '192.168.1.20' },
  ])('encodes an IP SAN: $name', ({ ip }) => {
    const x = new crypto.X509Certificate(makeLeaf(root, root.key, { sans: { ips: [ip] } }));
    expect(x.checkIP(ip)).toBe(ip);
    const ipBytes = /IP Address:([0-9A-F.:]+)/.exec(x.subjectAltName ?? '')?.[1];
    expect(ipBytes).toBeDefined();
  });

  it.each([
    { name: 'a host name', ip: 'web.local' },
    { name: 'a truncated IPv4 address', ip: '10.0.0' },
    { name: 'an IPv4-mapped IPv6 address', ip: '::ffff:10.0.0.1' },
    { name: 'two ::', ip: '1::2::3' },
  ])('rejects an IP SAN that is $name', ({ ip }) => {
    expect(() => makeLeaf(root, root.key, { sans: { ips: [ip] } })).toThrow(
      `invalid IP address ${JSON.stringify(ip)}`,
    );
  });

  // Known bug (reported): net.isIPv6 accepts a zone id, and encodeIp then hex-decodes "1%eth0"
  // to nothing, producing a 14-byte iPAddress. Flip to `it` once encodeIp rejects '%'.
  it('rejects an IPv6 address with a zone id', () => {
    expect(() => makeLeaf(root, root.key, { sans: { ips: ['fe80::1%eth0'] } })).toThrow(
      /invalid IP address/,
    );
  });

  it('marks the SAN extension non-critical when the subject is not empty', async () => {
    const leaf = makeLeaf(root, root.key, { subject: [[Oid.commonName, 'web']] });
    expect(parseCertificate(leaf).subject).toEqual([[Oid.commonName, 'web']]);
    if (HAVE_OPENSSL) {
      const text = await openssl(
        'x509',
        '-in',
        writeTmp('leaf.pem', toPem('CERTIFICATE', leaf)),
        '-noout',
        '-text',
      );
      expect(text).toMatch(/X509v3 Subject Alternative Name: \n/);
    }
  });

  it('omits the SAN extension when there are no names', () => {
    const leaf = makeLeaf(root, root.key, { subject: [[Oid.commonName, 'web']], sans: {} });
    const parsed = parseCertificate(leaf);
    expect(parsed.uris).toEqual([]);
    expect(new crypto.X509Certificate(leaf).subjectAltName).toBeUndefined();
  });

  it('keeps several URIs in order', () => {
    const uris = [SPIFFE_ID, 'spiffe://cluster.local/ns/default/sa/db'];
    expect(parseCertificate(makeLeaf(root, root.key, { sans: { uris } })).uris).toEqual(uris);
  });

  it('encodes UTF-8 subject names', () => {
    const subject: Name = [[Oid.organization, 'Zürich Ünïcode']];
    expect(parseCertificate(makeLeaf(root, root.key, { subject })).subject).toEqual(subject);
  });
});

describe('validity times', () => {
  let root: TestCa;
  beforeAll(async () => {
    root = makeRoot(await generateKey('ec-p256'), new Date('2060-01-01T00:00:00Z'));
  });

  /** The tag of notBefore and notAfter in a certificate's TBS validity. */
  function validityTags(cert: Buffer): number[] {
    const [tbs] = der.children(der.decode(cert));
    const validity = der.children(tbs!)[4]!;
    return der.children(validity).map(n => n.tag);
  }

  it('uses UTCTime through 2049 and GeneralizedTime from 2050', async () => {
    const notAfter = new Date('2051-06-01T12:00:00Z');
    const leaf = makeLeaf(root, root.key, { notAfter });
    expect(validityTags(leaf)).toEqual([der.Tag.utcTime, der.Tag.generalizedTime]);
    expect(parseCertificate(leaf).notAfter.toISOString()).toBe(notAfter.toISOString());
    expect(new Date(new crypto.X509Certificate(leaf).validTo).toISOString()).toBe(
      notAfter.toISOString(),
    );
    expect(validityTags(root.cert)).toEqual([der.Tag.utcTime, der.Tag.generalizedTime]);
    if (HAVE_OPENSSL) {
      const rootFile = writeTmp('root.pem', toPem('CERTIFICATE', root.cert));
      const leafFile = writeTmp('leaf.pem', toPem('CERTIFICATE', leaf));
      await expect(openssl('x509', '-in', leafFile, '-noout', '-enddate')).resolves.toContain(
        'notAfter=Jun  1 12:00:00 2051 GMT',
      );
      await expect(
        openssl('verify', '-x509_strict', '-CAfile', rootFile, leafFile),
      ).resolves.toContain(': OK');
    }
  });

  it('uses UTCTime for 2049-12-31T23:59:59Z', () => {
    const leaf = makeLeaf(root, root.key, { notAfter: new Date('2049-12-31T23:59:59Z') });
    expect(validityTags(leaf)).toEqual([der.Tag.utcTime, der.Tag.utcTime]);
    expect(parseCertificate(leaf).notAfter.toISOString()).toBe('2049-12-31T23:59:59.000Z');
  });

  it('round-trips notBefore to the second', () => {
    const notBefore = new Date('2026-02-03T04:05:06.789Z');
    const parsed = parseCertificate(makeLeaf(root, root.key, { notBefore }));
    expect(parsed.notBefore.toISOString()).toBe('2026-02-03T04:05:06.000Z');
  });
});

describe('parseCertificate on malformed input', () => {
  let cert: Buffer;
  beforeAll(async () => {
    const root = makeRoot(await generateKey('ec-p256'));
    cert = root.cert;
  });

  it.each([
    {
      name: 'an empty buffer',
      make: () => Buffer.alloc(0),
      message: 'truncated element at byte 0',
    },
    {
      name: 'text',
      make: () => Buffer.from('hello world'),
      message: 'element at byte 0 runs past the end',
    },
    { name: 'an empty SEQUENCE', make: () => der.sequence(), message: 'empty certificate' },
    {
      name: 'a TBS with too few fields',
      make: () => der.sequence(der.sequence(der.integer(1), der.integer(2))),
      message: 'certificate is missing fields',
    },
  ])('throws DerError for $name', ({ make, message }) => {
    expect(() => parseCertificate(make())).toThrow(DerError);
    expect(() => parseCertificate(make())).toThrow(message);
  });

  it('throws DerError for every truncation and for trailing bytes', () => {
    for (const n of [1, 2, 10, cert.length / 2, cert.length - 1]) {
      expect(() => parseCertificate(cert.subarray(0, Math.floor(n)))).toThrow(DerError);
    }
    expect(() => parseCertificate(Buffer.concat([cert, Buffer.from([0])]))).toThrow(
      new DerError('trailing bytes after the element'),
    );
  });

  // Known bug (reported): an empty extensions wrapper `[3] {}` reaches parseExtensions(undefined)
  // and throws a TypeError instead of the documented DerError. Flip to `it` once fixed.
  it('throws DerError for an empty extensions wrapper', () => {
    const [tbs, alg, sig] = der.children(der.decode(cert));
    const fields = der.children(tbs!).map(f => (f.tag === 0xa3 ? der.explicit(3) : f.raw));
    const broken = der.sequence(der.sequence(...fields), alg!.raw, sig!.raw);
    expect(() => parseCertificate(broken)).toThrow(DerError);
  });
});

describe('parseCertificate on certificates openssl made', () => {
  it.each([
    { name: 'EC P-256', newkey: ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'] },
    { name: 'RSA-2048', newkey: ['-newkey', 'rsa:2048'] },
  ])('reads a self-signed $name certificate valid past 2050', async ({ newkey }) => {
    if (!HAVE_OPENSSL) return;
    const keyFile = writeTmp('key.pem', '');
    const certFile = writeTmp('cert.der', '');
    await openssl(
      'req',
      '-x509',
      ...newkey,
      '-nodes',
      '-keyout',
      keyFile,
      '-days',
      '10000',
      '-subj',
      '/O=acme/CN=ops',
      '-addext',
      `subjectAltName=URI:${SPIFFE_ID},DNS:a.example,DNS:b.example`,
      '-outform',
      'DER',
      '-out',
      certFile,
    );
    const certDer = fs.readFileSync(certFile);
    const parsed = parseCertificate(certDer);
    const x = new crypto.X509Certificate(certDer);
    expect(parsed.serialHex).toBe(x.serialNumber.toLowerCase());
    expect(parsed.subject).toEqual([
      [Oid.organization, 'acme'],
      [Oid.commonName, 'ops'],
    ]);
    expect(parsed.uris).toEqual([SPIFFE_ID]);
    expect(parsed.dnsNames).toEqual(['a.example', 'b.example']);
    expect(parsed.isCa).toBe(x.ca);
    expect(parsed.notBefore.getTime()).toBe(new Date(x.validFrom).getTime());
    expect(parsed.notAfter.getTime()).toBe(new Date(x.validTo).getTime());
    expect(parsed.notAfter.getUTCFullYear()).toBeGreaterThanOrEqual(2050);
    expect(parsed.publicKeySpki.equals(x.publicKey.export({ type: 'spki', format: 'der' }))).toBe(
      true,
    );
    expect(isSignedBy(certDer, x.publicKey)).toBe(true);
  });
});

describeOpenssl('parseCsr on requests openssl made', () => {
  /** Runs `openssl req -new` with `keyArgs` and returns the DER request. */
  async function opensslCsr(keyArgs: string[], extra: string[] = []): Promise<Buffer> {
    const keyFile = writeTmp('key.pem', '');
    const csrFile = writeTmp('req.der', '');
    await openssl(
      'req',
      '-new',
      ...keyArgs,
      '-nodes',
      '-keyout',
      keyFile,
      '-subj',
      '/O=x',
      ...extra,
      '-outform',
      'DER',
      '-out',
      csrFile,
    );
    return fs.readFileSync(csrFile);
  }

  it('reads the URI SAN of an EC P-256 request', async () => {
    const csr = await opensslCsr(
      ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'],
      ['-addext', 'subjectAltName=URI:spiffe://cluster.local/ns/a/sa/b'],
    );
    const parsed = parseBoth(csr);
    expect(parsed.uris).toEqual(['spiffe://cluster.local/ns/a/sa/b']);
    expect(parsed.dnsNames).toEqual([]);
    expect(parsed.subject).toEqual([[Oid.organization, 'x']]);
    expect(parsed.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
  });

  it('reads an EC P-384 request with a SHA-384 signature and several names', async () => {
    const csr = await opensslCsr(
      ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384', '-sha384'],
      ['-addext', 'subjectAltName=DNS:web,URI:spiffe://cluster.local/ns/a/sa/b,IP:10.0.0.1'],
    );
    const parsed = parseBoth(csr);
    expect(parsed.uris).toEqual(['spiffe://cluster.local/ns/a/sa/b']);
    expect(parsed.dnsNames).toEqual(['web']);
  });

  it('reads an RSA-2048 request without extensions', async () => {
    const parsed = parseBoth(await opensslCsr(['-newkey', 'rsa:2048']));
    expect(parsed.uris).toEqual([]);
    expect(parsed.publicKey.asymmetricKeyDetails?.modulusLength).toBe(2048);
  });

  it('reads an Ed25519 request', async () => {
    const parsed = parseBoth(await opensslCsr(['-newkey', 'ed25519']));
    expect(parsed.publicKey.asymmetricKeyType).toBe('ed25519');
  });

  it.each([
    {
      name: 'an RSA-1024 key as too weak',
      keyArgs: ['-newkey', 'rsa:1024'],
      message: 'RSA key of 1024 bits is too weak (minimum 2048)',
    },
    {
      name: 'a P-521 key as an unsupported curve',
      keyArgs: ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-521'],
      message: 'elliptic curve secp521r1 is not allowed',
    },
    {
      name: 'a secp256k1 key as an unsupported curve',
      keyArgs: ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:secp256k1'],
      message: 'elliptic curve secp256k1 is not allowed',
    },
  ])('rejects $name', async ({ keyArgs, message }) => {
    expectCsrError(await opensslCsr(keyArgs), message);
  });
});

describe('parseCsr on malformed and hostile input', () => {
  let key: crypto.KeyObject;
  let good: Buffer;
  beforeAll(async () => {
    key = await generateKey('ec-p256');
    good = createCsr(key, [[Oid.organization, 'x']], { uris: [SPIFFE_ID] });
  });

  it.each([
    {
      name: 'an empty buffer',
      make: () => Buffer.alloc(0),
      message: 'malformed certificate request: truncated element at byte 0',
    },
    {
      name: 'a truncated request',
      make: () => good.subarray(0, good.length - 10),
      message: 'malformed certificate request: element at byte 0 runs past the end',
    },
    {
      name: 'trailing bytes',
      make: () => Buffer.concat([good, Buffer.from([0, 0])]),
      message: 'malformed certificate request: trailing bytes after the element',
    },
    {
      name: 'PEM text instead of DER',
      make: () => Buffer.from(toPem('CERTIFICATE REQUEST', good)),
      message: /^malformed certificate request: /,
    },
    {
      name: 'a primitive element',
      make: () => der.integer(5),
      message: /^malformed certificate request: .*not constructed/,
    },
    {
      name: 'a sequence of two elements',
      make: () => der.sequence(der.sequence(), der.sequence()),
      message: 'malformed certificate request: expected three fields',
    },
  ])('rejects $name', ({ make, message }) => {
    expectCsrError(make(), message);
  });

  it('rejects every truncation with a CsrError', () => {
    for (let n = 0; n < good.length; n++)
      expectCsrError(good.subarray(0, n), /^malformed certificate request: /);
  });

  it('rejects a certificate passed as a request', async () => {
    const root = makeRoot(await generateKey('ec-p256'));
    expectCsrError(root.cert, 'certificate request version must be 1 (0)');
  });

  it('rejects a request with a broken public key', () => {
    const info = der.sequence(
      der.integer(0),
      encodeName([]),
      der.sequence(
        der.sequence(der.oid('1.2.840.10045.2.1')),
        der.bitString(Buffer.from([4, 1, 2])),
      ),
    );
    expectCsrError(signRawCsr(info, key), /^certificate request public key is invalid: /);
  });

  it.each([
    { name: 'P-256', size: 32, curve: '1.2.840.10045.3.1.7' },
    { name: 'P-384', size: 48, curve: '1.3.132.0.34' },
  ])('rejects a $name point that is not on the curve', ({ size, curve }) => {
    const point = Buffer.alloc(1 + 2 * size, 1);
    point[0] = 4;
    const info = der.sequence(
      der.integer(0),
      encodeName([]),
      der.sequence(
        der.sequence(der.oid('1.2.840.10045.2.1'), der.oid(curve)),
        der.bitString(point),
      ),
    );
    expectCsrError(signRawCsr(info, key), /^certificate request public key is invalid: /);
  });

  it('rejects a signature algorithm that does not match the key', () => {
    const [info, , sig] = der.children(der.decode(good));
    const swapped = der.sequence(
      info!.raw,
      der.sequence(der.oid(Oid.sha256WithRsa), der.nullValue()),
      sig!.raw,
    );
    expectCsrError(swapped, `signature algorithm ${Oid.sha256WithRsa} does not match a ec key`);
  });

  it('rejects an unsupported signature algorithm (ecdsa-with-SHA1)', () => {
    const [info] = der.children(der.decode(good));
    expectCsrError(
      signRawCsr(info!.raw, key, '1.2.840.10045.4.1'),
      'signature algorithm 1.2.840.10045.4.1 is not supported',
    );
  });

  it('rejects a malformed signature algorithm', () => {
    const [info, , sig] = der.children(der.decode(good));
    expectCsrError(
      der.sequence(info!.raw, der.sequence(der.integer(1)), sig!.raw),
      'certificate request signature algorithm is malformed',
    );
  });

  it('rejects a signature that is not a valid ECDSA structure', () => {
    const [info, alg] = der.children(der.decode(good));
    const csr = der.sequence(info!.raw, alg!.raw, der.bitString(Buffer.from('garbage')));
    expectCsrError(csr, 'certificate request signature does not verify');
  });

  it('rejects a request signed by a different key', async () => {
    const [info, alg] = der.children(der.decode(good));
    const other = await generateKey('ec-p256');
    const csr = der.sequence(
      info!.raw,
      alg!.raw,
      der.bitString(crypto.sign('sha256', info!.raw, other)),
    );
    expectCsrError(csr, 'certificate request signature does not verify');
  });

  it.each([
    { name: 'version 1', version: 1 },
    { name: 'version 2', version: 2 },
  ])('rejects $name', ({ version }) => {
    const info = der.sequence(der.integer(version), encodeName([]), spkiOf(key));
    expectCsrError(signRawCsr(info, key), 'certificate request version must be 1 (0)');
  });

  it('rejects a validly signed request whose SAN extension is garbage', () => {
    const badSan = der.sequence(
      der.oid(Oid.subjectAltName),
      der.octetString(Buffer.from([0x30, 0x05, 0x86])),
    );
    const attrs = der.explicit(
      0,
      der.sequence(der.oid(Oid.extensionRequest), der.set(der.sequence(badSan))),
    );
    const info = der.sequence(der.integer(0), encodeName([]), spkiOf(key), attrs);
    expectCsrError(signRawCsr(info, key), /^certificate request attributes are malformed: /);
  });

  it('accepts a request with no attributes at all', () => {
    const info = der.sequence(der.integer(0), encodeName([[Oid.commonName, 'n']]), spkiOf(key));
    const parsed = parseBoth(signRawCsr(info, key));
    expect(parsed.uris).toEqual([]);
    expect(parsed.subject).toEqual([[Oid.commonName, 'n']]);
  });

  it('ignores attributes other than extensionRequest', () => {
    const challenge = der.sequence(
      der.oid('1.2.840.113549.1.9.7'),
      der.set(der.utf8String('secret')),
    );
    const info = der.sequence(
      der.integer(0),
      encodeName([]),
      spkiOf(key),
      der.explicit(0, challenge),
    );
    expect(parseBoth(signRawCsr(info, key)).uris).toEqual([]);
  });

  it('CsrError names itself', () => {
    const err = new CsrError('x');
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe('CsrError');
  });
});

describe('importPublicKey and importPublicKeyAsync', () => {
  it.each([
    { name: 'P-256', make: () => crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' }) },
    { name: 'P-384', make: () => crypto.generateKeyPairSync('ec', { namedCurve: 'secp384r1' }) },
    {
      name: 'RSA-2048',
      make: () => crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }),
    },
    { name: 'Ed25519', make: () => crypto.generateKeyPairSync('ed25519') },
    { name: 'P-521', make: () => crypto.generateKeyPairSync('ec', { namedCurve: 'secp521r1' }) },
  ])('import the same $name key', async ({ make }) => {
    const { publicKey } = make();
    const spki = publicKey.export({ type: 'spki', format: 'der' });
    const sync = importPublicKey(spki);
    const async = await importPublicKeyAsync(spki);
    expect(sync.equals(publicKey)).toBe(true);
    expect(async.equals(publicKey)).toBe(true);
    expect(async.type).toBe('public');
    expect(async.asymmetricKeyDetails).toEqual(publicKey.asymmetricKeyDetails);
  });

  it('import a compressed P-256 point through the decoder', async () => {
    const { publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const jwk = publicKey.export({ format: 'jwk' });
    const ecdh = crypto.ECDH.convertKey(
      Buffer.concat([
        Buffer.from([4]),
        Buffer.from(jwk.x as string, 'base64url'),
        Buffer.from(jwk.y as string, 'base64url'),
      ]),
      'prime256v1',
      undefined,
      undefined,
      'compressed',
    ) as Buffer;
    const spki = der.sequence(
      der.sequence(der.oid('1.2.840.10045.2.1'), der.oid('1.2.840.10045.3.1.7')),
      der.bitString(ecdh),
    );
    expect(importPublicKey(spki).equals(publicKey)).toBe(true);
    expect((await importPublicKeyAsync(spki)).equals(publicKey)).toBe(true);
  });

  it('fail the same way on garbage', async () => {
    const garbage = Buffer.from([0x30, 0x03, 0x02, 0x01, 0x00]);
    expect(() => importPublicKey(garbage)).toThrow();
    await expect(importPublicKeyAsync(garbage)).rejects.toThrow();
  });
});

describe('key policy', () => {
  it.each([
    {
      name: 'RSA-1024 is too weak',
      make: () => crypto.generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey,
      want: 'RSA key of 1024 bits is too weak (minimum 2048)',
    },
    {
      name: 'RSA-2048 is accepted',
      make: () => crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey,
      want: undefined,
    },
    {
      name: 'P-256 is accepted',
      make: () => crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey,
      want: undefined,
    },
    {
      name: 'P-384 is accepted',
      make: () => crypto.generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).publicKey,
      want: undefined,
    },
    {
      name: 'P-521 is refused',
      make: () => crypto.generateKeyPairSync('ec', { namedCurve: 'secp521r1' }).publicKey,
      want: 'elliptic curve secp521r1 is not allowed',
    },
    {
      name: 'Ed25519 is accepted',
      make: () => crypto.generateKeyPairSync('ed25519').publicKey,
      want: undefined,
    },
    {
      name: 'X25519 (not a signing key) is refused',
      make: () => crypto.generateKeyPairSync('x25519').publicKey,
      want: 'key type x25519 is not allowed',
    },
  ])('$name', ({ make, want }) => {
    expect(checkKeyPolicy(make())).toBe(want);
  });

  it('applies a custom policy', () => {
    const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
    const p384 = crypto.generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).publicKey;
    const policy = { minRsaBits: 1024, maxRsaBits: 1024, curves: ['prime256v1'] };
    expect(checkKeyPolicy(rsa, policy)).toBe('RSA key of 2048 bits is too large (maximum 1024)');
    expect(checkKeyPolicy(p384, policy)).toBe('elliptic curve secp384r1 is not allowed');
    expect(DEFAULT_KEY_POLICY.curves).toEqual(['prime256v1', 'secp384r1']);
  });

  it('parseCsr enforces the policy before checking the signature', () => {
    const weak = crypto.generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey;
    expectCsrError(
      createCsr(weak, [], { uris: [SPIFFE_ID] }),
      'RSA key of 1024 bits is too weak (minimum 2048)',
    );
    const p521 = crypto.generateKeyPairSync('ec', { namedCurve: 'secp521r1' }).privateKey;
    expectCsrError(
      createCsr(p521, [], { uris: [SPIFFE_ID] }),
      'elliptic curve secp521r1 is not allowed',
    );
    const p384 = crypto.generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).privateKey;
    expectCsrError(createCsr(p384, [], {}), 'elliptic curve secp384r1 is not allowed', {
      ...DEFAULT_KEY_POLICY,
      curves: ['prime256v1'],
    });
  });
});
