/**
 * Capture rules as data (pure, no I/O): a {@link CaptureSpec} becomes the rules of each table in
 * `iptables-save` form, so that what `verify` reads back can be compared line by line with what
 * `install` applies. The semantics are Istio 1.0's `istio-iptables.sh` (see
 * shared/reference/istio-0.2-1.0.md §3.3) with the later fixes: a distinct inbound port, SSH and
 * Sail's own ports never captured inbound, owner exclusions for both uid and gid, and one
 * `iptables-restore` transaction instead of a sequence of `iptables` calls.
 *
 * Every rule is written exactly as iptables-save prints it (addresses with a prefix, `-m tcp`
 * before `--dport`, MARK as `--set-xmark`, TPROXY with `--on-ip`), for both the nft and the legacy
 * backends, and carries `-m comment --comment sail`.
 */
import * as net from 'node:net';
import { InvalidInputError } from '../../common/errors';
import type { CaptureFamily, CaptureSpec } from './types';

/** The comment every Sail rule carries. */
export const SAIL_COMMENT = 'sail';

/** Sail's chains (Istio's names with our prefix). */
export const SAIL_CHAINS = {
  /** nat: outbound decisions, jumped to from OUTPUT. */
  output: 'SAIL_OUTPUT',
  /** nat (redirect) or mangle (tproxy): inbound decisions, jumped to from PREROUTING. */
  inbound: 'SAIL_INBOUND',
  /** nat: REDIRECT to the outbound port. */
  redirect: 'SAIL_REDIRECT',
  /** nat: REDIRECT to the inbound port. */
  inRedirect: 'SAIL_IN_REDIRECT',
  /** mangle (tproxy): marks packets of connections the proxy already owns. */
  divert: 'SAIL_DIVERT',
  /** mangle (tproxy): TPROXY to the inbound port. */
  tproxy: 'SAIL_TPROXY',
  /**
   * mangle (tproxy), jumped to from OUTPUT: the proxy's connections that keep a caller's address
   * (SO_MARK 1337) remember the mark, and the application's replies on them get it back, so the
   * policy route brings the replies to the proxy instead of sending them to the caller.
   */
  reply: 'SAIL_REPLY',
} as const;

/** True for a chain name Sail owns. */
export function isSailChain(name: string): boolean {
  return name.startsWith('SAIL_');
}

/** SSH: never captured inbound, whatever the config says, so a bad config cannot lock anyone out. */
export const SSH_PORT = 22;
/**
 * Sail's own listening ports, never captured inbound: proxy admin, outbound, inbound, the control
 * plane's pilot, CA and admin (a host may run it too), agent status, agent DNS, proxy metrics.
 */
export const SAIL_PORTS: readonly number[] = [
  15000, 15001, 15006, 15010, 15012, 15014, 15020, 15053, 15090,
];
/** The packet mark TPROXY sets and the policy route matches (Istio 1.0's value). */
export const TPROXY_MARK = 1337;
/** The routing table that delivers marked packets locally (Istio 1.0's value). */
export const TPROXY_ROUTE_TABLE = 133;

/** The iptables tables Sail writes to. */
export type CaptureTable = 'nat' | 'mangle';

/** A rule in one of the built-in chains that sends packets into Sail's chains. */
export interface JumpRule {
  /** The built-in chain, e.g. PREROUTING. */
  readonly chain: string;
  /** The rule after `-A CHAIN `, in iptables-save form. */
  readonly spec: string;
}

/** Sail's part of one table. */
export interface TableRules {
  readonly table: CaptureTable;
  /** Sail chains to create, in declaration order. */
  readonly chains: readonly string[];
  /** Rules inside Sail's chains, each a full `-A SAIL_… …` line in iptables-save form. */
  readonly rules: readonly string[];
  /** Jumps from built-in chains, inserted at the top of their chain in this order. */
  readonly jumps: readonly JumpRule[];
}

/** Everything Sail installs for one address family. */
export interface FamilyRules {
  readonly family: CaptureFamily;
  readonly tables: readonly TableRules[];
}

/** A parsed `*`/empty/list value. */
type Selection<T> = { readonly all: true } | { readonly all: false; readonly items: readonly T[] };

function splitList(text: string): string[] {
  return text
    .split(',')
    .map(s => s.trim())
    .filter(s => s !== '');
}

