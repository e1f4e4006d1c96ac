/**
 * A network-namespace lab for end-to-end tests of the node agent (root only): a control-plane
 * namespace `cp` and one namespace per "VM" on one Linux bridge, each with what a real VM on a
 * flat LAN has:
 *
 *   bridge smlTAGbr  10.A.B.254/24  (this process's side: the gateway; forwarding off on it)
 *     ├── cp    10.A.B.2   the LAN resolver (lan-dns.ts, UDP+TCP :53); the control plane goes here
 *     ├── vm1   10.A.B.11  ┐ eth0, lo up, default route via 10.A.B.254,
 *     ├── vm2   10.A.B.12  │ /etc/netns/NS/resolv.conf → `nameserver 10.A.B.2`, `search lan`,
 *     └── vm3   10.A.B.13  ┘ /etc/netns/NS/hosts → localhost and the VM's own name
 *   VIPs for ServiceEntries: 10.A.(B+1).0/24 (off-link: routed to the gateway, which drops them,
 *   so only capture makes them work and nothing leaves the machine)
 *
 * A and B come from the run's random tag, so runs in parallel do not clash. The LAN resolver
 * knows `controlplane.lan`, `cp.lan`, `gateway.lan` and `VM.lan` (NXDOMAIN for the rest) and
 * logs every query ({@link MeshLab.dnsQueries}).
 *
 * Everything is undone by {@link MeshLab.destroy} (processes, namespaces, links, /etc/netns dirs,
 * the tmp dir), also after a half-done create. A state file per lab in {@link STATE_DIR} names
 * the owning pid; {@link MeshLab.sweep} removes the leftovers of labs whose owner has died.
 *
 * Processes run with `ip netns exec` (which bind-mounts /etc/netns/NS/* over /etc), optionally
 * under another uid/gid through `setpriv`. Nothing here blocks the event loop.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { type LanDnsQuery, parseLanDnsLog } from './lan-dns';
import { waitFor } from './wait-for';

/** Prefix of the lab's namespace names: `smlab-TAG-NODE`. */
export const NS_PREFIX = 'smlab';
/** Prefix of the lab's link names: `smlTAGbr` (bridge), `smlTAGn` (host end of node n's veth). */
export const LINK_PREFIX = 'sml';
/** Where each lab records what it made and its owner's pid (for {@link MeshLab.sweep}). */
export const STATE_DIR = '/run/sail-mesh-lab';
/** The control-plane namespace's node name. */
export const CP = 'cp';

/**
 * The compiled helpers the lab runs as processes (`npx tsc -p .` builds them). Works from the
 * TypeScript sources (jest) and from build/ alike.
 */
const HELPERS_BUILD_DIR = __dirname.split(path.sep).includes('build')
  ? __dirname
  : path.join(__dirname, '..', '..', 'build', 'test', 'helpers');
/** build/test/helpers/lan-dns.js */
export const LAN_DNS_JS = path.join(HELPERS_BUILD_DIR, 'lan-dns.js');
/** build/test/helpers/mesh-apps.js */
export const MESH_APPS_JS = path.join(HELPERS_BUILD_DIR, 'mesh-apps.js');

const TAG_RE = /^[a-z0-9]{6}$/;
const NODE_RE = /^[a-z][a-z0-9]{0,9}$/;
const INDEX_CHARS = '0123456789abcdefghijklmnopqrstuvwxyz';

/** Options of {@link MeshLab.create}. */
export interface MeshLabOptions {
  /** 6 characters [a-z0-9]; default random. Names every namespace, link and file of the lab. */
  readonly tag?: string;
  /** The VM namespaces' node names, e.g. ['vm1', 'vm2', 'vm3'] ([a-z][a-z0-9]{0,9}, not cp). */
  readonly vms: readonly string[];
  /** The LAN's DNS domain. Default 'lan'. */
  readonly lanDomain?: string;
  /** resolv.conf `search` domains. Default [lanDomain]; [] writes no search line. */
  readonly searchDomains?: readonly string[];
  /** Start the LAN resolver in cp. Default true. */
  readonly dns?: boolean;
}

