import { silentLogger } from '../../common/logging';
import { FakeClock } from '../../test/helpers/fake-clock';
import type {
  ConfigObject,
  Kind,
  ServiceEntrySpec,
  SpecOf,
  WorkloadEntrySpec,
} from '../config/types';
import type { ConfigEvent } from '../store/store';
import { AggregateRegistry, MeshRegistry } from './registry';
import type { RegistryChange, Service, ServiceDiscovery, ServiceInstance } from './types';
import type { AuthenticatedPeer, WorkloadRegistration } from './workloads';

const REVIEWS = 'reviews.default.svc.cluster.local';

function obj<K extends Kind>(
  kind: K,
  name: string,
  spec: SpecOf<K>,
  meta: { namespace?: string; creationTimestamp?: string } = {},
): ConfigObject<K> {
  return {
    apiVersion: 'networking.istio.io/v1beta1',
    kind,
    metadata: {
      name,
      namespace: meta.namespace ?? 'default',
      ...(meta.creationTimestamp ? { creationTimestamp: meta.creationTimestamp } : {}),
    },
    spec,
  };
}

const reviewsSe = (over: Partial<ServiceEntrySpec> = {}) =>
  obj('ServiceEntry', 'reviews', {
    hosts: [REVIEWS],
    location: 'MESH_INTERNAL',
    resolution: 'STATIC',
    ports: [{ number: 9080, name: 'http' }],
    workloadSelector: { labels: { app: 'reviews' } },
    ...over,
  });

const workloadEntry = (name: string, spec: WorkloadEntrySpec, namespace = 'default') =>
  obj('WorkloadEntry', name, spec, { namespace });

const ev = (type: ConfigEvent['type'], object: ConfigObject): ConfigEvent => ({ type, object });

function peerFor(node: string, sa = 'reviews', ns = 'default'): AuthenticatedPeer {
  return { node, spiffeId: `spiffe://cluster.local/ns/${ns}/sa/${sa}` };
}

function registration(
  node: string,
  over: Partial<WorkloadRegistration> = {},
): WorkloadRegistration {
  return {
    node,
    namespace: 'default',
    serviceAccount: 'reviews',
    address: '10.0.0.5',
    labels: { app: 'reviews' },
    ports: [{ name: 'http', port: 9080 }],
    ...over,
  };
}

function setup(graceMs = 30_000) {
  const clock = new FakeClock();
  const registry = new MeshRegistry({ logger: silentLogger(), clock, disconnectGraceMs: graceMs });
  const changes: RegistryChange[] = [];
  registry.onChange(c => changes.push(c));
  return { registry, clock, changes };
}

const addrs = (list: readonly ServiceInstance[]) =>
  list.map(i => `${i.endpoint.address}:${i.endpoint.port}${i.healthy ? '' : '(unhealthy)'}`);

const flush = () => new Promise(resolve => setImmediate(resolve));

