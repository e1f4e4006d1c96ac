/**
 * Mutual TLS for proxyless gRPC clients (gRPC's xDS security, gRFC A29): which clusters carry an
 * UpstreamTlsContext naming the bootstrap's certificate provider `default`, checked as gRPC
 * itself decodes them.
 */
import type { ConfigObject } from '../../config/types';
import type { ServiceInstance } from '../../registry/types';
import { CLUSTER_TYPE } from '../model';
import { createGenerator } from './index';
import { expectGrpcAccepts } from './proto-check';
import { config, fqdn, instance, proxy, pushContext, service } from './testing';

const gen = createGenerator();
const client = proxy('proxyless');
const REVIEWS = fqdn('reviews');
const REVIEWS_SA = 'spiffe://cluster.local/ns/default/sa/reviews';
const CLUSTER = `outbound|9080||${REVIEWS}`;

const mesh = (address: string, labels: Record<string, string> = { app: 'reviews' }) =>
  instance(REVIEWS, 9080, address, { tlsMode: 'istio', labels });
const strict = (extra: Record<string, unknown> = {}) =>
  config('PeerAuthentication', 'default', 'reviews', {
    selector: { matchLabels: { app: 'reviews' } },
    mtls: { mode: 'STRICT' },
    ...extra,
  });

/** gRPC's decoded view of the reviews cluster. */
function decoded(configs: ConfigObject[], instances: ServiceInstance[]): Record<string, unknown> {
  const push = pushContext({
    services: [service('reviews', ['grpc:9080'], { serviceAccounts: [REVIEWS_SA] })],
    instances,
    configs,
  });
  const [c] = expectGrpcAccepts(CLUSTER_TYPE, gen.generate(CLUSTER_TYPE, client, push, [CLUSTER]));
  return c!;
}

const MUTUAL = {
  securityUpdate: {
    caCertificateProviderInstance: 'default',
    identityCertificateProviderInstance: 'default',
    subjectAltNameMatchers: [expect.objectContaining({ exact: REVIEWS_SA })],
  },
};

describe('proxyless cluster TLS', () => {
  it.each([
    {
      name: 'is mutual when every endpoint runs the proxy under STRICT',
      configs: [strict()],
      instances: [mesh('10.0.0.1'), mesh('10.0.0.2')],
      mutual: true,
    },
    {
      name: 'is mutual under a mesh-wide STRICT policy in the root namespace',
      configs: [config('PeerAuthentication', 'sail-system', 'mesh', { mtls: { mode: 'STRICT' } })],
      instances: [mesh('10.0.0.1')],
      mutual: true,
    },
    {
      name: 'stays plaintext under PERMISSIVE (gRPC sends no mesh ALPN for the proxy to match)',
      configs: [],
      instances: [mesh('10.0.0.1')],
      mutual: false,
    },
    {
      name: 'stays plaintext when one endpoint has no proxy',
      configs: [strict()],
      instances: [mesh('10.0.0.1'), instance(REVIEWS, 9080, '10.0.0.2')],
      mutual: false,
    },
    {
      name: 'stays plaintext when STRICT is turned off on the port',
      configs: [strict({ portLevelMtls: { '9080': { mode: 'PERMISSIVE' } } })],
      instances: [mesh('10.0.0.1')],
      mutual: false,
    },
    {
      name: 'stays plaintext without endpoints',
      configs: [strict()],
      instances: [],
      mutual: false,
    },
    {
      name: 'follows a DestinationRule that disables TLS',
      configs: [
        strict(),
        config('DestinationRule', 'default', 'reviews', {
          host: 'reviews',
          trafficPolicy: { tls: { mode: 'DISABLE' } },
        }),
      ],
      instances: [mesh('10.0.0.1')],
      mutual: false,
    },
    {
      name: 'follows a DestinationRule asking for ISTIO_MUTUAL whatever the policy',
      configs: [
        config('DestinationRule', 'default', 'reviews', {
          host: 'reviews',
          trafficPolicy: { tls: { mode: 'ISTIO_MUTUAL' } },
        }),
      ],
      instances: [instance(REVIEWS, 9080, '10.0.0.1')],
      mutual: true,
    },
  ])('$name', ({ configs, instances, mutual }) => {
    const c = decoded(configs, instances);
    if (mutual) expect(c).toMatchObject(MUTUAL);
    else expect(c.securityUpdate).toBeUndefined();
  });

  it('decides per subset from the subset endpoints', () => {
    const push = pushContext({
      services: [service('reviews', ['grpc:9080'], { serviceAccounts: [REVIEWS_SA] })],
      instances: [
        mesh('10.0.0.1', { app: 'reviews', version: 'v1' }),
        instance(REVIEWS, 9080, '10.0.0.2', { labels: { app: 'reviews', version: 'v2' } }),
      ],
      configs: [
        strict(),
        config('DestinationRule', 'default', 'reviews', {
          host: 'reviews',
          subsets: [
            { name: 'v1', labels: { version: 'v1' } },
            { name: 'v2', labels: { version: 'v2' } },
          ],
        }),
      ],
    });
    const names = [`outbound|9080|v1|${REVIEWS}`, `outbound|9080|v2|${REVIEWS}`];
    const [v1, v2] = expectGrpcAccepts(
      CLUSTER_TYPE,
      gen.generate(CLUSTER_TYPE, client, push, names),
    );
    expect(v1).toMatchObject(MUTUAL);
    expect(v2!.securityUpdate).toBeUndefined();
  });

  it('leaves sidecar clusters to auto mTLS by endpoint', () => {
    const push = pushContext({
      services: [service('reviews', ['grpc:9080'], { serviceAccounts: [REVIEWS_SA] })],
      instances: [mesh('10.0.0.1')],
      configs: [strict()],
    });
    const [c] = gen.generate(CLUSTER_TYPE, proxy('sidecar'), push, [CLUSTER]);
    expect(c!.resource.transportSocket).toBeUndefined();
    expect(c!.resource.transportSocketMatches).toHaveLength(2);
  });
});
