/**
 * The CA over real gRPC/TLS on loopback: attestation by token, certificate and bootstrap
 * certificate; authorization; bad input; persistence; plugged-in CAs. openssl judges the output.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { silentLogger } from '../common/logging';
import {
  createCertificate,
  createCsr,
  encodeName,
  generateKey,
  keyIdentifier,
  Oid,
  parseCertificate,
  parseCertificatesPem,
  privateKeyToPem,
  randomSerial,
  toPem,
} from '../common/pki';
import { statusErrorCode } from '../common/grpc';
import { hasOpenssl, openssl } from '../test/helpers/openssl';
import { makeCsr, TestCaClient } from '../test/helpers/ca-client';
import { makeTmpDir } from '../test/helpers/tmp-dir';
import { CertificateAuthority } from './ca';
import type { CaOptions } from './config';

const TD = 'cluster.local';
const WEB = `spiffe://${TD}/ns/default/sa/web`;

/** A clock the test can move forward. */
class TestClock {
  offsetMs = 0;
  now = () => Date.now() + this.offsetMs;
  sleep = (ms: number, signal?: AbortSignal) =>
    new Promise<void>((resolve, reject) => {
      const t = setTimeout(resolve, ms);
      signal?.addEventListener('abort', () => (clearTimeout(t), reject(signal.reason as Error)), {
        once: true,
      });
    });
}

async function startCa(dataDir: string, extra: Partial<CaOptions> = {}) {
  const clock = new TestClock();
  const ca = new CertificateAuthority({
    logger: silentLogger(),
    dataDir,
    listen: '127.0.0.1:0',
    clock,
    ...extra,
  });
  await ca.start();
  return { ca, clock };
}

async function admin(ca: CertificateAuthority, method: string, p: string, body?: unknown) {
  const route = ca
    .adminRoutes()
    .find(
      r =>
        r.method === method &&
        (r.path === p || r.path.replace(':name', p.split('/').pop() ?? '') === p),
    );
  if (!route) throw new Error(`no route ${method} ${p}`);
  const params: Record<string, string> = route.path.includes(':name')
    ? { name: p.split('/').pop() as string }
    : {};
  const res = await route.handler({
    req: undefined as never,
    params,
    query: new URLSearchParams(),
    admin: true,
    body: () => Promise.resolve((body ?? {}) as Record<string, unknown>),
  });
  return 'json' in res ? (res.json as Record<string, unknown>) : {};
}

const grpcCode = (p: Promise<unknown>) =>
  p.then(
    () => 'OK',
    (err: unknown) =>
      `${grpc.status[(err as { code: number }).code] ?? '?'}:${statusErrorCode(err) ?? ''}`,
  );

