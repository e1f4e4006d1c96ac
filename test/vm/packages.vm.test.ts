/**
 * The Debian packages in booted Debian VMs (issue 6, root only): three systemd-nspawn "VMs"
 * (test/vm/nspawn.ts: Debian bookworm minbase + systemd, each its own overlay disk) in the network
 * namespaces of a mesh lab (test/helpers/mesh-lab.ts), the packages installed from dist/ as an
 * operator would:
 *
 *   cp   10.A.B.2   sail-control-plane.deb; `systemctl enable --now sail-control-plane`;
 *                   `sail token create`, `sail apply` (ServiceEntry `web`, STRICT mTLS)
 *   vm1  10.A.B.11  sail-node-agent.deb, `sail join`, `systemctl enable --now sail-node-agent`;
 *                   app `web` (busybox httpd :9080, a CGI that echoes the caller's identity);
 *                   joined with `--capture-mode tproxy`
 *   vm2  10.A.B.12  sail-node-agent.deb, joined the same way; the client: curl http://web:9080/;
 *                   a legacy firewall rule of its own first, so capture uses iptables-legacy
 *
 * The LAN resolver of the lab answers on 10.A.B.2:53 (each VM's resolv.conf); the VMs have no
 * route off the machine. dist/ is bind-mounted read-only at /mnt/dist in every VM.
 *
 * Shown: the VMs boot systemd; the packages install with apt from the .deb files alone; the units
 * start and report ready (Type=notify); `sail status` is READY with the SPIFFE identity on disk;
 * the apps talk by name over mutual TLS (the server sees the client's SPIFFE ID) and a plaintext
 * caller is refused; `systemctl restart sail-node-agent` keeps them talking; a rebooted VM comes
 * back meshed by itself; `apt-get remove` leaves no Sail rules and no Sail processes; `apt-get
 * purge` leaves no state, no config and no sail-proxy user.
 *
 * Without the .deb files in dist/ (`npm run package`) the package steps are skipped with a
 * message, except with CI=true, where they fail. SAIL_VM_KEEP=1 leaves the VMs running after the
 * test (printing how to enter them); the next run's sweep removes them.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { CP, LAN_DNS_JS, MeshLab } from '../helpers/mesh-lab';
import { waitFor } from '../helpers/wait-for';
import { type BootTiming, ensureRootImage, NspawnVm, type RootImage, vmSkipReason } from './nspawn';

const DIST = path.resolve(process.env.SAIL_DIST ?? path.join(__dirname, '..', '..', 'dist'));
/** With CI=true, missing packages fail the test instead of skipping it. */
const requireDebs = process.env.CI === 'true';
const keep = process.env.SAIL_VM_KEEP === '1';

const ROOT = path.join(__dirname, '..', '..');
const BUILT_CLI = path.join(ROOT, 'build', 'cli', 'sail.js');

/**
 * Builds the packages into dist/ (the single executable, then the .deb files) when they are
 * missing or older than the build, so `npm test` tests what `npm run build` made. Only for the
 * default dist/ and only where the VM test can run (root, debootstrap, systemd-nspawn).
 */
