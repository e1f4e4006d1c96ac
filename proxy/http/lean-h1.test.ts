/**
 * The lean HTTP/1.1 upstream client against real servers: a Node HTTP server for the ordinary
 * cases and raw TCP servers for what Node's server never sends (HTTP/1.0, interim responses,
 * close-delimited bodies, a connection cut mid-response). Each case runs with both clients and
 * expects the same events, so the lean client is held to Node's behaviour.
 */
import * as http from 'node:http';
import * as net from 'node:net';
import { silentLogger } from '../../common/logging';
import { waitFor } from '../../test/helpers/wait-for';
import type { ClusterManager, UpstreamHost } from '../types';
import type { HeaderMap } from './headers';
import { staticCluster } from './testing';
import {
  type H1UpstreamClient,
  type UpstreamFailure,
  type UpstreamListener,
  UpstreamPools,
  type UpstreamRequest,
  type UpstreamRequestHead,
} from './upstream-pool';

/** Plain TCP connections, counted. */
class Clusters {
  readonly sockets = new Set<net.Socket>();
  opened = 0;

  connect(host: UpstreamHost): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port: host.port, host: host.address, noDelay: true });
      s.once('error', reject);
      s.once('connect', () => {
        s.removeListener('error', reject);
        this.opened++;
        this.sockets.add(s);
        s.once('close', () => this.sockets.delete(s));
        resolve(s);
      });
    });
  }
}

/** Records what the pool reports for one request. */
class Recorder implements UpstreamListener {
  readonly events: string[] = [];
  status = 0;
  headers: HeaderMap = {};
  trailers: HeaderMap | undefined;
  body: Buffer[] = [];
  kind: UpstreamFailure | undefined;
  readonly done: Promise<void>;
  private finish!: () => void;

  constructor() {
    this.done = new Promise(resolve => (this.finish = resolve));
  }

  get text(): string {
    return Buffer.concat(this.body).toString();
  }

  onUpstreamConnected(): void {
    this.events.push('connected');
  }
  onUpstreamContinue(): void {
    this.events.push('continue');
  }
  onUpstreamHeaders(_u: UpstreamRequest, status: number, h: HeaderMap, endStream: boolean): void {
    this.events.push(endStream ? 'headers+end' : 'headers');
    this.status = status;
    this.headers = h;
  }
  onUpstreamData(_u: UpstreamRequest, chunk: Buffer): void {
    if (this.events.at(-1) !== 'data') this.events.push('data');
    this.body.push(chunk);
  }
  onUpstreamEnd(_u: UpstreamRequest, trailers: HeaderMap | undefined): void {
    this.events.push('end');
    this.trailers = trailers;
    this.finish();
  }
  onUpstreamError(_u: UpstreamRequest, kind: UpstreamFailure): void {
    this.events.push(`error:${kind}`);
    this.kind = kind;
    this.finish();
  }
  onUpstreamDrain(): void {
    this.events.push('drain');
  }
}

function hostFor(port: number): UpstreamHost {
  return {
    cluster: 'outbound|80||svc',
    address: '127.0.0.1',
    port,
    key: `127.0.0.1:${String(port)}|plaintext`,
    transport: { name: 'plaintext', match: {} },
    healthy: true,
    activeRequests: 0,
  };
}

function get(path: string, headers: HeaderMap = {}, method = 'GET'): UpstreamRequestHead {
  return { method, path, authority: 'svc', scheme: 'http', headers: { host: 'svc', ...headers } };
}

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as net.AddressInfo).port;
}

/** A raw server answering every request (head read up to the blank line) with `reply`. */
function rawServer(reply: (req: string, socket: net.Socket) => void): net.Server {
  return net.createServer(socket => {
    let buf = '';
    socket.on('data', d => {
      buf += d.toString('latin1');
      let i: number;
      while ((i = buf.indexOf('\r\n\r\n')) >= 0) {
        const head = buf.slice(0, i);
        buf = buf.slice(i + 4);
        reply(head, socket);
      }
    });
    socket.on('error', () => undefined);
  });
}

const CLIENTS: readonly H1UpstreamClient[] = ['node', 'lean'];

