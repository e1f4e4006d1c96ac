/**
 * The TCP peer metadata exchange: frame parsing (pure, table tests), and two listener managers
 * back to back over mesh mTLS as two sidecars (A outbound, B inbound; real TLS with certificates
 * from the test CA, real cluster managers), plus peers that do not take part or break the framing.
 */
import * as crypto from 'node:crypto';
import * as net from 'node:net';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { LogCapture } from '../../test/helpers/log-capture';
import { TestCa } from '../../test/helpers/test-ca';
import { makeTmpDir } from '../../test/helpers/tmp-dir';
import { waitFor } from '../../test/helpers/wait-for';
import { startWorkloadTls } from '../../test/helpers/workload-identity';
import { MESH_TRANSPORT, staticCluster, TestConfig } from '../http/testing';
import type { ProxyConfig } from '../model';
import type { TrafficOptions } from '../options';
import { TrafficLabeler } from '../telemetry';
import type { FileTlsProvider } from '../tls';
import {
  PEER_EXCHANGE_ALPN,
  type ProxyTelemetry,
  type RequestRecord,
  type TcpRecord,
  type TrafficLabels,
} from '../types';
import { DefaultClusterManager } from '../upstream';
import { ListenerManager } from './listener-manager';
import {
  encodePeerExchangeFrame,
  MAX_PEER_EXCHANGE_PAYLOAD_BYTES,
  parsePeerExchangeFrame,
  PEER_EXCHANGE_HEADER_BYTES,
  type PeerExchangeParse,
  peerExchangeConnectOptions,
} from './peer-exchange';
import {
  chain,
  type Closers,
  connect,
  freePort,
  ISTIO_ALPN,
  listener,
  listenTracked,
  MESH_DOWNSTREAM_TLS,
  readAll,
  RecordingHttp,
  tcpHandler,
  tcpServer,
} from './testing';

// ---------------------------------------------------------------------------------------------
// Frames

/** A header with `magic` and `length`, then `payload`. */
function rawFrame(magic: number, length: number, payload = ''): Buffer {
  const b = Buffer.alloc(PEER_EXCHANGE_HEADER_BYTES);
  b.writeUInt32BE(magic, 0);
  b.writeUInt32BE(length, 4);
  return Buffer.concat([b, Buffer.from(payload, 'latin1')]);
}

/** Feeds `chunks` as the TCP proxy does (accumulating), returning the result after each. */
function feed(chunks: Buffer[]): PeerExchangeParse[] {
  const out: PeerExchangeParse[] = [];
  let buf = Buffer.alloc(0);
  for (const c of chunks) {
    buf = Buffer.concat([buf, c]);
    out.push(parsePeerExchangeFrame(buf));
  }
  return out;
}

/** `b` cut into pieces of `size` bytes. */
function split(b: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < b.length; i += size) out.push(b.subarray(i, i + size));
  return out;
}

const PAYLOAD = 'eyJ3b3JrbG9hZCI6InZtLWEifQ';
const FRAME = encodePeerExchangeFrame(PAYLOAD);
const INCOMPLETE = { kind: 'incomplete' };
const WHOLE = { kind: 'frame', payload: PAYLOAD, frameBytes: FRAME.length };

