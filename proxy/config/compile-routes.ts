/**
 * `envoy.config.route.v3.RouteConfiguration` → RouteTable, for RDS resources and for the inline
 * `route_config` of an HTTP connection manager. Settings Envoy inherits downwards (route
 * configuration → virtual host → route: header edits, per-filter configs, retry and mirror
 * policies) are resolved here, so the data path reads each route alone; the model keeps only the
 * virtual host's header edits and CORS policy, which the data path applies after the route's.
 * @internal
 */
import type {
  CorsPolicy,
  DirectResponseAction,
  FaultPolicy,
  HashPolicy,
  HeaderEdits,
  MirrorPolicy,
  RedirectAction,
  RetryPolicy,
  Route,
  RouteAction,
  RouteMatch,
  RouteTable,
  StringMatcher,
  VirtualHost,
  WeightedCluster,
} from '../model';
import { NO_HEADER_EDITS } from '../model';
import {
  anyType,
  at,
  bool,
  concatEdits,
  durationMs,
  elem,
  enumOf,
  fail,
  fraction,
  headerEdits,
  headerMatcher,
  idx,
  isObj,
  list,
  map,
  obj,
  queryParameterMatcher,
  regexMatcher,
  rejectSet,
  reqObj,
  reqStr,
  runtimeFraction,
  str,
  stringMatcher,
  uint,
  wrappedBool,
  wrappedUint,
  type Json,
  type Where,
} from './compile-common';
import { compileRe2, re2Substitution } from './compile-regex';

/** Envoy's route timeout when `timeout` is absent. */
export const DEFAULT_ROUTE_TIMEOUT_MS = 15_000;
/** Envoy's retry back-off base; the maximum defaults to ten times the base. */
export const DEFAULT_RETRY_BASE_MS = 25;

const FAULT_FILTER = 'envoy.filters.http.fault';
const CORS_FILTER = 'envoy.filters.http.cors';
const RBAC_FILTER = 'envoy.filters.http.rbac';
const FAULT_TYPE = 'envoy.extensions.filters.http.fault.v3.HTTPFault';
const CORS_TYPE = 'envoy.extensions.filters.http.cors.v3.CorsPolicy';
const RBAC_PER_ROUTE_TYPE = 'envoy.extensions.filters.http.rbac.v3.RBACPerRoute';
const FILTER_CONFIG_TYPE = 'envoy.config.route.v3.FilterConfig';
const PREVIOUS_HOSTS_PREDICATE = 'envoy.retry_host_predicates.previous_hosts';
const PREVIOUS_HOSTS_TYPE = 'envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate';

/**
 * Per-filter configs at one level. `undefined`: this level says nothing (inherit); `null`: the
 * filter is disabled here (overrides what an outer level set).
 */
interface PerFilter {
  readonly fault?: FaultPolicy | null;
  readonly cors?: CorsPolicy | null;
}

/** What a virtual host passes down to its routes. */
interface Inherited {
  readonly fault: FaultPolicy | undefined;
  readonly retry: RetryPolicy | undefined;
  readonly mirrors: readonly MirrorPolicy[];
}

const NONE: readonly never[] = Object.freeze([]);

