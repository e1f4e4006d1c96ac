/**
 * `envoy.config.listener.v3.Listener` → Listener: filter chains, their matches and TLS, and the
 * network filters the proxy implements (http_connection_manager with the router, fault and CORS
 * HTTP filters; tcp_proxy). RBAC filters (network and HTTP) are accepted and NOT enforced: Sail's
 * pilot does not generate them yet, and refusing them would NACK every listener of a mesh that
 * has AuthorizationPolicies. Anything else that would change what happens to traffic is an error.
 * @internal
 */
import { isIP } from 'node:net';
import type {
  CidrRange,
  FilterChain,
  FilterChainMatch,
  ForwardClientCert,
  HttpHandler,
  Listener,
  SocketAddress,
  TcpProxyHandler,
  WeightedCluster,
} from '../model';
import { NO_HEADER_EDITS } from '../model';
import {
  at,
  bool,
  durationMs,
  elem,
  enumOf,
  extension,
  fail,
  idx,
  list,
  obj,
  rejectSet,
  reqObj,
  reqStr,
  str,
  strList,
  uint,
  wrappedBool,
  wrappedUint,
  type Json,
  type Where,
} from './compile-common';
import { faultPolicy, routeTable } from './compile-routes';
import { downstreamTls, hasSocket } from './compile-tls';

const HCM_TYPE =
  'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const HCM_NAME = 'envoy.filters.network.http_connection_manager';
const TCP_PROXY_TYPE = 'envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy';
const TCP_PROXY_NAME = 'envoy.filters.network.tcp_proxy';
const NETWORK_RBAC_TYPE = 'envoy.extensions.filters.network.rbac.v3.RBAC';
const NETWORK_RBAC_NAME = 'envoy.filters.network.rbac';

const ROUTER_TYPE = 'envoy.extensions.filters.http.router.v3.Router';
const ROUTER_NAME = 'envoy.filters.http.router';
const FAULT_TYPE = 'envoy.extensions.filters.http.fault.v3.HTTPFault';
const FAULT_NAME = 'envoy.filters.http.fault';
const CORS_TYPE = 'envoy.extensions.filters.http.cors.v3.Cors';
const CORS_NAME = 'envoy.filters.http.cors';
const HTTP_RBAC_TYPE = 'envoy.extensions.filters.http.rbac.v3.RBAC';
const HTTP_RBAC_NAME = 'envoy.filters.http.rbac';

const TLS_INSPECTOR_TYPE = 'envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector';
const TLS_INSPECTOR_NAME = 'envoy.filters.listener.tls_inspector';
const ORIGINAL_DST_TYPE = 'envoy.extensions.filters.listener.original_dst.v3.OriginalDst';
const ORIGINAL_DST_NAME = 'envoy.filters.listener.original_dst';
const HTTP_INSPECTOR_TYPE = 'envoy.extensions.filters.listener.http_inspector.v3.HttpInspector';
const HTTP_INSPECTOR_NAME = 'envoy.filters.listener.http_inspector';

/** Envoy's HTTP connection manager default: streams idle for 5 minutes are reset. */
export const DEFAULT_STREAM_IDLE_TIMEOUT_MS = 300_000;

/** ALPN values only http_inspector (plaintext protocol sniffing) produces. */
const SNIFFED_PROTOCOLS = new Set(['http/1.0', 'http/1.1', 'h2c']);