describe('parsePeerExchangeFrame', () => {
  it.each<{ name: string; chunks: Buffer[]; want: unknown[] }>([
    { name: 'nothing yet', chunks: [Buffer.alloc(0)], want: [INCOMPLETE] },
    { name: 'a whole frame in one chunk', chunks: [FRAME], want: [WHOLE] },
    {
      name: 'split inside the magic, the length and the payload',
      chunks: [
        FRAME.subarray(0, 2),
        FRAME.subarray(2, 6),
        FRAME.subarray(6, 12),
        FRAME.subarray(12),
      ],
      want: [INCOMPLETE, INCOMPLETE, INCOMPLETE, WHOLE],
    },
    {
      name: 'one byte at a time',
      chunks: split(FRAME, 1),
      want: [...Array<unknown>(FRAME.length - 1).fill(INCOMPLETE), WHOLE],
    },
    {
      name: 'application bytes behind the frame (they start at frameBytes)',
      chunks: [Buffer.concat([FRAME, Buffer.from('hello')])],
      want: [WHOLE],
    },
    {
      name: 'an empty payload',
      chunks: [rawFrame(0x5341494c, 0)],
      want: [{ kind: 'frame', payload: '', frameBytes: 8 }],
    },
    {
      name: 'the largest payload, announced then sent',
      chunks: [
        rawFrame(0x5341494c, MAX_PEER_EXCHANGE_PAYLOAD_BYTES),
        Buffer.alloc(MAX_PEER_EXCHANGE_PAYLOAD_BYTES, 'a'),
      ],
      want: [
        INCOMPLETE,
        {
          kind: 'frame',
          payload: 'a'.repeat(MAX_PEER_EXCHANGE_PAYLOAD_BYTES),
          frameBytes: 8 + MAX_PEER_EXCHANGE_PAYLOAD_BYTES,
        },
      ],
    },
    {
      name: 'oversize: refused as soon as the length is complete',
      chunks: [
        rawFrame(0x5341494c, MAX_PEER_EXCHANGE_PAYLOAD_BYTES + 1).subarray(0, 7),
        rawFrame(0x5341494c, MAX_PEER_EXCHANGE_PAYLOAD_BYTES + 1).subarray(7),
      ],
      want: [
        INCOMPLETE,
        {
          kind: 'invalid',
          reason: `payload of ${MAX_PEER_EXCHANGE_PAYLOAD_BYTES + 1} bytes is over the limit`,
        },
      ],
    },
    {
      name: 'bad magic: refused at the first wrong byte',
      chunks: [Buffer.from('G')],
      want: [{ kind: 'invalid', reason: 'bad magic' }],
    },
    {
      name: 'bad magic in the last magic byte',
      chunks: [Buffer.from('SAI'), Buffer.from('X\0\0\0\0')],
      want: [INCOMPLETE, { kind: 'invalid', reason: 'bad magic' }],
    },
    {
      name: "Istio's metadata exchange magic",
      chunks: [rawFrame(0x3d230467, 10)],
      want: [{ kind: 'invalid', reason: 'bad magic' }],
    },
  ])('$name', ({ chunks, want }) => {
    expect(feed(chunks)).toEqual(want);
  });

  it('encodes magic, big-endian length and the payload', () => {
    expect(FRAME.subarray(0, 4).toString('latin1')).toBe('SAIL');
    expect(FRAME.readUInt32BE(4)).toBe(PAYLOAD.length);
    expect(FRAME.subarray(8).toString('latin1')).toBe(PAYLOAD);
  });
});

describe('peerExchangeConnectOptions', () => {
  it("offers sail-peer-exchange before the transport's ALPN, once, cached per config", () => {
    const config = MESH_TRANSPORT.tls!;
    const options = peerExchangeConnectOptions(config);
    expect(options.alpn).toEqual([PEER_EXCHANGE_ALPN, 'istio-peer-exchange', 'istio']);
    expect(peerExchangeConnectOptions(config)).toBe(options);
    const again = { ...config, alpn: [PEER_EXCHANGE_ALPN, 'istio'] };
    expect(peerExchangeConnectOptions(again).alpn).toEqual([PEER_EXCHANGE_ALPN, 'istio']);
  });
});

// ---------------------------------------------------------------------------------------------
// Two sidecars

const TD = 'cluster.local';
const SPIFFE_A = `spiffe://${TD}/ns/default/sa/a`;
const SPIFFE_B = `spiffe://${TD}/ns/default/sa/b`;
const OUT_CLUSTER = 'outbound|9000||db.default.svc.cluster.local';

const EXPLICIT: TrafficOptions = {
  mode: 'explicit',
  outboundBindHost: '127.0.0.1',
  inboundBindHost: '127.0.0.1',
};

/** ProxyTelemetry keeping the TCP records, labels from a real TrafficLabeler of `workload`. */
class MeshTelemetry implements ProxyTelemetry {
  readonly labels: TrafficLabeler;
  readonly opened: TrafficLabels[] = [];
  readonly closed: TcpRecord[] = [];

  constructor(workload: string, principal: string) {
    this.labels = new TrafficLabeler({
      workload: {
        name: workload,
        namespace: 'default',
        labels: { app: `app-${workload}`, version: 'v1' },
      },
      principal,
    });
  }

  recordRequest(_record: RequestRecord): void {
    throw new Error('no HTTP here');
  }

  tcpOpened(labels: TrafficLabels): void {
    this.opened.push(labels);
  }

  tcpClosed(record: TcpRecord): void {
    this.closed.push(record);
  }
}

const closers: Closers = [];
afterEach(async () => {
  while (closers.length) await closers.pop()!();
});