/** A RouteConfiguration at `path` of resource `w`. `name` may be empty for an inline one. */
export function routeTable(w: Where, rc: Json, path: string): RouteTable {
  const name = str(w, rc, 'name', path) ?? '';
  rejectSet(w, rc, path, [
    'vhds',
    'internalOnlyHeaders',
    'mostSpecificHeaderMutationsWins',
    'clusterSpecifierPlugins',
    'requestMirrorPolicies',
    'ignorePortInHostMatching',
    'ignorePathParametersInPathMatching',
  ]);
  // Route-configuration edits apply after the virtual host's: appended to each host's.
  const request = headerEdits(w, rc, 'requestHeadersToAdd', 'requestHeadersToRemove', path);
  const response = headerEdits(w, rc, 'responseHeadersToAdd', 'responseHeadersToRemove', path);
  const perFilter = perFilterConfig(w, rc, path);
  const hosts = list(w, rc, 'virtualHosts', path);
  const virtualHosts: VirtualHost[] = [];
  const seen = new Map<string, string>();
  const hostsPath = at(path, 'virtualHosts');
  for (let i = 0; i < hosts.length; i++) {
    const p = idx(hostsPath, i);
    const vh = virtualHost(w, elem(w, hosts[i], p), p, request, response, perFilter);
    // Envoy rejects a route configuration in which two virtual hosts claim a domain.
    for (const d of vh.domains) {
      const other = seen.get(d);
      if (other !== undefined)
        fail(w, at(p, 'domains'), `domain ${d} is also in virtual host ${other}`);
      seen.set(d, vh.name);
    }
    virtualHosts.push(vh);
  }
  return { name, virtualHosts };
}

function virtualHost(
  w: Where,
  vh: Json,
  path: string,
  outerRequest: HeaderEdits,
  outerResponse: HeaderEdits,
  outer: PerFilter,
): VirtualHost {
  const name = reqStr(w, vh, 'name', path);
  rejectSet(w, vh, path, ['matcher', 'hedgePolicy', 'retryPolicyTypedConfig']);
  enumOnly(w, vh, 'requireTls', path, 'NONE');
  const rawDomains = list(w, vh, 'domains', path);
  if (rawDomains.length === 0) fail(w, at(path, 'domains'), 'at least one domain is required');
  const domains: string[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < rawDomains.length; i++) {
    const d = rawDomains[i];
    if (typeof d !== 'string' || d === '')
      fail(w, idx(at(path, 'domains'), i), 'expected a domain');
    const lower = d.toLowerCase();
    if (seen.has(lower)) fail(w, idx(at(path, 'domains'), i), `duplicate domain ${lower}`);
    seen.add(lower);
    domains.push(lower);
  }
  const own = perFilterConfig(w, vh, path);
  const legacyCors = obj(w, vh, 'cors', path);
  const cors = pick(
    own.cors,
    legacyCors ? corsPolicy(w, legacyCors, at(path, 'cors')) : undefined,
    outer.cors,
  );
  const retryJson = obj(w, vh, 'retryPolicy', path);
  const inherited: Inherited = {
    fault: pick(own.fault, undefined, outer.fault),
    retry: retryJson ? retryPolicy(w, retryJson, at(path, 'retryPolicy')) : undefined,
    mirrors: mirrorPolicies(w, vh, path),
  };
  const rawRoutes = list(w, vh, 'routes', path);
  const routes: Route[] = [];
  for (let i = 0; i < rawRoutes.length; i++) {
    const p = idx(at(path, 'routes'), i);
    routes.push(route(w, elem(w, rawRoutes[i], p), p, inherited));
  }
  return {
    name,
    domains,
    routes,
    requestHeaders: concatEdits(
      headerEdits(w, vh, 'requestHeadersToAdd', 'requestHeadersToRemove', path),
      outerRequest,
    ),
    responseHeaders: concatEdits(
      headerEdits(w, vh, 'responseHeadersToAdd', 'responseHeadersToRemove', path),
      outerResponse,
    ),
    ...(cors ? { cors } : {}),
  };
}

/** The most specific setting: this level's, else its legacy field, else the outer level's. */
function pick<T>(
  own: T | null | undefined,
  legacy: T | undefined,
  outer: T | null | undefined,
): T | undefined {
  if (own !== undefined) return own ?? undefined;
  if (legacy !== undefined) return legacy;
  return outer ?? undefined;
}

/** Fails unless an enum field is absent or `allowed`. */
function enumOnly(w: Where, o: Json, key: string, path: string, allowed: string): void {
  const v = o[key];
  if (v !== undefined && v !== null && v !== allowed)
    fail(w, at(path, key), `${typeof v === 'string' ? v : JSON.stringify(v)} is not supported`);
}

