/**
 * Validation, as `istioctl analyze` and Istio's webhook do it: each document's envelope
 * (apiVersion, kind, metadata), its spec against the kind's strict schema, the kind's semantic
 * rules (`checks.ts`), then rules across a whole set of objects (hosts claimed twice, subsets no
 * DestinationRule defines, the same object twice in one apply). Every problem found is reported,
 * each naming the source, document, object and field path.
 */
import type { z } from 'zod';
import { ConfigInvalidError, type ConfigProblem } from '../errors';
import { checkObject, isMeshBound, type Path } from './checks';
import { resolveKind } from './kinds';
import { checkLabelMap, DEFAULT_DOMAIN_SUFFIX, hostCovers, resolveHost } from './names';
import { describeObject, keyString, objectKey } from './objects';
import type { ParsedDocument, PathSegment } from './parse';
import { metadataSchema, SPEC_SCHEMAS, unknownFieldsMessage } from './schemas';
import type { ConfigObject, DestinationRuleSpec, Kind, ObjectMeta } from './types';

/** Options of {@link validateDocuments}. */
export interface ValidateOptions {
  /**
   * Objects already stored. The cross-document checks run over these plus the documents (a
   * document replaces the stored object with its kind, namespace and name), and report the
   * problems that involve at least one document.
   */
  readonly existing?: readonly ConfigObject[];
  /** DNS suffix for short hosts: `reviews` in `default` is `reviews.default.svc.SUFFIX`. Default `cluster.local`. */
  readonly domainSuffix?: string;
  /**
   * Run the cross-document rules (default true). `sail apply` turns them off for its local
   * check: the documents may refer to stored objects only pilot knows, and pilot runs them.
   */
  readonly crossDocument?: boolean;
}

/** Where an object came from, for messages about it. */
export interface ObjectOrigin {
  readonly source: string;
  readonly index?: number;
}

/** Options of {@link validateSet}. */
export interface ValidateSetOptions {
  /** Default `cluster.local`. */
  readonly domainSuffix?: string;
  /** Where each object came from; objects not in the map are reported with source `store`. */
  readonly origins?: ReadonlyMap<ConfigObject, ObjectOrigin>;
}

/** The source named for stored objects in problems. */
export const STORE_SOURCE = 'store';

const TOP_LEVEL_FIELDS = ['apiVersion', 'kind', 'metadata', 'spec', 'status'];

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** `spec.http[0].route[1].weight`; keys that are not identifiers are quoted: `headers["end-user"]`. */
export function formatPath(path: readonly PathSegment[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(seg)) out += out === '' ? seg : `.${seg}`;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}

function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string')
    return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  if (typeof v === 'number' || typeof v === 'boolean') return `${typeof v} ${String(v)}`;
  return typeof v;
}

const EXPECTED: Readonly<Record<string, string>> = {
  string: 'a string',
  number: 'a number',
  int: 'an integer',
  boolean: 'true or false',
  object: 'a mapping',
  record: 'a mapping',
  array: 'a list',
};

/** One zod issue as a message in Sail's words. */
function issueMessage(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case 'invalid_type': {
      if (issue.input === undefined) return 'required';
      const want = EXPECTED[issue.expected] ?? issue.expected;
      return `want ${want}, got ${describeValue(issue.input)}`;
    }
    case 'invalid_value':
      return `want one of ${issue.values.map(v => String(v)).join(', ')}, got ${describeValue(issue.input)}`;
    case 'too_small':
      return `want at least ${String(issue.minimum)}, got ${describeValue(issue.input)}`;
    case 'too_big':
      return `want at most ${String(issue.maximum)}, got ${describeValue(issue.input)}`;
    default:
      return issue.message;
  }
}

/** Collects problems for one document. */
class DocumentProblems {
  readonly problems: ConfigProblem[] = [];
  object: string | undefined;
  constructor(private readonly doc: ParsedDocument) {}

  add(path: Path, message: string): void {
    const line = this.doc.lineOf?.(path);
    const full = [...this.doc.basePath, ...path];
    this.problems.push({
      source: this.doc.source,
      index: this.doc.index,
      ...(this.object === undefined ? {} : { object: this.object }),
      ...(full.length === 0 ? {} : { path: formatPath(full) }),
      message: line === undefined ? message : `${message} (line ${line})`,
    });
  }

