/**
 * The node agent's registration and health probes against a real control plane in this process
 * (CA + pilot, as `sail control-plane` wires them): workload certificates come from the CA with a
 * join token, the RegistrationClient registers over mTLS, and a raw ADS client with another host's
 * certificate watches the EDS endpoints every other proxy would get.
 *
 * Shown: registration at start (registry and EDS, host facts, `auto` address); an HTTP app that
 * answers 500 goes UNHEALTHY in EDS after the failure threshold and HEALTHY again; TCP and exec
 * probes flip health; a renewed certificate reconnects; pilot restarting → the client registers
 * again; close() deregisters at once (no 30 s grace period); a registration whose node is not the
 * certificate's → PERMISSION_DENIED logged with the config key to fix.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { clientCredentials } from '../../common/grpc';
import { prom } from '../../common/metrics';
import {
  hostFacts,
  RegistrationClient,
  type RegistrationIdentity,
} from '../../node-agent/registration';
import { Pilot } from '../../pilot/pilot';
import { LogCapture } from '../helpers/log-capture';
import {
  type IdentityFiles,
  MeshControlPlane,
  NAMESPACE,
  testLogger,
  TRUST_DOMAIN,
} from '../helpers/proxy-pair';
import { makeTmpDir } from '../helpers/tmp-dir';
import { waitFor } from '../helpers/wait-for';
import { AdsTestClient, type DecodedResponse } from '../helpers/xds-client';

jest.setTimeout(30_000);

const EDS = 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment';
const SERVICE = `app.${NAMESPACE}.svc.cluster.local`;

interface Endpoint {
  readonly address: string;
  readonly health: string;
}

/** EDS for one cluster as a proxy sees it: ACKs every response, reconnects when pilot restarts. */
class EdsWatch {
  endpoints: Endpoint[] | undefined;
  private client: AdsTestClient | undefined;
  private closed = false;
  private readonly loop: Promise<void>;

  constructor(
    private readonly address: () => string,
    private readonly identity: IdentityFiles,
    private readonly cluster: string,
    private readonly pilotSpiffeId: string,
  ) {
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    while (!this.closed) {
      const c = new AdsTestClient(
        this.address(),
        clientCredentials(this.identity.rootsPem, this.pilotSpiffeId, this.identity),
        { id: `sidecar~127.0.0.1~vm-watch.${NAMESPACE}~${NAMESPACE}.svc.cluster.local` },
      );
      this.client = c;
      c.request({ typeUrl: EDS, resourceNames: [this.cluster] });
      try {
        while (!this.closed) {
          let r: DecodedResponse;
          try {
            r = await c.next(1_000);
          } catch (err) {
            // No push within a second: keep waiting. Anything else: the stream failed (an
            // immediate rejection, so retrying at once would spin without yielding).
            if ((err as Error).message.startsWith('no message within')) continue;
            throw err;
          }
          c.ack(r, [this.cluster]);
          const cla = r.resources[0] as
            { endpoints?: { lbEndpoints?: Record<string, unknown>[] }[] } | undefined;
          this.endpoints = (cla?.endpoints ?? []).flatMap(l =>
            (l.lbEndpoints ?? []).map(e => {
              const sa = (e.endpoint as { address: { socketAddress: Record<string, unknown> } })
                .address.socketAddress;
              return {
                address: `${String(sa.address)}:${String(sa.portValue)}`,
                health: String(e.healthStatus),
              };
            }),
          );
        }
      } catch {
        c.close();
        if (!this.closed) await new Promise(r => setTimeout(r, 100));
      }
    }
  }

  /** Resolves once the endpoint `address` has `health` ('absent' = not listed). */
  async waitFor(address: string, health: string, timeoutMs = 10_000): Promise<void> {
    await waitFor(
      () => {
        const e = this.endpoints?.find(x => x.address === address);
        return health === 'absent' ? this.endpoints !== undefined && !e : e?.health === health;
      },
      {
        timeoutMs,
        intervalMs: 20,
        what: `EDS endpoint ${address} ${health} (now: ${JSON.stringify(this.endpoints)})`,
      },
    );
  }

  async close(): Promise<void> {
    this.closed = true;
    this.client?.close();
    await this.loop;
  }
}

function listen(server: net.Server, port = 0): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
  });
}

function closeServer(server: net.Server | http.Server): Promise<void> {
  if ('closeAllConnections' in server) server.closeAllConnections();
  return new Promise(resolve => server.close(() => resolve()));
}