/**
 * Parses a port list (`*` allowed when `allowAll`).
 * @throws InvalidInputError naming `field` for anything but ports 1-65535
 */
export function parsePorts(field: string, text: string, allowAll: boolean): Selection<number> {
  const t = text.trim();
  if (allowAll && t === '*') return { all: true };
  const items: number[] = [];
  for (const item of splitList(t)) {
    if (!/^\d{1,5}$/.test(item) || Number(item) < 1 || Number(item) > 65535) {
      throw new InvalidInputError(
        `${field}: ${JSON.stringify(item)} is not a port (want 1-65535${allowAll ? ', or "*" for all' : ''})`,
      );
    }
    if (!items.includes(Number(item))) items.push(Number(item));
  }
  return { all: false, items };
}

/** A CIDR in iptables-save form: host bits cleared, IPv6 compressed, prefix always present. */
export interface Cidr {
  readonly family: CaptureFamily;
  readonly text: string;
}

function ipv6Words(ip: string): number[] {
  // The WHATWG URL parser validates and canonicalises IPv6 (embedded IPv4 becomes hex words).
  const canonical = new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  const [head = '', tail] = canonical.split('::');
  const words = (s: string) => (s === '' ? [] : s.split(':').map(w => parseInt(w, 16)));
  const h = words(head);
  const t = tail === undefined ? [] : words(tail);
  return [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
}

function formatIpv6(words: readonly number[]): string {
  return new URL(`http://[${words.map(w => w.toString(16)).join(':')}]/`).hostname.slice(1, -1);
}

/**
 * Parses `IP` or `IP/PREFIX` into iptables-save form (`10.1.2.3/8` → `10.0.0.0/8`).
 * @throws InvalidInputError naming `field` when it is not a CIDR
 */
export function parseCidr(field: string, text: string): Cidr {
  const [ip = '', prefixText, extra] = text.split('/');
  const version = net.isIP(ip);
  const max = version === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (
    version === 0 ||
    extra !== undefined ||
    (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText)) ||
    prefix > max
  ) {
    throw new InvalidInputError(
      `${field}: ${JSON.stringify(text)} is not a CIDR (want e.g. 10.0.0.0/8 or fd00::/8)`,
    );
  }
  if (version === 4) {
    const n = ip.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
    const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
    const m = (n & mask) >>> 0;
    const addr = [24, 16, 8, 0].map(s => (m >>> s) & 255).join('.');
    return { family: 'ipv4', text: `${addr}/${prefix}` };
  }
  const words = ipv6Words(ip).map((w, i) => {
    const bits = Math.max(0, Math.min(16, prefix - i * 16));
    return bits === 16 ? w : bits === 0 ? 0 : w & ((0xffff << (16 - bits)) & 0xffff);
  });
  return { family: 'ipv6', text: `${formatIpv6(words)}/${prefix}` };
}

/**
 * Parses a CIDR list (`*` allowed when `allowAll`).
 * @throws InvalidInputError naming `field`
 */
export function parseCidrs(field: string, text: string, allowAll: boolean): Selection<Cidr> {
  const t = text.trim();
  if (allowAll && t === '*') return { all: true };
  return { all: false, items: splitList(t).map(item => parseCidr(field, item)) };
}

function isPort(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= 65535;
}

/**
 * Checks a spec completely, so that a bad value is reported by name before any rule is applied.
 * @throws InvalidInputError naming the field and the value
 */
export function validateCaptureSpec(spec: CaptureSpec): void {
  if ((spec.mode as string) !== 'redirect' && (spec.mode as string) !== 'tproxy') {
    throw new InvalidInputError(
      `capture.mode: ${JSON.stringify(spec.mode)} is not redirect or tproxy`,
    );
  }
  for (const [field, id] of [
    ['proxyUid', spec.proxyUid],
    ['proxyGid', spec.proxyGid],
  ] as const) {
    if (!Number.isInteger(id) || id < 0 || id > 0xfffffffe) {
      throw new InvalidInputError(`${field}: ${String(id)} is not a uid/gid number`);
    }
  }
  for (const [field, port] of [
    ['outboundPort', spec.outboundPort],
    ['inboundPort', spec.inboundPort],
    ...(spec.dns ? ([['dns.port', spec.dns.port]] as const) : []),
  ] as const) {
    if (!isPort(port)) throw new InvalidInputError(`${field}: ${String(port)} is not a port`);
  }
  parseCidrs('capture.includeOutboundCidrs', spec.includeOutboundCidrs, true);
  parseCidrs('capture.excludeOutboundCidrs', spec.excludeOutboundCidrs, false);
  parsePorts('capture.includeInboundPorts', spec.includeInboundPorts, true);
  parsePorts('capture.excludeInboundPorts', spec.excludeInboundPorts, false);
  parsePorts('capture.excludeOutboundPorts', spec.excludeOutboundPorts ?? '', false);
  for (const ns of spec.dns?.nameservers ?? []) {
    if (net.isIP(ns) === 0) {
      throw new InvalidInputError(`dns.nameservers: ${JSON.stringify(ns)} is not an IP address`);
    }
  }
  if (spec.ipv6 !== 'auto' && typeof spec.ipv6 !== 'boolean') {
    throw new InvalidInputError(
      `capture.ipv6: ${JSON.stringify(spec.ipv6)} is not "auto", true or false`,
    );
  }
}

