/**
 * The service model from configuration: ServiceEntry hosts become Services, and their endpoints,
 * the WorkloadEntries and the registered hosts their `workloadSelector` picks become
 * ServiceInstances (Istio's `serviceentry` registry, pilot/pkg/serviceregistry/serviceentry).
 * Pure functions: the registry (registry.ts) decides when to call them.
 */
import { formatSpiffeId } from '../../common/pki';
import type {
  ConfigKey,
  ConfigObject,
  Location,
  Resolution,
  ServicePort,
  WorkloadEntrySpec,
} from '../config/types';
import type { Protocol, Service, ServiceInstance, ServicePortModel } from './types';
import { type RegisteredWorkload, TLS_MODE_LABEL } from './workloads';

/** Port-name prefixes (before the first `-`) and protocol names, lower-case, to their Protocol. */
const PROTOCOLS: Readonly<Record<string, Protocol>> = {
  http: 'HTTP',
  http2: 'HTTP2',
  grpc: 'GRPC',
  https: 'HTTPS',
  tls: 'TLS',
  tcp: 'TCP',
  mongo: 'MONGO',
  redis: 'REDIS',
  udp: 'UDP',
};

/**
 * The protocol of a port: its `protocol` when given (case-insensitive), else the prefix of its
 * name before the first `-` (`http-api` is HTTP, `grpc` is GRPC). Anything unknown is TCP: opaque
 * bytes, which always works (Istio 1.0 `ParseProtocol`, §6.6).
 */
export function protocolOf(name: string, protocol?: string): Protocol {
  if (protocol) return PROTOCOLS[protocol.toLowerCase()] ?? 'TCP';
  const prefix = name.split('-', 1)[0] ?? '';
  return PROTOCOLS[prefix.toLowerCase()] ?? 'TCP';
}

/** True when every label of `selector` is in `labels` (an empty selector picks everything). */
export function selects(
  selector: Readonly<Record<string, string>> | undefined,
  labels: Readonly<Record<string, string>>,
): boolean {
  for (const [k, v] of Object.entries(selector ?? {})) if (labels[k] !== v) return false;
  return true;
}

/** A workload a ServiceEntry's `workloadSelector` may pick: a WorkloadEntry or a registered host. */
export interface SelectableWorkload {
  /** `NAMESPACE/NAME` (WorkloadEntry) or `NAMESPACE/NODE` (registered). */
  readonly name: string;
  readonly namespace: string;
  readonly address: string;
  readonly labels: Readonly<Record<string, string>>;
  /** Port name → port number on the workload. */
  readonly ports: Readonly<Record<string, number>>;
  /** SPIFFE ID, when the workload has a service account. */
  readonly spiffeId?: string;
  /** Registered hosts only. */
  readonly node?: string;
  readonly healthy: boolean;
  readonly locality?: string;
  readonly weight: number;
  readonly tlsMode: 'istio' | 'disabled';
}

/** `istio` unless the labels say `security.istio.io/tlsMode: disabled` (or default says so). */
function tlsModeOf(
  labels: Readonly<Record<string, string>> | undefined,
  fallback: 'istio' | 'disabled',
): 'istio' | 'disabled' {
  const v = labels?.[TLS_MODE_LABEL];
  return v === 'disabled' ? 'disabled' : v === 'istio' ? 'istio' : fallback;
}

/** A WorkloadEntry as a selectable workload: it runs our proxy, so mTLS unless labelled otherwise. */
export function workloadFromEntry(
  obj: ConfigObject<'WorkloadEntry'>,
  trustDomain: string,
): SelectableWorkload {
  const { namespace, name } = obj.metadata;
  const spec = obj.spec;
  return {
    name: `${namespace}/${name}`,
    namespace,
    address: spec.address ?? '',
    labels: spec.labels ?? {},
    ports: spec.ports ?? {},
    ...(spec.serviceAccount
      ? {
          spiffeId: formatSpiffeId({ trustDomain, namespace, serviceAccount: spec.serviceAccount }),
        }
      : {}),
    healthy: true,
    ...(spec.locality ? { locality: spec.locality } : {}),
    weight: spec.weight || 1,
    tlsMode: tlsModeOf(spec.labels, 'istio'),
  };
}

/** A registered host as a selectable workload: healthy as it last reported. */
export function workloadFromRegistration(w: RegisteredWorkload): SelectableWorkload {
  return {
    name: w.name,
    namespace: w.namespace,
    address: w.address,
    labels: w.labels,
    ports: Object.fromEntries(w.ports.map(p => [p.name, p.port])),
    spiffeId: w.spiffeId,
    node: w.node,
    healthy: w.healthy,
    ...(w.locality ? { locality: w.locality } : {}),
    weight: w.weight,
    tlsMode: tlsModeOf(w.labels, 'istio'),
  };
}

