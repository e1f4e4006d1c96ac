/**
 * The node agent's supervised proxy with the real `sail proxy` (build/cli/sail.js) as its child,
 * configured by a real control plane (CA + pilot in this process, test/helpers/proxy-pair.ts):
 *
 *   client → proxy A (in this process, explicit outbound 127.0.78.10:PORT) → mTLS
 *          → proxy B (the supervised child, inbound 127.0.78.20:PORT) → app 127.0.0.1:PORT
 *
 * Shown: B becomes ready and carries traffic; as root it runs as uid/gid 1337 with no
 * supplementary groups; certificatesChanged() makes it present a new certificate without a
 * restart; kill -9 → restarted, ready, traffic resumes, one restart counted; with pilot down a
 * new supervisor still gets it ready from its state file; close() during a slow request lets the
 * request finish; a bad config crash-loops under backoff.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import * as tls from 'node:tls';
import * as YAML from 'yaml';
import { writeFileSetAtomic } from '../../common/fs';
import { prom } from '../../common/metrics';
import { ProxySupervisor, type ProxySupervisorOptions } from '../../node-agent/supervisor';
import { Proxy as SailProxy } from '../../proxy';
import { LogCapture } from '../helpers/log-capture';
import {
  getOnce,
  type IdentityFiles,
  type ProxyPair,
  proxyConfigYaml,
  SERVICE_HOST,
  startProxyPair,
} from '../helpers/proxy-pair';
import { freePort, SAIL_JS, sailBuilt } from '../helpers/sail-process';
import { makeTmpDir } from '../helpers/tmp-dir';
import { waitFor } from '../helpers/wait-for';

const run = sailBuilt() ? describe : describe.skip;
if (!sailBuilt()) console.warn('proxy supervisor test skipped: build/cli/sail.js is missing');

jest.setTimeout(60_000);

const OUTBOUND_HOST = '127.0.78.10';
const WORKLOAD_HOST = '127.0.78.20';
/** As root, the proxy runs as this (unnamed) user, like `sail-proxy` on a host. */
const PROXY_USER = process.getuid?.() === 0 ? { uid: 1337, gid: 1337 } : undefined;
/** How long the application holds /slow. */
const SLOW_MS = 1_000;

/** One HTTP/1.1 request through proxy A to the service (fresh connection). */
function request(port: number, urlPath: string): Promise<{ status: number; body: string }> {
  return getOnce(`${OUTBOUND_HOST}:${port}`, urlPath, `${SERVICE_HOST}:${port}`);
}

/** The serial of the certificate B's inbound listener presents now (a new TLS connection). */
function presentedSerial(port: number, client: IdentityFiles): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: WORKLOAD_HOST,
      port,
      cert: client.certChainPem,
      key: client.keyPem,
      ca: client.rootsPem,
      // The mesh mTLS filter chain is chosen by ALPN (pilot's MESH_ALPN), as a peer proxy sends.
      ALPNProtocols: ['istio-peer-exchange', 'istio'],
      rejectUnauthorized: false, // only the presented certificate matters here
    });
    socket.once('secureConnect', () => {
      const serial = socket.getPeerCertificate().serialNumber;
      socket.destroy();
      resolve(serial);
    });
    socket.once('error', reject);
  });
}

/** Uid/Gid/Groups lines of /proc/PID/status. */
function procIds(pid: number): { uid: string; gid: string; groups: string } {
  const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) => new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(text)?.[1] ?? '';
  return { uid: field('Uid'), gid: field('Gid'), groups: field('Groups').trim() };
}

/** Writes B's identity as the agent's cert store does, owned by the proxy user when there is one. */
async function writeIdentityFor(dir: string, id: IdentityFiles): Promise<void> {
  await writeFileSetAtomic(
    dir,
    [
      { name: 'cert-chain.pem', data: id.certChainPem, mode: 0o644 },
      { name: 'key.pem', data: id.keyPem, mode: 0o600 },
      { name: 'root-cert.pem', data: id.rootsPem, mode: 0o644 },
    ],
    PROXY_USER,
  );
}