function route(w: Where, r: Json, path: string, inherited: Inherited): Route {
  rejectSet(w, r, path, ['filterAction', 'nonForwardingAction']);
  const match = routeMatch(w, reqObj(w, r, 'match', path), at(path, 'match'));
  const own = perFilterConfig(w, r, path);
  let action: Route['action'];
  let legacyCors: CorsPolicy | undefined;
  const ra = obj(w, r, 'route', path);
  const redirect = obj(w, r, 'redirect', path);
  const direct = obj(w, r, 'directResponse', path);
  if (ra) {
    const p = at(path, 'route');
    action = routeAction(w, ra, p, inherited);
    const c = obj(w, ra, 'cors', p);
    if (c) legacyCors = corsPolicy(w, c, at(p, 'cors'));
  } else if (redirect) action = redirectAction(w, redirect, at(path, 'redirect'));
  else if (direct) action = directResponse(w, direct, at(path, 'directResponse'));
  else fail(w, path, 'route has no action (route, redirect or directResponse)');
  const fault = pick(own.fault, undefined, inherited.fault);
  const cors = pick(own.cors, legacyCors, undefined);
  return {
    name: str(w, r, 'name', path) ?? '',
    match,
    action,
    requestHeaders: headerEdits(w, r, 'requestHeadersToAdd', 'requestHeadersToRemove', path),
    responseHeaders: headerEdits(w, r, 'responseHeadersToAdd', 'responseHeadersToRemove', path),
    ...(fault ? { fault } : {}),
    ...(cors ? { cors } : {}),
  };
}

