/**
 * Protocol tests of the ADS server over real gRPC: SotW and Delta, versions, nonces, ACK/NACK,
 * stale requests, subscriptions, push ordering, and authentication on the mTLS port. The
 * generator here is a small table so the tests are about the protocol; the real generators have
 * their own tests, and the conformance test runs gRPC's own xDS client against all of it.
 */
import * as grpc from '@grpc/grpc-js';
import { clientCredentials, serverCredentials, StaticCertificateProvider } from '../../common/grpc';
import { prom } from '../../common/metrics';
import { LogCapture } from '../../test/helpers/log-capture';
import { TestCa } from '../../test/helpers/test-ca';
import { AdsTestClient, DeltaTestClient } from '../../test/helpers/xds-client';
import { XdsServer } from './ads';
import {
  CLUSTER_TYPE,
  DEFAULT_MESH_CONFIG,
  ENDPOINT_TYPE,
  type GeneratedResource,
  type Generator,
  LISTENER_TYPE,
  type PushContext,
  type PushRequest,
  ROUTE_TYPE,
  type XdsType,
} from './model';

/** Waits until `list` has `n` entries (at most 2 s). */
async function waitForCount(list: readonly unknown[], n: number): Promise<void> {
  for (let i = 0; i < 100 && list.length < n; i++) await new Promise(r => setTimeout(r, 20));
  expect(list).toHaveLength(n);
}

/** name → resource, per type: what the "mesh" holds in one push. */
type Table = Partial<Record<XdsType, Record<string, Record<string, unknown>>>>;

const cluster = (name: string, timeoutS = 1) => ({
  name,
  type: 'EDS',
  connectTimeout: { seconds: timeoutS },
  edsClusterConfig: { edsConfig: { ads: {}, resourceApiVersion: 'V3' } },
});
const cla = (name: string, port: number) => ({
  clusterName: name,
  endpoints: [
    {
      lbEndpoints: [
        { endpoint: { address: { socketAddress: { address: '127.0.0.1', portValue: port } } } },
      ],
    },
  ],
});
const listener = (name: string, route: string) => ({
  name,
  apiListener: {
    apiListener: {
      '@type':
        'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
      rds: { routeConfigName: route, configSource: { ads: {}, resourceApiVersion: 'V3' } },
      httpFilters: [
        {
          name: 'router',
          typedConfig: {
            '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router',
          },
        },
      ],
    },
  },
});
const routeConfig = (name: string, clusterName: string) => ({
  name,
  virtualHosts: [
    {
      name: 'vh',
      domains: ['*'],
      routes: [{ match: { prefix: '/' }, route: { cluster: clusterName } }],
    },
  ],
});

class TableGenerator implements Generator {
  tables = new Map<string, Table>();
  /** Objects are reused between pushes while unchanged, as real generators do. */
  generate(
    type: XdsType,
    _proxy: unknown,
    push: PushContext,
    names: readonly string[],
  ): GeneratedResource[] {
    const table = this.tables.get(push.version)?.[type] ?? {};
    const wanted = names.length === 0 ? Object.keys(table) : names;
    return wanted.filter(n => table[n]).map(n => ({ name: n, resource: table[n]! }));
  }
}

const FULL: PushRequest = { full: true, kinds: new Set(), endpointHosts: new Set() };

function context(version: string): PushContext {
  return {
    version,
    mesh: DEFAULT_MESH_CONFIG,
    config: { list: () => [], get: () => undefined },
    registry: {
      services: () => [],
      getService: () => undefined,
      instances: () => [],
      proxyInstances: () => [],
      onChange: () => () => undefined,
    },
    cache: new Map(),
  };
}

