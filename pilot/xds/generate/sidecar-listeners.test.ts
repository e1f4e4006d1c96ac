/** Sidecar LDS, each listener encoded and decoded with the real Envoy protos. */
import type { ConfigObject } from '../../config/types';
import { LISTENER_TYPE, type PushContext } from '../model';
import type { Service, ServiceInstance } from '../../registry/types';
import { createGenerator } from './index';
import { expectEncodes } from './proto-check';
import { config, fqdn, instance, proxy, pushContext, service } from './testing';
import { TYPES, type Obj } from './util';

const gen = createGenerator();
const sidecar = proxy('sidecar', { ip: '10.0.0.100', labels: { app: 'reviews' } });
const REVIEWS = fqdn('reviews');

function listeners(push: PushContext, who = sidecar): Record<string, Obj> {
  const out = gen.generate(LISTENER_TYPE, who, push, []);
  expectEncodes(LISTENER_TYPE, out);
  return Object.fromEntries(out.map(r => [r.name, r.resource as Obj]));
}

function push(
  input: {
    configs?: ConfigObject[];
    services?: Service[];
    instances?: ServiceInstance[];
    registryOnly?: boolean;
  } = {},
) {
  return pushContext({
    services: input.services ?? [
      service('reviews', ['http:9080', 'grpc:9090']),
      service('db', ['tcp:5432'], { addresses: ['10.96.0.5'] }),
      service('cache', ['redis:6379']),
    ],
    instances: input.instances ?? [],
    configs: input.configs ?? [],
    ...(input.registryOnly ? { mesh: { outboundTrafficPolicy: 'REGISTRY_ONLY' as const } } : {}),
  });
}

type Chain = {
  name?: string;
  filterChainMatch?: Obj;
  filters: { name: string; typedConfig: Obj }[];
  transportSocket?: Obj;
};
const chains = (l: Obj) => (l.filterChains ?? []) as Chain[];
const tcpTarget = (c: Chain) => {
  const t = c.filters[0]!.typedConfig;
  return t.cluster ?? t.weightedClusters;
};

describe('virtualOutbound', () => {
  it('captures on 15001, hands off by original destination, passes unknown traffic through (ALLOW_ANY)', () => {
    const l = listeners(push()).virtualOutbound!;
    expect(l).toEqual({
      name: 'virtualOutbound',
      address: { socketAddress: { address: '0.0.0.0', portValue: 15001 } },
      useOriginalDst: { value: true },
      trafficDirection: 'OUTBOUND',
      defaultFilterChain: {
        name: 'PassthroughCluster',
        filters: [
          {
            name: 'envoy.filters.network.tcp_proxy',
            typedConfig: {
              '@type': TYPES.tcpProxy,
              statPrefix: 'PassthroughCluster',
              cluster: 'PassthroughCluster',
            },
          },
        ],
      },
    });
  });

  it('drops unknown traffic with REGISTRY_ONLY, from the mesh or a Sidecar', () => {
    const target = (p: PushContext) =>
      tcpTarget(listeners(p).virtualOutbound!.defaultFilterChain as Chain);
    expect(target(push({ registryOnly: true }))).toBe('BlackHoleCluster');
    expect(
      target(
        push({
          configs: [
            config('Sidecar', 'default', 'default', {
              outboundTrafficPolicy: { mode: 'REGISTRY_ONLY' },
            }),
          ],
        }),
      ),
    ).toBe('BlackHoleCluster');
    expect(
      target(
        push({
          registryOnly: true,
          configs: [
            config('Sidecar', 'default', 'default', {
              outboundTrafficPolicy: { mode: 'ALLOW_ANY' },
            }),
          ],
        }),
      ),
    ).toBe('PassthroughCluster');
  });
});

