/**
 * Route selection, as Envoy's router does it: the virtual host by authority, then the first route
 * of that host whose match holds. Pure functions over a request view; each RouteTable is compiled
 * once (lazily, cached by object identity) into lookup structures, so the per-request work is a
 * map lookup and a short loop without allocations beyond what the request already has.
 */
import type {
  HeaderEdits,
  HeaderMatcher,
  Route,
  RouteAction,
  RouteTable,
  StringMatcher,
  VirtualHost,
  WeightedCluster,
} from '../model';

/** The parts of a request routing reads. */
export interface RouteInput {
  readonly method: string;
  /** `:authority` (or `host`) as the client sent it. */
  readonly authority: string;
  readonly scheme: string;
  /** `:path` with the query string. */
  readonly path: string;
  /** Request headers (lowercase names; pseudo-headers are read from the fields above). */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
}

/** A StringMatcher with its comparison value prepared (lowercased when case is ignored). */
interface CompiledStringMatcher {
  readonly kind: StringMatcher['kind'];
  readonly value: string;
  readonly ignoreCase: boolean;
  readonly regex?: RegExp;
}

interface CompiledHeaderMatcher {
  readonly name: string;
  readonly present?: boolean;
  readonly matcher?: CompiledStringMatcher;
  readonly invert: boolean;
}

interface CompiledQueryMatcher {
  readonly name: string;
  readonly matcher?: CompiledStringMatcher;
}

/** Path match kinds as small integers (a switch on a number is cheaper than on strings). */
const PATH_PREFIX = 0;
const PATH_EXACT = 1;
const PATH_REGEX = 2;
const PATH_SEPARATED = 3;
/** The integer of each path match kind that carries a string `value`. */
const VALUE_PATH_KINDS: Readonly<Record<'prefix' | 'path' | 'pathSeparatedPrefix', number>> = {
  prefix: PATH_PREFIX,
  path: PATH_EXACT,
  pathSeparatedPrefix: PATH_SEPARATED,
};

/** A route with everything the data path needs precomputed. */
export interface CompiledRoute {
  readonly route: Route;
  readonly vhost: VirtualHost;
  readonly pathKind: number;
  /** The path value (lowercased when the match is case insensitive). */
  readonly pathValue: string;
  readonly pathRegex?: RegExp;
  readonly caseSensitive: boolean;
  readonly headers: readonly CompiledHeaderMatcher[];
  readonly query: readonly CompiledQueryMatcher[];
  readonly fraction?: number;
  /** Request header edits of the virtual host then the route (the route's `set` wins). */
  readonly requestEdits: readonly HeaderEdits[];
  /** Response header edits of the route then the virtual host. */
  readonly responseEdits: readonly HeaderEdits[];
  /** Upgrades the route allows besides the handler's. */
  readonly upgrades: readonly string[];
  /** `regexRewrite` as a global regex with `\N` substitutions turned into `$N`. */
  readonly regexRewrite?: { readonly regex: RegExp; readonly substitution: string };
  readonly hasHashPolicies: boolean;
}

/** A virtual host with its compiled routes. */
export interface CompiledVirtualHost {
  readonly vhost: VirtualHost;
  readonly routes: readonly CompiledRoute[];
}

interface WildcardEntry {
  readonly part: string;
  readonly vhost: CompiledVirtualHost;
}

/** Cached virtual host lookups per table are bounded: authorities are client-controlled. */
const MAX_AUTHORITY_CACHE = 1024;

interface CompiledTable {
  readonly exact: Map<string, CompiledVirtualHost>;
  /** `*suffix` domains, longest suffix first. */
  readonly suffixes: readonly WildcardEntry[];
  /** `prefix*` domains, longest prefix first. */
  readonly prefixes: readonly WildcardEntry[];
  readonly any?: CompiledVirtualHost;
  readonly cache: Map<string, CompiledVirtualHost | null>;
}

const compiledTables = new WeakMap<RouteTable, CompiledTable>();

