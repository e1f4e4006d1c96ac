/**
 * xDS benchmark (`npm run bench:xds`): configuration convergence and pilot's cost per client.
 *
 * The real `sail control-plane` runs pinned to core 0 with the BookInfo-shaped mesh of
 * BENCH_SERVICES services (default 20, each with 3 subsets and a VirtualService). A child process
 * pinned to core 1 (bench/xds-clients.ts) connects N simulated sidecars over ADS (the plaintext
 * xDS listener, so that 10,000 clients do not need 10,000 certificates; the mTLS path differs only
 * in the handshake at connect time), each subscribing like Envoy and ACKing everything.
 *
 * For each N in BENCH_CLIENTS (default "1000,5000,10000"):
 * - connect: time until every client has ACKed CDS, EDS, LDS and RDS;
 * - memory: pilot's RSS and V8 heap with N clients, minus with none, per client;
 * - convergence: a VirtualService change is applied through the admin API (what `sail apply`
 *   calls), and the time until every client has ACKed the new routes is taken (p50, p99, max),
 *   with pilot's CPU over that window. Repeated BENCH_ROUNDS times (default 3).
 */
import { type ChildProcess, fork, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { AdminClient } from '../cli/admin-client';
import { haveTaskset, pin, procStatus, TICKS } from './proc';

const SAIL = path.join(__dirname, '..', 'cli', 'sail.js');
const CLIENTS = (process.env.BENCH_CLIENTS ?? '1000,5000,10000').split(',').map(Number);
const SERVICES = Number(process.env.BENCH_SERVICES ?? 20);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);

function mesh(round: number): unknown[] {
  const docs: unknown[] = [];
  for (let i = 0; i < SERVICES; i++) {
    const host = `svc-${i}.default.svc.cluster.local`;
    docs.push(
      {
        apiVersion: 'networking.istio.io/v1',
        kind: 'ServiceEntry',
        metadata: { name: `svc-${i}`, namespace: 'default' },
        spec: {
          hosts: [host],
          location: 'MESH_INTERNAL',
          resolution: 'STATIC',
          ports: [{ number: 9080, name: 'http', protocol: 'HTTP' }],
          endpoints: [1, 2, 3].map(v => ({
            address: `10.1.${i}.${v}`,
            labels: { app: `svc-${i}`, version: `v${v}` },
          })),
        },
      },
      {
        apiVersion: 'networking.istio.io/v1',
        kind: 'DestinationRule',
        metadata: { name: `svc-${i}`, namespace: 'default' },
        spec: {
          host,
          subsets: [1, 2, 3].map(v => ({ name: `v${v}`, labels: { version: `v${v}` } })),
        },
      },
      {
        apiVersion: 'networking.istio.io/v1',
        kind: 'VirtualService',
        metadata: { name: `svc-${i}`, namespace: 'default' },
        spec: {
          hosts: [host],
          http: [
            {
              timeout: `${i === 0 ? 1 + round : 5}s`,
              route: [
                { destination: { host, subset: 'v1' }, weight: 80 },
                { destination: { host, subset: 'v2' }, weight: 20 },
              ],
            },
          ],
        },
      },
    );
  }
  return docs;
}

async function apply(admin: AdminClient, docs: unknown[]): Promise<void> {
  await admin.request('POST', '/v1/config/apply', {
    documents: docs.map((raw, index) => ({ source: 'bench', index, raw })),
  });
}

async function startPilot(dataDir: string): Promise<{ proc: ChildProcess; xds: string }> {
  const profile = process.env.BENCH_PILOT_PROFILE_DIR
    ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_PILOT_PROFILE_DIR]
    : [];
  const [cmd, args] = pin(0, process.execPath, [
    ...profile,
    SAIL,
    'control-plane',
    '--data-dir',
    dataDir,
    '--ca-listen',
    '127.0.0.1:0',
    '--pilot-listen',
    '127.0.0.1:0',
    '--xds-plaintext-listen',
    '127.0.0.1:0',
    '--admin-listen',
    '',
    '--log-level',
    process.env.BENCH_DEBUG ? 'debug' : 'info',
  ]);
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  let buf = '';
  const xds = await new Promise<string>((resolve, reject) => {
    proc.stdout!.on('data', (c: Buffer) => {
      buf += c.toString();
      if (process.env.BENCH_DEBUG)
        for (const l of c.toString().split('\n'))
          if (/"level":"(debug|warn|error)"/.test(l) && !/xDS client connected/.test(l))
            process.stderr.write(`[pilot] ${l.slice(0, 400)}\n`);
      const m = /"address":"([^"]+)","msg":"Pilot xDS plaintext listener/.exec(buf);
      if (m) resolve(m[1]!);
    });
    proc.once('exit', code => reject(new Error(`control plane exited (${code})`)));
  });
  proc.stdout!.resume();
  const sock = path.join(dataDir, 'admin.sock');
  for (let i = 0; i < 200 && !fs.existsSync(sock); i++) await new Promise(r => setTimeout(r, 50));
  return { proc, xds };
}

