/**
 * `envoy.config.cluster.v3.Cluster` → Cluster and `ClusterLoadAssignment` → LoadAssignment, with
 * Envoy's defaults filled in (connect timeout 5 s, breakers 1024/1024/1024/3, panic threshold
 * 50 %, ring 1024–8M, DNS refresh 5 s, upstream idle timeout 1 h).
 * @internal
 */
import type {
  CircuitBreakers,
  Cluster,
  Endpoint,
  LbPolicy,
  LoadAssignment,
  Locality,
  OutlierDetection,
  TransportChoice,
} from '../model';
import {
  anyType,
  at,
  durationMs,
  elem,
  enumOf,
  extension,
  fail,
  idx,
  isObj,
  isSet,
  list,
  map,
  obj,
  rejectSet,
  reqObj,
  reqStr,
  str,
  stringStruct,
  wrappedNumber,
  wrappedUint,
  type Json,
  type Where,
} from './compile-common';
import { socketAddress } from './compile-listener';
import { hasSocket, upstreamTls } from './compile-tls';

/** Envoy's defaults. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
export const DEFAULT_DNS_REFRESH_RATE_MS = 5_000;
export const DEFAULT_HEALTHY_PANIC_THRESHOLD = 50;
export const DEFAULT_UPSTREAM_IDLE_TIMEOUT_MS = 3_600_000;
export const DEFAULT_MIN_RING_SIZE = 1024;
export const MAX_RING_SIZE = 8_388_608;
const DEFAULT_BREAKERS: CircuitBreakers = Object.freeze({
  maxConnections: 1024,
  maxPendingRequests: 1024,
  maxRequests: 1024,
  maxRetries: 3,
});

const HTTP_PROTOCOL_OPTIONS = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions';
const TRANSPORT_SOCKET_MATCH_KEY = 'envoy.transport_socket_match';

/** `load_balancing_policy` extension types, by the model's name for them. */
const LB_POLICY_TYPES: Readonly<Record<string, LbPolicy | 'CLUSTER_PROVIDED'>> = {
  'envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin': 'ROUND_ROBIN',
  'envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest': 'LEAST_REQUEST',
  'envoy.extensions.load_balancing_policies.random.v3.Random': 'RANDOM',
  'envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash': 'RING_HASH',
  'envoy.extensions.load_balancing_policies.maglev.v3.Maglev': 'MAGLEV',
  'envoy.extensions.load_balancing_policies.cluster_provided.v3.ClusterProvided':
    'CLUSTER_PROVIDED',
};

type ClusterType = Cluster['type'];

