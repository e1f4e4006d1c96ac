/**
 * The supervised proxy: the node agent runs `sail proxy --config FILE` as a child process (as the
 * unprivileged `sail-proxy` user), restarts it when it exits with capped, jittered backoff, tells
 * it about new certificates with SIGHUP (no restart), tracks its readiness from its admin `/ready`,
 * and on close lets it drain (SIGTERM, the proxy's own bounded drain, SIGKILL after a grace).
 *
 * The agent, not systemd, supervises the proxy (STYLE 2.12): one unit, one readiness, and the
 * agent knows when certificates change. The proxy is its own process so that a crash of either
 * one does not take the other down, and so that it runs without root.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import * as YAML from 'yaml';
import { Backoff } from '../../common/backoff';
import { type Clock, systemClock } from '../../common/clock';
import { parseHostPort } from '../../common/config';
import { AlreadyStartedError, ClosedError, InvalidInputError } from '../../common/errors';
import { writeFileAtomic } from '../../common/fs';
import { CloseOnce, type Lifecycle } from '../../common/lifecycle';
import { LogField, type Logger } from '../../common/logging';
import { prom } from '../../common/metrics';
import {
  adminGet,
  parseServerInfo,
  parseWorkers,
  type WorkersStatus,
  type XdsStatus,
} from './admin-probe';
import { ProxySpawnError } from './errors';
import { killLeftoverProxy, pidFileOf, removePidFile, writePidFile } from './pid-file';

/** First restart delay after an exit (then doubled per exit, jittered). */
export const DEFAULT_RESTART_INITIAL_MS = 200;
/** Cap of the restart delay. */
export const DEFAULT_RESTART_MAX_MS = 30_000;
/** A child that stayed up this long was healthy: its exit restarts from the initial delay. */
export const DEFAULT_RESTART_RESET_AFTER_MS = 60_000;
/** SIGTERM → this long for the proxy's own drain (its shutdownGrace, 10 s by default) → SIGKILL. */
export const DEFAULT_STOP_GRACE_MS = 20_000;
/** /ready poll interval while the proxy is not ready: readiness is noticed within a quarter second. */
export const READY_POLL_INTERVAL_MS = 250;
/** /ready poll interval once ready: only to notice a proxy that stops being ready. */
export const READY_POLL_INTERVAL_WHEN_READY_MS = 2_000;
/** How long to wait for a child to go after SIGKILL (a process in D state may take a moment). */
const KILL_WAIT_MS = 5_000;
/** Output lines kept in 'pipe' mode, logged with an unexpected exit. */
const OUTPUT_TAIL_LINES = 20;
/**
 * Variables meant for the agent alone. NOTIFY_SOCKET especially: the proxy would tell systemd
 * "READY=1" for the agent's unit before the agent itself is ready (the proxy notifies when the
 * variable is set, see cli/run.ts).
 */
const AGENT_ONLY_ENV = [
  'NOTIFY_SOCKET',
  'LISTEN_FDS',
  'LISTEN_PID',
  'LISTEN_FDNAMES',
  'WATCHDOG_USEC',
  'WATCHDOG_PID',
];

