/** The host's own resolver configuration: where the DNS server forwards what is not a mesh name. */
import * as net from 'node:net';
import { parseHostPort } from '../../common/config';

/** The resolver's default listen address, which must never be its own upstream. */
export const DEFAULT_DNS_LISTEN = '127.0.0.1:15053';

/** An upstream nameserver. */
export interface Upstream {
  readonly host: string;
  readonly port: number;
}

/**
 * An upstream written `IP` (port 53), `IP:PORT` or `[IPv6]:PORT`; undefined when malformed. An
 * IPv6 zone (`fe80::1%eth0`) is kept.
 */
export function parseUpstream(text: string): Upstream | undefined {
  const s = text.trim();
  const bare = s.split('%')[0] ?? '';
  if (net.isIP(bare) !== 0) return { host: s, port: 53 };
  const hp = parseHostPort(s);
  if (!hp || hp.port === 0 || net.isIP(hp.host.split('%')[0] ?? '') === 0) return undefined;
  return hp;
}

/** `host:port` (`[v6]:port`) of an upstream, for logs and comparisons. */
export function formatUpstream(u: Upstream): string {
  return u.host.includes(':') ? `[${u.host}]:${u.port}` : `${u.host}:${u.port}`;
}

/**
 * The `nameserver` and `search` lines of a resolv.conf text (glibc's rules: `domain` and `search`
 * replace each other, the last one wins; `#` and `;` start comments). Nameservers that are not IP
 * addresses are skipped, and so is `self` (the agent's own resolver, default 127.0.0.1:15053:
 * forwarding to itself would loop).
 */
export function parseResolvConf(
  text: string,
  self: string = DEFAULT_DNS_LISTEN,
): { nameservers: string[]; search: string[] } {
  const nameservers: string[] = [];
  let search: string[] = [];
  const selfUpstream = parseUpstream(self);
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    if (line === '') continue;
    const [key, ...values] = line.split(/\s+/);
    if (key === 'nameserver' && values[0] !== undefined) {
      const u = parseUpstream(values[0]);
      if (!u) continue;
      if (selfUpstream && formatUpstream(u) === formatUpstream(selfUpstream)) continue;
      if (!nameservers.includes(values[0])) nameservers.push(values[0]);
    } else if (key === 'search' || key === 'domain') {
      search = values.map(v => (v.endsWith('.') ? v.slice(0, -1) : v)).filter(v => v !== '');
    }
  }
  return { nameservers, search };
}