/** The inbound ports that are never captured, in rule order: SSH, Sail's own, then the configured ones. */
export function inboundExcludedPorts(spec: CaptureSpec): number[] {
  const ports = [SSH_PORT, ...SAIL_PORTS, spec.outboundPort, spec.inboundPort];
  if (spec.dns) ports.push(spec.dns.port);
  const configured = parsePorts('capture.excludeInboundPorts', spec.excludeInboundPorts, false);
  if (!configured.all) ports.push(...configured.items);
  return ports.filter((p, i) => ports.indexOf(p) === i);
}

const COMMENT = `-m comment --comment ${SAIL_COMMENT}`;

/** One rule in iptables-save order: addresses, interface, protocol, the comment, matches, target. */
function spec(parts: {
  d?: string;
  notD?: string;
  o?: string;
  p?: 'tcp' | 'udp';
  m?: string;
  j: string;
}): string {
  const out: string[] = [];
  if (parts.notD) out.push(`! -d ${parts.notD}`);
  if (parts.d) out.push(`-d ${parts.d}`);
  if (parts.o) out.push(`-o ${parts.o}`);
  if (parts.p) out.push(`-p ${parts.p}`);
  out.push(COMMENT);
  if (parts.m) out.push(parts.m);
  out.push(`-j ${parts.j}`);
  return out.join(' ');
}

const dport = (p: 'tcp' | 'udp', port: number) => `-m ${p} --dport ${port}`;

/**
 * Matches TCP segments that do not open a connection (how iptables-save prints `! --syn`). nat
 * rules see only a connection's first packet, but conntrack runs in a namespace only once a nat
 * rule exists there: a connection opened before capture was installed (the agent's own streams
 * to pilot, an application's long-lived connection) is then picked up mid-stream, and without
 * this guard its next segment would be redirected to the proxy, which answers with a reset.
 */
const NOT_SYN = '-m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN';

/**
 * The rules Sail installs for one address family. Chains and their order:
 *
 * nat OUTPUT → SAIL_OUTPUT (tcp, and udp/53 with DNS capture):
 *   0. TCP segments that do not open a connection RETURN (NOT_SYN: connections older than the
 *      rules are left alone);
 *   1. the proxy's uid and gid RETURN (its own connections, and the agent's, must not loop);
 *   2. DNS: udp and tcp port 53 to each nameserver of this family → REDIRECT to dns.port;
 *   3. connections to this host's own non-loopback addresses (`-o lo`) go to SAIL_INBOUND in
 *      redirect mode (inbound policy applies), then any other `-o lo` RETURN;
 *   4. loopback (127.0.0.1/32, ::1/128) RETURN;
 *   5. excluded outbound ports, then excluded CIDRs RETURN;
 *   6. included CIDRs (or all with `*`) → SAIL_REDIRECT → REDIRECT to outboundPort.
 *
 * Inbound (nat PREROUTING → SAIL_INBOUND for redirect; mangle PREROUTING → SAIL_INBOUND for tproxy):
 * (redirect) TCP segments that do not open a connection RETURN; SSH 22, Sail's ports and the configured exclusions RETURN; then all (`*`) or each listed port →
 * SAIL_IN_REDIRECT (REDIRECT to inboundPort), or for tproxy: the proxy's own marked connections
 * to the application RETURN, packets of sockets the proxy already owns → SAIL_DIVERT (mark,
 * accept), new ones → SAIL_TPROXY; and mangle OUTPUT → SAIL_REPLY saves the mark of the proxy's
 * marked connections and restores it on the application's replies (original_src). An empty
 * includeInboundPorts installs no inbound rules at all.
 *
 * @throws InvalidInputError when the spec is invalid (see {@link validateCaptureSpec})
 */