/** Compiles a Listener whose name has been checked. */
export function listener(w: Where, l: Json): Listener {
  rejectSet(w, l, '', [
    'additionalAddresses',
    'filterChainMatcher',
    'udpListenerConfig',
    'apiListener',
    'internalListener',
  ]);
  if (wrappedBool(w, l, 'transparent', '')) fail(w, 'transparent', 'not supported');
  const address = socketAddress(w, reqObj(w, l, 'address', ''), 'address', true);
  const filters = listenerFilters(w, l);
  const raw = list(w, l, 'filterChains', '');
  const filterChains: FilterChain[] = [];
  const seen = new Map<string, string>();
  for (let i = 0; i < raw.length; i++) {
    const p = idx('filterChains', i);
    const chain = filterChain(w, elem(w, raw[i], p), p);
    checkUnique(w, chain, p, seen);
    filterChains.push(chain);
  }
  const dfc = obj(w, l, 'defaultFilterChain', '');
  const defaultFilterChain = dfc ? filterChain(w, dfc, 'defaultFilterChain') : undefined;
  if (filterChains.length === 0 && !defaultFilterChain)
    fail(w, 'filterChains', 'a listener needs a filter chain or a default filter chain');

  let matchesTls = false;
  for (let i = 0; i < filterChains.length; i++) {
    const m = filterChains[i]!.match;
    if (
      m.transportProtocol !== undefined ||
      m.serverNames.length > 0 ||
      m.applicationProtocols.length > 0
    )
      matchesTls = true;
    // Plaintext ALPN matches need http_inspector's protocol sniffing, which the proxy lacks.
    if (m.transportProtocol !== 'tls' && m.applicationProtocols.some(a => SNIFFED_PROTOCOLS.has(a)))
      fail(
        w,
        at(idx('filterChains', i), 'filterChainMatch.applicationProtocols'),
        'matching plaintext HTTP protocols (http_inspector) is not supported',
      );
  }
  const direction = enumOf(w, l, 'trafficDirection', '', ['UNSPECIFIED', 'INBOUND', 'OUTBOUND']);
  return {
    name: w.name,
    address,
    bindToPort: wrappedBool(w, l, 'bindToPort', '') ?? true,
    useOriginalDst: wrappedBool(w, l, 'useOriginalDst', '') ?? false,
    direction:
      direction === 'INBOUND' ? 'inbound' : direction === 'OUTBOUND' ? 'outbound' : 'unspecified',
    filterChains,
    ...(defaultFilterChain ? { defaultFilterChain } : {}),
    inspectTls: matchesTls || filters.tlsInspector,
  };
}

/** Listener filters: which are present; unknown ones are errors (they have no is_optional). */
function listenerFilters(w: Where, l: Json): { tlsInspector: boolean } {
  const raw = list(w, l, 'listenerFilters', '');
  let tlsInspector = false;
  for (let i = 0; i < raw.length; i++) {
    const p = idx('listenerFilters', i);
    const f = elem(w, raw[i], p);
    if (f.filterDisabled !== undefined) fail(w, at(p, 'filterDisabled'), 'not supported');
    const ext = extension(w, f, p);
    const is = (type: string, name: string) =>
      ext.type === type || (ext.type === '' && ext.name === name);
    if (is(TLS_INSPECTOR_TYPE, TLS_INSPECTOR_NAME)) tlsInspector = true;
    // The proxy always reads the original destination of captured connections (SO_ORIGINAL_DST).
    else if (is(ORIGINAL_DST_TYPE, ORIGINAL_DST_NAME)) continue;
    // Harmless without chains that match on its result (checked in listener()).
    else if (is(HTTP_INSPECTOR_TYPE, HTTP_INSPECTOR_NAME)) continue;
    else fail(w, p, `unsupported listener filter ${ext.type || ext.name}`);
  }
  return { tlsInspector };
}

/** Envoy rejects a listener whose chains have identical matches; so does the proxy. */
function checkUnique(w: Where, chain: FilterChain, path: string, seen: Map<string, string>): void {
  const m = chain.match;
  const dims = [
    m.prefixRanges.length > 0 ? m.prefixRanges.map(r => `${r.address}/${r.prefixLen}`) : [''],
    m.serverNames.length > 0 ? m.serverNames : [''],
    m.applicationProtocols.length > 0 ? m.applicationProtocols : [''],
    m.sourcePrefixRanges.length > 0
      ? m.sourcePrefixRanges.map(r => `${r.address}/${r.prefixLen}`)
      : [''],
  ];
  // Envoy compares every combination of list entries; a huge product is not worth the check.
  if (dims.reduce((n, d) => n * d.length, 1) > 10_000) return;
  const base = `${m.destinationPort ?? ''}|${m.transportProtocol ?? ''}`;
  const walk = (prefix: string, i: number): void => {
    if (i === dims.length) {
      const other = seen.get(prefix);
      if (other !== undefined)
        fail(
          w,
          at(path, 'filterChainMatch'),
          `same match as filter chain ${JSON.stringify(other)}`,
        );
      seen.set(prefix, chain.name);
      return;
    }
    for (const v of dims[i]!) walk(`${prefix}|${v}`, i + 1);
  };
  walk(base, 0);
}

