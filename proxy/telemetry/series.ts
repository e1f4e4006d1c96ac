/**
 * Istio's standard metrics, stored so that recording costs a few additions. prom-client's own
 * metrics hash the label object on every `inc`/`observe`, even through `labels()` children: with
 * twenty-odd labels that is most of a request's telemetry cost. Here each series is a plain object
 * found by object identity (the interned TrafficLabels, then code and flags), and prom-client only
 * renders them: the metric objects below implement what `Registry` calls at scrape time
 * (`get`/`getForPromString`), so `/stats/prometheus` still comes from a prom-client Registry.
 */
import type { prom } from '../../common/metrics';
import type { TrafficLabels } from '../types';

/** Istio's (Envoy's default) buckets for istio_request_duration_milliseconds. */
export const DURATION_BUCKETS_MS: readonly number[] = [
  0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
  1800000, 3600000,
];
/** Buckets of istio_request_bytes and istio_response_bytes: powers of ten up to 100 MB. */
export const SIZE_BUCKETS_BYTES: readonly number[] = [
  1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000,
];

/** The label values of one TrafficLabels, in Istio's names (shared by all its series). */
export type LabelValues = Readonly<Record<string, string>>;

/** Istio's label names for a TrafficLabels (request_protocol etc. come per series). */
export function labelValues(l: TrafficLabels): LabelValues {
  return {
    reporter: l.reporter,
    source_workload: l.sourceWorkload,
    source_workload_namespace: l.sourceWorkloadNamespace,
    source_principal: l.sourcePrincipal,
    source_app: l.sourceApp,
    source_version: l.sourceVersion,
    source_cluster: l.sourceCluster ?? 'unknown',
    destination_workload: l.destinationWorkload,
    destination_workload_namespace: l.destinationWorkloadNamespace,
    destination_principal: l.destinationPrincipal,
    destination_app: l.destinationApp,
    destination_version: l.destinationVersion,
    destination_service: l.destinationService,
    destination_service_name: l.destinationServiceName,
    destination_service_namespace: l.destinationServiceNamespace,
    destination_cluster: l.destinationCluster,
  };
}

/** Bucket counts (not cumulative; rendering sums them), one extra slot for +Inf only. */
export class Histogram {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(private readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }
  observe(v: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && v > (b[i] as number)) i++;
    (this.counts as unknown as number[])[i]! += 1;
    this.sum += v;
    this.count++;
  }
}

/** One series of the HTTP metrics: one label set plus protocol, code, gRPC status and flags. */
export class RequestSeries {
  requests = 0;
  readonly duration = new Histogram(DURATION_BUCKETS_MS);
  readonly requestBytes = new Histogram(SIZE_BUCKETS_BYTES);
  readonly responseBytes = new Histogram(SIZE_BUCKETS_BYTES);
  constructor(readonly labels: LabelValues) {}
}

/** One series of the TCP metrics: one label set plus response flags. */
export class TcpSeries {
  opened = 0;
  closed = 0;
  sentBytes = 0;
  receivedBytes = 0;
  constructor(readonly labels: LabelValues) {}
}

interface MetricValue {
  value: number;
  labels: Record<string, string | number>;
  metricName?: string;
  sharedLabels?: LabelValues;
}

interface MetricData {
  name: string;
  help: string;
  type: 'counter' | 'histogram' | 'gauge';
  values: MetricValue[];
  aggregator: 'sum';
}

/**
 * A metric the prom-client Registry renders from series kept elsewhere. Only the members the
 * Registry uses (name, type, get, getForPromString, reset) are implemented.
 */
class RenderedMetric {
  readonly aggregator = 'sum';
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: 'counter' | 'histogram',
    private readonly values: () => MetricValue[],
  ) {}
  get(): Promise<MetricData> {
    return Promise.resolve({
      name: this.name,
      help: this.help,
      type: this.type,
      values: this.values(),
      aggregator: this.aggregator,
    });
  }
  getForPromString(): Promise<MetricData> {
    return this.get();
  }
  reset(): void {
    // Counters of a live proxy are never reset; Registry.resetMetrics() is for tests of others.
  }
}

function counterValues<S extends { labels: LabelValues }>(
  series: readonly S[],
  value: (s: S) => number,
): MetricValue[] {
  return series.map(s => ({ value: value(s), labels: s.labels }));
}

function histogramValues<S extends { labels: LabelValues }>(
  name: string,
  series: readonly S[],
  pick: (s: S) => Histogram,
  bounds: readonly number[],
): MetricValue[] {
  const out: MetricValue[] = [];
  for (const s of series) {
    const h = pick(s);
    let acc = 0;
    for (let i = 0; i < bounds.length; i++) {
      acc += h.counts[i] as number;
      out.push({
        value: acc,
        labels: { le: bounds[i] as number },
        metricName: `${name}_bucket`,
        sharedLabels: s.labels,
      });
    }
    out.push(
      {
        value: h.count,
        labels: { le: '+Inf' },
        metricName: `${name}_bucket`,
        sharedLabels: s.labels,
      },
      { value: h.sum, labels: {}, metricName: `${name}_sum`, sharedLabels: s.labels },
      { value: h.count, labels: {}, metricName: `${name}_count`, sharedLabels: s.labels },
    );
  }
  return out;
}

/** Registers the eight Istio metrics in `registry`, rendered from `requests` and `tcp`. */
export function registerIstioMetrics(
  registry: prom.Registry,
  requests: readonly RequestSeries[],
  tcp: readonly TcpSeries[],
): void {
  const metrics = [
    new RenderedMetric('istio_requests_total', 'Requests handled by this proxy', 'counter', () =>
      counterValues(requests, s => s.requests),
    ),
    new RenderedMetric(
      'istio_request_duration_milliseconds',
      'Request duration in milliseconds',
      'histogram',
      () =>
        histogramValues(
          'istio_request_duration_milliseconds',
          requests,
          s => s.duration,
          DURATION_BUCKETS_MS,
        ),
    ),
    new RenderedMetric('istio_request_bytes', 'HTTP request body sizes', 'histogram', () =>
      histogramValues('istio_request_bytes', requests, s => s.requestBytes, SIZE_BUCKETS_BYTES),
    ),
    new RenderedMetric('istio_response_bytes', 'HTTP response body sizes', 'histogram', () =>
      histogramValues('istio_response_bytes', requests, s => s.responseBytes, SIZE_BUCKETS_BYTES),
    ),
    new RenderedMetric(
      'istio_tcp_sent_bytes_total',
      'Bytes sent to the downstream during TCP connections',
      'counter',
      () => counterValues(tcp, s => s.sentBytes),
    ),
    new RenderedMetric(
      'istio_tcp_received_bytes_total',
      'Bytes received from the downstream during TCP connections',
      'counter',
      () => counterValues(tcp, s => s.receivedBytes),
    ),
    new RenderedMetric(
      'istio_tcp_connections_opened_total',
      'TCP connections opened',
      'counter',
      () => counterValues(tcp, s => s.opened),
    ),
    new RenderedMetric(
      'istio_tcp_connections_closed_total',
      'TCP connections closed',
      'counter',
      () => counterValues(tcp, s => s.closed),
    ),
  ];
  for (const m of metrics) registry.registerMetric(m as unknown as prom.Metric);
}
