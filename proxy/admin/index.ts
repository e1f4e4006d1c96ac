/** The admin server (127.0.0.1:15000) and the metrics server (:15090). */
export {
  AdminServer,
  type AdminServerOptions,
  type AdminSource,
  checkAdminAddress,
  indexRoute,
  isLoopbackHost,
  MetricsServer,
  type MetricsServerOptions,
  type MetricsText,
  type Readiness,
  readinessRoutes,
  type ServerState,
  statsRoute,
} from './admin-server';
export {
  type ConfigDumpInput,
  type DumpedResource,
  type ListenerInfo,
  RESOURCE_TYPES,
} from './render';
