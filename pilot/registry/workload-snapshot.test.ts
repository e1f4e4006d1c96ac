import * as fs from 'node:fs';
import * as path from 'node:path';
import { ClosedError, InvalidInputError } from '../../common/errors';
import { silentLogger } from '../../common/logging';
import { FakeClock } from '../../test/helpers/fake-clock';
import { makeTmpDir } from '../../test/helpers/tmp-dir';
import type { ConfigObject } from '../config/types';
import { MeshRegistry } from './registry';
import {
  saveWorkloadSnapshot,
  takeWorkloadSnapshot,
  WORKLOAD_SNAPSHOT_PATH,
} from './workload-snapshot';
import {
  type AuthenticatedPeer,
  type RegisteredWorkload,
  type WorkloadEvent,
  type WorkloadRegistration,
  WorkloadRegistry,
} from './workloads';

const REVIEWS = 'reviews.default.svc.cluster.local';

const peer = (node: string): AuthenticatedPeer => ({
  node,
  spiffeId: 'spiffe://cluster.local/ns/default/sa/reviews',
});

const reg = (node: string, address: string): WorkloadRegistration => ({
  node,
  namespace: 'default',
  serviceAccount: 'reviews',
  address,
  labels: { app: 'reviews', version: 'v1' },
  ports: [{ name: 'http', port: 9080 }],
  host: { os: 'Debian 12', kernel: '6.1.0', cpus: 2, memoryBytes: 1 << 30, hostname: node },
});

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

/** Workloads as a previous pilot held them: vm-1 connected and unhealthy, vm-2 in its grace period. */
function previousRun(): RegisteredWorkload[] {
  const old = new WorkloadRegistry({ logger: silentLogger(), clock: new FakeClock() });
  const s1 = old.register(reg('vm-1', '10.0.0.1'), peer('vm-1'));
  s1.reportHealth({ healthy: false, message: 'GET /health: 503' });
  old.register(reg('vm-2', '10.0.0.2'), peer('vm-2')).disconnect('stream closed');
  return old.list();
}

const flush = () => new Promise(resolve => setImmediate(resolve));

describe('workload snapshot file', () => {
  const tmp = makeTmpDir('sail-snapshot-');
  const file = path.join(tmp.dir, WORKLOAD_SNAPSHOT_PATH);
  afterAll(() => tmp.cleanup());

  it('round-trips the workloads, private to pilot, and is used once', async () => {
    const workloads = previousRun();
    await saveWorkloadSnapshot(file, workloads);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
    const back = await takeWorkloadSnapshot(file);
    expect(back).toEqual(
      workloads.map(w => {
        const { disconnectedAtMs: _gone, ...rest } = w;
        return { ...rest, connected: false };
      }),
    );
    expect(fs.existsSync(file)).toBe(false);
    expect(await takeWorkloadSnapshot(file)).toEqual([]);
  });

  it('names the file and the field at fault in a malformed snapshot, and removes it', async () => {
    const [w] = previousRun();
    const cases: [unknown, string][] = [
      [{ version: 2, workloads: [] }, 'version: 2 is not 1'],
      [{ version: 1 }, 'workloads: want a list'],
      [
        { version: 1, workloads: [{ ...w, address: 7 }] },
        'workloads[0].address: want a string, got 7',
      ],
      [{ version: 1, workloads: [{ ...w, ports: [{ name: 'http' }] }] }, 'workloads[0].ports[0]'],
      [{ version: 1, workloads: [{ ...w, healthy: 'yes' }] }, 'workloads[0].healthy'],
    ];
    for (const [doc, message] of cases) {
      fs.writeFileSync(file, JSON.stringify(doc));
      const err = await takeWorkloadSnapshot(file).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidInputError);
      expect((err as Error).message).toContain(`${file}: ${message}`);
      expect(fs.existsSync(file)).toBe(false);
    }
    fs.writeFileSync(file, '{not json');
    await expect(takeWorkloadSnapshot(file)).rejects.toThrow(`${file}: not JSON`);
  });
});

describe('WorkloadRegistry.restore', () => {
  function setup(graceMs = 30_000) {
    const clock = new FakeClock();
    const registry = new WorkloadRegistry({
      logger: silentLogger(),
      clock,
      disconnectGraceMs: graceMs,
    });
    const events: WorkloadEvent[] = [];
    registry.onEvent(e => events.push(e));
    return { registry, clock, types: () => events.map(e => e.type) };
  }

  it('keeps restored workloads, health as last reported, for a full grace period, then expires them', async () => {
    const { registry, clock, types } = setup();
    clock.advance(3_600_000); // pilot was down a long time: the grace period still starts now
    expect(registry.restore(previousRun())).toBe(2);
    expect(types()).toEqual([]);
    expect(registry.list().map(w => [w.node, w.connected, w.healthy, w.disconnectedAtMs])).toEqual([
      ['vm-1', false, false, clock.now()],
      ['vm-2', false, true, clock.now()],
    ]);
    clock.advance(29_999);
    await flush();
    expect(registry.size).toBe(2);
    clock.advance(1);
    await flush();
    expect(registry.size).toBe(0);
    expect(types()).toEqual(['expired', 'expired']);
  });

  it('hands a restored workload over to its host when it registers again', async () => {
    const { registry, clock, types } = setup();
    registry.restore(previousRun());
    const replaced = registry.get('vm-1');
    const s = registry.register(reg('vm-1', '10.0.0.9'), peer('vm-1'));
    expect(types()).toEqual(['replaced']);
    expect(registry.get('vm-1')).toMatchObject({ connected: true, address: '10.0.0.9' });
    expect(replaced?.address).toBe('10.0.0.1');
    clock.advance(60_000);
    await flush();
    expect(registry.list().map(w => w.node)).toEqual(['vm-1']);
    expect(types()).toEqual(['replaced', 'expired']);
    expect(s.active).toBe(true);
  });

  it('skips nodes registered already, restores nothing with a zero grace period, refuses after close', async () => {
    const { registry } = setup();
    registry.register(reg('vm-1', '10.0.0.7'), peer('vm-1'));
    expect(registry.restore(previousRun())).toBe(1);
    expect(registry.get('vm-1')).toMatchObject({ connected: true, address: '10.0.0.7' });
    expect(setup(0).registry.restore(previousRun())).toBe(0);
    await registry.close();
    expect(() => registry.restore(previousRun())).toThrow(ClosedError);
  });

  it('refuses an invalid or inconsistent workload, restoring none', () => {
    const { registry } = setup();
    const [a, b] = previousRun() as [RegisteredWorkload, RegisteredWorkload];
    expect(() => registry.restore([a, { ...b, address: '10.0.0' }])).toThrow(
      'address: "10.0.0" is not an IP address',
    );
    expect(() =>
      registry.restore([a, { ...b, spiffeId: 'spiffe://cluster.local/ns/default/sa/admin' }]),
    ).toThrow(/restored workload of node vm-2 is inconsistent/);
    expect(registry.size).toBe(0);
  });

  it("gives a MeshRegistry's services their restored instances", () => {
    const mesh = new MeshRegistry({ logger: silentLogger(), clock: new FakeClock() });
    mesh.workloads.restore(previousRun());
    mesh.applyConfig([reviewsSe]);
    expect(
      mesh
        .instances(REVIEWS, 9080)
        .map(i => `${i.endpoint.address}:${i.endpoint.port} ${i.healthy}`),
    ).toEqual(['10.0.0.1:9080 false', '10.0.0.2:9080 true']);
    return mesh.close();
  });
});