/** Compiles a Cluster whose name has been checked. */
export function cluster(w: Where, c: Json): Cluster {
  rejectSet(w, c, '', [
    'clusterType',
    'healthChecks',
    'lbSubsetConfig',
    'filters',
    'upstreamConfig',
    'transportSocketMatcher',
  ]);
  const type: ClusterType = enumOf(w, c, 'type', '', [
    'STATIC',
    'STRICT_DNS',
    'LOGICAL_DNS',
    'EDS',
    'ORIGINAL_DST',
  ]);
  const lb = lbPolicy(w, c, type);
  const connectTimeoutMs = durationMs(w, c, 'connectTimeout', '') ?? DEFAULT_CONNECT_TIMEOUT_MS;
  if (connectTimeoutMs <= 0) fail(w, 'connectTimeout', 'must be greater than 0');
  const odc = obj(w, c, 'originalDstLbConfig', '');
  if (odc)
    rejectSet(w, odc, 'originalDstLbConfig', [
      'useHttpHeader',
      'upstreamPortOverride',
      'metadataKey',
    ]);

  let edsServiceName: string | undefined;
  let loadAssignment: LoadAssignment | undefined;
  if (type === 'EDS') {
    const eds = obj(w, c, 'edsClusterConfig', '');
    edsServiceName = (eds && str(w, eds, 'serviceName', 'edsClusterConfig')) ?? w.name;
  } else if (type !== 'ORIGINAL_DST') {
    const la = obj(w, c, 'loadAssignment', '');
    loadAssignment = la
      ? compileAssignment(w, la, 'loadAssignment', type !== 'STATIC')
      : { clusterName: w.name, endpoints: [] };
    // Envoy resolves a LOGICAL_DNS cluster's one host name and uses the first address.
    if (type === 'LOGICAL_DNS' && loadAssignment.endpoints.length !== 1)
      fail(w, 'loadAssignment', 'a LOGICAL_DNS cluster needs exactly one endpoint');
  }

  const protocol = httpProtocol(w, c);
  const dnsRefreshRateMs = durationMs(w, c, 'dnsRefreshRate', '') ?? DEFAULT_DNS_REFRESH_RATE_MS;
  if (dnsRefreshRateMs <= 0) fail(w, 'dnsRefreshRate', 'must be greater than 0');
  const outlierDetection = outlier(w, c);
  const keepalive = tcpKeepalive(w, c);
  return {
    name: w.name,
    type,
    ...(edsServiceName !== undefined ? { edsServiceName } : {}),
    ...(loadAssignment ? { loadAssignment } : {}),
    lbPolicy: lb.policy,
    ringHash: lb.ringHash,
    connectTimeoutMs,
    circuitBreakers: circuitBreakers(w, c),
    ...(outlierDetection ? { outlierDetection } : {}),
    healthyPanicThreshold: panicThreshold(w, c),
    transports: transports(w, c),
    upstreamProtocol: protocol.upstreamProtocol,
    ...(protocol.maxRequestsPerConnection !== undefined
      ? { maxRequestsPerConnection: protocol.maxRequestsPerConnection }
      : {}),
    ...(protocol.idleTimeoutMs !== undefined ? { idleTimeoutMs: protocol.idleTimeoutMs } : {}),
    ...(keepalive ? { tcpKeepalive: keepalive } : {}),
    dnsRefreshRateMs,
  };
}

interface Lb {
  readonly policy: LbPolicy;
  readonly ringHash: Cluster['ringHash'];
}

const DEFAULT_RING: Cluster['ringHash'] = Object.freeze({
  minimumRingSize: DEFAULT_MIN_RING_SIZE,
  maximumRingSize: MAX_RING_SIZE,
});

function lbPolicy(w: Where, c: Json, type: ClusterType): Lb {
  let policy: LbPolicy | 'CLUSTER_PROVIDED';
  let ringConfig: Json | undefined;
  let ringPath = 'ringHashLbConfig';
  const lbp = obj(w, c, 'loadBalancingPolicy', '');
  if (lbp) {
    // Envoy uses the first policy in the list that it knows.
    const picked = pickLbPolicy(w, lbp);
    policy = picked.policy;
    if (policy === 'RING_HASH') {
      ringConfig = picked.config;
      ringPath = picked.path;
    }
  } else {
    const name = enumOf(w, c, 'lbPolicy', '', [
      'ROUND_ROBIN',
      'LEAST_REQUEST',
      'RING_HASH',
      'RANDOM',
      'MAGLEV',
      'CLUSTER_PROVIDED',
      'LOAD_BALANCING_POLICY_CONFIG',
    ]);
    if (name === 'LOAD_BALANCING_POLICY_CONFIG') fail(w, 'loadBalancingPolicy', 'required');
    policy = name;
    if (policy === 'RING_HASH') ringConfig = obj(w, c, 'ringHashLbConfig', '');
  }
  // Envoy: ORIGINAL_DST clusters take CLUSTER_PROVIDED and nothing else; the proxy then picks the
  // one host (the original destination) itself.
  if (type === 'ORIGINAL_DST') {
    if (policy !== 'CLUSTER_PROVIDED')
      fail(
        w,
        'lbPolicy',
        `${policy} is not valid for an ORIGINAL_DST cluster (CLUSTER_PROVIDED only)`,
      );
    return { policy: 'ROUND_ROBIN', ringHash: DEFAULT_RING };
  }
  if (policy === 'CLUSTER_PROVIDED')
    fail(w, 'lbPolicy', `CLUSTER_PROVIDED is not valid for a ${type} cluster`);
  if (policy !== 'RING_HASH' || !ringConfig) return { policy, ringHash: DEFAULT_RING };
  const min =
    wrappedUint(w, ringConfig, 'minimumRingSize', ringPath, MAX_RING_SIZE) ?? DEFAULT_MIN_RING_SIZE;
  const max =
    wrappedUint(w, ringConfig, 'maximumRingSize', ringPath, MAX_RING_SIZE) ?? MAX_RING_SIZE;
  if (min > max) fail(w, ringPath, 'minimumRingSize is above maximumRingSize');
  return { policy, ringHash: { minimumRingSize: min, maximumRingSize: max } };
}

