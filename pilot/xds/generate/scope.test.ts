import {
  egressHostsAllow,
  isExportedTo,
  peerAuthenticationMode,
  ProxyScope,
  proxyNamespace,
  selectSidecar,
} from './scope';
import { config, fqdn, proxy, pushContext, service } from './testing';

describe('exportTo', () => {
  it.each([
    [undefined, 'a', 'b', true],
    [[], 'a', 'b', true],
    [['*'], 'a', 'b', true],
    [['.'], 'a', 'a', true],
    [['.'], 'a', 'b', false],
    [['b'], 'a', 'b', true],
    [['c'], 'a', 'b', false],
    [['~'], 'a', 'a', false],
  ])('exportTo %j from %s to %s: %s', (exportTo, owner, client, want) => {
    expect(isExportedTo(exportTo, owner, client)).toBe(want);
  });
});

describe('Sidecar egress hosts', () => {
  it.each([
    [['*/*'], 'shop', 'x.shop.svc.cluster.local', true],
    [['./*'], 'default', 'x.default.svc.cluster.local', true],
    [['./*'], 'shop', 'x.shop.svc.cluster.local', false],
    [['shop/*'], 'shop', 'x.shop.svc.cluster.local', true],
    [['shop/x.shop.svc.cluster.local'], 'shop', 'x.shop.svc.cluster.local', true],
    [['shop/y.shop.svc.cluster.local'], 'shop', 'x.shop.svc.cluster.local', false],
    [['*/*.example.com'], 'ext', 'api.example.com', true],
    [['~/*'], 'default', 'x.default.svc.cluster.local', false],
  ])('%j in default lets %s/%s through: %s', (hosts, ns, host, want) => {
    expect(egressHostsAllow(hosts, 'default', ns, host)).toBe(want);
  });
});

