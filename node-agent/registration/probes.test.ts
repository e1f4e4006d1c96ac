/** The three probe kinds against real servers and processes on loopback. */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { makeTmpDir } from '../../test/helpers/tmp-dir';
import { waitFor } from '../../test/helpers/wait-for';
import { type HealthProbeSpec, runProbe } from './probes';

const base = { intervalMs: 1000, timeoutMs: 1000, failureThreshold: 3, successThreshold: 1 };

function listen(server: net.Server): Promise<number> {
  return new Promise(resolve =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)),
  );
}

/** A port nothing listens on (bound, read back, closed). */
async function deadPort(): Promise<number> {
  const s = net.createServer();
  const port = await listen(s);
  await new Promise(r => s.close(r));
  return port;
}

describe('runProbe http', () => {
  let status = 200;
  let hang = false;
  const server = http.createServer((req, res) => {
    if (hang) return; // never answers
    res.writeHead(status, status >= 300 && status < 400 ? { location: '/elsewhere' } : {});
    res.end(req.url);
  });
  let port = 0;
  beforeAll(async () => {
    port = await listen(server);
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise(r => server.close(r));
  });
  afterEach(() => {
    hang = false;
  });

  const spec = (): HealthProbeSpec => ({ ...base, http: { port, path: '/health' } });

  it.each([
    { code: 200, ok: true },
    { code: 204, ok: true },
    { code: 302, ok: true },
    { code: 399, ok: true },
    { code: 400, ok: false },
    { code: 500, ok: false },
    { code: 503, ok: false },
  ])('HTTP $code is ok=$ok (redirects not followed)', async ({ code, ok }) => {
    status = code;
    const r = await runProbe(spec());
    expect(r).toEqual({ ok, message: `HTTP ${code} from http://127.0.0.1:${port}/health` });
  });

  it('fails when nothing listens, naming the URL and the error', async () => {
    const p = await deadPort();
    const r = await runProbe({ ...base, http: { port: p, path: '/' } });
    expect(r.ok).toBe(false);
    expect(r.message).toBe(`GET http://127.0.0.1:${p}/: connect ECONNREFUSED 127.0.0.1:${p}`);
  });

  it('fails after the timeout when the server does not answer', async () => {
    hang = true;
    const started = Date.now();
    const r = await runProbe({ ...spec(), timeoutMs: 200 });
    expect(r).toEqual({
      ok: false,
      message: `GET http://127.0.0.1:${port}/health: no response within 200 ms`,
    });
    expect(Date.now() - started).toBeLessThan(1000);
  });
});

describe('runProbe tcp', () => {
  it('succeeds when the port accepts and fails when refused', async () => {
    const server = net.createServer(s => s.destroy());
    const port = await listen(server);
    try {
      expect(await runProbe({ ...base, tcp: { port } })).toEqual({
        ok: true,
        message: `connected to 127.0.0.1:${port}`,
      });
    } finally {
      await new Promise(r => server.close(r));
    }
    const r = await runProbe({ ...base, tcp: { port } });
    expect(r).toEqual({
      ok: false,
      message: `connect 127.0.0.1:${port}: connect ECONNREFUSED 127.0.0.1:${port}`,
    });
  });
});

describe('runProbe exec', () => {
  const tmp = makeTmpDir('sail-probe-');
  afterAll(() => tmp.cleanup());

  it('is healthy on exit 0', async () => {
    expect(await runProbe({ ...base, exec: { command: ['/bin/true'] } })).toEqual({
      ok: true,
      message: '"/bin/true" exited 0',
    });
  });

  it('is unhealthy on a non-zero exit, with the output in the message', async () => {
    const r = await runProbe({
      ...base,
      exec: { command: ['/bin/sh', '-c', 'echo "db down" >&2; exit 3'] },
    });
    expect(r).toEqual({ ok: false, message: '"/bin/sh" exited 3: db down' });
  });

  it('names a command that does not exist', async () => {
    const r = await runProbe({ ...base, exec: { command: ['/nonexistent/check'] } });
    expect(r).toEqual({
      ok: false,
      message: '"/nonexistent/check": spawn /nonexistent/check ENOENT',
    });
  });

  it('kills an overrunning command and its children at the timeout', async () => {
    const pidFile = path.join(tmp.dir, 'child.pid');
    const started = Date.now();
    const r = await runProbe({
      ...base,
      timeoutMs: 300,
      exec: { command: ['/bin/sh', '-c', `sleep 30 & echo $! > ${pidFile}; wait`] },
    });
    expect(r).toEqual({ ok: false, message: '"/bin/sh" did not finish within 300 ms (killed)' });
    expect(Date.now() - started).toBeLessThan(2000);
    const pid = Number(fs.readFileSync(pidFile, 'utf8'));
    // The backgrounded grandchild went with its process group.
    await waitFor(
      () => {
        // Gone, or a zombie waiting for its new parent to reap it.
        try {
          return /^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
        } catch {
          return true;
        }
      },
      { timeoutMs: 2000, what: `sleep ${pid} killed with the probe's process group` },
    );
  });
});