export function buildCaptureRules(s: CaptureSpec, family: CaptureFamily): FamilyRules {
  validateCaptureSpec(s);
  const loopback = family === 'ipv4' ? '127.0.0.1/32' : '::1/128';
  const include = parseCidrs('capture.includeOutboundCidrs', s.includeOutboundCidrs, true);
  const exclude = parseCidrs('capture.excludeOutboundCidrs', s.excludeOutboundCidrs, false);
  const inPorts = parsePorts('capture.includeInboundPorts', s.includeInboundPorts, true);
  const outExcluded = parsePorts(
    'capture.excludeOutboundPorts',
    s.excludeOutboundPorts ?? '',
    false,
  );
  const ofFamily = (sel: Selection<Cidr>) =>
    sel.all ? [] : sel.items.filter(c => c.family === family).map(c => c.text);
  const nameservers = (s.dns?.nameservers ?? [])
    .map(ns => parseCidr('dns.nameservers', ns))
    .filter(c => c.family === family)
    .map(c => c.text);
  const inbound = inPorts.all || inPorts.items.length > 0;
  const redirectInbound = inbound && s.mode === 'redirect';
  const C = SAIL_CHAINS;
  const A = (chain: string, rule: string) => `-A ${chain} ${rule}`;

  // nat
  const nat: string[] = [];
  nat.push(A(C.redirect, spec({ p: 'tcp', j: `REDIRECT --to-ports ${s.outboundPort}` })));
  nat.push(A(C.inRedirect, spec({ p: 'tcp', j: `REDIRECT --to-ports ${s.inboundPort}` })));
  const natChains: string[] = [C.output, C.redirect, C.inRedirect];
  const natJumps: JumpRule[] = [];
  if (redirectInbound) {
    natChains.splice(1, 0, C.inbound);
    natJumps.push({ chain: 'PREROUTING', spec: spec({ p: 'tcp', j: C.inbound }) });
    nat.push(A(C.inbound, spec({ p: 'tcp', m: NOT_SYN, j: 'RETURN' })));
    for (const port of inboundExcludedPorts(s)) {
      nat.push(A(C.inbound, spec({ p: 'tcp', m: dport('tcp', port), j: 'RETURN' })));
    }
    if (inPorts.all) nat.push(A(C.inbound, spec({ p: 'tcp', j: C.inRedirect })));
    else {
      const excluded = inboundExcludedPorts(s);
      for (const port of inPorts.items.filter(p => !excluded.includes(p))) {
        nat.push(A(C.inbound, spec({ p: 'tcp', m: dport('tcp', port), j: C.inRedirect })));
      }
    }
  }
  // Outbound. Owner exclusions come first, before DNS, because the agent's DNS server (same gid)
  // forwards to these very nameservers.
  natJumps.push({ chain: 'OUTPUT', spec: spec({ p: 'tcp', j: C.output }) });
  if (nameservers.length > 0) {
    natJumps.push({ chain: 'OUTPUT', spec: spec({ p: 'udp', m: dport('udp', 53), j: C.output }) });
  }
  nat.push(A(C.output, spec({ p: 'tcp', m: NOT_SYN, j: 'RETURN' })));
  if (redirectInbound) {
    // The proxy calling this host's own address (a service whose endpoint is this host): through
    // the inbound side like any caller, so its mutual TLS is terminated there (Istio's rule).
    // Only the proxy's uid, not the gid the agent shares; its inbound clusters dial 127.0.0.1,
    // which this does not match, and ports no workload declares are refused, so nothing loops.
    nat.push(
      A(
        C.output,
        spec({
          notD: loopback,
          o: 'lo',
          p: 'tcp',
          m: `-m owner --uid-owner ${s.proxyUid}`,
          j: C.inbound,
        }),
      ),
    );
  }
  nat.push(A(C.output, spec({ m: `-m owner --uid-owner ${s.proxyUid}`, j: 'RETURN' })));
  nat.push(A(C.output, spec({ m: `-m owner --gid-owner ${s.proxyGid}`, j: 'RETURN' })));
  const dnsTarget = `REDIRECT --to-ports ${s.dns?.port ?? 0}`;
  for (const ns of nameservers) {
    nat.push(A(C.output, spec({ d: ns, p: 'udp', m: dport('udp', 53), j: dnsTarget })));
    nat.push(A(C.output, spec({ d: ns, p: 'tcp', m: dport('tcp', 53), j: dnsTarget })));
  }
  if (redirectInbound) {
    nat.push(A(C.output, spec({ notD: loopback, o: 'lo', p: 'tcp', j: C.inbound })));
  }
  nat.push(A(C.output, spec({ o: 'lo', j: 'RETURN' })));
  nat.push(A(C.output, spec({ d: loopback, j: 'RETURN' })));
  if (!outExcluded.all) {
    for (const port of outExcluded.items) {
      nat.push(A(C.output, spec({ p: 'tcp', m: dport('tcp', port), j: 'RETURN' })));
    }
  }
  for (const cidr of ofFamily(exclude)) nat.push(A(C.output, spec({ d: cidr, j: 'RETURN' })));
  if (include.all) nat.push(A(C.output, spec({ p: 'tcp', j: C.redirect })));
  else {
    for (const cidr of ofFamily(include)) {
      nat.push(A(C.output, spec({ d: cidr, p: 'tcp', j: C.redirect })));
    }
  }
  const tables: TableRules[] = [{ table: 'nat', chains: natChains, rules: nat, jumps: natJumps }];

  // mangle (tproxy inbound)
  if (inbound && s.mode === 'tproxy') {
    const mangle: string[] = [];
    const anyIp = family === 'ipv4' ? '0.0.0.0' : '::';
    const mark = `0x${TPROXY_MARK.toString(16)}/0xffffffff`;
    const marked = `-m mark --mark 0x${TPROXY_MARK.toString(16)}`;
    const masks = '--nfmask 0xffffffff --ctmask 0xffffffff';
    // The proxy's own connections to the application, from a caller's address: not TPROXYed back
    // to it (the application listens on a wildcard address, which `-m socket` does not match).
    mangle.push(A(C.inbound, spec({ p: 'tcp', m: marked, j: 'RETURN' })));
    mangle.push(A(C.reply, spec({ p: 'tcp', m: marked, j: `CONNMARK --save-mark ${masks}` })));
    mangle.push(
      A(
        C.reply,
        spec({
          p: 'tcp',
          m: `-m connmark --mark 0x${TPROXY_MARK.toString(16)}`,
          j: `CONNMARK --restore-mark ${masks}`,
        }),
      ),
    );
    mangle.push(A(C.divert, spec({ j: `MARK --set-xmark ${mark}` })));
    mangle.push(A(C.divert, spec({ j: 'ACCEPT' })));
    mangle.push(
      A(
        C.tproxy,
        spec({
          notD: loopback,
          p: 'tcp',
          j: `TPROXY --on-port ${s.inboundPort} --on-ip ${anyIp} --tproxy-mark ${mark}`,
        }),
      ),
    );
    for (const port of inboundExcludedPorts(s)) {
      mangle.push(A(C.inbound, spec({ p: 'tcp', m: dport('tcp', port), j: 'RETURN' })));
    }
    const excluded = inboundExcludedPorts(s);
    const ports = inPorts.all ? [undefined] : inPorts.items.filter(p => !excluded.includes(p));
    for (const port of ports) {
      const m = port === undefined ? '' : `${dport('tcp', port)} `;
      mangle.push(A(C.inbound, spec({ p: 'tcp', m: `${m}-m socket`, j: C.divert })));
      mangle.push(A(C.inbound, spec({ p: 'tcp', ...(m ? { m: m.trimEnd() } : {}), j: C.tproxy })));
    }
    tables.push({
      table: 'mangle',
      chains: [C.inbound, C.divert, C.tproxy, C.reply],
      rules: mangle,
      jumps: [
        { chain: 'PREROUTING', spec: spec({ p: 'tcp', j: C.inbound }) },
        { chain: 'OUTPUT', spec: spec({ p: 'tcp', j: C.reply }) },
      ],
    });
  }
  return { family, tables };
}

