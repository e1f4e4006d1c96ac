import type {
  Cluster,
  HttpHandler,
  Listener,
  LoadAssignment,
  RouteAction,
  RouteTable,
  TcpProxyHandler,
} from '../model';
import { NO_HEADER_EDITS } from '../model';
import {
  compileCluster,
  compileListener,
  compileLoadAssignment,
  compileRouteTable,
} from './compile';
import { loadSample, type Resource, type Sample } from './compile-testing';

const SAMPLES: Record<string, Sample> = {
  'sidecar-sample.json': loadSample('sidecar-sample.json'),
  'sidecar-strict-sample.json': loadSample('sidecar-strict-sample.json'),
};

interface Compiled {
  readonly listeners: Map<string, Listener>;
  readonly routes: Map<string, RouteTable>;
  readonly clusters: Map<string, Cluster>;
  readonly endpoints: Map<string, LoadAssignment>;
}

function compileAll(s: Sample): Compiled {
  return {
    listeners: new Map(s.Listener.map(r => [r.name as string, compileListener(r)])),
    routes: new Map(s.RouteConfiguration.map(r => [r.name as string, compileRouteTable(r)])),
    clusters: new Map(s.Cluster.map(r => [r.name as string, compileCluster(r)])),
    endpoints: new Map(
      s.ClusterLoadAssignment.map(r => [r.clusterName as string, compileLoadAssignment(r)]),
    ),
  };
}

const every: [string, string, string, Resource][] = Object.entries(SAMPLES).flatMap(([file, s]) => [
  ...s.Listener.map(
    r => [file, 'Listener', r.name as string, r] as [string, string, string, Resource],
  ),
  ...s.RouteConfiguration.map(
    r => [file, 'RouteConfiguration', r.name as string, r] as [string, string, string, Resource],
  ),
  ...s.Cluster.map(
    r => [file, 'Cluster', r.name as string, r] as [string, string, string, Resource],
  ),
  ...s.ClusterLoadAssignment.map(
    r =>
      [file, 'ClusterLoadAssignment', r.clusterName as string, r] as [
        string,
        string,
        string,
        Resource,
      ],
  ),
]);

describe('every resource pilot sends a sidecar compiles', () => {
  const compilers: Record<string, (r: Resource) => unknown> = {
    Listener: compileListener,
    RouteConfiguration: compileRouteTable,
    Cluster: compileCluster,
    ClusterLoadAssignment: compileLoadAssignment,
  };
  it.each(every)('%s %s %s', (_file, type, _name, resource) => {
    expect(() => compilers[type]!(resource)).not.toThrow();
  });

  it('finds every type in both samples', () => {
    for (const s of Object.values(SAMPLES)) {
      expect(s.Listener.length).toBeGreaterThan(0);
      expect(s.RouteConfiguration.length).toBeGreaterThan(0);
      expect(s.Cluster.length).toBeGreaterThan(0);
      expect(s.ClusterLoadAssignment.length).toBeGreaterThan(0);
    }
  });
});

const http = (l: Listener | undefined, chain = 0): HttpHandler =>
  l!.filterChains[chain]!.handler as HttpHandler;
const routeAction = (t: RouteTable | undefined, vh: number, r: number): RouteAction =>
  t!.virtualHosts[vh]!.routes[r]!.action as RouteAction;

