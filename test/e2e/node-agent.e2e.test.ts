/**
 * The node agent end to end (issue 5, root only): a control-plane namespace and three "VM"
 * namespaces on one bridge (test/helpers/mesh-lab.ts), real `sail` processes from the build, real
 * iptables, real sshd, and applications that know nothing of the mesh (test/helpers/mesh-apps.ts):
 *
 *   cp   10.A.B.2   `sail control-plane` (CA :15012, pilot :15010, admin :15014), LAN resolver :53
 *   vm1  10.A.B.11  productpage v1 (sa productpage); the client calling reviews BY NAME:
 *                   http://reviews:9080/, reviews:9090 (gRPC), reviews:9100 (TCP)
 *   vm2  10.A.B.12  reviews v1 (sa reviews); capture.mode tproxy (inbound through TPROXY and the
 *                   agent's transparent socket), the other VMs redirect
 *   vm3  10.A.B.13  reviews v2 (sa reviews)
 *   every VM: sshd :22, `sail join` then `sail node-agent` as root (capture, the supervised
 *   proxy as sail-proxy, registration with a health probe of /health, DNS on :15053); the proxies
 *   of vm1 and vm2 run two worker processes (`proxy.concurrency: 2`), so both capture modes are
 *   shown through workers too: REDIRECT's original destination read in a worker from a
 *   connection node:cluster handed over, TPROXY's transparent socket accepted from by each worker
 *
 * ServiceEntries (STATIC, workloadSelector) make `reviews.default.svc.cluster.local` (VIP
 * lab.vip(1)) and `productpage.default.svc.cluster.local` (VIP lab.vip(2)); a namespace-wide
 * PeerAuthentication is STRICT.
 *
 * Shown: every VM becomes ready (identity, proxy, capture); mesh names resolve through the agent
 * and other names still reach the LAN resolver; the client reaches reviews by name over HTTP,
 * gRPC and TCP through both proxies with mutual TLS, and a plaintext client is refused under
 * STRICT; `sail apply` route changes take effect; an unhealthy application leaves rotation and
 * returns; a proxy killed with SIGKILL is restarted (on a REDIRECT and on a TPROXY host); an agent
 * killed with SIGKILL leaves its proxy serving and a new agent takes over; with the control plane killed traffic
 * continues and a restarted agent comes up and serves; a stopped agent leaves no Sail rules;
 * SSH stays reachable throughout.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as YAML from 'yaml';
import {
  APP_PORTS,
  callOnce,
  type ClientStatus,
  type HttpReply,
  type MeshApp,
  type MeshClient,
  startApp,
  startClient,
} from '../helpers/mesh-apps';
import {
  CP,
  LAN_DNS_JS,
  type LabProcess,
  MESH_APPS_JS,
  MeshLab,
  hostExec,
} from '../helpers/mesh-lab';
import { SAIL_JS, sailBuilt } from '../helpers/sail-process';
import { waitFor } from '../helpers/wait-for';

const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const skipReason =
  process.getuid?.() !== 0
    ? 'needs root (network namespaces, iptables, sshd)'
    : !has('ip') || !has('iptables-restore') || !has('setpriv') || !has('curl') || !has('getent')
      ? 'needs ip (iproute2), iptables-restore, setpriv, curl and getent'
      : !fs.existsSync('/usr/sbin/sshd') || !has('ssh-keygen')
        ? 'needs /usr/sbin/sshd and ssh-keygen (openssh-server)'
        : !sailBuilt() || !fs.existsSync(LAN_DNS_JS) || !fs.existsSync(MESH_APPS_JS)
          ? 'run `npm run build` first (npm test does)'
          : undefined;
const run = skipReason ? describe.skip : describe;
if (skipReason) console.warn(`node agent e2e test skipped: ${skipReason}`);

jest.setTimeout(120_000);

const NAMESPACE = 'default';
const TRUST_DOMAIN = 'cluster.local';
const PROXY_USER = 'sail-proxy';
const spiffeIdOf = (sa: string) => `spiffe://${TRUST_DOMAIN}/ns/${NAMESPACE}/sa/${sa}`;
const fqdn = (svc: string) => `${svc}.${NAMESPACE}.svc.cluster.local`;

/** What each VM runs and is. */
const HOSTS: Record<
  'vm1' | 'vm2' | 'vm3',
  {
    service: string;
    version: string;
    sa: string;
    capture: 'redirect' | 'tproxy';
    /** proxy.concurrency above 1: the proxy forks this many workers. */
    proxyWorkers?: number;
  }