describe('node agent registration and health against a real pilot', () => {
  const tmp = makeTmpDir('sail-agent-reg-');
  const logger = testLogger();
  let cp: MeshControlPlane;
  /** The pilot currently serving (replaced by the restart test). */
  let pilot: Pilot;
  let watch: EdsWatch;
  let appStatus = 200;
  const app = http.createServer((_req, res) => {
    res.writeHead(appStatus);
    res.end();
  });
  let appPort = 0;
  const identities: Record<string, IdentityFiles> = {};
  const clients: RegistrationClient[] = [];
  const servers: net.Server[] = [];

  const newClient = (
    node: string,
    opts: {
      address: string;
      health?: ConstructorParameters<typeof RegistrationClient>[0]['health'];
      registrationNode?: string;
      logs?: LogCapture;
      registry?: prom.Registry;
    },
  ) => {
    const client = new RegistrationClient({
      logger: opts.logs?.logger ?? logger,
      registry: opts.registry ?? new prom.Registry(),
      pilotAddress: cp.pilotAddress,
      pilotSpiffeId: cp.pilotSpiffeId,
      identity: (): RegistrationIdentity | undefined => identities[node],
      registration: {
        node: opts.registrationNode ?? node,
        namespace: NAMESPACE,
        serviceAccount: 'app',
        address: opts.address,
        labels: { app: 'app', version: 'v1' },
        ports: [{ name: 'http', port: appPort }],
      },
      ...(opts.health ? { health: opts.health } : {}),
      backoff: { initialMs: 50, maxMs: 500 },
    });
    clients.push(client);
    return client;
  };
  const probeTiming = { intervalMs: 100, timeoutMs: 500, failureThreshold: 2, successThreshold: 1 };
  const workload = (node: string) => pilot.registry.workloads.get(node);

  beforeAll(async () => {
    appPort = await listen(app);
    cp = await MeshControlPlane.start({ dataDir: tmp.dir, logger });
    pilot = cp.pilot;
    await cp.apply([
      {
        apiVersion: 'networking.istio.io/v1beta1',
        kind: 'ServiceEntry',
        metadata: { name: 'app', namespace: NAMESPACE },
        spec: {
          hosts: [SERVICE],
          location: 'MESH_INTERNAL',
          resolution: 'STATIC',
          ports: [{ number: appPort, name: 'http', protocol: 'HTTP' }],
          workloadSelector: { labels: { app: 'app' } },
        },
      },
    ]);
    for (const node of ['vm-a', 'vm-b', 'vm-c', 'vm-d'])
      identities[node] = await cp.enroll(node, 'app');
    identities['vm-watch'] = await cp.enroll('vm-watch', 'client');
    watch = new EdsWatch(
      () => pilot.address ?? cp.pilotAddress,
      identities['vm-watch'],
      `outbound|${appPort}||${SERVICE}`,
      cp.pilotSpiffeId,
    );
  });

  afterAll(async () => {
    await Promise.all(clients.map(c => c.close()));
    await watch?.close();
    await pilot?.close();
    await cp?.ca.close();
    await Promise.all([app, ...servers].map(closeServer));
    tmp.cleanup();
  });

  it('registers at start without waiting on pilot, with host facts and the auto address, and shows in EDS', async () => {
    const logs = new LogCapture();
    const registry = new prom.Registry();
    const a = newClient('vm-a', {
      address: 'auto',
      health: { http: { port: appPort, path: '/health' }, ...probeTiming },
      logs,
      registry,
    });
    const started = Date.now();
    await a.start();
    expect(Date.now() - started).toBeLessThan(100);
    await waitFor(() => a.registered, { what: 'vm-a registered' });
    // Pilot is on 127.0.0.1, so the source address toward it is too.
    expect(workload('vm-a')).toMatchObject({
      address: '127.0.0.1',
      labels: { app: 'app', version: 'v1' },
      ports: [{ name: 'http', port: appPort }],
      host: await hostFacts(),
      healthy: true,
      connected: true,
    });
    expect(a.status()).toMatchObject({ connected: true, registered: true, healthy: true });
    expect(logs.find('Registered the workload with pilot', 'info')).toMatchObject([
      { workload: `${NAMESPACE}/vm-a`, address: '127.0.0.1' },
    ]);
    expect(await registry.metrics()).toContain('sail_agent_registration_connected 1');
    await watch.waitFor(`127.0.0.1:${appPort}`, 'HEALTHY');
  });

  it('takes an app answering 500 out of rotation after the failure threshold and puts it back when healthy', async () => {
    appStatus = 500;
    await watch.waitFor(`127.0.0.1:${appPort}`, 'UNHEALTHY');
    expect(workload('vm-a')).toMatchObject({
      healthy: false,
      healthMessage: `HTTP 500 from http://127.0.0.1:${appPort}/health`,
    });
    appStatus = 200;
    await watch.waitFor(`127.0.0.1:${appPort}`, 'HEALTHY');
    expect(workload('vm-a')?.healthy).toBe(true);
  });

  it('flips health with tcp and exec probes', async () => {
    const tcpServer = net.createServer(s => s.destroy());
    servers.push(tcpServer);
    const tcpPort = await listen(tcpServer);
    const flag = path.join(tmp.dir, 'healthy');
    fs.writeFileSync(flag, '');
    const b = newClient('vm-b', {
      address: '127.0.78.12',
      health: { tcp: { port: tcpPort }, ...probeTiming },
    });
    const c = newClient('vm-c', {
      address: '127.0.78.13',
      health: { exec: { command: ['/bin/sh', '-c', `test -e ${flag}`] }, ...probeTiming },
    });
    await Promise.all([b.start(), c.start()]);
    await waitFor(() => workload('vm-b')?.healthy && workload('vm-c')?.healthy, {
      what: 'vm-b and vm-c registered healthy',
    });

    await closeServer(tcpServer);
    fs.rmSync(flag);
    await waitFor(
      () => workload('vm-b')?.healthy === false && workload('vm-c')?.healthy === false,
      {
        what: 'vm-b and vm-c unhealthy',
      },
    );
    expect(workload('vm-b')?.healthMessage).toMatch(
      `connect 127.0.0.1:${tcpPort}: connect ECONNREFUSED`,
    );
    expect(workload('vm-c')?.healthMessage).toBe('"/bin/sh" exited 1');
    await watch.waitFor(`127.0.78.12:${appPort}`, 'UNHEALTHY');

    const again = net.createServer(s => s.destroy());
    servers.push(again);
    await listen(again, tcpPort);
    fs.writeFileSync(flag, '');
    await waitFor(() => workload('vm-b')?.healthy && workload('vm-c')?.healthy, {
      what: 'vm-b and vm-c healthy again',
    });
    await watch.waitFor(`127.0.78.12:${appPort}`, 'HEALTHY');
  });

  it('reconnects with a renewed certificate', async () => {
    const b = clients[1] as RegistrationClient;
    const before = workload('vm-b')?.registeredAtMs ?? 0;
    identities['vm-b'] = await cp.renew(identities['vm-b'] as IdentityFiles);
    b.identityChanged();
    await waitFor(() => (workload('vm-b')?.registeredAtMs ?? 0) > before && b.registered, {
      what: 'vm-b registered again with its new certificate',
    });
    expect(workload('vm-b')).toMatchObject({ connected: true, healthy: true });
  });

  it('registers again when pilot restarts', async () => {
    const a = clients[0] as RegistrationClient;
    const address = cp.pilotAddress;
    await pilot.close();
    await waitFor(() => !a.status().connected, { what: 'vm-a noticing pilot is gone' });
    pilot = new Pilot({
      logger,
      listen: address,
      tls: cp.ca.servingMaterial,
      store: { type: 'file', dataDir: tmp.dir },
      mesh: { trustDomain: TRUST_DOMAIN },
      debounce: { quietMs: 10, maxMs: 50 },
    });
    await pilot.start();
    await waitFor(
      () => ['vm-a', 'vm-b', 'vm-c'].every(n => workload(n)?.connected) && a.registered,
      { timeoutMs: 10_000, what: 'every host registered with the restarted pilot' },
    );
    await watch.waitFor(`127.0.0.1:${appPort}`, 'HEALTHY');
  });

  it('deregisters on close at once, without the grace period', async () => {
    const c = clients[2] as RegistrationClient;
    await watch.waitFor(`127.0.78.13:${appPort}`, 'HEALTHY');
    const started = Date.now();
    await c.close();
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(workload('vm-c')).toBeUndefined();
    // Pilot's grace period is 30 s: gone within a few seconds means deregistered, not expired.
    await watch.waitFor(`127.0.78.13:${appPort}`, 'absent', 3_000);
    await c.close();
  });

  it('logs PERMISSION_DENIED naming nodeName when the node is not the certificate', async () => {
    const logs = new LogCapture();
    const d = newClient('vm-d', { address: '127.0.78.14', registrationNode: 'vm-wrong', logs });
    await d.start();
    const [entry] = await waitFor(
      () => {
        const e = logs.find(
          'Pilot refused the registration: fix the named setting (or the certificate) and restart the agent',
          'error',
        );
        return e.length > 0 ? e : undefined;
      },
      { what: 'the refusal logged' },
    );
    expect(entry).toMatchObject({
      code: 'PERMISSION_DENIED',
      details: expect.stringContaining(
        'node "vm-wrong" is not the node the client certificate names ("vm-d")',
      ),
      configKeys: ['nodeName'],
      retryInMs: 60_000,
    });
    expect(d.status()).toMatchObject({ connected: false, registered: false });
    expect(workload('vm-wrong')).toBeUndefined();
    expect(workload('vm-d')).toBeUndefined();
    const started = Date.now();
    await d.close();
    expect(Date.now() - started).toBeLessThan(500);
  });

  it('does not fight a second agent holding the same node certificate', async () => {
    const first = new LogCapture();
    const d1 = newClient('vm-d', { address: '127.0.78.14', logs: first });
    await d1.start();
    await waitFor(() => d1.registered, { what: 'the first vm-d agent registered' });
    const d2 = newClient('vm-d', { address: '127.0.78.15' });
    await d2.start();
    await waitFor(() => d2.registered && !d1.status().connected, {
      what: 'the second vm-d agent taking over',
    });
    expect(
      first.find(
        'Another registration stream of this node replaced this one: is a second agent running with this node certificate? Retrying later',
        'error',
      ),
    ).toMatchObject([{ node: 'vm-d', retryInMs: 60_000 }]);
    // The first one waits (60 s) instead of taking the registration back.
    expect(workload('vm-d')).toMatchObject({ address: '127.0.78.15', connected: true });
    await Promise.all([d1.close(), d2.close()]);
    expect(workload('vm-d')).toBeUndefined();
  });
});