  addIssues(base: Path, issues: readonly z.core.$ZodIssue[]): void {
    for (const issue of issues)
      this.add(
        [...base, ...issue.path.map(p => (typeof p === 'symbol' ? String(p) : p))],
        issueMessage(issue),
      );
  }
}

interface Envelope {
  /** The typed object, once the envelope and the schema passed (even if semantic checks failed). */
  readonly object?: ConfigObject;
  readonly kindUnknown: boolean;
}

function validateDocument(doc: ParsedDocument, out: DocumentProblems): Envelope {
  const raw = doc.raw;
  if (!isRecord(raw)) {
    out.add(
      [],
      `want a mapping with apiVersion, kind, metadata and spec, got ${describeValue(raw)}`,
    );
    return { kindUnknown: false };
  }
  const meta = isRecord(raw.metadata) ? raw.metadata : {};
  const rawName = typeof meta.name === 'string' ? meta.name : undefined;
  const rawNs = typeof meta.namespace === 'string' ? meta.namespace : 'default';
  if (typeof raw.kind === 'string' && rawName !== undefined)
    out.object = `${raw.kind} ${rawNs}/${rawName}`;

  const unknown = Object.keys(raw).filter(k => !TOP_LEVEL_FIELDS.includes(k));
  if (unknown.length > 0) out.add([], unknownFieldsMessage(unknown, TOP_LEVEL_FIELDS));

  // apiVersion and kind decide everything else: without them nothing more can be checked.
  let kindProblem = false;
  for (const field of ['apiVersion', 'kind'] as const)
    if (typeof raw[field] !== 'string' || raw[field] === '') {
      out.add(
        [field],
        raw[field] === undefined ? 'required' : `want a string, got ${describeValue(raw[field])}`,
      );
      kindProblem = true;
    }
  if (kindProblem) return { kindUnknown: true };
  const apiVersion = raw.apiVersion as string;
  const resolved = resolveKind(apiVersion, raw.kind as string);
  if (resolved.kind === undefined) {
    out.add(['kind'], resolved.error);
    return { kindUnknown: true };
  }
  const kind: Kind = resolved.kind;

  const metaResult = metadataSchema.safeParse(raw.metadata, { reportInput: true });
  if (!metaResult.success) out.addIssues(['metadata'], metaResult.error.issues);
  // A missing spec is an empty one (`spec: {}` is common for AuthorizationPolicy allow-nothing).
  const rawSpec = raw.spec ?? {};
  const specResult = SPEC_SCHEMAS[kind].safeParse(rawSpec, { reportInput: true });
  let spec = specResult.data;
  let dropped: Path[] = [];
  if (!specResult.success) {
    out.addIssues(['spec'], specResult.error.issues);
    // So that one pass reports everything, check the rest of the spec without the fields the
    // schema rejected, when it is still a valid spec without them.
    const repaired = withoutRejectedFields(rawSpec, specResult.error.issues);
    if (repaired) {
      const again = SPEC_SCHEMAS[kind].safeParse(repaired.value);
      if (again.success) {
        spec = again.data;
        dropped = repaired.dropped.map(p => ['spec', ...p]);
      }
    }
  }
  if (!metaResult.success || spec === undefined) return { kindUnknown: false };

  const m = metaResult.data;
  const metadata: ObjectMeta = { name: m.name, namespace: m.namespace ?? 'default' };
  if (m.labels) metadata.labels = m.labels;
  if (m.annotations) metadata.annotations = m.annotations;
  // Kept for optimistic concurrency; creationTimestamp, generation, uid… are the server's.
  if (m.resourceVersion !== undefined) metadata.resourceVersion = m.resourceVersion;
  const object = { apiVersion, kind, metadata, spec } as ConfigObject;

  for (const { key, message } of checkLabelMap(metadata.labels ?? {}))
    out.add(['metadata', 'labels', key], message);
  checkObject(object, (path, message) => {
    // A rule about a dropped field (or inside it) would only repeat the schema's problem.
    if (!dropped.some(d => isPrefix(d, path) || isPrefix(path, d))) out.add(path, message);
  });
  // A repaired object is checked but not returned, nor used by the cross-document rules.
  return specResult.success ? { object, kindUnknown: false } : { kindUnknown: false };
}

