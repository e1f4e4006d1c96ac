/**
 * Proxyless gRPC clients: every resource is encoded with the real Envoy protos and decoded by
 * gRPC's own xDS client code, which rejects what gRPC would NACK.
 */
import type { ConfigObject, HTTPRoute } from '../../config/types';
import {
  CLUSTER_TYPE,
  ENDPOINT_TYPE,
  type GeneratedResource,
  LISTENER_TYPE,
  type PushContext,
  ROUTE_TYPE,
} from '../model';
import type { ServiceInstance } from '../../registry/types';
import { createGenerator } from './index';
import { expectGrpcAccepts } from './proto-check';
import { config, fqdn, instance, proxy, pushContext, service } from './testing';
import type { Obj } from './util';

const gen = createGenerator();
const client = proxy('proxyless', { labels: { app: 'client' } });
const REVIEWS = fqdn('reviews');
const REVIEWS_SA = 'spiffe://cluster.local/ns/default/sa/reviews';

function reviewsPush(
  extra: { configs?: ConfigObject[]; instances?: ServiceInstance[] } = {},
): PushContext {
  return pushContext({
    services: [
      service('reviews', ['grpc:9080', 'http-admin:8080'], { serviceAccounts: [REVIEWS_SA] }),
      service('ratings', ['grpc:50051'], { namespace: 'shop' }),
    ],
    instances: extra.instances ?? [
      instance(REVIEWS, 9080, '10.0.0.1', { labels: { version: 'v1' }, locality: 'us/east/a' }),
      instance(REVIEWS, 9080, '10.0.0.2', {
        labels: { version: 'v2' },
        locality: 'us/east/b',
        weight: 3,
      }),
      instance(REVIEWS, 9080, '10.0.0.3', {
        labels: { version: 'v2' },
        locality: 'us/east/b',
        healthy: false,
      }),
    ],
    configs: extra.configs ?? [],
  });
}

function one(type: Parameters<typeof gen.generate>[0], push: PushContext, name: string): Obj {
  const out = gen.generate(type, client, push, [name]);
  expect(out.map(r => r.name)).toEqual([name]);
  expectGrpcAccepts(type, out);
  return out[0]!.resource as Obj;
}

function routesOf(push: PushContext, name = 'reviews:9080'): Obj[] {
  const rc = one(ROUTE_TYPE, push, name) as { virtualHosts: { routes: Obj[] }[] };
  return rc.virtualHosts[0]!.routes;
}

const vs = (http: HTTPRoute[], hosts = ['reviews']) =>
  config('VirtualService', 'default', 'reviews', { hosts, http });
const drSubsets = config('DestinationRule', 'default', 'reviews', {
  host: 'reviews',
  subsets: [
    { name: 'v1', labels: { version: 'v1' } },
    { name: 'v2', labels: { version: 'v2' } },
  ],
});

describe('proxyless LDS', () => {
  it('answers xds:///HOST:PORT with an API listener named exactly that, using RDS over ADS', () => {
    const l = one(LISTENER_TYPE, reviewsPush(), 'reviews:9080');
    expect(l).toEqual({
      name: 'reviews:9080',
      apiListener: {
        apiListener: {
          '@type':
            'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
          statPrefix: 'reviews:9080',
          rds: {
            configSource: { ads: {}, resourceApiVersion: 'V3' },
            routeConfigName: 'reviews:9080',
          },
          httpFilters: [
            {
              name: 'envoy.filters.http.router',
              typedConfig: {
                '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router',
              },
            },
          ],
        },
      },
    });
  });

  it('adds the fault filter before the router only when a route injects faults', () => {
    const push = reviewsPush({
      configs: [
        vs([
          {
            fault: { abort: { grpcStatus: 'UNAVAILABLE', percentage: { value: 10 } } },
            route: [{ destination: { host: 'reviews' } }],
          },
        ]),
      ],
    });
    const l = one(LISTENER_TYPE, push, 'reviews:9080') as {
      apiListener: { apiListener: { httpFilters: { name: string }[] } };
    };
    expect(l.apiListener.apiListener.httpFilters.map(f => f.name)).toEqual([
      'envoy.filters.http.fault',
      'envoy.filters.http.router',
    ]);
  });

  it('resolves short names in the client namespace and accepts fully qualified ones', () => {
    const push = reviewsPush();
    const shopClient = proxy('proxyless', { namespace: 'shop' });
    expect(
      gen
        .generate(LISTENER_TYPE, shopClient, push, [
          'ratings:50051',
          'reviews:9080',
          'reviews.default.svc.cluster.local:9080',
        ])
        .map(r => r.name),
    ).toEqual(['ratings:50051', 'reviews.default.svc.cluster.local:9080']);
  });

  it('accepts a bare host when the service has one port, and leaves out what it cannot serve', () => {
    const push = reviewsPush();
    const shopClient = proxy('proxyless', { namespace: 'shop' });
    expect(gen.generate(LISTENER_TYPE, shopClient, push, ['ratings']).map(r => r.name)).toEqual([
      'ratings',
    ]);
    expect(
      gen.generate(LISTENER_TYPE, client, push, ['reviews', 'reviews:1234', 'nope:80', 'bad:name']),
    ).toEqual([]);
  });

  it('lists every service port for a wildcard request', () => {
    const names = gen.generate(LISTENER_TYPE, client, reviewsPush(), []).map(r => r.name);
    expect(names).toEqual([
      `${fqdn('ratings', 'shop')}:50051`,
      `${REVIEWS}:8080`,
      `${REVIEWS}:9080`,
    ]);
  });
});

