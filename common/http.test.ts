import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import {
  ConfigError,
  InvalidInputError,
  NotAuthenticatedError,
  NotAuthorizedError,
  NotReadyError,
  ResourceExhaustedError,
  SailError,
} from './errors';
import { type Route, MAX_BODY_BYTES, closeServer, createRouter, listen } from './http';
import type { Logger } from './logging';

interface LogEntry {
  level: number;
  msg: string;
  err?: { message: string };
  path?: string;
}

/** pino into memory (the pattern of test/helpers/log-capture.ts). */
function captureLogs(): { log: Logger; entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      entries.push(JSON.parse(chunk.toString()) as LogEntry);
      done();
    },
  });
  return { log: pino({ level: 'debug' }, sink), entries };
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  json: () => any;
}

/** One HTTP request over TCP (`address` HOST:PORT) or a unix socket (`unix:///path`). */
function request(
  address: string,
  method: string,
  urlPath: string,
  opts: { body?: string | Buffer; headers?: Record<string, string> } = {},
): Promise<Reply> {
  const target = address.startsWith('unix://')
    ? { socketPath: address.slice('unix://'.length) }
    : {
        host: address.slice(0, address.lastIndexOf(':')),
        port: Number(address.slice(address.lastIndexOf(':') + 1)),
      };
  return new Promise((resolve, reject) => {
    const req = http.request(
      { ...target, method, path: urlPath, headers: opts.headers, agent: false },
      res => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const body = Buffer.concat(chunks).toString('utf8');
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body,
            json: () => JSON.parse(body),
          });
        });
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

const ADMIN = { 'x-test-admin': '1' };

const routes: Route[] = [
  { method: 'GET', path: '/healthz', admin: false, handler: () => ({ json: { ok: true } }) },
  { method: 'GET', path: '/text', admin: false, handler: () => ({ text: 'plain', status: 202 }) },
  {
    method: 'GET',
    path: '/metrics',
    admin: false,
    handler: () => ({ text: '# HELP x\n', contentType: 'text/plain; version=0.0.4' }),
  },
  {
    method: 'GET',
    path: '/nodes/:node/tokens/:id',
    admin: false,
    handler: ctx => ({ json: { params: ctx.params, q: ctx.query.get('q'), admin: ctx.admin } }),
  },
  {
    method: 'POST',
    path: '/echo',
    admin: false,
    handler: async ctx => ({ json: await ctx.body() }),
  },
  {
    method: 'POST',
    path: '/tokens',
    admin: true,
    handler: async ctx => ({ status: 201, json: await ctx.body() }),
  },
  {
    method: 'DELETE',
    path: '/tokens/:id',
    admin: true,
    handler: ctx => ({ json: { deleted: ctx.params['id'] } }),
  },
  {
    method: 'GET',
    path: '/fail/:kind',
    admin: false,
    handler: async ctx => {
      const kind = ctx.params['kind'];
      switch (kind) {
        case 'invalid':
          throw new InvalidInputError('bad ttl "x"');
        case 'config':
          throw new ConfigError('x.yaml: a: wrong');
        case 'unauthenticated':
          throw new NotAuthenticatedError('no credentials');
        case 'forbidden':
          throw new NotAuthorizedError('not yours', { code: 'CA_NOT_AUTHORIZED' });
        case 'busy':
          throw new ResourceExhaustedError('slow down');
        case 'not-ready':
          throw new NotReadyError('still starting');
        case 'not-found':
          throw new SailError('CA_TOKEN_NOT_FOUND', 'no such token abc');
        case 'coded':
          throw new SailError('CA_SOMETHING', 'secret internals');
        case 'string':
          throw 'a thrown string'; // eslint-disable-line @typescript-eslint/only-throw-error
        default:
          throw new Error('secret internals at /var/lib/sail/ca/key.pem');
      }
    },
  },
];

