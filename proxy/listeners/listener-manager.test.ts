import * as crypto from 'node:crypto';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { LogCapture } from '../../test/helpers/log-capture';
import { TestCa } from '../../test/helpers/test-ca';
import { makeTmpDir } from '../../test/helpers/tmp-dir';
import { waitFor } from '../../test/helpers/wait-for';
import { startWorkloadTls } from '../../test/helpers/workload-identity';
import type { FilterChain, Listener, ProxyConfig, SocketAddress } from '../model';
import { PASSTHROUGH_CLUSTER } from '../model';
import { closeFd, isNativeAddonAvailable, transparentListen } from '../../common/native';
import type { TrafficOptions } from '../options';
import { compileListener } from '../config/compile';
import { TestConfig } from '../http/testing';
import sample from '../testdata/sidecar-sample.json';
import type { FileTlsProvider } from '../tls';
import {
  ListenerManager,
  type ListenerManagerOptions,
  planBindings,
  SNIFF_TIMEOUT_MS,
} from './listener-manager';
import {
  chain,
  connect,
  freePort,
  httpHandler,
  ISTIO_ALPN,
  listener,
  MESH_DOWNSTREAM_TLS,
  RecordingHttp,
  readAll,
  RecordingTelemetry,
  tcpHandler,
  tcpServer,
  TestClusters,
} from './testing';

const TD = 'cluster.local';
const SERVER_ID = `spiffe://${TD}/ns/default/sa/server`;
const CLIENT_ID = `spiffe://${TD}/ns/default/sa/client`;

// ---------------------------------------------------------------------------------------------
// Servers and clients

const closers: (() => unknown)[] = [];

afterEach(async () => {
  while (closers.length) await closers.pop()!();
});

/** Echoes every byte and half-closes when the client does. */
const echoServer = () => tcpServer(closers, s => s.pipe(s));

/** Speaks first (`greeting`), then closes. */
const greeterServer = (greeting: string) => tcpServer(closers, s => s.end(greeting));

/** Sends `line` and waits for `expected` to come back. */
async function roundTrip(socket: net.Socket, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const onData = (d: Buffer) => {
      got += d.toString();
      if (got.length >= line.length) {
        socket.off('data', onData);
        resolve(got);
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.write(line);
  });
}

/** Resolves when the proxy closed `socket` (its FIN arrived, or the socket is gone). */
function closed(socket: net.Socket): Promise<void> {
  return new Promise(resolve => {
    if (socket.destroyed || socket.readableEnded) return resolve();
    socket.on('error', () => undefined);
    socket.once('end', () => resolve());
    socket.once('close', () => resolve());
    socket.resume();
  });
}

// ---------------------------------------------------------------------------------------------
// Configuration and the manager

const makeConfig = (listeners: Listener[]): ProxyConfig => TestConfig.make([], [], listeners);

const EXPLICIT: TrafficOptions = {
  mode: 'explicit',
  outboundBindHost: '127.0.0.1',
  inboundBindHost: '127.0.0.1',
};

/** An outbound listener `0.0.0.0_PORT` as pilot sends it (reached by hand-off, not bound). */
function outboundListener(port: number, chains: FilterChain[]): Listener {
  return listener(`0.0.0.0_${port}`, { address: '0.0.0.0', port }, chains, {
    bindToPort: false,
  });
}

const virtualOutbound = (defaultChain: FilterChain): Listener =>
  listener('virtualOutbound', { address: '0.0.0.0', port: 15001 }, [], {
    useOriginalDst: true,
    defaultFilterChain: defaultChain,
  });

function virtualInbound(chains: FilterChain[]): Listener {
  return listener('virtualInbound', { address: '0.0.0.0', port: 15006 }, chains, {
    direction: 'inbound',
  });
}

