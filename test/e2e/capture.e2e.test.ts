/**
 * Traffic capture end to end (root only): the node agent's Capture and `sail capture` program real
 * iptables in a network namespace, once per backend (nft, legacy). Each run has its own pair of
 * namespaces joined by a veth:
 *
 *   host ns 10.78.N.1 / fd00:78:N::1: capture installed here; a "proxy" process listens on :15001
 *     (reads SO_ORIGINAL_DST with the native addon), :15006, udp 127.0.0.1:15053, plus :9080 and
 *     :22 as applications, each answering with the port that accepted the connection
 *   peer ns 10.78.N.2 / fd00:78:N::2: an application on :8080 and a "nameserver" on udp :53
 *
 * The backend is chosen by pre-seeding Docker-like rules (a DOCKER chain, a MASQUERADE rule) in it:
 * detection picks the backend that holds rules. Shown: install → verify up to date; outbound
 * redirected to :15001 with the original destination intact; gid 1337 not redirected; inbound :22
 * not redirected, :9080 redirected to :15006; DNS to the nameserver redirected to :15053; IPv6 the
 * same; install twice = same rules; a crash (a new Capture over old rules) cleans and reinstalls;
 * remove → iptables-save (both families) exactly as before, with a user rule added after install
 * still there; TPROXY installs, verifies (ip rule + route) and removes cleanly; under TPROXY a
 * proxy that dials the application from the caller's address (original_src, mark 1337) gets the
 * application's answers back, IPv4 and IPv6 (without SAIL_REPLY's save-mark the call hangs).
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { silentLogger } from '../../common/logging';
import {
  Capture,
  execRunner,
  type CaptureSpec,
  type CommandRunner,
} from '../../node-agent/capture';
import { SAIL_JS, sailBuilt } from '../helpers/sail-process';
import { makeTmpDir } from '../helpers/tmp-dir';
import { waitFor } from '../helpers/wait-for';

const ADDON = path.join(path.dirname(SAIL_JS), '..', 'common', 'native', 'sail_native.node');
const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const BACKENDS = (['nft', 'legacy'] as const).filter(
  b => spawnSync(`iptables-${b}`, ['--version']).status === 0,
);
const skipReason =
  process.getuid?.() !== 0
    ? 'needs root (network namespaces and iptables)'
    : !has('ip') || !has('setpriv') || BACKENDS.length === 0
      ? 'needs ip (iproute2), setpriv and iptables-nft or iptables-legacy'
      : !sailBuilt() || !fs.existsSync(ADDON)
        ? 'run `npm run build` first (the CLI and the native addon)'
        : undefined;
const run = skipReason ? describe.skip : describe;
if (skipReason) console.warn(`capture e2e test skipped: ${skipReason}`);

jest.setTimeout(30_000);

const TAG = crypto.randomBytes(2).toString('hex');
const PROXY_GID = 1337;

/** Runs a command to completion without blocking the event loop. */
function sh(
  cmd: string,
  args: readonly string[],
  input?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise(resolve => {
    const child = execFile(
      cmd,
      [...args],
      { encoding: 'utf8', timeout: 15_000 },
      (err, stdout, stderr) =>
        resolve({
          code: err ? Number((err as { code?: unknown }).code ?? 1) || 1 : 0,
          stdout,
          stderr,
        }),
    );
    child.stdin?.on('error', () => undefined); // EPIPE: the program did not read its input
    child.stdin?.end(input ?? '');
  });
}

