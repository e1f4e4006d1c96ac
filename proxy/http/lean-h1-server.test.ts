import * as net from 'node:net';
import type { LeanH1Server, LeanServerConn } from './lean-h1-server';
import { EchoOrigin, Harness, match, route, routeTo, staticCluster, table, vhost } from './testing';

const CLUSTER = 'outbound|80||echo.default.svc.cluster.local';
const SERVERS = ['node', 'lean'] as const;

/** Writes `chunks` (one write each) and collects everything until the server closes. */
function rawExchange(port: number, chunks: (string | Buffer)[]): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => {
      for (const c of chunks) s.write(c);
    });
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString('latin1')));
    s.on('close', () => {
      resolve(got);
    });
    s.on('error', reject);
  });
}

/** The status lines of the responses in `raw`, in order. */
function statusLines(raw: string): string[] {
  return raw.match(/HTTP\/1\.1 \d{3} [^\r]*/g) ?? [];
}

describe.each(SERVERS)('HTTP/1.1 downstream server %s', server => {
  const origin = new EchoOrigin();
  let h: Harness;

  beforeAll(async () => {
    await origin.start();
    h = await Harness.start({
      clusters: [staticCluster(CLUSTER, [origin.port])],
      routes: table('80', [
        vhost(
          'echo',
          ['*'],
          [
            route(
              { kind: 'direct', status: 200, body: 'direct' },
              { match: match({ path: { kind: 'prefix', value: '/direct' } }) },
            ),
            route(routeTo(CLUSTER)),
          ],
        ),
      ]),
      manager: { h1DownstreamServer: server },
    });
  });

  afterAll(async () => {
    await h.close();
    await origin.close();
  });

  it('uses the selected server', () => {
    const lean = (h.manager as unknown as { lean: unknown }).lean;
    expect(lean !== undefined).toBe(server === 'lean');
  });

  it('answers pipelined requests in order on one connection', async () => {
    const req = (path: string, last = false): string =>
      `GET ${path} HTTP/1.1\r\nHost: echo\r\n${last ? 'Connection: close\r\n' : ''}\r\n`;
    const reply = await rawExchange(h.listener.port, [
      req('/p1') + req('/direct/p2') + req('/p3') + req('/p4', true),
    ]);
    expect(statusLines(reply)).toEqual([
      'HTTP/1.1 200 OK',
      'HTTP/1.1 200 OK',
      'HTTP/1.1 200 OK',
      'HTTP/1.1 200 OK',
    ]);
    const at = ['"/p1"', 'direct', '"/p3"', '"/p4"'].map(s => reply.indexOf(s));
    expect(at.every(i => i > 0)).toBe(true);
    expect([...at].sort((a, b) => a - b)).toEqual(at);
  });

  it('answers pipelined requests with bodies in order', async () => {
    const post = (path: string, body: string): string =>
      `POST ${path} HTTP/1.1\r\nHost: echo\r\nContent-Length: ${String(body.length)}\r\n\r\n${body}`;
    const reply = await rawExchange(h.listener.port, [
      post('/b1', 'x'.repeat(1000)) + post('/b2', 'yy'),
      'GET /b3 HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n',
    ]);
    expect(statusLines(reply)).toHaveLength(3);
    expect(reply).toMatch(/"\/b1".*"bodyBytes":1000/);
    expect(reply).toMatch(/"\/b2".*"bodyBytes":2/);
    expect(reply.indexOf('"/b1"')).toBeLessThan(reply.indexOf('"/b2"'));
    expect(reply.indexOf('"/b2"')).toBeLessThan(reply.indexOf('"/b3"'));
  });

  it('rejects conflicting Content-Length and Transfer-Encoding with 400 and closes', async () => {
    const before = origin.requests.length;
    const reply = await rawExchange(h.listener.port, [
      'POST /smuggle HTTP/1.1\r\nHost: echo\r\nContent-Length: 5\r\n' +
        'Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /hidden HTTP/1.1\r\nHost: echo\r\n\r\n',
    ]);
    expect(reply).toMatch(/^HTTP\/1\.1 400 /);
    expect(statusLines(reply)).toHaveLength(1);
    expect(origin.requests.slice(before).map(r => r.url)).toEqual([]);
  });

  it('rejects two different Content-Length values with 400', async () => {
    const reply = await rawExchange(h.listener.port, [
      'POST /cl HTTP/1.1\r\nHost: echo\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab',
    ]);
    expect(reply).toMatch(/^HTTP\/1\.1 400 /);
  });

  it('answers 431 to an oversized request head', async () => {
    const reply = await rawExchange(h.listener.port, [
      `GET /big-head HTTP/1.1\r\nHost: echo\r\nX-Big: ${'a'.repeat(70 * 1024)}\r\n\r\n`,
    ]);
    expect(reply).toMatch(/^HTTP\/1\.1 431 /);
  });

  it('answers 400 to an HTTP/1.1 request without Host', async () => {
    const reply = await rawExchange(h.listener.port, ['GET /direct HTTP/1.1\r\n\r\n']);
    expect(reply).toMatch(/^HTTP\/1\.1 400 /);
  });

  it('answers 417 to an expectation other than 100-continue', async () => {
    const reply = await rawExchange(h.listener.port, [
      'GET /direct HTTP/1.1\r\nHost: echo\r\nExpect: teapot\r\nConnection: close\r\n\r\n',
    ]);
    expect(reply).toMatch(/^HTTP\/1\.1 417 /);
  });

  it('answers HTTP/1.0 without chunking and closes the connection', async () => {
    const reply = await rawExchange(h.listener.port, ['GET /ten HTTP/1.0\r\nHost: echo\r\n\r\n']);
    expect(reply).toMatch(/^HTTP\/1\.1 200 /);
    expect(reply.toLowerCase()).not.toContain('transfer-encoding');
    expect(reply.toLowerCase()).toContain('connection: close');
    expect(reply).toContain('"/ten"');
  });

  it('keeps an HTTP/1.0 keep-alive connection open when the length is known', async () => {
    const reply = await rawExchange(h.listener.port, [
      'GET /direct/a HTTP/1.0\r\nHost: echo\r\nConnection: keep-alive\r\n\r\n' +
        'GET /direct/b HTTP/1.0\r\nHost: echo\r\n\r\n',
    ]);
    expect(statusLines(reply)).toHaveLength(2);
    expect(reply.toLowerCase()).toContain('connection: keep-alive');
    expect(reply.match(/\r\n\r\ndirect/g)).toHaveLength(2);
  });

  it('answers HEAD without a body and serves the next request', async () => {
    const reply = await rawExchange(h.listener.port, [
      'HEAD /head HTTP/1.1\r\nHost: echo\r\n\r\n' +
        'GET /after-head HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n',
    ]);
    expect(statusLines(reply)).toHaveLength(2);
    const second = reply.indexOf('HTTP/1.1 200', 1);
    // Nothing between the first head's blank line and the second status line.
    expect(reply.indexOf('\r\n\r\n') + 4).toBe(second);
    expect(reply).toContain('"/after-head"');
  });

  it('answers 204 and 304 without a body and keeps the connection', async () => {
    const reply = await rawExchange(h.listener.port, [
      'GET /status/204 HTTP/1.1\r\nHost: echo\r\n\r\n' +
        'GET /status/304 HTTP/1.1\r\nHost: echo\r\n\r\n' +
        'GET /direct HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n',
    ]);
    expect(statusLines(reply)).toEqual([
      'HTTP/1.1 204 No Content',
      'HTTP/1.1 304 Not Modified',
      'HTTP/1.1 200 OK',
    ]);
    expect(reply).not.toContain('status');
  });

  it('reads the request body that arrives after the headers in later packets', async () => {
    const s = net.connect(h.listener.port, '127.0.0.1');
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString('latin1')));
    const closed = new Promise<void>(resolve => s.on('close', () => resolve()));
    s.write('POST /slow HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\n\r\n');
    s.write('3\r\nabc\r\n');
    await new Promise(resolve => setImmediate(resolve));
    s.write('2\r\nde\r\n0\r\n\r\n');
    s.write('GET /direct HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n');
    await closed;
    expect(got).toMatch(/"\/slow".*"bodyBytes":5/);
    expect(statusLines(got)).toHaveLength(2);
  });

  it('hands an upgrade request to the upgrade path', async () => {
    // The handler allows websocket only: the upgrade path itself answers 403 to foo.
    const reply = await rawExchange(h.listener.port, [
      'GET /ws HTTP/1.1\r\nHost: echo\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n',
    ]);
    expect(statusLines(reply)).toEqual(['HTTP/1.1 403 Forbidden']);
  });

  if (server === 'lean') {
    it('hands a pipelined upgrade over only after the responses before it', async () => {
      const reply = await rawExchange(h.listener.port, [
        'GET /first HTTP/1.1\r\nHost: echo\r\n\r\n' +
          'GET /ws HTTP/1.1\r\nHost: echo\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n',
      ]);
      expect(statusLines(reply)).toEqual(['HTTP/1.1 200 OK', 'HTTP/1.1 403 Forbidden']);
      expect(reply).toContain('"/first"');
    });

    describe('timeouts (the sweep, run at a chosen time)', () => {
      const lean = () => (h.manager as unknown as { lean: LeanH1Server }).lean;

      /** A raw client, its server-side connection once it has one, and what it received. */
      async function client(): Promise<{
        s: net.Socket;
        conn: () => LeanServerConn | undefined;
        got: () => string;
        closed: Promise<void>;
      }> {
        const s = net.connect(h.listener.port, '127.0.0.1');
        await new Promise(resolve => s.once('connect', resolve));
        let got = '';
        s.on('data', (d: Buffer) => (got += d.toString('latin1')));
        const closed = new Promise<void>(resolve => s.once('close', () => resolve()));
        const conn = () => [...lean().conns].find(c => c.socket.remotePort === s.localPort);
        return { s, conn, got: () => got, closed };
      }

      async function until(what: string, ok: () => boolean): Promise<void> {
        for (let i = 0; i < 200 && !ok(); i++) await new Promise(r => setTimeout(r, 10));
        if (!ok()) throw new Error(`timed out waiting for ${what}`);
      }

      it('times a request head from its first read and answers 400 when it is too slow', async () => {
        const c = await client();
        c.s.write('GET /slow-head HTTP/1.1\r\nHost: ec');
        await until('the head to be timed', () => (c.conn()?.headStart ?? 0) > 0);
        const start = c.conn()!.headStart;
        c.s.write('ho\r\nX-More: 1\r\n');
        await new Promise(r => setTimeout(r, 20));
        // Later reads of the same head do not restart it.
        expect(c.conn()!.headStart).toBe(start);
        lean().sweep(start + 59_000);
        expect(c.conn()).toBeDefined();
        lean().sweep(start + 60_001);
        await c.closed;
        expect(c.got()).toMatch(/^HTTP\/1\.1 400 /);
      });

      it('does not time an idle keep-alive connection as a head, and closes it silently', async () => {
        const c = await client();
        // A local reply sent before the request body arrived: the body's read ends the message
        // while no request is answered any more.
        c.s.write('POST /direct HTTP/1.1\r\nHost: echo\r\nContent-Length: 5\r\n\r\n');
        await until('the reply', () => statusLines(c.got()).length === 1);
        c.s.write('abcde');
        await new Promise(r => setTimeout(r, 20));
        const conn = c.conn()!;
        expect(conn.headStart).toBe(0);
        const seen = c.got();
        lean().sweep(conn.idleSince + 59_000);
        expect(c.conn()).toBeDefined();
        lean().sweep(conn.idleSince + 60_001);
        await c.closed;
        expect(c.got()).toBe(seen);
      });
    });
  }
});