describe('ProxyScope', () => {
  const services = [
    service('reviews', ['http:9080', 'grpc:9090']),
    service('ratings', ['http:9080'], { namespace: 'shop' }),
    service('secret', ['http:80'], { namespace: 'vault', exportTo: ['vault'] }),
    service('api.example.com', ['https:443'], { namespace: 'ext', location: 'MESH_EXTERNAL' }),
  ];
  const hosts = (s: ProxyScope) => s.services.map(v => v.service.hostname);

  it('sees every service exported to its namespace when it has no Sidecar', () => {
    const scope = new ProxyScope(proxy('sidecar'), pushContext({ services }));
    expect(hosts(scope)).toEqual(['api.example.com', fqdn('ratings', 'shop'), fqdn('reviews')]);
    const vault = new ProxyScope(
      proxy('sidecar', { namespace: 'vault' }),
      pushContext({ services }),
    );
    expect(hosts(vault)).toContain(fqdn('secret', 'vault'));
  });

  it('narrows visibility to the Sidecar egress hosts, and ports to an egress port', () => {
    const push = pushContext({
      services,
      configs: [
        config('Sidecar', 'default', 'default', {
          egress: [
            { hosts: ['./*', 'ext/api.example.com'] },
            { port: { number: 9080 }, hosts: ['shop/*'] },
          ],
        }),
      ],
    });
    const scope = new ProxyScope(proxy('sidecar'), push);
    expect(hosts(scope)).toEqual(['api.example.com', fqdn('ratings', 'shop'), fqdn('reviews')]);
    expect(scope.service(fqdn('reviews'))?.ports.map(p => p.port)).toEqual([9080, 9090]);
    const onlyPort = new ProxyScope(
      proxy('sidecar'),
      pushContext({
        services,
        configs: [
          config('Sidecar', 'default', 'default', {
            egress: [{ port: { number: 9090 }, hosts: ['*/*'] }],
          }),
        ],
      }),
    );
    expect(hosts(onlyPort)).toEqual([fqdn('reviews')]);
    expect(onlyPort.service(fqdn('reviews'))?.ports.map(p => p.port)).toEqual([9090]);
  });

  it('selects the Sidecar by workloadSelector, then the namespace default, then the root one', () => {
    const selected = config('Sidecar', 'default', 'web', {
      workloadSelector: { labels: { app: 'web' } },
      outboundTrafficPolicy: { mode: 'REGISTRY_ONLY' },
    });
    const nsDefault = config('Sidecar', 'default', 'default', { egress: [{ hosts: ['./*'] }] });
    const root = config('Sidecar', 'sail-system', 'default', { egress: [{ hosts: ['*/*'] }] });
    const push = pushContext({ configs: [root, nsDefault, selected] });
    expect(selectSidecar(push, 'default', { app: 'web' })).toBe(selected);
    expect(selectSidecar(push, 'default', { app: 'db' })).toBe(nsDefault);
    expect(selectSidecar(push, 'shop', {})).toBe(root);
    expect(
      selectSidecar(pushContext({ configs: [root], mesh: { rootNamespace: 'mesh' } }), 'shop', {}),
    ).toBe(undefined);
  });

  it('takes outboundTrafficPolicy from the Sidecar over the mesh default', () => {
    const push = pushContext({
      configs: [
        config('Sidecar', 'default', 'x', { outboundTrafficPolicy: { mode: 'REGISTRY_ONLY' } }),
      ],
    });
    expect(new ProxyScope(proxy('sidecar'), push).outboundTrafficPolicy).toBe('REGISTRY_ONLY');
    expect(
      new ProxyScope(proxy('sidecar', { namespace: 'shop' }), push).outboundTrafficPolicy,
    ).toBe('ALLOW_ANY');
    const registryOnly = pushContext({ mesh: { outboundTrafficPolicy: 'REGISTRY_ONLY' } });
    expect(new ProxyScope(proxy('sidecar'), registryOnly).outboundTrafficPolicy).toBe(
      'REGISTRY_ONLY',
    );
  });

  it('picks the VirtualService with the exact host over wildcards, the oldest on ties', () => {
    const older = config('VirtualService', 'default', 'older', { hosts: ['reviews'], http: [] });
    const newer = config('VirtualService', 'default', 'newer', { hosts: ['reviews'], http: [] });
    const wildcard = config('VirtualService', 'default', 'wild', {
      hosts: ['*.svc.cluster.local'],
      http: [],
    });
    const gatewayOnly = config('VirtualService', 'default', 'gw', {
      hosts: ['ratings.shop.svc.cluster.local'],
      gateways: ['ingress'],
      http: [],
    });
    const hidden = config('VirtualService', 'shop', 'hidden', {
      hosts: ['ratings.shop.svc.cluster.local'],
      exportTo: ['.'],
      http: [],
    });
    const push = pushContext({ services, configs: [wildcard, older, newer, gatewayOnly, hidden] });
    const scope = new ProxyScope(proxy('sidecar'), push);
    expect(scope.virtualService(fqdn('reviews'))?.config).toBe(older);
    expect(scope.virtualService(fqdn('ratings', 'shop'))?.config).toBe(wildcard);
    const shop = new ProxyScope(proxy('sidecar', { namespace: 'shop' }), push);
    expect(shop.virtualService(fqdn('ratings', 'shop'))?.config).toBe(hidden);
  });

  it('looks DestinationRules up in the proxy namespace, then the service namespace, then the root', () => {
    const inShop = config('DestinationRule', 'shop', 'ratings', { host: 'ratings' });
    const inDefault = config('DestinationRule', 'default', 'ratings', {
      host: 'ratings.shop.svc.cluster.local',
    });
    const privateRule = config('DestinationRule', 'shop', 'private', {
      host: 'ratings',
      exportTo: ['.'],
    });
    const meshWide = config('DestinationRule', 'sail-system', 'all', { host: '*.local' });
    const selected = config('DestinationRule', 'web', 'web-only', {
      host: 'ratings.shop.svc.cluster.local',
      workloadSelector: { matchLabels: { app: 'web' } },
    });
    const push = pushContext({ services, configs: [inShop, inDefault, meshWide, selected] });
    expect(
      new ProxyScope(proxy('sidecar'), push).destinationRule(fqdn('ratings', 'shop'))?.config,
    ).toBe(inDefault);
    expect(
      new ProxyScope(proxy('sidecar', { namespace: 'other' }), push).destinationRule(
        fqdn('ratings', 'shop'),
      )?.config,
    ).toBe(inShop);
    expect(
      new ProxyScope(proxy('sidecar', { namespace: 'other' }), push).destinationRule(
        fqdn('reviews'),
      )?.config,
    ).toBe(meshWide);
    const web = (labels: Record<string, string>) =>
      new ProxyScope(proxy('sidecar', { namespace: 'web', labels }), push).destinationRule(
        fqdn('ratings', 'shop'),
      )?.config;
    expect(web({ app: 'web' })).toBe(selected);
    expect(web({ app: 'db' })).toBe(inShop);
    const privatePush = pushContext({ services, configs: [privateRule] });
    expect(
      new ProxyScope(proxy('sidecar'), privatePush).destinationRule(fqdn('ratings', 'shop')),
    ).toBeUndefined();
    expect(
      new ProxyScope(proxy('sidecar', { namespace: 'shop' }), privatePush).destinationRule(
        fqdn('ratings', 'shop'),
      )?.config,
    ).toBe(privateRule);
  });

  it('keys scopes by namespace and Sidecar, and by labels only when config depends on them', () => {
    const push = pushContext({ services });
    const a = new ProxyScope(proxy('sidecar', { labels: { app: 'a' } }), push);
    const b = new ProxyScope(proxy('sidecar', { labels: { app: 'b' } }), push);
    expect(a.key).toBe(b.key);
    expect(new ProxyScope(proxy('sidecar', { namespace: 'shop' }), push).key).not.toBe(a.key);
    const labelled = pushContext({
      services,
      configs: [
        config('VirtualService', 'default', 'r', {
          hosts: ['reviews'],
          http: [
            {
              match: [{ sourceLabels: { app: 'a' } }],
              route: [{ destination: { host: 'reviews' } }],
            },
          ],
        }),
      ],
    });
    expect(new ProxyScope(proxy('sidecar', { labels: { app: 'a' } }), labelled).key).not.toBe(
      new ProxyScope(proxy('sidecar', { labels: { app: 'b' } }), labelled).key,
    );
  });
});