function routeMatch(w: Where, m: Json, path: string): RouteMatch {
  rejectSet(w, m, path, [
    'connectMatcher',
    'pathMatchPolicy',
    'grpc',
    'tlsContext',
    'dynamicMetadata',
  ]);
  let pathMatch: RouteMatch['path'];
  // oneof members are kept even when empty: `prefix: ""` matches every path.
  if (typeof m.prefix === 'string') pathMatch = { kind: 'prefix', value: m.prefix };
  else if (typeof m.path === 'string') pathMatch = { kind: 'path', value: m.path };
  else if (obj(w, m, 'safeRegex', path))
    pathMatch = {
      kind: 'regex',
      regex: regexMatcher(w, m.safeRegex as Json, at(path, 'safeRegex')),
    };
  else if (typeof m.pathSeparatedPrefix === 'string') {
    const v = m.pathSeparatedPrefix;
    if (v === '' || v.endsWith('/') || /[?#]/.test(v))
      fail(w, at(path, 'pathSeparatedPrefix'), 'must be non-empty, without ?, # or a trailing /');
    pathMatch = { kind: 'pathSeparatedPrefix', value: v };
  } else {
    for (const k of ['prefix', 'path', 'pathSeparatedPrefix'])
      if (m[k] !== undefined) fail(w, at(path, k), 'expected a string');
    fail(w, path, 'route match has no path specifier');
  }
  const headers = list(w, m, 'headers', path);
  const params = list(w, m, 'queryParameters', path);
  const fraction = runtimeFraction(w, m, 'runtimeFraction', path);
  return {
    path: pathMatch,
    caseSensitive: wrappedBool(w, m, 'caseSensitive', path) ?? true,
    headers:
      headers.length === 0
        ? NONE
        : headers.map((h, i) => {
            const p = idx(at(path, 'headers'), i);
            return headerMatcher(w, elem(w, h, p), p);
          }),
    queryParameters:
      params.length === 0
        ? NONE
        : params.map((q, i) => {
            const p = idx(at(path, 'queryParameters'), i);
            return queryParameterMatcher(w, elem(w, q, p), p);
          }),
    ...(fraction !== undefined ? { fraction } : {}),
  };
}

function routeAction(w: Where, a: Json, path: string, inherited: Inherited): RouteAction {
  rejectSet(w, a, path, [
    'clusterHeader',
    'clusterSpecifierPlugin',
    'inlineClusterSpecifierPlugin',
    'metadataMatch',
    'pathRewritePolicy',
    'hostRewriteHeader',
    'hostRewritePathRegex',
    'appendXForwardedHost',
    'idleTimeout',
    'retryPolicyTypedConfig',
    'maxGrpcTimeout',
    'grpcTimeoutOffset',
    'internalRedirectPolicy',
    'hedgePolicy',
    'maxStreamDuration',
  ]);
  enumOnly(w, a, 'clusterNotFoundResponseCode', path, 'SERVICE_UNAVAILABLE');
  enumOnly(w, a, 'priority', path, 'DEFAULT');
  enumOnly(w, a, 'internalRedirectAction', path, 'PASS_THROUGH_INTERNAL_REDIRECT');
  if (wrappedBool(w, a, 'autoHostRewrite', path))
    fail(w, at(path, 'autoHostRewrite'), 'not supported');

  let clusters: WeightedCluster[];
  let totalWeight: number;
  const cluster = str(w, a, 'cluster', path);
  const weighted = obj(w, a, 'weightedClusters', path);
  if (cluster !== undefined) {
    clusters = [singleCluster(cluster)];
    totalWeight = 1;
  } else if (weighted) {
    ({ clusters, totalWeight } = weightedClusters(w, weighted, at(path, 'weightedClusters')));
  } else {
    fail(w, path, 'route action names no cluster (cluster or weightedClusters)');
  }

  const prefixRewrite = str(w, a, 'prefixRewrite', path);
  const rr = obj(w, a, 'regexRewrite', path);
  if (prefixRewrite !== undefined && rr)
    fail(w, path, 'prefixRewrite and regexRewrite are both set');
  const hostRewrite = str(w, a, 'hostRewriteLiteral', path);
  const retryJson = obj(w, a, 'retryPolicy', path);
  const retry = retryJson ? retryPolicy(w, retryJson, at(path, 'retryPolicy')) : inherited.retry;
  const ownMirrors = mirrorPolicies(w, a, path);
  return {
    kind: 'route',
    clusters,
    totalWeight,
    // Envoy: 15 s when absent; 0 disables the timeout.
    timeoutMs: durationMs(w, a, 'timeout', path) ?? DEFAULT_ROUTE_TIMEOUT_MS,
    ...(retry ? { retry } : {}),
    ...(prefixRewrite !== undefined ? { prefixRewrite } : {}),
    ...(rr ? { regexRewrite: regexRewrite(w, rr, at(path, 'regexRewrite')) } : {}),
    ...(hostRewrite !== undefined ? { hostRewrite } : {}),
    mirrors: ownMirrors.length > 0 ? ownMirrors : inherited.mirrors,
    hashPolicies: hashPolicies(w, a, path),
    upgrades: routeUpgrades(w, a, path),
  };
}

function singleCluster(name: string): WeightedCluster {
  return { name, weight: 1, requestHeaders: NO_HEADER_EDITS, responseHeaders: NO_HEADER_EDITS };
}

function weightedClusters(
  w: Where,
  wc: Json,
  path: string,
): { clusters: WeightedCluster[]; totalWeight: number } {
  rejectSet(w, wc, path, ['headerName']);
  const raw = list(w, wc, 'clusters', path);
  if (raw.length === 0) fail(w, at(path, 'clusters'), 'at least one cluster is required');
  const clusters: WeightedCluster[] = [];
  let totalWeight = 0;
  for (let i = 0; i < raw.length; i++) {
    const p = idx(at(path, 'clusters'), i);
    const c = elem(w, raw[i], p);
    rejectSet(w, c, p, [
      'clusterHeader',
      'metadataMatch',
      'typedPerFilterConfig',
      'hostRewriteLiteral',
    ]);
    const weight = wrappedUint(w, c, 'weight', p) ?? 0;
    totalWeight += weight;
    clusters.push({
      name: reqStr(w, c, 'name', p),
      weight,
      requestHeaders: headerEdits(w, c, 'requestHeadersToAdd', 'requestHeadersToRemove', p),
      responseHeaders: headerEdits(w, c, 'responseHeadersToAdd', 'responseHeadersToRemove', p),
    });
  }
  if (totalWeight === 0) fail(w, path, 'total weight must be greater than 0');
  const declared = wrappedUint(w, wc, 'totalWeight', path);
  if (declared !== undefined && declared !== totalWeight)
    fail(w, at(path, 'totalWeight'), `is ${declared} but the weights add up to ${totalWeight}`);
  return { clusters, totalWeight };
}

function regexRewrite(
  w: Where,
  rr: Json,
  path: string,
): { readonly regex: RegExp; readonly substitution: string } {
  const pattern = reqObj(w, rr, 'pattern', path);
  const source = reqStr(w, pattern, 'regex', at(path, 'pattern'));
  try {
    return {
      regex: compileRe2(source, false),
      substitution: re2Substitution(typeof rr.substitution === 'string' ? rr.substitution : ''),
    };
  } catch (err) {
    fail(w, path, (err as Error).message);
  }
}

function retryPolicy(w: Where, rp: Json, path: string): RetryPolicy {
  rejectSet(w, rp, path, [
    'perTryIdleTimeout',
    'retryPriority',
    'retryOptionsPredicates',
    'rateLimitedRetryBackOff',
    'retriableHeaders',
    'retriableRequestHeaders',
  ]);
  const retryOn = new Set<string>();
  for (const c of (str(w, rp, 'retryOn', path) ?? '').split(',')) {
    const t = c.trim();
    if (t !== '') retryOn.add(t);
  }
  const predicates = list(w, rp, 'retryHostPredicate', path);
  for (let i = 0; i < predicates.length; i++) {
    const p = idx(at(path, 'retryHostPredicate'), i);
    const pred = elem(w, predicates[i], p);
    const typed = obj(w, pred, 'typedConfig', p);
    const type = typed ? anyType(w, typed, at(p, 'typedConfig')) : '';
    // The proxy never retries on a host a request already tried when it has another.
    if (type !== PREVIOUS_HOSTS_TYPE && str(w, pred, 'name', p) !== PREVIOUS_HOSTS_PREDICATE)
      fail(w, p, `unsupported retry host predicate ${type || String(pred.name)}`);
  }
  const codes = list(w, rp, 'retriableStatusCodes', path);
  const retriableStatusCodes: number[] = [];
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i];
    if (typeof c !== 'number' || !Number.isInteger(c) || c < 100 || c > 599)
      fail(w, idx(at(path, 'retriableStatusCodes'), i), 'expected an HTTP status code');
    retriableStatusCodes.push(c);
  }
  let backoffBaseMs = DEFAULT_RETRY_BASE_MS;
  let backoffMaxMs = DEFAULT_RETRY_BASE_MS * 10;
  const bo = obj(w, rp, 'retryBackOff', path);
  if (bo) {
    const bp = at(path, 'retryBackOff');
    const base = durationMs(w, bo, 'baseInterval', bp);
    if (base === undefined || base <= 0) fail(w, at(bp, 'baseInterval'), 'must be greater than 0');
    const max = durationMs(w, bo, 'maxInterval', bp) ?? base * 10;
    if (max < base) fail(w, at(bp, 'maxInterval'), 'must not be below baseInterval');
    backoffBaseMs = base;
    backoffMaxMs = max;
  }
  const perTry = durationMs(w, rp, 'perTryTimeout', path);
  return {
    retryOn,
    // Envoy: one retry when the policy does not say.
    numRetries: wrappedUint(w, rp, 'numRetries', path) ?? 1,
    // 0 is the same as unset: the route's timeout bounds each try.
    ...(perTry ? { perTryTimeoutMs: perTry } : {}),
    retriableStatusCodes,
    backoffBaseMs,
    backoffMaxMs,
  };
}

