/**
 * `sail proxy --concurrency N`: the primary process. It runs no data path itself; it forks N
 * worker processes (node:cluster), each a whole Proxy with its own xDS stream, connection pools
 * and event loop, and is the one face of them all:
 *
 * - Listeners: the workers' explicit and capture listeners are shared through node:cluster, which
 *   accepts in the primary and hands connections round robin to the workers. The TPROXY socket
 *   the node agent passes (`traffic.inboundFd`) is inherited by every worker, which accepts from
 *   it directly.
 * - Admin and metrics on the configured addresses: `/ready` is LIVE when every worker is, `/stats`
 *   and the Prometheus metrics are the workers' merged (counters added up), and `/config_dump`,
 *   `/clusters`, `/listeners`, `/server_info` are worker 1's (`?worker=N` for another). The
 *   workers' own admin servers listen on 127.0.0.1 ports of their own.
 * - Signals: SIGHUP (new certificates) and SIGTERM/SIGINT (drain) are passed on over IPC; the
 *   primary tells systemd it is ready once every worker is.
 * - A worker that exits is forked again after a backoff (1 s, doubling to 30 s, back to 1 s after
 *   a minute up); the others keep serving meanwhile.
 */
import cluster, { type Worker } from 'node:cluster';
import * as http from 'node:http';
import * as sea from 'node:sea';
import { Backoff } from '../../common/backoff';
import { type Clock, systemClock } from '../../common/clock';
import { ClosedError, InvalidInputError, NotReadyError } from '../../common/errors';
import type { HttpResult, Route } from '../../common/http';
import { CloseOnce, type Lifecycle } from '../../common/lifecycle';
import type { Logger, LogLevel } from '../../common/logging';
import { createRegistry, prom } from '../../common/metrics';
import {
  AdminServer,
  indexRoute,
  MetricsServer,
  type MetricsText,
  type Readiness,
  readinessRoutes,
  statsRoute,
} from '../admin';
import type { ProxyOptions } from '../options';
import { mergeStats } from './merge-stats';
import {
  type FromWorker,
  isFromWorker,
  type QueryAnswers,
  type QueryKind,
  type ToWorker,
  WORKER_ENV,
  type WorkerSpec,
} from './protocol';

export const DEFAULT_QUERY_TIMEOUT_MS = 2_000;
export const DEFAULT_RESTART_INITIAL_MS = 1_000;
export const DEFAULT_RESTART_MAX_MS = 30_000;
/** A worker up this long before it exits is restarted after the initial backoff again. */
const STABLE_MS = 60_000;
/** How long past the workers' own shutdown grace they may take before they are killed. */
const KILL_AFTER_GRACE_MS = 5_000;

/** The admin paths answered by one worker (worker 1 unless `?worker=N`). */
const FORWARDED_PATHS = ['/config_dump', '/clusters', '/listeners', '/server_info'] as const;

export interface ProxyPrimaryOptions {
  readonly logger: Logger;
  readonly clock?: Clock;
  /** Worker processes, at least 2. */
  readonly workers: number;
  /** The proxy's resolved options (without logger); every worker gets them. */
  readonly options: Omit<ProxyOptions, 'logger'>;
  /** The config file's log level, for the workers. */
  readonly logLevel: LogLevel;
  /** How long a worker may take to answer the primary (default 2 s). */
  readonly queryTimeoutMs?: number;
  readonly restartInitialMs?: number;
  readonly restartMaxMs?: number;
}

interface Pending {
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: Error) => void;
  readonly timer: NodeJS.Timeout;
}

/** One worker's place: the process in it now, and what the primary knows of it. */
interface Slot {
  readonly index: number;
  worker: Worker | undefined;
  /** Its admin server's `host:port`, once its Proxy started. */
  admin: string | undefined;
  /** Its Proxy has been ready (since this fork). */
  ready: boolean;
  startedAt: number;
  /** How the last process in this slot ended (`code 1`, `signal SIGKILL`). */
  lastExit: string | undefined;
  readonly backoff: Backoff;
  restartTimer: NodeJS.Timeout | undefined;
  readonly pending: Map<number, Pending>;
}