/** The outcome of {@link MeshLab.exec}. */
export interface ExecResult {
  /** Exit code; -1 when killed by a signal or not started. */
  readonly code: number;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Options of {@link MeshLab.exec}. */
export interface ExecOptions {
  readonly input?: string;
  /** Default 15 s; the command is killed (SIGTERM) after it. */
  readonly timeoutMs?: number;
  /** Added to this process's environment. */
  readonly env?: Readonly<Record<string, string>>;
  /** Run as this uid and/or gid (setpriv; supplementary groups are cleared). */
  readonly uid?: number;
  readonly gid?: number;
  readonly cwd?: string;
}

/** Options of {@link MeshLab.spawn}. */
export interface SpawnOptions {
  readonly env?: Readonly<Record<string, string>>;
  readonly uid?: number;
  readonly gid?: number;
  readonly cwd?: string;
  /** 'pipe' (default): output kept on the handle; 'inherit': straight to this process's. */
  readonly stdio?: 'pipe' | 'inherit';
  /** A name for failure messages and echoed output; default argv[0]'s basename. */
  readonly name?: string;
}

/** The outcome of {@link MeshLab.tcpProbe}. */
export interface TcpProbeResult {
  /** The TCP connection was established. */
  readonly connected: boolean;
  /** What the peer sent (utf8, at most 4 KiB). */
  readonly data: string;
  /** How the probe ended: the peer closed, reset, the timeout, a newline (with untilNewline). */
  readonly end: 'close' | 'reset' | 'timeout' | 'newline' | 'error';
  readonly error?: string;
  readonly ms: number;
}

/** The outcome of {@link MeshLab.curl}. */
export interface CurlResult {
  /** curl's exit code (0 = an HTTP response came back, whatever its status). */
  readonly exitCode: number;
  /** HTTP status, 0 when none. */
  readonly status: number;
  readonly body: string;
  readonly stderr: string;
}

const MAX_KEPT = 1024 * 1024;

/** A process running in a lab namespace, with its output kept (the last MiB of each stream). */
export class LabProcess {
  /** Resolves when the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private out = '';
  private err = '';
  private readonly child: ChildProcess;

  constructor(
    readonly node: string,
    readonly argv: readonly string[],
    readonly name: string,
    child: ChildProcess,
  ) {
    this.child = child;
    const echo = process.env.MESH_LAB_ECHO === '1';
    const keep = (which: 'out' | 'err') => (b: Buffer) => {
      const s = b.toString();
      if (echo) process.stderr.write(s.replace(/^(?=.)/gm, `[${node} ${name}] `));
      const next = this[which] + s;
      this[which] = next.length > MAX_KEPT ? next.slice(next.length - MAX_KEPT) : next;
    };
    child.stdout?.on('data', keep('out'));
    child.stderr?.on('data', keep('err'));
    this.exited = new Promise(resolve => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', err => {
        this.err += `spawn failed: ${err.message}\n`;
        resolve({ code: -1, signal: null });
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Still running (not exited, not failed to spawn). */
  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null && !!this.child.pid;
  }

  get stdout(): string {
    return this.out;
  }

  get stderr(): string {
    return this.err;
  }

  /** Both streams, for failure messages (the tail). */
  tail(chars = 3000): string {
    const text = `${this.out}${this.err ? `\n[stderr]\n${this.err}` : ''}`;
    return text.slice(-chars);
  }

