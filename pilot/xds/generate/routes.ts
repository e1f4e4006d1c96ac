/**
 * RDS: VirtualService HTTP routes as Envoy routes. Sidecars get route configurations named by
 * port (`"9080"`, Istio's names) with one virtual host per service on that port; proxyless gRPC
 * clients get one named `HOST:PORT` with one virtual host. gRPC's xDS client understands only part
 * of Envoy's route API (gRFC A28, A31, A33, A42, A44): for it, routes it would reject (redirects)
 * or misread (query-parameter matches) are left out, retry conditions are mapped to gRPC status
 * names, and timeouts are `max_stream_duration`s.
 */
import type {
  CorsPolicy,
  Destination,
  HTTPFaultInjection,
  HTTPMatchRequest,
  HTTPRetry,
  HTTPRoute,
  HeaderOperations,
  StringMatch,
} from '../../config/types';
import type { Service } from '../../registry/types';
import type { Flavor } from './endpoints';
import {
  hostAliases,
  outboundClusterName,
  parseHostPort,
  PASSTHROUGH_CLUSTER,
  resolveHost,
} from './names';
import type { ProxyScope, VirtualServiceEntry } from './scope';
import { effectivePolicy } from './traffic-policy';
import {
  duration,
  fractionalPercent,
  FILTERS,
  grpcStatusCode,
  isHttpProtocol,
  labelsMatch,
  memo,
  TYPES,
  type Obj,
} from './util';

/** Where routes are being built: for whom, and for which port of the destination. */
export interface RouteContext {
  readonly scope: ProxyScope;
  readonly flavor: Flavor;
  /** The port the client addressed (the route configuration's port). */
  readonly port: number;
}

/** The routes of one virtual host, and which HTTP filters they need. */
export interface TranslatedRoutes {
  readonly routes: Obj[];
  readonly usesFault: boolean;
  readonly usesCors: boolean;
}

/** Istio's default retry conditions (attempts 2, retry on 503 too). */
export const DEFAULT_RETRY_ON =
  'connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes';
export const DEFAULT_RETRY_ATTEMPTS = 2;

/** The retry conditions gRPC's xDS client understands (A44). */
const GRPC_RETRY_CONDITIONS = new Set([
  'cancelled',
  'deadline-exceeded',
  'internal',
  'resource-exhausted',
  'unavailable',
]);
/** Envoy conditions whose failures a gRPC client sees as UNAVAILABLE. */
const GRPC_UNAVAILABLE_LIKE = new Set([
  '5xx',
  'gateway-error',
  'connect-failure',
  'refused-stream',
  'reset',
  'reset-before-request',
]);

/** Istio's retryOn as gRPC retry conditions; empty when none applies. */
export function grpcRetryOn(retryOn: string): string {
  const out = new Set<string>();
  for (const raw of retryOn.split(',')) {
    const c = raw.trim();
    if (GRPC_RETRY_CONDITIONS.has(c)) out.add(c);
    else if (GRPC_UNAVAILABLE_LIKE.has(c)) out.add('unavailable');
  }
  return [...out].join(',');
}

function retryPolicy(retries: HTTPRetry | undefined, flavor: Flavor): Obj | undefined {
  if (flavor === 'proxyless') {
    if (!retries || retries.attempts <= 0) return undefined;
    const retryOn = grpcRetryOn(retries.retryOn ?? DEFAULT_RETRY_ON);
    if (retryOn === '') return undefined;
    return { retryOn, numRetries: { value: retries.attempts } };
  }
  if (retries && retries.attempts <= 0) return undefined;
  const conditions: string[] = [];
  const codes: number[] = [];
  for (const raw of (retries?.retryOn ?? DEFAULT_RETRY_ON).split(',')) {
    const c = raw.trim();
    if (c === '') continue;
    if (/^\d{3}$/.test(c)) codes.push(Number(c));
    else conditions.push(c);
  }
  if (retries?.retryOn === undefined) codes.push(503);
  if (codes.length > 0 && !conditions.includes('retriable-status-codes'))
    conditions.push('retriable-status-codes');
  const out: Obj = {
    retryOn: conditions.join(','),
    numRetries: { value: retries?.attempts ?? DEFAULT_RETRY_ATTEMPTS },
  };
  if (codes.length > 0) out.retriableStatusCodes = [...new Set(codes)];
  const perTry = duration(retries?.perTryTimeout);
  if (perTry) out.perTryTimeout = perTry;
  return out;
}

