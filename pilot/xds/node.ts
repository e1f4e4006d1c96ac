/**
 * Who an xDS client is. On the mTLS port the client certificate decides (CN = node, URI SAN =
 * spiffe://TD/ns/NS/sa/SA); the node id and metadata only add detail (IPs, labels). On the
 * plaintext port (proxyless gRPC, trusted networks) the node id and metadata are all there is.
 */
import { structToJson } from '../../api/envoy';
import { Oid, parseCertificate, parseSpiffeId } from '../../common/pki';
import { xdsDenied, xdsRequestInvalid, xdsUnauthenticated } from '../errors';
import type { ProxyNode } from './model';

/** Istio's node id `TYPE~IP~ID~DOMAIN`, e.g. `sidecar~10.0.0.5~vm-1.default~default.svc.cluster.local`. */
export interface IstioNodeId {
  readonly type: 'sidecar' | 'router';
  readonly ip: string;
  /** `name.namespace` (Kubernetes: pod.namespace; VMs: node.namespace). */
  readonly id: string;
  readonly domain: string;
}

export function parseIstioNodeId(id: string): IstioNodeId | undefined {
  const parts = id.split('~');
  if (parts.length !== 4) return undefined;
  const [type, ip, name, domain] = parts as [string, string, string, string];
  if (type !== 'sidecar' && type !== 'router') return undefined;
  return { type, ip, id: name, domain };
}

/** The caller's certificate, reduced to what pilot needs. */
export interface PeerIdentity {
  readonly node: string;
  readonly spiffeId: string;
  readonly trustDomain: string;
  readonly namespace: string;
  readonly serviceAccount: string;
}

/** Reads node and SPIFFE identity from a verified client certificate (DER). */
export function peerIdentity(der: Buffer, trustDomain: string): PeerIdentity {
  const cert = parseCertificate(der);
  const ids = cert.uris.filter(u => u.startsWith('spiffe://'));
  if (ids.length !== 1)
    throw xdsUnauthenticated(
      `client certificate must carry exactly one SPIFFE ID, it has ${ids.length}`,
    );
  const id = parseSpiffeId(ids[0]!);
  if (!id) throw xdsUnauthenticated(`client certificate SPIFFE ID ${ids[0]} is not a workload ID`);
  if (id.trustDomain !== trustDomain)
    throw xdsUnauthenticated(
      `client certificate is from trust domain ${id.trustDomain}, this mesh is ${trustDomain}`,
    );
  const node = cert.subject.find(([oid]) => oid === Oid.commonName)?.[1] ?? cert.dnsNames[0];
  if (!node) throw xdsUnauthenticated('client certificate names no node (no subject CN)');
  return {
    node,
    spiffeId: ids[0]!,
    trustDomain: id.trustDomain,
    namespace: id.namespace,
    serviceAccount: id.serviceAccount,
  };
}

/** The node message of a DiscoveryRequest, as protobufjs decodes it. */
export interface WireNode {
  id?: string;
  cluster?: string;
  metadata?: unknown;
  userAgentName?: string;
  userAgentVersion?: string;
}

const strings = (v: unknown): Record<string, string> => {
  if (!v || typeof v !== 'object') return {};
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(v)) if (typeof x === 'string') out[k] = x;
  return out;
};

/**
 * Builds the ProxyNode for a stream from its first request's node and, when authenticated, its
 * certificate. `labelsOf` finds the labels of the node's registered workload.
 */
export function proxyNodeFrom(
  wire: WireNode | null | undefined,
  peer: PeerIdentity | undefined,
  labelsOf: (node: string, namespace: string) => Record<string, string> | undefined,
): ProxyNode {
  if (!wire?.id) throw xdsRequestInvalid('the first request on a stream must carry node.id');
  const metadata = wire.metadata ? structToJson(wire.metadata) : {};
  const istio = parseIstioNodeId(wire.id);
  const metaNs = typeof metadata.NAMESPACE === 'string' ? metadata.NAMESPACE : undefined;
  const idNs = istio?.id.includes('.') ? istio.id.slice(istio.id.indexOf('.') + 1) : undefined;
  let namespace: string;
  let node: string;
  if (peer) {
    if (metaNs && metaNs !== peer.namespace)
      throw xdsDenied(
        `node metadata NAMESPACE ${metaNs} differs from the client certificate's namespace ${peer.namespace}`,
      );
    namespace = peer.namespace;
    node = peer.node;
  } else {
    namespace = metaNs ?? idNs ?? 'default';
    node = istio ? istio.id.split('.')[0]! : wire.id;
  }
  const ips = new Set<string>();
  if (istio?.ip) ips.add(istio.ip);
  const instanceIps = metadata.INSTANCE_IPS;
  if (typeof instanceIps === 'string')
    for (const ip of instanceIps.split(',')) if (ip.trim()) ips.add(ip.trim());
  const labels = {
    ...strings(metadata.LABELS),
    ...(labelsOf(node, namespace) ?? {}),
  };
  return {
    id: wire.id,
    type: istio ? istio.type : 'proxyless',
    identity: { node, namespace, ips: [...ips] },
    ...(peer ? { spiffeId: peer.spiffeId } : {}),
    labels,
    metadata,
  };
}