function pickLbPolicy(
  w: Where,
  lbp: Json,
): { policy: LbPolicy | 'CLUSTER_PROVIDED'; config: Json; path: string } {
  const policies = list(w, lbp, 'policies', 'loadBalancingPolicy');
  const names: string[] = [];
  for (let i = 0; i < policies.length; i++) {
    const p = idx('loadBalancingPolicy.policies', i);
    const tec = reqObj(w, elem(w, policies[i], p), 'typedExtensionConfig', p);
    const ext = extension(w, tec, at(p, 'typedExtensionConfig'));
    const policy = LB_POLICY_TYPES[ext.type];
    if (policy)
      return { policy, config: ext.config, path: at(p, 'typedExtensionConfig.typedConfig') };
    names.push(ext.type || ext.name);
  }
  fail(
    w,
    'loadBalancingPolicy.policies',
    `no supported policy among ${names.join(', ') || 'none'}`,
  );
}

function circuitBreakers(w: Where, c: Json): CircuitBreakers {
  const cb = obj(w, c, 'circuitBreakers', '');
  if (!cb) return DEFAULT_BREAKERS;
  const thresholds = list(w, cb, 'thresholds', 'circuitBreakers');
  for (let i = 0; i < thresholds.length; i++) {
    const p = idx('circuitBreakers.thresholds', i);
    const t = elem(w, thresholds[i], p);
    // Routes at HIGH priority are refused, so only the DEFAULT thresholds matter.
    if (enumOf(w, t, 'priority', p, ['DEFAULT', 'HIGH']) !== 'DEFAULT') continue;
    rejectSet(w, t, p, ['retryBudget']);
    return {
      maxConnections: wrappedUint(w, t, 'maxConnections', p) ?? DEFAULT_BREAKERS.maxConnections,
      maxPendingRequests:
        wrappedUint(w, t, 'maxPendingRequests', p) ?? DEFAULT_BREAKERS.maxPendingRequests,
      maxRequests: wrappedUint(w, t, 'maxRequests', p) ?? DEFAULT_BREAKERS.maxRequests,
      maxRetries: wrappedUint(w, t, 'maxRetries', p) ?? DEFAULT_BREAKERS.maxRetries,
    };
  }
  return DEFAULT_BREAKERS;
}

/** An enforcement percentage the model can express: on (100) or off (0). */
function enforcing(w: Where, o: Json, key: string, path: string, dflt: number): boolean {
  const v = wrappedUint(w, o, key, path, 100) ?? dflt;
  if (v !== 0 && v !== 100) fail(w, at(path, key), 'only 0 or 100 is supported');
  return v === 100;
}

/**
 * Outlier detection on consecutive errors. Envoy also ejects on success rate by default; the
 * proxy does not implement that (it needs a request volume few VM services have), so
 * `enforcing_success_rate` is ignored. Failure-percentage and local-origin ejection, off by
 * default in Envoy, are errors when turned on.
 */