describe.each(CLIENTS)('HTTP/1.1 upstream client %s', client => {
  let server: http.Server;
  let port = 0;
  let clusters: Clusters;
  let pools: UpstreamPools;
  const seen: { method: string; url: string; headers: http.IncomingHttpHeaders; body: string }[] =
    [];

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
        const url = req.url ?? '/';
        if (url === '/trailers') {
          res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-checksum' });
          res.write('part1-');
          res.write('part2');
          res.addTrailers({ 'x-checksum': 'abc' });
          res.end();
        } else if (url === '/204') {
          res.writeHead(204);
          res.end();
        } else if (url === '/304') {
          res.writeHead(304, { etag: '"x"' });
          res.end();
        } else if (url === '/dup') {
          res.setHeader('set-cookie', ['a=1', 'b=2']);
          res.setHeader('x-multi', ['one', 'two']);
          res.end('dup');
        } else if (url === '/big') {
          res.end(Buffer.alloc(1 << 20, 0x61));
        } else if (url === '/close') {
          res.setHeader('connection', 'close');
          res.end('bye');
        } else {
          res.setHeader('content-type', 'text/plain');
          res.end(`${req.method ?? ''} ${url} ${body}`);
        }
      });
    });
    server.keepAliveTimeout = 60_000;
    port = await listen(server);
  });

  beforeEach(() => {
    clusters = new Clusters();
    pools = new UpstreamPools(clusters as unknown as ClusterManager, silentLogger(), client);
    seen.length = 0;
  });

  afterEach(() => {
    pools.close();
    for (const s of clusters.sockets) s.destroy();
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise(resolve => server.close(resolve));
  });

  const cluster = (extra: Parameters<typeof staticCluster>[2] = {}) =>
    staticCluster('outbound|80||svc', [port], extra);

  it('sends GETs and reuses one keep-alive connection', async () => {
    for (let i = 0; i < 5; i++) {
      const r = new Recorder();
      pools.request(hostFor(port), cluster(), 'http1', get(`/a?i=${String(i)}`), r, true);
      await r.done;
      expect(r.events).toEqual(['connected', 'headers', 'data', 'end']);
      expect(r.status).toBe(200);
      expect(r.text).toBe(`GET /a?i=${String(i)} `);
      expect(r.headers['content-type']).toBe('text/plain');
      expect(r.trailers).toBeUndefined();
    }
    expect(clusters.opened).toBe(1);
    expect(seen[0]?.headers.host).toBe('svc');
  });

  it('sends a POST body with content-length, chunked, and empty', async () => {
    const a = new Recorder();
    const ua = pools.request(
      hostFor(port),
      cluster(),
      'http1',
      get('/p', { 'content-length': '10' }, 'POST'),
      a,
      false,
    );
    ua.write(Buffer.from('hello'));
    ua.write(Buffer.from('world'));
    ua.end();
    await a.done;
    expect(a.text).toBe('POST /p helloworld');

    const b = new Recorder();
    const ub = pools.request(hostFor(port), cluster(), 'http1', get('/c', {}, 'PUT'), b, false);
    ub.write(Buffer.from('chunk1'));
    ub.write(Buffer.alloc(0));
    ub.write(Buffer.from('chunk2'));
    ub.end();
    await b.done;
    expect(b.text).toBe('PUT /c chunk1chunk2');
    expect(seen[1]?.headers['transfer-encoding']).toBe('chunked');

    const c = new Recorder();
    const uc = pools.request(hostFor(port), cluster(), 'http1', get('/e', {}, 'POST'), c, false);
    uc.end();
    await c.done;
    expect(c.text).toBe('POST /e ');
    expect(seen[2]?.headers['content-length']).toBe('0');
    expect(clusters.opened).toBe(1);
  });

  it('reports trailers, and no body for HEAD, 204 and 304', async () => {
    const t = new Recorder();
    pools.request(hostFor(port), cluster(), 'http1', get('/trailers'), t, true);
    await t.done;
    expect(t.text).toBe('part1-part2');
    expect(t.trailers).toEqual({ 'x-checksum': 'abc' });
    for (const [path, method, status] of [
      ['/x', 'HEAD', 200],
      ['/204', 'GET', 204],
      ['/304', 'GET', 304],
    ] as const) {
      const r = new Recorder();
      pools.request(hostFor(port), cluster(), 'http1', get(path, {}, method), r, true);
      await r.done;
      expect(r.events).toEqual(['connected', 'headers', 'end']);
      expect(r.status).toBe(status);
    }
  });

  it('folds duplicate response headers as Node does', async () => {
    const r = new Recorder();
    pools.request(hostFor(port), cluster(), 'http1', get('/dup'), r, true);
    await r.done;
    expect(r.headers['set-cookie']).toEqual(['a=1', 'b=2']);
    expect(r.headers['x-multi']).toBe('one, two');
  });

  it('closes the connection after Connection: close and after maxRequestsPerConnection', async () => {
    const r = new Recorder();
    pools.request(hostFor(port), cluster(), 'http1', get('/close'), r, true);
    await r.done;
    expect(r.text).toBe('bye');
    await waitFor(() => clusters.sockets.size === 0);
    for (let i = 0; i < 4; i++) {
      const q = new Recorder();
      pools.request(
        hostFor(port),
        cluster({ maxRequestsPerConnection: 2 }),
        'http1',
        get('/'),
        q,
        true,
      );
      await q.done;
    }
    expect(clusters.opened).toBe(3);
  });

  it('closes idle connections after the idle timeout, and on retireAll', async () => {
    const r = new Recorder();
    pools.request(hostFor(port), cluster({ idleTimeoutMs: 50 }), 'http1', get('/'), r, true);
    await r.done;
    await waitFor(() => clusters.sockets.size === 0);
    const q = new Recorder();
    pools.request(hostFor(port), cluster(), 'http1', get('/'), q, true);
    await q.done;
    expect(clusters.sockets.size).toBe(1);
    pools.retireAll();
    await waitFor(() => clusters.sockets.size === 0);
  });

  it('pauses and resumes the response body', async () => {
    const r = new Recorder();
    let paused = 0;
    const listener: UpstreamListener = {
      onUpstreamConnected: () => undefined,
      onUpstreamContinue: () => undefined,
      onUpstreamHeaders: (u, s, h, e) => r.onUpstreamHeaders(u, s, h, e),
      onUpstreamData: (u, c) => {
        r.onUpstreamData(u, c);
        if (paused === 0) {
          paused++;
          u.pause();
          setTimeout(() => u.resume(), 20);
        }
      },
      onUpstreamEnd: (u, t) => r.onUpstreamEnd(u, t),
      onUpstreamError: (u, k) => r.onUpstreamError(u, k),
      onUpstreamDrain: () => undefined,
    };
    pools.request(hostFor(port), cluster(), 'http1', get('/big'), listener, true);
    await r.done;
    expect(r.events).toEqual(['headers', 'data', 'end']);
    expect(Buffer.concat(r.body).length).toBe(1 << 20);
  });

  it('reports a refused connection as connect', async () => {
    const dead = net.createServer();
    const deadPort = await listen(dead);
    await new Promise(resolve => dead.close(resolve));
    const r = new Recorder();
    pools.request(hostFor(deadPort), cluster(), 'http1', get('/'), r, true);
    await r.done;
    expect(r.kind).toBe('connect');
  });
});