describe('outbound port listeners', () => {
  it('has one 0.0.0.0_PORT listener per port, not bound, HTTP ports with RDS named by port', () => {
    const all = listeners(push());
    expect(Object.keys(all)).toEqual([
      'virtualOutbound',
      '0.0.0.0_5432',
      '0.0.0.0_6379',
      '0.0.0.0_9080',
      '0.0.0.0_9090',
      'virtualInbound',
    ]);
    const http = all['0.0.0.0_9080']!;
    expect(http).toMatchObject({
      address: { socketAddress: { address: '0.0.0.0', portValue: 9080 } },
      bindToPort: { value: false },
      trafficDirection: 'OUTBOUND',
    });
    expect(http.defaultFilterChain).toBeUndefined();
    const hcm = chains(http)[0]!.filters[0]!;
    expect(hcm.name).toBe('envoy.filters.network.http_connection_manager');
    expect(hcm.typedConfig).toMatchObject({
      '@type': TYPES.httpConnectionManager,
      statPrefix: 'outbound_0.0.0.0_9080',
      rds: { configSource: { ads: {}, resourceApiVersion: 'V3' }, routeConfigName: '9080' },
    });
    expect((hcm.typedConfig.httpFilters as { name: string }[]).map(f => f.name)).toEqual([
      'envoy.filters.http.fault',
      'envoy.filters.http.cors',
      'envoy.filters.http.router',
    ]);
  });

  it('proxies TCP ports with tcp_proxy: VIP services by destination address, others on the catch-all', () => {
    const all = listeners(push());
    const db = all['0.0.0.0_5432']!;
    expect(chains(db)).toEqual([
      {
        name: `outbound|5432||${fqdn('db')}`,
        filterChainMatch: {
          prefixRanges: [{ addressPrefix: '10.96.0.5', prefixLen: { value: 32 } }],
        },
        filters: [
          {
            name: 'envoy.filters.network.tcp_proxy',
            typedConfig: {
              '@type': TYPES.tcpProxy,
              statPrefix: `outbound|5432||${fqdn('db')}`,
              cluster: `outbound|5432||${fqdn('db')}`,
            },
          },
        ],
      },
    ]);
    // Other destinations on 5432 follow the outbound traffic policy.
    expect(tcpTarget(db.defaultFilterChain as Chain)).toBe('PassthroughCluster');
    const cache = all['0.0.0.0_6379']!;
    expect(chains(cache).map(tcpTarget)).toEqual([`outbound|6379||${fqdn('cache')}`]);
    expect(cache.defaultFilterChain).toBeUndefined();
  });

  it('splits TCP traffic by weight from a VirtualService TCP route', () => {
    const p = push({
      configs: [
        config('VirtualService', 'default', 'db', {
          hosts: ['db'],
          tcp: [
            { match: [{ port: 1234 }], route: [{ destination: { host: 'nope' } }] },
            {
              route: [
                { destination: { host: 'db', subset: 'primary' }, weight: 90 },
                { destination: { host: 'db', subset: 'replica' }, weight: 10 },
              ],
            },
          ],
        }),
      ],
    });
    expect(tcpTarget(chains(listeners(p)['0.0.0.0_5432']!)[0]!)).toEqual({
      clusters: [
        { name: `outbound|5432|primary|${fqdn('db')}`, weight: 90 },
        { name: `outbound|5432|replica|${fqdn('db')}`, weight: 10 },
      ],
    });
  });

  it('lets HTTP own a port a VIP-less TCP service also uses (Istio resolves the conflict the same way)', () => {
    const p = push({ services: [service('web', ['http:8000']), service('raw', ['tcp:8000'])] });
    const l = listeners(p)['0.0.0.0_8000']!;
    expect(chains(l).map(c => c.filters[0]!.name)).toEqual([
      'envoy.filters.network.http_connection_manager',
    ]);
  });

  it('lists only the ports of services the Sidecar lets through', () => {
    const p = push({
      configs: [
        config('Sidecar', 'default', 'default', { egress: [{ hosts: [`./${fqdn('db')}`] }] }),
      ],
    });
    expect(Object.keys(listeners(p))).toEqual([
      'virtualOutbound',
      '0.0.0.0_5432',
      'virtualInbound',
    ]);
  });
});