/** A SocketAddress inside an `Address`; `ipOnly`: a listener binds an IP literal. */
export function socketAddress(w: Where, a: Json, path: string, ipOnly: boolean): SocketAddress {
  rejectSet(w, a, path, ['pipe', 'envoyInternalAddress']);
  const sa = obj(w, a, 'socketAddress', path);
  if (!sa) fail(w, path, 'only socket addresses are supported');
  const p = at(path, 'socketAddress');
  rejectSet(w, sa, p, ['namedPort', 'resolverName']);
  enumOf(w, sa, 'protocol', p, ['TCP']);
  const address = reqStr(w, sa, 'address', p);
  if (ipOnly && isIP(address) === 0) fail(w, at(p, 'address'), `${address} is not an IP address`);
  return { address, port: uint(w, sa, 'portValue', p, 65_535) ?? 0 };
}

function filterChain(w: Where, c: Json, path: string): FilterChain {
  rejectSet(w, c, path, ['onDemandConfiguration']);
  if (wrappedBool(w, c, 'useProxyProto', path)) fail(w, at(path, 'useProxyProto'), 'not supported');
  const fcm = obj(w, c, 'filterChainMatch', path);
  const match = filterChainMatch(w, fcm ?? {}, at(path, 'filterChainMatch'));
  const socket = obj(w, c, 'transportSocket', path);
  const tls = hasSocket(socket) ? downstreamTls(w, socket, at(path, 'transportSocket')) : undefined;
  return {
    name: str(w, c, 'name', path) ?? '',
    match,
    ...(tls ? { tls } : {}),
    handler: networkFilters(w, c, path),
  };
}

const EMPTY_MATCH: FilterChainMatch = Object.freeze({
  prefixRanges: Object.freeze([]),
  sourcePrefixRanges: Object.freeze([]),
  applicationProtocols: Object.freeze([]),
  serverNames: Object.freeze([]),
}) as FilterChainMatch;

function filterChainMatch(w: Where, m: Json, path: string): FilterChainMatch {
  rejectSet(w, m, path, ['directSourcePrefixRanges', 'sourcePorts', 'addressSuffix', 'suffixLen']);
  enumOf(w, m, 'sourceType', path, ['ANY']);
  const destinationPort = wrappedUint(w, m, 'destinationPort', path, 65_535);
  if (destinationPort === 0) fail(w, at(path, 'destinationPort'), 'must be 1-65535');
  const transport = str(w, m, 'transportProtocol', path);
  if (transport !== undefined && transport !== 'tls' && transport !== 'raw_buffer')
    fail(w, at(path, 'transportProtocol'), `unsupported transport protocol ${transport}`);
  const prefixRanges = cidrRanges(w, m, 'prefixRanges', path);
  const sourcePrefixRanges = cidrRanges(w, m, 'sourcePrefixRanges', path);
  const applicationProtocols = strList(w, m, 'applicationProtocols', path);
  const serverNames = strList(w, m, 'serverNames', path).map(s => s.toLowerCase());
  if (
    destinationPort === undefined &&
    transport === undefined &&
    prefixRanges.length +
      sourcePrefixRanges.length +
      applicationProtocols.length +
      serverNames.length ===
      0
  )
    return EMPTY_MATCH;
  return {
    ...(destinationPort !== undefined ? { destinationPort } : {}),
    prefixRanges,
    sourcePrefixRanges,
    ...(transport !== undefined ? { transportProtocol: transport } : {}),
    applicationProtocols,
    serverNames,
  };
}

function cidrRanges(w: Where, m: Json, key: string, path: string): readonly CidrRange[] {
  const raw = list(w, m, key, path);
  const out: CidrRange[] = [];
  for (let i = 0; i < raw.length; i++) {
    const p = idx(at(path, key), i);
    const r = elem(w, raw[i], p);
    const address = reqStr(w, r, 'addressPrefix', p);
    const family = isIP(address);
    if (family === 0) fail(w, at(p, 'addressPrefix'), `${address} is not an IP address`);
    // Envoy: an absent prefix_len is 0 (the whole address family).
    const prefixLen = wrappedUint(w, r, 'prefixLen', p, family === 4 ? 32 : 128) ?? 0;
    out.push({ address, prefixLen });
  }
  return out;
}