describe('proxyless RDS', () => {
  it('has one virtual host whose domains include the requested name, routing to the service by default', () => {
    const rc = one(ROUTE_TYPE, reviewsPush(), 'reviews:9080');
    expect(rc).toEqual({
      name: 'reviews:9080',
      virtualHosts: [
        {
          name: 'reviews:9080',
          domains: ['reviews:9080', REVIEWS, `${REVIEWS}:9080`],
          routes: [
            {
              name: 'default',
              match: { prefix: '/' },
              route: { cluster: `outbound|9080||${REVIEWS}` },
            },
          ],
        },
      ],
    });
  });

  it('translates path and header matches, method as :method, and negated headers', () => {
    const routes = routesOf(
      reviewsPush({
        configs: [
          vs([
            {
              name: 'r',
              match: [
                { name: 'exact', uri: { exact: '/reviews.Reviews/Get' } },
                {
                  uri: { prefix: '/reviews.Reviews/' },
                  headers: { 'X-User': { exact: 'jason' }, env: { prefix: 'prod' } },
                  ignoreUriCase: true,
                },
                {
                  uri: { regex: '/reviews\\.Reviews/(Get|List)' },
                  headers: { trace: { regex: '[0-9a-f]+' }, debug: {} },
                  withoutHeaders: { canary: {} },
                },
                { method: { exact: 'POST' } },
                { queryParams: { q: { exact: '1' } } },
              ],
              route: [{ destination: { host: 'reviews' } }],
            },
          ]),
        ],
      }),
    );
    expect(routes.map(r => [r.name, r.match])).toEqual([
      ['r.exact', { path: '/reviews.Reviews/Get' }],
      [
        'r',
        {
          prefix: '/reviews.Reviews/',
          caseSensitive: { value: false },
          headers: [
            { name: 'x-user', stringMatch: { exact: 'jason' } },
            { name: 'env', stringMatch: { prefix: 'prod' } },
          ],
        },
      ],
      [
        'r',
        {
          safeRegex: { regex: '/reviews\\.Reviews/(Get|List)' },
          headers: [
            { name: 'trace', stringMatch: { safeRegex: { regex: '[0-9a-f]+' } } },
            { name: 'debug', presentMatch: true },
            { name: 'canary', presentMatch: true, invertMatch: true },
          ],
        },
      ],
      ['r', { prefix: '/', headers: [{ name: ':method', stringMatch: { exact: 'POST' } }] }],
      // The query-parameter match is left out: gRPC requests have none.
    ]);
  });

  it('splits traffic over subsets with weighted_clusters', () => {
    const routes = routesOf(
      reviewsPush({
        configs: [
          drSubsets,
          vs([
            {
              route: [
                { destination: { host: 'reviews', subset: 'v1' }, weight: 75 },
                { destination: { host: 'reviews', subset: 'v2' }, weight: 25 },
                { destination: { host: 'reviews', subset: 'v3' }, weight: 0 },
              ],
            },
          ]),
        ],
      }),
    );
    expect(routes[0]!.route).toEqual({
      weightedClusters: {
        clusters: [
          { name: `outbound|9080|v1|${REVIEWS}`, weight: { value: 75 } },
          { name: `outbound|9080|v2|${REVIEWS}`, weight: { value: 25 } },
        ],
      },
    });
  });

  it('turns timeouts into max_stream_duration and maps retry conditions to gRPC codes', () => {
    const routes = routesOf(
      reviewsPush({
        configs: [
          vs([
            {
              match: [{ uri: { prefix: '/a' } }],
              timeout: '1.5s',
              retries: {
                attempts: 3,
                perTryTimeout: '1s',
                retryOn: '5xx,deadline-exceeded,internal,retriable-4xx,503',
              },
              route: [{ destination: { host: 'reviews' } }],
            },
            {
              match: [{ uri: { prefix: '/b' } }],
              retries: { attempts: 2 },
              route: [{ destination: { host: 'reviews' } }],
            },
            {
              match: [{ uri: { prefix: '/c' } }],
              retries: { attempts: 2, retryOn: 'retriable-4xx' },
              route: [{ destination: { host: 'reviews' } }],
            },
            {
              match: [{ uri: { prefix: '/d' } }],
              retries: { attempts: 0 },
              route: [{ destination: { host: 'reviews' } }],
            },
          ]),
        ],
      }),
    );
    expect(routes[0]!.route).toEqual({
      cluster: `outbound|9080||${REVIEWS}`,
      maxStreamDuration: {
        maxStreamDuration: { seconds: 1, nanos: 500_000_000 },
        grpcTimeoutHeaderMax: { seconds: 1, nanos: 500_000_000 },
      },
      retryPolicy: { retryOn: 'unavailable,deadline-exceeded,internal', numRetries: { value: 3 } },
    });
    expect((routes[1]!.route as Obj).retryPolicy).toEqual({
      retryOn: 'unavailable,cancelled',
      numRetries: { value: 2 },
    });
    expect((routes[2]!.route as Obj).retryPolicy).toBeUndefined();
    expect((routes[3]!.route as Obj).retryPolicy).toBeUndefined();
  });

  it('injects faults per route: abort by HTTP or gRPC status, fixed delays, with fractions', () => {
    const routes = routesOf(
      reviewsPush({
        configs: [
          vs([
            {
              match: [{ uri: { prefix: '/a' } }],
              fault: { abort: { httpStatus: 503, percentage: { value: 12.5 } } },
              route: [{ destination: { host: 'reviews' } }],
            },
            {
              match: [{ uri: { prefix: '/b' } }],
              fault: {
                abort: { grpcStatus: 'RESOURCE_EXHAUSTED', percent: 20 },
                delay: { fixedDelay: '250ms', percentage: { value: 100 } },
              },
              route: [{ destination: { host: 'reviews' } }],
            },
            {
              match: [{ uri: { prefix: '/c' } }],
              fault: { abort: { http2Error: 'x' } },
              route: [{ destination: { host: 'reviews' } }],
            },
          ]),
        ],
      }),
    );
    const FAULT = 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault';
    expect(routes[0]!.typedPerFilterConfig).toEqual({
      'envoy.filters.http.fault': {
        '@type': FAULT,
        abort: { httpStatus: 503, percentage: { numerator: 125_000, denominator: 'MILLION' } },
      },
    });
    expect(routes[1]!.typedPerFilterConfig).toEqual({
      'envoy.filters.http.fault': {
        '@type': FAULT,
        delay: {
          fixedDelay: { seconds: 0, nanos: 250_000_000 },
          percentage: { numerator: 1_000_000, denominator: 'MILLION' },
        },
        abort: { grpcStatus: 8, percentage: { numerator: 20, denominator: 'HUNDRED' } },
      },
    });
    expect(routes[2]!.typedPerFilterConfig).toBeUndefined();
  });

  it('leaves out routes gRPC cannot serve (redirects) and those for other ports or clients', () => {
    const routes = routesOf(
      reviewsPush({
        configs: [
          vs([
            { match: [{ uri: { prefix: '/old' } }], redirect: { uri: '/new' } },
            {
              match: [{ port: 8080 }],
              route: [{ destination: { host: 'reviews', port: { number: 8080 } } }],
            },
            {
              match: [{ sourceLabels: { app: 'other' } }],
              route: [{ destination: { host: 'reviews' } }],
            },
            {
              match: [{ sourceLabels: { app: 'client' }, sourceNamespace: 'default' }],
              route: [{ destination: { host: 'ratings.shop.svc.cluster.local' } }],
            },
          ]),
        ],
      }),
    );
    expect(routes).toEqual([
      { match: { prefix: '/' }, route: { cluster: `outbound|50051||${fqdn('ratings', 'shop')}` } },
    ]);
  });

  it('hashes on a header or the channel for consistent-hash DestinationRules', () => {
    const dr = (consistentHash: Obj) =>
      config('DestinationRule', 'default', 'reviews', {
        host: 'reviews',
        trafficPolicy: { loadBalancer: { consistentHash } },
      });
    expect(
      (routesOf(reviewsPush({ configs: [dr({ httpHeaderName: 'X-User' })] }))[0]!.route as Obj)
        .hashPolicy,
    ).toEqual([{ header: { headerName: 'x-user' } }]);
    expect(
      (routesOf(reviewsPush({ configs: [dr({ useSourceIp: true })] }))[0]!.route as Obj).hashPolicy,
    ).toEqual([{ filterState: { key: 'io.grpc.channel_id' } }]);
  });
});

