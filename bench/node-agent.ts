/**
 * Node agent benchmark (`npm run bench:agent`): the agent's own memory and CPU at rest and during
 * certificate rotation, and the time from `sail node-agent` start to a host serving mesh traffic.
 *
 * A real `sail control-plane` runs on loopback. The agent joins with a token (`sail token
 * create`), runs everything it runs on a VM — identity, registration with a TCP health probe,
 * the supervised proxy, the DNS server and its name table, the proxyless xDS relay — except
 * iptables capture (`capture.mode: none`, so the proxy runs in explicit mode and the benchmark
 * needs no root or network namespace). Figures are the agent process's own (its proxy child is
 * reported apart):
 *
 * - ready: from spawn to `/healthz/ready` answering 200 (identity, proxy ready), for a first start
 *   (join token, certificate from the CA), a restart (certificate on disk), and a restart with the
 *   control plane stopped (certificate and proxy config from disk);
 * - at rest: RSS and CPU over BENCH_REST_SECONDS (default 30) once ready;
 * - rotation: with `certs.ttl: 12s` (renewed about every 6 s), CPU, RSS and peak RSS over
 *   BENCH_ROTATION_SECONDS (default 30), and the rotations counted.
 *
 * The peers are published figures, not run here: Istio 0.2's Go node agent ran in about 6 MB,
 * a Consul client agent about 87 MB (shared/reference/peers.md).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { procStatus, sailCommand, TICKS } from './proc';

/** Everything (control plane, agent, and so its proxy) from the build or BENCH_SAIL_BINARY. */
const SAIL_CMD = sailCommand();
const REST_S = Number(process.env.BENCH_REST_SECONDS ?? 30);
const ROTATION_S = Number(process.env.BENCH_ROTATION_SECONDS ?? 30);
const DEBUG = Boolean(process.env.BENCH_DEBUG);

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms));
}

function get(port: number, p: string): Promise<{ status: number; body: string }> {
  return new Promise(resolve => {
    const req = http.get({ host: '127.0.0.1', port, path: p, timeout: 1000 }, res => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve({ status: 0, body: '' }));
  });
}