  /** stdout lines that parse as JSON objects (pino logs, the apps' events). */
  jsonLines(): Record<string, unknown>[] {
    const lines: Record<string, unknown>[] = [];
    for (const line of this.out.split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // A partial last line.
      }
    }
    return lines;
  }

  /**
   * Resolves with the output once `pattern` appears in stdout or stderr; rejects when the process
   * exits first or after `timeoutMs` (default 10 s).
   */
  async waitForOutput(pattern: string | RegExp, timeoutMs = 10_000): Promise<string> {
    const test = (s: string) =>
      typeof pattern === 'string' ? s.includes(pattern) : pattern.test(s);
    return waitFor(
      () => {
        if (test(this.out) || test(this.err)) return `${this.out}${this.err}`;
        if (!this.running) throw new Error(`${this.name} in ${this.node} exited: ${this.tail()}`);
        return undefined;
      },
      { timeoutMs, intervalMs: 25, what: `${String(pattern)} from ${this.name} in ${this.node}` },
    ).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; its output: ${this.tail()}`);
    });
  }

  /** Sends a signal (default SIGTERM); false when it is not running. */
  kill(signal: NodeJS.Signals = 'SIGTERM'): boolean {
    if (!this.running) return false;
    return this.child.kill(signal);
  }

  /** SIGTERM, SIGKILL after `graceMs` (default 5 s); resolves with how it ended. */
  async stop(graceMs = 5_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.running) {
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
      const r = await this.exited;
      clearTimeout(timer);
      return r;
    }
    return this.exited;
  }
}

/** Runs a command in this namespace to completion without blocking the event loop. */
export function hostExec(
  file: string,
  args: readonly string[],
  opts: ExecOptions = {},
): Promise<ExecResult> {
  return new Promise(resolve => {
    const child = execFile(
      file,
      args,
      {
        encoding: 'utf8',
        timeout: opts.timeoutMs ?? 15_000,
        maxBuffer: 64 * 1024 * 1024,
        env: { ...process.env, ...opts.env },
        ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
      },
      (err, stdout, stderr) => {
        const e = err as (Error & { code?: unknown; signal?: NodeJS.Signals | null }) | null;
        resolve({
          code: !e ? 0 : typeof e.code === 'number' ? e.code : -1,
          signal: e?.signal ?? null,
          stdout,
          stderr: e && typeof e.code !== 'number' && !e.signal ? `${stderr}${e.message}` : stderr,
        });
      },
    );
    child.stdin?.on('error', () => {});
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

/** Runs `file args` on the host and returns its stdout; throws with its output when it fails. */
export async function must(
  file: string,
  args: readonly string[],
  opts: ExecOptions = {},
): Promise<string> {
  const r = await hostExec(file, args, opts);
  if (r.code !== 0)
    throw new Error(
      `${file} ${args.join(' ')} exited ${r.code}${r.signal ? ` (${r.signal})` : ''}: ${(r.stderr.trim() || r.stdout.trim()).slice(-3000)}`,
    );
  return r.stdout;
}

/** `setpriv` prefix for a uid/gid change; empty when neither is given. */
function privPrefix(uid?: number, gid?: number): string[] {
  if (uid === undefined && gid === undefined) return [];
  return [
    'setpriv',
    ...(uid !== undefined ? [`--reuid=${uid}`] : []),
    ...(gid !== undefined ? [`--regid=${gid}`] : []),
    '--clear-groups',
    '--',
  ];
}

/** What a lab made (or would make), as recorded in its state file. */
interface LabRecord {
  readonly tag: string;
  readonly pid: number;
  readonly namespaces: readonly string[];
  readonly links: readonly string[];
  readonly dir?: string;
}

const stateFile = (tag: string) => path.join(STATE_DIR, `${tag}.json`);

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function listNamespaces(): Promise<string[]> {
  const r = await hostExec('ip', ['netns', 'list']);
  return r.stdout
    .split('\n')
    .map(l => l.split(' ')[0] ?? '')
    .filter(Boolean);
}

async function listLinks(): Promise<string[]> {
  const r = await hostExec('ip', ['-o', 'link', 'show']);
  // "12: smlab12br: <…" or "13: sml1234561@if2: <…"
  return r.stdout
    .split('\n')
    .map(l => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1] ?? '')
    .filter(Boolean);
}

/** SIGKILLs every process in namespace `ns` until none is left (bounded). */
async function killNamespacePids(ns: string): Promise<void> {
  for (let i = 0; i < 50; i++) {
    const r = await hostExec('ip', ['netns', 'pids', ns]);
    const pids = r.stdout
      .split('\n')
      .map(Number)
      .filter(p => Number.isInteger(p) && p > 1 && p !== process.pid);
    if (r.code !== 0 || pids.length === 0) return;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    await new Promise(resolve => setTimeout(resolve, 20));
  }
}

/** Undoes everything a record names; returns the problems (never throws). */
async function teardown(rec: LabRecord): Promise<string[]> {
  const problems: string[] = [];
  const existing = new Set(await listNamespaces());
  for (const ns of rec.namespaces) {
    if (!existing.has(ns)) continue;
    await killNamespacePids(ns);
    const r = await hostExec('ip', ['netns', 'del', ns]);
    if (r.code !== 0) problems.push(`ip netns del ${ns}: ${r.stderr.trim()}`);
  }
  // Deleting a namespace deletes its veth pair; these are the bridge and half-made pairs.
  const links = new Set(await listLinks());
  for (const link of rec.links) {
    if (!links.has(link)) continue;
    const r = await hostExec('ip', ['link', 'del', link]);
    // A veth can vanish with its namespace between the listing and the delete.
    if (r.code !== 0 && !/Cannot find device/.test(r.stderr))
      problems.push(`ip link del ${link}: ${r.stderr.trim()}`);
  }
  for (const ns of rec.namespaces) {
    try {
      fs.rmSync(path.join('/etc/netns', ns), { recursive: true, force: true });
    } catch (err) {
      problems.push(`rm /etc/netns/${ns}: ${(err as Error).message}`);
    }
  }
  if (rec.dir) fs.rmSync(rec.dir, { recursive: true, force: true });
  fs.rmSync(stateFile(rec.tag), { force: true });
  return problems;
}

/** Tags of labs this process has open (sweep never touches them). */
const openHere = new Set<string>();

/** A lab of network namespaces; see the file comment. */
export class MeshLab {
  /** Namespace node names: cp first, then the VMs. */
  readonly nodes: readonly string[];
  /** Every process spawned, for destroy. */
  private readonly procs: LabProcess[] = [];
  private dns: LabProcess | undefined;
  private sshKey: Promise<string> | undefined;
  private destroyed = false;
  /** What this instance actually made (destroy removes only these; sweep goes by name). */
  private readonly made = { namespaces: new Set<string>(), links: new Set<string>() };

  private constructor(
    readonly tag: string,
    /** The VM node names, in order. */
    readonly vms: readonly string[],
    /** First three octets of the LAN, e.g. '10.200.4'. */
    private readonly lanPrefix: string,
    /** First three octets of the VIP range, e.g. '10.200.5'. */
    private readonly vipPrefix: string,
    readonly lanDomain: string,
    /** The lab's tmp dir (0755): sshd config and keys, and room for the test's files. */
    readonly dir: string,
  ) {
    this.nodes = [CP, ...vms];
  }

  /** The LAN, e.g. 10.200.4.0/24. */
  get subnet(): string {
    return `${this.lanPrefix}.0/24`;
  }

  /** The VIP range for ServiceEntry addresses, e.g. 10.200.5.0/24. */
  get vipSubnet(): string {
    return `${this.vipPrefix}.0/24`;
  }

  /** The bridge's address in this process's namespace: every node's default gateway. */
  get gateway(): string {
    return `${this.lanPrefix}.254`;
  }

  get bridge(): string {
    return `${LINK_PREFIX}${this.tag}br`;
  }

  /** The IP of a node (`cp`, a VM name) or of `gateway`. */
  ip(node: string): string {
    if (node === 'gateway') return this.gateway;
    if (node === CP) return `${this.lanPrefix}.2`;
    const i = this.vms.indexOf(node);
    if (i < 0) throw new Error(`mesh lab ${this.tag}: no node ${JSON.stringify(node)}`);
    return `${this.lanPrefix}.${11 + i}`;
  }

  /** The n-th VIP (1..253), e.g. vip(1) = 10.200.5.1. */
  vip(n: number): string {
    if (!Number.isInteger(n) || n < 1 || n > 253) throw new Error(`vip(${n}): want 1..253`);
    return `${this.vipPrefix}.${n}`;
  }

  /** The real `ip netns` name of a node. */
  netns(node: string): string {
    if (!this.nodes.includes(node))
      throw new Error(`mesh lab ${this.tag}: no node ${JSON.stringify(node)}`);
    return `${NS_PREFIX}-${this.tag}-${node}`;
  }

  /** The LAN DNS name of a node (`vm1.lan`; cp is also `controlplane.lan`). */
  lanName(node: string): string {
    return `${node}.${this.lanDomain}`;
  }

  /** The host end of a node's veth. */
  private veth(node: string): string {
    return `${LINK_PREFIX}${this.tag}${INDEX_CHARS[this.nodes.indexOf(node)]}`;
  }

  private record(): LabRecord {
    return {
      tag: this.tag,
      pid: process.pid,
      namespaces: this.nodes.map(n => this.netns(n)),
      links: [this.bridge, ...this.nodes.map(n => this.veth(n))],
      dir: this.dir,
    };
  }

  /**
   * Builds the lab. On failure everything made so far is removed and the error rethrown.
   * @throws Error naming the command that failed
   */
  static async create(opts: MeshLabOptions): Promise<MeshLab> {
    const tag = opts.tag ?? crypto.randomBytes(3).toString('hex');
    if (!TAG_RE.test(tag)) throw new Error(`tag ${JSON.stringify(tag)}: want 6 of [a-z0-9]`);
    if (opts.vms.length === 0 || opts.vms.length > 30)
      throw new Error(`vms: want 1 to 30 names, got ${opts.vms.length}`);
    for (const vm of opts.vms) {
      if (!NODE_RE.test(vm) || vm === CP || vm === 'gateway' || vm === 'controlplane')
        throw new Error(
          `vms: ${JSON.stringify(vm)} is not a usable node name ([a-z][a-z0-9]{0,9}, not cp)`,
        );
    }
    if (new Set(opts.vms).size !== opts.vms.length) throw new Error('vms: duplicate names');
    const [lanPrefix, vipPrefix] = await pickSubnets(tag);
    fs.mkdirSync(STATE_DIR, { recursive: true, mode: 0o755 });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `mesh-lab-${tag}-`));
    fs.chmodSync(dir, 0o755);
    const lab = new MeshLab(tag, opts.vms, lanPrefix, vipPrefix, opts.lanDomain ?? 'lan', dir);
    // The record first: whatever happens next, sweep or destroy knows what to remove.
    fs.writeFileSync(stateFile(tag), JSON.stringify(lab.record()));
    openHere.add(tag);
    try {
      await lab.build(opts.searchDomains ?? [lab.lanDomain]);
      if (opts.dns ?? true) await lab.startLanDns();
    } catch (err) {
      await lab.destroy().catch(() => {});
      throw err;
    }
    return lab;
  }

  private async build(search: readonly string[]): Promise<void> {
    const br = this.bridge;
    await must('ip', ['link', 'add', br, 'type', 'bridge']);
    this.made.links.add(br);
    await must('ip', ['addr', 'add', `${this.gateway}/24`, 'dev', br]);
    await must('ip', ['link', 'set', br, 'up']);
    // Packets the nodes route to the gateway (VIPs no proxy captured) are dropped here, never
    // forwarded off the machine, whatever the host's ip_forward says.
    try {
      fs.writeFileSync(`/proc/sys/net/ipv4/conf/${br}/forwarding`, '0');
    } catch {
      // Not every kernel (gVisor) has the per-interface switch; ip_forward then decides.
    }
    // allSettled: when one node fails, the others must finish before destroy looks at `made`.
    const results = await Promise.allSettled(this.nodes.map(node => this.buildNode(node, search)));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  private async buildNode(node: string, search: readonly string[]): Promise<void> {
    const ns = this.netns(node);
    const veth = this.veth(node);
    await must('ip', ['netns', 'add', ns]);
    this.made.namespaces.add(ns);
    await must('ip', ['link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    this.made.links.add(veth);
    await must('ip', ['link', 'set', veth, 'master', this.bridge, 'up']);
    await must('ip', ['-n', ns, 'addr', 'add', `${this.ip(node)}/24`, 'dev', 'eth0']);
    await must('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    await must('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    await must('ip', ['-n', ns, 'route', 'add', 'default', 'via', this.gateway]);
    const etc = path.join('/etc/netns', ns);
    // Before the namespace is used: `ip netns exec` bind-mounts these files over /etc.
    fs.mkdirSync(etc, { recursive: true, mode: 0o755 });
    fs.writeFileSync(
      path.join(etc, 'resolv.conf'),
      [
        `# mesh lab ${this.tag}: the LAN resolver in the control-plane namespace`,
        `nameserver ${this.ip(CP)}`,
        ...(search.length > 0 ? [`search ${search.join(' ')}`] : []),
        'options timeout:2 attempts:2',
        '',
      ].join('\n'),
    );
    fs.writeFileSync(
      path.join(etc, 'hosts'),
      [
        '127.0.0.1 localhost',
        '::1 localhost ip6-localhost ip6-loopback',
        `${this.ip(node)} ${this.lanName(node)} ${node}`,
        '',
      ].join('\n'),
    );
  }

  private async startLanDns(): Promise<void> {
    if (!fs.existsSync(LAN_DNS_JS))
      throw new Error(`${LAN_DNS_JS} is missing: run \`npx tsc -p .\` first`);
    const records: Record<string, string> = {
      [`controlplane.${this.lanDomain}`]: this.ip(CP),
      [`gateway.${this.lanDomain}`]: this.gateway,
    };
    for (const n of this.nodes) records[this.lanName(n)] = this.ip(n);
    const dns = this.spawn(
      CP,
      [
        process.execPath,
        LAN_DNS_JS,
        '--listen',
        `${this.ip(CP)}:53`,
        ...Object.entries(records).flatMap(([k, v]) => ['--record', `${k}=${v}`]),
      ],
      { name: 'lan-dns' },
    );
    this.dns = dns;
    await dns.waitForOutput('"event":"listening"', 15_000);
  }

  /** The LAN resolver process (undefined with `dns: false`). */
  get lanDns(): LabProcess | undefined {
    return this.dns;
  }

  /** Every query the LAN resolver has answered so far. */
  dnsQueries(): LanDnsQuery[] {
    return this.dns ? parseLanDnsLog(this.dns.stdout) : [];
  }

  private argvIn(node: string, argv: readonly string[], uid?: number, gid?: number): string[] {
    if (argv.length === 0) throw new Error('argv: want at least the program');
    return ['netns', 'exec', this.netns(node), ...privPrefix(uid, gid), ...argv];
  }

  /** Runs a command in a node's namespace to completion; never rejects on a nonzero exit. */
  exec(node: string, argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return hostExec('ip', this.argvIn(node, argv, opts.uid, opts.gid), opts);
  }

  /**
   * Like {@link exec}, but resolves with stdout only on exit code 0.
   * @throws Error with the command, the exit code and stderr otherwise
   */
  async run(node: string, argv: readonly string[], opts: ExecOptions = {}): Promise<string> {
    const r = await this.exec(node, argv, opts);
    if (r.code !== 0)
      throw new Error(
        `in ${node}: ${argv.join(' ')} exited ${r.code}${r.signal ? ` (${r.signal})` : ''}: ${r.stderr.trim() || r.stdout.trim()}`,
      );
    return r.stdout;
  }

  /** Starts a long-running process in a node's namespace; destroy() kills it if still running. */
  spawn(node: string, argv: readonly string[], opts: SpawnOptions = {}): LabProcess {
    if (this.destroyed) throw new Error(`mesh lab ${this.tag} is destroyed`);
    const child = spawn('ip', this.argvIn(node, argv, opts.uid, opts.gid), {
      stdio:
        opts.stdio === 'inherit' ? ['ignore', 'inherit', 'inherit'] : ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...opts.env },
      ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
    });
    const name =
      opts.name ??
      path.basename(argv[argv.length > 1 && argv[0] === process.execPath ? 1 : 0] ?? '?');
    const p = new LabProcess(node, argv, name, child);
    this.procs.push(p);
    return p;
  }

  /** curl inside a node's namespace: `-sS`, with `--max-time` from timeoutMs (default 5 s). */
  async curl(
    node: string,
    url: string,
    opts: {
      method?: string;
      headers?: Readonly<Record<string, string>>;
      data?: string;
      timeoutMs?: number;
      extraArgs?: readonly string[];
    } = {},
  ): Promise<CurlResult> {
    const timeoutMs = opts.timeoutMs ?? 5_000;
    const args = [
      'curl',
      '-sS',
      '--max-time',
      String(timeoutMs / 1000),
      '-w',
      '\n%{http_code}',
      ...(opts.method ? ['-X', opts.method] : []),
      ...Object.entries(opts.headers ?? {}).flatMap(([k, v]) => ['-H', `${k}: ${v}`]),
      ...(opts.data !== undefined ? ['--data-binary', opts.data] : []),
      ...(opts.extraArgs ?? []),
      url,
    ];
    const r = await this.exec(node, args, { timeoutMs: timeoutMs + 5_000 });
    const nl = r.stdout.lastIndexOf('\n');
    return {
      exitCode: r.code,
      status: Number(r.stdout.slice(nl + 1)) || 0,
      body: nl >= 0 ? r.stdout.slice(0, nl) : '',
      stderr: r.stderr,
    };
  }

  /**
   * Connects from a node's namespace to HOST:PORT with a real socket (mesh-apps.js probe),
   * optionally sends `send`, and reports what came back until the peer closes, a newline
   * (`untilNewline`) or `timeoutMs` (default 3 s).
   */
  async tcpProbe(
    from: string,
    host: string,
    port: number,
    opts: { send?: string; untilNewline?: boolean; timeoutMs?: number } = {},
  ): Promise<TcpProbeResult> {
    const timeoutMs = opts.timeoutMs ?? 3_000;
    const r = await this.exec(
      from,
      [
        process.execPath,
        MESH_APPS_JS,
        'probe',
        '--host',
        host,
        '--port',
        String(port),
        '--timeout-ms',
        String(timeoutMs),
        ...(opts.send !== undefined ? ['--send', opts.send] : []),
        ...(opts.untilNewline ? ['--until-newline'] : []),
      ],
      { timeoutMs: timeoutMs + 10_000 },
    );
    try {
      return JSON.parse(r.stdout) as TcpProbeResult;
    } catch {
      throw new Error(
        `probe from ${from} to ${host}:${port} failed (${r.code}): ${r.stderr}${r.stdout}`,
      );
    }
  }

  /**
   * Runs the real /usr/sbin/sshd in a node's namespace on port 22 (host key made once per lab,
   * no way to log in: only its reachability matters). Resolves once it listens.
   */
  async startSshd(node: string): Promise<LabProcess> {
    const sshDir = path.join(this.dir, 'ssh');
    this.sshKey ??= (async () => {
      fs.mkdirSync(sshDir, { recursive: true, mode: 0o755 });
      const key = path.join(sshDir, 'ssh_host_ed25519_key');
      await must('ssh-keygen', [
        '-q',
        '-t',
        'ed25519',
        '-N',
        '',
        '-C',
        `mesh-lab-${this.tag}`,
        '-f',
        key,
      ]);
      return key;
    })();
    const key = await this.sshKey;
    // sshd's privilege separation directory (made by the package's systemd unit on a real host).
    fs.mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
    const config = path.join(sshDir, `sshd_config.${node}`);
    fs.writeFileSync(
      config,
      [
        'Port 22',
        'ListenAddress 0.0.0.0',
        `HostKey ${key}`,
        'PidFile none',
        'UsePAM no',
        'PermitRootLogin no',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'PubkeyAuthentication no',
        'UseDNS no',
        'LogLevel INFO',
        '',
      ].join('\n'),
    );
    const p = this.spawn(node, ['/usr/sbin/sshd', '-D', '-e', '-f', config], { name: 'sshd' });
    await p.waitForOutput(/Server listening on 0\.0\.0\.0 port 22/, 10_000);
    return p;
  }

  /** True when `from` reaches `to`'s sshd: a TCP connection that reads an OpenSSH banner. */
  async sshReachable(
    from: string,
    to: string,
    timeoutMs = 3_000,
  ): Promise<{ ok: boolean; banner: string; error?: string }> {
    const r = await this.tcpProbe(from, this.ip(to), 22, { untilNewline: true, timeoutMs });
    const banner = r.data.trim();
    return {
      ok: banner.startsWith('SSH-2.0-OpenSSH'),
      banner,
      ...(r.error !== undefined ? { error: r.error } : {}),
    };
  }

  /**
   * `iptables-save` of a node's namespace (one backend and family), without comments and with
   * counters zeroed and tables that hold nothing dropped (see {@link normalizeIptablesSave}), so
   * two saves compare equal when the rules are the same. Empty when the backend has no tables.
   */
  async iptablesSave(
    node: string,
    opts: {
      family?: 'ipv4' | 'ipv6';
      backend?: 'nft' | 'legacy' | 'default';
      keepEmptyTables?: boolean;
    } = {},
  ): Promise<string> {
    const base = opts.family === 'ipv6' ? 'ip6tables' : 'iptables';
    const bin =
      !opts.backend || opts.backend === 'default' ? `${base}-save` : `${base}-${opts.backend}-save`;
    const out = await this.run(node, [bin]);
    return normalizeIptablesSave(out, { keepEmptyTables: opts.keepEmptyTables ?? false });
  }

  /**
   * Every trace of Sail's capture in a node's namespace: iptables lines (both backends, both
   * families) that mention sail/SAIL, and policy-routing rules/routes of TPROXY's table 133.
   * Empty means clean.
   */
  async sailRules(node: string): Promise<string[]> {
    const found: string[] = [];
    for (const base of ['iptables', 'ip6tables']) {
      for (const backend of ['nft', 'legacy']) {
        const bin = `${base}-${backend}-save`;
        if (!(await hostExec('sh', ['-c', `command -v ${bin}`])).stdout.trim()) continue;
        const r = await this.exec(node, [bin]);
        for (const line of normalizeIptablesSave(r.stdout).split('\n'))
          if (/sail/i.test(line)) found.push(`${bin}: ${line}`);
      }
    }
    for (const family of ['-4', '-6']) {
      const rules = await this.exec(node, ['ip', family, 'rule', 'show']);
      for (const line of rules.stdout.split('\n'))
        if (/lookup 133\b/.test(line)) found.push(`ip ${family} rule: ${line.trim()}`);
      const routes = await this.exec(node, ['ip', family, 'route', 'show', 'table', '133']);
      for (const line of routes.stdout.split('\n'))
        if (line.trim()) found.push(`ip ${family} route table 133: ${line.trim()}`);
    }
    return found;
  }

  /**
   * Stops every process it spawned (SIGTERM, then SIGKILL after `graceMs`, default 3 s), kills
   * whatever else still runs in its namespaces, and removes namespaces, links, /etc/netns dirs,
   * the tmp dir and the state file. Idempotent; safe after a half-done create.
   * @throws AggregateError listing what could not be removed (after trying everything)
   */
  async destroy(graceMs = 3_000): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    await Promise.all(this.procs.map(p => p.stop(graceMs)));
    const problems = await teardown({
      ...this.record(),
      namespaces: [...this.made.namespaces],
      links: [...this.made.links],
    });
    openHere.delete(this.tag);
    if (problems.length > 0)
      throw new AggregateError(
        problems.map(p => new Error(p)),
        `mesh lab ${this.tag}: teardown incomplete: ${problems.join('; ')}`,
      );
  }

  /**
   * Removes leftovers of labs whose owning process is gone (a crashed or killed test run):
   * namespaces named `PREFIX-TAG-*`, links `smlTAG*`, /etc/netns dirs and state files. Labs of
   * live processes are left alone. Resolves with the tags removed.
   */
  static async sweep(prefix = NS_PREFIX): Promise<string[]> {
    const records = new Map<string, LabRecord>();
    try {
      for (const f of fs.readdirSync(STATE_DIR)) {
        if (!f.endsWith('.json')) continue;
        try {
          const rec = JSON.parse(fs.readFileSync(path.join(STATE_DIR, f), 'utf8')) as LabRecord;
          if (TAG_RE.test(rec.tag)) records.set(rec.tag, rec);
        } catch {
          // A torn state file: its namespaces are still found by name below.
        }
      }
    } catch {
      // No state dir: nothing was recorded.
    }
    const nsRe = new RegExp(`^${prefix}-([a-z0-9]{6})-`);
    const linkRe = new RegExp(`^${LINK_PREFIX}([a-z0-9]{6})(br|[0-9a-z])$`);
    const namespaces = await listNamespaces();
    const links = await listLinks();
    const tags = new Set<string>(records.keys());
    for (const ns of namespaces) {
      const m = nsRe.exec(ns);
      if (m) tags.add(m[1] as string);
    }
    for (const l of links) {
      const m = linkRe.exec(l);
      if (m) tags.add(m[1] as string);
    }
    const removed: string[] = [];
    for (const tag of tags) {
      if (openHere.has(tag)) continue;
      const rec = records.get(tag);
      if (rec && pidAlive(rec.pid)) continue;
      await teardown({
        tag,
        pid: 0,
        namespaces: [
          ...new Set([
            ...(rec?.namespaces ?? []),
            ...namespaces.filter(n => nsRe.exec(n)?.[1] === tag),
          ]),
        ],
        links: [
          ...new Set([...(rec?.links ?? []), ...links.filter(l => linkRe.exec(l)?.[1] === tag)]),
        ],
        ...(rec?.dir ? { dir: rec.dir } : {}),
      });
      removed.push(tag);
    }
    return removed;
  }
}

