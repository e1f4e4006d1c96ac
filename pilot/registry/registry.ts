/**
 * The service registry pilot serves from: {@link MeshRegistry}, built from ServiceEntry,
 * WorkloadEntry and WorkloadGroup configuration plus the hosts that registered themselves, and
 * {@link AggregateRegistry}, which puts several registries behind one {@link ServiceDiscovery}
 * so others (Consul, Eureka: Istio 0.2–1.0's platform registries, §6.6) can be added.
 */
import type { Clock } from '../../common/clock';
import type { Logger } from '../../common/logging';
import type { ConfigObject } from '../config/types';
import type { ConfigEvent } from '../store/store';
import {
  type DerivedServiceEntry,
  type SelectableWorkload,
  compareInstances,
  deriveServiceEntry,
  endpointOf,
  instancesOf,
  selects,
  serviceAccountsOf,
  workloadFromEntry,
  workloadFromRegistration,
} from './service-entries';
import type {
  ProxyIdentity,
  RegistryChange,
  Service,
  ServiceDiscovery,
  ServiceInstance,
} from './types';
import { DEFAULT_TRUST_DOMAIN, type WorkloadEvent, WorkloadRegistry } from './workloads';

/** Options of {@link MeshRegistry}. */
export interface MeshRegistryOptions {
  readonly logger: Logger;
  /** Trust domain of SPIFFE IDs. Default `cluster.local`. */
  readonly trustDomain?: string;
  /** Default systemClock; a FakeClock in tests (grace periods). */
  readonly clock?: Clock;
  /** How long a host whose registration stream dropped stays, ms. Default 30 s. */
  readonly disconnectGraceMs?: number;
}

const EMPTY: readonly ServiceInstance[] = [];

/**
 * One ServiceEntry's service and instances for one hostname, grouped by workload so that one
 * workload's instances can be swapped without touching the others. The sorted list and the
 * per-port lists are built when read, once per change.
 */
class HostEntry {
  private readonly byWorkload = new Map<string, readonly ServiceInstance[]>();
  private sorted: readonly ServiceInstance[] | undefined;
  private ports: Map<number, ServiceInstance[]> | undefined;
  private json: string | undefined;

  constructor(
    public service: Service,
    instances: readonly ServiceInstance[],
  ) {
    for (const inst of instances) {
      const list = this.byWorkload.get(inst.workload);
      this.byWorkload.set(inst.workload, list ? [...list, inst] : [inst]);
    }
  }

  /** Every instance, in compareInstances order. */
  get instances(): readonly ServiceInstance[] {
    this.sorted ??= [...this.byWorkload.values()].flat().sort(compareInstances);
    return this.sorted;
  }

  /** The instances of service port `port`. */
  instancesOn(port: number): readonly ServiceInstance[] {
    if (!this.ports) {
      this.ports = new Map();
      for (const inst of this.instances) {
        let list = this.ports.get(inst.servicePort);
        if (!list) this.ports.set(inst.servicePort, (list = []));
        list.push(inst);
      }
    }
    return this.ports.get(port) ?? EMPTY;
  }

  /** The instances serialised, to compare whole hosts after a full derivation. */
  get instancesJson(): string {
    this.json ??= JSON.stringify(this.instances);
    return this.json;
  }

  /** The instances of one workload (none: empty). */
  of(workload: string): readonly ServiceInstance[] {
    return this.byWorkload.get(workload) ?? EMPTY;
  }

  /** Sets the instances of one workload (empty removes it). */
  set(workload: string, instances: readonly ServiceInstance[]): void {
    if (instances.length === 0) this.byWorkload.delete(workload);
    else this.byWorkload.set(workload, instances);
    this.sorted = undefined;
    this.ports = undefined;
    this.json = undefined;
  }
}

/** What the registry keeps per ServiceEntry. */
interface EntryState {
  readonly hosts: Map<string, HostEntry>;
  /** Endpoint address → the workloads there (to see when a workload shares its address). */
  readonly addresses: Map<string, Set<string>>;
  /** Workload → its SPIFFE ID, for the workloads that have instances and an identity. */
  readonly identities: Map<string, string>;
  /** SPIFFE ID → how many workloads in `identities` have it. */
  readonly identityCounts: Map<string, number>;
}