function compileStringMatcher(m: StringMatcher): CompiledStringMatcher {
  return {
    kind: m.kind,
    value: m.ignoreCase && m.kind !== 'regex' ? m.value.toLowerCase() : m.value,
    ignoreCase: m.ignoreCase && m.kind !== 'regex',
    ...(m.regex ? { regex: m.regex } : {}),
  };
}

function compileHeaderMatcher(h: HeaderMatcher): CompiledHeaderMatcher {
  if (h.match.kind === 'present') {
    return { name: h.name, present: h.match.present, invert: h.invert };
  }
  return { name: h.name, matcher: compileStringMatcher(h.match), invert: h.invert };
}

/** Envoy's regex substitution uses `\1`; JavaScript's replace uses `$1` (and `$` is special). */
function toJsSubstitution(s: string): string {
  return s.replace(/\$/g, '$$$$').replace(/\\(\d)/g, '$$$1');
}

function compileRoute(route: Route, vhost: VirtualHost): CompiledRoute {
  const m = route.match;
  let pathKind: number;
  let pathValue = '';
  let pathRegex: RegExp | undefined;
  if (m.path.kind === 'regex') {
    pathKind = PATH_REGEX;
    pathRegex = m.path.regex;
  } else {
    pathKind = VALUE_PATH_KINDS[m.path.kind];
    pathValue = m.path.value;
  }
  if (!m.caseSensitive) pathValue = pathValue.toLowerCase();
  const action = route.action;
  let regexRewrite: CompiledRoute['regexRewrite'];
  if (action.kind === 'route' && action.regexRewrite) {
    const r = action.regexRewrite.regex;
    regexRewrite = {
      regex: new RegExp(r.source, r.flags.includes('g') ? r.flags : r.flags + 'g'),
      substitution: toJsSubstitution(action.regexRewrite.substitution),
    };
  }
  return {
    route,
    vhost,
    pathKind,
    pathValue,
    ...(pathRegex ? { pathRegex } : {}),
    caseSensitive: m.caseSensitive,
    headers: m.headers.map(compileHeaderMatcher),
    query: m.queryParameters.map(q => ({
      name: q.name,
      ...(q.match ? { matcher: compileStringMatcher(q.match) } : {}),
    })),
    ...(m.fraction !== undefined ? { fraction: m.fraction } : {}),
    requestEdits: nonEmptyEdits([vhost.requestHeaders, route.requestHeaders]),
    responseEdits: nonEmptyEdits([route.responseHeaders, vhost.responseHeaders]),
    upgrades: action.kind === 'route' ? action.upgrades : [],
    ...(regexRewrite ? { regexRewrite } : {}),
    hasHashPolicies: action.kind === 'route' && action.hashPolicies.length > 0,
  };
}

function nonEmptyEdits(list: readonly HeaderEdits[]): readonly HeaderEdits[] {
  return list.filter(e => e.set.length > 0 || e.add.length > 0 || e.remove.length > 0);
}

/** Compiles (or returns the cached compilation of) a route table. */
function compileTable(table: RouteTable): CompiledTable {
  let compiled = compiledTables.get(table);
  if (compiled) return compiled;
  const exact = new Map<string, CompiledVirtualHost>();
  const suffixes: WildcardEntry[] = [];
  const prefixes: WildcardEntry[] = [];
  let any: CompiledVirtualHost | undefined;
  for (const vhost of table.virtualHosts) {
    const cvh: CompiledVirtualHost = {
      vhost,
      routes: vhost.routes.map(r => compileRoute(r, vhost)),
    };
    for (const raw of vhost.domains) {
      const d = raw.toLowerCase();
      if (d === '*') {
        any ??= cvh;
      } else if (d.startsWith('*')) {
        suffixes.push({ part: d.slice(1), vhost: cvh });
      } else if (d.endsWith('*')) {
        prefixes.push({ part: d.slice(0, -1), vhost: cvh });
      } else if (!exact.has(d)) {
        exact.set(d, cvh);
      }
    }
  }
  // Envoy: the longest wildcard wins; among equals, the first declared (stable sort).
  suffixes.sort((a, b) => b.part.length - a.part.length);
  prefixes.sort((a, b) => b.part.length - a.part.length);
  compiled = { exact, suffixes, prefixes, ...(any ? { any } : {}), cache: new Map() };
  compiledTables.set(table, compiled);
  return compiled;
}

