/**
 * Semantic checks of one document, after its schema passed: the rules of Istio's
 * `pkg/config/validation` (one-ofs, weights, hosts, names, per-kind constraints) that relate
 * fields to each other. Each problem is reported with its field path from the object root.
 */
import type { PathSegment } from './parse';
import {
  checkFqdn,
  checkIpOrCidr,
  checkLabelMap,
  checkWildcardDomain,
  hostCovers,
  isDns1123Label,
  isDns1123Subdomain,
  isDnsLabel,
  isIp,
  isShortName,
} from './names';
import type {
  AuthorizationPolicySpec,
  ClientTLSSettings,
  ConfigObject,
  Destination,
  DestinationRuleSpec,
  GatewaySpec,
  Headers,
  HTTPRoute,
  HTTPRouteDestination,
  Kind,
  L4MatchAttributes,
  PeerAuthenticationSpec,
  RouteDestination,
  ServiceEntrySpec,
  SidecarSpec,
  StringMatch,
  TrafficPolicy,
  VirtualServiceSpec,
  WorkloadEntrySpec,
  WorkloadGroupSpec,
} from './types';

/** A field path from the object root: `['spec', 'http', 0, 'route']`. */
export type Path = readonly PathSegment[];

/** Records one problem at `path`. */
export type Report = (path: Path, message: string) => void;

/** The gateway name that binds a VirtualService to every sidecar. */
export const MESH_GATEWAY = 'mesh';

const q = (s: string) => JSON.stringify(s);

/** Runs the checks for `obj`'s kind. */
export function checkObject(obj: ConfigObject, report: Report): void {
  const checks: { [K in Kind]: (obj: ConfigObject<K>, report: Report) => void } = {
    ServiceEntry: o => checkServiceEntry(o.spec, o.metadata.namespace, report),
    WorkloadEntry: o => checkWorkloadEntry(o.spec, ['spec'], report, true),
    WorkloadGroup: o => checkWorkloadGroup(o.spec, report),
    DestinationRule: o => checkDestinationRule(o.spec, o.metadata.namespace, report),
    VirtualService: o => checkVirtualService(o.spec, o.metadata.namespace, report),
    Gateway: o => checkGateway(o, report),
    Sidecar: o => checkSidecar(o.spec, report),
    PeerAuthentication: o => checkPeerAuthentication(o.spec, report),
    AuthorizationPolicy: o => checkAuthorizationPolicy(o.spec, report),
  };
  (checks[obj.kind] as (o: ConfigObject, r: Report) => void)(obj, report);
}

// ---------------------------------------------------------------------------------------------
// Shared pieces

/** Label maps: each bad key or value reported at `path.KEY`. */
function checkLabels(labels: Record<string, string> | undefined, path: Path, report: Report) {
  if (labels) for (const { key, message } of checkLabelMap(labels)) report([...path, key], message);
}

/** Workload selectors: no wildcards (Istio `validateWorkloadSelector`), and valid labels. */
function checkSelector(labels: Record<string, string> | undefined, path: Path, report: Report) {
  if (!labels) return;
  const plain: Record<string, string> = {};
  for (const [k, v] of Object.entries(labels)) {
    if (k.includes('*') || v.includes('*'))
      report([...path, k], `wildcards are not supported in selectors: ${q(`${k}=${v}`)}`);
    else plain[k] = v;
  }
  checkLabels(plain, path, report);
}

/** `exportTo`: `*`, `.`, namespaces, and `~` for ServiceEntries; no duplicates; `*` and `~` alone. */
function checkExportTo(
  exportTo: readonly string[] | undefined,
  namespace: string,
  allowNone: boolean,
  path: Path,
  report: Report,
) {
  if (!exportTo) return;
  const seen = new Set<string>();
  for (const [i, e] of exportTo.entries()) {
    const key = e === '.' ? namespace : e;
    if (seen.has(key)) report([...path, i], `duplicate exportTo entry ${q(e)}`);
    seen.add(key);
    if (e === '*' || e === '.' || (e === '~' && allowNone)) continue;
    if (!isDns1123Label(e))
      report(
        [...path, i],
        `invalid exportTo entry ${q(e)}: want "*", ".", ${allowNone ? '"~", ' : ''}or a namespace`,
      );
  }
  if (exportTo.length > 1 && exportTo.includes('*'))
    report(path, '"*" exports to every namespace: it cannot be combined with other entries');
  if (allowNone && exportTo.length > 1 && exportTo.includes('~'))
    report(path, '"~" exports to no namespace: it cannot be combined with other entries');
}

/** Gateway references in a VirtualService: `mesh`, `ns/name`, or `name` (same namespace). */
function checkGatewayNames(names: readonly string[] | undefined, path: Path, report: Report) {
  for (const [i, name] of (names ?? []).entries()) {
    if (name === MESH_GATEWAY) continue;
    const slash = name.indexOf('/');
    if (slash < 0) {
      const err = checkFqdn(name);
      if (err) report([...path, i], `invalid gateway ${q(name)}: want NAME or NAMESPACE/NAME`);
      continue;
    }
    const ns = name.slice(0, slash);
    const gw = name.slice(slash + 1);
    if (!isDns1123Label(ns) || !isDns1123Label(gw))
      report(
        [...path, i],
        `invalid gateway ${q(name)}: want NAMESPACE/NAME, both lower-case DNS labels`,
      );
  }
}

/** Exactly one of exact/prefix/regex; with `allowEmpty` (header and query matches) none tests presence. */
function checkStringMatch(m: StringMatch, path: Path, report: Report, allowEmpty = false) {
  const set = (['exact', 'prefix', 'regex'] as const).filter(k => m[k] !== undefined);
  if (set.length > 1)
    report(path, `want exactly one of exact, prefix or regex, got ${set.join(' and ')}`);
  else if (set.length === 0 && !allowEmpty) report(path, 'want one of exact, prefix or regex');
  if (m.prefix === '') report([...path, 'prefix'], 'empty prefix: omit the match instead');
}

