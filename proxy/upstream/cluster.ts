/**
 * One upstream cluster: its hosts (from EDS, the inline assignment, DNS or the original
 * destination), priority levels and load balancers, circuit breakers and outlier detection.
 * A push updates it in place, so hosts that stay keep their identity and state.
 */
import * as dns from 'node:dns';
import * as net from 'node:net';
import type { Clock } from '../../common/clock';
import { LogField, type Logger } from '../../common/logging';
import type { Cluster, Endpoint, LoadAssignment, TransportChoice } from '../model';
import type {
  CircuitBreakerKind,
  ClusterStatus,
  HostStatus,
  LbContext,
  UpstreamCluster,
  UpstreamHost,
  UpstreamOutcome,
} from '../types';
import { Host, chooseTransport } from './host';
import { type LoadBalancer, createLoadBalancer, isConsistentHash } from './lb';
import { every } from './timer';

/** Resolves a host name to addresses. */
export type HostResolver = (host: string) => Promise<string[]>;

/** ORIGINAL_DST hosts unused for this long are dropped (Envoy's `cleanup_interval` default). */
export const ORIGINAL_DST_CLEANUP_MS = 5_000;
/** Envoy's default `max_ejection_time`: an ejection never lasts longer (unless the base does). */
export const MAX_EJECTION_TIME_MS = 300_000;

/**
 * The default resolver: every address `getaddrinfo` returns, IPv4 only when there is any (Istio
 * resolves DNS clusters V4_ONLY; `localhost` would otherwise also give `::1`, which services
 * listening on 127.0.0.1 refuse).
 */
export async function lookupAll(host: string): Promise<string[]> {
  const all = await dns.promises.lookup(host, { all: true });
  const v4 = all.filter(a => a.family === 4);
  return [...new Set((v4.length > 0 ? v4 : all).map(a => a.address))];
}

/** What a cluster needs from its manager. */
export interface ClusterDeps {
  readonly log: Logger;
  readonly clock: Clock;
  readonly resolver: HostResolver;
}

/** Hosts of one priority and their load balancers, built lazily and once per host list. */
class PriorityLevel {
  /** Healthy and not ejected, recomputed when an ejection or return changes it. */
  available: Host[] = [];
  private lbAll: LoadBalancer | undefined;
  private lbAvailable: LoadBalancer | undefined;

  constructor(
    readonly priority: number,
    readonly hosts: Host[],
    private readonly config: Cluster,
  ) {
    this.refresh();
  }

  refresh(): void {
    const available = this.hosts.filter(h => h.edsHealthy && !h.ejected);
    if (
      available.length !== this.available.length ||
      available.some((h, i) => h !== this.available[i])
    ) {
      this.available = available;
      this.lbAvailable = undefined;
    }
  }

  /** The balancer for normal (`panic` false) or panic mode. */
  lb(panic: boolean): LoadBalancer {
    const c = this.config;
    // The consistent hashes are built over every host and skip ineligible ones at lookup, so a
    // host's ejection does not remap the keys of the others.
    if (panic || isConsistentHash(c.lbPolicy))
      return (this.lbAll ??= createLoadBalancer(c.lbPolicy, this.hosts, c.ringHash));
    return (this.lbAvailable ??= createLoadBalancer(c.lbPolicy, this.available, c.ringHash));
  }
}

/** A stable identity for a transport: equal content across pushes gives the same string. */
const transportFingerprints = new WeakMap<TransportChoice, string>();

function transportFingerprint(t: TransportChoice): string {
  let fp = transportFingerprints.get(t);
  if (fp === undefined) {
    // StringMatcher.regex serialises as {}, but its `value` holds the pattern.
    fp = JSON.stringify(t);
    transportFingerprints.set(t, fp);
  }
  return fp;
}

const NO_ENDPOINTS: readonly Endpoint[] = Object.freeze([]);

