/**
 * Filter chain selection with Envoy's semantics (listener_components.proto, FilterChainMatch):
 * criteria are applied in a fixed order — destination port, destination IP (longest prefix),
 * server name (exact, then the longest `*.suffix`), transport protocol, application protocols,
 * source IP (longest prefix) — and at each step the chains naming the connection's value win over
 * those leaving the criterion empty. There is no backtracking: once a more specific step narrowed
 * the set, a later step that matches nothing means no chain (then the listener's default chain).
 *
 * Each listener's chains are compiled once into a decision tree (cached per Listener object, which
 * a push replaces), so a connection costs a few map lookups.
 */
import * as net from 'node:net';
import type { CidrRange, FilterChain, Listener } from '../model';

/** What is known about a connection when its chain is chosen. */
export interface ConnectionFacts {
  /** The original destination. */
  readonly destinationAddress: string;
  readonly destinationPort: number;
  readonly sourceAddress: string;
  /** SNI from the ClientHello ('' when none or not TLS), lowercase. */
  readonly serverName: string;
  readonly transportProtocol: 'tls' | 'raw_buffer';
  /** ALPN from the ClientHello, client order. */
  readonly alpn: readonly string[];
}

// ---------------------------------------------------------------------------------------------
// IP addresses as 32-bit words (one for IPv4, four for IPv6), compared under a prefix mask.

/** A parsed address: 1 word (IPv4, also for IPv4-mapped IPv6) or 4 words (IPv6). */
type IpWords = readonly number[];

/**
 * Parses an IPv4 or IPv6 address. IPv4-mapped IPv6 (`::ffff:10.0.0.1`, what a dual-stack socket
 * reports) becomes IPv4, so IPv4 ranges apply to it.
 * @internal exported for tests
 */
export function parseIp(text: string): IpWords | undefined {
  const family = net.isIP(text);
  if (family === 4) return parseIpv4(text);
  if (family !== 6) return undefined;
  const zone = text.indexOf('%');
  const s = zone >= 0 ? text.slice(0, zone) : text;
  // Valid IPv6 (checked above): at most one `::`, hex groups, maybe a trailing dotted quad.
  const groups: number[] = [];
  const gap = s.indexOf('::');
  const head = gap >= 0 ? s.slice(0, gap) : s;
  const tail = gap >= 0 ? s.slice(gap + 2) : '';
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === '' ? [] : tail.split(':');
  const toGroups = (items: string[]): number[] => {
    const out: number[] = [];
    for (const item of items) {
      if (item.includes('.')) {
        const v4 = parseIpv4(item)![0]!;
        out.push(v4 >>> 16, v4 & 0xffff);
      } else out.push(parseInt(item, 16));
    }
    return out;
  };
  const h = toGroups(headGroups);
  const t = toGroups(tailGroups);
  groups.push(...h);
  for (let i = h.length + t.length; i < 8; i++) groups.push(0);
  groups.push(...t);
  // ::ffff:a.b.c.d
  if (
    groups[0] === 0 &&
    groups[1] === 0 &&
    groups[2] === 0 &&
    groups[3] === 0 &&
    groups[4] === 0 &&
    groups[5] === 0xffff
  ) {
    return [((groups[6]! << 16) | groups[7]!) >>> 0];
  }
  const words: number[] = [];
  for (let i = 0; i < 8; i += 2) words.push(((groups[i]! << 16) | groups[i + 1]!) >>> 0);
  return words;
}

function parseIpv4(text: string): IpWords | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let v = 0;
  for (const p of parts) {
    const n = Number(p);
    if (p.length === 0 || !Number.isInteger(n) || n < 0 || n > 255) return undefined;
    v = v * 256 + n;
  }
  return [v >>> 0];
}

/** A compiled CIDR range. */
interface Cidr {
  readonly words: IpWords;
  readonly prefixLen: number;
}

