/**
 * XdsClient against a fake ADS server over real gRPC on loopback: the subscription flow,
 * ACK/NACK, EDS/RDS resubscription, SotW removal, reconnects, the state file, the initial fetch
 * timeout and close. Resources are the real ones pilot sends a sidecar (proxy/testdata).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { FakeClock } from '../../test/helpers/fake-clock';
import { LogCapture } from '../../test/helpers/log-capture';
import { makeTmpDir } from '../../test/helpers/tmp-dir';
import { waitFor } from '../../test/helpers/wait-for';
import type { XdsKind } from '../model';
import { FakeAdsServer } from './fake-ads-server';
import { parseStateSnapshot } from './state-file';
import { type XdsClientOptions, type XdsUpdate, XdsClient } from './index';

type Json = Record<string, unknown>;

const NODE_ID = 'sidecar~10.0.0.5~vm-1.default~default.svc.cluster.local';
const clone = <T>(v: T): T => structuredClone(v);
const sample = JSON.parse(
  fs.readFileSync(path.join(__dirname, '..', 'testdata', 'sidecar-sample.json'), 'utf8'),
) as Record<'Cluster' | 'ClusterLoadAssignment' | 'Listener' | 'RouteConfiguration', Json[]>;
const SAMPLE: Record<XdsKind, Json[]> = {
  clusters: sample.Cluster,
  endpoints: sample.ClusterLoadAssignment,
  listeners: sample.Listener,
  routes: sample.RouteConfiguration,
};
const EDS_NAMES = SAMPLE.clusters
  .filter(c => c.type === 'EDS')
  .map(c => String(c.name))
  .sort();
const REVIEWS_V2 = 'outbound|9080|v2|reviews.default.svc.cluster.local';

/** A listener whose only network filter is one no proxy knows (the compiler rejects it). */
function badListener(): Json {
  const l = clone(SAMPLE.listeners.find(x => x.name === '0.0.0.0_5432')!);
  const chains = l.filterChains as { filters: Json[] }[];
  chains[0]!.filters = [
    {
      name: 'envoy.filters.network.frobnicator',
      typedConfig: {
        '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router',
      },
    },
  ];
  return l;
}

/** The sample's 9090 listener, renamed and pointed at a new route configuration. */
function listenerWithRds(name: string, port: number, rds: string): Json {
  const l = clone(SAMPLE.listeners.find(x => x.name === '0.0.0.0_9090')!);
  const text = JSON.stringify(l)
    .replaceAll('"0.0.0.0_9090"', JSON.stringify(name))
    .replaceAll('"routeConfigName":"9090"', `"routeConfigName":${JSON.stringify(rds)}`)
    .replaceAll('"portValue":9090', `"portValue":${port}`);
  return JSON.parse(text) as Json;
}

function routeNamed(name: string): Json {
  return { ...clone(SAMPLE.routes.find(r => r.name === '9090')!), name };
}

function loadAll(server: FakeAdsServer): void {
  for (const kind of ['clusters', 'endpoints', 'listeners', 'routes'] as const)
    server.set(kind, SAMPLE[kind]);
}

