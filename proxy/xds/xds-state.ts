/**
 * The client's resource state, without I/O: the ACKed resources of each kind, compiled, and the
 * ProxyConfig built from them. Applying a response is all-or-nothing (a response with one bad
 * resource is NACKed whole and changes nothing), and costs in proportion to what changed:
 * resources whose bytes did not change are neither converted to JSON nor compiled again.
 */
import { getErrorMessage } from '../../common/errors';
import { CompileError } from '../config/compile';
import type { ProxyConfig, XdsKind } from '../model';
import {
  type CompiledResources,
  compileResource,
  decodeResource,
  isWildcardKind,
  type WireAny,
  XDS_KINDS,
} from './resources';
import type { RawResource, RawResources } from './types';

interface Entry<T> {
  readonly raw: RawResource;
  readonly compiled: T;
  /** The wire encoding; undefined for entries restored from the state file. */
  readonly bytes?: Uint8Array;
}

interface KindTable<T> {
  /** `version_info` of the last ACKed response ('' before the first). */
  version: string;
  entries: ReadonlyMap<string, Entry<T>>;
  /** Views of `entries`, rebuilt only when the kind changes (shared by updates otherwise). */
  compiled: ReadonlyMap<string, T>;
  raw: ReadonlyMap<string, RawResource>;
}

type AnyCompiled = CompiledResources[XdsKind];

type Tables = { [K in XdsKind]: KindTable<CompiledResources[K]> };

/** The outcome of {@link XdsState.apply}. */
export type ApplyResult =
  | {
      readonly ok: true;
      /** Kinds whose resources changed (a cluster change may prune endpoints, a listener change routes). */
      readonly changed: ReadonlySet<XdsKind>;
      /** Names in the response that are not subscribed (EDS/RDS): ignored. */
      readonly ignored: readonly string[];
      /** Resources the response carried that are now in force. */
      readonly applied: number;
    }
  | {
      readonly ok: false;
      /** One line per failing resource, naming it. */
      readonly errors: readonly string[];
    };

/** One resource in the state file. */
export interface SnapshotResource {
  readonly name: string;
  readonly version: string;
  /** ISO 8601. */
  readonly lastUpdated: string;
  readonly resource: Record<string, unknown>;
}

/** The state file's content: the last ACKed resources of every kind with their versions. */
export interface StateSnapshot {
  readonly format: 1;
  readonly nodeId: string;
  /** ISO 8601. */
  readonly savedAt: string;
  readonly versions: Readonly<Record<XdsKind, string>>;
  readonly resources: Readonly<Record<XdsKind, readonly SnapshotResource[]>>;
}

const EMPTY_NAMES: ReadonlySet<string> = new Set();

