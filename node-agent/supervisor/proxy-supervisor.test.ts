/**
 * ProxySupervisor with real child processes: a small stand-in proxy (testdata/fake-proxy.js) that
 * starts in milliseconds, so crash loops, escalation to SIGKILL and signal timing can be shown
 * quickly. test/integration/proxy-supervisor.test.ts runs the real `sail proxy`.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { prom } from '../../common/metrics';
import { LogCapture } from '../../test/helpers/log-capture';
import { freePort } from '../../test/helpers/sail-process';
import { makeTmpDir } from '../../test/helpers/tmp-dir';
import { waitFor } from '../../test/helpers/wait-for';
import { ProxySpawnError } from './errors';
import { PID_FILE_NAME } from './pid-file';
import { ProxySupervisor, type ProxySupervisorOptions, withCapabilities } from './proxy-supervisor';
import { selfCommand } from './self-command';

const FAKE_PROXY = path.join(__dirname, 'testdata', 'fake-proxy.js');

jest.setTimeout(20_000);

let tmp: { dir: string; cleanup: () => void };
const open: ProxySupervisor[] = [];
beforeEach(() => {
  tmp = makeTmpDir('sail-supervisor-');
});
afterEach(async () => {
  await Promise.all(open.splice(0).map(s => s.close()));
  tmp.cleanup();
});

/** A supervisor of the fake proxy; `config` adds fake-proxy keys. */
async function make(
  config: Record<string, unknown> = {},
  over: Partial<ProxySupervisorOptions> = {},
): Promise<{
  sup: ProxySupervisor;
  logs: LogCapture;
  registry: prom.Registry;
  events: () => string[];
  configFile: string;
}> {
  const logs = new LogCapture();
  const registry = new prom.Registry();
  const adminAddress = `127.0.0.1:${await freePort()}`;
  const eventsFile = path.join(tmp.dir, 'events.log');
  const configFile = path.join(tmp.dir, 'run', 'proxy.yaml');
  const sup = new ProxySupervisor({
    logger: logs.logger,
    registry,
    command: [process.execPath, FAKE_PROXY],
    configFile,
    config: { adminListen: adminAddress, eventsFile, ...config },
    adminAddress,
    stdio: 'pipe',
    restartBackoff: { initialMs: 50, maxMs: 400 },
    stopGraceMs: 2_000,
    ...over,
  });
  open.push(sup);
  const events = () =>
    fs.existsSync(eventsFile) ? fs.readFileSync(eventsFile, 'utf8').trim().split('\n') : [];
  return { sup, logs, registry, events, configFile };
}

async function metric(registry: prom.Registry, name: string): Promise<number> {
  const m = await registry.getSingleMetric(name)?.get();
  return m?.values[0]?.value ?? NaN;
}