describe('createRouter', () => {
  let server: http.Server;
  let address: string;
  let entries: LogEntry[];

  beforeAll(async () => {
    const logs = captureLogs();
    entries = logs.entries;
    server = http.createServer(
      createRouter(routes, logs.log, req => req.headers['x-test-admin'] === '1'),
    );
    address = await listen(server, '127.0.0.1:0');
  });
  afterAll(async () => {
    await closeServer(server);
  });
  beforeEach(() => {
    entries.length = 0;
  });

  it('binds port 0 and reports the real port', () => {
    expect(address).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(address).not.toBe('127.0.0.1:0');
  });

  it('answers JSON with a content type and length', async () => {
    const r = await request(address, 'GET', '/healthz');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('application/json');
    expect(Number(r.headers['content-length'])).toBe(Buffer.byteLength(r.body));
    expect(r.json()).toEqual({ ok: true });
  });

  it('answers text with a status and a default or given content type', async () => {
    const r = await request(address, 'GET', '/text');
    expect([r.status, r.body, r.headers['content-type']]).toEqual([
      202,
      'plain',
      'text/plain; charset=utf-8',
    ]);
    const m = await request(address, 'GET', '/metrics');
    expect(m.headers['content-type']).toBe('text/plain; version=0.0.4');
  });

  it('passes path parameters (decoded) and the query string', async () => {
    const r = await request(address, 'GET', '/nodes/vm%2D1/tokens/a%20b?q=x%3Dy');
    expect(r.json()).toEqual({ params: { node: 'vm-1', id: 'a b' }, q: 'x=y', admin: false });
  });

  it.each([
    { name: 'an unknown path', method: 'GET', path: '/nope' },
    { name: 'a path one segment too long', method: 'GET', path: '/healthz/more' },
    {
      name: 'a parameterised path with a segment missing',
      method: 'GET',
      path: '/nodes/vm-1/tokens',
    },
    { name: 'a trailing slash', method: 'GET', path: '/healthz/' },
  ])('404s $name', async ({ method, path: p }) => {
    const r = await request(address, method, p);
    expect(r.status).toBe(404);
    expect(r.json()).toEqual({
      error: { code: 'COMMON_NOT_FOUND', message: `no such endpoint ${p}` },
    });
  });

  it.each([
    { method: 'POST', path: '/healthz' },
    { method: 'DELETE', path: '/healthz' },
    { method: 'GET', path: '/echo' },
    { method: 'PUT', path: '/tokens/abc' },
  ])('405s $method $path', async ({ method, path: p }) => {
    const r = await request(address, method, p);
    expect(r.status).toBe(405);
    expect(r.json()).toEqual({
      error: { code: 'COMMON_METHOD_NOT_ALLOWED', message: `method ${method} not allowed on ${p}` },
    });
  });

  it('403s an admin-only route without admin rights, before reading the body', async () => {
    const r = await request(address, 'POST', '/tokens', { body: '{"node":"vm-1"}' });
    expect(r.status).toBe(403);
    expect(r.json().error.code).toBe('COMMON_NOT_AUTHORIZED');
    expect(r.json().error.message).toMatch(/needs admin credentials/);
    const d = await request(address, 'DELETE', '/tokens/abc');
    expect(d.status).toBe(403);
  });

  it('serves an admin-only route to an admin', async () => {
    const r = await request(address, 'POST', '/tokens', {
      body: '{"node":"vm-1"}',
      headers: ADMIN,
    });
    expect(r.status).toBe(201);
    expect(r.json()).toEqual({ node: 'vm-1' });
    const d = await request(address, 'DELETE', '/tokens/abc', { headers: ADMIN });
    expect(d.json()).toEqual({ deleted: 'abc' });
  });

  describe('JSON bodies', () => {
    it('parses an object', async () => {
      const r = await request(address, 'POST', '/echo', { body: '{"a":[1,2],"b":{"c":null}}' });
      expect(r.json()).toEqual({ a: [1, 2], b: { c: null } });
    });

    it.each([
      { name: 'empty', body: '' },
      { name: 'whitespace', body: ' \n' },
    ])('treats an $name body as {}', async ({ body }) => {
      const r = await request(address, 'POST', '/echo', { body });
      expect(r.json()).toEqual({});
    });

    it.each([
      { name: 'broken JSON', body: '{"a":', want: /^invalid JSON body: / },
      { name: 'an array', body: '[1]', want: 'invalid JSON body: body must be a JSON object' },
      { name: 'a string', body: '"x"', want: 'invalid JSON body: body must be a JSON object' },
      { name: 'null', body: 'null', want: 'invalid JSON body: body must be a JSON object' },
      { name: 'a number', body: '42', want: 'invalid JSON body: body must be a JSON object' },
    ])('400s $name', async ({ body, want }) => {
      const r = await request(address, 'POST', '/echo', { body });
      expect(r.status).toBe(400);
      expect(r.json().error.code).toBe('COMMON_INVALID_INPUT');
      if (typeof want === 'string') expect(r.json().error.message).toBe(want);
      else expect(r.json().error.message).toMatch(want);
    });

    /** A JSON object whose encoding is exactly `size` bytes. */
    const bodyOfSize = (size: number) => `{"x":"${'a'.repeat(size - 8)}"}`;

    it('accepts a body of exactly MAX_BODY_BYTES', async () => {
      const body = bodyOfSize(MAX_BODY_BYTES);
      expect(Buffer.byteLength(body)).toBe(MAX_BODY_BYTES);
      const r = await request(address, 'POST', '/echo', { body });
      expect(r.status).toBe(200);
      expect((r.json().x as string).length).toBe(MAX_BODY_BYTES - 8);
    });

    it('refuses an oversized body and keeps serving', async () => {
      await request(address, 'POST', '/echo', { body: bodyOfSize(MAX_BODY_BYTES + 1) }).then(
        r => expect(r.status).toBeGreaterThanOrEqual(400),
        (err: unknown) =>
          expect((err as NodeJS.ErrnoException).code).toMatch(/^(ECONNRESET|EPIPE)$/),
      );
      expect((await request(address, 'GET', '/healthz')).status).toBe(200);
    });

    // Known bug (reported): readBody destroys the request socket when the limit is passed, so the
    // client gets a connection reset instead of the documented JSON error. Flip to `it` once fixed.
    it('answers an oversized body with a JSON error', async () => {
      const r = await request(address, 'POST', '/echo', { body: bodyOfSize(2 * MAX_BODY_BYTES) });
      expect(r.status).toBeGreaterThanOrEqual(400);
      expect(r.status).toBeLessThan(500);
      expect(r.json().error.message).toBe(`request body exceeds ${MAX_BODY_BYTES} bytes`);
    });
  });

  describe('error mapping', () => {
    it.each([
      { kind: 'invalid', status: 400, code: 'COMMON_INVALID_INPUT', message: 'bad ttl "x"' },
      { kind: 'config', status: 400, code: 'COMMON_CONFIG_INVALID', message: 'x.yaml: a: wrong' },
      {
        kind: 'unauthenticated',
        status: 401,
        code: 'COMMON_NOT_AUTHENTICATED',
        message: 'no credentials',
      },
      { kind: 'forbidden', status: 403, code: 'CA_NOT_AUTHORIZED', message: 'not yours' },
      { kind: 'busy', status: 429, code: 'COMMON_RESOURCE_EXHAUSTED', message: 'slow down' },
      { kind: 'not-ready', status: 503, code: 'COMMON_NOT_READY', message: 'still starting' },
      { kind: 'not-found', status: 404, code: 'CA_TOKEN_NOT_FOUND', message: 'no such token abc' },
    ])(
      'maps a $kind error to $status with its code and message',
      async ({ kind, status, code, message }) => {
        const r = await request(address, 'GET', `/fail/${kind}`);
        expect(r.status).toBe(status);
        expect(r.json()).toEqual({ error: { code, message } });
        expect(entries.map(e => [e.level, e.msg])).toEqual([[20, 'Admin request refused']]);
      },
    );

    it.each([
      { kind: 'unexpected', code: 'COMMON_INTERNAL' },
      { kind: 'coded', code: 'CA_SOMETHING' },
      { kind: 'string', code: 'COMMON_INTERNAL' },
    ])(
      'hides the message of an unexpected $kind error behind a 500 and logs it',
      async ({ kind, code }) => {
        const r = await request(address, 'GET', `/fail/${kind}`);
        expect(r.status).toBe(500);
        expect(r.json()).toEqual({ error: { code, message: 'internal error' } });
        expect(r.body).not.toContain('secret');
        expect(entries).toHaveLength(1);
        expect(entries[0]).toMatchObject({
          level: 50,
          msg: 'Admin request failed',
          path: `/fail/${kind}`,
        });
      },
    );
  });

  describe('hostile request targets', () => {
    /** Calls the router directly, as node:http would, and reports a synchronous throw. */
    async function callRouter(url: string): Promise<{ threw: unknown; status?: number }> {
      const router = createRouter(routes, pino({ level: 'silent' }), () => false);
      const req = Object.assign(new EventEmitter(), { method: 'GET', url, headers: {} });
      const res = {
        status: undefined as number | undefined,
        writeHead(s: number) {
          this.status = s;
          return this;
        },
        end() {
          return this;
        },
      };
      try {
        router(req as unknown as http.IncomingMessage, res as unknown as http.ServerResponse);
      } catch (err) {
        return { threw: err };
      }
      await new Promise(resolve => setImmediate(resolve)); // handlers answer asynchronously
      return { threw: undefined, status: res.status };
    }

    it('answers an odd but valid target', async () => {
      expect(await callRouter('/healthz?x=%zz')).toEqual({ threw: undefined, status: 200 });
      expect(await callRouter('*')).toEqual({ threw: undefined, status: 404 });
    });

    // Known bugs (reported): both throw inside the request listener, which node:http turns into an
    // uncaught exception that kills the process: `GET //` (new URL throws) and a malformed percent
    // escape in a path parameter (decodeURIComponent throws). Flip to `it` once fixed.
    it.each(['//', '/nodes/%E0%A4%A/tokens/x'])(
      'answers %j with a 4xx instead of throwing',
      async url => {
        const { threw, status } = await callRouter(url);
        expect(threw).toBeUndefined();
        expect(status).toBeGreaterThanOrEqual(400);
        expect(status).toBeLessThan(500);
      },
    );
  });
});

