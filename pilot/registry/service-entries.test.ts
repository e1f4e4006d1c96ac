import type { ConfigObject, ServiceEntrySpec, WorkloadEntrySpec } from '../config/types';
import {
  deriveServiceEntry,
  protocolOf,
  resolveExportTo,
  selects,
  workloadFromEntry,
  workloadFromRegistration,
} from './service-entries';
import type { Protocol, ServiceInstance } from './types';
import type { RegisteredWorkload } from './workloads';

const TD = 'cluster.local';

function se(
  name: string,
  spec: ServiceEntrySpec,
  namespace = 'default',
): ConfigObject<'ServiceEntry'> {
  return {
    apiVersion: 'networking.istio.io/v1beta1',
    kind: 'ServiceEntry',
    metadata: { name, namespace },
    spec,
  };
}

function we(
  name: string,
  spec: WorkloadEntrySpec,
  namespace = 'default',
): ConfigObject<'WorkloadEntry'> {
  return {
    apiVersion: 'networking.istio.io/v1beta1',
    kind: 'WorkloadEntry',
    metadata: { name, namespace },
    spec,
  };
}

function registered(over: Partial<RegisteredWorkload> = {}): RegisteredWorkload {
  const node = over.node ?? 'vm-1';
  const namespace = over.namespace ?? 'default';
  return {
    name: `${namespace}/${node}`,
    node,
    namespace,
    serviceAccount: 'reviews',
    spiffeId: `spiffe://${TD}/ns/${namespace}/sa/reviews`,
    address: '10.0.0.5',
    labels: { app: 'reviews', version: 'v1' },
    ports: [{ name: 'http', port: 9080 }],
    weight: 1,
    healthy: true,
    healthMessage: '',
    connected: true,
    registeredAtMs: 0,
    ...over,
  };
}

/** The instances of `host` as `address:port` strings, per service port. */
function endpoints(instances: readonly ServiceInstance[]): string[] {
  return instances.map(i => `${i.servicePort}->${i.endpoint.address}:${i.endpoint.port}`);
}

describe('protocolOf', () => {
  const cases: { name: string; port: string; protocol?: string; want: Protocol }[] = [
    { name: 'http prefix', port: 'http-api', want: 'HTTP' },
    { name: 'bare http', port: 'http', want: 'HTTP' },
    { name: 'http2', port: 'http2-web', want: 'HTTP2' },
    { name: 'grpc', port: 'grpc', want: 'GRPC' },
    { name: 'grpc-web is still grpc by prefix', port: 'grpc-web', want: 'GRPC' },
    { name: 'https', port: 'https-admin', want: 'HTTPS' },
    { name: 'tls', port: 'tls', want: 'TLS' },
    { name: 'tcp', port: 'tcp-db', want: 'TCP' },
    { name: 'mongo', port: 'mongo', want: 'MONGO' },
    { name: 'redis', port: 'redis-cache', want: 'REDIS' },
    { name: 'udp', port: 'udp-dns', want: 'UDP' },
    { name: 'upper-case prefix', port: 'HTTP-api', want: 'HTTP' },
    { name: 'unknown prefix is TCP', port: 'mysql', want: 'TCP' },
    { name: 'prefix must end at a dash', port: 'httpx', want: 'TCP' },
    { name: 'empty name is TCP', port: '', want: 'TCP' },
    { name: 'protocol wins over the name', port: 'http-api', protocol: 'GRPC', want: 'GRPC' },
    { name: 'protocol is case-insensitive', port: 'x', protocol: 'http2', want: 'HTTP2' },
    { name: 'unknown protocol is TCP', port: 'http', protocol: 'MYSQL', want: 'TCP' },
  ];
  it.each(cases)('$name', ({ port, protocol, want }) => {
    expect(protocolOf(port, protocol)).toBe(want);
  });
});

describe('selects', () => {
  it.each<{
    name: string;
    sel: Record<string, string> | undefined;
    labels: Record<string, string>;
    want: boolean;
  }>([
    {
      name: 'all selector labels present',
      sel: { app: 'a' },
      labels: { app: 'a', v: '1' },
      want: true,
    },
    {
      name: 'a value differs',
      sel: { app: 'a', v: '2' },
      labels: { app: 'a', v: '1' },
      want: false,
    },
    { name: 'a label missing', sel: { app: 'a' }, labels: {}, want: false },
    { name: 'empty selector picks everything', sel: {}, labels: { x: 'y' }, want: true },
    { name: 'undefined selector picks everything', sel: undefined, labels: {}, want: true },
  ])('$name', ({ sel, labels, want }) => {
    expect(selects(sel, labels)).toBe(want);
  });
});

describe('resolveExportTo', () => {
  it('defaults to everyone and resolves "." to the namespace', () => {
    expect(resolveExportTo(undefined, 'ns1')).toEqual(['*']);
    expect(resolveExportTo([], 'ns1')).toEqual(['*']);
    expect(resolveExportTo(['.', 'other', 'ns1'], 'ns1')).toEqual(['ns1', 'other']);
  });
});

