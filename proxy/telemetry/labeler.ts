/**
 * Builds the labels of Istio's standard metrics for each connection or request. Results are
 * interned: equal inputs give the same frozen object, so the metrics keep their series per label
 * object (a WeakMap lookup) instead of hashing twenty label strings per request.
 *
 * What each side knows, as in Istio's stats filter:
 * - outbound (reporter `source`): this workload is the source; the destination service comes from
 *   the cluster name (`outbound|PORT|SUBSET|HOST`), the destination workload from the peer
 *   metadata the server's proxy sends back on the response. connection_security_policy is
 *   `unknown` on this side, as Istio reports it (the client cannot see the server's policy).
 * - inbound (reporter `destination`): this workload is the destination; the source comes from the
 *   peer metadata header, else from the client certificate's SPIFFE ID (namespace and principal).
 *   The certificate, being authenticated, wins over the header for namespace and principal.
 * Anything not known is `unknown`, as in Istio.
 */
import { parseSpiffeId } from '../../common/pki';
import {
  BLACKHOLE_CLUSTER,
  type Cluster,
  PASSTHROUGH_CLUSTER,
  type ProxyConfig,
  type SocketAddress,
} from '../model';
import type { Labeler, LocalWorkload, PeerIdentity, PeerMetadata, TrafficLabels } from '../types';
import { decodePeerMetadataValue, encodePeerMetadata } from './peer-metadata';

/** The value of a label nothing tells (Istio's). */
export const UNKNOWN = 'unknown';
/** Interned label sets kept before the tables start over (bounds memory against peers that vary
 * their metadata). The metrics themselves keep every series they recorded. */
export const MAX_INTERNED_LABELS = 4096;
/** Decoded peer metadata values kept. */
export const MAX_DECODED_PEER_METADATA = 1024;

export interface TrafficLabelerOptions {
  /** This workload: name, namespace and labels (`app`, `version`). */
  readonly workload: {
    readonly name: string;
    readonly namespace: string;
    readonly labels: Readonly<Record<string, string>>;
  };
  /** The SPIFFE ID of this host's certificate, '' until one is loaded (see setLocalPrincipal). */
  readonly principal?: string;
  /** The mesh's cluster id for source_cluster / destination_cluster; default `unknown`. */
  readonly clusterId?: string;
}

/** What an outbound cluster name says about the destination service. */
interface ServiceOfCluster {
  readonly service: string;
  readonly name: string;
  readonly namespace: string;
}

/** Per cluster name: the parsed service and the interned labels by peer metadata. */
interface OutboundEntry {
  readonly service: ServiceOfCluster | undefined;
  /** Passthrough/BlackHole: by original destination address, then port. */
  readonly byAddress: Map<string, Map<number, Map<PeerMetadata | null, TrafficLabels>>>;
  /** Other clusters: by peer metadata (null: none). */
  readonly byPeer: Map<PeerMetadata | null, TrafficLabels>;
}

const orUnknown = (s: string | undefined): string => (s === undefined || s === '' ? UNKNOWN : s);

/**
 * Splits Istio's `outbound|PORT|SUBSET|HOST` cluster name: HOST is the service; a
 * `NAME.NAMESPACE.svc.…` host gives the service name and namespace, any other host (a
 * ServiceEntry's `api.example.com`) is its own name with an unknown namespace.
 * @internal exported for tests
 */
export function serviceOfCluster(clusterName: string): ServiceOfCluster | undefined {
  const parts = clusterName.split('|');
  if (parts.length !== 4 || (parts[0] !== 'outbound' && parts[0] !== 'inbound')) return undefined;
  const host = parts[3] as string;
  if (host === '') return undefined;
  return serviceOfHost(host);
}

/** @internal exported for tests */
export function serviceOfHost(host: string): ServiceOfCluster {
  const labels = host.split('.');
  if (labels.length >= 3 && labels[2] === 'svc' && labels[0] !== '' && labels[1] !== '')
    return { service: host, name: labels[0] as string, namespace: labels[1] as string };
  return { service: host, name: host, namespace: UNKNOWN };
}

/**
 * The proxy's {@link Labeler}. Not thread-shared state: one per proxy. `setLocalPrincipal` (after a
 * certificate load) and `setInboundServices` (after a push) start the tables over.
 */
export class TrafficLabeler implements Labeler {
  private readonly workload: TrafficLabelerOptions['workload'];
  private readonly clusterId: string;
  private principal: string;
  private header: string;
  /** Port of this workload → the service host inbound traffic on it is for. */
  private inboundServices: ReadonlyMap<number, string> = new Map();
  private outboundByCluster = new Map<string, OutboundEntry>();
  /** Inbound: port → source SPIFFE ID ('' none) → peer metadata (null none) → [plain, mtls]. */
  private inboundByPort = new Map<
    number,
    Map<string, Map<PeerMetadata | null, [TrafficLabels?, TrafficLabels?]>>
  >();
  private interned = 0;
  /** Header value → decoded metadata (null: malformed), so a value is parsed once. */
  private readonly decoded = new Map<string, PeerMetadata | null>();

