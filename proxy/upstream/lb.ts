/**
 * Load balancers over one priority level's hosts. Each is built once per host list (on a push, a
 * DNS change or an ejection) and its `pick` does no allocation: round robin is EDF (earliest
 * deadline first) so weights hold even over a few picks, least request is the power of two
 * choices, and the consistent hashes (ring hash, Maglev) are built over every host of the level and
 * skip ineligible hosts at lookup, so an ejection moves only the ejected host's keys.
 */
import type { LbPolicy } from '../model';
import type { LbContext } from '../types';
import { hashString } from './hash';
import type { Host } from './host';

/** A load balancer over a fixed host list. */
export interface LoadBalancer {
  /**
   * A host for a new attempt, avoiding `ctx.exclude` when another eligible host exists.
   * `onlyHealthy`: skip unhealthy / ejected hosts (the consistent hashes, built over all hosts,
   * need it; the others are built over the hosts they may use).
   */
  pick(ctx: LbContext, onlyHealthy: boolean): Host | undefined;
}

/** Maglev's lookup table size (Envoy's default; a prime). */
export const MAGLEV_TABLE_SIZE = 65537;

function isExcluded(ctx: LbContext, h: Host): boolean {
  return ctx.exclude !== undefined && ctx.exclude.has(h);
}

function allSameWeight(hosts: readonly Host[]): boolean {
  const w = hosts[0]?.weight;
  for (const h of hosts) if (h.weight !== w) return false;
  return true;
}

/** Weighted random choice: cumulative weights and a binary search. */
class WeightedRandom {
  private readonly cumulative: Float64Array;
  private readonly total: number;

  constructor(private readonly hosts: readonly Host[]) {
    this.cumulative = new Float64Array(hosts.length);
    let sum = 0;
    for (let i = 0; i < hosts.length; i++) {
      sum += (hosts[i] as Host).weight;
      this.cumulative[i] = sum;
    }
    this.total = sum;
  }

  next(): Host {
    const r = Math.random() * this.total;
    let lo = 0;
    let hi = this.cumulative.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.cumulative[mid] as number) > r) hi = mid;
      else lo = mid + 1;
    }
    return this.hosts[lo] as Host;
  }
}

/**
 * Tries `next()` a few times to find a host not excluded, then scans the list; falls back to the
 * first pick (a retry may go to the same host when it is the only one).
 */
function avoidExcluded(ctx: LbContext, hosts: readonly Host[], next: () => Host): Host {
  const first = next();
  if (!isExcluded(ctx, first)) return first;
  const tries = Math.min(hosts.length, 3);
  for (let i = 1; i < tries; i++) {
    const h = next();
    if (!isExcluded(ctx, h)) return h;
  }
  for (const h of hosts) if (!isExcluded(ctx, h)) return h;
  return first;
}

/** Round robin: a rotating index for equal weights, EDF for weighted hosts. */
export class RoundRobinLb implements LoadBalancer {
  private readonly equal: boolean;
  private index: number;
  /** EDF min-heap of host indexes by (deadline, seq). */
  private readonly heap: Int32Array;
  private readonly deadline: Float64Array;
  private readonly seq: Float64Array;
  private counter = 0;
  private readonly nextBound: () => Host;

  constructor(private readonly hosts: readonly Host[]) {
    this.equal = allSameWeight(hosts);
    // A random start, so that proxies restarted together do not all hit the first host first.
    this.index = Math.floor(Math.random() * Math.max(1, hosts.length));
    this.heap = new Int32Array(hosts.length);
    this.deadline = new Float64Array(hosts.length);
    this.seq = new Float64Array(hosts.length);
    if (!this.equal) {
      for (let i = 0; i < hosts.length; i++) {
        this.deadline[i] = 1 / (hosts[i] as Host).weight;
        this.seq[i] = this.counter++;
        this.heap[i] = i;
      }
      for (let i = (hosts.length >> 1) - 1; i >= 0; i--) this.siftDown(i);
    }
    this.nextBound = () => this.next();
  }

  pick(ctx: LbContext): Host | undefined {
    if (this.hosts.length === 0) return undefined;
    return ctx.exclude === undefined ? this.next() : avoidExcluded(ctx, this.hosts, this.nextBound);
  }

  private next(): Host {
    if (this.equal) {
      const h = this.hosts[this.index % this.hosts.length] as Host;
      this.index = (this.index + 1) % this.hosts.length;
      return h;
    }
    const i = this.heap[0] as number;
    const h = this.hosts[i] as Host;
    this.deadline[i] = (this.deadline[i] as number) + 1 / h.weight;
    this.seq[i] = this.counter++;
    this.siftDown(0);
    return h;
  }

