/**
 * Peer certificates of server calls over real grpc-js TLS on loopback: read once per connection,
 * and only when TLS verified them.
 */
import * as crypto from 'node:crypto';
import * as tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import {
  createCertificate,
  encodeName,
  generateKey,
  keyIdentifier,
  type Issuer,
  Oid,
  privateKeyToPem,
  randomSerial,
  toPem,
} from '../pki';
import {
  clientCredentials,
  peerCertificate,
  peerCertificateOf,
  serverCredentials,
  StaticCertificateProvider,
  tlsSocketOf,
} from './credentials';

interface Ca {
  issuer: Issuer;
  pem: string;
}

async function makeCa(name: string): Promise<Ca> {
  const key = await generateKey('ec-p256');
  const spki = crypto.createPublicKey(key).export({ type: 'spki', format: 'der' });
  const subjectDer = encodeName([[Oid.commonName, name]]);
  const issuer = { key, subjectDer, keyId: keyIdentifier(spki) };
  const now = Date.now();
  const der = createCertificate(
    {
      serial: randomSerial(),
      subject: [[Oid.commonName, name]],
      publicKeySpki: spki,
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 3600_000),
      isCa: true,
    },
    issuer,
  );
  return { issuer, pem: toPem('CERTIFICATE', der) };
}

async function makeLeaf(
  ca: Ca,
  cn: string,
): Promise<{ der: Buffer; certPem: string; keyPem: string }> {
  const key = await generateKey('ec-p256');
  const now = Date.now();
  const der = createCertificate(
    {
      serial: randomSerial(),
      subject: [[Oid.commonName, cn]],
      publicKeySpki: crypto.createPublicKey(key).export({ type: 'spki', format: 'der' }),
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 3600_000),
      isCa: false,
      sans: { dnsNames: ['localhost'], ips: ['127.0.0.1'] },
    },
    ca.issuer,
  );
  return { der, certPem: toPem('CERTIFICATE', der), keyPem: privateKeyToPem(key) };
}

/** A unary method that carries raw bytes, so no proto is needed. */
const ECHO: grpc.ServiceDefinition = {
  Echo: {
    path: '/test.Echo/Echo',
    requestStream: false,
    responseStream: false,
    requestSerialize: (b: Buffer) => b,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (b: Buffer) => b,
    responseDeserialize: (b: Buffer) => b,
  },
};

type Seen = { socket: tls.TLSSocket | undefined; peer: ReturnType<typeof peerCertificateOf> };

describe('peerCertificateOf', () => {
  let ca: Ca;
  let server: grpc.Server;
  let port: number;
  const seen: Seen[] = [];
  const clients: grpc.Client[] = [];

  beforeAll(async () => {
    ca = await makeCa('test root');
    const serving = await makeLeaf(ca, 'server');
    const provider = new StaticCertificateProvider(ca.pem, serving.certPem, serving.keyPem);
    server = new grpc.Server();
    server.addService(ECHO, {
      Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        seen.push({ socket: tlsSocketOf(call), peer: peerCertificateOf(call) });
        cb(null, call.request);
      },
    });
    port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', serverCredentials(provider, false), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
  });

  afterAll(async () => {
    for (const c of clients) c.close();
    await new Promise<void>(resolve => server.tryShutdown(() => resolve()));
  });

  beforeEach(() => {
    seen.length = 0;
  });

  function client(identity?: { certChainPem: string; keyPem: string }): grpc.Client {
    const c = new grpc.Client(`127.0.0.1:${port}`, clientCredentials(ca.pem, undefined, identity));
    clients.push(c);
    return c;
  }

  function echo(c: grpc.Client): Promise<Buffer> {
    return new Promise((resolve, reject) =>
      c.makeUnaryRequest(
        '/test.Echo/Echo',
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.from('hi'),
        (err, res) => (err ? reject(err) : resolve(res as Buffer)),
      ),
    );
  }

  it('finds the TLS socket under a grpc-js call (the per-connection cache is in use)', async () => {
    await echo(client());
    expect(seen[0]?.socket).toBeInstanceOf(tls.TLSSocket);
  });

  it('returns the verified client certificate and its SHA-256, once per connection', async () => {
    const leaf = await makeLeaf(ca, 'vm-1');
    const c = client({ certChainPem: leaf.certPem, keyPem: leaf.keyPem });
    await echo(c);
    await echo(c);
    const [a, b] = seen;
    expect(a?.peer?.der.equals(leaf.der)).toBe(true);
    expect(a?.peer?.fingerprint).toBe(crypto.createHash('sha256').update(leaf.der).digest('hex'));
    expect(b?.socket).toBe(a?.socket);
    expect(b?.peer).toBe(a?.peer); // the same object: read once for the connection
  });

  it('tells connections apart', async () => {
    const one = await makeLeaf(ca, 'vm-1');
    const two = await makeLeaf(ca, 'vm-2');
    await echo(client({ certChainPem: one.certPem, keyPem: one.keyPem }));
    await echo(client({ certChainPem: two.certPem, keyPem: two.keyPem }));
    await echo(client());
    expect(seen.map(s => s.peer?.der)).toEqual([one.der, two.der, undefined]);
    expect(new Set(seen.map(s => s.socket)).size).toBe(3);
  });

  it('ignores a client certificate that TLS did not verify', async () => {
    const other = await makeCa('other root');
    const stranger = await makeLeaf(other, 'vm-1');
    await echo(client({ certChainPem: stranger.certPem, keyPem: stranger.keyPem }));
    expect(seen[0]?.socket).toBeInstanceOf(tls.TLSSocket);
    expect(seen[0]?.peer).toBeUndefined();
  });

  it('falls back to getAuthContext() for call objects of another shape', async () => {
    const leaf = await makeLeaf(ca, 'vm-1');
    const call = { getAuthContext: () => ({ sslPeerCertificate: { raw: leaf.der } }) };
    expect(tlsSocketOf(call)).toBeUndefined();
    expect(peerCertificate(call)?.equals(leaf.der)).toBe(true);
    expect(peerCertificateOf({ getAuthContext: () => ({}) })).toBeUndefined();
    expect(peerCertificate({ getAuthContext: () => ({ sslPeerCertificate: {} }) })).toBeUndefined();
  });
});
