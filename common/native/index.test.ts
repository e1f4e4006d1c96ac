import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { makeTmpDir } from '../../test/helpers/tmp-dir';
import {
  closeFd,
  dupFd,
  getOriginalDst,
  isNativeAddonAvailable,
  nativeAddonPath,
  socketFd,
  transparentListen,
  transparentSocket,
} from './index';

/** Why the tests that need the addon cannot run here, or undefined when they can. */
function addonSkipReason(): string | undefined {
  if (process.platform !== 'linux') return 'SO_ORIGINAL_DST is Linux only';
  if (!isNativeAddonAvailable()) return 'native addon not built (run `npm run build`)';
  return undefined;
}

function hasTool(name: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Why the network namespace test cannot run here, or undefined when it can. */
function netnsSkipReason(): string | undefined {
  const addon = addonSkipReason();
  if (addon) return addon;
  if (process.getuid?.() !== 0) return 'needs root for ip netns and iptables';
  for (const tool of ['ip', 'iptables']) if (!hasTool(tool)) return `${tool} not installed`;
  return undefined;
}

const ADDON_REASON = addonSkipReason();
const NETNS_REASON = netnsSkipReason();
if (ADDON_REASON) console.warn(`skipping native addon tests: ${ADDON_REASON}`);
else if (NETNS_REASON) console.warn(`skipping SO_ORIGINAL_DST namespace test: ${NETNS_REASON}`);

async function withConnection<T>(fn: (accepted: net.Socket) => T): Promise<T> {
  const server = net.createServer();
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  const accepted = new Promise<net.Socket>(resolve => server.once('connection', resolve));
  const client = net.connect(port, '127.0.0.1');
  const socket = await accepted;
  try {
    return fn(socket);
  } finally {
    client.destroy();
    socket.destroy();
    await new Promise(resolve => server.close(resolve));
  }
}

(ADDON_REASON ? describe.skip : describe)('getOriginalDst', () => {
  it('gives the local address or undefined for a connection that was not redirected', async () => {
    const result = await withConnection(s => ({
      od: getOriginalDst(socketFd(s)!),
      local: { address: s.localAddress, port: s.localPort },
    }));
    // With conntrack loaded the entry of a plain connection is its own destination; without it
    // (or without an entry) there is none. Both mean "not redirected" to the listener manager.
    if (result.od !== undefined) {
      expect(result.od).toEqual({ ...result.local, family: 4 });
    }
  });

  it('rejects a negative file descriptor', () => {
    // The error comes from the addon (another realm than jest's): match by message.
    expect(() => getOriginalDst(-1)).toThrow(/fd must not be negative/);
  });

  it('throws for a file descriptor that is not a socket', () => {
    const { dir, cleanup } = makeTmpDir();
    const fd = fs.openSync(path.join(dir, 'f'), 'w');
    try {
      expect(() => getOriginalDst(fd)).toThrow(/getsockname failed/);
    } finally {
      fs.closeSync(fd);
      cleanup();
    }
  });
});

const ROOT_REASON =
  ADDON_REASON ?? (process.getuid?.() !== 0 ? 'needs root (CAP_NET_ADMIN)' : undefined);

(ROOT_REASON ? describe.skip : describe)('transparentListen, dupFd, closeFd', () => {
  it('opens a listening socket that Node serves through a duplicate, on IPv6 (dual-stack) and IPv4', async () => {
    for (const host of ['::', '127.0.0.1']) {
      const fd = transparentListen(host, 0);
      const server = net.createServer(s => s.end(`${s.localAddress} ${s.localPort}`));
      try {
        await new Promise<void>(resolve => server.listen({ fd: dupFd(fd) }, resolve));
        const { port } = server.address() as net.AddressInfo;
        expect(port).toBeGreaterThan(0);
        const reply = await new Promise<string>((resolve, reject) => {
          let data = '';
          net
            .connect(port, '127.0.0.1')
            .on('data', (d: Buffer) => (data += d.toString()))
            .on('end', () => resolve(data))
            .on('error', reject);
        });
        expect(reply).toMatch(new RegExp(`127\\.0\\.0\\.1 ${port}$`));
      } finally {
        await new Promise(resolve => server.close(resolve));
        // The server closed its duplicate; the original is still ours to close.
        closeFd(fd);
      }
      expect(() => closeFd(fd)).toThrow(/close failed/);
    }
  });

  it('refuses a port in use, and bad arguments, with errors that say so', async () => {
    const first = transparentListen('127.0.0.1', 0);
    const server = net.createServer();
    await new Promise<void>(resolve => server.listen({ fd: dupFd(first) }, resolve));
    const { port } = server.address() as net.AddressInfo;
    try {
      expect(() => transparentListen('127.0.0.1', port)).toThrow(
        /bind failed: Address already in use/,
      );
    } finally {
      await new Promise(resolve => server.close(resolve));
      closeFd(first);
    }
    expect(() => transparentListen('not-an-ip', 1)).toThrow(
      /host not-an-ip is not an IPv4 or IPv6 address/,
    );
    expect(() => transparentListen('::', 70000)).toThrow(/port must be at most 65535/);
    expect(() => transparentListen('::', -1)).toThrow(/port must not be negative/);
    expect(() => dupFd(-1)).toThrow(/fd must not be negative/);
    expect(() => dupFd(987654)).toThrow(/F_DUPFD_CLOEXEC\) failed: Bad file descriptor/);
  });

  it('needs CAP_NET_ADMIN: an unprivileged process gets EPERM', () => {
    if (!hasTool('setpriv')) return console.warn('skipped: setpriv (util-linux) not installed');
    const unprivileged = (call: string, caps: string[] = []) =>
      execFileSync(
        'setpriv',
        [
          '--reuid=65534',
          '--regid=65534',
          '--clear-groups',
          ...caps,
          process.execPath,
          '-e',
          `const m={exports:{}};process.dlopen(m,${JSON.stringify(nativeAddonPath())});try{m.exports.${call};console.log('opened')}catch(e){console.log(e.code,e.message)}`,
        ],
        { encoding: 'utf8' },
      ).trim();
    const eperm = 'ERRNO_1 setsockopt(IP_TRANSPARENT) failed: Operation not permitted';
    expect(unprivileged("transparentListen('127.0.0.1',0,1)")).toBe(eperm);
    expect(unprivileged("transparentSocket('192.0.2.10',1337)")).toBe(eperm);
    // What the node agent grants its proxy in tproxy mode: CAP_NET_ADMIN alone, as an ambient
    // capability, is enough for both options and a foreign address.
    const ambient = ['--inh-caps=-all,+net_admin', '--ambient-caps=-all,+net_admin'];
    expect(unprivileged("transparentSocket('192.0.2.10',1337)", ambient)).toBe('opened');
  });

  it('transparentSocket: a socket bound to any address, with its mark, that Node connects', async () => {
    // Bound to an address this host does not have: only IP_TRANSPARENT allows it.
    const foreign = transparentSocket('192.0.2.10', 0);
    const unbound = new net.Socket({ fd: foreign, manualStart: true } as net.SocketConstructorOpts);
    expect(unbound.address()).toMatchObject({ address: '192.0.2.10', family: 'IPv4' });
    unbound.destroy();

    const server = net.createServer(s => s.end(`${s.remoteAddress}`));
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as net.AddressInfo;
    try {
      const fd = transparentSocket('127.0.0.1', 1337);
      const socket = new net.Socket({ fd, manualStart: true } as net.SocketConstructorOpts);
      const connected = new Promise<void>(resolve => socket.once('connect', resolve));
      socket.connect(port, '127.0.0.1');
      await connected;
      const marks = execFileSync(
        'ss',
        ['-tnHe', 'state', 'established', `sport = :${socket.localPort}`],
        {
          encoding: 'utf8',
        },
      );
      expect(marks).toContain('fwmark:0x539');
      const reply = await new Promise<string>((resolve, reject) => {
        let data = '';
        socket.on('data', (d: Buffer) => (data += d.toString()));
        socket.on('end', () => resolve(data));
        socket.on('error', reject);
      });
      expect(reply).toBe('127.0.0.1');
    } finally {
      await new Promise(resolve => server.close(resolve));
    }
    // A refused connect surfaces as the socket's error, as with net.connect.
    const refused = new net.Socket({
      fd: transparentSocket('127.0.0.1', 0),
      manualStart: true,
    } as net.SocketConstructorOpts);
    const err = await new Promise<NodeJS.ErrnoException>(resolve => {
      refused.once('error', resolve);
      refused.connect(port, '127.0.0.1');
    });
    expect(err.code).toBe('ECONNREFUSED');
    expect(() => transparentSocket('not-an-ip', 0)).toThrow(
      /transparentSocket: host not-an-ip is not an IPv4 or IPv6 address/,
    );
    expect(() => transparentSocket('127.0.0.1', -1)).toThrow(/mark must not be negative/);
  });
});