function mirrorPolicies(w: Where, o: Json, path: string): readonly MirrorPolicy[] {
  const raw = list(w, o, 'requestMirrorPolicies', path);
  if (raw.length === 0) return NONE;
  return raw.map((m, i) => {
    const p = idx(at(path, 'requestMirrorPolicies'), i);
    const mp = elem(w, m, p);
    rejectSet(w, mp, p, ['clusterHeader']);
    // Envoy mirrors every request when no fraction is given.
    return {
      cluster: reqStr(w, mp, 'cluster', p),
      fraction: runtimeFraction(w, mp, 'runtimeFraction', p) ?? 1,
    };
  });
}

function hashPolicies(w: Where, a: Json, path: string): readonly HashPolicy[] {
  const raw = list(w, a, 'hashPolicy', path);
  if (raw.length === 0) return NONE;
  const out: HashPolicy[] = [];
  for (let i = 0; i < raw.length; i++) {
    const p = idx(at(path, 'hashPolicy'), i);
    const h = elem(w, raw[i], p);
    rejectSet(w, h, p, ['filterState']);
    const terminal = bool(w, h, 'terminal', p);
    const header = obj(w, h, 'header', p);
    const cookie = obj(w, h, 'cookie', p);
    const conn = obj(w, h, 'connectionProperties', p);
    const query = obj(w, h, 'queryParameter', p);
    if (header) {
      const hp = at(p, 'header');
      rejectSet(w, header, hp, ['regexRewrite']);
      out.push({
        kind: 'header',
        name: reqStr(w, header, 'headerName', hp).toLowerCase(),
        terminal,
      });
    } else if (cookie) {
      const cp = at(p, 'cookie');
      rejectSet(w, cookie, cp, ['attributes']);
      const ttlMs = durationMs(w, cookie, 'ttl', cp);
      const cookiePath = str(w, cookie, 'path', cp);
      out.push({
        kind: 'cookie',
        name: reqStr(w, cookie, 'name', cp),
        // Present (even 0, a session cookie): the proxy sets the cookie when the request has none.
        ...(ttlMs !== undefined ? { ttlMs } : {}),
        ...(cookiePath !== undefined ? { path: cookiePath } : {}),
        terminal,
      });
    } else if (conn) {
      // Envoy adds no hash method for `source_ip: false`.
      if (bool(w, conn, 'sourceIp', at(p, 'connectionProperties')))
        out.push({ kind: 'sourceIp', terminal });
    } else if (query) {
      out.push({
        kind: 'queryParameter',
        name: reqStr(w, query, 'name', at(p, 'queryParameter')),
        terminal,
      });
    } else {
      fail(w, p, 'hash policy has no policy specifier');
    }
  }
  return out;
}

