import { ClosedError, InvalidInputError, NotAuthorizedError } from '../../common/errors';
import { silentLogger } from '../../common/logging';
import { FakeClock } from '../../test/helpers/fake-clock';
import { LogCapture } from '../../test/helpers/log-capture';
import type { WorkloadGroupSpec } from '../config/types';
import {
  type AuthenticatedPeer,
  type WorkloadEvent,
  type WorkloadRegistration,
  WorkloadRegistry,
  validateRegistration,
} from './workloads';

const PEER: AuthenticatedPeer = {
  node: 'vm-1',
  spiffeId: 'spiffe://cluster.local/ns/default/sa/reviews',
};

function reg(over: Partial<WorkloadRegistration> = {}): WorkloadRegistration {
  return {
    node: 'vm-1',
    namespace: 'default',
    serviceAccount: 'reviews',
    address: '10.0.0.5',
    labels: { app: 'reviews', version: 'v1' },
    ports: [{ name: 'http', port: 9080 }],
    host: { os: 'Debian 12', kernel: '6.1.0', cpus: 4, memoryBytes: 8 << 30, hostname: 'vm-1' },
    ...over,
  };
}

function makeRegistry(
  opts: { clock?: FakeClock; graceMs?: number; groups?: Record<string, WorkloadGroupSpec> } = {},
) {
  const clock = opts.clock ?? new FakeClock();
  const registry = new WorkloadRegistry({
    logger: silentLogger(),
    clock,
    ...(opts.graceMs !== undefined ? { disconnectGraceMs: opts.graceMs } : {}),
    groups: (ns, name) => opts.groups?.[`${ns}/${name}`],
  });
  const events: WorkloadEvent[] = [];
  registry.onEvent(e => events.push(e));
  return { registry, clock, events, types: () => events.map(e => e.type) };
}

/** Lets the grace-timer promise callbacks run after a FakeClock advance. */
const flush = () => new Promise(resolve => setImmediate(resolve));

