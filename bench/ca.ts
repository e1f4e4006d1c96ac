/**
 * CA benchmark (`npm run bench:ca`): CreateCertificate signatures per second over gRPC/TLS with
 * many concurrent clients, for an ECDSA P-256 and an RSA-2048 CA key, plus the CA's memory.
 *
 * The CA is the real `sail ca` process pinned to core 0 (`taskset -c 0`) so "per core" is what
 * is measured; the load comes from this process pinned to core 1. Each simulated host has its own
 * node entry and certificate and renews with it over mTLS (the steady-state path), so the fair
 * queue sees many callers as it would in a fleet.
 *
 * With BENCH_ECHO=1 (the default) each in-flight setting also runs a grpc-js echo server in
 * place of the CA: the same proto, TLS with client certificates, server options and core, the
 * same clients, but a handler that answers with a fixed chain of the same size. That is the
 * transport's ceiling: what the CA could reach if signing cost nothing.
 *
 * Flags (env): BENCH_SECONDS (default 10), BENCH_HOSTS (default 64), BENCH_INFLIGHT per host,
 * a list (default "2,8"), BENCH_ALGS (default "ec-p256,rsa-2048"), BENCH_CA_PROFILE_DIR (write a V8 CPU profile
 * of the CA there), BENCH_CA_NODE_FLAGS (extra Node flags for the CA process, space-separated, e.g.
 * "--perf-basic-prof" for `perf record`).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import * as crypto from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { type CertificateAuthorityHandlers, loadCaProto } from '../api';
import { AdminClient } from '../cli/admin-client';
import { haveTaskset, pin, procStatus, TICKS } from './proc';
import { serverCredentials, StaticCertificateProvider } from '../common/grpc';
import {
  createCertificate,
  generateKey,
  Oid,
  parseCertificatesPem,
  parseCertificate,
  privateKeyToPem,
  randomSerial,
  toPem,
} from '../common/pki';
import { makeCsr, TestCaClient } from '../test/helpers/ca-client';

const SAIL = path.join(__dirname, '..', 'cli', 'sail.js');
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const HOSTS = Number(process.env.BENCH_HOSTS ?? 64);
const INFLIGHTS = (process.env.BENCH_INFLIGHT ?? '2,8').split(',').map(Number);
const ALGS = (process.env.BENCH_ALGS ?? 'ec-p256,rsa-2048').split(',').filter(Boolean);
const ECHO = (process.env.BENCH_ECHO ?? '1') === '1';

async function startCa(
  dataDir: string,
  alg: string,
): Promise<{ proc: ChildProcess; address: string }> {
  const profile = process.env.BENCH_CA_PROFILE_DIR
    ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_CA_PROFILE_DIR]
    : [];
  const extra = (process.env.BENCH_CA_NODE_FLAGS ?? '').split(' ').filter(Boolean);
  const [cmd, args] = pin(0, process.execPath, [
    ...profile,
    ...extra,
    SAIL,
    'ca',
    '--data-dir',
    dataDir,
    '--listen',
    '127.0.0.1:0',
    '--admin-listen',
    '',
    '--root-key-algorithm',
    alg,
    '--log-level',
    'warn',
  ]);
  // Logs at warn keep per-request lines (info) out of the measurement; readiness is read from the admin socket.
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const sock = path.join(dataDir, 'admin.sock');
  for (let i = 0; i < 200 && !fs.existsSync(sock); i++) await new Promise(r => setTimeout(r, 50));
  if (!fs.existsSync(sock)) throw new Error('CA did not start');
  readline
    .createInterface({ input: proc.stdout as NodeJS.ReadableStream })
    .on('line', () => undefined);
  const address = await findPort(proc.pid as number);
  return { proc, address };
}

/** The CA's listening port, from /proc (the CA logs it at info, which the benchmark silences). */
async function findPort(pid: number): Promise<string> {
  for (let i = 0; i < 100; i++) {
    const r = spawnSync('ss', ['-ltnpH'], { encoding: 'utf8' });
    const line = r.stdout
      .split('\n')
      .find(l => l.includes(`pid=${pid},`) && l.includes('127.0.0.1:'));
    const m = line && /127\.0\.0\.1:(\d+)/.exec(line);
    if (m) return `127.0.0.1:${m[1]}`;
    await new Promise(res => setTimeout(res, 50));
  }
  throw new Error('could not find the CA port (is iproute2 installed?)');
}

