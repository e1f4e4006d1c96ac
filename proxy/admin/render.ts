/**
 * What the admin endpoints print, as pure functions of the proxy's state: Envoy's config dump,
 * `/clusters`, `/listeners` and `/stats` formats, so Envoy tooling and habits carry over
 * (`curl localhost:15000/clusters | grep health_flags`, jq over `/config_dump`).
 */
import type { Cluster, XdsKind } from '../model';
import type { ClusterStatus } from '../types';

/** One ACKed xDS resource as pilot sent it (protobufjs JSON, as in a config dump). */
export interface DumpedResource {
  readonly name: string;
  /** version_info of the response that last changed it. */
  readonly version: string;
  /** When it was last changed (ms since the epoch). */
  readonly lastUpdated: number;
  readonly resource: Readonly<Record<string, unknown>>;
}

/** Everything /config_dump shows. */
export interface ConfigDumpInput {
  readonly node: { readonly id: string; readonly metadata: Readonly<Record<string, unknown>> };
  readonly versions: Readonly<Record<XdsKind, string>>;
  readonly resources: Readonly<Record<XdsKind, readonly DumpedResource[]>>;
  /** When the proxy started (ms since the epoch), the bootstrap's last_updated. */
  readonly startedAt: number;
}

const ADMIN = 'type.googleapis.com/envoy.admin.v3.';
/** The Envoy type of each kind's resources, for `@type` when the stored JSON lacks it. */
export const RESOURCE_TYPES: Readonly<Record<XdsKind, string>> = {
  clusters: 'type.googleapis.com/envoy.config.cluster.v3.Cluster',
  endpoints: 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment',
  listeners: 'type.googleapis.com/envoy.config.listener.v3.Listener',
  routes: 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration',
};

const iso = (ms: number) => new Date(ms).toISOString();

function typed(kind: XdsKind, r: DumpedResource): Record<string, unknown> {
  return { '@type': RESOURCE_TYPES[kind], ...r.resource };
}

/** Envoy's `/config_dump`: Bootstrap, Clusters, Listeners, Routes and Endpoints config dumps. */
export function renderConfigDump(input: ConfigDumpInput): Record<string, unknown> {
  const sorted = (kind: XdsKind) =>
    [...input.resources[kind]].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return {
    configs: [
      {
        '@type': `${ADMIN}BootstrapConfigDump`,
        bootstrap: {
          node: { id: input.node.id, metadata: input.node.metadata, user_agent_name: 'sail' },
        },
        last_updated: iso(input.startedAt),
      },
      {
        '@type': `${ADMIN}ClustersConfigDump`,
        version_info: input.versions.clusters,
        dynamic_active_clusters: sorted('clusters').map(r => ({
          version_info: r.version,
          cluster: typed('clusters', r),
          last_updated: iso(r.lastUpdated),
        })),
      },
      {
        '@type': `${ADMIN}ListenersConfigDump`,
        version_info: input.versions.listeners,
        dynamic_listeners: sorted('listeners').map(r => ({
          name: r.name,
          active_state: {
            version_info: r.version,
            listener: typed('listeners', r),
            last_updated: iso(r.lastUpdated),
          },
        })),
      },
      {
        '@type': `${ADMIN}RoutesConfigDump`,
        dynamic_route_configs: sorted('routes').map(r => ({
          version_info: r.version,
          route_config: typed('routes', r),
          last_updated: iso(r.lastUpdated),
        })),
      },
      {
        '@type': `${ADMIN}EndpointsConfigDump`,
        dynamic_endpoint_configs: sorted('endpoints').map(r => ({
          version_info: r.version,
          endpoint_config: typed('endpoints', r),
          last_updated: iso(r.lastUpdated),
        })),
      },
    ],
  };
}

/** Envoy's health_flags text: `healthy`, or the reasons joined with `/`. */
function healthFlags(h: ClusterStatus['hosts'][number]): string {
  if (h.healthy && !h.ejected) return 'healthy';
  let flags = '';
  if (h.ejected) flags += '/failed_outlier_check';
  if (!h.healthy) flags += '/failed_eds_health';
  return flags;
}