/** A mesh mTLS client with A's certificate offering `alpn` (any server name); destroyed after the test. */
function tlsClientOfA(port: number, alpn: string[]): tls.TLSSocket {
  const c = tls.connect({
    port,
    host: '127.0.0.1',
    ca: ca.rootPem,
    cert: certA.certChainPem,
    key: certA.keyPem,
    ALPNProtocols: alpn,
    checkServerIdentity: () => undefined,
  });
  closers.push(() => c.destroy());
  return c;
}

/** Reads until `n` bytes came. */
function readBytes(socket: net.Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const onData = (d: Buffer) => {
      chunks.push(d);
      got += d.length;
      if (got >= n) {
        socket.off('data', onData);
        socket.off('close', onClose);
        resolve(Buffer.concat(chunks));
      }
    };
    const onClose = () => reject(new Error(`closed after ${got} of ${n} bytes`));
    socket.on('data', onData);
    socket.once('close', onClose);
  });
}

let ca: TestCa;
let tlsA: FileTlsProvider;
let tlsB: FileTlsProvider;
let certA: { certChainPem: string; keyPem: string };
let certB: { certChainPem: string; keyPem: string };
const tmp = makeTmpDir('sail-peer-exchange-');

beforeAll(async () => {
  ca = await TestCa.create({ trustDomain: TD });
  ({ provider: tlsA, cert: certA } = await startWorkloadTls(
    ca,
    path.join(tmp.dir, 'vm-a'),
    SPIFFE_A,
    {
      node: 'vm-a',
    },
  ));
  ({ provider: tlsB, cert: certB } = await startWorkloadTls(
    ca,
    path.join(tmp.dir, 'vm-b'),
    SPIFFE_B,
    {
      node: 'vm-b',
    },
  ));
});

afterAll(async () => {
  await tlsA.close();
  await tlsB.close();
  tmp.cleanup();
});

/** A listener manager with a real cluster manager, closed after the test. */
async function sidecar(
  name: string,
  provider: FileTlsProvider,
  principal: string,
  config: ProxyConfig,
): Promise<{ telemetry: MeshTelemetry; manager: ListenerManager; logs: LogCapture }> {
  const logs = new LogCapture('debug');
  const telemetry = new MeshTelemetry(name, principal);
  const clusters = new DefaultClusterManager({ logger: logs.logger, tls: provider });
  clusters.update(config);
  const manager = new ListenerManager({
    logger: logs.logger,
    config: { current: config },
    tls: provider,
    clusters,
    http: new RecordingHttp(),
    telemetry,
    traffic: EXPLICIT,
    drainMs: 300,
  });
  closers.push(async () => {
    await manager.close();
    clusters.close();
  });
  await manager.update(config);
  return { telemetry, manager, logs };
}

/** B: the inbound sidecar of `appPort`, as pilot configures a TCP port in PERMISSIVE mode. */
async function inboundSidecar(appPort: number) {
  const port = await freePort();
  const inCluster = `inbound|${port}||`;
  const vi = listener(
    'virtualInbound',
    { address: '0.0.0.0', port: 15006 },
    [
      chain(
        `${inCluster}-mtls`,
        { destinationPort: port, transportProtocol: 'tls', applicationProtocols: ISTIO_ALPN },
        tcpHandler(inCluster),
        // pilot gives tcp_proxy chains no ALPN of their own
        { ...MESH_DOWNSTREAM_TLS, alpn: [] },
      ),
      chain(inCluster, { destinationPort: port }, tcpHandler(inCluster)),
    ],
    { direction: 'inbound' },
  );
  const b = await sidecar(
    'vm-b',
    tlsB,
    SPIFFE_B,
    TestConfig.make([staticCluster(inCluster, [appPort])], [], [vi]),
  );
  return { ...b, port };
}

/** A: the outbound sidecar whose port `0.0.0.0_PORT` proxies to `upstreamPort` over mesh mTLS. */
async function outboundSidecar(upstreamPort: number) {
  const port = await freePort();
  const out = listener(
    `0.0.0.0_${port}`,
    { address: '0.0.0.0', port },
    [chain('tcp', {}, tcpHandler(OUT_CLUSTER))],
    { bindToPort: false },
  );
  const a = await sidecar(
    'vm-a',
    tlsA,
    SPIFFE_A,
    TestConfig.make([staticCluster(OUT_CLUSTER, [upstreamPort], {}, [MESH_TRANSPORT])], [], [out]),
  );
  return { ...a, port };
}