/** Options of {@link ProxySupervisor}. */
export interface ProxySupervisorOptions {
  readonly logger: Logger;
  readonly clock?: Clock;
  readonly registry: prom.Registry;
  /**
   * How to run `sail`: [file, ...args]; the supervisor appends `proxy --config FILE`. The agent
   * passes selfCommand() (node + build/cli/sail.js, or the single binary).
   */
  readonly command: readonly string[];
  /** Where to write the proxy's config; written (0640, atomically) before each spawn. */
  readonly configFile: string;
  /**
   * The proxy config file contents (keys of proxy/config/proxy-config.ts; see
   * packaging/proxy.yaml). Its `stateDir`, when set, is created and given to `user`.
   */
  readonly config: Readonly<Record<string, unknown>>;
  /** Run the child as this user (the agent is root); absent = the agent's own user. */
  readonly user?: { readonly uid: number; readonly gid: number };
  /**
   * Capabilities the child keeps as `user` (lowercase names without `cap_`, e.g. `net_admin`),
   * granted as ambient capabilities by util-linux's `setpriv`, which changes the user and then
   * runs the proxy in the same process (so its pid is the proxy's), with no_new_privs. Only with
   * `user`: a child of the agent's own user (root) has them all anyway.
   */
  readonly capabilities?: readonly string[];
  /**
   * Open file descriptors of the agent the child inherits as 3, 4, … (the TPROXY listening
   * socket), asked for before each spawn: the first time after a proxy a crashed agent left
   * running was stopped, so its port is free. The agent keeps them open across restarts of the
   * proxy and closes them itself. An error it throws (or rejects with) fails start() (or that
   * restart) as it is.
   */
  readonly inheritFds?: () => readonly number[] | Promise<readonly number[]>;
  /** Extra environment of the child, over the agent's own (minus NOTIFY_SOCKET and the like). */
  readonly env?: Readonly<Record<string, string>>;
  /** The proxy admin address to poll /ready on, e.g. 127.0.0.1:15000. */
  readonly adminAddress: string;
  /**
   * 'inherit' (systemd: the journal gets the proxy's JSON lines) or 'pipe' (lines re-logged at
   * debug, the last ones at warn with an unexpected exit). Default 'inherit'.
   */
  readonly stdio?: 'inherit' | 'pipe';
  /**
   * Restart delays: initialMs doubling up to maxMs, each jittered to [½, 1] of its base
   * (default 200 ms..30 s); back to initialMs after a child stayed up resetAfterMs (default 60 s).
   */
  readonly restartBackoff?: {
    readonly initialMs: number;
    readonly maxMs: number;
    readonly resetAfterMs?: number;
  };
  /** SIGTERM → wait this long for the proxy's own drain → SIGKILL. Default 20 s. */
  readonly stopGraceMs?: number;
}

/**
 * `stopped`: not started or closed; `starting`: spawned, not ready yet; `ready`: /ready answers
 * 200; `not-ready`: it was ready and no longer is; `backoff`: exited, waiting to restart.
 */
export type ProxyState = 'stopped' | 'starting' | 'ready' | 'not-ready' | 'backoff';

/** How the last child ended. */
export interface ProxyExit {
  /** Exit code, null when killed by a signal. */
  readonly code: number | null;
  readonly signal: string | null;
  /** ISO 8601 time of the exit. */
  readonly at: string;
}

/** The supervisor's view of the proxy, for `sail status` and the agent's status endpoint. */
export interface ProxyStatus {
  readonly state: ProxyState;
  /** The running child's pid. */
  readonly pid?: number;
  /** Restarts since start() (the first spawn is not one). */
  readonly restarts: number;
  readonly lastExit?: ProxyExit;
  /** From the proxy admin /server_info: versions ACKed per type, pilot connected. */
  readonly xds?: XdsStatus;
  /** From /server_info too, when the proxy runs worker processes (`proxy.concurrency`). */
  readonly workers?: WorkersStatus;
}

/** One spawned proxy process. */
interface Child {
  readonly proc: ChildProcess;
  readonly pid: number;
  /** clock.now() at spawn. */
  readonly startedAt: number;
  /** Resolves once the process has exited (or failed to spawn). Never rejects. */
  readonly exited: Promise<{ code: number | null; signal: string | null }>;
  /** Aborted when the process exits: stops its /ready poller. */
  readonly gone: AbortController;
  /** Last output lines ('pipe' mode). */
  readonly tail: string[];
  /** Its admin server answered once: it has installed its SIGHUP handler (cli/commands/proxy.ts). */
  answered: boolean;
  /** certificatesChanged() came before the child could handle SIGHUP. */
  hupPending: boolean;
  everReady: boolean;
  ready: boolean;
}

interface Waiter {
  resolve(): void;
  reject(err: unknown): void;
}

/**
 * Runs and supervises the proxy process. start() spawns it (resolves once spawned, not ready);
 * close() drains it and never restarts it again. close() is idempotent.
 */