/** An Istio StringMatch as an Envoy StringMatcher; undefined for an empty one. */
function stringMatcher(m: StringMatch): Obj | undefined {
  if (m.exact !== undefined) return { exact: m.exact };
  if (m.prefix !== undefined) return { prefix: m.prefix };
  if (m.regex !== undefined) return { safeRegex: { regex: m.regex } };
  return undefined;
}

/** A header match; an empty StringMatch means "present" (Istio). */
function headerMatcher(name: string, m: StringMatch, invert: boolean): Obj {
  const matcher = stringMatcher(m);
  const out: Obj = matcher ? { name, stringMatch: matcher } : { name, presentMatch: true };
  if (invert) out.invertMatch = true;
  return out;
}

function routeMatch(m: HTTPMatchRequest | undefined, flavor: Flavor): Obj {
  const out: Obj = {};
  const uri = m?.uri;
  if (uri?.exact !== undefined) out.path = uri.exact;
  else if (uri?.prefix !== undefined) out.prefix = uri.prefix;
  else if (uri?.regex !== undefined) out.safeRegex = { regex: uri.regex };
  else out.prefix = '/';
  if (m?.ignoreUriCase) out.caseSensitive = { value: false };
  const headers: Obj[] = [];
  for (const [name, sm] of Object.entries(m?.headers ?? {}))
    headers.push(headerMatcher(name.toLowerCase(), sm, false));
  for (const [name, sm] of Object.entries(m?.withoutHeaders ?? {}))
    headers.push(headerMatcher(name.toLowerCase(), sm, true));
  if (m?.method) headers.push(headerMatcher(':method', m.method, false));
  if (m?.authority) headers.push(headerMatcher(':authority', m.authority, false));
  if (m?.scheme) headers.push(headerMatcher(':scheme', m.scheme, false));
  if (headers.length > 0) out.headers = headers;
  if (flavor === 'sidecar' && m?.queryParams) {
    const params = Object.entries(m.queryParams).map(([name, sm]) => {
      const matcher = stringMatcher(sm);
      return matcher ? { name, stringMatch: matcher } : { name, presentMatch: true };
    });
    if (params.length > 0) out.queryParameters = params;
  }
  return out;
}

/** Whether a match block applies to this client and port (the parts decided at generation). */
function matchApplies(m: HTTPMatchRequest, ctx: RouteContext): boolean {
  if (m.port !== undefined && m.port !== ctx.port) return false;
  if (m.sourceLabels && !labelsMatch(m.sourceLabels, ctx.scope.proxy.labels)) return false;
  if (m.sourceNamespace !== undefined && m.sourceNamespace !== ctx.scope.namespace) return false;
  if (m.gateways && m.gateways.length > 0 && !m.gateways.includes('mesh')) return false;
  // A gRPC request has no query string: a query match could only ever fail, and gRPC would
  // ignore it and match everything instead.
  if (ctx.flavor === 'proxyless' && m.queryParams && Object.keys(m.queryParams).length > 0)
    return false;
  return true;
}

/** The cluster a destination names, its host resolved in the VirtualService's namespace. */
export function destinationCluster(ctx: RouteContext, d: Destination, namespace: string): string {
  const host = resolveHost(d.host, namespace, ctx.scope.push.mesh.domainSuffix);
  return outboundClusterName(host, destinationPort(ctx, d, host), d.subset ?? '');
}

function destinationPort(ctx: RouteContext, d: Destination, host: string): number {
  if (d.port?.number !== undefined) return d.port.number;
  const ports = ctx.scope.push.registry.getService(host)?.ports ?? [];
  return ports.length === 1 ? ports[0]!.port : ctx.port;
}