/**
 * The rules as an `iptables-restore --noflush` payload, for `sail capture show` and as the
 * install half of the transaction: chains declared, jumps inserted at the top of their built-in
 * chain (before Docker's and anyone else's), then the chains' rules.
 */
export function renderRules(rules: FamilyRules): string {
  const lines: string[] = [];
  for (const t of rules.tables) {
    lines.push(`*${t.table}`);
    for (const chain of t.chains) lines.push(`:${chain} - [0:0]`);
    lines.push(...insertJumps(t.jumps));
    lines.push(...t.rules);
    lines.push('COMMIT');
  }
  return `${lines.join('\n')}\n`;
}

function insertJumps(jumps: readonly JumpRule[]): string[] {
  const position = new Map<string, number>();
  return jumps.map(j => {
    const n = (position.get(j.chain) ?? 0) + 1;
    position.set(j.chain, n);
    return `-I ${j.chain} ${n} ${j.spec}`;
  });
}

/** Sail's rules found in one table of an `iptables-save` dump. */
export interface InstalledTable {
  readonly table: string;
  /** Sail chains that exist. */
  readonly chains: readonly string[];
  /** `-A SAIL_… …` lines, in order. */
  readonly rules: readonly string[];
  /** Rules in other chains that jump into Sail's chains or carry Sail's comment. */
  readonly jumps: readonly JumpRule[];
  /** The rules of each built-in chain that holds a Sail jump, in order (to check positions). */
  readonly builtinRules: ReadonlyMap<string, readonly string[]>;
}

