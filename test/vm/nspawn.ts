/**
 * Booted Debian "VMs" for tests (root only): a Debian root file system made once with
 * debootstrap and cached, one copy-on-write overlay of it per VM, booted with systemd-nspawn as
 * a real systemd system inside an existing network namespace (test/helpers/mesh-lab.ts makes
 * those):
 *
 *   CACHE/bookworm-minbase-KEY.tar.zst   the image, built by debootstrap once (~45 s), KEY = a hash
 *                                        of the suite and the package list; keep it between runs
 *   CACHE/bookworm-minbase-KEY/root/     the image unpacked (from the tarball when missing): the
 *                                        read-only lower layer of every VM
 *   TMP/sail-vm-TAG-NAME/{upper,work}/   the VM's own changes (overlayfs upper and work dirs)
 *   TMP/sail-vm-TAG-NAME/root/           the VM's root: the overlay mount nspawn boots
 *   TMP/sail-vm-TAG-NAME/console.log     what the VM printed on its console (boot messages)
 *
 * A VM is `systemd-nspawn --boot --register=no --keep-unit --network-namespace-path=...`: no
 * machined and no systemd on the host are needed. Commands run inside with nsenter (all the
 * container's namespaces and its root), with a clean environment. `systemctl reboot` inside makes
 * nspawn exit with code 133 ({@link REBOOT_EXIT_CODE}), and {@link NspawnVm.reboot} boots it again
 * on the same overlay, as a real reboot keeps the disk; SIGTERM to nspawn is an orderly poweroff.
 *
 * Everything is undone by {@link NspawnVm.destroy} (the container, the overlay mount, the VM's
 * dir, its state file). A state file per VM in {@link VM_STATE_DIR} names the owning pid, and
 * {@link NspawnVm.sweep} removes VMs whose owner has died (a crashed or killed test run).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { type ExecOptions, type ExecResult, hostExec, must } from '../helpers/mesh-lab';
import { waitFor } from '../helpers/wait-for';

/** Where each VM records what it made and its owner's pid (for {@link NspawnVm.sweep}). */
export const VM_STATE_DIR = '/run/sail-vm-test';
/** The image cache when SAIL_VM_CACHE is not set. */
export const DEFAULT_CACHE_DIR = '/var/cache/sail-test';
/** nspawn's exit code when the container asked for a reboot (`systemctl reboot`). */
export const REBOOT_EXIT_CODE = 133;
/** Prefix of the VM dirs in os.tmpdir(): `sail-vm-TAG-NAME`. */
const VM_DIR_PREFIX = 'sail-vm-';

/**
 * The packages debootstrap adds to minbase: systemd as init, what the node agent's package depends
 * on (iptables, iproute2, adduser for its postinst), and tools the test uses inside the VMs (curl,
 * procps for ps/pgrep, busybox for a tiny HTTP server with CGI). Changing the list changes the
 * cache key, so a new image is built.
 */
export const IMAGE_PACKAGES: readonly string[] = [
  'systemd',
  'systemd-sysv',
  'dbus',
  'iproute2',
  'iptables',
  'ca-certificates',
  'procps',
  'curl',
  'adduser',
  'busybox',
];

/** Bumped when {@link finishImage} changes, so older cached images are not used. */
const IMAGE_RECIPE = 1;

const TAG_RE = /^[a-z0-9]{6}$/;
const NAME_RE = /^[a-z][a-z0-9]{0,9}$/;

/** A clean environment for commands inside a VM (nothing of the test process leaks in). */
const GUEST_ENV: Readonly<Record<string, string>> = {
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  HOME: '/root',
  LANG: 'C.UTF-8',
  TERM: 'dumb',
  SYSTEMD_PAGER: 'cat',
  SYSTEMD_COLORS: '0',
  DEBIAN_FRONTEND: 'noninteractive',
};

const has = (cmd: string) =>
  fs.existsSync(cmd) || process.env.PATH?.split(':').some(d => fs.existsSync(path.join(d, cmd)));