/** virtualInbound's chains for `port` in PERMISSIVE mode (as in testdata/sidecar-sample.json). */
function permissiveChains(port: number, strict = false): FilterChain[] {
  const mtls = chain(
    `inbound|${port}||-mtls`,
    { destinationPort: port, transportProtocol: 'tls', applicationProtocols: ISTIO_ALPN },
    httpHandler(`inbound|${port}||`),
    MESH_DOWNSTREAM_TLS,
  );
  const plain = chain(
    `inbound|${port}||`,
    { destinationPort: port },
    httpHandler(`inbound|${port}||`),
  );
  return strict ? [mtls] : [mtls, plain];
}

interface Harness {
  manager: ListenerManager;
  holder: { current: ProxyConfig };
  clusters: TestClusters;
  telemetry: RecordingTelemetry;
  http: RecordingHttp;
  logs: LogCapture;
  /** Pushes `config` like the xDS client does: current first, then update. */
  push(config: ProxyConfig): Promise<void>;
}

const afterAllClosers: (() => unknown)[] = [];
afterAll(async () => {
  for (const c of afterAllClosers) await c();
});

let tlsProvider: FileTlsProvider;
let ca: TestCa;
let clientId: { certChainPem: string; keyPem: string };

beforeAll(async () => {
  ca = await TestCa.create({ trustDomain: TD });
  const now = Date.now();
  clientId = await ca.issueWorkloadCert({
    node: 'vm-2',
    spiffeId: CLIENT_ID,
    notBeforeMs: now - 60_000,
    notAfterMs: now + 3600_000,
  });
  const tmp = makeTmpDir();
  ({ provider: tlsProvider } = await startWorkloadTls(ca, tmp.dir, SERVER_ID));
  afterAllClosers.push(async () => {
    await tlsProvider.close();
    tmp.cleanup();
  });
});

async function harness(
  config: ProxyConfig,
  over: Partial<ListenerManagerOptions> = {},
): Promise<Harness> {
  const logs = new LogCapture('debug');
  const holder = { current: config };
  const clusters = new TestClusters();
  const telemetry = new RecordingTelemetry();
  const http = new RecordingHttp();
  const manager = new ListenerManager({
    logger: logs.logger,
    config: holder,
    tls: tlsProvider,
    clusters,
    http,
    telemetry,
    traffic: EXPLICIT,
    drainMs: 300,
    ...over,
  });
  closers.push(async () => {
    clusters.close();
    await manager.close();
  });
  await manager.update(config);
  return {
    manager,
    holder,
    clusters,
    telemetry,
    http,
    logs,
    push: async next => {
      holder.current = next;
      await manager.update(next);
    },
  };
}

function address(h: Harness, name: string): SocketAddress {
  const a = h.manager.addresses().get(name);
  if (!a) throw new Error(`listener ${name} is not bound`);
  return a;
}

/** A TLS client as an Istio sidecar connects to a peer: mesh certificate, Istio ALPN. */
async function meshClient(
  port: number,
  opts: { cert?: boolean; alpn?: string[] } = {},
): Promise<tls.TLSSocket> {
  const c = tls.connect({
    port,
    host: '127.0.0.1',
    ca: ca.rootPem,
    ...(opts.cert === false ? {} : { cert: clientId.certChainPem, key: clientId.keyPem }),
    ALPNProtocols: opts.alpn ?? ISTIO_ALPN,
    servername: 'outbound_.9080_._.reviews.default.svc.cluster.local',
    // The server's certificate carries a SPIFFE URI, not this host name.
    checkServerIdentity: () => undefined,
  });
  closers.push(() => c.destroy());
  return c;
}

const REQUEST = 'GET / HTTP/1.1\r\nHost: reviews\r\n\r\n';

/** A listener of testdata/sidecar-sample.json (what pilot sends), compiled. */
function sampleListener(name: string): Listener {
  const json = sample.Listener.find(l => l.name === name);
  if (!json) throw new Error(`sidecar-sample.json has no listener ${name}`);
  return compileListener(json as Record<string, unknown>);
}

/** `l` with every chain's destination port `from` changed to `to` (explicit mode binds it). */
function withPort(l: Listener, from: number, to: number): Listener {
  return {
    ...l,
    filterChains: l.filterChains.map(c =>
      c.match.destinationPort === from ? { ...c, match: { ...c.match, destinationPort: to } } : c,
    ),
  };
}