/** The network filters of a chain: optional RBAC filters, then one terminal filter. */
function networkFilters(w: Where, c: Json, path: string): TcpProxyHandler | HttpHandler {
  const raw = list(w, c, 'filters', path);
  if (raw.length === 0) fail(w, at(path, 'filters'), 'a filter chain needs a terminal filter');
  let handler: TcpProxyHandler | HttpHandler | undefined;
  for (let i = 0; i < raw.length; i++) {
    const p = idx(at(path, 'filters'), i);
    const f = elem(w, raw[i], p);
    const ext = extension(w, f, p);
    const is = (type: string, name: string) =>
      ext.type === type || (ext.type === '' && ext.name === name);
    if (handler) fail(w, p, 'no filter may follow the terminal filter');
    if (is(HCM_TYPE, HCM_NAME))
      handler = httpConnectionManager(w, ext.config, at(p, 'typedConfig'));
    else if (is(TCP_PROXY_TYPE, TCP_PROXY_NAME))
      handler = tcpProxy(w, ext.config, at(p, 'typedConfig'));
    else if (is(NETWORK_RBAC_TYPE, NETWORK_RBAC_NAME))
      continue; // not enforced: see file comment
    else fail(w, p, `unsupported network filter ${ext.type || ext.name}`);
  }
  if (!handler) fail(w, at(path, 'filters'), 'a filter chain needs a terminal filter');
  return handler;
}

function tcpProxy(w: Where, t: Json, path: string): TcpProxyHandler {
  rejectSet(w, t, path, [
    'onDemand',
    'metadataMatch',
    'tunnelingConfig',
    'maxDownstreamConnectionDuration',
    'hashPolicy',
  ]);
  const statPrefix = reqStr(w, t, 'statPrefix', path);
  const cluster = str(w, t, 'cluster', path);
  const weighted = obj(w, t, 'weightedClusters', path);
  let clusters: WeightedCluster[];
  let totalWeight = 0;
  if (cluster !== undefined) {
    clusters = [
      {
        name: cluster,
        weight: 1,
        requestHeaders: NO_HEADER_EDITS,
        responseHeaders: NO_HEADER_EDITS,
      },
    ];
    totalWeight = 1;
  } else if (weighted) {
    const wp = at(path, 'weightedClusters');
    const raw = list(w, weighted, 'clusters', wp);
    if (raw.length === 0) fail(w, at(wp, 'clusters'), 'at least one cluster is required');
    clusters = [];
    for (let i = 0; i < raw.length; i++) {
      const p = idx(at(wp, 'clusters'), i);
      const cw = elem(w, raw[i], p);
      rejectSet(w, cw, p, ['metadataMatch']);
      const weight = uint(w, cw, 'weight', p) ?? 0;
      if (weight < 1) fail(w, at(p, 'weight'), 'must be at least 1');
      totalWeight += weight;
      clusters.push({
        name: reqStr(w, cw, 'name', p),
        weight,
        requestHeaders: NO_HEADER_EDITS,
        responseHeaders: NO_HEADER_EDITS,
      });
    }
  } else {
    fail(w, path, 'tcp_proxy names no cluster (cluster or weightedClusters)');
  }
  const idleTimeoutMs = durationMs(w, t, 'idleTimeout', path);
  return {
    kind: 'tcp',
    statPrefix,
    clusters,
    totalWeight,
    ...(idleTimeoutMs !== undefined ? { idleTimeoutMs } : {}),
  };
}

const FORWARD_CLIENT_CERT: readonly ForwardClientCert[] = [
  'SANITIZE',
  'FORWARD_ONLY',
  'APPEND_FORWARD',
  'SANITIZE_SET',
  'ALWAYS_FORWARD_ONLY',
];