/** What the registry shows for one hostname: the owning entry's HostEntry. */
interface HostState {
  readonly entry: HostEntry;
  /** The ServiceEntry (`namespace/name`) the host belongs to. */
  readonly owner: string;
  /** The ServiceEntries that declare this host but lost to the owner, for the warning. */
  readonly shadowed: string;
  /** Serialised service, to tell what changed; kept current when a patch changes the service. */
  serviceJson: string;
}

/** Hostnames a change touched, collected for one report. */
interface ChangeSet {
  readonly services: Set<string>;
  readonly endpoints: Set<string>;
}

const newChangeSet = (): ChangeSet => ({ services: new Set(), endpoints: new Set() });

/** `namespace/name` of a config object. */
function nameOf(obj: ConfigObject): string {
  return `${obj.metadata.namespace}/${obj.metadata.name}`;
}

function addToIndex(index: Map<string, Set<string>>, key: string, value: string): void {
  let set = index.get(key);
  if (!set) index.set(key, (set = new Set()));
  set.add(value);
}

function removeFromIndex(index: Map<string, Set<string>>, key: string, value: string): void {
  const set = index.get(key);
  set?.delete(value);
  if (set?.size === 0) index.delete(key);
}

/** Adjusts how many workloads of an entry have `id`. */
function countIdentity(state: EntryState, id: string, delta: 1 | -1): void {
  const n = (state.identityCounts.get(id) ?? 0) + delta;
  if (n <= 0) state.identityCounts.delete(id);
  else state.identityCounts.set(id, n);
}

/** Wraps a derivation into the per-entry state. */
function toEntryState(derived: DerivedServiceEntry): EntryState {
  const state: EntryState = {
    hosts: new Map(),
    addresses: new Map(),
    identities: new Map(),
    identityCounts: new Map(),
  };
  for (const [hostname, { service, instances }] of derived) {
    state.hosts.set(hostname, new HostEntry(service, instances));
    for (const inst of instances) {
      addToIndex(state.addresses, inst.endpoint.address, inst.workload);
      if (inst.serviceAccount !== undefined && !state.identities.has(inst.workload)) {
        state.identities.set(inst.workload, inst.serviceAccount);
        countIdentity(state, inst.serviceAccount, 1);
      }
    }
  }
  return state;
}

/**
 * The built-in registry (ServiceDiscovery over configuration and registered hosts).
 *
 * Feed it configuration with {@link applyConfig} (a full list: the store's `list()` at start) and
 * {@link onConfigEvents} (the store's watch events); hosts register through {@link workloads}
 * (the registration service). Only ServiceEntry, WorkloadEntry and WorkloadGroup matter; other
 * kinds are ignored. Changes are incremental: a config change derives again only the
 * ServiceEntries it can affect, and a registered host's change (registration, health, removal)
 * only swaps that host's instances in the entries that select it, so a fleet registering or
 * flipping health costs about the same per event at any size. Each change is reported once
 * through `onChange` with the hostnames whose services or instances actually changed.
 *
 * A hostname declared by several ServiceEntries belongs to the oldest (creationTimestamp, then
 * namespace/name); the others are ignored for it, with a warning.
 */
export class MeshRegistry implements ServiceDiscovery {
  /** The registered hosts; the registration service registers into it. */
  readonly workloads: WorkloadRegistry;
  readonly trustDomain: string;
  private readonly log: Logger;
  /** Config by `namespace/name`, with per-namespace indexes. */
  private readonly serviceEntries = new Map<string, ConfigObject<'ServiceEntry'>>();
  private readonly serviceEntriesByNs = new Map<string, Set<string>>();
  private readonly workloadEntries = new Map<string, ConfigObject<'WorkloadEntry'>>();
  private readonly workloadEntriesByNs = new Map<string, Set<string>>();
  private readonly groups = new Map<string, ConfigObject<'WorkloadGroup'>>();
  /** What each ServiceEntry contributes, by its `namespace/name`. */
  private readonly entries = new Map<string, EntryState>();
  /** hostname → ServiceEntries declaring it. */
  private readonly hostOwners = new Map<string, Set<string>>();
  private readonly hosts = new Map<string, HostState>();
  /** node → hostname → that node's instances (registered hosts). */
  private readonly byNode = new Map<string, Map<string, ServiceInstance[]>>();
  /** address → hostname → instances at that address (WorkloadEntries and inline endpoints). */
  private readonly byAddress = new Map<string, Map<string, ServiceInstance[]>>();
  /**
   * Address → how many WorkloadEntries and registered hosts (any namespace) are there. A patch
   * cannot tell which of several workloads at one address an entry keeps, so it derives in full.
   */
  private readonly workloadAddresses = new Map<string, number>();
  private servicesCache: readonly Service[] | undefined;
  private readonly listeners = new Set<(change: RegistryChange) => void>();
  private readonly unsubscribeWorkloads: () => void;