// ---------------------------------------------------------------------------------------------

describe('planBindings', () => {
  const vo = virtualOutbound(chain('passthrough', {}, tcpHandler(PASSTHROUGH_CLUSTER)));
  const vi = virtualInbound([...permissiveChains(9080), ...permissiveChains(9090)]);
  const out = outboundListener(9080, [chain('9080')]);
  const vip = listener('10.96.0.5_5432', { address: '10.96.0.5', port: 5432 }, [chain('db')], {
    bindToPort: false,
  });
  const gateway = listener('0.0.0.0_8443', { address: '0.0.0.0', port: 8443 }, [chain('gw')], {
    direction: 'unspecified',
  });
  const config = makeConfig([vo, vi, out, vip, gateway]);

  it.each([
    {
      name: 'capture mode binds every bound listener at its own address',
      traffic: { mode: 'capture', outboundBindHost: '127.0.0.1' } as TrafficOptions,
      nodeIp: undefined,
      want: [
        ['virtualOutbound', '0.0.0.0', 15001, true],
        ['virtualInbound', '0.0.0.0', 15006, true],
        ['0.0.0.0_8443', '0.0.0.0', 8443, true],
      ],
    },
    {
      name: 'capture mode moves the capture listeners to the overrides',
      traffic: {
        mode: 'capture',
        outboundBindHost: '127.0.0.1',
        outboundListen: '127.0.0.1:25001',
        inboundListen: '[::1]:25006',
      } as TrafficOptions,
      nodeIp: undefined,
      want: [
        ['virtualOutbound', '127.0.0.1', 25001, true],
        ['virtualInbound', '::1', 25006, true],
        ['0.0.0.0_8443', '0.0.0.0', 8443, true],
      ],
    },
    {
      name: 'capture mode with an inherited TPROXY socket: virtualInbound listens on it',
      traffic: { mode: 'capture', outboundBindHost: '127.0.0.1', inboundFd: 3 } as TrafficOptions,
      nodeIp: undefined,
      want: [
        ['virtualOutbound', '0.0.0.0', 15001, true, undefined],
        ['virtualInbound', '0.0.0.0', 15006, true, 3],
        ['0.0.0.0_8443', '0.0.0.0', 8443, true, undefined],
      ],
    },
    {
      name: 'explicit mode binds service ports and inbound chain ports, no capture listeners',
      traffic: { mode: 'explicit', outboundBindHost: '127.0.0.1' } as TrafficOptions,
      nodeIp: '10.0.0.1',
      want: [
        ['virtualInbound_9080', '10.0.0.1', 9080, false],
        ['virtualInbound_9090', '10.0.0.1', 9090, false],
        ['0.0.0.0_9080', '127.0.0.1', 9080, false],
        ['0.0.0.0_8443', '0.0.0.0', 8443, false],
      ],
    },
    {
      name: 'explicit mode prefers inboundBindHost to the node IP',
      traffic: { ...EXPLICIT, inboundBindHost: '10.0.0.9' },
      nodeIp: '10.0.0.1',
      want: [
        ['virtualInbound_9080', '10.0.0.9', 9080, false],
        ['virtualInbound_9090', '10.0.0.9', 9090, false],
        ['0.0.0.0_9080', '127.0.0.1', 9080, false],
        ['0.0.0.0_8443', '0.0.0.0', 8443, false],
      ],
    },
    {
      name: 'explicit mode without an inbound host binds no inbound ports',
      traffic: { mode: 'explicit', outboundBindHost: '127.0.0.1' } as TrafficOptions,
      nodeIp: undefined,
      want: [
        ['0.0.0.0_9080', '127.0.0.1', 9080, false],
        ['0.0.0.0_8443', '0.0.0.0', 8443, false],
      ],
    },
  ])('$name', ({ traffic, nodeIp, want }) => {
    expect(
      planBindings(config, traffic, nodeIp).map(p => {
        const row: unknown[] = [p.name, p.host, p.port, p.capture];
        return want[0]!.length > 4 ? [...row, p.fd] : row;
      }),
    ).toEqual(want);
  });
});

