import { InvalidInputError } from '../../common/errors';
import { parseNodeAgentConfig } from '../config';
import type { NodeAgentSettings } from '../options';
import { captureSpecFromSettings } from './spec';

function settings(yaml: string): NodeAgentSettings {
  return parseNodeAgentConfig('<test>', `controlPlane: { address: 10.0.0.10 }\n${yaml}`, {
    hostname: 'vm-1',
  }).settings;
}

const PROXY = { uid: 998, gid: 997 };

describe('captureSpecFromSettings', () => {
  it('uses the defaults: redirect, all outbound, all inbound but 22, ports 15001/15006, auto IPv6', () => {
    expect(captureSpecFromSettings(settings(''), PROXY, undefined)).toEqual({
      mode: 'redirect',
      proxyUid: 998,
      proxyGid: 997,
      outboundPort: 15001,
      inboundPort: 15006,
      includeOutboundCidrs: '*',
      excludeOutboundCidrs: '',
      includeInboundPorts: '*',
      excludeInboundPorts: '22',
      excludeOutboundPorts: '',
      ipv6: 'auto',
    });
  });

  it('captures DNS to the port of dns.listen when nameservers are given', () => {
    const spec = captureSpecFromSettings(settings('dns: { listen: 127.0.0.1:5353 }'), PROXY, [
      '10.0.0.2',
    ]);
    expect(spec.dns).toEqual({ port: 5353, nameservers: ['10.0.0.2'] });
  });

  it.each([
    ['dns disabled', 'dns: { enabled: false }', ['10.0.0.2']],
    ['no nameservers', '', []],
    ['nameservers unknown', '', undefined],
  ])('no DNS capture with %s', (_name, yaml, ns) => {
    expect(captureSpecFromSettings(settings(yaml), PROXY, ns).dns).toBeUndefined();
  });

  it('copies the capture keys', () => {
    const spec = captureSpecFromSettings(
      settings(
        'capture: { mode: tproxy, includeOutboundCidrs: "10.0.0.0/8", excludeOutboundCidrs: "10.0.0.10", includeInboundPorts: "9080", excludeInboundPorts: "22,8081" }',
      ),
      PROXY,
      undefined,
    );
    expect(spec).toMatchObject({
      mode: 'tproxy',
      includeOutboundCidrs: '10.0.0.0/8',
      excludeOutboundCidrs: '10.0.0.10',
      includeInboundPorts: '9080',
      excludeInboundPorts: '22,8081',
    });
  });

  it('reads the keys the schema will gain (excludeOutboundPorts, ipv6)', () => {
    const s = settings('');
    const withFuture = {
      ...s,
      capture: { ...s.capture, excludeOutboundPorts: '5432', ipv6: false },
    } as NodeAgentSettings;
    expect(captureSpecFromSettings(withFuture, PROXY, undefined)).toMatchObject({
      excludeOutboundPorts: '5432',
      ipv6: false,
    });
  });

  it('refuses mode none and bad values, naming the field', () => {
    expect(() => captureSpecFromSettings(settings('capture: { mode: none }'), PROXY, [])).toThrow(
      /^capture\.mode: /,
    );
    expect(() => captureSpecFromSettings(settings(''), PROXY, ['resolver'])).toThrow(
      InvalidInputError,
    );
    expect(() => captureSpecFromSettings(settings(''), { uid: -5, gid: 1 }, [])).toThrow(
      /^proxyUid: /,
    );
  });
});
