import * as http from 'node:http';
import { silentLogger } from '../../common/logging';
import { createRegistry, prom, renderMetrics } from '../../common/metrics';
import { AdminNotLoopbackError, ListenFailedError } from '../errors';
import type { Cluster } from '../model';
import type { ClusterStatus } from '../types';
import {
  AdminServer,
  type AdminSource,
  checkAdminAddress,
  isLoopbackHost,
  MetricsServer,
  type Readiness,
} from './admin-server';
import type { ConfigDumpInput } from './render';

function get(
  address: string,
  path: string,
): Promise<{ status: number; text: string; type: string }> {
  return new Promise((resolve, reject) => {
    const [host, port] = [
      address.slice(0, address.lastIndexOf(':')),
      address.slice(address.lastIndexOf(':') + 1),
    ];
    http
      .get({ host, port: Number(port), path, agent: false }, res => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString('utf8')));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, text, type: String(res.headers['content-type']) }),
        );
      })
      .on('error', reject);
  });
}

const CLUSTER = 'outbound|9080||reviews.default.svc.cluster.local';

const clusterConfig = {
  name: CLUSTER,
  circuitBreakers: {
    maxConnections: 100,
    maxPendingRequests: 10,
    maxRequests: 1000,
    maxRetries: 3,
  },
} as unknown as Cluster;

const statuses: ClusterStatus[] = [
  {
    name: CLUSTER,
    type: 'EDS',
    lbPolicy: 'ROUND_ROBIN',
    hosts: [
      {
        address: '10.0.0.7',
        port: 9080,
        healthy: true,
        ejected: false,
        weight: 1,
        activeRequests: 2,
        totalRequests: 10,
        failedRequests: 1,
        transport: 'tlsMode-istio',
      },
      {
        address: '10.0.0.8',
        port: 9080,
        healthy: true,
        ejected: true,
        weight: 3,
        activeRequests: 0,
        totalRequests: 5,
        failedRequests: 5,
        transport: 'tlsMode-istio',
      },
      {
        address: '10.0.0.9',
        port: 9080,
        healthy: false,
        ejected: false,
        weight: 1,
        activeRequests: 0,
        totalRequests: 0,
        failedRequests: 0,
        transport: 'tlsMode-istio',
      },
    ],
  },
];

const dump: ConfigDumpInput = {
  node: {
    id: 'sidecar~10.0.0.5~vm-1.default~default.svc.cluster.local',
    metadata: { NAMESPACE: 'default' },
  },
  versions: { clusters: '3', endpoints: '4', listeners: '2', routes: '2' },
  startedAt: Date.parse('2026-01-01T00:00:00Z'),
  resources: {
    clusters: [
      {
        name: CLUSTER,
        version: '3',
        lastUpdated: Date.parse('2026-01-01T00:00:03Z'),
        resource: { name: CLUSTER, type: 'EDS' },
      },
    ],
    endpoints: [
      {
        name: CLUSTER,
        version: '4',
        lastUpdated: Date.parse('2026-01-01T00:00:04Z'),
        resource: { clusterName: CLUSTER },
      },
    ],
    listeners: [
      {
        name: 'virtualOutbound',
        version: '2',
        lastUpdated: Date.parse('2026-01-01T00:00:02Z'),
        resource: { name: 'virtualOutbound' },
      },
      {
        name: '0.0.0.0_9080',
        version: '1',
        lastUpdated: Date.parse('2026-01-01T00:00:01Z'),
        resource: { name: '0.0.0.0_9080' },
      },
    ],
    routes: [
      {
        name: '9080',
        version: '2',
        lastUpdated: Date.parse('2026-01-01T00:00:02Z'),
        resource: { name: '9080' },
      },
    ],
  },
};

class Source implements AdminSource {
  state: Readiness = {
    state: 'PRE_INITIALIZING',
    reason: 'waiting for the first configuration from pilot',
  };
  readonly registry = createRegistry(false);
  constructor() {
    new prom.Counter({ name: 'istio_requests_total', help: 'x', registers: [this.registry] }).inc(
      3,
    );
  }
  readiness() {
    return this.state;
  }
  serverInfo() {
    return { version: '0.1.0', state: this.state.state };
  }
  configDump() {
    return dump;
  }
  clusters() {
    return statuses;
  }
  clusterConfig(name: string) {
    return name === CLUSTER ? clusterConfig : undefined;
  }
  listeners() {
    return [
      { name: 'virtualOutbound', address: '127.0.0.1:15001' },
      { name: 'virtualInbound', address: '[::1]:15006' },
    ];
  }
  stats() {
    return new Map<string, number | string>([
      ['server.live', 0],
      ['cluster_manager.active_clusters', 1],
      ['control_plane.connected_state', 1],
    ]);
  }
  metrics() {
    return renderMetrics(this.registry);
  }
}

