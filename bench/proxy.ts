/**
 * Proxy benchmark (`npm run bench:proxy`): what two Sail proxies cost a request, against no proxy
 * and against the same pair built from Debian's nginx, in one run on loopback.
 *
 * Setups (BENCH_SETUPS, default "direct,nginx,sail,sail-h2"):
 *   direct    client → origin
 *   nginx     client → nginx A → mTLS → nginx B → origin (bench/proxy-nginx.ts)
 *   sail      client → `sail proxy` A → mTLS → `sail proxy` B → origin (explicit mode, config
 *             from a real in-process control plane, B registered as a workload)
 *             (the default `meshUpstreamProtocol: http1`: pooled HTTP/1.1 over mTLS between them)
 *   sail-h2   the same with `meshUpstreamProtocol: http2`: multiplexed HTTP/2 between the proxies
 *   sail-cN   the sail pair with `concurrency: N`: each proxy a primary and N worker processes
 *   sail-nginx-cN  `sail proxy` A with `concurrency: N` → mTLS → nginx B (the nginx pair's B):
 *             one Sail proxy alone, to see what worker processes give it when cores are free
 *   node-floor  client → A → mTLS → B → origin, where A and B are the least a Node.js process can
 *             do: bytes piped between one TLS and one TCP connection, no HTTP parsed
 *             (bench/proxy-node-floor.ts; same node flags as the Sail proxies). The runtime's
 *             share of what the Sail pair costs.
 * The origin is one nginx worker answering `return 200` with a BENCH_BODY-byte body (1 kB).
 *
 * Cores: the origin and the load generator share core 0; the two proxies of a pair share core 1
 * (taskset, when available). Every pair gets the same two processes on the same core.
 * BENCH_PIN=0 pins nothing: the question `sail-cN` answers is whether worker processes pay when
 * the proxies may use every core.
 *
 * Measurements, per setup:
 * - fixed rate: BENCH_RATE requests/s (1,000) for BENCH_DURATION s (20) after BENCH_WARMUP s (3)
 *   of the same load, open loop, with bench/proxy-load.c (compiled here with `cc`): request i is
 *   sent at exactly t0 + i/RATE on an idle keep-alive HTTP/1.1 connection of a pool of
 *   BENCH_RATE_CONNECTIONS (10); a request that finds none idle waits, and its latency still
 *   counts from its intended send time, so stalls are not hidden (no coordinated omission).
 *   wrk2 is not in Debian, and h2load's `--rps` sends in bursts (most requests within 0.1 ms of
 *   the previous one at 1,000 rps), which would measure queueing behind bursts. Reported: p50,
 *   p90, p99, p99.9 and max from the intended send time, what the pair adds to direct, and the
 *   p99 from the actual write ("service"); each proxy's CPU over the window from /proc/PID/stat
 *   (utime+stime of the process tree: nginx master+worker, node and its threads), in cores per
 *   1,000 requests/s; RSS after the window (VmRSS of the tree), and idle RSS: serving and
 *   configured, before the warm-up.
 * - the proxies run with the node agent's NODE_OPTIONS (DEFAULT_PROXY_NODE_OPTIONS);
 *   BENCH_PROXY_NODE_OPTIONS overrides them ('' for V8's defaults), BENCH_PROXY_NODE_ARGS adds
 *   node flags on the command line (they win over NODE_OPTIONS; not with BENCH_SAIL_BINARY, the
 *   single executable to run the proxies from instead of the build).
 * - maximum: wrk closed loop, 1 thread, BENCH_CONNECTIONS connections (16), BENCH_MAX_DURATION s
 *   (10): requests/s, and the proxies' CPU meanwhile.
 *
 * BENCH_OUT=FILE also writes the results as JSON.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  B_OUTBOUND_HOST,
  DEFAULT_OUTBOUND_HOST,
  DEFAULT_WORKLOAD_HOST,
  MeshControlPlane,
  pickPorts,
  proxyConfigYaml,
  proxyOptionsFor,
  registerWorkload,
  SERVICE_HOST,
  serviceEntry,
  writeIdentity,
} from '../test/helpers/proxy-pair';
import { freePort } from '../test/helpers/sail-process';
import { haveTaskset, pin, procStatus, SAIL_BINARY, SAIL_JS, sailCommand, TICKS } from './proc';
import { originConfig, pairAConfig, pairBConfig } from './proxy-nginx';
import { silentLogger } from '../common/logging';
import { DEFAULT_PROXY_NODE_OPTIONS } from '../node-agent/supervisor/self-command';

/**
 * NODE_OPTIONS of the Sail proxies: by default the node agent's (DEFAULT_PROXY_NODE_OPTIONS, 2 MB
 * semi-spaces), so the figures are those of a proxy the agent starts; BENCH_PROXY_NODE_OPTIONS=''
 * runs them with V8's defaults.
 */