/** The UpstreamCluster of {@link DefaultClusterManager}. */
export class UpstreamClusterImpl implements UpstreamCluster {
  private cfg: Cluster;
  private assignment: LoadAssignment | undefined;
  /** Current hosts by `address:port|transport fingerprint` (the stability key). */
  private hosts = new Map<string, Host>();
  private levels: PriorityLevel[] = [];
  /** Set when a host's eligibility changed (ejection, return); levels refresh at the next pick. */
  private availabilityDirty = false;
  private readonly inUse: Record<CircuitBreakerKind, number> = {
    connections: 0,
    pending: 0,
    requests: 0,
    retries: 0,
  };
  /** Breaker overflows (Envoy `upstream_rq_pending_overflow` and friends), for /clusters. */
  readonly overflows: Record<CircuitBreakerKind, number> = {
    connections: 0,
    pending: 0,
    requests: 0,
    retries: 0,
  };
  private stopSweep: (() => void) | undefined;
  private sweepIntervalMs = 0;
  // DNS types
  private stopDns: (() => void) | undefined;
  private dnsKey = '';
  private dnsGeneration = 0;
  private resolving = false;
  private readonly dnsResults = new Map<string, readonly string[]>();
  // ORIGINAL_DST
  private readonly originalDst = new Map<string, Host>();
  private originalDstTransport: TransportChoice | undefined;
  private stopOriginalDstCleanup: (() => void) | undefined;
  private closed = false;
  private initialized = false;

  constructor(
    config: Cluster,
    private readonly deps: ClusterDeps,
  ) {
    this.cfg = config;
  }

  get name(): string {
    return this.cfg.name;
  }

  get config(): Cluster {
    return this.cfg;
  }

  /**
   * Applies a pushed config and its endpoints (the EDS assignment; the inline one for the other
   * types). Nothing happens when both are the same objects as before.
   */
  update(config: Cluster, assignment: LoadAssignment | undefined): void {
    if (this.initialized && config === this.cfg && assignment === this.assignment) return;
    this.initialized = true;
    this.cfg = config;
    this.assignment = assignment;
    // A push may change the type: stop what the old type ran.
    if (config.type !== 'STRICT_DNS' && config.type !== 'LOGICAL_DNS' && this.stopDns) {
      this.stopDns();
      this.stopDns = undefined;
      this.dnsKey = '';
      this.dnsGeneration++;
      this.dnsResults.clear();
    }
    if (config.type !== 'ORIGINAL_DST' && this.stopOriginalDstCleanup) {
      this.stopOriginalDstCleanup();
      this.stopOriginalDstCleanup = undefined;
      this.originalDst.clear();
      this.originalDstTransport = undefined;
    }
    switch (config.type) {
      case 'EDS':
      case 'STATIC':
        this.setHosts(assignment?.endpoints ?? NO_ENDPOINTS, undefined);
        break;
      case 'STRICT_DNS':
      case 'LOGICAL_DNS':
        this.updateDns();
        break;
      case 'ORIGINAL_DST':
        this.updateOriginalDst();
        break;
    }
    this.updateOutlierSweep();
  }

  pick(ctx: LbContext): UpstreamHost | undefined {
    if (this.cfg.type === 'ORIGINAL_DST') return this.pickOriginalDst(ctx);
    if (this.availabilityDirty) {
      this.availabilityDirty = false;
      for (const l of this.levels) l.refresh();
    }
    const levels = this.levels;
    let level: PriorityLevel | undefined;
    for (const l of levels) {
      if (l.available.length > 0) {
        level = l;
        break;
      }
    }
    const threshold = this.cfg.healthyPanicThreshold;
    if (level === undefined) {
      // Nothing healthy anywhere: panic (use every host) unless panic is disabled.
      const first = levels[0];
      return first === undefined || threshold <= 0 ? undefined : first.lb(true).pick(ctx, false);
    }
    // Below the threshold the level panics and balances over all its hosts, healthy or not
    // (Envoy's healthy_panic_threshold), so a few healthy hosts are not crushed by all the load.
    const panic = level.available.length * 100 < threshold * level.hosts.length;
    return level.lb(panic).pick(ctx, !panic);
  }