function routeUpgrades(w: Where, a: Json, path: string): readonly string[] {
  const raw = list(w, a, 'upgradeConfigs', path);
  if (raw.length === 0) return NONE;
  return raw.map((u, i) => {
    const p = idx(at(path, 'upgradeConfigs'), i);
    const uc = elem(w, u, p);
    rejectSet(w, uc, p, ['connectConfig']);
    // The model can only add upgrades to the connection manager's, not take them away.
    if (wrappedBool(w, uc, 'enabled', p) === false)
      fail(w, at(p, 'enabled'), 'disabling an upgrade on a route is not supported');
    return reqStr(w, uc, 'upgradeType', p).toLowerCase();
  });
}

const REDIRECT_CODES: Readonly<Record<string, number>> = {
  MOVED_PERMANENTLY: 301,
  FOUND: 302,
  SEE_OTHER: 303,
  TEMPORARY_REDIRECT: 307,
  PERMANENT_REDIRECT: 308,
};

function redirectAction(w: Where, r: Json, path: string): RedirectAction {
  rejectSet(w, r, path, ['regexRewrite']);
  const codeName = enumOf(w, r, 'responseCode', path, Object.keys(REDIRECT_CODES));
  const scheme = bool(w, r, 'httpsRedirect', path) ? 'https' : str(w, r, 'schemeRedirect', path);
  const host = str(w, r, 'hostRedirect', path);
  const port = uint(w, r, 'portRedirect', path, 65_535);
  const redirectPath = str(w, r, 'pathRedirect', path);
  const prefixRewrite = str(w, r, 'prefixRewrite', path);
  return {
    kind: 'redirect',
    ...(scheme !== undefined ? { scheme: scheme.toLowerCase() } : {}),
    ...(host !== undefined ? { host } : {}),
    ...(port ? { port } : {}),
    ...(redirectPath !== undefined ? { path: redirectPath } : {}),
    ...(prefixRewrite !== undefined ? { prefixRewrite } : {}),
    responseCode: REDIRECT_CODES[codeName]!,
    stripQuery: bool(w, r, 'stripQuery', path),
  };
}

