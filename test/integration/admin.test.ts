/**
 * The control plane's admin endpoint with real processes: the unix socket (0600) and HTTPS with
 * the admin client certificate the control plane issues into DATA_DIR/admin/. Nothing writes
 * without credentials; health and metrics are open.
 */
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';
import { freePort, SailProcess, sailBuilt, sailSync } from '../helpers/sail-process';
import { makeTmpDir } from '../helpers/tmp-dir';

const run = sailBuilt() ? describe : describe.skip;
if (!sailBuilt()) console.warn('admin test skipped: run `npm run build` first (npm test does)');

/** A raw HTTPS request that trusts the control plane root, with or without a client certificate. */
function request(
  port: number,
  dir: string,
  method: string,
  urlPath: string,
  withCert: boolean,
  body?: unknown,
) {
  return new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port,
        method,
        path: urlPath,
        ca: fs.readFileSync(path.join(dir, 'root-cert.pem')),
        ...(withCert
          ? {
              cert: fs.readFileSync(path.join(dir, 'admin', 'cert-chain.pem')),
              key: fs.readFileSync(path.join(dir, 'admin', 'key.pem')),
            }
          : {}),
        checkServerIdentity: () => undefined,
        headers: { 'content-type': 'application/json' },
      },
      res => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      },
    );
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

run('control plane admin endpoint', () => {
  const tmp = makeTmpDir('sail-admin-');
  const dir = path.join(tmp.dir, 'cp');
  let cp: SailProcess;
  let port: number;

  beforeAll(async () => {
    port = await freePort();
    cp = new SailProcess([
      'control-plane',
      '--data-dir',
      dir,
      '--ca-listen',
      '127.0.0.1:0',
      '--admin-listen',
      `127.0.0.1:${port}`,
    ]);
    await cp.waitForLog('Admin HTTPS listening');
  });

  afterAll(async () => {
    expect(await cp.stop()).toBe(0);
    tmp.cleanup();
  });

  it('keeps the admin socket and key private', () => {
    expect(fs.statSync(path.join(dir, 'admin.sock')).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.join(dir, 'admin', 'key.pem')).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.join(dir, 'ca', 'root-key.pem')).mode & 0o777).toBe(0o600);
  });

  it('creates tokens over HTTPS with the admin certificate', () => {
    const r = sailSync([
      'token',
      'create',
      '--server',
      `https://127.0.0.1:${port}`,
      '--admin-dir',
      path.join(dir, 'admin'),
      '--node',
      'vm-1',
      '--sa',
      'default/web',
    ]);
    expect(r).toMatchObject({ status: 0 });
    expect(r.stdout.trim()).toMatch(/^[0-9a-f]{16}\.[A-Za-z0-9_-]{43}$/);
    const list = sailSync(['node', 'list', '--server', `unix://${dir}/admin.sock`]);
    expect(list.stdout).toContain('vm-1');
    expect(list.stdout).toContain('spiffe://cluster.local/ns/default/sa/web');
  });

  it('refuses writes and listings without a client certificate, but serves health and metrics', async () => {
    const write = await request(port, dir, 'POST', '/v1/tokens', false, {
      node: 'vm-2',
      serviceAccounts: ['default/web'],
    });
    expect(write.status).toBe(403);
    expect(JSON.parse(write.text)).toMatchObject({ error: { code: 'COMMON_NOT_AUTHORIZED' } });
    expect((await request(port, dir, 'GET', '/v1/tokens', false)).status).toBe(403);
    expect(await request(port, dir, 'GET', '/healthz', false)).toMatchObject({ status: 200 });
    expect(await request(port, dir, 'GET', '/readyz', false)).toMatchObject({ status: 200 });
    const metrics = await request(port, dir, 'GET', '/metrics', false);
    expect(metrics.text).toContain('sail_ca_csr_requests_total');
    expect(metrics.text).toContain('process_resident_memory_bytes');
    expect((await request(port, dir, 'GET', '/v1/tokens', true)).status).toBe(200);
  });

  it('answers bad admin input with 400 and a message naming the field', async () => {
    const r = await request(port, dir, 'POST', '/v1/tokens', true, {
      node: 'Bad Name',
      serviceAccounts: ['default/web'],
    });
    expect(r.status).toBe(400);
    expect(r.text).toContain('node');
    const ttl = await request(port, dir, 'POST', '/v1/tokens', true, {
      node: 'vm-3',
      serviceAccounts: ['default/web'],
      ttl: 'later',
    });
    expect(ttl.status).toBe(400);
    expect(ttl.text).toContain('ttl');
    expect((await request(port, dir, 'POST', '/v1/tokens', true, 'not an object')).status).toBe(
      400,
    );
  });
});
