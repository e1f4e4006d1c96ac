import * as net from 'node:net';
import { LogCapture } from '../../test/helpers/log-capture';
import { waitFor } from '../../test/helpers/wait-for';
import { BLACKHOLE_CLUSTER, type TcpProxyHandler } from '../model';
import type { DownstreamContext } from '../types';
import { TcpProxy } from './tcp-proxy';
import { chain, listener, RecordingTelemetry, tcpHandler, TestClusters } from './testing';

const closers: (() => unknown)[] = [];
afterEach(async () => {
  while (closers.length) await closers.pop()!();
});

async function server(onConnection: (s: net.Socket) => void): Promise<number> {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer({ allowHalfOpen: true }, s => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
    onConnection(s);
  });
  await new Promise<void>(resolve => srv.listen(0, '127.0.0.1', resolve));
  closers.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise(resolve => srv.close(resolve));
  });
  return (srv.address() as net.AddressInfo).port;
}

/** A connected pair: `client` is ours, `accepted` goes to the proxy. */
async function socketPair(): Promise<{ client: net.Socket; accepted: net.Socket }> {
  let onAccept!: (s: net.Socket) => void;
  const accepted = new Promise<net.Socket>(resolve => (onAccept = resolve));
  const port = await server(s => onAccept(s));
  const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  client.on('error', () => undefined);
  closers.push(() => client.destroy());
  return { client, accepted: await accepted };
}

function ended(s: net.Socket): Promise<void> {
  return new Promise(resolve => {
    if (s.readableEnded || s.destroyed) return resolve();
    s.once('end', () => resolve());
    s.once('close', () => resolve());
    s.resume();
  });
}

function setup() {
  const clusters = new TestClusters();
  const telemetry = new RecordingTelemetry();
  const proxy = new TcpProxy({ logger: new LogCapture('debug').logger, clusters, telemetry });
  closers.push(() => clusters.close());
  return { clusters, telemetry, proxy };
}

function ctx(
  handler: TcpProxyHandler,
  direction: 'inbound' | 'outbound' = 'outbound',
): DownstreamContext {
  const c = chain('c', {}, handler);
  return {
    listener: listener('l', { address: '0.0.0.0', port: 9000 }, [c], { direction }),
    chain: c,
    direction,
    remoteAddress: '127.0.0.1',
    remotePort: 40000,
    originalDst: { address: '10.0.0.5', port: 9000 },
    connectionSecurity: 'none',
  };
}

describe('TcpProxy', () => {
  it.each([
    {
      name: 'closes with NC when the cluster does not exist',
      setupCluster: () => undefined,
      flag: 'NC',
    },
    {
      name: 'closes with UH at the BlackHoleCluster without connecting',
      cluster: BLACKHOLE_CLUSTER,
      setupCluster: (c: TestClusters, port: number) =>
        c.set(BLACKHOLE_CLUSTER, [{ address: '127.0.0.1', port }]),
      flag: 'UH',
    },
    {
      name: 'closes with UO when the connections breaker is full',
      setupCluster: (c: TestClusters, port: number) =>
        c.set('c', [{ address: '127.0.0.1', port }], 0),
      flag: 'UO',
    },
  ])('$name', async ({ cluster, setupCluster, flag }) => {
    const upstreamConnections: net.Socket[] = [];
    const port = await server(s => upstreamConnections.push(s));
    const { clusters, telemetry, proxy } = setup();
    setupCluster(clusters, port);
    const { client, accepted } = await socketPair();
    const handler = tcpHandler(cluster ?? 'c');
    proxy.handle(accepted, handler, ctx(handler));
    await ended(client);
    await waitFor(() => telemetry.closed.length === 1);
    expect(telemetry.closed[0]!.responseFlags).toBe(flag);
    expect(telemetry.opened).toHaveLength(1);
    expect(clusters.started).toEqual([]);
    expect(upstreamConnections).toHaveLength(0);
    expect(proxy.active).toBe(0);
  });

  it('closes with UF when the upstream refuses, and releases what it took', async () => {
    const refused = await server(() => undefined);
    await closers.pop()!(); // close that server again: its port now refuses
    const { clusters, telemetry, proxy } = setup();
    clusters.set('c', [{ address: '127.0.0.1', port: refused }], 1);
    const { client, accepted } = await socketPair();
    const handler = tcpHandler('c');
    proxy.handle(accepted, handler, ctx(handler));
    await ended(client);
    await waitFor(() => telemetry.closed.length === 1);
    expect(telemetry.closed[0]).toMatchObject({
      responseFlags: 'UF',
      sentBytes: 0,
      receivedBytes: 0,
    });
    expect(clusters.finished).toEqual([
      { cluster: 'c', host: `127.0.0.1:${refused}`, outcome: 'connectFailure' },
    ]);
    expect(clusters.inUse.get('c')).toBe(0);
  });

  it('closes both sides after the idle timeout', async () => {
    let upstream: net.Socket | undefined;
    const port = await server(s => (upstream = s));
    const { clusters, telemetry, proxy } = setup();
    clusters.set('c', [{ address: '127.0.0.1', port }]);
    const { client, accepted } = await socketPair();
    const handler = tcpHandler('c', 100);
    const started = Date.now();
    proxy.handle(accepted, handler, ctx(handler));
    await ended(client);
    expect(Date.now() - started).toBeGreaterThanOrEqual(90);
    await waitFor(() => upstream?.destroyed || upstream?.readableEnded);
    await waitFor(() => telemetry.closed.length === 1);
  });

  it('follows the weights, skipping a zero-weight cluster', async () => {
    const port = await server(s => s.end('from b'));
    const { clusters, telemetry, proxy } = setup();
    clusters.set('b', [{ address: '127.0.0.1', port }]);
    const handler = tcpHandler([
      { name: 'a', weight: 0 },
      { name: 'b', weight: 3 },
    ]);
    for (let i = 0; i < 5; i++) {
      const { client, accepted } = await socketPair();
      proxy.handle(accepted, handler, ctx(handler));
      await ended(client);
      // The upstream half-closed; the connection lasts until the client half-closes too.
      client.end();
    }
    await waitFor(() => telemetry.closed.length === 5);
    expect(new Set(telemetry.closed.map(r => r.upstreamCluster))).toEqual(new Set(['b']));
  });

  it('labels inbound connections as reported by the destination', async () => {
    const port = await server(s => s.end());
    const { clusters, telemetry, proxy } = setup();
    clusters.set('inbound|9000||', [{ address: '127.0.0.1', port }]);
    const { client, accepted } = await socketPair();
    const handler = tcpHandler('inbound|9000||');
    proxy.handle(accepted, handler, ctx(handler, 'inbound'));
    client.end();
    await waitFor(() => telemetry.closed.length === 1);
    expect(telemetry.closed[0]!.labels.reporter).toBe('destination');
  });
});