describe('CertificateAuthority', () => {
  let tmp: ReturnType<typeof makeTmpDir>;
  let ca: CertificateAuthority;
  let clock: TestClock;
  let client: TestCaClient;

  beforeEach(async () => {
    tmp = makeTmpDir();
    ({ ca, clock } = await startCa(path.join(tmp.dir, 'cp')));
    client = new TestCaClient({ address: ca.address, rootsPem: ca.rootsPem });
  });

  afterEach(async () => {
    client.close();
    await ca.close();
    tmp.cleanup();
  });

  it('issues a SPIFFE certificate for a join token, verifiable by openssl', async () => {
    const { token } = (await admin(ca, 'POST', '/v1/tokens', {
      node: 'vm-1',
      serviceAccounts: ['default/web'],
      ttl: '1h',
    })) as { token: string };
    const { csrPem, keyPem } = await makeCsr(WEB);
    const res = await client.create({ csr: csrPem, validitySeconds: 3600 }, token);
    expect(res.spiffeId).toBe(WEB);
    expect(res.node).toBe('vm-1');
    expect(res.certChain).toHaveLength(2);
    const leaf = parseCertificate(parseCertificatesPem(res.certChain[0] as string)[0] as Buffer);
    expect(leaf.uris).toEqual([WEB]);
    expect(leaf.isCa).toBe(false);
    expect(leaf.serialHex).toHaveLength(32);
    expect(leaf.notAfter.getTime() - leaf.notBefore.getTime()).toBe(3600_000 + 60_000);
    expect(fs.readFileSync(path.join(tmp.dir, 'cp', 'root-cert.pem'), 'utf8')).toBe(ca.rootsPem);
    if (!hasOpenssl()) return console.warn('openssl not installed: skipping openssl checks');
    const certFile = path.join(tmp.dir, 'leaf.pem');
    fs.writeFileSync(certFile, res.certChain[0] as string);
    const rootFile = path.join(tmp.dir, 'cp', 'root-cert.pem');
    expect(openssl(['verify', '-CAfile', rootFile, certFile])).toMatchObject({ status: 0 });
    const text = openssl(['x509', '-in', certFile, '-noout', '-text']).output;
    expect(text).toContain(`URI:${WEB}`);
    expect(text).toContain('CA:FALSE');
    expect(text).toContain('TLS Web Server Authentication, TLS Web Client Authentication');
    const keyFile = path.join(tmp.dir, 'key.pem');
    fs.writeFileSync(keyFile, keyPem);
    // The certificate is for the key in the CSR.
    const pub1 = openssl(['x509', '-in', certFile, '-noout', '-pubkey']).output;
    const pub2 = openssl(['pkey', '-in', keyFile, '-pubout']).output;
    expect(pub1).toBe(pub2);
  });

  it('refuses a used token for another key, but accepts a retry with the same key', async () => {
    const { token } = (await admin(ca, 'POST', '/v1/tokens', {
      node: 'vm-1',
      serviceAccounts: ['default/web'],
    })) as { token: string };
    const first = await makeCsr(WEB);
    await client.create({ csr: first.csrPem }, token);
    await expect(client.create({ csr: first.csrPem }, token)).resolves.toMatchObject({
      spiffeId: WEB,
    });
    const other = await makeCsr(WEB);
    expect(await grpcCode(client.create({ csr: other.csrPem }, token))).toBe(
      'PERMISSION_DENIED:CA_TOKEN_USED',
    );
  });

  it('refuses an expired token, an unknown token and no credentials', async () => {
    const { token } = (await admin(ca, 'POST', '/v1/tokens', {
      node: 'vm-1',
      serviceAccounts: ['default/web'],
      ttl: '10s',
    })) as { token: string };
    const { csrPem } = await makeCsr(WEB);
    clock.offsetMs = 11_000;
    expect(await grpcCode(client.create({ csr: csrPem }, token))).toBe(
      'UNAUTHENTICATED:CA_TOKEN_EXPIRED',
    );
    const forged = token.slice(0, 17) + 'A'.repeat(43);
    expect(await grpcCode(client.create({ csr: csrPem }, forged))).toBe(
      'UNAUTHENTICATED:CA_TOKEN_INVALID',
    );
    expect(await grpcCode(client.create({ csr: csrPem }))).toBe(
      'UNAUTHENTICATED:CA_NO_CREDENTIALS',
    );
  });

  it('refuses a CSR for a service account the node is not assigned', async () => {
    const { token } = (await admin(ca, 'POST', '/v1/tokens', {
      node: 'vm-1',
      serviceAccounts: ['default/web'],
    })) as { token: string };
    const { csrPem } = await makeCsr(`spiffe://${TD}/ns/default/sa/db`);
    const err = await client
      .create({ csr: csrPem }, token)
      .catch((e: unknown) => e as grpc.ServiceError);
    expect((err as grpc.ServiceError).code).toBe(grpc.status.PERMISSION_DENIED);
    expect((err as grpc.ServiceError).details).toContain(
      'node vm-1 is not assigned spiffe://cluster.local/ns/default/sa/db',
    );
    // The refusal did not use up the token.
    const ok = await makeCsr(WEB);
    await expect(client.create({ csr: ok.csrPem }, token)).resolves.toMatchObject({
      spiffeId: WEB,
    });
  });

  it('renews with the current certificate, and stops once the node is removed', async () => {
    const { token } = (await admin(ca, 'POST', '/v1/tokens', {
      node: 'vm-1',
      serviceAccounts: ['default/web'],
    })) as { token: string };
    const first = await makeCsr(WEB);
    const res = await client.create({ csr: first.csrPem, validitySeconds: 60 }, token);
    const mtls = new TestCaClient({
      address: ca.address,
      rootsPem: ca.rootsPem,
      identity: { certChainPem: res.certChain.slice(0, -1).join(''), keyPem: first.keyPem },
    });
    try {
      const next = await makeCsr();
      const renewed = await mtls.create({ csr: next.csrPem, validitySeconds: 60 });
      expect(renewed).toMatchObject({ spiffeId: WEB, node: 'vm-1' });
      expect(await grpcCode(mtls.create({ csr: next.csrPem, node: 'vm-2' }))).toBe(
        'PERMISSION_DENIED:CA_NODE_MISMATCH',
      );
      await admin(ca, 'DELETE', '/v1/nodes/vm-1');
      expect(await grpcCode(mtls.create({ csr: next.csrPem }))).toBe(
        'PERMISSION_DENIED:CA_NODE_UNKNOWN',
      );
    } finally {
      mtls.close();
    }
  });

  it('rejects malformed, weak, oversized and multi-SAN requests with INVALID_ARGUMENT', async () => {
    const { token } = (await admin(ca, 'POST', '/v1/tokens', {
      node: 'vm-1',
      serviceAccounts: ['default/web'],
    })) as { token: string };
    const cases: [string, string][] = [
      ['empty', ''],
      ['not PEM', 'hello'],
      ['garbage DER', toPem('CERTIFICATE REQUEST', Buffer.from('3003020100', 'hex'))],
      ['oversized', toPem('CERTIFICATE REQUEST', crypto.randomBytes(20_000))],
    ];
    for (const [name, csr] of cases) {
      const err = (await client
        .create({ csr }, token)
        .catch((e: unknown) => e)) as grpc.ServiceError;
      expect([name, err.code]).toEqual([name, grpc.status.INVALID_ARGUMENT]);
      expect(err.details.length).toBeGreaterThan(5);
    }
    const weak = crypto.generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey;
    const weakCsr = toPem('CERTIFICATE REQUEST', createCsr(weak, [], { uris: [WEB] }));
    const err = (await client
      .create({ csr: weakCsr }, token)
      .catch((e: unknown) => e)) as grpc.ServiceError;
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err.details).toContain('RSA key of 1024 bits is too weak');
    const two = toPem(
      'CERTIFICATE REQUEST',
      createCsr(await generateKey('ec-p256'), [], {
        uris: [WEB, `spiffe://${TD}/ns/default/sa/x`],
      }),
    );
    expect(await grpcCode(client.create({ csr: two }, token))).toBe(
      'INVALID_ARGUMENT:CA_CSR_INVALID',
    );
    expect(
      await grpcCode(
        client.create({ csr: (await makeCsr(WEB)).csrPem, validitySeconds: 5 }, token),
      ),
    ).toBe('INVALID_ARGUMENT:CA_TTL_INVALID');
    // A request above the gRPC message limit is refused by the transport, and the CA still serves.
    expect(await grpcCode(client.create({ csr: 'x'.repeat(100_000) }, token))).toMatch(
      /^RESOURCE_EXHAUSTED/,
    );
    await expect(client.create({ csr: (await makeCsr(WEB)).csrPem }, token)).resolves.toMatchObject(
      { spiffeId: WEB },
    );
  });

  it('signs a CSR made by openssl req, taking only its key and the authorized SAN', async () => {
    if (!hasOpenssl()) return console.warn('openssl not installed: skipping');
    const { token } = (await admin(ca, 'POST', '/v1/tokens', {
      node: 'vm-1',
      serviceAccounts: ['default/web'],
    })) as { token: string };
    const keyFile = path.join(tmp.dir, 'k.pem');
    const csrFile = path.join(tmp.dir, 'r.csr');
    const r = openssl([
      'req',
      '-new',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      keyFile,
      '-out',
      csrFile,
      '-subj',
      '/CN=evil/O=evil',
      '-addext',
      `subjectAltName=URI:${WEB},DNS:evil.example.com`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
    ]);
    expect(r.status).toBe(0);
    const res = await client.create({ csr: fs.readFileSync(csrFile, 'utf8') }, token);
    const leaf = parseCertificate(parseCertificatesPem(res.certChain[0] as string)[0] as Buffer);
    expect(leaf.isCa).toBe(false);
    expect(leaf.uris).toEqual([WEB]);
    expect(leaf.dnsNames).toEqual([]);
    expect(leaf.subject).toEqual([
      [Oid.organization, TD],
      [Oid.commonName, 'vm-1'],
    ]);
    const certFile = path.join(tmp.dir, 'c.pem');
    fs.writeFileSync(certFile, res.certChain[0] as string);
    expect(
      openssl(['verify', '-CAfile', path.join(tmp.dir, 'cp', 'root-cert.pem'), certFile]).status,
    ).toBe(0);
  });

  it('caps a requested lifetime at --max-cert-ttl', async () => {
    client.close();
    await ca.close();
    ({ ca } = await startCa(path.join(tmp.dir, 'cp2'), {
      maxCertTtlMs: 3600_000,
      defaultCertTtlMs: 1800_000,
    }));
    client = new TestCaClient({ address: ca.address, rootsPem: ca.rootsPem });
    const { token } = (await admin(ca, 'POST', '/v1/tokens', {
      node: 'vm-1',
      serviceAccounts: ['default/web'],
    })) as { token: string };
    const res = await client.create(
      { csr: (await makeCsr(WEB)).csrPem, validitySeconds: 90 * 86400 },
      token,
    );
    const leaf = parseCertificate(parseCertificatesPem(res.certChain[0] as string)[0] as Buffer);
    expect(leaf.notAfter.getTime() - Date.now()).toBeLessThanOrEqual(3600_000);
    expect(leaf.notAfter.getTime() - Date.now()).toBeGreaterThan(3500_000);
  });

  it('reserves the control plane namespace', async () => {
    await expect(
      admin(ca, 'POST', '/v1/tokens', {
        node: 'vm-1',
        serviceAccounts: ['sail-system/sail-admin'],
      }),
    ).rejects.toMatchObject({
      code: 'COMMON_INVALID_INPUT',
      message: expect.stringContaining('reserved') as string,
    });
  });

  it('keeps the same root across a restart and serves the trust bundle', async () => {
    const before = ca.rootsPem;
    const bundle = await client.trustBundle();
    expect(bundle).toEqual({ rootCerts: [before], trustDomain: TD });
    client.close();
    await ca.close();
    ({ ca } = await startCa(path.join(tmp.dir, 'cp')));
    client = new TestCaClient({ address: ca.address, rootsPem: ca.rootsPem });
    expect(ca.rootsPem).toBe(before);
    const key = fs.statSync(path.join(tmp.dir, 'cp', 'ca', 'root-key.pem'));
    expect(key.mode & 0o777).toBe(0o600);
  });
});