function outlier(w: Where, c: Json): OutlierDetection | undefined {
  const od = obj(w, c, 'outlierDetection', '');
  if (!od) return undefined;
  const p = 'outlierDetection';
  rejectSet(w, od, p, ['splitExternalLocalOriginErrors', 'monitors']);
  for (const k of ['enforcingFailurePercentage', 'enforcingFailurePercentageLocalOrigin'])
    if (enforcing(w, od, k, p, 0))
      fail(w, at(p, k), 'failure percentage ejection is not supported');
  const consecutive5xx = enforcing(w, od, 'enforcingConsecutive_5xx', p, 100)
    ? (wrappedUint(w, od, 'consecutive_5xx', p) ?? 5)
    : 0;
  const consecutiveGatewayFailure = enforcing(w, od, 'enforcingConsecutiveGatewayFailure', p, 0)
    ? (wrappedUint(w, od, 'consecutiveGatewayFailure', p) ?? 5)
    : 0;
  const intervalMs = durationMs(w, od, 'interval', p) ?? 10_000;
  if (intervalMs <= 0) fail(w, at(p, 'interval'), 'must be greater than 0');
  return {
    consecutive5xx,
    consecutiveGatewayFailure,
    intervalMs,
    baseEjectionTimeMs: durationMs(w, od, 'baseEjectionTime', p) ?? 30_000,
    maxEjectionPercent: wrappedUint(w, od, 'maxEjectionPercent', p, 100) ?? 10,
  };
}

function panicThreshold(w: Where, c: Json): number {
  const common = obj(w, c, 'commonLbConfig', '');
  if (!common) return DEFAULT_HEALTHY_PANIC_THRESHOLD;
  const v = wrappedNumber(w, common, 'healthyPanicThreshold', 'commonLbConfig');
  if (v === undefined) return DEFAULT_HEALTHY_PANIC_THRESHOLD;
  if (v < 0 || v > 100) fail(w, 'commonLbConfig.healthyPanicThreshold', 'must be 0-100');
  return v;
}

/** `transport_socket_matches` in order, then `transport_socket` as the catch-all. */
function transports(w: Where, c: Json): readonly TransportChoice[] {
  const out: TransportChoice[] = [];
  const matches = list(w, c, 'transportSocketMatches', '');
  for (let i = 0; i < matches.length; i++) {
    const p = idx('transportSocketMatches', i);
    const m = elem(w, matches[i], p);
    const match = obj(w, m, 'match', p);
    const socket = obj(w, m, 'transportSocket', p);
    if (!hasSocket(socket)) fail(w, at(p, 'transportSocket'), 'required');
    const tls = upstreamTls(w, socket, at(p, 'transportSocket'));
    out.push({
      name: reqStr(w, m, 'name', p),
      match: match ? stringStruct(w, match, at(p, 'match')) : stringStruct(w, {}, at(p, 'match')),
      ...(tls ? { tls } : {}),
    });
  }
  const socket = obj(w, c, 'transportSocket', '');
  if (hasSocket(socket)) {
    const tls = upstreamTls(w, socket, 'transportSocket');
    out.push({
      name: 'default',
      match: stringStruct(w, {}, 'transportSocket'),
      ...(tls ? { tls } : {}),
    });
  }
  return out;
}

interface Protocol {
  readonly upstreamProtocol: Cluster['upstreamProtocol'];
  readonly maxRequestsPerConnection?: number;
  readonly idleTimeoutMs?: number;
}

/**
 * The upstream HTTP protocol and connection limits: from
 * `typed_extension_protocol_options['envoy.extensions.upstreams.http.v3.HttpProtocolOptions']`,
 * else the deprecated cluster fields. HTTP/1.1 when nothing says otherwise.
 */