/**
 * Why VMs cannot run here (not root, a tool missing, no overlayfs), or undefined when they can.
 * Checks only what is on this machine; nothing is started.
 */
export function vmSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, mounts, systemd-nspawn)';
  const missing = ['debootstrap', 'systemd-nspawn', 'nsenter', 'ip', 'tar', 'zstd', 'mount'].filter(
    c => !has(c),
  );
  if (missing.length > 0)
    return `needs ${missing.join(', ')} (Debian packages debootstrap, systemd-container, util-linux, iproute2, zstd)`;
  if (!fs.readFileSync('/proc/filesystems', 'utf8').includes('\toverlay'))
    return 'needs overlayfs in the kernel (modprobe overlay)';
  return undefined;
}

/**
 * The Debian mirror this machine uses: SAIL_VM_MIRROR, else the first non-security `deb`/`URIs:`
 * entry of /etc/apt/sources.list and /etc/apt/sources.list.d/*, else deb.debian.org.
 */
export function debianMirror(): string {
  if (process.env.SAIL_VM_MIRROR) return process.env.SAIL_VM_MIRROR;
  const files = ['/etc/apt/sources.list'];
  try {
    for (const f of fs.readdirSync('/etc/apt/sources.list.d').sort())
      files.push(path.join('/etc/apt/sources.list.d', f));
  } catch {
    // No sources.list.d.
  }
  for (const f of files) {
    let text: string;
    try {
      text = fs.readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n')) {
      const m = /^\s*(?:deb\s+(?:\[[^\]]*\]\s+)?|URIs:\s*)(https?:\/\/\S+)/.exec(line);
      const uri = m?.[1];
      if (uri && /\/debian\/?$/.test(uri)) return uri.replace(/\/$/, '');
    }
  }
  return 'http://deb.debian.org/debian';
}

/** Options of {@link ensureRootImage}. */
export interface RootImageOptions {
  /** Debian suite; default 'bookworm'. */
  readonly suite?: string;
  /** Packages added to minbase; default {@link IMAGE_PACKAGES}. */
  readonly packages?: readonly string[];
  /** Default env SAIL_VM_CACHE, else {@link DEFAULT_CACHE_DIR}. */
  readonly cacheDir?: string;
  /** Default {@link debianMirror}(). */
  readonly mirror?: string;
  /** debootstrap's time limit; default 10 min. */
  readonly timeoutMs?: number;
  /** Progress messages (default: none). */
  readonly log?: (msg: string) => void;
}

/** A root file system ready to be the lower layer of VMs. */
export interface RootImage {
  /** The unpacked root (never written to: VMs write to their own overlay upper dir). */
  readonly root: string;
  /** The cached tarball (zstd). */
  readonly tarball: string;
  /** The cache key (hash of suite, variant, packages, recipe). */
  readonly key: string;
  /** How the image was obtained this time, and how long it took. */
  readonly source: 'unpacked' | 'tarball' | 'debootstrap';
  readonly ms: number;
}

/** Cache key of an image: the first 12 hex digits of a SHA-256 of what defines it. */
export function imageKey(suite: string, packages: readonly string[]): string {
  const what = JSON.stringify({
    suite,
    variant: 'minbase',
    packages: [...packages].sort(),
    IMAGE_RECIPE,
  });
  return crypto.createHash('sha256').update(what).digest('hex').slice(0, 12);
}

/**
 * What every VM shares, done once on the fresh debootstrap root: an empty machine-id (each VM
 * makes its own at first boot), no hostname, no downloaded .debs, and apt without recommends
 * (the VMs have no route to a mirror: `apt-get install ./x.deb` must need nothing else).
 */
function finishImage(root: string): void {
  fs.writeFileSync(path.join(root, 'etc/machine-id'), '');
  fs.rmSync(path.join(root, 'var/lib/dbus/machine-id'), { force: true });
  fs.rmSync(path.join(root, 'etc/hostname'), { force: true });
  const archives = path.join(root, 'var/cache/apt/archives');
  for (const f of fs.readdirSync(archives))
    if (f.endsWith('.deb')) fs.rmSync(path.join(archives, f));
  fs.writeFileSync(
    path.join(root, 'etc/apt/apt.conf.d/99sail-test'),
    'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n',
  );
}