describe('ProxySupervisor', () => {
  it('writes the config 0640, runs the proxy without NOTIFY_SOCKET, and tracks readiness', async () => {
    const saved = process.env.NOTIFY_SOCKET;
    process.env.NOTIFY_SOCKET = '/run/systemd/notify';
    try {
      const { sup, registry, events, configFile } = await make(
        { readyAfterMs: 300 },
        { env: { FAKE_MARK: 'x1' } },
      );
      expect((await sup.status()).state).toBe('stopped');
      await sup.start();
      const st = fs.statSync(configFile);
      expect(st.mode & 0o777).toBe(0o640);
      expect(YAML.parse(fs.readFileSync(configFile, 'utf8'))).toMatchObject({ readyAfterMs: 300 });
      const pid = Number(
        fs.readFileSync(path.join(path.dirname(configFile), PID_FILE_NAME), 'utf8'),
      );
      expect((await sup.status()).pid).toBe(pid);
      expect(sup.ready).toBe(false);
      expect(['starting']).toContain((await sup.status()).state);
      expect(await metric(registry, 'sail_agent_proxy_up')).toBe(1);
      await sup.waitReady();
      expect(sup.ready).toBe(true);
      const status = await sup.status();
      expect(status).toMatchObject({
        state: 'ready',
        pid,
        restarts: 0,
        xds: { connected: true, versions: { clusters: 'v7', listeners: 'v7' } },
      });
      expect(await metric(registry, 'sail_agent_proxy_ready')).toBe(1);
      expect(events()).toContain(`${pid} env NOTIFY_SOCKET= FAKE_MARK=x1`);
    } finally {
      if (saved === undefined) delete process.env.NOTIFY_SOCKET;
      else process.env.NOTIFY_SOCKET = saved;
    }
  });

  it('restarts a killed proxy and counts the restart', async () => {
    const { sup, registry, logs } = await make();
    await sup.start();
    await sup.waitReady();
    const first = (await sup.status()).pid!;
    process.kill(first, 'SIGKILL');
    await waitFor(async () => (await sup.status()).pid !== first && sup.ready, {
      timeoutMs: 5_000,
      what: 'a new ready proxy',
    });
    const st = await sup.status();
    expect(st.restarts).toBe(1);
    expect(st.lastExit).toMatchObject({ code: null, signal: 'SIGKILL' });
    expect(await metric(registry, 'sail_agent_proxy_restarts_total')).toBe(1);
    expect(logs.find('Proxy exited; restarting after a delay', 'warn')).toHaveLength(1);
  });

  it('backs off a crash loop with growing delays', async () => {
    const { sup, logs } = await make({ exitCode: 3 });
    await sup.start();
    const t0 = Date.now();
    await waitFor(() => Date.now() - t0 >= 1_500, { intervalMs: 100, timeoutMs: 3_000 });
    const exits = logs.find('Proxy exited; restarting after a delay');
    // Delays 25-50, 50-100, 100-200, 200-400, then 200-400 ms: at most ~9 exits in 1.5 s
    // (each run also takes tens of ms); without backoff there would be dozens.
    expect(exits.length).toBeGreaterThanOrEqual(3);
    expect(exits.length).toBeLessThanOrEqual(10);
    const delays = exits.map(e => e.delayMs as number);
    expect(delays[0]).toBeLessThanOrEqual(50);
    expect(delays.slice(3).every(d => d >= 200 && d <= 400)).toBe(true);
    expect(exits.every(e => e.code === 3)).toBe(true);
    const st = await sup.status();
    // Between exits it is in backoff almost all the time; a spawn is a few ms.
    await waitFor(async () => (await sup.status()).state === 'backoff', { timeoutMs: 2_000 });
    expect(st.lastExit).toMatchObject({ code: 3, signal: null });
    expect(st.restarts).toBeGreaterThanOrEqual(2);
    await sup.close();
    expect((await sup.status()).state).toBe('stopped');
  });

  it('restarts from the initial delay after a child stayed up long enough', async () => {
    const { sup, logs } = await make(
      {},
      { restartBackoff: { initialMs: 50, maxMs: 400, resetAfterMs: 300 } },
    );
    await sup.start();
    for (let i = 0; i < 3; i++) {
      await sup.waitReady();
      const pid = (await sup.status()).pid!;
      const upSince = Date.now();
      // Up for more than resetAfterMs before each kill.
      await waitFor(() => Date.now() - upSince >= 350, { intervalMs: 50 });
      process.kill(pid, 'SIGKILL');
      await waitFor(async () => (await sup.status()).pid !== pid && sup.ready, {
        timeoutMs: 5_000,
      });
    }
    const attempts = logs.find('Proxy exited; restarting after a delay').map(e => e.attempt);
    expect(attempts).toEqual([1, 1, 1]);
  });

  it('lets the proxy drain on close, and never restarts it', async () => {
    const { sup, events, registry, configFile } = await make({ termDelayMs: 400 });
    await sup.start();
    await sup.waitReady();
    const pid = (await sup.status()).pid!;
    const t0 = Date.now();
    await sup.close();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(350);
    expect(events()).toContain(`${pid} term`);
    expect(fs.existsSync(path.join(path.dirname(configFile), PID_FILE_NAME))).toBe(false);
    expect(await sup.status()).toMatchObject({ state: 'stopped', lastExit: { code: 0 } });
    expect(await metric(registry, 'sail_agent_proxy_up')).toBe(0);
    expect(events().filter(e => / start /.test(e))).toHaveLength(1);
    await expect(sup.waitReady()).rejects.toThrow('closed');
    await sup.close(); // idempotent
  });

  it('kills a proxy that ignores SIGTERM after stopGraceMs', async () => {
    const { sup, logs } = await make({ ignoreTerm: true }, { stopGraceMs: 300 });
    await sup.start();
    await sup.waitReady();
    await sup.close();
    expect(
      logs.find('Proxy did not stop within the grace period; killing it', 'warn'),
    ).toHaveLength(1);
    expect((await sup.status()).lastExit).toMatchObject({ signal: 'SIGKILL' });
  });

  it('sends SIGHUP on certificatesChanged, deferred until the proxy can handle it', async () => {
    const { sup, events } = await make({ listenDelayMs: 400 });
    await sup.start();
    const pid = (await sup.status()).pid!;
    sup.certificatesChanged(); // before its admin server listens: held back, not fatal
    await sup.waitReady();
    await waitFor(() => events().includes(`${pid} hup`), { what: 'the deferred SIGHUP' });
    sup.certificatesChanged();
    await waitFor(() => events().filter(e => e === `${pid} hup`).length === 2, {
      what: 'a second SIGHUP',
    });
    expect((await sup.status()).pid).toBe(pid);
    expect((await sup.status()).restarts).toBe(0);
  });

  it('stops a proxy a crashed agent left running, and spares an unrelated pid', async () => {
    const { sup, configFile, events } = await make();
    fs.mkdirSync(path.dirname(configFile), { recursive: true });
    const pidFile = path.join(path.dirname(configFile), PID_FILE_NAME);
    // An unrelated process under a stale pid file is left alone.
    const sleeper = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      fs.writeFileSync(pidFile, `${sleeper.pid}\n`);
      const { sup: other } = await make();
      await other.start();
      expect(sleeper.exitCode).toBeNull();
      expect(() => process.kill(sleeper.pid!, 0)).not.toThrow();
      await other.close();
    } finally {
      sleeper.kill('SIGKILL');
    }
    // An orphan proxy (same config file) is stopped before the new one starts.
    fs.writeFileSync(
      configFile,
      YAML.stringify({ adminListen: '127.0.0.1:0', eventsFile: path.join(tmp.dir, 'orphan.log') }),
    );
    const orphan = spawn(process.execPath, [FAKE_PROXY, 'proxy', '--config', configFile], {
      stdio: 'ignore',
    });
    const orphanExit = new Promise(r => orphan.once('exit', (code, sig) => r(sig ?? code)));
    await waitFor(() => fs.existsSync(path.join(tmp.dir, 'orphan.log')), { what: 'the orphan' });
    fs.writeFileSync(pidFile, `${orphan.pid}\n`);
    await sup.start();
    expect(await orphanExit).toBe(0); // SIGTERM: it drained and exited 0
    await sup.waitReady();
    const newPid = (await sup.status()).pid;
    expect(events().some(e => e.startsWith(`${newPid} start`))).toBe(true);
  });

  (process.getuid?.() === 0 ? it : it.skip)(
    'runs the proxy as its user with only the capabilities asked for (root only)',
    async () => {
      // The child (uid 65534) writes its events here and reads its config.
      fs.chmodSync(tmp.dir, 0o777);
      fs.mkdirSync(path.join(tmp.dir, 'run'), { mode: 0o755 });
      const user = { uid: 65534, gid: 65534 };
      const { sup, events } = await make({}, { user, capabilities: ['net_admin'] });
      await sup.start();
      await sup.waitReady();
      const pid = (await sup.status()).pid;
      // setpriv ran the proxy in its own process: the pid the supervisor tracks is the proxy's.
      expect(events()).toContain(`${pid} start uid=65534 gid=65534`);
      // CAP_NET_ADMIN (bit 12) effective and ambient, nothing else.
      expect(events()).toContain(`${pid} caps eff=0000000000001000 amb=0000000000001000`);
      await sup.close();
      // Without capabilities: none at all.
      const { sup: plain, events: plainEvents } = await make({}, { user });
      await plain.start();
      await plain.waitReady();
      const plainPid = (await plain.status()).pid;
      expect(plainEvents()).toContain(`${plainPid} caps eff=0000000000000000 amb=0000000000000000`);
    },
  );

  it('rejects start when the command cannot run', async () => {
    const { sup } = await make({}, { command: [path.join(tmp.dir, 'no-such-sail')] });
    await expect(sup.start()).rejects.toBeInstanceOf(ProxySpawnError);
    expect((await sup.status()).state).toBe('stopped');
  });

  it('rejects an adminAddress whose port differs from the config adminListen', async () => {
    const { sup } = await make({ adminListen: '127.0.0.1:1' });
    await expect(sup.start()).rejects.toThrow(/adminListen 127\.0\.0\.1:1 and adminAddress/);
  });

  it('rejects waitReady when its signal aborts', async () => {
    const { sup } = await make({ readyAfterMs: 60_000 });
    await sup.start();
    const ac = new AbortController();
    const p = sup.waitReady(ac.signal);
    ac.abort(new Error('gave up'));
    await expect(p).rejects.toThrow('gave up');
  });
});