  private less(a: number, b: number): boolean {
    const da = this.deadline[a] as number;
    const db = this.deadline[b] as number;
    return da < db || (da === db && (this.seq[a] as number) < (this.seq[b] as number));
  }

  private siftDown(pos: number): void {
    const n = this.heap.length;
    const heap = this.heap;
    for (;;) {
      const l = 2 * pos + 1;
      if (l >= n) return;
      const r = l + 1;
      let m = l;
      if (r < n && this.less(heap[r] as number, heap[l] as number)) m = r;
      if (!this.less(heap[m] as number, heap[pos] as number)) return;
      const t = heap[m] as number;
      heap[m] = heap[pos] as number;
      heap[pos] = t;
      pos = m;
    }
  }
}

/** Random, weighted. */
export class RandomLb implements LoadBalancer {
  private readonly random: WeightedRandom;
  private readonly nextBound: () => Host;

  constructor(private readonly hosts: readonly Host[]) {
    this.random = new WeightedRandom(hosts);
    this.nextBound = () => this.random.next();
  }

  pick(ctx: LbContext): Host | undefined {
    if (this.hosts.length === 0) return undefined;
    return avoidExcluded(ctx, this.hosts, this.nextBound);
  }
}

/**
 * Least request: two hosts drawn at random by weight, and the one with fewer requests in flight per
 * unit of weight wins (Envoy's power of two choices). Ties go to the first draw, so idle hosts
 * share the load by weight.
 */
export class LeastRequestLb implements LoadBalancer {
  private readonly random: WeightedRandom;
  private readonly nextBound: () => Host;

  constructor(private readonly hosts: readonly Host[]) {
    this.random = new WeightedRandom(hosts);
    this.nextBound = () => this.twoChoices();
  }

  pick(ctx: LbContext): Host | undefined {
    if (this.hosts.length === 0) return undefined;
    if (this.hosts.length === 1) return this.hosts[0];
    return avoidExcluded(ctx, this.hosts, this.nextBound);
  }

  private twoChoices(): Host {
    const a = this.random.next();
    let b = this.random.next();
    // A second draw of the same host would make it a one-choice pick; draw once more.
    if (b === a) b = this.random.next();
    // Load per unit of weight; a tie goes to the first draw, so idle hosts share by weight.
    return b.activeRequests / b.weight < a.activeRequests / a.weight ? b : a;
  }
}

function eligible(h: Host, onlyHealthy: boolean): boolean {
  return !onlyHealthy || (h.edsHealthy && !h.ejected);
}

/** Picks uniformly at random among eligible hosts (consistent hashes without a hash). */
function randomEligible(
  hosts: readonly Host[],
  ctx: LbContext,
  onlyHealthy: boolean,
): Host | undefined {
  const n = hosts.length;
  if (n === 0) return undefined;
  const start = Math.floor(Math.random() * n);
  let fallback: Host | undefined;
  for (let i = 0; i < n; i++) {
    const h = hosts[(start + i) % n] as Host;
    if (!eligible(h, onlyHealthy)) continue;
    if (!isExcluded(ctx, h)) return h;
    fallback ??= h;
  }
  return fallback;
}

/**
 * Envoy's ring hash: each host gets ring entries in proportion to its weight, the ring has between
 * `minimumRingSize` and `maximumRingSize` entries, and a key maps to the first entry at or after
 * its hash (wrapping). Lookups skip ineligible and excluded hosts by walking the ring.
 */
export class RingHashLb implements LoadBalancer {
  /** Sorted entry hashes and, in parallel, host indexes. */
  readonly ringHashes: Uint32Array;
  private readonly ringHosts: Int32Array;

  constructor(
    private readonly hosts: readonly Host[],
    minimumRingSize: number,
    maximumRingSize: number,
  ) {
    if (hosts.length === 0) {
      this.ringHashes = new Uint32Array(0);
      this.ringHosts = new Int32Array(0);
      return;
    }
    let total = 0;
    for (const h of hosts) total += h.weight;
    let minNorm = 1;
    for (const h of hosts) minNorm = Math.min(minNorm, h.weight / total);
    const minSize = Math.max(1, minimumRingSize);
    const maxSize = Math.max(minSize, maximumRingSize);
    const scale = Math.min(Math.ceil(minNorm * minSize) / minNorm, maxSize);
    const entries: { hash: number; host: number }[] = [];
    let target = 0;
    for (let i = 0; i < hosts.length; i++) {
      const h = hosts[i] as Host;
      target += (scale * h.weight) / total;
      const base = `${h.address}:${h.port}_`;
      for (let k = 0; entries.length < Math.round(target); k++) {
        entries.push({ hash: hashString(base + String(k)), host: i });
      }
    }
    entries.sort((a, b) => a.hash - b.hash || a.host - b.host);
    this.ringHashes = Uint32Array.from(entries, e => e.hash);
    this.ringHosts = Int32Array.from(entries, e => e.host);
  }

