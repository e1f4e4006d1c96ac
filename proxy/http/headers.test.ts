import type { HashPolicy, RedirectAction } from '../model';
import type { PeerIdentity } from '../types';
import { hashString } from '../upstream/hash';
import {
  type HeaderMap,
  applyHeaderEdits,
  applyXfcc,
  buildRedirectLocation,
  buildXfccElement,
  computeHash,
  cookieValue,
  copyEndToEnd,
  httpToGrpcStatus,
} from './headers';
import { edits } from './testing';

const PEER: PeerIdentity = {
  spiffeId: 'spiffe://cluster.local/ns/default/sa/client',
  uris: ['spiffe://cluster.local/ns/default/sa/client'],
  dns: ['client.default', 'client'],
  subject: 'O=cluster.local,CN=client',
  hash: 'ab'.repeat(32),
};

describe('copyEndToEnd', () => {
  it('drops hop-by-hop, pseudo and connection-listed headers and keeps te: trailers', () => {
    const out = copyEndToEnd({
      ':path': '/',
      host: 'h',
      connection: 'keep-alive, x-hop',
      'keep-alive': 'timeout=5',
      'transfer-encoding': 'chunked',
      upgrade: 'h2c',
      'proxy-connection': 'x',
      te: 'trailers, deflate',
      'x-hop': '1',
      'x-end': '2',
      'set-cookie': ['a=1', 'b=2'],
    });
    expect(out).toEqual({ te: 'trailers', 'x-end': '2', 'set-cookie': ['a=1', 'b=2'] });
  });
});

describe('applyHeaderEdits', () => {
  it('removes, then sets, then adds', () => {
    const h: HeaderMap = { a: '1', b: '2', c: '3' };
    applyHeaderEdits(
      h,
      edits({
        remove: ['a', 'b'],
        set: [{ name: 'b', value: 'set' }],
        add: [
          { name: 'c', value: 'more' },
          { name: 'd', value: 'new' },
        ],
      }),
    );
    expect(h).toEqual({ b: 'set', c: ['3', 'more'], d: 'new' });
  });
});

describe('x-forwarded-client-cert', () => {
  const details = { subject: true, uri: true, dns: true, cert: false };
  const element = buildXfccElement('spiffe://cluster.local/ns/default/sa/server', PEER, details);

  it('builds the element with By, Hash, Subject, URI and DNS', () => {
    expect(element).toBe(
      'By=spiffe://cluster.local/ns/default/sa/server;Hash=' +
        'ab'.repeat(32) +
        ';Subject="O=cluster.local,CN=client";URI=spiffe://cluster.local/ns/default/sa/client' +
        ';DNS=client.default;DNS=client',
    );
  });

  it('leaves out what the details do not ask for', () => {
    expect(buildXfccElement('', PEER, { subject: false, uri: true, dns: false, cert: false })).toBe(
      `Hash=${'ab'.repeat(32)};URI=${PEER.spiffeId}`,
    );
  });

  it.each([
    { mode: 'SANITIZE', el: element, before: 'x', want: undefined },
    { mode: 'FORWARD_ONLY', el: element, before: 'x', want: 'x' },
    { mode: 'FORWARD_ONLY', el: undefined, before: 'x', want: undefined },
    { mode: 'APPEND_FORWARD', el: element, before: 'x', want: `x,${element}` },
    { mode: 'APPEND_FORWARD', el: element, before: undefined, want: element },
    { mode: 'APPEND_FORWARD', el: undefined, before: 'x', want: undefined },
    { mode: 'SANITIZE_SET', el: element, before: 'x', want: element },
    { mode: 'ALWAYS_FORWARD_ONLY', el: undefined, before: 'x', want: 'x' },
  ] as const)('$mode with peer=$el before=$before', ({ mode, el, before, want }) => {
    const h: HeaderMap = before === undefined ? {} : { 'x-forwarded-client-cert': before };
    applyXfcc(h, mode, el);
    expect(h['x-forwarded-client-cert']).toBe(want);
  });
});