describe('MeshRegistry', () => {
  let registry: MeshRegistry;
  afterEach(async () => {
    await registry.close();
  });

  it('builds services and instances from a full config list', () => {
    const s = setup();
    registry = s.registry;
    registry.applyConfig([
      reviewsSe(),
      obj('ServiceEntry', 'ext', {
        hosts: ['api.example.com'],
        resolution: 'DNS',
        ports: [{ number: 443, name: 'tls' }],
      }),
      workloadEntry('we-1', { address: '10.0.1.1', labels: { app: 'reviews' } }),
      obj('DestinationRule', 'ignored', { host: REVIEWS }),
    ]);
    expect(registry.services().map(x => x.hostname)).toEqual(['api.example.com', REVIEWS]);
    expect(registry.getService(REVIEWS)?.location).toBe('MESH_INTERNAL');
    expect(registry.getService('nope')).toBeUndefined();
    expect(addrs(registry.instances(REVIEWS, 9080))).toEqual(['10.0.1.1:9080']);
    expect(registry.instances(REVIEWS, 1234)).toEqual([]);
    expect(addrs(registry.instances('api.example.com', 443))).toEqual(['api.example.com:443']);
    expect(s.changes).toEqual([
      { services: ['api.example.com', REVIEWS], endpoints: ['api.example.com', REVIEWS] },
    ]);

    // Applying the same list again changes nothing and reports nothing.
    registry.applyConfig([
      reviewsSe(),
      obj('ServiceEntry', 'ext', {
        hosts: ['api.example.com'],
        resolution: 'DNS',
        ports: [{ number: 443, name: 'tls' }],
      }),
      workloadEntry('we-1', { address: '10.0.1.1', labels: { app: 'reviews' } }),
    ]);
    expect(s.changes).toHaveLength(1);

    // A list without the external entry removes it.
    registry.applyConfig([
      reviewsSe(),
      workloadEntry('we-1', { address: '10.0.1.1', labels: { app: 'reviews' } }),
    ]);
    expect(s.changes[1]).toEqual({ services: ['api.example.com'], endpoints: ['api.example.com'] });
    expect(registry.getService('api.example.com')).toBeUndefined();
  });

  it('applies store events and reports only the hosts that changed', () => {
    const s = setup();
    registry = s.registry;
    registry.onConfigEvents([ev('added', reviewsSe())]);
    // A new service without instances: its endpoints did not change.
    expect(s.changes.pop()).toEqual({ services: [REVIEWS], endpoints: [] });

    // A WorkloadEntry the selector picks: endpoints, and services (no new service account).
    registry.onConfigEvents([
      ev('added', workloadEntry('we-1', { address: '10.0.1.1', labels: { app: 'reviews' } })),
    ]);
    expect(s.changes.pop()).toEqual({ services: [], endpoints: [REVIEWS] });
    expect(addrs(registry.instances(REVIEWS, 9080))).toEqual(['10.0.1.1:9080']);

    // One it does not pick, or one in another namespace: nothing to report.
    registry.onConfigEvents([
      ev('added', workloadEntry('we-2', { address: '10.0.1.2', labels: { app: 'ratings' } })),
      ev(
        'added',
        workloadEntry('we-3', { address: '10.0.1.3', labels: { app: 'reviews' } }, 'prod'),
      ),
    ]);
    expect(s.changes).toEqual([]);

    // Relabelling we-2 into the selector, with a service account: service and endpoints.
    registry.onConfigEvents([
      ev(
        'updated',
        workloadEntry('we-2', {
          address: '10.0.1.2',
          labels: { app: 'reviews' },
          serviceAccount: 'reviews',
        }),
      ),
    ]);
    expect(s.changes.pop()).toEqual({ services: [REVIEWS], endpoints: [REVIEWS] });
    expect(registry.getService(REVIEWS)?.serviceAccounts).toEqual([
      'spiffe://cluster.local/ns/default/sa/reviews',
    ]);
    expect(addrs(registry.instances(REVIEWS, 9080))).toEqual(['10.0.1.1:9080', '10.0.1.2:9080']);

    // Relabelling we-1 out of the selector removes it (the old labels matched).
    registry.onConfigEvents([
      ev('updated', workloadEntry('we-1', { address: '10.0.1.1', labels: { app: 'other' } })),
    ]);
    expect(s.changes.pop()).toEqual({ services: [], endpoints: [REVIEWS] });
    expect(addrs(registry.instances(REVIEWS, 9080))).toEqual(['10.0.1.2:9080']);

    // Deleting the entry removes its host, and its instances with it.
    registry.onConfigEvents([ev('deleted', reviewsSe())]);
    expect(s.changes.pop()).toEqual({ services: [REVIEWS], endpoints: [REVIEWS] });
    expect(registry.services()).toEqual([]);
    expect(registry.instances(REVIEWS, 9080)).toEqual([]);
  });

  it('reports a port change as a service change', () => {
    const s = setup();
    registry = s.registry;
    registry.onConfigEvents([ev('added', reviewsSe())]);
    registry.onConfigEvents([
      ev('updated', reviewsSe({ ports: [{ number: 9080, name: 'grpc' }] })),
    ]);
    expect(s.changes.pop()).toEqual({ services: [REVIEWS], endpoints: [] });
    expect(registry.getService(REVIEWS)?.ports[0]?.protocol).toBe('GRPC');
  });

  it('puts registered hosts into the services that select them and follows their health', async () => {
    const s = setup(30_000);
    registry = s.registry;
    registry.applyConfig([reviewsSe()]);
    s.changes.length = 0;

    const session = registry.workloads.register(registration('vm-1'), peerFor('vm-1'));
    expect(s.changes.pop()).toEqual({ services: [REVIEWS], endpoints: [REVIEWS] });
    const [inst] = registry.instances(REVIEWS, 9080);
    expect(inst).toEqual({
      hostname: REVIEWS,
      servicePort: 9080,
      endpoint: { address: '10.0.0.5', port: 9080 },
      labels: { app: 'reviews' },
      serviceAccount: 'spiffe://cluster.local/ns/default/sa/reviews',
      workload: 'default/vm-1',
      node: 'vm-1',
      healthy: true,
      weight: 1,
      tlsMode: 'istio',
    });
    expect(registry.getService(REVIEWS)?.serviceAccounts).toEqual([
      'spiffe://cluster.local/ns/default/sa/reviews',
    ]);

    // Health flips are endpoint-only changes and take effect at once.
    session.reportHealth({ healthy: false, message: 'probe failed' });
    expect(s.changes.pop()).toEqual({ services: [], endpoints: [REVIEWS] });
    expect(addrs(registry.instances(REVIEWS, 9080))).toEqual(['10.0.0.5:9080(unhealthy)']);
    session.reportHealth({ healthy: true, message: '' });
    expect(s.changes.pop()).toEqual({ services: [], endpoints: [REVIEWS] });

    // A dropped stream changes nothing until the grace period ends.
    session.disconnect();
    expect(s.changes).toEqual([]);
    expect(addrs(registry.instances(REVIEWS, 9080))).toEqual(['10.0.0.5:9080']);
    s.clock.advance(30_000);
    await flush();
    expect(s.changes.pop()).toEqual({ services: [REVIEWS], endpoints: [REVIEWS] });
    expect(registry.instances(REVIEWS, 9080)).toEqual([]);
  });

  it('moves a re-registered host between services when its labels change', () => {
    const s = setup();
    registry = s.registry;
    const ratings = 'ratings.default.svc.cluster.local';
    registry.applyConfig([
      reviewsSe(),
      obj('ServiceEntry', 'ratings', {
        hosts: [ratings],
        location: 'MESH_INTERNAL',
        resolution: 'STATIC',
        ports: [{ number: 9080, name: 'http' }],
        workloadSelector: { labels: { app: 'ratings' } },
      }),
    ]);
    const session = registry.workloads.register(registration('vm-1'), peerFor('vm-1'));
    s.changes.length = 0;
    session.reregister(registration('vm-1', { labels: { app: 'ratings' } }));
    expect(s.changes).toEqual([{ services: [ratings, REVIEWS], endpoints: [ratings, REVIEWS] }]);
    expect(registry.instances(REVIEWS, 9080)).toEqual([]);
    expect(addrs(registry.instances(ratings, 9080))).toEqual(['10.0.0.5:9080']);
  });

  it('removes a deregistered host at once', () => {
    const s = setup();
    registry = s.registry;
    registry.applyConfig([reviewsSe()]);
    registry.workloads.register(registration('vm-1'), peerFor('vm-1')).deregister();
    expect(registry.instances(REVIEWS, 9080)).toEqual([]);
  });

  it('finds a proxy’s inbound instances by node (registered) or IP (WorkloadEntry)', () => {
    const s = setup();
    registry = s.registry;
    registry.applyConfig([
      reviewsSe(),
      obj('ServiceEntry', 'static', {
        hosts: ['legacy.default.svc.cluster.local'],
        location: 'MESH_INTERNAL',
        resolution: 'STATIC',
        ports: [{ number: 7000, name: 'tcp' }],
        endpoints: [{ address: '10.0.9.9' }],
      }),
      workloadEntry('we-1', { address: '10.0.1.1', labels: { app: 'reviews' } }),
    ]);
    registry.workloads.register(registration('vm-1', { address: '10.0.0.5' }), peerFor('vm-1'));

    const byNode = registry.proxyInstances({ node: 'vm-1', namespace: 'default', ips: [] });
    expect(byNode.map(i => i.workload)).toEqual(['default/vm-1']);
    // The registered host's IP alone proves nothing: another node at that IP gets nothing.
    expect(
      registry.proxyInstances({ node: 'vm-x', namespace: 'default', ips: ['10.0.0.5'] }),
    ).toEqual([]);
    const byIp = registry.proxyInstances({
      node: 'we-host',
      namespace: 'default',
      ips: ['10.0.1.1', '10.0.9.9', '10.0.1.1'],
    });
    // Sorted by hostname, then port and workload.
    expect(byIp.map(i => `${i.hostname}:${i.servicePort}`)).toEqual([
      'legacy.default.svc.cluster.local:7000',
      `${REVIEWS}:9080`,
    ]);
  });

  it('gives a host declared twice to the oldest ServiceEntry', () => {
    const s = setup();
    registry = s.registry;
    const older = obj(
      'ServiceEntry',
      'b-older',
      {
        hosts: ['shared.example.com'],
        resolution: 'DNS',
        ports: [{ number: 80, name: 'http' }],
      },
      { creationTimestamp: '2026-01-01T00:00:00Z' },
    );
    const newer = obj(
      'ServiceEntry',
      'a-newer',
      {
        hosts: ['shared.example.com'],
        resolution: 'DNS',
        ports: [{ number: 8080, name: 'http' }],
      },
      { creationTimestamp: '2026-02-01T00:00:00Z' },
    );
    registry.applyConfig([newer, older]);
    expect(registry.getService('shared.example.com')?.source.name).toBe('b-older');
    registry.onConfigEvents([ev('deleted', older)]);
    expect(registry.getService('shared.example.com')?.source.name).toBe('a-newer');
    expect(s.changes.pop()).toEqual({
      services: ['shared.example.com'],
      endpoints: ['shared.example.com'],
    });
  });

  it('templates registrations with WorkloadGroups from the config', () => {
    const s = setup();
    registry = s.registry;
    registry.applyConfig([
      reviewsSe(),
      obj('WorkloadGroup', 'reviews', {
        template: { labels: { app: 'reviews', version: 'v3' }, serviceAccount: 'reviews' },
      }),
    ]);
    registry.workloads.register(
      registration('vm-1', { labels: {}, serviceAccount: '', group: 'default/reviews' }),
      peerFor('vm-1'),
    );
    expect(registry.instances(REVIEWS, 9080)[0]?.labels).toEqual({ app: 'reviews', version: 'v3' });
  });

  it('keeps working when a listener throws', () => {
    const s = setup();
    registry = s.registry;
    registry.onChange(() => {
      throw new Error('boom');
    });
    registry.applyConfig([reviewsSe()]);
    expect(s.changes).toHaveLength(1);
  });
});

