/**
 * Test helpers for the generators: an in-memory ConfigView and ServiceDiscovery, and builders for
 * services, instances, config objects, proxies and push contexts. Only tests import this file.
 * @internal
 */
import type { ConfigObject, Kind, SpecOf } from '../../config/types';
import {
  DEFAULT_MESH_CONFIG,
  type ConfigView,
  type MeshConfig,
  type ProxyNode,
  type PushContext,
} from '../model';
import type {
  Protocol,
  ProxyIdentity,
  RegistryChange,
  Service,
  ServiceDiscovery,
  ServiceInstance,
} from '../../registry/types';

/** A ConfigView over a fixed list of objects. */
export class MemoryConfig implements ConfigView {
  constructor(private readonly objects: readonly ConfigObject[]) {}

  list<K extends Kind>(kind: K, namespace?: string): readonly ConfigObject<K>[] {
    return this.objects.filter(
      (o): o is ConfigObject<K> =>
        o.kind === kind && (namespace === undefined || o.metadata.namespace === namespace),
    );
  }

  get<K extends Kind>(kind: K, namespace: string, name: string): ConfigObject<K> | undefined {
    return this.list(kind, namespace).find(o => o.metadata.name === name);
  }
}

/** A ServiceDiscovery over fixed services and instances; `proxyInstances` matches by IP. */
export class MemoryRegistry implements ServiceDiscovery {
  constructor(
    private readonly svcs: readonly Service[],
    private readonly insts: readonly ServiceInstance[],
  ) {}

  services(): readonly Service[] {
    return this.svcs;
  }

  getService(hostname: string): Service | undefined {
    return this.svcs.find(s => s.hostname === hostname);
  }

  instances(hostname: string, port: number): readonly ServiceInstance[] {
    return this.insts.filter(i => i.hostname === hostname && i.servicePort === port);
  }

  proxyInstances(proxy: ProxyIdentity): readonly ServiceInstance[] {
    return this.insts.filter(i => proxy.ips.includes(i.endpoint.address));
  }

  onChange(_listener: (change: RegistryChange) => void): () => void {
    return () => undefined;
  }
}

/** `name.ns.svc.cluster.local`. */
export const fqdn = (name: string, ns = 'default') => `${name}.${ns}.svc.cluster.local`;

/** A service with `name:port/protocol` ports, e.g. `service('reviews', ['http:9080'])`. */
export function service(
  name: string,
  ports: readonly string[],
  extra: Partial<Service> & { namespace?: string } = {},
): Service {
  const namespace = extra.namespace ?? 'default';
  return {
    hostname: name.includes('.') ? name : fqdn(name, namespace),
    namespace,
    addresses: [],
    ports: ports.map(p => {
      const [pname, num] = p.split(':') as [string, string];
      const prefix = pname.split('-')[0]!.toUpperCase();
      const protocol = (
        ['HTTP', 'HTTP2', 'GRPC', 'HTTPS', 'TLS', 'MONGO', 'REDIS', 'UDP'].includes(prefix)
          ? prefix
          : 'TCP'
      ) as Protocol;
      return { name: pname, port: Number(num), protocol };
    }),
    location: 'MESH_INTERNAL',
    resolution: 'STATIC',
    serviceAccounts: [],
    exportTo: ['*'],
    source: { kind: 'ServiceEntry', namespace, name },
    ...extra,
  };
}

/** An instance of `hostname` on service port `servicePort` at `address:port`. */
export function instance(
  hostname: string,
  servicePort: number,
  address: string,
  extra: Partial<ServiceInstance> & { port?: number } = {},
): ServiceInstance {
  const { port, ...rest } = extra;
  return {
    hostname,
    servicePort,
    endpoint: { address, port: port ?? servicePort },
    labels: {},
    workload: `default/${address}`,
    healthy: true,
    weight: 1,
    tlsMode: 'disabled',
    ...rest,
  };
}

let created = 0;

/** A config object; each one is created a second after the previous (for "oldest wins"). */
export function config<K extends Kind>(
  kind: K,
  namespace: string,
  name: string,
  spec: SpecOf<K>,
): ConfigObject<K> {
  created++;
  return {
    apiVersion:
      kind.endsWith('Authentication') || kind === 'AuthorizationPolicy'
        ? 'security.istio.io/v1'
        : 'networking.istio.io/v1',
    kind,
    metadata: {
      name,
      namespace,
      creationTimestamp: new Date(Date.UTC(2024, 0, 1, 0, 0, created)).toISOString(),
    },
    spec,
  };
}

/** A client of the given kind in `namespace`, on host `ip`. */
export function proxy(
  type: ProxyNode['type'],
  options: {
    namespace?: string;
    ip?: string;
    labels?: Record<string, string>;
    metadata?: Record<string, unknown>;
  } = {},
): ProxyNode {
  const namespace = options.namespace ?? 'default';
  const ip = options.ip ?? '10.0.0.100';
  return {
    id:
      type === 'proxyless'
        ? 'grpc-client'
        : `${type}~${ip}~vm-1.${namespace}~${namespace}.svc.cluster.local`,
    type,
    identity: { node: 'vm-1', namespace, ips: [ip] },
    labels: options.labels ?? {},
    metadata: options.metadata ?? {},
  };
}

/** A push context over in-memory config and registry. */
export function pushContext(input: {
  configs?: readonly ConfigObject[];
  services?: readonly Service[];
  instances?: readonly ServiceInstance[];
  mesh?: Partial<MeshConfig>;
}): PushContext {
  return {
    version: '1',
    mesh: { ...DEFAULT_MESH_CONFIG, ...input.mesh },
    config: new MemoryConfig(input.configs ?? []),
    registry: new MemoryRegistry(input.services ?? [], input.instances ?? []),
    cache: new Map(),
  };
}