function lookupDomain(t: CompiledTable, host: string): CompiledVirtualHost | undefined {
  const exact = t.exact.get(host);
  if (exact) return exact;
  // A wildcard never matches the empty string (`*.foo.com` does not match `.foo.com`).
  for (const e of t.suffixes) {
    if (host.length > e.part.length && host.endsWith(e.part)) return e.vhost;
  }
  for (const e of t.prefixes) {
    if (host.length > e.part.length && host.startsWith(e.part)) return e.vhost;
  }
  return undefined;
}

/** The host part of an authority (`[::1]:80` → `[::1]`, `a:80` → `a`), or undefined without port. */
function stripPort(authority: string): string | undefined {
  const colon = authority.lastIndexOf(':');
  if (colon <= 0) return undefined;
  if (authority.charCodeAt(0) === 0x5b /* [ */ && authority.lastIndexOf(']') > colon) {
    return undefined;
  }
  return authority.slice(0, colon);
}

/**
 * The virtual host for `authority`, as Envoy picks it: an exact domain, then the longest `*suffix`
 * wildcard, then the longest `prefix*`, each tried with the authority as sent and then without its
 * port; finally the `*` host. Undefined when none applies.
 */
export function selectVirtualHost(
  table: RouteTable,
  authority: string,
): CompiledVirtualHost | undefined {
  const t = compileTable(table);
  const cached = t.cache.get(authority);
  if (cached !== undefined) return cached ?? undefined;
  const host = authority.toLowerCase();
  let vh = lookupDomain(t, host);
  if (!vh) {
    const bare = stripPort(host);
    if (bare !== undefined) vh = lookupDomain(t, bare);
  }
  vh ??= t.any;
  if (t.cache.size >= MAX_AUTHORITY_CACHE) t.cache.clear();
  t.cache.set(authority, vh ?? null);
  return vh;
}

/** A header's value for matching: pseudo-headers from the request line, lists joined by `,`. */
export function headerForMatch(input: RouteInput, name: string): string | undefined {
  switch (name) {
    case ':method':
      return input.method;
    case ':authority':
    case 'host':
      return input.authority;
    case ':scheme':
      return input.scheme;
    case ':path':
      return input.path;
    default: {
      const v = input.headers[name];
      if (v === undefined) return undefined;
      return typeof v === 'string' ? v : v.join(',');
    }
  }
}

function matchString(m: CompiledStringMatcher, raw: string): boolean {
  const s = m.ignoreCase ? raw.toLowerCase() : raw;
  switch (m.kind) {
    case 'exact':
      return s === m.value;
    case 'prefix':
      return s.startsWith(m.value);
    case 'suffix':
      return s.endsWith(m.value);
    case 'contains':
      return s.includes(m.value);
    case 'regex':
      return m.regex !== undefined && m.regex.test(s);
  }
}

function matchHeader(h: CompiledHeaderMatcher, input: RouteInput): boolean {
  const value = headerForMatch(input, h.name);
  if (h.present !== undefined) return ((value !== undefined) === h.present) !== h.invert;
  // Envoy: an absent header fails a value match; `invert` turns that into a match.
  if (value === undefined || !h.matcher) return h.invert;
  return matchString(h.matcher, value) !== h.invert;
}

/** The path without its query string. */
export function pathOnly(path: string): string {
  const q = path.indexOf('?');
  return q < 0 ? path : path.slice(0, q);
}