const PROXY_NODE_OPTIONS = process.env.BENCH_PROXY_NODE_OPTIONS ?? DEFAULT_PROXY_NODE_OPTIONS;
/** Extra node flags for the Sail proxies, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof` to profile. */
const NODE_ARGS = (process.env.BENCH_PROXY_NODE_ARGS ?? '').split(' ').filter(Boolean);
const env = (k: string, d: number) => Number(process.env[k] ?? d);
const DURATION_S = env('BENCH_DURATION', 20);
const WARMUP_S = env('BENCH_WARMUP', 3);
const RATE = env('BENCH_RATE', 1000);
const RATE_CONNECTIONS = env('BENCH_RATE_CONNECTIONS', 10);
const MAX_DURATION_S = env('BENCH_MAX_DURATION', 10);
const MAX_CONNECTIONS = env('BENCH_CONNECTIONS', 16);
const BODY_BYTES = env('BENCH_BODY', 1024);
const SETUPS = (process.env.BENCH_SETUPS ?? 'direct,nginx,sail,sail-h2').split(',');
/** BENCH_PIN=0: nothing pinned, every process may use every core (for `sail-cN`). */
const PINNED = haveTaskset && process.env.BENCH_PIN !== '0';
const LOAD_CORE = PINNED ? 0 : undefined;
const PROXY_CORE = PINNED ? 1 : undefined;

/** `cmd args` on `core` (taskset), or as they are when unpinned. */
function onCore(core: number | undefined, cmd: string, args: string[]): [string, string[]] {
  return core === undefined ? [cmd, args] : pin(core, cmd, args);
}

const debug = (m: string) => {
  if (process.env.BENCH_DEBUG) console.error(`[bench] ${m}`);
};
const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Processes

/** Every pid of the tree under `pid` (nginx: master and worker), from /proc children lists. */
function treePids(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    const p = out[i]!;
    let children = '';
    try {
      for (const t of fs.readdirSync(`/proc/${p}/task`))
        children += ` ${fs.readFileSync(`/proc/${p}/task/${t}/children`, 'utf8')}`;
    } catch {
      continue; // gone meanwhile
    }
    for (const c of children.trim().split(/\s+/)) if (c) out.push(Number(c));
  }
  return out;
}

/** A child process of the benchmark, with its tree's CPU and memory. */
class Proc {
  readonly child: ChildProcess;
  readonly output: string[] = [];
  private readonly exited: Promise<void>;

  constructor(
    readonly name: string,
    cmd: string,
    args: string[],
    core: number | undefined,
    env: NodeJS.ProcessEnv = process.env,
  ) {
    const [c, a] = onCore(core, cmd, args);
    this.child = spawn(c, a, { stdio: ['ignore', 'pipe', 'pipe'], env });
    const keep = (b: Buffer) => {
      if (this.output.length < 2000) this.output.push(b.toString());
      if (process.env.BENCH_DEBUG) process.stderr.write(`[${name}] ${b.toString()}`);
    };
    this.child.stdout!.on('data', keep);
    this.child.stderr!.on('data', keep);
    this.exited = new Promise(r => this.child.once('exit', () => r()));
  }

