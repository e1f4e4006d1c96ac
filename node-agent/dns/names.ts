/**
 * Which mesh names the resolver answers (docs/dns.md): a pure index over pilot's name table, so
 * the DNS server only asks "is this name ours, and what are its addresses?".
 */
import * as net from 'node:net';

/** One hostname of the name table (sail.pilot.v1.NameTable.NameInfo). */
export interface NameTableEntry {
  /** IPv4 and IPv6 addresses answered for the name. */
  readonly ips: readonly string[];
  /** For `NAME.NS.svc.SUFFIX` hosts: NAME. */
  readonly shortname?: string;
  /** For `NAME.NS.svc.SUFFIX` hosts: NS. */
  readonly namespace?: string;
}

/** The addresses of one mesh name, split by family. */
export interface MeshAnswer {
  /** The table's hostname the query matched. */
  readonly host: string;
  readonly ipv4: readonly string[];
  readonly ipv6: readonly string[];
}

/** A name as DNS compares it: lower case, without the trailing dot. */
export function canonicalName(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

/**
 * The names of a table, with the short forms of `NAME.NS.svc.SUFFIX` hosts: `NAME.NS`,
 * `NAME.NS.svc` and `NAME.NS.svc.SUFFIX` for everyone, `NAME` alone for the node's own namespace
 * (Kubernetes' search-path forms, which an application on a VM cannot get from a search path).
 * Exact hostnames win over short forms; among short forms the first host in sorted order wins.
 */
export class NameIndex {
  private readonly names = new Map<string, MeshAnswer>();
  /** The host's search domains (canonical), longest first. */
  private readonly search: readonly string[];

  constructor(
    table: ReadonlyMap<string, NameTableEntry>,
    namespace: string,
    domainSuffix = 'cluster.local',
    /**
     * The host's `search` domains: a mesh name followed by one of them is the mesh name (glibc
     * asks `reviews.corp.example` before `reviews`), answered here instead of forwarded.
     */
    searchDomains: readonly string[] = [],
  ) {
    this.search = [...new Set(searchDomains.map(canonicalName).filter(d => d !== ''))].sort(
      (a, b) => b.length - a.length,
    );
    const hosts = [...table.keys()].sort();
    const answers = new Map<string, MeshAnswer>();
    for (const host of hosts) {
      const entry = table.get(host)!;
      const ipv4 = entry.ips.filter(ip => net.isIPv4(ip));
      const ipv6 = entry.ips.filter(ip => net.isIPv6(ip));
      if (ipv4.length + ipv6.length === 0) continue;
      const answer = { host: canonicalName(host), ipv4, ipv6 };
      answers.set(host, answer);
      this.names.set(answer.host, answer);
    }
    const suffix = canonicalName(domainSuffix);
    const ns = canonicalName(namespace);
    for (const host of hosts) {
      const answer = answers.get(host);
      const entry = table.get(host)!;
      if (!answer || !entry.shortname || !entry.namespace) continue;
      const head = `${canonicalName(entry.shortname)}.${canonicalName(entry.namespace)}`;
      const aliases = [head, `${head}.svc`, `${head}.svc.${suffix}`];
      if (canonicalName(entry.namespace) === ns) aliases.push(canonicalName(entry.shortname));
      for (const alias of aliases) if (!this.names.has(alias)) this.names.set(alias, answer);
    }
  }

  /**
   * The mesh name `name` (any case, trailing dot or not) stands for, if any: the name itself, or
   * the name without one of the host's search domains (a name of the table always wins).
   */
  lookup(name: string): MeshAnswer | undefined {
    const n = canonicalName(name);
    const exact = this.names.get(n);
    if (exact || this.search.length === 0) return exact;
    for (const d of this.search) {
      const cut = n.length - d.length - 1;
      if (cut > 0 && n.endsWith(d) && n.charCodeAt(cut) === 0x2e /* . */) {
        const stripped = this.names.get(n.slice(0, cut));
        if (stripped) return stripped;
      }
    }
    return undefined;
  }

  /** How many hostnames (not counting short forms) the index answers. */
  get size(): number {
    return new Set([...this.names.values()].map(a => a.host)).size;
  }
}
