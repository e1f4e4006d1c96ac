/**
 * The mesh lab itself (root only; test/helpers/mesh-lab.ts): before the node agent's end-to-end
 * test relies on it, show that the namespaces reach each other by IP, the LAN resolver answers
 * from a VM through the VM's own resolv.conf, sshd answers with its banner, the apps in
 * test/helpers/mesh-apps.ts serve HTTP, gRPC and TCP across VMs, and destroy leaves nothing.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import {
  APP_PORTS,
  callOnce,
  type HttpReply,
  type MeshApp,
  startApp,
  startClient,
} from '../helpers/mesh-apps';
import { LAN_DNS_JS, MESH_APPS_JS, MeshLab, STATE_DIR, hostExec } from '../helpers/mesh-lab';

const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const skipReason =
  process.getuid?.() !== 0
    ? 'needs root (network namespaces)'
    : !has('ip') || !has('setpriv') || !has('curl') || !has('getent') || !has('ssh-keygen')
      ? 'needs ip (iproute2), setpriv, curl, getent and ssh-keygen'
      : !fs.existsSync('/usr/sbin/sshd')
        ? 'needs /usr/sbin/sshd (openssh-server)'
        : !fs.existsSync(LAN_DNS_JS) || !fs.existsSync(MESH_APPS_JS)
          ? 'run `npx tsc -p .` first (the lab runs build/test/helpers/*.js)'
          : undefined;
const run = skipReason ? describe.skip : describe;
if (skipReason) console.warn(`mesh lab e2e test skipped: ${skipReason}`);

jest.setTimeout(30_000);

run('mesh lab: namespaces, LAN resolver, sshd, apps, teardown', () => {
  let lab: MeshLab | undefined;
  let reviews: MeshApp;

  const the = () => {
    if (!lab) throw new Error('the lab was not created');
    return lab;
  };

  beforeAll(async () => {
    await MeshLab.sweep();
    lab = await MeshLab.create({ vms: ['vm1', 'vm2', 'vm3'] });
    const [app] = await Promise.all([
      startApp(lab, 'vm1', { service: 'reviews', version: 'v1', uid: 65534, gid: 65534 }),
      lab.startSshd('vm2'),
    ]);
    reviews = app;
  }, 60_000);

  afterAll(async () => {
    await lab?.destroy();
  });

  it('gives every node its address on one /24, the gateway on the bridge, and a default route', async () => {
    const l = the();
    expect(new Set(l.nodes.map(n => l.ip(n))).size).toBe(4);
    for (const n of l.nodes) {
      const addr = await l.run(n, ['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0']);
      expect(addr).toContain(`${l.ip(n)}/24`);
      expect(await l.run(n, ['ip', 'route', 'show', 'default'])).toContain(`via ${l.gateway}`);
    }
    const r = await l.curl('vm3', `http://${l.ip('vm1')}:${APP_PORTS.http}/health`);
    expect(r).toMatchObject({ exitCode: 0, status: 200 });
  });

  it('answers LAN names from a VM through its resolv.conf (getent), NXDOMAIN for others, and logs them', async () => {
    const l = the();
    expect(await l.run('vm2', ['cat', '/etc/resolv.conf'])).toContain(`nameserver ${l.ip('cp')}`);
    const vm1 = await l.run('vm2', ['getent', 'ahostsv4', 'vm1.lan']);
    expect(vm1.split(/\s+/)[0]).toBe(l.ip('vm1'));
    // `search lan`: a bare LAN name resolves too, as on a real VM.
    expect((await l.run('vm3', ['getent', 'hosts', 'controlplane'])).split(/\s+/)[0]).toBe(
      l.ip('cp'),
    );
    const missing = await l.exec('vm2', ['getent', 'hosts', 'nosuchname.example']);
    expect(missing.code).toBe(2);
    const qs = l.dnsQueries();
    expect(qs).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          name: 'vm1.lan',
          type: 'A',
          rcode: 'NOERROR',
          from: l.ip('vm2'),
        }),
        expect.objectContaining({ name: 'nosuchname.example', rcode: 'NXDOMAIN' }),
      ]),
    );
    // TCP too (dig +tcp when dig is there).
    if (has('dig')) {
      const out = await l.run('vm1', ['dig', '+tcp', '+short', 'vm3.lan']);
      expect(out.trim()).toBe(l.ip('vm3'));
    }
  });

  it("reaches vm2's sshd from cp and from vm3 (OpenSSH banner), and not a VM without sshd", async () => {
    const l = the();
    for (const from of ['cp', 'vm3']) {
      const r = await l.sshReachable(from, 'vm2');
      expect(r.ok).toBe(true);
      expect(r.banner).toMatch(/^SSH-2\.0-OpenSSH/);
    }
    const none = await l.sshReachable('cp', 'vm3', 1_000);
    expect(none.ok).toBe(false);
  });

  it("serves the app's HTTP, gRPC and TCP across VMs, by IP and by LAN name", async () => {
    const l = the();
    const res = await l.curl('vm2', `http://${l.ip('vm1')}:${APP_PORTS.http}/`, {
      headers: { 'x-test': 'yes' },
    });
    expect(res.status).toBe(200);
    const body = JSON.parse(res.body) as HttpReply;
    expect(body).toMatchObject({ service: 'reviews', version: 'v1', node: 'vm1' });
    expect(body.headers['x-test']).toBe('yes');
    expect(body.remoteAddress).toContain(l.ip('vm2'));

    const s = await callOnce(l, 'vm3', {
      httpUrl: `http://vm1.lan:${APP_PORTS.http}/`,
      grpcTarget: `vm1.lan:${APP_PORTS.grpc}`,
      tcpTarget: `vm1:${APP_PORTS.tcp}`,
      headers: { 'end-user': 'jason' },
      count: 3,
    });
    for (const k of ['http', 'grpc', 'tcp'] as const) {
      expect(s[k]).toMatchObject({ ok: 3, errors: 0, byVersion: { v1: 3 }, byNode: { vm1: 3 } });
    }
    expect((s.grpc?.lastOk?.metadata as Record<string, unknown>)['end-user']).toBe('jason');
  });

  it('a looping client counts successes, then errors while the app is unhealthy, then recovers', async () => {
    const l = the();
    const c = await startClient(l, 'vm2', {
      httpUrl: `http://vm1.lan:${APP_PORTS.http}/health`,
      tcpTarget: `${l.ip('vm1')}:${APP_PORTS.tcp}`,
      intervalMs: 50,
      timeoutMs: 1_000,
    });
    await c.waitUntil(s => (s.http?.ok ?? 0) >= 3 && (s.tcp?.ok ?? 0) >= 3, 'client successes');
    await reviews.setHealthy(false);
    await c.reset();
    await c.waitUntil(
      s => (s.http?.errorsByMessage['HTTP 500'] ?? 0) >= 2,
      'HTTP 500 from /health',
    );
    await reviews.setHealthy(true);
    await c.waitUntil(s => (s.http?.consecutiveErrors ?? 1) === 0, 'healthy again');
    await c.stop();
  });

  it('tcpProbe: a refused port is reported, not thrown', async () => {
    const l = the();
    const r = await l.tcpProbe('vm1', l.ip('vm3'), 9999, { timeoutMs: 1_000 });
    expect(r.connected).toBe(false);
    expect(r.error).toMatch(/ECONNREFUSED|EHOSTUNREACH/);
  });

  it('destroy removes every process, namespace, link, /etc/netns dir and the state file', async () => {
    const l = the();
    const namespaces = l.nodes.map(n => l.netns(n));
    const pids = [reviews.process.pid, l.lanDns?.pid].filter((p): p is number => !!p);
    await l.destroy();
    lab = undefined;
    const nsList = (await hostExec('ip', ['netns', 'list'])).stdout;
    for (const ns of namespaces) {
      expect(nsList).not.toContain(ns);
      expect(fs.existsSync(`/etc/netns/${ns}`)).toBe(false);
    }
    const links = (await hostExec('ip', ['-o', 'link', 'show'])).stdout;
    expect(links).not.toContain(`sml${l.tag}`);
    expect(fs.existsSync(`${STATE_DIR}/${l.tag}.json`)).toBe(false);
    expect(fs.existsSync(l.dir)).toBe(false);
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
    // Idempotent.
    await l.destroy();
  });
});

run('mesh lab: sweep and half-made labs', () => {
  const netnsList = async () => (await hostExec('ip', ['netns', 'list'])).stdout;
  const randomTag = () => `zz${Math.random().toString(16).slice(2, 6).padEnd(4, '0')}`;

  it("sweep removes a dead owner's leftovers and an unrecorded namespace, not a live lab", async () => {
    const live = await MeshLab.create({ vms: ['a'], dns: false });
    const dead = randomTag();
    const orphan = randomTag();
    try {
      // What a run killed half-way leaves: a namespace, a bridge, /etc/netns, a state file
      // naming a pid that does not exist; and a namespace with no state file at all.
      await hostExec('ip', ['netns', 'add', `smlab-${dead}-x`]);
      await hostExec('ip', ['link', 'add', `sml${dead}br`, 'type', 'bridge']);
      fs.mkdirSync(`/etc/netns/smlab-${dead}-x`, { recursive: true });
      fs.writeFileSync(
        `${STATE_DIR}/${dead}.json`,
        JSON.stringify({
          tag: dead,
          pid: 2 ** 22 + 1,
          namespaces: [`smlab-${dead}-x`],
          links: [`sml${dead}br`],
        }),
      );
      await hostExec('ip', ['netns', 'add', `smlab-${orphan}-y`]);

      const removed = await MeshLab.sweep();
      expect(removed).toEqual(expect.arrayContaining([dead, orphan]));
      expect(removed).not.toContain(live.tag);
      const list = await netnsList();
      expect(list).not.toContain(`smlab-${dead}-x`);
      expect(list).not.toContain(`smlab-${orphan}-y`);
      expect(list).toContain(live.netns('a'));
      expect((await hostExec('ip', ['-o', 'link', 'show'])).stdout).not.toContain(`sml${dead}br`);
      expect(fs.existsSync(`/etc/netns/smlab-${dead}-x`)).toBe(false);
      expect(fs.existsSync(`${STATE_DIR}/${dead}.json`)).toBe(false);
    } finally {
      await live.destroy();
      await hostExec('ip', ['netns', 'del', `smlab-${dead}-x`]);
      await hostExec('ip', ['netns', 'del', `smlab-${orphan}-y`]);
      await hostExec('ip', ['link', 'del', `sml${dead}br`]);
    }
  });

  it('a create that fails half-way removes what it made, and only that', async () => {
    const tag = randomTag();
    // vm2's namespace name is taken: cp and vm1 are built, vm2 fails at `ip netns add`.
    const squatter = `smlab-${tag}-vm2`;
    await hostExec('ip', ['netns', 'add', squatter]);
    try {
      await expect(MeshLab.create({ tag, vms: ['vm1', 'vm2'], dns: false })).rejects.toThrow(
        /ip netns add/,
      );
      const list = await netnsList();
      expect(list).toContain(squatter);
      expect(list).not.toContain(`smlab-${tag}-cp`);
      expect(list).not.toContain(`smlab-${tag}-vm1`);
      for (const n of ['cp', 'vm1', 'vm2'])
        expect(fs.existsSync(`/etc/netns/smlab-${tag}-${n}`)).toBe(false);
      expect((await hostExec('ip', ['-o', 'link', 'show'])).stdout).not.toContain(`sml${tag}`);
      expect(fs.existsSync(`${STATE_DIR}/${tag}.json`)).toBe(false);
    } finally {
      await hostExec('ip', ['netns', 'del', squatter]);
    }
  });
});