describe.each(CLIENTS)('HTTP/1.1 upstream client %s against raw servers', client => {
  let clusters: Clusters;
  let pools: UpstreamPools;
  const servers: net.Server[] = [];

  beforeEach(() => {
    clusters = new Clusters();
    pools = new UpstreamPools(clusters as unknown as ClusterManager, silentLogger(), client);
  });

  afterEach(async () => {
    pools.close();
    for (const s of clusters.sockets) s.destroy();
    for (const s of servers.splice(0)) await new Promise(resolve => s.close(resolve));
  });

  async function start(reply: (req: string, socket: net.Socket) => void): Promise<number> {
    const s = rawServer(reply);
    servers.push(s);
    return listen(s);
  }
  const cluster = (port: number) => staticCluster('outbound|80||svc', [port]);

  it('handles 1xx, 100-continue, HTTP/1.0 and close-delimited bodies', async () => {
    const port = await start((head, socket) => {
      if (head.includes('expect: 100-continue')) {
        socket.write('HTTP/1.1 100 Continue\r\n\r\n');
        return;
      }
      socket.write('HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n');
      socket.end('HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil-eof');
    });
    const r = new Recorder();
    pools.request(hostFor(port), cluster(port), 'http1', get('/'), r, true);
    await r.done;
    expect(r.events).toEqual(['connected', 'headers', 'data', 'end']);
    expect(r.text).toBe('until-eof');

    const c = new Recorder();
    pools.request(
      hostFor(port),
      cluster(port),
      'http1',
      get('/', { expect: '100-continue', 'content-length': '2' }, 'POST'),
      c,
      false,
    );
    await waitFor(() => c.events.includes('continue'));
    expect(c.events).toEqual(['connected', 'continue']);
  });

  it('reports an upstream closing mid-response as reset', async () => {
    const port = await start((_head, socket) => {
      socket.write('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial');
      setTimeout(() => socket.destroy(), 10);
    });
    const r = new Recorder();
    pools.request(hostFor(port), cluster(port), 'http1', get('/'), r, true);
    await r.done;
    expect(r.events).toEqual(['connected', 'headers', 'data', 'error:reset']);
  });

  it('reports a closed reused connection as refused, a fresh one as reset', async () => {
    let n = 0;
    const port = await start((_head, socket) => {
      n++;
      if (n === 1) socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
      else socket.destroy();
    });
    const a = new Recorder();
    pools.request(hostFor(port), cluster(port), 'http1', get('/'), a, true);
    await a.done;
    const b = new Recorder();
    pools.request(hostFor(port), cluster(port), 'http1', get('/'), b, true);
    await b.done;
    expect(b.kind).toBe('refused');
    const c = new Recorder();
    pools.request(hostFor(port), cluster(port), 'http1', get('/'), c, true);
    await c.done;
    expect(c.kind).toBe('reset');
  });

  it('reports a malformed response as reset', async () => {
    const port = await start((_head, socket) => {
      socket.write('HTTP/1.1 abc\r\n\r\n');
    });
    const r = new Recorder();
    pools.request(hostFor(port), cluster(port), 'http1', get('/'), r, true);
    await r.done;
    expect(r.events).toEqual(['connected', 'error:reset']);
  });

  it('refuses CR/LF in header values', () => {
    const r = new Recorder();
    expect(() =>
      pools.request(hostFor(1), cluster(1), 'http1', get('/', { 'x-bad': 'a\r\nb: c' }), r, true),
    ).toThrow();
  });
});

