import * as http2 from 'node:http2';
import {
  EchoOrigin,
  Harness,
  type OriginRequest,
  route,
  routeTo,
  runCurl,
  staticCluster,
  table,
  vhost,
} from './testing';

const H1 = 'outbound|80||h1.default.svc.cluster.local';
const H2 = 'outbound|80||h2.default.svc.cluster.local';

/** One request over an HTTP/2 client session; resolves with status, headers and body. */
function h2Request(
  session: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
  body?: Buffer,
): Promise<{ status: number; headers: http2.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = session.request(headers, { endStream: body === undefined });
    const chunks: Buffer[] = [];
    let resHeaders: http2.IncomingHttpHeaders = {};
    req.on('response', h => (resHeaders = h));
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () =>
      resolve({
        status: Number(resHeaders[':status']),
        headers: resHeaders,
        body: Buffer.concat(chunks),
      }),
    );
    req.on('error', reject);
    if (body !== undefined) req.end(body);
  });
}

describe('HTTP/2 (h2c) through the connection manager', () => {
  const h1Origin = new EchoOrigin();
  const h2Origin = new EchoOrigin({ h2: true });
  let harness: Harness;

  beforeAll(async () => {
    await h1Origin.start();
    await h2Origin.start();
    harness = await Harness.start({
      clusters: [
        staticCluster(H1, [h1Origin.port]),
        staticCluster(H2, [h2Origin.port], { upstreamProtocol: 'http2' }),
      ],
      routes: table('80', [
        vhost('h2', ['h2.default', 'h2.default:80'], [route(routeTo(H2))]),
        vhost('h1', ['*'], [route(routeTo(H1))]),
      ]),
    });
  });

  afterAll(async () => {
    await harness.close();
    await h1Origin.close();
    await h2Origin.close();
  });

  it('serves curl --http2-prior-knowledge and translates to an HTTP/1.1 upstream', async () => {
    const r = await runCurl(['-i', '--http2-prior-knowledge', `${harness.base}/prior`]);
    expect(r.code).toBe(0);
    const text = r.stdout.toString();
    expect(text).toMatch(/^HTTP\/2 200/);
    const seen = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as OriginRequest;
    expect(seen.httpVersion).toBe('1.1');
    expect(seen.url).toBe('/prior');
    expect(seen.headers.host).toBe(`127.0.0.1:${String(harness.listener.port)}`);
  });

  it('multiplexes node http2 client streams and speaks h2 to an http2 cluster', async () => {
    const session = http2.connect(harness.base);
    try {
      const body = Buffer.from('x'.repeat(100_000));
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          h2Request(
            session,
            { ':method': 'POST', ':path': `/m/${String(i)}`, ':authority': 'h2.default' },
            body,
          ),
        ),
      );
      for (const [i, r] of results.entries()) {
        expect(r.status).toBe(200);
        const seen = JSON.parse(r.body.toString()) as OriginRequest;
        expect(seen.httpVersion).toBe('2.0');
        expect(seen.url).toBe(`/m/${String(i)}`);
        expect(seen.bodyBytes).toBe(body.length);
        expect(seen.headers[':authority']).toBe('h2.default');
      }
      const h1 = await h2Request(session, { ':path': '/to-h1', ':authority': 'other' });
      expect((JSON.parse(h1.body.toString()) as OriginRequest).httpVersion).toBe('1.1');
    } finally {
      session.close();
    }
  });

  it('streams a large response over h2 with flow control', async () => {
    const session = http2.connect(harness.base);
    try {
      const size = 8 * 1024 * 1024;
      const r = await h2Request(session, {
        ':path': `/big?bytes=${String(size)}`,
        ':authority': 'h2.default',
      });
      expect(r.status).toBe(200);
      expect(r.body.length).toBe(size);
    } finally {
      session.close();
    }
  });
});