  constructor(opts: TrafficLabelerOptions) {
    this.workload = opts.workload;
    this.clusterId = orUnknown(opts.clusterId);
    this.principal = opts.principal ?? '';
    this.header = encodePeerMetadata(this.localMetadata());
  }

  /** This workload as telemetry and peers see it. */
  get local(): LocalWorkload {
    return {
      name: this.workload.name,
      namespace: this.workload.namespace,
      app: this.workload.labels.app ?? this.workload.name,
      version: this.workload.labels.version ?? UNKNOWN,
      principal: this.principal,
      labels: this.workload.labels,
    };
  }

  get peerMetadataHeader(): string {
    return this.header;
  }

  /** Sets this host's SPIFFE ID (after a certificate load); a change starts the tables over. */
  setLocalPrincipal(principal: string): void {
    if (principal === this.principal) return;
    this.principal = principal;
    this.header = encodePeerMetadata(this.localMetadata());
    this.reset();
  }

  /** Sets which service host inbound traffic on each workload port is for (destination_service
   * of reporter `destination`); unknown ports report `unknown`. Starts the tables over. */
  setInboundServices(services: ReadonlyMap<number, string>): void {
    if (sameServices(services, this.inboundServices)) return;
    this.inboundServices = services;
    this.reset();
  }

  decodePeerMetadata(value: string): PeerMetadata | undefined {
    const hit = this.decoded.get(value);
    if (hit !== undefined) return hit ?? undefined;
    const meta = decodePeerMetadataValue(value) ?? null;
    if (this.decoded.size >= MAX_DECODED_PEER_METADATA) this.decoded.clear();
    this.decoded.set(value, meta);
    return meta ?? undefined;
  }

  outbound(
    clusterName: string,
    originalDst: SocketAddress,
    _mtls: boolean,
    peer?: PeerMetadata,
  ): TrafficLabels {
    let entry = this.outboundByCluster.get(clusterName);
    if (entry === undefined) {
      entry = { service: serviceOfCluster(clusterName), byAddress: new Map(), byPeer: new Map() };
      this.outboundByCluster.set(clusterName, entry);
    }
    const peerKey = peer ?? null;
    let byPeer = entry.byPeer;
    const byOriginalDst = clusterName === PASSTHROUGH_CLUSTER || clusterName === BLACKHOLE_CLUSTER;
    if (byOriginalDst) {
      let byPort = entry.byAddress.get(originalDst.address);
      if (byPort === undefined) {
        byPort = new Map();
        entry.byAddress.set(originalDst.address, byPort);
      }
      let m = byPort.get(originalDst.port);
      if (m === undefined) {
        m = new Map();
        byPort.set(originalDst.port, m);
      }
      byPeer = m;
    }
    const hit = byPeer.get(peerKey);
    if (hit !== undefined) return hit;
    const labels = this.makeOutbound(clusterName, entry.service, byOriginalDst, originalDst, peer);
    this.count();
    byPeer.set(peerKey, labels);
    return labels;
  }

  inbound(
    originalDst: SocketAddress,
    peer: PeerIdentity | undefined,
    peerMeta: PeerMetadata | undefined,
    mtls: boolean,
  ): TrafficLabels {
    let bySpiffe = this.inboundByPort.get(originalDst.port);
    if (bySpiffe === undefined) {
      bySpiffe = new Map();
      this.inboundByPort.set(originalDst.port, bySpiffe);
    }
    const spiffeId = peer?.spiffeId ?? '';
    let byMeta = bySpiffe.get(spiffeId);
    if (byMeta === undefined) {
      byMeta = new Map();
      bySpiffe.set(spiffeId, byMeta);
    }
    const metaKey = peerMeta ?? null;
    let pair = byMeta.get(metaKey);
    if (pair === undefined) {
      pair = [undefined, undefined];
      byMeta.set(metaKey, pair);
    }
    const slot = mtls ? 1 : 0;
    const hit = pair[slot];
    if (hit !== undefined) return hit;
    const labels = this.makeInbound(originalDst.port, spiffeId, peerMeta, mtls);
    this.count();
    pair[slot] = labels;
    return labels;
  }

