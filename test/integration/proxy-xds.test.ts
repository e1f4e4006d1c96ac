/**
 * The proxy's XdsClient against the real pilot, in one process: pilot with a file store and a
 * serving certificate from a test CA, configured through its admin API (unix socket), and the
 * client on pilot's mTLS port with a workload certificate from the same CA. Shown: the client
 * becomes ready with what pilot generates for a sidecar, an applied VirtualService arrives as an
 * update, and after pilot stops a new client starts ready from the state file.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { controlPlaneSpiffeId } from '../../ca';
import { AdminServer } from '../../common/admin-server';
import { clientCredentials } from '../../common/grpc';
import { Pilot } from '../../pilot/pilot';
import { XdsClient, type XdsUpdate } from '../../proxy/xds';
import { LogCapture } from '../helpers/log-capture';
import { TestCa } from '../helpers/test-ca';
import { makeTmpDir } from '../helpers/tmp-dir';
import { waitFor } from '../helpers/wait-for';

const TRUST_DOMAIN = 'cluster.local';
const NODE = 'vm-1';
const NODE_ID = `sidecar~10.0.0.5~${NODE}.default~default.svc.cluster.local`;
const REVIEWS = 'reviews.default.svc.cluster.local';
const cluster = (subset = '') => `outbound|9080|${subset}|${REVIEWS}`;
const HOUR_MS = 3600_000;

const SERVICE_ENTRY = {
  apiVersion: 'networking.istio.io/v1',
  kind: 'ServiceEntry',
  metadata: { name: 'reviews', namespace: 'default' },
  spec: {
    hosts: [REVIEWS],
    location: 'MESH_INTERNAL',
    resolution: 'STATIC',
    ports: [{ number: 9080, name: 'http', protocol: 'HTTP' }],
    endpoints: [
      { address: '10.0.0.10', labels: { version: 'v1' } },
      { address: '10.0.0.11', labels: { version: 'v2' } },
    ],
  },
};

const DESTINATION_RULE = {
  apiVersion: 'networking.istio.io/v1',
  kind: 'DestinationRule',
  metadata: { name: 'reviews', namespace: 'default' },
  spec: {
    host: 'reviews',
    subsets: [
      { name: 'v1', labels: { version: 'v1' } },
      { name: 'v2', labels: { version: 'v2' } },
    ],
  },
};

const VIRTUAL_SERVICE = {
  apiVersion: 'networking.istio.io/v1',
  kind: 'VirtualService',
  metadata: { name: 'reviews', namespace: 'default' },
  spec: {
    hosts: ['reviews'],
    http: [
      {
        route: [
          { destination: { host: 'reviews', subset: 'v1' }, weight: 80 },
          { destination: { host: 'reviews', subset: 'v2' }, weight: 20 },
        ],
      },
    ],
  },
};

/** POSTs JSON to pilot's admin API on its unix socket. */
function adminPost(socketPath: string, urlPath: string, body: unknown): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        socketPath,
        path: urlPath,
        method: 'POST',
        headers: { 'content-type': 'application/json' },
      },
      res => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => {
          if (res.statusCode !== 200) reject(new Error(`${urlPath}: ${res.statusCode} ${text}`));
          else resolve(JSON.parse(text));
        });
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

/** The clusters the reviews virtual host of a route configuration sends to. */
function routeClusters(update: XdsUpdate | undefined, routeName: string): string[] {
  const table = update?.config.routes.get(routeName);
  const out = new Set<string>();
  for (const vh of table?.virtualHosts ?? []) {
    if (!vh.domains.includes(REVIEWS)) continue;
    for (const r of vh.routes) {
      if (r.action.kind === 'route') for (const c of r.action.clusters) out.add(c.name);
    }
  }
  return [...out].sort();
}

