/**
 * Captured traffic end to end (root only): two hosts as network namespaces on a bridge, each with
 * a real `sail proxy` process from the build in capture mode and iptables rules installed by hand
 * the way Istio's istio-iptables installs them (the node agent's own capture is a later issue):
 *
 *   nat OUTPUT     tcp → SAIL_OUTPUT: the proxy's group (gid 1337) RETURN, 127.0.0.1 RETURN, the
 *                  control plane RETURN, everything else REDIRECT to :15001 (virtualOutbound)
 *   nat PREROUTING tcp → SAIL_INBOUND: port 22 RETURN, everything else REDIRECT to :15006
 *                  (virtualInbound)
 *
 * The proxies run with gid 1337 (`setpriv --regid`): their own connections are excluded by group,
 * as Istio excludes its proxy's uid and gid, so what they send is not captured again.
 *
 *   bridge 10.77.0.254 (this process: the CA and pilot, in-process)
 *     ├── ns A 10.77.0.1: proxy A; clients (curl, a node TCP client) run here
 *     └── ns B 10.77.0.2: proxy B; the applications on 127.0.0.1:9080 (HTTP) and :9083 (TCP)
 *
 * Shown: a client in A that knows nothing of the mesh (`curl http://10.77.0.2:9080/`, a TCP round
 * trip to 10.77.0.2:9083) reaches B's applications through both proxies; B's side is mutual TLS
 * (B's application sees A's SPIFFE ID in x-forwarded-client-cert; B's metrics say mutual_tls);
 * and proxy A routed by the original destination it read with SO_ORIGINAL_DST (its TCP metrics
 * name the service, which only the original destination 10.77.0.2:9083 identifies).
 */
import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { silentLogger } from '../../common/logging';
import {
  MeshControlPlane,
  type PairPorts,
  proxyConfigYaml,
  proxyOptionsFor,
  registerWorkload,
  SERVICE_HOST,
  serviceEntry,
  spiffeIdOf,
  writeIdentity,
} from '../helpers/proxy-pair';
import type { TestRegistrationAgent } from '../helpers/registration-agent';
import { SAIL_JS, sailBuilt } from '../helpers/sail-process';
import { makeTmpDir } from '../helpers/tmp-dir';
import { waitFor } from '../helpers/wait-for';

const ADDON = path.join(path.dirname(SAIL_JS), '..', 'common', 'native', 'sail_native.node');
const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const skipReason =
  process.getuid?.() !== 0
    ? 'needs root (network namespaces and iptables)'
    : !has('ip') || !has('iptables-restore') || !has('setpriv') || !has('curl')
      ? 'needs ip (iproute2), iptables-restore, setpriv and curl'
      : !sailBuilt()
        ? 'run `npm run build` first (npm test does)'
        : !fs.existsSync(ADDON)
          ? `the native addon ${ADDON} is not built (capture mode needs SO_ORIGINAL_DST)`
          : undefined;
const run = skipReason ? describe.skip : describe;
if (skipReason) console.warn(`proxy capture e2e test skipped: ${skipReason}`);

jest.setTimeout(60_000);

/** Unique per run, short: interface names are at most 15 characters. */
const TAG = crypto.randomBytes(2).toString('hex');
const BRIDGE = `spxbr${TAG}`;
const NS = { a: `sailpx-a-${TAG}`, b: `sailpx-b-${TAG}` };
const VETH = { a: `spxa${TAG}`, b: `spxb${TAG}` };
const IP = { a: '10.77.0.1', b: '10.77.0.2', cp: '10.77.0.254' };
const PROXY_GID = 1337;
const PORTS: PairPorts = { http: 9080, http2: 9081, grpc: 9082, tcp: 9083 };

