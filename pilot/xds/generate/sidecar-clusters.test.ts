/** Sidecar CDS and EDS, each resource encoded and decoded with the real Envoy protos. */
import type { ConfigObject, TrafficPolicy } from '../../config/types';
import { CLUSTER_TYPE, ENDPOINT_TYPE, type PushContext } from '../model';
import type { Service, ServiceInstance } from '../../registry/types';
import { createGenerator } from './index';
import { expectEncodes } from './proto-check';
import { config, fqdn, instance, proxy, pushContext, service } from './testing';
import { TYPES, UINT32_MAX, type Obj } from './util';

const gen = createGenerator();
const sidecar = proxy('sidecar', { ip: '10.0.0.100', labels: { app: 'web' } });
const REVIEWS = fqdn('reviews');
const REVIEWS_SA = 'spiffe://cluster.local/ns/default/sa/reviews';

function clusters(push: PushContext, who = sidecar): Record<string, Obj> {
  const out = gen.generate(CLUSTER_TYPE, who, push, []);
  expectEncodes(CLUSTER_TYPE, out);
  return Object.fromEntries(out.map(r => [r.name, r.resource as Obj]));
}

function push(
  input: { configs?: ConfigObject[]; services?: Service[]; instances?: ServiceInstance[] } = {},
) {
  return pushContext({
    services: input.services ?? [
      service('reviews', ['http:9080', 'grpc:9090', 'tcp-db:5432'], {
        serviceAccounts: [REVIEWS_SA],
      }),
    ],
    instances: input.instances ?? [],
    configs: input.configs ?? [],
  });
}

const dr = (trafficPolicy: TrafficPolicy, extra: Obj = {}) =>
  config('DestinationRule', 'default', 'reviews', { host: 'reviews', trafficPolicy, ...extra });