async function createToken(dataDir: string, node: string): Promise<string> {
  const client = new AdminClient({ server: `unix://${dataDir}/admin.sock`, adminDir: '' });
  const res = await client.request<{ token: string }>('POST', '/v1/tokens', {
    node,
    serviceAccounts: ['default/bench'],
  });
  return res.token;
}

/** The CA process is the child of taskset when pinned; find the node process itself. */
function caPid(proc: ChildProcess): number {
  return proc.pid as number; // taskset execs the command, so the pid is the node process
}

/**
 * The echo server (`node build/bench/ca.js --echo-server DATA_DIR`): serves CertificateAuthority
 * with a serving certificate from the CA's root in DATA_DIR, the CA's server options and TLS
 * mode, and answers CreateCertificate with a fixed two-certificate chain. Prints its port.
 */
async function echoServer(dataDir: string): Promise<void> {
  const rootPem = fs.readFileSync(path.join(dataDir, 'ca', 'root-cert.pem'), 'utf8');
  const rootKey = crypto.createPrivateKey(
    fs.readFileSync(path.join(dataDir, 'ca', 'root-key.pem'), 'utf8'),
  );
  const root = parseCertificate(parseCertificatesPem(rootPem)[0] as Buffer);
  const key = await generateKey('ec-p256');
  const now = Date.now();
  const leaf = createCertificate(
    {
      serial: randomSerial(),
      subject: [
        [Oid.organization, 'cluster.local'],
        [Oid.commonName, os.hostname()],
      ],
      publicKeySpki: crypto.createPublicKey(key).export({ type: 'spki', format: 'der' }),
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 3600_000),
      isCa: false,
      sans: { uris: ['spiffe://cluster.local/ns/sail-system/sa/sail-control-plane'] },
    },
    { key: rootKey, subjectDer: root.subjectDer, keyId: root.subjectKeyId as Buffer },
  );
  const leafPem = toPem('CERTIFICATE', leaf);
  const provider = new StaticCertificateProvider(rootPem, leafPem, privateKeyToPem(key));
  // The same options as ca/ca.ts.
  const server = new grpc.Server({
    'grpc.max_receive_message_length': 64 * 1024,
    'grpc.keepalive_time_ms': 60_000,
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.enable_channelz': 0,
  });
  const reply = {
    certChain: [leafPem, rootPem],
    spiffeId: 'spiffe://cluster.local/ns/default/sa/bench',
    node: 'host-0',
  };
  const handlers: CertificateAuthorityHandlers = {
    CreateCertificate: (_call, cb) => cb(null, reply),
    GetTrustBundle: (_call, cb) => cb(null, { rootCerts: [rootPem], trustDomain: 'cluster.local' }),
  };
  server.addService(loadCaProto().sail.ca.v1.CertificateAuthority.service, handlers);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', serverCredentials(provider, false), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  console.log(`port ${port}`);
  process.once('SIGTERM', () => server.forceShutdown());
}

/** Starts the echo server pinned to the CA's core; resolves with its process and address. */
async function startEcho(dataDir: string): Promise<{ proc: ChildProcess; address: string }> {
  const [cmd, args] = pin(0, process.execPath, [__filename, '--echo-server', dataDir]);
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = readline.createInterface({ input: proc.stdout as NodeJS.ReadableStream });
  const port = await new Promise<string>((resolve, reject) => {
    lines.on('line', l => {
      const m = /^port (\d+)$/.exec(l);
      if (m) resolve(m[1] as string);
    });
    proc.once('exit', code => reject(new Error(`echo server exited with ${String(code)}`)));
  });
  return { proc, address: `127.0.0.1:${port}` };
}