describe('proxy XdsClient against pilot over mTLS', () => {
  const tmp = makeTmpDir('sail-proxy-xds-');
  const logs = new LogCapture('info');
  const socketPath = path.join(tmp.dir, 'admin.sock');
  const stateFile = path.join(tmp.dir, 'proxy', 'proxy-xds.json');
  let ca: TestCa;
  let pilot: Pilot | undefined;
  let admin: AdminServer | undefined;
  let credentials: () => ReturnType<typeof clientCredentials>;
  const clients: XdsClient[] = [];
  let pilotAddress = '';

  const apply = (...objects: unknown[]) =>
    adminPost(socketPath, '/v1/config/apply', {
      documents: objects.map((raw, index) => ({ source: 'test', index, raw })),
    });

  const newClient = () => {
    const c = new XdsClient({
      logger: logs.logger,
      address: pilotAddress,
      nodeId: NODE_ID,
      nodeMetadata: { NAMESPACE: 'default', LABELS: { app: 'web' } },
      credentials,
      stateFile,
      initialFetchTimeoutMs: 10_000,
      backoff: { initialMs: 50, maxMs: 500 },
    });
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    ca = await TestCa.create({ trustDomain: TRUST_DOMAIN });
    const now = Date.now();
    const serving = await ca.issueWorkloadCert({
      node: 'sail-control-plane',
      spiffeId: controlPlaneSpiffeId(TRUST_DOMAIN),
      notBeforeMs: now - HOUR_MS,
      notAfterMs: now + 24 * HOUR_MS,
    });
    const workload = await ca.issueWorkloadCert({
      node: NODE,
      spiffeId: `spiffe://${TRUST_DOMAIN}/ns/default/sa/web`,
      notBeforeMs: now - HOUR_MS,
      notAfterMs: now + 24 * HOUR_MS,
    });
    credentials = () =>
      clientCredentials(ca.rootPem, controlPlaneSpiffeId(TRUST_DOMAIN), {
        certChainPem: workload.certChainPem,
        keyPem: workload.keyPem,
      });
    pilot = new Pilot({
      logger: logs.logger,
      listen: '127.0.0.1:0',
      tls: { certChainPem: serving.certChainPem, keyPem: serving.keyPem, rootsPem: ca.rootPem },
      store: { type: 'file', dataDir: path.join(tmp.dir, 'pilot') },
      debounce: { quietMs: 20, maxMs: 200 },
    });
    await pilot.start();
    pilotAddress = pilot.address!;
    admin = new AdminServer({
      logger: logs.logger,
      routes: pilot.adminRoutes(),
      socket: `unix://${socketPath}`,
      adminSpiffeIds: [],
    });
    await admin.start();
    await apply(SERVICE_ENTRY);
  });

  afterAll(async () => {
    await Promise.all(clients.map(c => c.close()));
    await admin?.close();
    await pilot?.close();
    tmp.cleanup();
  });

  it('becomes ready with the configuration pilot generates for the sidecar', async () => {
    const client = newClient();
    await client.start();
    await waitFor(() => client.ready, { timeoutMs: 10_000, what: 'the client to be ready' });
    const { config } = client;
    expect(client.status()).toMatchObject({
      connected: true,
      readyReason: 'received clusters, listeners and every subscribed endpoint and route',
      nacks: 0,
    });
    expect(config.clusters.has(cluster())).toBe(true);
    expect(
      config.endpoints
        .get(cluster())
        ?.endpoints.map(e => e.address)
        .sort(),
    ).toEqual(['10.0.0.10', '10.0.0.11']);
    expect(config.listeners.has('0.0.0.0_9080')).toBe(true);
    expect(config.routes.has('9080')).toBe(true);
    expect(logs.find('xDS client connected', 'info')[0]).toMatchObject({
      nodeId: NODE_ID,
      node: NODE,
      spiffeId: `spiffe://${TRUST_DOMAIN}/ns/default/sa/web`,
    });
  });

  it('receives an applied DestinationRule and VirtualService as updates', async () => {
    const client = clients[0]!;
    const updates: XdsUpdate[] = [];
    client.onUpdate(u => updates.push(u));
    await apply(DESTINATION_RULE, VIRTUAL_SERVICE);
    // Routes may arrive before the new subsets' endpoints (those need a new EDS subscription).
    await waitFor(
      () =>
        routeClusters(updates.at(-1), '9080').join() === [cluster('v1'), cluster('v2')].join() &&
        updates.at(-1)!.config.endpoints.has(cluster('v2')),
      { timeoutMs: 10_000, what: 'routes to the subsets and their endpoints' },
    );
    const last = updates.at(-1)!;
    expect(last.fromCache).toBe(false);
    expect(last.config.clusters.has(cluster('v1'))).toBe(true);
    expect(last.config.endpoints.get(cluster('v2'))?.endpoints.map(e => e.address)).toEqual([
      '10.0.0.11',
    ]);
    expect(updates.some(u => u.changed.has('routes'))).toBe(true);
    expect(client.status().nacks).toBe(0);
  });

  it('starts ready from the state file while pilot is down', async () => {
    const expected = clients[0]!.config;
    await clients[0]!.close();
    await pilot!.close();
    pilot = undefined;
    expect(fs.statSync(stateFile).mode & 0o777).toBe(0o600);

    const client = new XdsClient({
      logger: logs.logger,
      // Where pilot was: nothing listens there now.
      address: pilotAddress,
      nodeId: NODE_ID,
      nodeMetadata: {},
      credentials,
      stateFile,
      initialFetchTimeoutMs: 10_000,
    });
    clients.push(client);
    const updates: XdsUpdate[] = [];
    client.onUpdate(u => updates.push(u));
    await client.start();
    expect(client.ready).toBe(true);
    expect(client.status()).toMatchObject({
      connected: false,
      readyReason: 'restored from the state file',
    });
    expect(updates).toHaveLength(1);
    expect(updates[0]!.fromCache).toBe(true);
    expect(updates[0]!.config.versions).toEqual(expected.versions);
    expect(routeClusters(updates[0], '9080')).toEqual([cluster('v1'), cluster('v2')]);
    expect([...updates[0]!.config.listeners.keys()].sort()).toEqual(
      [...expected.listeners.keys()].sort(),
    );
  });
});