describe('socketFd', () => {
  it('reads the descriptor of a connected socket and nothing from a closed one', async () => {
    const fd = await withConnection(s => socketFd(s));
    expect(fd).toBeGreaterThan(2);
    expect(socketFd(new net.Socket())).toBeUndefined();
  });
});

/**
 * Runs inside the namespace: listens on [::]:0 (dual stack), adds the REDIRECT rules for port
 * 8080 to that port once it knows it, connects to a few original destinations, and prints what
 * getOriginalDst says for each accepted connection (one JSON line per connection).
 */
const CHILD_SCRIPT = `
'use strict';
const net = require('node:net');
const { execFileSync } = require('node:child_process');
const mod = { exports: {} };
process.dlopen(mod, process.argv[2]);
const targets = JSON.parse(process.argv[3]);
const results = [];
const server = net.createServer(s => {
  results.push({ remotePort: s.remotePort, od: mod.exports.getOriginalDst(s._handle.fd) ?? null });
  s.destroy();
});
server.listen(0, '::', async () => {
  const port = server.address().port;
  execFileSync('iptables', ['-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '--dport', '8080', '-j', 'REDIRECT', '--to-ports', String(port)]);
  if (targets.some(t => t.includes(':'))) {
    execFileSync('ip6tables', ['-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '--dport', '8080', '-j', 'REDIRECT', '--to-ports', String(port)]);
  }
  const out = [];
  for (const host of [...targets, 'direct']) {
    const c = await new Promise((resolve, reject) => {
      const c = host === 'direct' ? net.connect(port, '127.0.0.1') : net.connect(8080, host);
      c.once('connect', () => resolve(c)).once('error', reject);
    });
    out.push({ target: host, localPort: c.localPort });
    await new Promise(resolve => c.once('close', resolve));
  }
  server.close();
  for (const o of out) o.od = results.find(r => r.remotePort === o.localPort)?.od;
  process.stdout.write(JSON.stringify({ port, out }) + '\\n');
});
`;