describe('withCapabilities', () => {
  it('wraps the command in setpriv: the user, no groups, the capabilities ambient, no_new_privs', () => {
    expect(withCapabilities(['/usr/bin/sail'], { uid: 998, gid: 997 }, ['net_admin'])).toEqual([
      expect.stringMatching(/\/setpriv$/),
      '--reuid=998',
      '--regid=997',
      '--clear-groups',
      '--inh-caps=-all,+net_admin',
      '--ambient-caps=-all,+net_admin',
      '--no-new-privs',
      '--',
      '/usr/bin/sail',
    ]);
  });

  it('refuses a capability name that is not one', () => {
    expect(() => withCapabilities(['sail'], { uid: 1, gid: 1 }, ['net_admin,+sys_admin'])).toThrow(
      'invalid capability name "net_admin,+sys_admin": want e.g. net_admin',
    );
  });
});

describe('selfCommand', () => {
  it.each([
    {
      name: 'the JS CLI: node and the script',
      env: {},
      sea: false,
      want: [process.execPath, process.argv[1]],
    },
    { name: 'a single executable: itself', env: {}, sea: true, want: [process.execPath] },
    {
      name: 'SAIL_BINARY naming a binary',
      env: { SAIL_BINARY: '/usr/bin/sail' },
      sea: false,
      want: ['/usr/bin/sail'],
    },
    {
      name: 'SAIL_BINARY naming a script',
      env: { SAIL_BINARY: '/opt/sail/cli/sail.js' },
      sea: true,
      want: [process.execPath, '/opt/sail/cli/sail.js'],
    },
  ])('$name', ({ env, sea, want }) => {
    expect(selfCommand(env, sea)).toEqual(want);
  });
});
