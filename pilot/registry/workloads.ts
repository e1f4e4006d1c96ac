/**
 * Hosts that registered themselves (DESIGN §3.5: the node agent's registration stream). A host's
 * identity is the node its client certificate proves, never its IP: a node may register only the
 * namespace and service account of its certificate's SPIFFE ID, and a second registration of the
 * same node replaces the first. Liveness follows the stream: while connected the workload is as
 * healthy as its last report; when the stream drops it stays (health unchanged) for a grace
 * period, so a pilot restart or a network blip does not pull its endpoints from every proxy, and
 * is removed after it. A clean deregistration removes it at once.
 *
 * A registration may name a WorkloadGroup (Istio's VM auto-registration): the group's template
 * fills in what the host leaves out (labels, ports, service account, locality, weight, network);
 * the host's own values win. The group is read once, when the host registers: a change to the
 * group reaches a host when it next registers (its agent reconnects).
 */
import * as net from 'node:net';
import { type Clock, systemClock } from '../../common/clock';
import { ClosedError } from '../../common/errors';
import { isAbortError } from '../../common/lifecycle';
import type { Logger } from '../../common/logging';
import { formatSpiffeId, isValidName, parseSpiffeId } from '../../common/pki';
import type { WorkloadGroupSpec } from '../config/types';
import { registrationDenied, registrationInvalid } from '../errors';

/** How long a workload whose stream dropped stays registered. */
export const DEFAULT_DISCONNECT_GRACE_MS = 30_000;
/** Default trust domain of SPIFFE IDs (DESIGN §3.5). */
export const DEFAULT_TRUST_DOMAIN = 'cluster.local';
/** Label that turns off mTLS toward a workload (Istio's `security.istio.io/tlsMode`). */
export const TLS_MODE_LABEL = 'security.istio.io/tlsMode';

/** Limits on what one registration may carry (a registration is small; these stop abuse). */
export const MAX_LABELS = 64;
export const MAX_PORTS = 64;
export const MAX_TEXT_BYTES = 1024;
const MAX_HOST_FACT_BYTES = 256;
const MAX_CPUS = 1 << 20;

/** One port the workload listens on. */
export interface WorkloadPortSpec {
  readonly name: string;
  readonly port: number;
}

/** Facts about the host, for `sail status` and debugging. */
export interface HostFacts {
  readonly os: string;
  readonly kernel: string;
  readonly cpus: number;
  readonly memoryBytes: number;
  readonly hostname: string;
}

/** A health report from the host's agent. */
export interface HealthState {
  readonly healthy: boolean;
  /** Why (the failing probe's error), at most MAX_TEXT_BYTES. */
  readonly message: string;
}

/** What a host sends to register (the proto's WorkloadRegistration, camelCase). */
export interface WorkloadRegistration {
  /** Must equal the certificate's subject common name. */
  readonly node: string;
  /** Must equal the namespace of the certificate's SPIFFE ID. */
  readonly namespace: string;
  /** Empty or absent: the group template's service account. Must equal the certificate's. */
  readonly serviceAccount?: string;
  /** IPv4 or IPv6 address other proxies reach the workload at. */
  readonly address: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly ports?: readonly WorkloadPortSpec[];
  readonly host?: HostFacts;
  /** `NAMESPACE/NAME` of a WorkloadGroup in the workload's namespace. */
  readonly group?: string;
  /** Health at registration; absent means healthy. */
  readonly health?: HealthState;
}

/** Who the caller is, from its TLS client certificate. */
export interface AuthenticatedPeer {
  /** The certificate's subject common name. */
  readonly node: string;
  /** The certificate's SPIFFE ID URI SAN. */
  readonly spiffeId: string;
}