describe('XdsServer (plaintext port)', () => {
  let server: grpc.Server;
  let xds: XdsServer;
  let gen: TableGenerator;
  let address: string;
  let logs: LogCapture;
  const clients: { close(): void }[] = [];
  const insecure = grpc.credentials.createInsecure();

  const c1 = cluster('outbound|80||a.default.svc.cluster.local');
  const c2 = cluster('outbound|80||b.default.svc.cluster.local');
  const e1 = cla('outbound|80||a.default.svc.cluster.local', 8080);
  const e2 = cla('outbound|80||b.default.svc.cluster.local', 8081);

  function pushVersion(version: string, table: Table, request: PushRequest = FULL) {
    gen.tables.set(version, table);
    xds.push(context(version), request);
  }

  /** What the server reported of proxyless streams' XdsServer ports. */
  let serverPorts: [string, readonly number[]][];

  beforeEach(async () => {
    logs = new LogCapture();
    gen = new TableGenerator();
    serverPorts = [];
    xds = new XdsServer({
      logger: logs.logger,
      generator: gen,
      trustDomain: 'cluster.local',
      metrics: new prom.Registry(),
      onProxylessServerPorts: (_c, node, ports) => serverPorts.push([node.identity.node, ports]),
    });
    server = new grpc.Server();
    xds.addTo(server, false);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    address = `127.0.0.1:${port}`;
    pushVersion('1', {
      [CLUSTER_TYPE]: { [c1.name]: c1 },
      [ENDPOINT_TYPE]: { [e1.clusterName]: e1 },
      [LISTENER_TYPE]: { 'a:80': listener('a:80', 'a:80') },
      [ROUTE_TYPE]: { 'a:80': routeConfig('a:80', c1.name) },
    });
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    xds.closeAll();
    server.forceShutdown();
    await xds.idle();
  });

  function sotw(id = 'proxyless-1', metadata?: Record<string, unknown>) {
    const c = new AdsTestClient(address, insecure, { id, ...(metadata ? { metadata } : {}) });
    clients.push(c);
    return c;
  }

  it('answers a wildcard CDS request with every cluster, version and nonce set', async () => {
    const c = sotw();
    c.request({ typeUrl: CLUSTER_TYPE });
    const r = await c.next();
    expect(r.typeUrl).toBe(CLUSTER_TYPE);
    expect(r.versionInfo).toBe('1');
    expect(r.nonce).not.toBe('');
    expect(r.resources).toEqual([
      expect.objectContaining({ name: c1.name, type: 'EDS', connectTimeout: { seconds: '1' } }),
    ]);
  });

  it('takes no XdsServer ports from a plaintext stream: its node id is only a claim', async () => {
    const c = sotw();
    c.request({
      typeUrl: LISTENER_TYPE,
      resourceNames: ['xds.istio.io/grpc/lds/inbound/0.0.0.0:8080'],
    });
    await c.next();
    expect(serverPorts).toEqual([]);
  });

  it('answers EDS and RDS only with the names asked for', async () => {
    const c = sotw();
    c.request({ typeUrl: ENDPOINT_TYPE, resourceNames: [e1.clusterName, 'nope'] });
    const r = await c.next();
    expect(r.resources.map(x => x.clusterName)).toEqual([e1.clusterName]);
    c.request({ typeUrl: ROUTE_TYPE, resourceNames: [] });
    const empty = await c.next();
    expect(empty.typeUrl).toBe(ROUTE_TYPE);
    expect(empty.resources).toEqual([]);
  });

  it('sends nothing on an ACK, and a new response with a new nonce on a push', async () => {
    const c = sotw();
    c.request({ typeUrl: CLUSTER_TYPE });
    const r1 = await c.next();
    c.ack(r1);
    expect(await c.quiet(200)).toBe(0);
    pushVersion('2', { [CLUSTER_TYPE]: { [c1.name]: c1, [c2.name]: c2 } });
    const r2 = await c.next();
    expect(r2.versionInfo).toBe('2');
    expect(r2.nonce).not.toBe(r1.nonce);
    expect(r2.resources.map(x => x.name).sort()).toEqual([c1.name, c2.name].sort());
    c.ack(r2);
    const info = xds.connectionsInfo('proxyless-1')[0]!;
    await expect(
      (async () => {
        for (
          let i = 0;
          i < 50 && xds.connectionsInfo()[0]!.resources.clusters!.versionAcked !== '2';
          i++
        )
          await new Promise(res => setTimeout(res, 20));
        return xds.connectionsInfo()[0]!.resources.clusters!.versionAcked;
      })(),
    ).resolves.toBe('2');
    expect(info.protocol).toBe('sotw');
    expect(info.type).toBe('proxyless');
  });

  it('does not resend a type whose resources did not change', async () => {
    const c = sotw();
    c.request({ typeUrl: CLUSTER_TYPE });
    c.ack(await c.next());
    // Same objects, new version: nothing to send.
    pushVersion('2', gen.tables.get('1')!);
    expect(await c.quiet(300)).toBe(0);
  });

  it('records a NACK, logs it, keeps it in proxy-config, and does not resend the same config', async () => {
    const c = sotw();
    c.request({ typeUrl: CLUSTER_TYPE });
    const r1 = await c.next();
    c.ack(r1);
    await c.quiet(100);
    pushVersion('2', { [CLUSTER_TYPE]: { [c1.name]: c1, [c2.name]: c2 } });
    const r2 = await c.next();
    c.request({
      typeUrl: CLUSTER_TYPE,
      versionInfo: '1',
      responseNonce: r2.nonce,
      errorDetail: { code: 3, message: 'cluster b: bad thing' },
    });
    expect(await c.quiet(300)).toBe(0);
    const w = xds.connectionsInfo()[0]!.resources.clusters!;
    expect(w.nack).toMatchObject({
      version: '1',
      nonce: r2.nonce,
      message: 'cluster b: bad thing',
    });
    expect(w.versionAcked).toBe('1');
    expect(
      logs.find('xDS client rejected configuration (NACK); it keeps its previous one', 'warn'),
    ).toHaveLength(1);
    // A later push with different content is sent, and its ACK clears the NACK.
    pushVersion('3', { [CLUSTER_TYPE]: { [c1.name]: c1 } });
    const r3 = await c.next();
    c.ack(r3);
    await c.quiet(100);
    expect(xds.connectionsInfo()[0]!.resources.clusters!.nack).toBeUndefined();
  });

  it('ignores a request with a stale nonce', async () => {
    const c = sotw();
    c.request({ typeUrl: CLUSTER_TYPE });
    const r1 = await c.next();
    pushVersion('2', { [CLUSTER_TYPE]: { [c2.name]: c2 } });
    const r2 = await c.next();
    // An ACK of r1 arriving after r2 was sent is stale: no answer, no ack recorded.
    c.ack(r1, ['x']);
    expect(await c.quiet(300)).toBe(0);
    expect(xds.connectionsInfo()[0]!.resources.clusters!.versionAcked).toBeUndefined();
    c.ack(r2);
    await c.quiet(100);
    expect(xds.connectionsInfo()[0]!.resources.clusters!.versionAcked).toBe('2');
  });

  it('answers a change of subscription at once', async () => {
    const c = sotw();
    c.request({ typeUrl: ENDPOINT_TYPE, resourceNames: [e1.clusterName] });
    const r1 = await c.next();
    pushVersion('2', { [ENDPOINT_TYPE]: { [e1.clusterName]: e1, [e2.clusterName]: e2 } });
    // e1 is unchanged: no push.
    expect(await c.quiet(200)).toBe(0);
    c.request({
      typeUrl: ENDPOINT_TYPE,
      versionInfo: r1.versionInfo,
      responseNonce: r1.nonce,
      resourceNames: [e1.clusterName, e2.clusterName],
    });
    const r2 = await c.next();
    expect(r2.resources.map(x => x.clusterName).sort()).toEqual(
      [e1.clusterName, e2.clusterName].sort(),
    );
  });

  it('pushes CDS, EDS, LDS and RDS in that order', async () => {
    const c = sotw();
    // Subscribe in the "wrong" order and ACK everything.
    c.request({ typeUrl: ROUTE_TYPE, resourceNames: ['a:80'] });
    c.ack(await c.next(), ['a:80']);
    c.request({ typeUrl: LISTENER_TYPE, resourceNames: ['a:80'] });
    c.ack(await c.next(), ['a:80']);
    c.request({ typeUrl: ENDPOINT_TYPE, resourceNames: [c1.name] });
    c.ack(await c.next(), [c1.name]);
    c.request({ typeUrl: CLUSTER_TYPE, resourceNames: [c1.name] });
    c.ack(await c.next(), [c1.name]);
    await c.quiet(100);
    // Everything changes at once (a new route to a new timeout, a new cluster version, ...).
    pushVersion('2', {
      [CLUSTER_TYPE]: { [c1.name]: cluster(c1.name, 2) },
      [ENDPOINT_TYPE]: { [e1.clusterName]: cla(c1.name, 9999) },
      [LISTENER_TYPE]: { 'a:80': listener('a:80', 'a:80-v2') },
      [ROUTE_TYPE]: { 'a:80': routeConfig('a:80', c1.name + '-x') },
    });
    const order = [];
    for (let i = 0; i < 4; i++) order.push((await c.next()).typeUrl);
    expect(order).toEqual([CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE]);
  });

  it('sends a sidecar only EDS on an endpoint-only push', async () => {
    const c = sotw('sidecar~10.0.0.9~vm-9.default~default.svc.cluster.local');
    c.request({ typeUrl: CLUSTER_TYPE });
    c.ack(await c.next());
    c.request({ typeUrl: ENDPOINT_TYPE, resourceNames: [c1.name] });
    c.ack(await c.next(), [c1.name]);
    pushVersion(
      '2',
      { [CLUSTER_TYPE]: { [c2.name]: c2 }, [ENDPOINT_TYPE]: { [c1.name]: cla(c1.name, 1234) } },
      { full: false, kinds: new Set(), endpointHosts: new Set(['a.default.svc.cluster.local']) },
    );
    const r = await c.next();
    expect(r.typeUrl).toBe(ENDPOINT_TYPE);
    expect(await c.quiet(200)).toBe(0);
  });

  it("re-sends a proxyless client's clusters on an endpoint-only push when they changed (auto mTLS follows the endpoints)", async () => {
    const c = sotw();
    c.request({ typeUrl: CLUSTER_TYPE });
    c.ack(await c.next());
    c.request({ typeUrl: ENDPOINT_TYPE, resourceNames: [c1.name] });
    c.ack(await c.next(), [c1.name]);
    pushVersion(
      '2',
      { [CLUSTER_TYPE]: { [c2.name]: c2 }, [ENDPOINT_TYPE]: { [c1.name]: cla(c1.name, 1234) } },
      { full: false, kinds: new Set(), endpointHosts: new Set(['a.default.svc.cluster.local']) },
    );
    const types = [(await c.next()).typeUrl, (await c.next()).typeUrl];
    expect(types).toEqual([CLUSTER_TYPE, ENDPOINT_TYPE]);
    expect(await c.quiet(200)).toBe(0);
  });

  it('rejects an unknown type URL and a first request without a node id', async () => {
    const c = sotw();
    c.request({ typeUrl: 'type.googleapis.com/nope.Nope' });
    const status = await c.ended;
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(status.details).toMatch(/unknown type_url/);
    const d = sotw('');
    d.request({ typeUrl: CLUSTER_TYPE });
    const s2 = await d.ended;
    expect(s2.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(s2.details).toMatch(/node\.id/);
  });

  it('takes the identity of a plaintext client from its node id and metadata', async () => {
    const c = sotw('sidecar~10.1.2.3~vm-1.shop~shop.svc.cluster.local', { LABELS: { app: 'web' } });
    c.request({ typeUrl: CLUSTER_TYPE });
    await c.next();
    expect(xds.connectionsInfo('vm-1')[0]).toMatchObject({
      node: 'vm-1',
      namespace: 'shop',
      type: 'sidecar',
    });
    expect(xds.connectionCount).toBe(1);
    c.close();
    for (let i = 0; i < 50 && xds.connectionCount > 0; i++)
      await new Promise(r => setTimeout(r, 20));
    expect(xds.connectionCount).toBe(0);
  });

  describe('Delta', () => {
    function delta(id = 'delta-1') {
      const c = new DeltaTestClient(address, insecure, { id });
      clients.push(c);
      return c;
    }

    it('sends a wildcard subscription everything, then only what changed, and names removals', async () => {
      const c = delta();
      c.request({ typeUrl: CLUSTER_TYPE });
      const r1 = await c.next();
      expect(r1.resources.map(r => r.name)).toEqual([c1.name]);
      expect(r1.resources[0]!.version).toMatch(/^[0-9a-f]{16}$/);
      c.request({ typeUrl: CLUSTER_TYPE, responseNonce: r1.nonce });
      pushVersion('2', { [CLUSTER_TYPE]: { [c1.name]: c1, [c2.name]: c2 } });
      const r2 = await c.next();
      expect(r2.resources.map(r => r.name)).toEqual([c2.name]);
      expect(r2.removedResources).toEqual([]);
      c.request({ typeUrl: CLUSTER_TYPE, responseNonce: r2.nonce });
      pushVersion('3', { [CLUSTER_TYPE]: { [c2.name]: c2 } });
      const r3 = await c.next();
      expect(r3.resources).toEqual([]);
      expect(r3.removedResources).toEqual([c1.name]);
    });

    it('follows subscribe and unsubscribe, and reports names that do not exist', async () => {
      const c = delta();
      c.request({ typeUrl: ENDPOINT_TYPE, resourceNamesSubscribe: [e1.clusterName] });
      const r1 = await c.next();
      expect(r1.resources.map(r => r.name)).toEqual([e1.clusterName]);
      c.request({
        typeUrl: ENDPOINT_TYPE,
        responseNonce: r1.nonce,
        resourceNamesSubscribe: ['missing'],
      });
      const r2 = await c.next();
      expect(r2.resources).toEqual([]);
      expect(r2.removedResources).toEqual(['missing']);
      c.request({
        typeUrl: ENDPOINT_TYPE,
        responseNonce: r2.nonce,
        resourceNamesUnsubscribe: [e1.clusterName],
      });
      // Unsubscribing needs no answer.
      expect(await c.quiet(200)).toBe(0);
      pushVersion('2', { [ENDPOINT_TYPE]: { [e1.clusterName]: cla(e1.clusterName, 1) } });
      // Unsubscribed: nothing comes.
      expect(await c.quiet(300)).toBe(0);
    });

    it('does not resend what a reconnecting client already has (initial_resource_versions)', async () => {
      const first = delta();
      first.request({ typeUrl: CLUSTER_TYPE });
      const r1 = await first.next();
      first.close();
      const again = delta('delta-2');
      again.request({
        typeUrl: CLUSTER_TYPE,
        initialResourceVersions: { [c1.name]: r1.resources[0]!.version, gone: 'abc' },
      });
      const r2 = await again.next();
      expect(r2.resources).toEqual([]);
      expect(r2.removedResources).toEqual(['gone']);
    });

    it('records a NACK', async () => {
      const c = delta();
      c.request({ typeUrl: CLUSTER_TYPE });
      const r1 = await c.next();
      c.request({
        typeUrl: CLUSTER_TYPE,
        responseNonce: r1.nonce,
        errorDetail: { code: 3, message: 'no' },
      });
      await c.quiet(200);
      expect(xds.connectionsInfo()[0]!.resources.clusters!.nack?.message).toBe('no');
    });
  });
});

describe('XdsServer (mTLS port)', () => {
  let ca: TestCa;
  let server: grpc.Server;
  let xds: XdsServer;
  let address: string;
  const serverPorts: { connection: string; node: string; ports: readonly number[] }[] = [];

  beforeAll(async () => {
    ca = await TestCa.create();
    const serving = await ca.issueWorkloadCert({
      node: 'pilot',
      spiffeId: 'spiffe://cluster.local/ns/sail-system/sa/sail-control-plane',
      notBeforeMs: Date.now() - 60_000,
      notAfterMs: Date.now() + 3600_000,
    });
    const gen = new TableGenerator();
    gen.tables.set('1', { [CLUSTER_TYPE]: { c: cluster('c') } });
    xds = new XdsServer({
      logger: new LogCapture().logger,
      generator: gen,
      trustDomain: 'cluster.local',
      metrics: new prom.Registry(),
      onProxylessServerPorts: (connection, node, ports) =>
        serverPorts.push({ connection, node: node.identity.node, ports }),
    });
    xds.push(context('1'), FULL);
    server = new grpc.Server();
    xds.addTo(server, true);
    const provider = new StaticCertificateProvider(
      ca.rootPem,
      serving.certChainPem,
      serving.keyPem,
    );
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', serverCredentials(provider, false), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    address = `127.0.0.1:${port}`;
  });

  afterAll(() => {
    xds.closeAll();
    server.forceShutdown();
  });

  const pilotId = 'spiffe://cluster.local/ns/sail-system/sa/sail-control-plane';

  /** A client with a certificate of `node` and `spiffeId`, sending `wire` as its node. */
  async function clientAs(
    node: string,
    spiffeId: string,
    wire: { id: string; metadata?: Record<string, unknown> },
  ) {
    const cert = await ca.issueWorkloadCert({
      node,
      spiffeId,
      notBeforeMs: Date.now() - 60_000,
      notAfterMs: Date.now() + 3600_000,
    });
    return new AdsTestClient(address, clientCredentials(ca.rootPem, pilotId, cert), wire);
  }

  it('refuses a client without a certificate', async () => {
    const c = new AdsTestClient(address, clientCredentials(ca.rootPem, pilotId), { id: 'x' });
    c.request({ typeUrl: CLUSTER_TYPE });
    const s = await c.ended;
    expect(s.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(s.details).toMatch(/needs mTLS/);
    c.close();
  });

  it('takes node and namespace from the certificate, not the node id', async () => {
    const c = await clientAs('vm-7', 'spiffe://cluster.local/ns/shop/sa/web', {
      id: 'sidecar~10.0.0.9~liar.other~other.svc.cluster.local',
    });
    c.request({ typeUrl: CLUSTER_TYPE });
    const r = await c.next();
    expect(r.resources.map(x => x.name)).toEqual(['c']);
    expect(xds.connectionsInfo('vm-7')[0]).toMatchObject({
      node: 'vm-7',
      namespace: 'shop',
      spiffeId: 'spiffe://cluster.local/ns/shop/sa/web',
    });
    c.close();
  });

  it("reports the ports a proxyless stream's XdsServers serve, from its listener names", async () => {
    const c = await clientAs('vm-9', 'spiffe://cluster.local/ns/shop/sa/grpc', { id: 'anything' });
    const inbound = (hp: string) => `xds.istio.io/grpc/lds/inbound/${hp}`;
    const lds = (names: string[]) => c.request({ typeUrl: LISTENER_TYPE, resourceNames: names });
    lds([inbound('0.0.0.0:9090'), 'echo.shop.svc.cluster.local:7070', inbound('[::]:8080')]);
    await c.next();
    expect(serverPorts.map(r => [r.node, r.ports])).toEqual([['vm-9', [8080, 9090]]]);
    // Another client listener changes nothing; dropping a server's listener does.
    lds([inbound('0.0.0.0:9090'), inbound('[::]:8080'), 'other:80']);
    lds([inbound('0.0.0.0:9090')]);
    await waitForCount(serverPorts, 2);
    expect(serverPorts.map(r => r.ports)).toEqual([[8080, 9090], [9090]]);
    c.close();
    await waitForCount(serverPorts, 3);
    expect(serverPorts[2]).toEqual({
      connection: serverPorts[0]!.connection,
      node: 'vm-9',
      ports: [],
    });
  });

  it('denies a client whose metadata claims another namespace', async () => {
    const c = await clientAs('vm-8', 'spiffe://cluster.local/ns/shop/sa/web', {
      id: 'x',
      metadata: { NAMESPACE: 'payments' },
    });
    c.request({ typeUrl: CLUSTER_TYPE });
    const s = await c.ended;
    expect(s.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(s.details).toMatch(/payments/);
    c.close();
  });
});