function compileCidr(range: CidrRange): Cidr | undefined {
  const words = parseIp(range.address);
  if (words === undefined) return undefined;
  const max = words.length * 32;
  return { words, prefixLen: Math.max(0, Math.min(range.prefixLen, max)) };
}

function cidrContains(cidr: Cidr, ip: IpWords): boolean {
  if (cidr.words.length !== ip.length) return false;
  let bits = cidr.prefixLen;
  for (let i = 0; i < ip.length && bits > 0; i++) {
    const take = Math.min(32, bits);
    const mask = take === 32 ? 0xffffffff : ~(0xffffffff >>> take) >>> 0;
    if (((ip[i]! ^ cidr.words[i]!) & mask) >>> 0 !== 0) return false;
    bits -= take;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// The decision tree, one level per criterion. `any` holds the chains that leave it empty.

interface RangeLevel<T> {
  /** Longest prefix first. */
  readonly ranges: { readonly cidr: Cidr; readonly key: string; next: T }[];
  any?: T;
}

type SourceLevel = RangeLevel<FilterChain>;

interface AlpnLevel {
  readonly byProtocol: Map<string, SourceLevel>;
  any?: SourceLevel;
}

interface TransportLevel {
  tls?: AlpnLevel;
  raw?: AlpnLevel;
  any?: AlpnLevel;
}

interface ServerNameLevel {
  readonly exact: Map<string, TransportLevel>;
  /** By suffix including the leading dot (`*.example.com` → `.example.com`). */
  readonly wildcard: Map<string, TransportLevel>;
  any?: TransportLevel;
}

type DestinationIpLevel = RangeLevel<ServerNameLevel>;

interface ChainTree {
  readonly byPort: Map<number, DestinationIpLevel>;
  anyPort?: DestinationIpLevel;
}

const trees = new WeakMap<Listener, ChainTree>();

function rangeChild<T>(level: RangeLevel<T>, ranges: readonly CidrRange[], make: () => T): T[] {
  if (ranges.length === 0) return [(level.any ??= make())];
  const out: T[] = [];
  for (const range of ranges) {
    const cidr = compileCidr(range);
    // An unparsable range can match nothing; config/compile rejects them, this is belt and braces.
    if (cidr === undefined) continue;
    const key = `${cidr.words.join('.')}/${cidr.prefixLen}`;
    let entry = level.ranges.find(r => r.key === key);
    if (!entry) {
      entry = { cidr, key, next: make() };
      level.ranges.push(entry);
      level.ranges.sort((a, b) => b.cidr.prefixLen - a.cidr.prefixLen);
    }
    out.push(entry.next);
  }
  return out;
}

function compileTree(listener: Listener): ChainTree {
  const tree: ChainTree = { byPort: new Map() };
  for (const chain of listener.filterChains) {
    const m = chain.match;
    let ipLevel: DestinationIpLevel;
    if (m.destinationPort === undefined) ipLevel = tree.anyPort ??= { ranges: [] };
    else {
      ipLevel = tree.byPort.get(m.destinationPort) ?? { ranges: [] };
      tree.byPort.set(m.destinationPort, ipLevel);
    }
    for (const sni of rangeChild(ipLevel, m.prefixRanges, newServerNameLevel)) {
      for (const tp of serverNameChildren(sni, m.serverNames)) {
        const alpnLevel =
          m.transportProtocol === 'tls'
            ? (tp.tls ??= newAlpnLevel())
            : m.transportProtocol === 'raw_buffer'
              ? (tp.raw ??= newAlpnLevel())
              : (tp.any ??= newAlpnLevel());
        for (const src of alpnChildren(alpnLevel, m.applicationProtocols)) {
          if (m.sourcePrefixRanges.length === 0) {
            // Envoy rejects two chains with the same match; the first one wins here.
            src.any ??= chain;
            continue;
          }
          for (const range of m.sourcePrefixRanges) {
            const cidr = compileCidr(range);
            if (cidr === undefined) continue;
            const key = `${cidr.words.join('.')}/${cidr.prefixLen}`;
            if (src.ranges.some(r => r.key === key)) continue;
            src.ranges.push({ cidr, key, next: chain });
            src.ranges.sort((a, b) => b.cidr.prefixLen - a.cidr.prefixLen);
          }
        }
      }
    }
  }
  return tree;
}

function newServerNameLevel(): ServerNameLevel {
  return { exact: new Map(), wildcard: new Map() };
}

function newAlpnLevel(): AlpnLevel {
  return { byProtocol: new Map() };
}

function newSourceLevel(): SourceLevel {
  return { ranges: [] };
}

function serverNameChildren(level: ServerNameLevel, names: readonly string[]): TransportLevel[] {
  if (names.length === 0) return [(level.any ??= {})];
  return names.map(raw => {
    const name = raw.toLowerCase();
    const map = name.startsWith('*.') ? level.wildcard : level.exact;
    const key = name.startsWith('*.') ? name.slice(1) : name;
    let next = map.get(key);
    if (!next) map.set(key, (next = {}));
    return next;
  });
}

function alpnChildren(level: AlpnLevel, protocols: readonly string[]): SourceLevel[] {
  if (protocols.length === 0) return [(level.any ??= newSourceLevel())];
  return protocols.map(p => {
    let next = level.byProtocol.get(p);
    if (!next) level.byProtocol.set(p, (next = newSourceLevel()));
    return next;
  });
}

function pickRange<T>(level: RangeLevel<T>, ip: IpWords | undefined): T | undefined {
  if (ip !== undefined) {
    for (const r of level.ranges) if (cidrContains(r.cidr, ip)) return r.next;
  }
  return level.any;
}

function pickServerName(level: ServerNameLevel, name: string): TransportLevel | undefined {
  if (name !== '') {
    const exact = level.exact.get(name);
    if (exact) return exact;
    if (level.wildcard.size > 0) {
      // Longest suffix first: `a.b.example.com` tries `.b.example.com`, then `.example.com`, ….
      for (let dot = name.indexOf('.'); dot >= 0; dot = name.indexOf('.', dot + 1)) {
        const w = level.wildcard.get(name.slice(dot));
        if (w) return w;
      }
    }
  }
  return level.any;
}

/**
 * The filter chain for a connection (Envoy's order and precedence, see the module comment), or
 * the listener's default chain when none matches; undefined when there is neither (close it).
 */
export function selectFilterChain(
  listener: Listener,
  facts: ConnectionFacts,
): FilterChain | undefined {
  let tree = trees.get(listener);
  if (!tree) trees.set(listener, (tree = compileTree(listener)));
  const ipLevel = tree.byPort.get(facts.destinationPort) ?? tree.anyPort;
  if (!ipLevel) return listener.defaultFilterChain;
  const snLevel = pickRange(
    ipLevel,
    ipLevel.ranges.length ? parseIp(facts.destinationAddress) : undefined,
  );
  if (!snLevel) return listener.defaultFilterChain;
  const tpLevel = pickServerName(snLevel, facts.serverName);
  if (!tpLevel) return listener.defaultFilterChain;
  const alpnLevel = (facts.transportProtocol === 'tls' ? tpLevel.tls : tpLevel.raw) ?? tpLevel.any;
  if (!alpnLevel) return listener.defaultFilterChain;
  let srcLevel: SourceLevel | undefined;
  if (alpnLevel.byProtocol.size > 0) {
    for (const p of facts.alpn) {
      srcLevel = alpnLevel.byProtocol.get(p);
      if (srcLevel) break;
    }
  }
  srcLevel ??= alpnLevel.any;
  if (!srcLevel) return listener.defaultFilterChain;
  const chain = pickRange(
    srcLevel,
    srcLevel.ranges.length ? parseIp(facts.sourceAddress) : undefined,
  );
  return chain ?? listener.defaultFilterChain;
}
