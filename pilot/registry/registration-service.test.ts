/**
 * The registration service over real gRPC with mutual TLS: a test CA mints pilot's serving
 * certificate and the hosts' workload certificates (CN = node, URI SAN = SPIFFE ID), exactly as
 * the CA issues them.
 */
import * as grpc from '@grpc/grpc-js';
import {
  type RegistrationClient,
  type RegistrationStatus__Output,
  type WorkloadReport,
  loadPilotProto,
} from '../../api';
import {
  type ClientIdentity,
  StaticCertificateProvider,
  clientCredentials,
  serverCredentials,
  statusErrorCode,
} from '../../common/grpc';
import { silentLogger } from '../../common/logging';
import { createRegistry, type prom } from '../../common/metrics';
import { FakeClock } from '../../test/helpers/fake-clock';
import { TestCa } from '../../test/helpers/test-ca';
import { waitFor } from '../../test/helpers/wait-for';
import type { ConfigObject } from '../config/types';
import { createRegistrationHandlers } from './registration-service';
import { MeshRegistry } from './registry';
import type { RegistryChange } from './types';

const TD = 'cluster.local';
const PILOT_ID = `spiffe://${TD}/ns/sail-system/sa/sail-control-plane`;
const REVIEWS = 'reviews.default.svc.cluster.local';
const GRACE_MS = 30_000;

const reviewsSe: ConfigObject<'ServiceEntry'> = {
  apiVersion: 'networking.istio.io/v1beta1',
  kind: 'ServiceEntry',
  metadata: { name: 'reviews', namespace: 'default' },
  spec: {
    hosts: [REVIEWS],
    location: 'MESH_INTERNAL',
    resolution: 'STATIC',
    ports: [{ number: 9080, name: 'http' }],
    workloadSelector: { labels: { app: 'reviews' } },
  },
};

/** One registration stream from the client side: statuses as they come, and how it ended. */
class Stream {
  readonly statuses: RegistrationStatus__Output[] = [];
  readonly ended: Promise<grpc.ServiceError | undefined>;
  private readonly call: grpc.ClientDuplexStream<WorkloadReport, RegistrationStatus__Output>;

  constructor(client: RegistrationClient) {
    this.call = client.Connect();
    this.call.on('data', (s: RegistrationStatus__Output) => this.statuses.push(s));
    this.ended = new Promise(resolve => {
      this.call.on('error', (err: grpc.ServiceError) => resolve(err));
      this.call.on('status', (s: grpc.StatusObject) => {
        if (s.code === grpc.status.OK) resolve(undefined);
      });
    });
  }

  send(report: WorkloadReport): void {
    this.call.write(report);
  }

  /** Waits for the n-th status (1-based). */
  async status(n: number): Promise<RegistrationStatus__Output> {
    return waitFor(() => this.statuses[n - 1], { what: `status #${n}` });
  }

  cancel(): void {
    this.call.cancel();
  }

  halfClose(): void {
    this.call.end();
  }
}

function registration(node: string, over: Record<string, unknown> = {}): WorkloadReport {
  return {
    registration: {
      node,
      namespace: 'default',
      serviceAccount: 'reviews',
      address: '127.0.0.1',
      labels: { app: 'reviews', version: 'v1' },
      ports: [{ name: 'http', port: 9080 }],
      host: {
        os: 'Debian GNU/Linux 12',
        kernel: '6.1.0',
        cpus: 2,
        memoryBytes: '4294967296',
        hostname: node,
      },
      ...over,
    },
  };
}

