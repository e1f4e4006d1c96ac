import type { HeaderMatcher, Route, RouteMatch } from '../model';
import {
  type RouteInput,
  findRoute,
  pickWeightedCluster,
  rewritePath,
  selectVirtualHost,
} from './routing';
import { match, route, routeTo, table, vhost } from './testing';

function input(path: string, more: Partial<RouteInput> = {}): RouteInput {
  return { method: 'GET', authority: 'svc', scheme: 'http', path, headers: {}, ...more };
}

describe('selectVirtualHost', () => {
  const t = table('80', [
    vhost('exact', ['reviews', 'reviews:9080'], []),
    vhost('suffix-long', ['*.api.example.com'], []),
    vhost('suffix', ['*.example.com'], []),
    vhost('suffix-bare', ['*-bar.foo.com'], []),
    vhost('prefix', ['foo.*'], []),
    vhost('any', ['*'], []),
  ]);
  it.each([
    { name: 'exact domain', authority: 'reviews', want: 'exact' },
    { name: 'exact domain with port', authority: 'reviews:9080', want: 'exact' },
    {
      name: 'port stripped when only the bare name is declared',
      authority: 'reviews:1234',
      want: 'exact',
    },
    { name: 'case-insensitive', authority: 'REVIEWS', want: 'exact' },
    { name: 'longest suffix wins', authority: 'v1.api.example.com', want: 'suffix-long' },
    { name: 'shorter suffix', authority: 'www.example.com', want: 'suffix' },
    { name: 'suffix with port', authority: 'www.example.com:8080', want: 'suffix' },
    { name: 'wildcard never matches empty', authority: '-bar.foo.com', want: 'any' },
    { name: 'suffix without a dot', authority: 'baz-bar.foo.com', want: 'suffix-bare' },
    { name: 'prefix wildcard', authority: 'foo.local', want: 'prefix' },
    { name: 'catch-all', authority: 'other', want: 'any' },
    { name: 'IPv6 authority with port', authority: '[::1]:80', want: 'any' },
  ])('$name', ({ authority, want }) => {
    expect(selectVirtualHost(t, authority)?.vhost.name).toBe(want);
  });

  it('returns undefined without a catch-all', () => {
    expect(selectVirtualHost(table('x', [vhost('a', ['a'], [])]), 'b')).toBeUndefined();
  });
});

function r(name: string, m: Partial<RouteMatch>): Route {
  return route(routeTo('c'), { name, match: match(m) });
}

function hdr(name: string, m: HeaderMatcher['match'], invert = false): HeaderMatcher {
  return { name, match: m, invert };
}