  constructor(opts: MeshRegistryOptions) {
    this.log = opts.logger.child({ component: 'pilot', subsystem: 'registry' });
    this.trustDomain = opts.trustDomain ?? DEFAULT_TRUST_DOMAIN;
    this.workloads = new WorkloadRegistry({
      logger: opts.logger.child({ component: 'pilot' }),
      trustDomain: this.trustDomain,
      ...(opts.clock ? { clock: opts.clock } : {}),
      ...(opts.disconnectGraceMs !== undefined
        ? { disconnectGraceMs: opts.disconnectGraceMs }
        : {}),
      groups: (ns, name) => this.groups.get(`${ns}/${name}`)?.spec,
    });
    this.unsubscribeWorkloads = this.workloads.onEvent(ev => this.onWorkloadEvent(ev));
  }

  /**
   * Replaces all configuration with `objects` (e.g. the store's `list()`), then reports what
   * changed.
   */
  applyConfig(objects: readonly ConfigObject[]): void {
    const affected = new Set(this.serviceEntries.keys());
    this.serviceEntries.clear();
    this.serviceEntriesByNs.clear();
    this.workloadEntries.clear();
    this.workloadEntriesByNs.clear();
    this.groups.clear();
    this.workloadAddresses.clear();
    for (const w of this.workloads.list()) this.countAddress(w.address, 1);
    for (const obj of objects) this.applyObject(obj, false, undefined);
    for (const key of this.serviceEntries.keys()) affected.add(key);
    const change = newChangeSet();
    this.recompute(affected, change);
    this.report(change);
  }

  /** Applies a batch of store events (one watch callback), then reports what changed, once. */
  onConfigEvents(events: readonly ConfigEvent[]): void {
    const affected = new Set<string>();
    for (const ev of events) this.applyObject(ev.object, ev.type === 'deleted', affected);
    const change = newChangeSet();
    this.recompute(affected, change);
    this.report(change);
  }

  services(): readonly Service[] {
    this.servicesCache ??= [...this.hosts.values()]
      .map(h => h.entry.service)
      .sort((a, b) => (a.hostname < b.hostname ? -1 : a.hostname > b.hostname ? 1 : 0));
    return this.servicesCache;
  }

  getService(hostname: string): Service | undefined {
    return this.hosts.get(hostname)?.entry.service;
  }

  instances(hostname: string, port: number): readonly ServiceInstance[] {
    return this.hosts.get(hostname)?.entry.instancesOn(port) ?? EMPTY;
  }

  /**
   * The proxy's inbound instances: those of the registered host that is `proxy.node`, and those
   * of WorkloadEntries and inline endpoints at one of `proxy.ips` (how Istio 1.0 found a VM's
   * services, §2.9). A registered host is matched by node only: an IP proves nothing.
   */
  proxyInstances(proxy: ProxyIdentity): readonly ServiceInstance[] {
    const out: ServiceInstance[] = [];
    for (const list of this.byNode.get(proxy.node)?.values() ?? []) out.push(...list);
    for (const ip of new Set(proxy.ips))
      for (const list of this.byAddress.get(ip)?.values() ?? []) out.push(...list);
    return out.sort(
      (a, b) =>
        (a.hostname < b.hostname ? -1 : a.hostname > b.hostname ? 1 : 0) || compareInstances(a, b),
    );
  }