function expectWorkloadLabels(a: TcpRecord, b: TcpRecord): void {
  expect(a.labels).toMatchObject({
    reporter: 'source',
    sourceWorkload: 'vm-a',
    destinationWorkload: 'vm-b',
    destinationWorkloadNamespace: 'default',
    destinationApp: 'app-vm-b',
    destinationVersion: 'v1',
    destinationPrincipal: SPIFFE_B,
    destinationService: 'db.default.svc.cluster.local',
  });
  expect(b.labels).toMatchObject({
    reporter: 'destination',
    sourceWorkload: 'vm-a',
    sourceWorkloadNamespace: 'default',
    sourceApp: 'app-vm-a',
    sourceVersion: 'v1',
    sourcePrincipal: SPIFFE_A,
    destinationWorkload: 'vm-b',
    connectionSecurityPolicy: 'mutual_tls',
  });
}

describe('TCP peer exchange between two sidecars', () => {
  it('proxies 10 MB byte-exact both ways with half-close, and labels both sides', async () => {
    const app = await tcpServer(closers, s => s.pipe(s));
    const b = await inboundSidecar(app);
    const a = await outboundSidecar(b.port);

    const data = crypto.randomBytes(10 * 1024 * 1024);
    const c = await connect(closers, a.port);
    const received = readAll(c);
    c.end(data);
    const got = await received;
    expect(got.length).toBe(data.length);
    expect(got.equals(data)).toBe(true);

    await waitFor(() => a.telemetry.closed.length === 1 && b.telemetry.closed.length === 1, {
      what: 'both sides recorded the connection',
    });
    const [recA, recB] = [a.telemetry.closed[0]!, b.telemetry.closed[0]!];
    expectWorkloadLabels(recA, recB);
    // The frames are not application bytes.
    for (const r of [recA, recB]) {
      expect(r).toMatchObject({
        sentBytes: data.length,
        receivedBytes: data.length,
        responseFlags: '-',
      });
    }
    // Opened and closed are counted under the same labels.
    expect(a.telemetry.opened).toEqual([recA.labels]);
    expect(b.telemetry.opened).toEqual([recB.labels]);
  });

  it('serves a server-first protocol: the application speaks before the client', async () => {
    const app = await tcpServer(closers, s => {
      s.write('220 db ready\r\n');
      s.pipe(s);
    });
    const b = await inboundSidecar(app);
    const a = await outboundSidecar(b.port);
    const c = await connect(closers, a.port);
    expect((await readBytes(c, 14)).toString()).toBe('220 db ready\r\n');
    c.write('select 1\r\n');
    expect((await readBytes(c, 10)).toString()).toBe('select 1\r\n');
    c.end();
    await readAll(c);
    await waitFor(() => a.telemetry.closed.length === 1 && b.telemetry.closed.length === 1);
    expectWorkloadLabels(a.telemetry.closed[0]!, b.telemetry.closed[0]!);
    expect(a.telemetry.closed[0]).toMatchObject({ sentBytes: 24, receivedBytes: 10 });
  });

  it('labels both sides even when the inbound side has no upstream to give', async () => {
    const gone = await freePort();
    const b = await inboundSidecar(gone);
    const a = await outboundSidecar(b.port);
    const c = await connect(closers, a.port);
    expect((await readAll(c)).length).toBe(0);
    // B closed after sending its frame; A passed the FIN on and waits for the client's.
    await waitFor(() => b.telemetry.closed.length === 1);
    c.end();
    await waitFor(() => a.telemetry.closed.length === 1);
    expect(b.telemetry.closed[0]!.responseFlags).toBe('UF');
    expectWorkloadLabels(a.telemetry.closed[0]!, b.telemetry.closed[0]!);
  });
});