describe('sidecar outbound clusters', () => {
  it('makes an EDS cluster per port with Istio defaults: round robin, unlimited circuit breakers', () => {
    const c = clusters(push());
    expect(Object.keys(c)).toEqual([
      `outbound|9080||${REVIEWS}`,
      `outbound|9090||${REVIEWS}`,
      `outbound|5432||${REVIEWS}`,
      'BlackHoleCluster',
      'PassthroughCluster',
    ]);
    const http = c[`outbound|9080||${REVIEWS}`]!;
    expect(http).toMatchObject({
      name: `outbound|9080||${REVIEWS}`,
      type: 'EDS',
      connectTimeout: { seconds: 10 },
      lbPolicy: 'ROUND_ROBIN',
      edsClusterConfig: {
        edsConfig: { ads: {}, resourceApiVersion: 'V3' },
        serviceName: `outbound|9080||${REVIEWS}`,
      },
      circuitBreakers: {
        thresholds: [
          {
            maxConnections: { value: UINT32_MAX },
            maxPendingRequests: { value: UINT32_MAX },
            maxRequests: { value: UINT32_MAX },
            maxRetries: { value: UINT32_MAX },
            trackRemaining: true,
          },
        ],
      },
    });
    expect(http.typedExtensionProtocolOptions).toBeUndefined();
    expect(c[`outbound|9090||${REVIEWS}`]!.typedExtensionProtocolOptions).toEqual({
      'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
        '@type': TYPES.httpProtocolOptions,
        explicitHttpConfig: { http2ProtocolOptions: {} },
      },
    });
  });

  it('uses auto mTLS by default: TLS to endpoints marked tlsMode istio, plaintext to the rest', () => {
    const c = clusters(push())[`outbound|9080||${REVIEWS}`]!;
    expect(c.transportSocket).toBeUndefined();
    const matches = c.transportSocketMatches as Obj[];
    expect(matches).toHaveLength(2);
    expect(matches[0]).toMatchObject({
      name: 'tlsMode-istio',
      match: { fields: { tlsMode: { stringValue: 'istio' } } },
      transportSocket: {
        name: 'envoy.transport_sockets.tls',
        typedConfig: {
          '@type': TYPES.upstreamTls,
          sni: `outbound_.9080_._.${REVIEWS}`,
          commonTlsContext: {
            tlsCertificateSdsSecretConfigs: [{ name: 'default' }],
            combinedValidationContext: {
              defaultValidationContext: {
                matchTypedSubjectAltNames: [{ sanType: 'URI', matcher: { exact: REVIEWS_SA } }],
              },
              validationContextSdsSecretConfig: { name: 'ROOTCA' },
            },
          },
        },
      },
    });
    expect(matches[1]).toMatchObject({
      name: 'tlsMode-disabled',
      match: {},
      transportSocket: { name: 'envoy.transport_sockets.raw_buffer' },
    });
  });

  it('follows DestinationRule TLS: ISTIO_MUTUAL with its SANs, SIMPLE/MUTUAL with files, DISABLE', () => {
    const istio = clusters(
      push({
        configs: [
          dr({
            tls: {
              mode: 'ISTIO_MUTUAL',
              subjectAltNames: ['spiffe://cluster.local/ns/default/sa/other'],
            },
          }),
        ],
      }),
    );
    const c = istio[`outbound|9080||${REVIEWS}`]!;
    expect(c.transportSocketMatches).toBeUndefined();
    expect(c.transportSocket).toMatchObject({
      typedConfig: {
        commonTlsContext: {
          combinedValidationContext: {
            defaultValidationContext: {
              matchTypedSubjectAltNames: [
                {
                  sanType: 'URI',
                  matcher: { exact: 'spiffe://cluster.local/ns/default/sa/other' },
                },
              ],
            },
          },
          alpnProtocols: ['istio-peer-exchange', 'istio'],
        },
      },
    });
    expect(JSON.stringify(c)).not.toContain('filename');

    const mutual = clusters(
      push({
        configs: [
          dr({
            tls: {
              mode: 'MUTUAL',
              clientCertificate: '/etc/certs/client.pem',
              privateKey: '/etc/certs/client-key.pem',
              caCertificates: '/etc/certs/ca.pem',
              subjectAltNames: ['reviews.example.com'],
              sni: 'reviews.example.com',
            },
          }),
        ],
      }),
    )[`outbound|9080||${REVIEWS}`]!;
    expect(mutual.transportSocket).toEqual({
      name: 'envoy.transport_sockets.tls',
      typedConfig: {
        '@type': TYPES.upstreamTls,
        commonTlsContext: {
          tlsCertificates: [
            {
              certificateChain: { filename: '/etc/certs/client.pem' },
              privateKey: { filename: '/etc/certs/client-key.pem' },
            },
          ],
          validationContext: {
            trustedCa: { filename: '/etc/certs/ca.pem' },
            matchTypedSubjectAltNames: [
              { sanType: 'DNS', matcher: { exact: 'reviews.example.com' } },
            ],
          },
        },
        sni: 'reviews.example.com',
      },
    });
    const disabled = clusters(push({ configs: [dr({ tls: { mode: 'DISABLE' } })] }))[
      `outbound|9080||${REVIEWS}`
    ]!;
    expect(disabled.transportSocket).toBeUndefined();
    expect(disabled.transportSocketMatches).toBeUndefined();
  });

  it('translates load balancing, connection pool, keepalive and outlier detection', () => {
    const c = clusters(
      push({
        configs: [
          dr({
            loadBalancer: { simple: 'LEAST_CONN' },
            connectionPool: {
              tcp: {
                maxConnections: 100,
                connectTimeout: '250ms',
                tcpKeepalive: { probes: 3, time: '60s', interval: '10s' },
              },
              http: {
                http1MaxPendingRequests: 10,
                http2MaxRequests: 200,
                maxRetries: 3,
                maxRequestsPerConnection: 5,
                idleTimeout: '30s',
              },
            },
            outlierDetection: {
              consecutiveGatewayErrors: 2,
              consecutive5xxErrors: 0,
              interval: '5s',
              baseEjectionTime: '1m',
              maxEjectionPercent: 30,
              minHealthPercent: 40,
            },
          }),
        ],
      }),
    )[`outbound|9080||${REVIEWS}`]!;
    expect(c).toMatchObject({
      lbPolicy: 'LEAST_REQUEST',
      connectTimeout: { seconds: 0, nanos: 250_000_000 },
      circuitBreakers: {
        thresholds: [
          {
            maxConnections: { value: 100 },
            maxPendingRequests: { value: 10 },
            maxRequests: { value: 200 },
            maxRetries: { value: 3 },
            trackRemaining: true,
          },
        ],
      },
      upstreamConnectionOptions: {
        tcpKeepalive: {
          keepaliveProbes: { value: 3 },
          keepaliveTime: { value: 60 },
          keepaliveInterval: { value: 10 },
        },
      },
      typedExtensionProtocolOptions: {
        'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
          commonHttpProtocolOptions: {
            idleTimeout: { seconds: 30 },
            maxRequestsPerConnection: { value: 5 },
          },
          explicitHttpConfig: { httpProtocolOptions: {} },
        },
      },
      outlierDetection: {
        consecutive_5xx: { value: 0 },
        enforcingConsecutive_5xx: { value: 0 },
        consecutiveGatewayFailure: { value: 2 },
        enforcingConsecutiveGatewayFailure: { value: 100 },
        interval: { seconds: 5 },
        baseEjectionTime: { seconds: 60 },
        maxEjectionPercent: { value: 30 },
        enforcingSuccessRate: { value: 0 },
      },
      commonLbConfig: { healthyPanicThreshold: { value: 40 } },
    });
    const ring = clusters(
      push({
        configs: [
          dr({ loadBalancer: { consistentHash: { useSourceIp: true, minimumRingSize: 64 } } }),
        ],
      }),
    )[`outbound|9080||${REVIEWS}`]!;
    expect(ring).toMatchObject({
      lbPolicy: 'RING_HASH',
      ringHashLbConfig: { minimumRingSize: { value: 64 } },
    });
    const random = clusters(push({ configs: [dr({ loadBalancer: { simple: 'RANDOM' } })] }))[
      `outbound|9080||${REVIEWS}`
    ]!;
    expect(random.lbPolicy).toBe('RANDOM');
  });

  it('makes a cluster per subset, subset and port-level settings overriding the top level', () => {
    const c = clusters(
      push({
        configs: [
          dr(
            {
              loadBalancer: { simple: 'RANDOM' },
              portLevelSettings: [
                { port: { number: 9090 }, loadBalancer: { simple: 'LEAST_REQUEST' } },
              ],
            },
            {
              subsets: [
                { name: 'v1', labels: { version: 'v1' } },
                {
                  name: 'v2',
                  labels: { version: 'v2' },
                  trafficPolicy: {
                    loadBalancer: { simple: 'ROUND_ROBIN' },
                    tls: { mode: 'ISTIO_MUTUAL' },
                  },
                },
              ],
            },
          ),
        ],
      }),
    );
    expect(c[`outbound|9080||${REVIEWS}`]!.lbPolicy).toBe('RANDOM');
    expect(c[`outbound|9090||${REVIEWS}`]!.lbPolicy).toBe('LEAST_REQUEST');
    expect(c[`outbound|9080|v1|${REVIEWS}`]!.lbPolicy).toBe('RANDOM');
    expect(c[`outbound|9090|v1|${REVIEWS}`]!.lbPolicy).toBe('LEAST_REQUEST');
    expect(c[`outbound|9080|v2|${REVIEWS}`]!.lbPolicy).toBe('ROUND_ROBIN');
    expect(c[`outbound|9080|v2|${REVIEWS}`]!.transportSocket).toMatchObject({
      typedConfig: { sni: `outbound_.9080_.v2_.${REVIEWS}` },
    });
    expect(c[`outbound|9080|v2|${REVIEWS}`]!.edsClusterConfig).toEqual({
      edsConfig: { ads: {}, resourceApiVersion: 'V3' },
      serviceName: `outbound|9080|v2|${REVIEWS}`,
    });
  });

  it('resolves DNS services with inline endpoints, and NONE or PASSTHROUGH to the original destination', () => {
    const services = [
      service('api.example.com', ['https:443'], {
        namespace: 'ext',
        resolution: 'DNS',
        location: 'MESH_EXTERNAL',
      }),
      service('rr.example.com', ['http:80'], {
        namespace: 'ext',
        resolution: 'DNS_ROUND_ROBIN',
        location: 'MESH_EXTERNAL',
      }),
      service('any.example.com', ['tcp:3306'], {
        namespace: 'ext',
        resolution: 'NONE',
        location: 'MESH_EXTERNAL',
      }),
      service('reviews', ['http:9080']),
    ];
    const instances = [
      instance('rr.example.com', 80, 'a.rr.example.com', { locality: 'eu' }),
      instance('rr.example.com', 80, '192.0.2.10', { port: 8080 }),
    ];
    const c = clusters(
      push({ services, instances, configs: [dr({ loadBalancer: { simple: 'PASSTHROUGH' } })] }),
    );
    expect(c['outbound|443||api.example.com']).toMatchObject({
      type: 'STRICT_DNS',
      dnsLookupFamily: 'V4_ONLY',
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
    const rr = c['outbound|80||rr.example.com']!;
    expect(rr.type).toBe('LOGICAL_DNS');
    // Envoy takes exactly one endpoint for LOGICAL_DNS.
    expect(rr.loadAssignment).toEqual({
      clusterName: 'outbound|80||rr.example.com',
      endpoints: [
        {
          locality: {},
          lbEndpoints: [
            {
              endpoint: { address: { socketAddress: { address: '192.0.2.10', portValue: 8080 } } },
              healthStatus: 'HEALTHY',
              loadBalancingWeight: { value: 1 },
            },
          ],
          loadBalancingWeight: { value: 1 },
        },
      ],
    });
    const strict = push({
      services: [service('multi.example.com', ['http:80'], { resolution: 'DNS' })],
      instances: [
        instance('multi.example.com', 80, 'a.example.com'),
        instance('multi.example.com', 80, 'b.example.com', { locality: 'eu' }),
      ],
    });
    const strictCluster = clusters(strict)['outbound|80||multi.example.com']!;
    expect(strictCluster.type).toBe('STRICT_DNS');
    expect(
      (strictCluster.loadAssignment as { endpoints: Obj[] }).endpoints.map(e => e.locality),
    ).toEqual([{}, { region: 'eu' }]);
    expect(c['outbound|3306||any.example.com']).toMatchObject({
      type: 'ORIGINAL_DST',
      lbPolicy: 'CLUSTER_PROVIDED',
    });
    expect(c['outbound|3306||any.example.com']!.transportSocketMatches).toBeUndefined();
    expect(c[`outbound|9080||${REVIEWS}`]).toMatchObject({
      type: 'ORIGINAL_DST',
      lbPolicy: 'CLUSTER_PROVIDED',
    });
  });

  it('has only the services its Sidecar egress allows', () => {
    const services = [
      service('reviews', ['http:9080']),
      service('ratings', ['http:9080'], { namespace: 'shop' }),
    ];
    const withSidecar = push({
      services,
      configs: [config('Sidecar', 'default', 'default', { egress: [{ hosts: ['./*'] }] })],
    });
    expect(Object.keys(clusters(withSidecar)).filter(n => n.startsWith('outbound'))).toEqual([
      `outbound|9080||${REVIEWS}`,
    ]);
  });

  it('serves only the names asked for', () => {
    const out = gen.generate(CLUSTER_TYPE, sidecar, push(), [
      'PassthroughCluster',
      `outbound|9080||${REVIEWS}`,
      'nope',
    ]);
    expect(out.map(r => r.name)).toEqual(['PassthroughCluster', `outbound|9080||${REVIEWS}`]);
  });
});