describe('ListenerManager, explicit mode TCP proxy', () => {
  it('proxies 10 MB byte-exact both ways with half-close, and records the connection', async () => {
    const echo = await echoServer();
    const port = await freePort();
    const h = await harness(
      makeConfig([outboundListener(port, [chain('echo', {}, tcpHandler('outbound|9000||echo'))])]),
    );
    h.clusters.set('outbound|9000||echo', [{ address: '127.0.0.1', port: echo }]);
    expect(address(h, `0.0.0.0_${port}`)).toEqual({ address: '127.0.0.1', port });

    const data = crypto.randomBytes(10 * 1024 * 1024);
    const c = await connect(closers, port);
    const received = readAll(c);
    c.end(data);
    const got = await received;
    expect(got.length).toBe(data.length);
    expect(got.equals(data)).toBe(true);

    await waitFor(() => h.telemetry.closed.length === 1, { what: 'tcpClosed' });
    expect(h.telemetry.opened).toHaveLength(1);
    expect(h.telemetry.closed[0]).toMatchObject({
      sentBytes: data.length,
      receivedBytes: data.length,
      responseFlags: '-',
      upstreamCluster: 'outbound|9000||echo',
      upstreamHost: `127.0.0.1:${echo}`,
    });
    expect(h.telemetry.closed[0]!.labels.reporter).toBe('source');
    expect(h.clusters.finished).toEqual([
      { cluster: 'outbound|9000||echo', host: `127.0.0.1:${echo}`, outcome: 'success' },
    ]);
    expect(h.clusters.inUse.get('outbound|9000||echo')).toBe(0);
  });

  it('keeps the client-to-server direction open after the server half-closes', async () => {
    let serverGot = 0;
    let serverEnded!: () => void;
    const serverDone = new Promise<void>(resolve => (serverEnded = resolve));
    const upstream = await tcpServer(closers, s => {
      s.end('hello');
      s.on('data', (d: Buffer) => (serverGot += d.length));
      s.on('end', () => serverEnded());
    });
    const port = await freePort();
    const h = await harness(
      makeConfig([outboundListener(port, [chain('c', {}, tcpHandler('c'))])]),
    );
    h.clusters.set('c', [{ address: '127.0.0.1', port: upstream }]);
    const c = await connect(closers, port);
    const greeting = await new Promise<string>(resolve => {
      let got = '';
      c.on('data', (d: Buffer) => (got += d.toString()));
      c.once('end', () => resolve(got));
    });
    expect(greeting).toBe('hello');
    const payload = crypto.randomBytes(1024 * 1024);
    c.end(payload);
    await serverDone;
    expect(serverGot).toBe(payload.length);
    await closed(c);
  });

  it('closes the connection when the cluster has no host, and records UH', async () => {
    const port = await freePort();
    const h = await harness(
      makeConfig([outboundListener(port, [chain('c', {}, tcpHandler('empty'))])]),
    );
    h.clusters.set('empty', []);
    const c = await connect(closers, port);
    expect((await readAll(c)).length).toBe(0);
    await waitFor(() => h.telemetry.closed.length === 1);
    expect(h.telemetry.closed[0]!.responseFlags).toBe('UH');
  });

  it('applies a chain change to new connections only', async () => {
    const echo = await echoServer();
    const greeter = await greeterServer('greetings');
    const port = await freePort();
    const before = makeConfig([outboundListener(port, [chain('c', {}, tcpHandler('echo'))])]);
    const h = await harness(before);
    h.clusters.set('echo', [{ address: '127.0.0.1', port: echo }]);
    h.clusters.set('greeter', [{ address: '127.0.0.1', port: greeter }]);
    const old = await connect(closers, port);
    expect(await roundTrip(old, 'ping')).toBe('ping');

    await h.push(makeConfig([outboundListener(port, [chain('c', {}, tcpHandler('greeter'))])]));
    expect((await readAll(await connect(closers, port))).toString()).toBe('greetings');
    expect(await roundTrip(old, 'still echo')).toBe('still echo');
  });
});

