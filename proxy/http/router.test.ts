import type * as http from 'node:http';
import * as net from 'node:net';
import { waitFor } from '../../test/helpers/wait-for';
import type { RetryPolicy, Route } from '../model';
import {
  EchoOrigin,
  Harness,
  type OriginRequest,
  edits,
  match,
  route,
  routeTo,
  runCurl,
  staticCluster,
  table,
  vhost,
} from './testing';

const MAIN = 'outbound|80||main.default.svc.cluster.local';
const SHADOW = 'outbound|80||shadow.default.svc.cluster.local';
const DEAD = 'outbound|80||dead.default.svc.cluster.local';
const FLAKY = 'outbound|80||flaky.default.svc.cluster.local';

function prefix(p: string): ReturnType<typeof match> {
  return match({ path: { kind: 'prefix', value: p } });
}

function retry(more: Partial<RetryPolicy> = {}): RetryPolicy {
  return {
    retryOn: new Set(['5xx', 'connect-failure', 'reset']),
    numRetries: 2,
    retriableStatusCodes: [],
    backoffBaseMs: 1,
    backoffMaxMs: 5,
    ...more,
  };
}

/** A port nothing listens on. */
async function deadPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>(r => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>(r => s.close(() => r()));
  return port;
}

function body(r: { stdout: Buffer }): OriginRequest {
  const text = r.stdout.toString();
  const i = text.indexOf('\r\n\r\n');
  return JSON.parse(i >= 0 ? text.slice(i + 4) : text) as OriginRequest;
}

