/** Telemetry: Istio's standard metrics, the access log, the labeler and the proxy's own metrics. */
export { AccessLog, createAccessLogger } from './access-log';
export {
  inboundServicesOf,
  MAX_DECODED_PEER_METADATA,
  MAX_INTERNED_LABELS,
  TrafficLabeler,
  type TrafficLabelerOptions,
  UNKNOWN,
} from './labeler';
export { decodePeerMetadataValue, encodePeerMetadata } from './peer-metadata';
export { registerProxyMetrics, type ProxyStatusSource } from './proxy-metrics';
export { DURATION_BUCKETS_MS, SIZE_BUCKETS_BYTES } from './series';
export { IstioTelemetry, type IstioTelemetryOptions } from './telemetry';
