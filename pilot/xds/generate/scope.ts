/**
 * What one proxy sees of the mesh: the services exported to its namespace and let through by its
 * Sidecar resource, the VirtualService and DestinationRule that apply to each host, and the
 * PeerAuthentication mode of its own ports. Everything here that does not depend on the proxy
 * itself is memoized per push, keyed by {@link ProxyScope.key}, so proxies of one namespace (and
 * Sidecar) share the work and the generated objects.
 */
import type {
  ConfigObject,
  DestinationRuleSpec,
  IstioEgressListener,
  MtlsMode,
  SidecarSpec,
  VirtualServiceSpec,
} from '../../config/types';
import type { MeshConfig, ProxyNode, PushContext } from '../model';
import type { Service, ServicePortModel } from '../../registry/types';
import { hostMatchRank, hostMatches, resolveHost } from './names';
import { byAge, labelsMatch, memo } from './util';

/** Where mesh-wide Sidecar, DestinationRule and PeerAuthentication objects live by default. */
export const DEFAULT_ROOT_NAMESPACE = 'sail-system';

/** The mesh's root namespace. */
export function rootNamespace(mesh: MeshConfig): string {
  return mesh.rootNamespace ?? DEFAULT_ROOT_NAMESPACE;
}

/** A VirtualService with its hosts resolved in its namespace. */
export interface VirtualServiceEntry {
  readonly config: ConfigObject<'VirtualService'>;
  readonly spec: VirtualServiceSpec;
  readonly namespace: string;
  /** Fully qualified (or wildcard) hosts. */
  readonly hosts: readonly string[];
}

/** A DestinationRule with its host resolved in its namespace. */
export interface DestinationRuleEntry {
  readonly config: ConfigObject<'DestinationRule'>;
  readonly spec: DestinationRuleSpec;
  readonly namespace: string;
  readonly host: string;
  /** `namespace/name`, for cache keys. */
  readonly key: string;
}

/** A service as one proxy sees it: all its ports, or those its Sidecar egress lets through. */
export interface VisibleService {
  readonly service: Service;
  readonly ports: readonly ServicePortModel[];
}

/** Per-push indexes of the config and registry. */
interface PushIndex {
  readonly services: readonly Service[];
  readonly virtualServices: readonly VirtualServiceEntry[];
  readonly destinationRules: readonly DestinationRuleEntry[];
  readonly sidecars: readonly ConfigObject<'Sidecar'>[];
  readonly peerAuthentications: readonly ConfigObject<'PeerAuthentication'>[];
  /**
   * True when some config depends on a proxy's labels beyond Sidecar selection (route matches on
   * `sourceLabels`, DestinationRules with a workloadSelector): then proxies with different labels
   * cannot share generated objects.
   */
  readonly labelDependent: boolean;
}

function pushIndex(push: PushContext): PushIndex {
  return memo(push.cache, 'xdsgen|index', () => {
    const suffix = push.mesh.domainSuffix;
    const services = [...push.registry.services()].sort((a, b) =>
      a.hostname < b.hostname ? -1 : a.hostname > b.hostname ? 1 : 0,
    );
    const virtualServices = [...push.config.list('VirtualService')].sort(byAge).map(config => ({
      config,
      spec: config.spec,
      namespace: config.metadata.namespace,
      hosts: (config.spec.hosts ?? []).map(h => resolveHost(h, config.metadata.namespace, suffix)),
    }));
    const destinationRules = [...push.config.list('DestinationRule')].sort(byAge).map(config => ({
      config,
      spec: config.spec,
      namespace: config.metadata.namespace,
      host: resolveHost(config.spec.host, config.metadata.namespace, suffix),
      key: `${config.metadata.namespace}/${config.metadata.name}`,
    }));
    const labelDependent =
      destinationRules.some(d => d.spec.workloadSelector?.matchLabels !== undefined) ||
      virtualServices.some(
        v =>
          (v.spec.http ?? []).some(r => (r.match ?? []).some(m => m.sourceLabels !== undefined)) ||
          (v.spec.tcp ?? []).some(r => (r.match ?? []).some(m => m.sourceLabels !== undefined)),
      );
    return {
      services,
      virtualServices,
      destinationRules,
      sidecars: [...push.config.list('Sidecar')].sort(byAge),
      peerAuthentications: [...push.config.list('PeerAuthentication')].sort(byAge),
      labelDependent,
    };
  });
}

/**
 * Istio's exportTo: absent or empty means everywhere; `*` everywhere; `.` the owner's namespace;
 * `~` nowhere; anything else a namespace name.
 */
export function isExportedTo(
  exportTo: readonly string[] | undefined,
  owner: string,
  client: string,
): boolean {
  if (!exportTo || exportTo.length === 0) return true;
  return exportTo.some(e => e === '*' || e === client || (e === '.' && owner === client));
}