/** The hash policy a DestinationRule's consistentHash asks of routes to a destination. */
function hashPolicy(ctx: RouteContext, d: Destination, namespace: string): Obj[] | undefined {
  const host = resolveHost(d.host, namespace, ctx.scope.push.mesh.domainSuffix);
  const dr = ctx.scope.destinationRule(host);
  if (!dr) return undefined;
  const ch = effectivePolicy(dr.spec, destinationPort(ctx, d, host), d.subset ?? '').loadBalancer
    ?.consistentHash;
  if (!ch) return undefined;
  if (ch.httpHeaderName) return [{ header: { headerName: ch.httpHeaderName.toLowerCase() } }];
  if (ctx.flavor === 'proxyless') {
    // gRPC hashes headers, or its channel id: the closest it has to "same client, same backend".
    return ch.useSourceIp ? [{ filterState: { key: 'io.grpc.channel_id' } }] : undefined;
  }
  if (ch.httpCookie) {
    const cookie: Obj = { name: ch.httpCookie.name };
    if (ch.httpCookie.path) cookie.path = ch.httpCookie.path;
    const ttl = duration(ch.httpCookie.ttl);
    if (ttl) cookie.ttl = ttl;
    return [{ cookie }];
  }
  if (ch.useSourceIp) return [{ connectionProperties: { sourceIp: true } }];
  if (ch.httpQueryParameterName) return [{ queryParameter: { name: ch.httpQueryParameterName } }];
  return undefined;
}

/** Istio's fault injection as the fault filter's per-route config; undefined when it does nothing. */
export function faultConfig(f: HTTPFaultInjection): Obj | undefined {
  const out: Obj = { '@type': TYPES.fault };
  const delay = f.delay ? duration(f.delay.fixedDelay) : undefined;
  if (f.delay && delay)
    out.delay = {
      fixedDelay: delay,
      percentage: fractionalPercent(f.delay.percentage, f.delay.percent),
    };
  if (f.abort) {
    const percentage = fractionalPercent(f.abort.percentage, f.abort.percent);
    // Envoy accepts 200-599 only; validation rejects anything else before it is stored.
    if (f.abort.httpStatus !== undefined && f.abort.httpStatus >= 200 && f.abort.httpStatus < 600)
      out.abort = { httpStatus: f.abort.httpStatus, percentage };
    else if (f.abort.grpcStatus !== undefined) {
      const code = grpcStatusCode(f.abort.grpcStatus);
      if (code !== undefined) out.abort = { grpcStatus: code, percentage };
    }
  }
  return out.delay || out.abort ? out : undefined;
}

function corsConfig(c: CorsPolicy): Obj {
  const origins: Obj[] = [];
  for (const o of c.allowOrigins ?? []) {
    const m = stringMatcher(o);
    if (m) origins.push(m);
  }
  for (const o of c.allowOrigin ?? [])
    origins.push(o === '*' ? { safeRegex: { regex: '.*' } } : { exact: o });
  const out: Obj = { '@type': TYPES.corsPolicy };
  if (origins.length > 0) out.allowOriginStringMatch = origins;
  if (c.allowMethods?.length) out.allowMethods = c.allowMethods.join(',');
  if (c.allowHeaders?.length) out.allowHeaders = c.allowHeaders.join(',');
  if (c.exposeHeaders?.length) out.exposeHeaders = c.exposeHeaders.join(',');
  const maxAge = duration(c.maxAge);
  if (maxAge) out.maxAge = String(maxAge.seconds);
  if (c.allowCredentials !== undefined) out.allowCredentials = { value: c.allowCredentials };
  return out;
}

/** Header edits: `set` overwrites, `add` appends, `remove` removes. */
interface HeaderEdits {
  requestHeadersToAdd?: Obj[];
  requestHeadersToRemove?: string[];
  responseHeadersToAdd?: Obj[];
  responseHeadersToRemove?: string[];
}