  tryAcquire(kind: CircuitBreakerKind): boolean {
    if (this.inUse[kind] >= this.limit(kind)) {
      this.overflows[kind]++;
      return false;
    }
    this.inUse[kind]++;
    return true;
  }

  release(kind: CircuitBreakerKind): void {
    if (this.inUse[kind] > 0) this.inUse[kind]--;
  }

  /** Units of each breaker taken now. */
  breakerUsage(kind: CircuitBreakerKind): number {
    return this.inUse[kind];
  }

  requestStarted(host: UpstreamHost): void {
    const h = host as Host;
    h.activeRequests++;
    h.totalRequests++;
  }

  requestFinished(host: UpstreamHost, outcome: UpstreamOutcome): void {
    const h = host as Host;
    if (h.activeRequests > 0) h.activeRequests--;
    if (outcome !== 'success') h.failedRequests++;
    const od = this.cfg.outlierDetection;
    if (od === undefined || h.ejected) return;
    switch (outcome) {
      case 'success':
        h.consecutive5xx = 0;
        h.consecutiveGatewayFailures = 0;
        return;
      case '5xx':
        h.consecutive5xx++;
        h.consecutiveGatewayFailures = 0;
        break;
      case 'gatewayError':
      case 'connectFailure':
        // A gateway failure (502/503/504, connect failure) is also a 5xx (Envoy outlier detection).
        h.consecutive5xx++;
        h.consecutiveGatewayFailures++;
        break;
      case 'localReset':
        return;
    }
    if (
      (od.consecutive5xx > 0 && h.consecutive5xx >= od.consecutive5xx) ||
      (od.consecutiveGatewayFailure > 0 &&
        h.consecutiveGatewayFailures >= od.consecutiveGatewayFailure)
    ) {
      this.tryEject(h);
    }
  }

  /** Every host, for the admin /clusters page. */
  status(): ClusterStatus {
    const hosts: HostStatus[] = [];
    const add = (h: Host) =>
      hosts.push({
        address: h.address,
        port: h.port,
        healthy: h.edsHealthy,
        ejected: h.ejected,
        weight: h.weight,
        activeRequests: h.activeRequests,
        totalRequests: h.totalRequests,
        failedRequests: h.failedRequests,
        transport: h.transport.name,
      });
    for (const h of this.hosts.values()) add(h);
    for (const h of this.originalDst.values()) add(h);
    return { name: this.cfg.name, type: this.cfg.type, lbPolicy: this.cfg.lbPolicy, hosts };
  }

  /** The current hosts (not ORIGINAL_DST ones), for tests and the manager. */
  currentHosts(): Host[] {
    return [...this.hosts.values()];
  }

  /** Stops the cluster's timers and DNS refresh. Idempotent. */
  close(): void {
    this.closed = true;
    this.stopSweep?.();
    this.stopSweep = undefined;
    this.stopDns?.();
    this.stopDns = undefined;
    this.dnsGeneration++;
    this.stopOriginalDstCleanup?.();
    this.stopOriginalDstCleanup = undefined;
  }

  // -------------------------------------------------------------------------------------------
  // Host sets

  /**
   * Rebuilds the host set from endpoints (with `addresses` substituting resolved addresses for
   * the DNS types), reusing hosts whose address, port and transport are unchanged.
   */
  private setHosts(
    endpoints: readonly Endpoint[],
    addresses: ((e: Endpoint) => readonly string[]) | undefined,
  ): void {
    const cfg = this.cfg;
    const next = new Map<string, Host>();
    for (const e of endpoints) {
      const transport = chooseTransport(cfg.transports, e.transportMatch);
      const fp = transportFingerprint(transport);
      for (const address of addresses ? addresses(e) : [e.address]) {
        const key = `${address}:${e.port}|${fp}`;
        if (next.has(key)) continue; // the same endpoint twice: the first wins
        const host = this.hosts.get(key) ?? new Host(cfg.name, address, e.port, transport);
        host.apply(e);
        next.set(key, host);
      }
    }
    this.hosts = next;
    const byPriority = new Map<number, Host[]>();
    for (const h of next.values()) {
      let list = byPriority.get(h.priority);
      if (!list) byPriority.set(h.priority, (list = []));
      list.push(h);
    }
    this.levels = [...byPriority.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([p, list]) => new PriorityLevel(p, list, cfg));
    this.availabilityDirty = false;
  }

