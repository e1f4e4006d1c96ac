/**
 * LDS. Sidecars: `virtualOutbound` on the outbound capture port hands each connection to the
 * `0.0.0.0_PORT` listener of its original port (HTTP ports: an HttpConnectionManager with the
 * route configuration `"PORT"`; TCP ports: tcp_proxy), or passes it through / drops it per the
 * outbound traffic policy; `virtualInbound` on the inbound capture port terminates mesh mTLS as
 * PeerAuthentication says and hands traffic to `inbound|PORT||`. Proxyless gRPC clients: an API
 * listener per `HOST:PORT` they ask for, pointing at the route configuration of the same name;
 * proxyless gRPC servers (`XdsServer`): a listener per address they listen on, named by the
 * bootstrap's template `xds.istio.io/grpc/lds/inbound/HOST:PORT`, with the port's mTLS.
 */
import { parseHostPort } from '../../../common/config';
import type { TCPRoute } from '../../config/types';
import type { Service } from '../../registry/types';
import { inboundPorts } from './inbound';
import {
  BLACKHOLE_CLUSTER,
  inboundClusterName,
  outboundClusterName,
  outboundListenerName,
  PASSTHROUGH_CLUSTER,
  VIRTUAL_INBOUND_LISTENER,
  VIRTUAL_OUTBOUND_LISTENER,
} from './names';
import { destinationCluster, proxylessRouteConfig, type RouteContext } from './routes';
import { peerAuthenticationMode, type ProxyScope } from './scope';
import { grpcMutualDownstream, istioMutualDownstream, MESH_ALPN_MATCH } from './tls';
import {
  FILTERS,
  isHttp2Protocol,
  isHttpProtocol,
  labelsMatch,
  memo,
  TYPES,
  type Obj,
} from './util';

const ADS_CONFIG_SOURCE: Obj = { ads: {}, resourceApiVersion: 'V3' };

const socketAddress = (address: string, port: number): Obj => ({
  socketAddress: { address, portValue: port },
});

/** `{ name, typedConfig }` with an empty config message: HTTP and listener filters alike. */
const typedFilter = (name: string, type: string): Obj => ({ name, typedConfig: { '@type': type } });

/** A tcp_proxy network filter to one cluster, or to weighted clusters. */
function tcpProxy(statPrefix: string, target: string | { name: string; weight: number }[]): Obj {
  const config: Obj = { '@type': TYPES.tcpProxy, statPrefix };
  if (typeof target === 'string') config.cluster = target;
  else config.weightedClusters = { clusters: target };
  return { name: FILTERS.tcpProxy, typedConfig: config };
}

/** Where unmatched outbound traffic goes: on to its destination, or nowhere. */
function fallbackCluster(scope: ProxyScope): string {
  return scope.outboundTrafficPolicy === 'ALLOW_ANY' ? PASSTHROUGH_CLUSTER : BLACKHOLE_CLUSTER;
}

function fallbackChain(scope: ProxyScope): Obj {
  const cluster = fallbackCluster(scope);
  return { name: cluster, filters: [tcpProxy(cluster, cluster)] };
}

/** The listener on the outbound capture port. */
export function virtualOutboundListener(scope: ProxyScope): Obj {
  return {
    name: VIRTUAL_OUTBOUND_LISTENER,
    address: socketAddress('0.0.0.0', scope.push.mesh.proxyOutboundPort),
    useOriginalDst: { value: true },
    trafficDirection: 'OUTBOUND',
    defaultFilterChain: fallbackChain(scope),
  };
}

/** The outbound HttpConnectionManager of a port: routes by RDS `"PORT"`. */
function outboundHttpConnectionManager(port: number): Obj {
  return {
    name: FILTERS.httpConnectionManager,
    typedConfig: {
      '@type': TYPES.httpConnectionManager,
      statPrefix: `outbound_0.0.0.0_${port}`,
      codecType: 'AUTO',
      rds: { configSource: ADS_CONFIG_SOURCE, routeConfigName: String(port) },
      // Routes are fetched separately, so every filter a route may configure is in the chain;
      // with no per-route config the fault and CORS filters do nothing.
      httpFilters: [
        typedFilter(FILTERS.fault, TYPES.fault),
        typedFilter(FILTERS.cors, TYPES.cors),
        typedFilter(FILTERS.router, TYPES.router),
      ],
      upgradeConfigs: [{ upgradeType: 'websocket' }],
      useRemoteAddress: { value: false },
    },
  };
}