describe('sidecar-sample.json (PERMISSIVE, ALLOW_ANY)', () => {
  const c = compileAll(SAMPLES['sidecar-sample.json']!);
  const REVIEWS = 'reviews.default.svc.cluster.local';

  it.each<[string, (x: Compiled) => unknown, unknown]>([
    [
      'virtualOutbound hands off by original destination and passes the rest through',
      x => {
        const l = x.listeners.get('virtualOutbound')!;
        return {
          address: l.address,
          bindToPort: l.bindToPort,
          useOriginalDst: l.useOriginalDst,
          direction: l.direction,
          chains: l.filterChains.length,
          fallback: (l.defaultFilterChain!.handler as TcpProxyHandler).clusters.map(w => w.name),
        };
      },
      {
        address: { address: '0.0.0.0', port: 15001 },
        bindToPort: true,
        useOriginalDst: true,
        direction: 'outbound',
        chains: 0,
        fallback: ['PassthroughCluster'],
      },
    ],
    [
      '0.0.0.0_9080 is not bound and routes by RDS with fault, CORS and websockets',
      x => {
        const l = x.listeners.get('0.0.0.0_9080')!;
        const h = http(l);
        return [
          l.bindToPort,
          h.kind,
          h.rdsName,
          h.routeTable,
          h.codec,
          h.faultFilter,
          h.corsFilter,
          h.upgrades,
          h.forwardClientCert,
          h.streamIdleTimeoutMs,
        ];
      },
      [false, 'http', '9080', undefined, 'AUTO', true, true, ['websocket'], 'SANITIZE', 300_000],
    ],
    [
      '0.0.0.0_5432 matches the VIP and falls back to the passthrough',
      x => {
        const l = x.listeners.get('0.0.0.0_5432')!;
        return [
          l.filterChains[0]!.match.prefixRanges,
          (l.filterChains[0]!.handler as TcpProxyHandler).totalWeight,
          l.defaultFilterChain?.name,
        ];
      },
      [[{ address: '10.96.0.5', prefixLen: 32 }], 1, 'PassthroughCluster'],
    ],
    [
      'virtualInbound sniffs TLS and terminates mesh mTLS on the istio ALPN chain',
      x => {
        const l = x.listeners.get('virtualInbound')!;
        const chain = l.filterChains[0]!;
        return {
          inspectTls: l.inspectTls,
          direction: l.direction,
          match: chain.match,
          tls: chain.tls,
        };
      },
      {
        inspectTls: true,
        direction: 'inbound',
        match: {
          destinationPort: 9080,
          transportProtocol: 'tls',
          applicationProtocols: [
            'istio-peer-exchange',
            'istio',
            'istio-http/1.0',
            'istio-http/1.1',
            'istio-h2',
          ],
          prefixRanges: [],
          sourcePrefixRanges: [],
          serverNames: [],
        },
        tls: {
          certificate: { kind: 'sds', name: 'default' },
          validation: {
            trust: { kind: 'sds', name: 'ROOTCA' },
            sanMatchers: [
              {
                sanType: 'URI',
                matcher: { kind: 'prefix', value: 'spiffe://cluster.local/', ignoreCase: false },
              },
            ],
          },
          requireClientCertificate: true,
          alpn: ['h2', 'http/1.1'],
        },
      },
    ],
    [
      'virtualInbound forwards the client certificate and routes inline with no timeout',
      x => {
        // Chains: mesh mTLS, TLS passthrough (no Istio ALPN), plaintext.
        const h = http(x.listeners.get('virtualInbound'), 2);
        const a = routeAction(h.routeTable, 0, 0);
        return [
          h.forwardClientCert,
          h.clientCertDetails,
          h.rdsName,
          a.clusters[0]!.name,
          a.timeoutMs,
          x.listeners.get('virtualInbound')!.filterChains[2]!.tls,
          x.listeners.get('virtualInbound')!.filterChains[1]!.handler.kind,
        ];
      },
      [
        'APPEND_FORWARD',
        { subject: true, uri: true, dns: true, cert: false },
        undefined,
        'inbound|9080||',
        0,
        undefined,
        'tcp',
      ],
    ],
    [
      'the jason route matches a header, delays half the requests and hashes on x-user',
      x => {
        const r = x.routes.get('9080')!.virtualHosts[0]!.routes[0]!;
        const a = r.action as RouteAction;
        return {
          headers: r.match.headers,
          fault: r.fault,
          hash: a.hashPolicies,
          retry: a.retry,
          timeout: a.timeoutMs,
        };
      },
      {
        headers: [
          {
            name: 'end-user',
            match: { kind: 'exact', value: 'jason', ignoreCase: false },
            invert: false,
          },
        ],
        fault: { delay: { delayMs: 1000, fraction: 0.5 } },
        hash: [{ kind: 'header', name: 'x-user', terminal: false }],
        retry: {
          retryOn: new Set([
            'connect-failure',
            'refused-stream',
            'unavailable',
            'cancelled',
            'retriable-status-codes',
          ]),
          numRetries: 2,
          retriableStatusCodes: [503],
          backoffBaseMs: 25,
          backoffMaxMs: 250,
        },
        timeout: 0,
      },
    ],
    [
      'the /api route splits 80/20, rewrites, times out, retries, mirrors and sets a header',
      x => {
        const r = x.routes.get('9080')!.virtualHosts[0]!.routes[1]!;
        const a = r.action as RouteAction;
        return {
          weights: a.clusters.map(w => [w.name, w.weight]),
          total: a.totalWeight,
          timeout: a.timeoutMs,
          perTry: a.retry?.perTryTimeoutMs,
          retryOn: [...a.retry!.retryOn],
          rewrite: a.prefixRewrite,
          mirrors: a.mirrors,
          set: r.requestHeaders.set,
        };
      },
      {
        weights: [
          [`outbound|9080|v1|${REVIEWS}`, 80],
          [`outbound|9080|v2|${REVIEWS}`, 20],
        ],
        total: 100,
        timeout: 2000,
        perTry: 500,
        retryOn: ['5xx', 'connect-failure'],
        rewrite: '/v1/api',
        mirrors: [{ cluster: 'outbound|9090||ratings.default.svc.cluster.local', fraction: 1 }],
        set: [{ name: 'x-a', value: 'b' }],
      },
    ],
    [
      'unknown hosts pass through with no timeout',
      x => {
        const vh = x.routes.get('9080')!.virtualHosts[1]!;
        return [
          vh.domains,
          routeAction(x.routes.get('9080'), 1, 0).clusters[0]!.name,
          routeAction(x.routes.get('9080'), 1, 0).timeoutMs,
        ];
      },
      [['*'], 'PassthroughCluster', 0],
    ],
    [
      'reviews is EDS, least request, auto mTLS by endpoint metadata with its SAN',
      x => {
        const cl = x.clusters.get(`outbound|9080||${REVIEWS}`)!;
        return {
          type: cl.type,
          eds: cl.edsServiceName,
          lb: cl.lbPolicy,
          connect: cl.connectTimeoutMs,
          breakers: cl.circuitBreakers,
          transports: cl.transports,
          protocol: cl.upstreamProtocol,
        };
      },
      {
        type: 'EDS',
        eds: `outbound|9080||${REVIEWS}`,
        lb: 'LEAST_REQUEST',
        connect: 10_000,
        breakers: {
          maxConnections: 4294967295,
          maxPendingRequests: 4294967295,
          maxRequests: 4294967295,
          maxRetries: 4294967295,
        },
        transports: [
          {
            name: 'tlsMode-istio',
            match: { tlsMode: 'istio' },
            tls: {
              certificate: { kind: 'sds', name: 'default' },
              validation: {
                trust: { kind: 'sds', name: 'ROOTCA' },
                sanMatchers: [
                  {
                    sanType: 'URI',
                    matcher: {
                      kind: 'exact',
                      value: 'spiffe://cluster.local/ns/default/sa/reviews',
                      ignoreCase: false,
                    },
                  },
                ],
              },
              sni: `outbound_.9080_._.${REVIEWS}`,
              alpn: ['istio-peer-exchange', 'istio'],
              mesh: true,
            },
          },
          { name: 'tlsMode-disabled', match: {} },
        ],
        protocol: 'http1',
      },
    ],
    [
      'the v2 subset hashes on a ring of Envoy default size',
      x => [
        x.clusters.get(`outbound|9080|v2|${REVIEWS}`)!.lbPolicy,
        x.clusters.get(`outbound|9080|v2|${REVIEWS}`)!.ringHash,
      ],
      ['RING_HASH', { minimumRingSize: 1024, maximumRingSize: 8_388_608 }],
    ],
    [
      'ratings (grpc) speaks HTTP/2 upstream',
      x => x.clusters.get('outbound|9090||ratings.default.svc.cluster.local')!.upstreamProtocol,
      'http2',
    ],
    [
      'PassthroughCluster goes to the original destination',
      x => {
        const cl = x.clusters.get('PassthroughCluster')!;
        return [cl.type, cl.lbPolicy, cl.loadAssignment, cl.transports];
      },
      ['ORIGINAL_DST', 'ROUND_ROBIN', undefined, []],
    ],
    [
      'BlackHoleCluster has no endpoints and Envoy default breakers',
      x => {
        const cl = x.clusters.get('BlackHoleCluster')!;
        return [cl.type, cl.loadAssignment, cl.circuitBreakers, cl.healthyPanicThreshold];
      },
      [
        'STATIC',
        { clusterName: 'BlackHoleCluster', endpoints: [] },
        { maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024, maxRetries: 3 },
        50,
      ],
    ],
    [
      'inbound|9080|| is the local workload',
      x =>
        x.clusters
          .get('inbound|9080||')!
          .loadAssignment!.endpoints.map(e => [e.address, e.port, e.weight, e.healthy]),
      [['127.0.0.1', 9080, 1, true]],
    ],
    [
      'EDS endpoints carry their transport match',
      x =>
        x.endpoints
          .get(`outbound|9080||${REVIEWS}`)!
          .endpoints.map(e => [e.address, e.transportMatch]),
      [
        ['10.0.0.100', { tlsMode: 'istio' }],
        ['10.0.0.1', { tlsMode: 'istio' }],
        ['10.0.0.2', { tlsMode: 'istio' }],
      ],
    ],
    [
      'plaintext endpoints match no transport',
      x => x.endpoints.get('outbound|5432||db.default.svc.cluster.local')!.endpoints[0],
      {
        address: '10.0.0.4',
        port: 5432,
        weight: 1,
        healthy: true,
        locality: { region: '', zone: '', subZone: '' },
        priority: 0,
        transportMatch: {},
      },
    ],
  ])('%s', (_name, get, expected) => {
    expect(get(c)).toEqual(expected);
  });

  it('shares NO_HEADER_EDITS for routes without edits', () => {
    const r = c.routes.get('9080')!.virtualHosts[0]!.routes[0]!;
    expect(r.requestHeaders).toBe(NO_HEADER_EDITS);
    expect((r.action as RouteAction).clusters[0]!.requestHeaders).toBe(NO_HEADER_EDITS);
    expect(c.routes.get('9080')!.virtualHosts[0]!.responseHeaders).toBe(NO_HEADER_EDITS);
  });
});