function headerEdits(
  request: HeaderOperations | undefined,
  response: HeaderOperations | undefined,
): HeaderEdits {
  const adds = (ops: HeaderOperations | undefined): Obj[] => [
    ...Object.entries(ops?.set ?? {}).map(([key, value]) => ({
      header: { key, value },
      appendAction: 'OVERWRITE_IF_EXISTS_OR_ADD',
    })),
    ...Object.entries(ops?.add ?? {}).map(([key, value]) => ({
      header: { key, value },
      appendAction: 'APPEND_IF_EXISTS_OR_ADD',
    })),
  ];
  const out: HeaderEdits = {};
  const reqAdd = adds(request);
  const respAdd = adds(response);
  if (reqAdd.length > 0) out.requestHeadersToAdd = reqAdd;
  if (request?.remove?.length) out.requestHeadersToRemove = [...request.remove];
  if (respAdd.length > 0) out.responseHeadersToAdd = respAdd;
  if (response?.remove?.length) out.responseHeadersToRemove = [...response.remove];
  return out;
}

/** Route-level header edits, Istio 1.0's fields folded into `headers`. */
function routeHeaderEdits(r: HTTPRoute): HeaderEdits {
  const request: HeaderOperations = {
    set: r.headers?.request?.set,
    add: { ...r.appendHeaders, ...r.appendRequestHeaders, ...r.headers?.request?.add },
    remove: [...(r.removeRequestHeaders ?? []), ...(r.headers?.request?.remove ?? [])],
  };
  const response: HeaderOperations = {
    set: r.headers?.response?.set,
    add: { ...r.appendResponseHeaders, ...r.headers?.response?.add },
    remove: [...(r.removeResponseHeaders ?? []), ...(r.headers?.response?.remove ?? [])],
  };
  return headerEdits(request, response);
}

const REDIRECT_CODES: Readonly<Record<number, string>> = {
  301: 'MOVED_PERMANENTLY',
  302: 'FOUND',
  303: 'SEE_OTHER',
  307: 'TEMPORARY_REDIRECT',
  308: 'PERMANENT_REDIRECT',
};

/** The action part of a route (route or redirect), or undefined when it cannot be served. */
function routeAction(ctx: RouteContext, r: HTTPRoute, namespace: string): Obj | undefined {
  const sidecar = ctx.flavor === 'sidecar';
  if (r.redirect) {
    // gRPC rejects a whole route configuration that has a redirect in it.
    if (!sidecar) return undefined;
    const redirect: Obj = {};
    if (r.redirect.uri) redirect.pathRedirect = r.redirect.uri;
    if (r.redirect.authority) redirect.hostRedirect = r.redirect.authority;
    if (r.redirect.port) redirect.portRedirect = r.redirect.port;
    if (r.redirect.scheme) redirect.schemeRedirect = r.redirect.scheme;
    redirect.responseCode = REDIRECT_CODES[r.redirect.redirectCode ?? 301] ?? 'MOVED_PERMANENTLY';
    return { redirect };
  }
  const destinations = (r.route ?? []).filter(
    d => (r.route?.length ?? 0) === 1 || (d.weight ?? 0) > 0,
  );
  if (destinations.length === 0) return undefined;
  const action: Obj = {};
  const only = destinations.length === 1 ? destinations[0]! : undefined;
  // A single destination with its own header edits needs weighted_clusters to carry them (as
  // Istio does): a plain `cluster` action has nowhere to put per-destination headers.
  if (only && !(sidecar && (only.headers?.request || only.headers?.response))) {
    action.cluster = destinationCluster(ctx, destinations[0]!.destination, namespace);
  } else {
    action.weightedClusters = {
      clusters: destinations.map(d => ({
        name: destinationCluster(ctx, d.destination, namespace),
        weight: { value: destinations.length === 1 ? 100 : (d.weight ?? 0) },
        ...(sidecar ? headerEdits(d.headers?.request, d.headers?.response) : {}),
      })),
    };
  }
  const timeout = duration(r.timeout);
  if (sidecar) {
    // Istio: no route timeout unless the VirtualService sets one (Envoy's default is 15 s).
    action.timeout = timeout ?? { seconds: 0 };
  } else if (timeout) {
    action.maxStreamDuration = { maxStreamDuration: timeout, grpcTimeoutHeaderMax: timeout };
  }
  const retry = retryPolicy(r.retries, ctx.flavor);
  if (retry) action.retryPolicy = retry;
  const hashes = destinations.map(d => hashPolicy(ctx, d.destination, namespace));
  const first = hashes[0];
  if (first && hashes.every(h => JSON.stringify(h) === JSON.stringify(first)))
    action.hashPolicy = first;
  if (sidecar) {
    if (r.rewrite?.uri) action.prefixRewrite = r.rewrite.uri;
    if (r.rewrite?.authority) action.hostRewriteLiteral = r.rewrite.authority;
    if (r.mirror) {
      action.requestMirrorPolicies = [
        {
          cluster: destinationCluster(ctx, r.mirror, namespace),
          runtimeFraction: {
            defaultValue: fractionalPercent(r.mirrorPercentage, r.mirrorPercent ?? 100),
          },
        },
      ];
    }
    if (r.websocketUpgrade) action.upgradeConfigs = [{ upgradeType: 'websocket' }];
  }
  return { route: action };
}