const HEADER_NAME_RE = /^[-_A-Za-z0-9]+$/;

function checkHeaderName(name: string, path: Path, report: Report) {
  if (!HEADER_NAME_RE.test(name))
    report(path, `invalid header name ${q(name)}: want letters, digits, "-" and "_"`);
}

// Envoy rejects control characters in header values it adds.
const HEADER_VALUE_RE = /^[^\u0000-\u0008\u000A-\u001F\u007F]*$/; // eslint-disable-line no-control-regex

function checkHeaderOperations(h: Headers | undefined, path: Path, report: Report) {
  if (!h) return;
  for (const dir of ['request', 'response'] as const) {
    const ops = h[dir];
    if (!ops) continue;
    for (const op of ['set', 'add'] as const)
      for (const [name, value] of Object.entries(ops[op] ?? {})) {
        const p = [...path, dir, op, name];
        checkHeaderOperationName(name, dir === 'request', p, report);
        if (!HEADER_VALUE_RE.test(value))
          report(p, `header value ${q(value)} contains control characters`);
      }
    for (const [i, name] of (ops.remove ?? []).entries())
      checkHeaderOperationName(name, false, [...path, dir, 'remove', i], report);
  }
}

function checkHeaderOperationName(
  name: string,
  mayBeAuthority: boolean,
  path: Path,
  report: Report,
) {
  const lower = name.toLowerCase();
  if (name === '') report(path, 'header name cannot be empty');
  else if (mayBeAuthority && (lower === ':authority' || lower === 'host')) return;
  else if (lower === 'host') report(path, 'the Host header cannot be changed here');
  else if (name.startsWith(':')) report(path, `pseudo-header ${q(name)} cannot be changed`);
}

// ---------------------------------------------------------------------------------------------
// VirtualService

const RETRY_ON = new Set([
  '5xx',
  'gateway-error',
  'reset',
  'reset-before-request',
  'connect-failure',
  'retriable-4xx',
  'refused-stream',
  'retriable-status-codes',
  'retriable-headers',
  'envoy-ratelimited',
  'http3-post-connect-failure',
  'cancelled',
  'deadline-exceeded',
  'internal',
  'resource-exhausted',
  'unavailable',
]);

const GRPC_STATUSES = new Set([
  'OK',
  'CANCELLED',
  'UNKNOWN',
  'INVALID_ARGUMENT',
  'DEADLINE_EXCEEDED',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED',
  'FAILED_PRECONDITION',
  'ABORTED',
  'OUT_OF_RANGE',
  'UNIMPLEMENTED',
  'INTERNAL',
  'UNAVAILABLE',
  'DATA_LOSS',
  'UNAUTHENTICATED',
]);

const HTTP_METHODS = new Set([
  'GET',
  'HEAD',
  'POST',
  'PUT',
  'PATCH',
  'DELETE',
  'CONNECT',
  'OPTIONS',
  'TRACE',
]);

/** True when a VirtualService applies to sidecars (no gateways, or `mesh` among them). */
export function isMeshBound(spec: VirtualServiceSpec): boolean {
  return !spec.gateways?.length || spec.gateways.includes(MESH_GATEWAY);
}

function checkVirtualService(spec: VirtualServiceSpec, namespace: string, report: Report) {
  const meshBound = isMeshBound(spec);
  const hosts = spec.hosts ?? [];
  // Istio treats a VirtualService without hosts as a delegate; Sail has no delegation.
  if (hosts.length === 0) report(['spec', 'hosts'], 'at least one host is required');
  let hostsValid = true;
  for (const [i, host] of hosts.entries()) {
    const err = checkWildcardDomain(host);
    if (err && !isIp(host)) {
      report(['spec', 'hosts', i], err);
      hostsValid = false;
    } else if (host === '*' && meshBound) {
      report(
        ['spec', 'hosts', i],
        'the wildcard host "*" is allowed only for virtual services bound to gateways (set gateways without "mesh")',
      );
      hostsValid = false;
    }
  }
  if (hostsValid)
    for (let i = 0; i < hosts.length; i++)
      for (let j = i + 1; j < hosts.length; j++) {
        const a = hosts[i] as string;
        const b = hosts[j] as string;
        if (hostCovers(a, b) || hostCovers(b, a))
          report(['spec', 'hosts', j], `host ${q(b)} duplicates or overlaps host ${q(a)}`);
      }
  checkGatewayNames(spec.gateways, ['spec', 'gateways'], report);

  if (!spec.http?.length && !spec.tcp?.length && !spec.tls?.length)
    report(['spec'], 'at least one of http, tcp or tls routes is required');
  for (const [i, route] of (spec.http ?? []).entries())
    checkHttpRoute(route, ['spec', 'http', i], report);
  for (const [i, route] of (spec.tls ?? []).entries()) {
    const path = ['spec', 'tls', i];
    if (route.match.length === 0) report([...path, 'match'], 'at least one match is required');
    for (const [j, m] of route.match.entries()) {
      const mp = [...path, 'match', j];
      if (m.sniHosts.length === 0) report([...mp, 'sniHosts'], 'at least one SNI host is required');
      for (const [k, sni] of m.sniHosts.entries()) {
        const err = checkWildcardDomain(sni);
        if (err) report([...mp, 'sniHosts', k], err);
        else if (!hosts.some(h => hostCovers(h, sni)))
          report(
            [...mp, 'sniHosts', k],
            `SNI host ${q(sni)} is not covered by any of the virtual service's hosts (${hosts.join(', ')})`,
          );
      }
      checkL4Match(m, mp, report);
    }
    checkRouteDestinations(route.route, [...path, 'route'], report);
  }
  for (const [i, route] of (spec.tcp ?? []).entries()) {
    const path = ['spec', 'tcp', i];
    for (const [j, m] of (route.match ?? []).entries())
      checkL4Match(m, [...path, 'match', j], report);
    checkRouteDestinations(route.route, [...path, 'route'], report);
  }
  checkExportTo(spec.exportTo, namespace, false, ['spec', 'exportTo'], report);
}