> = {
  vm1: {
    service: 'productpage',
    version: 'v1',
    sa: 'productpage',
    capture: 'redirect',
    proxyWorkers: 2,
  },
  vm2: { service: 'reviews', version: 'v1', sa: 'reviews', capture: 'tproxy', proxyWorkers: 2 },
  vm3: { service: 'reviews', version: 'v2', sa: 'reviews', capture: 'redirect' },
};
type Vm = keyof typeof HOSTS;
const VMS = Object.keys(HOSTS) as Vm[];

/** The client's targets: names only, as an unmodified application would write them. */
const TARGETS = {
  httpUrl: `http://reviews:${APP_PORTS.http}/`,
  grpcTarget: `reviews:${APP_PORTS.grpc}`,
  tcpTarget: `reviews:${APP_PORTS.tcp}`,
};

// ------------------------------------------------------------------------------------------------
// Configuration documents (what `sail apply -f` gets)

function serviceEntry(svc: string, vip: string): Record<string, unknown> {
  return {
    apiVersion: 'networking.istio.io/v1beta1',
    kind: 'ServiceEntry',
    metadata: { name: svc, namespace: NAMESPACE },
    spec: {
      hosts: [fqdn(svc)],
      addresses: [vip],
      location: 'MESH_INTERNAL',
      resolution: 'STATIC',
      ports: [
        { number: APP_PORTS.http, name: 'http', protocol: 'HTTP' },
        { number: APP_PORTS.grpc, name: 'grpc', protocol: 'GRPC' },
        { number: APP_PORTS.tcp, name: 'tcp', protocol: 'TCP' },
      ],
      workloadSelector: { labels: { app: svc } },
    },
  };
}

const strictMtls = {
  apiVersion: 'security.istio.io/v1beta1',
  kind: 'PeerAuthentication',
  metadata: { name: 'default', namespace: NAMESPACE },
  spec: { mtls: { mode: 'STRICT' } },
};

const reviewsSubsets = {
  apiVersion: 'networking.istio.io/v1beta1',
  kind: 'DestinationRule',
  metadata: { name: 'reviews', namespace: NAMESPACE },
  spec: {
    host: fqdn('reviews'),
    subsets: [
      { name: 'v1', labels: { version: 'v1' } },
      { name: 'v2', labels: { version: 'v2' } },
    ],
  },
};

/** end-user: jason → v2; everyone else split v1/v2 by `weights`, or (undefined) the whole service. */
function reviewsRoute(weights: { v1: number; v2: number } | undefined): Record<string, unknown> {
  const to = (subset: string, weight?: number) => ({
    destination: { host: fqdn('reviews'), subset },
    ...(weight !== undefined ? { weight } : {}),
  });
  return {
    apiVersion: 'networking.istio.io/v1beta1',
    kind: 'VirtualService',
    metadata: { name: 'reviews', namespace: NAMESPACE },
    spec: {
      hosts: [fqdn('reviews')],
      http: [
        { match: [{ headers: { 'end-user': { exact: 'jason' } } }], route: [to('v2')] },
        weights
          ? { route: [to('v1', weights.v1), to('v2', weights.v2)] }
          : { route: [{ destination: { host: fqdn('reviews') } }] },
      ],
    },
  };
}

// ------------------------------------------------------------------------------------------------
// Small helpers

const line = (text: string, name: string, ...want: string[]) =>
  text.split('\n').find(l => l.startsWith(`${name}{`) && want.every(w => l.includes(w)));

/** The value of the first sample of `name` whose labels contain all of `want` (0 if none). */
const sample = (text: string, name: string, ...want: string[]): number => {
  const l = line(text, name, ...want) ?? text.split('\n').find(x => x.startsWith(`${name} `));
  return l ? Number(l.slice(l.lastIndexOf(' ') + 1)) : 0;
};

/** Pids in a VM's namespace whose command line runs `sail.js <sub>` (e.g. 'proxy'). */
async function sailPids(lab: MeshLab, vm: string, sub: string): Promise<number[]> {
  const r = await hostExec('ip', ['netns', 'pids', lab.netns(vm)]);
  const pids: number[] = [];
  for (const p of r.stdout.split('\n').filter(Boolean)) {
    try {
      const argv = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
      const i = argv.findIndex(a => a.endsWith('sail.js') || a.endsWith('/sail'));
      if (i >= 0 && argv[i + 1] === sub) pids.push(Number(p));
    } catch {
      // Exited meanwhile.
    }
  }
  return pids;
}