  pick(ctx: LbContext, onlyHealthy: boolean): Host | undefined {
    const n = this.ringHashes.length;
    if (n === 0) return undefined;
    if (ctx.hash === undefined) return randomEligible(this.hosts, ctx, onlyHealthy);
    const h = ctx.hash >>> 0;
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.ringHashes[mid] as number) < h) lo = mid + 1;
      else hi = mid;
    }
    let fallback: Host | undefined;
    for (let i = 0; i < n; i++) {
      const host = this.hosts[this.ringHosts[(lo + i) % n] as number] as Host;
      if (!eligible(host, onlyHealthy)) continue;
      if (!isExcluded(ctx, host)) return host;
      fallback ??= host;
    }
    return fallback;
  }
}

/**
 * Maglev (Eisenbud et al. 2016, Envoy's weighted variant): a lookup table of MAGLEV_TABLE_SIZE
 * slots filled from each host's permutation, hosts taking turns in proportion to their weight.
 * Lookups that land on an ineligible or excluded host probe the following slots.
 */
export class MaglevLb implements LoadBalancer {
  private readonly table: Int32Array;

  constructor(
    private readonly hosts: readonly Host[],
    tableSize = MAGLEV_TABLE_SIZE,
  ) {
    this.table = new Int32Array(hosts.length === 0 ? 0 : tableSize).fill(-1);
    if (hosts.length === 0) return;
    const m = tableSize;
    const offset = new Float64Array(hosts.length);
    const skip = new Float64Array(hosts.length);
    const next = new Float64Array(hosts.length);
    const targetWeight = new Float64Array(hosts.length);
    let maxWeight = 0;
    for (let i = 0; i < hosts.length; i++) {
      const h = hosts[i] as Host;
      const key = `${h.address}:${h.port}`;
      offset[i] = hashString(key) % m;
      skip[i] = (hashString(key, 0x9747b28c) % (m - 1)) + 1;
      maxWeight = Math.max(maxWeight, h.weight);
    }
    let filled = 0;
    for (let iteration = 1; filled < m; iteration++) {
      for (let i = 0; i < hosts.length && filled < m; i++) {
        // A host of the maximum weight places an entry every iteration, one of a third of it
        // every third iteration, and so on.
        if (iteration * (hosts[i] as Host).weight < (targetWeight[i] as number)) continue;
        targetWeight[i] = (targetWeight[i] as number) + maxWeight;
        let c = ((offset[i] as number) + (skip[i] as number) * (next[i] as number)) % m;
        while ((this.table[c] as number) >= 0) {
          next[i] = (next[i] as number) + 1;
          c = ((offset[i] as number) + (skip[i] as number) * (next[i] as number)) % m;
        }
        this.table[c] = i;
        next[i] = (next[i] as number) + 1;
        filled++;
      }
    }
  }

  pick(ctx: LbContext, onlyHealthy: boolean): Host | undefined {
    const m = this.table.length;
    if (m === 0) return undefined;
    if (ctx.hash === undefined) return randomEligible(this.hosts, ctx, onlyHealthy);
    const start = (ctx.hash >>> 0) % m;
    let fallback: Host | undefined;
    // Probing the whole table would be 65537 steps; after hosts×8 slots every host has almost
    // surely been seen, and the scan below covers the rest.
    const probes = Math.min(m, this.hosts.length * 8);
    for (let i = 0; i < probes; i++) {
      const host = this.hosts[this.table[(start + i) % m] as number] as Host;
      if (!eligible(host, onlyHealthy)) continue;
      if (!isExcluded(ctx, host)) return host;
      fallback ??= host;
    }
    return fallback ?? randomEligible(this.hosts, ctx, onlyHealthy);
  }
}

/** Whether the policy is a consistent hash (built over all hosts, eligibility checked at pick). */
export function isConsistentHash(policy: LbPolicy): boolean {
  return policy === 'RING_HASH' || policy === 'MAGLEV';
}

/** Builds the load balancer of `policy` over `hosts`. */
export function createLoadBalancer(
  policy: LbPolicy,
  hosts: readonly Host[],
  ring: { readonly minimumRingSize: number; readonly maximumRingSize: number },
): LoadBalancer {
  switch (policy) {
    case 'ROUND_ROBIN':
      return new RoundRobinLb(hosts);
    case 'LEAST_REQUEST':
      return new LeastRequestLb(hosts);
    case 'RANDOM':
      return new RandomLb(hosts);
    case 'RING_HASH':
      return new RingHashLb(hosts, ring.minimumRingSize, ring.maximumRingSize);
    case 'MAGLEV':
      return new MaglevLb(hosts);
  }
}