function isPrefix(prefix: Path, path: Path): boolean {
  return prefix.length <= path.length && prefix.every((seg, i) => seg === path[i]);
}

/**
 * A copy of `value` without the fields the schema rejected: unknown fields and mapping fields
 * with bad values. Undefined when a rejected value is a list item or the whole spec (removing it
 * would shift or lose the paths of what follows).
 */
function withoutRejectedFields(
  value: unknown,
  issues: readonly z.core.$ZodIssue[],
): { value: unknown; dropped: Path[] } | undefined {
  const copy = structuredClone(value);
  const dropped: Path[] = [];
  const at = (path: readonly PropertyKey[]): unknown =>
    path.reduce<unknown>(
      (v, seg) =>
        isRecord(v) || Array.isArray(v) ? (v as Record<PropertyKey, unknown>)[seg] : undefined,
      copy,
    );
  for (const issue of issues) {
    const path = issue.path;
    if (issue.code === 'unrecognized_keys') {
      const obj = at(path);
      if (!isRecord(obj)) return undefined;
      for (const key of issue.keys) {
        Reflect.deleteProperty(obj, key);
        dropped.push([...path.map(p => p as PathSegment), key]);
      }
      // A misspelt field (`rout`) leaves the field meant (`route`) missing: rules about that one
      // would only repeat the schema's "did you mean" (its message, from unknownFieldsMessage).
      for (const [, meant] of issue.message.matchAll(/did you mean "([^"]+)"/g))
        if (meant !== undefined) dropped.push([...path.map(p => p as PathSegment), meant]);
      continue;
    }
    const last = path[path.length - 1];
    const parent = at(path.slice(0, -1));
    if (typeof last !== 'string' || !isRecord(parent) || issue.input === undefined)
      return undefined;
    Reflect.deleteProperty(parent, last);
    dropped.push(path.map(p => p as PathSegment));
  }
  return { value: copy, dropped };
}

/**
 * Validates parsed documents: every envelope, spec and semantic rule, then (once every document
 * passes its schema) the cross-document rules over the documents plus `options.existing`.
 * @returns the objects, in document order, with `metadata` reduced to name, namespace (default
 *   `default`), labels, annotations and resourceVersion
 * @throws ConfigInvalidError listing every problem in every document: code PILOT_KIND_UNKNOWN
 *   when every failing document failed on its apiVersion/kind, else PILOT_CONFIG_INVALID
 */
export function validateDocuments(
  docs: readonly ParsedDocument[],
  options: ValidateOptions = {},
): ConfigObject[] {
  const problems: ConfigProblem[] = [];
  let onlyKindProblems = true;
  const objects: ConfigObject[] = [];
  const origins = new Map<ConfigObject, ObjectOrigin & { doc: ParsedDocument }>();
  const firstByKey = new Map<string, ParsedDocument>();

  // Every document typed: the cross-document rules can trust that nothing is missing.
  let allTyped = true;

  for (const doc of docs) {
    const out = new DocumentProblems(doc);
    const { object, kindUnknown } = validateDocument(doc, out);
    if (out.problems.length > 0 && !kindUnknown) onlyKindProblems = false;
    problems.push(...out.problems);
    if (!object) {
      allTyped = false;
      continue;
    }
    const key = keyString(objectKey(object));
    const first = firstByKey.get(key);
    if (first) {
      const dup = new DocumentProblems(doc);
      dup.object = describeObject(object);
      dup.add(
        ['metadata', 'name'],
        `${describeObject(object)} is defined twice: also at ${describeDoc(first)}`,
      );
      problems.push(...dup.problems);
      onlyKindProblems = false;
      continue;
    }
    firstByKey.set(key, doc);
    objects.push(object);
    origins.set(object, { source: doc.source, index: doc.index, doc });
  }

  // Cross-document rules need every document: with one missing, a reference to it would be
  // reported as dangling. They run once every document passes its schema (semantic problems in
  // a document do not hide its hosts or subsets).
  const applied = new Set(objects);
  const replaced = new Set(objects.map(o => keyString(objectKey(o))));
  const existing = (options.existing ?? []).filter(o => !replaced.has(keyString(objectKey(o))));
  const findings =
    allTyped && options.crossDocument !== false
      ? findSetProblems([...existing, ...objects], options.domainSuffix, origins)
      : [];
  // A field already reported by its document's own checks is not reported again.
  const reported = new Set(problems.map(p => `${p.source}#${String(p.index)}|${p.path ?? ''}`));
  for (const f of findings) {
    if (!f.involved.some(o => applied.has(o))) continue; // a stored conflict this apply did not cause
    const origin = origins.get(f.subject);
    const line = origin?.doc.lineOf?.(f.path);
    const problem = toProblem(f, origins, line, origin?.doc.basePath ?? []);
    if (reported.has(`${problem.source}#${String(problem.index)}|${problem.path ?? ''}`)) continue;
    problems.push(problem);
    onlyKindProblems = false;
  }

  if (problems.length > 0)
    throw new ConfigInvalidError(
      problems,
      onlyKindProblems ? 'PILOT_KIND_UNKNOWN' : 'PILOT_CONFIG_INVALID',
    );
  return objects;
}

