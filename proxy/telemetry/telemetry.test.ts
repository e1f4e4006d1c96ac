import { Writable } from 'node:stream';
import { createRegistry, renderMetrics } from '../../common/metrics';
import { silentLogger } from '../../common/logging';
import { FakeClock } from '../../test/helpers/fake-clock';
import type { RequestRecord, TcpRecord, TrafficLabels } from '../types';
import { createAccessLogger } from './access-log';
import { TrafficLabeler } from './labeler';
import { registerProxyMetrics } from './proxy-metrics';
import { IstioTelemetry } from './telemetry';

const WORKLOAD = {
  name: 'vm-1',
  namespace: 'default',
  labels: { app: 'productpage', version: 'v1' },
};
const LOCAL_ID = 'spiffe://cluster.local/ns/default/sa/productpage';
const REVIEWS = 'outbound|9080|v1|reviews.default.svc.cluster.local';

function setup(opts: { accessLog?: boolean } = {}) {
  const registry = createRegistry(false);
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n'))
        if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  const clock = new FakeClock(Date.parse('2026-01-02T03:04:05.000Z'));
  const labeler = new TrafficLabeler({ workload: WORKLOAD, principal: LOCAL_ID });
  const telemetry = new IstioTelemetry({
    logger: silentLogger(),
    clock,
    registry,
    labeler,
    ...(opts.accessLog ? { accessLogger: createAccessLogger(sink) } : {}),
  });
  return { registry, telemetry, labeler, lines, clock };
}

function request(labels: TrafficLabels, over: Partial<RequestRecord> = {}): RequestRecord {
  return {
    labels,
    requestProtocol: 'http',
    responseCode: 200,
    grpcResponseStatus: '',
    responseFlags: '-',
    durationMs: 7,
    requestBytes: 0,
    responseBytes: 512,
    method: 'GET',
    authority: 'reviews:9080',
    path: '/reviews/1',
    requestId: 'req-1',
    upstreamHost: '10.0.0.7:9080',
    upstreamCluster: REVIEWS,
    routeName: 'default',
    downstreamRemote: '127.0.0.1:40000',
    userAgent: 'curl/8',
    startTime: Date.parse('2026-01-02T03:04:05.000Z'),
    ...over,
  };
}

/** The exposition lines of `name` (samples only). */
async function samples(registry: ReturnType<typeof createRegistry>, name: string) {
  const { text } = await renderMetrics(registry);
  return text.split('\n').filter(l => l.startsWith(name));
}

