/**
 * The proxy's {@link ProxyTelemetry}: Istio's standard metrics (series.ts) and the access log.
 * `recordRequest` runs once per request: it finds the series through a WeakMap on the interned
 * TrafficLabels and three small Maps (protocol+code, gRPC status, flags) and adds to it. Nothing
 * is formatted or hashed per request; label strings are built once per series.
 */
import type { Clock } from '../../common/clock';
import { systemClock } from '../../common/clock';
import type { Logger } from '../../common/logging';
import type { prom } from '../../common/metrics';
import type { Labeler, ProxyTelemetry, RequestRecord, TcpRecord, TrafficLabels } from '../types';
import { AccessLog } from './access-log';
import {
  type LabelValues,
  labelValues,
  registerIstioMetrics,
  RequestSeries,
  TcpSeries,
} from './series';

export interface IstioTelemetryOptions {
  readonly logger: Logger;
  readonly clock?: Clock;
  /** Where the istio_* metrics are registered (the proxy's own Registry). */
  readonly registry: prom.Registry;
  readonly labeler: Labeler;
  /** Access log lines go here (createAccessLogger()); undefined: no access log. */
  readonly accessLogger?: Logger;
}

/** The series of one TrafficLabels: HTTP by protocol+code → gRPC status → flags; TCP by flags. */
interface LabelEntry {
  readonly base: LabelValues;
  readonly http: Map<number, Map<string, Map<string, RequestSeries>>>;
  readonly tcp: Map<string, TcpSeries>;
}

/** Response codes are below 1000, so protocol and code share one numeric key. */
const GRPC_KEY_OFFSET = 1000;

/** Records the istio_* metrics and writes the access log. One per proxy. */
export class IstioTelemetry implements ProxyTelemetry {
  readonly labels: Labeler;
  private readonly clock: Clock;
  private readonly accessLog: AccessLog | undefined;
  private readonly entries = new WeakMap<TrafficLabels, LabelEntry>();
  /** Every series ever recorded (counters are never dropped), in creation order. */
  private readonly requestSeries: RequestSeries[] = [];
  private readonly tcpSeries: TcpSeries[] = [];
  /** The same series by their label values (see seriesKey). */
  private readonly requestByKey = new Map<string, RequestSeries>();
  private readonly tcpByKey = new Map<string, TcpSeries>();
  private requestCount = 0;
  private tcpOpenedCount = 0;
  private tcpClosedCount = 0;

  constructor(opts: IstioTelemetryOptions) {
    this.labels = opts.labeler;
    this.clock = opts.clock ?? systemClock;
    this.accessLog = opts.accessLogger ? new AccessLog(opts.accessLogger) : undefined;
    registerIstioMetrics(opts.registry, this.requestSeries, this.tcpSeries);
  }

  /** Totals for the admin `/stats` page. */
  totals(): { requests: number; tcpOpened: number; tcpClosed: number; series: number } {
    return {
      requests: this.requestCount,
      tcpOpened: this.tcpOpenedCount,
      tcpClosed: this.tcpClosedCount,
      series: this.requestSeries.length + this.tcpSeries.length,
    };
  }

  recordRequest(r: RequestRecord): void {
    const s = this.requestSeriesFor(r);
    s.requests++;
    s.duration.observe(r.durationMs);
    s.requestBytes.observe(r.requestBytes);
    s.responseBytes.observe(r.responseBytes);
    this.requestCount++;
    if (this.accessLog) this.accessLog.request(r);
  }

  tcpOpened(labels: TrafficLabels): void {
    this.tcpSeriesFor(labels, '-').opened++;
    this.tcpOpenedCount++;
  }

  tcpClosed(r: TcpRecord): void {
    const flags = r.responseFlags === '' ? '-' : r.responseFlags;
    const s = this.tcpSeriesFor(r.labels, flags);
    s.closed++;
    s.sentBytes += r.sentBytes;
    s.receivedBytes += r.receivedBytes;
    this.tcpClosedCount++;
    if (this.accessLog) this.accessLog.tcp(r, this.clock.now());
  }

  private entry(labels: TrafficLabels): LabelEntry {
    let e = this.entries.get(labels);
    if (e === undefined) {
      e = { base: labelValues(labels), http: new Map(), tcp: new Map() };
      this.entries.set(labels, e);
    }
    return e;
  }

  private requestSeriesFor(r: RequestRecord): RequestSeries {
    const e = this.entry(r.labels);
    const key = r.requestProtocol === 'grpc' ? r.responseCode + GRPC_KEY_OFFSET : r.responseCode;
    let byGrpc = e.http.get(key);
    if (byGrpc === undefined) {
      byGrpc = new Map();
      e.http.set(key, byGrpc);
    }
    let byFlags = byGrpc.get(r.grpcResponseStatus);
    if (byFlags === undefined) {
      byFlags = new Map();
      byGrpc.set(r.grpcResponseStatus, byFlags);
    }
    const flags = r.responseFlags;
    let s = byFlags.get(flags);
    if (s === undefined) {
      const values: LabelValues = {
        ...e.base,
        request_protocol: r.requestProtocol,
        response_code: String(r.responseCode),
        grpc_response_status: r.grpcResponseStatus,
        response_flags: flags === '' ? '-' : flags,
        connection_security_policy: r.labels.connectionSecurityPolicy,
      };
      const k = seriesKey(values);
      s = this.requestByKey.get(k);
      if (s === undefined) {
        s = new RequestSeries(values);
        this.requestByKey.set(k, s);
        this.requestSeries.push(s);
      }
      byFlags.set(flags, s);
    }
    return s;
  }

  private tcpSeriesFor(labels: TrafficLabels, flags: string): TcpSeries {
    const e = this.entry(labels);
    let s = e.tcp.get(flags);
    if (s === undefined) {
      const values: LabelValues = {
        ...e.base,
        request_protocol: 'tcp',
        response_flags: flags,
        connection_security_policy: labels.connectionSecurityPolicy,
      };
      const key = seriesKey(values);
      s = this.tcpByKey.get(key);
      if (s === undefined) {
        s = new TcpSeries(values);
        this.tcpByKey.set(key, s);
        this.tcpSeries.push(s);
      }
      e.tcp.set(flags, s);
    }
    return s;
  }
}

/**
 * A series' identity as text, used only when a series is first looked up under a label object.
 * Interned labels can be rebuilt (the labeler starts its tables over), so an equal series may
 * exist under an older object: it must be reused, or the exposition would list the same series
 * twice (and a connection opened before and closed after would count in two).
 */
function seriesKey(values: LabelValues): string {
  let key = '';
  for (const k in values) key += `${values[k]}\u0000`;
  return key;
}
