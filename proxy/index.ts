/** The proxy's public surface: the component, its options, its config file and errors. */
export { Proxy } from './proxy';
export {
  DEFAULT_ADMIN_LISTEN,
  DEFAULT_DRAIN_MS,
  DEFAULT_INITIAL_FETCH_TIMEOUT_MS,
  DEFAULT_METRICS_LISTEN,
  DEFAULT_SHUTDOWN_GRACE_MS,
  type ProxyOptions,
  type TrafficOptions,
  XDS_STATE_FILE,
} from './options';
export {
  DEFAULT_PROXY_CONFIG_FILE,
  describeProxyConfig,
  formatNodeId,
  loadProxyConfig,
  parseNodeId,
  parseProxyConfig,
  type LoadedProxyConfig,
  type ProxyConfigOverrides,
  type ProxyFileConfig,
} from './config/proxy-config';
export {
  AdminNotLoopbackError,
  ListenFailedError,
  NoCertificateError,
  PROXY_ERROR_CODES,
  ProxyError,
  type ProxyErrorCode,
  StartAbortedError,
} from './errors';
export {
  IstioTelemetry,
  type IstioTelemetryOptions,
  TrafficLabeler,
  type TrafficLabelerOptions,
} from './telemetry';
