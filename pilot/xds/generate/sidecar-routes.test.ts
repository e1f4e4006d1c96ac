/** Sidecar RDS, each route configuration encoded and decoded with the real Envoy protos. */
import type { ConfigObject, HTTPRoute } from '../../config/types';
import { ROUTE_TYPE, type PushContext } from '../model';
import { createGenerator } from './index';
import { expectEncodes } from './proto-check';
import { config, fqdn, proxy, pushContext, service } from './testing';
import { TYPES, type Obj } from './util';

const gen = createGenerator();
const sidecar = proxy('sidecar', { labels: { app: 'web' } });
const REVIEWS = fqdn('reviews');
const RATINGS = fqdn('ratings', 'shop');

const services = [
  service('reviews', ['http:9080'], { addresses: ['10.96.0.10'] }),
  service('ratings', ['http:9080', 'tcp:7000'], { namespace: 'shop' }),
  service('api.example.com', ['http:80'], { namespace: 'ext', location: 'MESH_EXTERNAL' }),
];

function routeConfig(p: PushContext, port = '9080', who = sidecar): Obj {
  const out = gen.generate(ROUTE_TYPE, who, p, [port]);
  expect(out.map(r => r.name)).toEqual([port]);
  expectEncodes(ROUTE_TYPE, out);
  return out[0]!.resource as Obj;
}

type VirtualHost = { name: string; domains: string[]; routes: Obj[] };
const vhosts = (rc: Obj) => rc.virtualHosts as VirtualHost[];
const vhost = (rc: Obj, name: string) => vhosts(rc).find(v => v.name === name)!;

function reviewsRoutes(http: HTTPRoute[], extra: ConfigObject[] = []): Obj[] {
  const p = pushContext({
    services,
    configs: [
      config('VirtualService', 'default', 'reviews', { hosts: ['reviews'], http }),
      ...extra,
    ],
  });
  return vhost(routeConfig(p), `${REVIEWS}:9080`).routes;
}

const route = (r: Obj) => r.route as Obj;

describe('sidecar route configurations', () => {
  it('names the configuration by port, with a virtual host per service and the ALLOW_ANY catch-all', () => {
    const rc = routeConfig(pushContext({ services }));
    expect(rc.name).toBe('9080');
    expect(rc.validateClusters).toEqual({ value: false });
    expect(vhosts(rc).map(v => v.name)).toEqual([
      `${RATINGS}:9080`,
      `${REVIEWS}:9080`,
      'allow_any',
    ]);
    expect(vhost(rc, 'allow_any')).toEqual({
      name: 'allow_any',
      domains: ['*'],
      routes: [
        {
          name: 'allow_any',
          match: { prefix: '/' },
          route: { cluster: 'PassthroughCluster', timeout: { seconds: 0 } },
        },
      ],
    });
  });

  it('answers 502 for unknown hosts with REGISTRY_ONLY', () => {
    const rc = routeConfig(
      pushContext({ services, mesh: { outboundTrafficPolicy: 'REGISTRY_ONLY' } }),
    );
    expect(vhosts(rc).at(-1)).toEqual({
      name: 'block_all',
      domains: ['*'],
      routes: [{ name: 'block_all', match: { prefix: '/' }, directResponse: { status: 502 } }],
    });
  });

  it('lists the FQDN, the short names Istio allows, and the VIPs, each with and without the port', () => {
    const rc = routeConfig(pushContext({ services }));
    expect(vhost(rc, `${REVIEWS}:9080`).domains).toEqual([
      REVIEWS,
      `${REVIEWS}:9080`,
      'reviews',
      'reviews:9080',
      'reviews.default',
      'reviews.default:9080',
      'reviews.default.svc',
      'reviews.default.svc:9080',
      '10.96.0.10',
      '10.96.0.10:9080',
    ]);
    expect(vhost(rc, `${RATINGS}:9080`).domains).toEqual([
      RATINGS,
      `${RATINGS}:9080`,
      'ratings.shop',
      'ratings.shop:9080',
      'ratings.shop.svc',
      'ratings.shop.svc:9080',
    ]);
  });

  it('routes to the service with Istio defaults when no VirtualService applies', () => {
    expect(vhost(routeConfig(pushContext({ services })), `${REVIEWS}:9080`).routes).toEqual([
      {
        name: 'default',
        match: { prefix: '/' },
        route: {
          cluster: `outbound|9080||${REVIEWS}`,
          timeout: { seconds: 0 },
          retryPolicy: {
            retryOn: 'connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes',
            numRetries: { value: 2 },
            retriableStatusCodes: [503],
          },
        },
      },
    ]);
  });

  it('answers a wildcard request with a configuration per HTTP port', () => {
    const out = gen.generate(ROUTE_TYPE, sidecar, pushContext({ services }), []);
    expect(out.map(r => r.name)).toEqual(['80', '9080']);
  });
});