/** Runs a command to completion without blocking the event loop (pilot runs in this process). */
function sh(
  cmd: string,
  args: string[],
  opts: { input?: string; timeoutMs?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise(resolve => {
    const child = execFile(
      cmd,
      args,
      { encoding: 'utf8', timeout: opts.timeoutMs ?? 15_000, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) =>
        resolve({
          code: err ? Number((err as { code?: unknown }).code ?? 1) || 1 : 0,
          stdout,
          stderr,
        }),
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

async function must(cmd: string, args: string[], input?: string): Promise<string> {
  const r = await sh(cmd, args, input === undefined ? {} : { input });
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

const inNs = (ns: string, cmd: string, args: string[], timeoutMs?: number) =>
  sh('ip', ['netns', 'exec', ns, cmd, ...args], timeoutMs === undefined ? {} : { timeoutMs });

/** Istio-style capture for one host (see the file comment). */
const captureRules = () => `*nat
:SAIL_INBOUND - [0:0]
:SAIL_IN_REDIRECT - [0:0]
:SAIL_OUTPUT - [0:0]
:SAIL_REDIRECT - [0:0]
-A PREROUTING -p tcp -j SAIL_INBOUND
-A OUTPUT -p tcp -j SAIL_OUTPUT
-A SAIL_INBOUND -p tcp --dport 22 -j RETURN
-A SAIL_INBOUND -p tcp -j SAIL_IN_REDIRECT
-A SAIL_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A SAIL_OUTPUT -m owner --gid-owner ${PROXY_GID} -j RETURN
-A SAIL_OUTPUT -d 127.0.0.1/32 -j RETURN
-A SAIL_OUTPUT -d ${IP.cp}/32 -j RETURN
-A SAIL_OUTPUT -j SAIL_REDIRECT
-A SAIL_REDIRECT -p tcp -j REDIRECT --to-ports 15001
COMMIT
`;

/** B's applications: HTTP echoing the request headers as JSON, TCP echo that says bye after FIN. */
const APPS = `
const http = require('node:http'), net = require('node:net');
http.createServer((req, res) => {
  req.resume();
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ headers: req.headers }));
}).listen(${PORTS.http}, '127.0.0.1', () => console.log('http up'));
net.createServer({ allowHalfOpen: true }, s => {
  s.on('data', c => s.write(c));
  s.on('end', () => s.end('bye'));
  s.on('error', () => {});
}).listen(${PORTS.tcp}, '127.0.0.1', () => console.log('tcp up'));
`;

/** A TCP client for ns A: sends N random bytes, half-closes, prints what came back as JSON. */
const TCP_CLIENT = `
const net = require('node:net'), crypto = require('node:crypto');
const data = crypto.randomBytes(Number(process.argv[3]));
const s = net.connect({ host: process.argv[1], port: Number(process.argv[2]), allowHalfOpen: true });
const chunks = [];
s.on('data', c => chunks.push(c));
s.on('end', () => {
  const got = Buffer.concat(chunks);
  const h = b => crypto.createHash('sha256').update(b).digest('hex');
  console.log(JSON.stringify({
    sent: data.length, got: got.length,
    same: h(got.subarray(0, data.length)) === h(data),
    tail: got.subarray(data.length).toString(),
  }));
  s.destroy();
});
s.on('error', e => { console.error(e.message); process.exit(1); });
s.end(data);
`;

/** A long-running child in a namespace, with its output kept for failure messages. */
class NsProcess {
  readonly output: string[] = [];
  private readonly child: ChildProcess;
  private readonly exited: Promise<void>;
  constructor(ns: string, cmd: string[], gid?: number) {
    const prefix = gid === undefined ? [] : ['setpriv', `--regid=${gid}`, '--clear-groups', '--'];
    this.child = spawn('ip', ['netns', 'exec', ns, ...prefix, ...cmd], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (b: Buffer) => {
      if (this.output.length < 5000) this.output.push(b.toString());
    };
    this.child.stdout!.on('data', keep);
    this.child.stderr!.on('data', keep);
    this.exited = new Promise(r => this.child.once('exit', () => r()));
  }
  get text(): string {
    return this.output.join('');
  }
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
    await this.exited;
    clearTimeout(timer);
  }
}

run(
  'proxy capture e2e: two hosts in network namespaces, iptables REDIRECT, SO_ORIGINAL_DST',
  () => {
    const tmp = makeTmpDir('sail-proxy-capture-');
    let cp: MeshControlPlane | undefined;
    let registration: TestRegistrationAgent | undefined;
    const procs: NsProcess[] = [];
    let proxyA: NsProcess;
    let proxyB: NsProcess;

    const teardownNetwork = async () => {
      for (const ns of Object.values(NS)) await sh('ip', ['netns', 'del', ns]);
      for (const v of Object.values(VETH)) await sh('ip', ['link', 'del', v]);
      await sh('ip', ['link', 'del', BRIDGE]);
    };

    beforeAll(async () => {
      fs.chmodSync(tmp.dir, 0o755);
      // Network: a bridge in this namespace (the control plane's address) and one veth per host.
      await must('ip', ['link', 'add', BRIDGE, 'type', 'bridge']);
      await must('ip', ['addr', 'add', `${IP.cp}/24`, 'dev', BRIDGE]);
      await must('ip', ['link', 'set', BRIDGE, 'up']);
      for (const h of ['a', 'b'] as const) {
        await must('ip', ['netns', 'add', NS[h]]);
        await must('ip', [
          'link',
          'add',
          VETH[h],
          'type',
          'veth',
          'peer',
          'name',
          'eth0',
          'netns',
          NS[h],
        ]);
        await must('ip', ['link', 'set', VETH[h], 'master', BRIDGE, 'up']);
        await must('ip', ['-n', NS[h], 'addr', 'add', `${IP[h]}/24`, 'dev', 'eth0']);
        await must('ip', ['-n', NS[h], 'link', 'set', 'eth0', 'up']);
        await must('ip', ['-n', NS[h], 'link', 'set', 'lo', 'up']);
        await must('ip', ['netns', 'exec', NS[h], 'iptables-restore', '--noflush'], captureRules());
      }

      // Control plane on the bridge address; identities; the service with B's IP as its address
      // (so that `http://10.77.0.2:9080/` is the service, as a VIP would be).
      cp = await MeshControlPlane.start({ dataDir: path.join(tmp.dir, 'cp'), host: IP.cp });
      await cp.apply([serviceEntry(PORTS, [IP.b])]);
      const hosts = {
        a: { node: 'vm-a', sa: 'client', labels: { app: 'client', version: 'v1' } },
        b: { node: 'vm-b', sa: 'server', labels: { app: 'server', version: 'v1' } },
      };
      const configs: Record<'a' | 'b', string> = { a: '', b: '' };
      for (const h of ['a', 'b'] as const) {
        const identity = await cp.enroll(hosts[h].node, hosts[h].sa);
        const certsDir = path.join(tmp.dir, h, 'certs');
        await writeIdentity(certsDir, identity);
        if (h === 'b') {
          registration = registerWorkload(cp, {
            node: 'vm-b',
            serviceAccount: 'server',
            identity,
            address: IP.b,
            labels: hosts.b.labels,
            ports: PORTS,
          });
          await registration.start();
        }
        const o = proxyOptionsFor({
          logger: silentLogger(),
          node: hosts[h].node,
          ip: IP[h],
          labels: hosts[h].labels,
          cp,
          certsDir,
          stateDir: fs.mkdtempSync(path.join(tmp.dir, `${h}-state-`)),
          outboundBindHost: '127.0.0.1',
          inboundBindHost: IP[h],
        });
        configs[h] = path.join(tmp.dir, h, 'proxy.yaml');
        fs.writeFileSync(
          configs[h],
          proxyConfigYaml(
            {
              ...o,
              traffic: { mode: 'capture', outboundBindHost: '127.0.0.1' },
              adminListen: '127.0.0.1:15000',
              metricsListen: '0.0.0.0:15090',
              accessLog: true,
            },
            { logLevel: 'info' },
          ),
        );
      }

      const apps = new NsProcess(NS.b, [process.execPath, '-e', APPS]);
      procs.push(apps);
      await waitFor(() => apps.text.includes('http up') && apps.text.includes('tcp up'), {
        what: `B's applications (${apps.text})`,
      });
      proxyB = new NsProcess(
        NS.b,
        [process.execPath, SAIL_JS, 'proxy', '--config', configs.b],
        PROXY_GID,
      );
      proxyA = new NsProcess(
        NS.a,
        [process.execPath, SAIL_JS, 'proxy', '--config', configs.a],
        PROXY_GID,
      );
      procs.push(proxyA, proxyB);
      for (const [ns, p] of [
        [NS.a, proxyA],
        [NS.b, proxyB],
      ] as const) {
        await waitFor(
          async () => {
            const r = await inNs(ns, 'curl', [
              '-s',
              '-o',
              '/dev/null',
              '-w',
              '%{http_code}',
              'http://127.0.0.1:15000/ready',
            ]);
            return r.stdout === '200';
          },
          {
            timeoutMs: 20_000,
            intervalMs: 200,
            what: `proxy in ${ns} ready; its output: ${p.text.slice(-3000)}`,
          },
        );
      }
    });

    afterAll(async () => {
      for (const p of procs.reverse()) await p.stop();
      registration?.close();
      await cp?.close();
      await teardownNetwork();
      tmp.cleanup();
    });

    it("an HTTP client in A reaches B's application through both proxies over mTLS", async () => {
      const r = await waitFor(
        async () => {
          const res = await inNs(NS.a, 'curl', [
            '-sS',
            '--max-time',
            '5',
            `http://${IP.b}:${PORTS.http}/`,
          ]);
          return res.code === 0 && res.stdout.startsWith('{"headers"') ? res : undefined;
        },
        {
          timeoutMs: 15_000,
          intervalMs: 200,
          what: `curl from A; proxy A: ${proxyA.text.slice(-2000)}`,
        },
      );
      const { headers } = JSON.parse(r.stdout) as { headers: Record<string, string> };
      expect(headers['x-forwarded-client-cert']).toContain(`URI=${spiffeIdOf('client')}`);
      expect(headers['x-forwarded-client-cert']).toContain(`By=${spiffeIdOf('server')}`);
    });

    it('a TCP round trip from A is byte-exact through both proxies, with half-close', async () => {
      const r = await inNs(NS.a, process.execPath, [
        '-e',
        TCP_CLIENT,
        IP.b,
        String(PORTS.tcp),
        '1048576',
      ]);
      expect(r.stderr).toBe('');
      expect(JSON.parse(r.stdout)).toEqual({
        sent: 1048576,
        got: 1048576 + 3,
        same: true,
        tail: 'bye',
      });
    });

    const metrics = async (ns: string) =>
      (await inNs(ns, 'curl', ['-sS', 'http://127.0.0.1:15090/stats/prometheus'])).stdout;
    const line = (text: string, name: string, ...want: string[]) =>
      text.split('\n').find(l => l.startsWith(`${name}{`) && want.every(w => l.includes(w)));

    it("TCP: B's side is mutual TLS, and A routed by the original destination (SO_ORIGINAL_DST)", async () => {
      const b = await metrics(NS.b);
      const a = await metrics(NS.a);
      expect(
        line(
          b,
          'istio_tcp_connections_opened_total',
          'reporter="destination"',
          'connection_security_policy="mutual_tls"',
        ),
      ).toBeDefined();
      // A captured a connection to 10.77.0.2:9083 on :15001 and picked the service's TCP chain:
      // only the original destination names it (raw TCP carries no Host).
      expect(
        line(
          a,
          'istio_tcp_connections_opened_total',
          'reporter="source"',
          `destination_service="${SERVICE_HOST}"`,
        ),
      ).toBeDefined();
    });

    it("HTTP: B's side is mutual TLS from A's identity, A's side names the service", async () => {
      const b = await metrics(NS.b);
      const a = await metrics(NS.a);
      expect(
        line(
          b,
          'istio_requests_total',
          'reporter="destination"',
          'connection_security_policy="mutual_tls"',
          `source_principal="${spiffeIdOf('client')}"`,
        ),
      ).toBeDefined();
      expect(
        line(
          a,
          'istio_requests_total',
          'reporter="source"',
          `destination_service="${SERVICE_HOST}"`,
        ),
      ).toBeDefined();
    });
  },
);