/** A minimal in-memory registry, as a Consul adapter would look from the outside. */
class StaticRegistry implements ServiceDiscovery {
  private readonly listeners = new Set<(c: RegistryChange) => void>();
  constructor(
    public svc: Service[],
    public insts: ServiceInstance[],
  ) {}
  services() {
    return this.svc;
  }
  getService(h: string) {
    return this.svc.find(s => s.hostname === h);
  }
  instances(h: string, port: number) {
    return this.insts.filter(i => i.hostname === h && i.servicePort === port);
  }
  proxyInstances(p: { node: string }) {
    return this.insts.filter(i => i.node === p.node);
  }
  onChange(l: (c: RegistryChange) => void) {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
  fire(c: RegistryChange) {
    for (const l of this.listeners) l(c);
  }
}

function service(hostname: string, name = 'src'): Service {
  return {
    hostname,
    namespace: 'default',
    addresses: [],
    ports: [{ name: 'http', port: 80, protocol: 'HTTP' }],
    location: 'MESH_EXTERNAL',
    resolution: 'STATIC',
    serviceAccounts: [],
    exportTo: ['*'],
    source: { kind: 'ServiceEntry', namespace: 'default', name },
  };
}

function instance(hostname: string, address: string, node?: string): ServiceInstance {
  return {
    hostname,
    servicePort: 80,
    endpoint: { address, port: 80 },
    labels: {},
    workload: `default/${address}`,
    ...(node ? { node } : {}),
    healthy: true,
    weight: 1,
    tlsMode: 'disabled',
  };
}

describe('AggregateRegistry', () => {
  it('merges services with the first registry winning a hostname', () => {
    const a = new StaticRegistry([service('x.consul', 'a'), service('shared', 'a')], []);
    const b = new StaticRegistry([service('shared', 'b'), service('y.consul', 'b')], []);
    const agg = new AggregateRegistry([a, b]);
    expect(agg.services().map(s => `${s.hostname}@${s.source.name}`)).toEqual([
      'shared@a',
      'x.consul@a',
      'y.consul@b',
    ]);
    expect(agg.getService('shared')?.source.name).toBe('a');
    expect(agg.getService('y.consul')?.source.name).toBe('b');
    expect(agg.getService('none')).toBeUndefined();
    expect(agg.registries).toEqual([a, b]);
  });

  it('collects instances and proxy instances from every registry', () => {
    const a = new StaticRegistry([service('shared')], [instance('shared', '10.0.0.1', 'n1')]);
    const b = new StaticRegistry(
      [service('shared')],
      [instance('shared', '10.0.0.2', 'n1'), instance('other', '10.0.0.3')],
    );
    const agg = new AggregateRegistry([a, b]);
    expect(addrs(agg.instances('shared', 80))).toEqual(['10.0.0.1:80', '10.0.0.2:80']);
    expect(addrs(agg.instances('other', 80))).toEqual(['10.0.0.3:80']);
    expect(agg.instances('none', 80)).toEqual([]);
    expect(addrs(agg.proxyInstances({ node: 'n1', namespace: 'default', ips: [] }))).toEqual([
      '10.0.0.1:80',
      '10.0.0.2:80',
    ]);
  });

  it('forwards changes, and reports a registry’s hosts when it is added or removed', () => {
    const a = new StaticRegistry([service('x')], []);
    const agg = new AggregateRegistry([a]);
    const changes: RegistryChange[] = [];
    agg.onChange(c => changes.push(c));
    expect(agg.services().map(s => s.hostname)).toEqual(['x']);

    a.svc = [service('x'), service('z')];
    a.fire({ services: ['z'], endpoints: [] });
    expect(changes.pop()).toEqual({ services: ['z'], endpoints: [] });
    expect(agg.services().map(s => s.hostname)).toEqual(['x', 'z']);

    const b = new StaticRegistry([service('y')], []);
    const remove = agg.add(b);
    expect(changes.pop()).toEqual({ services: ['y'], endpoints: ['y'] });
    expect(agg.services().map(s => s.hostname)).toEqual(['x', 'y', 'z']);
    remove();
    expect(changes.pop()).toEqual({ services: ['y'], endpoints: ['y'] });
    expect(agg.services().map(s => s.hostname)).toEqual(['x', 'z']);
    b.fire({ services: ['y'], endpoints: [] });
    expect(changes).toEqual([]);
    remove(); // idempotent
  });

  it('works with the built-in registry as its first member', async () => {
    const mesh = new MeshRegistry({ logger: silentLogger() });
    const consul = new StaticRegistry([service('orders.service.consul')], []);
    const agg = new AggregateRegistry([mesh, consul]);
    const changes: RegistryChange[] = [];
    agg.onChange(c => changes.push(c));
    mesh.applyConfig([reviewsSe()]);
    expect(changes).toEqual([{ services: [REVIEWS], endpoints: [] }]);
    expect(agg.services().map(s => s.hostname)).toEqual(['orders.service.consul', REVIEWS]);
    await mesh.close();
  });
});

describe('MeshRegistry incremental updates', () => {
  /** Everything a consumer can read, serialised. */
  function snapshot(r: MeshRegistry, nodes: readonly string[]): unknown {
    return JSON.parse(
      JSON.stringify({
        services: r.services(),
        instances: r
          .services()
          .map(s => s.ports.map(p => [s.hostname, p.port, r.instances(s.hostname, p.port)])),
        proxies: nodes.map(n => r.proxyInstances({ node: n, namespace: 'default', ips: [] })),
        byIp: r.proxyInstances({
          node: '-',
          namespace: 'default',
          ips: ['10.0.0.1', '10.0.0.2', '10.2.0.1'],
        }),
      }),
    );
  }

  /** A small deterministic PRNG (mulberry32), so a failure can be replayed. */
  function rng(seed: number): () => number {
    let a = seed;
    return () => {
      a = (a + 0x6d2b79f5) | 0;
      let t = Math.imul(a ^ (a >>> 15), 1 | a);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  const config: ConfigObject[] = [
    reviewsSe({
      ports: [
        { number: 9080, name: 'http' },
        { number: 9090, name: 'grpc' },
      ],
    }),
    obj('ServiceEntry', 'ratings', {
      hosts: ['ratings.default.svc.cluster.local', 'ratings-alias.default.svc.cluster.local'],
      location: 'MESH_INTERNAL',
      resolution: 'STATIC',
      ports: [{ number: 9080, name: 'http', targetPort: 8080 }],
      workloadSelector: { labels: { app: 'ratings' } },
      subjectAltNames: ['spiffe://cluster.local/ns/default/sa/legacy'],
    }),
    obj('ServiceEntry', 'dns', {
      hosts: ['dns.default.svc.cluster.local'],
      location: 'MESH_INTERNAL',
      resolution: 'DNS',
      ports: [{ number: 80, name: 'http' }],
      workloadSelector: { labels: { app: 'reviews', version: 'v2' } },
    }),
    // A WorkloadEntry at an address some registered hosts also take: exercises the fallback.
    workloadEntry('we-1', {
      address: '10.0.0.1',
      labels: { app: 'reviews' },
      serviceAccount: 'we',
    }),
  ];

  it.each([1, 2, 3, 4, 5])(
    'matches a registry built from scratch after every step (seed %i)',
    async seed => {
      const random = rng(seed);
      const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)] as T;
      const nodes = Array.from({ length: 8 }, (_, i) => `vm-${i}`);
      // No grace period: a dropped stream removes its workload at once.
      const live = new MeshRegistry({ logger: silentLogger(), disconnectGraceMs: 0 });
      let we2: ConfigObject | undefined;
      const configNow = () => (we2 ? [...config, we2] : config);
      live.applyConfig(config);
      const sessions = new Map<string, ReturnType<typeof live.workloads.register>>();
      const current = new Map<string, WorkloadRegistration>();
      const changes: RegistryChange[] = [];
      live.onChange(c => changes.push(c));
      try {
        for (let step = 0; step < 150; step++) {
          const node = pick(nodes);
          const session = sessions.get(node);
          const action =
            random() < 0.1
              ? 'workload-entry'
              : session
                ? pick(['health', 'health', 'reregister', 'deregister', 'disconnect'])
                : 'register';
          const before = snapshot(live, nodes);
          changes.length = 0;
          if (action === 'register' || action === 'reregister') {
            const reg = registration(node, {
              address: pick(['10.0.0.1', '10.0.0.2', `10.1.0.${step}`, `10.1.1.${step}`]),
              labels: pick<Record<string, string>>([
                { app: 'reviews' },
                { app: 'reviews', version: 'v2' },
                { app: 'ratings' },
                { app: 'other' },
              ]),
              serviceAccount: pick(['reviews', 'ratings']),
              health: { healthy: random() < 0.7, message: '' },
            });
            const peer = peerFor(node, reg.serviceAccount);
            if (session && session.peer.spiffeId === peer.spiffeId) session.reregister(reg);
            else sessions.set(node, live.workloads.register(reg, peer));
            current.set(node, reg);
          } else if (action === 'health' && session) {
            const healthy = random() < 0.5;
            session.reportHealth({ healthy, message: '' });
            const reg = current.get(node) as WorkloadRegistration;
            current.set(node, { ...reg, health: { healthy, message: '' } });
          } else if (action === 'workload-entry') {
            // A second WorkloadEntry comes, moves or goes (config events mid-stream).
            const next =
              random() < 0.3
                ? undefined
                : workloadEntry('we-2', {
                    address: pick(['10.0.0.1', '10.0.0.2', '10.2.0.1']),
                    labels: pick<Record<string, string>>([{ app: 'reviews' }, { app: 'ratings' }]),
                  });
            if (next) live.onConfigEvents([ev(we2 ? 'updated' : 'added', next)]);
            else if (we2) live.onConfigEvents([ev('deleted', we2)]);
            we2 = next;
          } else if (session) {
            if (action === 'disconnect') session.disconnect();
            else session.deregister();
            sessions.delete(node);
            current.delete(node);
          }

          const fresh = new MeshRegistry({ logger: silentLogger() });
          fresh.applyConfig(configNow());
          for (const [n, reg] of current)
            fresh.workloads.register(reg, peerFor(n, reg.serviceAccount));
          const after = snapshot(live, nodes);
          expect({ step, action, node, state: after }).toEqual({
            step,
            action,
            node,
            state: snapshot(fresh, nodes),
          });
          await fresh.close();
          // A change is reported exactly when something readable changed.
          expect(changes.length > 0).toBe(JSON.stringify(after) !== JSON.stringify(before));
        }
      } finally {
        await live.close();
      }
    },
  );
});