describe('findRoute', () => {
  const routes: Route[] = [
    r('exact', { path: { kind: 'path', value: '/exact' } }),
    r('ci', { path: { kind: 'prefix', value: '/CI/' }, caseSensitive: false }),
    r('regex', { path: { kind: 'regex', regex: /^\/items\/\d+$/ } }),
    r('sep', { path: { kind: 'pathSeparatedPrefix', value: '/sep' } }),
    r('header-exact', {
      path: { kind: 'prefix', value: '/h' },
      headers: [hdr('x-user', { kind: 'exact', value: 'jason', ignoreCase: false })],
    }),
    r('header-invert', {
      path: { kind: 'prefix', value: '/h' },
      headers: [hdr('x-user', { kind: 'prefix', value: 'j', ignoreCase: false }, true)],
    }),
    r('present', {
      path: { kind: 'prefix', value: '/p' },
      headers: [hdr('x-debug', { kind: 'present', present: true })],
    }),
    r('absent', {
      path: { kind: 'prefix', value: '/p' },
      headers: [hdr('x-debug', { kind: 'present', present: false })],
    }),
    r('method', {
      path: { kind: 'prefix', value: '/m' },
      headers: [
        hdr(':method', { kind: 'exact', value: 'POST', ignoreCase: false }),
        hdr(':authority', { kind: 'suffix', value: '.local', ignoreCase: true }),
        hdr(':scheme', { kind: 'exact', value: 'https', ignoreCase: false }),
      ],
    }),
    r('query', {
      path: { kind: 'prefix', value: '/q' },
      queryParameters: [
        { name: 'v', match: { kind: 'exact', value: 'a b', ignoreCase: false } },
        { name: 'flag' },
      ],
    }),
    r('never', { path: { kind: 'prefix', value: '/f' }, fraction: 0 }),
    r('fallback', {}),
  ];
  const t = table('80', [vhost('v', ['*'], routes)]);

  it.each([
    { name: 'exact path ignores the query', req: input('/exact?x=1'), want: 'exact' },
    { name: 'exact path is not a prefix', req: input('/exact/more'), want: 'fallback' },
    { name: 'case-insensitive prefix', req: input('/ci/thing'), want: 'ci' },
    { name: 'regex on the path', req: input('/items/42?z'), want: 'regex' },
    { name: 'regex is anchored', req: input('/items/42/x'), want: 'fallback' },
    { name: 'separated prefix, exact', req: input('/sep'), want: 'sep' },
    { name: 'separated prefix, segment', req: input('/sep/x'), want: 'sep' },
    { name: 'separated prefix, not a segment', req: input('/separate'), want: 'fallback' },
    {
      name: 'header exact',
      req: input('/h', { headers: { 'x-user': 'jason' } }),
      want: 'header-exact',
    },
    {
      name: 'inverted header, other value',
      req: input('/h', { headers: { 'x-user': 'bob' } }),
      want: 'header-invert',
    },
    { name: 'inverted header, absent', req: input('/h'), want: 'header-invert' },
    {
      name: 'inverted header, matching value',
      req: input('/h', { headers: { 'x-user': 'jim' } }),
      want: 'fallback',
    },
    { name: 'present header', req: input('/p', { headers: { 'x-debug': '' } }), want: 'present' },
    { name: 'absent header', req: input('/p'), want: 'absent' },
    {
      name: 'pseudo-headers',
      req: input('/m', { method: 'POST', authority: 'svc.LOCAL', scheme: 'https' }),
      want: 'method',
    },
    {
      name: 'pseudo-header mismatch',
      req: input('/m', { authority: 'svc.local', scheme: 'https' }),
      want: 'fallback',
    },
    { name: 'query parameters', req: input('/q?flag&v=a+b'), want: 'query' },
    { name: 'query parameter missing', req: input('/q?v=a%20b'), want: 'fallback' },
    { name: 'runtime fraction 0 never matches', req: input('/f'), want: 'fallback' },
  ])('$name', ({ req, want }) => {
    expect(findRoute(t, req)?.route.name).toBe(want);
  });

  it('takes the first matching route', () => {
    const t2 = table('x', [vhost('v', ['*'], [r('one', {}), r('two', {})])]);
    expect(findRoute(t2, input('/'))?.route.name).toBe('one');
  });
});

describe('rewritePath', () => {
  it.each([
    {
      name: 'prefix',
      m: { kind: 'prefix', value: '/api/' },
      rw: { prefixRewrite: '/' },
      path: '/api/x?q=1',
      want: '/x?q=1',
    },
    {
      name: 'exact path keeps the query',
      m: { kind: 'path', value: '/old' },
      rw: { prefixRewrite: '/new' },
      path: '/old?a',
      want: '/new?a',
    },
    {
      name: 'regex, all matches',
      m: { kind: 'prefix', value: '/' },
      rw: { regexRewrite: { regex: /a/, substitution: 'b' } },
      path: '/aaa?a',
      want: '/bbb?a',
    },
    {
      name: 'regex with groups',
      m: { kind: 'prefix', value: '/' },
      rw: { regexRewrite: { regex: /^\/v(\d)\/(.*)$/, substitution: '/\\2/version\\1' } },
      path: '/v1/users',
      want: '/users/version1',
    },
  ] as const)('$name', ({ m, rw, path, want }) => {
    const action = routeTo('c', rw);
    const t = table('x', [vhost('v', ['*'], [route(action, { match: match({ path: m }) })])]);
    const compiled = findRoute(t, input(path));
    expect(compiled).toBeDefined();
    if (compiled) expect(rewritePath(compiled, action, path)).toBe(want);
  });
});

describe('pickWeightedCluster', () => {
  const action = routeTo('a', {
    clusters: [
      {
        name: 'a',
        weight: 1,
        requestHeaders: { set: [], add: [], remove: [] },
        responseHeaders: { set: [], add: [], remove: [] },
      },
      {
        name: 'b',
        weight: 3,
        requestHeaders: { set: [], add: [], remove: [] },
        responseHeaders: { set: [], add: [], remove: [] },
      },
    ],
    totalWeight: 4,
  });
  it.each([
    { x: 0, want: 'a' },
    { x: 0.24, want: 'a' },
    { x: 0.25, want: 'b' },
    { x: 0.99, want: 'b' },
  ])('random $x picks $want', ({ x, want }) => {
    expect(pickWeightedCluster(action, () => x)?.name).toBe(want);
  });
});