  get pid(): number {
    return this.child.pid!;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** CPU ticks (user+system) of the whole tree. */
  cpuTicks(): number {
    return treePids(this.pid).reduce((s, p) => {
      try {
        return s + procStatus(p).cpuTicks;
      } catch {
        return s;
      }
    }, 0);
  }

  /** RSS, its anonymous part (not the shared node binary's pages) and peak RSS of the tree, MB. */
  memory(): { rssMb: number; anonMb: number; hwmMb: number } {
    return treePids(this.pid).reduce(
      (s, p) => {
        try {
          const st = procStatus(p);
          return {
            rssMb: s.rssMb + st.rssMb,
            anonMb: s.anonMb + st.anonMb,
            hwmMb: s.hwmMb + st.hwmMb,
          };
        } catch {
          return s;
        }
      },
      { rssMb: 0, anonMb: 0, hwmMb: 0 },
    );
  }

  async stop(): Promise<void> {
    if (!this.alive) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    await this.exited;
    clearTimeout(timer);
  }
}

/** Polls `url` (with `host` as the Host header, sent to `address`) until it answers 200. */
async function waitServing(address: string, host: string, what: string, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    const r = spawnSync(
      'curl',
      ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', `Host: ${host}`, `http://${address}/`],
      { encoding: 'utf8', timeout: 5_000 },
    );
    last = r.stdout;
    if (last === '200') return;
    if (Date.now() > deadline) throw new Error(`${what} did not answer 200 (last: ${last})`);
    await sleep(100);
  }
}

// ---------------------------------------------------------------------------------------------
// Load

interface Latency {
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
}

interface RateResult {
  sent: number;
  ok: number;
  errors: number;
  late: number;
  seconds: number;
  /** From the intended send time, µs. */
  latency: Latency;
  /** From the actual write, µs. */
  service: Latency;
}

/** Compiles the open-loop load generator into `dir`; returns its path. */
function buildLoadGenerator(dir: string): string {
  // build/bench/proxy.js reads the source in bench/; run from the sources it sits beside us.
  const src = [
    path.join(__dirname, 'proxy-load.c'),
    path.join(__dirname, '..', '..', 'bench', 'proxy-load.c'),
  ].find(f => fs.existsSync(f));
  if (!src) throw new Error('bench/proxy-load.c not found');
  const out = path.join(dir, 'proxy-load');
  const r = spawnSync('cc', ['-O2', '-Wall', '-o', out, src], { encoding: 'utf8' });
  if (r.status !== 0)
    throw new Error(`cannot compile ${src} (is a C compiler installed?): ${r.stderr}`);
  return out;
}

/** One open-loop run at the fixed rate (bench/proxy-load.c). */
function fixedRate(generator: string, target: Target, seconds: number): Promise<RateResult> {
  const [ip, port] = target.address.split(':') as [string, string];
  const [cmd, a] = onCore(LOAD_CORE, generator, [
    ip,
    port,
    target.host,
    '/',
    String(RATE),
    String(seconds),
    String(RATE_CONNECTIONS),
  ]);
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, a, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    child.once('exit', () => {
      const line = out.split('\n').find(l => l.startsWith('{'));
      if (!line) {
        reject(new Error(`load generator failed: ${out.slice(-2000)}`));
        return;
      }
      resolve(JSON.parse(line) as RateResult);
    });
    child.once('error', reject);
  });
}

/** One wrk run, closed loop: requests per second and errors. */
function wrk(target: Target): Promise<{ rps: number; errors: number; p99: string }> {
  const args = [
    '-t',
    '1',
    '-c',
    String(MAX_CONNECTIONS),
    '-d',
    `${MAX_DURATION_S}s`,
    '--latency',
    '-H',
    `Host: ${target.host}`,
    `http://${target.address}/`,
  ];
  const [cmd, a] = onCore(LOAD_CORE, 'wrk', args);
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, a, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    child.once('exit', code => {
      const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
      if (code !== 0 || !rps) {
        reject(new Error(`wrk failed (${code}): ${out}`));
        return;
      }
      const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
      const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
      const errors = non2xx + (sock ? sock.slice(1).reduce((s, x) => s + Number(x), 0) : 0);
      resolve({ rps: Number(rps[1]), errors, p99: /\s99%\s+(\S+)/.exec(out)?.[1] ?? '?' });
    });
    child.once('error', reject);
  });
}

// ---------------------------------------------------------------------------------------------
// Setups

interface Target {
  /** `IP:PORT` to connect to. */
  readonly address: string;
  /** The Host header. */
  readonly host: string;
}

interface Setup {
  readonly name: string;
  readonly target: Target;
  /** The proxy processes to measure (A then B); none for direct. */
  readonly proxies: Proc[];
  stop(): Promise<void>;
}