/**
 * Extracts Sail's chains, rules and jumps from `iptables-save` output (all tables). Tables without
 * anything of Sail's are omitted.
 */
export function parseInstalled(saveOutput: string): InstalledTable[] {
  const tables: InstalledTable[] = [];
  let current:
    | {
        table: string;
        chains: string[];
        rules: string[];
        jumps: JumpRule[];
        all: Map<string, string[]>;
      }
    | undefined;
  for (const raw of saveOutput.split('\n')) {
    const line = raw.trimEnd();
    if (line.startsWith('*')) {
      current = { table: line.slice(1), chains: [], rules: [], jumps: [], all: new Map() };
    } else if (!current) {
      continue;
    } else if (line === 'COMMIT') {
      if (current.chains.length > 0 || current.jumps.length > 0) {
        const withJumps = new Set(current.jumps.map(j => j.chain));
        const builtinRules = new Map([...current.all].filter(([chain]) => withJumps.has(chain)));
        tables.push({
          table: current.table,
          chains: current.chains,
          rules: current.rules,
          jumps: current.jumps,
          builtinRules,
        });
      }
      current = undefined;
    } else if (line.startsWith(':')) {
      const name = line.slice(1).split(' ')[0] ?? '';
      if (isSailChain(name)) current.chains.push(name);
    } else if (line.startsWith('-A ')) {
      const rest = line.slice(3);
      const space = rest.indexOf(' ');
      const chain = space < 0 ? rest : rest.slice(0, space);
      const ruleSpec = space < 0 ? '' : rest.slice(space + 1);
      if (isSailChain(chain)) {
        current.rules.push(line);
      } else {
        const list = current.all.get(chain) ?? [];
        list.push(ruleSpec);
        current.all.set(chain, list);
        if (isSailRule(ruleSpec)) current.jumps.push({ chain, spec: ruleSpec });
      }
    }
  }
  return tables;
}

/** True for a rule (after `-A CHAIN`) that belongs to Sail: it targets a Sail chain or carries our comment. */
function isSailRule(ruleSpec: string): boolean {
  return (
    /(^| )-[jg] SAIL_\S+/.test(ruleSpec) ||
    new RegExp(`(^| )--comment "?${SAIL_COMMENT}"?( |$)`).test(ruleSpec)
  );
}

/**
 * One `iptables-restore --noflush` payload that first removes every trace of Sail found in
 * `installed` (stale jumps deleted, chains flushed and, unless reused, deleted) and then, when
 * `rules` is given, installs them: crash cleanup and install in a single transaction, so the host
 * is never left half-captured. Returns '' when there is nothing to do (no table is touched, so
 * none is created).
 */