/**
 * Whether a Sidecar egress `hosts` list (`ns/host`, `*\/host`, `./host`) lets a proxy in
 * `sidecarNamespace` see `host` of namespace `namespace`.
 */
export function egressHostsAllow(
  hosts: readonly string[],
  sidecarNamespace: string,
  namespace: string,
  host: string,
): boolean {
  for (const entry of hosts) {
    const slash = entry.indexOf('/');
    const nsPart = slash < 0 ? '*' : entry.slice(0, slash);
    const hostPart = slash < 0 ? entry : entry.slice(slash + 1);
    const nsOk =
      nsPart === '*' ||
      (nsPart === '.' && namespace === sidecarNamespace) ||
      (nsPart !== '~' && nsPart === namespace);
    if (nsOk && hostMatches(hostPart, host)) return true;
  }
  return false;
}

/** The namespace a client belongs to: its identity's, else metadata NAMESPACE, else `default`. */
export function proxyNamespace(proxy: ProxyNode): string {
  if (proxy.identity.namespace) return proxy.identity.namespace;
  const meta = proxy.metadata.NAMESPACE;
  return typeof meta === 'string' && meta !== '' ? meta : 'default';
}

/**
 * The Sidecar resource for a proxy (Istio's rules): in its namespace, the oldest one whose
 * workloadSelector selects it, else the one without a selector; else the root namespace's one
 * without a selector.
 */
export function selectSidecar(
  push: PushContext,
  namespace: string,
  labels: Readonly<Record<string, string>>,
): ConfigObject<'Sidecar'> | undefined {
  const sidecars = pushIndex(push).sidecars;
  const inNs = sidecars.filter(s => s.metadata.namespace === namespace);
  const selected = inNs.find(
    s => s.spec.workloadSelector?.labels && labelsMatch(s.spec.workloadSelector.labels, labels),
  );
  if (selected) return selected;
  const nsDefault = inNs.find(s => !s.spec.workloadSelector?.labels);
  if (nsDefault) return nsDefault;
  const root = rootNamespace(push.mesh);
  return sidecars.find(s => s.metadata.namespace === root && !s.spec.workloadSelector?.labels);
}

/**
 * The mTLS mode a workload accepts on `port` (its own port number): a PeerAuthentication selecting
 * it (port-level first), else its namespace's, else the root namespace's; UNSET inherits from the
 * next level; PERMISSIVE when nothing is set (Istio's default).
 */
export function peerAuthenticationMode(
  push: PushContext,
  namespace: string,
  labels: Readonly<Record<string, string>>,
  port: number,
): Exclude<MtlsMode, 'UNSET'> {
  const all = pushIndex(push).peerAuthentications;
  const set = (m: MtlsMode | undefined): m is Exclude<MtlsMode, 'UNSET'> =>
    m !== undefined && m !== 'UNSET';
  const workload = all.find(
    p =>
      p.metadata.namespace === namespace &&
      p.spec.selector?.matchLabels !== undefined &&
      Object.keys(p.spec.selector.matchLabels).length > 0 &&
      labelsMatch(p.spec.selector.matchLabels, labels),
  );
  if (workload) {
    const portMode = workload.spec.portLevelMtls?.[String(port)]?.mode;
    if (set(portMode)) return portMode;
    if (set(workload.spec.mtls?.mode)) return workload.spec.mtls.mode;
  }
  const unselected = (ns: string) =>
    all.find(
      p =>
        p.metadata.namespace === ns &&
        (!p.spec.selector?.matchLabels || Object.keys(p.spec.selector.matchLabels).length === 0),
    );
  for (const ns of [namespace, rootNamespace(push.mesh)]) {
    const mode = unselected(ns)?.spec.mtls?.mode;
    if (set(mode)) return mode;
  }
  return 'PERMISSIVE';
}

/** The visible (service, ports) list for one namespace and Sidecar. */
function visibleServices(
  index: PushIndex,
  namespace: string,
  egress: readonly IstioEgressListener[] | undefined,
): VisibleService[] {
  const out: VisibleService[] = [];
  for (const service of index.services) {
    if (!isExportedTo(service.exportTo, service.namespace, namespace)) continue;
    let ports: readonly ServicePortModel[] = service.ports;
    if (egress && egress.length > 0) {
      const allowed = new Set<number>();
      for (const listener of egress) {
        if (!egressHostsAllow(listener.hosts, namespace, service.namespace, service.hostname))
          continue;
        for (const p of service.ports)
          if (listener.port === undefined || listener.port.number === p.port) allowed.add(p.port);
      }
      ports = service.ports.filter(p => allowed.has(p.port));
    }
    if (ports.length > 0) out.push({ service, ports });
  }
  return out;
}

/**
 * One proxy's view of a push. Cheap to build; the lists behind it are memoized per push and
 * {@link key}.
 */