describe('ListenerManager, explicit mode inbound TLS', () => {
  it('PERMISSIVE: the same port serves mTLS and plaintext, handing HTTP chains over', async () => {
    const port = await freePort();
    const vo = virtualOutbound(chain('passthrough', {}, tcpHandler(PASSTHROUGH_CLUSTER)));
    const vi = virtualInbound(permissiveChains(port));
    const h = await harness(makeConfig([vo, vi]));
    // Capture listeners are not bound in explicit mode; the inbound chain port is.
    expect([...h.manager.addresses().keys()]).toEqual([`virtualInbound_${port}`]);

    const m = await meshClient(port);
    const mtlsResponse = readAll(m);
    m.write(REQUEST);
    expect((await mtlsResponse).toString()).toContain(`chain=inbound|${port}||-mtls`);

    const p = await connect(closers, port);
    const plainResponse = readAll(p);
    p.write(REQUEST);
    expect((await plainResponse).toString()).toContain(`chain=inbound|${port}||`);
    expect((await plainResponse).toString()).not.toContain('-mtls');

    expect(h.http.handed).toHaveLength(2);
    const [viaTls, viaPlain] = h.http.handed;
    expect(viaTls!.socket).toBeInstanceOf(tls.TLSSocket);
    expect(viaTls!.handler).toBe(vi.filterChains[0]!.handler);
    expect(viaTls!.ctx).toMatchObject({
      listener: vi,
      chain: vi.filterChains[0],
      direction: 'inbound',
      remoteAddress: '127.0.0.1',
      originalDst: { address: '127.0.0.1', port },
      connectionSecurity: 'mutual_tls',
      tls: {
        peer: { spiffeId: CLIENT_ID },
        sni: 'outbound_.9080_._.reviews.default.svc.cluster.local',
      },
    });
    expect(viaTls!.data).toBe(REQUEST);
    expect(viaPlain!.ctx).toMatchObject({
      chain: vi.filterChains[1],
      connectionSecurity: 'none',
      originalDst: { address: '127.0.0.1', port },
    });
    expect(viaPlain!.ctx.tls).toBeUndefined();
    // The sniffed bytes were given back: the handler saw the whole request.
    expect(viaPlain!.data).toBe(REQUEST);
  });

  it('PERMISSIVE with the virtualInbound pilot sends (sidecar-sample.json, compiled)', async () => {
    const port = await freePort();
    const vi = withPort(sampleListener('virtualInbound'), 9080, port);
    const h = await harness(makeConfig([sampleListener('virtualOutbound'), vi]));
    expect([...h.manager.addresses().keys()]).toEqual([`virtualInbound_${port}`]);

    const m = await meshClient(port);
    const viaTls = readAll(m);
    m.write(REQUEST);
    expect((await viaTls).toString()).toContain('chain=inbound|9080||-mtls');
    const p = await connect(closers, port);
    const viaPlain = readAll(p);
    p.write(REQUEST);
    expect((await viaPlain).toString()).toMatch(/chain=inbound\|9080\|\|$/);
    expect(h.http.handed.map(x => [x.ctx.chain.name, x.ctx.connectionSecurity])).toEqual([
      ['inbound|9080||-mtls', 'mutual_tls'],
      ['inbound|9080||', 'none'],
    ]);
  });

  it('STRICT: refuses plaintext, and TLS without a trusted client certificate', async () => {
    const port = await freePort();
    const h = await harness(makeConfig([virtualInbound(permissiveChains(port, true))]));

    const p = await connect(closers, port);
    const plain = readAll(p);
    p.write(REQUEST);
    expect((await plain).length).toBe(0);
    expect(h.manager.counters.noFilterChain).toBe(1);

    const noCert = await meshClient(port, { cert: false });
    noCert.on('error', () => undefined);
    noCert.write(REQUEST);
    expect((await readAll(noCert)).length).toBe(0);
    await waitFor(() => h.manager.counters.tlsFailures + h.manager.counters.peerRejected === 1);

    const untrusted = await ca.issueWorkloadCert({
      node: 'evil',
      spiffeId: CLIENT_ID,
      notBeforeMs: Date.now() - 60_000,
      notAfterMs: Date.now() + 3600_000,
      signer: 'other',
    });
    const bad = tls.connect({
      port,
      host: '127.0.0.1',
      ca: ca.rootPem,
      cert: untrusted.certChainPem,
      key: untrusted.keyPem,
      ALPNProtocols: ISTIO_ALPN,
      checkServerIdentity: () => undefined,
    });
    closers.push(() => bad.destroy());
    bad.on('error', () => undefined);
    bad.write(REQUEST);
    expect((await readAll(bad)).length).toBe(0);
    await waitFor(() => h.manager.counters.tlsFailures + h.manager.counters.peerRejected === 2);
    expect(h.http.handed).toHaveLength(0);
  });

  it('matches a server-first connection as raw_buffer after the sniff timeout', async () => {
    const greeter = await greeterServer('220 smtp ready');
    const port = await freePort();
    const l = outboundListener(port, [
      chain('tls', { transportProtocol: 'tls' }, tcpHandler('nowhere')),
      chain('raw', { transportProtocol: 'raw_buffer' }, tcpHandler('greeter')),
    ]);
    expect(l.inspectTls).toBe(true);
    const h = await harness(makeConfig([l]));
    h.clusters.set('greeter', [{ address: '127.0.0.1', port: greeter }]);
    const started = Date.now();
    const c = await connect(closers, port);
    expect((await readAll(c)).toString()).toBe('220 smtp ready');
    expect(Date.now() - started).toBeGreaterThanOrEqual(SNIFF_TIMEOUT_MS - 50);
  });
});

