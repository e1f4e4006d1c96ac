/**
 * The inbound side of a sidecar: the ports the workloads on its host serve (from the registry's
 * proxyInstances), each with its protocol and the mTLS mode PeerAuthentication sets for it.
 */
import type { MtlsMode } from '../../config/types';
import type { Protocol, ServiceInstance } from '../../registry/types';
import { peerAuthenticationMode, type ProxyScope } from './scope';
import { isHttpProtocol } from './util';

export interface InboundPort {
  /** The port the workload listens on (the endpoint port), which is also the original destination port. */
  readonly port: number;
  readonly protocol: Protocol;
  readonly mtls: Exclude<MtlsMode, 'UNSET'>;
  readonly instances: readonly ServiceInstance[];
}

/**
 * The host's workload ports, sorted. When services disagree on a port's protocol, HTTP-family
 * wins only if every service says HTTP-family (the first such, by host name); otherwise the port
 * is proxied as TCP, which carries any protocol.
 */
export function inboundPorts(scope: ProxyScope): InboundPort[] {
  const { push, proxy } = scope;
  const byPort = new Map<number, ServiceInstance[]>();
  for (const inst of push.registry.proxyInstances(proxy.identity)) {
    const list = byPort.get(inst.endpoint.port) ?? [];
    list.push(inst);
    byPort.set(inst.endpoint.port, list);
  }
  const out: InboundPort[] = [];
  for (const port of [...byPort.keys()].sort((a, b) => a - b)) {
    if (port === push.mesh.proxyInboundPort || port === push.mesh.proxyOutboundPort) continue;
    const instances = [...byPort.get(port)!].sort((a, b) =>
      a.hostname < b.hostname ? -1 : a.hostname > b.hostname ? 1 : 0,
    );
    const protocols = instances.map(
      i =>
        push.registry.getService(i.hostname)?.ports.find(p => p.port === i.servicePort)?.protocol ??
        'TCP',
    );
    const protocol = protocols.every(isHttpProtocol) ? protocols[0]! : 'TCP';
    const labels = { ...instances[0]!.labels, ...proxy.labels };
    out.push({
      port,
      protocol,
      mtls: peerAuthenticationMode(push, scope.namespace, labels, port),
      instances,
    });
  }
  return out;
}