function checkL4Match(m: L4MatchAttributes, path: Path, report: Report) {
  for (const [k, subnet] of (m.destinationSubnets ?? []).entries()) {
    const err = checkIpOrCidr(subnet);
    if (err) report([...path, 'destinationSubnets', k], err);
  }
  if (m.sourceSubnet !== undefined) {
    const err = checkIpOrCidr(m.sourceSubnet);
    if (err) report([...path, 'sourceSubnet'], err);
  }
  checkLabels(m.sourceLabels, [...path, 'sourceLabels'], report);
  if (m.sourceNamespace !== undefined && !isDns1123Label(m.sourceNamespace))
    report([...path, 'sourceNamespace'], `invalid namespace ${q(m.sourceNamespace)}`);
  checkGatewayNames(m.gateways, [...path, 'gateways'], report);
}

function checkHttpRoute(route: HTTPRoute, path: Path, report: Report) {
  if (route.redirect) {
    const rp = [...path, 'redirect'];
    if (route.route?.length)
      report(rp, 'redirect and route are exclusive: a rule either redirects or routes');
    if (route.fault) report(rp, 'redirect and fault are exclusive');
    if (route.rewrite) report(rp, 'redirect and rewrite are exclusive');
    const r = route.redirect;
    if (
      r.uri === undefined &&
      r.authority === undefined &&
      r.port === undefined &&
      r.scheme === undefined
    )
      report(rp, 'a redirect needs at least one of uri, authority, port or scheme');
    if (r.scheme !== undefined && r.scheme !== 'http' && r.scheme !== 'https')
      report([...rp, 'scheme'], `invalid redirect scheme ${q(r.scheme)}: want http or https`);
  } else if (!route.route?.length) {
    report([...path, 'route'], 'a route or a redirect is required');
  }

  for (const [j, m] of (route.match ?? []).entries()) {
    const mp = [...path, 'match', j];
    for (const field of ['uri', 'scheme', 'method', 'authority'] as const) {
      const sm = m[field];
      if (sm) checkStringMatch(sm, [...mp, field], report);
    }
    for (const field of ['headers', 'withoutHeaders'] as const)
      for (const [name, sm] of Object.entries(m[field] ?? {})) {
        checkHeaderName(name, [...mp, field, name], report);
        checkStringMatch(sm, [...mp, field, name], report, true);
      }
    for (const [name, sm] of Object.entries(m.queryParams ?? {}))
      checkStringMatch(sm, [...mp, 'queryParams', name], report, true);
    checkLabels(m.sourceLabels, [...mp, 'sourceLabels'], report);
    if (m.sourceNamespace !== undefined && !isDns1123Label(m.sourceNamespace))
      report([...mp, 'sourceNamespace'], `invalid namespace ${q(m.sourceNamespace)}`);
    checkGatewayNames(m.gateways, [...mp, 'gateways'], report);
  }

  if (route.route) checkHttpRouteDestinations(route.route, [...path, 'route'], report);

  if (route.rewrite && route.rewrite.uri === undefined && route.rewrite.authority === undefined)
    report([...path, 'rewrite'], 'a rewrite needs uri or authority');

  const retries = route.retries;
  if (retries) {
    const rp = [...path, 'retries'];
    if (
      retries.attempts === 0 &&
      (retries.perTryTimeout !== undefined ||
        retries.retryOn !== undefined ||
        retries.retryRemoteLocalities !== undefined)
    )
      report(rp, 'retry settings given while attempts is 0 (retries disabled)');
    if (retries.retryOn !== undefined)
      for (const policy of retries.retryOn.split(',')) {
        const p = policy.trim();
        const status = /^\d{3}$/.test(p) ? Number(p) : undefined;
        if (!RETRY_ON.has(p) && (status === undefined || status < 100 || status > 599))
          report(
            [...rp, 'retryOn'],
            `unknown retry condition ${q(p)}: want HTTP status codes or ${[...RETRY_ON].join(', ')}`,
          );
      }
  }

  const fault = route.fault;
  if (fault) {
    const fp = [...path, 'fault'];
    if (!fault.abort && !fault.delay) report(fp, 'a fault needs an abort, a delay or both');
    if (fault.abort) {
      const a = fault.abort;
      const kinds = (['httpStatus', 'grpcStatus', 'http2Error'] as const).filter(
        k => a[k] !== undefined,
      );
      if (kinds.length !== 1)
        report(
          [...fp, 'abort'],
          kinds.length === 0
            ? 'an abort needs one of httpStatus, grpcStatus or http2Error'
            : `want exactly one of httpStatus, grpcStatus or http2Error, got ${kinds.join(' and ')}`,
        );
      if (a.grpcStatus !== undefined && !GRPC_STATUSES.has(a.grpcStatus))
        report(
          [...fp, 'abort', 'grpcStatus'],
          `unknown gRPC status ${q(a.grpcStatus)}: want a code name such as UNAVAILABLE or NOT_FOUND`,
        );
      if (a.http2Error !== undefined)
        report(
          [...fp, 'abort', 'http2Error'],
          'HTTP/2 error aborts are not supported (nor by Istio): use httpStatus or grpcStatus',
        );
    }
    if (fault.delay && fault.delay.fixedDelay === undefined)
      report([...fp, 'delay', 'fixedDelay'], 'required');
  }

  if (route.mirror) checkDestination(route.mirror, [...path, 'mirror'], report);

  const cors = route.corsPolicy;
  if (cors) {
    const cp = [...path, 'corsPolicy'];
    for (const [i, origin] of (cors.allowOrigins ?? []).entries())
      checkStringMatch(origin, [...cp, 'allowOrigins', i], report);
    for (const [i, method] of (cors.allowMethods ?? []).entries())
      if (!HTTP_METHODS.has(method))
        report(
          [...cp, 'allowMethods', i],
          `unknown HTTP method ${q(method)}: want one of ${[...HTTP_METHODS].join(', ')}`,
        );
    for (const field of ['allowHeaders', 'exposeHeaders'] as const)
      for (const [i, name] of (cors[field] ?? []).entries())
        if (name !== '*') checkHeaderName(name, [...cp, field, i], report);
  }

  checkHeaderOperations(route.headers, [...path, 'headers'], report);
  for (const field of ['appendHeaders', 'appendRequestHeaders', 'appendResponseHeaders'] as const)
    for (const name of Object.keys(route[field] ?? {}))
      if (name === '') report([...path, field], 'header name cannot be empty');
}