/** One VirtualService HTTP route as Envoy routes (one per applicable match block). */
function translateHttpRoute(
  ctx: RouteContext,
  r: HTTPRoute,
  vs: VirtualServiceEntry,
): { routes: Obj[]; fault: boolean; cors: boolean } {
  const none = { routes: [], fault: false, cors: false };
  const matches =
    r.match && r.match.length > 0 ? r.match.filter(m => matchApplies(m, ctx)) : [undefined];
  if (matches.length === 0) return none;
  const action = routeAction(ctx, r, vs.namespace);
  if (!action) return none;
  const sidecar = ctx.flavor === 'sidecar';
  const perFilter: Obj = {};
  const fault = r.fault ? faultConfig(r.fault) : undefined;
  if (fault) perFilter[FILTERS.fault] = fault;
  if (sidecar && r.corsPolicy) perFilter[FILTERS.cors] = corsConfig(r.corsPolicy);
  const common: Obj = sidecar ? { ...routeHeaderEdits(r) } : {};
  if (Object.keys(perFilter).length > 0) common.typedPerFilterConfig = perFilter;
  const routes = matches.map(m => {
    const name = [r.name, m?.name].filter(Boolean).join('.');
    return { ...(name ? { name } : {}), match: routeMatch(m, ctx.flavor), ...action, ...common };
  });
  return { routes, fault: fault !== undefined, cors: perFilter[FILTERS.cors] !== undefined };
}

/** The route to the whole service on this port, when no VirtualService routes it. */
function defaultRoute(ctx: RouteContext, service: Service): Obj {
  const d: Destination = { host: service.hostname, port: { number: ctx.port } };
  const action: Obj = { cluster: outboundClusterName(service.hostname, ctx.port) };
  if (ctx.flavor === 'sidecar') {
    action.timeout = { seconds: 0 };
    const retry = retryPolicy(undefined, 'sidecar');
    if (retry) action.retryPolicy = retry;
  }
  const hash = hashPolicy(ctx, d, service.namespace);
  if (hash) action.hashPolicy = hash;
  return { name: 'default', match: { prefix: '/' }, route: action };
}

/** The routes for `service` on `ctx.port`: its VirtualService's, else the default route. */
export function serviceRoutes(ctx: RouteContext, service: Service): TranslatedRoutes {
  const vs = ctx.scope.virtualService(service.hostname);
  const routes: Obj[] = [];
  let usesFault = false;
  let usesCors = false;
  for (const r of vs?.spec.http ?? []) {
    const t = translateHttpRoute(ctx, r, vs!);
    routes.push(...t.routes);
    usesFault ||= t.fault;
    usesCors ||= t.cors;
  }
  if (routes.length === 0) routes.push(defaultRoute(ctx, service));
  return { routes, usesFault, usesCors };
}