describe('router: routes, faults, redirects, edits, retries, timeouts, mirrors', () => {
  const origin = new EchoOrigin();
  const shadow = new EchoOrigin();
  let harness: Harness;
  let base: string;
  const onceFailed = new Set<string>();

  beforeAll(async () => {
    await origin.start();
    await shadow.start();
    const dead = await deadPort();
    origin.onRequest = (req: unknown, res: unknown): boolean => {
      const q = req as http.IncomingMessage;
      const s = res as http.ServerResponse;
      const url = q.url ?? '';
      if (url.startsWith('/retry/once') && !onceFailed.has(url)) {
        onceFailed.add(url);
        s.writeHead(503);
        s.end('try again');
        return true;
      }
      if (url.startsWith('/retry/always503')) {
        s.writeHead(503);
        s.end('no');
        return true;
      }
      if (url.startsWith('/midstream')) {
        s.writeHead(200, { 'content-length': '1000' });
        s.write('partial');
        setImmediate(() => q.socket.destroy());
        return true;
      }
      if (url.startsWith('/retry/reset')) {
        q.socket.destroy();
        return true;
      }
      if (url.startsWith('/timeout/') || (url.startsWith('/pertry/') && !onceFailed.has(url))) {
        onceFailed.add(url);
        return true; // never answers
      }
      return false;
    };
    shadow.onRequest = (req: unknown): boolean =>
      ((req as http.IncomingMessage).url ?? '').startsWith('/mirror/slow');

    const routes: Route[] = [
      route(routeTo(MAIN), {
        match: prefix('/fault/abort'),
        fault: { abort: { httpStatus: 418, fraction: 1 } },
      }),
      route(routeTo(MAIN), {
        match: prefix('/fault/delay'),
        fault: { delay: { delayMs: 150, fraction: 1 } },
      }),
      route(
        {
          kind: 'redirect',
          host: 'new.example',
          path: '/moved',
          responseCode: 301,
          stripQuery: false,
        },
        { match: prefix('/redirect') },
      ),
      route(
        {
          kind: 'redirect',
          scheme: 'https',
          prefixRewrite: '/v2/',
          responseCode: 308,
          stripQuery: true,
        },
        { match: prefix('/v1/') },
      ),
      route({ kind: 'direct', status: 200, body: 'direct hello' }, { match: prefix('/direct') }),
      route(
        routeTo(MAIN, {
          clusters: [
            {
              name: MAIN,
              weight: 1,
              requestHeaders: edits({ set: [{ name: 'x-cluster', value: 'main' }] }),
              responseHeaders: edits({ add: [{ name: 'x-cluster-resp', value: 'main' }] }),
            },
          ],
        }),
        {
          match: prefix('/edits'),
          requestHeaders: edits({
            set: [{ name: 'x-route', value: 'r' }],
            add: [{ name: 'x-multi', value: 'added' }],
            remove: ['x-remove-me'],
          }),
          responseHeaders: edits({
            set: [{ name: 'x-route-resp', value: 'yes' }],
            remove: ['x-origin'],
          }),
        },
      ),
      route(routeTo(MAIN, { prefixRewrite: '/' }), { match: prefix('/api/') }),
      route(
        routeTo(MAIN, {
          regexRewrite: { regex: /^\/regex\/(\w+)$/, substitution: '/r/\\1' },
        }),
        { match: prefix('/regex/') },
      ),
      route(routeTo(MAIN, { hostRewrite: 'rewritten.example' }), { match: prefix('/host') }),
      route(routeTo(FLAKY, { retry: retry() }), { match: prefix('/retry/connect') }),
      route(routeTo(DEAD, { retry: retry() }), { match: prefix('/retry/dead') }),
      route(routeTo(MAIN, { retry: retry() }), { match: prefix('/retry/') }),
      route(routeTo(MAIN, { timeoutMs: 200 }), { match: prefix('/timeout/') }),
      route(routeTo(MAIN, { retry: retry({ perTryTimeoutMs: 150, numRetries: 1 }) }), {
        match: prefix('/pertry/'),
      }),
      route(routeTo(MAIN, { mirrors: [{ cluster: SHADOW, fraction: 1 }] }), {
        match: prefix('/mirror/'),
      }),
      route(routeTo(MAIN), {
        match: match({
          path: { kind: 'prefix', value: '/match' },
          headers: [
            {
              name: ':method',
              match: { kind: 'exact', value: 'PUT', ignoreCase: false },
              invert: false,
            },
          ],
        }),
        name: 'put-only',
      }),
      route(routeTo(MAIN), { name: 'default' }),
    ];
    harness = await Harness.start({
      clusters: [
        staticCluster(MAIN, [origin.port]),
        staticCluster(SHADOW, [shadow.port]),
        staticCluster(DEAD, [dead]),
        staticCluster(FLAKY, [dead, origin.port]),
      ],
      routes: table('80', [
        vhost('main', ['*'], routes, {
          requestHeaders: edits({ set: [{ name: 'x-vhost', value: 'v' }] }),
          responseHeaders: edits({ add: [{ name: 'x-vhost-resp', value: 'v' }] }),
        }),
      ]),
    });
    base = harness.base;
  });

  afterAll(async () => {
    await harness.close();
    await origin.close();
    await shadow.close();
  });

  it('aborts with the fault filter HTTP status (FI)', async () => {
    const before = harness.telemetry.requests.length;
    const r = await runCurl(['-i', `${base}/fault/abort`]);
    expect(r.stdout.toString()).toMatch(/^HTTP\/1\.1 418/);
    expect(r.stdout.toString()).toMatch(/fault filter abort$/);
    expect((await harness.lastRecord(before)).responseFlags).toBe('FI');
  });

  it('delays with the fault filter (DI)', async () => {
    const before = harness.telemetry.requests.length;
    const t0 = Date.now();
    const r = await runCurl([`${base}/fault/delay`]);
    expect(r.code).toBe(0);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
    const rec = await harness.lastRecord(before);
    expect(rec).toMatchObject({ responseFlags: 'DI', responseCode: 200 });
  });

  it('redirects with host and path replaced, query kept', async () => {
    const r = await runCurl(['-i', `${base}/redirect/x?q=1`]);
    const text = r.stdout.toString();
    expect(text).toMatch(/^HTTP\/1\.1 301/);
    expect(text).toMatch(/location: http:\/\/new\.example\/moved\?q=1\r\n/i);
  });

  it('redirects to https with a prefix rewrite and the query stripped', async () => {
    const r = await runCurl(['-i', '-H', 'Host: shop.example:80', `${base}/v1/items?q=1`]);
    expect(r.stdout.toString()).toMatch(/^HTTP\/1\.1 308/);
    expect(r.stdout.toString()).toMatch(/location: https:\/\/shop\.example\/v2\/items\r\n/i);
  });

  it('answers a direct response', async () => {
    const r = await runCurl(['-i', `${base}/direct`]);
    expect(r.stdout.toString()).toMatch(/^HTTP\/1\.1 200/);
    expect(r.stdout.toString()).toMatch(/direct hello$/);
  });

  it('applies virtual host, route and weighted cluster header edits both ways', async () => {
    const r = await runCurl([
      '-i',
      '-H',
      'x-remove-me: 1',
      '-H',
      'x-multi: original',
      '-H',
      'x-route: client',
      `${base}/edits`,
    ]);
    const text = r.stdout.toString();
    const seen = body(r);
    expect(seen.headers['x-vhost']).toBe('v');
    expect(seen.headers['x-route']).toBe('r');
    expect(seen.headers['x-multi']).toBe('original, added');
    expect(seen.headers['x-remove-me']).toBeUndefined();
    expect(seen.headers['x-cluster']).toBe('main');
    expect(text).toMatch(/x-route-resp: yes\r\n/i);
    expect(text).toMatch(/x-vhost-resp: v\r\n/i);
    expect(text).toMatch(/x-cluster-resp: main\r\n/i);
    expect(text).not.toMatch(/x-origin:/i);
  });

  it('rewrites the prefix, the path by regex and the host', async () => {
    expect(body(await runCurl([`${base}/api/users?id=7`])).url).toBe('/users?id=7');
    expect(body(await runCurl([`${base}/regex/abc?z=1`])).url).toBe('/r/abc?z=1');
    expect(body(await runCurl([`${base}/host`])).headers.host).toBe('rewritten.example');
  });

  it('matches pseudo-headers (:method)', async () => {
    const before = harness.telemetry.requests.length;
    await runCurl(['-X', 'PUT', `${base}/match`]);
    expect((await harness.lastRecord(before)).routeName).toBe('put-only');
    const mid = harness.telemetry.requests.length;
    await runCurl([`${base}/match`]);
    expect((await harness.lastRecord(mid)).routeName).toBe('default');
  });

  it('retries a 503 and forwards trace headers unchanged to every attempt', async () => {
    const n = origin.requests.length;
    const r = await runCurl([
      '-i',
      '-H',
      'traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      '-H',
      'x-b3-traceid: 80f198ee56343ba864fe8b2a57d3eff7',
      `${base}/retry/once/a`,
    ]);
    expect(r.stdout.toString()).toMatch(/^HTTP\/1\.1 200/);
    const attempts = origin.requests.slice(n);
    expect(attempts).toHaveLength(2);
    for (const a of attempts) {
      expect(a.headers.traceparent).toBe('00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
      expect(a.headers['x-b3-traceid']).toBe('80f198ee56343ba864fe8b2a57d3eff7');
    }
    expect(attempts[0]?.headers['x-request-id']).toBe(attempts[1]?.headers['x-request-id']);
  });

  it('does not retry a POST that reached the upstream', async () => {
    const n = origin.requests.length;
    const before = harness.telemetry.requests.length;
    const r = await runCurl(['-i', '-X', 'POST', '--data', 'x', `${base}/retry/always503`]);
    expect(r.stdout.toString()).toMatch(/^HTTP\/1\.1 503/);
    expect(origin.requests.length - n).toBe(1);
    expect((await harness.lastRecord(before)).responseCode).toBe(503);
  });

  it('retries an idempotent request until retries are exhausted (URX)', async () => {
    const n = origin.requests.length;
    const before = harness.telemetry.requests.length;
    const r = await runCurl(['-i', `${base}/retry/always503`]);
    expect(r.stdout.toString()).toMatch(/^HTTP\/1\.1 503/);
    expect(origin.requests.length - n).toBe(3);
    expect((await harness.lastRecord(before)).responseFlags).toBe('URX');
  });

  it('does not retry a POST whose connection was reset after sending', async () => {
    const before = harness.telemetry.requests.length;
    const r = await runCurl(['-i', '-X', 'POST', '--data', 'x', `${base}/retry/reset`]);
    expect(r.stdout.toString()).toMatch(/^HTTP\/1\.1 503/);
    expect(r.stdout.toString()).toMatch(/reset reason: connection termination$/);
    const rec = await harness.lastRecord(before);
    expect(rec.responseFlags).toBe('UC');
  });

  it('retries connect failures on another host, even for POST', async () => {
    const before = harness.telemetry.requests.length;
    for (let i = 0; i < 4; i++) {
      const r = await runCurl([
        '-i',
        '-X',
        'POST',
        '--data',
        'p',
        `${base}/retry/connect/${String(i)}`,
      ]);
      expect(r.stdout.toString()).toMatch(/^HTTP\/1\.1 200/);
    }
    await waitFor(() => harness.telemetry.requests.length >= before + 4);
    for (const rec of harness.telemetry.requests.slice(before)) {
      expect(rec.upstreamHost).toBe(`127.0.0.1:${String(origin.port)}`);
    }
  });

  it('answers 503 UF,URX when every connect attempt fails', async () => {
    const before = harness.telemetry.requests.length;
    const r = await runCurl(['-i', `${base}/retry/dead`]);
    expect(r.stdout.toString()).toMatch(/^HTTP\/1\.1 503/);
    expect(r.stdout.toString()).toMatch(/reset reason: connection failure$/);
    const flags = (await harness.lastRecord(before)).responseFlags.split(',').sort();
    expect(flags).toEqual(['UF', 'URX']);
  });

  it('resets the client when the upstream dies mid-response, and keeps serving', async () => {
    const before = harness.telemetry.requests.length;
    const r = await runCurl([`${base}/midstream`]);
    expect(r.code).not.toBe(0);
    expect((await harness.lastRecord(before)).responseFlags).toBe('UC');
    const ok = await runCurl([`${base}/after-reset`]);
    expect(ok.code).toBe(0);
  });

  it('times out a slow upstream with 504 UT', async () => {
    const before = harness.telemetry.requests.length;
    const r = await runCurl(['-i', `${base}/timeout/slow`]);
    expect(r.stdout.toString()).toMatch(/^HTTP\/1\.1 504/);
    expect(r.stdout.toString()).toMatch(/upstream request timeout$/);
    expect((await harness.lastRecord(before)).responseFlags).toBe('UT');
  });

  it('retries after a per-try timeout', async () => {
    const n = origin.requests.length;
    const r = await runCurl(['-i', `${base}/pertry/x`]);
    expect(r.stdout.toString()).toMatch(/^HTTP\/1\.1 200/);
    expect(origin.requests.length - n).toBe(2);
  });

  it('mirrors a copy of the request (body included) to the shadow cluster', async () => {
    const r = await runCurl([
      '-X',
      'POST',
      '--data',
      'mirror-me',
      '-H',
      'Host: main.default',
      `${base}/mirror/fast`,
    ]);
    expect(body(r).bodyBytes).toBe(9);
    const copy = await waitFor(() => shadow.requests.find(q => q.url === '/mirror/fast'));
    expect(copy.headers.host).toBe('main.default-shadow');
    expect(copy.bodyBytes).toBe(9);
  });

  it('answers the main request while the mirror hangs', async () => {
    const t0 = Date.now();
    const r = await runCurl(['-i', `${base}/mirror/slow`], 5_000);
    expect(r.stdout.toString()).toMatch(/^HTTP\/1\.1 200/);
    expect(Date.now() - t0).toBeLessThan(2_000);
    await waitFor(() => shadow.requests.some(q => q.url === '/mirror/slow'));
  });
});
