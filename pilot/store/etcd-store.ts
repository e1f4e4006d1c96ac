/**
 * The etcd config store, for replicated pilots: every object is one etcd key,
 * `<prefix><Kind>/<namespace>/<name>`, whose value is the object as JSON (without resourceVersion:
 * that is the key's mod_revision). Each pilot keeps all objects in memory, loaded by one range read
 * at start and kept current by a watch on the prefix from the revision of that read; every change,
 * whoever made it, reaches the cache and the listeners through that watch, in revision order.
 *
 * A write is one etcd transaction: for every key it changes, a compare of the key's mod_revision
 * with the revision the cache holds (0 for "does not exist"), then all the puts and deletes. If a
 * compare fails the cache was behind; the store waits for the watch to catch up and plans the batch
 * again, so a write that names a resourceVersion gets ConfigConflictError only when that version is
 * really gone, and a blind write just applies over the newer state.
 *
 * While etcd is unreachable the store is not ready and refuses writes (StoreUnavailableError) but
 * keeps serving reads from its cache; the etcd3 client reconnects the watch, which replays what it
 * missed. If etcd compacted those revisions meanwhile, the store reloads everything and delivers
 * the difference as one batch of events.
 */
import * as fs from 'node:fs';
import { Etcd3, type IOptions, type IWatchResponse, type IKeyValue, type Watcher } from 'etcd3';
import { Backoff } from '../../common/backoff';
import { type Clock, systemClock } from '../../common/clock';
import {
  AlreadyStartedError,
  ClosedError,
  ConfigError,
  getErrorMessage,
} from '../../common/errors';
import { CloseOnce, isAbortError } from '../../common/lifecycle';
import { type Logger, LogField } from '../../common/logging';
import type { ConfigKey, ConfigObject } from '../config/types';
import {
  ConfigConflictError,
  StoreUnavailableError,
  pilotNotReady,
  storeBatchTooLarge,
} from '../errors';
import { ConfigCache, Listeners } from './cache';
import type { ConfigEvent, ConfigStore, ListOptions, WriteBatch, WriteResult } from './store';
import {
  commitResult,
  describeKey,
  isKind,
  objectKey,
  planWrite,
  stampVersion,
} from './write-plan';

export const DEFAULT_ETCD_PREFIX = '/sail/config/';
/** Deadline of each etcd request (the connection attempt included). */
export const DEFAULT_ETCD_DIAL_TIMEOUT_MS = 5_000;
/** etcd's own default `--max-txn-ops`: the most changes one write may carry. */
export const DEFAULT_ETCD_MAX_TXN_OPS = 128;
/** How often a write is planned again after losing a race with another writer. */
const MAX_TXN_ATTEMPTS = 5;
/** Watch reconnection backoff (etcd3's default grows to 30 s; a config store wants it back sooner). */
const WATCH_INITIAL_BACKOFF_MS = 100;
const WATCH_MAX_BACKOFF_MS = 2_000;
/** Full reload retries after the watch was canceled (compaction). */
const RESYNC_INITIAL_BACKOFF_MS = 200;
const RESYNC_MAX_BACKOFF_MS = 5_000;
/** How long close() waits for etcd to acknowledge the watch cancel before closing the client. */
const WATCH_CANCEL_TIMEOUT_MS = 1_000;
/** Large config sets: grpc-js refuses replies over 4 MiB by default. */
const MAX_RECEIVE_MESSAGE_BYTES = 256 * 1024 * 1024;

/** TLS to etcd: PEM file paths. */
export interface EtcdTlsOptions {
  /** CA bundle that signed etcd's serving certificate. */
  readonly ca: string;
  /** Client certificate and key, for etcd's `--client-cert-auth`; both or neither. */
  readonly cert?: string;
  readonly key?: string;
}

export interface EtcdStoreOptions {
  /** Client URLs, `http://host:port` or `https://host:port` (all of one scheme). */
  readonly endpoints: readonly string[];
  /** Key prefix; DEFAULT_ETCD_PREFIX by default. A missing final `/` is added. */
  readonly prefix?: string;
  /** Required for https endpoints with a private CA; not allowed with http endpoints. */
  readonly tls?: EtcdTlsOptions;
  /** Deadline of each etcd request; DEFAULT_ETCD_DIAL_TIMEOUT_MS by default. */
  readonly dialTimeoutMs?: number;
  /** Must not exceed the etcd server's `--max-txn-ops`; DEFAULT_ETCD_MAX_TXN_OPS by default. */
  readonly maxTxnOps?: number;
  readonly logger: Logger;
  /** Source of creationTimestamp and resync backoff sleeps; the system clock by default. */
  readonly clock?: Clock;
}

