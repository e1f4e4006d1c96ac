/**
 * The embedded config store (the default, for one pilot): every object in memory, persisted as one
 * snapshot file, `DATA_DIR/config/store.json`.
 *
 * Why one snapshot file rather than a file per object: a batch must be all-or-nothing even if the
 * process dies in the middle of it. With a file per object that needs a write-ahead log and a
 * recovery step; with one snapshot, a batch is one `writeFileAtomic` (temporary file, fsync,
 * rename) followed by an fsync of the directory, so after a crash the file holds either the whole
 * old state or the whole new one, never half a batch. The price is rewriting every object on each
 * write, which is cheap at mesh-config sizes (thousands of objects, a few MB) and is paid only by
 * writes, never by reads (served from memory). The file keeps one object per line so it stays
 * readable and diffable.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type Clock, systemClock } from '../../common/clock';
import { ClosedError, AlreadyStartedError } from '../../common/errors';
import { writeFileAtomic } from '../../common/fs';
import { CloseOnce } from '../../common/lifecycle';
import { type Logger, LogField } from '../../common/logging';
import type { ConfigKey, ConfigObject } from '../config/types';
import { pilotNotReady } from '../errors';
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

/** The snapshot's `format` field; a future layout gets a new one. */
export const FILE_STORE_FORMAT = 'sail-config-store/v1';
/** The snapshot file, relative to the data directory. */
export const FILE_STORE_PATH = path.join('config', 'store.json');

export interface FileStoreOptions {
  /** Pilot's data directory; the store keeps `config/store.json` in it (created 0700). */
  readonly dataDir: string;
  readonly logger: Logger;
  /** Source of creationTimestamp; the system clock by default. */
  readonly clock?: Clock;
}

/** The snapshot file's content. */
interface Snapshot {
  readonly format: string;
  /** The last committed revision; every batch that changes something adds one. */
  readonly revision: number;
  /** Every object, with its metadata.resourceVersion, in list order. */
  readonly objects: readonly ConfigObject[];
}

/**
 * The file-backed {@link ConfigStore}. Writes are serialized; each one is on disk before it is
 * visible in memory, and visible before its events are delivered and `write()` resolves.
 * resourceVersion is a store-wide revision number that only grows, across restarts too.
 * Returned objects are frozen (they are the store's own copies): copy before changing one.
 */