function directResponse(w: Where, d: Json, path: string): DirectResponseAction {
  const status = uint(w, d, 'status', path);
  if (status === undefined || status < 100 || status > 599)
    fail(w, at(path, 'status'), 'expected an HTTP status code (100-599)');
  const body = obj(w, d, 'body', path);
  if (!body) return { kind: 'direct', status };
  const bp = at(path, 'body');
  rejectSet(w, body, bp, ['filename', 'environmentVariable', 'watchedDirectory']);
  const inline = str(w, body, 'inlineString', bp);
  if (inline !== undefined) return { kind: 'direct', status, body: inline };
  // bytes arrive base64-encoded (ENVOY_JSON_OPTIONS `bytes: String`).
  const bytes = str(w, body, 'inlineBytes', bp);
  return bytes !== undefined
    ? { kind: 'direct', status, body: Buffer.from(bytes, 'base64').toString('utf8') }
    : { kind: 'direct', status };
}

// ---------------------------------------------------------------------------------------------
// Per-filter configs

/** `typed_per_filter_config` of a route configuration, virtual host or route. */
function perFilterConfig(w: Where, o: Json, path: string): PerFilter {
  const m = map(w, o, 'typedPerFilterConfig', path);
  if (m === undefined) return {};
  let fault: FaultPolicy | null | undefined;
  let cors: CorsPolicy | null | undefined;
  const mp = at(path, 'typedPerFilterConfig');
  for (const key of Object.keys(m)) {
    const p = at(mp, key);
    let config = m[key];
    if (!isObj(config)) fail(w, p, 'expected an object');
    let type = anyType(w, config, p);
    let optional = false;
    let disabled = false;
    if (type === FILTER_CONFIG_TYPE) {
      optional = bool(w, config, 'isOptional', p);
      disabled = bool(w, config, 'disabled', p);
      const inner = obj(w, config, 'config', p);
      config = inner ?? {};
      type = inner ? anyType(w, inner, at(p, 'config')) : '';
    }
    const c = config as Json;
    if (type === FAULT_TYPE || (type === '' && key === FAULT_FILTER)) {
      fault = disabled ? null : (faultPolicy(w, c, p) ?? null);
    } else if (type === CORS_TYPE || (type === '' && key === CORS_FILTER)) {
      cors = disabled ? null : (corsPolicy(w, c, p) ?? null);
    } else if (type === RBAC_PER_ROUTE_TYPE || key === RBAC_FILTER) {
      // RBAC is accepted but not enforced by the proxy (see compile-listener.ts).
    } else if (!optional) {
      fail(w, p, `unsupported per-filter config ${type || key}`);
    }
  }
  return { ...(fault !== undefined ? { fault } : {}), ...(cors !== undefined ? { cors } : {}) };
}

