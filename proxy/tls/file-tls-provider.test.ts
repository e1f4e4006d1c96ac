import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { LogCapture } from '../../test/helpers/log-capture';
import { TestCa } from '../../test/helpers/test-ca';
import { makeTmpDir } from '../../test/helpers/tmp-dir';
import { waitFor } from '../../test/helpers/wait-for';
import { writeWorkloadIdentity } from '../../test/helpers/workload-identity';
import type { CertificateValidation, DownstreamTls, UpstreamTls } from '../model';
import { PEER_EXCHANGE_ALPN } from '../types';
import { FileTlsProvider, serverSocketOptions } from './file-tls-provider';
import { chainError } from './peer';

const TD = 'cluster.local';
const SERVER_ID = `spiffe://${TD}/ns/default/sa/server`;
const CLIENT_ID = `spiffe://${TD}/ns/default/sa/client`;

const exact = (value: string) => ({ kind: 'exact' as const, value, ignoreCase: false });

const meshValidation = (spiffeId?: string): CertificateValidation => ({
  trust: { kind: 'sds', name: 'ROOTCA' },
  sanMatchers: spiffeId ? [{ sanType: 'URI', matcher: exact(spiffeId) }] : [],
});

const meshServer = (over: Partial<DownstreamTls> = {}): DownstreamTls => ({
  certificate: { kind: 'sds', name: 'default' },
  validation: meshValidation(),
  requireClientCertificate: true,
  alpn: ['h2', 'http/1.1'],
  ...over,
});

const meshClient = (spiffeId: string, over: Partial<UpstreamTls> = {}): UpstreamTls => ({
  certificate: { kind: 'sds', name: 'default' },
  validation: meshValidation(spiffeId),
  alpn: ['istio'],
  mesh: true,
  ...over,
});

async function writeIdentity(
  ca: TestCa,
  dir: string,
  spiffeId: string,
  opts: { signer?: 'root' | 'other'; keyPem?: string } = {},
): Promise<string> {
  const id = await writeWorkloadIdentity(ca, dir, spiffeId, opts);
  return new crypto.X509Certificate(id.certChainPem).serialNumber.toLowerCase();
}

/** A TLS server the way the listeners wrap accepted sockets; it answers `ok <peer spiffe id>`. */
class TestServer {
  readonly server: net.Server;
  readonly sockets = new Set<net.Socket>();
  readonly rejections: string[] = [];
  readonly alpns: (string | false)[] = [];

  constructor(provider: FileTlsProvider, config: DownstreamTls) {
    this.server = net.createServer(raw => {
      this.sockets.add(raw);
      raw.on('close', () => this.sockets.delete(raw));
      const s = new tls.TLSSocket(raw, serverSocketOptions(provider, config));
      s.on('error', () => s.destroy());
      s.on('secure', () => {
        this.alpns.push(s.alpnProtocol ?? false);
        const reason = provider.verifyPeer(s, config.validation);
        if (reason !== undefined) {
          this.rejections.push(reason);
          s.destroy();
          return;
        }
        s.on('data', (d: Buffer) => {
          s.write(`${d.toString()}:${provider.peerIdentity(s)?.spiffeId ?? '-'}`);
        });
      });
    });
  }

  async listen(): Promise<number> {
    await new Promise<void>(r => this.server.listen(0, '127.0.0.1', r));
    return (this.server.address() as net.AddressInfo).port;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise(r => this.server.close(r));
  }
}

function connect(port: number, options: tls.ConnectionOptions): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, ...options }, () => resolve(s));
    s.once('error', reject);
  });
}

/** Sends `msg` and resolves with the answer, or rejects when the server cuts the connection. */
function roundTrip(s: tls.TLSSocket, msg: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const onClose = () => reject(new Error('connection closed'));
    s.once('close', onClose);
    s.once('error', reject);
    s.once('data', (d: Buffer) => {
      s.off('close', onClose);
      s.off('error', reject);
      resolve(d.toString());
    });
    s.write(msg);
  });
}

