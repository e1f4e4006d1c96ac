import type { PeerIdentity, PeerMetadata } from '../types';
import {
  inboundServicesOf,
  MAX_DECODED_PEER_METADATA,
  MAX_INTERNED_LABELS,
  serviceOfCluster,
  TrafficLabeler,
} from './labeler';
import { decodePeerMetadataValue, encodePeerMetadata } from './peer-metadata';

const WORKLOAD = { name: 'vm-1', namespace: 'default', labels: { app: 'reviews', version: 'v1' } };
const LOCAL_ID = 'spiffe://cluster.local/ns/default/sa/reviews';
const DST = { address: '10.0.0.9', port: 9080 };

function labeler(): TrafficLabeler {
  return new TrafficLabeler({ workload: WORKLOAD, principal: LOCAL_ID });
}

const peerMeta: PeerMetadata = {
  workload: 'vm-2',
  namespace: 'prod',
  app: 'ratings',
  version: 'v2',
  principal: 'spiffe://cluster.local/ns/prod/sa/ratings',
};

function peerIdentity(spiffeId: string): PeerIdentity {
  return { spiffeId, uris: [spiffeId], dns: [], subject: 'CN=vm-2', hash: 'ab' };
}

describe('serviceOfCluster', () => {
  it.each([
    {
      name: 'reads host, name and namespace of a Kubernetes-style service',
      cluster: 'outbound|9080|v1|reviews.default.svc.cluster.local',
      want: { service: 'reviews.default.svc.cluster.local', name: 'reviews', namespace: 'default' },
    },
    {
      name: 'reads a cluster without a subset',
      cluster: 'outbound|5432||db.prod.svc.example.org',
      want: { service: 'db.prod.svc.example.org', name: 'db', namespace: 'prod' },
    },
    {
      name: 'names an external host by itself, namespace unknown',
      cluster: 'outbound|443||api.example.com',
      want: { service: 'api.example.com', name: 'api.example.com', namespace: 'unknown' },
    },
    { name: 'gives nothing for an inbound cluster without host', cluster: 'inbound|9080||' },
    { name: 'gives nothing for a name of another form', cluster: 'PassthroughCluster' },
    { name: 'gives nothing for too few parts', cluster: 'outbound|9080|reviews' },
  ])('$name', ({ cluster, want }) => {
    expect(serviceOfCluster(cluster)).toEqual(want);
  });
});