function emptyTable<T>(): KindTable<T> {
  return { version: '', entries: new Map(), compiled: new Map(), raw: new Map() };
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

/** EDS names the clusters need: `edsServiceName ?? name` of every EDS cluster. */
function edsNamesOf(clusters: ReadonlyMap<string, CompiledResources['clusters']>): Set<string> {
  const names = new Set<string>();
  for (const c of clusters.values()) if (c.type === 'EDS') names.add(c.edsServiceName ?? c.name);
  return names;
}

/** RDS names the listeners' HTTP handlers fetch. */
function rdsNamesOf(listeners: ReadonlyMap<string, CompiledResources['listeners']>): Set<string> {
  const names = new Set<string>();
  for (const l of listeners.values()) {
    for (const chain of l.filterChains) {
      if (chain.handler.kind === 'http' && chain.handler.rdsName !== undefined)
        names.add(chain.handler.rdsName);
    }
    const d = l.defaultFilterChain?.handler;
    if (d?.kind === 'http' && d.rdsName !== undefined) names.add(d.rdsName);
  }
  return names;
}

/** A CompileError's message names the resource already; anything else (a compiler bug) gets it added. */
function compileFailure(kind: XdsKind, name: string, err: unknown): string {
  if (err instanceof CompileError) return err.message;
  return `${kind} ${name}: ${getErrorMessage(err)}`;
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}

/** @internal exported for tests and the client */
export class XdsState {
  private readonly tables: Tables = {
    clusters: emptyTable(),
    endpoints: emptyTable(),
    listeners: emptyTable(),
    routes: emptyTable(),
  };
  private edsNames: ReadonlySet<string> = EMPTY_NAMES;
  private rdsNames: ReadonlySet<string> = EMPTY_NAMES;
  private configCache: ProxyConfig | undefined;
  private rawCache: RawResources | undefined;

  /** `version_info` of the last ACKed response of `kind`. */
  version(kind: XdsKind): string {
    return this.tables[kind].version;
  }

  /**
   * The names subscribed for `kind`: undefined for the wildcard kinds (clusters, listeners), else
   * what the clusters (EDS) and listeners (RDS) in force need. A new set object whenever it changes.
   */
  subscription(kind: XdsKind): ReadonlySet<string> | undefined {
    if (kind === 'endpoints') return this.edsNames;
    if (kind === 'routes') return this.rdsNames;
    return undefined;
  }

  /** Whether a resource `name` of `kind` is held. */
  has(kind: XdsKind, name: string): boolean {
    return this.tables[kind].entries.has(name);
  }

  /** How many resources of `kind` are held. */
  count(kind: XdsKind): number {
    return this.tables[kind].entries.size;
  }

  /** The configuration in force (a new object after each change, else the same one). */
  get config(): ProxyConfig {
    this.configCache ??= {
      versions: {
        clusters: this.tables.clusters.version,
        endpoints: this.tables.endpoints.version,
        listeners: this.tables.listeners.version,
        routes: this.tables.routes.version,
      },
      clusters: this.tables.clusters.compiled,
      endpoints: this.tables.endpoints.compiled,
      listeners: this.tables.listeners.compiled,
      routes: this.tables.routes.compiled,
    };
    return this.configCache;
  }

  /** The raw resources in force. */
  get raw(): RawResources {
    this.rawCache ??= {
      clusters: this.tables.clusters.raw,
      endpoints: this.tables.endpoints.raw,
      listeners: this.tables.listeners.raw,
      routes: this.tables.routes.raw,
    };
    return this.rawCache;
  }

  /**
   * Applies one response of `kind` (State of the World): for clusters and listeners the response
   * is the whole set; for endpoints and routes it updates the names it carries, the others keep
   * their value. Names not subscribed are ignored. When any resource fails to decode or compile,
   * nothing is applied and every failure is returned.
   */
  apply(kind: XdsKind, version: string, resources: readonly WireAny[], now: Date): ApplyResult {
    const table = this.tables[kind] as KindTable<AnyCompiled>;
    const prev = table.entries;
    const wildcard = isWildcardKind(kind);
    const subscribed = this.subscription(kind);
    const next = new Map<string, Entry<AnyCompiled>>(wildcard ? undefined : prev);
    const errors: string[] = [];
    const ignored: string[] = [];
    const seen = new Set<string>();
    let changed = false;
    resources.forEach((any, i) => {
      let decoded;
      try {
        decoded = decodeResource(kind, any);
      } catch (err) {
        errors.push(`resource ${i}: ${getErrorMessage(err)}`);
        return;
      }
      const name = decoded.name;
      if (name === '') {
        errors.push(`resource ${i}: has no name`);
        return;
      }
      if (seen.has(name)) {
        errors.push(`${name}: sent twice in one response`);
        return;
      }
      seen.add(name);
      if (subscribed && !subscribed.has(name)) {
        ignored.push(name);
        return;
      }
      const old = prev.get(name);
      if (old?.bytes && bytesEqual(old.bytes, decoded.bytes)) {
        next.set(name, old);
        return;
      }
      let json: Record<string, unknown>;
      try {
        json = decoded.toJson();
      } catch (err) {
        errors.push(`${name}: ${getErrorMessage(err)}`);
        return;
      }
      // Restored from the state file: no bytes to compare, so compare the JSON once.
      if (old && !old.bytes && JSON.stringify(old.raw.resource) === JSON.stringify(json)) {
        next.set(name, { ...old, bytes: decoded.bytes });
        return;
      }
      try {
        const compiled = compileResource(kind, json);
        next.set(name, {
          raw: { resource: json, version, lastUpdated: now },
          compiled,
          bytes: decoded.bytes,
        });
        changed = true;
      } catch (err) {
        errors.push(compileFailure(kind, name, err));
      }
    });
    if (errors.length > 0) return { ok: false, errors };
    if (wildcard) {
      for (const name of prev.keys()) {
        if (!next.has(name)) {
          changed = true;
          break;
        }
      }
    }
    const changedKinds = new Set<XdsKind>();
    this.setTable(kind, version, next, changed, changedKinds);
    return { ok: true, changed: changedKinds, ignored, applied: seen.size - ignored.length };
  }

  /** Installs a table and re-derives subscriptions, pruning endpoints/routes no longer subscribed. */
  private setTable<K extends XdsKind>(
    kind: K,
    version: string,
    entries: ReadonlyMap<string, Entry<CompiledResources[K]>>,
    changed: boolean,
    changedKinds: Set<XdsKind>,
  ): void {
    const table = this.tables[kind] as KindTable<CompiledResources[K]>;
    if (table.version !== version) this.configCache = undefined;
    table.version = version;
    // Entries always move on (they may have gained wire bytes); the views only when changed.
    table.entries = entries;
    if (!changed) return;
    const compiled = new Map<string, CompiledResources[K]>();
    const raw = new Map<string, RawResource>();
    for (const [name, e] of entries) {
      compiled.set(name, e.compiled);
      raw.set(name, e.raw);
    }
    table.compiled = compiled;
    table.raw = raw;
    this.configCache = undefined;
    this.rawCache = undefined;
    changedKinds.add(kind);
    if (kind === 'clusters') {
      const names = edsNamesOf(this.tables.clusters.compiled);
      if (!sameSet(names, this.edsNames)) {
        this.edsNames = names;
        this.prune('endpoints', names, changedKinds);
      }
    } else if (kind === 'listeners') {
      const names = rdsNamesOf(this.tables.listeners.compiled);
      if (!sameSet(names, this.rdsNames)) {
        this.rdsNames = names;
        this.prune('routes', names, changedKinds);
      }
    }
  }

  /** Drops resources of `kind` that are no longer subscribed (SotW: an unsubscribed name is forgotten). */
  private prune(
    kind: 'endpoints' | 'routes',
    keep: ReadonlySet<string>,
    changedKinds: Set<XdsKind>,
  ): void {
    const table = this.tables[kind] as KindTable<CompiledResources[typeof kind]>;
    let dropped = false;
    for (const name of table.entries.keys()) {
      if (!keep.has(name)) {
        dropped = true;
        break;
      }
    }
    if (!dropped) return;
    const next = new Map([...table.entries].filter(([name]) => keep.has(name)));
    this.setTable(kind, table.version, next, true, changedKinds);
  }

  /** The state for the state file. */
  snapshot(nodeId: string, now: Date): StateSnapshot {
    const resources = {} as Record<XdsKind, SnapshotResource[]>;
    const versions = {} as Record<XdsKind, string>;
    for (const kind of XDS_KINDS) {
      versions[kind] = this.tables[kind].version;
      resources[kind] = [...this.tables[kind].entries].map(([name, e]) => ({
        name,
        version: e.raw.version,
        lastUpdated: e.raw.lastUpdated.toISOString(),
        resource: e.raw.resource as Record<string, unknown>,
      }));
    }
    return { format: 1, nodeId, savedAt: now.toISOString(), versions, resources };
  }

  /**
   * Replaces the whole state with a snapshot's (at start, before any response). Clusters and
   * listeners first, so endpoints and routes nobody subscribes to are dropped.
   * @throws Error listing every resource that does not compile; the state is then unchanged
   */
  restore(snapshot: StateSnapshot): void {
    const compiled = {} as { [K in XdsKind]: Map<string, Entry<CompiledResources[K]>> };
    const errors: string[] = [];
    const compileAll = <K extends XdsKind>(kind: K): Map<string, Entry<CompiledResources[K]>> => {
      const out = new Map<string, Entry<CompiledResources[K]>>();
      for (const r of snapshot.resources[kind]) {
        try {
          const c = compileResource(kind, r.resource);
          out.set(r.name, {
            raw: { resource: r.resource, version: r.version, lastUpdated: new Date(r.lastUpdated) },
            compiled: c,
          });
        } catch (err) {
          errors.push(compileFailure(kind, r.name, err));
        }
      }
      return out;
    };
    compiled.clusters = compileAll('clusters');
    compiled.endpoints = compileAll('endpoints');
    compiled.listeners = compileAll('listeners');
    compiled.routes = compileAll('routes');
    if (errors.length > 0) throw new Error(`state file does not compile: ${errors.join('; ')}`);
    const changed = new Set<XdsKind>();
    // Clusters and listeners first: they decide which endpoints and routes are subscribed.
    this.setTable('clusters', snapshot.versions.clusters, compiled.clusters, true, changed);
    this.setTable('listeners', snapshot.versions.listeners, compiled.listeners, true, changed);
    const eds = this.edsNames;
    const rds = this.rdsNames;
    const endpoints = new Map([...compiled.endpoints].filter(([name]) => eds.has(name)));
    const routes = new Map([...compiled.routes].filter(([name]) => rds.has(name)));
    this.setTable('endpoints', snapshot.versions.endpoints, endpoints, true, changed);
    this.setTable('routes', snapshot.versions.routes, routes, true, changed);
  }
}