const tarArgs = ['--numeric-owner', '--xattrs', '--xattrs-include=*', '--acls'];

/**
 * The Debian root every VM starts from, made at most once per cache: the unpacked root when the
 * cache has it, else unpacked from the cached tarball (a few seconds), else built with debootstrap
 * (about 45 s with a nearby mirror) and cached both ways. Safe against a parallel run: each builds
 * into its own temporary name, and the first rename wins.
 * @throws Error naming the command that failed (debootstrap's output tail included)
 */
export async function ensureRootImage(opts: RootImageOptions = {}): Promise<RootImage> {
  const started = Date.now();
  const suite = opts.suite ?? 'bookworm';
  const packages = opts.packages ?? IMAGE_PACKAGES;
  const cacheDir = opts.cacheDir ?? process.env.SAIL_VM_CACHE ?? DEFAULT_CACHE_DIR;
  const log = opts.log ?? (() => {});
  const key = imageKey(suite, packages);
  const base = path.join(cacheDir, `${suite}-minbase-${key}`);
  const tarball = `${base}.tar.zst`;
  const root = path.join(base, 'root');
  const done = (source: RootImage['source']): RootImage => ({
    root,
    tarball,
    key,
    source,
    ms: Date.now() - started,
  });
  if (fs.existsSync(path.join(base, 'image.json'))) return done('unpacked');

  fs.mkdirSync(cacheDir, { recursive: true, mode: 0o755 });
  const tmp = `${base}.tmp-${process.pid}-${crypto.randomBytes(3).toString('hex')}`;
  const tmpRoot = path.join(tmp, 'root');
  fs.mkdirSync(tmpRoot, { recursive: true, mode: 0o755 });
  let source: RootImage['source'];
  try {
    if (fs.existsSync(tarball)) {
      log(`unpacking ${tarball}`);
      await must('tar', [...tarArgs, '-I', 'zstd', '-C', tmpRoot, '-xf', tarball], {
        timeoutMs: 120_000,
      });
      source = 'tarball';
    } else {
      const mirror = opts.mirror ?? debianMirror();
      log(`debootstrap ${suite} from ${mirror} (once; cached in ${cacheDir})`);
      await must(
        'debootstrap',
        ['--variant=minbase', `--include=${packages.join(',')}`, suite, tmpRoot, mirror],
        { timeoutMs: opts.timeoutMs ?? 600_000 },
      );
      finishImage(tmpRoot);
      const tmpTar = `${tarball}.tmp-${process.pid}`;
      await must('tar', [...tarArgs, '-I', 'zstd -T0 -3', '-C', tmpRoot, '-cf', tmpTar, '.'], {
        timeoutMs: 120_000,
      });
      fs.renameSync(tmpTar, tarball);
      source = 'debootstrap';
    }
    fs.writeFileSync(
      path.join(tmp, 'image.json'),
      JSON.stringify({
        suite,
        variant: 'minbase',
        packages,
        key,
        source,
        at: new Date().toISOString(),
      }),
    );
    try {
      fs.renameSync(tmp, base);
    } catch (err) {
      // A parallel run won the race: use its image.
      if (!fs.existsSync(path.join(base, 'image.json'))) throw err;
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return done(source);
}

/** A bind mount into a VM. */
export interface VmBind {
  readonly host: string;
  readonly guest: string;
  /** Default true. */
  readonly readOnly?: boolean;
}

/** Options of {@link NspawnVm.create}. */
export interface NspawnVmOptions {
  /** The VM's host name, [a-z][a-z0-9]{0,9}. */
  readonly name: string;
  /** The run's tag, 6 of [a-z0-9] (a MeshLab's tag fits). */
  readonly tag: string;
  readonly image: RootImage;
  /** The `ip netns` name the VM lives in (its interfaces, addresses and routes are that namespace's). */
  readonly netns: string;
  /** /etc/hosts lines after localhost, e.g. ['10.1.2.11 vm1.lan vm1']. */
  readonly hosts?: readonly string[];
  /** /etc/resolv.conf; default none (an empty file). */
  readonly resolvConf?: string;
  readonly binds?: readonly VmBind[];
  /** Files written into the VM's disk before the first boot: guest path → content (mode 0644, or 0755 under bin/). */
  readonly files?: Readonly<Record<string, string>>;
  /** Units enabled before the first boot (symlinked into multi-user.target.wants). */
  readonly enable?: readonly string[];
  /** Default 60 s. */
  readonly bootTimeoutMs?: number;
  /**
   * Run nspawn in its own session (default false): signals to this process's group (Ctrl-C, a
   * killed test run) then do not power the VM off. For VMs meant to outlive the test (SAIL_VM_KEEP).
   */
  readonly detached?: boolean;
}

/** What a VM records in its state file. */
interface VmRecord {
  readonly tag: string;
  readonly name: string;
  readonly owner: number;
  readonly dir: string;
  readonly rootMount: string;
  /** nspawn and the container's init while booted: pid and start time (against pid reuse). */
  nspawn?: { pid: number; start: string };
  init?: { pid: number; start: string };
}

/** Field 22 of /proc/PID/stat (start time in clock ticks); undefined when the pid is gone. */
function startTime(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function sameProcess(p: { pid: number; start: string } | undefined): boolean {
  return !!p && startTime(p.pid) === p.start;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function kill(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

/** Mount points (from /proc/self/mounts) at or under `dir`. */
function mountsUnder(dir: string): string[] {
  return fs
    .readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map(l => (l.split(' ')[1] ?? '').replace(/\\040/g, ' '))
    .filter(m => m === dir || m.startsWith(`${dir}/`));
}

/** Unmounts `dir` (lazily when busy); returns a problem or undefined. */
async function unmount(dir: string): Promise<string | undefined> {
  for (const m of mountsUnder(dir).reverse()) {
    const r = await hostExec('umount', [m]);
    if (r.code !== 0) {
      const lazy = await hostExec('umount', ['-l', m]);
      if (lazy.code !== 0)
        return `umount ${m}: ${r.stderr.trim()}; umount -l: ${lazy.stderr.trim()}`;
    }
  }
  return undefined;
}

/** Kills a container: SIGKILL to its init ends its whole pid namespace; then nspawn. */
async function killContainer(rec: VmRecord): Promise<void> {
  if (sameProcess(rec.init)) kill(rec.init!.pid, 'SIGKILL');
  if (sameProcess(rec.nspawn)) kill(rec.nspawn!.pid, 'SIGKILL');
  await waitFor(() => !sameProcess(rec.init) && !sameProcess(rec.nspawn), {
    timeoutMs: 10_000,
    intervalMs: 20,
    what: `container ${rec.tag}-${rec.name} gone`,
  }).catch(() => {});
}

/** Removes what a record names (container, mount, dir, state file); returns the problems. */
async function teardownVm(rec: VmRecord): Promise<string[]> {
  const problems: string[] = [];
  await killContainer(rec);
  const p = await unmount(rec.rootMount);
  if (p) problems.push(p);
  // Only when nothing is mounted there any more: rm must never reach through a mount.
  if (mountsUnder(rec.dir).length === 0) fs.rmSync(rec.dir, { recursive: true, force: true });
  else problems.push(`${rec.dir} still has mounts; left in place`);
  fs.rmSync(path.join('/run/systemd/nspawn/propagate', machineName(rec.tag, rec.name)), {
    recursive: true,
    force: true,
  });
  fs.rmSync(stateFile(rec.tag, rec.name), { force: true });
  return problems;
}

const stateFile = (tag: string, name: string) => path.join(VM_STATE_DIR, `${tag}-${name}.json`);
const machineName = (tag: string, name: string) => `sail-${tag}-${name}`;

/** VMs of this process (sweep never touches them). */
const openHere = new Set<string>();

/** Timings of one boot (ms). */
export interface BootTiming {
  /** From starting nspawn until systemd reports running or degraded. */
  readonly bootMs: number;
  /** `systemctl is-system-running` at the end: 'running' or 'degraded'. */
  readonly state: string;
  /** With 'degraded': the failed units (`systemctl --failed`), for the test's log. */
  readonly failed: readonly string[];
}

/** A booted Debian system in a network namespace; see the file comment. */
export class NspawnVm {
  /** The machine name nspawn knows (`sail-TAG-NAME`). */
  readonly machine: string;
  /** The VM's dir: upper/, work/, root/ (its root file system, mounted), console.log. */
  readonly dir: string;
  /** The VM's root file system as seen from the host (write files into the VM here). */
  readonly root: string;
  /** Exit codes of earlier nspawn runs (133 = rebooted, 0 = powered off). */
  readonly exits: (number | null)[] = [];
  private child: ChildProcess | undefined;
  private childExit: Promise<number | null> | undefined;
  private initPid: number | undefined;
  private destroyed = false;
  private readonly record: VmRecord;

  private constructor(private readonly opts: NspawnVmOptions) {
    this.machine = machineName(opts.tag, opts.name);
    this.dir = path.join(os.tmpdir(), `${VM_DIR_PREFIX}${opts.tag}-${opts.name}`);
    this.root = path.join(this.dir, 'root');
    this.record = {
      tag: opts.tag,
      name: opts.name,
      owner: process.pid,
      dir: this.dir,
      rootMount: this.root,
    };
  }

  get name(): string {
    return this.opts.name;
  }

  /** The container's init (PID 1 inside) as a host pid, while booted. */
  get pid(): number | undefined {
    return this.initPid;
  }

  /** The VM's console output so far (the tail). */
  console(chars = 4000): string {
    try {
      return fs.readFileSync(path.join(this.dir, 'console.log'), 'utf8').slice(-chars);
    } catch {
      return '';
    }
  }

  /** A shell inside the VM, for a human debugging a kept VM (SAIL_VM_KEEP=1). */
  shellCommand(): string {
    return `nsenter --target ${this.initPid ?? '<init pid>'} --mount --uts --ipc --net --pid --root --wd -- /bin/bash -l`;
  }

  /**
   * Makes the VM's disk (an overlay over the image) and its first-boot files, then boots it.
   * On failure everything made so far is removed and the error rethrown.
   */
  static async create(opts: NspawnVmOptions): Promise<{ vm: NspawnVm; timing: BootTiming }> {
    if (!TAG_RE.test(opts.tag))
      throw new Error(`tag ${JSON.stringify(opts.tag)}: want 6 of [a-z0-9]`);
    if (!NAME_RE.test(opts.name))
      throw new Error(`name ${JSON.stringify(opts.name)}: want [a-z][a-z0-9]{0,9}`);
    if (!fs.existsSync(`/run/netns/${opts.netns}`))
      throw new Error(`netns ${JSON.stringify(opts.netns)}: no /run/netns/${opts.netns}`);
    const vm = new NspawnVm(opts);
    fs.mkdirSync(VM_STATE_DIR, { recursive: true, mode: 0o755 });
    vm.save();
    openHere.add(vm.machine);
    try {
      await vm.makeDisk();
      const timing = await vm.boot();
      return { vm, timing };
    } catch (err) {
      await vm.destroy().catch(() => {});
      throw err;
    }
  }

  private save(): void {
    fs.writeFileSync(stateFile(this.opts.tag, this.opts.name), JSON.stringify(this.record));
  }

  private async makeDisk(): Promise<void> {
    const { image } = this.opts;
    for (const d of ['upper', 'work', 'root'])
      fs.mkdirSync(path.join(this.dir, d), { recursive: true });
    fs.chmodSync(this.dir, 0o755);
    await must('mount', [
      '-t',
      'overlay',
      'overlay',
      '-o',
      `lowerdir=${image.root},upperdir=${path.join(this.dir, 'upper')},workdir=${path.join(this.dir, 'work')}`,
      this.root,
    ]);
    const { name } = this.opts;
    const files: Record<string, string> = {
      '/etc/hostname': `${name}\n`,
      '/etc/hosts': [
        '127.0.0.1 localhost',
        '::1 localhost ip6-localhost ip6-loopback',
        ...(this.opts.hosts ?? []),
        '',
      ].join('\n'),
      '/etc/resolv.conf': this.opts.resolvConf ?? '',
      ...this.opts.files,
    };
    for (const [guest, content] of Object.entries(files)) this.writeFile(guest, content);
    for (const unit of this.opts.enable ?? []) {
      const wants = path.join(this.root, 'etc/systemd/system/multi-user.target.wants');
      fs.mkdirSync(wants, { recursive: true });
      fs.symlinkSync(`/etc/systemd/system/${unit}`, path.join(wants, unit));
    }
  }

  /** Writes a file into the VM's disk (running or not); mode 0755 for paths with /bin/ or cgi-bin. */
  writeFile(guest: string, content: string, mode?: number): void {
    if (!guest.startsWith('/'))
      throw new Error(`guest path ${JSON.stringify(guest)}: want absolute`);
    const file = path.join(this.root, guest);
    if (!file.startsWith(`${this.root}/`)) throw new Error(`guest path ${guest} leaves the VM`);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    // resolv.conf and friends may be symlinks in the image: replace, never follow.
    fs.rmSync(file, { force: true });
    fs.writeFileSync(file, content, {
      mode: mode ?? (/\/(bin|cgi-bin)\//.test(guest) ? 0o755 : 0o644),
    });
  }

  /**
   * Reads a file inside the running VM (`cat` in the VM, so symlinks resolve in the VM, never on
   * the host).
   * @throws Error when the file cannot be read
   */
  async readFile(guest: string): Promise<string> {
    return this.run(['cat', '--', guest]);
  }

  /** True when `guest` exists inside the running VM (a dangling symlink counts). */
  async exists(guest: string): Promise<boolean> {
    const r = await this.exec(['/bin/sh', '-c', 'test -e "$1" || test -L "$1"', 'sh', guest]);
    return r.code === 0;
  }

  /** Starts nspawn and resolves once systemd inside is running (or degraded). */
  private async boot(): Promise<BootTiming> {
    if (this.destroyed) throw new Error(`VM ${this.machine} is destroyed`);
    if (this.child && this.child.exitCode === null)
      throw new Error(`VM ${this.machine} is running`);
    const started = Date.now();
    const consoleFd = fs.openSync(path.join(this.dir, 'console.log'), 'a');
    const args = [
      '--boot',
      '--register=no',
      '--keep-unit',
      `--network-namespace-path=/run/netns/${this.opts.netns}`,
      '--directory',
      this.root,
      `--machine=${this.machine}`,
      // The node agent's capture needs it; nspawn's default set leaves it out.
      '--capability=CAP_NET_ADMIN',
      '--console=read-only',
      '--resolv-conf=off',
      '--timezone=off',
      '--link-journal=no',
      ...(this.opts.binds ?? []).map(
        b => `--bind${b.readOnly === false ? '' : '-ro'}=${b.host}:${b.guest}`,
      ),
    ];
    const child = spawn('systemd-nspawn', args, {
      stdio: ['ignore', consoleFd, consoleFd],
      detached: this.opts.detached ?? false,
    });
    fs.closeSync(consoleFd);
    this.child = child;
    this.initPid = undefined;
    this.childExit = new Promise(resolve => {
      child.once('exit', code => {
        this.exits.push(code);
        resolve(code);
      });
      child.once('error', () => resolve(-1));
    });
    const nspawnPid = child.pid;
    if (nspawnPid === undefined) throw new Error(`systemd-nspawn did not start: ${this.console()}`);
    this.record.nspawn = { pid: nspawnPid, start: startTime(nspawnPid) ?? '' };
    this.record.init = undefined;
    this.save();
    const timeoutMs = this.opts.bootTimeoutMs ?? 60_000;
    try {
      // The container's init: nspawn's child whose innermost pid is 1.
      this.initPid = await waitFor(
        () => {
          if (child.exitCode !== null) throw new Error(`systemd-nspawn exited ${child.exitCode}`);
          return findInit(nspawnPid);
        },
        { timeoutMs, intervalMs: 20, what: `the init of ${this.machine}` },
      );
      this.record.init = { pid: this.initPid, start: startTime(this.initPid) ?? '' };
      this.save();
      const state = await waitFor(
        async () => {
          if (child.exitCode !== null) throw new Error(`systemd-nspawn exited ${child.exitCode}`);
          const r = await this.exec(['systemctl', 'is-system-running'], { timeoutMs: 5_000 });
          const s = r.stdout.trim();
          return s === 'running' || s === 'degraded' ? s : undefined;
        },
        { timeoutMs, intervalMs: 50, what: `${this.machine} booted (systemctl is-system-running)` },
      );
      const bootMs = Date.now() - started;
      const failed =
        state === 'degraded'
          ? (await this.exec(['systemctl', '--failed', '--no-legend', '--plain'])).stdout
              .split('\n')
              .map(l => l.trim())
              .filter(Boolean)
          : [];
      return { bootMs, state, failed };
    } catch (err) {
      throw new Error(`${(err as Error).message}; console: ${this.console(2000)}`);
    }
  }

  /** Runs a command inside the VM to completion; never rejects on a nonzero exit. */
  exec(argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    if (argv.length === 0) throw new Error('argv: want at least the program');
    const pid = this.initPid;
    if (pid === undefined)
      return Promise.resolve({
        code: -1,
        signal: null,
        stdout: '',
        stderr: `${this.machine} is not booted`,
      });
    const env = Object.entries({ ...GUEST_ENV, ...opts.env }).map(([k, v]) => `${k}=${v}`);
    return hostExec(
      'nsenter',
      [
        '--target',
        String(pid),
        '--mount',
        '--uts',
        '--ipc',
        '--net',
        '--pid',
        '--root',
        '--wd',
        '--',
        '/usr/bin/env',
        '-i',
        ...env,
        ...argv,
      ],
      { ...opts, env: {} },
    );
  }

  /**
   * Like {@link exec}, but resolves with stdout only on exit code 0.
   * @throws Error with the command, the exit code and the output otherwise
   */
  async run(argv: readonly string[], opts: ExecOptions = {}): Promise<string> {
    const r = await this.exec(argv, opts);
    if (r.code !== 0)
      throw new Error(
        `in ${this.opts.name}: ${argv.join(' ')} exited ${r.code}${r.signal ? ` (${r.signal})` : ''}: ${(r.stderr.trim() || r.stdout.trim()).slice(-3000)}`,
      );
    return r.stdout;
  }

  /** `sh -c SCRIPT` inside the VM; see {@link run}. */
  sh(script: string, opts: ExecOptions = {}): Promise<string> {
    return this.run(['/bin/sh', '-c', script], opts);
  }

  /** Waits for nspawn to exit (bounded); resolves with its exit code. */
  private async waitExit(timeoutMs: number): Promise<number | null> {
    const exit = this.childExit;
    if (!exit) return null;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>(resolve => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    const r = await Promise.race([exit, timeout]);
    clearTimeout(timer);
    if (r === 'timeout')
      throw new Error(`${this.machine}: nspawn still running after ${timeoutMs} ms`);
    return r;
  }

  /**
   * `systemctl reboot` inside, as an operator would: nspawn exits with 133, and the VM boots again
   * on the same disk.
   * @throws Error when nspawn exits with anything but 133 or the boot fails
   */
  async reboot(timeoutMs = 60_000): Promise<BootTiming & { downMs: number }> {
    const started = Date.now();
    await this.exec(['systemctl', 'reboot'], { timeoutMs: 10_000 });
    const code = await this.waitExit(timeoutMs);
    if (code !== REBOOT_EXIT_CODE)
      throw new Error(
        `${this.machine}: nspawn exited ${code} on reboot, want ${REBOOT_EXIT_CODE}; console: ${this.console(2000)}`,
      );
    const downMs = Date.now() - started;
    const timing = await this.boot();
    return { ...timing, downMs };
  }

  /**
   * Orderly poweroff: SIGTERM to nspawn, which sends the container's systemd SIGRTMIN+3
   * (`--kill-signal` default with --boot). Resolves with nspawn's exit code (0 when clean).
   */
  async poweroff(timeoutMs = 30_000): Promise<number | null> {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null)
      return this.child?.exitCode ?? null;
    this.child.kill('SIGTERM');
    const code = await this.waitExit(timeoutMs);
    this.initPid = undefined;
    return code;
  }

  /**
   * Leaves the VM running when this process exits (SAIL_VM_KEEP): nspawn no longer holds this
   * process's event loop open. The state file stays, so a later {@link sweep} removes the VM.
   */
  detach(): void {
    this.child?.unref();
    openHere.delete(this.machine);
  }

  /**
   * Powers the VM off (SIGKILL after `graceMs`, default 20 s), unmounts its disk and removes its
   * dir and state file. Idempotent.
   * @throws AggregateError listing what could not be removed (after trying everything)
   */
  async destroy(graceMs = 20_000): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    await this.poweroff(graceMs).catch(() => {});
    const problems = await teardownVm(this.record);
    openHere.delete(this.machine);
    if (problems.length > 0)
      throw new AggregateError(
        problems.map(p => new Error(p)),
        `VM ${this.machine}: teardown incomplete: ${problems.join('; ')}`,
      );
  }

  /**
   * Removes VMs whose owning process is gone: kills their containers, unmounts their disks,
   * removes their dirs and state files; also overlay mounts at TMP/sail-vm-TAG-NAME/root with no
   * live owner. VMs of live processes are left alone. Resolves with the machine names removed.
   */
  static async sweep(): Promise<string[]> {
    const removed: string[] = [];
    const live = new Set<string>();
    let files: string[] = [];
    try {
      files = fs.readdirSync(VM_STATE_DIR).filter(f => f.endsWith('.json'));
    } catch {
      // No state dir: nothing recorded.
    }
    for (const f of files) {
      let rec: VmRecord;
      try {
        rec = JSON.parse(fs.readFileSync(path.join(VM_STATE_DIR, f), 'utf8')) as VmRecord;
      } catch {
        fs.rmSync(path.join(VM_STATE_DIR, f), { force: true });
        continue;
      }
      const machine = machineName(rec.tag, rec.name);
      if (openHere.has(machine) || pidAlive(rec.owner)) {
        live.add(rec.dir);
        continue;
      }
      await teardownVm(rec);
      removed.push(machine);
    }
    const dirRe = new RegExp(
      `^${os.tmpdir().replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/${VM_DIR_PREFIX}([a-z0-9]{6})-([a-z][a-z0-9]{0,9})/root$`,
    );
    for (const m of mountsUnder(os.tmpdir())) {
      const match = dirRe.exec(m);
      if (!match) continue;
      const dir = path.dirname(m);
      if (live.has(dir)) continue;
      const [, tag, name] = match as unknown as [string, string, string];
      await teardownVm({ tag, name, owner: 0, dir, rootMount: m });
      removed.push(machineName(tag, name));
    }
    return removed;
  }
}

/** The parent pid of `pid` (field 4 of /proc/PID/stat); undefined when gone. */
function parentPid(pid: string): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

/**
 * The host pid of the container init under nspawn `nspawnPid`: its child whose innermost pid is 1
 * (found by scanning /proc: not every kernel has /proc/PID/task/TID/children).
 */
function findInit(nspawnPid: number): number | undefined {
  for (const c of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(c) || parentPid(c) !== nspawnPid) continue;
    try {
      const nspid = /^NSpid:\s+(.*)$/m.exec(fs.readFileSync(`/proc/${c}/status`, 'utf8'))?.[1];
      const ids = nspid?.trim().split(/\s+/) ?? [];
      if (ids.length > 1 && ids[ids.length - 1] === '1') return Number(c);
    } catch {
      // Exited meanwhile.
    }
  }
  return undefined;
}