/** The first TCP route of a VirtualService that applies to this proxy and port. */
function tcpRouteFor(
  scope: ProxyScope,
  service: Service,
  port: number,
): { route: TCPRoute; namespace: string } | undefined {
  const vs = scope.virtualService(service.hostname);
  for (const route of vs?.spec.tcp ?? []) {
    const applies =
      !route.match ||
      route.match.length === 0 ||
      route.match.some(
        m =>
          (m.port === undefined || m.port === port) &&
          labelsMatch(m.sourceLabels, scope.proxy.labels) &&
          (m.sourceNamespace === undefined || m.sourceNamespace === scope.namespace) &&
          (!m.gateways || m.gateways.length === 0 || m.gateways.includes('mesh')),
      );
    if (applies && route.route && route.route.length > 0)
      return { route, namespace: vs!.namespace };
  }
  return undefined;
}

/** tcp_proxy for a TCP service: its VirtualService's TCP route, else the whole service. */
function tcpServiceFilter(scope: ProxyScope, service: Service, port: number): Obj {
  const statPrefix = outboundClusterName(service.hostname, port);
  const found = tcpRouteFor(scope, service, port);
  if (!found) return tcpProxy(statPrefix, outboundClusterName(service.hostname, port));
  const ctx: RouteContext = { scope, flavor: 'sidecar', port };
  const dests = found.route.route!.filter(
    d => found.route.route!.length === 1 || (d.weight ?? 0) > 0,
  );
  if (dests.length === 1)
    return tcpProxy(statPrefix, destinationCluster(ctx, dests[0]!.destination, found.namespace));
  return tcpProxy(
    statPrefix,
    dests.map(d => ({
      name: destinationCluster(ctx, d.destination, found.namespace),
      weight: d.weight ?? 0,
    })),
  );
}

/** `address/len` for a VIP (or a CIDR a ServiceEntry lists). */
function cidrRange(address: string): Obj {
  const [ip, len] = address.split('/') as [string, string | undefined];
  const max = ip.includes(':') ? 128 : 32;
  return { addressPrefix: ip, prefixLen: { value: len !== undefined ? Number(len) : max } };
}

/**
 * One `0.0.0.0_PORT` listener per port some visible service uses. HTTP services share one chain
 * (virtual hosts tell them apart); TCP services with VIPs get a chain matching their VIPs; one TCP
 * service without VIPs may own the port's catch-all chain if no HTTP service does (a second one
 * conflicts, as in Istio, and loses). Other traffic follows the outbound traffic policy.
 */
export function outboundListeners(scope: ProxyScope): Obj[] {
  return memo(scope.push.cache, `xdsgen|lds|outbound|${scope.key}`, () => {
    const { proxyInboundPort, proxyOutboundPort } = scope.push.mesh;
    const byPort = new Map<number, { http: boolean; tcp: Service[] }>();
    for (const { service, ports } of scope.services) {
      for (const p of ports) {
        if (p.protocol === 'UDP' || p.port === proxyInboundPort || p.port === proxyOutboundPort)
          continue;
        const entry = byPort.get(p.port) ?? { http: false, tcp: [] };
        if (isHttpProtocol(p.protocol)) entry.http = true;
        else entry.tcp.push(service);
        byPort.set(p.port, entry);
      }
    }
    const listeners: Obj[] = [];
    for (const port of [...byPort.keys()].sort((a, b) => a - b)) {
      const { http, tcp } = byPort.get(port)!;
      const chains: Obj[] = [];
      const usedPrefixes = new Set<string>();
      let catchAll: Obj | undefined;
      if (http) catchAll = { name: `${port}_http`, filters: [outboundHttpConnectionManager(port)] };
      for (const service of tcp) {
        const prefixes = service.addresses.filter(a => !usedPrefixes.has(a));
        if (prefixes.length > 0) {
          for (const a of prefixes) usedPrefixes.add(a);
          chains.push({
            name: outboundClusterName(service.hostname, port),
            filterChainMatch: { prefixRanges: prefixes.map(cidrRange) },
            filters: [tcpServiceFilter(scope, service, port)],
          });
        } else if (!catchAll && service.addresses.length === 0) {
          catchAll = {
            name: outboundClusterName(service.hostname, port),
            filters: [tcpServiceFilter(scope, service, port)],
          };
        }
      }
      if (catchAll) chains.push(catchAll);
      const listener: Obj = {
        name: outboundListenerName(port),
        address: socketAddress('0.0.0.0', port),
        bindToPort: { value: false },
        trafficDirection: 'OUTBOUND',
        filterChains: chains,
      };
      if (!catchAll) listener.defaultFilterChain = fallbackChain(scope);
      listeners.push(listener);
    }
    return listeners;
  });
}