function checkDestination(d: Destination, path: Path, report: Report) {
  if (d.host === '*') report([...path, 'host'], 'a destination host cannot be "*"');
  else {
    const err = checkWildcardDomain(d.host);
    if (err) report([...path, 'host'], err);
  }
  if (d.subset !== undefined && !isDnsLabel(d.subset))
    report([...path, 'subset'], `invalid subset name ${q(d.subset)}: want a DNS label`);
}

function checkWeights(
  dests: readonly (RouteDestination | HTTPRouteDestination)[],
  path: Path,
  report: Report,
) {
  if (dests.length < 2) return; // a single destination takes all traffic, weight or not
  const missing = dests.flatMap((d, k) => (d.weight === undefined ? [k] : []));
  if (missing.length > 0) {
    for (const k of missing)
      report([...path, k, 'weight'], 'required when a route has several destinations');
    return;
  }
  const sum = dests.reduce((s, d) => s + (d.weight ?? 0), 0);
  if (sum !== 100) report(path, `weights sum to ${sum}, want 100`);
}

function checkHttpRouteDestinations(
  dests: readonly HTTPRouteDestination[],
  path: Path,
  report: Report,
) {
  for (const [k, d] of dests.entries()) {
    checkDestination(d.destination, [...path, k, 'destination'], report);
    checkHeaderOperations(d.headers, [...path, k, 'headers'], report);
  }
  checkWeights(dests, path, report);
}

function checkRouteDestinations(
  dests: readonly RouteDestination[] | undefined,
  path: Path,
  report: Report,
) {
  if (!dests?.length) {
    report(path, 'at least one destination is required');
    return;
  }
  for (const [k, d] of dests.entries())
    checkDestination(d.destination, [...path, k, 'destination'], report);
  checkWeights(dests, path, report);
}

// ---------------------------------------------------------------------------------------------
// DestinationRule

function checkDestinationRule(spec: DestinationRuleSpec, namespace: string, report: Report) {
  const err = checkWildcardDomain(spec.host);
  if (err) report(['spec', 'host'], err);
  if (spec.trafficPolicy) checkTrafficPolicy(spec.trafficPolicy, ['spec', 'trafficPolicy'], report);
  const names = new Set<string>();
  for (const [i, subset] of (spec.subsets ?? []).entries()) {
    const path = ['spec', 'subsets', i];
    if (!isDnsLabel(subset.name))
      report([...path, 'name'], `invalid subset name ${q(subset.name)}: want a DNS label`);
    if (names.has(subset.name))
      report([...path, 'name'], `duplicate subset name ${q(subset.name)}`);
    names.add(subset.name);
    checkLabels(subset.labels, [...path, 'labels'], report);
    if (subset.trafficPolicy)
      checkTrafficPolicy(subset.trafficPolicy, [...path, 'trafficPolicy'], report);
  }
  checkExportTo(spec.exportTo, namespace, false, ['spec', 'exportTo'], report);
  checkSelector(
    spec.workloadSelector?.matchLabels,
    ['spec', 'workloadSelector', 'matchLabels'],
    report,
  );
}

function checkTrafficPolicy(
  tp: Omit<TrafficPolicy, 'portLevelSettings'> & Pick<TrafficPolicy, 'portLevelSettings'>,
  path: Path,
  report: Report,
  portLevel = false,
) {
  const fields = portLevel
    ? (['loadBalancer', 'connectionPool', 'outlierDetection', 'tls'] as const)
    : (['loadBalancer', 'connectionPool', 'outlierDetection', 'tls', 'portLevelSettings'] as const);
  if (fields.every(f => tp[f] === undefined))
    report(path, `a traffic policy needs at least one of ${fields.join(', ')}`);

  const lb = tp.loadBalancer;
  if (lb) {
    if (lb.simple !== undefined && lb.consistentHash !== undefined)
      report([...path, 'loadBalancer'], 'simple and consistentHash are exclusive');
    const ch = lb.consistentHash;
    if (ch) {
      const keys = (
        ['httpHeaderName', 'httpCookie', 'useSourceIp', 'httpQueryParameterName'] as const
      ).filter(k => ch[k] !== undefined);
      if (keys.length !== 1)
        report(
          [...path, 'loadBalancer', 'consistentHash'],
          `want exactly one hash key of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName, got ${keys.length === 0 ? 'none' : keys.join(' and ')}`,
        );
      if (ch.httpCookie?.name === '')
        report([...path, 'loadBalancer', 'consistentHash', 'httpCookie', 'name'], 'required');
    }
  }
  const pool = tp.connectionPool;
  if (pool && !pool.tcp && !pool.http)
    report([...path, 'connectionPool'], 'a connection pool needs tcp or http settings');
  if (tp.tls) checkClientTls(tp.tls, [...path, 'tls'], report);
  for (const [i, pl] of (tp.portLevelSettings ?? []).entries()) {
    const pp = [...path, 'portLevelSettings', i];
    if (pl.port?.number === undefined) report([...pp, 'port', 'number'], 'required');
    checkTrafficPolicy(pl, pp, report, true);
  }
}