function matchPath(r: CompiledRoute, fullPath: string): boolean {
  switch (r.pathKind) {
    case PATH_PREFIX: {
      // Envoy matches a prefix against the whole :path (query included).
      const p = r.caseSensitive ? fullPath : fullPath.toLowerCase();
      return p.startsWith(r.pathValue);
    }
    case PATH_EXACT: {
      const p = pathOnly(fullPath);
      return (r.caseSensitive ? p : p.toLowerCase()) === r.pathValue;
    }
    case PATH_SEPARATED: {
      const raw = pathOnly(fullPath);
      const p = r.caseSensitive ? raw : raw.toLowerCase();
      return (
        p.startsWith(r.pathValue) &&
        (p.length === r.pathValue.length || p.charCodeAt(r.pathValue.length) === 0x2f) /* / */
      );
    }
    case PATH_REGEX:
      return r.pathRegex !== undefined && r.pathRegex.test(pathOnly(fullPath));
    default:
      return false;
  }
}

/** Parses a query string into first values by name (Envoy matches the first occurrence). */
function parseQuery(path: string): Map<string, string> {
  const out = new Map<string, string>();
  const q = path.indexOf('?');
  if (q < 0) return out;
  for (const part of path.slice(q + 1).split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const rawName = eq < 0 ? part : part.slice(0, eq);
    const rawValue = eq < 0 ? '' : part.slice(eq + 1);
    const name = safeDecode(rawName);
    if (!out.has(name)) out.set(name, safeDecode(rawValue));
  }
  return out;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return s;
  }
}

/** The value of query parameter `name` in `path`, or undefined. */
export function queryParameter(path: string, name: string): string | undefined {
  return parseQuery(path).get(name);
}

/**
 * The first route of `vh` matching `input`. `random` gives a number in [0, 1) for runtime
 * fractions (Math.random in production).
 */
export function matchRoute(
  vh: CompiledVirtualHost,
  input: RouteInput,
  random: () => number = Math.random,
): CompiledRoute | undefined {
  let query: Map<string, string> | undefined;
  for (const r of vh.routes) {
    if (!matchPath(r, input.path)) continue;
    let ok = true;
    for (const h of r.headers) {
      if (!matchHeader(h, input)) {
        ok = false;
        break;
      }
    }
    if (!ok) continue;
    if (r.query.length > 0) {
      query ??= parseQuery(input.path);
      for (const q of r.query) {
        const v = query.get(q.name);
        if (v === undefined || (q.matcher && !matchString(q.matcher, v))) {
          ok = false;
          break;
        }
      }
      if (!ok) continue;
    }
    if (r.fraction !== undefined && !(random() < r.fraction)) continue;
    return r;
  }
  return undefined;
}

/** Selects the virtual host then the route; undefined when either is missing (Envoy `NR`). */
export function findRoute(
  table: RouteTable,
  input: RouteInput,
  random: () => number = Math.random,
): CompiledRoute | undefined {
  const vh = selectVirtualHost(table, input.authority);
  return vh ? matchRoute(vh, input, random) : undefined;
}

/** A weighted choice among the action's clusters (`random` in [0, 1)). */
export function pickWeightedCluster(
  action: RouteAction,
  random: () => number = Math.random,
): WeightedCluster | undefined {
  const list = action.clusters;
  if (list.length <= 1) return list[0];
  let x = random() * action.totalWeight;
  for (const c of list) {
    if (x < c.weight) return c;
    x -= c.weight;
  }
  return list[list.length - 1];
}

/**
 * The path sent upstream after the route's `prefixRewrite` or `regexRewrite`; `path` itself when
 * neither applies.
 */
export function rewritePath(r: CompiledRoute, action: RouteAction, path: string): string {
  if (action.prefixRewrite !== undefined) {
    switch (r.pathKind) {
      case PATH_PREFIX:
      case PATH_SEPARATED:
        return action.prefixRewrite + path.slice(r.pathValue.length);
      case PATH_EXACT: {
        const q = path.indexOf('?');
        return action.prefixRewrite + (q < 0 ? '' : path.slice(q));
      }
      default:
        return path;
    }
  }
  if (r.regexRewrite) {
    const q = path.indexOf('?');
    const p = q < 0 ? path : path.slice(0, q);
    r.regexRewrite.regex.lastIndex = 0;
    const rewritten = p.replace(r.regexRewrite.regex, r.regexRewrite.substitution);
    return q < 0 ? rewritten : rewritten + path.slice(q);
  }
  return path;
}