describe('sidecar route translation', () => {
  it('redirects', () => {
    const [r] = reviewsRoutes([
      {
        match: [{ uri: { exact: '/v1' } }],
        redirect: {
          uri: '/v2',
          authority: 'new.example.com',
          port: 8443,
          scheme: 'https',
          redirectCode: 308,
        },
      },
    ]);
    expect(r).toEqual({
      match: { path: '/v1' },
      redirect: {
        pathRedirect: '/v2',
        hostRedirect: 'new.example.com',
        portRedirect: 8443,
        schemeRedirect: 'https',
        responseCode: 'PERMANENT_REDIRECT',
      },
    });
  });

  it('rewrites, edits headers, mirrors, and upgrades websockets', () => {
    const [r] = reviewsRoutes([
      {
        name: 'main',
        match: [{ uri: { prefix: '/api' }, queryParams: { debug: { exact: '1' }, trace: {} } }],
        rewrite: { uri: '/', authority: 'reviews.internal' },
        headers: {
          request: { set: { 'x-a': '1' }, add: { 'x-b': '2' }, remove: ['x-c'] },
          response: { set: { 'x-d': '4' }, remove: ['server'] },
        },
        appendHeaders: { 'x-legacy': 'yes' },
        removeResponseHeaders: ['x-powered-by'],
        mirror: { host: 'ratings.shop.svc.cluster.local', subset: 'shadow' },
        mirrorPercentage: { value: 5 },
        websocketUpgrade: true,
        timeout: '3s',
        route: [{ destination: { host: 'reviews' } }],
      },
    ]);
    expect(r).toEqual({
      name: 'main',
      match: {
        prefix: '/api',
        queryParameters: [
          { name: 'debug', stringMatch: { exact: '1' } },
          { name: 'trace', presentMatch: true },
        ],
      },
      route: {
        cluster: `outbound|9080||${REVIEWS}`,
        timeout: { seconds: 3 },
        retryPolicy: expect.objectContaining({ numRetries: { value: 2 } }),
        prefixRewrite: '/',
        hostRewriteLiteral: 'reviews.internal',
        requestMirrorPolicies: [
          {
            cluster: `outbound|9080|shadow|${RATINGS}`,
            runtimeFraction: { defaultValue: { numerator: 50_000, denominator: 'MILLION' } },
          },
        ],
        upgradeConfigs: [{ upgradeType: 'websocket' }],
      },
      requestHeadersToAdd: [
        { header: { key: 'x-a', value: '1' }, appendAction: 'OVERWRITE_IF_EXISTS_OR_ADD' },
        { header: { key: 'x-legacy', value: 'yes' }, appendAction: 'APPEND_IF_EXISTS_OR_ADD' },
        { header: { key: 'x-b', value: '2' }, appendAction: 'APPEND_IF_EXISTS_OR_ADD' },
      ],
      requestHeadersToRemove: ['x-c'],
      responseHeadersToAdd: [
        { header: { key: 'x-d', value: '4' }, appendAction: 'OVERWRITE_IF_EXISTS_OR_ADD' },
      ],
      responseHeadersToRemove: ['x-powered-by', 'server'],
    });
  });

  it('mirrors all traffic when no percentage is given', () => {
    const [r] = reviewsRoutes([
      { mirror: { host: 'reviews', subset: 'v2' }, route: [{ destination: { host: 'reviews' } }] },
    ]);
    expect(route(r!).requestMirrorPolicies).toEqual([
      {
        cluster: `outbound|9080|v2|${REVIEWS}`,
        runtimeFraction: { defaultValue: { numerator: 100, denominator: 'HUNDRED' } },
      },
    ]);
  });

  it('adds CORS as per-route config of the CORS filter', () => {
    const [r] = reviewsRoutes([
      {
        corsPolicy: {
          allowOrigins: [
            { exact: 'https://a.example.com' },
            { regex: 'https://.*\\.example\\.org' },
          ],
          allowOrigin: ['*'],
          allowMethods: ['GET', 'POST'],
          allowHeaders: ['x-user'],
          exposeHeaders: ['x-trace'],
          maxAge: '24h',
          allowCredentials: true,
        },
        route: [{ destination: { host: 'reviews' } }],
      },
    ]);
    expect(r!.typedPerFilterConfig).toEqual({
      'envoy.filters.http.cors': {
        '@type': TYPES.corsPolicy,
        allowOriginStringMatch: [
          { exact: 'https://a.example.com' },
          { safeRegex: { regex: 'https://.*\\.example\\.org' } },
          { safeRegex: { regex: '.*' } },
        ],
        allowMethods: 'GET,POST',
        allowHeaders: 'x-user',
        exposeHeaders: 'x-trace',
        maxAge: '86400',
        allowCredentials: { value: true },
      },
    });
  });

  it('carries per-destination header edits on weighted clusters', () => {
    const [r] = reviewsRoutes([
      {
        route: [
          {
            destination: { host: 'reviews', subset: 'v1' },
            weight: 90,
            headers: { request: { set: { 'x-subset': 'v1' } } },
          },
          {
            destination: { host: 'reviews', subset: 'v2', port: { number: 9080 } },
            weight: 10,
            headers: { response: { remove: ['x-internal'] } },
          },
        ],
      },
    ]);
    expect(route(r!).weightedClusters).toEqual({
      clusters: [
        {
          name: `outbound|9080|v1|${REVIEWS}`,
          weight: { value: 90 },
          requestHeadersToAdd: [
            {
              header: { key: 'x-subset', value: 'v1' },
              appendAction: 'OVERWRITE_IF_EXISTS_OR_ADD',
            },
          ],
        },
        {
          name: `outbound|9080|v2|${REVIEWS}`,
          weight: { value: 10 },
          responseHeadersToRemove: ['x-internal'],
        },
      ],
    });
  });

  it('keeps the header edits of a single destination (a one-entry weighted_clusters)', () => {
    const [r] = reviewsRoutes([
      {
        route: [
          {
            destination: { host: 'reviews', subset: 'v1' },
            headers: { request: { set: { 'x-subset': 'v1' } } },
          },
        ],
      },
    ]);
    expect(route(r!).cluster).toBeUndefined();
    expect(route(r!).weightedClusters).toEqual({
      clusters: [
        {
          name: `outbound|9080|v1|${REVIEWS}`,
          weight: { value: 100 },
          requestHeadersToAdd: [
            {
              header: { key: 'x-subset', value: 'v1' },
              appendAction: 'OVERWRITE_IF_EXISTS_OR_ADD',
            },
          ],
        },
      ],
    });
  });

  it('maps retries: custom conditions and status codes, per-try timeout, attempts 0 turns them off', () => {
    const routes = reviewsRoutes([
      {
        match: [{ uri: { prefix: '/a' } }],
        retries: {
          attempts: 4,
          perTryTimeout: '500ms',
          retryOn: 'gateway-error,connect-failure,429',
        },
        route: [{ destination: { host: 'reviews' } }],
      },
      {
        match: [{ uri: { prefix: '/b' } }],
        retries: { attempts: 0 },
        route: [{ destination: { host: 'reviews' } }],
      },
    ]);
    expect(route(routes[0]!).retryPolicy).toEqual({
      retryOn: 'gateway-error,connect-failure,retriable-status-codes',
      numRetries: { value: 4 },
      retriableStatusCodes: [429],
      perTryTimeout: { seconds: 0, nanos: 500_000_000 },
    });
    expect(route(routes[1]!).retryPolicy).toBeUndefined();
  });

  it.each([
    [{ httpHeaderName: 'X-User' }, [{ header: { headerName: 'x-user' } }]],
    [
      { httpCookie: { name: 'session', path: '/', ttl: '1h' } },
      [{ cookie: { name: 'session', path: '/', ttl: { seconds: 3600 } } }],
    ],
    [{ useSourceIp: true }, [{ connectionProperties: { sourceIp: true } }]],
    [{ httpQueryParameterName: 'user' }, [{ queryParameter: { name: 'user' } }]],
  ])('hashes for consistent hash %j', (consistentHash, want) => {
    const dr = config('DestinationRule', 'default', 'reviews', {
      host: 'reviews',
      trafficPolicy: { loadBalancer: { consistentHash } },
    });
    expect(
      route(reviewsRoutes([{ route: [{ destination: { host: 'reviews' } }] }], [dr])[0]!)
        .hashPolicy,
    ).toEqual(want);
    const p = pushContext({ services, configs: [dr] });
    expect(route(vhost(routeConfig(p), `${REVIEWS}:9080`).routes[0]!).hashPolicy).toEqual(want);
  });

  it('applies matches on source labels, source namespace and port for this proxy only', () => {
    const http: HTTPRoute[] = [
      {
        match: [{ sourceLabels: { app: 'web' }, uri: { prefix: '/web' } }],
        route: [{ destination: { host: 'reviews', subset: 'web' } }],
      },
      {
        match: [{ sourceNamespace: 'shop' }],
        route: [{ destination: { host: 'reviews', subset: 'shop' } }],
      },
      {
        match: [{ port: 7000 }],
        route: [{ destination: { host: 'reviews', subset: 'other-port' } }],
      },
      { route: [{ destination: { host: 'reviews', subset: 'rest' } }] },
    ];
    const p = pushContext({
      services,
      configs: [config('VirtualService', 'default', 'reviews', { hosts: ['reviews'], http })],
    });
    const clustersFor = (who = sidecar) =>
      vhost(routeConfig(p, '9080', who), `${REVIEWS}:9080`).routes.map(r => route(r).cluster);
    expect(clustersFor()).toEqual([
      `outbound|9080|web|${REVIEWS}`,
      `outbound|9080|rest|${REVIEWS}`,
    ]);
    expect(clustersFor(proxy('sidecar', { namespace: 'shop', labels: { app: 'db' } }))).toEqual([
      `outbound|9080|shop|${REVIEWS}`,
      `outbound|9080|rest|${REVIEWS}`,
    ]);
  });

  it('routes a VirtualService written for a wildcard host to the services it covers', () => {
    const p = pushContext({
      services,
      configs: [
        config('VirtualService', 'default', 'all', {
          hosts: ['*.svc.cluster.local'],
          http: [{ timeout: '7s', route: [{ destination: { host: 'reviews' } }] }],
        }),
      ],
    });
    expect(route(vhost(routeConfig(p), `${RATINGS}:9080`).routes[0]!)).toMatchObject({
      cluster: `outbound|9080||${REVIEWS}`,
      timeout: { seconds: 7 },
    });
  });

  it('injects faults on sidecars too', () => {
    const [r] = reviewsRoutes([
      {
        fault: { delay: { fixedDelay: '2s', percent: 50 } },
        route: [{ destination: { host: 'reviews' } }],
      },
    ]);
    expect(r!.typedPerFilterConfig).toEqual({
      'envoy.filters.http.fault': {
        '@type': TYPES.fault,
        delay: {
          fixedDelay: { seconds: 2 },
          percentage: { numerator: 50, denominator: 'HUNDRED' },
        },
      },
    });
  });
});