describe('ListenerManager, capture mode', () => {
  it('hands off by original destination port, passes unknown ports through, closes loops', async () => {
    const echo = await echoServer();
    let nextDst: SocketAddress | undefined;
    const vo = virtualOutbound(chain('passthrough', {}, tcpHandler(PASSTHROUGH_CLUSTER)));
    const out9080 = outboundListener(9080, [chain('9080', {}, tcpHandler('outbound|9080||echo'))]);
    const h = await harness(makeConfig([vo, out9080]), {
      traffic: { mode: 'capture', outboundListen: '127.0.0.1:0', outboundBindHost: '127.0.0.1' },
      originalDst: () => nextDst,
    });
    h.clusters.set('outbound|9080||echo', [{ address: '127.0.0.1', port: echo }]);
    h.clusters.set(PASSTHROUGH_CLUSTER, 'originalDst');
    const vport = address(h, 'virtualOutbound').port;
    expect([...h.manager.addresses().keys()]).toEqual(['virtualOutbound']);

    nextDst = { address: '10.0.0.5', port: 9080 };
    const a = await connect(closers, vport);
    expect(await roundTrip(a, 'to 9080')).toBe('to 9080');
    a.end();
    await waitFor(() => h.telemetry.closed.length === 1);
    expect(h.telemetry.closed[0]!.upstreamCluster).toBe('outbound|9080||echo');

    nextDst = { address: '127.0.0.1', port: echo };
    const b = await connect(closers, vport);
    expect(await roundTrip(b, 'passthrough')).toBe('passthrough');
    b.end();
    await waitFor(() => h.telemetry.closed.length === 2);
    expect(h.telemetry.closed[1]).toMatchObject({
      upstreamCluster: PASSTHROUGH_CLUSTER,
      upstreamHost: `127.0.0.1:${echo}`,
    });

    // Not redirected: the original destination is the listener itself.
    nextDst = undefined;
    const c = await connect(closers, vport);
    await closed(c);
    expect(h.manager.counters.loops).toBe(1);
  });

  it('routes by original destination with the listeners pilot sends (sidecar-sample.json)', async () => {
    const echo = await echoServer();
    let nextDst: SocketAddress | undefined;
    const h = await harness(
      makeConfig([sampleListener('virtualOutbound'), sampleListener('0.0.0.0_5432')]),
      {
        traffic: { mode: 'capture', outboundListen: '127.0.0.1:0', outboundBindHost: '127.0.0.1' },
        originalDst: () => nextDst,
      },
    );
    const db = 'outbound|5432||db.default.svc.cluster.local';
    h.clusters.set(db, [{ address: '127.0.0.1', port: echo }]);
    h.clusters.set(PASSTHROUGH_CLUSTER, 'originalDst');
    const vport = address(h, 'virtualOutbound').port;

    // The db service's VIP: 0.0.0.0_5432's chain for 10.96.0.5/32.
    nextDst = { address: '10.96.0.5', port: 5432 };
    const a = await connect(closers, vport);
    expect(await roundTrip(a, 'select 1')).toBe('select 1');
    a.end();
    await waitFor(() => h.telemetry.closed.length === 1);
    expect(h.telemetry.closed[0]!.upstreamCluster).toBe(db);

    // Port 5432 at another address: 0.0.0.0_5432's default chain passes it through to where it
    // was going (whether anything listens on 127.0.0.1:5432 here does not matter).
    nextDst = { address: '127.0.0.1', port: 5432 };
    const b = await connect(closers, vport);
    await waitFor(() => h.clusters.started.includes(`${PASSTHROUGH_CLUSTER} 127.0.0.1:5432`));
    b.destroy();

    // No listener for the port: virtualOutbound's default chain, PassthroughCluster.
    nextDst = { address: '127.0.0.1', port: echo };
    const c = await connect(closers, vport);
    expect(await roundTrip(c, 'direct')).toBe('direct');
    c.end();
    await waitFor(() => h.telemetry.closed.length === 3);
    expect(h.clusters.started).toEqual([
      `${db} 127.0.0.1:${echo}`,
      `${PASSTHROUGH_CLUSTER} 127.0.0.1:5432`,
      `${PASSTHROUGH_CLUSTER} 127.0.0.1:${echo}`,
    ]);
  });

  (isNativeAddonAvailable() ? it : it.skip)(
    'closes a connection that reached the capture listener without a redirect (native addon)',
    async () => {
      const vo = virtualOutbound(chain('passthrough', {}, tcpHandler(PASSTHROUGH_CLUSTER)));
      const h = await harness(makeConfig([vo]), {
        traffic: { mode: 'capture', outboundListen: '127.0.0.1:0', outboundBindHost: '127.0.0.1' },
      });
      h.clusters.set(PASSTHROUGH_CLUSTER, 'originalDst');
      const c = await connect(closers, address(h, 'virtualOutbound').port);
      await closed(c);
      expect(h.manager.counters.loops).toBe(1);
    },
  );
});