describe('sidecar inbound and fixed clusters', () => {
  it('makes a STATIC inbound|PORT|| cluster to 127.0.0.1 per port of the workloads on the host', () => {
    const instances = [
      instance(REVIEWS, 9080, '10.0.0.100', { port: 8080 }),
      instance(REVIEWS, 9090, '10.0.0.100'),
      instance(REVIEWS, 9080, '10.0.0.7'),
    ];
    const c = clusters(push({ instances }));
    expect(Object.keys(c).filter(n => n.startsWith('inbound'))).toEqual([
      'inbound|8080||',
      'inbound|9090||',
    ]);
    expect(c['inbound|8080||']).toEqual({
      name: 'inbound|8080||',
      type: 'STATIC',
      connectTimeout: { seconds: 10 },
      lbPolicy: 'ROUND_ROBIN',
      loadAssignment: {
        clusterName: 'inbound|8080||',
        endpoints: [
          {
            lbEndpoints: [
              {
                endpoint: { address: { socketAddress: { address: '127.0.0.1', portValue: 8080 } } },
              },
            ],
          },
        ],
      },
    });
    expect(c['inbound|9090||']!.typedExtensionProtocolOptions).toBeDefined();
  });

  it('always has PassthroughCluster (original destination) and BlackHoleCluster (no endpoints)', () => {
    const c = clusters(push({ services: [] }));
    expect(c).toEqual({
      BlackHoleCluster: {
        name: 'BlackHoleCluster',
        type: 'STATIC',
        connectTimeout: { seconds: 10 },
      },
      PassthroughCluster: expect.objectContaining({
        name: 'PassthroughCluster',
        type: 'ORIGINAL_DST',
        lbPolicy: 'CLUSTER_PROVIDED',
      }),
    });
  });

  it('gives routers their outbound clusters only', () => {
    const out = gen.generate(
      CLUSTER_TYPE,
      proxy('router', { ip: '10.0.0.100' }),
      push({ instances: [instance(REVIEWS, 9080, '10.0.0.100')] }),
      [],
    );
    expect(out.map(r => r.name).filter(n => n.startsWith('inbound'))).toEqual([]);
  });
});