function run(args: string[]): string {
  const r = spawnSync(SAIL_CMD[0], [...SAIL_CMD[1], ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`sail ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout.trim();
}

function start(args: string[], name: string): ChildProcess {
  const p = spawn(SAIL_CMD[0], [...SAIL_CMD[1], ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  for (const s of [p.stdout!, p.stderr!])
    s.on('data', (c: Buffer) => {
      if (DEBUG)
        for (const l of c.toString().split('\n'))
          if (/"level":"(warn|error|fatal)"/.test(l)) process.stderr.write(`[${name}] ${l}\n`);
    });
  return p;
}

async function stop(p: ChildProcess): Promise<number> {
  const t0 = performance.now();
  if (p.exitCode !== null || p.signalCode !== null) return 0;
  const exited = new Promise<void>(resolve => p.once('exit', () => resolve()));
  p.kill('SIGTERM');
  await exited;
  return performance.now() - t0;
}

async function waitReady(port: number, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if ((await get(port, '/healthz/ready')).status === 200) return;
    await sleep(10);
  }
  throw new Error(`agent not ready within ${timeoutMs} ms`);
}

/** The proxy child of the agent (its `sail proxy` process). */
function childPid(parent: number): number | undefined {
  const r = spawnSync('pgrep', ['-P', String(parent)], { encoding: 'utf8' });
  const pid = Number(r.stdout.trim().split('\n')[0]);
  return Number.isFinite(pid) && pid > 0 ? pid : undefined;
}

function metric(text: string, name: string): number {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

interface Window {
  cpuMsPerS: number;
  rssMb: number;
  anonMb: number;
  fileMb: number;
  pssMb: number;
  hwmMb: number;
  proxyRssMb: number;
}

async function measure(pid: number, seconds: number): Promise<Window> {
  const a = procStatus(pid);
  const t0 = performance.now();
  await sleep(seconds * 1000);
  const b = procStatus(pid);
  const elapsedS = (performance.now() - t0) / 1000;
  const proxy = childPid(pid);
  return {
    cpuMsPerS: (((b.cpuTicks - a.cpuTicks) / TICKS) * 1000) / elapsedS,
    rssMb: b.rssMb,
    anonMb: b.anonMb,
    fileMb: b.fileMb,
    pssMb: b.pssMb,
    hwmMb: b.hwmMb,
    proxyRssMb: proxy ? procStatus(proxy).rssMb : 0,
  };
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sail-bench-agent-'));
  const caPort = await freePort();
  const pilotPort = await freePort();
  const statusPort = await freePort();
  const dnsPort = await freePort();
  const adminPort = await freePort();
  const dataDir = path.join(dir, 'cp');
  const cpArgs = [
    'control-plane',
    '--data-dir',
    dataDir,
    '--ca-listen',
    `127.0.0.1:${caPort}`,
    '--pilot-listen',
    `127.0.0.1:${pilotPort}`,
    '--admin-listen',
    '',
  ];
  let cp = start(cpArgs, 'control-plane');
  const server = `unix://${dataDir}/admin.sock`;
  for (let i = 0; i < 600 && !fs.existsSync(`${dataDir}/admin.sock`); i++) await sleep(50);
  await sleep(200);

  const host = path.join(dir, 'vm');
  fs.mkdirSync(host);
  fs.writeFileSync(
    path.join(host, 'join-token'),
    run(['token', 'create', '--server', server, '--node', 'bench-vm', '--sa', 'default/bench']),
    { mode: 0o600 },
  );
  fs.copyFileSync(path.join(dataDir, 'root-cert.pem'), path.join(host, 'root-cert.pem'));
  // An application for the health probe.
  const app = net.createServer(s => s.end()).listen(0, '127.0.0.1');
  await new Promise(resolve => app.once('listening', resolve));
  const appPort = (app.address() as net.AddressInfo).port;
  const root = process.getuid?.() === 0;
  const config = (ttl: string) => `
nodeName: bench-vm
controlPlane:
  caAddress: 127.0.0.1:${caPort}
  pilotAddress: 127.0.0.1:${pilotPort}
  mixerAddress: 127.0.0.1:9091
  rootCertFile: root-cert.pem
  tokenFile: join-token
workload:
  namespace: default
  serviceAccount: bench
  labels: { app: bench, version: v1 }
  ports: [ { name: http, port: ${appPort} } ]
  address: 127.0.0.1
  health: { tcp: { port: ${appPort} }, intervalSeconds: 5 }
certs: { dir: certs, ttl: ${ttl} }
stateDir: state
runDir: run
capture: { mode: none }
dns: { listen: 127.0.0.1:${dnsPort}, upstreams: [127.0.0.1:1] }
proxy: { user: ${root ? 'root' : os.userInfo().username}, adminListen: 127.0.0.1:${adminPort} }
status: { listen: 127.0.0.1:${statusPort} }
logLevel: warn
`;
  const configFile = path.join(host, 'node-agent.yaml');
  const startAgent = async (ttl: string): Promise<{ proc: ChildProcess; readyMs: number }> => {
    fs.writeFileSync(configFile, config(ttl));
    const t0 = performance.now();
    const proc = start(['node-agent', '--config', configFile], 'agent');
    await waitReady(statusPort);
    return { proc, readyMs: performance.now() - t0 };
  };

  const rows: [string, string][] = [];
  const fmt = (n: number, d = 0) => n.toFixed(d);

  // 1. First start: token → certificate → proxy ready.
  let agent = await startAgent('24h');
  rows.push(['ready, first start (join token, CA)', `${fmt(agent.readyMs)} ms`]);
  await sleep(2000);

  // 2. At rest.
  const rest = await measure(agent.proc.pid!, REST_S);
  rows.push(['RSS at rest (agent)', `${fmt(rest.rssMb, 1)} MB`]);
  rows.push([
    'RSS at rest (agent): anonymous / file-backed; PSS',
    `${fmt(rest.anonMb, 1)} / ${fmt(rest.fileMb, 1)} MB; ${fmt(rest.pssMb, 1)} MB`,
  ]);
  rows.push(['CPU at rest (agent)', `${fmt(rest.cpuMsPerS, 2)} ms/s`]);
  rows.push(['RSS at rest (its proxy)', `${fmt(rest.proxyRssMb, 1)} MB`]);
  rows.push(['stop (deregister, proxy drained)', `${fmt(await stop(agent.proc))} ms`]);

  // 3. Restart with the certificate on disk.
  agent = await startAgent('24h');
  rows.push(['ready, restart (certificate on disk)', `${fmt(agent.readyMs)} ms`]);
  await stop(agent.proc);

  // 4. Restart with the control plane down.
  await stop(cp);
  agent = await startAgent('24h');
  rows.push(['ready, restart with the control plane down', `${fmt(agent.readyMs)} ms`]);
  await stop(agent.proc);
  cp = start(cpArgs, 'control-plane');
  await sleep(1500);

  // 5. Rotation every ~6 s: a new certificate with the short lifetime first (the one on disk
  //    lives 24 h), so a fresh token.
  fs.rmSync(path.join(host, 'certs'), { recursive: true, force: true });
  fs.writeFileSync(
    path.join(host, 'join-token'),
    run(['token', 'create', '--server', server, '--node', 'bench-vm', '--sa', 'default/bench']),
    { mode: 0o600 },
  );
  agent = await startAgent('12s');
  const before = metric(
    (await get(statusPort, '/metrics')).body,
    'sail_agent_cert_rotations_total',
  );
  const rot = await measure(agent.proc.pid!, ROTATION_S);
  const rotations =
    metric((await get(statusPort, '/metrics')).body, 'sail_agent_cert_rotations_total') - before;
  rows.push([
    `rotation (${rotations} certificates in ${ROTATION_S} s): CPU`,
    `${fmt(rot.cpuMsPerS, 2)} ms/s`,
  ]);
  rows.push(['rotation: RSS / peak RSS (agent)', `${fmt(rot.rssMb, 1)} / ${fmt(rot.hwmMb, 1)} MB`]);
  await stop(agent.proc);
  await stop(cp);
  app.close();

  const width = Math.max(...rows.map(r => r[0].length));
  process.stdout.write(
    `Node agent (node ${process.version}, ${os.cpus().length} cores; capture off, proxy in explicit mode)\n`,
  );
  for (const [k, v] of rows) process.stdout.write(`  ${k.padEnd(width)}  ${v}\n`);
  process.stdout.write(
    '  targets: RSS <= 40 MB (Istio 0.2 Go node agent ~6 MB, Consul client ~87 MB); ready <= 2 s\n',
  );
  fs.rmSync(dir, { recursive: true, force: true });
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:agent failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
