/**
 * A host's identity end to end, with real processes from the build: `sail ca`, `sail token
 * create`, `sail join` and `sail node-agent`, over real gRPC/TLS on loopback, judged by openssl.
 *
 * Timeline (about three minutes): agent A (20 s certificates) must rotate at least twice while agent
 * B (200 s certificates) runs alongside; then the CA is stopped for 30 s across B's renewal time,
 * B keeps its certificate, retries, and renews once the CA is back with the same root; finally B
 * is restarted with the CA down and comes up ready from disk without a token.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { parseCertificate, parseCertificatesPem } from '../../common/pki';
import { hasOpenssl, openssl } from '../helpers/openssl';
import { freePort, SailProcess, sailBuilt, sailSync } from '../helpers/sail-process';
import { waitFor } from '../helpers/wait-for';
import { makeTmpDir } from '../helpers/tmp-dir';

const run = sailBuilt() && hasOpenssl() ? describe : describe.skip;
if (!sailBuilt())
  console.warn('identity end-to-end test skipped: run `npm run build` first (npm test does)');
if (!hasOpenssl()) console.warn('identity end-to-end test skipped: openssl is not installed');

interface Host {
  name: string;
  dir: string;
  config: string;
  statusPort: number;
  agent?: SailProcess;
}

jest.setTimeout(240_000);

run('host identity with real processes', () => {
  const tmp = makeTmpDir('sail-identity-');
  const cpDir = path.join(tmp.dir, 'cp');
  const server = `unix://${cpDir}/admin.sock`;
  let caPort: number;
  let ca: SailProcess;
  let a: Host;
  let b: Host;

  const startCa = async () => {
    ca = new SailProcess([
      'ca',
      '--data-dir',
      cpDir,
      '--listen',
      `127.0.0.1:${caPort}`,
      '--admin-listen',
      '',
      '--log-level',
      'info',
    ]);
    await ca.waitForLog('CA listening');
  };

  const certsOf = (h: Host) => path.join(h.dir, 'certs');
  const readLeaf = (h: Host) => {
    const pem = fs.readFileSync(path.join(certsOf(h), 'cert-chain.pem'), 'utf8');
    return parseCertificate(parseCertificatesPem(pem)[0] as Buffer);
  };
  const verify = (h: Host) =>
    openssl([
      'verify',
      '-CAfile',
      path.join(certsOf(h), 'root-cert.pem'),
      path.join(certsOf(h), 'cert-chain.pem'),
    ]);
  const ready = async (h: Host) => {
    try {
      const res = await fetch(`http://127.0.0.1:${h.statusPort}/healthz/ready`);
      return res.status === 200 ? ((await res.json()) as Record<string, unknown>) : undefined;
    } catch {
      return undefined;
    }
  };

  /** Token, join, then adjust the joined config for the test (TTL, dirs, status port). */
  const joinHost = async (name: string, ttl: string): Promise<Host> => {
    const dir = path.join(tmp.dir, name);
    fs.mkdirSync(dir, { recursive: true });
    const token = sailSync([
      'token',
      'create',
      '--server',
      server,
      '--node',
      name,
      '--sa',
      'default/web',
      '--ttl',
      '10m',
    ]);
    expect(token.status).toBe(0);
    expect(token.stdout.trim()).toMatch(/^[0-9a-f]{16}\.[A-Za-z0-9_-]{43}$/);
    const config = path.join(dir, 'node-agent.yaml');
    const joined = sailSync([
      'join',
      '--control-plane',
      '127.0.0.1',
      '--ca-address',
      `127.0.0.1:${caPort}`,
      '--token',
      token.stdout.trim(),
      '--ca-root',
      path.join(cpDir, 'root-cert.pem'),
      '--node',
      name,
      '--namespace',
      'default',
      '--service-account',
      'web',
      '--config',
      config,
    ]);
    expect(joined).toMatchObject({ status: 0 });
    expect(fs.statSync(path.join(dir, 'join-token')).mode & 0o777).toBe(0o600);
    const doc = YAML.parse(fs.readFileSync(config, 'utf8')) as Record<
      string,
      Record<string, unknown>
    >;
    const statusPort = await freePort();
    doc.certs = { ...doc.certs, dir: path.join(dir, 'certs'), ttl };
    doc.stateDir = path.join(dir, 'state') as never;
    doc.status = { listen: `127.0.0.1:${statusPort}` };
    // Identity only: these hosts have no pilot, and capture must not touch this machine.
    doc.proxy = { enabled: false };
    doc.capture = { mode: 'none' };
    doc.dns = { enabled: false };
    doc.proxyless = { enabled: false };
    fs.writeFileSync(config, YAML.stringify(doc));
    return { name, dir, config, statusPort };
  };

  const startAgent = (h: Host) => {
    h.agent = new SailProcess(['node-agent', '--config', h.config, '--log-level', 'debug']);
    return h.agent;
  };

  beforeAll(async () => {
    caPort = await freePort();
    await startCa();
  });

  afterAll(async () => {
    // Stop whatever a failed test left running, so no process outlives the suite.
    for (const h of [a as Host | undefined, b as Host | undefined]) await h?.agent?.stop();
    await ca.stop();
    tmp.cleanup();
  });

  it('joins two hosts; the token is used up and deleted', async () => {
    a = await joinHost('vm-a', '20s');
    b = await joinHost('vm-b', '200s');
    startAgent(a);
    startAgent(b);
    for (const h of [a, b]) {
      const status = await waitFor(() => ready(h), {
        timeoutMs: 20_000,
        intervalMs: 100,
        what: `${h.name} ready`,
      });
      expect(status).toMatchObject({ spiffeId: 'spiffe://cluster.local/ns/default/sa/web' });
      expect(fs.existsSync(path.join(h.dir, 'join-token'))).toBe(false);
      expect(fs.statSync(path.join(certsOf(h), 'key.pem')).mode & 0o777).toBe(0o600);
      expect(verify(h).status).toBe(0);
      expect(readLeaf(h).uris).toEqual(['spiffe://cluster.local/ns/default/sa/web']);
    }
  });

  it('rotates a 20 s certificate at least twice within a minute, each one valid', async () => {
    const serials = new Set<string>([readLeaf(a).serialHex]);
    const deadline = Date.now() + 60_000;
    while (serials.size < 3 && Date.now() < deadline) {
      await new Promise(r => setTimeout(r, 250));
      let leaf;
      try {
        leaf = readLeaf(a);
      } catch {
        continue; // mid-swap reads are impossible with the symlink layout, but do not fail on a race
      }
      if (!serials.has(leaf.serialHex)) {
        serials.add(leaf.serialHex);
        expect(verify(a)).toMatchObject({ status: 0 });
        expect(leaf.uris).toEqual(['spiffe://cluster.local/ns/default/sa/web']);
        expect(fs.statSync(path.join(certsOf(a), 'key.pem')).mode & 0o777).toBe(0o600);
      }
    }
    expect(serials.size).toBeGreaterThanOrEqual(3);
    const metrics = await (await fetch(`http://127.0.0.1:${a.statusPort}/metrics`)).text();
    expect(metrics).toMatch(/sail_agent_cert_expiry_seconds \d/);
    expect(await a.agent?.stop()).toBe(0);
  });

  it('keeps its certificate through a 30 s CA outage, retries, and renews when the CA is back with the same root', async () => {
    const rootBefore = fs.readFileSync(path.join(cpDir, 'root-cert.pem'), 'utf8');
    const leaf = readLeaf(b);
    const issuedAt = leaf.notBefore.getTime() + 20_000; // notBefore is backdated 10 % of 200 s
    // The agent renews at half its lifetime ±10 %: between 0.395 and 0.505 of 200 s after issue.
    // Stop the CA just before the earliest point, for 30 s, so the renewal falls in the outage
    // whatever the jitter, and the certificate still has 90 s left when the CA is back.
    const half = (leaf.notAfter.getTime() - leaf.notBefore.getTime()) / 2;
    const earliest = leaf.notBefore.getTime() + half * 0.9;
    await new Promise(r => setTimeout(r, Math.max(0, earliest - 1000 - Date.now())));
    await ca.stop();
    const downAt = Date.now();
    await new Promise(r => setTimeout(r, 30_000));
    // During the outage: still ready, same certificate, and it tried and failed to renew.
    expect(await ready(b)).toBeTruthy();
    expect(readLeaf(b).serialHex).toBe(leaf.serialHex);
    const failures = (b.agent as SailProcess).lines.filter(
      l =>
        typeof l.level === 'string' &&
        ['warn', 'error'].includes(l.level) &&
        Number(new Date(String(l.time))) > downAt,
    );
    expect(failures.length).toBeGreaterThanOrEqual(2);
    await startCa();
    expect(fs.readFileSync(path.join(cpDir, 'root-cert.pem'), 'utf8')).toBe(rootBefore);
    await waitFor(() => readLeaf(b).serialHex !== leaf.serialHex, {
      timeoutMs: 90_000,
      intervalMs: 100,
      what: 'renewal after the outage',
    });
    expect(readLeaf(b).notBefore.getTime()).toBeGreaterThan(issuedAt);
    expect(verify(b).status).toBe(0);
  });

  it('restarts from disk without a token while the CA is down', async () => {
    const serial = readLeaf(b).serialHex;
    expect(await b.agent?.stop()).toBe(0);
    await ca.stop();
    const agent = startAgent(b);
    const status = await waitFor(() => ready(b), {
      timeoutMs: 15_000,
      intervalMs: 100,
      what: 'ready from disk',
    });
    expect(status).toMatchObject({ spiffeId: 'spiffe://cluster.local/ns/default/sa/web' });
    expect(readLeaf(b).serialHex).toBe(serial);
    expect(await agent.stop()).toBe(0);
    await startCa();
  });

  it('rejects bad config files and flags with exit code 2 and the field at fault', () => {
    const bad = path.join(tmp.dir, 'bad.yaml');
    fs.writeFileSync(
      bad,
      'controlPlane:\n  address: 127.0.0.1\ncerts:\n  ttl: forever\nbogus: 1\n',
    );
    const r = sailSync(['node-agent', '--config', bad]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('certs.ttl');
    expect(r.stderr).toContain('bogus');
    const missing = sailSync(['node-agent', '--config', path.join(tmp.dir, 'nope.yaml')]);
    expect(missing.status).toBe(2);
    expect(missing.stderr).toContain('nope.yaml');
    expect(
      sailSync(['ca', '--data-dir', path.join(tmp.dir, 'x'), '--max-cert-ttl', 'soon']),
    ).toMatchObject({ status: 2 });
    expect(
      sailSync(['token', 'create', '--server', server, '--node', 'vm-c', '--sa', 'NotValid']),
    ).toMatchObject({ status: 2 });
    expect(sailSync(['token', 'create', '--server', server, '--node', 'vm-c'])).toMatchObject({
      status: 2,
    });
  });
});