export function buildRestorePayload(
  installed: readonly InstalledTable[],
  rules: FamilyRules | undefined,
): string {
  const names = new Set<string>([
    ...installed.map(t => t.table),
    ...(rules?.tables.map(t => t.table) ?? []),
  ]);
  const order = ['raw', 'mangle', 'nat', 'filter', 'security'];
  const tableNames = [...names].sort((a, b) => order.indexOf(a) - order.indexOf(b));
  const lines: string[] = [];
  for (const name of tableNames) {
    const old = installed.find(t => t.table === name);
    const want = rules?.tables.find(t => t.table === name);
    const existing = new Set(old?.chains ?? []);
    const wanted = new Set(want?.chains ?? []);
    lines.push(`*${name}`);
    // Declarations first: iptables-restore wants a chain to exist before a rule names it.
    for (const chain of want?.chains ?? []) {
      if (!existing.has(chain)) lines.push(`:${chain} - [0:0]`);
    }
    for (const j of old?.jumps ?? []) lines.push(`-D ${j.chain} ${j.spec}`);
    for (const chain of old?.chains ?? []) lines.push(`-F ${chain}`);
    for (const chain of old?.chains ?? []) if (!wanted.has(chain)) lines.push(`-X ${chain}`);
    if (want) {
      lines.push(...insertJumps(want.jumps));
      lines.push(...want.rules);
    }
    lines.push('COMMIT');
  }
  return lines.length > 0 ? `${lines.join('\n')}\n` : '';
}

/**
 * Compares what is installed with what `rules` would install, table by table and chain by chain.
 * Returns readable differences, each prefixed with `family table`; empty means up to date.
 * Sail's jumps must be the first rules of their built-in chains, in order.
 */
export function diffInstalled(
  family: CaptureFamily,
  installed: readonly InstalledTable[],
  rules: FamilyRules,
): string[] {
  const out: string[] = [];
  const names = new Set([...installed.map(t => t.table), ...rules.tables.map(t => t.table)]);
  for (const name of names) {
    const at = `${family} ${name}`;
    const have = installed.find(t => t.table === name);
    const want = rules.tables.find(t => t.table === name);
    const haveChains = have?.chains ?? [];
    const wantChains = want?.chains ?? [];
    for (const c of wantChains)
      if (!haveChains.includes(c)) out.push(`${at}: chain ${c} is missing`);
    for (const c of haveChains)
      if (!wantChains.includes(c)) out.push(`${at}: unexpected chain ${c}`);
    // Rules, chain by chain.
    const byChain = (lines: readonly string[]) => {
      const m = new Map<string, string[]>();
      for (const l of lines) {
        const chain = l.split(' ')[1] ?? '';
        m.set(chain, [...(m.get(chain) ?? []), l]);
      }
      return m;
    };
    const haveRules = byChain(have?.rules ?? []);
    const wantRules = byChain(want?.rules ?? []);
    for (const chain of new Set([...haveRules.keys(), ...wantRules.keys()])) {
      if (!haveChains.includes(chain) && !wantChains.includes(chain)) continue;
      const h = haveRules.get(chain) ?? [];
      const w = wantRules.get(chain) ?? [];
      out.push(...diffLines(`${at} ${chain}`, h, w));
    }
    // Jumps: present, and first in their chain.
    const haveJumps = (have?.jumps ?? []).map(j => `-A ${j.chain} ${j.spec}`);
    const wantJumps = (want?.jumps ?? []).map(j => `-A ${j.chain} ${j.spec}`);
    for (const j of wantJumps) if (!haveJumps.includes(j)) out.push(`${at}: missing jump: ${j}`);
    for (const j of haveJumps) if (!wantJumps.includes(j)) out.push(`${at}: unexpected rule: ${j}`);
    for (const chain of new Set((want?.jumps ?? []).map(j => j.chain))) {
      const expected = (want?.jumps ?? []).filter(j => j.chain === chain).map(j => j.spec);
      const actual = have?.builtinRules.get(chain) ?? [];
      const present = expected.every(e => actual.includes(e));
      if (present && expected.some((e, i) => actual[i] !== e)) {
        out.push(
          `${at}: Sail's jumps are not the first rules of ${chain} (another rule was inserted before them)`,
        );
      }
    }
  }
  return out;
}

function diffLines(at: string, have: readonly string[], want: readonly string[]): string[] {
  const out: string[] = [];
  for (const w of want) if (!have.includes(w)) out.push(`${at}: missing rule: ${w}`);
  for (const h of have) if (!want.includes(h)) out.push(`${at}: unexpected rule: ${h}`);
  if (out.length === 0 && (have.length !== want.length || have.some((h, i) => h !== want[i]))) {
    out.push(`${at}: rules are in a different order (or duplicated)`);
  }
  return out;
}
