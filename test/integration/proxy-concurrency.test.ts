/**
 * `sail proxy --concurrency 2` as a real process (the built CLI) in a real mesh: the control plane
 * and proxy B run in this process (test/helpers/proxy-pair.ts), proxy A is the primary and its two
 * worker processes. Shown: /ready only once both workers are; requests through A's outbound
 * listener are served by both workers (node:cluster round robin) over mTLS to B; /stats and the
 * Prometheus metrics add the workers up, `?worker=N` shows one; a killed worker is forked again
 * while the other keeps serving; SIGHUP reaches every worker; SIGTERM drains and stops all three
 * processes with exit code 0. Needs `npm run build` (npm test does it).
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import {
  getOnce,
  type ProxyPair,
  proxyConfigYaml,
  startProxyPair,
  SERVICE_HOST,
} from '../helpers/proxy-pair';
import { Proxy as SailProxy } from '../../proxy';
import { sail } from '../helpers/sail-cli';
import { freePort, SailProcess, sailBuilt } from '../helpers/sail-process';
import { makeTmpDir } from '../helpers/tmp-dir';
import { waitFor } from '../helpers/wait-for';

const describeBuilt = sailBuilt() ? describe : describe.skip;
if (!sailBuilt())
  console.warn('skipping proxy concurrency tests: build/cli/sail.js is missing (npm run build)');

jest.setTimeout(90_000);

/** One request on a new connection (node:cluster hands out connections, not requests). */
const get = (address: string) => getOnce(address, '/hello', SERVICE_HOST);