run('ProxySupervisor with the real sail proxy', () => {
  let tmp: { dir: string; cleanup: () => void };
  let pair: ProxyPair;
  let proxyA: SailProxy | undefined;
  let app: http.Server | undefined;
  let appSawSlow = 0;
  let adminAddress: string;
  let baseOptions: Omit<ProxySupervisorOptions, 'logger' | 'registry'>;
  const supervisors: ProxySupervisor[] = [];
  let sup: ProxySupervisor;
  let logs: LogCapture;
  let registry: prom.Registry;

  const newSupervisor = (over: Partial<ProxySupervisorOptions> = {}) => {
    logs = new LogCapture();
    registry = new prom.Registry();
    const s = new ProxySupervisor({ ...baseOptions, logger: logs.logger, registry, ...over });
    supervisors.push(s);
    return s;
  };

  beforeAll(async () => {
    tmp = makeTmpDir('sail-supervisor-it-');
    // The proxy user must reach its config, certificates and state under this directory.
    fs.chmodSync(tmp.dir, 0o755);
    pair = await startProxyPair({
      dir: tmp.dir,
      outboundHost: OUTBOUND_HOST,
      workloadHost: WORKLOAD_HOST,
      withoutProxies: true,
    });
    app = http.createServer((req, res) => {
      if (req.url === '/slow') {
        appSawSlow++;
        setTimeout(() => res.end('slow done\n'), SLOW_MS);
        return;
      }
      res.end('hello from app\n');
    });
    await new Promise<void>(r => app?.listen(pair.ports.http, '127.0.0.1', r));

    proxyA = new SailProxy(pair.hostA.options);
    await proxyA.start();
    await proxyA.whenReady();

    const b = pair.hostB;
    await writeIdentityFor(b.certsDir, b.identity);
    adminAddress = `127.0.0.1:${await freePort()}`;
    const config = YAML.parse(
      proxyConfigYaml({ ...b.options, adminListen: adminAddress }, { logLevel: 'info' }),
    ) as Record<string, unknown>;
    baseOptions = {
      command: [process.execPath, SAIL_JS],
      configFile: path.join(tmp.dir, 'vm-b', 'run', 'proxy.yaml'),
      config,
      ...(PROXY_USER ? { user: PROXY_USER } : {}),
      adminAddress,
      stdio: 'pipe',
      restartBackoff: { initialMs: 200, maxMs: 2_000 },
      stopGraceMs: 8_000,
    };
  });

  afterAll(async () => {
    for (const s of supervisors) await s.close().catch(() => undefined);
    await proxyA?.close();
    await new Promise(r => app?.close(r));
    await pair.close().catch(() => undefined);
    tmp.cleanup();
  });

  it('starts the proxy, which becomes ready and carries a request end to end', async () => {
    sup = newSupervisor();
    await sup.start();
    await sup.waitReady(AbortSignal.timeout(20_000));
    const res = await waitFor(
      async () => {
        const r = await request(pair.ports.http, '/');
        return r.status === 200 ? r : undefined;
      },
      { timeoutMs: 10_000, what: 'a request through both proxies' },
    );
    expect(res.body).toBe('hello from app\n');
    const st = await sup.status();
    expect(st.state).toBe('ready');
    expect(st.restarts).toBe(0);
    expect(st.xds?.connected).toBe(true);
    expect(st.xds?.versions.listeners).toMatch(/.+/);
    expect(st.xds?.versions.clusters).toMatch(/.+/);
    expect(fs.statSync(baseOptions.configFile).mode & 0o777).toBe(0o640);
  });

  (PROXY_USER ? it : it.skip)('runs the proxy as the proxy user, without root groups', async () => {
    const pid = (await sup.status()).pid!;
    const ids = procIds(pid);
    expect(ids.uid.split(/\s+/)).toEqual(['1337', '1337', '1337', '1337']);
    expect(ids.gid.split(/\s+/)).toEqual(['1337', '1337', '1337', '1337']);
    expect(ids.groups).toBe('');
    expect(fs.statSync(baseOptions.configFile).gid).toBe(1337);
    // It could write its last-known-good state into its own directory.
    expect(fs.statSync(path.join(pair.hostB.stateDir, 'proxy-xds.json')).uid).toBe(1337);
  });

  it('reloads new certificates on certificatesChanged without a restart', async () => {
    const pid = (await sup.status()).pid!;
    const before = await presentedSerial(pair.ports.http, pair.hostA.identity);
    pair.hostB.identity = await pair.cp.renew(pair.hostB.identity);
    await writeIdentityFor(pair.hostB.certsDir, pair.hostB.identity);
    sup.certificatesChanged();
    const after = await waitFor(
      async () => {
        const s = await presentedSerial(pair.ports.http, pair.hostA.identity);
        return s !== before ? s : undefined;
      },
      { timeoutMs: 10_000, what: 'the new certificate on new connections' },
    );
    expect(after).not.toBe(before);
    await waitFor(
      () =>
        logs
          .find('Proxy output')
          .some(e => String(e.line).includes('Reloading certificates (SIGHUP)')),
      { what: 'the proxy logging the SIGHUP' },
    );
    const st = await sup.status();
    expect(st.pid).toBe(pid);
    expect(st.restarts).toBe(0);
    expect((await request(pair.ports.http, '/')).status).toBe(200);
  });

  it('restarts the proxy after kill -9, and traffic resumes', async () => {
    const pid = (await sup.status()).pid!;
    process.kill(pid, 'SIGKILL');
    await waitFor(async () => (await sup.status()).lastExit?.signal === 'SIGKILL', {
      what: 'the exit to be seen',
    });
    await waitFor(async () => sup.ready && (await sup.status()).pid !== pid, {
      timeoutMs: 20_000,
      what: 'a new ready proxy',
    });
    await waitFor(async () => (await request(pair.ports.http, '/')).status === 200, {
      timeoutMs: 10_000,
      what: 'traffic through the restarted proxy',
    });
    const st = await sup.status();
    expect(st.restarts).toBe(1);
    const restarts = await registry.getSingleMetric('sail_agent_proxy_restarts_total')?.get();
    expect(restarts?.values[0]?.value).toBe(1);
    expect(logs.find('Proxy exited; restarting after a delay', 'warn')).toHaveLength(1);
  });

  it('with pilot down, a new supervisor gets the proxy ready from its state file', async () => {
    await sup.close();
    expect((await sup.status()).state).toBe('stopped');
    await pair.cp.pilot.close();
    sup = newSupervisor();
    await sup.start();
    await sup.waitReady(AbortSignal.timeout(20_000));
    const st = await sup.status();
    expect(st.state).toBe('ready');
    expect(st.xds?.connected).toBe(false);
    expect(st.xds?.versions.listeners).toMatch(/.+/);
    await waitFor(async () => (await request(pair.ports.http, '/')).status === 200, {
      timeoutMs: 10_000,
      what: 'traffic with pilot down',
    });
  });

  it('close() lets an in-flight request finish, then the proxy exits', async () => {
    const pid = (await sup.status()).pid!;
    const seen = appSawSlow;
    const slow = request(pair.ports.http, '/slow');
    await waitFor(() => appSawSlow > seen, { what: 'the slow request at the application' });
    const t0 = Date.now();
    await sup.close();
    const res = await slow;
    expect(res).toEqual({ status: 200, body: 'slow done\n' });
    expect(Date.now() - t0).toBeLessThan(8_000); // drained, not killed at stopGraceMs
    expect(await sup.status()).toMatchObject({ state: 'stopped', lastExit: { code: 0 } });
    expect(fs.existsSync(`/proc/${pid}`)).toBe(false);
  });

  it('backs off a proxy that exits at once with a bad config', async () => {
    const bad = newSupervisor({
      configFile: path.join(tmp.dir, 'bad', 'proxy.yaml'),
      config: { ...baseOptions.config, trustDomain: 42 },
      restartBackoff: { initialMs: 100, maxMs: 800 },
    });
    await bad.start();
    const t0 = Date.now();
    await waitFor(() => logs.find('Proxy exited; restarting after a delay').length >= 3, {
      timeoutMs: 15_000,
      what: 'three exits',
    });
    const elapsed = Date.now() - t0;
    const exits = logs.find('Proxy exited; restarting after a delay');
    expect(exits.every(e => e.code === 2)).toBe(true);
    // Attempt n waits between half and all of min(800, 100·2^(n-1)) ms.
    exits.forEach((e, i) => {
      const base = Math.min(800, 100 * 2 ** i);
      expect(e.delayMs).toBeGreaterThanOrEqual(base / 2);
      expect(e.delayMs).toBeLessThanOrEqual(base);
    });
    // The waits alone (≥ 50 + 100 ms) bound the rate on top of each run's own start-up time.
    expect(elapsed).toBeGreaterThanOrEqual(150);
    const st = await waitFor(
      async () => {
        const s = await bad.status();
        return s.state === 'backoff' ? s : undefined;
      },
      { what: 'the backoff state' },
    );
    expect(st.lastExit).toMatchObject({ code: 2, signal: null });
    expect(st.pid).toBeUndefined();
    await bad.close();
    expect((await bad.status()).state).toBe('stopped');
  });
});