function checkClientTls(tls: ClientTLSSettings, path: Path, report: Report) {
  const files = (['clientCertificate', 'privateKey', 'caCertificates'] as const).filter(
    f => tls[f] !== undefined,
  );
  if ((tls.mode === 'SIMPLE' || tls.mode === 'MUTUAL') && tls.credentialName !== undefined) {
    if (files.length > 0) report(path, `credentialName and ${files.join(', ')} are exclusive`);
    return;
  }
  if (tls.mode === 'MUTUAL') {
    if (tls.clientCertificate === undefined)
      report([...path, 'clientCertificate'], 'required for MUTUAL TLS');
    if (tls.privateKey === undefined) report([...path, 'privateKey'], 'required for MUTUAL TLS');
  }
  if (tls.mode === 'ISTIO_MUTUAL' && (files.length > 0 || tls.credentialName !== undefined))
    report(
      path,
      'ISTIO_MUTUAL uses the mesh certificates: certificate files and credentialName cannot be set',
    );
}

// ---------------------------------------------------------------------------------------------
// ServiceEntry, WorkloadEntry, WorkloadGroup

const HTTP_OR_TLS = new Set(['HTTP', 'HTTPS', 'HTTP2', 'GRPC', 'GRPC-WEB', 'TLS']);

function checkServiceEntry(spec: ServiceEntrySpec, namespace: string, report: Report) {
  const resolution = spec.resolution ?? 'NONE';
  if (spec.hosts.length === 0) report(['spec', 'hosts'], 'at least one host is required');
  for (const [i, host] of spec.hosts.entries()) {
    const path = ['spec', 'hosts', i];
    if (host === '*') {
      report(path, 'a ServiceEntry cannot claim every host ("*")');
      continue;
    }
    const err = checkWildcardDomain(host);
    if (err) report(path, err);
    else if (isShortName(host))
      report(
        path,
        `short name ${q(host)}: ServiceEntry hosts are not expanded, write a fully qualified name (e.g. ${host}.${namespace}.svc.cluster.local)`,
      );
    else if (
      host.startsWith('*') &&
      (resolution === 'DNS' || resolution === 'DNS_ROUND_ROBIN') &&
      !spec.endpoints?.length
    )
      report(
        path,
        `wildcard host ${q(host)} cannot be resolved with resolution ${resolution} and no endpoints: use resolution NONE`,
      );
  }

  let cidr = false;
  for (const [i, addr] of (spec.addresses ?? []).entries()) {
    const err = checkIpOrCidr(addr);
    if (err) report(['spec', 'addresses', i], err);
    if (addr.includes('/')) cidr = true;
  }
  if (cidr && resolution !== 'NONE' && resolution !== 'STATIC')
    report(['spec', 'addresses'], 'CIDR addresses are allowed only with resolution NONE or STATIC');

  const portNames = new Set<string>();
  const portNumbers = new Set<number>();
  for (const [i, port] of (spec.ports ?? []).entries()) {
    const path = ['spec', 'ports', i];
    if (!isDnsLabel(port.name))
      report([...path, 'name'], `invalid port name ${q(port.name)}: want a DNS label`);
    if (portNames.has(port.name)) report([...path, 'name'], `duplicate port name ${q(port.name)}`);
    if (portNumbers.has(port.number))
      report([...path, 'number'], `duplicate port number ${port.number}`);
    portNames.add(port.name);
    portNumbers.add(port.number);
  }

  const endpoints = spec.endpoints;
  if (spec.workloadSelector && endpoints)
    report(['spec'], 'workloadSelector and endpoints are exclusive');
  checkSelector(spec.workloadSelector?.labels, ['spec', 'workloadSelector', 'labels'], report);

  switch (resolution) {
    case 'NONE':
      if (endpoints?.length)
        report(['spec', 'endpoints'], 'endpoints cannot be given with resolution NONE');
      break;
    case 'STATIC':
      if (!endpoints?.length && !spec.workloadSelector)
        report(['spec'], 'resolution STATIC needs endpoints or a workloadSelector');
      break;
    case 'DNS_ROUND_ROBIN':
      if ((endpoints?.length ?? 0) > 1)
        report(['spec', 'endpoints'], 'resolution DNS_ROUND_ROBIN allows at most one endpoint');
      break;
    case 'DNS':
      break;
  }
  for (const [i, ep] of (endpoints ?? []).entries()) {
    const path = ['spec', 'endpoints', i];
    if (ep.address === undefined) report([...path, 'address'], 'required');
    else if (resolution === 'STATIC' && !isIp(ep.address) && !ep.address.startsWith('unix://'))
      report(
        [...path, 'address'],
        `${q(ep.address)} is not an IP address: resolution STATIC needs IP addresses (or unix:///path)`,
      );
    checkWorkloadEntry(ep, path, report, false);
    for (const name of Object.keys(ep.ports ?? {}))
      if (!portNames.has(name))
        report(
          [...path, 'ports', name],
          `no port named ${q(name)} in spec.ports${portNames.size ? ` (declared: ${[...portNames].join(', ')})` : ''}`,
        );
  }

  // Several hosts on plain TCP cannot be told apart (no Host header, no SNI) unless not resolved.
  if (resolution !== 'NONE' && spec.hosts.length > 1)
    for (const [i, port] of (spec.ports ?? []).entries())
      if (!HTTP_OR_TLS.has(port.protocol ?? '')) {
        report(
          ['spec', 'ports', i, 'protocol'],
          `several hosts need HTTP or TLS ports to be told apart, got ${port.protocol ?? 'no protocol'} (or use resolution NONE)`,
        );
        break;
      }
  checkExportTo(spec.exportTo, namespace, true, ['spec', 'exportTo'], report);
}