describe('AdminServer', () => {
  const source = new Source();
  const admin = new AdminServer({ logger: silentLogger(), listen: '127.0.0.1:0', source });
  let addr = '';

  beforeAll(async () => {
    await admin.start();
    addr = admin.address as string;
  });
  afterAll(() => admin.close());

  it('answers /ready 503 with the reason until ready, then 200 LIVE', async () => {
    source.state = {
      state: 'PRE_INITIALIZING',
      reason: 'waiting for the first configuration from pilot',
    };
    expect(await get(addr, '/ready')).toMatchObject({
      status: 503,
      text: 'PRE_INITIALIZING: waiting for the first configuration from pilot\n',
    });
    source.state = { state: 'LIVE', reason: '' };
    expect(await get(addr, '/ready')).toMatchObject({ status: 200, text: 'LIVE\n' });
    source.state = { state: 'DRAINING', reason: '' };
    expect(await get(addr, '/ready')).toMatchObject({ status: 503, text: 'DRAINING\n' });
  });

  it('answers /healthz', async () => {
    expect(await get(addr, '/healthz')).toMatchObject({ status: 200, text: 'ok\n' });
  });

  it('prints /stats as sorted name: value lines', async () => {
    const r = await get(addr, '/stats');
    expect(r.status).toBe(200);
    expect(r.text).toBe(
      'cluster_manager.active_clusters: 1\ncontrol_plane.connected_state: 1\nserver.live: 0\n',
    );
  });

  it('filters /stats by a regular expression and prints JSON', async () => {
    expect((await get(addr, '/stats?filter=^cluster_manager')).text).toBe(
      'cluster_manager.active_clusters: 1\n',
    );
    const r = await get(addr, '/stats?format=json&filter=server');
    expect(JSON.parse(r.text)).toEqual({ stats: [{ name: 'server.live', value: 0 }] });
    expect((await get(addr, '/stats?filter=(')).status).toBe(400);
    expect((await get(addr, '/stats?format=xml')).status).toBe(400);
  });

  it('prints the Prometheus text on /stats?format=prometheus', async () => {
    const r = await get(addr, '/stats?format=prometheus');
    expect(r.status).toBe(200);
    expect(r.text).toContain('istio_requests_total 3');
    expect(r.type).toContain('text/plain');
  });

  it('dumps the configuration in Envoy shape', async () => {
    const r = await get(addr, '/config_dump');
    const body = JSON.parse(r.text) as { configs: Record<string, unknown>[] };
    expect(body.configs.map(c => c['@type'])).toEqual([
      'type.googleapis.com/envoy.admin.v3.BootstrapConfigDump',
      'type.googleapis.com/envoy.admin.v3.ClustersConfigDump',
      'type.googleapis.com/envoy.admin.v3.ListenersConfigDump',
      'type.googleapis.com/envoy.admin.v3.RoutesConfigDump',
      'type.googleapis.com/envoy.admin.v3.EndpointsConfigDump',
    ]);
    expect(body.configs[0]).toMatchObject({ bootstrap: { node: { id: dump.node.id } } });
    expect(body.configs[1]).toEqual({
      '@type': 'type.googleapis.com/envoy.admin.v3.ClustersConfigDump',
      version_info: '3',
      dynamic_active_clusters: [
        {
          version_info: '3',
          cluster: {
            '@type': 'type.googleapis.com/envoy.config.cluster.v3.Cluster',
            name: CLUSTER,
            type: 'EDS',
          },
          last_updated: '2026-01-01T00:00:03.000Z',
        },
      ],
    });
    const listeners = body.configs[2] as {
      dynamic_listeners: { name: string; active_state: { version_info: string } }[];
    };
    expect(listeners.dynamic_listeners.map(l => l.name)).toEqual([
      '0.0.0.0_9080',
      'virtualOutbound',
    ]);
    expect(listeners.dynamic_listeners[1]?.active_state.version_info).toBe('2');
    expect(body.configs[3]).toMatchObject({
      dynamic_route_configs: [{ version_info: '2', route_config: { name: '9080' } }],
    });
    expect(body.configs[4]).toMatchObject({
      dynamic_endpoint_configs: [{ version_info: '4', endpoint_config: { clusterName: CLUSTER } }],
    });
  });

  it('prints /clusters in Envoy text format', async () => {
    const r = await get(addr, '/clusters');
    const lines = r.text.split('\n');
    expect(lines).toContain(`${CLUSTER}::default_priority::max_connections::100`);
    expect(lines).toContain(`${CLUSTER}::default_priority::max_retries::3`);
    expect(lines).toContain(`${CLUSTER}::10.0.0.7:9080::health_flags::healthy`);
    expect(lines).toContain(`${CLUSTER}::10.0.0.7:9080::rq_active::2`);
    expect(lines).toContain(`${CLUSTER}::10.0.0.7:9080::rq_total::10`);
    expect(lines).toContain(`${CLUSTER}::10.0.0.7:9080::rq_error::1`);
    expect(lines).toContain(`${CLUSTER}::10.0.0.8:9080::health_flags::/failed_outlier_check`);
    expect(lines).toContain(`${CLUSTER}::10.0.0.8:9080::weight::3`);
    expect(lines).toContain(`${CLUSTER}::10.0.0.9:9080::health_flags::/failed_eds_health`);
  });

  it('prints /clusters as JSON', async () => {
    const body = JSON.parse((await get(addr, '/clusters?format=json')).text) as {
      cluster_statuses: { name: string; host_statuses: Record<string, unknown>[] }[];
    };
    expect(body.cluster_statuses[0]?.name).toBe(CLUSTER);
    expect(body.cluster_statuses[0]?.host_statuses[1]).toMatchObject({
      address: { socket_address: { address: '10.0.0.8', port_value: 9080 } },
      health_status: { eds_health_status: 'HEALTHY', failed_outlier_check: true },
      weight: 3,
    });
  });

  it('prints /listeners as text and JSON', async () => {
    expect((await get(addr, '/listeners')).text).toBe(
      'virtualOutbound::127.0.0.1:15001\nvirtualInbound::[::1]:15006\n',
    );
    expect(JSON.parse((await get(addr, '/listeners?format=json')).text)).toEqual({
      listener_statuses: [
        {
          name: 'virtualOutbound',
          local_address: { socket_address: { address: '127.0.0.1', port_value: 15001 } },
        },
        {
          name: 'virtualInbound',
          local_address: { socket_address: { address: '::1', port_value: 15006 } },
        },
      ],
    });
  });

  it('prints /server_info', async () => {
    source.state = { state: 'LIVE', reason: '' };
    expect(JSON.parse((await get(addr, '/server_info')).text)).toEqual({
      version: '0.1.0',
      state: 'LIVE',
    });
  });

  it('answers 404 for other paths', async () => {
    expect((await get(addr, '/quitquitquit')).status).toBe(404);
  });
});

