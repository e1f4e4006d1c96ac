// Regenerates proxy/testdata/*.json: what pilot's generators send a sidecar, decoded the way the
// proxy decodes it. Needs `npm run build` first. The proxy's unit tests read these files (the proxy
// may not import pilot). Usage: node scripts/gen-proxy-testdata.js > proxy/testdata/sidecar-sample.json
'use strict';
const B = require('node:path').join(__dirname, '..', 'build');
const t = require(B + '/pilot/xds/generate/testing.js');
const { createGenerator } = require(B + '/pilot/xds/generate/index.js');
const m = require(B + '/pilot/xds/model.js');
const { envoyType, ENVOY_JSON_OPTIONS } = require(B + '/api/envoy.js');
const gen = createGenerator();
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
const out = {};
for (const type of m.PUSH_ORDER) {
  const res = gen.generate(type, sidecar, push, []);
  const T = envoyType(type.slice(type.lastIndexOf('/') + 1));
  out[type.split('.').pop()] = res.map(r =>
    T.toObject(T.decode(T.encode(T.fromObject(r.resource)).finish()), ENVOY_JSON_OPTIONS),
  );
}
console.log(JSON.stringify(out, null, 1));