describe('listen and closeServer', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sail-http-test-'));
  });
  afterAll(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const hello = () =>
    http.createServer(createRouter(routes, pino({ level: 'silent' }), () => true));

  it('serves on a unix socket with mode 0600, replacing a stale socket file', async () => {
    const sock = path.join(dir, 'admin.sock');
    fs.writeFileSync(sock, 'stale');
    const server = hello();
    try {
      expect(await listen(server, `unix://${sock}`)).toBe(`unix://${sock}`);
      expect(fs.statSync(sock).isSocket()).toBe(true);
      expect(fs.statSync(sock).mode & 0o777).toBe(0o600);
      const r = await request(`unix://${sock}`, 'POST', '/tokens', { body: '{}' });
      expect(r.status).toBe(201);
    } finally {
      await closeServer(server);
    }
  });

  it.each(['nope', '127.0.0.1', 'tcp://127.0.0.1:80', '127.0.0.1:99999'])(
    'rejects the listen address %j as invalid input',
    async bad => {
      const server = hello();
      await expect(listen(server, bad)).rejects.toThrow(InvalidInputError);
      await expect(listen(server, bad)).rejects.toThrow(
        `invalid listen address ${JSON.stringify(bad)}: want HOST:PORT or unix:///PATH`,
      );
    },
  );

  it('rejects when the port is taken', async () => {
    const first = hello();
    const second = hello();
    try {
      const addr = await listen(first, '127.0.0.1:0');
      await expect(listen(second, addr)).rejects.toThrow(/EADDRINUSE/);
      expect(second.listening).toBe(false);
    } finally {
      await closeServer(first);
      await closeServer(second);
    }
  });

  it('closes promptly while a keep-alive client is connected', async () => {
    const server = hello();
    const addr = await listen(server, '127.0.0.1:0');
    const agent = new http.Agent({ keepAlive: true });
    try {
      await new Promise<void>((resolve, reject) => {
        const [host, port] = [addr.split(':')[0], Number(addr.split(':')[1])];
        http
          .get({ host, port, path: '/healthz', agent }, res => {
            res.resume();
            res.on('end', resolve);
          })
          .on('error', reject);
      });
      const started = Date.now();
      await closeServer(server);
      expect(server.listening).toBe(false);
      // closeIdleConnections ends the kept-alive socket at once; the 2 s backstop is not needed.
      expect(Date.now() - started).toBeLessThan(1500);
    } finally {
      agent.destroy();
    }
  });

  it('closing a server that is not listening resolves', async () => {
    await expect(closeServer(hello())).resolves.toBeUndefined();
  });
});