/**
 * iptables-save output made comparable: `#` lines dropped, `[packets:bytes]` counters zeroed, and
 * tables that hold nothing (only built-in chains with policy ACCEPT, no rules) dropped: such a
 * table filters nothing, and the nft backend keeps it after its last rule is deleted.
 */
export function normalizeIptablesSave(
  text: string,
  opts: { keepEmptyTables?: boolean } = {},
): string {
  const out: string[] = [];
  let table: string[] = [];
  for (const raw of text.split('\n')) {
    const l = raw.replace(/\[\d+:\d+\]/g, '[0:0]');
    if (l.trim() === '' || l.startsWith('#')) continue;
    if (l.startsWith('*')) {
      table = [l];
      continue;
    }
    if (table.length === 0) {
      out.push(l);
      continue;
    }
    table.push(l);
    if (l === 'COMMIT') {
      const empty = table.slice(1, -1).every(x => /^:[A-Z]+ ACCEPT \[0:0\]$/.test(x));
      if (!empty || opts.keepEmptyTables) out.push(...table);
      table = [];
    }
  }
  return [...out, ...table].join('\n');
}

/** Two /24s (LAN, VIPs) from the tag, not used on this host: ['10.A.B', '10.A.B+1']. */
async function pickSubnets(tag: string): Promise<[string, string]> {
  const used =
    (await hostExec('ip', ['-4', '-o', 'addr', 'show'])).stdout +
    (await hostExec('ip', ['-4', 'route', 'show', 'table', 'all'])).stdout;
  for (let attempt = 0; attempt < 64; attempt++) {
    const h = crypto.createHash('sha256').update(`${tag}/${attempt}`).digest();
    const a = 160 + ((h[0] as number) % 80);
    const b = ((h[1] as number) % 127) * 2;
    const lan = `10.${a}.${b}`;
    const vip = `10.${a}.${b + 1}`;
    if (!used.includes(`${lan}.`) && !used.includes(`${vip}.`)) return [lan, vip];
  }
  throw new Error(`no free 10.x.y.0/24 pair found for tag ${tag}`);
}