type WatchBackoff = NonNullable<NonNullable<IOptions['faultHandling']>['watchBackoff']>;

/** etcd3's watch backoff interface, as capped exponential backoff with jitter. */
function watchBackoff(attempt = 0): WatchBackoff {
  const base = Math.min(WATCH_MAX_BACKOFF_MS, WATCH_INITIAL_BACKOFF_MS * 2 ** attempt);
  return { duration: base / 2 + (Math.random() * base) / 2, next: () => watchBackoff(attempt + 1) };
}

/**
 * Checks `--etcd-endpoints`-style input: one or more comma-separated `http(s)://host:port` URLs.
 * @throws ConfigError naming the bad entry
 */
export function parseEtcdEndpoints(value: string | readonly string[]): string[] {
  const list = (typeof value === 'string' ? value.split(',') : value)
    .map(s => s.trim())
    .filter(s => s !== '');
  if (list.length === 0) throw new ConfigError('etcd endpoints: at least one URL is required');
  for (const e of list) {
    let url: URL;
    try {
      url = new URL(e);
    } catch {
      throw new ConfigError(`etcd endpoint ${JSON.stringify(e)} is not a URL (http://host:port)`);
    }
    if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.port === '') {
      throw new ConfigError(
        `etcd endpoint ${JSON.stringify(e)} must be http://host:port or https://host:port`,
      );
    }
    if (url.pathname !== '/' || url.search !== '' || url.username !== '') {
      throw new ConfigError(`etcd endpoint ${JSON.stringify(e)} must have no path, query or user`);
    }
  }
  const secure = list.filter(e => e.startsWith('https:')).length;
  if (secure !== 0 && secure !== list.length) {
    throw new ConfigError('etcd endpoints must be all http:// or all https://, not a mix');
  }
  return list;
}

/** True for the etcd client errors that mean "etcd is not reachable now" rather than "refused". */
function isUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  return (
    err.name === 'GRPCUnavailableError' ||
    err.name === 'GRPCDeadlineExceededError' ||
    err.name === 'GRPCCancelledError' ||
    err.name === 'BrokenCircuitError' ||
    err.name === 'ClientClosedError'
  );
}

/** A write waiting for the watch to bring the cache to some state. */
interface Waiter {
  readonly cond: () => boolean;
  readonly resolve: (reached: boolean) => void;
}

/** The etcd-backed {@link ConfigStore}; see the module comment. Returned objects are frozen. */
export class EtcdStore implements ConfigStore {
  readonly type = 'etcd';
  readonly endpoints: readonly string[];
  readonly prefix: string;
  private readonly opts: EtcdStoreOptions;
  private readonly dialTimeoutMs: number;
  private readonly maxTxnOps: number;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly cache = new ConfigCache();
  private readonly listeners: Listeners;
  private readonly closeOnce = new CloseOnce();
  /** Aborted by close(): stops the resync loop. */
  private readonly abort = new AbortController();
  private client: Etcd3 | undefined;
  private watcher: Watcher | undefined;
  private started = false;
  private loaded = false;
  /** The watch stream is up: etcd is reachable, writes are accepted. */
  private connected = false;
  /** The highest etcd revision whose changes are in the cache. */
  private revision = 0;
  private waiters: Waiter[] = [];
  /** The running reload after a canceled watch, if any. */
  private resyncing: Promise<void> | undefined;

  constructor(opts: EtcdStoreOptions) {
    this.opts = opts;
    this.endpoints = parseEtcdEndpoints(opts.endpoints);
    const prefix = opts.prefix ?? DEFAULT_ETCD_PREFIX;
    if (prefix === '') throw new ConfigError('etcd prefix must not be empty');
    this.prefix = prefix.endsWith('/') ? prefix : `${prefix}/`;
    if (opts.tls && !this.endpoints[0]?.startsWith('https:')) {
      throw new ConfigError('etcd TLS files are set but the etcd endpoints are http://');
    }
    if (opts.tls && (opts.tls.cert === undefined) !== (opts.tls.key === undefined)) {
      throw new ConfigError('etcd TLS: give both the client certificate and its key, or neither');
    }
    this.dialTimeoutMs = opts.dialTimeoutMs ?? DEFAULT_ETCD_DIAL_TIMEOUT_MS;
    this.maxTxnOps = opts.maxTxnOps ?? DEFAULT_ETCD_MAX_TXN_OPS;
    this.log = opts.logger.child({ component: 'pilot', subsystem: 'config-store' });
    this.clock = opts.clock ?? systemClock;
    this.listeners = new Listeners(this.log);
  }

