/**
 * The xDS generator: dispatches (type, client kind) to the translators. Sidecars (and routers,
 * which get only their outbound clusters and endpoints until Gateways are supported) get the full
 * Istio-style configuration; proxyless gRPC clients get API listeners and what those reference.
 */
import {
  CLUSTER_TYPE,
  ENDPOINT_TYPE,
  type GeneratedResource,
  type Generator,
  LISTENER_TYPE,
  type ProxyNode,
  type PushContext,
  ROUTE_TYPE,
  type XdsType,
} from '../model';
import { fixedClusters, inboundClusters, outboundClusters } from './clusters';
import { clusterLoadAssignment, type Flavor } from './endpoints';
import {
  outboundListeners,
  proxylessListener,
  proxylessServerListener,
  virtualInboundListener,
  virtualOutboundListener,
} from './listeners';
import { parseClusterName } from './names';
import { proxylessRouteConfig, sidecarRouteConfig } from './routes';
import { ProxyScope } from './scope';
import { isHttpProtocol, uniqueSorted, type Obj } from './util';

const named = (resource: Obj): GeneratedResource => ({ name: resource.name as string, resource });

/** Keeps the resources the client asked for (all of them for a wildcard request), in its order. */
function select(all: readonly Obj[], names: readonly string[]): GeneratedResource[] {
  if (names.length === 0) return all.map(named);
  const byName = new Map(all.map(r => [r.name as string, r]));
  const out: GeneratedResource[] = [];
  for (const n of new Set(names)) {
    const r = byName.get(n);
    if (r) out.push(named(r));
  }
  return out;
}

/** The Envoy v3 generator for sidecars, routers and proxyless gRPC clients. */
export class XdsGenerator implements Generator {
  generate(
    type: XdsType,
    proxy: ProxyNode,
    push: PushContext,
    names: readonly string[],
  ): GeneratedResource[] {
    const scope = new ProxyScope(proxy, push);
    return proxy.type === 'proxyless'
      ? this.proxyless(type, scope, names)
      : this.sidecar(type, scope, names, proxy.type === 'router');
  }

  cacheKey(type: XdsType, proxy: ProxyNode, push: PushContext): string | undefined {
    const outbound = `${proxy.type}|${new ProxyScope(proxy, push).key}`;
    if (proxy.type === 'proxyless' || (type !== CLUSTER_TYPE && type !== LISTENER_TYPE))
      return outbound;
    // Sidecar clusters and listeners also hold the proxy's inbound side: what inboundPorts()
    // reads (its instances, its labels for PeerAuthentication selectors). Hosts with no
    // registered workload, or with the same ports and labels, still share.
    const instances = push.registry.proxyInstances(proxy.identity);
    const inbound =
      instances.length === 0
        ? ''
        : JSON.stringify(
            instances.map(i => [
              i.hostname,
              i.servicePort,
              i.endpoint.port,
              i.labels,
              i.serviceAccount,
            ]),
          );
    const labels = JSON.stringify(
      Object.entries(proxy.labels).sort(([a], [b]) => (a < b ? -1 : 1)),
    );
    return `${outbound}|${labels}|${inbound}`;
  }

  private sidecar(
    type: XdsType,
    scope: ProxyScope,
    names: readonly string[],
    router: boolean,
  ): GeneratedResource[] {
    switch (type) {
      case CLUSTER_TYPE: {
        const all = [...outboundClusters(scope, 'sidecar').values()];
        if (!router) all.push(...inboundClusters(scope));
        all.push(...fixedClusters(scope));
        return select(all, names);
      }
      case ENDPOINT_TYPE:
        return this.endpoints(scope, 'sidecar', names);
      case LISTENER_TYPE:
        if (router) return [];
        return select(
          [
            virtualOutboundListener(scope),
            ...outboundListeners(scope),
            virtualInboundListener(scope),
          ],
          names,
        );
      case ROUTE_TYPE: {
        if (router) return [];
        const ports =
          names.length > 0
            ? names.filter(n => /^\d{1,5}$/.test(n)).map(Number)
            : uniqueSorted(
                scope.services.flatMap(s =>
                  s.ports.filter(p => isHttpProtocol(p.protocol)).map(p => p.port),
                ),
              );
        return ports.map(p => named(sidecarRouteConfig(scope, p)));
      }
    }
  }

  private proxyless(
    type: XdsType,
    scope: ProxyScope,
    names: readonly string[],
  ): GeneratedResource[] {
    switch (type) {
      case CLUSTER_TYPE:
        return select([...outboundClusters(scope, 'proxyless').values()], names);
      case ENDPOINT_TYPE:
        return this.endpoints(scope, 'proxyless', names);
      case LISTENER_TYPE:
      case ROUTE_TYPE: {
        const wanted =
          names.length > 0
            ? uniqueSorted(names)
            : uniqueSorted(
                scope.services.flatMap(s => s.ports.map(p => `${s.service.hostname}:${p.port}`)),
              );
        const out: GeneratedResource[] = [];
        for (const name of wanted) {
          const resource =
            type === LISTENER_TYPE
              ? (proxylessServerListener(scope, name) ?? proxylessListener(scope, name))
              : proxylessRouteConfig(scope, name)?.config;
          if (resource) out.push({ name, resource });
        }
        return out;
      }
    }
  }

  private endpoints(
    scope: ProxyScope,
    flavor: Flavor,
    names: readonly string[],
  ): GeneratedResource[] {
    const wanted =
      names.length > 0
        ? uniqueSorted(names)
        : [...outboundClusters(scope, flavor).values()]
            .filter(c => c.type === 'EDS')
            .map(c => c.name as string);
    const out: GeneratedResource[] = [];
    for (const name of wanted) {
      const key = parseClusterName(name);
      const cla = key ? clusterLoadAssignment(scope, flavor, key) : undefined;
      if (cla) out.push({ name, resource: cla });
    }
    return out;
  }
}