/** A registered workload, as the registry and `sail status` see it. Immutable snapshot. */
export interface RegisteredWorkload {
  /** `NAMESPACE/NODE`: ServiceInstance.workload of its instances. */
  readonly name: string;
  readonly node: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  /** spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT. */
  readonly spiffeId: string;
  readonly address: string;
  /** The group template's labels with the host's own over them. */
  readonly labels: Readonly<Record<string, string>>;
  /** The host's ports, then any the group template adds, by name. */
  readonly ports: readonly WorkloadPortSpec[];
  readonly host?: HostFacts;
  /** `NAMESPACE/NAME` of the WorkloadGroup that templated it. */
  readonly group?: string;
  readonly locality?: string;
  readonly network?: string;
  /** Load-balancing weight (group template), default 1. */
  readonly weight: number;
  readonly healthy: boolean;
  readonly healthMessage: string;
  /** False during the grace period after its stream dropped. */
  readonly connected: boolean;
  /** Registration time, ms since the epoch (the registry's clock). */
  readonly registeredAtMs: number;
  /** When its stream dropped; set only while disconnected. */
  readonly disconnectedAtMs?: number;
}

/**
 * What happened to a workload. `registered`: new node; `replaced`: a new registration of a node
 * already known (another stream, or the same stream re-registering); `healthy`/`unhealthy`: a
 * health report that changed its health; `disconnected`: its stream dropped (it stays for the
 * grace period); `deregistered`: clean removal; `expired`: removed after the grace period.
 */
export type WorkloadEventType =
  'registered' | 'replaced' | 'healthy' | 'unhealthy' | 'disconnected' | 'deregistered' | 'expired';

/** One change, as listeners see it. */
export interface WorkloadEvent {
  readonly type: WorkloadEventType;
  /** The workload after the change; for `deregistered` and `expired`, the one removed. */
  readonly workload: RegisteredWorkload;
  /** The workload before the change, when there was one (`replaced`, health, `disconnected`). */
  readonly previous?: RegisteredWorkload;
}

/** Looks up a WorkloadGroup's spec. */
export type GroupLookup = (namespace: string, name: string) => WorkloadGroupSpec | undefined;

/** Options of {@link WorkloadRegistry}. */
export interface WorkloadRegistryOptions {
  readonly logger: Logger;
  /** Trust domain the certificates' SPIFFE IDs must be in. Default DEFAULT_TRUST_DOMAIN. */
  readonly trustDomain?: string;
  /** Grace period after a stream drops, ms. Default DEFAULT_DISCONNECT_GRACE_MS; 0 removes at once. */
  readonly disconnectGraceMs?: number;
  /** Default systemClock; a FakeClock in tests. */
  readonly clock?: Clock;
  /** Resolves the WorkloadGroup a registration names. Default: no groups exist. */
  readonly groups?: GroupLookup;
}

/** Bookkeeping for one node. */
interface Entry {
  workload: RegisteredWorkload;
  /** The session that holds this node's registration; older sessions are stale. */
  session: WorkloadSession;
  /** Aborts the pending grace-period removal, while disconnected. */
  grace?: AbortController;
}

/**
 * The registered workloads. Not a Lifecycle of its own: it owns no sockets, only grace timers,
 * which close() cancels.
 */
export class WorkloadRegistry {
  readonly trustDomain: string;
  readonly disconnectGraceMs: number;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly groups: GroupLookup;
  /** By node name. */
  private readonly entries = new Map<string, Entry>();
  private readonly listeners = new Set<(event: WorkloadEvent) => void>();
  private closed = false;

  constructor(opts: WorkloadRegistryOptions) {
    this.log = opts.logger.child({ subsystem: 'workloads' });
    this.trustDomain = opts.trustDomain ?? DEFAULT_TRUST_DOMAIN;
    this.disconnectGraceMs = opts.disconnectGraceMs ?? DEFAULT_DISCONNECT_GRACE_MS;
    if (!Number.isFinite(this.disconnectGraceMs) || this.disconnectGraceMs < 0)
      throw new RangeError(`disconnectGraceMs ${this.disconnectGraceMs} is not a duration >= 0`);
    this.clock = opts.clock ?? systemClock;
    this.groups = opts.groups ?? (() => undefined);
  }

