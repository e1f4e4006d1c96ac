/**
 * What a write batch does, decided against the current objects before anything is stored: the
 * checks (conflict, not found, duplicates), the outcome of every put and the metadata the store
 * sets. Both stores use it, so they agree on every rule; only how they commit differs.
 */
import {
  KINDS,
  type ConfigKey,
  type ConfigObject,
  type Kind,
  type ObjectMeta,
} from '../config/types';
import {
  type ConfigProblem,
  ConfigConflictError,
  ConfigInvalidError,
  ConfigNotFoundError,
} from '../errors';
import type { ConfigEvent, WriteBatch, WriteResult } from './store';

/** The map key of an object: `Kind/namespace/name` (also its etcd key under the prefix). */
export function objectKey(k: ConfigKey): string {
  return `${k.kind}/${k.namespace}/${k.name}`;
}

/** `Kind namespace/name`, the way error messages and logs name an object. */
export function describeKey(k: ConfigKey): string {
  return `${k.kind} ${k.namespace}/${k.name}`;
}

const KIND_ORDER = new Map<string, number>(KINDS.map((k, i) => [k, i]));

/** True for the kinds the store holds. */
export function isKind(kind: unknown): kind is Kind {
  return typeof kind === 'string' && KIND_ORDER.has(kind);
}

/** The store's list order: kind (KINDS order), then namespace, then name. */
export function compareObjects(a: ConfigObject, b: ConfigObject): number {
  const byKind = (KIND_ORDER.get(a.kind) ?? 0) - (KIND_ORDER.get(b.kind) ?? 0);
  if (byKind !== 0) return byKind;
  if (a.metadata.namespace !== b.metadata.namespace) {
    return a.metadata.namespace < b.metadata.namespace ? -1 : 1;
  }
  if (a.metadata.name !== b.metadata.name) return a.metadata.name < b.metadata.name ? -1 : 1;
  return 0;
}

/**
 * Deep equality of JSON values: key order does not matter, array order does, and a property whose
 * value is `undefined` counts as absent (it would not survive JSON either).
 */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((v, i) => jsonEqual(v, b[i]));
  }
  const ao = a as Record<string, unknown>;
  const bo = b as Record<string, unknown>;
  const aKeys = Object.keys(ao).filter(k => ao[k] !== undefined);
  const bKeys = Object.keys(bo).filter(k => bo[k] !== undefined);
  return aKeys.length === bKeys.length && aKeys.every(k => k in bo && jsonEqual(ao[k], bo[k]));
}

/** Labels or annotations; absent and empty are the same thing. */
function mapEqual(a: Record<string, string> | undefined, b: Record<string, string> | undefined) {
  return jsonEqual(a ?? {}, b ?? {});
}

/** Freezes a value and everything in it: stored objects are shared by every reader. */
export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/**
 * The object as stored with resourceVersion `rv`: metadata in a fixed field order, everything
 * frozen. `rv` undefined leaves resourceVersion out (the etcd value, whose version is etcd's).
 */
export function stampVersion(obj: ConfigObject, rv: string | undefined): ConfigObject {
  const m = obj.metadata;
  const metadata: ObjectMeta = { name: m.name, namespace: m.namespace };
  if (m.labels !== undefined) metadata.labels = m.labels;
  if (m.annotations !== undefined) metadata.annotations = m.annotations;
  if (rv !== undefined) metadata.resourceVersion = rv;
  if (m.creationTimestamp !== undefined) metadata.creationTimestamp = m.creationTimestamp;
  if (m.generation !== undefined) metadata.generation = m.generation;
  return deepFreeze({ apiVersion: obj.apiVersion, kind: obj.kind, metadata, spec: obj.spec });
}

/** One put of a planned batch. */
export interface PlannedPut {
  /** {@link objectKey} of the object. */
  readonly key: string;
  /** The stored object before this write, if any. */
  readonly existing: ConfigObject | undefined;
  readonly outcome: 'created' | 'configured' | 'unchanged';
  /**
   * What to store, without resourceVersion (the store adds it at commit); for `unchanged`, the
   * stored object itself.
   */
  readonly object: ConfigObject;
}

/** One delete of a planned batch. */
export interface PlannedDelete {
  readonly key: string;
  /** The stored object this delete removes. */
  readonly existing: ConfigObject;
}

/** A batch checked against the current objects, ready to commit. */
export interface WritePlan {
  readonly puts: readonly PlannedPut[];
  readonly deletes: readonly PlannedDelete[];
  /** Puts that store something (not `unchanged`). */
  readonly changedPuts: readonly PlannedPut[];
  /** True when the batch changes nothing: no commit, no new revision, no event. */
  readonly empty: boolean;
}

const NAME_FIELDS = ['name', 'namespace'] as const;

/** Checks the parts of an object the store itself relies on: its kind and its key. */
function checkShape(obj: ConfigObject, index: number): ConfigProblem | undefined {
  const where = { source: 'request', index };
  if (typeof obj !== 'object' || obj === null) {
    return { ...where, message: 'a stored object must be a JSON object' };
  }
  if (!isKind(obj.kind)) {
    return { ...where, path: 'kind', message: `unknown kind ${JSON.stringify(obj.kind)}` };
  }
  if (typeof obj.metadata !== 'object' || obj.metadata === null) {
    return { ...where, path: 'metadata', message: 'metadata is required' };
  }
  for (const field of NAME_FIELDS) {
    const v: unknown = obj.metadata[field];
    // A slash would make two different objects share a key (`a/b` + `c` vs `a` + `b/c`).
    if (typeof v !== 'string' || v === '' || v.includes('/')) {
      return {
        ...where,
        path: `metadata.${field}`,
        message: `must be a non-empty string without "/", got ${JSON.stringify(v)}`,
      };
    }
  }
  return undefined;
}