/** The stdio of a worker: the primary's, plus the inherited TPROXY socket at its own number. */
function workerStdio(inboundFd: number | undefined): (string | number)[] {
  const stdio: (string | number)[] = ['inherit', 'inherit', 'inherit'];
  if (inboundFd !== undefined) {
    while (stdio.length < inboundFd) stdio.push('ignore');
    stdio.push(inboundFd);
  }
  stdio.push('ipc');
  return stdio;
}

/**
 * What node:cluster runs in a worker. A single executable repeats its own path as argv[1] (it has
 * no script), so a fork must not pass it again: the command line resumes at argv[2].
 */
function execSettings(): { exec?: string; args?: string[] } {
  if (!sea.isSea()) return {};
  const [exec, ...args] = process.argv.slice(2);
  return exec === undefined ? {} : { exec, args };
}

function describeExit(code: number | null, signal: string | null): string {
  return signal ? `signal ${signal}` : `code ${code ?? 0}`;
}

export class ProxyPrimary implements Lifecycle {
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly slots: Slot[];
  private readonly admin: AdminServer;
  private readonly metrics: MetricsServer;
  private readonly registry: prom.Registry;
  private readonly restartsCounter: prom.Counter;
  private processRegistry: prom.Registry | undefined;
  private readonly closeOnce = new CloseOnce();
  private closing = false;
  private started = false;
  private startedAt = 0;
  private nextQueryId = 1;
  private readonly readyWaiters = new Set<() => void>();

  constructor(private readonly opts: ProxyPrimaryOptions) {
    if (!Number.isInteger(opts.workers) || opts.workers < 2)
      throw new InvalidInputError(`workers: want at least 2, got ${opts.workers}`);
    this.log = opts.logger.child({ component: 'proxy', subsystem: 'primary' });
    this.clock = opts.clock ?? systemClock;
    this.slots = Array.from({ length: opts.workers }, (_, i) => ({
      index: i + 1,
      worker: undefined,
      admin: undefined,
      ready: false,
      startedAt: 0,
      lastExit: undefined,
      // No jitter: one host's workers have no fleet to fall out of step with.
      backoff: new Backoff({
        initialMs: opts.restartInitialMs ?? DEFAULT_RESTART_INITIAL_MS,
        maxMs: opts.restartMaxMs ?? DEFAULT_RESTART_MAX_MS,
        random: () => 1,
      }),
      restartTimer: undefined,
      pending: new Map(),
    }));
    this.registry = createRegistry(false);
    const registers = [this.registry];
    const slots = this.slots;
    new prom.Gauge({
      name: 'sail_proxy_workers',
      help: 'Worker processes running (sail proxy --concurrency)',
      aggregator: 'first',
      registers,
      collect() {
        this.set(slots.filter(s => s.worker !== undefined).length);
      },
    });
    this.restartsCounter = new prom.Counter({
      name: 'sail_proxy_worker_restarts_total',
      help: 'Worker processes forked again after one exited',
      aggregator: 'first',
      registers,
    });
    this.admin = new AdminServer({
      logger: opts.logger,
      listen: opts.options.adminListen,
      allowRemote: opts.options.adminAllowRemote ?? false,
      routes: this.routes(),
    });
    this.metrics = new MetricsServer({
      logger: opts.logger,
      listen: opts.options.metricsListen,
      metrics: () => this.metricsText(),
    });
  }

  /**
   * Binds admin and metrics, then forks the workers. Resolves once they are forked, not ready.
   * @throws ListenFailedError when the admin or metrics port is taken
   */
  async start(): Promise<void> {
    if (this.closing) throw new ClosedError('proxy');
    this.started = true;
    this.startedAt = this.clock.now();
    this.processRegistry = createRegistry(true);
    try {
      await this.admin.start();
      await this.metrics.start();
    } catch (err) {
      await this.admin.close();
      await this.metrics.close();
      throw err;
    }
    cluster.setupPrimary({
      ...execSettings(),
      stdio: workerStdio(this.opts.options.traffic.inboundFd),
    });
    for (const slot of this.slots) this.fork(slot);
    this.log.info(
      { workers: this.slots.length, address: this.admin.address },
      'Proxy primary started',
    );
  }

