/**
 * What the generators share through push.cache, and the test helpers' own guarantee that a
 * misspelled field fails.
 */
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE } from '../model';
import { createGenerator } from './index';
import { roundTrip } from './proto-check';
import { config, fqdn, instance, proxy, pushContext, service } from './testing';
import { TYPES } from './util';

const gen = createGenerator();

function mesh() {
  return pushContext({
    services: [
      service('reviews', ['http:9080']),
      service('ratings', ['http:9080'], { namespace: 'shop' }),
    ],
    instances: [
      instance(fqdn('reviews'), 9080, '10.0.0.1'),
      instance(fqdn('reviews'), 9080, '10.0.0.2'),
    ],
    configs: [config('Sidecar', 'shop', 'default', { egress: [{ hosts: ['./*'] }] })],
  });
}

describe('sharing through push.cache', () => {
  it('gives proxies of one namespace the same objects, so the encoder encodes them once', () => {
    const push = mesh();
    const a = proxy('sidecar', { ip: '10.0.0.1' });
    const b = proxy('sidecar', { ip: '10.0.0.2' });
    for (const type of [CLUSTER_TYPE, ROUTE_TYPE] as const) {
      const ra = gen.generate(type, a, push, []);
      const rb = gen.generate(type, b, push, []);
      const outbound = (rs: typeof ra) => rs.filter(r => !r.name.startsWith('inbound'));
      expect(outbound(ra).map(r => r.resource)).toEqual(outbound(rb).map(r => r.resource));
      outbound(ra).forEach((r, i) => expect(r.resource).toBe(outbound(rb)[i]!.resource));
    }
    const la = gen.generate(LISTENER_TYPE, a, push, ['0.0.0.0_9080']);
    expect(la[0]!.resource).toBe(
      gen.generate(LISTENER_TYPE, b, push, ['0.0.0.0_9080'])[0]!.resource,
    );
    const ea = gen.generate(ENDPOINT_TYPE, a, push, [`outbound|9080||${fqdn('reviews')}`]);
    expect(ea[0]!.resource).toBe(
      gen.generate(ENDPOINT_TYPE, b, push, [`outbound|9080||${fqdn('reviews')}`])[0]!.resource,
    );
  });

  it('keeps namespaces with different Sidecars apart, and builds anew for a new push', () => {
    const push = mesh();
    const def = gen.generate(CLUSTER_TYPE, proxy('sidecar'), push, []).map(r => r.name);
    const shop = gen
      .generate(CLUSTER_TYPE, proxy('sidecar', { namespace: 'shop' }), push, [])
      .map(r => r.name);
    expect(def).toContain(`outbound|9080||${fqdn('reviews')}`);
    expect(shop).not.toContain(`outbound|9080||${fqdn('reviews')}`);
    expect(shop).toContain(`outbound|9080||${fqdn('ratings', 'shop')}`);
    const first = gen.generate(ROUTE_TYPE, proxy('sidecar'), push, ['9080'])[0]!.resource;
    const next = gen.generate(ROUTE_TYPE, proxy('sidecar'), mesh(), ['9080'])[0]!.resource;
    expect(next).not.toBe(first);
    expect(next).toEqual(first);
  });
});

describe('the round-trip check', () => {
  it('fails on a misspelled field, a wrongly typed one and an unknown @type', () => {
    const cluster = { name: 'c', type: 'EDS', connectTimeout: { seconds: 1 } };
    expect(() => roundTrip('envoy.config.cluster.v3.Cluster', cluster)).not.toThrow();
    expect(() =>
      roundTrip('envoy.config.cluster.v3.Cluster', { ...cluster, lbPolicyy: 'ROUND_ROBIN' }),
    ).toThrow(/lbPolicyy/);
    expect(() =>
      roundTrip('envoy.config.cluster.v3.Cluster', { ...cluster, connectTimeout: { secs: 1 } }),
    ).toThrow(/connectTimeout\.secs/);
    expect(() =>
      roundTrip('envoy.config.cluster.v3.Cluster', {
        ...cluster,
        transportSocket: {
          name: 'tls',
          typedConfig: { '@type': `${TYPES.upstreamTls}X`, sni: 'a' },
        },
      }),
    ).toThrow(/typedConfig/);
    expect(() =>
      roundTrip('envoy.config.cluster.v3.Cluster', {
        ...cluster,
        transportSocket: { name: 'tls', typedConfig: { '@type': TYPES.upstreamTls, snii: 'a' } },
      }),
    ).toThrow(/snii/);
  });
});