describe('TrafficLabeler.outbound', () => {
  it('fills source from this workload and destination from the cluster name', () => {
    const l = labeler().outbound('outbound|9080|v1|reviews.default.svc.cluster.local', DST, true);
    expect(l).toEqual({
      reporter: 'source',
      sourceWorkload: 'vm-1',
      sourceWorkloadNamespace: 'default',
      sourcePrincipal: LOCAL_ID,
      sourceApp: 'reviews',
      sourceVersion: 'v1',
      sourceCluster: 'unknown',
      destinationWorkload: 'unknown',
      destinationWorkloadNamespace: 'unknown',
      destinationPrincipal: 'unknown',
      destinationApp: 'unknown',
      destinationVersion: 'unknown',
      destinationService: 'reviews.default.svc.cluster.local',
      destinationServiceName: 'reviews',
      destinationServiceNamespace: 'default',
      destinationCluster: 'unknown',
      // Istio: the client side cannot know the server's policy.
      connectionSecurityPolicy: 'unknown',
    });
    expect(Object.isFrozen(l)).toBe(true);
  });

  it('fills the destination workload from the peer metadata of the response', () => {
    const l = labeler().outbound(
      'outbound|9080||ratings.prod.svc.cluster.local',
      DST,
      true,
      peerMeta,
    );
    expect(l).toMatchObject({
      destinationWorkload: 'vm-2',
      destinationWorkloadNamespace: 'prod',
      destinationApp: 'ratings',
      destinationVersion: 'v2',
      destinationPrincipal: 'spiffe://cluster.local/ns/prod/sa/ratings',
    });
  });

  it.each(['PassthroughCluster', 'BlackHoleCluster'])(
    'names %s traffic by its original destination',
    cluster => {
      const l = labeler().outbound(cluster, { address: '93.184.216.34', port: 443 }, false);
      expect(l.destinationService).toBe('93.184.216.34:443');
      expect(l.destinationServiceName).toBe(cluster);
      expect(l.destinationServiceNamespace).toBe('unknown');
    },
  );

  it('brackets an IPv6 original destination', () => {
    const l = labeler().outbound('PassthroughCluster', { address: '2001:db8::1', port: 80 }, false);
    expect(l.destinationService).toBe('[2001:db8::1]:80');
  });

  it('interns: equal inputs give the same object, different ones another', () => {
    const lb = labeler();
    const c = 'outbound|9080||reviews.default.svc.cluster.local';
    const a = lb.outbound(c, DST, true);
    expect(lb.outbound(c, { address: '10.0.0.10', port: 1 }, true)).toBe(a);
    expect(lb.outbound(c, DST, true, peerMeta)).not.toBe(a);
    expect(lb.outbound(c, DST, true, peerMeta)).toBe(lb.outbound(c, DST, true, peerMeta));
    const p1 = lb.outbound('PassthroughCluster', DST, false);
    expect(lb.outbound('PassthroughCluster', DST, false)).toBe(p1);
    expect(lb.outbound('PassthroughCluster', { ...DST, port: 9081 }, false)).not.toBe(p1);
  });

  it('starts over past MAX_INTERNED_LABELS, still giving equal labels', () => {
    const lb = labeler();
    const first = lb.outbound('PassthroughCluster', { address: '10.1.0.0', port: 1 }, false);
    for (let i = 1; i <= MAX_INTERNED_LABELS; i++)
      lb.outbound('PassthroughCluster', { address: '10.1.0.0', port: i + 1 }, false);
    const again = lb.outbound('PassthroughCluster', { address: '10.1.0.0', port: 1 }, false);
    expect(again).not.toBe(first);
    expect(again).toEqual(first);
  });

  it('uses the new principal after setLocalPrincipal', () => {
    const lb = new TrafficLabeler({ workload: WORKLOAD });
    const c = 'outbound|9080||reviews.default.svc.cluster.local';
    expect(lb.outbound(c, DST, true).sourcePrincipal).toBe('unknown');
    lb.setLocalPrincipal(LOCAL_ID);
    expect(lb.outbound(c, DST, true).sourcePrincipal).toBe(LOCAL_ID);
    expect(lb.decodePeerMetadata(lb.peerMetadataHeader)?.principal).toBe(LOCAL_ID);
  });

  it('defaults app to the workload name and version to unknown', () => {
    const lb = new TrafficLabeler({ workload: { name: 'vm-3', namespace: 'ns', labels: {} } });
    const l = lb.outbound('outbound|80||web.ns.svc.cluster.local', DST, false);
    expect(l.sourceApp).toBe('vm-3');
    expect(l.sourceVersion).toBe('unknown');
  });
});