async function run(
  alg: string,
  inflight: number,
  target: 'ca' | 'echo' = 'ca',
): Promise<Record<string, string | number>> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sail-bench-ca-'));
  const { proc, address } = await startCa(dataDir, alg).catch((err: unknown) => {
    fs.rmSync(dataDir, { recursive: true, force: true });
    throw err;
  });
  const roots = fs.readFileSync(path.join(dataDir, 'root-cert.pem'), 'utf8');
  let echo: ChildProcess | undefined;
  try {
    // One node entry, token and certificate per simulated host
    const hosts: {
      client: TestCaClient;
      csr: string;
      identity: { certChainPem: string; keyPem: string };
    }[] = [];
    for (let i = 0; i < HOSTS; i++) {
      const token = await createToken(dataDir, `host-${i}`);
      const first = await makeCsr();
      const bootstrap = new TestCaClient({ address, rootsPem: roots });
      const res = await bootstrap.create({ csr: first.csrPem, validitySeconds: 3600 }, token);
      bootstrap.close();
      const identity = {
        certChainPem: res.certChain.slice(0, -1).join(''),
        keyPem: first.keyPem,
      };
      const client = new TestCaClient({ address, rootsPem: roots, identity });
      hosts.push({ client, csr: (await makeCsr()).csrPem, identity });
    }
    let pid = caPid(proc);
    if (target === 'echo') {
      // The same hosts and certificates, against the echo server instead of the CA.
      const started = await startEcho(dataDir);
      echo = started.proc;
      pid = caPid(echo);
      for (const h of hosts) {
        h.client.close();
        h.client = new TestCaClient({
          address: started.address,
          rootsPem: roots,
          identity: h.identity,
        });
      }
    }
    const latencies: number[] = [];
    let ok = 0;
    let failed = 0;
    let measuring = false;
    let stop = false;
    const loop = async (h: (typeof hosts)[number]) => {
      while (!stop) {
        const t0 = performance.now();
        try {
          await h.client.create({ csr: h.csr, validitySeconds: 3600 });
          if (measuring) {
            ok++;
            latencies.push(performance.now() - t0);
          }
        } catch {
          if (measuring) failed++;
        }
      }
    };
    const loops = hosts.flatMap(h => Array.from({ length: inflight }, () => loop(h)));
    await new Promise(r => setTimeout(r, 2000)); // warm-up: JIT, TLS sessions
    const before = procStatus(pid);
    const clientBefore = process.cpuUsage();
    const t0 = performance.now();
    measuring = true;
    await new Promise(r => setTimeout(r, SECONDS * 1000));
    measuring = false;
    const elapsed = (performance.now() - t0) / 1000;
    const after = procStatus(pid);
    const clientCpu = process.cpuUsage(clientBefore);
    stop = true;
    await Promise.all(loops);
    for (const h of hosts) h.client.close();
    latencies.sort((a, b) => a - b);
    const q = (p: number) =>
      latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
    const caCores = (after.cpuTicks - before.cpuTicks) / TICKS / elapsed;
    return {
      'CA key': target === 'echo' ? `echo, no CA work (${alg} root)` : alg,
      'in flight': HOSTS * inflight,
      'signatures/s': Math.round(ok / elapsed),
      failed,
      'p50 ms': q(0.5).toFixed(1),
      'p99 ms': q(0.99).toFixed(1),
      'CA CPU (cores)': caCores.toFixed(2),
      // Less sensitive to other load on the machine than signatures/s: when something else
      // takes part of core 0, the rate drops but this stays about the same.
      'per CA core-second': Math.round(ok / elapsed / Math.max(caCores, 0.01)),
      'CA kernel share': `${Math.round(((after.sysTicks - before.sysTicks) / Math.max(1, after.cpuTicks - before.cpuTicks)) * 100)}%`,
      'load CPU (cores)': ((clientCpu.user + clientCpu.system) / 1e6 / elapsed).toFixed(2),
      'CA RSS MB': after.rssMb.toFixed(1),
      'CA peak RSS MB': after.hwmMb.toFixed(1),
    };
  } finally {
    if (echo) {
      const e = echo;
      e.kill('SIGTERM');
      await new Promise(r => e.once('exit', r));
    }
    proc.kill('SIGTERM');
    await new Promise(r => proc.once('exit', r));
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  // -a: every thread (V8's GC helpers and libuv's pool start before this line), not just main.
  if (haveTaskset) spawnSync('taskset', ['-apc', '1', String(process.pid)], { stdio: 'ignore' });
  console.log(
    `CA benchmark: ${HOSTS} hosts x ${INFLIGHTS.join(' and ')} in flight each, ${SECONDS}s per run, CA pinned to one core: ${haveTaskset ? 'yes' : 'no (taskset missing or one core)'}`,
  );
  console.log(
    `node ${process.version}, ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.cpus().length} cores`,
  );
  const rows = [];
  for (const alg of ALGS) for (const inflight of INFLIGHTS) rows.push(await run(alg, inflight));
  if (ECHO) for (const inflight of INFLIGHTS) rows.push(await run('ec-p256', inflight, 'echo'));
  console.table(rows);
}

(process.argv[2] === '--echo-server' ? echoServer(process.argv[3] as string) : main()).catch(
  (err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  },
);
