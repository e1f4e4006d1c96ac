/**
 * Pilot's translation of the mesh model into Envoy v3 xDS resources (docs/xds.md): for sidecars
 * (Istio's listeners, routes, clusters and endpoints) and for proxyless gRPC clients
 * (`xds:///HOST:PORT`). Pure functions of the push context and the proxy; results that do not
 * depend on the proxy are shared through `push.cache`.
 */
import type { Generator } from '../model';
import { XdsGenerator } from './generator';

/** The generator the ADS server uses. Stateless: one instance serves every stream and push. */
export function createGenerator(): Generator {
  return new XdsGenerator();
}

export { XdsGenerator } from './generator';
export {
  BLACKHOLE_CLUSTER,
  PASSTHROUGH_CLUSTER,
  VIRTUAL_INBOUND_LISTENER,
  VIRTUAL_OUTBOUND_LISTENER,
  type ClusterKey,
  clusterName,
  inboundClusterName,
  outboundClusterName,
  outboundListenerName,
  parseClusterName,
  resolveHost,
} from './names';
export { DEFAULT_ROOT_NAMESPACE, proxyNamespace } from './scope';