async function must(cmd: string, args: readonly string[], input?: string): Promise<string> {
  const r = await sh(cmd, args, input);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** iptables-save without comments and counters. */
const normalize = (save: string) =>
  save
    .split('\n')
    .filter(l => !l.startsWith('#'))
    .map(l => l.replace(/\[\d+:\d+\]/, '[0:0]'))
    .join('\n');

/** The "proxy" and applications of the host namespace: each TCP port answers with a JSON line. */
const HOST_SERVERS = `
const net = require('node:net'), dgram = require('node:dgram');
const addon = { exports: {} }; process.dlopen(addon, ${JSON.stringify(ADDON)});
const ports = [15001, 15006, 9080, 22];
let up = 0;
const ready = () => { if (++up === ports.length + 2) console.log('ready'); };
for (const port of ports) {
  net.createServer(s => {
    let orig = null;
    if (port === 15001) { const d = addon.exports.getOriginalDst(s._handle.fd); orig = d && d.address + ':' + d.port; }
    s.end(JSON.stringify({ port, orig }) + '\\n');
    s.on('error', () => {});
  }).listen({ port, host: '::' }, ready);
}
for (const [type, host] of [['udp4', '127.0.0.1'], ['udp6', '::1']]) {
  const u = dgram.createSocket(type);
  u.on('message', (m, r) => u.send('DNS15053', r.port, r.address));
  u.bind(15053, host, ready);
}
`;

/** The peer namespace: an application on :8080 and a nameserver on udp :53. */
const PEER_SERVERS = `
const net = require('node:net'), dgram = require('node:dgram');
let up = 0;
const ready = () => { if (++up === 3) console.log('ready'); };
net.createServer(s => { s.end(JSON.stringify({ port: 8080, peer: true }) + '\\n'); s.on('error', () => {}); })
  .listen({ port: 8080, host: '::' }, ready);
for (const type of ['udp4', 'udp6']) {
  const u = dgram.createSocket({ type, ipv6Only: type === 'udp6' });
  u.on('message', (m, r) => u.send('DNSPEER', r.port, r.address));
  u.bind(53, ready);
}
`;

/**
 * TPROXY with original_src, as the proxy does it in the host namespace: a transparent listener
 * on :15106 (the TPROXY rule's port in that test) hands each connection to the application at
 * the address and port the caller dialed, from the caller's own address with mark 1337; the
 * application on :9091 answers with the address it sees as the caller's.
 */
const TPROXY_SERVERS = `
const net = require('node:net');
const addon = { exports: {} }; process.dlopen(addon, ${JSON.stringify(ADDON)});
const plain = a => (a && a.startsWith('::ffff:') ? a.slice(7) : a);
let up = 0;
const ready = () => { if (++up === 2) console.log('ready'); };
net.createServer(down => {
  down.on('error', () => {});
  const fd = addon.exports.transparentSocket(plain(down.remoteAddress), 1337);
  const up = new net.Socket({ fd, manualStart: true });
  up.on('error', () => down.destroy());
  up.connect(down.localPort, plain(down.localAddress));
  down.pipe(up).pipe(down);
}).listen({ fd: addon.exports.transparentListen('::', 15106, 64) }, ready);
net.createServer(s => {
  s.end(JSON.stringify({ port: 9091, remote: plain(s.remoteAddress) }) + '\\n');
  s.on('error', () => {});
}).listen({ port: 9091, host: '::' }, ready);
`;

/** One TCP connection: prints the first line the server sent. */
const TCP_CLIENT = `
const s = require('node:net').connect({ host: process.argv[1], port: Number(process.argv[2]) });
let d = ''; s.on('data', c => (d += c)); s.on('end', () => { process.stdout.write(d); });
s.on('error', e => { console.error(e.message); process.exit(1); });
`;
/** One DNS-port datagram: prints the answer. */
const UDP_CLIENT = `
const u = require('node:dgram').createSocket(process.argv[1].includes(':') ? 'udp6' : 'udp4');
u.on('message', m => { process.stdout.write(m.toString()); u.close(); });
u.send('q', 53, process.argv[1]);
setTimeout(() => { console.error('no answer'); process.exit(1); }, 3000).unref();
`;

/** A long-running child in a namespace, stopped in afterAll. */
class NsProcess {
  private readonly child: ChildProcess;
  private out = '';
  constructor(ns: string, script: string) {
    this.child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', script], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stdout!.on('data', (b: Buffer) => (this.out += b.toString()));
    this.child.stderr!.on('data', (b: Buffer) => (this.out += b.toString()));
  }
  ready(): Promise<unknown> {
    return waitFor(() => this.out.includes('ready'), {
      timeoutMs: 10_000,
      what: `ready (${this.out})`,
    });
  }
  stop(): void {
    this.child.kill('SIGKILL');
  }
}

run('capture e2e: real iptables in network namespaces', () => {
  describe.each(BACKENDS.map((backend, i) => ({ backend, n: i + 1 })))(
    'backend $backend',
    ({ backend, n }) => {
      const NS = { host: `sailcap-h${n}-${TAG}`, peer: `sailcap-p${n}-${TAG}` };
      const VETH = `scap${n}${TAG}`;
      const IP = { host: `10.78.${n}.1`, peer: `10.78.${n}.2` };
      const IP6 = { host: `fd00:78:${n}::1`, peer: `fd00:78:${n}::2` };
      const tmp = makeTmpDir('sail-capture-e2e-');
      const procs: NsProcess[] = [];
      const ipt = (family: 4 | 6) => `ip${family === 6 ? '6' : ''}tables-${backend}`;
      const inNs = (ns: string, cmd: string, args: readonly string[]) =>
        sh('ip', ['netns', 'exec', ns, cmd, ...args]);
      const save = async (family: 4 | 6) =>
        normalize(await must('ip', ['netns', 'exec', NS.host, `${ipt(family)}-save`]));
      /** The capture subsystem's commands, run in the host namespace with the real binaries. */
      const runner: CommandRunner = (file, args, input) =>
        execRunner('ip', ['netns', 'exec', NS.host, file, ...args], input);
      const spec: CaptureSpec = {
        mode: 'redirect',
        proxyUid: 1337,
        proxyGid: PROXY_GID,
        outboundPort: 15001,
        inboundPort: 15006,
        includeOutboundCidrs: '*',
        excludeOutboundCidrs: '',
        includeInboundPorts: '*',
        excludeInboundPorts: '22',
        dns: { port: 15053, nameservers: [IP.peer, IP6.peer] },
        ipv6: 'auto',
      };
      const config = path.join(tmp.dir, 'node-agent.yaml');
      const sail = (verb: string) =>
        inNs(NS.host, process.execPath, [
          SAIL_JS,
          'capture',
          verb,
          '--config',
          config,
          '--proxy-uid',
          '1337',
          '--proxy-gid',
          String(PROXY_GID),
          '--nameservers',
          `${IP.peer},${IP6.peer}`,
        ]);
      /** A TCP connection from `ns` (as `gid` when given): the JSON line the server answered. */
      const connect = async (ns: string, host: string, port: number, gid?: number) => {
        const prefix =
          gid === undefined ? [] : ['setpriv', `--regid=${gid}`, '--clear-groups', '--'];
        const r = await sh('ip', [
          'netns',
          'exec',
          ns,
          ...prefix,
          process.execPath,
          '-e',
          TCP_CLIENT,
          host,
          String(port),
        ]);
        if (r.code !== 0) throw new Error(`connect ${host}:${port} failed: ${r.stderr}`);
        return JSON.parse(r.stdout) as {
          port: number;
          orig?: string | null;
          peer?: boolean;
          remote?: string;
        };
      };
      const dns = async (server: string, gid?: number) => {
        const prefix =
          gid === undefined ? [] : ['setpriv', `--regid=${gid}`, '--clear-groups', '--'];
        const r = await sh('ip', [
          'netns',
          'exec',
          NS.host,
          ...prefix,
          process.execPath,
          '-e',
          UDP_CLIENT,
          server,
        ]);
        return r.stdout.trim();
      };
      let before: { 4: string; 6: string };
      let ipv6 = false;
      let capture: Capture | undefined;

      beforeAll(async () => {
        fs.writeFileSync(
          config,
          `controlPlane: { address: 10.78.${n}.254 }\nstateDir: ${tmp.dir}\ndns: { enabled: true }\n`,
        );
        for (const ns of Object.values(NS)) {
          await must('ip', ['netns', 'add', ns]);
          await must('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
        }
        await must('ip', [
          'link',
          'add',
          VETH,
          'netns',
          NS.host,
          'type',
          'veth',
          'peer',
          'name',
          'eth0',
          'netns',
          NS.peer,
        ]);
        await must('ip', ['-n', NS.host, 'link', 'set', VETH, 'name', 'eth0']);
        for (const h of ['host', 'peer'] as const) {
          await must('ip', ['-n', NS[h], 'addr', 'add', `${IP[h]}/24`, 'dev', 'eth0']);
          await must('ip', [
            '-n',
            NS[h],
            '-6',
            'addr',
            'add',
            `${IP6[h]}/64`,
            'dev',
            'eth0',
            'nodad',
          ]);
          await must('ip', ['-n', NS[h], 'link', 'set', 'eth0', 'up']);
        }
        // Docker-like rules in the backend under test (this is also what makes detection pick it).
        await must(
          'ip',
          ['netns', 'exec', NS.host, `${ipt(4)}-restore`, '--noflush'],
          `*nat
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
COMMIT
*filter
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
`,
        );
        ipv6 = (await inNs(NS.host, `${ipt(6)}-save`, [])).code === 0;
        if (ipv6) {
          await must('ip', [
            'netns',
            'exec',
            NS.host,
            ipt(6),
            '-t',
            'nat',
            '-A',
            'POSTROUTING',
            '-s',
            'fd00:99::/64',
            '-j',
            'MASQUERADE',
          ]);
        }
        before = { 4: await save(4), 6: ipv6 ? await save(6) : '' };
        procs.push(new NsProcess(NS.host, HOST_SERVERS), new NsProcess(NS.peer, PEER_SERVERS));
        await Promise.all(procs.map(p => p.ready()));
      });

      afterAll(async () => {
        await capture?.close().catch(() => undefined);
        for (const p of procs) p.stop();
        for (const ns of Object.values(NS)) await sh('ip', ['netns', 'del', ns]);
        tmp.cleanup();
      });

      it('`sail capture show` prints the payloads; verify says not installed (exit 1)', async () => {
        const show = await sail('show');
        expect(show.code).toBe(0);
        expect(show.stdout).toContain(
          '-I OUTPUT 1 -p tcp -m comment --comment sail -j SAIL_OUTPUT',
        );
        expect(show.stdout).toContain(`-d ${IP6.peer}/128 -p udp`);
        const verify = await sail('verify');
        expect(verify.code).toBe(1);
        expect(verify.stdout).toContain('not installed');
      });

      it('installs with the detected backend and verifies up to date', async () => {
        capture = new Capture({ spec, logger: silentLogger(), runner });
        await capture.start();
        const status = await capture.verify();
        expect(status).toMatchObject({ installed: true, upToDate: true, backend, differences: [] });
        expect(status.families).toEqual(ipv6 ? ['ipv4', 'ipv6'] : ['ipv4']);
        const cli = await sail('verify');
        expect(cli.stdout).toContain(`installed and up to date (backend ${backend}`);
        expect(cli.code).toBe(0);
        // A user rule added after install must survive removal.
        await must('ip', [
          'netns',
          'exec',
          NS.host,
          ipt(4),
          '-t',
          'nat',
          '-A',
          'POSTROUTING',
          '-s',
          '10.99.0.0/16',
          '-j',
          'MASQUERADE',
        ]);
      });

      it('redirects outbound TCP to :15001 with the original destination, but not gid 1337', async () => {
        expect(await connect(NS.host, IP.peer, 8080)).toEqual({
          port: 15001,
          orig: `${IP.peer}:8080`,
        });
        expect(await connect(NS.host, IP.peer, 8080, PROXY_GID)).toEqual({
          port: 8080,
          peer: true,
        });
        // Loopback is never captured.
        expect((await connect(NS.host, '127.0.0.1', 9080)).port).toBe(9080);
      });

      it('redirects inbound :9080 to :15006 but never SSH :22', async () => {
        expect((await connect(NS.peer, IP.host, 9080)).port).toBe(15006);
        expect((await connect(NS.peer, IP.host, 22)).port).toBe(22);
        expect(
          (await connect(NS.peer, IP.host, 15020).catch(() => ({ port: 'refused' }))).port,
        ).toBe(
          'refused', // Sail's own ports are excluded: nothing listens on :15020 here
        );
      });

      it('redirects DNS to the nameserver to :15053, except for the proxy group', async () => {
        expect(await dns(IP.peer)).toBe('DNS15053');
        expect(await dns(IP.peer, PROXY_GID)).toBe('DNSPEER');
      });

      it('captures IPv6 the same way when ip6tables works', async () => {
        if (!ipv6) {
          console.warn(`ip6tables-${backend} does not work here; IPv6 not checked`);
          return;
        }
        expect(await connect(NS.host, IP6.peer, 8080)).toEqual({
          port: 15001,
          orig: `${IP6.peer}:8080`,
        });
        expect(await connect(NS.host, IP6.peer, 8080, PROXY_GID)).toEqual({
          port: 8080,
          peer: true,
        });
        expect((await connect(NS.peer, IP6.host, 9080)).port).toBe(15006);
        expect((await connect(NS.peer, IP6.host, 22)).port).toBe(22);
        expect(await dns(IP6.peer)).toBe('DNS15053');
      });

      it('installing twice, or again after a crash, gives the same rules', async () => {
        const once = { 4: await save(4), 6: ipv6 ? await save(6) : '' };
        await capture!.install();
        expect(await save(4)).toBe(once[4]);
        // A crash: the old process is gone without removing; a new one starts over its rules.
        const next = new Capture({ spec, logger: silentLogger(), runner });
        await next.start();
        capture = next;
        expect(await save(4)).toBe(once[4]);
        if (ipv6) expect(await save(6)).toBe(once[6]);
        expect((await next.verify()).upToDate).toBe(true);
        expect(await connect(NS.host, IP.peer, 8080)).toEqual({
          port: 15001,
          orig: `${IP.peer}:8080`,
        });
      });

      it('remove leaves iptables-save exactly as before install (other rules untouched)', async () => {
        const cli = await sail('remove');
        expect(cli.stderr).toBe('');
        expect(cli.code).toBe(0);
        capture = undefined;
        // The rule added after install is still there; take it out to compare with before.
        await must('ip', [
          'netns',
          'exec',
          NS.host,
          ipt(4),
          '-t',
          'nat',
          '-D',
          'POSTROUTING',
          '-s',
          '10.99.0.0/16',
          '-j',
          'MASQUERADE',
        ]);
        expect(await save(4)).toBe(before[4]);
        if (ipv6) expect(await save(6)).toBe(before[6]);
        expect(await connect(NS.host, IP.peer, 8080)).toEqual({ port: 8080, peer: true });
        expect((await connect(NS.peer, IP.host, 9080)).port).toBe(9080);
        expect(fs.existsSync(path.join(tmp.dir, 'capture-state.json'))).toBe(false);
      });

      it('TPROXY mode installs mangle chains and the policy route, verifies, and removes cleanly', async () => {
        const tproxy = new Capture({
          spec: { ...spec, mode: 'tproxy' },
          logger: silentLogger(),
          runner,
        });
        // The mangle table exists before (as on any real host) so removal can restore it exactly.
        await must('ip', [
          'netns',
          'exec',
          NS.host,
          ipt(4),
          '-t',
          'mangle',
          '-A',
          'POSTROUTING',
          '-o',
          'docker0',
          '-j',
          'ACCEPT',
        ]);
        const beforeTproxy = await save(4);
        await tproxy.install();
        expect(await tproxy.verify()).toMatchObject({ upToDate: true, differences: [] });
        expect(await must('ip', ['-n', NS.host, 'rule'])).toContain('fwmark 0x539 lookup 133');
        // Outbound stays nat REDIRECT in TPROXY mode.
        expect(await connect(NS.host, IP.peer, 8080)).toEqual({
          port: 15001,
          orig: `${IP.peer}:8080`,
        });
        await tproxy.close();
        expect(await save(4)).toBe(beforeTproxy);
        expect(await must('ip', ['-n', NS.host, 'rule'])).not.toContain('lookup 133');
      });

      it("TPROXY keeps the caller's address to the application (original_src), IPv4 and IPv6", async () => {
        const tproxy = new Capture({
          spec: { ...spec, mode: 'tproxy', inboundPort: 15106 },
          logger: silentLogger(),
          runner,
        });
        const beforeTproxy = await save(4);
        const servers = new NsProcess(NS.host, TPROXY_SERVERS);
        procs.push(servers);
        await servers.ready();
        await tproxy.install();
        // The peer calls the host's application; the application sees the peer, not 127.0.0.1.
        expect(await connect(NS.peer, IP.host, 9091)).toEqual({ port: 9091, remote: IP.peer });
        if (ipv6) {
          expect(await connect(NS.peer, IP6.host, 9091)).toEqual({
            port: 9091,
            remote: IP6.peer,
          });
        }
        // Without the rules the mark and the policy route need (SAIL_REPLY, table 133), the
        // application's answer would go to the peer itself, which never opened that connection.
        expect(await save(4)).toContain('-j SAIL_REPLY');
        servers.stop();
        await tproxy.close();
        expect(await save(4)).toBe(beforeTproxy);
        expect(await must('ip', ['-n', NS.host, 'rule'])).not.toContain('lookup 133');
      });
    },
  );
});
