/**
 * The single executable (`npm run package:sea`: dist/sail + dist/lib/sail/) run on its own: copied
 * out of the checkout into the installed layout (TMP/usr/bin/sail, TMP/usr/lib/sail/) and as the
 * build leaves it (TMP/dist/sail, TMP/dist/lib/sail/), run from a directory outside the checkout
 * with an environment without NODE_PATH, so nothing resolves from node_modules/ or build/.
 *
 * Shown: version and --help; `sail control-plane` starts (CA, pilot, admin socket: Sail's protos
 * load) and stops on SIGTERM with exit 0; `token create`, `join`, `node-agent --validate`; the
 * node agent gets its identity from that CA and, as root (in a private network namespace, with the
 * sail-proxy user), runs its proxy from the same binary (selfCommand), which gets its
 * configuration from pilot (pilot encodes Envoy's protos; the proxy decodes them); without root
 * the test runs that proxy itself; `proxy --validate` and `capture show`; `sail pilot --store etcd`
 * (etcd's client loads its protos lazily, from the resource directory); a capture-mode proxy
 * loads the native addon from the resource directory, and fails clearly when the addon is missing.
 *
 * dist/sail is (re)built in beforeAll when it is missing or older than build/ (`npm run build`
 * must have run: npm test does).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { EtcdServer } from '../helpers/etcd';
import { TestCa } from '../helpers/test-ca';
import { SailProcess } from '../helpers/sail-process';
import { makeTmpDir } from '../helpers/tmp-dir';
import { waitFor } from '../helpers/wait-for';

const ROOT = path.join(__dirname, '..', '..');
const DIST = path.join(ROOT, 'dist');
const SAIL_BIN = path.join(DIST, 'sail');
const BUILD_INPUTS = [
  path.join(ROOT, 'build', 'cli', 'sail.js'),
  path.join(ROOT, 'build', 'common', 'resources.js'),
  path.join(ROOT, 'build', 'common', 'native', 'sail_native.node'),
];
const SEA_SCRIPT = path.join(ROOT, 'scripts', 'package', 'sea.js');
const VERSION = (
  JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
    version: string;
  }
).version;

const mtime = (f: string) => fs.statSync(f).mtimeMs;
const isRoot = process.getuid?.() === 0;
const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const userExists = (name: string) => spawnSync('id', ['-u', name]).status === 0;

const skipReason =
  process.platform !== 'linux' || process.arch !== 'x64'
    ? 'the single executable is built for Linux x64 only'
    : !BUILD_INPUTS.every(f => fs.existsSync(f))
      ? 'run `npm run build` first (npm test does)'
      : undefined;
if (skipReason) {
  console.warn(`test/packaging/sea.test.ts skipped: ${skipReason}`);
}
const describeSea = skipReason ? describe.skip : describe;

/** An environment with nothing from this checkout or this Node: no NODE_PATH, NODE_OPTIONS. */
function cleanEnv(home: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: home,
    ...extra,
  };
}