/** Envoy's `/clusters` text: `CLUSTER::KEY::VALUE` and `CLUSTER::HOST:PORT::STAT::VALUE` lines. */
export function renderClustersText(
  statuses: readonly ClusterStatus[],
  configOf: (name: string) => Cluster | undefined,
): string {
  const lines: string[] = [];
  for (const c of [...statuses].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const n = c.name;
    lines.push(`${n}::observability_name::${n}`);
    const cb = configOf(n)?.circuitBreakers;
    if (cb) {
      lines.push(`${n}::default_priority::max_connections::${cb.maxConnections}`);
      lines.push(`${n}::default_priority::max_pending_requests::${cb.maxPendingRequests}`);
      lines.push(`${n}::default_priority::max_requests::${cb.maxRequests}`);
      lines.push(`${n}::default_priority::max_retries::${cb.maxRetries}`);
    }
    lines.push(`${n}::added_via_api::true`);
    for (const h of c.hosts) {
      const p = `${n}::${hostPort(h.address, h.port)}`;
      lines.push(`${p}::rq_active::${h.activeRequests}`);
      lines.push(`${p}::rq_error::${h.failedRequests}`);
      lines.push(`${p}::rq_success::${h.totalRequests - h.failedRequests}`);
      lines.push(`${p}::rq_total::${h.totalRequests}`);
      lines.push(`${p}::hostname::`);
      lines.push(`${p}::health_flags::${healthFlags(h)}`);
      lines.push(`${p}::weight::${h.weight}`);
      lines.push(`${p}::transport::${h.transport}`);
    }
  }
  return lines.length ? lines.join('\n') + '\n' : '';
}

/** `/clusters?format=json`, in the shape of Envoy's `envoy.admin.v3.Clusters`. */
export function renderClustersJson(
  statuses: readonly ClusterStatus[],
  configOf: (name: string) => Cluster | undefined,
): Record<string, unknown> {
  return {
    cluster_statuses: [...statuses]
      .sort((a, b) => (a.name < b.name ? -1 : 1))
      .map(c => {
        const cb = configOf(c.name)?.circuitBreakers;
        return {
          name: c.name,
          observability_name: c.name,
          added_via_api: true,
          type: c.type,
          lb_policy: c.lbPolicy,
          ...(cb
            ? {
                circuit_breakers: {
                  thresholds: [
                    {
                      priority: 'DEFAULT',
                      max_connections: cb.maxConnections,
                      max_pending_requests: cb.maxPendingRequests,
                      max_requests: cb.maxRequests,
                      max_retries: cb.maxRetries,
                    },
                  ],
                },
              }
            : {}),
          host_statuses: c.hosts.map(h => ({
            address: { socket_address: { address: h.address, port_value: h.port } },
            stats: [
              { name: 'rq_active', type: 'GAUGE', value: String(h.activeRequests) },
              { name: 'rq_error', value: String(h.failedRequests) },
              { name: 'rq_success', value: String(h.totalRequests - h.failedRequests) },
              { name: 'rq_total', value: String(h.totalRequests) },
            ],
            health_status: {
              eds_health_status: h.healthy ? 'HEALTHY' : 'UNHEALTHY',
              ...(h.ejected ? { failed_outlier_check: true } : {}),
            },
            weight: h.weight,
            transport: h.transport,
          })),
        };
      }),
  };
}

/** One listener as `/listeners` shows it. */
export interface ListenerInfo {
  readonly name: string;
  /** `host:port` as bound (the real port when 0 was asked for). */
  readonly address: string;
}

/** Envoy's `/listeners` text: `NAME::ADDRESS` lines. */
export function renderListenersText(listeners: readonly ListenerInfo[]): string {
  return listeners.map(l => `${l.name}::${l.address}\n`).join('');
}

/** `/listeners?format=json`, in the shape of Envoy's `envoy.admin.v3.Listeners`. */
export function renderListenersJson(listeners: readonly ListenerInfo[]): Record<string, unknown> {
  return {
    listener_statuses: listeners.map(l => {
      const { host, port } = splitHostPort(l.address);
      return {
        name: l.name,
        local_address: { socket_address: { address: host, port_value: port } },
      };
    }),
  };
}

/** `/stats` text: Envoy's `name: value` lines, sorted by name. */
export function renderStatsText(stats: ReadonlyMap<string, number | string>): string {
  return (
    [...stats.keys()]
      .sort()
      .map(k => `${k}: ${String(stats.get(k))}`)
      .join('\n') + '\n'
  );
}

function hostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

function splitHostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  if (i < 0) return { host: s, port: 0 };
  const host = s.slice(0, i).replace(/^\[(.*)\]$/, '$1');
  return { host, port: Number(s.slice(i + 1)) };
}