describe('HTTP/1.1 upstream client lean, reading natively', () => {
  let clusters: Clusters;
  let pools: UpstreamPools;
  let server: net.Server;

  beforeEach(() => {
    clusters = new Clusters();
    pools = new UpstreamPools(clusters as unknown as ClusterManager, silentLogger(), 'lean');
  });

  afterEach(async () => {
    pools.close();
    for (const s of clusters.sockets) s.destroy();
    await new Promise(resolve => server.close(resolve));
  });

  it('hands the socket to the parser, and drops a connection the upstream writes to while idle', async () => {
    let upstream: net.Socket | undefined;
    let n = 0;
    server = rawServer((_head, socket) => {
      upstream = socket;
      n++;
      socket.write(`HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n${String(n)}`);
    });
    const port = await listen(server);
    const cluster = staticCluster('outbound|80||svc', [port]);
    const a = new Recorder();
    pools.request(hostFor(port), cluster, 'http1', get('/'), a, true);
    await a.done;
    expect(a.text).toBe('1');
    const [socket] = [...clusters.sockets] as (net.Socket & { _handle: { _consumed?: boolean } })[];
    expect(socket?._handle._consumed).toBe(true);

    // A response nobody asked for: the connection's framing is unknown, so it is not reused.
    upstream?.write('HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstale');
    await waitFor(() => clusters.sockets.size === 0);
    const b = new Recorder();
    pools.request(hostFor(port), cluster, 'http1', get('/'), b, true);
    await b.done;
    expect(b.text).toBe('2');
    expect(clusters.opened).toBe(2);
  });
});