  /** Number of registered workloads (connected or within their grace period). */
  get size(): number {
    return this.entries.size;
  }

  /** The workload of `node`, if registered. */
  get(node: string): RegisteredWorkload | undefined {
    return this.entries.get(node)?.workload;
  }

  /** Registered workloads, of one namespace when given, sorted by name. */
  list(namespace?: string): RegisteredWorkload[] {
    const out: RegisteredWorkload[] = [];
    for (const e of this.entries.values())
      if (namespace === undefined || e.workload.namespace === namespace) out.push(e.workload);
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** Calls `listener` after every change. Returns an unsubscribe function. */
  onEvent(listener: (event: WorkloadEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Registers the workload of `peer`'s node, replacing any earlier registration of that node
   * (whose session goes stale and is told through its `onReplaced`).
   * @throws InvalidInputError (PILOT_REGISTRATION_INVALID) naming every malformed field
   * @throws NotAuthorizedError (PILOT_REGISTRATION_DENIED) when the certificate does not prove the
   *   node, namespace or service account
   * @throws ClosedError after close()
   */
  register(registration: WorkloadRegistration, peer: AuthenticatedPeer): WorkloadSession {
    const session = new WorkloadSession(this, peer);
    this.store(session, registration);
    return session;
  }

  /** Cancels every grace timer; later registrations throw ClosedError. Idempotent. */
  close(): Promise<void> {
    this.closed = true;
    for (const e of this.entries.values()) e.grace?.abort();
    this.listeners.clear();
    return Promise.resolve();
  }

  /** @internal Validates, authorizes and stores a registration for `session`. */
  store(session: WorkloadSession, registration: WorkloadRegistration): RegisteredWorkload {
    if (this.closed) throw new ClosedError('workload registry');
    validateRegistration(registration);
    const workload = this.resolve(registration, session.peer);
    const prev = this.entries.get(workload.node);
    prev?.grace?.abort();
    this.entries.set(workload.node, { workload, session });
    const replacedSession = prev && prev.session !== session ? prev.session : undefined;
    this.log.info(
      {
        node: workload.node,
        spiffeId: workload.spiffeId,
        address: workload.address,
        group: workload.group,
        replaced: prev !== undefined,
      },
      'Registered workload',
    );
    this.emit({
      type: prev ? 'replaced' : 'registered',
      workload,
      ...(prev ? { previous: prev.workload } : {}),
    });
    replacedSession?.notifyReplaced();
    return workload;
  }

  /** @internal Applies a health report of `session`; undefined when the session is stale. */
  reportHealth(session: WorkloadSession, health: HealthState): RegisteredWorkload | undefined {
    const e = this.current(session);
    if (!e) return undefined;
    if (Buffer.byteLength(health.message) > MAX_TEXT_BYTES)
      throw registrationInvalid(
        `health.message of node ${e.workload.node} is ${Buffer.byteLength(health.message)} bytes; the limit is ${MAX_TEXT_BYTES}`,
      );
    const previous = e.workload;
    if (previous.healthy === health.healthy && previous.healthMessage === health.message)
      return previous;
    e.workload = { ...previous, healthy: health.healthy, healthMessage: health.message };
    if (previous.healthy !== health.healthy) {
      this.log.info(
        { node: previous.node, healthy: health.healthy, reason: health.message },
        'Workload health changed',
      );
      this.emit({
        type: health.healthy ? 'healthy' : 'unhealthy',
        workload: e.workload,
        previous,
      });
    }
    return e.workload;
  }

  /** @internal Removes the workload of `session` now. */
  deregister(session: WorkloadSession, reason: string): RegisteredWorkload | undefined {
    const e = this.current(session);
    if (!e) return undefined;
    e.grace?.abort();
    this.entries.delete(e.workload.node);
    this.log.info({ node: e.workload.node, reason }, 'Deregistered workload');
    this.emit({ type: 'deregistered', workload: e.workload });
    return e.workload;
  }

  /** @internal The stream of `session` dropped: keep the workload for the grace period. */
  disconnect(session: WorkloadSession, reason: string): void {
    const e = this.current(session);
    if (!e?.workload.connected) return;
    const previous = e.workload;
    if (this.closed || this.disconnectGraceMs === 0) {
      this.entries.delete(previous.node);
      this.log.info({ node: previous.node, reason }, 'Removed disconnected workload');
      this.emit({ type: 'expired', workload: previous });
      return;
    }
    e.workload = { ...previous, connected: false, disconnectedAtMs: this.clock.now() };
    const grace = new AbortController();
    e.grace = grace;
    this.log.info(
      { node: previous.node, reason, graceMs: this.disconnectGraceMs },
      'Workload disconnected; keeping it for the grace period',
    );
    this.emit({ type: 'disconnected', workload: e.workload, previous });
    this.expireAfterGrace(session, grace.signal);
  }

  /**
   * Takes back the workloads a previous run of pilot held when it stopped, so that a pilot
   * restart does not pull their endpoints from every proxy. Each is kept as if its stream had
   * just dropped: disconnected, with its last reported health, for a full grace period from now
   * (while pilot was down its host could not reconnect, and proxies kept its endpoints anyway).
   * A host that registers again within it takes its workload over; one that does not expires.
   * Nodes already registered are skipped, and nothing is restored with a grace period of 0.
   *
   * Emits no events: call it before services are derived from the workloads
   * (MeshRegistry.applyConfig).
   * @returns the number of workloads restored
   * @throws InvalidInputError (PILOT_REGISTRATION_INVALID) for a workload that is not valid
   *   (nothing is restored then)
   * @throws ClosedError after close()
   */
  restore(workloads: readonly RegisteredWorkload[]): number {
    if (this.closed) throw new ClosedError('workload registry');
    for (const w of workloads) {
      validateRegistration(w);
      const spiffeId = formatSpiffeId({
        trustDomain: this.trustDomain,
        namespace: w.namespace,
        serviceAccount: w.serviceAccount,
      });
      if (w.spiffeId !== spiffeId || w.name !== `${w.namespace}/${w.node}`)
        throw registrationInvalid(
          `restored workload of node ${w.node} is inconsistent: name ${JSON.stringify(w.name)} and spiffeId ${JSON.stringify(w.spiffeId)} should be ${w.namespace}/${w.node} and ${spiffeId}`,
        );
    }
    if (this.disconnectGraceMs === 0) return 0;
    let restored = 0;
    for (const w of workloads) {
      if (this.entries.has(w.node)) continue;
      const session = new WorkloadSession(this, { node: w.node, spiffeId: w.spiffeId });
      const grace = new AbortController();
      const workload: RegisteredWorkload = {
        ...w,
        connected: false,
        disconnectedAtMs: this.clock.now(),
      };
      this.entries.set(w.node, { workload, session, grace });
      this.expireAfterGrace(session, grace.signal);
      restored++;
    }
    if (restored > 0)
      this.log.info(
        { workloads: restored, graceMs: this.disconnectGraceMs },
        'Restored the workloads registered before pilot restarted; keeping them for the grace period',
      );
    return restored;
  }

  /** @internal Whether `session` holds its node's registration. */
  isCurrent(session: WorkloadSession): boolean {
    return this.current(session) !== undefined;
  }

  /** @internal The current workload of `session`. */
  workloadOf(session: WorkloadSession): RegisteredWorkload | undefined {
    return this.current(session)?.workload;
  }

  private current(session: WorkloadSession): Entry | undefined {
    const e = this.entries.get(session.peer.node);
    return e?.session === session ? e : undefined;
  }

  /** Removes the workload of `session` after the grace period, unless `signal` aborts first. */
  private expireAfterGrace(session: WorkloadSession, signal: AbortSignal): void {
    this.clock.sleep(this.disconnectGraceMs, signal).then(
      () => this.expire(session),
      (err: unknown) => {
        // Aborted: the node registered again, deregistered, or the registry closed.
        if (!isAbortError(err))
          this.log.error({ err, node: session.peer.node }, 'Grace timer failed');
      },
    );
  }

  private expire(session: WorkloadSession): void {
    const e = this.current(session);
    if (!e || e.workload.connected) return;
    this.entries.delete(e.workload.node);
    this.log.info(
      { node: e.workload.node, graceMs: this.disconnectGraceMs },
      'Removed workload after its grace period',
    );
    this.emit({ type: 'expired', workload: e.workload });
  }

  private emit(event: WorkloadEvent): void {
    for (const l of [...this.listeners]) {
      try {
        l(event);
      } catch (err) {
        this.log.error({ err, node: event.workload.node }, 'Workload listener failed');
      }
    }
  }

  /** Authorizes the registration against the certificate and applies the group template. */
  private resolve(reg: WorkloadRegistration, peer: AuthenticatedPeer): RegisteredWorkload {
    if (reg.node !== peer.node)
      throw registrationDenied(
        `node ${JSON.stringify(reg.node)} is not the node the client certificate names (${JSON.stringify(peer.node)})`,
      );
    let group: WorkloadGroupSpec | undefined;
    if (reg.group) {
      const [ns, name] = reg.group.split('/') as [string, string];
      if (ns !== reg.namespace)
        throw registrationInvalid(
          `group ${reg.group} of node ${reg.node} is not in the workload's namespace ${reg.namespace}`,
        );
      group = this.groups(ns, name);
      if (!group)
        throw registrationInvalid(
          `group ${reg.group} of node ${reg.node}: no such WorkloadGroup (create it first)`,
        );
    }
    const template = group?.template;
    const serviceAccount = reg.serviceAccount || template?.serviceAccount || '';
    if (!serviceAccount)
      throw registrationInvalid(
        `serviceAccount of node ${reg.node} is empty${reg.group ? ` and group ${reg.group} names none` : ''}`,
      );
    const id = parseSpiffeId(peer.spiffeId);
    if (!id)
      throw registrationDenied(
        `the client certificate of node ${peer.node} carries ${JSON.stringify(peer.spiffeId)}, not a workload SPIFFE ID`,
      );
    if (id.trustDomain !== this.trustDomain)
      throw registrationDenied(
        `the client certificate of node ${peer.node} is for trust domain ${id.trustDomain}, not ${this.trustDomain}`,
      );
    if (id.namespace !== reg.namespace)
      throw registrationDenied(
        `namespace ${JSON.stringify(reg.namespace)} of node ${reg.node} is not the one its certificate proves (${peer.spiffeId})`,
      );
    if (id.serviceAccount !== serviceAccount)
      throw registrationDenied(
        `serviceAccount ${JSON.stringify(serviceAccount)} of node ${reg.node} is not the one its certificate proves (${peer.spiffeId})`,
      );
    const ports = [...(reg.ports ?? [])];
    for (const [name, port] of Object.entries(template?.ports ?? {}).sort(([a], [b]) =>
      a < b ? -1 : a > b ? 1 : 0,
    ))
      if (!ports.some(p => p.name === name)) ports.push({ name, port });
    return {
      name: `${reg.namespace}/${reg.node}`,
      node: reg.node,
      namespace: reg.namespace,
      serviceAccount,
      spiffeId: formatSpiffeId({
        trustDomain: this.trustDomain,
        namespace: reg.namespace,
        serviceAccount,
      }),
      address: reg.address,
      labels: { ...group?.metadata?.labels, ...template?.labels, ...reg.labels },
      ports,
      ...(reg.host ? { host: reg.host } : {}),
      ...(reg.group ? { group: reg.group } : {}),
      ...(template?.locality ? { locality: template.locality } : {}),
      ...(template?.network ? { network: template.network } : {}),
      weight: template?.weight || 1,
      healthy: reg.health?.healthy ?? true,
      healthMessage: reg.health?.message ?? '',
      connected: true,
      registeredAtMs: this.clock.now(),
    };
  }
}

/**
 * One host's hold on its registration, normally one registration stream. Stale once another
 * registration of the same node replaced it, or the workload was removed: its calls then do
 * nothing and return undefined.
 */
export class WorkloadSession {
  /** Called once when a newer registration of the same node replaces this one. */
  onReplaced: (() => void) | undefined;

  /** @internal Sessions come from WorkloadRegistry.register. */
  constructor(
    private readonly registry: WorkloadRegistry,
    /** The authenticated caller; fixed for the session's life. */
    readonly peer: AuthenticatedPeer,
  ) {}

  /** True while this session holds its node's registration. */
  get active(): boolean {
    return this.registry.isCurrent(this);
  }

  /** The workload, while this session holds it. */
  get workload(): RegisteredWorkload | undefined {
    return this.registry.workloadOf(this);
  }

  /**
   * Registers again from the same stream (new labels, ports...), keeping the session.
   * @throws like WorkloadRegistry.register
   */
  reregister(registration: WorkloadRegistration): RegisteredWorkload {
    return this.registry.store(this, registration);
  }

  /**
   * Applies a health report; takes effect at once.
   * @returns the workload, or undefined when the session is stale
   * @throws InvalidInputError when the message is too long
   */
  reportHealth(health: HealthState): RegisteredWorkload | undefined {
    return this.registry.reportHealth(this, health);
  }

  /** Removes the workload now (a clean goodbye). Returns it, or undefined when stale. */
  deregister(reason = 'deregistered'): RegisteredWorkload | undefined {
    return this.registry.deregister(this, reason);
  }

  /** The stream dropped: the workload stays for the grace period, then goes. Idempotent. */
  disconnect(reason = 'stream closed'): void {
    this.registry.disconnect(this, reason);
  }

  /** @internal */
  notifyReplaced(): void {
    const cb = this.onReplaced;
    this.onReplaced = undefined;
    cb?.();
  }
}

// ---------------------------------------------------------------------------------------------
// Validation

/** Kubernetes label name part: 63 chars, alphanumeric at both ends, `-_.` inside. */
const LABEL_NAME_RE = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
/** DNS subdomain (label key prefix). */
const DNS_SUBDOMAIN_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** Port names: lowercase alphanumerics and `-` (Kubernetes/Istio port names), 63 chars. */
const PORT_NAME_RE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Why `key` is not a valid label key, or undefined when it is. */
export function labelKeyProblem(key: string): string | undefined {
  const slash = key.indexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== undefined && (prefix.length > 253 || !DNS_SUBDOMAIN_RE.test(prefix)))
    return `prefix ${JSON.stringify(prefix)} is not a DNS subdomain`;
  if (!LABEL_NAME_RE.test(name))
    return `${JSON.stringify(name)} is not a label name (at most 63 letters, digits, "-", "_" or ".", alphanumeric at both ends)`;
  return undefined;
}

/** Why `value` is not a valid label value, or undefined when it is. */
export function labelValueProblem(value: string): string | undefined {
  if (value === '' || LABEL_NAME_RE.test(value)) return undefined;
  return `${JSON.stringify(value)} is not a label value (at most 63 letters, digits, "-", "_" or ".", alphanumeric at both ends)`;
}

/**
 * Checks every field of a registration; the error lists each field at fault, e.g.
 * `registration of node vm-1 is invalid: address: "10.0.0" is not an IP address; ports[1].port: 0 is not in 1-65535`.
 * @throws InvalidInputError (PILOT_REGISTRATION_INVALID)
 */
export function validateRegistration(reg: WorkloadRegistration): void {
  const problems: string[] = [];
  const bad = (field: string, message: string) => problems.push(`${field}: ${message}`);
  const name = (field: string, v: string, optional = false) => {
    if (v === '') {
      if (!optional) bad(field, 'is empty');
    } else if (!isValidName(v))
      bad(
        field,
        `${JSON.stringify(v)} is not a valid name (lowercase letters, digits, "-" and ".", alphanumeric at both ends)`,
      );
  };
  name('node', reg.node);
  name('namespace', reg.namespace);
  name('serviceAccount', reg.serviceAccount ?? '', true);
  if (reg.address === '') bad('address', 'is empty');
  else if (net.isIP(reg.address) === 0)
    bad('address', `${JSON.stringify(reg.address)} is not an IP address`);
  else if (reg.address === '0.0.0.0' || /^[:0]+$/.test(reg.address))
    bad('address', `${reg.address} is the unspecified address; give the host's own address`);

  const labels = Object.entries(reg.labels ?? {});
  if (labels.length > MAX_LABELS)
    bad('labels', `${labels.length} labels; the limit is ${MAX_LABELS}`);
  for (const [k, v] of labels) {
    const kp = labelKeyProblem(k);
    if (kp) bad(`labels[${JSON.stringify(k)}]`, `key ${kp}`);
    const vp = labelValueProblem(v);
    if (vp) bad(`labels[${JSON.stringify(k)}]`, `value ${vp}`);
  }

  const ports = reg.ports ?? [];
  if (ports.length > MAX_PORTS) bad('ports', `${ports.length} ports; the limit is ${MAX_PORTS}`);
  const seen = new Map<string, number>();
  ports.forEach((p, i) => {
    if (p.name === '') bad(`ports[${i}].name`, 'is empty');
    else if (!PORT_NAME_RE.test(p.name))
      bad(
        `ports[${i}].name`,
        `${JSON.stringify(p.name)} is not a port name (lowercase letters, digits and "-", e.g. http-api)`,
      );
    else if (seen.has(p.name))
      bad(`ports[${i}].name`, `${p.name} is also ports[${seen.get(p.name)}]`);
    else seen.set(p.name, i);
    if (!Number.isInteger(p.port) || p.port < 1 || p.port > 65535)
      bad(`ports[${i}].port`, `${p.port} is not in 1-65535`);
  });

  if (reg.host) {
    for (const f of ['os', 'kernel', 'hostname'] as const) {
      const bytes = Buffer.byteLength(reg.host[f]);
      if (bytes > MAX_HOST_FACT_BYTES)
        bad(`host.${f}`, `is ${bytes} bytes; the limit is ${MAX_HOST_FACT_BYTES}`);
    }
    if (!Number.isInteger(reg.host.cpus) || reg.host.cpus < 0 || reg.host.cpus > MAX_CPUS)
      bad('host.cpus', `${reg.host.cpus} is not a CPU count`);
    if (!Number.isSafeInteger(reg.host.memoryBytes) || reg.host.memoryBytes < 0)
      bad('host.memoryBytes', `${reg.host.memoryBytes} is not a byte count`);
  }

  if (reg.group) {
    const parts = reg.group.split('/');
    if (parts.length !== 2 || !parts.every(p => isValidName(p)))
      bad('group', `${JSON.stringify(reg.group)} is not NAMESPACE/NAME`);
  }
  if (reg.health && Buffer.byteLength(reg.health.message) > MAX_TEXT_BYTES)
    bad(
      'health.message',
      `is ${Buffer.byteLength(reg.health.message)} bytes; the limit is ${MAX_TEXT_BYTES}`,
    );

  if (problems.length > 0) {
    const who = reg.node && isValidName(reg.node) ? `node ${reg.node}` : 'a node';
    throw registrationInvalid(`registration of ${who} is invalid: ${problems.join('; ')}`);
  }
}