/**
 * The proxy process the agent started: with `--concurrency`, the primary (the one whose parent is
 * not a proxy too), not one of its workers.
 */
async function proxyPid(lab: MeshLab, vm: string): Promise<number | undefined> {
  const pids = await sailPids(lab, vm, 'proxy');
  const parentOf = (pid: number) => {
    try {
      return Number(/^PPid:\s+(\d+)$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
    } catch {
      return undefined;
    }
  };
  return pids.find(p => !pids.includes(parentOf(p) ?? -1));
}

const sailArgv = (...args: string[]) => [process.execPath, SAIL_JS, ...args];

run('node agent e2e: three VMs in network namespaces', () => {
  let lab: MeshLab | undefined;
  let dataDir: string;
  let controlPlane: LabProcess | undefined;
  const apps: Partial<Record<Vm, MeshApp>> = {};
  const configFiles: Partial<Record<Vm, string>> = {};
  /** iptables-save of each VM before any agent ran (both families). */
  const baseline: Partial<Record<Vm, { v4: string; v6: string }>> = {};
  /** SSH reachability failures seen after any test (must stay empty). */
  const sshFailures: string[] = [];

  const L = () => {
    if (!lab) throw new Error('the lab was not created');
    return lab;
  };
  const admin = () => `unix://${path.join(dataDir, 'admin.sock')}`;

  /** `sail apply -f` of documents, as an operator would (YAML file, admin socket). */
  async function apply(...docs: Record<string, unknown>[]): Promise<void> {
    const file = path.join(
      L().dir,
      `apply-${Date.now()}-${Math.random().toString(16).slice(2)}.yaml`,
    );
    fs.writeFileSync(file, docs.map(d => YAML.stringify(d)).join('---\n'));
    const r = await hostExec(process.execPath, [SAIL_JS, 'apply', '--server', admin(), '-f', file]);
    if (r.code !== 0) throw new Error(`sail apply exited ${r.code}: ${r.stderr}`);
  }

  async function startControlPlane(): Promise<LabProcess> {
    const l = L();
    const cpIp = l.ip(CP);
    const p = l.spawn(
      CP,
      sailArgv(
        'control-plane',
        '--data-dir',
        dataDir,
        '--ca-listen',
        `${cpIp}:15012`,
        '--pilot-listen',
        `${cpIp}:15010`,
        '--admin-listen',
        `${cpIp}:15014`,
        '--debounce-after',
        '10ms',
        '--debounce-max',
        '100ms',
        '--workload-grace',
        '5s',
      ),
      {
        name: 'control-plane',
        ...(process.env.SAIL_TEST_CP_LOG
          ? { env: { SAIL_LOG_LEVEL: process.env.SAIL_TEST_CP_LOG } }
          : {}),
      },
    );
    await p.waitForOutput('Admin HTTPS listening', 30_000);
    return p;
  }

  /** `sail token create` for each VM, then `sail join` inside the VM, as an operator would. */
  async function joinAll(): Promise<void> {
    const l = L();
    for (const vm of VMS) {
      const h = HOSTS[vm];
      const token = await hostExec(process.execPath, [
        SAIL_JS,
        'token',
        'create',
        '--server',
        admin(),
        '--node',
        vm,
        '--sa',
        `${NAMESPACE}/${h.sa}`,
      ]);
      if (token.code !== 0) throw new Error(`sail token create: ${token.stderr}`);
      const dir = path.join(l.dir, vm);
      fs.mkdirSync(dir, { recursive: true });
      configFiles[vm] = path.join(dir, 'node-agent.yaml');
      await l.run(
        vm,
        sailArgv(
          'join',
          '--control-plane',
          l.ip(CP),
          '--token',
          token.stdout.trim(),
          '--ca-root',
          path.join(dataDir, 'root-cert.pem'),
          '--node',
          vm,
          '--namespace',
          NAMESPACE,
          '--service-account',
          h.sa,
          '--labels',
          `app=${h.service},version=${h.version}`,
          '--port',
          `http:${APP_PORTS.http}`,
          '--port',
          `grpc:${APP_PORTS.grpc}`,
          '--port',
          `tcp:${APP_PORTS.tcp}`,
          '--config',
          configFiles[vm],
        ),
      );
    }
  }

  beforeAll(async () => {
    await MeshLab.sweep();
    lab = await MeshLab.create({ vms: VMS });
    dataDir = path.join(lab.dir, 'control-plane');
    controlPlane = await startControlPlane();
    const l = lab;
    await Promise.all(VMS.map(vm => l.startSshd(vm)));
    for (const vm of VMS) {
      const h = HOSTS[vm];
      apps[vm] = await startApp(lab, vm, { service: h.service, version: h.version });
      baseline[vm] = {
        v4: await lab.iptablesSave(vm),
        v6: await lab.iptablesSave(vm, { family: 'ipv6' }),
      };
    }
    await apply(
      serviceEntry('reviews', lab.vip(1)),
      serviceEntry('productpage', lab.vip(2)),
      strictMtls,
      reviewsSubsets,
    );
    await joinAll();
  }, 120_000);

  afterEach(async () => {
    if (!lab) return;
    for (const vm of VMS) {
      const r = await lab.sshReachable(CP, vm);
      if (!r.ok)
        sshFailures.push(`${expect.getState().currentTestName}: ${vm}: ${r.error ?? r.banner}`);
    }
  });

  afterAll(async () => {
    await lab?.destroy();
  });

  it('joined each VM: `sail join` wrote a config the agent accepts, the token and the root', async () => {
    const l = L();
    for (const vm of VMS) {
      const file = configFiles[vm] as string;
      expect(fs.existsSync(path.join(path.dirname(file), 'join-token'))).toBe(true);
      expect(fs.existsSync(path.join(path.dirname(file), 'root-cert.pem'))).toBe(true);
      await l.run(vm, sailArgv('node-agent', '--validate', '--config', file));
    }
  });

  it('the applications answer on their own VM and the LAN names resolve, before any agent', async () => {
    const l = L();
    for (const vm of VMS) {
      const r = await l.curl(vm, `http://127.0.0.1:${APP_PORTS.http}/`);
      expect(JSON.parse(r.body)).toMatchObject({ service: HOSTS[vm].service, node: vm });
      expect((await l.run(vm, ['getent', 'hosts', 'controlplane.lan'])).split(/\s+/)[0]).toBe(
        l.ip(CP),
      );
    }
    // Without the agent, `reviews` is not a name anywhere.
    expect((await l.exec('vm1', ['getent', 'hosts', 'reviews'])).code).not.toBe(0);
  });

  describe('with the node agent running', () => {
    const agents: Partial<Record<Vm, LabProcess>> = {};
    let client: MeshClient | undefined;

    /** The agent config `sail join` wrote, plus what a lab VM needs (own dirs, fast probes). */
    function agentConfig(vm: Vm): string {
      const l = L();
      const file = configFiles[vm] as string;
      const dir = path.dirname(file);
      const doc = YAML.parse(fs.readFileSync(file, 'utf8')) as Record<
        string,
        Record<string, unknown>
      >;
      const patched = {
        ...doc,
        logLevel: process.env.SAIL_TEST_LOG ?? 'info',
        // Three "hosts" share this machine's file system: nothing may default to /var or /run.
        certs: { ...doc.certs, dir: path.join(dir, 'certs'), ttl: '1h' },
        stateDir: path.join(dir, 'state'),
        runDir: path.join(dir, 'run'),
        workload: {
          ...doc.workload,
          address: l.ip(vm),
          health: {
            http: { port: APP_PORTS.http, path: '/health' },
            intervalSeconds: 1,
            failureThreshold: 2,
            successThreshold: 1,
          },
        },
        capture: { mode: HOSTS[vm].capture, excludeInboundPorts: '22' },
        dns: { enabled: true },
        proxy: {
          enabled: true,
          user: PROXY_USER,
          accessLog: true,
          stopGrace: '2s',
          concurrency: HOSTS[vm].proxyWorkers ?? 1,
        },
        status: { listen: '127.0.0.1:15020' },
      };
      const out = path.join(dir, 'node-agent.lab.yaml');
      fs.writeFileSync(out, YAML.stringify(patched));
      return out;
    }

    async function agentStatus(vm: Vm, p = '/healthz/ready') {
      return L().curl(vm, `http://127.0.0.1:15020${p}`, { timeoutMs: 2_000 });
    }

    async function startAgent(vm: Vm): Promise<LabProcess> {
      const l = L();
      const agent = l.spawn(vm, sailArgv('node-agent', '--config', agentConfig(vm)), {
        name: 'node-agent',
      });
      agents[vm] = agent;
      await waitFor(
        async () => {
          if (!agent.running) throw new Error(`the agent in ${vm} exited: ${agent.tail()}`);
          return (await agentStatus(vm)).status === 200;
        },
        { timeoutMs: 30_000, intervalMs: 250, what: `the agent in ${vm} ready` },
      ).catch((err: unknown) => {
        throw new Error(`${(err as Error).message}; agent output: ${agent.tail()}`);
      });
      return agent;
    }

    async function stopAgent(vm: Vm): Promise<{ code: number | null; signal: string | null }> {
      const r = (await agents[vm]?.stop(30_000)) ?? { code: null, signal: null };
      agents[vm] = undefined;
      return r;
    }

    const proxyMetrics = async (vm: Vm) =>
      (await L().curl(vm, 'http://127.0.0.1:15090/stats/prometheus')).body;

    /** Calls from vm1 until `pred` holds on one batch of `count` rounds. */
    async function callsUntil(
      what: string,
      opts: {
        headers?: Record<string, string>;
        count?: number;
        kinds?: ('http' | 'grpc' | 'tcp')[];
      },
      pred: (s: ClientStatus) => boolean,
      timeoutMs = 20_000,
    ): Promise<ClientStatus> {
      const kinds = opts.kinds ?? ['http'];
      let last: ClientStatus | undefined;
      try {
        return await waitFor(
          async () => {
            last = await callOnce(L(), 'vm1', {
              ...(kinds.includes('http') ? { httpUrl: TARGETS.httpUrl } : {}),
              ...(kinds.includes('grpc') ? { grpcTarget: TARGETS.grpcTarget } : {}),
              ...(kinds.includes('tcp') ? { tcpTarget: TARGETS.tcpTarget } : {}),
              ...(opts.headers ? { headers: opts.headers } : {}),
              count: opts.count ?? 10,
            });
            return pred(last) ? last : undefined;
          },
          { timeoutMs, intervalMs: 300, what },
        );
      } catch (err) {
        throw new Error(`${(err as Error).message}; last: ${JSON.stringify(last)}`);
      }
    }

    beforeAll(async () => {
      // The proxy's system user, as the sail-node-agent package's postinst creates it.
      if ((await hostExec('getent', ['passwd', PROXY_USER])).code !== 0) {
        const r = await hostExec('useradd', [
          '--system',
          '--no-create-home',
          '--shell',
          '/usr/sbin/nologin',
          PROXY_USER,
        ]);
        if (r.code !== 0) throw new Error(`useradd ${PROXY_USER}: ${r.stderr}`);
      }
      await apply(reviewsRoute({ v1: 100, v2: 0 }));
      await Promise.all(VMS.map(vm => startAgent(vm)));
      client = await startClient(L(), 'vm1', { ...TARGETS, intervalMs: 100, timeoutMs: 2_000 });
    }, 120_000);

    afterAll(async () => {
      await client?.stop();
      for (const vm of VMS) await stopAgent(vm);
    });

    it('every VM is ready: identity, capture installed, proxy ready', async () => {
      const l = L();
      for (const vm of VMS) {
        expect((await agentStatus(vm)).status).toBe(200);
        expect((await l.sailRules(vm)).length).toBeGreaterThan(0);
        // The primary and its workers on the hosts that run them.
        expect(await sailPids(l, vm, 'proxy')).toHaveLength(1 + (HOSTS[vm].proxyWorkers ?? 0));
        const proxyReady = await l.curl(vm, 'http://127.0.0.1:15000/ready');
        expect(proxyReady.status).toBe(200);
      }
      // `sail status` on a host: identity, registration, proxy and pilot, capture, DNS.
      const text = await l.exec('vm1', sailArgv('status'));
      expect(text.code).toBe(0);
      expect(text.stdout).toMatch(/^Node: +vm1 {2}READY$/m);
      expect(text.stdout).toContain('spiffe://cluster.local/ns/default/sa/productpage');
      expect(text.stdout).toMatch(/^Registration: registered, healthy/m);
      expect(text.stdout).toMatch(/^Pilot: +connected$/m);
      // vm1's proxy runs two workers (proxy.concurrency: 2).
      expect(text.stdout).toMatch(/^Proxy: +ready \(pid \d+, 2 workers\), \d+ restarts/m);
      expect(text.stdout).toMatch(/^Capture: +redirect via iptables-(nft|legacy), installed$/m);
      const json = JSON.parse((await l.exec('vm1', sailArgv('status', '-o', 'json'))).stdout) as {
        ready: boolean;
        proxy: { state: string; xds: { versions: Record<string, string> } };
      };
      expect(json.ready).toBe(true);
      expect(json.proxy.state).toBe('ready');
      expect(Object.keys(json.proxy.xds.versions).length).toBeGreaterThanOrEqual(4);
      // vm2 captures inbound with TPROXY: mangle rules, its policy route, installed and verified.
      const vm3 = await l.exec('vm3', sailArgv('status'));
      expect(vm3.stdout).toMatch(/^Proxy: +ready \(pid \d+\), \d+ restarts/m);
      const vm2 = await l.exec('vm2', sailArgv('status'));
      expect(vm2.stdout).toMatch(/^Capture: +tproxy via iptables-(nft|legacy), installed$/m);
      expect(await l.run('vm2', ['ip', 'rule', 'show'])).toContain('lookup 133');
    });

    it('mesh names resolve through the agent, and non-mesh names still reach the LAN resolver', async () => {
      const l = L();
      // `reviews` resolves to its VIP (the LAN resolver does not know it). glibc asks
      // `reviews.lan` first (resolv.conf says `search lan`): the agent answers that as `reviews`,
      // so the LAN resolver is not asked at all.
      const asked = l.dnsQueries().length;
      const reviews = await l.run('vm1', ['getent', 'ahostsv4', 'reviews']);
      expect(reviews.split(/\s+/)[0]).toBe(l.vip(1));
      expect(
        l
          .dnsQueries()
          .slice(asked)
          .map(q => q.name),
      ).not.toContain('reviews.lan');
      const agentMetrics = async () => (await agentStatus('vm1', '/metrics')).body;
      const forwarded = (m: string) =>
        sample(m, 'sail_agent_dns_requests_total', 'result="forwarded"');
      const forwardedBefore = forwarded(await agentMetrics());
      const before = l.dnsQueries().length;
      const vm2 = await l.run('vm1', ['getent', 'ahostsv4', 'vm2.lan']);
      expect(vm2.split(/\s+/)[0]).toBe(l.ip('vm2'));
      expect(l.dnsQueries().slice(before)).toEqual(
        expect.arrayContaining([expect.objectContaining({ name: 'vm2.lan', rcode: 'NOERROR' })]),
      );
      // ...and it went through the agent's forwarder (DNS capture), not straight to the LAN.
      expect(forwarded(await agentMetrics())).toBeGreaterThan(forwardedBefore);
      expect((await l.exec('vm1', ['getent', 'hosts', 'nosuchname.example'])).code).toBe(2);
      const m = await agentMetrics();
      expect(sample(m, 'sail_agent_dns_requests_total', 'result="mesh"')).toBeGreaterThan(0);
    });

    it('the client in vm1 reaches reviews by name (HTTP, gRPC, TCP) through both proxies over mTLS', async () => {
      const c = client as MeshClient;
      await c.reset();
      const s = await c.waitUntil(
        x => (x.http?.ok ?? 0) >= 5 && (x.grpc?.ok ?? 0) >= 5 && (x.tcp?.ok ?? 0) >= 5,
        'HTTP, gRPC and TCP successes',
      );
      const reply = s.http?.lastOk as unknown as HttpReply;
      expect(reply.version).toBe('v1'); // the VirtualService: everyone else → v1
      // vm2 captures with TPROXY and keeps the caller's address (original_src): its application
      // sees vm1, where the call came from, not its own proxy.
      expect(reply.node).toBe('vm2');
      expect(reply.remoteAddress).toBe(L().ip('vm1'));
      // The same for plain TCP; vm3 (REDIRECT) sees its proxy instead.
      const tcp = s.tcp?.lastOk as { node?: string; remoteAddress?: string };
      expect(tcp.remoteAddress).toBe(tcp.node === 'vm2' ? L().ip('vm1') : '127.0.0.1');
      const xfcc = String(reply.headers['x-forwarded-client-cert']);
      expect(xfcc).toContain(`URI=${spiffeIdOf('productpage')}`);
      expect(xfcc).toContain(`By=${spiffeIdOf('reviews')}`);

      const src = await proxyMetrics('vm1');
      const dst = await proxyMetrics('vm2');
      expect(
        line(
          src,
          'istio_requests_total',
          'reporter="source"',
          `destination_service="${fqdn('reviews')}"`,
        ),
      ).toBeDefined();
      expect(
        line(
          dst,
          'istio_requests_total',
          'reporter="destination"',
          'connection_security_policy="mutual_tls"',
          `source_principal="${spiffeIdOf('productpage')}"`,
        ),
      ).toBeDefined();
      expect(
        line(dst, 'istio_requests_total', 'reporter="destination"', 'request_protocol="grpc"'),
      ).toBeDefined();
      expect(
        line(
          src,
          'istio_tcp_connections_opened_total',
          'reporter="source"',
          `destination_service="${fqdn('reviews')}"`,
        ),
      ).toBeDefined();
      expect(
        line(
          dst,
          'istio_tcp_connections_opened_total',
          'reporter="destination"',
          'connection_security_policy="mutual_tls"',
        ),
      ).toBeDefined();
    });

    it('a host reaches its own service by name: its proxy calls itself through its inbound side', async () => {
      const l = L();
      // reviews routes to v1, which is vm2 itself: curl (root, captured) → vm2's proxy → vm2's own
      // address, sent to its inbound side by capture → mTLS terminated → the app.
      for (let i = 0; i < 5; i++) {
        const r = await l.curl('vm2', 'http://reviews:9080/');
        expect(r.status).toBe(200);
        const reply = JSON.parse(r.body) as HttpReply;
        expect(reply.node).toBe('vm2');
        expect(reply.headers['x-forwarded-client-cert']).toContain(
          'URI=spiffe://cluster.local/ns/default/sa/reviews',
        );
      }
    });

    it('a plaintext client to the inbound side is refused under STRICT', async () => {
      const l = L();
      // From cp (no proxy there): straight to vm2's app port, which capture sends to the proxy.
      const r = await l.tcpProbe(CP, l.ip('vm2'), APP_PORTS.http, {
        send: 'GET / HTTP/1.1\\r\\nHost: reviews\\r\\nConnection: close\\r\\n\\r\\n',
        timeoutMs: 3_000,
      });
      expect(r.data).not.toContain('"service":"reviews"');
      expect(r.data).not.toMatch(/^HTTP\/1\.1 200/);
      const tcp = await l.tcpProbe(CP, l.ip('vm2'), APP_PORTS.tcp, {
        send: 'ping 1\\n',
        timeoutMs: 3_000,
      });
      expect(tcp.data).not.toContain('"echo"');
    });

    it('a `sail apply` route change takes effect: header match, then weights', async () => {
      await callsUntil(
        'jason → v2',
        { headers: { 'end-user': 'jason' }, kinds: ['http', 'grpc'] },
        s => s.http?.byVersion.v2 === 10 && s.grpc?.byVersion.v2 === 10,
      );
      await callsUntil('everyone else → v1', {}, s => s.http?.byVersion.v1 === 10);
      await apply(reviewsRoute({ v1: 0, v2: 100 }));
      await callsUntil('weights 0/100 → v2', {}, s => s.http?.byVersion.v2 === 10);
      await apply(reviewsRoute({ v1: 50, v2: 50 }));
      await callsUntil(
        'weights 50/50 → both',
        { count: 40 },
        s =>
          (s.http?.byVersion.v1 ?? 0) >= 5 &&
          (s.http?.byVersion.v2 ?? 0) >= 5 &&
          s.http?.errors === 0,
      );
    });

    it('an unhealthy application is taken out of rotation and returns', async () => {
      // One cluster with both backends (no subsets): with 50/50 over two one-host subsets, an
      // unhealthy v1 host would still get its share, as in Envoy (a cluster whose hosts are all
      // unhealthy is in panic mode and uses them anyway).
      await apply(reviewsRoute(undefined));
      await callsUntil(
        'both backends in one cluster',
        { count: 40 },
        s => (s.http?.byNode.vm2 ?? 0) >= 5 && (s.http?.byNode.vm3 ?? 0) >= 5,
      );
      await (apps.vm2 as MeshApp).setHealthy(false);
      await callsUntil(
        'only vm3 while vm2 is unhealthy',
        { count: 20 },
        s => s.http?.byNode.vm3 === 20,
      );
      await (apps.vm2 as MeshApp).setHealthy(true);
      await callsUntil(
        'vm2 back in rotation',
        { count: 40 },
        s => (s.http?.byNode.vm2 ?? 0) >= 5 && (s.http?.byNode.vm3 ?? 0) >= 5,
      );
    });

    it('kill -9 of a proxy: the agent restarts it and traffic resumes (REDIRECT and TPROXY hosts)', async () => {
      const l = L();
      // vm1 (redirect) holds the client; vm2 (tproxy) serves it: its new proxy must take the
      // agent's transparent socket again.
      const killed = new Map<Vm, number>();
      for (const vm of ['vm1', 'vm2'] as const) {
        const old = await proxyPid(l, vm);
        expect(old).toBeDefined();
        killed.set(vm, old as number);
        process.kill(old as number, 'SIGKILL');
      }
      for (const [vm, old] of killed) {
        const next = await waitFor(
          async () => {
            const p = await proxyPid(l, vm);
            return p !== undefined &&
              p !== old &&
              (await l.curl(vm, 'http://127.0.0.1:15000/ready')).status === 200
              ? p
              : undefined;
          },
          { timeoutMs: 20_000, intervalMs: 200, what: `a new ready proxy in ${vm}` },
        );
        expect(next).not.toBe(old);
        // The killed primary's workers left with it: none keeps the ports or the TPROXY socket.
        await waitFor(
          async () => (await sailPids(l, vm, 'proxy')).length === 1 + (HOSTS[vm].proxyWorkers ?? 0),
          { timeoutMs: 10_000, intervalMs: 200, what: `only the new proxy's processes in ${vm}` },
        );
      }
      const c = client as MeshClient;
      await c.reset();
      await c.waitUntil(
        x =>
          (x.http?.ok ?? 0) >= 20 &&
          x.http?.consecutiveErrors === 0 &&
          (x.http?.byNode.vm2 ?? 0) >= 3 &&
          (x.tcp?.ok ?? 0) >= 10,
        'traffic after the proxy restarts, vm2 (TPROXY) among the backends',
      );
      for (const vm of killed.keys()) {
        const m = (await agentStatus(vm, '/metrics')).body;
        expect(sample(m, 'sail_agent_proxy_restarts_total')).toBeGreaterThanOrEqual(1);
      }
    });

    it('kill -9 of the TPROXY host agent: its proxy keeps serving, and a new agent takes over', async () => {
      const l = L();
      const proxy = await proxyPid(l, 'vm2');
      expect(proxy).toBeDefined();
      const agent = agents.vm2 as LabProcess;
      agent.kill('SIGKILL');
      await agent.exited;
      agents.vm2 = undefined;
      const c = client as MeshClient;
      // The orphaned proxy still holds the transparent socket and serves; the rules stay.
      await c.reset();
      await c.waitUntil(
        x => (x.http?.byNode.vm2 ?? 0) >= 3 && x.http?.consecutiveErrors === 0,
        'vm2 serving with its agent gone',
      );
      // A new agent stops the leftover proxy (its pid file), so the port is free for a new
      // transparent socket, and comes up ready.
      await startAgent('vm2');
      const next = await proxyPid(l, 'vm2');
      expect(next).toBeDefined();
      expect(next).not.toBe(proxy);
      await c.reset();
      await c.waitUntil(
        x => (x.http?.byNode.vm2 ?? 0) >= 3 && x.http?.consecutiveErrors === 0,
        'vm2 serving after the new agent took over',
      );
    });

    it('the control plane killed: traffic continues, and an agent restart comes up and serves', async () => {
      const l = L();
      controlPlane?.kill('SIGKILL');
      await controlPlane?.exited;
      const c = client as MeshClient;
      await c.reset();
      await c.waitUntil(x => (x.http?.ok ?? 0) >= 20, 'traffic with the control plane down');
      const during = await c.status();
      expect(during.http?.errors ?? 0).toBe(0);

      // An agent (and so its proxy) restart on vm3 with pilot and the CA down: it comes back from
      // the certificates and last-known-good config on disk and serves.
      const stopped = await stopAgent('vm3');
      expect(stopped.code).toBe(0);
      expect(await sailPids(l, 'vm3', 'proxy')).toEqual([]);
      await startAgent('vm3');
      await callsUntil(
        'vm3 serves after its agent restarted',
        { headers: { 'end-user': 'jason' } },
        s => s.http?.byNode.vm3 === 10,
      );

      // The control plane back, for what follows.
      controlPlane = await startControlPlane();
    });

    it('stopping the agent leaves no Sail rules behind (iptables-save as before)', async () => {
      const l = L();
      await client?.stop();
      client = undefined;
      for (const vm of VMS) {
        const r = await stopAgent(vm);
        expect(r.code).toBe(0);
        expect(await l.sailRules(vm)).toEqual([]);
        expect(await l.iptablesSave(vm)).toBe(baseline[vm]?.v4);
        expect(await l.iptablesSave(vm, { family: 'ipv6' })).toBe(baseline[vm]?.v6);
        expect(await sailPids(l, vm, 'proxy')).toEqual([]);
        // TPROXY's policy route is gone too.
        expect(await l.run(vm, ['ip', 'rule', 'show'])).not.toContain('lookup 133');
      }
      // And the app is plain reachable again (no capture).
      const r = await l.curl(CP, `http://${l.ip('vm2')}:${APP_PORTS.http}/`);
      expect(r.status).toBe(200);
    });
  });

  it('SSH stayed reachable on every VM throughout', () => {
    expect(sshFailures).toEqual([]);
  });
});