function describeDoc(doc: ParsedDocument): string {
  const where = `${doc.source}#${doc.index}`;
  return doc.basePath.length ? `${where} ${formatPath(doc.basePath)}` : where;
}

function describeAt(obj: ConfigObject, origins: ReadonlyMap<ConfigObject, ObjectOrigin>): string {
  const o = origins.get(obj);
  const where = o ? (o.index === undefined ? o.source : `${o.source}#${o.index}`) : STORE_SOURCE;
  return `${describeObject(obj)} (${where})`;
}

/** A problem of a set of objects: reported on `subject`, caused by all of `involved`. */
interface SetFinding {
  readonly subject: ConfigObject;
  readonly involved: readonly ConfigObject[];
  readonly path: Path;
  readonly message: string;
}

function toProblem(
  f: SetFinding,
  origins: ReadonlyMap<ConfigObject, ObjectOrigin>,
  line?: number,
  basePath: readonly PathSegment[] = [],
): ConfigProblem {
  const origin = origins.get(f.subject);
  return {
    source: origin?.source ?? STORE_SOURCE,
    ...(origin?.index === undefined ? {} : { index: origin.index }),
    object: describeObject(f.subject),
    path: formatPath([...basePath, ...f.path]),
    message: line === undefined ? f.message : `${f.message} (line ${line})`,
  };
}

/**
 * The rules that span objects, over a whole set (what is being applied plus what is stored):
 * - a host is claimed once: not by two ServiceEntries in one namespace, nor by two
 *   VirtualServices bound to the mesh (no gateways, or `mesh`) in one namespace;
 * - a destination's `subset` (VirtualService routes and mirrors) is defined by a
 *   DestinationRule for that host visible from the VirtualService's namespace.
 * Hosts are compared after {@link resolveHost}.
 * @returns the problems, each on the later of two conflicting objects; empty when the set is consistent
 */
export function validateSet(
  objects: readonly ConfigObject[],
  options: ValidateSetOptions = {},
): ConfigProblem[] {
  const origins = options.origins ?? new Map<ConfigObject, ObjectOrigin>();
  return findSetProblems(objects, options.domainSuffix, origins).map(f => toProblem(f, origins));
}

