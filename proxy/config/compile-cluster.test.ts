import { CompileError, compileCluster, compileLoadAssignment } from './compile';
import {
  assignment,
  decoded,
  edsCluster,
  lbEndpoint,
  TYPE,
  upstreamTlsSocket,
  URL,
  type Resource,
} from './compile-testing';

const hpo = (options: object) => ({
  typedExtensionProtocolOptions: {
    'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
      '@type': URL.httpProtocolOptions,
      ...options,
    },
  },
});
const MESH_TLS = upstreamTlsSocket({
  commonTlsContext: {
    tlsCertificateSdsSecretConfigs: [{ name: 'default' }],
    combinedValidationContext: {
      defaultValidationContext: {},
      validationContextSdsSecretConfig: { name: 'ROOTCA' },
    },
  },
});

describe('compileCluster', () => {
  it.each<[string, () => unknown, unknown]>([
    [
      'fills Envoy defaults for a bare EDS cluster',
      () => compileCluster(edsCluster()),
      {
        name: 'c',
        type: 'EDS',
        edsServiceName: 'c',
        lbPolicy: 'ROUND_ROBIN',
        ringHash: { minimumRingSize: 1024, maximumRingSize: 8_388_608 },
        connectTimeoutMs: 5000,
        circuitBreakers: {
          maxConnections: 1024,
          maxPendingRequests: 1024,
          maxRequests: 1024,
          maxRetries: 3,
        },
        healthyPanicThreshold: 50,
        transports: [],
        upstreamProtocol: 'http1',
        idleTimeoutMs: 3_600_000,
        dnsRefreshRateMs: 5000,
      },
    ],
    [
      'defaults to STATIC with an empty load assignment',
      () => {
        const c = compileCluster(decoded(TYPE.cluster, { name: 's' }));
        return [c.type, c.loadAssignment, c.edsServiceName];
      },
      ['STATIC', { clusterName: 's', endpoints: [] }, undefined],
    ],
    [
      'maps every lb_policy',
      () =>
        ['ROUND_ROBIN', 'LEAST_REQUEST', 'RANDOM', 'RING_HASH', 'MAGLEV'].map(
          lbPolicy => compileCluster(edsCluster({ lbPolicy })).lbPolicy,
        ),
      ['ROUND_ROBIN', 'LEAST_REQUEST', 'RANDOM', 'RING_HASH', 'MAGLEV'],
    ],
    [
      'reads ring hash sizes',
      () =>
        compileCluster(
          edsCluster({
            lbPolicy: 'RING_HASH',
            ringHashLbConfig: { minimumRingSize: { value: 64 }, maximumRingSize: { value: 4096 } },
          }),
        ).ringHash,
      { minimumRingSize: 64, maximumRingSize: 4096 },
    ],
    [
      'picks the first known load_balancing_policy',
      () => {
        const c = compileCluster(
          edsCluster({
            lbPolicy: 'LOAD_BALANCING_POLICY_CONFIG',
            loadBalancingPolicy: {
              policies: [
                {
                  typedExtensionConfig: {
                    name: 'custom',
                    typedConfig: { type_url: 'type.googleapis.com/acme.Lb', value: 'AAA=' },
                  },
                },
                {
                  typedExtensionConfig: {
                    name: 'rh',
                    typedConfig: { '@type': URL.ringHash, minimumRingSize: { value: 128 } },
                  },
                },
                {
                  typedExtensionConfig: { name: 'lr', typedConfig: { '@type': URL.leastRequest } },
                },
              ],
            },
          }),
        );
        return [c.lbPolicy, c.ringHash];
      },
      ['RING_HASH', { minimumRingSize: 128, maximumRingSize: 8_388_608 }],
    ],
    [
      'maps ORIGINAL_DST with CLUSTER_PROVIDED to round robin over the one destination',
      () => {
        const c = compileCluster(
          decoded(TYPE.cluster, { name: 'p', type: 'ORIGINAL_DST', lbPolicy: 'CLUSTER_PROVIDED' }),
        );
        return [c.type, c.lbPolicy, c.loadAssignment];
      },
      ['ORIGINAL_DST', 'ROUND_ROBIN', undefined],
    ],
    [
      'reads DEFAULT priority breakers, ignoring HIGH ones',
      () =>
        compileCluster(
          edsCluster({
            circuitBreakers: {
              thresholds: [
                { priority: 'HIGH', maxConnections: { value: 1 } },
                { maxConnections: { value: 7 }, maxRetries: { value: 0 } },
              ],
            },
          }),
        ).circuitBreakers,
      { maxConnections: 7, maxPendingRequests: 1024, maxRequests: 1024, maxRetries: 0 },
    ],
    [
      'fills outlier detection defaults (gateway failures off unless enforced)',
      () => compileCluster(edsCluster({ outlierDetection: {} })).outlierDetection,
      {
        consecutive5xx: 5,
        consecutiveGatewayFailure: 0,
        intervalMs: 10_000,
        baseEjectionTimeMs: 30_000,
        maxEjectionPercent: 10,
      },
    ],
    [
      'turns 5xx ejection off when not enforced',
      () =>
        compileCluster(
          edsCluster({
            outlierDetection: {
              consecutive_5xx: { value: 2 },
              enforcingConsecutive_5xx: { value: 0 },
            },
          }),
        ).outlierDetection?.consecutive5xx,
      0,
    ],
    [
      'reads the panic threshold',
      () =>
        compileCluster(edsCluster({ commonLbConfig: { healthyPanicThreshold: { value: 0 } } }))
          .healthyPanicThreshold,
      0,
    ],
    [
      'makes a lone transport_socket the catch-all transport',
      () => compileCluster(edsCluster({ transportSocket: MESH_TLS })).transports,
      [
        {
          name: 'default',
          match: {},
          tls: {
            certificate: { kind: 'sds', name: 'default' },
            validation: { trust: { kind: 'sds', name: 'ROOTCA' }, sanMatchers: [] },
            alpn: [],
            mesh: true,
          },
        },
      ],
    ],
    [
      'puts transport_socket after the matches, and reads number and bool match values as strings',
      () =>
        compileCluster(
          edsCluster({
            transportSocketMatches: [
              {
                name: 'm',
                match: { fields: { n: { numberValue: 1 }, b: { boolValue: true } } },
                transportSocket: MESH_TLS,
              },
            ],
            transportSocket: { name: 'envoy.transport_sockets.raw_buffer' },
          }),
        ).transports.map(t => [t.name, t.match, t.tls?.mesh]),
      [
        ['m', { n: '1', b: 'true' }, true],
        ['default', {}, undefined],
      ],
    ],
    [
      'does not verify an upstream without a validation context',
      () =>
        compileCluster(
          edsCluster({
            transportSocket: upstreamTlsSocket({
              sni: 'a.com',
              commonTlsContext: { alpnProtocols: ['h2'] },
            }),
          }),
        ).transports[0]!.tls,
      { sni: 'a.com', alpn: ['h2'], mesh: false },
    ],
    [
      'presents client certificate files and trusts the system roots',
      () =>
        compileCluster(
          edsCluster({
            transportSocket: upstreamTlsSocket({
              commonTlsContext: {
                tlsCertificates: [
                  { certificateChain: { filename: '/c' }, privateKey: { filename: '/k' } },
                ],
                validationContext: { systemRootCerts: {} },
              },
            }),
          }),
        ).transports[0]!.tls,
      {
        certificate: { kind: 'files', certChainPath: '/c', privateKeyPath: '/k' },
        validation: { trust: { kind: 'system' }, sanMatchers: [] },
        alpn: [],
        mesh: false,
      },
    ],
    [
      'reads HTTP protocol options: h2, downstream, limits, idle timeout 0 = none',
      () =>
        [
          hpo({
            explicitHttpConfig: { http2ProtocolOptions: {} },
            commonHttpProtocolOptions: {
              maxRequestsPerConnection: { value: 3 },
              idleTimeout: { seconds: 0 },
            },
          }),
          hpo({ explicitHttpConfig: { httpProtocolOptions: {} } }),
          hpo({ useDownstreamProtocolConfig: {} }),
          { http2ProtocolOptions: {} },
          { protocolSelection: 'USE_DOWNSTREAM_PROTOCOL' },
        ].map(extra => {
          const c = compileCluster(edsCluster(extra));
          return [c.upstreamProtocol, c.maxRequestsPerConnection, c.idleTimeoutMs];
        }),
      [
        ['http2', 3, undefined],
        ['http1', undefined, 3_600_000],
        ['downstream', undefined, 3_600_000],
        ['http2', undefined, 3_600_000],
        ['downstream', undefined, 3_600_000],
      ],
    ],
    [
      'reads TCP keepalive and the DNS refresh rate',
      () => {
        const c = compileCluster(
          decoded(TYPE.cluster, {
            name: 'd',
            type: 'STRICT_DNS',
            dnsRefreshRate: { seconds: 30 },
            upstreamConnectionOptions: { tcpKeepalive: { keepaliveTime: { value: 60 } } },
            loadAssignment: {
              clusterName: 'd',
              endpoints: [
                { lbEndpoints: [lbEndpoint('a.example.com', 80), lbEndpoint('b.example.com', 80)] },
              ],
            },
          }),
        );
        return [
          c.tcpKeepalive,
          c.dnsRefreshRateMs,
          c.loadAssignment!.endpoints.map(e => e.address),
        ];
      },
      [{ timeSeconds: 60 }, 30_000, ['a.example.com', 'b.example.com']],
    ],
  ])('%s', (_name, get, expected) => {
    expect(get()).toEqual(expected);
  });

  it.each<[string, Resource, string | RegExp]>([
    ['a missing name', decoded(TYPE.cluster, { type: 'EDS' }), 'cluster (unnamed): name: required'],
    [
      'ORIGINAL_DST with another policy',
      decoded(TYPE.cluster, { name: 'p', type: 'ORIGINAL_DST' }),
      'cluster p: lbPolicy: ROUND_ROBIN is not valid for an ORIGINAL_DST cluster (CLUSTER_PROVIDED only)',
    ],
    [
      'CLUSTER_PROVIDED on EDS',
      edsCluster({ lbPolicy: 'CLUSTER_PROVIDED' }),
      /CLUSTER_PROVIDED is not valid for a EDS cluster/,
    ],
    [
      'LOAD_BALANCING_POLICY_CONFIG without a policy',
      edsCluster({ lbPolicy: 'LOAD_BALANCING_POLICY_CONFIG' }),
      'cluster c: loadBalancingPolicy: required',
    ],
    [
      'only unknown load balancing policies',
      edsCluster({
        loadBalancingPolicy: {
          policies: [
            {
              typedExtensionConfig: {
                name: 'x',
                typedConfig: { type_url: 'type.googleapis.com/acme.Lb', value: 'AAA=' },
              },
            },
          ],
        },
      }),
      /no supported policy among acme.Lb/,
    ],
    [
      'a custom cluster type',
      edsCluster({ clusterType: { name: 'envoy.clusters.aggregate' } }),
      'cluster c: clusterType: not supported',
    ],
    [
      'active health checks',
      edsCluster({
        healthChecks: [{ timeout: { seconds: 1 }, interval: { seconds: 1 }, tcpHealthCheck: {} }],
      }),
      'cluster c: healthChecks: not supported',
    ],
    [
      'subset load balancing',
      edsCluster({ lbSubsetConfig: { subsetSelectors: [{ keys: ['a'] }] } }),
      'cluster c: lbSubsetConfig: not supported',
    ],
    [
      'a minimum ring above the maximum',
      edsCluster({
        lbPolicy: 'RING_HASH',
        ringHashLbConfig: { minimumRingSize: { value: 10 }, maximumRingSize: { value: 5 } },
      }),
      /minimumRingSize is above maximumRingSize/,
    ],
    [
      'a ring above 8M',
      edsCluster({
        lbPolicy: 'RING_HASH',
        ringHashLbConfig: { minimumRingSize: { value: 9_000_000 } },
      }),
      /minimumRingSize.value: must be at most 8388608/,
    ],
    [
      'a retry budget',
      edsCluster({
        circuitBreakers: { thresholds: [{ retryBudget: { minRetryConcurrency: { value: 1 } } }] },
      }),
      /thresholds\[0\].retryBudget: not supported/,
    ],
    [
      'partial outlier enforcement',
      edsCluster({ outlierDetection: { enforcingConsecutive_5xx: { value: 50 } } }),
      /enforcingConsecutive_5xx: only 0 or 100 is supported/,
    ],
    [
      'failure percentage ejection',
      edsCluster({ outlierDetection: { enforcingFailurePercentage: { value: 100 } } }),
      /failure percentage ejection is not supported/,
    ],
    [
      'unknown protocol options',
      edsCluster({
        typedExtensionProtocolOptions: {
          'envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions': {
            type_url: 'type.googleapis.com/envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions',
          },
        },
      }),
      /unsupported protocol options envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions/,
    ],
    [
      'HTTP/3 upstream',
      edsCluster(hpo({ explicitHttpConfig: { http3ProtocolOptions: {} } })),
      /explicitHttpConfig.http3ProtocolOptions: not supported/,
    ],
    [
      'a zero connect timeout',
      edsCluster({ connectTimeout: {} }),
      'cluster c: connectTimeout: must be greater than 0',
    ],
    [
      'LOGICAL_DNS with two endpoints',
      decoded(TYPE.cluster, {
        name: 'd',
        type: 'LOGICAL_DNS',
        loadAssignment: {
          clusterName: 'd',
          endpoints: [{ lbEndpoints: [lbEndpoint('a', 1), lbEndpoint('b', 1)] }],
        },
      }),
      'cluster d: loadAssignment: a LOGICAL_DNS cluster needs exactly one endpoint',
    ],
    [
      'STATIC with a host name',
      decoded(TYPE.cluster, {
        name: 's',
        type: 'STATIC',
        loadAssignment: {
          clusterName: 's',
          endpoints: [{ lbEndpoints: [lbEndpoint('a.example.com', 1)] }],
        },
      }),
      'cluster s: loadAssignment.endpoints[0].lbEndpoints[0].endpoint.address.socketAddress.address: a.example.com is not an IP address',
    ],
    [
      'a transport socket match without a socket',
      edsCluster({ transportSocketMatches: [{ name: 'm' }] }),
      'cluster c: transportSocketMatches[0].transportSocket: required',
    ],
    [
      'nested match values',
      edsCluster({
        transportSocketMatches: [
          { name: 'm', match: { fields: { a: { structValue: {} } } }, transportSocket: MESH_TLS },
        ],
      }),
      /match.fields.a: expected a string, number or boolean value/,
    ],
    [
      'a downstream context upstream',
      edsCluster({ transportSocket: { name: 'x', typedConfig: { '@type': URL.downstreamTls } } }),
      /transportSocket: unsupported transport socket envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext/,
    ],
    [
      'an inline private key',
      edsCluster({
        transportSocket: upstreamTlsSocket({
          commonTlsContext: {
            tlsCertificates: [
              { certificateChain: { filename: '/c' }, privateKey: { inlineBytes: 'AAAA' } },
            ],
          },
        }),
      }),
      /privateKey: only filename data sources are supported/,
    ],
    [
      'certificate pinning',
      edsCluster({
        transportSocket: upstreamTlsSocket({
          commonTlsContext: {
            validationContext: { trustedCa: { filename: '/ca' }, verifyCertificateHash: ['ab'] },
          },
        }),
      }),
      /verifyCertificateHash: not supported/,
    ],
  ])('rejects %s', (_name, resource, message) => {
    let err: unknown;
    try {
      compileCluster(resource);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CompileError);
    if (typeof message === 'string') expect((err as Error).message).toBe(message);
    else expect((err as Error).message).toMatch(message);
  });
});