describe('TCP peer exchange with peers that do not take part', () => {
  /** A TLS server with B's certificate, requiring a client certificate, choosing from `alpn`. */
  function tlsServer(alpn: string[], onSecure: (s: tls.TLSSocket) => void): Promise<number> {
    const server = tls.createServer(
      {
        cert: certB.certChainPem,
        key: certB.keyPem,
        ca: ca.rootPem,
        requestCert: true,
        rejectUnauthorized: true,
        ALPNProtocols: alpn,
        allowHalfOpen: true,
      },
      s => {
        s.on('error', () => s.destroy());
        onSecure(s);
      },
    );
    return listenTracked(closers, server);
  }

  it('does no exchange with a peer that selects another ALPN (an Envoy sidecar)', async () => {
    const seen: (string | false)[] = [];
    const peer = await tlsServer(['istio'], s => {
      seen.push(s.alpnProtocol ?? false);
      s.pipe(s);
    });
    const a = await outboundSidecar(peer);
    const c = await connect(closers, a.port);
    c.write('ping');
    // The peer echoes exactly what the client sent: no frame went to it.
    expect((await readBytes(c, 4)).toString()).toBe('ping');
    c.end();
    await readAll(c);
    expect(seen).toEqual(['istio']);
    await waitFor(() => a.telemetry.closed.length === 1);
    expect(a.telemetry.closed[0]).toMatchObject({ responseFlags: '-', sentBytes: 4 });
    expect(a.telemetry.closed[0]!.labels.destinationWorkload).toBe('unknown');
  });

  it('closes the connection when the upstream answers with a malformed frame', async () => {
    const got: Buffer[] = [];
    const peer = await tlsServer([PEER_EXCHANGE_ALPN], s => {
      s.on('data', (d: Buffer) => got.push(d));
      s.write('HTTP/1.1 400 Bad Request\r\n\r\n');
    });
    const a = await outboundSidecar(peer);
    const c = await connect(closers, a.port);
    c.write('hello');
    expect((await readAll(c)).length).toBe(0);
    await waitFor(() => a.telemetry.closed.length === 1);
    expect(a.telemetry.closed[0]).toMatchObject({ responseFlags: 'UPE', sentBytes: 0 });
    expect(a.logs.find('TCP peer exchange failed')).toHaveLength(1);
    // What the upstream did receive began with our frame.
    await waitFor(() => Buffer.concat(got).length >= 8);
    expect(Buffer.concat(got).subarray(0, 4).toString()).toBe('SAIL');
  });

  it.each([
    { name: 'garbage', bytes: Buffer.from('GET / HTTP/1.1\r\n\r\n') },
    { name: 'an oversized frame', bytes: rawFrame(0x5341494c, 1024 * 1024, 'xxxx') },
    { name: 'a truncated frame, then FIN', bytes: FRAME.subarray(0, 10), end: true },
  ])('closes an inbound connection whose client sends $name', async ({ bytes, end }) => {
    let appConnections = 0;
    const app = await tcpServer(closers, s => {
      appConnections++;
      s.pipe(s);
    });
    const b = await inboundSidecar(app);
    const c = tlsClientOfA(b.port, [PEER_EXCHANGE_ALPN, ...ISTIO_ALPN]);
    await new Promise<void>((resolve, reject) =>
      c.once('secureConnect', resolve).once('error', reject),
    );
    expect(c.alpnProtocol).toBe(PEER_EXCHANGE_ALPN);
    const received = readAll(c);
    if (end) c.end(bytes);
    else c.write(bytes);
    expect((await received).length).toBe(0);
    await waitFor(() => b.telemetry.closed.length === 1);
    expect(b.telemetry.closed[0]).toMatchObject({ responseFlags: 'DPE', receivedBytes: 0 });
    // The certificate still names the client.
    expect(b.telemetry.closed[0]!.labels.sourcePrincipal).toBe(SPIFFE_A);
    expect(appConnections).toBe(0);
  });

  it('answers a hand-made client frame with its own, then proxies', async () => {
    const app = await tcpServer(closers, s => s.pipe(s));
    const b = await inboundSidecar(app);
    const c = tlsClientOfA(b.port, [PEER_EXCHANGE_ALPN, 'istio']);
    c.on('error', () => undefined);
    const meta = { workload: 'vm-x', namespace: 'ns-x', app: 'x', version: 'v9', principal: '' };
    const value = Buffer.from(JSON.stringify(meta)).toString('base64url');
    // The frame and the first application bytes in one write.
    c.write(Buffer.concat([encodePeerExchangeFrame(value), Buffer.from('abc')]));
    // B's frame, then the application's echo of `abc`.
    let all = Buffer.alloc(0);
    c.on('data', (d: Buffer) => (all = Buffer.concat([all, d])));
    const r = await waitFor(() => {
      const parsed = parsePeerExchangeFrame(all);
      expect(parsed.kind).not.toBe('invalid');
      return parsed.kind === 'frame' && all.length >= parsed.frameBytes + 3 ? parsed : undefined;
    });
    expect(b.telemetry.labels.decodePeerMetadata(r.payload)).toMatchObject({
      workload: 'vm-b',
      principal: SPIFFE_B,
    });
    expect(all.subarray(r.frameBytes).toString()).toBe('abc');
    c.end();
    await waitFor(() => b.telemetry.closed.length === 1);
    expect(b.telemetry.closed[0]!.labels).toMatchObject({
      sourceWorkload: 'vm-x',
      sourceWorkloadNamespace: 'default', // the certificate's namespace wins over the frame's
      sourceApp: 'x',
      sourceVersion: 'v9',
      sourcePrincipal: SPIFFE_A,
    });
  });
});