describe('sidecar EDS', () => {
  const instances = [
    instance(REVIEWS, 9080, '10.0.0.1', { tlsMode: 'istio', labels: { version: 'v1' } }),
    instance(REVIEWS, 9080, '10.0.0.2', {
      tlsMode: 'istio',
      labels: { version: 'v2', app: 'legacy' },
      workload: 'legacy/vm-2',
    }),
    instance(REVIEWS, 9080, '10.0.0.3', { labels: { version: 'v2' } }),
  ];

  it('marks mesh endpoints for auto mTLS unless their PeerAuthentication disables it', () => {
    const p = push({
      instances,
      configs: [config('PeerAuthentication', 'legacy', 'default', { mtls: { mode: 'DISABLE' } })],
    });
    const out = gen.generate(ENDPOINT_TYPE, sidecar, p, [`outbound|9080||${REVIEWS}`]);
    expectEncodes(ENDPOINT_TYPE, out);
    const eps = (out[0]!.resource as { endpoints: { lbEndpoints: Obj[] }[] }).endpoints[0]!
      .lbEndpoints;
    expect(eps.map(e => [(e.endpoint as Obj).address, e.metadata])).toEqual([
      [
        { socketAddress: { address: '10.0.0.1', portValue: 9080 } },
        {
          filterMetadata: {
            'envoy.transport_socket_match': { fields: { tlsMode: { stringValue: 'istio' } } },
          },
        },
      ],
      [{ socketAddress: { address: '10.0.0.2', portValue: 9080 } }, undefined],
      [{ socketAddress: { address: '10.0.0.3', portValue: 9080 } }, undefined],
    ]);
  });

  it("leaves a proxyless gRPC server's port plaintext under PERMISSIVE, and mTLS under STRICT", () => {
    // vm-1 runs an XdsServer on 9080 (it subscribed to its inbound listener): gRPC cannot take
    // mTLS and plaintext on one port, and under PERMISSIVE it serves plaintext.
    const grpcServer = [
      instance(REVIEWS, 9080, '10.0.0.1', {
        tlsMode: 'istio',
        node: 'vm-1',
        workload: 'default/vm-1',
      }),
      instance(REVIEWS, 9080, '10.0.0.4', {
        tlsMode: 'istio',
        node: 'vm-4',
        workload: 'default/vm-4',
      }),
    ];
    const tlsModes = (configs: ConfigObject[]) => {
      const p = {
        ...push({ instances: grpcServer, configs }),
        proxylessServers: new Map([
          ['vm-1', new Set([9080])],
          ['vm-4', new Set([9999])],
        ]),
      };
      const out = gen.generate(ENDPOINT_TYPE, sidecar, p, [`outbound|9080||${REVIEWS}`]);
      const eps = (out[0]!.resource as { endpoints: { lbEndpoints: Obj[] }[] }).endpoints[0]!
        .lbEndpoints;
      return eps.map(e => (e.metadata === undefined ? 'plaintext' : 'mtls'));
    };
    // PERMISSIVE (the default): vm-1 plaintext; vm-4 serves another port that way, so mTLS here.
    expect(tlsModes([])).toEqual(['plaintext', 'mtls']);
    expect(
      tlsModes([config('PeerAuthentication', 'default', 'default', { mtls: { mode: 'STRICT' } })]),
    ).toEqual(['mtls', 'mtls']);
  });

  it('answers a wildcard request with every EDS cluster, filtered by subset labels', () => {
    const p = push({
      instances,
      configs: [dr({}, { subsets: [{ name: 'v2', labels: { version: 'v2' } }] })],
    });
    const out = gen.generate(ENDPOINT_TYPE, sidecar, p, []);
    expectEncodes(ENDPOINT_TYPE, out);
    const byName = Object.fromEntries(
      out.map(r => [r.name, r.resource as { endpoints: { lbEndpoints: unknown[] }[] }]),
    );
    expect(Object.keys(byName).sort()).toEqual(
      [
        `outbound|5432|v2|${REVIEWS}`,
        `outbound|5432||${REVIEWS}`,
        `outbound|9080|v2|${REVIEWS}`,
        `outbound|9080||${REVIEWS}`,
        `outbound|9090|v2|${REVIEWS}`,
        `outbound|9090||${REVIEWS}`,
      ].sort(),
    );
    expect(byName[`outbound|9080|v2|${REVIEWS}`]!.endpoints[0]!.lbEndpoints).toHaveLength(2);
  });
});