function ensurePackages(): void {
  if (process.env.SAIL_DIST || !fs.existsSync(BUILT_CLI)) return;
  const built = fs.statSync(BUILT_CLI).mtimeMs;
  let debs: string[] = [];
  try {
    debs = fs.readdirSync(DIST).filter(f => f.endsWith('_amd64.deb'));
  } catch {
    // no dist/ yet
  }
  const fresh =
    debs.length >= 3 && debs.every(f => fs.statSync(path.join(DIST, f)).mtimeMs >= built);
  if (fresh) return;
  for (const [cmd, args] of [
    [process.execPath, [path.join(ROOT, 'scripts', 'package', 'sea.js')]],
    ['bash', [path.join(ROOT, 'packaging', 'deb', 'build.sh')]],
  ] as const) {
    const r = spawnSync(cmd, args, { cwd: ROOT, encoding: 'utf8', timeout: 600_000 });
    if (r.status !== 0)
      throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr || r.stdout}`);
  }
}

/** The .deb files in dist/ (the newest version of each package), by package name. */
function findDebs(): { nodeAgent?: string; controlPlane?: string; common?: string } {
  let files: string[] = [];
  try {
    files = fs.readdirSync(DIST).filter(f => f.endsWith('_amd64.deb'));
  } catch {
    return {};
  }
  const pick = (pkg: string) =>
    files
      .filter(f => f.startsWith(`${pkg}_`))
      .sort()
      .pop();
  const nodeAgent = pick('sail-node-agent');
  const controlPlane = pick('sail-control-plane');
  const common = pick('sail');
  return {
    ...(nodeAgent ? { nodeAgent } : {}),
    ...(controlPlane ? { controlPlane } : {}),
    ...(common ? { common } : {}),
  };
}
if (!vmSkipReason()) ensurePackages();
const debs = findDebs();
const haveDebs = !!debs.nodeAgent && !!debs.controlPlane;

const skipReason =
  vmSkipReason() ??
  (!fs.existsSync(LAN_DNS_JS) ? 'run `npx tsc -p .` first (the lab LAN resolver)' : undefined);
const run = skipReason ? describe.skip : describe;
if (skipReason) console.warn(`VM package test skipped: ${skipReason}`);
else if (!haveDebs)
  console.warn(
    `VM package test: no sail-node-agent_*_amd64.deb and sail-control-plane_*_amd64.deb in ${DIST}: ` +
      (requireDebs
        ? 'CI=true, so the package steps FAIL (run `npm run package` first)'
        : 'the package steps are skipped (run `npm run package` first)'),
  );
/** Package steps: run with the .deb files; fail without them under CI; else skipped. */
const pkgIt = haveDebs || requireDebs ? it : it.skip;

jest.setTimeout(180_000);

const TRUST_DOMAIN = 'cluster.local';
const NAMESPACE = 'default';
const APP_PORT = 9080;
const spiffeId = (sa: string) => `spiffe://${TRUST_DOMAIN}/ns/${NAMESPACE}/sa/${sa}`;

/** What each VM is: its workload (service account, labels, ports) and whether it serves `web`. */
const NODES = {
  // vm1 takes its inbound traffic with TPROXY (the agent's transparent socket, under systemd's
  // hardening), vm2 with the default REDIRECT.
  vm1: {
    sa: 'web',
    labels: 'app=web,version=v1',
    ports: [`http:${APP_PORT}`],
    serves: true,
    capture: 'tproxy',
    firewall: 'nft',
  },
  // vm2 has a legacy firewall rule of its own before joining: capture goes to iptables-legacy.
  vm2: {
    sa: 'client',
    labels: 'app=client',
    ports: [] as string[],
    serves: false,
    capture: '',
    firewall: 'legacy',
  },
} as const;
type Vm = keyof typeof NODES;
const VMS = Object.keys(NODES) as Vm[];

/** The app on vm1: busybox httpd with a CGI answering who it is and who called (XFCC). */
const APP_FILES = {
  '/etc/systemd/system/web.service': [
    '[Unit]',
    'Description=Test application web (busybox httpd)',
    'After=network.target',
    '',
    '[Service]',
    `ExecStart=/bin/busybox httpd -f -p 0.0.0.0:${APP_PORT} -h /srv/web`,
    'Restart=always',
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n'),
  '/srv/web/index.html': 'web\n',
  '/srv/web/cgi-bin/whoami': [
    '#!/bin/sh',
    "printf 'Content-Type: text/plain\\r\\n\\r\\n'",
    'echo "service=web"',
    'echo "node=$(cat /etc/hostname)"',
    'echo "xfcc=$HTTP_X_FORWARDED_CLIENT_CERT"',
    'echo "remote=$REMOTE_ADDR"',
    '',
  ].join('\n'),
};

/** The mesh configuration applied in cp: `web` with a VIP, and STRICT mutual TLS. */
function meshConfig(vip: string): string {
  const docs = [
    {
      apiVersion: 'networking.istio.io/v1beta1',
      kind: 'ServiceEntry',
      metadata: { name: 'web', namespace: NAMESPACE },
      spec: {
        hosts: [`web.${NAMESPACE}.svc.cluster.local`],
        addresses: [vip],
        location: 'MESH_INTERNAL',
        resolution: 'STATIC',
        ports: [{ number: APP_PORT, name: 'http', protocol: 'HTTP' }],
        workloadSelector: { labels: { app: 'web' } },
      },
    },
    {
      apiVersion: 'security.istio.io/v1beta1',
      kind: 'PeerAuthentication',
      metadata: { name: 'default', namespace: NAMESPACE },
      spec: { mtls: { mode: 'STRICT' } },
    },
  ];
  return docs.map(d => YAML.stringify(d)).join('---\n');
}

/** Step timings (ms), printed at the end. */
const timings: Record<string, number | string> = {};
async function timed<T>(what: string, fn: () => Promise<T>): Promise<T> {
  const started = Date.now();
  try {
    return await fn();
  } finally {
    timings[what] = Date.now() - started;
  }
}

run('Debian packages in booted VMs (systemd-nspawn)', () => {
  let lab: MeshLab | undefined;
  let image: RootImage;
  const vms: Partial<Record<typeof CP | Vm, NspawnVm>> = {};

  const L = () => {
    if (!lab) throw new Error('the lab was not created');
    return lab;
  };
  const V = (name: typeof CP | Vm) => {
    const vm = vms[name];
    if (!vm) throw new Error(`VM ${name} was not booted`);
    return vm;
  };
  const inDist = (file: string | undefined) => {
    if (!file) throw new Error(`a package is missing in ${DIST}: run \`npm run package\` first`);
    return `/mnt/dist/${file}`;
  };

  /** `apt-get install` of local .deb files (plus the common `sail` package when there is one). */
  async function aptInstall(vm: NspawnVm, deb: string | undefined): Promise<void> {
    const files = [inDist(deb), ...(debs.common ? [inDist(debs.common)] : [])];
    // The VMs have no route to a mirror: this works only if every dependency is installed.
    await vm.run(['apt-get', 'install', '-y', ...files], { timeoutMs: 120_000 });
  }

  /** The client's call: vm2 → http://web:9080/cgi-bin/whoami, by name, through both proxies. */
  async function callWeb(): Promise<{ node: string; xfcc: string; remote: string }> {
    const body = await V('vm2').run(
      ['curl', '-sS', '--fail', '--max-time', '3', `http://web:${APP_PORT}/cgi-bin/whoami`],
      { timeoutMs: 10_000 },
    );
    const field = (k: string) =>
      body
        .split('\n')
        .find(l => l.startsWith(`${k}=`))
        ?.slice(k.length + 1) ?? '';
    if (field('service') !== 'web') throw new Error(`not the web app's answer: ${body}`);
    return { node: field('node'), xfcc: field('xfcc'), remote: field('remote') };
  }

  /** Polls {@link callWeb} until it answers from vm1 with the client's identity. */
  async function untilTalking(
    what: string,
    timeoutMs = 30_000,
  ): Promise<{ node: string; xfcc: string; remote: string }> {
    return waitFor(
      async () => {
        const r = await callWeb();
        return r.node === 'vm1' && r.xfcc.includes(`URI=${spiffeId('client')}`) ? r : undefined;
      },
      { timeoutMs, intervalMs: 250, what },
    );
  }

  /** `sail status` in a VM once it exits 0 (READY); returns the JSON. */
  async function untilReady(vm: NspawnVm, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    return waitFor(
      async () => {
        const r = await vm.exec(['sail', 'status', '-o', 'json'], { timeoutMs: 10_000 });
        if (r.code !== 0) throw new Error(`sail status exited ${r.code}: ${r.stdout}${r.stderr}`);
        return JSON.parse(r.stdout) as Record<string, unknown>;
      },
      { timeoutMs, intervalMs: 250, what: `sail status READY in ${vm.name}` },
    );
  }

  /** Every Sail trace in a VM: iptables lines (both backends and families) and table-133 policy routing. */
  async function sailRules(vm: NspawnVm): Promise<string[]> {
    const script = [
      'for t in iptables-nft-save iptables-legacy-save ip6tables-nft-save ip6tables-legacy-save; do',
      '  command -v $t >/dev/null && $t 2>/dev/null | grep -i sail | sed "s/^/$t: /"',
      'done',
      'ip -4 rule show | grep -w "lookup 133"; ip -6 rule show | grep -w "lookup 133"',
      'ip -4 route show table 133; ip -6 route show table 133',
      'true',
    ].join('\n');
    return (await vm.sh(script)).split('\n').filter(Boolean);
  }

  /** Processes running the sail binary in a VM (`pgrep -a -f /usr/bin/sail`). */
  async function sailProcesses(vm: NspawnVm): Promise<string[]> {
    const r = await vm.exec(['pgrep', '-a', '-f', '^/usr/bin/sail( |$)']);
    return r.stdout.split('\n').filter(Boolean);
  }

  beforeAll(async () => {
    await NspawnVm.sweep();
    await MeshLab.sweep();
    image = await timed('image', () =>
      ensureRootImage({ log: m => process.stderr.write(`VM image: ${m}\n`) }),
    );
    timings['image source'] = image.source;
    lab = await MeshLab.create({ vms: VMS });
    const l = lab;
    const hosts = [
      `${l.ip(CP)} controlplane.lan controlplane cp.lan cp`,
      ...VMS.map(vm => `${l.ip(vm)} ${vm}.lan ${vm}`),
    ];
    const resolvConf = `nameserver ${l.ip(CP)}\nsearch lan\noptions timeout:2 attempts:2\n`;
    const binds = fs.existsSync(DIST) ? [{ host: DIST, guest: '/mnt/dist' }] : [];
    const booted = await Promise.all(
      ([CP, ...VMS] as const).map(async name => {
        const serves = name !== CP && NODES[name].serves;
        const r = await NspawnVm.create({
          name,
          tag: l.tag,
          image,
          netns: l.netns(name),
          hosts,
          resolvConf,
          binds,
          detached: keep,
          ...(serves ? { files: APP_FILES, enable: ['web.service'] } : {}),
        });
        vms[name] = r.vm;
        return [name, r.timing] as [string, BootTiming];
      }),
    );
    for (const [name, t] of booted) {
      timings[`boot ${name}`] = t.bootMs;
      if (t.failed.length > 0) timings[`boot ${name}: failed units`] = t.failed.join('; ');
    }
  }, 900_000);

  afterAll(async () => {
    process.stderr.write(
      `VM package test timings (ms):\n${Object.entries(timings)
        .map(([k, v]) => `  ${k.padEnd(40)} ${v}`)
        .join('\n')}\n`,
    );
    if (keep) {
      for (const vm of Object.values(vms)) vm.detach();
      process.stderr.write(
        `SAIL_VM_KEEP=1: VMs left running (the next run's sweep removes them):\n${Object.values(vms)
          .map(vm => `  ${vm.name}: ${vm.shellCommand()}`)
          .join('\n')}\n`,
      );
      return;
    }
    const results = await Promise.allSettled(Object.values(vms).map(vm => vm.destroy()));
    await lab?.destroy();
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }, 120_000);

  it('boots each VM: systemd running, its own host name, the lab address, capture possible', async () => {
    const l = L();
    for (const name of [CP, ...VMS] as const) {
      const vm = V(name);
      expect((await vm.run(['hostname'])).trim()).toBe(name);
      expect((await vm.exec(['systemctl', 'is-system-running'])).stdout.trim()).toMatch(
        /^(running|degraded)$/,
      );
      expect(await vm.run(['ip', '-4', '-o', 'addr', 'show', 'eth0'])).toContain(
        `${l.ip(name)}/24`,
      );
      // The agent's capture needs CAP_NET_ADMIN inside (PID 1's bounding set is the units').
      const capBnd = /^CapBnd:\s+([0-9a-f]+)$/m.exec(await vm.run(['cat', '/proc/1/status']))?.[1];
      expect((BigInt(`0x${capBnd ?? '0'}`) >> 12n) & 1n).toBe(1n); // CAP_NET_ADMIN = 12
      await vm.run(['iptables', '-t', 'nat', '-S']);
    }
    // The LAN: vm1 reaches the resolver in cp, and the names resolve.
    expect((await V('vm1').run(['getent', 'hosts', 'controlplane.lan'])).split(/\s+/)[0]).toBe(
      l.ip(CP),
    );
  });

  it('has the packages to test in dist/ (`npm run package`)', () => {
    if (!haveDebs && !requireDebs) {
      console.warn(`skipping the package steps: no .deb files in ${DIST}`);
      return;
    }
    expect(debs).toEqual(
      expect.objectContaining({
        nodeAgent: expect.stringMatching(/^sail-node-agent_.*_amd64\.deb$/),
        controlPlane: expect.stringMatching(/^sail-control-plane_.*_amd64\.deb$/),
      }),
    );
  });

  pkgIt(
    'installs the packages with apt from the .deb files alone; nothing is enabled or started',
    async () => {
      const cp = V(CP);
      await Promise.all([
        timed('install control plane (apt)', () => aptInstall(cp, debs.controlPlane)),
        ...VMS.map(name =>
          timed(`install node agent ${name} (apt)`, () => aptInstall(V(name), debs.nodeAgent)),
        ),
      ]);
      const states = async (vm: NspawnVm, units: string[]) => ({
        enabled: (await vm.exec(['systemctl', 'is-enabled', ...units])).stdout.trim().split('\n'),
        active: (await vm.exec(['systemctl', 'is-active', ...units])).stdout.trim().split('\n'),
      });
      // The operator chooses the one control-plane unit or the split ones, and starts the agent
      // only after `sail join`.
      const cpUnits = ['sail-control-plane', 'sail-ca', 'sail-pilot'];
      expect(await states(cp, cpUnits)).toEqual({
        enabled: cpUnits.map(() => 'disabled'),
        active: cpUnits.map(() => 'inactive'),
      });
      for (const name of VMS) {
        const vm = V(name);
        expect(await states(vm, ['sail-node-agent'])).toEqual({
          enabled: ['disabled'],
          active: ['inactive'],
        });
        expect((await vm.run(['getent', 'passwd', 'sail-proxy'])).split(':')[5]).toBe(
          '/var/lib/sail',
        );
        expect(await vm.run(['sail', 'version'])).toMatch(/\d+\.\d+\.\d+/);
      }
    },
  );

  pkgIt(
    'starts the control plane with systemd: `sail token` and `sail apply` work in its VM',
    async () => {
      const cp = V(CP);
      await timed('start control plane (until ready)', () =>
        cp.run(['systemctl', 'enable', '--now', 'sail-control-plane'], { timeoutMs: 60_000 }),
      );
      expect((await cp.run(['systemctl', 'is-active', 'sail-control-plane'])).trim()).toBe(
        'active',
      );
      // Type=notify: active means the admin socket (the CLI's default server) answers.
      await cp.run(['sail', 'token', 'list']);
      cp.writeFile('/root/mesh.yaml', meshConfig(L().vip(1)));
      await cp.run(['sail', 'apply', '-f', '/root/mesh.yaml']);
    },
  );

  pkgIt(
    'joins vm1 and vm2 with `sail join`; the agents start with systemd and are READY',
    async () => {
      const l = L();
      const cp = V(CP);
      const root = await cp.readFile('/var/lib/sail/control-plane/root-cert.pem');
      await Promise.all(
        VMS.map(async name => {
          const vm = V(name);
          const node = NODES[name];
          const token = (
            await cp.run([
              'sail',
              'token',
              'create',
              '--node',
              name,
              '--sa',
              `${NAMESPACE}/${node.sa}`,
            ])
          ).trim();
          vm.writeFile('/root/root-cert.pem', root);
          if (NODES[name].firewall === 'legacy') {
            // A host whose own firewall is iptables-legacy: capture must join it there (and
            // iptables-legacy take its lock, /run/xtables.lock, under ProtectSystem=strict).
            await vm.run([
              'iptables-legacy',
              '-A',
              'INPUT',
              '-p',
              'tcp',
              '--dport',
              '7',
              '-j',
              'ACCEPT',
            ]);
          }
          await vm.run([
            'sail',
            'join',
            '--control-plane',
            l.ip(CP),
            '--token',
            token,
            '--ca-root',
            '/root/root-cert.pem',
            '--node',
            name,
            '--namespace',
            NAMESPACE,
            '--service-account',
            node.sa,
            '--labels',
            node.labels,
            ...node.ports.flatMap(p => ['--port', p]),
            ...(node.capture ? ['--capture-mode', node.capture] : []),
          ]);
          // Type=notify: `systemctl start` returns once the agent is ready (identity, proxy, capture).
          await timed(`start node agent ${name} (until ready)`, () =>
            vm.run(['systemctl', 'enable', '--now', 'sail-node-agent'], { timeoutMs: 90_000 }),
          );
        }),
      );
      for (const name of VMS) {
        const vm = V(name);
        expect((await vm.run(['systemctl', 'is-active', 'sail-node-agent'])).trim()).toBe('active');
        const status = await untilReady(vm);
        expect(status).toMatchObject({
          ready: true,
          node: name,
          spiffeId: spiffeId(NODES[name].sa),
        });
        expect(await vm.run(['sail', 'status'])).toMatch(
          new RegExp(`^Node:\\s+${name}\\s+READY`, 'm'),
        );
        // The identity on disk: made on the host, signed by the control plane's CA.
        for (const f of ['cert-chain.pem', 'key.pem', 'root-cert.pem'])
          expect(await vm.readFile(`/var/lib/sail/certs/${f}`)).toContain('-----BEGIN');
        // The join token was used up.
        expect(await vm.exists('/etc/sail/join-token')).toBe(false);
        // The proxy runs as the unprivileged sail-proxy user, supervised by the agent.
        expect(await vm.run(['ps', '-o', 'user=,args=', '-u', 'sail-proxy'])).toMatch(
          /^sail-pr\S*\s+\/usr\/bin\/sail proxy/m,
        );
        const mode = NODES[name].capture || 'redirect';
        expect(await vm.run(['sail', 'status'])).toMatch(
          new RegExp(`^Capture:\\s+${mode} via iptables-${NODES[name].firewall}, installed`, 'm'),
        );
        // The unit's SystemCallFilter holds for the agent and the proxy it started (seccomp
        // filter mode 2), and the proxy has CAP_NET_ADMIN (bit 12) only under TPROXY, which keeps
        // the callers' addresses.
        const procStatus = (pid: string) => vm.run(['cat', `/proc/${pid.trim()}/status`]);
        const agentPid = await vm.run([
          'systemctl',
          'show',
          '-p',
          'MainPID',
          '--value',
          'sail-node-agent',
        ]);
        expect(await procStatus(agentPid)).toMatch(/^Seccomp:\s+2$/m);
        const proxy = await procStatus(await vm.run(['pgrep', '-u', 'sail-proxy', '-o']));
        expect(proxy).toMatch(/^Seccomp:\s+2$/m);
        expect(proxy).toMatch(
          new RegExp(
            `^CapEff:\\s+${mode === 'tproxy' ? '0000000000001000' : '0000000000000000'}$`,
            'm',
          ),
        );
      }
    },
  );

  pkgIt('the apps on vm1 and vm2 talk by name over mutual TLS; plaintext is refused', async () => {
    const r = await timed('first call by name', () => untilTalking('vm2 → web over mTLS'));
    expect(r.xfcc).toContain(`By=${spiffeId('web')}`);
    expect(r.xfcc).toContain(`URI=${spiffeId('client')}`);
    // vm1 takes it by TPROXY and keeps the caller's address: under the unit's hardening, the
    // agent gave its proxy CAP_NET_ADMIN (setpriv), and the app sees vm2, not 127.0.0.1.
    expect(r.remote).toBe(L().ip('vm2'));
    // From cp (no agent, no certificate) straight to vm1's port: STRICT refuses it.
    const plain = await V(CP).exec(
      ['curl', '-sS', '--max-time', '3', `http://${L().ip('vm1')}:${APP_PORT}/cgi-bin/whoami`],
      { timeoutMs: 10_000 },
    );
    expect(plain.stdout).not.toContain('service=web');
  });

  pkgIt('`systemctl restart sail-node-agent` keeps them talking', async () => {
    for (const name of VMS) {
      const vm = V(name);
      const mainPid = async () =>
        (await vm.run(['systemctl', 'show', '-p', 'MainPID', '--value', 'sail-node-agent'])).trim();
      const before = await mainPid();
      const rulesBefore = await sailRules(vm);
      expect(rulesBefore).not.toEqual([]);
      await timed(`restart node agent ${name}`, () =>
        vm.run(['systemctl', 'restart', 'sail-node-agent'], { timeoutMs: 90_000 }),
      );
      expect(await mainPid()).not.toBe(before);
      await untilReady(vm);
      await untilTalking(`vm2 → web after restarting the agent in ${name}`);
      // The same rules, once: the stop removed them and the start installed them again.
      expect(await sailRules(vm)).toEqual(rulesBefore);
    }
  });

  pkgIt('a rebooted VM comes back meshed by itself', async () => {
    const vm1 = V('vm1');
    const t = await timed('reboot vm1 (until systemd running)', () => vm1.reboot());
    timings['reboot vm1: down'] = t.downMs;
    if (t.failed.length > 0) timings['reboot vm1: failed units'] = t.failed.join('; ');
    await timed('vm1 agent ready after reboot', () => untilReady(vm1, 60_000));
    expect((await vm1.run(['systemctl', 'is-active', 'sail-node-agent'])).trim()).toBe('active');
    expect((await vm1.run(['systemctl', 'is-active', 'web'])).trim()).toBe('active');
    await untilTalking('vm2 → web after vm1 rebooted', 60_000);
  });

  pkgIt(
    'an upgrade (dpkg -i over the installed packages) keeps config and identity and restarts the agent',
    async () => {
      const vm1 = V('vm1');
      const sha = (file: string) => vm1.run(['sha256sum', file]);
      const config = await sha('/etc/sail/node-agent.yaml');
      const cert = await sha('/var/lib/sail/certs/cert-chain.pem');
      const pidBefore = (
        await vm1.run(['systemctl', 'show', '-p', 'MainPID', '--value', 'sail-node-agent'])
      ).trim();
      const files = [inDist(debs.nodeAgent), ...(debs.common ? [inDist(debs.common)] : [])];
      await timed('dpkg -i upgrade (vm1)', () =>
        vm1.run(['dpkg', '-i', '--force-confold', ...files], { timeoutMs: 120_000 }),
      );
      expect(await sha('/etc/sail/node-agent.yaml')).toBe(config);
      expect(await sha('/var/lib/sail/certs/cert-chain.pem')).toBe(cert);
      await untilReady(vm1, 60_000);
      expect((await vm1.run(['systemctl', 'is-active', 'sail-node-agent'])).trim()).toBe('active');
      const pidAfter = (
        await vm1.run(['systemctl', 'show', '-p', 'MainPID', '--value', 'sail-node-agent'])
      ).trim();
      expect(pidAfter).not.toBe(pidBefore);
      await untilTalking('vm2 → web after the upgrade of vm1', 60_000);
    },
  );

  pkgIt('`apt-get remove sail-node-agent` leaves no Sail rules and no Sail processes', async () => {
    const vm2 = V('vm2');
    expect(await sailRules(vm2)).not.toEqual([]);
    await timed('apt-get remove (vm2)', () =>
      vm2.run(['apt-get', 'remove', '-y', 'sail-node-agent'], { timeoutMs: 90_000 }),
    );
    expect(await sailRules(vm2)).toEqual([]);
    expect(await sailProcesses(vm2)).toEqual([]);
    expect((await vm2.exec(['systemctl', 'is-active', 'sail-node-agent'])).stdout.trim()).not.toBe(
      'active',
    );
    // Removed, not purged: the config and the identity stay for a reinstall.
    expect(await vm2.exists('/etc/sail/node-agent.yaml')).toBe(true);
    expect(await vm2.exists('/var/lib/sail/certs/cert-chain.pem')).toBe(true);
  });

  pkgIt('`apt-get purge` leaves no state, no config and no sail-proxy user', async () => {
    const vm2 = V('vm2');
    const pkgs = ['sail-node-agent', ...(debs.common ? ['sail'] : [])];
    await timed('apt-get purge (vm2)', () =>
      vm2.run(['apt-get', 'purge', '-y', ...pkgs], { timeoutMs: 90_000 }),
    );
    for (const p of ['/var/lib/sail', '/etc/sail', '/usr/lib/sail', '/usr/bin/sail', '/run/sail'])
      expect(`${p}: ${(await vm2.exists(p)) ? 'present' : 'gone'}`).toBe(`${p}: gone`);
    expect((await vm2.exec(['getent', 'passwd', 'sail-proxy'])).code).not.toBe(0);
    expect((await vm2.exec(['getent', 'group', 'sail-proxy'])).code).not.toBe(0);
    expect(await sailRules(vm2)).toEqual([]);
    expect(
      (await vm2.run(['dpkg-query', '-W', '-f', '${db:Status-Abbrev} ${Package}\\n']))
        .split('\n')
        .filter(l => /\bsail/.test(l)),
    ).toEqual([]);
  });
});