describe('virtualInbound', () => {
  const instances = [
    instance(REVIEWS, 9080, '10.0.0.100', { port: 8080 }),
    instance(REVIEWS, 9090, '10.0.0.100'),
    instance(fqdn('db'), 5432, '10.0.0.100'),
    instance(REVIEWS, 9080, '10.0.0.7'),
  ];

  it('terminates mesh mTLS and plaintext side by side on PERMISSIVE ports (the default)', () => {
    const l = listeners(push({ instances })).virtualInbound!;
    expect(l).toMatchObject({
      name: 'virtualInbound',
      address: { socketAddress: { address: '0.0.0.0', portValue: 15006 } },
      trafficDirection: 'INBOUND',
      listenerFilters: [
        { name: 'envoy.filters.listener.original_dst' },
        { name: 'envoy.filters.listener.tls_inspector' },
      ],
    });
    const cs = chains(l);
    expect(cs.map(c => [c.name, c.filterChainMatch, c.transportSocket !== undefined])).toEqual([
      [
        'inbound|5432||-mtls',
        {
          destinationPort: { value: 5432 },
          transportProtocol: 'tls',
          applicationProtocols: expect.arrayContaining(['istio']),
        },
        true,
      ],
      [
        'inbound|5432||-tls-passthrough',
        { destinationPort: { value: 5432 }, transportProtocol: 'tls' },
        false,
      ],
      ['inbound|5432||', { destinationPort: { value: 5432 } }, false],
      [
        'inbound|8080||-mtls',
        {
          destinationPort: { value: 8080 },
          transportProtocol: 'tls',
          applicationProtocols: expect.arrayContaining(['istio']),
        },
        true,
      ],
      [
        'inbound|8080||-tls-passthrough',
        { destinationPort: { value: 8080 }, transportProtocol: 'tls' },
        false,
      ],
      ['inbound|8080||', { destinationPort: { value: 8080 } }, false],
      [
        'inbound|9090||-mtls',
        {
          destinationPort: { value: 9090 },
          transportProtocol: 'tls',
          applicationProtocols: expect.arrayContaining(['istio']),
        },
        true,
      ],
      [
        'inbound|9090||-tls-passthrough',
        { destinationPort: { value: 9090 }, transportProtocol: 'tls' },
        false,
      ],
      ['inbound|9090||', { destinationPort: { value: 9090 } }, false],
    ]);
    expect(tcpTarget(cs[0]!)).toBe('inbound|5432||');
    // TLS without Istio ALPN (a client outside the mesh, an application doing its own TLS).
    expect(tcpTarget(cs[1]!)).toBe('inbound|5432||');
    expect(tcpTarget(cs[4]!)).toBe('inbound|8080||');
    const hcm = cs[3]!.filters[0]!.typedConfig;
    expect(hcm).toMatchObject({
      statPrefix: 'inbound_0.0.0.0_8080',
      routeConfig: {
        virtualHosts: [
          {
            domains: ['*'],
            routes: [{ match: { prefix: '/' }, route: { cluster: 'inbound|8080||' } }],
          },
        ],
      },
      forwardClientCertDetails: 'APPEND_FORWARD',
    });
    expect(cs[3]!.transportSocket).toMatchObject({
      name: 'envoy.transport_sockets.tls',
      typedConfig: {
        '@type': TYPES.downstreamTls,
        requireClientCertificate: { value: true },
        commonTlsContext: {
          tlsCertificateSdsSecretConfigs: [{ name: 'default' }],
          combinedValidationContext: {
            defaultValidationContext: {
              matchTypedSubjectAltNames: [
                { sanType: 'URI', matcher: { prefix: 'spiffe://cluster.local/' } },
              ],
            },
            validationContextSdsSecretConfig: { name: 'ROOTCA' },
          },
          alpnProtocols: ['h2', 'http/1.1'],
        },
      },
    });
    expect(tcpTarget(l.defaultFilterChain as Chain)).toBe('BlackHoleCluster');
  });

  it('requires mTLS on STRICT ports and accepts only plaintext on DISABLE ones, port-level first', () => {
    const p = push({
      instances,
      configs: [
        config('PeerAuthentication', 'default', 'default', { mtls: { mode: 'STRICT' } }),
        config('PeerAuthentication', 'default', 'reviews', {
          selector: { matchLabels: { app: 'reviews' } },
          portLevelMtls: { '5432': { mode: 'DISABLE' } },
        }),
      ],
    });
    const l = listeners(p).virtualInbound!;
    expect(
      chains(l).map(c => [c.name, c.filterChainMatch, c.transportSocket !== undefined]),
    ).toEqual([
      ['inbound|5432||', { destinationPort: { value: 5432 } }, false],
      ['inbound|8080||-mtls', { destinationPort: { value: 8080 } }, true],
      ['inbound|9090||-mtls', { destinationPort: { value: 9090 } }, true],
    ]);
    // No PERMISSIVE port: nothing to inspect.
    expect((l.listenerFilters as Obj[]).map(f => f.name)).toEqual([
      'envoy.filters.listener.original_dst',
    ]);
  });

  it('has only the catch-all when no workload on the host serves anything', () => {
    const l = listeners(push()).virtualInbound!;
    expect(l.filterChains).toEqual([]);
    expect(tcpTarget(l.defaultFilterChain as Chain)).toBe('BlackHoleCluster');
  });

  it('gives routers no listeners yet', () => {
    expect(gen.generate(LISTENER_TYPE, proxy('router'), push(), [])).toEqual([]);
  });
});
