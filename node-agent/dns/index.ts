/**
 * The node agent's DNS (docs/dns.md): a resolver on 127.0.0.1:15053 that answers mesh service
 * names from pilot's name table and forwards everything else to the host's own nameservers, and
 * the client that keeps the name table current (and on disk, for starts while pilot is down).
 */
export { DnsServer, type DnsServerOptions, type DnsResult } from './dns-server';
export {
  NameTableClient,
  type NameTableClientOptions,
  type NameTableIdentity,
  type NameTableStatus,
} from './name-table-client';
export { NameIndex, type NameTableEntry, canonicalName } from './names';
export {
  DEFAULT_DNS_LISTEN,
  formatUpstream,
  parseResolvConf,
  parseUpstream,
  type Upstream,
} from './resolv-conf';