export class ProxyScope {
  readonly namespace: string;
  readonly sidecar: ConfigObject<'Sidecar'> | undefined;
  /** Proxies with equal keys see exactly the same outbound configuration. */
  readonly key: string;
  readonly outboundTrafficPolicy: 'ALLOW_ANY' | 'REGISTRY_ONLY';
  private readonly index: PushIndex;
  private readonly visible: {
    readonly list: readonly VisibleService[];
    readonly byHost: ReadonlyMap<string, VisibleService>;
    readonly virtualServices: readonly VirtualServiceEntry[];
  };

  constructor(
    readonly proxy: ProxyNode,
    readonly push: PushContext,
  ) {
    this.index = pushIndex(push);
    this.namespace = proxyNamespace(proxy);
    this.sidecar = selectSidecar(push, this.namespace, proxy.labels);
    const sidecarSpec: SidecarSpec | undefined = this.sidecar?.spec;
    this.outboundTrafficPolicy =
      sidecarSpec?.outboundTrafficPolicy?.mode ?? push.mesh.outboundTrafficPolicy;
    const sidecarKey = this.sidecar
      ? `${this.sidecar.metadata.namespace}/${this.sidecar.metadata.name}`
      : '';
    const labelsKey = this.index.labelDependent
      ? JSON.stringify(Object.entries(proxy.labels).sort(([a], [b]) => (a < b ? -1 : 1)))
      : '';
    this.key = `${this.namespace}|${sidecarKey}|${labelsKey}`;
    const egress = sidecarSpec?.egress;
    this.visible = memo(push.cache, `xdsgen|visible|${this.namespace}|${sidecarKey}`, () => {
      const list = visibleServices(this.index, this.namespace, egress);
      const virtualServices = this.index.virtualServices.filter(
        v =>
          isExportedTo(v.spec.exportTo, v.namespace, this.namespace) &&
          (!v.spec.gateways || v.spec.gateways.length === 0 || v.spec.gateways.includes('mesh')) &&
          (!egress ||
            egress.length === 0 ||
            egress.some(l =>
              v.hosts.some(h => egressHostsAllow(l.hosts, this.namespace, v.namespace, h)),
            )),
      );
      return { list, byHost: new Map(list.map(v => [v.service.hostname, v])), virtualServices };
    });
  }

  /** Visible services, sorted by hostname. */
  get services(): readonly VisibleService[] {
    return this.visible.list;
  }

  /** A visible service by its hostname. */
  service(hostname: string): VisibleService | undefined {
    return this.visible.byHost.get(hostname);
  }

  /**
   * The VirtualService that routes `hostname` for this proxy: exact host matches beat wildcards,
   * longer wildcards beat shorter ones, the oldest wins a tie (Istio's conflict rule).
   */
  virtualService(hostname: string): VirtualServiceEntry | undefined {
    let best: VirtualServiceEntry | undefined;
    let bestRank = -1;
    for (const v of this.visible.virtualServices) {
      for (const h of v.hosts) {
        if (!hostMatches(h, hostname)) continue;
        const rank = hostMatchRank(h);
        if (rank > bestRank) {
          best = v;
          bestRank = rank;
        }
      }
    }
    return best;
  }

  /**
   * The DestinationRule for `hostname` (Istio's lookup order): this proxy's namespace (rules with
   * a workloadSelector only when it selects the proxy), then the service's namespace, then the
   * root namespace, each only when exported to the proxy's namespace. Within a namespace the most
   * specific host wins, then the oldest rule.
   */
  destinationRule(hostname: string): DestinationRuleEntry | undefined {
    return memo(this.push.cache, `xdsgen|dr|${this.key}|${hostname}`, () =>
      this.findDestinationRule(hostname),
    );
  }

  private findDestinationRule(hostname: string): DestinationRuleEntry | undefined {
    const serviceNs = this.push.registry.getService(hostname)?.namespace;
    const namespaces = [this.namespace];
    if (serviceNs !== undefined && serviceNs !== this.namespace) namespaces.push(serviceNs);
    const root = rootNamespace(this.push.mesh);
    if (!namespaces.includes(root)) namespaces.push(root);
    for (const ns of namespaces) {
      let best: DestinationRuleEntry | undefined;
      let bestRank = -1;
      for (const d of this.index.destinationRules) {
        if (d.namespace !== ns || !hostMatches(d.host, hostname)) continue;
        const selector = d.spec.workloadSelector?.matchLabels;
        if (ns === this.namespace) {
          if (selector && !labelsMatch(selector, this.proxy.labels)) continue;
        } else if (selector || !isExportedTo(d.spec.exportTo, ns, this.namespace)) {
          continue;
        }
        const rank = hostMatchRank(d.host);
        if (rank > bestRank) {
          best = d;
          bestRank = rank;
        }
      }
      if (best) return best;
    }
    return undefined;
  }
}