/** The inbound HttpConnectionManager: every request to the local workload on `port`. */
function inboundHttpConnectionManager(port: number): Obj {
  const cluster = inboundClusterName(port);
  return {
    name: FILTERS.httpConnectionManager,
    typedConfig: {
      '@type': TYPES.httpConnectionManager,
      statPrefix: `inbound_0.0.0.0_${port}`,
      codecType: 'AUTO',
      routeConfig: {
        name: cluster,
        virtualHosts: [
          {
            name: `inbound|http|${port}`,
            domains: ['*'],
            routes: [
              {
                name: 'default',
                match: { prefix: '/' },
                route: { cluster, timeout: { seconds: 0 } },
              },
            ],
          },
        ],
        validateClusters: { value: false },
      },
      httpFilters: [typedFilter(FILTERS.router, TYPES.router)],
      upgradeConfigs: [{ upgradeType: 'websocket' }],
      // The caller's verified identity reaches the application in x-forwarded-client-cert.
      forwardClientCertDetails: 'APPEND_FORWARD',
      setCurrentClientCertDetails: { subject: { value: true }, uri: true, dns: true },
    },
  };
}

/** The listener on the inbound capture port, one or two filter chains per workload port. */
export function virtualInboundListener(scope: ProxyScope): Obj {
  const chains: Obj[] = [];
  let inspect = false;
  const trustDomain = scope.push.mesh.trustDomain;
  for (const { port, protocol, mtls } of inboundPorts(scope)) {
    const http = isHttpProtocol(protocol);
    const filters = [
      http
        ? inboundHttpConnectionManager(port)
        : tcpProxy(`inbound_0.0.0.0_${port}`, inboundClusterName(port)),
    ];
    const alpn = http ? (isHttp2Protocol(protocol) ? ['h2'] : ['h2', 'http/1.1']) : [];
    const destinationPort = { value: port };
    const tlsChain = (match: Obj): Obj => ({
      name: `${inboundClusterName(port)}-mtls`,
      filterChainMatch: { destinationPort, ...match },
      transportSocket: istioMutualDownstream(trustDomain, alpn),
      filters,
    });
    const plainChain = {
      name: inboundClusterName(port),
      filterChainMatch: { destinationPort },
      filters,
    };
    if (mtls === 'STRICT') {
      chains.push(tlsChain({}));
    } else if (mtls === 'DISABLE') {
      chains.push(plainChain);
    } else {
      inspect = true;
      chains.push(
        tlsChain({ transportProtocol: 'tls', applicationProtocols: MESH_ALPN_MATCH }),
        // TLS that is not mesh mTLS (no Istio ALPN: a client outside the mesh talking to an
        // application that terminates TLS itself) passes through untouched. Without this chain
        // it would match nothing: Envoy picks the `tls` chains by transport protocol first and
        // does not fall back to the plaintext chain when their ALPN does not match.
        {
          name: `${inboundClusterName(port)}-tls-passthrough`,
          filterChainMatch: { destinationPort, transportProtocol: 'tls' },
          filters: [tcpProxy(`inbound_0.0.0.0_${port}`, inboundClusterName(port))],
        },
        plainChain,
      );
    }
  }
  const listenerFilters: Obj[] = [typedFilter(FILTERS.originalDst, TYPES.originalDst)];
  if (inspect) listenerFilters.push(typedFilter(FILTERS.tlsInspector, TYPES.tlsInspector));
  return {
    name: VIRTUAL_INBOUND_LISTENER,
    address: socketAddress('0.0.0.0', scope.push.mesh.proxyInboundPort),
    trafficDirection: 'INBOUND',
    listenerFilters,
    filterChains: chains,
    // Connections to ports no workload on this host declares are refused.
    defaultFilterChain: {
      name: BLACKHOLE_CLUSTER,
      filters: [tcpProxy(BLACKHOLE_CLUSTER, BLACKHOLE_CLUSTER)],
    },
  };
}