describe('proxyless CDS', () => {
  const clusters = (push: PushContext, names: string[] = []): Record<string, Obj> => {
    const out = gen.generate(CLUSTER_TYPE, client, push, names);
    expectGrpcAccepts(CLUSTER_TYPE, out);
    return Object.fromEntries(out.map((r: GeneratedResource) => [r.name, r.resource as Obj]));
  };

  it('makes EDS-over-ADS clusters for every port and subset', () => {
    const c = clusters(reviewsPush({ configs: [drSubsets] }));
    expect(Object.keys(c).sort()).toEqual(
      [
        `outbound|50051||${fqdn('ratings', 'shop')}`,
        `outbound|8080|v1|${REVIEWS}`,
        `outbound|8080|v2|${REVIEWS}`,
        `outbound|8080||${REVIEWS}`,
        `outbound|9080|v1|${REVIEWS}`,
        `outbound|9080|v2|${REVIEWS}`,
        `outbound|9080||${REVIEWS}`,
      ].sort(),
    );
    expect(c[`outbound|9080|v1|${REVIEWS}`]).toEqual({
      name: `outbound|9080|v1|${REVIEWS}`,
      connectTimeout: { seconds: 10 },
      type: 'EDS',
      lbPolicy: 'ROUND_ROBIN',
      edsClusterConfig: {
        edsConfig: { ads: {}, resourceApiVersion: 'V3' },
        serviceName: `outbound|9080|v1|${REVIEWS}`,
      },
    });
  });

  it('serves only the names asked for', () => {
    expect(
      Object.keys(clusters(reviewsPush(), [`outbound|9080||${REVIEWS}`, 'outbound|1||nope'])),
    ).toEqual([`outbound|9080||${REVIEWS}`]);
  });

  it('maps load balancing to what gRPC has: RING_HASH for consistent hash, else ROUND_ROBIN', () => {
    const lb = (loadBalancer: Obj) =>
      clusters(
        reviewsPush({
          configs: [
            config('DestinationRule', 'default', 'r', {
              host: 'reviews',
              trafficPolicy: { loadBalancer },
            }),
          ],
        }),
      )[`outbound|9080||${REVIEWS}`]!;
    expect(lb({ consistentHash: { httpHeaderName: 'x', minimumRingSize: 2048 } })).toMatchObject({
      lbPolicy: 'RING_HASH',
      ringHashLbConfig: { minimumRingSize: { value: 2048 } },
    });
    expect(lb({ simple: 'LEAST_REQUEST' }).lbPolicy).toBe('ROUND_ROBIN');
    expect(lb({ simple: 'RANDOM' }).lbPolicy).toBe('ROUND_ROBIN');
  });

  it('carries max requests and outlier detection', () => {
    const c = clusters(
      reviewsPush({
        configs: [
          config('DestinationRule', 'default', 'r', {
            host: 'reviews',
            trafficPolicy: {
              connectionPool: { http: { http2MaxRequests: 100 }, tcp: { maxConnections: 10 } },
              outlierDetection: {
                consecutive5xxErrors: 5,
                interval: '10s',
                baseEjectionTime: '30s',
                maxEjectionPercent: 50,
              },
            },
          }),
        ],
      }),
    )[`outbound|9080||${REVIEWS}`]!;
    expect(c.circuitBreakers).toEqual({ thresholds: [{ maxRequests: { value: 100 } }] });
    expect(c.outlierDetection).toEqual({
      consecutive_5xx: { value: 5 },
      enforcingConsecutive_5xx: { value: 100 },
      interval: { seconds: 10 },
      baseEjectionTime: { seconds: 30 },
      maxEjectionPercent: { value: 50 },
      enforcingSuccessRate: { value: 0 },
    });
  });

  it('uses the bootstrap certificate providers for ISTIO_MUTUAL, matching the service accounts', () => {
    const out = gen.generate(
      CLUSTER_TYPE,
      client,
      reviewsPush({
        configs: [
          config('DestinationRule', 'default', 'r', {
            host: 'reviews',
            trafficPolicy: { tls: { mode: 'ISTIO_MUTUAL' } },
          }),
        ],
      }),
      [`outbound|9080||${REVIEWS}`],
    );
    const [decoded] = expectGrpcAccepts(CLUSTER_TYPE, out);
    expect(decoded).toMatchObject({
      securityUpdate: {
        caCertificateProviderInstance: 'default',
        identityCertificateProviderInstance: 'default',
        subjectAltNameMatchers: [expect.objectContaining({ exact: REVIEWS_SA })],
      },
    });
  });

  it('makes LOGICAL_DNS clusters for DNS services', () => {
    const push = pushContext({
      services: [
        service('api.example.com', ['grpc:443'], { resolution: 'DNS', location: 'MESH_EXTERNAL' }),
      ],
    });
    const c = clusters(push)['outbound|443||api.example.com']!;
    expect(c).toMatchObject({
      type: 'LOGICAL_DNS',
      loadAssignment: {
        clusterName: 'outbound|443||api.example.com',
        endpoints: [
          {
            lbEndpoints: [
              {
                endpoint: {
                  address: { socketAddress: { address: 'api.example.com', portValue: 443 } },
                },
              },
            ],
          },
        ],
      },
    });
  });
});