/** What one ServiceEntry contributes, per host. */
export interface DerivedHost {
  readonly service: Service;
  readonly instances: readonly ServiceInstance[];
}

/** The services of one ServiceEntry, by hostname (the order of `spec.hosts`). */
export type DerivedServiceEntry = ReadonlyMap<string, DerivedHost>;

/** The config key of an object. */
export function keyOf(obj: ConfigObject): ConfigKey {
  return { kind: obj.kind, namespace: obj.metadata.namespace, name: obj.metadata.name };
}

/** `exportTo` with `.` resolved to the namespace; default (and empty) `*`. */
export function resolveExportTo(exportTo: readonly string[] | undefined, namespace: string) {
  if (!exportTo || exportTo.length === 0) return ['*'];
  return [...new Set(exportTo.map(e => (e === '.' ? namespace : e)))];
}

function toPortModel(p: ServicePort): ServicePortModel {
  return {
    name: p.name,
    port: p.number,
    protocol: protocolOf(p.name, p.protocol),
    ...(p.targetPort ? { targetPort: p.targetPort } : {}),
  };
}

/** The endpoint port for service port `sp`: the workload's port of that name, else targetPort, else the service port. */
function endpointPort(ports: Readonly<Record<string, number>> | undefined, sp: ServicePortModel) {
  return ports?.[sp.name] ?? sp.targetPort ?? sp.port;
}

/** One endpoint of a ServiceEntry's hosts: an inline endpoint or a selected workload. */
export interface EntryEndpoint {
  readonly address: string;
  /** Port name → port on the endpoint. */
  readonly ports?: Readonly<Record<string, number>>;
  readonly labels: Readonly<Record<string, string>>;
  readonly spiffeId?: string;
  readonly workload: string;
  readonly node?: string;
  readonly healthy: boolean;
  readonly locality?: string;
  readonly weight: number;
  readonly tlsMode: 'istio' | 'disabled';
}

/** A selected workload as an endpoint. */
export function endpointOf(w: SelectableWorkload): EntryEndpoint {
  return {
    address: w.address,
    ports: w.ports,
    labels: w.labels,
    ...(w.spiffeId ? { spiffeId: w.spiffeId } : {}),
    workload: w.name,
    ...(w.node ? { node: w.node } : {}),
    healthy: w.healthy,
    ...(w.locality ? { locality: w.locality } : {}),
    weight: w.weight,
    tlsMode: w.tlsMode,
  };
}

/** The instances `e` serves for `hostname`: one per service port. */
export function instancesOf(
  hostname: string,
  ports: readonly ServicePortModel[],
  e: EntryEndpoint,
): ServiceInstance[] {
  return ports.map(sp => ({
    hostname,
    servicePort: sp.port,
    endpoint: { address: e.address, port: endpointPort(e.ports, sp) },
    labels: e.labels,
    ...(e.spiffeId ? { serviceAccount: e.spiffeId } : {}),
    workload: e.workload,
    ...(e.node ? { node: e.node } : {}),
    healthy: e.healthy,
    ...(e.locality ? { locality: e.locality } : {}),
    weight: e.weight,
    tlsMode: e.tlsMode,
  }));
}

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * The canonical order of a host's instances: by service port, then workload name, then address
 * and port. Derivation and incremental updates both keep it, so equal models serialise equally.
 */
export function compareInstances(a: ServiceInstance, b: ServiceInstance): number {
  return (
    a.servicePort - b.servicePort ||
    cmp(a.workload, b.workload) ||
    cmp(a.endpoint.address, b.endpoint.address) ||
    a.endpoint.port - b.endpoint.port
  );
}

/**
 * A service's serviceAccounts: `subjectAltNames` as written, then the endpoints' SPIFFE IDs,
 * sorted, without duplicates.
 */
export function serviceAccountsOf(
  subjectAltNames: readonly string[] | undefined,
  endpointIds: Iterable<string>,
): string[] {
  const sans = [...new Set(subjectAltNames ?? [])];
  const given = new Set(sans);
  const rest = new Set<string>();
  for (const id of endpointIds) if (!given.has(id)) rest.add(id);
  return [...sans, ...[...rest].sort(cmp)];
}