interface Context {
  readonly dir: string;
  readonly cp: MeshControlPlane;
  readonly port: number;
  readonly certs: { a: string; b: string };
}

/**
 * A pair whose A serves plain HTTP on 127.0.0.1:`portA`, once it answers; both stopped, and their
 * output in the error, when it does not.
 */
async function servingPair(name: string, a: Proc, b: Proc, portA: number): Promise<Setup> {
  const stop = async () => {
    await a.stop();
    await b.stop();
  };
  try {
    await waitServing(`127.0.0.1:${portA}`, SERVICE_HOST, `the ${name} pair`);
  } catch (err) {
    await stop();
    throw new Error(`${String(err)}\n${a.output.join('')}${b.output.join('')}`);
  }
  return {
    name,
    target: { address: `127.0.0.1:${portA}`, host: SERVICE_HOST },
    proxies: [a, b],
    stop,
  };
}

function nginx(name: string, dir: string, conf: string, core: number | undefined): Proc {
  const file = path.join(dir, `${name}.conf`);
  fs.writeFileSync(file, conf);
  return new Proc(
    name,
    'nginx',
    ['-c', file, '-p', dir, '-e', path.join(dir, `${name}-error.log`)],
    core,
  );
}

/** nginx's TLS files from a certificate directory in the node agent's layout. */
const nginxTls = (d: string) => ({
  certChain: path.join(d, 'cert-chain.pem'),
  key: path.join(d, 'key.pem'),
  roots: path.join(d, 'root-cert.pem'),
});

async function startNginxPair(ctx: Context): Promise<Setup> {
  const [portA, portB] = [await freePort(), await freePort()];
  const tls = nginxTls;
  const b = nginx(
    'nginx-b',
    ctx.dir,
    pairBConfig(ctx.dir, `127.0.0.1:${portB}`, `127.0.0.1:${ctx.port}`, tls(ctx.certs.b)),
    PROXY_CORE,
  );
  const a = nginx(
    'nginx-a',
    ctx.dir,
    pairAConfig(ctx.dir, `127.0.0.1:${portA}`, `127.0.0.1:${portB}`, 'vm-b', tls(ctx.certs.a)),
    PROXY_CORE,
  );
  return servingPair('nginx', a, b, portA);
}

/**
 * A pair of `sail proxy` processes with `extra` config keys; `nginxB`: B is nginx (as in the nginx
 * pair) on B's workload address, so that A is the only Node.js process of the pair.
 */
async function startSailPair(
  ctx: Context,
  name: string,
  extra: Record<string, unknown>,
  nginxB = false,
) {
  const hosts = {
    a: { node: 'vm-a', ip: DEFAULT_OUTBOUND_HOST, labels: { app: 'client', version: 'v1' } },
    b: { node: 'vm-b', ip: DEFAULT_WORKLOAD_HOST, labels: { app: 'server', version: 'v1' } },
  };
  const procs: Proc[] = [];
  const admins: string[] = [];
  for (const side of ['a', 'b'] as const) {
    const h = hosts[side];
    if (side === 'b' && nginxB) {
      const listen = `${h.ip}:${ctx.port}`;
      const conf = pairBConfig(ctx.dir, listen, `127.0.0.1:${ctx.port}`, nginxTls(ctx.certs.b));
      procs.push(nginx(`${name}-b`, ctx.dir, conf, PROXY_CORE));
      continue;
    }
    const adminPort = await freePort();
    const metricsPort = await freePort();
    const o = proxyOptionsFor({
      logger: silentLogger(),
      node: h.node,
      ip: h.ip,
      labels: h.labels,
      cp: ctx.cp,
      certsDir: ctx.certs[side],
      stateDir: fs.mkdtempSync(path.join(ctx.dir, `${name}-${side}-state-`)),
      outboundBindHost: side === 'a' ? DEFAULT_OUTBOUND_HOST : B_OUTBOUND_HOST,
      inboundBindHost: h.ip,
    });
    const file = path.join(ctx.dir, `${name}-${side}.yaml`);
    fs.writeFileSync(
      file,
      proxyConfigYaml(
        { ...o, adminListen: `127.0.0.1:${adminPort}`, metricsListen: `127.0.0.1:${metricsPort}` },
        // BENCH_ACCESS_LOG=1: access log lines on the proxies' stdout (shown with BENCH_DEBUG);
        // BENCH_PROXY_LOG_LEVEL (default warn): the proxies' log level.
        {
          logLevel: process.env.BENCH_PROXY_LOG_LEVEL ?? 'warn',
          ...(process.env.BENCH_ACCESS_LOG ? { accessLog: true } : {}),
          ...extra,
        },
      ),
    );
    admins.push(`127.0.0.1:${adminPort}`);
    const [sailFile, sailArgs] = sailCommand(NODE_ARGS);
    procs.push(
      new Proc(`sail-${side}`, sailFile, [...sailArgs, 'proxy', '--config', file], PROXY_CORE, {
        ...process.env,
        NODE_OPTIONS: PROXY_NODE_OPTIONS,
      }),
    );
  }
  const [a, b] = procs as [Proc, Proc];
  const stop = async () => {
    await a.stop();
    await b.stop();
  };
  const address = `${DEFAULT_OUTBOUND_HOST}:${ctx.port}`;
  try {
    await waitServing(address, `${SERVICE_HOST}:${ctx.port}`, `the ${name} pair`);
  } catch (err) {
    await stop();
    throw new Error(
      `${String(err)}\n${a.output.join('').slice(-3000)}${b.output.join('').slice(-3000)}`,
    );
  }
  debug(`${name} serving; admin ${admins.join(', ')}`);
  return {
    name,
    target: {
      address,
      host: `${SERVICE_HOST}:${ctx.port}`,
    },
    proxies: procs,
    stop,
  } satisfies Setup;
}