describe('TrafficLabeler.inbound', () => {
  it('reads the source from the peer metadata and certificate, destination from this workload', () => {
    const lb = labeler();
    const l = lb.inbound(DST, peerIdentity(peerMeta.principal), peerMeta, true);
    expect(l).toEqual({
      reporter: 'destination',
      sourceWorkload: 'vm-2',
      sourceWorkloadNamespace: 'prod',
      sourcePrincipal: 'spiffe://cluster.local/ns/prod/sa/ratings',
      sourceApp: 'ratings',
      sourceVersion: 'v2',
      sourceCluster: 'unknown',
      destinationWorkload: 'vm-1',
      destinationWorkloadNamespace: 'default',
      destinationPrincipal: LOCAL_ID,
      destinationApp: 'reviews',
      destinationVersion: 'v1',
      destinationService: 'unknown',
      destinationServiceName: 'reviews',
      destinationServiceNamespace: 'default',
      destinationCluster: 'unknown',
      connectionSecurityPolicy: 'mutual_tls',
    });
  });

  it('falls back on the SPIFFE ID for namespace and principal', () => {
    const l = labeler().inbound(
      DST,
      peerIdentity('spiffe://cluster.local/ns/shop/sa/cart'),
      undefined,
      true,
    );
    expect(l).toMatchObject({
      sourceWorkload: 'unknown',
      sourceWorkloadNamespace: 'shop',
      sourcePrincipal: 'spiffe://cluster.local/ns/shop/sa/cart',
      sourceApp: 'unknown',
      connectionSecurityPolicy: 'mutual_tls',
    });
  });

  it('trusts the certificate over the header for the namespace', () => {
    const l = labeler().inbound(
      DST,
      peerIdentity('spiffe://cluster.local/ns/shop/sa/cart'),
      peerMeta,
      true,
    );
    expect(l.sourceWorkloadNamespace).toBe('shop');
    expect(l.sourcePrincipal).toBe('spiffe://cluster.local/ns/shop/sa/cart');
  });

  it('reports unknown source principal and policy none without TLS', () => {
    const l = labeler().inbound(DST, undefined, peerMeta, false);
    expect(l.sourcePrincipal).toBe('unknown');
    expect(l.sourceWorkload).toBe('vm-2');
    expect(l.connectionSecurityPolicy).toBe('none');
  });

  it('treats a SPIFFE ID of another form as namespace unknown', () => {
    const l = labeler().inbound(
      DST,
      peerIdentity('spiffe://cluster.local/workload/x'),
      undefined,
      true,
    );
    expect(l.sourceWorkloadNamespace).toBe('unknown');
    expect(l.sourcePrincipal).toBe('spiffe://cluster.local/workload/x');
  });

  it('names the destination service from setInboundServices', () => {
    const lb = labeler();
    lb.setInboundServices(new Map([[9080, 'reviews.default.svc.cluster.local']]));
    const l = lb.inbound(DST, undefined, undefined, false);
    expect(l.destinationService).toBe('reviews.default.svc.cluster.local');
    expect(l.destinationServiceName).toBe('reviews');
    expect(lb.inbound({ ...DST, port: 1 }, undefined, undefined, false).destinationService).toBe(
      'unknown',
    );
  });

  it('interns by port, SPIFFE ID, metadata and mTLS', () => {
    const lb = labeler();
    const id = peerIdentity('spiffe://cluster.local/ns/shop/sa/cart');
    const a = lb.inbound(DST, id, undefined, true);
    // Another connection from the same identity: a different PeerIdentity object, same labels.
    expect(lb.inbound(DST, peerIdentity(id.spiffeId), undefined, true)).toBe(a);
    expect(lb.inbound(DST, id, undefined, false)).not.toBe(a);
    expect(lb.inbound(DST, id, peerMeta, true)).not.toBe(a);
    expect(lb.inbound({ ...DST, port: 9081 }, id, undefined, true)).not.toBe(a);
  });
});