  /** Resolves once every worker is ready; rejects with ClosedError if closed first. */
  whenReady(): Promise<void> {
    if (this.allReady()) return Promise.resolve();
    if (this.closing) return Promise.reject(new ClosedError('proxy'));
    return new Promise((resolve, reject) => {
      const waiter = () => {
        if (this.closing) reject(new ClosedError('proxy'));
        else if (this.allReady()) resolve();
        else return;
        this.readyWaiters.delete(waiter);
      };
      this.readyWaiters.add(waiter);
    });
  }

  /** SIGHUP: every worker re-reads the certificate directory. */
  reloadCertificates(): void {
    for (const slot of this.slots) this.send(slot, { sail: 'reload' });
  }

  /**
   * Tells every worker to drain and waits for them to exit (their own shutdown grace, then
   * SIGKILL), then closes admin and metrics. Idempotent.
   */
  close(): Promise<void> {
    this.closing = true;
    return this.closeOnce.run(async () => {
      this.notifyReady();
      const exits: Promise<void>[] = [];
      for (const slot of this.slots) {
        clearTimeout(slot.restartTimer);
        const w = slot.worker;
        if (!w) continue;
        exits.push(
          new Promise(resolve => {
            w.once('exit', () => resolve());
            if (w.isDead()) resolve();
          }),
        );
        // A worker still starting may not listen on the channel yet; its signal handler (or the
        // default action, while it loads) stops it instead.
        if (slot.admin === undefined) w.process.kill('SIGTERM');
        else this.send(slot, { sail: 'shutdown' });
      }
      const all = Promise.all(exits);
      const timer = setTimeout(() => {
        this.log.warn(
          { shutdownGraceMs: this.opts.options.shutdownGraceMs },
          'Workers did not stop within the shutdown grace; killing them',
        );
        for (const slot of this.slots) slot.worker?.process.kill('SIGKILL');
      }, this.opts.options.shutdownGraceMs + KILL_AFTER_GRACE_MS);
      await all;
      clearTimeout(timer);
      await Promise.all([this.admin.close(), this.metrics.close()]);
      if (this.started) this.log.info('Proxy primary stopped');
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ---------------------------------------------------------------------------------------------
  // Workers

  private fork(slot: Slot): void {
    slot.restartTimer = undefined;
    if (this.closing) return;
    const spec: WorkerSpec = {
      index: slot.index,
      options: this.opts.options as unknown as Record<string, unknown>,
      logLevel: this.opts.logLevel,
    };
    // Only the primary speaks to systemd.
    const w = cluster.fork({ [WORKER_ENV]: JSON.stringify(spec), NOTIFY_SOCKET: '' });
    slot.worker = w;
    slot.admin = undefined;
    slot.ready = false;
    slot.startedAt = this.clock.now();
    w.on('message', (m: unknown) => {
      if (isFromWorker(m)) this.onMessage(slot, m);
    });
    // A failed send on a channel that just closed; 'exit' follows and handles it.
    w.on('error', (err: Error) => this.log.debug({ err, worker: slot.index }, 'Worker IPC error'));
    w.once('exit', (code: number | null, signal: string | null) =>
      this.onExit(slot, w, code, signal),
    );
    this.log.info({ worker: slot.index, pid: w.process.pid }, 'Proxy worker forked');
  }

  private onMessage(slot: Slot, m: FromWorker): void {
    switch (m.sail) {
      case 'started':
        slot.admin = m.admin;
        return;
      case 'ready':
        slot.ready = true;
        this.log.info({ worker: slot.index, pid: slot.worker?.process.pid }, 'Proxy worker ready');
        this.notifyReady();
        return;
      case 'answer': {
        const p = slot.pending.get(m.id);
        if (!p) return;
        slot.pending.delete(m.id);
        clearTimeout(p.timer);
        if (m.error !== undefined) p.reject(new Error(m.error));
        else p.resolve(m.value);
      }
    }
  }

  private onExit(slot: Slot, w: Worker, code: number | null, signal: string | null): void {
    if (slot.worker !== w) return;
    slot.worker = undefined;
    slot.admin = undefined;
    slot.ready = false;
    slot.lastExit = describeExit(code, signal);
    for (const p of slot.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new Error(`worker ${slot.index} exited (${slot.lastExit})`));
    }
    slot.pending.clear();
    this.notifyReady();
    if (this.closing) return;
    if (this.clock.now() - slot.startedAt >= STABLE_MS) slot.backoff.reset();
    const delay = slot.backoff.next();
    this.log.error(
      { worker: slot.index, pid: w.process.pid, exit: slot.lastExit, restartInMs: delay },
      'Proxy worker exited; forking it again',
    );
    this.restartsCounter.inc();
    slot.restartTimer = setTimeout(() => this.fork(slot), delay);
  }

  private send(slot: Slot, m: ToWorker): boolean {
    const w = slot.worker;
    if (!w?.isConnected()) return false;
    try {
      return w.send(m);
    } catch {
      return false;
    }
  }

  /**
   * Asks one worker. Only a started worker is asked: one still loading has no listener for the
   * question yet, and would leave it unanswered until the timeout.
   * @throws NotReadyError when it is not running or started, or does not answer in time
   */
  private query<K extends QueryKind>(slot: Slot, what: K): Promise<QueryAnswers[K]> {
    const id = this.nextQueryId++;
    if (slot.admin === undefined)
      return Promise.reject(new NotReadyError(`worker ${slot.index}: ${this.downReason(slot)}`));
    return new Promise((resolve, reject) => {
      const timeoutMs = this.opts.queryTimeoutMs ?? DEFAULT_QUERY_TIMEOUT_MS;
      const timer = setTimeout(() => {
        slot.pending.delete(id);
        reject(new NotReadyError(`worker ${slot.index} did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
      slot.pending.set(id, { resolve: v => resolve(v as QueryAnswers[K]), reject, timer });
      if (!this.send(slot, { sail: 'query', id, what })) {
        clearTimeout(timer);
        slot.pending.delete(id);
        reject(new NotReadyError(`worker ${slot.index}: exiting (its channel is closed)`));
      }
    });
  }

  private downReason(slot: Slot): string {
    return !slot.worker && slot.lastExit
      ? `restarting after it exited with ${slot.lastExit}`
      : 'starting';
  }

  private allReady(): boolean {
    return !this.closing && this.slots.every(s => s.worker !== undefined && s.ready);
  }

  private notifyReady(): void {
    for (const w of [...this.readyWaiters]) w();
  }

  // ---------------------------------------------------------------------------------------------
  // Admin and metrics

  /** LIVE when every worker is; else each worker's reason. */
  async readiness(): Promise<Readiness> {
    if (this.closing) return { state: 'DRAINING', reason: 'shutting down' };
    const answers = await Promise.all(
      this.slots.map(async (slot): Promise<Readiness> => {
        try {
          const r = await this.query(slot, 'readiness');
          return r.state === 'LIVE'
            ? r
            : { state: r.state, reason: `worker ${slot.index}: ${r.reason}` };
        } catch (err) {
          return { state: 'PRE_INITIALIZING', reason: (err as Error).message };
        }
      }),
    );
    const down = answers.filter(a => a.state !== 'LIVE');
    if (down.length === 0) return { state: 'LIVE', reason: '' };
    return {
      state: down.some(a => a.state === 'PRE_INITIALIZING') ? 'PRE_INITIALIZING' : 'DRAINING',
      reason: down.map(a => a.reason).join('; '),
    };
  }

  /** The running workers' answers to `what` (a worker that cannot answer is left out). */
  private async fromRunning<K extends QueryKind>(what: K): Promise<QueryAnswers[K][]> {
    const answers = await Promise.all(
      this.slots.map(slot => this.query(slot, what).catch(() => undefined)),
    );
    return answers.filter((a): a is Awaited<QueryAnswers[K]> => a !== undefined);
  }

  /**
   * `/stats`: the workers' merged, plus the primary's own; with `?worker=N`, that worker's alone.
   * @throws InvalidInputError for a bad worker number; NotReadyError when it is not running
   */
  async stats(query?: URLSearchParams): Promise<Map<string, number | string>> {
    const which = query?.get('worker');
    if (which !== null && which !== undefined)
      return new Map(await this.query(this.slotOf(which), 'stats'));
    const merged = mergeStats((await this.fromRunning('stats')).map(entries => new Map(entries)));
    merged.set('server.uptime', Math.floor((this.clock.now() - this.startedAt) / 1000));
    merged.set('server.concurrency', this.slots.length);
    merged.set('server.workers_live', this.slots.filter(s => s.worker !== undefined).length);
    merged.set('server.worker_restarts', (await this.restartsCounter.get()).values[0]?.value ?? 0);
    return merged;
  }

  /** The slot `?worker=` names. @throws InvalidInputError */
  private slotOf(which: string): Slot {
    const index = Number(which);
    const slot = Number.isInteger(index) ? this.slots[index - 1] : undefined;
    if (!slot)
      throw new InvalidInputError(
        `worker: want a worker number from 1 to ${this.slots.length}, got ${which}`,
      );
    return slot;
  }

  /** The Prometheus text: every worker's metrics merged, with the primary's process metrics. */
  private async metricsText(): Promise<MetricsText> {
    const own = this.processRegistry ? [this.processRegistry, this.registry] : [this.registry];
    const all = [
      ...(await this.fromRunning('metrics')),
      ...(await Promise.all(own.map(r => r.getMetricsAsJSON()))),
    ] as Parameters<typeof prom.AggregatorRegistry.aggregate>[0];
    const merged = prom.AggregatorRegistry.aggregate(all);
    return { text: await merged.metrics(), contentType: merged.contentType };
  }

  /** Answers a forwarded admin path from one worker's own admin server. */
  private async forward(path: string, query: URLSearchParams): Promise<HttpResult> {
    const slot = this.slotOf(query.get('worker') ?? '1');
    if (!slot.admin) throw new NotReadyError(`worker ${slot.index}: ${this.downReason(slot)}`);
    const rest = new URLSearchParams(query);
    rest.delete('worker');
    const qs = rest.toString();
    const res = await httpGet(`http://${slot.admin}${path}${qs ? `?${qs}` : ''}`);
    const contentType = res.contentType ?? 'text/plain; charset=utf-8';
    if (path === '/server_info' && res.status === 200) {
      const info = JSON.parse(res.text) as Record<string, unknown>;
      return {
        json: {
          ...info,
          workers: {
            concurrency: this.slots.length,
            answered_by: slot.index,
            live: this.slots.filter(s => s.worker !== undefined).length,
          },
        },
      };
    }
    return { status: res.status, text: res.text, contentType };
  }

  private routes(): Route[] {
    return [
      indexRoute(
        'Sail proxy admin',
        `(${this.slots.length} workers: /ready and /stats cover all, /stats?worker=N one; the others answer from worker 1, ?worker=N from another)\n`,
      ),
      ...readinessRoutes(() => this.readiness()),
      statsRoute(
        query => this.stats(query),
        () => this.metricsText(),
      ),
      ...FORWARDED_PATHS.map((path): Route => ({
        method: 'GET',
        path,
        admin: false,
        handler: ({ query }) => this.forward(path, query),
      })),
    ];
  }
}

/** GET over loopback to a worker's admin server. */
function httpGet(url: string): Promise<{ status: number; text: string; contentType?: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: DEFAULT_QUERY_TIMEOUT_MS }, res => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 502,
          text: Buffer.concat(chunks).toString('utf8'),
          ...(res.headers['content-type'] ? { contentType: res.headers['content-type'] } : {}),
        }),
      );
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('no answer in time')));
    req.on('error', err =>
      reject(new NotReadyError(`worker admin ${url}: ${err.message}`, { cause: err })),
    );
  });
}