describe('validateRegistration', () => {
  it('accepts a complete registration', () => {
    expect(() => validateRegistration(reg())).not.toThrow();
  });

  const cases: { name: string; over: Partial<WorkloadRegistration>; field: string }[] = [
    { name: 'empty node', over: { node: '' }, field: 'node: is empty' },
    { name: 'upper-case node', over: { node: 'VM_1' }, field: 'node: "VM_1" is not a valid name' },
    { name: 'bad namespace', over: { namespace: 'Prod!' }, field: 'namespace: "Prod!"' },
    {
      name: 'bad service account',
      over: { serviceAccount: 'a/b' },
      field: 'serviceAccount: "a/b"',
    },
    { name: 'empty address', over: { address: '' }, field: 'address: is empty' },
    {
      name: 'address not an IP',
      over: { address: 'vm-1.local' },
      field: 'address: "vm-1.local" is not an IP address',
    },
    {
      name: 'unspecified address',
      over: { address: '0.0.0.0' },
      field: 'address: 0.0.0.0 is the unspecified address',
    },
    {
      name: 'unspecified v6 address',
      over: { address: '::' },
      field: 'address: :: is the unspecified address',
    },
    {
      name: 'bad label key',
      over: { labels: { 'bad key': 'x' } },
      field: 'labels["bad key"]: key',
    },
    {
      name: 'bad label prefix',
      over: { labels: { 'Example.COM/app': 'x' } },
      field: 'labels["Example.COM/app"]: key prefix',
    },
    {
      name: 'bad label value',
      over: { labels: { app: 'a b' } },
      field: 'labels["app"]: value "a b"',
    },
    {
      name: 'long label value',
      over: { labels: { app: 'a'.repeat(64) } },
      field: 'labels["app"]: value',
    },
    {
      name: 'empty port name',
      over: { ports: [{ name: '', port: 80 }] },
      field: 'ports[0].name: is empty',
    },
    {
      name: 'bad port name',
      over: { ports: [{ name: 'HTTP_API', port: 80 }] },
      field: 'ports[0].name: "HTTP_API"',
    },
    {
      name: 'duplicate port name',
      over: {
        ports: [
          { name: 'http', port: 80 },
          { name: 'http', port: 81 },
        ],
      },
      field: 'ports[1].name: http is also ports[0]',
    },
    {
      name: 'port zero',
      over: { ports: [{ name: 'http', port: 0 }] },
      field: 'ports[0].port: 0 is not in 1-65535',
    },
    {
      name: 'port too big',
      over: { ports: [{ name: 'http', port: 70000 }] },
      field: 'ports[0].port: 70000',
    },
    {
      name: 'too many ports',
      over: { ports: Array.from({ length: 65 }, (_, i) => ({ name: `p${i}`, port: i + 1 })) },
      field: 'ports: 65 ports; the limit is 64',
    },
    {
      name: 'too many labels',
      over: { labels: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v'])) },
      field: 'labels: 65 labels',
    },
    {
      name: 'huge os string',
      over: { host: { os: 'x'.repeat(300), kernel: '', cpus: 1, memoryBytes: 1, hostname: '' } },
      field: 'host.os: is 300 bytes',
    },
    {
      name: 'negative cpus',
      over: { host: { os: '', kernel: '', cpus: -1, memoryBytes: 1, hostname: '' } },
      field: 'host.cpus: -1',
    },
    {
      name: 'unsafe memory',
      over: { host: { os: '', kernel: '', cpus: 1, memoryBytes: 2 ** 64, hostname: '' } },
      field: 'host.memoryBytes:',
    },
    {
      name: 'group not NS/NAME',
      over: { group: 'reviews' },
      field: 'group: "reviews" is not NAMESPACE/NAME',
    },
    {
      name: 'long health message',
      over: { health: { healthy: false, message: 'x'.repeat(2000) } },
      field: 'health.message: is 2000 bytes',
    },
  ];
  it.each(cases)('rejects $name naming the field', ({ over, field }) => {
    let err: unknown;
    try {
      validateRegistration(reg(over));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidInputError);
    expect((err as InvalidInputError).code).toBe('PILOT_REGISTRATION_INVALID');
    expect((err as Error).message).toContain(field);
  });

  it('lists every problem in one error', () => {
    expect(() =>
      validateRegistration(reg({ address: 'nope', ports: [{ name: 'http', port: 0 }] })),
    ).toThrow(
      'registration of node vm-1 is invalid: address: "nope" is not an IP address; ports[0].port: 0 is not in 1-65535',
    );
  });

  it('accepts an IPv6 address, prefixed label keys and empty label values', () => {
    expect(() =>
      validateRegistration(
        reg({
          address: 'fd00::5',
          labels: { 'example.com/tier': '', 'app.kubernetes.io/name': 'r' },
        }),
      ),
    ).not.toThrow();
  });
});

describe('WorkloadRegistry', () => {
  it('registers a workload under the identity its certificate proves', () => {
    const { registry, events } = makeRegistry();
    const session = registry.register(reg(), PEER);
    expect(session.active).toBe(true);
    expect(registry.get('vm-1')).toEqual({
      name: 'default/vm-1',
      node: 'vm-1',
      namespace: 'default',
      serviceAccount: 'reviews',
      spiffeId: 'spiffe://cluster.local/ns/default/sa/reviews',
      address: '10.0.0.5',
      labels: { app: 'reviews', version: 'v1' },
      ports: [{ name: 'http', port: 9080 }],
      host: { os: 'Debian 12', kernel: '6.1.0', cpus: 4, memoryBytes: 8 << 30, hostname: 'vm-1' },
      weight: 1,
      healthy: true,
      healthMessage: '',
      connected: true,
      registeredAtMs: new FakeClock().now(),
    });
    expect(events.map(e => e.type)).toEqual(['registered']);
    expect(registry.size).toBe(1);
    expect(registry.list('default').map(w => w.name)).toEqual(['default/vm-1']);
    expect(registry.list('other')).toEqual([]);
  });

  it('starts unhealthy when the registration says so', () => {
    const { registry } = makeRegistry();
    registry.register(reg({ health: { healthy: false, message: 'warming up' } }), PEER);
    expect(registry.get('vm-1')).toMatchObject({ healthy: false, healthMessage: 'warming up' });
  });

  const denials: {
    name: string;
    over: Partial<WorkloadRegistration>;
    peer?: AuthenticatedPeer;
    msg: string;
  }[] = [
    {
      name: 'another node',
      over: { node: 'vm-2' },
      msg: 'node "vm-2" is not the node the client certificate names ("vm-1")',
    },
    {
      name: 'another namespace',
      over: { namespace: 'prod' },
      msg: 'namespace "prod" of node vm-1 is not the one its certificate proves',
    },
    {
      name: 'another service account',
      over: { serviceAccount: 'admin' },
      msg: 'serviceAccount "admin" of node vm-1 is not the one its certificate proves',
    },
    {
      name: 'another trust domain',
      over: {},
      peer: { node: 'vm-1', spiffeId: 'spiffe://evil.example/ns/default/sa/reviews' },
      msg: 'is for trust domain evil.example, not cluster.local',
    },
    {
      name: 'a non-workload SPIFFE ID',
      over: {},
      peer: { node: 'vm-1', spiffeId: 'spiffe://cluster.local/agent/x' },
      msg: 'not a workload SPIFFE ID',
    },
  ];
  it.each(denials)('denies registering $name', ({ over, peer, msg }) => {
    const { registry, events } = makeRegistry();
    let err: unknown;
    try {
      registry.register(reg(over), peer ?? PEER);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NotAuthorizedError);
    expect((err as NotAuthorizedError).code).toBe('PILOT_REGISTRATION_DENIED');
    expect((err as Error).message).toContain(msg);
    expect(registry.size).toBe(0);
    expect(events).toEqual([]);
  });

  it('replaces an earlier registration of the same node and tells the old session', () => {
    const { registry, types, events } = makeRegistry();
    const first = registry.register(reg(), PEER);
    const replaced = jest.fn();
    first.onReplaced = replaced;
    const second = registry.register(reg({ address: '10.0.0.9' }), PEER);
    expect(registry.size).toBe(1);
    expect(registry.get('vm-1')?.address).toBe('10.0.0.9');
    expect(types()).toEqual(['registered', 'replaced']);
    expect(events[1]?.previous?.address).toBe('10.0.0.5');
    expect(replaced).toHaveBeenCalledTimes(1);
    expect(first.active).toBe(false);
    expect(second.active).toBe(true);
    // The stale session can no longer touch the registration.
    expect(first.reportHealth({ healthy: false, message: '' })).toBeUndefined();
    first.disconnect();
    expect(first.deregister()).toBeUndefined();
    expect(registry.get('vm-1')).toMatchObject({ healthy: true, connected: true });
  });

  it('re-registers on the same session without telling it it was replaced', () => {
    const { registry, types } = makeRegistry();
    const s = registry.register(reg(), PEER);
    const replaced = jest.fn();
    s.onReplaced = replaced;
    s.reregister(reg({ labels: { app: 'reviews', version: 'v2' } }));
    expect(registry.get('vm-1')?.labels).toEqual({ app: 'reviews', version: 'v2' });
    expect(types()).toEqual(['registered', 'replaced']);
    expect(replaced).not.toHaveBeenCalled();
    expect(s.active).toBe(true);
  });

  it('flips health at once and reports only changes', () => {
    const { registry, types, events } = makeRegistry();
    const s = registry.register(reg(), PEER);
    expect(s.reportHealth({ healthy: false, message: 'GET /health: 503' })).toMatchObject({
      healthy: false,
      healthMessage: 'GET /health: 503',
    });
    expect(registry.get('vm-1')?.healthy).toBe(false);
    s.reportHealth({ healthy: false, message: 'GET /health: 503' });
    s.reportHealth({ healthy: false, message: 'connection refused' });
    expect(registry.get('vm-1')?.healthMessage).toBe('connection refused');
    s.reportHealth({ healthy: true, message: '' });
    expect(types()).toEqual(['registered', 'unhealthy', 'healthy']);
    expect(events[1]?.previous?.healthy).toBe(true);
  });

  it('rejects an oversized health message', () => {
    const { registry } = makeRegistry();
    const s = registry.register(reg(), PEER);
    expect(() => s.reportHealth({ healthy: true, message: 'x'.repeat(1025) })).toThrow(
      'health.message of node vm-1 is 1025 bytes; the limit is 1024',
    );
  });

  it('keeps a disconnected workload, health unchanged, for the grace period, then removes it', async () => {
    const { registry, clock, types } = makeRegistry({ graceMs: 30_000 });
    const s = registry.register(reg(), PEER);
    s.reportHealth({ healthy: false, message: 'down' });
    s.disconnect('connection lost');
    expect(registry.get('vm-1')).toMatchObject({
      connected: false,
      healthy: false,
      disconnectedAtMs: clock.now(),
    });
    s.disconnect('again'); // idempotent
    clock.advance(29_999);
    await flush();
    expect(registry.get('vm-1')).toBeDefined();
    clock.advance(1);
    await flush();
    expect(registry.get('vm-1')).toBeUndefined();
    expect(types()).toEqual(['registered', 'unhealthy', 'disconnected', 'expired']);
  });

  it('keeps a disconnected workload healthy when it was healthy', async () => {
    const { registry, clock } = makeRegistry();
    registry.register(reg(), PEER).disconnect();
    clock.advance(10_000);
    await flush();
    expect(registry.get('vm-1')).toMatchObject({ healthy: true, connected: false });
  });

  it('cancels the removal when the node registers again within the grace period', async () => {
    const { registry, clock, types } = makeRegistry({ graceMs: 30_000 });
    registry.register(reg(), PEER).disconnect();
    clock.advance(10_000);
    const again = registry.register(reg(), PEER);
    expect(registry.get('vm-1')).toMatchObject({ connected: true });
    expect(registry.get('vm-1')?.disconnectedAtMs).toBeUndefined();
    clock.advance(60_000);
    await flush();
    expect(registry.get('vm-1')).toBeDefined();
    expect(again.active).toBe(true);
    expect(clock.pendingSleeps).toBe(0);
    expect(types()).toEqual(['registered', 'disconnected', 'replaced']);
  });

  it('removes at once on deregistration', () => {
    const { registry, types, clock } = makeRegistry();
    const s = registry.register(reg(), PEER);
    expect(s.deregister('shutdown')?.name).toBe('default/vm-1');
    expect(registry.get('vm-1')).toBeUndefined();
    expect(s.active).toBe(false);
    s.disconnect(); // the stream closing afterwards changes nothing
    expect(clock.pendingSleeps).toBe(0);
    expect(types()).toEqual(['registered', 'deregistered']);
  });

  it('removes at once on disconnect with a zero grace period', () => {
    const { registry, types } = makeRegistry({ graceMs: 0 });
    registry.register(reg(), PEER).disconnect();
    expect(registry.get('vm-1')).toBeUndefined();
    expect(types()).toEqual(['registered', 'expired']);
  });

  it('logs registrations and removals with the node', async () => {
    const logs = new LogCapture();
    const clock = new FakeClock();
    const registry = new WorkloadRegistry({ logger: logs.logger, clock, disconnectGraceMs: 5 });
    registry.register(reg(), PEER).disconnect('connection lost');
    clock.advance(5);
    await flush();
    expect(logs.find('Registered workload', 'info')[0]).toMatchObject({
      node: 'vm-1',
      spiffeId: PEER.spiffeId,
      address: '10.0.0.5',
    });
    expect(logs.find('Workload disconnected; keeping it for the grace period')[0]).toMatchObject({
      node: 'vm-1',
      reason: 'connection lost',
      graceMs: 5,
    });
    expect(logs.find('Removed workload after its grace period')).toHaveLength(1);
  });

  it('cancels grace timers on close and refuses registrations after it', async () => {
    const { registry, clock } = makeRegistry();
    registry.register(reg(), PEER).disconnect();
    expect(clock.pendingSleeps).toBe(1);
    await registry.close();
    await flush();
    expect(clock.pendingSleeps).toBe(0);
    expect(() => registry.register(reg(), PEER)).toThrow(ClosedError);
  });

  describe('workload groups', () => {
    const groups: Record<string, WorkloadGroupSpec> = {
      'default/reviews': {
        metadata: { labels: { team: 'books', app: 'from-metadata' } },
        template: {
          labels: { app: 'reviews', version: 'v1' },
          ports: { http: 9080, grpc: 9090 },
          serviceAccount: 'reviews',
          locality: 'eu/west',
          weight: 5,
          network: 'net-1',
        },
      },
    };

    it('fills in what the host leaves out; the host wins', () => {
      const { registry } = makeRegistry({ groups });
      registry.register(
        reg({
          serviceAccount: '',
          labels: { version: 'v2' },
          ports: [{ name: 'http', port: 8080 }],
          group: 'default/reviews',
        }),
        PEER,
      );
      expect(registry.get('vm-1')).toMatchObject({
        serviceAccount: 'reviews',
        labels: { team: 'books', app: 'reviews', version: 'v2' },
        ports: [
          { name: 'http', port: 8080 },
          { name: 'grpc', port: 9090 },
        ],
        group: 'default/reviews',
        locality: 'eu/west',
        weight: 5,
        network: 'net-1',
      });
    });

    it('still checks the template service account against the certificate', () => {
      const { registry } = makeRegistry({ groups });
      expect(() =>
        registry.register(reg({ serviceAccount: '', group: 'default/reviews' }), {
          node: 'vm-1',
          spiffeId: 'spiffe://cluster.local/ns/default/sa/other',
        }),
      ).toThrow('serviceAccount "reviews" of node vm-1 is not the one its certificate proves');
    });

    it.each([
      {
        name: 'a missing group',
        group: 'default/nope',
        msg: 'group default/nope of node vm-1: no such WorkloadGroup',
      },
      {
        name: 'a group in another namespace',
        group: 'prod/reviews',
        msg: "is not in the workload's namespace default",
      },
    ])('rejects $name', ({ group, msg }) => {
      const { registry } = makeRegistry({ groups });
      expect(() => registry.register(reg({ group }), PEER)).toThrow(msg);
    });

    it('rejects an empty service account without a group to supply one', () => {
      const { registry } = makeRegistry();
      expect(() => registry.register(reg({ serviceAccount: '' }), PEER)).toThrow(
        'serviceAccount of node vm-1 is empty',
      );
    });
  });
});