/**
 * An `HTTPFault` (route level, or the filter's own config); undefined when it injects nothing.
 * Envoy's percentages default to 0 when absent.
 */
export function faultPolicy(w: Where, f: Json, path: string): FaultPolicy | undefined {
  rejectSet(w, f, path, [
    'upstreamCluster',
    'headers',
    'downstreamNodes',
    'maxActiveFaults',
    'responseRateLimit',
  ]);
  let delay: FaultPolicy['delay'];
  const d = obj(w, f, 'delay', path);
  if (d) {
    const dp = at(path, 'delay');
    rejectSet(w, d, dp, ['headerDelay']);
    const delayMs = durationMs(w, d, 'fixedDelay', dp);
    if (delayMs === undefined) fail(w, at(dp, 'fixedDelay'), 'required');
    const pct = obj(w, d, 'percentage', dp);
    delay = { delayMs, fraction: pct ? fraction(w, pct, at(dp, 'percentage')) : 0 };
  }
  let abort: FaultPolicy['abort'];
  const a = obj(w, f, 'abort', path);
  if (a) {
    const ap = at(path, 'abort');
    rejectSet(w, a, ap, ['headerAbort']);
    const pct = obj(w, a, 'percentage', ap);
    const frac = pct ? fraction(w, pct, at(ap, 'percentage')) : 0;
    const httpStatus = uint(w, a, 'httpStatus', ap);
    const grpcStatus = uint(w, a, 'grpcStatus', ap);
    if (httpStatus !== undefined) {
      if (httpStatus < 200 || httpStatus > 599) fail(w, at(ap, 'httpStatus'), 'must be in 200-599');
      abort = { httpStatus, fraction: frac };
    } else if (grpcStatus !== undefined) {
      abort = { grpcStatus, fraction: frac };
    } else {
      fail(w, ap, 'abort needs httpStatus or grpcStatus');
    }
  }
  if (!delay && !abort) return undefined;
  return { ...(delay ? { delay } : {}), ...(abort ? { abort } : {}) };
}

/** A CorsPolicy (the filter's per-route config or the legacy route field); undefined when off. */
function corsPolicy(w: Where, c: Json, path: string): CorsPolicy | undefined {
  if (wrappedBool(w, c, 'allowPrivateNetworkAccess', path))
    fail(w, at(path, 'allowPrivateNetworkAccess'), 'not supported');
  if (wrappedBool(w, c, 'forwardNotMatchingPreflights', path) === false)
    fail(w, at(path, 'forwardNotMatchingPreflights'), 'false is not supported');
  const enabled = runtimeFraction(w, c, 'filterEnabled', path);
  if (enabled === 0) return undefined;
  if (enabled !== undefined && enabled < 1)
    fail(w, at(path, 'filterEnabled'), 'a partial CORS rollout is not supported');
  const origins = list(w, c, 'allowOriginStringMatch', path);
  const allowOrigins: StringMatcher[] = [];
  for (let i = 0; i < origins.length; i++) {
    const p = idx(at(path, 'allowOriginStringMatch'), i);
    allowOrigins.push(stringMatcher(w, elem(w, origins[i], p), p));
  }
  const maxAge = str(w, c, 'maxAge', path);
  return {
    allowOrigins,
    allowMethods: str(w, c, 'allowMethods', path) ?? '',
    allowHeaders: str(w, c, 'allowHeaders', path) ?? '',
    exposeHeaders: str(w, c, 'exposeHeaders', path) ?? '',
    ...(maxAge !== undefined ? { maxAge } : {}),
    allowCredentials: wrappedBool(w, c, 'allowCredentials', path) ?? false,
  };
}