const IS_ROOT = process.getuid?.() === 0;

(isNativeAddonAvailable() ? it : it.skip)(
  'names traffic.inboundFd when the inherited socket is not there (proxy run by hand)',
  async () => {
    const vi = virtualInbound(permissiveChains(9080));
    const h = await harness(makeConfig([vi]), {
      traffic: { mode: 'capture', outboundBindHost: '127.0.0.1', inboundFd: 987654 },
    });
    expect(h.manager.addresses().size).toBe(0);
    expect(h.manager.counters.bindFailures).toBe(1);
    const warn = h.logs.find('Failed to bind listener; retrying at the next update', 'warn');
    expect(JSON.stringify(warn[0])).toContain(
      'traffic.inboundFd 987654 is not an open file descriptor',
    );
  },
);

(isNativeAddonAvailable() && IS_ROOT ? describe : describe.skip)(
  'ListenerManager, capture mode with an inherited TPROXY socket (root)',
  () => {
    it('listens on a duplicate of it, so a drained virtualInbound binds it again', async () => {
      const fd = transparentListen('127.0.0.1', 0);
      closers.push(async () => closeFd(fd));
      const vi = virtualInbound(permissiveChains(9080));
      const vo = virtualOutbound(chain('passthrough', {}, tcpHandler(PASSTHROUGH_CLUSTER)));
      const h = await harness(makeConfig([vi, vo]), {
        traffic: {
          mode: 'capture',
          outboundListen: '127.0.0.1:0',
          outboundBindHost: '127.0.0.1',
          inboundFd: fd,
        },
      });
      const port = address(h, 'virtualInbound').port;
      expect(address(h, 'virtualInbound').address).toBe('127.0.0.1');
      // A connection to the socket's own port (not TPROXYed from elsewhere) would loop: closed.
      await closed(await connect(closers, port));
      expect(h.manager.counters.loops).toBe(1);

      // virtualInbound removed (drained: its duplicate closed), then back: the same socket.
      await h.push(makeConfig([vo]));
      expect(h.manager.addresses().has('virtualInbound')).toBe(false);
      await h.push(makeConfig([vi, vo]));
      expect(address(h, 'virtualInbound').port).toBe(port);
      await closed(await connect(closers, port));
      expect(h.manager.counters.loops).toBe(2);
    });
  },
);

