/**
 * EDS: a ClusterLoadAssignment per `outbound|PORT|SUBSET|HOST` cluster, from the registry's
 * instances of that service port, filtered by the subset's labels, grouped by locality with the
 * locality's weight (gRPC ignores localities without one), each endpoint with its health and
 * weight. Endpoints that run a mesh proxy carry the `tlsMode: istio` metadata auto mTLS matches on.
 */
import type { ServiceInstance } from '../../registry/types';
import type { ClusterKey } from './names';
import { outboundClusterName } from './names';
import { peerAuthenticationMode, type ProxyScope } from './scope';
import { findSubset } from './traffic-policy';
import { isIpAddress, labelsMatch, memo, stringStruct, uniqueSorted, type Obj } from './util';

/** Which client a resource is for: Envoy-style sidecars, or gRPC's xDS client. */
export type Flavor = 'sidecar' | 'proxyless';

/** Envoy's filter_metadata key transport_socket_matches look in. */
export const TRANSPORT_SOCKET_MATCH_KEY = 'envoy.transport_socket_match';

/** `region/zone/subzone` (Istio's locality form) as an Envoy Locality. */
export function parseLocality(locality: string | undefined): Obj {
  const [region, zone, subZone] = (locality ?? '').split('/');
  const out: Obj = {};
  if (region) out.region = region;
  if (zone) out.zone = zone;
  if (subZone) out.subZone = subZone;
  return out;
}

export interface LocalityEndpointsOptions {
  /** Drop endpoints whose address is not an IP literal (EDS, gRPC). */
  readonly ipOnly: boolean;
  /** Mark this endpoint for auto mTLS. */
  readonly mtls?: (instance: ServiceInstance) => boolean;
}

/**
 * Instances as `LocalityLbEndpoints`, sorted (locality, then address and port) so equal inputs
 * give equal bytes. Duplicate addresses are dropped: gRPC rejects a whole assignment with one.
 */
export function localityEndpoints(
  instances: readonly ServiceInstance[],
  options: LocalityEndpointsOptions,
): Obj[] {
  const byLocality = new Map<string, Map<string, ServiceInstance>>();
  for (const inst of instances) {
    const { address, port } = inst.endpoint;
    if (options.ipOnly && !isIpAddress(address)) continue;
    const locality = inst.locality ?? '';
    let group = byLocality.get(locality);
    if (!group) {
      group = new Map<string, ServiceInstance>();
      byLocality.set(locality, group);
    }
    const key = `${address}:${port}`;
    if (!group.has(key)) group.set(key, inst);
  }
  const out: Obj[] = [];
  for (const locality of uniqueSorted(byLocality.keys())) {
    const group = byLocality.get(locality)!;
    let total = 0;
    const lbEndpoints: Obj[] = [];
    for (const key of uniqueSorted(group.keys())) {
      const inst = group.get(key)!;
      const weight = Math.max(1, Math.round(inst.weight));
      total += weight;
      const lb: Obj = {
        endpoint: {
          address: {
            socketAddress: { address: inst.endpoint.address, portValue: inst.endpoint.port },
          },
        },
        healthStatus: inst.healthy ? 'HEALTHY' : 'UNHEALTHY',
        loadBalancingWeight: { value: weight },
      };
      if (options.mtls?.(inst))
        lb.metadata = {
          filterMetadata: { [TRANSPORT_SOCKET_MATCH_KEY]: stringStruct({ tlsMode: 'istio' }) },
        };
      lbEndpoints.push(lb);
    }
    out.push({
      locality: parseLocality(locality),
      lbEndpoints,
      loadBalancingWeight: { value: total },
    });
  }
  return out;
}

/** The namespace of the workload behind an instance (`namespace/name`), else the fallback. */
function workloadNamespace(inst: ServiceInstance, fallback: string): string {
  const slash = inst.workload.indexOf('/');
  return slash > 0 ? inst.workload.slice(0, slash) : fallback;
}

/**
 * Whether a client should use mesh mTLS to this endpoint when no DestinationRule says: it runs a
 * mesh proxy, and that proxy's PeerAuthentication does not disable mTLS on the port (Istio's auto
 * mTLS). A port that a proxyless gRPC server (XdsServer) of the endpoint's node serves is the
 * exception under PERMISSIVE: gRPC cannot take TLS and plaintext on one port, so such a server
 * serves plaintext (listeners.ts proxylessServerListener), and its clients must send it that.
 */
export function autoMtlsEligible(
  scope: ProxyScope,
  serviceNamespace: string,
  inst: ServiceInstance,
): boolean {
  if (inst.tlsMode !== 'istio') return false;
  const ns = workloadNamespace(inst, serviceNamespace);
  const mode = peerAuthenticationMode(scope.push, ns, inst.labels, inst.endpoint.port);
  if (mode === 'DISABLE') return false;
  const proxyless =
    inst.node !== undefined ? scope.push.proxylessServers?.get(inst.node) : undefined;
  return !(mode === 'PERMISSIVE' && proxyless?.has(inst.endpoint.port) === true);
}

/**
 * The ClusterLoadAssignment for an outbound cluster, or undefined when the proxy cannot see the
 * service, the port or the subset. Memoized per push by cluster, flavor and DestinationRule.
 */
export function clusterLoadAssignment(
  scope: ProxyScope,
  flavor: Flavor,
  key: ClusterKey,
): Obj | undefined {
  if (key.direction !== 'outbound') return undefined;
  const visible = scope.service(key.host);
  if (!visible || !visible.ports.some(p => p.port === key.port)) return undefined;
  const dr = scope.destinationRule(key.host);
  let selector: Readonly<Record<string, string>> | undefined;
  if (key.subset !== '') {
    const subset = findSubset(dr?.spec, key.subset);
    if (!subset) return undefined;
    selector = subset.labels ?? {};
  }
  const name = outboundClusterName(key.host, key.port, key.subset);
  const cacheKey = `xdsgen|eds|${flavor}|${name}|${dr?.key ?? ''}`;
  return memo(scope.push.cache, cacheKey, () => {
    const instances = scope.push.registry
      .instances(key.host, key.port)
      .filter(i => labelsMatch(selector, i.labels));
    const serviceNs = visible.service.namespace;
    return {
      clusterName: name,
      endpoints: localityEndpoints(instances, {
        ipOnly: true,
        ...(flavor === 'sidecar' ? { mtls: i => autoMtlsEligible(scope, serviceNs, i) } : {}),
      }),
    };
  });
}
