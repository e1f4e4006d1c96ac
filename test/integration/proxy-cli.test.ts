/**
 * `sail proxy` as a real process (the built CLI): `--validate` exit codes and messages, and the
 * main script: it starts without pilot, answers /ready 503 with the reason, and stops cleanly on
 * SIGTERM (exit 0). Needs `npm run build` (npm test does it).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { sail } from '../helpers/sail-cli';
import { freePort, SailProcess, sailBuilt } from '../helpers/sail-process';
import { makeTmpDir } from '../helpers/tmp-dir';
import { waitFor } from '../helpers/wait-for';

const describeBuilt = sailBuilt() ? describe : describe.skip;
if (!sailBuilt())
  console.warn('skipping proxy CLI tests: build/cli/sail.js is missing (npm run build)');

describeBuilt('sail proxy', () => {
  let tmp: { dir: string; cleanup: () => void };

  beforeEach(() => {
    tmp = makeTmpDir('sail-proxy-cli-');
  });
  afterEach(() => tmp.cleanup());

  const write = (text: string) => {
    const file = path.join(tmp.dir, 'proxy.yaml');
    fs.writeFileSync(file, text);
    return file;
  };

  it('--validate accepts a valid file', async () => {
    const file = write('node: { name: vm-1, ip: 10.0.0.5 }\npilotAddress: 10.0.0.10:15010\n');
    const r = await sail(['proxy', '--validate', '--config', file]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(
      `${file}: valid (node sidecar~10.0.0.5~vm-1.default~default.svc.cluster.local, pilot 10.0.0.10:15010 (spiffe://cluster.local/ns/sail-system/sa/sail-control-plane), traffic capture, admin 127.0.0.1:15000)\n`,
    );
  });

  it('--validate exits 2 naming the file and the field', async () => {
    const file = write(
      'node: { name: vm-1, ip: 10.0.0.5 }\npilotAddress: 10.0.0.10:15010\ntraffic: { mode: tproxy }\n',
    );
    const r = await sail(['proxy', '--validate', '--config', file]);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`sail: ${file}: traffic.mode: want capture or explicit\n`);
  });

  it('--validate exits 2 naming a bad flag', async () => {
    const file = write('node: { name: vm-1, ip: 10.0.0.5 }\npilotAddress: 10.0.0.10:15010\n');
    const r = await sail([
      'proxy',
      '--validate',
      '--config',
      file,
      '--admin-listen',
      '0.0.0.0:15000',
    ]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('sail: --admin-listen: 0.0.0.0:15000 is not a loopback address');
  });

  it('exits 2 when the config file is missing', async () => {
    const r = await sail(['proxy', '--config', path.join(tmp.dir, 'nope.yaml')]);
    expect(r.status).toBe(2);
    expect(r.stderr).toBe(
      `sail: cannot read config file ${path.join(tmp.dir, 'nope.yaml')}: ENOENT\n`,
    );
  });

  it('starts without pilot, answers /ready 503, and stops on SIGTERM', async () => {
    const adminPort = await freePort();
    const metricsPort = await freePort();
    const deadPilot = `127.0.0.1:${await freePort()}`;
    const file = write(
      [
        'node: { name: vm-1, ip: 127.0.0.1 }',
        `pilotAddress: ${deadPilot}`,
        `certsDir: ${path.join(tmp.dir, 'certs')}`,
        `stateDir: ${path.join(tmp.dir, 'state')}`,
        'traffic: { mode: explicit }',
        `adminListen: 127.0.0.1:${adminPort}`,
        `metricsListen: 127.0.0.1:${metricsPort}`,
        'drain: 100ms',
        'shutdownGrace: 2s',
        '',
      ].join('\n'),
    );
    const proc = new SailProcess(['proxy', '--config', file, '--log-level', 'info']);
    try {
      await proc.waitForLog('Proxy started');
      const ready = await waitFor(
        async () => {
          const res = await fetch(`http://127.0.0.1:${adminPort}/ready`);
          return { status: res.status, text: await res.text() };
        },
        { what: 'the admin server' },
      );
      expect(ready.status).toBe(503);
      expect(ready.text).toContain('no workload certificate');
      expect(ready.text).toContain('xds: waiting for pilot');
      const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      expect(metrics).toContain('sail_proxy_ready 0');
      expect(proc.logs('Admin server listening')[0]).toMatchObject({
        level: 'info',
        role: 'proxy',
        component: 'proxy',
        subsystem: 'admin',
        address: `127.0.0.1:${adminPort}`,
      });
    } finally {
      const code = await proc.stop();
      expect(code).toBe(0);
    }
    expect(proc.logs('Proxy stopped')).toHaveLength(1);
    expect(proc.stderr).toEqual([]);
  });
});