function httpProtocol(w: Where, c: Json): Protocol {
  const options = map(w, c, 'typedExtensionProtocolOptions', '');
  let hpo: Json | undefined;
  let hpoPath = '';
  for (const key of Object.keys(options ?? {})) {
    const p = at('typedExtensionProtocolOptions', key);
    const v = options![key];
    if (!isObj(v)) fail(w, p, 'expected an object');
    const type = anyType(w, v, p);
    if (type === HTTP_PROTOCOL_OPTIONS || (type === '' && key === HTTP_PROTOCOL_OPTIONS)) {
      hpo = v;
      hpoPath = p;
    } else fail(w, p, `unsupported protocol options ${type || key}`);
  }
  const legacyUpstream = obj(w, c, 'upstreamHttpProtocolOptions', '');
  if (legacyUpstream)
    rejectSet(w, legacyUpstream, 'upstreamHttpProtocolOptions', ['autoSni', 'autoSanValidation']);
  let upstreamProtocol: Cluster['upstreamProtocol'] = 'http1';
  let common: Json | undefined;
  let commonPath = '';
  if (hpo) {
    rejectSet(w, hpo, hpoPath, ['autoConfig', 'httpFilters', 'headerValidationConfig']);
    const uhpo = obj(w, hpo, 'upstreamHttpProtocolOptions', hpoPath);
    if (uhpo)
      rejectSet(w, uhpo, at(hpoPath, 'upstreamHttpProtocolOptions'), [
        'autoSni',
        'autoSanValidation',
      ]);
    const explicit = obj(w, hpo, 'explicitHttpConfig', hpoPath);
    const downstream = obj(w, hpo, 'useDownstreamProtocolConfig', hpoPath);
    if (explicit) {
      const ep = at(hpoPath, 'explicitHttpConfig');
      rejectSet(w, explicit, ep, ['http3ProtocolOptions']);
      if (obj(w, explicit, 'http2ProtocolOptions', ep)) upstreamProtocol = 'http2';
    } else if (downstream) {
      rejectSet(w, downstream, at(hpoPath, 'useDownstreamProtocolConfig'), [
        'http3ProtocolOptions',
      ]);
      upstreamProtocol = 'downstream';
    }
    common = obj(w, hpo, 'commonHttpProtocolOptions', hpoPath);
    commonPath = at(hpoPath, 'commonHttpProtocolOptions');
  } else {
    // The deprecated cluster-level fields Envoy still honours.
    if (obj(w, c, 'http2ProtocolOptions', '')) upstreamProtocol = 'http2';
    if (
      enumOf(w, c, 'protocolSelection', '', [
        'USE_CONFIGURED_PROTOCOL',
        'USE_DOWNSTREAM_PROTOCOL',
      ]) === 'USE_DOWNSTREAM_PROTOCOL'
    )
      upstreamProtocol = 'downstream';
    common = obj(w, c, 'commonHttpProtocolOptions', '');
    commonPath = 'commonHttpProtocolOptions';
  }
  let maxRequestsPerConnection = wrappedUint(w, c, 'maxRequestsPerConnection', '');
  let idleTimeoutMs: number | undefined = DEFAULT_UPSTREAM_IDLE_TIMEOUT_MS;
  if (common) {
    rejectSet(w, common, commonPath, ['maxConnectionDuration', 'maxStreamDuration']);
    maxRequestsPerConnection =
      wrappedUint(w, common, 'maxRequestsPerConnection', commonPath) ?? maxRequestsPerConnection;
    idleTimeoutMs =
      durationMs(w, common, 'idleTimeout', commonPath) ?? DEFAULT_UPSTREAM_IDLE_TIMEOUT_MS;
  }
  return {
    upstreamProtocol,
    // 0 means unlimited in Envoy, as does absence.
    ...(maxRequestsPerConnection ? { maxRequestsPerConnection } : {}),
    // 0 disables the idle timeout.
    ...(idleTimeoutMs ? { idleTimeoutMs } : {}),
  };
}

function tcpKeepalive(w: Where, c: Json): Cluster['tcpKeepalive'] {
  const uco = obj(w, c, 'upstreamConnectionOptions', '');
  if (!uco) return undefined;
  rejectSet(w, uco, 'upstreamConnectionOptions', ['happyEyeballsConfig']);
  const ka = obj(w, uco, 'tcpKeepalive', 'upstreamConnectionOptions');
  if (!ka) return undefined;
  const p = 'upstreamConnectionOptions.tcpKeepalive';
  const probes = wrappedUint(w, ka, 'keepaliveProbes', p);
  const timeSeconds = wrappedUint(w, ka, 'keepaliveTime', p);
  const intervalSeconds = wrappedUint(w, ka, 'keepaliveInterval', p);
  return {
    ...(probes !== undefined ? { probes } : {}),
    ...(timeSeconds !== undefined ? { timeSeconds } : {}),
    ...(intervalSeconds !== undefined ? { intervalSeconds } : {}),
  };
}

// ---------------------------------------------------------------------------------------------
// Load assignments