/** Domains a sidecar client may use for a service on a port: names, short names, VIPs, each with `:PORT`. */
export function virtualHostDomains(scope: ProxyScope, service: Service, port: number): string[] {
  const names = [
    ...hostAliases(service.hostname, scope.namespace, scope.push.mesh.domainSuffix),
    ...service.addresses.filter(a => !a.includes('/')),
  ];
  return names.flatMap(n => [n, `${n}:${port}`]);
}

/** A route configuration and whether its routes need the fault filter. */
export interface RouteConfigResult {
  readonly config: Obj;
  readonly usesFault: boolean;
}

/**
 * The sidecar route configuration for outbound port `port` (named `"PORT"`): a virtual host per
 * visible HTTP service on the port, then a catch-all that passes unknown hosts through
 * (ALLOW_ANY) or answers 502 (REGISTRY_ONLY).
 */
export function sidecarRouteConfig(scope: ProxyScope, port: number): Obj {
  return memo(scope.push.cache, `xdsgen|rds|sidecar|${scope.key}|${port}`, () => {
    const ctx: RouteContext = { scope, flavor: 'sidecar', port };
    const used = new Set<string>();
    const virtualHosts: Obj[] = [];
    for (const { service, ports } of scope.services) {
      const p = ports.find(x => x.port === port);
      if (!p || !isHttpProtocol(p.protocol)) continue;
      const domains = virtualHostDomains(scope, service, port).filter(d => !used.has(d));
      if (domains.length === 0) continue;
      for (const d of domains) used.add(d);
      virtualHosts.push({
        name: `${service.hostname}:${port}`,
        domains,
        routes: serviceRoutes(ctx, service).routes,
      });
    }
    virtualHosts.push(
      scope.outboundTrafficPolicy === 'ALLOW_ANY'
        ? {
            name: 'allow_any',
            domains: ['*'],
            routes: [
              {
                name: 'allow_any',
                match: { prefix: '/' },
                route: { cluster: PASSTHROUGH_CLUSTER, timeout: { seconds: 0 } },
              },
            ],
          }
        : {
            name: 'block_all',
            domains: ['*'],
            routes: [
              { name: 'block_all', match: { prefix: '/' }, directResponse: { status: 502 } },
            ],
          },
    );
    return { name: String(port), virtualHosts, validateClusters: { value: false } };
  });
}

/** Resolves a proxyless name `HOST:PORT` to a visible service and port; undefined if none. */
export function resolveProxylessTarget(
  scope: ProxyScope,
  name: string,
): { service: Service; port: number } | undefined {
  const hp = parseHostPort(name);
  if (!hp) return undefined;
  const host = resolveHost(hp.host, scope.namespace, scope.push.mesh.domainSuffix);
  const visible = scope.service(host);
  if (!visible) return undefined;
  const port = hp.port ?? (visible.ports.length === 1 ? visible.ports[0]!.port : undefined);
  if (port === undefined || !visible.ports.some(p => p.port === port)) return undefined;
  return { service: visible.service, port };
}

/**
 * The route configuration a proxyless client asked for as `HOST:PORT`: one virtual host whose
 * domains include that exact name (gRPC matches its target against them).
 */
export function proxylessRouteConfig(
  scope: ProxyScope,
  name: string,
): RouteConfigResult | undefined {
  return memo(scope.push.cache, `xdsgen|rds|proxyless|${scope.key}|${name}`, () => {
    const target = resolveProxylessTarget(scope, name);
    if (!target) return undefined;
    const { service, port } = target;
    const t = serviceRoutes({ scope, flavor: 'proxyless', port }, service);
    const domains = [...new Set([name, service.hostname, `${service.hostname}:${port}`])];
    return {
      config: {
        name,
        virtualHosts: [{ name, domains, routes: t.routes }],
      },
      usesFault: t.usesFault,
    };
  });
}