describe('AdminServer address checks', () => {
  it.each([
    { host: '127.0.0.1', loopback: true },
    { host: '127.5.0.1', loopback: true },
    { host: 'localhost', loopback: true },
    { host: '::1', loopback: true },
    { host: '::ffff:127.0.0.1', loopback: true },
    { host: '0.0.0.0', loopback: false },
    { host: '10.0.0.5', loopback: false },
    { host: '::', loopback: false },
    { host: 'example.com', loopback: false },
  ])('$host is loopback: $loopback', ({ host, loopback }) => {
    expect(isLoopbackHost(host)).toBe(loopback);
  });

  it('refuses a non-loopback admin address unless allowed', async () => {
    expect(() => checkAdminAddress('0.0.0.0:15000', false, 'adminListen')).toThrow(
      AdminNotLoopbackError,
    );
    expect(() => checkAdminAddress('0.0.0.0:15000', true, 'adminListen')).not.toThrow();
    const admin = new AdminServer({
      logger: silentLogger(),
      listen: '0.0.0.0:0',
      source: new Source(),
    });
    await expect(admin.start()).rejects.toMatchObject({ code: 'PROXY_ADMIN_NOT_LOOPBACK' });
    await admin.close();
  });

  it('names the port when it is taken', async () => {
    const first = new AdminServer({
      logger: silentLogger(),
      listen: '127.0.0.1:0',
      source: new Source(),
    });
    await first.start();
    const second = new AdminServer({
      logger: silentLogger(),
      listen: first.address as string,
      source: new Source(),
    });
    try {
      const err = await second.start().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ListenFailedError);
      expect((err as Error).message).toContain('EADDRINUSE');
      expect((err as Error).message).toContain(first.address as string);
    } finally {
      await second.close();
      await first.close();
    }
  });

  it('closes idempotently', async () => {
    const admin = new AdminServer({
      logger: silentLogger(),
      listen: '127.0.0.1:0',
      source: new Source(),
    });
    await admin.start();
    await Promise.all([admin.close(), admin.close()]);
    await admin.close();
  });
});

describe('MetricsServer', () => {
  it('serves /stats/prometheus and /metrics', async () => {
    const source = new Source();
    const server = new MetricsServer({
      logger: silentLogger(),
      listen: '127.0.0.1:0',
      metrics: () => source.metrics(),
    });
    await server.start();
    try {
      for (const path of ['/stats/prometheus', '/metrics']) {
        const r = await get(server.address as string, path);
        expect(r.status).toBe(200);
        expect(r.text).toContain('# TYPE istio_requests_total counter');
      }
      expect((await get(server.address as string, '/config_dump')).status).toBe(404);
    } finally {
      await server.close();
    }
  });
});