describe('deriveServiceEntry', () => {
  it('makes one Service per host with protocols, defaults and its source', () => {
    const d = deriveServiceEntry(
      se('ext', {
        hosts: ['api.example.com', 'www.example.com'],
        ports: [
          { number: 443, name: 'https' },
          { number: 80, name: 'web', protocol: 'HTTP', targetPort: 8080 },
        ],
      }),
      [],
      TD,
    );
    expect([...d.keys()]).toEqual(['api.example.com', 'www.example.com']);
    expect(d.get('api.example.com')?.service).toEqual({
      hostname: 'api.example.com',
      namespace: 'default',
      addresses: [],
      ports: [
        { name: 'https', port: 443, protocol: 'HTTPS' },
        { name: 'web', port: 80, protocol: 'HTTP', targetPort: 8080 },
      ],
      location: 'MESH_EXTERNAL',
      resolution: 'NONE',
      serviceAccounts: [],
      exportTo: ['*'],
      source: { kind: 'ServiceEntry', namespace: 'default', name: 'ext' },
    });
    // resolution NONE: passthrough, no instances.
    expect(d.get('api.example.com')?.instances).toEqual([]);
  });

  it('maps STATIC endpoint ports by name, else targetPort, else the service port', () => {
    const d = deriveServiceEntry(
      se('vm', {
        hosts: ['vm.default.svc.cluster.local'],
        location: 'MESH_INTERNAL',
        resolution: 'STATIC',
        ports: [
          { number: 80, name: 'http' },
          { number: 81, name: 'http-alt', targetPort: 8081 },
          { number: 82, name: 'tcp' },
        ],
        endpoints: [
          { address: '10.0.0.1', ports: { http: 8080 }, labels: { version: 'v1' } },
          { address: '10.0.0.2', weight: 3, locality: 'us/east' },
        ],
      }),
      [],
      TD,
    );
    const host = d.get('vm.default.svc.cluster.local');
    expect(endpoints(host?.instances ?? [])).toEqual([
      '80->10.0.0.1:8080',
      '80->10.0.0.2:80',
      '81->10.0.0.1:8081',
      '81->10.0.0.2:8081',
      '82->10.0.0.1:82',
      '82->10.0.0.2:82',
    ]);
    expect(host?.instances[0]).toEqual({
      hostname: 'vm.default.svc.cluster.local',
      servicePort: 80,
      endpoint: { address: '10.0.0.1', port: 8080 },
      labels: { version: 'v1' },
      workload: 'default/vm/endpoints[0]',
      healthy: true,
      weight: 1,
      tlsMode: 'istio',
    });
    expect(host?.instances[1]).toMatchObject({ weight: 3, locality: 'us/east' });
  });

  it('keeps DNS endpoint addresses as written for the data plane to resolve', () => {
    const d = deriveServiceEntry(
      se('db', {
        hosts: ['db.example.com'],
        resolution: 'DNS',
        ports: [{ number: 5432, name: 'tcp-pg' }],
        endpoints: [{ address: 'db-1.internal.example.com' }, { address: '192.0.2.7' }],
      }),
      [],
      TD,
    );
    expect(endpoints(d.get('db.example.com')?.instances ?? [])).toEqual([
      '5432->db-1.internal.example.com:5432',
      '5432->192.0.2.7:5432',
    ]);
    // MESH_EXTERNAL static endpoints do not run our proxy.
    expect(d.get('db.example.com')?.instances.every(i => i.tlsMode === 'disabled')).toBe(true);
  });

  it('resolves the hosts themselves for DNS without endpoints, skipping wildcards', () => {
    const d = deriveServiceEntry(
      se('google', {
        hosts: ['www.google.com', '*.google.com'],
        resolution: 'DNS',
        ports: [{ number: 443, name: 'tls', targetPort: 8443 }],
      }),
      [],
      TD,
    );
    expect(endpoints(d.get('www.google.com')?.instances ?? [])).toEqual([
      '443->www.google.com:8443',
    ]);
    expect(d.get('www.google.com')?.instances[0]?.workload).toBe('default/google/www.google.com');
    expect(d.get('*.google.com')?.instances).toEqual([]);
  });

  it('selects WorkloadEntries and registered hosts of its namespace by label', () => {
    const workloads = [
      workloadFromRegistration(registered()),
      workloadFromRegistration(
        registered({ node: 'vm-2', address: '10.0.0.6', labels: { app: 'ratings' } }),
      ),
      workloadFromRegistration(
        registered({ node: 'vm-3', namespace: 'other', address: '10.0.0.7' }),
      ),
      workloadFromEntry(
        we('we-1', {
          address: '10.0.1.1',
          labels: { app: 'reviews', version: 'v2' },
          ports: { http: 9081 },
          serviceAccount: 'reviews-v2',
        }),
        TD,
      ),
      workloadFromEntry(
        we('we-plain', {
          address: '10.0.1.2',
          labels: { app: 'reviews', [`security.istio.io/tlsMode`]: 'disabled' },
        }),
        TD,
      ),
    ];
    const d = deriveServiceEntry(
      se('reviews', {
        hosts: ['reviews.default.svc.cluster.local'],
        location: 'MESH_INTERNAL',
        resolution: 'STATIC',
        ports: [{ number: 9080, name: 'http' }],
        workloadSelector: { labels: { app: 'reviews' } },
        subjectAltNames: ['spiffe://cluster.local/ns/default/sa/legacy'],
      }),
      workloads,
      TD,
    );
    const host = d.get('reviews.default.svc.cluster.local');
    expect(endpoints(host?.instances ?? [])).toEqual([
      '9080->10.0.0.5:9080',
      '9080->10.0.1.1:9081',
      '9080->10.0.1.2:9080',
    ]);
    expect(host?.instances.map(i => [i.workload, i.node, i.tlsMode, i.serviceAccount])).toEqual([
      ['default/vm-1', 'vm-1', 'istio', 'spiffe://cluster.local/ns/default/sa/reviews'],
      ['default/we-1', undefined, 'istio', 'spiffe://cluster.local/ns/default/sa/reviews-v2'],
      ['default/we-plain', undefined, 'disabled', undefined],
    ]);
    expect(host?.service.serviceAccounts).toEqual([
      'spiffe://cluster.local/ns/default/sa/legacy',
      'spiffe://cluster.local/ns/default/sa/reviews',
      'spiffe://cluster.local/ns/default/sa/reviews-v2',
    ]);
  });

  it('carries the health of registered hosts and drops a second workload at the same address', () => {
    const d = deriveServiceEntry(
      se('reviews', {
        hosts: ['reviews.default.svc.cluster.local'],
        location: 'MESH_INTERNAL',
        resolution: 'STATIC',
        ports: [{ number: 9080, name: 'http' }],
        workloadSelector: { labels: { app: 'reviews' } },
      }),
      [
        // The WorkloadEntry comes first but the registered host (live health) wins the address.
        workloadFromEntry(we('dup', { address: '10.0.0.5', labels: { app: 'reviews' } }), TD),
        workloadFromRegistration(registered({ healthy: false })),
      ],
      TD,
    );
    const instances = d.get('reviews.default.svc.cluster.local')?.instances ?? [];
    expect(instances.map(i => [i.workload, i.healthy])).toEqual([['default/vm-1', false]]);
  });

  it('keeps registered hosts that share an address apart (each is its own node)', () => {
    const d = deriveServiceEntry(
      se('reviews', {
        hosts: ['reviews.default.svc.cluster.local'],
        location: 'MESH_INTERNAL',
        resolution: 'STATIC',
        ports: [{ number: 9080, name: 'http' }],
        workloadSelector: { labels: { app: 'reviews' } },
      }),
      [
        workloadFromRegistration(
          registered({ node: 'vm-a', ports: [{ name: 'http', port: 9001 }] }),
        ),
        workloadFromRegistration(
          registered({ node: 'vm-b', ports: [{ name: 'http', port: 9002 }] }),
        ),
        // Same address as the registered hosts: the same machine, dropped.
        workloadFromEntry(we('dup', { address: '10.0.0.5', labels: { app: 'reviews' } }), TD),
      ],
      TD,
    );
    const instances = d.get('reviews.default.svc.cluster.local')?.instances ?? [];
    expect(instances.map(i => [i.workload, `${i.endpoint.address}:${i.endpoint.port}`])).toEqual([
      ['default/vm-a', '10.0.0.5:9001'],
      ['default/vm-b', '10.0.0.5:9002'],
    ]);
  });

  it('ignores a workloadSelector on a MESH_EXTERNAL entry', () => {
    const d = deriveServiceEntry(
      se('ext', {
        hosts: ['x.example.com'],
        resolution: 'STATIC',
        ports: [{ number: 80, name: 'http' }],
        workloadSelector: { labels: { app: 'reviews' } },
      }),
      [workloadFromRegistration(registered())],
      TD,
    );
    expect(d.get('x.example.com')?.instances).toEqual([]);
  });

  it('honours a tlsMode label on inline endpoints and lists their service accounts', () => {
    const d = deriveServiceEntry(
      se('mixed', {
        hosts: ['m.default.svc.cluster.local'],
        location: 'MESH_INTERNAL',
        resolution: 'STATIC',
        ports: [{ number: 80, name: 'http' }],
        endpoints: [
          { address: '10.0.0.1', serviceAccount: 'm' },
          { address: '10.0.0.2', labels: { 'security.istio.io/tlsMode': 'disabled' } },
        ],
        exportTo: ['.'],
      }),
      [],
      TD,
    );
    const host = d.get('m.default.svc.cluster.local');
    expect(host?.instances.map(i => i.tlsMode)).toEqual(['istio', 'disabled']);
    expect(host?.service.serviceAccounts).toEqual(['spiffe://cluster.local/ns/default/sa/m']);
    expect(host?.service.exportTo).toEqual(['default']);
  });
});
