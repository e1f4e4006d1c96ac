// Regenerates proxy/testdata/*.json: what pilot's generators send a sidecar, decoded the way the
// proxy decodes it (protobufjs round trip, ENVOY_JSON_OPTIONS). Needs `npm run build` first (or a
// `npx tsc -p .` that emitted pilot's JS). The proxy's unit tests read these files (the proxy may
// not import pilot). Usage: node scripts/gen-proxy-testdata.js
//   sidecar-sample.json         the bookinfo-like default: PERMISSIVE, ALLOW_ANY, EDS, subsets
//   sidecar-strict-sample.json  STRICT mTLS, REGISTRY_ONLY, DNS ServiceEntries, redirects, faults,
//                               mirrors, consistent hashing, user TLS, pool limits, outlier detection
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const B = path.join(__dirname, '..', 'build');
const t = require(B + '/pilot/xds/generate/testing.js');
const { createGenerator } = require(B + '/pilot/xds/generate/index.js');
const m = require(B + '/pilot/xds/model.js');
const { envoyType, ENVOY_JSON_OPTIONS } = require(B + '/api/envoy.js');
const OUT = path.join(__dirname, '..', 'proxy', 'testdata');

/** Every resource type pilot sends the sidecar, round-tripped through the protobuf encoding. */
function generate(push, sidecar) {
  const gen = createGenerator();
  const out = {};
  for (const type of m.PUSH_ORDER) {
    const res = gen.generate(type, sidecar, push, []);
    const T = envoyType(type.slice(type.lastIndexOf('/') + 1));
    out[type.split('.').pop()] = res.map(r =>
      T.toObject(T.decode(T.encode(T.fromObject(r.resource)).finish()), ENVOY_JSON_OPTIONS),
    );
  }
  return out;
}

/** Writes `data` formatted as the repository's prettier config wants it (format:check passes). */
async function write(file, data) {
  const prettier = require('prettier');
  const target = path.join(OUT, file);
  const options = (await prettier.resolveConfig(target)) ?? {};
  fs.writeFileSync(
    target,
    await prettier.format(JSON.stringify(data, null, 1), { ...options, filepath: target }),
  );
}

// ---------------------------------------------------------------------------------------------
// sidecar-sample.json

function defaultSample() {
  const R = t.fqdn('reviews'),
    RT = t.fqdn('ratings'),
    DB = t.fqdn('db');
  const services = [
    t.service('reviews', ['http:9080'], {
      serviceAccounts: ['spiffe://cluster.local/ns/default/sa/reviews'],
    }),
    t.service('ratings', ['grpc:9090']),
    t.service('db', ['tcp:5432'], { addresses: ['10.96.0.5'] }),
  ];
  const instances = [
    t.instance(R, 9080, '10.0.0.1', { labels: { version: 'v1' }, tlsMode: 'istio' }),
    t.instance(R, 9080, '10.0.0.2', { labels: { version: 'v2' }, tlsMode: 'istio' }),
    t.instance(RT, 9090, '10.0.0.3', { tlsMode: 'istio' }),
    t.instance(DB, 5432, '10.0.0.4'),
    t.instance(R, 9080, '10.0.0.100', { labels: { version: 'v1' }, tlsMode: 'istio' }),
  ];
  const configs = [
    t.config('DestinationRule', 'default', 'reviews', {
      host: 'reviews',
      trafficPolicy: { loadBalancer: { simple: 'LEAST_REQUEST' } },
      subsets: [
        { name: 'v1', labels: { version: 'v1' } },
        {
          name: 'v2',
          labels: { version: 'v2' },
          trafficPolicy: { loadBalancer: { consistentHash: { httpHeaderName: 'x-user' } } },
        },
      ],
    }),
    t.config('VirtualService', 'default', 'reviews', {
      hosts: ['reviews'],
      http: [
        {
          match: [{ headers: { 'end-user': { exact: 'jason' } } }],
          route: [{ destination: { host: 'reviews', subset: 'v2' } }],
          fault: { delay: { fixedDelay: '1s', percentage: { value: 50 } } },
        },
        {
          match: [{ uri: { prefix: '/api' } }],
          rewrite: { uri: '/v1/api' },
          route: [
            { destination: { host: 'reviews', subset: 'v1' }, weight: 80 },
            { destination: { host: 'reviews', subset: 'v2' }, weight: 20 },
          ],
          timeout: '2s',
          retries: { attempts: 3, perTryTimeout: '500ms', retryOn: '5xx,connect-failure' },
          headers: { request: { set: { 'x-a': 'b' } } },
          mirror: { host: 'ratings' },
        },
        { route: [{ destination: { host: 'reviews', subset: 'v1' } }] },
      ],
    }),
  ];
  const push = t.pushContext({ services, instances, configs });
  const sidecar = t.proxy('sidecar', { ip: '10.0.0.100', labels: { version: 'v1' } });
  return generate(push, sidecar);
}

// ---------------------------------------------------------------------------------------------
// sidecar-strict-sample.json

