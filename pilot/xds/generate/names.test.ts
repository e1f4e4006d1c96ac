import {
  clusterName,
  hostAliases,
  hostMatches,
  hostMatchRank,
  inboundClusterName,
  outboundClusterName,
  outboundListenerName,
  parseClusterName,
  parseHostPort,
  resolveHost,
} from './names';

describe('cluster names', () => {
  it('builds Istio subset keys', () => {
    expect(outboundClusterName('reviews.default.svc.cluster.local', 9080, 'v1')).toBe(
      'outbound|9080|v1|reviews.default.svc.cluster.local',
    );
    expect(outboundClusterName('reviews.default.svc.cluster.local', 9080)).toBe(
      'outbound|9080||reviews.default.svc.cluster.local',
    );
    expect(inboundClusterName(8080)).toBe('inbound|8080||');
    expect(clusterName('inbound', 1, '', '')).toBe('inbound|1||');
    expect(outboundListenerName(80)).toBe('0.0.0.0_80');
  });

  it.each([
    [
      'outbound|9080|v1|reviews.ns.svc.cluster.local',
      { direction: 'outbound', port: 9080, subset: 'v1', host: 'reviews.ns.svc.cluster.local' },
    ],
    [
      'outbound|80||a.example.com',
      { direction: 'outbound', port: 80, subset: '', host: 'a.example.com' },
    ],
    ['inbound|8080||', { direction: 'inbound', port: 8080, subset: '', host: '' }],
    ['outbound|0||a', undefined],
    ['outbound|70000||a', undefined],
    ['outbound|80||', undefined],
    ['sideways|80||a', undefined],
    ['outbound|80|a', undefined],
    ['PassthroughCluster', undefined],
  ])('parses %s', (name, want) => {
    expect(parseClusterName(name)).toEqual(want);
  });
});

describe('hosts', () => {
  it.each([
    ['reviews', 'default', 'reviews.default.svc.cluster.local'],
    ['reviews', 'shop', 'reviews.shop.svc.cluster.local'],
    ['reviews.shop', 'default', 'reviews.shop'],
    ['api.example.com', 'default', 'api.example.com'],
    ['*', 'default', '*'],
    ['*.example.com', 'default', '*.example.com'],
  ])('resolves %s in %s as %s', (host, ns, want) => {
    expect(resolveHost(host, ns, 'cluster.local')).toBe(want);
  });

  it.each([
    ['*', 'a.b', true],
    ['*.example.com', 'api.example.com', true],
    ['*.example.com', 'example.com', false],
    ['api.example.com', 'api.example.com', true],
    ['api.example.com', 'web.example.com', false],
  ])('pattern %s matches %s: %s', (pattern, host, want) => {
    expect(hostMatches(pattern, host)).toBe(want);
  });

  it('ranks exact hosts above longer wildcards above shorter ones', () => {
    expect(hostMatchRank('a.example.com')).toBeGreaterThan(hostMatchRank('*.example.com'));
    expect(hostMatchRank('*.example.com')).toBeGreaterThan(hostMatchRank('*.com'));
    expect(hostMatchRank('*.com')).toBeGreaterThan(hostMatchRank('*'));
  });

  it('gives same-namespace clients the short name, others the namespace-qualified names', () => {
    const h = 'reviews.default.svc.cluster.local';
    expect(hostAliases(h, 'default', 'cluster.local')).toEqual([
      h,
      'reviews',
      'reviews.default',
      'reviews.default.svc',
    ]);
    expect(hostAliases(h, 'shop', 'cluster.local')).toEqual([
      h,
      'reviews.default',
      'reviews.default.svc',
    ]);
    expect(hostAliases('api.example.com', 'default', 'cluster.local')).toEqual(['api.example.com']);
  });

  it.each([
    ['reviews:9080', { host: 'reviews', port: 9080 }],
    [
      'reviews.shop.svc.cluster.local:50051',
      { host: 'reviews.shop.svc.cluster.local', port: 50051 },
    ],
    ['reviews', { host: 'reviews' }],
    ['reviews:x', undefined],
    [':80', undefined],
    ['reviews:0', undefined],
    ['', undefined],
  ])('splits proxyless name %s', (name, want) => {
    expect(parseHostPort(name)).toEqual(want);
  });
});