/**
 * A workload address: an IP, a DNS name, or `unix:///absolute/path`.
 * @param requireAddress a WorkloadEntry needs one; a WorkloadGroup template and ServiceEntry
 *   endpoints are checked elsewhere
 */
function checkWorkloadEntry(
  we: WorkloadEntrySpec,
  path: Path,
  report: Report,
  requireAddress: boolean,
) {
  if (we.address === undefined) {
    if (requireAddress) report([...path, 'address'], 'required');
  } else if (we.address.startsWith('unix://')) {
    const file = we.address.slice('unix://'.length);
    if (!file.startsWith('@') && (!file.startsWith('/') || file.endsWith('/')))
      report([...path, 'address'], `${q(we.address)} is not unix:// and an absolute file path`);
    if (we.ports && Object.keys(we.ports).length > 0)
      report([...path, 'ports'], 'a unix socket endpoint cannot have ports');
  } else if (!isIp(we.address)) {
    const err = checkFqdn(we.address);
    if (err) report([...path, 'address'], `${q(we.address)} is not an IP address or a DNS name`);
  }
  for (const name of Object.keys(we.ports ?? {}))
    if (!isDnsLabel(name))
      report([...path, 'ports', name], `invalid port name ${q(name)}: want a DNS label`);
  checkLabels(we.labels, [...path, 'labels'], report);
  if (we.serviceAccount !== undefined && !isDns1123Subdomain(we.serviceAccount))
    report(
      [...path, 'serviceAccount'],
      `invalid service account ${q(we.serviceAccount)}: want lower-case letters, digits, "-" and "."`,
    );
}

function checkWorkloadGroup(spec: WorkloadGroupSpec, report: Report) {
  checkLabels(spec.metadata?.labels, ['spec', 'metadata', 'labels'], report);
  // The template's address is filled in per workload, so it may be absent here.
  checkWorkloadEntry(spec.template, ['spec', 'template'], report, false);
  const probe = spec.probe;
  if (probe) {
    const methods = (['httpGet', 'tcpSocket', 'exec'] as const).filter(m => probe[m] !== undefined);
    if (methods.length !== 1)
      report(
        ['spec', 'probe'],
        methods.length === 0
          ? 'a probe needs one of httpGet, tcpSocket or exec'
          : `want exactly one of httpGet, tcpSocket or exec, got ${methods.join(' and ')}`,
      );
    const get = probe.httpGet;
    if (get?.scheme !== undefined && get.scheme !== 'HTTP' && get.scheme !== 'HTTPS')
      report(
        ['spec', 'probe', 'httpGet', 'scheme'],
        `invalid scheme ${q(get.scheme)}: want HTTP or HTTPS`,
      );
    for (const [i, h] of (get?.httpHeaders ?? []).entries())
      checkHeaderName(h.name, ['spec', 'probe', 'httpGet', 'httpHeaders', i, 'name'], report);
    if (probe.exec && probe.exec.command.length === 0)
      report(['spec', 'probe', 'exec', 'command'], 'at least one word is required');
  }
}

// ---------------------------------------------------------------------------------------------
// Gateway, Sidecar

/**
 * `namespace/dnsName` host entries of Gateways (where `dnsName` alone is allowed) and Sidecar
 * egress listeners (Istio `ValidateNamespaceSlashWildcardHostname`).
 */
function checkNamespacedHost(host: string, isGateway: boolean, path: Path, report: Report) {
  const slash = host.indexOf('/');
  let name = host;
  if (slash < 0) {
    if (!isGateway) {
      report(
        path,
        `invalid host ${q(host)}: want NAMESPACE/DNS_NAME (e.g. "*/*", "./reviews.default.svc.cluster.local")`,
      );
      return;
    }
  } else {
    const ns = host.slice(0, slash);
    name = host.slice(slash + 1);
    if (ns === '' || name === '') {
      report(path, `invalid host ${q(host)}: the namespace and the DNS name cannot be empty`);
      return;
    }
    if (ns !== '*' && ns !== '.' && (isGateway || ns !== '~') && !isDns1123Label(ns))
      report(path, `invalid namespace ${q(ns)} in host ${q(host)}: want "*", ".", or a namespace`);
  }
  if (name === '*') return;
  if (!name.includes('.')) {
    report(path, `short name ${q(name)} is not allowed here: write a fully qualified name`);
    return;
  }
  const err = checkWildcardDomain(name);
  if (err && !(isGateway && isIp(name))) report(path, err);
}

const TLS_PROTOCOLS = new Set(['HTTPS', 'TLS']);
const HTTP_PROTOCOLS = new Set(['HTTP', 'HTTP2', 'GRPC', 'GRPC-WEB']);