/** The Node.js floor (bench/proxy-node-floor.ts): TLS and TCP piped, no HTTP. */
async function startNodeFloorPair(ctx: Context): Promise<Setup> {
  const [portA, portB] = [await freePort(), await freePort()];
  const script = path.join(__dirname, 'proxy-node-floor.js');
  const side = (name: string, listen: string, upstream: string, certs: string) =>
    new Proc(
      `node-floor-${name}`,
      process.execPath,
      [...NODE_ARGS, script, name, listen, upstream, certs],
      PROXY_CORE,
      { ...process.env, NODE_OPTIONS: PROXY_NODE_OPTIONS },
    );
  const b = side('b', `127.0.0.1:${portB}`, `127.0.0.1:${ctx.port}`, ctx.certs.b);
  const a = side('a', `127.0.0.1:${portA}`, `127.0.0.1:${portB}`, ctx.certs.a);
  return servingPair('node-floor', a, b, portA);
}

// ---------------------------------------------------------------------------------------------
// The run

interface Result {
  setup: string;
  rate: RateResult;
  cpuPer1k: number[];
  /** RSS of each proxy serving but idle: configured, before the warm-up. */
  idleRssMb: number[];
  /** The anonymous part of idleRssMb (RssAnon: without the node binary's shared file pages). */
  idleAnonMb: number[];
  rssMb: number[];
  anonMb: number[];
  hwmMb: number[];
  max: { rps: number; errors: number; p99: string; cpu: number[] };
}

async function measure(generator: string, setup: Setup): Promise<Result> {
  // Idle: configured and serving (waitServing sent it a few requests), no load yet.
  await new Promise(r => setTimeout(r, 1000));
  const idle = setup.proxies.map(p => p.memory());
  debug(`${setup.name}: warm-up`);
  await fixedRate(generator, setup.target, WARMUP_S);
  const c0 = setup.proxies.map(p => p.cpuTicks());
  const t0 = performance.now();
  debug(`${setup.name}: fixed rate`);
  const rate = await fixedRate(generator, setup.target, DURATION_S);
  const seconds = (performance.now() - t0) / 1000;
  const rps = rate.ok / rate.seconds;
  const cores = setup.proxies.map((p, i) => (p.cpuTicks() - c0[i]!) / TICKS / seconds);
  const mem = setup.proxies.map(p => p.memory());
  debug(`${setup.name}: max`);
  const m0 = setup.proxies.map(p => p.cpuTicks());
  const mt0 = performance.now();
  const max = await wrk(setup.target);
  const mSeconds = (performance.now() - mt0) / 1000;
  return {
    setup: setup.name,
    rate,
    cpuPer1k: cores.map(c => (c * 1000) / rps),
    idleRssMb: idle.map(m => m.rssMb),
    idleAnonMb: idle.map(m => m.anonMb),
    rssMb: mem.map(m => m.rssMb),
    anonMb: mem.map(m => m.anonMb),
    hwmMb: mem.map(m => m.hwmMb),
    max: {
      ...max,
      cpu: setup.proxies.map((p, i) => (p.cpuTicks() - m0[i]!) / TICKS / mSeconds),
    },
  };
}