describe('CertificateAuthority with bootstrap and plugged-in CAs', () => {
  let tmp: ReturnType<typeof makeTmpDir>;
  beforeEach(() => (tmp = makeTmpDir()));
  afterEach(() => tmp.cleanup());

  /** Makes a CA certificate (self-signed, or signed by `parent`). */
  async function makeCaCert(cn: string, parent?: { key: crypto.KeyObject; der: Buffer }) {
    const key = await generateKey('ec-p256');
    const spki = crypto.createPublicKey(key).export({ type: 'spki', format: 'der' });
    const subject: [string, string][] = [[Oid.commonName, cn]];
    const p = parent ? parseCertificate(parent.der) : undefined;
    const der = createCertificate(
      {
        serial: randomSerial(),
        subject,
        publicKeySpki: spki,
        notBefore: new Date(Date.now() - 60_000),
        notAfter: new Date(Date.now() + 86400e3),
        isCa: true,
      },
      parent && p
        ? { key: parent.key, subjectDer: p.subjectDer, keyId: p.subjectKeyId as Buffer }
        : { key, subjectDer: encodeName(subject), keyId: keyIdentifier(spki) },
    );
    return { key, der };
  }

  it('attests a node with a bootstrap certificate naming it', async () => {
    const boot = await makeCaCert('fleet bootstrap CA');
    const bootFile = path.join(tmp.dir, 'bootstrap-ca.pem');
    fs.writeFileSync(bootFile, toPem('CERTIFICATE', boot.der));
    const { ca } = await startCa(path.join(tmp.dir, 'cp'), { bootstrapCaFiles: [bootFile] });
    try {
      await admin(ca, 'PUT', '/v1/nodes/vm-7', { serviceAccounts: ['default/web'] });
      const machineKey = await generateKey('ec-p256');
      const spki = crypto.createPublicKey(machineKey).export({ type: 'spki', format: 'der' });
      const bp = parseCertificate(boot.der);
      const mk = (cn: string) =>
        toPem(
          'CERTIFICATE',
          createCertificate(
            {
              serial: randomSerial(),
              subject: [[Oid.commonName, cn]],
              publicKeySpki: spki,
              notBefore: new Date(Date.now() - 60_000),
              notAfter: new Date(Date.now() + 3600e3),
              isCa: false,
            },
            { key: boot.key, subjectDer: bp.subjectDer, keyId: bp.subjectKeyId as Buffer },
          ),
        );
      const c = new TestCaClient({
        address: ca.address,
        rootsPem: ca.rootsPem,
        identity: { certChainPem: mk('vm-7'), keyPem: privateKeyToPem(machineKey) },
      });
      const { csrPem } = await makeCsr(WEB);
      await expect(c.create({ csr: csrPem })).resolves.toMatchObject({
        node: 'vm-7',
        spiffeId: WEB,
      });
      c.close();
      const stranger = new TestCaClient({
        address: ca.address,
        rootsPem: ca.rootsPem,
        identity: { certChainPem: mk('vm-8'), keyPem: privateKeyToPem(machineKey) },
      });
      expect(await grpcCode(stranger.create({ csr: csrPem }))).toBe(
        'PERMISSION_DENIED:CA_NODE_UNKNOWN',
      );
      stranger.close();
    } finally {
      await ca.close();
    }
  });

  it('signs with a plugged-in intermediate and hands out leaf, intermediate, root', async () => {
    const root = await makeCaCert('corp root');
    const inter = await makeCaCert('sail intermediate', root);
    const f = (n: string, s: string) => (
      fs.writeFileSync(path.join(tmp.dir, n), s),
      path.join(tmp.dir, n)
    );
    const plugged = {
      caCertFile: f('ca-cert.pem', toPem('CERTIFICATE', inter.der)),
      caKeyFile: f('ca-key.pem', privateKeyToPem(inter.key)),
      rootCertFile: f('root-cert.pem', toPem('CERTIFICATE', root.der)),
      certChainFile: f('cert-chain.pem', toPem('CERTIFICATE', inter.der)),
    };
    const { ca } = await startCa(path.join(tmp.dir, 'cp'), { plugged });
    const c = new TestCaClient({ address: ca.address, rootsPem: ca.rootsPem });
    try {
      const { token } = (await admin(ca, 'POST', '/v1/tokens', {
        node: 'vm-1',
        serviceAccounts: ['default/web'],
      })) as { token: string };
      const res = await c.create({ csr: (await makeCsr(WEB)).csrPem }, token);
      expect(res.certChain).toHaveLength(3);
      if (hasOpenssl()) {
        const leaf = f('leaf.pem', res.certChain[0] as string);
        expect(
          openssl([
            'verify',
            '-CAfile',
            plugged.rootCertFile,
            '-untrusted',
            plugged.certChainFile,
            leaf,
          ]).status,
        ).toBe(0);
      }
    } finally {
      c.close();
      await ca.close();
    }
  });

  it('leaves node entries alone when a start fails', async () => {
    const dataDir = path.join(tmp.dir, 'cp');
    const { ca } = await startCa(dataDir);
    await admin(ca, 'PUT', '/v1/nodes/vm-9', { serviceAccounts: ['default/web'] });
    await ca.close();
    const before = fs.readFileSync(path.join(dataDir, 'ca', 'nodes.json'), 'utf8');
    const missing = path.join(tmp.dir, 'missing.pem');
    const broken = new CertificateAuthority({
      logger: silentLogger(),
      dataDir,
      listen: '127.0.0.1:0',
      plugged: {
        caCertFile: missing,
        caKeyFile: missing,
        rootCertFile: missing,
        certChainFile: missing,
      },
    });
    await expect(broken.start()).rejects.toMatchObject({ code: 'CA_PLUGGED_CERTS_INVALID' });
    expect(fs.readFileSync(path.join(dataDir, 'ca', 'nodes.json'), 'utf8')).toBe(before);
  });

  it.each([
    ['a key that does not match', 'does not match CA certificate'],
    ['a certificate that is not a CA', 'is not a CA'],
    ['a chain to another root', 'does not chain to root certificate'],
  ])('refuses to start with plugged-in files with %s', async (_name, message) => {
    const root = await makeCaCert('corp root');
    const inter = await makeCaCert('sail intermediate', root);
    const other = await makeCaCert('other root');
    const f = (n: string, s: string) => (
      fs.writeFileSync(path.join(tmp.dir, n), s),
      path.join(tmp.dir, n)
    );
    let caCert = inter.der;
    let caKey = inter.key;
    let rootDer = root.der;
    if (message.includes('does not match')) caKey = other.key;
    if (message.includes('not a CA')) {
      const k = await generateKey('ec-p256');
      const spki = crypto.createPublicKey(k).export({ type: 'spki', format: 'der' });
      const rp = parseCertificate(root.der);
      caCert = createCertificate(
        {
          serial: randomSerial(),
          subject: [[Oid.commonName, 'leaf']],
          publicKeySpki: spki,
          notBefore: new Date(),
          notAfter: new Date(Date.now() + 3600e3),
          isCa: false,
        },
        { key: root.key, subjectDer: rp.subjectDer, keyId: rp.subjectKeyId as Buffer },
      );
      caKey = k;
    }
    if (message.includes('chain')) rootDer = other.der;
    const plugged = {
      caCertFile: f('ca-cert.pem', toPem('CERTIFICATE', caCert)),
      caKeyFile: f('ca-key.pem', privateKeyToPem(caKey)),
      rootCertFile: f('root-cert.pem', toPem('CERTIFICATE', rootDer)),
      certChainFile: f('cert-chain.pem', toPem('CERTIFICATE', caCert)),
    };
    const ca = new CertificateAuthority({
      logger: silentLogger(),
      dataDir: path.join(tmp.dir, 'cp'),
      listen: '127.0.0.1:0',
      plugged,
    });
    await expect(ca.start()).rejects.toMatchObject({
      code: 'CA_PLUGGED_CERTS_INVALID',
      message: expect.stringContaining(message) as string,
    });
  });
});