export class FileStore implements ConfigStore {
  readonly type = 'file';
  /** The snapshot file's absolute path. */
  readonly file: string;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly cache = new ConfigCache();
  private readonly listeners: Listeners;
  private readonly closeOnce = new CloseOnce();
  /** The revision of the last committed batch (0: nothing ever written). */
  private revision = 0;
  private started = false;
  private loaded = false;
  /** The tail of the write queue: writes run one at a time, in call order. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(opts: FileStoreOptions) {
    this.file = path.resolve(opts.dataDir, FILE_STORE_PATH);
    this.log = opts.logger.child({ component: 'pilot', subsystem: 'config-store' });
    this.clock = opts.clock ?? systemClock;
    this.listeners = new Listeners(this.log);
  }

  get ready(): boolean {
    return this.loaded && !this.closeOnce.closed;
  }

  /**
   * Loads the snapshot (a missing file is an empty store) and removes temporary files a crash
   * left behind.
   * @throws Error naming the file when it cannot be read or is not a valid snapshot: the store
   *   never starts empty over a config it could not read
   */
  async start(): Promise<void> {
    if (this.started) throw new AlreadyStartedError('config store');
    this.started = true;
    const dir = path.dirname(this.file);
    await fs.promises.mkdir(dir, { recursive: true, mode: 0o700 });
    await this.removeStaleTempFiles(dir);
    let text: string | undefined;
    try {
      text = await fs.promises.readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new Error(`failed to read config store file ${this.file}`, { cause: err });
      }
    }
    if (text !== undefined) {
      const snapshot = parseSnapshot(this.file, text);
      for (const obj of snapshot.objects) this.cache.set(obj);
      this.revision = snapshot.revision;
    }
    this.loaded = true;
    this.log.info(
      { [LogField.path]: this.file, objects: this.cache.size, revision: this.revision },
      'Loaded config store',
    );
  }

  /** Waits for queued writes, then refuses new ones. Idempotent. */
  close(): Promise<void> {
    return this.closeOnce.run(async () => {
      await this.queue.catch(() => undefined);
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
   * Applies `batch` atomically (see {@link ConfigStore.write}); writes run one after another.
   * @throws ConfigConflictError, ConfigNotFoundError, ConfigInvalidError (nothing applied)
   * @throws NotReadyError (PILOT_NOT_READY) before start(); ClosedError after close()
   * @throws Error naming the file when the snapshot cannot be written (nothing applied)
   */
  write(batch: WriteBatch): Promise<WriteResult> {
    if (this.closeOnce.closed) return Promise.reject(new ClosedError('config store'));
    if (!this.loaded) return Promise.reject(pilotNotReady('config store is not loaded yet'));
    const run = this.queue.then(() => this.writeNow(batch));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async writeNow(batch: WriteBatch): Promise<WriteResult> {
    const plan = planWrite(batch, k => this.cache.getByKey(k), new Date(this.clock.now()));
    if (plan.empty) return commitResult(plan, p => p.object).result;

    const revision = this.revision + 1;
    const rv = String(revision);
    const stored = new Map(plan.changedPuts.map(p => [p.key, stampVersion(p.object, rv)]));
    const { result, events } = commitResult(plan, p => stored.get(p.key) as ConfigObject);

    // The next state, written to disk before memory changes: a failed write leaves both as they were.
    const next = new Map(
      this.cache.list().map(o => [objectKey({ kind: o.kind, ...o.metadata }), o]),
    );
    for (const [key, obj] of stored) next.set(key, obj);
    for (const d of plan.deletes) next.delete(d.key);
    const nextCache = new ConfigCache();
    for (const obj of next.values()) nextCache.set(obj);
    await this.persist({ format: FILE_STORE_FORMAT, revision, objects: nextCache.list() });

    for (const obj of stored.values()) this.cache.set(obj);
    for (const d of plan.deletes) this.cache.delete(d.key);
    this.revision = revision;
    this.log.debug({ revision, changes: events.length }, 'Committed config write');
    this.listeners.emit(events);
    return result;
  }

  private async persist(snapshot: Snapshot): Promise<void> {
    // One object per line: readable, diffable, and still one JSON document.
    const lines = snapshot.objects.map(o => JSON.stringify(o)).join(',\n');
    const text =
      `{"format":${JSON.stringify(snapshot.format)},"revision":${snapshot.revision},"objects":[\n` +
      (lines === '' ? '' : `${lines}\n`) +
      ']}\n';
    try {
      await writeFileAtomic(this.file, text, 0o600);
      // The rename is durable only once the directory entry is: without this a power cut could
      // bring back the previous snapshot after write() reported success.
      const dir = await fs.promises.open(path.dirname(this.file), 'r');
      try {
        await dir.sync();
      } finally {
        await dir.close();
      }
    } catch (err) {
      throw new Error(`failed to write config store file ${this.file}; nothing was applied`, {
        cause: err,
      });
    }
  }

  /** writeFileAtomic's temporary files (`.store.json.<random>.tmp`) from a crash mid-write. */
  private async removeStaleTempFiles(dir: string): Promise<void> {
    const base = path.basename(this.file);
    for (const entry of await fs.promises.readdir(dir)) {
      if (entry.startsWith(`.${base}.`) && entry.endsWith('.tmp')) {
        await fs.promises.rm(path.join(dir, entry), { force: true });
        this.log.info(
          { [LogField.path]: path.join(dir, entry) },
          'Removed unfinished config write',
        );
      }
    }
  }
}

/**
 * Parses and checks a snapshot file's text.
 * @throws Error naming `file` and the first problem (and what the operator can do about it)
 */
export function parseSnapshot(file: string, text: string): Snapshot {
  const corrupt = (what: string, cause?: unknown) =>
    new Error(
      `config store file ${file} is corrupt: ${what}; restore it from a backup, or move it aside ` +
        'to start with an empty config store',
      cause === undefined ? undefined : { cause },
    );
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw corrupt(`not valid JSON (${(err as Error).message})`, err);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw corrupt('not a JSON object');
  }
  const snap = raw as Record<string, unknown>;
  if (snap.format !== FILE_STORE_FORMAT) {
    throw corrupt(
      `format is ${JSON.stringify(snap.format)}, expected ${JSON.stringify(FILE_STORE_FORMAT)}`,
    );
  }
  const revision = snap.revision;
  if (typeof revision !== 'number' || !Number.isSafeInteger(revision) || revision < 0) {
    throw corrupt(`revision ${JSON.stringify(revision)} is not a non-negative integer`);
  }
  if (!Array.isArray(snap.objects)) throw corrupt('objects is not a list');
  const seen = new Set<string>();
  const objects = (snap.objects as unknown[]).map((o, i) => {
    const problem = checkStoredObject(o, revision);
    if (problem) throw corrupt(`objects[${i}]: ${problem}`);
    const obj = o as ConfigObject;
    const key = objectKey({ kind: obj.kind, ...obj.metadata });
    if (seen.has(key))
      throw corrupt(
        `objects[${i}]: ${describeKey({ kind: obj.kind, ...obj.metadata })} appears twice`,
      );
    seen.add(key);
    return stampVersion(obj, obj.metadata.resourceVersion);
  });
  return { format: FILE_STORE_FORMAT, revision, objects };
}

/** What is wrong with one stored object, or undefined. */
function checkStoredObject(o: unknown, revision: number): string | undefined {
  if (typeof o !== 'object' || o === null || Array.isArray(o)) return 'not a JSON object';
  const obj = o as Record<string, unknown>;
  if (!isKind(obj.kind)) return `kind ${JSON.stringify(obj.kind)} is not a known kind`;
  if (typeof obj.apiVersion !== 'string') return 'apiVersion is missing';
  const meta = obj.metadata as Record<string, unknown> | undefined;
  if (typeof meta !== 'object' || meta === null) return 'metadata is missing';
  for (const f of ['name', 'namespace']) {
    const v = meta[f];
    if (typeof v !== 'string' || v === '' || v.includes('/')) {
      return `metadata.${f} ${JSON.stringify(v)} is not a valid name`;
    }
  }
  const rv = meta.resourceVersion;
  if (typeof rv !== 'string' || !/^[1-9][0-9]*$/.test(rv) || Number(rv) > revision) {
    return `metadata.resourceVersion ${JSON.stringify(rv)} is not a revision between 1 and ${revision}`;
  }
  if (typeof obj.spec !== 'object' || obj.spec === null) return 'spec is missing';
  return undefined;
}