function checkGateway(obj: ConfigObject<'Gateway'>, report: Report) {
  const spec: GatewaySpec = obj.spec;
  if (!isDns1123Label(obj.metadata.name))
    report(
      ['metadata', 'name'],
      `invalid Gateway name ${q(obj.metadata.name)}: want a DNS label (no dots), as VirtualServices refer to it as NAMESPACE/NAME`,
    );
  if (spec.servers.length === 0) report(['spec', 'servers'], 'at least one server is required');
  const portNames = new Map<string, number>();
  for (const [i, server] of spec.servers.entries()) {
    const path = ['spec', 'servers', i];
    if (server.hosts.length === 0) report([...path, 'hosts'], 'at least one host is required');
    for (const [j, host] of server.hosts.entries())
      checkNamespacedHost(host, true, [...path, 'hosts', j], report);
    const { name, protocol } = server.port;
    if (!isDnsLabel(name))
      report([...path, 'port', 'name'], `invalid port name ${q(name)}: want a DNS label`);
    const first = portNames.get(name);
    if (first !== undefined)
      report(
        [...path, 'port', 'name'],
        `duplicate port name ${q(name)} (also spec.servers[${first}])`,
      );
    else portNames.set(name, i);
    if (server.port.targetPort !== undefined)
      report([...path, 'port', 'targetPort'], 'targetPort has no effect on gateways');
    if (server.bind !== undefined && !isIp(server.bind) && !server.bind.startsWith('unix://'))
      report([...path, 'bind'], `${q(server.bind)} is not an IP address or unix:///path`);

    const tls = server.tls;
    const tp = [...path, 'tls'];
    if (TLS_PROTOCOLS.has(protocol)) {
      if (!tls) report(tp, `required for ${protocol} servers`);
    } else if (tls) {
      const certs =
        tls.serverCertificate !== undefined ||
        tls.privateKey !== undefined ||
        tls.caCertificates !== undefined;
      if (!HTTP_PROTOCOLS.has(protocol))
        report(tp, `a ${protocol} server cannot have TLS settings (use protocol HTTPS or TLS)`);
      else if ((tls.mode !== undefined && !tls.mode.endsWith('PASSTHROUGH')) || certs)
        report(
          tp,
          'a plain-text HTTP server may set only httpsRedirect (use protocol HTTPS to terminate TLS)',
        );
    }
    if (tls && TLS_PROTOCOLS.has(protocol)) {
      // The proto default of ServerTLSSettings.mode is PASSTHROUGH.
      const mode = tls.mode ?? 'PASSTHROUGH';
      if (mode === 'ISTIO_MUTUAL') {
        for (const f of [
          'serverCertificate',
          'privateKey',
          'caCertificates',
          'credentialName',
        ] as const)
          if (tls[f] !== undefined) report([...tp, f], 'cannot be set with ISTIO_MUTUAL');
      } else if (
        (mode === 'SIMPLE' || mode === 'MUTUAL' || mode === 'OPTIONAL_MUTUAL') &&
        tls.credentialName === undefined
      ) {
        if (tls.serverCertificate === undefined)
          report([...tp, 'serverCertificate'], `required for ${mode} TLS (or set credentialName)`);
        if (tls.privateKey === undefined)
          report([...tp, 'privateKey'], `required for ${mode} TLS (or set credentialName)`);
        if (mode !== 'SIMPLE' && tls.caCertificates === undefined)
          report([...tp, 'caCertificates'], `required for ${mode} TLS (or set credentialName)`);
      }
    }
  }
  checkSelector(spec.selector, ['spec', 'selector'], report);
}

function checkSidecar(spec: SidecarSpec, report: Report) {
  checkSelector(spec.workloadSelector?.labels, ['spec', 'workloadSelector', 'labels'], report);
  if (!spec.egress?.length && !spec.ingress?.length && !spec.outboundTrafficPolicy)
    report(['spec'], 'a Sidecar needs at least one of egress, ingress or outboundTrafficPolicy');

  const ingressPorts = new Set<number>();
  for (const [i, listener] of (spec.ingress ?? []).entries()) {
    const path = ['spec', 'ingress', i];
    const { number, name } = listener.port;
    if (name !== undefined && !isDnsLabel(name))
      report([...path, 'port', 'name'], `invalid port name ${q(name)}: want a DNS label`);
    if (ingressPorts.has(number))
      report([...path, 'port', 'number'], `duplicate ingress port ${number}`);
    ingressPorts.add(number);
    if (listener.bind !== undefined && !isIp(listener.bind))
      report([...path, 'bind'], `${q(listener.bind)} is not an IP address`);
    const ep = listener.defaultEndpoint;
    if (ep !== undefined && !ep.startsWith('unix://')) {
      const m = /^(127\.0\.0\.1|0\.0\.0\.0|\[::1\]|\[::\])?:(\d{1,5})$/.exec(ep);
      if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535)
        report(
          [...path, 'defaultEndpoint'],
          `invalid defaultEndpoint ${q(ep)}: want 127.0.0.1:PORT, 0.0.0.0:PORT, [::1]:PORT, [::]:PORT or unix:///path`,
        );
    }
  }

  const egressPorts = new Set<number>();
  const egress = spec.egress ?? [];
  for (const [i, listener] of egress.entries()) {
    const path = ['spec', 'egress', i];
    if (listener.port === undefined) {
      if (i !== egress.length - 1)
        report(path, 'the catch-all egress listener (no port) must be the last one');
    } else {
      const { number, name } = listener.port;
      if (name !== undefined && !isDnsLabel(name))
        report([...path, 'port', 'name'], `invalid port name ${q(name)}: want a DNS label`);
      if (egressPorts.has(number))
        report([...path, 'port', 'number'], `duplicate egress port ${number}`);
      egressPorts.add(number);
    }
    if (listener.bind !== undefined && !isIp(listener.bind) && !listener.bind.startsWith('unix://'))
      report([...path, 'bind'], `${q(listener.bind)} is not an IP address or unix:///path`);
    if (listener.hosts.length === 0) report([...path, 'hosts'], 'at least one host is required');
    for (const [j, host] of listener.hosts.entries())
      checkNamespacedHost(host, false, [...path, 'hosts', j], report);
  }

  const otp = spec.outboundTrafficPolicy;
  if (otp?.egressProxy) {
    const path = ['spec', 'outboundTrafficPolicy', 'egressProxy'];
    if (otp.mode !== 'ALLOW_ANY') report(path, 'egressProxy needs mode ALLOW_ANY');
    checkDestination(otp.egressProxy, path, report);
    if (otp.egressProxy.port?.number === undefined) report([...path, 'port', 'number'], 'required');
  }
}