  onChange(listener: (change: RegistryChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Stops grace timers and listeners. Idempotent. */
  async close(): Promise<void> {
    this.unsubscribeWorkloads();
    this.listeners.clear();
    await this.workloads.close();
  }

  /** Stores (or deletes) one object; adds the ServiceEntries it may affect to `affected`. */
  private applyObject(obj: ConfigObject, deleted: boolean, affected: Set<string> | undefined) {
    const key = nameOf(obj);
    const ns = obj.metadata.namespace;
    switch (obj.kind) {
      case 'ServiceEntry':
        if (deleted) {
          this.serviceEntries.delete(key);
          removeFromIndex(this.serviceEntriesByNs, ns, key);
        } else {
          this.serviceEntries.set(key, obj as ConfigObject<'ServiceEntry'>);
          addToIndex(this.serviceEntriesByNs, ns, key);
        }
        affected?.add(key);
        break;
      case 'WorkloadEntry': {
        const old = this.workloadEntries.get(key);
        const now = obj as ConfigObject<'WorkloadEntry'>;
        if (old?.spec.address) this.countAddress(old.spec.address, -1);
        if (!deleted && now.spec.address) this.countAddress(now.spec.address, 1);
        if (deleted) {
          this.workloadEntries.delete(key);
          removeFromIndex(this.workloadEntriesByNs, ns, key);
        } else {
          this.workloadEntries.set(key, now);
          addToIndex(this.workloadEntriesByNs, ns, key);
        }
        if (affected)
          this.addSelecting(ns, [old?.spec.labels ?? {}, now.spec.labels ?? {}], affected);
        break;
      }
      case 'WorkloadGroup':
        // Groups template hosts when they register; a change reaches a host at its next registration.
        if (deleted) this.groups.delete(key);
        else this.groups.set(key, obj as ConfigObject<'WorkloadGroup'>);
        break;
      default:
        break;
    }
  }

  /** Adds the ServiceEntries of `ns` whose workloadSelector matches any of `labelSets`. */
  private addSelecting(
    ns: string,
    labelSets: readonly Readonly<Record<string, string>>[],
    affected: Set<string>,
  ): void {
    for (const key of this.serviceEntriesByNs.get(ns) ?? []) {
      const se = this.serviceEntries.get(key);
      const selector = se?.spec.workloadSelector;
      if (se?.spec.location !== 'MESH_INTERNAL' || !selector) continue;
      if (labelSets.some(l => selects(selector.labels, l))) affected.add(key);
    }
  }

  /**
   * A registered host changed: each ServiceEntry that selects it, before or after, gets that
   * host's instances swapped ({@link patch}), or a full derivation where a patch cannot decide.
   */
  private onWorkloadEvent(ev: WorkloadEvent): void {
    // A dropped stream changes nothing others see until the grace period ends.
    if (ev.type === 'disconnected') return;
    const removed = ev.type === 'deregistered' || ev.type === 'expired';
    const before = removed ? ev.workload : ev.previous;
    const after = removed ? undefined : ev.workload;
    if (before) this.countAddress(before.address, -1);
    if (after) this.countAddress(after.address, 1);
    const affected = new Set<string>();
    if (before) this.addSelecting(before.namespace, [before.labels], affected);
    if (after) this.addSelecting(after.namespace, [after.labels], affected);
    const change = newChangeSet();
    const full = new Set<string>();
    const beforeSel = before && workloadFromRegistration(before);
    const afterSel = after && workloadFromRegistration(after);
    for (const key of affected) if (!this.patch(key, beforeSel, afterSel, change)) full.add(key);
    this.recompute(full, change);
    this.report(change);
  }

  /**
   * Replaces the instances of workload `before` with those of `after` (when the entry selects it)
   * in ServiceEntry `key`, in time independent of the entry's size.
   * @returns false when the entry needs a full derivation instead: the workload shares an address
   *   with another endpoint (which one wins depends on all of them), or the entry resolves by DNS
   *   (whose hosts stand in for missing endpoints)
   */
  private patch(
    key: string,
    before: SelectableWorkload | undefined,
    after: SelectableWorkload | undefined,
    change: ChangeSet,
  ): boolean {
    const se = this.serviceEntries.get(key);
    const state = this.entries.get(key);
    if (!se || !state) return false;
    const resolution = se.spec.resolution ?? 'NONE';
    if (resolution === 'DNS' || resolution === 'DNS_ROUND_ROBIN') return false;
    const names = new Set<string>();
    if (before) names.add(before.name);
    if (after) names.add(after.name);
    const add =
      after &&
      after.namespace === se.metadata.namespace &&
      selects(se.spec.workloadSelector?.labels, after.labels)
        ? endpointOf(after)
        : undefined;
    for (const address of [before?.address, add?.address]) {
      if (address === undefined) continue;
      // Another workload there (now, or shadowed until now): which one wins needs them all.
      if ((this.workloadAddresses.get(address) ?? 0) > (address === add?.address ? 1 : 0))
        return false;
      for (const w of state.addresses.get(address) ?? []) if (!names.has(w)) return false;
    }

    let hasInstances = false;
    for (const [hostname, entry] of state.hosts) {
      const old = [...names].flatMap(n => entry.of(n));
      const added = add
        ? instancesOf(hostname, entry.service.ports, add).sort(compareInstances)
        : [];
      hasInstances ||= added.length > 0;
      if (JSON.stringify(old) === JSON.stringify(added)) continue;
      for (const n of names) entry.set(n, EMPTY);
      if (add) entry.set(add.workload, added);
      const host = this.hosts.get(hostname);
      // A host another ServiceEntry owns: nothing anyone sees changes.
      if (host?.entry !== entry) continue;
      this.unindex(hostname, old);
      this.index(hostname, added);
      change.endpoints.add(hostname);
    }
    // Identities: the service's serviceAccounts change only when the set of IDs does.
    const touchedIds = new Map<string, boolean>();
    for (const id of [before && state.identities.get(before.name), add?.spiffeId])
      if (id !== undefined) touchedIds.set(id, state.identityCounts.has(id));
    for (const n of names) {
      const id = state.identities.get(n);
      if (id === undefined) continue;
      state.identities.delete(n);
      countIdentity(state, id, -1);
    }
    for (const address of [before?.address, add?.address])
      if (address !== undefined)
        for (const n of names) removeFromIndex(state.addresses, address, n);
    if (add && hasInstances) {
      addToIndex(state.addresses, add.address, add.workload);
      if (add.spiffeId !== undefined) {
        state.identities.set(add.workload, add.spiffeId);
        countIdentity(state, add.spiffeId, 1);
      }
    }
    const idsChanged = [...touchedIds].some(([id, had]) => state.identityCounts.has(id) !== had);
    if (idsChanged) {
      for (const [hostname, entry] of state.hosts) {
        entry.service = {
          ...entry.service,
          serviceAccounts: serviceAccountsOf(se.spec.subjectAltNames, state.identityCounts.keys()),
        };
        const host = this.hosts.get(hostname);
        if (host?.entry !== entry) continue;
        host.serviceJson = JSON.stringify(entry.service);
        change.services.add(hostname);
      }
    }
    return true;
  }

  private countAddress(address: string, delta: 1 | -1): void {
    const n = (this.workloadAddresses.get(address) ?? 0) + delta;
    if (n <= 0) this.workloadAddresses.delete(address);
    else this.workloadAddresses.set(address, n);
  }

  /** The workloads of `ns` a selector may pick: registered hosts, then WorkloadEntries. */
  private selectableIn(ns: string): SelectableWorkload[] {
    const out = this.workloads.list(ns).map(workloadFromRegistration);
    const keys = [...(this.workloadEntriesByNs.get(ns) ?? [])].sort();
    for (const key of keys) {
      const we = this.workloadEntries.get(key);
      if (we) out.push(workloadFromEntry(we, this.trustDomain));
    }
    return out;
  }

  /** Derives `affected` ServiceEntries again; adds the hosts whose model changed to `change`. */
  private recompute(affected: ReadonlySet<string>, change: ChangeSet): void {
    if (affected.size === 0) return;
    const touched = new Set<string>();
    const selectable = new Map<string, SelectableWorkload[]>();
    for (const key of affected) {
      for (const host of this.entries.get(key)?.hosts.keys() ?? []) {
        touched.add(host);
        removeFromIndex(this.hostOwners, host, key);
      }
      const se = this.serviceEntries.get(key);
      if (!se) {
        this.entries.delete(key);
        continue;
      }
      const ns = se.metadata.namespace;
      let workloads: SelectableWorkload[] = [];
      if (se.spec.location === 'MESH_INTERNAL' && se.spec.workloadSelector) {
        workloads = selectable.get(ns) ?? this.selectableIn(ns);
        selectable.set(ns, workloads);
      } else if (se.spec.workloadSelector) {
        this.log.warn(
          { serviceEntry: key },
          'Ignoring workloadSelector of a MESH_EXTERNAL ServiceEntry',
        );
      }
      const state = toEntryState(deriveServiceEntry(se, workloads, this.trustDomain));
      this.entries.set(key, state);
      for (const host of state.hosts.keys()) {
        touched.add(host);
        addToIndex(this.hostOwners, host, key);
      }
    }

    for (const host of [...touched].sort()) {
      const before = this.hosts.get(host);
      const after = this.buildHost(host, before);
      if (before) this.unindex(host, before.entry.instances);
      if (after) {
        this.hosts.set(host, after);
        this.index(host, after.entry.instances);
      } else {
        this.hosts.delete(host);
      }
      if (before?.serviceJson !== after?.serviceJson) change.services.add(host);
      if ((before?.entry.instancesJson ?? '[]') !== (after?.entry.instancesJson ?? '[]'))
        change.endpoints.add(host);
    }
  }

  /** Tells the listeners about `change`, if anything changed. */
  private report(change: ChangeSet): void {
    if (change.services.size > 0) this.servicesCache = undefined;
    if (change.services.size === 0 && change.endpoints.size === 0) return;
    const services = [...change.services].sort();
    const endpoints = [...change.endpoints].sort();
    this.log.debug({ services: services.length, endpoints: endpoints.length }, 'Registry changed');
    for (const l of [...this.listeners]) {
      try {
        l({ services, endpoints });
      } catch (err) {
        this.log.error({ err }, 'Registry listener failed');
      }
    }
  }

  /** The state of `host` from its owning ServiceEntry, or undefined when none declares it. */
  private buildHost(host: string, before: HostState | undefined): HostState | undefined {
    const owners = [...(this.hostOwners.get(host) ?? [])]
      .map(key => this.serviceEntries.get(key))
      .filter((se): se is ConfigObject<'ServiceEntry'> => se !== undefined)
      .sort((a, b) => {
        const ta = a.metadata.creationTimestamp ?? '';
        const tb = b.metadata.creationTimestamp ?? '';
        if (ta !== tb) return ta < tb ? -1 : 1;
        const na = nameOf(a);
        const nb = nameOf(b);
        return na < nb ? -1 : na > nb ? 1 : 0;
      });
    const owner = owners[0];
    const entry = owner && this.entries.get(nameOf(owner))?.hosts.get(host);
    if (!owner || !entry) return undefined;
    const shadowed = owners.slice(1).map(nameOf).join(',');
    if (shadowed && shadowed !== before?.shadowed)
      this.log.warn(
        { host, serviceEntry: nameOf(owner), ignored: shadowed },
        'Host declared by several ServiceEntries; the oldest wins',
      );
    return { entry, owner: nameOf(owner), shadowed, serviceJson: JSON.stringify(entry.service) };
  }

  private index(host: string, instances: readonly ServiceInstance[]): void {
    for (const inst of instances) {
      const [index, key] =
        inst.node !== undefined
          ? [this.byNode, inst.node]
          : [this.byAddress, inst.endpoint.address];
      let hosts = index.get(key);
      if (!hosts) index.set(key, (hosts = new Map<string, ServiceInstance[]>()));
      let list = hosts.get(host);
      if (!list) hosts.set(host, (list = []));
      list.push(inst);
    }
  }

  private unindex(host: string, instances: readonly ServiceInstance[]): void {
    for (const inst of instances) {
      const [index, key] =
        inst.node !== undefined
          ? [this.byNode, inst.node]
          : [this.byAddress, inst.endpoint.address];
      const hosts = index.get(key);
      hosts?.delete(host);
      if (hosts?.size === 0) index.delete(key);
    }
  }
}

/**
 * Several registries as one, the built-in {@link MeshRegistry} first (Istio's `aggregate`
 * controller). A registry plugs in by implementing {@link ServiceDiscovery} (types.ts):
 *
 * - `services()` / `getService(hostname)`: its services, hostnames fully qualified
 *   (`orders.service.consul`); when two registries have the same hostname, the earlier one's
 *   Service wins.
 * - `instances(hostname, port)`: its endpoints of that service port, healthy or not (set
 *   `healthy` from the source's health checks); instances of a hostname are collected from every
 *   registry that has some.
 * - `proxyInstances(proxy)`: instances served on that proxy's host (match by node or IP).
 * - `onChange(listener)`: call it with the hostnames that changed after each change (a polling
 *   registry calls it after a poll that found differences). Listeners must not throw.
 *
 * A Consul registry would map catalog services to `<svc>.service.consul`, port protocol from the
 * `protocol` node meta, `key|value` tags to labels (Istio 0.2 `platform/consul`); Eureka would
 * take `istio.protocol` from instance metadata.
 */
export class AggregateRegistry implements ServiceDiscovery {
  private readonly members: { registry: ServiceDiscovery; unsubscribe: () => void }[] = [];
  private readonly listeners = new Set<(change: RegistryChange) => void>();
  private servicesCache: readonly Service[] | undefined;

  /** `logger` receives listener failures. */
  constructor(
    registries: readonly ServiceDiscovery[] = [],
    private readonly logger?: Logger,
  ) {
    for (const r of registries) this.add(r);
  }

  /** The member registries, in precedence order. */
  get registries(): readonly ServiceDiscovery[] {
    return this.members.map(m => m.registry);
  }

  /**
   * Adds a registry after the others and reports all its hostnames as changed. Returns a function
   * that removes it again (reporting them once more).
   */
  add(registry: ServiceDiscovery): () => void {
    const member = {
      registry,
      unsubscribe: registry.onChange(change => {
        if (change.services.length > 0) this.servicesCache = undefined;
        this.emit(change);
      }),
    };
    this.members.push(member);
    this.reportAll(registry);
    return () => {
      const i = this.members.indexOf(member);
      if (i < 0) return;
      this.members.splice(i, 1);
      member.unsubscribe();
      this.reportAll(registry);
    };
  }

  services(): readonly Service[] {
    if (!this.servicesCache) {
      const byHost = new Map<string, Service>();
      for (const { registry } of this.members)
        for (const s of registry.services()) if (!byHost.has(s.hostname)) byHost.set(s.hostname, s);
      this.servicesCache = [...byHost.values()].sort((a, b) =>
        a.hostname < b.hostname ? -1 : a.hostname > b.hostname ? 1 : 0,
      );
    }
    return this.servicesCache;
  }

  getService(hostname: string): Service | undefined {
    for (const { registry } of this.members) {
      const s = registry.getService(hostname);
      if (s) return s;
    }
    return undefined;
  }

  instances(hostname: string, port: number): readonly ServiceInstance[] {
    const lists = this.members.map(m => m.registry.instances(hostname, port));
    const nonEmpty = lists.filter(l => l.length > 0);
    return nonEmpty.length <= 1 ? (nonEmpty[0] ?? EMPTY) : nonEmpty.flat();
  }

  proxyInstances(proxy: ProxyIdentity): readonly ServiceInstance[] {
    return this.members.flatMap(m => m.registry.proxyInstances(proxy));
  }

  onChange(listener: (change: RegistryChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private reportAll(registry: ServiceDiscovery): void {
    const hosts = registry.services().map(s => s.hostname);
    this.servicesCache = undefined;
    if (hosts.length > 0) this.emit({ services: hosts, endpoints: hosts });
  }

  private emit(change: RegistryChange): void {
    for (const l of [...this.listeners]) {
      try {
        l(change);
      } catch (err) {
        this.logger?.error({ err }, 'Registry listener failed');
      }
    }
  }
}