  /** Loaded, and connected to etcd now. */
  get ready(): boolean {
    return this.loaded && this.connected && !this.closeOnce.closed;
  }

  /**
   * Connects, loads every object under the prefix and starts the watch.
   * @throws StoreUnavailableError when etcd cannot be reached within the dial timeout
   * @throws Error naming the file when a TLS file cannot be read, or the key when a stored value
   *   is not a config object (the store never starts with part of the config silently missing)
   */
  async start(): Promise<void> {
    if (this.started) throw new AlreadyStartedError('config store');
    this.started = true;
    const client = new Etcd3({
      hosts: [...this.endpoints],
      ...(this.opts.tls ? { credentials: await readTls(this.opts.tls) } : {}),
      defaultCallOptions: ctx =>
        ctx.isStream ? {} : { deadline: Date.now() + this.dialTimeoutMs },
      grpcOptions: {
        'grpc.max_receive_message_length': MAX_RECEIVE_MESSAGE_BYTES,
        // Notice a dead etcd behind a silent network (no RST) within ~15 s; etcd's default
        // --grpc-keepalive-min-time (5 s) allows this rate.
        'grpc.keepalive_time_ms': 10_000,
        'grpc.keepalive_timeout_ms': 5_000,
      },
      faultHandling: { watchBackoff: watchBackoff() },
    });
    this.client = client;
    try {
      await this.sync(true);
    } catch (err) {
      await this.close();
      throw err;
    }
    this.loaded = true;
    this.log.info(
      {
        [LogField.address]: this.endpoints.join(','),
        prefix: this.prefix,
        objects: this.cache.size,
        revision: this.revision,
      },
      'Loaded config store',
    );
  }