function strictSample() {
  const R = t.fqdn('reviews'),
    RT = t.fqdn('ratings'),
    DB = t.fqdn('db');
  const services = [
    t.service('reviews', ['http:9080'], {
      serviceAccounts: ['spiffe://cluster.local/ns/default/sa/reviews'],
    }),
    t.service('ratings', ['grpc:9090']),
    t.service('db', ['tcp:5432']),
    // DNS ServiceEntries: STRICT_DNS (resolve every host) and DNS_ROUND_ROBIN (LOGICAL_DNS).
    t.service('api.example.com', ['https:443'], { resolution: 'DNS', location: 'MESH_EXTERNAL' }),
    t.service('web.example.com', ['http:80'], {
      resolution: 'DNS_ROUND_ROBIN',
      location: 'MESH_EXTERNAL',
    }),
  ];
  const instances = [
    t.instance(R, 9080, '10.0.0.1', { labels: { version: 'v1' }, tlsMode: 'istio' }),
    t.instance(R, 9080, '10.0.0.2', { labels: { version: 'v2' }, tlsMode: 'istio' }),
    t.instance(R, 9080, '10.0.0.100', { labels: { version: 'v1' }, tlsMode: 'istio' }),
    t.instance(RT, 9090, '10.0.0.3', { tlsMode: 'istio' }),
    t.instance(DB, 5432, '10.0.0.100', { tlsMode: 'istio' }),
    t.instance('api.example.com', 443, 'api-1.example.com', { locality: 'us-east/zone-a' }),
    t.instance('api.example.com', 443, 'api-2.example.com', { locality: 'us-west' }),
  ];
  const configs = [
    t.config('PeerAuthentication', 'default', 'default', { mtls: { mode: 'STRICT' } }),
    t.config('DestinationRule', 'default', 'reviews', {
      host: 'reviews',
      trafficPolicy: {
        loadBalancer: {
          consistentHash: { httpCookie: { name: 'session', path: '/', ttl: '60s' } },
        },
        connectionPool: {
          tcp: {
            maxConnections: 100,
            connectTimeout: '2s',
            tcpKeepalive: { probes: 3, time: '30s', interval: '10s' },
          },
          http: {
            http1MaxPendingRequests: 10,
            http2MaxRequests: 200,
            maxRetries: 5,
            maxRequestsPerConnection: 7,
            idleTimeout: '30s',
            h2UpgradePolicy: 'UPGRADE',
          },
        },
        outlierDetection: {
          consecutive5xxErrors: 3,
          consecutiveGatewayErrors: 2,
          interval: '5s',
          baseEjectionTime: '15s',
          maxEjectionPercent: 50,
          minHealthPercent: 30,
        },
      },
      subsets: [
        { name: 'v1', labels: { version: 'v1' } },
        {
          name: 'v2',
          labels: { version: 'v2' },
          trafficPolicy: {
            loadBalancer: { consistentHash: { useSourceIp: true, minimumRingSize: 2048 } },
          },
        },
      ],
    }),
    t.config('DestinationRule', 'default', 'api', {
      host: 'api.example.com',
      trafficPolicy: {
        tls: {
          mode: 'SIMPLE',
          caCertificates: '/etc/sail/certs/api-ca.pem',
          sni: 'api.example.com',
          subjectAltNames: ['api.example.com'],
        },
      },
    }),
    t.config('VirtualService', 'default', 'reviews', {
      hosts: ['reviews'],
      http: [
        {
          name: 'versioned',
          match: [
            {
              uri: { regex: '/v[0-9]+/reviews/.*' },
              queryParams: { debug: { exact: '1' }, trace: {} },
              withoutHeaders: { 'x-skip': { prefix: 'yes' } },
            },
          ],
          route: [
            {
              destination: { host: 'reviews', subset: 'v2' },
              headers: { request: { add: { 'x-subset': 'v2' } } },
            },
          ],
          headers: {
            request: { remove: ['x-internal'], add: { 'x-via': 'sail' } },
            response: { remove: ['x-debug'], set: { 'cache-control': 'no-store' } },
          },
        },
        {
          match: [{ uri: { prefix: '/old' } }],
          redirect: { uri: '/new', authority: 'reviews.example.com', redirectCode: 302 },
        },
        {
          match: [{ uri: { exact: '/abort' } }],
          fault: { abort: { httpStatus: 503, percentage: { value: 10 } } },
          route: [{ destination: { host: 'reviews', subset: 'v1' } }],
        },
        {
          match: [{ uri: { prefix: '/mirror' } }],
          route: [{ destination: { host: 'reviews', subset: 'v1' } }],
          mirror: { host: 'ratings' },
          mirrorPercentage: { value: 25 },
          retries: { attempts: 4, retryOn: 'gateway-error,503' },
        },
        { route: [{ destination: { host: 'reviews', subset: 'v1' } }], websocketUpgrade: true },
      ],
    }),
    t.config('VirtualService', 'default', 'ratings', {
      hosts: ['ratings'],
      http: [
        {
          fault: { abort: { grpcStatus: 'UNAVAILABLE', percentage: { value: 0.5 } } },
          route: [{ destination: { host: 'ratings' } }],
          timeout: '3s',
        },
      ],
    }),
  ];
  const push = t.pushContext({
    services,
    instances,
    configs,
    mesh: { outboundTrafficPolicy: 'REGISTRY_ONLY' },
  });
  const sidecar = t.proxy('sidecar', { ip: '10.0.0.100', labels: { version: 'v1' } });
  return generate(push, sidecar);
}

async function main() {
  await write('sidecar-sample.json', defaultSample());
  await write('sidecar-strict-sample.json', strictSample());
}

main().catch(err => {
  process.exitCode = 1;
  throw err;
});
