import type { DownstreamContext, UpstreamHost } from '../types';
import { Host, PLAINTEXT_TRANSPORT } from './host';
import { SourceBoundHost, dialHost } from './source-bound-host';

function ctx(originalSource: string | undefined, dialed = '10.0.0.12'): DownstreamContext {
  return {
    direction: 'inbound',
    remoteAddress: originalSource ?? '10.0.0.11',
    remotePort: 40000,
    originalDst: { address: dialed, port: 9080 },
    ...(originalSource !== undefined ? { originalSource } : {}),
    connectionSecurity: 'none',
  } as unknown as DownstreamContext;
}

const host = (address: string): Host =>
  new Host('inbound|9080||reviews.default.svc.cluster.local', address, 9080, PLAINTEXT_TRANSPORT);

describe('dialHost', () => {
  it('is the host itself when the connection does not keep its caller address', () => {
    const h = host('127.0.0.1');
    expect(dialHost(h, ctx(undefined))).toBe(h);
  });

  it("binds a loopback host to the caller's address and dials the address the caller called", () => {
    const h = host('127.0.0.1');
    const d = dialHost(h, ctx('10.0.0.11'));
    expect(d).toBeInstanceOf(SourceBoundHost);
    expect(d).toMatchObject({
      cluster: h.cluster,
      address: '127.0.0.1',
      port: 9080,
      transport: PLAINTEXT_TRANSPORT,
      source: { address: '10.0.0.11', destination: '10.0.0.12' },
    });
    // Pools keyed by it hold only this caller's connections.
    expect(d.key).not.toBe(h.key);
    expect(dialHost(h, ctx('10.0.0.13')).key).not.toBe(d.key);
    expect(dialHost(h, ctx('10.0.0.11')).key).toBe(d.key);
  });

  it("reads health and load from the cluster's host, which keeps counting", () => {
    const h = host('127.0.0.1');
    const d = dialHost(h, ctx('10.0.0.11'));
    h.activeRequests = 3;
    h.ejected = true;
    expect(d.activeRequests).toBe(3);
    expect(d.healthy).toBe(false);
  });

  it('keeps the source for a host at the very address the caller dialed, and for IPv6', () => {
    expect(dialHost(host('10.0.0.12'), ctx('10.0.0.11')).source).toEqual({
      address: '10.0.0.11',
      destination: '10.0.0.12',
    });
    expect(dialHost(host('::1'), ctx('fd00::11', 'fd00::12')).source).toEqual({
      address: 'fd00::11',
      destination: 'fd00::12',
    });
  });

  it('leaves a remote host alone (its replies would go to the caller), and mixed families', () => {
    const remote = host('10.0.0.50');
    expect(dialHost(remote, ctx('10.0.0.11'))).toBe(remote);
    const h: UpstreamHost = host('127.0.0.1');
    expect(dialHost(h, ctx('fd00::11', '10.0.0.12'))).toBe(h);
  });
});