/**
 * Checks `batch` against the stored objects (`lookup` by {@link objectKey}) and works out what it
 * stores. Nothing is changed here.
 *
 * @throws ConfigInvalidError when an object has no usable kind/name/namespace, or one object
 *   appears twice in the batch
 * @throws ConfigConflictError when a put names a resourceVersion that is not the stored one
 * @throws ConfigNotFoundError when a delete names an object that does not exist
 */
export function planWrite(
  batch: WriteBatch,
  lookup: (key: string) => ConfigObject | undefined,
  now: Date,
): WritePlan {
  const seen = new Set<string>();
  const problems: ConfigProblem[] = [];
  const puts: PlannedPut[] = [];
  const putsIn = batch.put ?? [];
  const deletesIn = batch.delete ?? [];

  putsIn.forEach((raw, index) => {
    const shapeProblem = checkShape(raw, index);
    if (shapeProblem) {
      problems.push(shapeProblem);
      return;
    }
    const key = objectKey({ kind: raw.kind, ...raw.metadata });
    if (seen.has(key)) {
      problems.push({
        source: 'request',
        index,
        object: describeKey({ kind: raw.kind, ...raw.metadata }),
        message: 'appears more than once in one write',
      });
      return;
    }
    seen.add(key);
  });
  deletesIn.forEach((k, i) => {
    const key = objectKey(k);
    if (seen.has(key)) {
      problems.push({
        source: 'request',
        index: putsIn.length + i,
        object: describeKey(k),
        message: 'is both written and deleted (or deleted twice) in one write',
      });
    }
    seen.add(key);
  });
  if (problems.length > 0) throw new ConfigInvalidError(problems);

  for (const raw of putsIn) {
    // A JSON copy: the caller may change its object later, and the store keeps what JSON keeps.
    const obj = JSON.parse(JSON.stringify(raw)) as ConfigObject;
    const key = objectKey({ kind: obj.kind, ...obj.metadata });
    const existing = lookup(key);
    const wantVersion = obj.metadata.resourceVersion;
    if (wantVersion !== undefined && wantVersion !== existing?.metadata.resourceVersion) {
      const name = describeKey({ kind: obj.kind, ...obj.metadata });
      throw new ConfigConflictError(
        existing === undefined
          ? `${name}: the write names resourceVersion ${wantVersion} but the object does not exist (deleted since it was read); nothing in this write was applied`
          : `${name}: the write names resourceVersion ${wantVersion} but the stored one is ${existing.metadata.resourceVersion ?? '(none)'} (changed since it was read); get it again and reapply; nothing in this write was applied`,
      );
    }
    if (existing === undefined) {
      puts.push({
        key,
        existing,
        outcome: 'created',
        object: stampVersion(
          {
            ...obj,
            metadata: {
              ...obj.metadata,
              creationTimestamp: now.toISOString(),
              generation: 1,
            },
          },
          undefined,
        ),
      });
      continue;
    }
    const specSame = jsonEqual(obj.spec, existing.spec);
    if (
      specSame &&
      mapEqual(obj.metadata.labels, existing.metadata.labels) &&
      mapEqual(obj.metadata.annotations, existing.metadata.annotations)
    ) {
      puts.push({ key, existing, outcome: 'unchanged', object: existing });
      continue;
    }
    const generation = existing.metadata.generation ?? 1;
    puts.push({
      key,
      existing,
      outcome: 'configured',
      object: stampVersion(
        {
          ...obj,
          metadata: {
            ...obj.metadata,
            creationTimestamp: existing.metadata.creationTimestamp ?? now.toISOString(),
            generation: specSame ? generation : generation + 1,
          },
        },
        undefined,
      ),
    });
  }

  const deletes: PlannedDelete[] = [];
  for (const k of deletesIn) {
    const key = objectKey(k);
    const existing = lookup(key);
    if (existing === undefined) {
      throw new ConfigNotFoundError(
        `${describeKey(k)} does not exist, so it cannot be deleted; nothing in this write was applied`,
      );
    }
    deletes.push({ key, existing });
  }

  const changedPuts = puts.filter(p => p.outcome !== 'unchanged');
  return { puts, deletes, changedPuts, empty: changedPuts.length === 0 && deletes.length === 0 };
}

/**
 * The result and the events of a committed plan, given each changed object as stored
 * (`stored(put)`, with its new resourceVersion). Events: changed puts in put order, then deletes.
 */
export function commitResult(
  plan: WritePlan,
  stored: (put: PlannedPut) => ConfigObject,
): { result: WriteResult; events: ConfigEvent[] } {
  const events: ConfigEvent[] = [];
  const put = plan.puts.map(p => {
    if (p.outcome === 'unchanged') return p.object;
    const obj = stored(p);
    events.push({ type: p.outcome === 'created' ? 'added' : 'updated', object: obj });
    return obj;
  });
  const deleted = plan.deletes.map(d => d.existing);
  for (const obj of deleted) events.push({ type: 'deleted', object: obj });
  return { result: { put, putOutcome: plan.puts.map(p => p.outcome), deleted }, events };
}