function waitFor<T>(child: ChildProcess, event: string, timeoutMs = 300_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no ${event} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const on = (m: { event: string; message?: string } & T) => {
      if (m.event === 'error') {
        process.stderr.write(`client error: ${m.message}\n`);
        return;
      }
      if (m.event !== event) return;
      clearTimeout(timer);
      child.off('message', on);
      resolve(m);
    };
    child.on('message', on);
  });
}

const q = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? NaN;

const debug = (m: string) => {
  if (process.env.BENCH_DEBUG) console.error(`[bench] ${m}`);
};

async function main(): Promise<void> {
  if (haveTaskset) spawnSync('taskset', ['-pc', '1', String(process.pid)], { stdio: 'ignore' });
  console.log(
    `xDS benchmark: ${SERVICES} services (3 subsets, 80/20 routes), clients ${CLIENTS.join(', ')}, ${ROUNDS} rounds; pilot pinned to one core: ${haveTaskset ? 'yes' : 'no'}`,
  );
  const rows: Record<string, string | number>[] = [];
  for (const n of CLIENTS) {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sail-bench-xds-'));
    debug('starting control plane');
    const { proc, xds } = await startPilot(dataDir);
    debug(`pilot xDS at ${xds}`);
    const pid = proc.pid!;
    const admin = new AdminClient({ server: `unix://${dataDir}/admin.sock`, adminDir: '' });
    await apply(admin, mesh(0));
    debug('applied the mesh');
    await new Promise(r => setTimeout(r, 1500));
    const base = procStatus(pid);
    const child = fork(path.join(__dirname, 'xds-clients.js'), [], {
      execArgv: ['--max-old-space-size=8192'],
    });
    if (haveTaskset) spawnSync('taskset', ['-pc', '1', String(child.pid)], { stdio: 'ignore' });
    try {
      await waitFor(child, 'ready');
      debug('clients ready');
      child.send({ cmd: 'connect', n, address: xds });
      const synced = await waitFor<{ ms: number }>(child, 'synced');
      debug(`synced in ${synced.ms} ms`);
      await new Promise(r => setTimeout(r, 2000));
      const loaded = procStatus(pid);
      const perClientKb = ((loaded.rssMb - base.rssMb) * 1024) / n;
      const lat: number[][] = [];
      const cpu: number[] = [];
      const clientCpu: number[] = [];
      for (let round = 1; round <= ROUNDS; round++) {
        child.send({ cmd: 'mark' });
        await waitFor(child, 'marked');
        const c0 = procStatus(pid).cpuTicks;
        const l0 = procStatus(child.pid!).cpuTicks;
        const t0 = performance.now();
        const converged = waitFor<{ latencies: number[] }>(child, 'converged');
        await apply(admin, mesh(round));
        const { latencies } = await converged;
        const seconds = (performance.now() - t0) / 1000;
        cpu.push((procStatus(pid).cpuTicks - c0) / TICKS / seconds);
        clientCpu.push((procStatus(child.pid!).cpuTicks - l0) / TICKS / seconds);
        lat.push(latencies.sort((a, b) => a - b));
        await new Promise(r => setTimeout(r, 1000));
      }
      const p50 = lat.map(l => q(l, 0.5));
      const p99 = lat.map(l => q(l, 0.99));
      const max = lat.map(l => l[l.length - 1] ?? NaN);
      const med = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
      rows.push({
        clients: n,
        'connect+sync s': (synced.ms / 1000).toFixed(2),
        'converge p50 ms': Math.round(med(p50)),
        'converge p99 ms': Math.round(med(p99)),
        'converge max ms': Math.round(med(max)),
        'p99 runs ms': p99.map(Math.round).join('/'),
        'pilot CPU during push (cores)': med(cpu).toFixed(2),
        'load CPU (cores)': med(clientCpu).toFixed(2),
        'pilot RSS MB': loaded.rssMb.toFixed(0),
        'RSS per client KB': perClientKb.toFixed(1),
      });
      console.table([rows[rows.length - 1]]);
    } finally {
      child.send({ cmd: 'close' });
      await new Promise(r => child.once('exit', r));
      proc.kill('SIGTERM');
      await new Promise(r => proc.once('exit', r));
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }
  console.log('\nSummary');
  console.table(rows);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