// ---------------------------------------------------------------------------------------------
// security.istio.io

function checkPeerAuthentication(spec: PeerAuthenticationSpec, report: Report) {
  const labels = spec.selector?.matchLabels;
  checkSelector(labels, ['spec', 'selector', 'matchLabels'], report);
  const ports = spec.portLevelMtls;
  if (!ports) return;
  if (!labels || Object.keys(labels).length === 0)
    report(
      ['spec', 'portLevelMtls'],
      'portLevelMtls needs a selector with matchLabels: a mesh- or namespace-wide policy cannot set per-port modes',
    );
  if (Object.keys(ports).length === 0)
    report(['spec', 'portLevelMtls'], 'at least one port is required when portLevelMtls is set');
  for (const key of Object.keys(ports))
    if (!/^\d{1,5}$/.test(key) || Number(key) < 1 || Number(key) > 65535)
      report(
        ['spec', 'portLevelMtls', key],
        `invalid port ${q(key)}: want a port number from 1 to 65535`,
      );
}

const AUTHZ_SOURCE_FIELDS = [
  'principals',
  'notPrincipals',
  'requestPrincipals',
  'notRequestPrincipals',
  'namespaces',
  'notNamespaces',
  'ipBlocks',
  'notIpBlocks',
  'remoteIpBlocks',
  'notRemoteIpBlocks',
] as const;
const AUTHZ_OPERATION_FIELDS = [
  'hosts',
  'notHosts',
  'ports',
  'notPorts',
  'methods',
  'notMethods',
  'paths',
  'notPaths',
] as const;
// Attributes an external (CUSTOM) authorizer is not given by Istio.
const CUSTOM_UNSUPPORTED_SOURCE = [
  'principals',
  'notPrincipals',
  'requestPrincipals',
  'notRequestPrincipals',
  'namespaces',
  'notNamespaces',
] as const;

function checkAuthorizationPolicy(spec: AuthorizationPolicySpec, report: Report) {
  checkSelector(spec.selector?.matchLabels, ['spec', 'selector', 'matchLabels'], report);
  const action = spec.action ?? 'ALLOW';
  if (action === 'CUSTOM') {
    if (spec.rules === undefined)
      report(
        ['spec', 'rules'],
        'a CUSTOM policy without rules never triggers: add an empty rule {} to apply it to every request',
      );
    if (!spec.provider?.name) report(['spec', 'provider', 'name'], 'required for action CUSTOM');
  } else if (spec.provider) {
    report(['spec', 'provider'], `provider is only for action CUSTOM, not ${action}`);
  }
  if (action === 'DENY' && spec.rules === undefined)
    report(
      ['spec', 'rules'],
      'a DENY policy without rules never triggers: add an empty rule {} to deny every request',
    );

  for (const [i, rule] of (spec.rules ?? []).entries()) {
    const path = ['spec', 'rules', i];
    if (rule.from?.length === 0) report([...path, 'from'], 'cannot be empty: omit it instead');
    for (const [j, from] of (rule.from ?? []).entries()) {
      const sp = [...path, 'from', j, 'source'];
      const src = from.source;
      if (AUTHZ_SOURCE_FIELDS.every(f => src[f] === undefined || src[f].length === 0))
        report(sp, 'a source needs at least one field');
      for (const f of AUTHZ_SOURCE_FIELDS)
        for (const [k, v] of (src[f] ?? []).entries()) {
          if (v === '') report([...sp, f, k], 'empty value');
          else if (f.toLowerCase().endsWith('ipblocks')) {
            const err = checkIpOrCidr(v);
            if (err) report([...sp, f, k], err);
          }
        }
      if (action === 'CUSTOM')
        for (const f of CUSTOM_UNSUPPORTED_SOURCE)
          if (src[f] !== undefined) report([...sp, f], 'not supported with action CUSTOM');
    }
    if (rule.to?.length === 0) report([...path, 'to'], 'cannot be empty: omit it instead');
    for (const [j, to] of (rule.to ?? []).entries()) {
      const op = [...path, 'to', j, 'operation'];
      const o = to.operation;
      if (AUTHZ_OPERATION_FIELDS.every(f => o[f] === undefined || o[f].length === 0))
        report(op, 'an operation needs at least one field');
      for (const f of AUTHZ_OPERATION_FIELDS)
        for (const [k, v] of (o[f] ?? []).entries()) {
          if (v === '') report([...op, f, k], 'empty value');
          else if (
            (f === 'ports' || f === 'notPorts') &&
            (!/^\d{1,5}$/.test(v) || Number(v) < 1 || Number(v) > 65535)
          )
            report([...op, f, k], `invalid port ${q(v)}: want a port number from 1 to 65535`);
        }
    }
    for (const [j, cond] of (rule.when ?? []).entries()) {
      const cp = [...path, 'when', j];
      if (cond.key === '') report([...cp, 'key'], 'required');
      if (!cond.values?.length && !cond.notValues?.length)
        report(cp, `a condition on ${q(cond.key)} needs values or notValues`);
      if (
        action === 'CUSTOM' &&
        (cond.key === 'source.namespace' ||
          cond.key === 'source.principal' ||
          cond.key.startsWith('request.auth.'))
      )
        report([...cp, 'key'], `${q(cond.key)} is not supported with action CUSTOM`);
    }
  }
}