describe('IstioTelemetry', () => {
  it('exports requests with Istio names and the full label set', async () => {
    const { registry, telemetry, labeler } = setup();
    const labels = labeler.outbound(REVIEWS, { address: '10.0.0.7', port: 9080 }, true);
    telemetry.recordRequest(request(labels));
    telemetry.recordRequest(request(labels, { durationMs: 30 }));
    const lines = await samples(registry, 'istio_requests_total');
    expect(lines).toHaveLength(1);
    const line = lines[0] as string;
    expect(line).toMatch(/ 2$/);
    for (const want of [
      'reporter="source"',
      'source_workload="vm-1"',
      'source_workload_namespace="default"',
      `source_principal="${LOCAL_ID}"`,
      'source_app="productpage"',
      'source_version="v1"',
      'source_cluster="unknown"',
      'destination_workload="unknown"',
      'destination_workload_namespace="unknown"',
      'destination_principal="unknown"',
      'destination_app="unknown"',
      'destination_version="unknown"',
      'destination_service="reviews.default.svc.cluster.local"',
      'destination_service_name="reviews"',
      'destination_service_namespace="default"',
      'destination_cluster="unknown"',
      'request_protocol="http"',
      'response_code="200"',
      'grpc_response_status=""',
      'response_flags="-"',
      'connection_security_policy="unknown"',
    ])
      expect(line).toContain(want);
  });

  it('keeps histograms with Istio buckets', async () => {
    const { registry, telemetry, labeler } = setup();
    const labels = labeler.outbound(REVIEWS, { address: '10.0.0.7', port: 9080 }, true);
    telemetry.recordRequest(
      request(labels, { durationMs: 7, requestBytes: 0, responseBytes: 512 }),
    );
    telemetry.recordRequest(
      request(labels, { durationMs: 30, requestBytes: 100, responseBytes: 5 }),
    );
    const text = (await renderMetrics(registry)).text;
    const bucket = (metric: string, le: string) => {
      const line = text.split('\n').find(l => l.startsWith(`${metric}_bucket{le="${le}",`));
      return line === undefined ? undefined : Number(line.split(' ').pop());
    };
    expect(bucket('istio_request_duration_milliseconds', '5')).toBe(0);
    expect(bucket('istio_request_duration_milliseconds', '10')).toBe(1);
    expect(bucket('istio_request_duration_milliseconds', '50')).toBe(2);
    expect(bucket('istio_request_duration_milliseconds', '3600000')).toBe(2);
    expect(bucket('istio_request_duration_milliseconds', '+Inf')).toBe(2);
    expect(bucket('istio_request_bytes', '1')).toBe(1);
    expect(bucket('istio_request_bytes', '100')).toBe(2);
    expect(bucket('istio_request_bytes', '100000000')).toBe(2);
    expect(bucket('istio_response_bytes', '10')).toBe(1);
    expect(bucket('istio_response_bytes', '1000')).toBe(2);
    expect(text).toMatch(/^istio_request_duration_milliseconds_sum\{.*\} 37$/m);
    expect(text).toMatch(/^istio_request_duration_milliseconds_count\{.*\} 2$/m);
    expect(text).toContain('# TYPE istio_request_duration_milliseconds histogram');
    expect(text).toContain('# TYPE istio_requests_total counter');
  });

  it('splits series by code, gRPC status and flags', async () => {
    const { registry, telemetry, labeler } = setup();
    const labels = labeler.outbound(REVIEWS, { address: '10.0.0.7', port: 9080 }, true);
    telemetry.recordRequest(request(labels));
    telemetry.recordRequest(request(labels, { responseCode: 503, responseFlags: 'UH' }));
    telemetry.recordRequest(
      request(labels, { requestProtocol: 'grpc', responseCode: 200, grpcResponseStatus: '14' }),
    );
    const lines = await samples(registry, 'istio_requests_total');
    expect(lines).toHaveLength(3);
    expect(
      lines.some(l => l.includes('response_code="503"') && l.includes('response_flags="UH"')),
    ).toBe(true);
    expect(
      lines.some(
        l => l.includes('request_protocol="grpc"') && l.includes('grpc_response_status="14"'),
      ),
    ).toBe(true);
  });

  it('does not list a series twice when the labeler rebuilt its labels', async () => {
    const { registry, telemetry, labeler } = setup();
    const dst = { address: '10.0.0.7', port: 9080 };
    const before = labeler.outbound(REVIEWS, dst, true);
    telemetry.recordRequest(request(before));
    labeler.setInboundServices(new Map([[1, 'x.default.svc.cluster.local']])); // starts over
    const after = labeler.outbound(REVIEWS, dst, true);
    expect(after).not.toBe(before);
    telemetry.recordRequest(request(after));
    const lines = await samples(registry, 'istio_requests_total');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/ 2$/);
  });

  it('counts TCP connections and bytes with request_protocol tcp', async () => {
    const { registry, telemetry, labeler } = setup();
    const labels = labeler.inbound(
      { address: '10.0.0.5', port: 5432 },
      undefined,
      undefined,
      false,
    );
    telemetry.tcpOpened(labels);
    const record: TcpRecord = {
      labels,
      sentBytes: 1000,
      receivedBytes: 20,
      durationMs: 1500,
      responseFlags: '-',
      upstreamHost: '127.0.0.1:5432',
      upstreamCluster: 'inbound|5432||',
      downstreamRemote: '10.0.0.6:5000',
    };
    telemetry.tcpClosed(record);
    telemetry.tcpClosed({ ...record, responseFlags: 'UF', sentBytes: 0, receivedBytes: 0 });
    const text = (await renderMetrics(registry)).text;
    const opened = text.split('\n').filter(l => l.startsWith('istio_tcp_connections_opened_total'));
    const closed = text.split('\n').filter(l => l.startsWith('istio_tcp_connections_closed_total'));
    const sent = text.split('\n').filter(l => l.startsWith('istio_tcp_sent_bytes_total'));
    const received = text.split('\n').filter(l => l.startsWith('istio_tcp_received_bytes_total'));
    expect(opened.find(l => l.includes('response_flags="-"'))).toMatch(/ 1$/);
    expect(closed.find(l => l.includes('response_flags="-"'))).toMatch(/ 1$/);
    expect(closed.find(l => l.includes('response_flags="UF"'))).toMatch(/ 1$/);
    expect(sent.find(l => l.includes('response_flags="-"'))).toMatch(/ 1000$/);
    expect(received.find(l => l.includes('response_flags="-"'))).toMatch(/ 20$/);
    expect(opened[0]).toContain('request_protocol="tcp"');
    expect(opened[0]).toContain('reporter="destination"');
    expect(opened[0]).toContain('connection_security_policy="none"');
    expect(telemetry.totals()).toMatchObject({ tcpOpened: 1, tcpClosed: 2 });
  });

  it('writes no access log unless asked', () => {
    const { telemetry, labeler, lines } = setup();
    telemetry.recordRequest(request(labeler.outbound(REVIEWS, { address: 'x', port: 1 }, true)));
    expect(lines).toEqual([]);
  });

  it('writes one Envoy-style JSON line per request', () => {
    const { telemetry, labeler, lines } = setup({ accessLog: true });
    telemetry.recordRequest(
      request(labeler.outbound(REVIEWS, { address: 'x', port: 1 }, true), {
        durationMs: 12.4,
        requestBytes: 10,
      }),
    );
    expect(lines).toEqual([
      {
        type: 'access',
        start_time: '2026-01-02T03:04:05.000Z',
        method: 'GET',
        path: '/reviews/1',
        protocol: 'HTTP/1.1',
        response_code: 200,
        response_flags: '-',
        bytes_received: 10,
        bytes_sent: 512,
        duration: 12,
        upstream_host: '10.0.0.7:9080',
        upstream_cluster: REVIEWS,
        x_request_id: 'req-1',
        authority: 'reviews:9080',
        downstream_remote_address: '127.0.0.1:40000',
        route_name: 'default',
        user_agent: 'curl/8',
        grpc_status: null,
        upstream_service: 'reviews.default.svc.cluster.local',
      },
    ]);
  });

  it('writes one line per TCP connection when it closes', () => {
    const { telemetry, labeler, lines, clock } = setup({ accessLog: true });
    const labels = labeler.outbound('PassthroughCluster', { address: '1.2.3.4', port: 443 }, false);
    telemetry.tcpOpened(labels);
    expect(lines).toEqual([]);
    telemetry.tcpClosed({
      labels,
      sentBytes: 5,
      receivedBytes: 6,
      durationMs: 2000,
      responseFlags: '',
      upstreamHost: '1.2.3.4:443',
      upstreamCluster: 'PassthroughCluster',
      downstreamRemote: '127.0.0.1:5555',
    });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      start_time: new Date(clock.now() - 2000).toISOString(),
      method: null,
      response_code: 0,
      response_flags: '-',
      bytes_received: 6,
      bytes_sent: 5,
      duration: 2000,
      upstream_cluster: 'PassthroughCluster',
      upstream_service: '1.2.3.4:443',
    });
  });
});

