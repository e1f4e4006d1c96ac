/**
 * The name table (sail.pilot.v1.NameTable, nds.proto): every mesh hostname a node can see, with the
 * addresses its node agent's DNS resolver answers for it (docs/dns.md). Served over ADS like the
 * Envoy types, one resource named "" per node. Istio's `BuildNameTable` (pilot/pkg/xds/nds.go) is
 * the model: a name maps to its VIPs, else to the IPs of its endpoints.
 */
import { NAME_TABLE_TYPE_URL } from '../../../api';
import type { GeneratedResource, ProxyNode, PushContext } from '../model';
import type { Service } from '../../registry/types';
import { ProxyScope, type VisibleService } from './scope';
import { isIpAddress, memo, uniqueSorted, type Obj } from './util';

/** The type URL the node agent subscribes to. */
export const NAME_TABLE_TYPE = NAME_TABLE_TYPE_URL;

/** The single resource's name: the table is one object per node. */
export const NAME_TABLE_RESOURCE = '';

/** One entry of the table, as protobufjs' `fromObject` takes sail.pilot.v1.NameTable.NameInfo. */
export interface NameInfoObject {
  readonly ips: readonly string[];
  readonly registry: string;
  readonly shortname: string;
  readonly namespace: string;
}

/**
 * A ServiceEntry address usable as a DNS answer: a plain IP, or a /32 (/128) that names one IP.
 * Wider CIDRs match traffic by destination but name no single address to answer with.
 */
function vip(address: string): string | undefined {
  const slash = address.indexOf('/');
  if (slash < 0) return isIpAddress(address) ? address : undefined;
  const ip = address.slice(0, slash);
  const bits = address.slice(slash + 1);
  if (!isIpAddress(ip)) return undefined;
  const full = ip.includes(':') ? '128' : '32';
  return bits === full ? ip : undefined;
}

/**
 * The addresses DNS answers for a service: its VIPs when it has any; else the IP endpoints of its
 * visible ports, the healthy ones, or all of them when none is healthy (an answer the proxy can
 * still route beats NXDOMAIN while health flaps). Hostname endpoints (resolution DNS) are left to
 * the host's resolver. Empty: the name is left out and resolved by the host's resolver.
 */
export function serviceIps(push: PushContext, visible: VisibleService): string[] {
  const vips = visible.service.addresses.map(vip).filter((a): a is string => a !== undefined);
  if (vips.length > 0) return uniqueSorted(vips);
  const healthy = new Set<string>();
  const all = new Set<string>();
  for (const port of visible.ports) {
    for (const inst of push.registry.instances(visible.service.hostname, port.port)) {
      const address = inst.endpoint.address;
      if (!isIpAddress(address)) continue;
      all.add(address);
      if (inst.healthy) healthy.add(address);
    }
  }
  return uniqueSorted(healthy.size > 0 ? healthy : all);
}

/** NAME and NAMESPACE of a `NAME.NAMESPACE.svc.SUFFIX` host (as `hostAliases` splits it), else empty. */
export function shortName(
  hostname: string,
  domainSuffix: string,
): { shortname: string; namespace: string } {
  const svcSuffix = `.svc.${domainSuffix}`;
  if (!hostname.endsWith(svcSuffix)) return { shortname: '', namespace: '' };
  const head = hostname.slice(0, -svcSuffix.length);
  const dot = head.lastIndexOf('.');
  if (dot <= 0) return { shortname: '', namespace: '' };
  return { shortname: head.slice(0, dot), namespace: head.slice(dot + 1) };
}

function nameInfo(push: PushContext, visible: VisibleService): NameInfoObject | undefined {
  const service: Service = visible.service;
  // Wildcard hosts (`*.example.com`) name no single address; the host's resolver keeps them.
  if (service.hostname.includes('*')) return undefined;
  const ips = serviceIps(push, visible);
  if (ips.length === 0) return undefined;
  return {
    ips,
    registry: service.source.kind,
    ...shortName(service.hostname, push.mesh.domainSuffix),
  };
}

/**
 * The node's name table as protobufjs' `fromObject` takes sail.pilot.v1.NameTable: hostnames
 * (lower case, sorted, so equal tables encode to equal bytes) of the services the node's scope
 * sees (the same exportTo and Sidecar egress rules as its listeners).
 */
export function nameTable(scope: ProxyScope): Obj {
  return memo(scope.push.cache, `xdsgen|nds|${scope.key}`, () => {
    const table: Record<string, NameInfoObject> = {};
    const entries: [string, NameInfoObject][] = [];
    for (const visible of scope.services) {
      const info = nameInfo(scope.push, visible);
      if (info) entries.push([visible.service.hostname.toLowerCase(), info]);
    }
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    for (const [host, info] of entries) if (!(host in table)) table[host] = info;
    return { table };
  });
}

/**
 * The name table resource for `proxy`: always exactly one (possibly empty) table, so a client
 * learns that names went away. `names` (a SotW subscription) is ignored unless it names neither
 * the table nor a wildcard.
 */
export function generateNameTable(
  proxy: ProxyNode,
  push: PushContext,
  names: readonly string[],
): GeneratedResource[] {
  if (names.length > 0 && !names.includes(NAME_TABLE_RESOURCE) && !names.includes('*')) return [];
  return [{ name: NAME_TABLE_RESOURCE, resource: nameTable(new ProxyScope(proxy, push)) }];
}

/** Nodes with equal keys get the same table in one push (their services are scoped alike). */
export function nameTableCacheKey(proxy: ProxyNode, push: PushContext): string {
  return `nds|${new ProxyScope(proxy, push).key}`;
}