function httpConnectionManager(w: Where, h: Json, path: string): HttpHandler {
  rejectSet(w, h, path, ['scopedRoutes', 'http3ProtocolOptions', 'earlyHeaderMutationExtensions']);
  const statPrefix = reqStr(w, h, 'statPrefix', path);
  const codec = enumOf(w, h, 'codecType', path, ['AUTO', 'HTTP1', 'HTTP2']);
  const rds = obj(w, h, 'rds', path);
  const rc = obj(w, h, 'routeConfig', path);
  let route: { rdsName: string } | { routeTable: HttpHandler['routeTable'] };
  if (rds) route = { rdsName: reqStr(w, rds, 'routeConfigName', at(path, 'rds')) };
  else if (rc) route = { routeTable: routeTable(w, rc, at(path, 'routeConfig')) };
  else fail(w, path, 'needs rds or routeConfig');

  const filters = httpFilters(w, h, path);
  const details = obj(w, h, 'setCurrentClientCertDetails', path) ?? {};
  const dp = at(path, 'setCurrentClientCertDetails');
  if (bool(w, details, 'chain', dp)) fail(w, at(dp, 'chain'), 'not supported');
  // Envoy: absent stream_idle_timeout is 5 minutes; 0 disables it. request_timeout defaults to off.
  const streamIdle = durationMs(w, h, 'streamIdleTimeout', path) ?? DEFAULT_STREAM_IDLE_TIMEOUT_MS;
  const request = durationMs(w, h, 'requestTimeout', path) ?? 0;
  return {
    kind: 'http',
    statPrefix,
    codec,
    ...route,
    faultFilter: filters.fault,
    corsFilter: filters.cors,
    forwardClientCert: enumOf(w, h, 'forwardClientCertDetails', path, FORWARD_CLIENT_CERT),
    clientCertDetails: {
      subject: wrappedBool(w, details, 'subject', dp) ?? false,
      uri: bool(w, details, 'uri', dp),
      dns: bool(w, details, 'dns', dp),
      cert: bool(w, details, 'cert', dp),
    },
    upgrades: hcmUpgrades(w, h, path),
    ...(streamIdle > 0 ? { streamIdleTimeoutMs: streamIdle } : {}),
    ...(request > 0 ? { requestTimeoutMs: request } : {}),
  };
}

/** HTTP filters: the router last, fault and CORS optional, RBAC accepted (not enforced). */
function httpFilters(w: Where, h: Json, path: string): { fault: boolean; cors: boolean } {
  const raw = list(w, h, 'httpFilters', path);
  let fault = false;
  let cors = false;
  let router = false;
  for (let i = 0; i < raw.length; i++) {
    const p = idx(at(path, 'httpFilters'), i);
    const f = elem(w, raw[i], p);
    const ext = extension(w, f, p);
    const is = (type: string, name: string) =>
      ext.type === type || (ext.type === '' && ext.name === name);
    if (router) fail(w, p, 'the router must be the last HTTP filter');
    const disabled = bool(w, f, 'disabled', p);
    if (is(ROUTER_TYPE, ROUTER_NAME)) {
      rejectSet(w, ext.config, at(p, 'typedConfig'), ['upstreamHttpFilters']);
      router = true;
    } else if (is(FAULT_TYPE, FAULT_NAME)) {
      // Faults configured on the filter itself would hit every route; Sail's pilot configures them
      // per route only, which is all the model carries.
      if (faultPolicy(w, ext.config, at(p, 'typedConfig')))
        fail(w, at(p, 'typedConfig'), 'filter-level fault injection is not supported');
      if (!disabled) fault = true;
    } else if (is(CORS_TYPE, CORS_NAME)) {
      if (!disabled) cors = true;
    } else if (is(HTTP_RBAC_TYPE, HTTP_RBAC_NAME)) {
      continue; // not enforced: see file comment
    } else if (!bool(w, f, 'isOptional', p)) {
      fail(w, p, `unsupported http filter ${ext.type || ext.name}`);
    }
  }
  if (!router) fail(w, at(path, 'httpFilters'), 'the router filter is required');
  return { fault, cors };
}

function hcmUpgrades(w: Where, h: Json, path: string): readonly string[] {
  const raw = list(w, h, 'upgradeConfigs', path);
  const out: string[] = [];
  for (let i = 0; i < raw.length; i++) {
    const p = idx(at(path, 'upgradeConfigs'), i);
    const u = elem(w, raw[i], p);
    rejectSet(w, u, p, ['filters']);
    const type = reqStr(w, u, 'upgradeType', p).toLowerCase();
    // enabled: false leaves the upgrade to routes that enable it.
    if (wrappedBool(w, u, 'enabled', p) !== false) out.push(type);
  }
  return out;
}