describe('XdsClient', () => {
  let server: FakeAdsServer;
  let tmp: { dir: string; cleanup: () => void };
  const clients: XdsClient[] = [];
  let logs: LogCapture;

  const newClient = (overrides: Partial<XdsClientOptions> = {}) => {
    const c = new XdsClient({
      logger: logs.logger,
      address: server.address,
      nodeId: NODE_ID,
      nodeMetadata: { NAMESPACE: 'default', LABELS: { app: 'web' } },
      credentials: () => grpc.credentials.createInsecure(),
      initialFetchTimeoutMs: 30_000,
      backoff: { initialMs: 20, maxMs: 100 },
      ...overrides,
    });
    clients.push(c);
    return c;
  };

  /** Collects updates from a client. */
  const record = (c: XdsClient) => {
    const updates: XdsUpdate[] = [];
    c.onUpdate(u => updates.push(u));
    return updates;
  };

  beforeEach(async () => {
    logs = new LogCapture('debug');
    tmp = makeTmpDir('sail-xds-client-');
    server = new FakeAdsServer();
    await server.start();
  });

  afterEach(async () => {
    await Promise.all(clients.splice(0).map(c => c.close()));
    await server.stop();
    tmp.cleanup();
  });

  it('subscribes to clusters and listeners, then to their endpoints and routes, and becomes ready', async () => {
    loadAll(server);
    const client = newClient();
    const updates = record(client);
    await client.start();
    await waitFor(() => client.ready, { what: 'the client to be ready' });

    const first = server.requests.filter(r => r.stream === 1);
    expect(first[0]).toMatchObject({
      kind: 'clusters',
      resourceNames: [],
      versionInfo: '',
      responseNonce: '',
      node: {
        id: NODE_ID,
        cluster: 'sail-proxy',
        userAgentName: 'sail-proxy',
        userAgentVersion: expect.stringMatching(/^\d+\.\d+\.\d+/),
        metadata: { fields: { NAMESPACE: { stringValue: 'default' } } },
      },
    });
    expect(first.filter(r => r.node !== undefined)).toHaveLength(1);
    expect(first[1]).toMatchObject({ kind: 'listeners', resourceNames: [] });
    const eds = server.requestsOf('endpoints');
    expect([...eds[0]!.resourceNames].sort()).toEqual(EDS_NAMES);
    expect([...server.requestsOf('routes')[0]!.resourceNames].sort()).toEqual(['9080', '9090']);
    // Every response was ACKed with its version and nonce.
    for (const kind of ['clusters', 'endpoints', 'listeners', 'routes'] as const) {
      const acks = await waitFor(() => {
        const a = server.requestsOf(kind).filter(r => r.responseNonce !== '');
        return a.at(-1)?.versionInfo === server.version(kind) ? a : undefined;
      });
      expect(acks.every(a => a.errorDetail === undefined)).toBe(true);
    }

    const config = client.config;
    expect([...config.clusters.keys()].sort()).toEqual(SAMPLE.clusters.map(c => c.name).sort());
    expect([...config.endpoints.keys()].sort()).toEqual(EDS_NAMES);
    expect([...config.listeners.keys()].sort()).toEqual(SAMPLE.listeners.map(l => l.name).sort());
    expect([...config.routes.keys()].sort()).toEqual(['9080', '9090']);
    expect(config.versions).toEqual({
      clusters: server.version('clusters'),
      endpoints: server.version('endpoints'),
      listeners: server.version('listeners'),
      routes: server.version('routes'),
    });
    expect(updates.length).toBeGreaterThanOrEqual(4);
    expect(updates.every(u => !u.fromCache)).toBe(true);
    expect(updates.at(-1)!.config).toBe(config);
    expect(client.raw.clusters.get(REVIEWS_V2)).toMatchObject({
      resource: { name: REVIEWS_V2, type: 'EDS' },
      version: server.version('clusters'),
      lastUpdated: expect.any(Date),
    });
    expect(client.status()).toMatchObject({
      connected: true,
      ready: true,
      readyReason: expect.stringContaining('received'),
      nacks: 0,
      reconnects: 0,
      lastAck: { clusters: { version: server.version('clusters'), nonce: expect.any(String) } },
    });
    expect(logs.find('xDS client ready', 'info')).toHaveLength(1);
  });

  it('resolves start() without pilot and is not ready until it answers', async () => {
    await server.stop();
    const client = newClient();
    await client.start();
    expect(client.ready).toBe(false);
    expect(client.status()).toMatchObject({ connected: false, readyReason: 'waiting for pilot' });
    await waitFor(() => client.status().reconnects >= 2, { what: 'reconnect attempts' });
    // One warning for the whole streak of failures.
    expect(logs.find('xDS stream to pilot failed; reconnecting with backoff', 'warn')).toHaveLength(
      1,
    );
    loadAll(server);
    await server.start();
    await waitFor(() => client.ready, { what: 'the client to be ready' });
    expect(logs.find('xDS stream to pilot reconnected', 'info')).toHaveLength(1);
  });

  it('NACKs a response with a resource the compiler rejects, applies none of it, and ACKs the fix', async () => {
    loadAll(server);
    const client = newClient();
    const updates = record(client);
    await client.start();
    await waitFor(() => client.ready, { what: 'the client to be ready' });
    const before = client.config;
    const goodVersion = server.version('listeners');
    const count = updates.length;

    // A new valid listener and a bad one in the same response: neither is applied.
    server.put('listeners', listenerWithRds('0.0.0.0_7070', 7070, '9090'), badListener());
    const nack = await waitFor(() =>
      server.requestsOf('listeners').find(r => r.errorDetail !== undefined),
    );
    expect(nack.versionInfo).toBe(goodVersion);
    expect(nack.responseNonce).not.toBe('');
    expect(nack.errorDetail!.code).toBe(3);
    expect(nack.errorDetail!.message).toMatch(
      /^listener 0\.0\.0\.0_5432: .*unsupported network filter/,
    );
    expect(nack.errorDetail!.message).not.toContain('0.0.0.0_7070');
    expect(client.config).toBe(before);
    expect(client.config.listeners.has('0.0.0.0_7070')).toBe(false);
    expect(updates).toHaveLength(count);
    expect(client.status()).toMatchObject({
      nacks: 1,
      lastNack: {
        kind: 'listeners',
        version: server.version('listeners'),
        nonce: nack.responseNonce,
        error: nack.errorDetail!.message,
      },
    });
    expect(
      logs.find('Rejected xDS configuration (NACK): keeping the previous one', 'warn'),
    ).toHaveLength(1);

    // Undecodable bytes are a NACK too.
    server.setRawExtra('clusters', [
      {
        type_url: 'type.googleapis.com/envoy.config.cluster.v3.Cluster',
        value: Buffer.from([0xff, 0xff, 0xff]),
      },
    ]);
    await waitFor(() => server.requestsOf('clusters').find(r => r.errorDetail !== undefined));
    expect(client.status().nacks).toBe(2);
    server.setRawExtra('clusters', []);

    // The fix is ACKed and applied.
    server.put(
      'listeners',
      SAMPLE.listeners.find(l => l.name === '0.0.0.0_5432')!,
    );
    await waitFor(() => client.config.listeners.has('0.0.0.0_7070'));
    const last = await waitFor(() =>
      server.requestsOf('listeners').find(r => r.versionInfo === server.version('listeners')),
    );
    expect(last.errorDetail).toBeUndefined();
    expect(updates.at(-1)!.changed).toEqual(new Set(['listeners']));
  });

  it('follows cluster and listener changes with new EDS and RDS subscriptions', async () => {
    loadAll(server);
    const client = newClient();
    const updates = record(client);
    await client.start();
    await waitFor(() => client.ready, { what: 'the client to be ready' });

    // SotW: a CDS response without reviews v2 removes the cluster and unsubscribes its endpoints.
    server.remove('clusters', REVIEWS_V2);
    await waitFor(() => !client.config.clusters.has(REVIEWS_V2));
    const eds = await waitFor(() =>
      server.requestsOf('endpoints').find(r => r.resourceNames.length === EDS_NAMES.length - 1),
    );
    expect(eds.resourceNames).not.toContain(REVIEWS_V2);
    // The new subscription carries the last ACKed version and the last nonce.
    expect(eds.versionInfo).toBe(server.version('endpoints'));
    expect(eds.responseNonce).not.toBe('');
    expect(client.config.endpoints.has(REVIEWS_V2)).toBe(false);
    const removal = updates.find(u => !u.config.clusters.has(REVIEWS_V2))!;
    expect(removal.changed).toEqual(new Set(['clusters', 'endpoints']));

    // An RDS name only a new listener uses is subscribed and fetched.
    server.put('routes', routeNamed('7070'));
    expect(client.config.routes.has('7070')).toBe(false);
    server.put('listeners', listenerWithRds('0.0.0.0_7070', 7070, '7070'));
    await waitFor(() => client.config.routes.has('7070'));
    expect(server.requestsOf('routes').at(-1)!.resourceNames).toContain('7070');

    // EDS updates replace only the names they carry.
    const db = 'outbound|5432||db.default.svc.cluster.local';
    const dbBefore = client.config.endpoints.get(db);
    const reviews = clone(
      SAMPLE.endpoints.find(
        e => e.clusterName === 'outbound|9080||reviews.default.svc.cluster.local',
      )!,
    );
    (reviews.endpoints as Json[]).length = 0;
    server.put('endpoints', reviews);
    await waitFor(
      () => client.config.endpoints.get(String(reviews.clusterName))?.endpoints.length === 0,
    );
    expect(client.config.endpoints.get(db)).toBe(dbBefore);
    expect(updates.at(-1)!.changed).toEqual(new Set(['endpoints']));
    // Unchanged maps are shared between updates.
    expect(updates.at(-1)!.config.clusters).toBe(updates.at(-2)!.config.clusters);
  });

  it('reconnects at once when told to retry now, instead of waiting out its backoff', async () => {
    await server.stop();
    const client = newClient({ backoff: { initialMs: 600_000, maxMs: 600_000 } });
    await client.start();
    await waitFor(() => logs.find('xDS stream to pilot failed; reconnecting with backoff').length, {
      what: 'the first failure',
    });
    loadAll(server);
    await server.start();
    client.retryNow();
    await waitFor(() => client.ready, { what: 'the client to be ready', timeoutMs: 5000 });
  });

  it('reconnects after pilot restarts, with fresh credentials and the versions it holds', async () => {
    loadAll(server);
    const credentials = jest.fn(() => grpc.credentials.createInsecure());
    const client = newClient({ credentials });
    await client.start();
    await waitFor(() => client.ready, { what: 'the client to be ready' });
    const versions = { ...client.config.versions };

    await server.stop();
    await waitFor(() => !client.status().connected, { what: 'disconnect' });
    expect(client.ready).toBe(true);
    await server.start();
    await waitFor(() => server.openStreams === 1 && client.status().connected, {
      what: 'reconnect',
    });
    const second = await waitFor(() => {
      const rs = server.requests.filter(r => r.stream === server.streamsOpened);
      return rs.length >= 4 ? rs : undefined;
    });
    expect(second[0]!.node).toMatchObject({ id: NODE_ID });
    expect(second.find(r => r.kind === 'clusters')).toMatchObject({
      versionInfo: versions.clusters,
      responseNonce: '',
    });
    expect(second.find(r => r.kind === 'endpoints')!.resourceNames).toHaveLength(EDS_NAMES.length);
    expect(credentials.mock.calls.length).toBeGreaterThanOrEqual(2);
    expect(client.status().reconnects).toBeGreaterThanOrEqual(1);

    // A change after the restart arrives.
    server.remove('clusters', REVIEWS_V2);
    await waitFor(() => !client.config.clusters.has(REVIEWS_V2));
    expect(logs.find('xDS stream to pilot reconnected', 'info').length).toBeGreaterThanOrEqual(1);
  });

  it('persists the ACKed state and restores it at start with pilot down', async () => {
    loadAll(server);
    const stateFile = path.join(tmp.dir, 'proxy-xds.json');
    const first = newClient({ stateFile });
    await first.start();
    await waitFor(() => first.ready, { what: 'the client to be ready' });
    server.remove('clusters', REVIEWS_V2);
    await waitFor(() => !first.config.clusters.has(REVIEWS_V2));
    const expected = first.config;
    await first.close();
    expect(fs.statSync(stateFile).mode & 0o777).toBe(0o600);
    await server.stop();

    const second = newClient({ stateFile });
    const updates = record(second);
    await second.start();
    expect(second.ready).toBe(true);
    expect(second.status()).toMatchObject({
      connected: false,
      readyReason: 'restored from the state file',
    });
    expect(updates).toHaveLength(1);
    expect(updates[0]!.fromCache).toBe(true);
    expect(updates[0]!.changed).toEqual(new Set(['clusters', 'endpoints', 'listeners', 'routes']));
    const config = updates[0]!.config;
    expect(config.versions).toEqual(expected.versions);
    for (const kind of ['clusters', 'endpoints', 'listeners', 'routes'] as const) {
      expect([...config[kind].keys()].sort()).toEqual([...expected[kind].keys()].sort());
    }
    expect(config.clusters.get('inbound|9080||')).toEqual(expected.clusters.get('inbound|9080||'));

    // When pilot is back, the client asks with the versions it restored; an unchanged push
    // changes nothing.
    await server.start();
    const cds = await waitFor(() => server.requestsOf('clusters', 2)[0]);
    expect(cds.versionInfo).toBe(expected.versions.clusters);
    await waitFor(() => second.status().lastAck.routes !== undefined);
    expect(updates.slice(1).every(u => u.changed.size === 0)).toBe(true);
  });

  it('writes the state file at most once per interval, and once more on close', async () => {
    loadAll(server);
    const stateFile = path.join(tmp.dir, 'proxy-xds.json');
    const clock = new FakeClock();
    const client = newClient({ clock, stateFile, initialFetchTimeoutMs: 1 });
    await client.start();
    await waitFor(() => client.ready, { what: 'the client to be ready' });
    const saved = () => {
      try {
        return parseStateSnapshot(fs.readFileSync(stateFile, 'utf8'));
      } catch {
        return undefined; // not written yet
      }
    };
    const savedHas = (name: string) => saved()?.resources.clusters.some(c => c.name === name);
    // A change is written; polls move time on only while it is not, so when the poll sees it
    // the writer has just written and is waiting out its interval.
    server.remove('clusters', REVIEWS_V2);
    await waitFor(
      () => {
        if (savedHas(REVIEWS_V2) === false) return true;
        clock.advance(1_000);
        return false;
      },
      { what: 'the first write' },
    );
    server.put(
      'clusters',
      SAMPLE.clusters.find(c => c.name === REVIEWS_V2)!,
    );
    await waitFor(() => client.config.clusters.has(REVIEWS_V2));
    await waitFor(() => clock.pendingSleeps === 1, { what: 'the writer to wait' });
    expect(savedHas(REVIEWS_V2)).toBe(false);
    clock.advance(1_000);
    await waitFor(() => savedHas(REVIEWS_V2), { what: 'the throttled write' });

    // A change still waiting for its turn is written by close().
    await waitFor(() => clock.pendingSleeps === 1, { what: 'the writer to wait' });
    server.remove('clusters', REVIEWS_V2);
    await waitFor(() => !client.config.clusters.has(REVIEWS_V2));
    expect(savedHas(REVIEWS_V2)).toBe(true);
    await client.close();
    expect(savedHas(REVIEWS_V2)).toBe(false);
  });

  it('ignores a corrupt state file or one of another node', async () => {
    const stateFile = path.join(tmp.dir, 'proxy-xds.json');
    fs.writeFileSync(stateFile, '{"format": 1, "nodeId": ');
    await server.stop();
    const client = newClient({ stateFile });
    await client.start();
    expect(client.ready).toBe(false);
    expect(logs.find('Ignoring unreadable xDS state file', 'warn')).toHaveLength(1);

    fs.writeFileSync(
      stateFile,
      JSON.stringify({
        format: 1,
        nodeId: 'sidecar~10.9.9.9~x.default~default.svc.cluster.local',
        versions: {},
        resources: {},
      }),
    );
    const other = newClient({ stateFile });
    await other.start();
    expect(other.ready).toBe(false);
    expect(logs.find('Ignoring xDS state file of another node', 'warn')).toHaveLength(1);

    fs.writeFileSync(
      stateFile,
      JSON.stringify({
        format: 1,
        nodeId: NODE_ID,
        versions: {},
        resources: {
          listeners: [
            {
              name: 'x',
              version: '1',
              lastUpdated: new Date().toISOString(),
              resource: badListener(),
            },
          ],
        },
      }),
    );
    const bad = newClient({ stateFile });
    await bad.start();
    expect(bad.ready).toBe(false);
    expect(logs.find('Ignoring xDS state file that does not compile', 'warn')).toHaveLength(1);
  });

  it('becomes ready at the initial fetch timeout with what it has, naming what is missing', async () => {
    loadAll(server);
    server.silent.add('routes');
    const clock = new FakeClock();
    const client = newClient({ clock, initialFetchTimeoutMs: 5_000 });
    await client.start();
    await waitFor(() => client.config.endpoints.size === EDS_NAMES.length);
    expect(client.ready).toBe(false);
    expect(client.status().readyReason).toBe('waiting for routes 9080, routes 9090');
    await clock.waitForSleepers(1);
    clock.advance(4_999);
    expect(client.ready).toBe(false);
    clock.advance(1);
    await waitFor(() => client.ready, { what: 'the client to be ready' });
    expect(client.status().readyReason).toBe(
      'initial fetch timed out; missing routes 9080, routes 9090',
    );
    const warn = logs.find(
      'Initial xDS fetch timed out: ready with the configuration received so far',
      'warn',
    );
    expect(warn).toHaveLength(1);
    expect(warn[0]).toMatchObject({ missing: ['routes 9080', 'routes 9090'], missingCount: 2 });
  });

  it('closes idempotently: the stream ends, no update follows, and start() is refused', async () => {
    loadAll(server);
    const client = newClient();
    const updates = record(client);
    await client.start();
    await waitFor(() => client.ready, { what: 'the client to be ready' });
    expect(server.openStreams).toBe(1);
    await Promise.all([client.close(), client.close()]);
    await client.close();
    await waitFor(() => server.openStreams === 0, { what: 'the stream to end' });
    const count = updates.length;
    server.remove('clusters', REVIEWS_V2);
    expect(server.requestsOf('clusters').filter(r => r.stream === 2)).toHaveLength(0);
    expect(updates).toHaveLength(count);
    await expect(client.start()).rejects.toThrow('xds client is closed');
    await expect(client.whenReady()).resolves.toBeUndefined();
    const never = newClient();
    await never.close();
    await expect(never.whenReady()).rejects.toThrow('xds client is closed');
  });
});