const f = (n: number, d = 2) => (Number.isFinite(n) ? n.toFixed(d) : '–');
const ms = (us: number) => f(us / 1000, 3);

function printResults(results: Result[]): void {
  const direct = results.find(r => r.setup === 'direct');
  const added = (r: Result, k: keyof Latency) =>
    direct && r !== direct ? `+${ms(r.rate.latency[k] - direct.rate.latency[k])}` : '';
  console.log(
    `\nFixed rate ${RATE} rps, open loop (latency in ms from the intended send time; CPU in cores per 1,000 rps; RSS in MB)`,
  );
  console.table(
    results.map(r => ({
      setup: r.setup,
      ok: r.rate.ok,
      errors: r.rate.errors,
      late: r.rate.late,
      p50: ms(r.rate.latency.p50),
      p90: ms(r.rate.latency.p90),
      p99: ms(r.rate.latency.p99),
      'p99.9': ms(r.rate.latency.p999),
      max: ms(r.rate.latency.max),
      'added p50': added(r, 'p50'),
      'added p90': added(r, 'p90'),
      'added p99': added(r, 'p99'),
      'service p99': ms(r.rate.service.p99),
      'CPU A/1k': f(r.cpuPer1k[0] ?? NaN, 3),
      'CPU B/1k': f(r.cpuPer1k[1] ?? NaN, 3),
      'RSS A': f(r.rssMb[0] ?? NaN, 1),
      'RSS B': f(r.rssMb[1] ?? NaN, 1),
    })),
  );
  console.log('\nProxy memory, MB (RSS, and its anonymous part: without the shared node binary)');
  console.table(
    results
      .filter(r => r.idleRssMb.length > 0)
      .map(r => ({
        setup: r.setup,
        'idle RSS A / B': `${f(r.idleRssMb[0] ?? NaN, 1)} / ${f(r.idleRssMb[1] ?? NaN, 1)}`,
        'idle anon A / B': `${f(r.idleAnonMb[0] ?? NaN, 1)} / ${f(r.idleAnonMb[1] ?? NaN, 1)}`,
        [`${RATE} rps RSS A / B`]: `${f(r.rssMb[0] ?? NaN, 1)} / ${f(r.rssMb[1] ?? NaN, 1)}`,
        [`${RATE} rps anon A / B`]: `${f(r.anonMb[0] ?? NaN, 1)} / ${f(r.anonMb[1] ?? NaN, 1)}`,
        'peak RSS A / B': `${f(r.hwmMb[0] ?? NaN, 1)} / ${f(r.hwmMb[1] ?? NaN, 1)}`,
      })),
  );
  console.log(`\nMaximum (wrk, 1 thread, ${MAX_CONNECTIONS} connections, ${MAX_DURATION_S} s)`);
  console.table(
    results.map(r => ({
      setup: r.setup,
      'requests/s': f(r.max.rps, 0),
      errors: r.max.errors,
      'wrk p99': r.max.p99,
      'CPU A (cores)': f(r.max.cpu[0] ?? NaN, 2),
      'CPU B (cores)': f(r.max.cpu[1] ?? NaN, 2),
      'peak RSS A': f(r.hwmMb[0] ?? NaN, 1),
      'peak RSS B': f(r.hwmMb[1] ?? NaN, 1),
    })),
  );
}