describe('proxyless EDS', () => {
  it('groups endpoints by locality with weights and health, and filters by subset', () => {
    const push = reviewsPush({ configs: [drSubsets] });
    const all = one(ENDPOINT_TYPE, push, `outbound|9080||${REVIEWS}`);
    const ep = (address: string, extra: Obj = {}) => ({
      endpoint: { address: { socketAddress: { address, portValue: 9080 } } },
      healthStatus: 'HEALTHY',
      loadBalancingWeight: { value: 1 },
      ...extra,
    });
    expect(all).toEqual({
      clusterName: `outbound|9080||${REVIEWS}`,
      endpoints: [
        {
          locality: { region: 'us', zone: 'east', subZone: 'a' },
          lbEndpoints: [ep('10.0.0.1')],
          loadBalancingWeight: { value: 1 },
        },
        {
          locality: { region: 'us', zone: 'east', subZone: 'b' },
          lbEndpoints: [
            ep('10.0.0.2', { loadBalancingWeight: { value: 3 } }),
            ep('10.0.0.3', { healthStatus: 'UNHEALTHY' }),
          ],
          loadBalancingWeight: { value: 4 },
        },
      ],
    });
    const v1 = one(ENDPOINT_TYPE, push, `outbound|9080|v1|${REVIEWS}`) as {
      endpoints: { lbEndpoints: unknown[] }[];
    };
    expect(v1.endpoints.flatMap(e => e.lbEndpoints)).toEqual([ep('10.0.0.1')]);
    expect(gen.generate(ENDPOINT_TYPE, client, push, [`outbound|9080|v9|${REVIEWS}`])).toEqual([]);
  });

  it('drops duplicate and non-IP addresses, which gRPC would reject', () => {
    const push = reviewsPush({
      instances: [
        instance(REVIEWS, 9080, '10.0.0.1'),
        instance(REVIEWS, 9080, '10.0.0.1', { workload: 'default/again' }),
        instance(REVIEWS, 9080, 'vm-3.example.com'),
        instance(REVIEWS, 9080, 'fd00::1'),
      ],
    });
    const cla = one(ENDPOINT_TYPE, push, `outbound|9080||${REVIEWS}`) as {
      endpoints: { locality: Obj; lbEndpoints: { endpoint: Obj }[] }[];
    };
    expect(cla.endpoints).toHaveLength(1);
    expect(cla.endpoints[0]!.locality).toEqual({});
    expect(cla.endpoints[0]!.lbEndpoints.map(e => e.endpoint)).toEqual([
      { address: { socketAddress: { address: '10.0.0.1', portValue: 9080 } } },
      { address: { socketAddress: { address: 'fd00::1', portValue: 9080 } } },
    ]);
  });

  it('answers with no endpoints rather than nothing for a known cluster without instances', () => {
    const push = reviewsPush({ instances: [] });
    expect(one(ENDPOINT_TYPE, push, `outbound|9080||${REVIEWS}`)).toEqual({
      clusterName: `outbound|9080||${REVIEWS}`,
      endpoints: [],
    });
  });
});