describe('compileLoadAssignment', () => {
  it.each<[string, () => unknown, unknown]>([
    [
      'flattens localities with their priority and shares the locality object',
      () => {
        const la = compileLoadAssignment(
          decoded(TYPE.endpoints, {
            clusterName: 'c',
            endpoints: [
              {
                locality: { region: 'eu', zone: 'a', subZone: 's' },
                priority: 1,
                lbEndpoints: [lbEndpoint('10.0.0.1', 80), lbEndpoint('10.0.0.2', 81)],
              },
              { lbEndpoints: [lbEndpoint('::1', 82, { loadBalancingWeight: { value: 5 } })] },
            ],
          }),
        );
        return [
          la.endpoints.map(e => [e.address, e.port, e.weight, e.locality, e.priority]),
          la.endpoints[0]!.locality === la.endpoints[1]!.locality,
        ];
      },
      [
        [
          ['10.0.0.1', 80, 1, { region: 'eu', zone: 'a', subZone: 's' }, 1],
          ['10.0.0.2', 81, 1, { region: 'eu', zone: 'a', subZone: 's' }, 1],
          ['::1', 82, 5, { region: '', zone: '', subZone: '' }, 0],
        ],
        true,
      ],
    ],
    [
      'maps health status: UNKNOWN and HEALTHY are healthy',
      () =>
        compileLoadAssignment(
          assignment(
            ['UNKNOWN', 'HEALTHY', 'UNHEALTHY', 'DRAINING', 'TIMEOUT', 'DEGRADED'].map(
              (healthStatus, i) => lbEndpoint(`10.0.0.${i + 1}`, 80, { healthStatus }),
            ),
          ),
        ).endpoints.map(e => e.healthy),
      [true, true, false, false, false, false],
    ],
    [
      'reads transport socket match metadata from the endpoint, else its locality',
      () =>
        compileLoadAssignment(
          assignment(
            [
              lbEndpoint('10.0.0.1', 80, {
                metadata: {
                  filterMetadata: {
                    'envoy.transport_socket_match': {
                      fields: { tlsMode: { stringValue: 'istio' } },
                    },
                  },
                },
              }),
              lbEndpoint('10.0.0.2', 80),
            ],
            {
              metadata: {
                filterMetadata: {
                  'envoy.transport_socket_match': {
                    fields: { tlsMode: { stringValue: 'disabled' } },
                  },
                },
              },
            },
          ),
        ).endpoints.map(e => e.transportMatch),
      [{ tlsMode: 'istio' }, { tlsMode: 'disabled' }],
    ],
  ])('%s', (_name, get, expected) => {
    expect(get()).toEqual(expected);
  });

  it.each<[string, Resource, string | RegExp]>([
    [
      'a missing cluster name',
      decoded(TYPE.endpoints, {}),
      'load assignment (unnamed): clusterName: required',
    ],
    [
      'a pipe address',
      assignment([{ endpoint: { address: { pipe: { path: '/s' } } } }]),
      'load assignment c: endpoints[0].lbEndpoints[0].endpoint.address.pipe: not supported',
    ],
    [
      'an internal address',
      assignment([
        { endpoint: { address: { envoyInternalAddress: { serverListenerName: 'x' } } } },
      ]),
      /endpoint.address.envoyInternalAddress: not supported/,
    ],
    [
      'an empty address',
      assignment([{ endpoint: { address: {} } }]),
      'load assignment c: endpoints[0].lbEndpoints[0].endpoint.address: only socket addresses are supported',
    ],
    [
      'a host name',
      assignment([lbEndpoint('db.example.com', 5432)]),
      /db.example.com is not an IP address/,
    ],
    [
      'a zero weight',
      assignment([lbEndpoint('10.0.0.1', 80, { loadBalancingWeight: { value: 0 } })]),
      /loadBalancingWeight: must be at least 1/,
    ],
    [
      'a named port',
      assignment([
        { endpoint: { address: { socketAddress: { address: '10.0.0.1', namedPort: 'http' } } } },
      ]),
      /socketAddress.namedPort: not supported/,
    ],
    [
      'named endpoints',
      decoded(TYPE.endpoints, { clusterName: 'c', namedEndpoints: { a: {} } }),
      'load assignment c: namedEndpoints: not supported',
    ],
    [
      'dropped overload',
      decoded(TYPE.endpoints, { clusterName: 'c', policy: { dropOverloads: [{ category: 'x' }] } }),
      'load assignment c: policy.dropOverloads: not supported',
    ],
    [
      'an endpoint without an endpoint',
      assignment([{ healthStatus: 'HEALTHY' }]),
      'load assignment c: endpoints[0].lbEndpoints[0].endpoint: required',
    ],
    [
      'a port out of range',
      { clusterName: 'c', endpoints: [{ lbEndpoints: [lbEndpoint('10.0.0.1', 70_000)] }] },
      /portValue: must be at most 65535/,
    ],
  ])('rejects %s', (_name, resource, message) => {
    let err: unknown;
    try {
      compileLoadAssignment(resource);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CompileError);
    if (typeof message === 'string') expect((err as Error).message).toBe(message);
    else expect((err as Error).message).toMatch(message);
  });
});