describe('Registration service (gRPC over mTLS)', () => {
  let ca: TestCa;
  let server: grpc.Server;
  let address: string;
  let registry: MeshRegistry;
  let clock: FakeClock;
  let metrics: prom.Registry;
  let changes: RegistryChange[];
  const clients: grpc.Client[] = [];
  const identities = new Map<string, ClientIdentity>();

  /** A workload certificate for `node` with the SPIFFE ID of `ns/sa`, cached per pair. */
  async function identity(node: string, ns = 'default', sa = 'reviews'): Promise<ClientIdentity> {
    const key = `${node}|${ns}|${sa}`;
    let id = identities.get(key);
    if (!id) {
      const now = Date.now();
      id = await ca.issueWorkloadCert({
        node,
        spiffeId: `spiffe://${TD}/ns/${ns}/sa/${sa}`,
        notBeforeMs: now - 60_000,
        notAfterMs: now + 3600_000,
      });
      identities.set(key, id);
    }
    return id;
  }

  function client(id?: ClientIdentity): RegistrationClient {
    const Ctor = loadPilotProto().sail.pilot.v1.Registration;
    const c = new Ctor(address, clientCredentials(ca.rootPem, PILOT_ID, id));
    clients.push(c);
    return c;
  }

  async function connect(node: string, ns?: string, sa?: string): Promise<Stream> {
    return new Stream(client(await identity(node, ns, sa)));
  }

  beforeAll(async () => {
    ca = await TestCa.create({ trustDomain: TD });
  });

  beforeEach(async () => {
    clock = new FakeClock();
    registry = new MeshRegistry({ logger: silentLogger(), clock, disconnectGraceMs: GRACE_MS });
    registry.applyConfig([reviewsSe]);
    changes = [];
    registry.onChange(c => changes.push(c));
    metrics = createRegistry(false);
    const now = Date.now();
    const serving = await ca.issueWorkloadCert({
      node: 'pilot',
      spiffeId: PILOT_ID,
      notBeforeMs: now - 60_000,
      notAfterMs: now + 3600_000,
    });
    server = new grpc.Server();
    server.addService(
      loadPilotProto().sail.pilot.v1.Registration.service,
      createRegistrationHandlers({ logger: silentLogger(), registry, metrics }),
    );
    const provider = new StaticCertificateProvider(
      ca.rootPem,
      serving.certChainPem,
      serving.keyPem,
    );
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', serverCredentials(provider, false), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    address = `127.0.0.1:${port}`;
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    server.forceShutdown();
    await registry.close();
  });

  it('registers a host, flips its health, and keeps it through a disconnect for the grace period', async () => {
    const s = await connect('vm-1');
    s.send(registration('vm-1'));
    expect(await s.status(1)).toEqual({
      accepted: true,
      workload: 'default/vm-1',
      message: 'registered; healthy',
    });
    expect(registry.workloads.get('vm-1')).toMatchObject({
      spiffeId: `spiffe://${TD}/ns/default/sa/reviews`,
      address: '127.0.0.1',
      host: { os: 'Debian GNU/Linux 12', cpus: 2, memoryBytes: 4294967296, hostname: 'vm-1' },
      connected: true,
    });
    expect(registry.instances(REVIEWS, 9080).map(i => [i.workload, i.healthy])).toEqual([
      ['default/vm-1', true],
    ]);

    // The app fails its probe: it leaves the endpoints (healthy=false) at once.
    changes.length = 0;
    s.send({ health: { healthy: false, message: 'GET /health: 503' } });
    expect(await s.status(2)).toEqual({
      accepted: true,
      workload: 'default/vm-1',
      message: 'unhealthy: GET /health: 503',
    });
    expect(registry.instances(REVIEWS, 9080)[0]?.healthy).toBe(false);
    expect(changes).toEqual([{ services: [], endpoints: [REVIEWS] }]);

    s.send({ health: { healthy: true, message: '' } });
    expect((await s.status(3)).message).toBe('healthy');
    expect(registry.instances(REVIEWS, 9080)[0]?.healthy).toBe(true);

    // The connection drops: still registered (and healthy) during the grace period.
    s.cancel();
    await waitFor(() => registry.workloads.get('vm-1')?.connected === false, {
      what: 'the workload to be marked disconnected',
    });
    expect(registry.instances(REVIEWS, 9080)[0]?.healthy).toBe(true);
    clock.advance(GRACE_MS - 1);
    await new Promise(resolve => setImmediate(resolve));
    expect(registry.workloads.get('vm-1')).toBeDefined();
    clock.advance(1);
    await waitFor(() => registry.workloads.get('vm-1') === undefined, {
      what: 'the workload to expire',
    });
    expect(registry.instances(REVIEWS, 9080)).toEqual([]);

    const text = await metrics.metrics();
    expect(text).toContain('pilot_registered_workloads 0');
    for (const event of ['registered', 'unhealthy', 'healthy', 'disconnected', 'expired'])
      expect(text).toContain(`pilot_registration_events_total{event="${event}"} 1`);
  });

  it('starts a host unhealthy when its registration says so', async () => {
    const s = await connect('vm-1');
    s.send(registration('vm-1', { health: { healthy: false, message: 'starting' } }));
    expect((await s.status(1)).message).toBe('registered; unhealthy: starting');
    expect(registry.instances(REVIEWS, 9080)[0]?.healthy).toBe(false);
  });

  it('removes a host at once when it deregisters, and ends the stream cleanly', async () => {
    const s = await connect('vm-1');
    s.send(registration('vm-1'));
    await s.status(1);
    s.send({ deregister: { reason: 'shutdown' } });
    expect(await s.status(2)).toEqual({
      accepted: true,
      workload: 'default/vm-1',
      message: 'deregistered',
    });
    expect(await s.ended).toBeUndefined();
    expect(registry.workloads.get('vm-1')).toBeUndefined();
    expect(registry.instances(REVIEWS, 9080)).toEqual([]);
    expect(clock.pendingSleeps).toBe(0);
  });

  it('treats a half-close without deregistering as a disconnect', async () => {
    const s = await connect('vm-1');
    s.send(registration('vm-1'));
    await s.status(1);
    s.halfClose();
    expect(await s.ended).toBeUndefined();
    expect(registry.workloads.get('vm-1')).toMatchObject({ connected: false });
  });

  it('lets a second stream of the same node replace the first, which it ends', async () => {
    const first = await connect('vm-1');
    first.send(registration('vm-1'));
    await first.status(1);
    const second = await connect('vm-1');
    second.send(registration('vm-1', { address: '127.0.0.2' }));
    expect((await second.status(1)).accepted).toBe(true);
    expect(await first.status(2)).toEqual({
      accepted: false,
      workload: 'default/vm-1',
      message: 'replaced by a newer registration of node vm-1',
    });
    expect(await first.ended).toBeUndefined();
    expect(registry.workloads.size).toBe(1);
    expect(registry.workloads.get('vm-1')).toMatchObject({ address: '127.0.0.2', connected: true });
    expect(registry.instances(REVIEWS, 9080).map(i => i.endpoint.address)).toEqual(['127.0.0.2']);
    // The old stream ending does not disconnect the new registration.
    second.send({ health: { healthy: true, message: '' } });
    expect((await second.status(2)).accepted).toBe(true);
    expect(registry.workloads.get('vm-1')?.connected).toBe(true);
  });

  it('re-registers on the same stream with new labels', async () => {
    const s = await connect('vm-1');
    s.send(registration('vm-1'));
    await s.status(1);
    s.send(registration('vm-1', { labels: { app: 'other' } }));
    expect((await s.status(2)).accepted).toBe(true);
    expect(registry.instances(REVIEWS, 9080)).toEqual([]);
  });

  it.each([
    {
      name: 'another node',
      node: 'vm-2',
      over: {},
      msg: 'node "vm-2" is not the node the client certificate names ("vm-1")',
    },
    {
      name: 'another namespace',
      node: 'vm-1',
      over: { namespace: 'prod' },
      msg: 'namespace "prod" of node vm-1',
    },
    {
      name: 'another service account',
      node: 'vm-1',
      over: { serviceAccount: 'admin' },
      msg: 'serviceAccount "admin" of node vm-1',
    },
  ])('denies registering $name than the certificate proves', async ({ node, over, msg }) => {
    const s = await connect('vm-1');
    s.send(registration(node, over));
    const err = await s.ended;
    expect(err?.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(statusErrorCode(err)).toBe('PILOT_REGISTRATION_DENIED');
    expect(err?.details).toContain(msg);
    expect(registry.workloads.size).toBe(0);
    expect(await metrics.metrics()).toContain('pilot_registration_events_total{event="denied"} 1');
  });

  it('rejects a malformed registration naming every bad field', async () => {
    const s = await connect('vm-1');
    s.send(
      registration('vm-1', {
        address: 'not-an-ip',
        ports: [{ name: 'Bad Name', port: 0 }],
        labels: { 'no spaces': 'x' },
        host: { os: '', kernel: '', cpus: 1, memoryBytes: '18446744073709551615', hostname: '' },
      }),
    );
    const err = await s.ended;
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(statusErrorCode(err)).toBe('PILOT_REGISTRATION_INVALID');
    for (const field of [
      'address:',
      'ports[0].name:',
      'ports[0].port:',
      'labels["no spaces"]:',
      'host.memoryBytes:',
    ])
      expect(err?.details).toContain(field);
    expect(registry.workloads.size).toBe(0);
  });

  it('requires a registration before health reports', async () => {
    const s = await connect('vm-1');
    s.send({ health: { healthy: true, message: '' } });
    const err = await s.ended;
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err?.details).toBe('the first report of a stream must be a registration');
  });

  it('rejects an empty report', async () => {
    const s = await connect('vm-1');
    s.send({});
    const err = await s.ended;
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err?.details).toContain('report is empty');
  });

  it('fails a stream that sends an oversized health message, leaving the workload to its grace period', async () => {
    const s = await connect('vm-1');
    s.send(registration('vm-1'));
    await s.status(1);
    s.send({ health: { healthy: true, message: 'x'.repeat(2000) } });
    const err = await s.ended;
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(registry.workloads.get('vm-1')).toMatchObject({ connected: false });
  });

  it('refuses a certificate without a workload SPIFFE ID', async () => {
    const now = Date.now();
    const id = await ca.issueWorkloadCert({
      node: 'vm-1',
      spiffeId: `spiffe://${TD}/agent/vm-1`,
      notBeforeMs: now - 60_000,
      notAfterMs: now + 3600_000,
    });
    const s = new Stream(client(id));
    s.send(registration('vm-1'));
    const err = await s.ended;
    expect(err?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(err?.details).toBe(
      'client certificate of node vm-1 carries 0 workload SPIFFE IDs; want exactly one',
    );
  });

  it('answers UNAVAILABLE once pilot is shutting down', async () => {
    await registry.close();
    const s = await connect('vm-1');
    s.send(registration('vm-1'));
    const err = await s.ended;
    expect(err?.code).toBe(grpc.status.UNAVAILABLE);
    expect(statusErrorCode(err)).toBe('PILOT_NOT_READY');
  });

  it('refuses a client without a certificate', async () => {
    const s = new Stream(client());
    s.send(registration('vm-1'));
    const err = await s.ended;
    expect(err?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(statusErrorCode(err)).toBe('PILOT_REGISTRATION_UNAUTHENTICATED');
    expect(registry.workloads.size).toBe(0);
  });
});