describe('PeerAuthentication', () => {
  const push = pushContext({
    configs: [
      config('PeerAuthentication', 'sail-system', 'default', { mtls: { mode: 'STRICT' } }),
      config('PeerAuthentication', 'legacy', 'default', { mtls: { mode: 'DISABLE' } }),
      config('PeerAuthentication', 'default', 'web', {
        selector: { matchLabels: { app: 'web' } },
        mtls: { mode: 'UNSET' },
        portLevelMtls: { '8080': { mode: 'PERMISSIVE' } },
      }),
    ],
  });

  it.each([
    ['default', { app: 'web' }, 8080, 'PERMISSIVE'],
    ['default', { app: 'web' }, 9090, 'STRICT'],
    ['default', { app: 'db' }, 8080, 'STRICT'],
    ['legacy', {}, 80, 'DISABLE'],
  ])('in %s with labels %j, port %d: %s', (ns, labels, port, want) => {
    expect(peerAuthenticationMode(push, ns, labels, port)).toBe(want);
  });

  it('is PERMISSIVE when nothing is set', () => {
    expect(peerAuthenticationMode(pushContext({}), 'default', {}, 80)).toBe('PERMISSIVE');
  });
});

describe('proxyNamespace', () => {
  it('uses the identity, then metadata NAMESPACE, then default', () => {
    const p = proxy('proxyless', { namespace: 'shop' });
    expect(proxyNamespace(p)).toBe('shop');
    expect(
      proxyNamespace({
        ...p,
        identity: { ...p.identity, namespace: '' },
        metadata: { NAMESPACE: 'x' },
      }),
    ).toBe('x');
    expect(proxyNamespace({ ...p, identity: { ...p.identity, namespace: '' } })).toBe('default');
  });
});
