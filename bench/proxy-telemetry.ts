/**
 * Telemetry micro-benchmark (`node build/bench/proxy-telemetry.js`): the cost of one
 * `recordRequest` on the proxy's hot path (labels from the interned labeler, the four istio_*
 * request metrics), against the same work done with prom-client's own Counter/Histogram children,
 * which hash the label set on every call. Prints microseconds per record.
 *
 * Flags (env): BENCH_RECORDS (default 2,000,000), BENCH_LABEL_SETS (distinct destinations, default 20).
 */
import { performance } from 'node:perf_hooks';
import { silentLogger } from '../common/logging';
import { createRegistry, prom, renderMetrics } from '../common/metrics';
import { IstioTelemetry, TrafficLabeler } from '../proxy';
import { labelValues } from '../proxy/telemetry/series';
import type { RequestRecord } from '../proxy/types';

const RECORDS = Number(process.env.BENCH_RECORDS ?? 2_000_000);
const LABEL_SETS = Number(process.env.BENCH_LABEL_SETS ?? 20);
const CODES = [200, 200, 200, 200, 200, 200, 200, 404, 503, 200];

function records(labeler: TrafficLabeler): RequestRecord[] {
  const out: RequestRecord[] = [];
  for (let i = 0; i < LABEL_SETS; i++) {
    const cluster = `outbound|9080||svc-${i}.default.svc.cluster.local`;
    for (const code of CODES) {
      out.push({
        labels: labeler.outbound(cluster, { address: '10.0.0.1', port: 9080 }, true),
        requestProtocol: 'http',
        responseCode: code,
        grpcResponseStatus: '',
        responseFlags: code === 503 ? 'UH' : '-',
        durationMs: 0.5 + (i % 7),
        requestBytes: 0,
        responseBytes: 300 + i,
        method: 'GET',
        authority: `svc-${i}:9080`,
        path: '/',
        requestId: '',
        upstreamHost: '10.0.0.2:9080',
        upstreamCluster: cluster,
        routeName: 'default',
        downstreamRemote: '127.0.0.1:1',
        userAgent: 'bench',
        startTime: Date.now(),
      });
    }
  }
  return out;
}

function time(name: string, fn: (r: RequestRecord) => void, recs: RequestRecord[]): number {
  // Warm up the JIT and create every series first.
  for (let i = 0; i < 100_000; i++) fn(recs[i % recs.length] as RequestRecord);
  const start = performance.now();
  for (let i = 0; i < RECORDS; i++) fn(recs[i % recs.length] as RequestRecord);
  const usPer = ((performance.now() - start) * 1000) / RECORDS;
  console.log(`${name.padEnd(44)} ${usPer.toFixed(3)} µs/record`);
  return usPer;
}

async function main(): Promise<void> {
  const labeler = new TrafficLabeler({
    workload: { name: 'bench', namespace: 'default', labels: { app: 'bench', version: 'v1' } },
    principal: 'spiffe://cluster.local/ns/default/sa/bench',
  });
  const recs = records(labeler);
  console.log(`${RECORDS} records, ${LABEL_SETS} destinations × ${CODES.length} responses`);

  // Sail: interned labels, series by identity.
  const registry = createRegistry(false);
  const telemetry = new IstioTelemetry({ logger: silentLogger(), registry, labeler });
  time('IstioTelemetry.recordRequest', r => telemetry.recordRequest(r), recs);
  // Labeling included: what the HTTP layer pays per request (labels + record).
  time(
    'labeler.outbound + recordRequest',
    r => {
      telemetry.recordRequest({
        ...r,
        labels: labeler.outbound(r.upstreamCluster, { address: '10.0.0.1', port: 9080 }, true),
      });
    },
    recs,
  );

  // prom-client with label children cached per series: still hashes labels per call.
  const reg2 = createRegistry(false);
  const names = [
    'reporter',
    'source_workload',
    'source_workload_namespace',
    'source_principal',
    'source_app',
    'source_version',
    'source_cluster',
    'destination_workload',
    'destination_workload_namespace',
    'destination_principal',
    'destination_app',
    'destination_version',
    'destination_service',
    'destination_service_name',
    'destination_service_namespace',
    'destination_cluster',
    'request_protocol',
    'response_code',
    'grpc_response_status',
    'response_flags',
    'connection_security_policy',
  ];
  const counter = new prom.Counter({ name: 'c', help: 'c', labelNames: names, registers: [reg2] });
  const hist = (n: string, buckets: number[]) =>
    new prom.Histogram({ name: n, help: n, labelNames: names, buckets, registers: [reg2] });
  const dur = hist('d', [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]);
  const req = hist('q', [1, 10, 100, 1000, 10000, 100000, 1000000]);
  const resp = hist('p', [1, 10, 100, 1000, 10000, 100000, 1000000]);
  const cached = new Map<
    RequestRecord,
    {
      c: { inc(v?: number): void };
      d: { observe(v: number): void };
      q: { observe(v: number): void };
      p: { observe(v: number): void };
    }
  >();
  time(
    'prom-client children (cached per series)',
    r => {
      let ch = cached.get(r);
      if (!ch) {
        const l = r.labels;
        const values: Record<string, string> = {
          ...labelValues(l),
          request_protocol: r.requestProtocol,
          response_code: String(r.responseCode),
          grpc_response_status: r.grpcResponseStatus,
          response_flags: r.responseFlags,
          connection_security_policy: l.connectionSecurityPolicy,
        };
        ch = {
          c: counter.labels(values),
          d: dur.labels(values),
          q: req.labels(values),
          p: resp.labels(values),
        };
        cached.set(r, ch);
      }
      ch.c.inc();
      ch.d.observe(r.durationMs);
      ch.q.observe(r.requestBytes);
      ch.p.observe(r.responseBytes);
    },
    recs,
  );

  const start = performance.now();
  const { text } = await renderMetrics(registry);
  console.log(
    `scrape: ${(performance.now() - start).toFixed(1)} ms for ${telemetry.totals().series} series, ${text.length} bytes of exposition`,
  );
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