describe('buildRedirectLocation', () => {
  const req = { scheme: 'http', authority: 'shop.example:8080', path: '/v1/items?page=2' };
  const base: RedirectAction = { kind: 'redirect', responseCode: 301, stripQuery: false };
  it.each([
    {
      name: 'path replaced, query kept',
      a: { path: '/new' },
      want: 'http://shop.example:8080/new?page=2',
    },
    {
      name: 'query stripped',
      a: { path: '/new', stripQuery: true },
      want: 'http://shop.example:8080/new',
    },
    {
      name: 'path with its own query',
      a: { path: '/new?x=1' },
      want: 'http://shop.example:8080/new?x=1',
    },
    {
      name: 'host replaced drops the old port',
      a: { host: 'other.example' },
      want: 'http://other.example/v1/items?page=2',
    },
    { name: 'port replaced', a: { port: 9000 }, want: 'http://shop.example:9000/v1/items?page=2' },
    {
      name: 'scheme https, default port dropped',
      a: { scheme: 'https', port: 443 },
      want: 'https://shop.example/v1/items?page=2',
    },
    {
      name: 'prefix rewrite',
      a: { prefixRewrite: '/v2/' },
      want: 'http://shop.example:8080/v2/items?page=2',
    },
  ])('$name', ({ a, want }) => {
    expect(buildRedirectLocation({ ...base, ...a }, req, '/v1/')).toBe(want);
  });
});

describe('computeHash', () => {
  const headers: HeaderMap = { 'x-user': 'u1', cookie: 'a=1; session="s-1"' };
  const value = (name: string): string | undefined => headers[name] as string | undefined;
  const input = { headers, path: '/p?k=v', sourceIp: '10.0.0.1' };

  it.each([
    { name: 'header', p: [{ kind: 'header', name: 'x-user', terminal: false }], key: 'u1' },
    {
      name: 'cookie (quotes removed)',
      p: [{ kind: 'cookie', name: 'session', terminal: false }],
      key: 's-1',
    },
    { name: 'source ip', p: [{ kind: 'sourceIp', terminal: false }], key: '10.0.0.1' },
    {
      name: 'query parameter',
      p: [{ kind: 'queryParameter', name: 'k', terminal: false }],
      key: 'v',
    },
    {
      name: 'missing inputs are skipped',
      p: [
        { kind: 'header', name: 'x-none', terminal: false },
        { kind: 'header', name: 'x-user', terminal: false },
      ],
      key: 'u1',
    },
  ] as { name: string; p: HashPolicy[]; key: string }[])('$name', ({ p, key }) => {
    expect(computeHash(p, input, value).hash).toBe(hashString(key));
  });

  it('stops at a terminal policy that produced a hash', () => {
    const p: HashPolicy[] = [
      { kind: 'header', name: 'x-user', terminal: true },
      { kind: 'sourceIp', terminal: false },
    ];
    expect(computeHash(p, input, value).hash).toBe(hashString('u1'));
  });

  it('generates a cookie with a TTL when the request has none', () => {
    const p: HashPolicy[] = [
      { kind: 'cookie', name: 'sticky', ttlMs: 60_000, path: '/', terminal: false },
    ];
    const res = computeHash(p, input, value);
    expect(res.setCookie).toMatch(/^sticky="([0-9a-f]{16})"; Max-Age=60; Path=\/; HttpOnly$/);
    const key = /"([0-9a-f]{16})"/.exec(res.setCookie ?? '')?.[1] ?? '';
    expect(res.hash).toBe(hashString(key));
  });

  it('gives no hash without inputs', () => {
    expect(
      computeHash([{ kind: 'header', name: 'nope', terminal: false }], input, value).hash,
    ).toBeUndefined();
  });
});

describe('small helpers', () => {
  it('reads cookies', () => {
    expect(cookieValue('a=1; b=2', 'b')).toBe('2');
    expect(cookieValue(['a=1', 'c=3'], 'c')).toBe('3');
    expect(cookieValue('a=1', 'z')).toBeUndefined();
  });
  it.each([
    [503, 14],
    [504, 14],
    [404, 12],
    [403, 7],
    [500, 2],
  ])('maps HTTP %i to gRPC %i', (http, grpc) => {
    expect(httpToGrpcStatus(http)).toBe(grpc);
  });
});