async function main(): Promise<void> {
  for (const tool of ['cc', 'wrk', 'nginx', 'curl'])
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0)
      throw new Error(`${tool} is not installed (apt-get install gcc wrk nginx-light curl)`);
  const nginxVersion = spawnSync('nginx', ['-v'], { encoding: 'utf8' }).stderr.trim();
  console.log(
    `Proxy benchmark: ${RATE} rps for ${DURATION_S} s (after ${WARMUP_S} s warm-up) over ${RATE_CONNECTIONS} connections, then wrk ${MAX_CONNECTIONS} connections for ${MAX_DURATION_S} s; ${BODY_BYTES}-byte responses; setups ${SETUPS.join(', ')}`,
  );
  console.log(
    `Machine: ${os.cpus().length} × ${os.cpus()[0]?.model ?? '?'}, Node ${process.version}, ${nginxVersion}; pinned: ${PINNED ? `origin+load on core ${LOAD_CORE}, proxies on core ${PROXY_CORE}` : haveTaskset ? 'no (BENCH_PIN=0)' : 'no (taskset missing)'}`,
  );
  console.log(
    `Sail proxies: ${SAIL_BINARY ?? SAIL_JS}, NODE_OPTIONS=${JSON.stringify(PROXY_NODE_OPTIONS)}${NODE_ARGS.length > 0 && !SAIL_BINARY ? `, node ${NODE_ARGS.join(' ')}` : ''}`,
  );
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sail-bench-proxy-'));
  fs.chmodSync(dir, 0o755);
  const cleanups: (() => Promise<void> | void)[] = [
    () => fs.rmSync(dir, { recursive: true, force: true }),
  ];
  const results: Result[] = [];
  try {
    const generator = buildLoadGenerator(dir);
    const cp = await MeshControlPlane.start({
      logger: silentLogger(),
      dataDir: path.join(dir, 'cp'),
    });
    cleanups.push(() => cp.close());
    const ports = await pickPorts();
    const certs = { a: path.join(dir, 'vm-a-certs'), b: path.join(dir, 'vm-b-certs') };
    const idA = await cp.enroll('vm-a', 'client');
    const idB = await cp.enroll('vm-b', 'server');
    await writeIdentity(certs.a, idA);
    await writeIdentity(certs.b, idB);
    await cp.apply([serviceEntry(ports)]);
    const registration = registerWorkload(cp, {
      node: 'vm-b',
      serviceAccount: 'server',
      identity: idB,
      address: DEFAULT_WORKLOAD_HOST,
      labels: { app: 'server', version: 'v1' },
      ports,
    });
    cleanups.push(() => registration.close());
    await registration.start();

    const origin = nginx(
      'origin',
      dir,
      originConfig(dir, `127.0.0.1:${ports.http}`, BODY_BYTES),
      LOAD_CORE,
    );
    cleanups.push(() => origin.stop());
    await waitServing(`127.0.0.1:${ports.http}`, 'origin', 'the origin');
    const ctx: Context = { dir, cp, port: ports.http, certs };

    for (const name of SETUPS) {
      let setup: Setup;
      try {
        if (name === 'direct')
          setup = {
            name,
            target: {
              address: `127.0.0.1:${ports.http}`,
              host: `127.0.0.1:${ports.http}`,
            },
            proxies: [],
            stop: async () => {},
          };
        else if (name === 'nginx') setup = await startNginxPair(ctx);
        else if (name === 'sail') setup = await startSailPair(ctx, name, {});
        else if (name === 'node-floor') setup = await startNodeFloorPair(ctx);
        else if (name === 'sail-h2')
          setup = await startSailPair(ctx, name, { meshUpstreamProtocol: 'http2' });
        else if (/^sail-c\d+$/.test(name))
          setup = await startSailPair(ctx, name, { concurrency: Number(name.slice(6)) });
        else if (/^sail-nginx-c\d+$/.test(name))
          setup = await startSailPair(ctx, name, { concurrency: Number(name.slice(12)) }, true);
        else throw new Error(`unknown setup ${name}`);
      } catch (err) {
        console.log(`setup ${name} skipped: ${err instanceof Error ? err.message : String(err)}`);
        continue;
      }
      try {
        const r = await measure(generator, setup);
        results.push(r);
        debug(JSON.stringify(r));
      } catch (err) {
        console.log(`setup ${name} failed: ${err instanceof Error ? err.message : String(err)}`);
      } finally {
        await setup.stop();
      }
    }
    printResults(results);
    if (process.env.BENCH_OUT)
      fs.writeFileSync(process.env.BENCH_OUT, JSON.stringify(results, null, 2));
  } finally {
    for (const c of cleanups.reverse()) {
      try {
        await c();
      } catch (err) {
        console.error(err);
      }
    }
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