describe('sidecar-strict-sample.json (STRICT, REGISTRY_ONLY, DNS, faults, TLS origination)', () => {
  const c = compileAll(SAMPLES['sidecar-strict-sample.json']!);
  const REVIEWS = 'reviews.default.svc.cluster.local';
  const reviewsRoutes = () => c.routes.get('9080')!.virtualHosts[0]!.routes;

  it.each<[string, () => unknown, unknown]>([
    [
      'STRICT inbound chains require mesh mTLS without sniffing',
      () => {
        const l = c.listeners.get('virtualInbound')!;
        return {
          inspectTls: l.inspectTls,
          chains: l.filterChains.map(f => [
            f.name,
            f.match.destinationPort,
            f.match.transportProtocol,
            f.tls?.requireClientCertificate,
            f.handler.kind,
          ]),
        };
      },
      {
        inspectTls: false,
        chains: [
          ['inbound|5432||-mtls', 5432, undefined, true, 'tcp'],
          ['inbound|9080||-mtls', 9080, undefined, true, 'http'],
        ],
      },
    ],
    [
      'REGISTRY_ONLY drops unknown TCP traffic',
      () =>
        (c.listeners.get('virtualOutbound')!.defaultFilterChain!.handler as TcpProxyHandler)
          .clusters[0]!.name,
      'BlackHoleCluster',
    ],
    [
      'REGISTRY_ONLY answers unknown HTTP hosts with 502',
      () => c.routes.get('9080')!.virtualHosts[1]!.routes[0]!.action,
      { kind: 'direct', status: 502 },
    ],
    [
      'the versioned route matches a regex path, query parameters and a missing header',
      () => {
        const r = reviewsRoutes()[0]!;
        const path = r.match.path as { kind: 'regex'; regex: RegExp };
        return {
          name: r.name,
          kind: path.kind,
          hits: ['/v1/reviews/7', '/v22/reviews/'].map(p => path.regex.test(p)),
          misses: ['/v/reviews/7', '/x/v1/reviews/7'].map(p => path.regex.test(p)),
          query: r.match.queryParameters,
          headers: r.match.headers,
        };
      },
      {
        name: 'versioned',
        kind: 'regex',
        hits: [true, true],
        misses: [false, false],
        query: [
          { name: 'debug', match: { kind: 'exact', value: '1', ignoreCase: false } },
          { name: 'trace' },
        ],
        headers: [
          {
            name: 'x-skip',
            match: { kind: 'prefix', value: 'yes', ignoreCase: false },
            invert: true,
          },
        ],
      },
    ],
    [
      'the versioned route edits and removes headers both ways and hashes on the source IP',
      () => {
        const r = reviewsRoutes()[0]!;
        return [r.requestHeaders, r.responseHeaders, (r.action as RouteAction).hashPolicies];
      },
      [
        { set: [], add: [{ name: 'x-via', value: 'sail' }], remove: ['x-internal'] },
        { set: [{ name: 'cache-control', value: 'no-store' }], add: [], remove: ['x-debug'] },
        [{ kind: 'sourceIp', terminal: false }],
      ],
    ],
    [
      '/old redirects with 302 to another host and path',
      () => reviewsRoutes()[1]!.action,
      {
        kind: 'redirect',
        host: 'reviews.example.com',
        path: '/new',
        responseCode: 302,
        stripQuery: false,
      },
    ],
    [
      '/abort aborts 10 % with 503 and hashes on the session cookie',
      () => [
        reviewsRoutes()[2]!.match.path,
        reviewsRoutes()[2]!.fault,
        (reviewsRoutes()[2]!.action as RouteAction).hashPolicies,
      ],
      [
        { kind: 'path', value: '/abort' },
        { abort: { httpStatus: 503, fraction: 0.1 } },
        [{ kind: 'cookie', name: 'session', ttlMs: 60_000, path: '/', terminal: false }],
      ],
    ],
    [
      '/mirror mirrors a quarter of the requests and retries gateway errors and 503',
      () => {
        const a = reviewsRoutes()[3]!.action as RouteAction;
        return [
          a.mirrors,
          [...a.retry!.retryOn],
          a.retry!.retriableStatusCodes,
          a.retry!.numRetries,
        ];
      },
      [
        [{ cluster: 'outbound|9090||ratings.default.svc.cluster.local', fraction: 0.25 }],
        ['gateway-error', 'retriable-status-codes'],
        [503],
        4,
      ],
    ],
    [
      'the default route allows websocket upgrades',
      () => (reviewsRoutes()[4]!.action as RouteAction).upgrades,
      ['websocket'],
    ],
    [
      'ratings aborts gRPC calls with UNAVAILABLE and times out after 3 s',
      () => {
        const r = c.routes.get('9090')!.virtualHosts[0]!.routes[0]!;
        return [r.fault, (r.action as RouteAction).timeoutMs];
      },
      [{ abort: { grpcStatus: 14, fraction: 0.005 } }, 3000],
    ],
    [
      'reviews has the DestinationRule connection pool, outlier detection and HTTP/2 upgrade',
      () => {
        const cl = c.clusters.get(`outbound|9080||${REVIEWS}`)!;
        return {
          lb: cl.lbPolicy,
          connect: cl.connectTimeoutMs,
          breakers: cl.circuitBreakers,
          outlier: cl.outlierDetection,
          panic: cl.healthyPanicThreshold,
          protocol: cl.upstreamProtocol,
          perConnection: cl.maxRequestsPerConnection,
          idle: cl.idleTimeoutMs,
          keepalive: cl.tcpKeepalive,
        };
      },
      {
        lb: 'RING_HASH',
        connect: 2000,
        breakers: { maxConnections: 100, maxPendingRequests: 10, maxRequests: 200, maxRetries: 5 },
        outlier: {
          consecutive5xx: 3,
          consecutiveGatewayFailure: 2,
          intervalMs: 5000,
          baseEjectionTimeMs: 15_000,
          maxEjectionPercent: 50,
        },
        panic: 30,
        protocol: 'http2',
        perConnection: 7,
        idle: 30_000,
        keepalive: { probes: 3, timeSeconds: 30, intervalSeconds: 10 },
      },
    ],
    [
      'the v2 subset sets its minimum ring size',
      () => c.clusters.get(`outbound|9080|v2|${REVIEWS}`)!.ringHash,
      { minimumRingSize: 2048, maximumRingSize: 8_388_608 },
    ],
    [
      'api.example.com resolves every host name and originates SIMPLE TLS with its CA and SNI',
      () => {
        const cl = c.clusters.get('outbound|443||api.example.com')!;
        return {
          type: cl.type,
          eds: cl.edsServiceName,
          endpoints: cl.loadAssignment!.endpoints.map(e => [
            e.address,
            e.port,
            e.locality.region,
            e.locality.zone,
          ]),
          transports: cl.transports,
          dns: cl.dnsRefreshRateMs,
        };
      },
      {
        type: 'STRICT_DNS',
        eds: undefined,
        endpoints: [
          ['api-1.example.com', 443, 'us-east', 'zone-a'],
          ['api-2.example.com', 443, 'us-west', ''],
        ],
        transports: [
          {
            name: 'default',
            match: {},
            tls: {
              validation: {
                trust: { kind: 'files', path: '/etc/sail/certs/api-ca.pem' },
                sanMatchers: [
                  {
                    sanType: 'DNS',
                    matcher: { kind: 'exact', value: 'api.example.com', ignoreCase: false },
                  },
                ],
              },
              sni: 'api.example.com',
              alpn: [],
              mesh: false,
            },
          },
        ],
        dns: 5000,
      },
    ],
    [
      'web.example.com (DNS_ROUND_ROBIN) is one logical DNS host',
      () => {
        const cl = c.clusters.get('outbound|80||web.example.com')!;
        return [cl.type, cl.loadAssignment!.endpoints.map(e => `${e.address}:${e.port}`)];
      },
      ['LOGICAL_DNS', ['web.example.com:80']],
    ],
  ])('%s', (_name, get, expected) => {
    expect(get()).toEqual(expected);
  });
});