describe('proxyless gRPC servers (XdsServer)', () => {
  // The server host: its workload serves reviews on 9080 (and an undeclared 7000).
  const server = proxy('proxyless', { ip: '10.0.0.1', labels: { app: 'reviews' } });
  const name = (hostPort: string) => `xds.istio.io/grpc/lds/inbound/${hostPort}`;

  function serverListener(push: PushContext, hostPort: string): Obj {
    const out = gen.generate(LISTENER_TYPE, server, push, [name(hostPort)]);
    expect(out.map(r => r.name)).toEqual([name(hostPort)]);
    expectGrpcAccepts(LISTENER_TYPE, out);
    return out[0]!.resource as Obj;
  }

  type Chain = {
    name: string;
    filters: { typedConfig: Obj }[];
    transportSocket?: { typedConfig: Obj };
  };
  const chainOf = (l: Obj) => (l.filterChains as Chain[])[0]!;

  it('serves the listening address with a non-forwarding route and the router filter', () => {
    const l = serverListener(reviewsPush(), '0.0.0.0:9080');
    expect(l.address).toEqual({ socketAddress: { address: '0.0.0.0', portValue: 9080 } });
    expect(l.filterChains as Obj[]).toHaveLength(1);
    const hcm = chainOf(l).filters[0]!.typedConfig;
    expect(hcm.routeConfig).toEqual({
      name: 'inbound|9080||',
      virtualHosts: [
        {
          name: 'inbound|9080||',
          domains: ['*'],
          routes: [{ match: { prefix: '/' }, nonForwardingAction: {} }],
        },
      ],
    });
    expect((hcm.httpFilters as Obj[]).map(f => f.name)).toEqual(['envoy.filters.http.router']);
    expect(serverListener(reviewsPush(), '[::]:9080').address).toEqual({
      socketAddress: { address: '::', portValue: 9080 },
    });
  });

  it("takes the port's mTLS from PeerAuthentication: STRICT requires a client certificate, else plaintext", () => {
    const tlsOf = (configs: ConfigObject[], hostPort = '10.0.0.1:9080') =>
      chainOf(serverListener(reviewsPush({ configs }), hostPort)).transportSocket?.typedConfig;
    const strict = tlsOf([
      config('PeerAuthentication', 'default', 'default', { mtls: { mode: 'STRICT' } }),
    ]);
    expect(strict).toEqual({
      '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext',
      commonTlsContext: {
        tlsCertificateProviderInstance: { instanceName: 'default', certificateName: 'default' },
        combinedValidationContext: {
          defaultValidationContext: {
            caCertificateProviderInstance: { instanceName: 'default', certificateName: 'ROOTCA' },
          },
        },
      },
      requireClientCertificate: { value: true },
    });
    // PERMISSIVE (the default): plaintext, which is what proxyless clients send to such a port.
    expect(tlsOf([])).toBeUndefined();
    // DISABLE on the port: plaintext.
    expect(
      tlsOf([
        config('PeerAuthentication', 'default', 'reviews', {
          selector: { matchLabels: { app: 'reviews' } },
          portLevelMtls: { '9080': { mode: 'DISABLE' } },
        }),
      ]),
    ).toBeUndefined();
    // A port no service declares follows the workload's policy too.
    expect(
      tlsOf(
        [config('PeerAuthentication', 'default', 'default', { mtls: { mode: 'STRICT' } })],
        '10.0.0.1:7000',
      ),
    ).toMatchObject({ requireClientCertificate: { value: true } });
  });

  it('answers nothing for a malformed listening address', () => {
    expect(gen.generate(LISTENER_TYPE, server, reviewsPush(), [name('nowhere')])).toEqual([]);
  });
});