const HEALTH_STATUSES = [
  'UNKNOWN',
  'HEALTHY',
  'UNHEALTHY',
  'DRAINING',
  'TIMEOUT',
  'DEGRADED',
] as const;
const EMPTY_LOCALITY: Locality = Object.freeze({ region: '', zone: '', subZone: '' });
const NO_MATCH: Readonly<Record<string, string>> = Object.freeze({});

/**
 * A ClusterLoadAssignment at `path`: localities flattened into endpoints. `hostnames`: addresses
 * may be host names (DNS clusters); EDS and STATIC need IP addresses.
 */
export function compileAssignment(
  w: Where,
  la: Json,
  path: string,
  hostnames: boolean,
): LoadAssignment {
  const clusterName = reqStr(w, la, 'clusterName', path);
  rejectSet(w, la, path, ['namedEndpoints']);
  const policy = obj(w, la, 'policy', path);
  if (policy) rejectSet(w, policy, at(path, 'policy'), ['dropOverloads']);
  const groups = list(w, la, 'endpoints', path);
  const endpoints: Endpoint[] = [];
  for (let g = 0; g < groups.length; g++) {
    const gp = idx(at(path, 'endpoints'), g);
    const group = elem(w, groups[g], gp);
    rejectSet(w, group, gp, ['loadBalancerEndpoints', 'ledsClusterLocalityConfig']);
    const loc = obj(w, group, 'locality', gp);
    const locality: Locality =
      loc && (isSet(loc.region) || isSet(loc.zone) || isSet(loc.subZone))
        ? {
            region: str(w, loc, 'region', at(gp, 'locality')) ?? '',
            zone: str(w, loc, 'zone', at(gp, 'locality')) ?? '',
            subZone: str(w, loc, 'subZone', at(gp, 'locality')) ?? '',
          }
        : EMPTY_LOCALITY;
    const priority = priorityOf(w, group, 'priority', gp);
    const localityMatch = socketMatch(w, group, gp);
    const lbs = list(w, group, 'lbEndpoints', gp);
    const lbsPath = at(gp, 'lbEndpoints');
    for (let i = 0; i < lbs.length; i++) {
      const p = idx(lbsPath, i);
      const lb = elem(w, lbs[i], p);
      rejectSet(w, lb, p, ['endpointName']);
      const ep = reqObj(w, lb, 'endpoint', p);
      const addr = socketAddress(
        w,
        reqObj(w, ep, 'address', at(p, 'endpoint')),
        at(p, 'endpoint.address'),
        !hostnames,
      );
      const weight = wrappedUint(w, lb, 'loadBalancingWeight', p) ?? 1;
      if (weight < 1) fail(w, at(p, 'loadBalancingWeight'), 'must be at least 1');
      const health = enumOf(w, lb, 'healthStatus', p, HEALTH_STATUSES);
      endpoints.push({
        address: addr.address,
        port: addr.port,
        weight,
        healthy: health === 'UNKNOWN' || health === 'HEALTHY',
        locality,
        priority,
        // Envoy matches on the endpoint's metadata, else its locality's.
        transportMatch: socketMatch(w, lb, p) ?? localityMatch ?? NO_MATCH,
      });
    }
  }
  return { clusterName, endpoints };
}

function priorityOf(w: Where, o: Json, key: string, path: string): number {
  const v = o[key];
  if (v === undefined || v === null) return 0;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 128)
    fail(w, at(path, key), 'expected a priority 0-128');
  return v;
}

/** `metadata.filterMetadata['envoy.transport_socket_match']`; undefined when absent. */
function socketMatch(
  w: Where,
  o: Json,
  path: string,
): Readonly<Record<string, string>> | undefined {
  const md = obj(w, o, 'metadata', path);
  if (!md) return undefined;
  const fm = map(w, md, 'filterMetadata', at(path, 'metadata'));
  if (!fm) return undefined;
  const s = fm[TRANSPORT_SOCKET_MATCH_KEY];
  if (s === undefined) return undefined;
  const p = at(at(path, 'metadata.filterMetadata'), TRANSPORT_SOCKET_MATCH_KEY);
  if (!isObj(s)) fail(w, p, 'expected an object');
  return stringStruct(w, s, p);
}