  // -------------------------------------------------------------------------------------------
  // DNS

  private updateDns(): void {
    const endpoints = this.cfg.loadAssignment?.endpoints ?? NO_ENDPOINTS;
    const names = [...new Set(endpoints.map(e => e.address).filter(a => net.isIP(a) === 0))];
    const key = `${names.join(',')}|${this.cfg.dnsRefreshRateMs}`;
    this.setHostsFromDns();
    if (key === this.dnsKey && this.stopDns) return;
    this.dnsKey = key;
    this.stopDns?.();
    this.stopDns = undefined;
    const generation = ++this.dnsGeneration;
    for (const n of [...this.dnsResults.keys()]) if (!names.includes(n)) this.dnsResults.delete(n);
    if (names.length === 0) return;
    const resolve = () => {
      this.resolveAll(names, generation).catch((err: unknown) =>
        this.deps.log.warn({ err, cluster: this.cfg.name }, 'DNS refresh failed'),
      );
    };
    resolve();
    this.stopDns = every(this.deps.clock, this.cfg.dnsRefreshRateMs, resolve, this.deps.log);
  }

  private async resolveAll(names: readonly string[], generation: number): Promise<void> {
    if (this.resolving) return; // the previous round is still waiting for DNS
    this.resolving = true;
    try {
      const results = await Promise.all(
        names.map(async name => {
          try {
            return await this.deps.resolver(name);
          } catch (err) {
            // Keep the last good answer: a DNS outage must not empty the cluster.
            this.deps.log.warn(
              { err, cluster: this.cfg.name, [LogField.address]: name },
              'Cannot resolve upstream host; keeping the last addresses',
            );
            return undefined;
          }
        }),
      );
      if (generation !== this.dnsGeneration || this.closed) return;
      let changed = false;
      names.forEach((name, i) => {
        const addrs = results[i];
        if (addrs === undefined || addrs.length === 0) return;
        const old = this.dnsResults.get(name);
        if (old?.length === addrs.length && old.every((a, j) => a === addrs[j])) return;
        this.dnsResults.set(name, addrs);
        changed = true;
      });
      if (changed) this.setHostsFromDns();
    } finally {
      this.resolving = false;
    }
  }

  private setHostsFromDns(): void {
    const logical = this.cfg.type === 'LOGICAL_DNS';
    this.setHosts(this.cfg.loadAssignment?.endpoints ?? NO_ENDPOINTS, e => {
      if (net.isIP(e.address) !== 0) return [e.address];
      const addrs = this.dnsResults.get(e.address) ?? [];
      // LOGICAL_DNS: one connection target, the first address of the latest answer.
      return logical ? addrs.slice(0, 1) : addrs;
    });
  }

  // -------------------------------------------------------------------------------------------
  // ORIGINAL_DST

  private updateOriginalDst(): void {
    const transport = chooseTransport(this.cfg.transports, {});
    if (
      this.originalDstTransport !== undefined &&
      transportFingerprint(transport) !== transportFingerprint(this.originalDstTransport)
    ) {
      this.originalDst.clear();
    }
    this.originalDstTransport = transport;
    this.hosts = new Map();
    this.levels = [];
    this.stopOriginalDstCleanup ??= every(
      this.deps.clock,
      ORIGINAL_DST_CLEANUP_MS,
      () => this.cleanupOriginalDst(),
      this.deps.log,
    );
  }

  private pickOriginalDst(ctx: LbContext): Host | undefined {
    const dst = ctx.originalDst;
    if (dst === undefined || this.originalDstTransport === undefined) return undefined;
    const key = `${dst.address}:${dst.port}`;
    let h = this.originalDst.get(key);
    if (h === undefined) {
      h = new Host(this.cfg.name, dst.address, dst.port, this.originalDstTransport);
      this.originalDst.set(key, h);
    }
    h.lastUsedMs = this.deps.clock.now();
    return h;
  }

