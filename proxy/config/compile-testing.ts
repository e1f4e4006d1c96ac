/**
 * Test helpers for the compiler: the sample resources pilot generates (proxy/testdata), a
 * protobuf round trip that gives hand-written resources exactly the shape the xDS client decodes,
 * and builders for small resources. Only tests import this file.
 * @internal
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ENVOY_JSON_OPTIONS, envoyType } from '../../api/envoy';

/** A decoded resource. */
export type Resource = Record<string, unknown>;

/** The resources of one sample file by type (`Listener`, `RouteConfiguration`, …). */
export interface Sample {
  readonly Listener: Resource[];
  readonly RouteConfiguration: Resource[];
  readonly Cluster: Resource[];
  readonly ClusterLoadAssignment: Resource[];
}

/** Reads `proxy/testdata/<file>`. */
export function loadSample(file: string): Sample {
  return JSON.parse(
    fs.readFileSync(path.join(__dirname, '..', 'testdata', file), 'utf8'),
  ) as Sample;
}

export const TYPE = {
  listener: 'envoy.config.listener.v3.Listener',
  routes: 'envoy.config.route.v3.RouteConfiguration',
  cluster: 'envoy.config.cluster.v3.Cluster',
  endpoints: 'envoy.config.endpoint.v3.ClusterLoadAssignment',
} as const;

/**
 * `obj` encoded with the Envoy protos and decoded as the xDS client does, so tests see what the
 * proxy would (wrappers, oneofs, Anys and 64-bit integers as strings).
 */
export function decoded(type: string, obj: object): Resource {
  const T = envoyType(type);
  return T.toObject(T.decode(T.encode(T.fromObject(obj)).finish()), ENVOY_JSON_OPTIONS);
}

const P = 'type.googleapis.com/';
/** Type URLs of the messages tests pack into Anys. */
export const URL = {
  hcm: `${P}envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager`,
  tcpProxy: `${P}envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy`,
  router: `${P}envoy.extensions.filters.http.router.v3.Router`,
  fault: `${P}envoy.extensions.filters.http.fault.v3.HTTPFault`,
  cors: `${P}envoy.extensions.filters.http.cors.v3.Cors`,
  corsPolicy: `${P}envoy.extensions.filters.http.cors.v3.CorsPolicy`,
  httpRbac: `${P}envoy.extensions.filters.http.rbac.v3.RBAC`,
  networkRbac: `${P}envoy.extensions.filters.network.rbac.v3.RBAC`,
  filterConfig: `${P}envoy.config.route.v3.FilterConfig`,
  downstreamTls: `${P}envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext`,
  upstreamTls: `${P}envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext`,
  rawBuffer: `${P}envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer`,
  tlsInspector: `${P}envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector`,
  httpInspector: `${P}envoy.extensions.filters.listener.http_inspector.v3.HttpInspector`,
  httpProtocolOptions: `${P}envoy.extensions.upstreams.http.v3.HttpProtocolOptions`,
  ringHash: `${P}envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash`,
  leastRequest: `${P}envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest`,
} as const;

export const ROUTER = { name: 'envoy.filters.http.router', typedConfig: { '@type': URL.router } };

/** A decoded listener on 0.0.0.0:8080 with one filter chain running `hcm` (merged over a default). */
export function hcmListener(hcm: object = {}, chain: object = {}, listener: object = {}): Resource {
  return decoded(TYPE.listener, {
    name: 'l',
    address: { socketAddress: { address: '0.0.0.0', portValue: 8080 } },
    filterChains: [
      {
        name: 'c',
        filters: [
          {
            name: 'envoy.filters.network.http_connection_manager',
            typedConfig: {
              '@type': URL.hcm,
              statPrefix: 'p',
              rds: { routeConfigName: '8080', configSource: { ads: {} } },
              httpFilters: [ROUTER],
              ...hcm,
            },
          },
        ],
        ...chain,
      },
    ],
    ...listener,
  });
}

/** A decoded listener whose chains are `chains` (each a tcp_proxy to `c` unless it says otherwise). */
export function tcpListener(chains: object[], listener: object = {}): Resource {
  return decoded(TYPE.listener, {
    name: 'l',
    address: { socketAddress: { address: '0.0.0.0', portValue: 8080 } },
    filterChains: chains.map(c => ({
      filters: [
        {
          name: 'envoy.filters.network.tcp_proxy',
          typedConfig: { '@type': URL.tcpProxy, statPrefix: 's', cluster: 'c' },
        },
      ],
      ...c,
    })),
    ...listener,
  });
}

/** A decoded route configuration `r` with one virtual host (`*`) holding `route`. */
export function oneRoute(route: object, vhost: object = {}, config: object = {}): Resource {
  return decoded(TYPE.routes, {
    name: 'r',
    virtualHosts: [
      {
        name: 'vh',
        domains: ['*'],
        routes: [{ match: { prefix: '/' }, route: { cluster: 'c' }, ...route }],
        ...vhost,
      },
    ],
    ...config,
  });
}

/** A decoded EDS cluster `c`, `extra` merged over it. */
export function edsCluster(extra: object = {}): Resource {
  return decoded(TYPE.cluster, {
    name: 'c',
    type: 'EDS',
    edsClusterConfig: { edsConfig: { ads: {} } },
    ...extra,
  });
}

/** An UpstreamTlsContext transport socket. */
export function upstreamTlsSocket(context: object): object {
  return {
    name: 'envoy.transport_sockets.tls',
    typedConfig: { '@type': URL.upstreamTls, ...context },
  };
}

/** A DownstreamTlsContext transport socket. */
export function downstreamTlsSocket(context: object): object {
  return {
    name: 'envoy.transport_sockets.tls',
    typedConfig: { '@type': URL.downstreamTls, ...context },
  };
}

/** A decoded load assignment `c` with the given endpoints in one locality. */
export function assignment(lbEndpoints: object[], locality: object = {}): Resource {
  return decoded(TYPE.endpoints, { clusterName: 'c', endpoints: [{ lbEndpoints, ...locality }] });
}

/** An LbEndpoint at `address:port`. */
export function lbEndpoint(address: string, port: number, extra: object = {}): object {
  return { endpoint: { address: { socketAddress: { address, portValue: port } } }, ...extra };
}

/** A seeded PRNG (mulberry32), so fuzz failures reproduce. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