/**
 * Derives the Services and ServiceInstances of a ServiceEntry.
 *
 * - Each host is one Service in the entry's namespace; ports get their protocol from
 *   {@link protocolOf}.
 * - `STATIC`/`DNS`/`DNS_ROUND_ROBIN` endpoints become instances, addresses as written (for DNS
 *   the data plane resolves them). A DNS entry without endpoints resolves its (non-wildcard)
 *   hosts themselves, as Istio does.
 * - A MESH_INTERNAL entry with a `workloadSelector` also gets an instance per service port for
 *   every workload in `workloads` (the caller passes those of the entry's namespace) whose labels
 *   match. A WorkloadEntry at the address of a registered host (or of an earlier WorkloadEntry)
 *   is the same VM and is dropped: the registered host carries live health. Registered hosts are
 *   never merged: each is its own authenticated node, even when several share an address.
 * - Endpoint ports map by port name, else `targetPort`, else the service port.
 * - serviceAccounts: {@link serviceAccountsOf}.
 * - tlsMode: `istio` for selected workloads (they run our proxy); for inline endpoints `disabled`
 *   on MESH_EXTERNAL entries and `istio` on MESH_INTERNAL ones; a `security.istio.io/tlsMode`
 *   label overrides either.
 * - Instances are in {@link compareInstances} order.
 */
export function deriveServiceEntry(
  se: ConfigObject<'ServiceEntry'>,
  workloads: readonly SelectableWorkload[],
  trustDomain: string,
): DerivedServiceEntry {
  const spec = se.spec;
  const namespace = se.metadata.namespace;
  const location: Location = spec.location ?? 'MESH_EXTERNAL';
  const resolution: Resolution = spec.resolution ?? 'NONE';
  const ports = (spec.ports ?? []).map(toPortModel);
  const exportTo = resolveExportTo(spec.exportTo, namespace);
  const source = keyOf(se);

  // Endpoints every host of the entry shares: selected workloads and inline endpoints.
  const shared: EntryEndpoint[] = [];
  if (location === 'MESH_INTERNAL' && spec.workloadSelector) {
    const picked = workloads
      .filter(w => w.namespace === namespace && selects(spec.workloadSelector?.labels, w.labels))
      // Registered hosts first: they carry live health, so they win an address clash.
      .sort(
        (a, b) =>
          Number(a.node === undefined) - Number(b.node === undefined) || cmp(a.name, b.name),
      );
    // A WorkloadEntry at an address already taken (by a registered host, or an earlier entry)
    // is the same VM: it is dropped. Registered hosts are distinct nodes, authenticated each:
    // several may share an address (hosts behind one NAT, workloads on one loopback).
    const seen = new Set<string>();
    for (const w of picked) {
      if (w.node === undefined && seen.has(w.address)) continue;
      seen.add(w.address);
      shared.push(endpointOf(w));
    }
  }
  const inlineTls = location === 'MESH_EXTERNAL' ? 'disabled' : 'istio';
  if (resolution !== 'NONE') {
    (spec.endpoints ?? []).forEach((ep: WorkloadEntrySpec, i) => {
      if (!ep.address) return;
      shared.push({
        address: ep.address,
        ...(ep.ports ? { ports: ep.ports } : {}),
        labels: ep.labels ?? {},
        ...(ep.serviceAccount
          ? {
              spiffeId: formatSpiffeId({
                trustDomain,
                namespace,
                serviceAccount: ep.serviceAccount,
              }),
            }
          : {}),
        workload: `${namespace}/${se.metadata.name}/endpoints[${i}]`,
        healthy: true,
        ...(ep.locality ? { locality: ep.locality } : {}),
        weight: ep.weight || 1,
        tlsMode: tlsModeOf(ep.labels, inlineTls),
      });
    });
  }
  const dnsSelf = (resolution === 'DNS' || resolution === 'DNS_ROUND_ROBIN') && shared.length === 0;

  const out = new Map<string, DerivedHost>();
  for (const hostname of spec.hosts) {
    if (out.has(hostname)) continue;
    const endpoints: readonly EntryEndpoint[] =
      dnsSelf && !hostname.startsWith('*')
        ? [
            {
              address: hostname,
              labels: {},
              workload: `${namespace}/${se.metadata.name}/${hostname}`,
              healthy: true,
              weight: 1,
              tlsMode: inlineTls,
            },
          ]
        : shared;
    const instances = endpoints
      .flatMap(e => instancesOf(hostname, ports, e))
      .sort(compareInstances);
    const service: Service = {
      hostname,
      namespace,
      addresses: [...(spec.addresses ?? [])],
      ports,
      location,
      resolution,
      serviceAccounts: serviceAccountsOf(
        spec.subjectAltNames,
        instances.flatMap(i => (i.serviceAccount === undefined ? [] : [i.serviceAccount])),
      ),
      exportTo,
      source,
    };
    out.set(hostname, { service, instances });
  }
  return out;
}