  private cleanupOriginalDst(): void {
    const cutoff = this.deps.clock.now() - ORIGINAL_DST_CLEANUP_MS;
    for (const [key, h] of this.originalDst) {
      if (h.activeRequests === 0 && h.lastUsedMs <= cutoff) this.originalDst.delete(key);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Breakers and outlier detection

  private limit(kind: CircuitBreakerKind): number {
    const b = this.cfg.circuitBreakers;
    switch (kind) {
      case 'connections':
        return b.maxConnections;
      case 'pending':
        return b.maxPendingRequests;
      case 'requests':
        return b.maxRequests;
      case 'retries':
        return b.maxRetries;
    }
  }

  private tryEject(h: Host): void {
    const od = this.cfg.outlierDetection;
    // Only hosts of the current set: a host removed by a push may still finish requests.
    if (!od || this.hosts.get(`${h.address}:${h.port}|${transportFingerprint(h.transport)}`) !== h)
      return;
    if (od.maxEjectionPercent <= 0) return;
    let ejected = 0;
    for (const x of this.hosts.values()) if (x.ejected) ejected++;
    // Envoy lets at least one host be ejected whatever the percentage.
    const max = Math.max(1, Math.floor((this.hosts.size * od.maxEjectionPercent) / 100));
    if (ejected >= max) return;
    const now = this.deps.clock.now();
    h.timesEjected++;
    h.ejected = true;
    const cap = Math.max(MAX_EJECTION_TIME_MS, od.baseEjectionTimeMs);
    h.ejectedUntilMs = now + Math.min(od.baseEjectionTimeMs * h.timesEjected, cap);
    h.lastEjectionChangeMs = now;
    h.consecutive5xx = 0;
    h.consecutiveGatewayFailures = 0;
    this.availabilityDirty = true;
    this.deps.log.info(
      {
        cluster: this.cfg.name,
        [LogField.address]: `${h.address}:${h.port}`,
        timesEjected: h.timesEjected,
        ejectedUntil: new Date(h.ejectedUntilMs).toISOString(),
      },
      'Ejected upstream host',
    );
  }

  private updateOutlierSweep(): void {
    const od = this.cfg.outlierDetection;
    const interval = od?.intervalMs ?? 0;
    if (interval === this.sweepIntervalMs && (this.stopSweep !== undefined) === interval > 0)
      return;
    this.stopSweep?.();
    this.stopSweep = undefined;
    this.sweepIntervalMs = interval;
    if (od && interval > 0) {
      this.stopSweep = every(this.deps.clock, interval, () => this.sweep(), this.deps.log);
    } else {
      // Outlier detection turned off: return every ejected host now.
      for (const h of this.hosts.values()) {
        if (h.ejected) {
          h.ejected = false;
          this.availabilityDirty = true;
        }
      }
    }
  }

  /** The interval sweep: returns hosts whose ejection ended; decays the multiplier of good ones. */
  private sweep(): void {
    const od = this.cfg.outlierDetection;
    if (!od) return;
    const now = this.deps.clock.now();
    for (const h of this.hosts.values()) {
      if (h.ejected) {
        if (now >= h.ejectedUntilMs) {
          h.ejected = false;
          h.lastEjectionChangeMs = now;
          this.availabilityDirty = true;
          this.deps.log.info(
            { cluster: this.cfg.name, [LogField.address]: `${h.address}:${h.port}` },
            'Returned ejected upstream host',
          );
        }
      } else if (h.timesEjected > 0 && now - h.lastEjectionChangeMs >= od.baseEjectionTimeMs) {
        // A host that behaved for a whole base ejection time since its return earns back one
        // step of the multiplier (Envoy decrements it on intervals without an ejection).
        h.timesEjected--;
        h.lastEjectionChangeMs = now;
      }
    }
  }
}