  /** Stops the watch and closes the client. Idempotent. */
  close(): Promise<void> {
    return this.closeOnce.run(async () => {
      this.abort.abort();
      this.connected = false;
      this.checkWaiters(true);
      await this.resyncing;
      await this.stopWatch();
      this.client?.close();
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  get(key: ConfigKey): ConfigObject | undefined {
    return this.cache.get(key);
  }

  list(options?: ListOptions): ConfigObject[] {
    return this.cache.list(options);
  }

  watch(listener: (events: readonly ConfigEvent[]) => void): () => void {
    return this.listeners.add(listener);
  }

  /**
   * Applies `batch` in one etcd transaction (see {@link ConfigStore.write}). Resolves once the
   * change is in this store's cache (read-your-writes), or after the dial timeout if the watch
   * is slow to deliver it (the write is committed either way).
   * @throws ConfigConflictError, ConfigNotFoundError, ConfigInvalidError (nothing applied)
   * @throws StoreUnavailableError (PILOT_STORE_UNAVAILABLE) while etcd is unreachable: nothing
   *   was applied unless the error says the outcome is unknown
   * @throws InvalidInputError (PILOT_STORE_BATCH_TOO_LARGE) when the batch changes more objects
   *   than one etcd transaction may
   */
  async write(batch: WriteBatch): Promise<WriteResult> {
    for (let attempt = 1; ; attempt++) {
      const client = this.writableClient();
      const plan = planWrite(batch, k => this.cache.getByKey(k), new Date(this.clock.now()));
      if (plan.empty) return commitResult(plan, p => p.object).result;
      const changes = plan.changedPuts.length + plan.deletes.length;
      if (changes > this.maxTxnOps) {
        throw storeBatchTooLarge(
          `this write changes ${changes} objects but one etcd transaction may hold at most ` +
            `${this.maxTxnOps} (etcd --max-txn-ops); split it, or raise --max-txn-ops on etcd ` +
            'and the store limit with it',
        );
      }
      const compares = [
        ...plan.changedPuts.map(p => ({ key: p.key, rev: p.existing?.metadata.resourceVersion })),
        ...plan.deletes.map(d => ({ key: d.key, rev: d.existing.metadata.resourceVersion })),
      ];
      const [first, ...rest] = compares;
      if (first === undefined) throw new Error('unreachable: a non-empty plan has changes');
      let txn = client.if(this.prefix + first.key, 'Mod', '==', Number(first.rev ?? 0));
      for (const c of rest) txn = txn.and(this.prefix + c.key, 'Mod', '==', Number(c.rev ?? 0));
      txn = txn
        .then(
          ...plan.changedPuts.map(p =>
            client
              .put(this.prefix + p.key)
              .value(JSON.stringify(stampVersion(p.object, undefined))),
          ),
          ...plan.deletes.map(d => client.delete().key(this.prefix + d.key)),
        )
        // On a failed compare, read the keys back: they say what the cache must catch up to.
        .else(...compares.map(c => client.get(this.prefix + c.key)));

      let res;
      try {
        res = await txn.commit();
      } catch (err) {
        if (isUnavailable(err)) {
          throw new StoreUnavailableError(
            `etcd at ${this.endpoints.join(',')} did not answer the write (${getErrorMessage(err)}); ` +
              'it may or may not have been applied: check with a read and retry',
            { cause: err },
          );
        }
        throw new Error(`etcd refused the config write: ${getErrorMessage(err)}`, { cause: err });
      }
      const revision = Number(res.header.revision);
      if (res.succeeded) {
        const rv = String(revision);
        const { result } = commitResult(plan, p => stampVersion(p.object, rv));
        if (!(await this.waitUntil(() => this.revision >= revision))) {
          this.log.warn({ revision }, 'Config write committed but not yet seen by the watch');
        }
        return result;
      }
      // Someone else changed one of these keys after our cache saw it: wait until the watch has
      // brought those keys to what etcd just reported, then plan again.
      const current = new Map<string, string | undefined>(compares.map(c => [c.key, undefined]));
      for (const r of res.responses) {
        for (const kv of r.response_range?.kvs ?? []) {
          current.set(kv.key.toString('utf8').slice(this.prefix.length), kv.mod_revision);
        }
      }
      const caughtUp = () =>
        [...current].every(([k, rv]) => {
          const cached = Number(this.cache.getByKey(k)?.metadata.resourceVersion ?? 0);
          // Gone in etcd: gone from the cache too, or already created again after this read.
          return rv === undefined ? cached === 0 || cached > revision : cached >= Number(rv);
        });
      this.log.debug(
        { revision, [LogField.attempt]: attempt },
        'Config write lost a race; retrying',
      );
      if (attempt >= MAX_TXN_ATTEMPTS || !(await this.waitUntil(caughtUp))) {
        throw new ConfigConflictError(
          `the objects in this write kept changing under it (${attempt} attempts); nothing in ` +
            'this write was applied; retry',
        );
      }
    }
  }

  /** The client, if writes are possible now. */
  private writableClient(): Etcd3 {
    if (this.closeOnce.closed) throw new ClosedError('config store');
    if (!this.loaded || !this.client) throw pilotNotReady('config store is not loaded yet');
    if (!this.connected) {
      throw new StoreUnavailableError(
        `etcd at ${this.endpoints.join(',')} is unreachable: config writes are refused until it ` +
          'is back (reads are served from the last known config); retry',
      );
    }
    return this.client;
  }

  /**
   * Loads every object under the prefix, replaces the cache with them (emitting the difference
   * as one batch, unless `initial`), and watches from the next revision.
   */
  private async sync(initial: boolean): Promise<void> {
    const client = this.client;
    if (!client) throw new Error('unreachable: sync before start');
    let res;
    try {
      res = await client.getAll().prefix(this.prefix).exec();
    } catch (err) {
      throw new StoreUnavailableError(
        `cannot read the config from etcd at ${this.endpoints.join(',')}: ${getErrorMessage(err)}`,
        { cause: err },
      );
    }
    const fresh = new Map<string, ConfigObject>();
    for (const kv of res.kvs) {
      const parsed = this.parseKv(kv);
      if (typeof parsed === 'string') {
        if (initial) throw new Error(parsed);
        this.log.error({ [LogField.reason]: parsed }, 'Ignoring a malformed config value in etcd');
        continue;
      }
      fresh.set(parsed.key, parsed.object);
    }
    const events: ConfigEvent[] = [];
    for (const key of this.cache.keys()) {
      const old = this.cache.getByKey(key);
      if (old && !fresh.has(key)) {
        events.push({ type: 'deleted', object: old });
        this.cache.delete(key);
      }
    }
    for (const [key, obj] of fresh) {
      const old = this.cache.getByKey(key);
      if (old?.metadata.resourceVersion === obj.metadata.resourceVersion) continue;
      events.push({ type: old ? 'updated' : 'added', object: obj });
      this.cache.set(obj);
    }
    this.revision = Number(res.header.revision);
    if (!initial) this.listeners.emit(events);
    await this.startWatch(this.revision + 1);
  }

  /** Creates the prefix watch from `fromRevision`; resolves once etcd has accepted it. */
  private async startWatch(fromRevision: number): Promise<void> {
    const client = this.client;
    if (!client) throw new Error('unreachable: watch before start');
    // watcher(), not create(): the handlers must be in place before the first event can arrive.
    const watcher = client
      .watch()
      .prefix(this.prefix)
      .startRevision(String(fromRevision))
      .watcher();
    this.watcher = watcher;
    let settle: ((err?: Error) => void) | undefined;
    const created = new Promise<void>((resolve, reject) => {
      settle = err => (err ? reject(err) : resolve());
    });
    watcher.on('connected', () => {
      settle?.();
      if (this.watcher !== watcher || this.connected) return;
      this.connected = true;
      if (this.loaded) this.log.info({ revision: this.revision }, 'Reconnected to etcd');
    });
    watcher.on('disconnected', err => {
      if (this.watcher !== watcher || !this.connected) return;
      this.connected = false;
      this.log.warn(
        { err, [LogField.address]: this.endpoints.join(',') },
        'Lost connection to etcd; serving the last known config, refusing writes',
      );
    });
    watcher.on('data', res => {
      if (this.watcher === watcher) this.onWatchData(res);
    });
    watcher.on('error', err => {
      settle?.(err);
      if (this.watcher !== watcher) return;
      this.onWatchCanceled(err);
    });
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        created,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                new StoreUnavailableError(
                  `etcd at ${this.endpoints.join(',')} did not accept the config watch within ${this.dialTimeoutMs} ms`,
                ),
              ),
            this.dialTimeoutMs,
          );
        }),
      ]);
    } catch (err) {
      await this.stopWatch();
      throw err;
    } finally {
      clearTimeout(timer);
      settle = undefined;
    }
  }

  private async stopWatch(): Promise<void> {
    const watcher = this.watcher;
    this.watcher = undefined;
    if (!watcher) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      watcher.cancel().catch((err: unknown) => {
        // The stream is going away anyway (client.close() follows); nothing to recover.
        this.log.debug({ err }, 'Config watch cancel failed');
      }),
      new Promise<void>(resolve => {
        timer = setTimeout(resolve, WATCH_CANCEL_TIMEOUT_MS);
      }),
    ]);
    clearTimeout(timer);
  }

  /**
   * Applies one watch response. A transaction's events share one mod_revision and etcd never
   * splits a revision across responses, so grouping by revision gives one listener call per batch.
   */
  private onWatchData(res: IWatchResponse): void {
    const loadedUpTo = this.revision;
    let group: ConfigEvent[] = [];
    let groupRevision = -1;
    const flush = () => {
      // Cache first, then the revision, then the listeners and waiters: whoever is told about a
      // revision can read it.
      if (groupRevision > this.revision) this.revision = groupRevision;
      this.listeners.emit(group);
      group = [];
    };
    for (const ev of res.events) {
      const rev = Number(ev.kv.mod_revision);
      if (rev <= loadedUpTo) continue; // already in the cache (loaded by the range read)
      if (rev !== groupRevision) {
        flush();
        groupRevision = rev;
      }
      const event = this.applyEvent(ev.type, ev.kv);
      if (event) group.push(event);
    }
    flush();
    this.checkWaiters();
  }

  private applyEvent(type: 'Put' | 'Delete', kv: IKeyValue): ConfigEvent | undefined {
    const fullKey = kv.key.toString('utf8');
    const key = fullKey.slice(this.prefix.length);
    if (type === 'Delete') {
      const old = this.cache.getByKey(key);
      if (!old) return undefined; // a key we never held (malformed, or outside our layout)
      this.cache.delete(key);
      return { type: 'deleted', object: old };
    }
    const parsed = this.parseKv(kv);
    if (typeof parsed === 'string') {
      // Keep the previous version: a bad value written behind pilot's back must not drop config.
      this.log.error({ [LogField.reason]: parsed }, 'Ignoring a malformed config value in etcd');
      return undefined;
    }
    const existed = this.cache.getByKey(parsed.key) !== undefined;
    this.cache.set(parsed.object);
    return { type: existed ? 'updated' : 'added', object: parsed.object };
  }

  /** The object in `kv`, or what is wrong with it (naming the key). */
  private parseKv(kv: IKeyValue): { key: string; object: ConfigObject } | string {
    const fullKey = kv.key.toString('utf8');
    const key = fullKey.slice(this.prefix.length);
    const bad = (what: string) =>
      `etcd key ${fullKey} does not hold a config object: ${what}; fix or delete it ` +
      `(etcdctl del ${fullKey})`;
    const parts = key.split('/');
    const [kind, namespace, name] = parts;
    if (parts.length !== 3 || !isKind(kind) || !namespace || !name) {
      return bad(`the key is not ${this.prefix}<Kind>/<namespace>/<name>`);
    }
    let value: unknown;
    try {
      value = JSON.parse(kv.value.toString('utf8'));
    } catch (err) {
      return bad(`not valid JSON (${getErrorMessage(err)})`);
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      return bad('not a JSON object');
    }
    const obj = value as ConfigObject;
    const meta = obj.metadata as Partial<ConfigObject['metadata']> | undefined;
    if (obj.kind !== kind || meta?.namespace !== namespace || meta.name !== name) {
      return bad(
        `it holds ${describeKey({ kind: obj.kind, namespace: meta?.namespace ?? '?', name: meta?.name ?? '?' })}`,
      );
    }
    if (typeof obj.apiVersion !== 'string') return bad('apiVersion is missing');
    if (typeof obj.spec !== 'object' || (obj.spec as unknown) === null)
      return bad('spec is missing');
    return {
      key: objectKey({ kind, namespace, name }),
      object: stampVersion(obj, kv.mod_revision),
    };
  }

  /** The watch was canceled by etcd (its start revision was compacted): reload everything. */
  private onWatchCanceled(err: Error): void {
    this.connected = false;
    this.watcher = undefined;
    this.log.warn({ err }, 'Config watch was canceled by etcd; reloading the config');
    this.resyncing ??= this.resyncLoop().finally(() => {
      this.resyncing = undefined;
    });
  }

  private async resyncLoop(): Promise<void> {
    const backoff = new Backoff({
      initialMs: RESYNC_INITIAL_BACKOFF_MS,
      maxMs: RESYNC_MAX_BACKOFF_MS,
    });
    const signal = this.abort.signal;
    while (!signal.aborted) {
      try {
        await this.sync(false);
        this.log.info({ revision: this.revision }, 'Reloaded the config from etcd');
        return;
      } catch (err) {
        this.log.warn({ err, [LogField.attempt]: backoff.attempts + 1 }, 'Config reload failed');
      }
      try {
        await this.clock.sleep(backoff.next(), signal);
      } catch (err) {
        if (isAbortError(err) || signal.aborted) return;
        throw err;
      }
    }
  }

  /**
   * Resolves true once `cond` holds (checked now and after each watch response), false after the
   * dial timeout or at close.
   */
  private waitUntil(cond: () => boolean): Promise<boolean> {
    if (cond()) return Promise.resolve(true);
    if (this.closeOnce.closed) return Promise.resolve(false);
    return new Promise(resolve => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter(w => w !== waiter);
        resolve(false);
      }, this.dialTimeoutMs);
      const waiter: Waiter = {
        cond,
        resolve: reached => {
          clearTimeout(timer);
          resolve(reached);
        },
      };
      this.waiters.push(waiter);
    });
  }

  /** Wakes the waiters whose condition holds now; at close, all of them. */
  private checkWaiters(closing = false): void {
    const keep: Waiter[] = [];
    for (const w of this.waiters) {
      const reached = w.cond();
      if (reached || closing) w.resolve(reached);
      else keep.push(w);
    }
    this.waiters = keep;
  }
}

async function readTls(tls: EtcdTlsOptions): Promise<NonNullable<IOptions['credentials']>> {
  const read = async (what: string, file: string) => {
    try {
      return await fs.promises.readFile(file);
    } catch (err) {
      throw new Error(`failed to read etcd TLS ${what} ${file}`, { cause: err });
    }
  };
  return {
    rootCertificate: await read('CA file', tls.ca),
    ...(tls.cert !== undefined ? { certChain: await read('certificate', tls.cert) } : {}),
    ...(tls.key !== undefined ? { privateKey: await read('key', tls.key) } : {}),
  };
}