  private makeOutbound(
    clusterName: string,
    service: ServiceOfCluster | undefined,
    byOriginalDst: boolean,
    originalDst: SocketAddress,
    peer: PeerMetadata | undefined,
  ): TrafficLabels {
    const local = this.local;
    let destinationService: string;
    let destinationServiceName: string;
    let destinationServiceNamespace: string;
    if (byOriginalDst) {
      // Istio: traffic to no known service is named by where it went, under the cluster's name.
      destinationService = formatAddress(originalDst);
      destinationServiceName = clusterName;
      destinationServiceNamespace = UNKNOWN;
    } else if (service) {
      destinationService = service.service;
      destinationServiceName = service.name;
      destinationServiceNamespace = service.namespace;
    } else {
      destinationService = orUnknown(clusterName);
      destinationServiceName = orUnknown(clusterName);
      destinationServiceNamespace = UNKNOWN;
    }
    return Object.freeze({
      reporter: 'source',
      sourceWorkload: orUnknown(local.name),
      sourceWorkloadNamespace: orUnknown(local.namespace),
      sourcePrincipal: orUnknown(local.principal),
      sourceApp: orUnknown(local.app),
      sourceVersion: orUnknown(local.version),
      sourceCluster: this.clusterId,
      destinationWorkload: orUnknown(peer?.workload),
      destinationWorkloadNamespace: orUnknown(peer?.namespace),
      destinationPrincipal: orUnknown(peer?.principal),
      destinationApp: orUnknown(peer?.app),
      destinationVersion: orUnknown(peer?.version),
      destinationService,
      destinationServiceName,
      destinationServiceNamespace,
      destinationCluster: peer ? this.clusterId : UNKNOWN,
      connectionSecurityPolicy: 'unknown',
    } satisfies TrafficLabels);
  }

  private makeInbound(
    port: number,
    spiffeId: string,
    meta: PeerMetadata | undefined,
    mtls: boolean,
  ): TrafficLabels {
    const local = this.local;
    const id = spiffeId === '' ? undefined : parseSpiffeId(spiffeId);
    const host = this.inboundServices.get(port);
    const service = host === undefined ? undefined : serviceOfHost(host);
    return Object.freeze({
      reporter: 'destination',
      sourceWorkload: orUnknown(meta?.workload),
      sourceWorkloadNamespace: orUnknown(id?.namespace ?? meta?.namespace),
      // Only a certificate proves who the client is; without one Istio reports unknown.
      sourcePrincipal: orUnknown(spiffeId),
      sourceApp: orUnknown(meta?.app),
      sourceVersion: orUnknown(meta?.version),
      sourceCluster: meta || id ? this.clusterId : UNKNOWN,
      destinationWorkload: orUnknown(local.name),
      destinationWorkloadNamespace: orUnknown(local.namespace),
      destinationPrincipal: orUnknown(local.principal),
      destinationApp: orUnknown(local.app),
      destinationVersion: orUnknown(local.version),
      destinationService: service?.service ?? UNKNOWN,
      destinationServiceName: service?.name ?? orUnknown(local.app),
      destinationServiceNamespace:
        service && service.namespace !== UNKNOWN ? service.namespace : orUnknown(local.namespace),
      destinationCluster: this.clusterId,
      connectionSecurityPolicy: mtls ? 'mutual_tls' : 'none',
    } satisfies TrafficLabels);
  }

  private localMetadata(): PeerMetadata {
    const l = this.local;
    return {
      workload: l.name,
      namespace: l.namespace,
      app: l.app,
      version: l.version,
      principal: l.principal,
    };
  }

  private count(): void {
    if (++this.interned > MAX_INTERNED_LABELS) this.reset();
  }

  private reset(): void {
    this.outboundByCluster = new Map();
    this.inboundByPort = new Map();
    this.interned = 0;
  }
}

function formatAddress(a: SocketAddress): string {
  return a.address.includes(':') ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}

/**
 * Which service each port of this workload serves, for destination_service on the receiving
 * side: pilot names no service on inbound clusters (`inbound|9080||`), but it sends this proxy the
 * mesh's services too, and the ones whose endpoints are this host's address (`ips`) are ours.
 * Port → service host; on a port two services share, the first host in name order wins (the
 * receiving side cannot tell which name the client used).
 */
export function inboundServicesOf(
  config: ProxyConfig,
  ips: ReadonlySet<string>,
): Map<number, string> {
  const out = new Map<number, string>();
  const names = [...config.clusters.keys()].sort();
  for (const name of names) {
    const service = serviceOfCluster(name);
    if (service === undefined || !name.startsWith('outbound|')) continue;
    const cluster = config.clusters.get(name) as Cluster;
    const assignment =
      cluster.type === 'EDS'
        ? config.endpoints.get(cluster.edsServiceName ?? cluster.name)
        : cluster.loadAssignment;
    if (assignment === undefined) continue;
    for (const e of assignment.endpoints) {
      if (ips.has(e.address) && !out.has(e.port)) out.set(e.port, service.service);
    }
  }
  return out;
}

/** True when two port → host maps hold the same entries. */
export function sameServices(
  a: ReadonlyMap<number, string>,
  b: ReadonlyMap<number, string>,
): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}
