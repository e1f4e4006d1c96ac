import {
  checkFqdn,
  checkIpOrCidr,
  checkLabelMap,
  checkWildcardDomain,
  hostCovers,
  isDns1123Label,
  isDns1123Subdomain,
  resolveHost,
} from './names';

describe('resolveHost', () => {
  it.each([
    ['reviews', 'default', undefined, 'reviews.default.svc.cluster.local'],
    ['reviews', 'prod', 'mesh.internal', 'reviews.prod.svc.mesh.internal'],
    ['reviews.prod', 'default', undefined, 'reviews.prod'],
    ['reviews.prod.svc.cluster.local', 'default', undefined, 'reviews.prod.svc.cluster.local'],
    ['httpbin.org', 'default', undefined, 'httpbin.org'],
    ['*.example.com', 'default', undefined, '*.example.com'],
    ['*', 'default', undefined, '*'],
  ])('%s in %s (suffix %s) is %s', (host, ns, suffix, want) => {
    expect(resolveHost(host, ns, suffix)).toBe(want);
  });
});

describe('host checks', () => {
  it.each([
    'reviews',
    'reviews.default.svc.cluster.local',
    '*',
    '*.example.com',
    'istio.io.',
    'A-b.C',
  ])('%s is a valid wildcard domain', host => {
    expect(checkWildcardDomain(host)).toBeUndefined();
  });

  it.each([
    ['', 'empty host'],
    ['foo_bar.com', '"foo_bar" is not a DNS label'],
    ['*foo.com', 'a wildcard is allowed only as the whole first label'],
    ['foo.*.com', 'a wildcard is allowed only as the whole first label'],
    ['-a.com', '"-a" is not a DNS label'],
    ['a..b', '"" is not a DNS label'],
    ['10.0.0.1', 'the top-level domain "1" cannot be all-numeric'],
    [`${'a'.repeat(64)}.com`, 'is not a DNS label'],
    ['a'.repeat(256), 'too long'],
  ])('%s is not a valid host: %s', (host, msg) => {
    expect(checkWildcardDomain(host)).toContain(msg);
  });

  it('rejects wildcards in FQDNs', () => {
    expect(checkFqdn('www.google.com')).toBeUndefined();
    expect(checkFqdn('*.google.com')).toContain('wildcard');
  });

  it.each([
    ['*', 'a.b', true],
    ['*.example.com', 'a.example.com', true],
    ['*.example.com', 'a.b.example.com', true],
    ['*.example.com', '*.a.example.com', true],
    ['*.example.com', 'example.com', false],
    ['*.example.com', '*.example.com', true],
    ['a.example.com', '*.example.com', false],
    ['Reviews.Default', 'reviews.default', true],
    ['*.local', 'reviews.default.svc.cluster.local', true],
  ])('%s covers %s: %s', (pattern, host, want) => {
    expect(hostCovers(pattern, host)).toBe(want);
  });

  it.each([
    ['10.0.0.1', undefined],
    ['10.0.0.0/8', undefined],
    ['2001:db8::/32', undefined],
    ['::1', undefined],
    ['10.0.0.0/33', '"10.0.0.0/33" is not a valid CIDR block'],
    ['10.0.0/8', '"10.0.0/8" is not a valid CIDR block'],
    ['example.com', '"example.com" is not an IP address'],
  ])('IP or CIDR %s', (value, want) => {
    expect(checkIpOrCidr(value)).toBe(want);
  });
});

describe('names', () => {
  it('checks Kubernetes names', () => {
    expect(isDns1123Label('default')).toBe(true);
    expect(isDns1123Label('a.b')).toBe(false);
    expect(isDns1123Label('Default')).toBe(false);
    expect(isDns1123Subdomain('reviews.v1')).toBe(true);
    expect(isDns1123Subdomain('reviews_v1')).toBe(false);
    expect(isDns1123Subdomain('')).toBe(false);
  });

  it('checks label keys and values', () => {
    expect(
      checkLabelMap({
        app: 'reviews',
        'app.kubernetes.io/name': 'x',
        version: '',
        'a_b.c': 'v-1.2',
      }),
    ).toEqual([]);
    expect(checkLabelMap({ 'bad key': 'x' })[0]).toEqual({
      key: 'bad key',
      message: expect.stringContaining('invalid label key "bad key"') as string,
    });
    expect(checkLabelMap({ 'Bad_Prefix/name': 'x' })[0]?.message).toContain('invalid label key');
    expect(checkLabelMap({ app: 'a b' })[0]?.message).toContain(
      'invalid value "a b" for label "app"',
    );
    expect(checkLabelMap({ app: 'x'.repeat(64) })).toHaveLength(1);
  });
});