describe('peer metadata', () => {
  it('round-trips through the header of a labeler', () => {
    const lb = labeler();
    expect(lb.decodePeerMetadata(lb.peerMetadataHeader)).toEqual({
      workload: 'vm-1',
      namespace: 'default',
      app: 'reviews',
      version: 'v1',
      principal: LOCAL_ID,
    });
  });

  it('is base64url without padding', () => {
    expect(encodePeerMetadata(peerMeta)).toMatch(/^[A-Za-z0-9_-]+$/);
  });

  it('caches decodes: the same value gives the same object', () => {
    const lb = labeler();
    const v = encodePeerMetadata(peerMeta);
    const a = lb.decodePeerMetadata(v);
    expect(a).toEqual(peerMeta);
    expect(lb.decodePeerMetadata(v)).toBe(a);
    expect(Object.isFrozen(a)).toBe(true);
  });

  it('keeps decoding correctly after the cache starts over', () => {
    const lb = labeler();
    for (let i = 0; i <= MAX_DECODED_PEER_METADATA; i++)
      lb.decodePeerMetadata(encodePeerMetadata({ ...peerMeta, workload: `w${i}` }));
    expect(lb.decodePeerMetadata(encodePeerMetadata(peerMeta))).toEqual(peerMeta);
  });

  const b64 = (s: string) => Buffer.from(s).toString('base64url');
  it.each([
    { name: 'empty', value: '' },
    { name: 'not base64url', value: 'a b!c' },
    { name: 'not JSON', value: b64('{nope') },
    { name: 'a JSON array', value: b64('[]') },
    { name: 'JSON null', value: b64('null') },
    { name: 'a field missing', value: b64(JSON.stringify({ ...peerMeta, app: undefined })) },
    { name: 'a field not a string', value: b64(JSON.stringify({ ...peerMeta, version: 2 })) },
    { name: 'a control character', value: b64(JSON.stringify({ ...peerMeta, app: 'a\nb' })) },
    { name: 'a field too long', value: b64(JSON.stringify({ ...peerMeta, app: 'a'.repeat(254) })) },
    { name: 'too long', value: 'A'.repeat(4000) },
  ])('refuses a value that is $name', ({ value }) => {
    expect(decodePeerMetadataValue(value)).toBeUndefined();
    const lb = labeler();
    expect(lb.decodePeerMetadata(value)).toBeUndefined();
    expect(lb.decodePeerMetadata(value)).toBeUndefined(); // cached as malformed
  });

  it('ignores unknown fields', () => {
    const v = b64(JSON.stringify({ ...peerMeta, cluster: 'c1' }));
    expect(decodePeerMetadataValue(v)).toEqual(peerMeta);
  });
});

describe('inboundServicesOf', () => {
  const endpoint = (address: string, port: number) => ({
    address,
    port,
    weight: 1,
    healthy: true,
    locality: { region: '', zone: '', subZone: '' },
    priority: 0,
    transportMatch: {},
  });
  const cluster = (name: string, over: Record<string, unknown> = {}) =>
    [name, { name, type: 'EDS', ...over }] as const;
  const config = {
    versions: { clusters: '1', endpoints: '1', listeners: '1', routes: '1' },
    listeners: new Map(),
    routes: new Map(),
    clusters: new Map([
      cluster('outbound|9080||reviews.default.svc.cluster.local'),
      cluster('outbound|9080|v1|reviews.default.svc.cluster.local'),
      cluster('outbound|5432||db.default.svc.cluster.local'),
      cluster('outbound|8080||alias.default.svc.cluster.local'),
      cluster('outbound|443||static.example.com', {
        type: 'STATIC',
        loadAssignment: { clusterName: 'x', endpoints: [endpoint('10.0.0.5', 8443)] },
      }),
      cluster('inbound|9080||'),
      cluster('PassthroughCluster', { type: 'ORIGINAL_DST' }),
    ]),
    endpoints: new Map([
      [
        'outbound|9080||reviews.default.svc.cluster.local',
        { clusterName: '', endpoints: [endpoint('10.0.0.9', 9080), endpoint('10.0.0.5', 9080)] },
      ],
      [
        'outbound|9080|v1|reviews.default.svc.cluster.local',
        { clusterName: '', endpoints: [endpoint('10.0.0.5', 9080)] },
      ],
      [
        'outbound|5432||db.default.svc.cluster.local',
        { clusterName: '', endpoints: [endpoint('10.0.0.9', 5432)] },
      ],
      [
        'outbound|8080||alias.default.svc.cluster.local',
        { clusterName: '', endpoints: [endpoint('10.0.0.5', 9080)] },
      ],
    ]),
  } as unknown as Parameters<typeof inboundServicesOf>[0];

  it('maps the ports of services whose endpoints are this host', () => {
    expect(inboundServicesOf(config, new Set(['10.0.0.5']))).toEqual(
      new Map([
        // alias and reviews share 9080: the first name wins.
        [9080, 'alias.default.svc.cluster.local'],
        [8443, 'static.example.com'],
      ]),
    );
  });

  it('gives nothing for a host that serves no service', () => {
    expect(inboundServicesOf(config, new Set(['10.0.0.77'])).size).toBe(0);
  });
});