/**
 * The API listener for a proxyless client's `xds:///HOST:PORT`: an HttpConnectionManager that
 * fetches the route configuration of the same name; the fault filter only when a route uses it
 * (gRPC requires the router filter last).
 */
export function proxylessListener(scope: ProxyScope, name: string): Obj | undefined {
  const rds = proxylessRouteConfig(scope, name);
  if (!rds) return undefined;
  return memo(scope.push.cache, `xdsgen|lds|proxyless|${scope.key}|${name}`, () => {
    const httpFilters = [typedFilter(FILTERS.router, TYPES.router)];
    if (rds.usesFault) httpFilters.unshift(typedFilter(FILTERS.fault, TYPES.fault));
    return {
      name,
      apiListener: {
        apiListener: {
          '@type': TYPES.httpConnectionManager,
          statPrefix: name,
          rds: { configSource: ADS_CONFIG_SOURCE, routeConfigName: name },
          httpFilters,
        },
      },
    };
  });
}

/**
 * The bootstrap's `server_listener_resource_name_template` (Istio's): a proxyless gRPC server
 * listening on HOST:PORT asks for the listener of this name with `%s` = HOST:PORT.
 */
export const GRPC_SERVER_LISTENER_PREFIX = 'xds.istio.io/grpc/lds/inbound/';

/** HOST:PORT of a proxyless gRPC server's listener name; undefined for any other name. */
export function proxylessServerAddress(name: string): { host: string; port: number } | undefined {
  if (!name.startsWith(GRPC_SERVER_LISTENER_PREFIX)) return undefined;
  return parseHostPort(name.slice(GRPC_SERVER_LISTENER_PREFIX.length));
}

/**
 * The listener a proxyless gRPC server (`XdsServer`) asks for, `xds.istio.io/grpc/lds/inbound/
 * HOST:PORT`: its address, and one filter chain whose HttpConnectionManager serves every call
 * locally (a route with `non_forwarding_action`, the router filter). The port's mTLS mode, as
 * PeerAuthentication sets it for this workload (the sidecar's inbound rule), decides the TLS, to
 * match what proxyless clients send (clusters.ts: mTLS to a port only when it is STRICT): STRICT
 * is mutual TLS with the workload certificate, a mesh client certificate required; PERMISSIVE and
 * DISABLE are plaintext (gRPC cannot serve TLS and plaintext on one port). Undefined for a name
 * that is not such a listener.
 */
export function proxylessServerListener(scope: ProxyScope, name: string): Obj | undefined {
  const hp = proxylessServerAddress(name);
  if (!hp) return undefined;
  return memo(scope.push.cache, `xdsgen|lds|grpc-server|${scope.key}|${name}`, () => {
    const declared = inboundPorts(scope).find(p => p.port === hp.port);
    const mtls =
      declared?.mtls ??
      peerAuthenticationMode(scope.push, scope.namespace, scope.proxy.labels, hp.port);
    const route = `inbound|${hp.port}||`;
    return {
      name,
      address: socketAddress(hp.host, hp.port),
      filterChains: [
        {
          name: route,
          filters: [
            {
              name: FILTERS.httpConnectionManager,
              typedConfig: {
                '@type': TYPES.httpConnectionManager,
                // The TLS mode in the HCM's bytes: grpc-js-xds (1.14.1) compares a new listener
                // with the one it serves filter by filter, then by transport socket, and its
                // transport-socket test is inverted, so a change between TLS and plaintext alone
                // is taken as no change (or throws) and never applied. A differing filter is.
                statPrefix: `${route}${mtls === 'STRICT' ? 'mtls' : 'plaintext'}`,
                routeConfig: {
                  name: route,
                  virtualHosts: [
                    {
                      name: route,
                      domains: ['*'],
                      routes: [{ match: { prefix: '/' }, nonForwardingAction: {} }],
                    },
                  ],
                },
                httpFilters: [typedFilter(FILTERS.router, TYPES.router)],
              },
            },
          ],
          ...(mtls === 'STRICT' ? { transportSocket: grpcMutualDownstream() } : {}),
        },
      ],
    };
  });
}
