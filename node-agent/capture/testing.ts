/** For tests: a capture spec with the defaults of node-agent.yaml and the given proxy ids. */
import type { CaptureSpec } from './types';

export function testSpec(proxyUid: number, proxyGid: number): CaptureSpec {
  return {
    mode: 'redirect',
    proxyUid,
    proxyGid,
    outboundPort: 15001,
    inboundPort: 15006,
    includeOutboundCidrs: '*',
    excludeOutboundCidrs: '',
    includeInboundPorts: '*',
    excludeInboundPorts: '22',
    ipv6: 'auto',
  };
}