/** Builds dist/ when it is missing or older than build/. */
function ensureBuilt(): void {
  const built = fs.existsSync(SAIL_BIN) && fs.existsSync(path.join(DIST, 'lib', 'sail'));
  const newest = Math.max(...BUILD_INPUTS.map(mtime), mtime(SEA_SCRIPT));
  if (built && mtime(SAIL_BIN) >= newest) return;
  const r = spawnSync(process.execPath, [SEA_SCRIPT], { cwd: ROOT, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`scripts/package/sea.js failed: ${r.stdout}\n${r.stderr}`);
}

describeSea('the single executable (dist/sail)', () => {
  const tmp = makeTmpDir('sail-sea-test-');
  const work = path.join(tmp.dir, 'work'); // the cwd of every command: outside the checkout
  const installedBin = path.join(tmp.dir, 'usr', 'bin', 'sail');
  const distBin = path.join(tmp.dir, 'dist', 'sail');
  const env = cleanEnv(work);
  // As root, everything runs in a private network namespace: the agent's proxy uses fixed ports.
  const netns = isRoot && has('ip') ? `sail-sea-${process.pid.toString(36)}` : undefined;
  const supervised = netns !== undefined && userExists('sail-proxy');
  const procs: SailProcess[] = [];

  const prefix = (): string[] => (netns ? ['ip', 'netns', 'exec', netns] : []);
  const run = (bin: string, args: string[], extraEnv: NodeJS.ProcessEnv = {}) => {
    const cmd = [...prefix(), bin, ...args];
    const r = spawnSync(cmd[0] as string, cmd.slice(1), {
      cwd: work,
      env: { ...env, ...extraEnv },
      encoding: 'utf8',
      timeout: 30_000,
    });
    return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  };
  const start = (bin: string, args: string[], extraEnv: NodeJS.ProcessEnv = {}, inNetns = true) => {
    const cmd = [...(inNetns ? prefix() : []), bin, ...args];
    const p = new SailProcess(
      [],
      {},
      { command: cmd, cwd: work, exactEnv: { ...env, ...extraEnv } },
    );
    procs.push(p);
    return p;
  };

  // Shared by the steps below, in order.
  let cp: SailProcess;
  let caAddress = '';
  let pilotAddress = '';
  const cpDir = path.join(tmp.dir, 'cp');
  const hostDir = path.join(tmp.dir, 'host');
  const agentConfig = path.join(hostDir, 'node-agent.yaml');
  let proxyStateFile = '';
  let nodeId = '';

  beforeAll(() => {
    ensureBuilt();
    // The installed layout (/usr/bin/sail + /usr/lib/sail/) and the build's own (dist/).
    for (const [bin, lib] of [
      [installedBin, path.join(tmp.dir, 'usr', 'lib', 'sail')],
      [distBin, path.join(tmp.dir, 'dist', 'lib', 'sail')],
    ] as const) {
      fs.mkdirSync(path.dirname(bin), { recursive: true });
      fs.copyFileSync(SAIL_BIN, bin);
      fs.chmodSync(bin, 0o755);
      fs.cpSync(path.join(DIST, 'lib', 'sail'), lib, { recursive: true });
    }
    fs.mkdirSync(work, { recursive: true });
    fs.mkdirSync(hostDir, { recursive: true });
    // The supervised proxy runs as sail-proxy: it must reach the binary and the host's files.
    fs.chmodSync(tmp.dir, 0o755);
    if (netns) {
      expect(spawnSync('ip', ['netns', 'add', netns]).status).toBe(0);
      expect(spawnSync('ip', ['-n', netns, 'link', 'set', 'lo', 'up']).status).toBe(0);
    }
  }, 300_000);

  afterAll(async () => {
    for (const p of procs.reverse()) await p.stop(15_000);
    if (netns) spawnSync('ip', ['netns', 'del', netns]);
    tmp.cleanup();
  });

  it('is a Linux executable that prints its version and help', () => {
    expect(fs.readFileSync(installedBin).subarray(0, 4).toString('latin1')).toBe('\x7fELF');
    const v = run(installedBin, ['version']);
    expect(v).toMatchObject({ status: 0, stderr: '' });
    expect(v.stdout).toBe(`sail ${VERSION} (node ${process.version})\n`);
    const h = run(installedBin, ['--help']);
    expect(h.status).toBe(0);
    for (const cmd of ['control-plane', 'node-agent', 'join', 'proxy', 'capture', 'token']) {
      expect(h.stdout).toContain(`sail ${cmd}`);
    }
    // No warning about the experimental SEA feature on stderr.
    expect(h.stderr).toBe('');
  });

  it('runs the control plane (CA, pilot, admin), protos from the resource directory', async () => {
    cp = start(installedBin, [
      'control-plane',
      '--data-dir',
      cpDir,
      '--ca-listen',
      '127.0.0.1:0',
      '--pilot-listen',
      '127.0.0.1:0',
      '--admin-listen',
      '',
    ]);
    caAddress = (await cp.waitForLog('CA listening', 30_000)).address as string;
    pilotAddress = (await cp.waitForLog('Pilot xDS (mTLS) listening', 30_000)).address as string;
    await cp.waitForLog('Pilot ready', 30_000);
    await cp.waitForLog('Admin socket listening', 30_000);
    expect(caAddress).toMatch(/^127\.0\.0\.1:\d+$/);
  });

  it('creates a token, joins, and validates the joined config', () => {
    const token = run(installedBin, [
      'token',
      'create',
      '--server',
      `unix://${path.join(cpDir, 'admin.sock')}`,
      '--node',
      'vm-1',
      '--sa',
      'default/web',
    ]);
    expect(token).toMatchObject({ status: 0, stderr: '' });
    const joined = run(installedBin, [
      'join',
      '--control-plane',
      '127.0.0.1',
      '--ca-address',
      caAddress,
      '--token',
      token.stdout.trim(),
      '--ca-root',
      path.join(cpDir, 'root-cert.pem'),
      '--node',
      'vm-1',
      '--service-account',
      'web',
      '--config',
      agentConfig,
    ]);
    expect(joined).toMatchObject({ status: 0 });
    const valid = run(installedBin, ['node-agent', '--validate', '--config', agentConfig]);
    expect(valid).toMatchObject({ status: 0 });
    expect(valid.stdout).toContain('valid (node vm-1, spiffe://cluster.local/ns/default/sa/web');
  });

  it('runs the node agent and a proxy configured by pilot', async () => {
    const doc = YAML.parse(fs.readFileSync(agentConfig, 'utf8')) as Record<string, unknown>;
    const certsDir = path.join(hostDir, 'certs');
    Object.assign(doc, {
      controlPlane: { ...(doc.controlPlane as object), pilotAddress },
      certs: { ...(doc.certs as object), dir: certsDir },
      stateDir: path.join(hostDir, 'state'),
      runDir: path.join(hostDir, 'run'),
      status: { listen: '127.0.0.1:0' },
      capture: { mode: 'none' },
      dns: { enabled: false },
      proxyless: { enabled: false },
      proxy: { enabled: supervised },
    });
    fs.writeFileSync(agentConfig, YAML.stringify(doc));
    const agent = start(installedBin, ['node-agent', '--config', agentConfig]);
    await agent.waitForLog('Workload identity ready', 30_000);

    // The proxy: the agent's own child (selfCommand: this binary) as root, else started here.
    let proxy = agent;
    if (supervised) {
      await agent.waitForLog('Node agent ready', 30_000);
    } else {
      const proxyConfig = path.join(hostDir, 'proxy.yaml');
      fs.writeFileSync(
        proxyConfig,
        YAML.stringify({
          node: { name: 'vm-1', ip: '127.0.0.1', namespace: 'default' },
          pilotAddress,
          certsDir,
          stateDir: path.join(hostDir, 'state', 'proxy'),
          traffic: { mode: 'explicit' },
          adminListen: '127.0.0.1:0',
          metricsListen: '127.0.0.1:0',
        }),
      );
      proxy = start(installedBin, ['proxy', '--config', proxyConfig]);
    }
    const started = await proxy.waitForLog('Proxy started', 30_000, l => l.role === 'proxy');
    await proxy.waitForLog('Proxy ready', 30_000, l => l.role === 'proxy');
    const applied = await proxy.waitForLog(
      'Applied configuration',
      30_000,
      l => l.role === 'proxy',
    );
    expect(applied.clusters).toBeGreaterThan(0);
    nodeId = started.nodeId as string;
    // The agent keeps its proxy's state in STATE_DIR/state/proxy/.
    proxyStateFile = supervised
      ? path.join(hostDir, 'state', 'state', 'proxy', 'proxy-xds.json')
      : path.join(hostDir, 'state', 'proxy', 'proxy-xds.json');
    await waitFor(() => fs.existsSync(proxyStateFile), { what: proxyStateFile });
    if (supervised) {
      const ps = spawnSync('ps', ['-o', 'user=,args=', '-C', 'sail'], { encoding: 'utf8' });
      const escaped = installedBin.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      expect(ps.stdout).toMatch(new RegExp(`^sail-pr\\S*\\s+${escaped} proxy --config`, 'm'));
    }
    expect(await agent.stop(15_000)).toBe(0);
    if (proxy !== agent) expect(await proxy.stop(15_000)).toBe(0);
  }, 90_000);

  it('validates the sample proxy config and shows the capture rules', () => {
    const v = run(installedBin, [
      'proxy',
      '--validate',
      '--config',
      path.join(ROOT, 'packaging', 'proxy.yaml'),
    ]);
    expect(v).toMatchObject({ status: 0 });
    expect(v.stdout).toContain('proxy.yaml: valid');
    const show = run(installedBin, [
      'capture',
      'show',
      '--config',
      path.join(ROOT, 'packaging', 'node-agent.yaml'),
      '--proxy-uid',
      '1337',
      '--proxy-gid',
      '1337',
    ]);
    expect(show).toMatchObject({ status: 0, stderr: '' });
    expect(show.stdout).toContain('-j REDIRECT --to-ports 15001');
  });

  describe('the native addon (capture mode)', () => {
    /** A capture-mode proxy that restores the state file above, so it binds at once. */
    const captureProxy = (name: string, extraEnv: NodeJS.ProcessEnv = {}) => {
      const dir = path.join(tmp.dir, name);
      fs.mkdirSync(path.join(dir, 'state'), { recursive: true });
      fs.copyFileSync(proxyStateFile, path.join(dir, 'state', 'proxy-xds.json'));
      const config = path.join(dir, 'proxy.yaml');
      fs.writeFileSync(
        config,
        YAML.stringify({
          nodeId,
          pilotAddress: '127.0.0.1:9', // nothing there: the state file is all it gets
          certsDir: path.join(hostDir, 'certs'),
          stateDir: path.join(dir, 'state'),
          traffic: { mode: 'capture', outboundListen: '127.0.0.1:0', inboundListen: '127.0.0.1:0' },
          adminListen: '127.0.0.1:0',
          metricsListen: '127.0.0.1:0',
        }),
      );
      return start(distBin, ['proxy', '--config', config], extraEnv);
    };

    it('loads it from dist/lib/sail/ and binds the capture listeners', async () => {
      const proxy = captureProxy('capture-ok');
      await proxy.waitForLog('Listener bound', 30_000, l => l.listener === 'virtualOutbound');
      await proxy.waitForLog('Applied first configuration', 30_000);
      expect(proxy.lines.filter(l => l.msg === 'Cannot apply configuration')).toEqual([]);
      expect(await proxy.stop(15_000)).toBe(0);
    });

    it('names the missing file when the resource directory has no addon', async () => {
      const res = path.join(tmp.dir, 'no-addon');
      fs.cpSync(path.join(DIST, 'lib', 'sail'), res, { recursive: true });
      fs.rmSync(path.join(res, 'sail_native.node'));
      const proxy = captureProxy('capture-missing', { SAIL_RESOURCE_DIR: res });
      const line = await proxy.waitForLog('Cannot apply configuration', 30_000);
      expect(JSON.stringify(line.err)).toContain(
        `native addon sail_native.node not found (looked in ${path.join(res, 'sail_native.node')}`,
      );
      expect(await proxy.stop(15_000)).toBe(0);
    });
  });

  it('runs pilot on etcd (etcd3 loads its protos from the resource directory)', async () => {
    const ca = await TestCa.create();
    const cert = await ca.issueWorkloadCert({
      node: 'pilot',
      spiffeId: 'spiffe://cluster.local/ns/sail-system/sa/sail-control-plane',
      notBeforeMs: Date.now() - 60_000,
      notAfterMs: Date.now() + 3600_000,
    });
    const certDir = path.join(tmp.dir, 'pilot-certs');
    fs.mkdirSync(certDir, { mode: 0o700 });
    fs.mkdirSync(path.join(tmp.dir, 'pilot-etcd'), { mode: 0o700 });
    fs.writeFileSync(path.join(certDir, 'cert-chain.pem'), cert.certChainPem);
    fs.writeFileSync(path.join(certDir, 'key.pem'), cert.keyPem, { mode: 0o600 });
    fs.writeFileSync(path.join(certDir, 'root-cert.pem'), ca.rootPem);
    const etcd = await EtcdServer.start();
    try {
      // On this host's loopback, where etcd is (pilot takes port 0 only).
      const pilot = start(
        installedBin,
        [
          'pilot',
          '--store',
          'etcd',
          '--etcd-endpoints',
          etcd.endpoint,
          '--cert-dir',
          certDir,
          '--listen',
          '127.0.0.1:0',
          '--admin-listen',
          '',
          '--data-dir',
          path.join(tmp.dir, 'pilot-etcd'),
        ],
        {},
        false,
      );
      const loaded = await pilot.waitForLog('Loaded config store', 30_000);
      expect(loaded.address).toBe(etcd.endpoint);
      await pilot.waitForLog('Pilot ready', 30_000);
      await pilot.waitForLog('Admin socket listening', 30_000);
      expect(await pilot.stop(15_000)).toBe(0);
    } finally {
      await etcd.stop();
    }
  }, 60_000);

  it('stops the control plane on SIGTERM with exit code 0', async () => {
    expect(await cp.stop(15_000)).toBe(0);
    expect(cp.lines.map(l => l.msg)).toContain('Stopped');
  });
});