export class ProxySupervisor implements Lifecycle {
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly configFile: string;
  private readonly pidFile: string;
  private readonly stopGraceMs: number;
  private readonly resetAfterMs: number;
  private readonly backoff: Backoff;
  private readonly closeOnce = new CloseOnce();
  /** Aborted by close(): ends backoff sleeps and the supervision loop. */
  private readonly abort = new AbortController();
  private readonly waiters = new Set<Waiter>();
  private readonly restartsTotal: prom.Counter;
  private readonly readyGauge: prom.Gauge;
  private readonly upGauge: prom.Gauge;
  private started = false;
  /** Set synchronously by close(): from then on nothing is spawned. */
  private closing = false;
  /** The running child; undefined between an exit and the next spawn. */
  private child: Child | undefined;
  private restarts = 0;
  private lastExit: ProxyExit | undefined;
  private loop: Promise<void> | undefined;

  constructor(private readonly opts: ProxySupervisorOptions) {
    this.log = opts.logger.child({ subsystem: 'proxy-supervisor' });
    this.clock = opts.clock ?? systemClock;
    this.configFile = path.resolve(opts.configFile);
    this.pidFile = pidFileOf(this.configFile);
    this.stopGraceMs = opts.stopGraceMs ?? DEFAULT_STOP_GRACE_MS;
    this.resetAfterMs = opts.restartBackoff?.resetAfterMs ?? DEFAULT_RESTART_RESET_AFTER_MS;
    this.backoff = new Backoff({
      initialMs: opts.restartBackoff?.initialMs ?? DEFAULT_RESTART_INITIAL_MS,
      maxMs: opts.restartBackoff?.maxMs ?? DEFAULT_RESTART_MAX_MS,
    });
    this.restartsTotal = new prom.Counter({
      name: 'sail_agent_proxy_restarts_total',
      help: 'Times the node agent restarted the proxy after it exited',
      registers: [opts.registry],
    });
    this.readyGauge = new prom.Gauge({
      name: 'sail_agent_proxy_ready',
      help: 'Whether the proxy answers its admin /ready with 200 (1) or not (0)',
      registers: [opts.registry],
    });
    this.upGauge = new prom.Gauge({
      name: 'sail_agent_proxy_up',
      help: 'Whether the proxy process is running (1) or not (0)',
      registers: [opts.registry],
    });
  }

  /**
   * Stops a proxy a crashed agent left running (from the pid file), writes the config and spawns
   * the proxy. Resolves once it is spawned, not ready (see waitReady).
   * @throws InvalidInputError when the options are inconsistent (command, admin address)
   * @throws ProxySpawnError when the config cannot be written or the command cannot be run
   * @throws AlreadyStartedError, ClosedError
   */
  async start(): Promise<void> {
    if (this.closing) throw new ClosedError('proxy supervisor');
    if (this.started) throw new AlreadyStartedError('proxy supervisor');
    this.started = true;
    try {
      this.checkOptions();
      const leftover = await killLeftoverProxy(this.pidFile, this.stopGraceMs, this.clock);
      if (leftover.outcome === 'terminated' || leftover.outcome === 'killed')
        this.log.warn(
          { pid: leftover.pid, outcome: leftover.outcome, [LogField.path]: this.pidFile },
          'Stopped a proxy left running by an earlier agent',
        );
      else if (leftover.outcome === 'not-proxy')
        this.log.info(
          { pid: leftover.pid, [LogField.path]: this.pidFile },
          'Stale proxy pid file names another process; left it alone',
        );
      await this.prepareStateDir();
      const first = await this.spawnChild();
      if (!first) return; // closed meanwhile
      this.loop = this.supervise(first);
    } catch (err) {
      // Nothing runs: report 'stopped', and let the caller retry start().
      this.started = false;
      throw err;
    }
  }

  /** True while the current proxy answers /ready with 200. */
  get ready(): boolean {
    return this.child?.ready ?? false;
  }

