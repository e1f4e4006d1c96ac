/** Upstream clusters: endpoints, load balancing, circuit breakers, outlier detection, connect. */
export {
  type ClusterManagerOptions,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DefaultClusterManager,
} from './cluster-manager';
export { type HostResolver, lookupAll } from './cluster';
export { combineHashes, hashString } from './hash';