describe('registerProxyMetrics', () => {
  it('reads the proxy status at scrape time', async () => {
    const registry = createRegistry(false);
    let connected = false;
    registerProxyMetrics(registry, {
      ready: () => connected,
      xdsConnected: () => connected,
      configVersions: () => ({ clusters: '3', endpoints: '3', listeners: '2', routes: '' }),
      xdsNacks: () => 1,
      configUpdates: () => 4,
      certificateNotAfter: () => 1_000_000 + 90_000,
      listenersBound: () => 2,
      activeConnections: () => 5,
      now: () => 1_000_000,
    });
    let text = (await renderMetrics(registry)).text;
    expect(text).toContain('sail_proxy_xds_connected 0');
    connected = true;
    text = (await renderMetrics(registry)).text;
    expect(text).toContain('sail_proxy_xds_connected 1');
    expect(text).toContain('sail_proxy_ready 1');
    expect(text).toContain('sail_proxy_xds_config_info{type="clusters",version="3"} 1');
    expect(text).toContain('sail_proxy_xds_config_info{type="routes",version="none"} 1');
    expect(text).toContain('sail_proxy_xds_nacks_total 1');
    expect(text).toContain('sail_proxy_config_updates_total 4');
    expect(text).toContain('sail_proxy_cert_expiry_seconds 90');
    expect(text).toContain('sail_proxy_listeners_bound 2');
    expect(text).toContain('sail_proxy_active_connections 5');
  });
});