  /**
   * Resolves once the proxy is ready (at once if it is). Rejects with `signal`'s reason when it
   * aborts, and with ClosedError when the supervisor closes first.
   */
  waitReady(signal?: AbortSignal): Promise<void> {
    if (this.ready) return Promise.resolve();
    if (this.closing) return Promise.reject(new ClosedError('proxy supervisor'));
    if (signal?.aborted) return Promise.reject(signal.reason as Error);
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        this.waiters.delete(waiter);
        reject(signal?.reason as Error);
      };
      const waiter: Waiter = {
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        reject: err => {
          signal?.removeEventListener('abort', onAbort);
          reject(err as Error);
        },
      };
      this.waiters.add(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** The proxy's state; `xds` is read from its admin /server_info when it answers. */
  async status(): Promise<ProxyStatus> {
    const child = this.child;
    let xds: XdsStatus | undefined;
    let workers: WorkersStatus | undefined;
    if (child) {
      try {
        const res = await adminGet(this.opts.adminAddress, '/server_info');
        if (res.status === 200) {
          xds = parseServerInfo(res.body);
          workers = parseWorkers(res.body);
        }
      } catch (err) {
        this.log.debug({ err }, 'Proxy admin /server_info did not answer');
      }
    }
    return {
      state: this.state(),
      ...(child ? { pid: child.pid } : {}),
      restarts: this.restarts,
      ...(this.lastExit ? { lastExit: this.lastExit } : {}),
      ...(xds ? { xds } : {}),
      ...(workers ? { workers } : {}),
    };
  }

  /**
   * New certificate files were written: SIGHUP the proxy, which re-reads them (it also watches
   * the files; the signal makes the reload prompt and certain). No restart. A child still
   * booting gets the signal as soon as its admin server answers: before that it may not have
   * installed its SIGHUP handler, and SIGHUP's default action would kill it.
   */
  certificatesChanged(): void {
    const child = this.child;
    if (!child || this.closing) return;
    if (!child.answered) {
      child.hupPending = true;
      return;
    }
    this.hangUp(child);
  }

  /**
   * Drains the proxy: SIGTERM (the proxy stops accepting and finishes in-flight requests within
   * its shutdownGrace), SIGKILL if it is still there after stopGraceMs. Never restarts it after.
   * Idempotent; concurrent callers share one close.
   */
  close(): Promise<void> {
    return this.closeOnce.run(async () => {
      // Synchronous until the first await: no spawn can slip in between (spawnChild checks).
      this.closing = true;
      this.abort.abort(new ClosedError('proxy supervisor'));
      for (const w of this.waiters) w.reject(new ClosedError('proxy supervisor'));
      this.waiters.clear();
      const child = this.child;
      if (child) await this.stopChild(child);
      await this.loop;
      await removePidFile(this.pidFile).catch((err: unknown) => {
        this.log.warn(
          { err, [LogField.path]: this.pidFile },
          'Could not remove the proxy pid file',
        );
      });
      this.readyGauge.set(0);
      this.upGauge.set(0);
    });
  }

  private state(): ProxyState {
    if (!this.started || this.closeOnce.closed) return 'stopped';
    const child = this.child;
    if (!child) return 'backoff';
    if (child.ready) return 'ready';
    return child.everReady ? 'not-ready' : 'starting';
  }

  /** @throws InvalidInputError */
  private checkOptions(): void {
    if (this.opts.command.length === 0 || !this.opts.command[0])
      throw new InvalidInputError('proxy supervisor: command is empty');
    const admin = parseHostPort(this.opts.adminAddress);
    if (!admin)
      throw new InvalidInputError(
        `proxy supervisor: adminAddress: want HOST:PORT, got ${this.opts.adminAddress}`,
      );
    const listen = this.opts.config.adminListen;
    if (typeof listen === 'string') {
      const hp = parseHostPort(listen);
      if (hp && hp.port !== admin.port)
        throw new InvalidInputError(
          `proxy supervisor: config adminListen ${listen} and adminAddress ` +
            `${this.opts.adminAddress} name different ports; readiness would be read from the wrong place`,
        );
    }
  }

  /**
   * The proxy writes its last-known-good configuration into its stateDir: when it runs as
   * another user, that directory must be its own. Only the directory is given to the user (not
   * its parents), so it must be a directory for the proxy alone.
   */
  private async prepareStateDir(): Promise<void> {
    const dir = this.opts.config.stateDir;
    if (typeof dir !== 'string' || dir === '') return;
    const abs = path.resolve(path.dirname(this.configFile), dir);
    try {
      await fs.promises.mkdir(abs, { recursive: true, mode: 0o750 });
      const user = this.opts.user;
      if (!user) return;
      const st = await fs.promises.stat(abs);
      if (st.uid !== user.uid || st.gid !== user.gid) {
        await fs.promises.chown(abs, user.uid, user.gid);
        this.log.info(
          { [LogField.path]: abs, uid: user.uid },
          'Gave the proxy state directory to the proxy user',
        );
      }
      // A state file written while the proxy ran as another user (or root) must stay replaceable.
      for (const entry of await fs.promises.readdir(abs)) {
        const f = path.join(abs, entry);
        const est = await fs.promises.lstat(f);
        if (est.isFile() && (est.uid !== user.uid || est.gid !== user.gid))
          await fs.promises.chown(f, user.uid, user.gid);
      }
    } catch (err) {
      throw new ProxySpawnError(`proxy stateDir ${abs}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Writes the config file: 0640, group = the proxy user's group so the proxy can read it. */
  private async writeConfig(): Promise<void> {
    const file = this.configFile;
    try {
      await fs.promises.mkdir(path.dirname(file), { recursive: true, mode: 0o755 });
      await writeFileAtomic(
        file,
        `# Written by the Sail node agent before each start of the proxy; edits are overwritten.\n` +
          YAML.stringify(this.opts.config),
        0o640,
      );
      if (this.opts.user) await fs.promises.chown(file, -1, this.opts.user.gid);
    } catch (err) {
      throw new ProxySpawnError(
        `cannot write the proxy config ${file}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
  }

  /** The child's environment: the agent's plus `env`, without what belongs to the agent alone. */
  private childEnv(): NodeJS.ProcessEnv {
    return Object.fromEntries(
      Object.entries({ ...process.env, ...this.opts.env }).filter(
        ([k]) => !AGENT_ONLY_ENV.includes(k),
      ),
    );
  }

  /**
   * Writes the config and spawns one proxy. Resolves with it once the OS has started it, or
   * undefined when close() came first.
   * @throws ProxySpawnError
   */
  private async spawnChild(): Promise<Child | undefined> {
    await this.writeConfig();
    if (this.closing) return undefined;
    const user = this.opts.user;
    const caps = user !== undefined ? (this.opts.capabilities ?? []) : [];
    const [file, ...args] =
      caps.length > 0 && user !== undefined
        ? withCapabilities(this.opts.command, user, caps)
        : (this.opts.command as [string, ...string[]]);
    const fds = (await this.opts.inheritFds?.()) ?? [];
    let proc: ChildProcess;
    try {
      proc = spawn(file, [...args, 'proxy', '--config', this.configFile], {
        env: this.childEnv(),
        cwd: path.dirname(this.configFile),
        stdio: [
          'ignore',
          this.opts.stdio === 'pipe' ? 'pipe' : 'inherit',
          this.opts.stdio === 'pipe' ? 'pipe' : 'inherit',
          ...fds,
        ],
        // Its own process group: a Ctrl-C in the agent's terminal reaches only the agent, which
        // then drains the proxy in order instead of both stopping at once.
        detached: true,
        // libuv drops the supplementary groups (setgroups(0)) before setuid. setpriv does it
        // itself when there are capabilities to keep.
        ...(user && caps.length === 0 ? { uid: user.uid, gid: user.gid } : {}),
      });
    } catch (err) {
      throw new ProxySpawnError(`cannot run the proxy (${file}): ${(err as Error).message}`, {
        cause: err,
      });
    }
    const gone = new AbortController();
    const exited = new Promise<{ code: number | null; signal: string | null }>(resolve => {
      proc.once('exit', (code, signal) => {
        gone.abort();
        resolve({ code, signal });
      });
      // A failed kill() emits 'error' too, but the process is still there: only a failed spawn
      // (no pid) ends it. Without this listener an 'error' would be thrown.
      proc.on('error', () => {
        if (proc.pid === undefined) {
          gone.abort();
          resolve({ code: null, signal: null });
        }
      });
    });
    // uv_spawn reports a failed fork/exec (ENOENT, EACCES, EPERM from setuid) synchronously:
    // no pid, and the 'error' event follows on the next tick.
    if (proc.pid === undefined) {
      const err = await new Promise<Error>(resolve => proc.once('error', resolve));
      throw new ProxySpawnError(`cannot run the proxy (${file}): ${err.message}`, { cause: err });
    }
    // Registered synchronously with the spawn: a close() from now on sees and stops this child.
    const child: Child = {
      proc,
      pid: proc.pid,
      startedAt: this.clock.now(),
      exited,
      gone,
      tail: [],
      answered: false,
      hupPending: false,
      everReady: false,
      ready: false,
    };
    this.child = child;
    this.upGauge.set(1);
    if (this.opts.stdio === 'pipe') this.relayOutput(child);
    this.log.info(
      {
        pid: child.pid,
        [LogField.path]: this.configFile,
        ...(user ? { uid: user.uid, gid: user.gid } : {}),
        ...(caps.length > 0 ? { capabilities: caps } : {}),
      },
      'Proxy started',
    );
    try {
      await writePidFile(this.pidFile, child.pid);
    } catch (err) {
      // Only the cleanup after an agent crash needs it; the proxy itself runs fine.
      this.log.warn({ err, [LogField.path]: this.pidFile }, 'Could not write the proxy pid file');
    }
    this.pollReady(child).catch((err: unknown) => {
      this.log.error({ err, pid: child.pid }, 'Proxy readiness polling failed');
    });
    return child;
  }

  /** 'pipe' mode: each output line at debug, and the last few kept for an exit report. */
  private relayOutput(child: Child): void {
    const relay = (stream: NodeJS.ReadableStream | null, name: string) => {
      if (!stream) return;
      readline.createInterface({ input: stream }).on('line', line => {
        child.tail.push(line);
        if (child.tail.length > OUTPUT_TAIL_LINES) child.tail.shift();
        this.log.debug({ pid: child.pid, stream: name, line }, 'Proxy output');
      });
    };
    relay(child.proc.stdout, 'stdout');
    relay(child.proc.stderr, 'stderr');
  }

  /** Polls /ready while `child` runs: every 250 ms until ready, then every 2 s. */
  private async pollReady(child: Child): Promise<void> {
    const signal = child.gone.signal;
    while (!signal.aborted) {
      let ready = false;
      let reason = '';
      try {
        const res = await adminGet(this.opts.adminAddress, '/ready');
        child.answered = true;
        ready = res.status === 200;
        reason = res.body.trim();
      } catch (err) {
        reason = (err as Error).message;
      }
      if (signal.aborted) return;
      if (child.answered && child.hupPending) {
        child.hupPending = false;
        this.hangUp(child);
      }
      this.setReady(child, ready, reason);
      try {
        await this.clock.sleep(
          ready ? READY_POLL_INTERVAL_WHEN_READY_MS : READY_POLL_INTERVAL_MS,
          signal,
        );
      } catch {
        return;
      }
    }
  }

  private setReady(child: Child, ready: boolean, reason: string): void {
    if (child !== this.child || child.ready === ready) return;
    child.ready = ready;
    this.readyGauge.set(ready ? 1 : 0);
    if (ready) {
      child.everReady = true;
      this.log.info({ pid: child.pid }, 'Proxy ready');
      for (const w of this.waiters) w.resolve();
      this.waiters.clear();
    } else {
      this.log.warn({ pid: child.pid, [LogField.reason]: reason }, 'Proxy no longer ready');
    }
  }

  private hangUp(child: Child): void {
    try {
      child.proc.kill('SIGHUP');
      this.log.info({ pid: child.pid }, 'Told the proxy to reload its certificates');
    } catch (err) {
      this.log.warn({ err, pid: child.pid }, 'Could not signal the proxy');
    }
  }

  /** Waits for each child to exit and starts the next one after a backoff, until close(). */
  private async supervise(first: Child): Promise<void> {
    let child = first;
    for (;;) {
      const exit = await child.exited;
      await this.onExit(child, exit);
      if (this.closing) return;
      if (this.clock.now() - child.startedAt >= this.resetAfterMs) this.backoff.reset();
      let delayMs = this.backoff.next();
      this.log.warn(
        {
          pid: child.pid,
          [LogField.code]: exit.code,
          [LogField.signal]: exit.signal,
          uptimeMs: this.clock.now() - child.startedAt,
          [LogField.delayMs]: delayMs,
          [LogField.attempt]: this.backoff.attempts,
          ...(child.tail.length ? { output: child.tail } : {}),
        },
        'Proxy exited; restarting after a delay',
      );
      for (;;) {
        try {
          await this.clock.sleep(delayMs, this.abort.signal);
        } catch {
          return; // closed
        }
        try {
          const next = await this.spawnChild();
          if (!next) return;
          child = next;
          this.restarts++;
          this.restartsTotal.inc();
          break;
        } catch (err) {
          if (this.closing) return;
          delayMs = this.backoff.next();
          this.log.error({ err, [LogField.delayMs]: delayMs }, 'Could not restart the proxy');
        }
      }
    }
  }

  private async onExit(
    child: Child,
    exit: { code: number | null; signal: string | null },
  ): Promise<void> {
    if (this.child === child) this.child = undefined;
    child.ready = false;
    this.readyGauge.set(0);
    this.upGauge.set(0);
    this.lastExit = {
      code: exit.code,
      signal: exit.signal,
      at: new Date(this.clock.now()).toISOString(),
    };
    // Before the next spawn writes its own pid; never removes a newer one.
    await removePidFile(this.pidFile).catch((err: unknown) => {
      this.log.debug({ err }, 'Could not remove the proxy pid file');
    });
    if (this.closing)
      this.log.info(
        { pid: child.pid, [LogField.code]: exit.code, [LogField.signal]: exit.signal },
        'Proxy stopped',
      );
  }

  /** SIGTERM, then SIGKILL after stopGraceMs. Resolves once the child has exited. */
  private async stopChild(child: Child): Promise<void> {
    this.log.info({ pid: child.pid, stopGraceMs: this.stopGraceMs }, 'Stopping the proxy');
    const signal = (sig: NodeJS.Signals) => {
      try {
        child.proc.kill(sig);
      } catch (err) {
        this.log.debug({ err, pid: child.pid }, 'Could not signal the proxy');
      }
    };
    signal('SIGTERM');
    if (await this.exitsWithin(child, this.stopGraceMs)) return;
    this.log.warn(
      { pid: child.pid, stopGraceMs: this.stopGraceMs },
      'Proxy did not stop within the grace period; killing it',
    );
    signal('SIGKILL');
    if (!(await this.exitsWithin(child, KILL_WAIT_MS)))
      this.log.error({ pid: child.pid }, 'Proxy did not exit after SIGKILL');
  }

  private async exitsWithin(child: Child, ms: number): Promise<boolean> {
    const timer = new AbortController();
    try {
      return await Promise.race([
        child.exited.then(() => true),
        this.clock.sleep(ms, timer.signal).then(
          () => false,
          () => true,
        ),
      ]);
    } finally {
      timer.abort();
    }
  }
}

/** Where util-linux installs setpriv (Debian: /usr/bin; /bin is the same directory since usrmerge). */
const SETPRIV_CANDIDATES = ['/usr/bin/setpriv', '/bin/setpriv'];

/**
 * `command` run through setpriv as `user` with `caps` as its only capabilities (ambient, so they
 * survive the exec of a program without file capabilities) and no_new_privs.
 * @throws ProxySpawnError when setpriv is not installed or a capability name is not one
 * @internal exported for tests
 */
export function withCapabilities(
  command: readonly string[],
  user: { readonly uid: number; readonly gid: number },
  caps: readonly string[],
): [string, ...string[]] {
  for (const c of caps) {
    if (!/^[a-z_]+$/.test(c)) {
      throw new ProxySpawnError(
        `invalid capability name ${JSON.stringify(c)}: want e.g. net_admin`,
      );
    }
  }
  const setpriv = SETPRIV_CANDIDATES.find(f => fs.existsSync(f));
  if (setpriv === undefined) {
    throw new ProxySpawnError(
      `cannot give the proxy ${caps.map(c => `CAP_${c.toUpperCase()}`).join(', ')}: setpriv (util-linux) is not installed (looked in ${SETPRIV_CANDIDATES.join(', ')})`,
    );
  }
  const list = `-all,${caps.map(c => `+${c}`).join(',')}`;
  return [
    setpriv,
    `--reuid=${user.uid}`,
    `--regid=${user.gid}`,
    '--clear-groups',
    `--inh-caps=${list}`,
    `--ambient-caps=${list}`,
    // Nothing it runs can gain more (systemd sets this on the agent too). Its bounding set stays
    // the agent's: cutting it needs CAP_SETPCAP, which the agent's unit does not grant.
    '--no-new-privs',
    '--',
    ...command,
  ];
}