(NETNS_REASON ? describe.skip : describe)('SO_ORIGINAL_DST in a network namespace', () => {
  const ns = `sail-native-${process.pid}`;
  const tmp = makeTmpDir();
  const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' });

  afterAll(() => {
    try {
      ip('netns', 'del', ns);
    } catch {
      // Already gone (setup failed before adding it).
    }
    tmp.cleanup();
  });

  it('reads the original IPv4 and IPv6 destinations of REDIRECTed connections', async () => {
    ip('netns', 'add', ns);
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    // A veth end with addresses gives the namespace routes to non-local destinations, so connect()
    // gets as far as the nat OUTPUT chain.
    ip('-n', ns, 'link', 'add', 'sail0', 'type', 'veth', 'peer', 'name', 'sail1');
    ip('-n', ns, 'addr', 'add', '10.9.0.1/24', 'dev', 'sail0');
    ip('-n', ns, 'link', 'set', 'sail0', 'up');
    const v6 = hasTool('ip6tables');
    if (v6) ip('-n', ns, '-6', 'addr', 'add', 'fd00:9::1/64', 'dev', 'sail0', 'nodad');
    else console.warn('skipping the IPv6 case: ip6tables not installed');

    const script = path.join(tmp.dir, 'child.js');
    fs.writeFileSync(script, CHILD_SCRIPT);
    const targets = ['10.9.0.77', '127.0.0.1', ...(v6 ? ['fd00:9::77'] : [])];
    const child = spawn(
      'ip',
      ['netns', 'exec', ns, process.execPath, script, nativeAddonPath()!, JSON.stringify(targets)],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>(resolve => child.on('close', resolve));
    expect({ code, stderr }).toEqual({ code: 0, stderr: '' });

    const { port, out } = JSON.parse(stdout) as {
      port: number;
      out: { target: string; od: unknown }[];
    };
    const byTarget = Object.fromEntries(out.map(o => [o.target, o.od]));
    expect(byTarget['10.9.0.77']).toEqual({ address: '10.9.0.77', port: 8080, family: 4 });
    expect(byTarget['127.0.0.1']).toEqual({ address: '127.0.0.1', port: 8080, family: 4 });
    if (v6)
      expect(byTarget['fd00:9::77']).toEqual({ address: 'fd00:9::77', port: 8080, family: 6 });
    // Not redirected: conntrack's entry is the connection's own destination (or none at all).
    expect([null, { address: '127.0.0.1', port, family: 4 }]).toContainEqual(byTarget.direct);
  });
});
