/** Helpers over validated objects: keys, names for messages, the stored form, and equality. */
import type { ConfigKey, ConfigObject, ObjectMeta } from './types';

/** The store key of an object. */
export function objectKey(obj: ConfigObject): ConfigKey {
  return { kind: obj.kind, namespace: obj.metadata.namespace, name: obj.metadata.name };
}

/** `kind/namespace/name`, a map key. */
export function keyString(key: ConfigKey): string {
  return `${key.kind}/${key.namespace}/${key.name}`;
}

/** `Kind namespace/name`, as messages name an object. */
export function describeObject(obj: ConfigObject | ConfigKey): string {
  const key = 'metadata' in obj ? objectKey(obj) : obj;
  return `${key.kind} ${key.namespace}/${key.name}`;
}

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** A deep copy without `undefined` values (which JSON and YAML cannot hold). */
function prune(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(prune);
  if (!isRecord(value)) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) if (v !== undefined) out[k] = prune(v);
  return out;
}

/**
 * The form an object is stored and printed in: a deep copy with the top-level fields in the
 * order apiVersion, kind, metadata, spec; metadata fields in a fixed order (name, namespace,
 * labels, annotations, resourceVersion, creationTimestamp, generation), empty label and
 * annotation maps dropped; no `undefined` anywhere. The apiVersion is kept as given, and the
 * spec's field order is the schema's (validated objects) or the input's.
 */
export function canonicalize<T extends ConfigObject>(obj: T): T {
  const m = obj.metadata;
  const metadata: ObjectMeta = { name: m.name, namespace: m.namespace };
  if (m.labels && Object.keys(m.labels).length > 0) metadata.labels = { ...m.labels };
  if (m.annotations && Object.keys(m.annotations).length > 0)
    metadata.annotations = { ...m.annotations };
  if (m.resourceVersion !== undefined) metadata.resourceVersion = m.resourceVersion;
  if (m.creationTimestamp !== undefined) metadata.creationTimestamp = m.creationTimestamp;
  if (m.generation !== undefined) metadata.generation = m.generation;
  return { apiVersion: obj.apiVersion, kind: obj.kind, metadata, spec: prune(obj.spec) } as T;
}

/** Deep equality of JSON values; object key order and `undefined` fields do not matter. */
export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    return a.every((v, i) => deepEqual(v, b[i]));
  }
  if (!isRecord(a) || !isRecord(b)) return false;
  const ka = Object.keys(a).filter(k => a[k] !== undefined);
  const kb = Object.keys(b).filter(k => b[k] !== undefined);
  if (ka.length !== kb.length) return false;
  return ka.every(k => Object.hasOwn(b, k) && deepEqual(a[k], b[k]));
}

const orEmpty = (m: Record<string, string> | undefined) => m ?? {};

/**
 * True when two objects have the same spec, labels and annotations (deep equality; absent and
 * empty label/annotation maps are the same). The store's "unchanged" test: apiVersion and
 * server-set metadata do not count.
 */
export function specEquals(a: ConfigObject, b: ConfigObject): boolean {
  return (
    deepEqual(a.spec, b.spec) &&
    deepEqual(orEmpty(a.metadata.labels), orEmpty(b.metadata.labels)) &&
    deepEqual(orEmpty(a.metadata.annotations), orEmpty(b.metadata.annotations))
  );
}