async function getText(url: string): Promise<{ status: number; text: string }> {
  const res = await fetch(url);
  return { status: res.status, text: await res.text() };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describeBuilt('sail proxy --concurrency', () => {
  let tmp: { dir: string; cleanup: () => void };
  let pair: ProxyPair;
  let b: SailProxy;
  let app: http.Server;

  beforeAll(async () => {
    tmp = makeTmpDir('sail-proxy-concurrency-');
    pair = await startProxyPair({ dir: tmp.dir, withoutProxies: true });
    app = http.createServer((_req, res) => res.end('hello from B'));
    await new Promise<void>(r => app.listen(pair.ports.http, '127.0.0.1', r));
    b = new SailProxy(pair.hostB.options);
    await b.start();
    await b.whenReady();
  });

  afterAll(async () => {
    await b?.close();
    await new Promise(r => app?.close(r));
    await pair?.close();
    tmp?.cleanup();
  });

  it('serves through both workers, merges their stats, restarts one that dies, and stops', async () => {
    const adminPort = await freePort();
    const metricsPort = await freePort();
    const admin = `http://127.0.0.1:${adminPort}`;
    const file = path.join(tmp.dir, 'proxy-a.yaml');
    fs.writeFileSync(
      file,
      proxyConfigYaml(
        {
          ...pair.hostA.options,
          adminListen: `127.0.0.1:${adminPort}`,
          metricsListen: `127.0.0.1:${metricsPort}`,
        },
        { logLevel: 'info' },
      ),
    );
    const proc = new SailProcess(['proxy', '--config', file, '--concurrency', '2']);
    try {
      const forked = await Promise.all(
        [1, 2].map(w => proc.waitForLog('Proxy worker forked', 15_000, l => l.worker === w)),
      );
      const pids = forked.map(l => l.pid as number);
      expect(new Set([proc.pid, ...pids]).size).toBe(3);

      // Ready once both workers are, then systemd would be told (the primary logs it).
      await waitFor(async () => (await getText(`${admin}/ready`)).status === 200, {
        timeoutMs: 30_000,
        what: 'the primary /ready',
      });
      const ready = await proc.waitForLog('Proxy ready', 10_000, l => l.worker === undefined);
      expect(ready.workers).toBe(2);
      expect(proc.logs('Proxy ready').filter(l => l.worker !== undefined)).toHaveLength(2);

      // Requests through A's outbound listener: every one answered by B, spread over both workers.
      const outbound = pair.outbound(pair.ports.http);
      const N = 40;
      for (let i = 0; i < N; i++)
        expect(await get(outbound)).toEqual({ status: 200, body: 'hello from B' });

      const statsOf = async (query = '') => {
        const r = await getText(`${admin}/stats?format=json${query}`);
        expect(r.status).toBe(200);
        const { stats } = JSON.parse(r.text) as { stats: { name: string; value: unknown }[] };
        return new Map(stats.map(s => [s.name, s.value]));
      };
      const total = await statsOf();
      const w1 = await statsOf('&worker=1');
      const w2 = await statsOf('&worker=2');
      expect(total.get('http.downstream_rq_total')).toBe(N);
      expect(w1.get('http.downstream_rq_total')).toBeGreaterThan(0);
      expect(w2.get('http.downstream_rq_total')).toBeGreaterThan(0);
      expect(total.get('server.concurrency')).toBe(2);
      expect(total.get('server.workers_live')).toBe(2);
      expect(total.get('server.live')).toBe(1);
      // The configuration is counted once, not once per worker.
      expect(total.get('cluster_manager.active_clusters')).toBe(
        w1.get('cluster_manager.active_clusters'),
      );
      expect(total.get('listener_manager.lds.version_text')).toBe(
        w1.get('listener_manager.lds.version_text'),
      );
      expect((await getText(`${admin}/stats?worker=3`)).status).toBe(400);

      // Prometheus: the workers' series added up, ready the least of them.
      const metrics = (await getText(`http://127.0.0.1:${metricsPort}/stats/prometheus`)).text;
      const requests = metrics
        .split('\n')
        .filter(l => l.startsWith('istio_requests_total{') && l.includes('reporter="source"'))
        .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
      expect(requests).toBe(N);
      expect(metrics).toMatch(/^sail_proxy_ready 1$/m);
      expect(metrics).toMatch(/^sail_proxy_workers 2$/m);
      expect(metrics).toMatch(/^process_resident_memory_bytes \d+/m);

      // The other admin paths answer from one worker, with which one in server_info.
      const info = JSON.parse((await getText(`${admin}/server_info?worker=2`)).text) as {
        state: string;
        workers: { concurrency: number; answered_by: number };
      };
      expect(info.state).toBe('LIVE');
      expect(info.workers).toMatchObject({ concurrency: 2, answered_by: 2 });
      const dump = await getText(`${admin}/config_dump`);
      expect(dump.status).toBe(200);
      expect(dump.text).toContain('type.googleapis.com/envoy.admin.v3.ListenersConfigDump');

      // SIGHUP reaches both workers.
      process.kill(proc.pid, 'SIGHUP');
      for (const w of [1, 2])
        await proc.waitForLog('Reloading certificates (primary)', 10_000, l => l.worker === w);

      // A worker killed outright is forked again; worker 1 serves meanwhile.
      process.kill(pids[1] as number, 'SIGKILL');
      const exited = await proc.waitForLog('Proxy worker exited; forking it again');
      expect(exited).toMatchObject({ worker: 2, exit: 'signal SIGKILL', level: 'error' });
      // Not ready while it is away (1 s before the fork, then its start), and /ready says why.
      const down = await getText(`${admin}/ready`);
      expect(down.status).toBe(503);
      expect(down.text).toMatch(
        /^PRE_INITIALIZING: worker 2: (restarting after it exited with signal SIGKILL|starting)\n$/,
      );
      expect(await get(outbound)).toEqual({ status: 200, body: 'hello from B' });
      const again = await proc.waitForLog(
        'Proxy worker forked',
        15_000,
        l => l.pid !== pids[1] && l.worker === 2,
      );
      await waitFor(async () => (await getText(`${admin}/ready`)).status === 200, {
        timeoutMs: 30_000,
        what: 'the primary /ready after the restart',
      });
      for (let i = 0; i < 10; i++)
        expect(await get(outbound)).toEqual({ status: 200, body: 'hello from B' });
      expect((await statsOf()).get('server.worker_restarts')).toBe(1);

      // SIGTERM: the workers drain and exit, then the primary, with exit code 0.
      const code = await proc.stop(20_000);
      expect(code).toBe(0);
      for (const pid of [pids[0] as number, again.pid as number]) expect(alive(pid)).toBe(false);
      expect(proc.logs('Proxy stopped').length).toBe(2);
      expect(proc.logs('Proxy primary stopped')).toHaveLength(1);
    } finally {
      await proc.stop();
    }
    expect(proc.stderr).toEqual([]);
  });

  it('stops at once when told to while its workers are still starting', async () => {
    const file = path.join(tmp.dir, 'proxy-early.yaml');
    fs.writeFileSync(
      file,
      proxyConfigYaml(
        { ...pair.hostA.options, adminListen: '127.0.0.1:0', metricsListen: '127.0.0.1:0' },
        { logLevel: 'info', concurrency: 2, shutdownGrace: '10s' },
      ),
    );
    const proc = new SailProcess(['proxy', '--config', file]);
    try {
      await proc.waitForLog('Proxy primary started');
      const t0 = Date.now();
      // The workers are still loading: they cannot hear the primary over IPC yet.
      expect(await proc.stop(20_000)).toBe(0);
      expect(Date.now() - t0).toBeLessThan(5_000);
      expect(proc.logs('Workers did not stop within the shutdown grace; killing them')).toEqual([]);
    } finally {
      await proc.stop();
    }
  });

  it('exits 1 without forking a worker when its admin port is taken', async () => {
    const taken = http.createServer();
    await new Promise<void>(r => taken.listen(0, '127.0.0.1', r));
    const port = (taken.address() as { port: number }).port;
    const file = path.join(tmp.dir, 'proxy-taken.yaml');
    fs.writeFileSync(
      file,
      proxyConfigYaml(
        { ...pair.hostA.options, adminListen: `127.0.0.1:${port}` },
        { logLevel: 'info', concurrency: 2 },
      ),
    );
    const proc = new SailProcess(['proxy', '--config', file]);
    try {
      await waitFor(() => proc.stderr.length > 0, { timeoutMs: 15_000, what: 'the error' });
      expect(await proc.stop()).toBe(1);
      expect(proc.stderr.join('\n')).toContain(
        `cannot listen on 127.0.0.1:${port} for the admin server: EADDRINUSE`,
      );
      expect(proc.logs('Proxy worker forked')).toEqual([]);
    } finally {
      await proc.stop();
      await new Promise(r => taken.close(r));
    }
  });

  it('refuses a bad --concurrency with exit 2, naming the flag', async () => {
    const file = path.join(tmp.dir, 'proxy-bad.yaml');
    fs.writeFileSync(file, proxyConfigYaml(pair.hostA.options));
    const r = await sail(['proxy', '--validate', '--config', file, '--concurrency', '-1']);
    expect(r.status).toBe(2);
    expect(r.stderr).toBe(
      'sail: --concurrency: want a number of worker processes from 0 to 256 (0: one per core)\n',
    );
  });
});