describe('ListenerManager updates', () => {
  it('drains a removed listener, keeps an unchanged one, binds a new one', async () => {
    const echo = await echoServer();
    const [p1, p2, p3] = [await freePort(), await freePort(), await freePort()];
    const l1 = outboundListener(p1, [chain('c', {}, tcpHandler('echo'))]);
    const l2 = outboundListener(p2, [chain('c', {}, tcpHandler('echo'))]);
    const l3 = outboundListener(p3, [chain('c', {}, tcpHandler('echo'))]);
    const h = await harness(makeConfig([l1, l2]));
    h.clusters.set('echo', [{ address: '127.0.0.1', port: echo }]);
    const onRemoved = await connect(closers, p1);
    const onKept = await connect(closers, p2);
    expect(await roundTrip(onRemoved, 'a')).toBe('a');
    expect(await roundTrip(onKept, 'b')).toBe('b');

    const t0 = Date.now();
    // A push that rebuilds l2 as a new object with the same address keeps its socket.
    await h.push(makeConfig([{ ...l2 }, l3]));
    expect([...h.manager.addresses().keys()].sort()).toEqual(
      [`0.0.0.0_${p2}`, `0.0.0.0_${p3}`].sort(),
    );
    // The removed listener accepts no more, but its connection works while draining.
    await expect(connect(closers, p1)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    expect(await roundTrip(onRemoved, 'c')).toBe('c');
    expect(await roundTrip(await connect(closers, p3), 'new')).toBe('new');

    await closed(onRemoved);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect(await roundTrip(onKept, 'still here')).toBe('still here');
    expect(h.logs.find('Listener removed; draining its connections', 'info')).toHaveLength(1);
  });

  it('logs a port in use at warn and binds it at the next update', async () => {
    const blocker = net.createServer();
    await new Promise<void>(resolve => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as net.AddressInfo).port;
    const config = makeConfig([outboundListener(port, [chain('c', {}, tcpHandler('echo'))])]);
    const h = await harness(config);
    expect(h.manager.addresses().size).toBe(0);
    expect(h.manager.counters.bindFailures).toBe(1);
    const warn = h.logs.find('Failed to bind listener; retrying at the next update', 'warn');
    expect(warn[0]).toMatchObject({ port, listener: `0.0.0.0_${port}` });

    await new Promise(resolve => blocker.close(resolve));
    await h.push(config);
    expect(address(h, `0.0.0.0_${port}`)).toEqual({ address: '127.0.0.1', port });
  });

  it('closes: stops accepting and destroys connections left after drainMs', async () => {
    const echo = await echoServer();
    const port = await freePort();
    const h = await harness(
      makeConfig([outboundListener(port, [chain('c', {}, tcpHandler('echo'))])]),
    );
    h.clusters.set('echo', [{ address: '127.0.0.1', port: echo }]);
    const c = await connect(closers, port);
    expect(await roundTrip(c, 'x')).toBe('x');
    await h.manager.close();
    await closed(c);
    expect(h.manager.connectionCount).toBe(0);
    await expect(connect(closers, port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    // Idempotent.
    await h.manager.close();
  });
});