describe('FileTlsProvider', () => {
  let ca: TestCa;
  let tmp: { dir: string; cleanup: () => void };
  let serverDir: string;
  let clientDir: string;
  const closers: (() => Promise<void> | void)[] = [];

  beforeAll(async () => {
    ca = await TestCa.create({ trustDomain: TD });
  });

  beforeEach(async () => {
    tmp = makeTmpDir('sail-proxy-tls-');
    serverDir = path.join(tmp.dir, 'server');
    clientDir = path.join(tmp.dir, 'client');
    await writeIdentity(ca, serverDir, SERVER_ID);
    await writeIdentity(ca, clientDir, CLIENT_ID);
  });

  afterEach(async () => {
    for (const c of closers.splice(0).reverse()) await c();
    tmp.cleanup();
  });

  async function provider(dir: string, logs = new LogCapture()): Promise<FileTlsProvider> {
    const p = new FileTlsProvider({ logger: logs.logger, certsDir: dir, trustDomain: TD });
    await p.start();
    closers.push(() => p.close());
    return p;
  }

  async function server(p: FileTlsProvider, config: DownstreamTls): Promise<[TestServer, number]> {
    const s = new TestServer(p, config);
    const port = await s.listen();
    closers.push(() => s.close());
    return [s, port];
  }

  function track<T extends net.Socket>(s: T): T {
    closers.push(() => void s.destroy());
    return s;
  }

  it('loads the identity and reports it', async () => {
    const p = await provider(serverDir);
    expect(p.ready).toBe(true);
    expect(p.spiffeId).toBe(SERVER_ID);
    expect(p.certificateExpiry()?.getTime()).toBeGreaterThan(Date.now());
  });

  it('does mTLS with SPIFFE SANs both ways', async () => {
    const sp = await provider(serverDir);
    const cp = await provider(clientDir);
    const config = meshServer({ validation: meshValidation(CLIENT_ID) });
    const [srv, port] = await server(sp, config);
    const s = track(await connect(port, cp.clientOptions(meshClient(SERVER_ID))));
    expect(s.authorized).toBe(true);
    expect(await roundTrip(s, 'hi')).toBe(`hi:${CLIENT_ID}`);
    expect(srv.rejections).toEqual([]);
    // The client side sees the server's identity.
    const peer = cp.peerIdentity(s);
    expect(peer?.spiffeId).toBe(SERVER_ID);
    expect(peer?.uris).toEqual([SERVER_ID]);
    expect(peer?.subject).toBe(`CN=vm-1,O=${TD}`);
    expect(peer?.hash).toBe(
      crypto.createHash('sha256').update(s.getPeerCertificate().raw).digest('hex'),
    );
    expect(cp.peerIdentity(s)).toBe(peer); // cached per socket
    expect(cp.verifyPeer(s, meshValidation(SERVER_ID))).toBeUndefined();
    expect(cp.verifyPeer(s, meshValidation('spiffe://cluster.local/ns/x/sa/y'))).toMatch(
      /match no allowed subject alt name/,
    );
  });

  it('rejects a server whose SAN does not match', async () => {
    const sp = await provider(serverDir);
    const cp = await provider(clientDir);
    const [, port] = await server(sp, meshServer());
    await expect(
      connect(port, cp.clientOptions(meshClient(`spiffe://${TD}/ns/default/sa/other`))),
    ).rejects.toMatchObject({ code: 'ERR_TLS_CERT_SAN_MISMATCH' });
  });

  it('rejects a client whose SAN does not match (verifyPeer on the server side)', async () => {
    const sp = await provider(serverDir);
    const cp = await provider(clientDir);
    const config = meshServer({ validation: meshValidation(`spiffe://${TD}/ns/default/sa/other`) });
    const [srv, port] = await server(sp, config);
    const s = track(await connect(port, cp.clientOptions(meshClient(SERVER_ID))));
    await expect(roundTrip(s, 'hi')).rejects.toThrow();
    expect(srv.rejections[0]).toMatch(/match no allowed subject alt name/);
  });

  it('fails the handshake of a client without a certificate when one is required', async () => {
    const sp = await provider(serverDir);
    const cp = await provider(clientDir);
    const [srv, port] = await server(sp, meshServer());
    const noCert = meshClient(SERVER_ID);
    const { certificate: _unused, ...simple } = noCert;
    const err = await connect(port, cp.clientOptions(simple))
      .then(s => roundTrip(track(s), 'hi'))
      .catch((e: unknown) => e);
    expect(err).toHaveProperty('message');
    expect(srv.rejections).toEqual([]); // the handshake itself failed, 'secure' never came
  });

  it('lets a client without a certificate in when none is required', async () => {
    const sp = await provider(serverDir);
    const cp = await provider(clientDir);
    const [, port] = await server(sp, meshServer({ requireClientCertificate: false }));
    const { certificate: _unused, ...simple } = meshClient(SERVER_ID);
    const s = track(await connect(port, cp.clientOptions(simple)));
    expect(await roundTrip(s, 'hi')).toBe('hi:-');
  });

  it('refuses a client certificate from an untrusted CA', async () => {
    const otherDir = path.join(tmp.dir, 'other');
    await writeIdentity(ca, otherDir, CLIENT_ID, { signer: 'other' });
    const logs = new LogCapture();
    const sp = await provider(serverDir);
    // The untrusted certificate still loads (the proxy checks key and validity, not the chain).
    const op = new FileTlsProvider({ logger: logs.logger, certsDir: otherDir, trustDomain: TD });
    await op.start();
    closers.push(() => op.close());
    const [srv, port] = await server(sp, meshServer());
    const s = track(await connect(port, op.clientOptions(meshClient(SERVER_ID))));
    await expect(roundTrip(s, 'hi')).rejects.toThrow();
    expect(srv.rejections[0]).toMatch(/certificate chain rejected/);
  });

  it('never fails a handshake over ALPN', async () => {
    const sp = await provider(serverDir);
    const cp = await provider(clientDir);
    const [srv, port] = await server(sp, meshServer());
    const cases: [string[] | undefined, string | false][] = [
      [['foo', 'bar'], 'foo'],
      [['http/1.1', 'h2'], 'h2'],
      [['istio', 'http/1.1'], 'http/1.1'],
      [undefined, false],
    ];
    for (const [offer, want] of cases) {
      const opts = { ...cp.clientOptions(meshClient(SERVER_ID)) };
      if (offer) opts.ALPNProtocols = offer;
      else delete opts.ALPNProtocols;
      const s = track(await connect(port, opts));
      expect(s.alpnProtocol).toBe(want);
      expect(await roundTrip(s, 'x')).toBe(`x:${CLIENT_ID}`);
      s.destroy();
    }
    expect(srv.alpns).toEqual(cases.map(c => c[1]));
  });

  it('selects sail-peer-exchange on a mesh chain without ALPN (tcp_proxy), nowhere else', async () => {
    const sp = await provider(serverDir);
    const cp = await provider(clientDir);
    const SAIL = [PEER_EXCHANGE_ALPN, 'istio-peer-exchange', 'istio'];
    const servers: [DownstreamTls, [string[] | undefined, string | false][]][] = [
      [
        meshServer({ alpn: [] }),
        [
          [SAIL, PEER_EXCHANGE_ALPN],
          // An Envoy sidecar: never istio-peer-exchange (nothing here answers Istio's exchange).
          [['istio-peer-exchange', 'istio'], 'istio'],
          // An HTTP client on such a chain gets its codec.
          [['istio-peer-exchange', 'istio', 'h2'], 'h2'],
          [['istio-peer-exchange'], 'istio-peer-exchange'],
          [undefined, false],
        ],
      ],
      // HTTP chains keep their own preference.
      [meshServer(), [[[...SAIL, 'h2'], 'h2']]],
      // Not mesh mTLS (no client certificate required): no ALPN is selected, as before.
      [meshServer({ alpn: [], requireClientCertificate: false }), [[SAIL, false]]],
    ];
    for (const [config, cases] of servers) {
      const [, port] = await server(sp, config);
      for (const [offer, want] of cases) {
        const opts = { ...cp.clientOptions(meshClient(SERVER_ID)) };
        if (offer) opts.ALPNProtocols = offer;
        else delete opts.ALPNProtocols;
        const s = track(await connect(port, opts));
        expect([offer, s.alpnProtocol]).toEqual([offer, want]);
        expect(await roundTrip(s, 'x')).toBe(`x:${CLIENT_ID}`);
        s.destroy();
      }
    }
  });

  it('rotates: new handshakes get the new certificate, open connections keep working', async () => {
    const sp = await provider(serverDir);
    const cp = await provider(clientDir);
    let rotations = 0;
    sp.onRotate(() => rotations++);
    const [, port] = await server(sp, meshServer());
    const before = track(await connect(port, cp.clientOptions(meshClient(SERVER_ID))));
    const oldSerial = before.getPeerX509Certificate()!.serialNumber.toLowerCase();
    expect(await roundTrip(before, 'a')).toBe(`a:${CLIENT_ID}`);

    const newSerial = await writeIdentity(ca, serverDir, SERVER_ID);
    expect(newSerial).not.toBe(oldSerial);
    await waitFor(() => rotations > 0, { what: 'rotation seen through fs.watch' });

    const after = track(await connect(port, cp.clientOptions(meshClient(SERVER_ID))));
    expect(after.getPeerX509Certificate()!.serialNumber.toLowerCase()).toBe(newSerial);
    expect(await roundTrip(before, 'b')).toBe(`b:${CLIENT_ID}`);
    expect(await roundTrip(after, 'c')).toBe(`c:${CLIENT_ID}`);
  });

  it('keeps the last good certificate when the new files are unusable', async () => {
    const logs = new LogCapture();
    const sp = await provider(serverDir, logs);
    const [, port] = await server(sp, meshServer());
    const cp = await provider(clientDir);
    const s1 = track(await connect(port, cp.clientOptions(meshClient(SERVER_ID))));
    const serial = s1.getPeerX509Certificate()!.serialNumber;
    const otherKey = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    await writeIdentity(ca, serverDir, SERVER_ID, {
      keyPem: otherKey.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    });
    await sp.reload();
    expect(
      logs.find('Cannot load workload certificate; keeping the previous one', 'warn'),
    ).not.toEqual([]);
    expect(logs.text()).toMatch(/does not belong to certificate/);
    expect(sp.ready).toBe(true);
    const s2 = track(await connect(port, cp.clientOptions(meshClient(SERVER_ID))));
    expect(s2.getPeerX509Certificate()!.serialNumber).toBe(serial);
  });

  it('starts without files and picks them up when they appear', async () => {
    const late = path.join(tmp.dir, 'late');
    const p = new FileTlsProvider({
      logger: new LogCapture().logger,
      certsDir: late,
      trustDomain: TD,
      pollIntervalMs: 50,
    });
    await p.start();
    closers.push(() => p.close());
    expect(p.ready).toBe(false);
    expect(p.spiffeId).toBe('');
    expect(() => p.serverContext(meshServer())).toThrow(/not loaded yet/);
    await writeIdentity(ca, late, SERVER_ID);
    await waitFor(() => p.ready, { what: 'late certificate' });
    expect(p.spiffeId).toBe(SERVER_ID);
  });

  it('serves `files` secrets and reloads them when they change', async () => {
    const sp = await provider(serverDir);
    const cp = await provider(clientDir);
    const fdir = path.join(tmp.dir, 'files');
    fs.mkdirSync(fdir);
    const issue = async () => {
      const now = Date.now();
      const id = await ca.issueWorkloadCert({
        node: 'gw',
        spiffeId: `spiffe://${TD}/ns/default/sa/gw`,
        notBeforeMs: now - 60_000,
        notAfterMs: now + 3600_000,
      });
      fs.writeFileSync(path.join(fdir, 'cert.pem'), id.certChainPem);
      fs.writeFileSync(path.join(fdir, 'key.pem'), id.keyPem);
      return new crypto.X509Certificate(id.certChainPem).serialNumber;
    };
    const serial1 = await issue();
    fs.writeFileSync(path.join(fdir, 'ca.pem'), ca.rootPem);
    const config: DownstreamTls = {
      certificate: {
        kind: 'files',
        certChainPath: path.join(fdir, 'cert.pem'),
        privateKeyPath: path.join(fdir, 'key.pem'),
      },
      requireClientCertificate: false,
      alpn: [],
    };
    const [, port] = await server(sp, config);
    const client: UpstreamTls = {
      validation: { trust: { kind: 'files', path: path.join(fdir, 'ca.pem') }, sanMatchers: [] },
      alpn: [],
      mesh: false,
    };
    const s1 = track(await connect(port, cp.clientOptions(client)));
    expect(s1.getPeerX509Certificate()!.serialNumber).toBe(serial1);
    const ctx = sp.serverContext(config);
    expect(sp.serverContext(config)).toBe(ctx); // cached
    const serial2 = await issue();
    await sp.reload();
    expect(sp.serverContext(config)).not.toBe(ctx);
    const s2 = track(await connect(port, cp.clientOptions(client)));
    expect(s2.getPeerX509Certificate()!.serialNumber).toBe(serial2);
  });

  it('does not verify the server without trust (insecureSkipVerify)', async () => {
    const otherDir = path.join(tmp.dir, 'other');
    await writeIdentity(ca, otherDir, SERVER_ID, { signer: 'other' });
    const sp = await provider(otherDir);
    const cp = await provider(clientDir);
    const [, port] = await server(
      sp,
      meshServer({ requireClientCertificate: false, validation: undefined }),
    );
    await expect(connect(port, cp.clientOptions(meshClient(SERVER_ID)))).rejects.toThrow();
    const s = track(
      await connect(port, cp.clientOptions({ alpn: [], mesh: false, validation: undefined })),
    );
    expect(await roundTrip(s, 'x')).toBe('x:-');
  });

  it('reads the handshake verdict from the TLS handle (Node internals still have that shape)', async () => {
    const sp = await provider(serverDir);
    const cp = await provider(clientDir);
    const [, port] = await server(sp, meshServer());
    const s = track(await connect(port, cp.clientOptions(meshClient(SERVER_ID))));
    const handle = (s as unknown as { _handle?: { verifyError?: unknown } })._handle;
    expect(typeof handle?.verifyError).toBe('function');
    expect(chainError(s)).toBeUndefined();
  });

  it('close is idempotent', async () => {
    const p = await provider(serverDir);
    await p.close();
    await p.close();
  });
});