function findSetProblems(
  objects: readonly ConfigObject[],
  domainSuffix: string = DEFAULT_DOMAIN_SUFFIX,
  origins: ReadonlyMap<ConfigObject, ObjectOrigin>,
): SetFinding[] {
  const findings: SetFinding[] = [];
  const resolve = (host: string, ns: string) => resolveHost(host, ns, domainSuffix).toLowerCase();

  // Host claims, per namespace.
  const claims = new Map<string, { obj: ConfigObject; index: number }>();
  for (const obj of objects) {
    if (obj.kind !== 'ServiceEntry' && obj.kind !== 'VirtualService') continue;
    let hosts: readonly string[];
    if (obj.kind === 'ServiceEntry') hosts = (obj as ConfigObject<'ServiceEntry'>).spec.hosts;
    else {
      const spec = (obj as ConfigObject<'VirtualService'>).spec;
      if (!isMeshBound(spec)) continue; // gateways merge VirtualServices per host
      hosts = spec.hosts ?? [];
    }
    const ns = obj.metadata.namespace;
    const seen = new Set<string>();
    for (const [i, host] of hosts.entries()) {
      const resolved = resolve(host, ns);
      if (seen.has(resolved)) continue;
      seen.add(resolved);
      const key = `${obj.kind}\0${ns}\0${resolved}`;
      const first = claims.get(key);
      if (!first) {
        claims.set(key, { obj, index: i });
        continue;
      }
      const why =
        obj.kind === 'ServiceEntry'
          ? 'two ServiceEntries in one namespace cannot define the same host'
          : 'sidecars use only one VirtualService per host: merge the routes into one, or bind one to gateways';
      findings.push({
        subject: obj,
        involved: [first.obj, obj],
        path: ['spec', 'hosts', i],
        message: `host ${resolved} is already claimed by ${describeAt(first.obj, origins)}: ${why}`,
      });
    }
  }

  // Subsets referenced by VirtualServices.
  const rules = objects.filter(
    (o): o is ConfigObject<'DestinationRule'> => o.kind === 'DestinationRule',
  );
  const ruleHosts = rules.map(r => resolve(r.spec.host, r.metadata.namespace));
  const rulesFor = (host: string, fromNs: string) => {
    const visible = rules
      .map((r, i) => ({ r, host: ruleHosts[i] as string }))
      .filter(
        ({ r, host: rh }) =>
          hostCovers(rh, host) && isVisible(r.spec, r.metadata.namespace, fromNs),
      );
    // The most specific rule wins in Istio: exact hosts before wildcards.
    const exact = visible.filter(v => v.host === host);
    return (exact.length > 0 ? exact : visible).map(v => v.r);
  };
  for (const obj of objects) {
    if (obj.kind !== 'VirtualService') continue;
    const vs = obj as ConfigObject<'VirtualService'>;
    const ns = vs.metadata.namespace;
    const refs: { path: Path; host: string; subset: string }[] = [];
    const add = (path: Path, d: { host: string; subset?: string } | undefined) => {
      if (d?.subset !== undefined) refs.push({ path, host: d.host, subset: d.subset });
    };
    for (const [i, http] of (vs.spec.http ?? []).entries()) {
      for (const [j, rd] of (http.route ?? []).entries())
        add(['spec', 'http', i, 'route', j, 'destination', 'subset'], rd.destination);
      add(['spec', 'http', i, 'mirror', 'subset'], http.mirror);
    }
    for (const proto of ['tcp', 'tls'] as const)
      for (const [i, route] of (vs.spec[proto] ?? []).entries())
        for (const [j, rd] of (route.route ?? []).entries())
          add(['spec', proto, i, 'route', j, 'destination', 'subset'], rd.destination);

    for (const ref of refs) {
      const host = resolve(ref.host, ns);
      const candidates = rulesFor(host, ns);
      if (candidates.some(r => r.spec.subsets?.some(s => s.name === ref.subset))) continue;
      const defined = candidates.map(
        r =>
          `${describeAt(r, origins)} defines ${r.spec.subsets?.length ? r.spec.subsets.map(s => s.name).join(', ') : 'no subsets'}`,
      );
      findings.push({
        subject: vs,
        involved: [vs, ...candidates],
        path: ref.path,
        message: `subset ${JSON.stringify(ref.subset)} is not defined by any DestinationRule for host ${host} (${defined.length ? defined.join('; ') : 'no DestinationRule for that host'})`,
      });
    }
  }
  return findings;
}

/** Whether a DestinationRule in `ns` is visible from `fromNs` (its exportTo; default everywhere). */
function isVisible(spec: DestinationRuleSpec, ns: string, fromNs: string): boolean {
  const exportTo = spec.exportTo;
  if (!exportTo?.length) return true;
  return exportTo.some(e => e === '*' || (e === '.' ? ns === fromNs : e === fromNs));
}
