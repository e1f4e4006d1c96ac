import type { HttpHandler, TcpProxyHandler } from '../model';
import { CompileError, compileListener } from './compile';
import {
  decoded,
  downstreamTlsSocket,
  hcmListener,
  ROUTER,
  tcpListener,
  TYPE,
  URL,
  type Resource,
} from './compile-testing';

const handler = (r: Resource) => compileListener(r).filterChains[0]!.handler;
const hcm = (r: Resource) => handler(r) as HttpHandler;
const SDS_CERT = { tlsCertificateSdsSecretConfigs: [{ name: 'default' }] };

describe('compileListener', () => {
  it.each<[string, () => unknown, unknown]>([
    [
      'binds by default, with no hand-off and no direction',
      () => {
        const l = compileListener(hcmListener());
        return [l.bindToPort, l.useOriginalDst, l.direction, l.inspectTls, l.defaultFilterChain];
      },
      [true, false, 'unspecified', false, undefined],
    ],
    [
      'reads bind_to_port and use_original_dst wrappers',
      () => {
        const l = compileListener(
          hcmListener(
            {},
            {},
            {
              bindToPort: { value: false },
              useOriginalDst: { value: true },
              trafficDirection: 'OUTBOUND',
            },
          ),
        );
        return [l.bindToPort, l.useOriginalDst, l.direction];
      },
      [false, true, 'outbound'],
    ],
    [
      'fills HTTP connection manager defaults (5 min stream idle, no request timeout, SANITIZE)',
      () => {
        const h = hcm(hcmListener());
        return [
          h.codec,
          h.rdsName,
          h.faultFilter,
          h.corsFilter,
          h.forwardClientCert,
          h.clientCertDetails,
          h.upgrades,
          h.streamIdleTimeoutMs,
          h.requestTimeoutMs,
        ];
      },
      [
        'AUTO',
        '8080',
        false,
        false,
        'SANITIZE',
        { subject: false, uri: false, dns: false, cert: false },
        [],
        300_000,
        undefined,
      ],
    ],
    [
      'reads explicit timeouts, 0 meaning none',
      () => {
        const h = hcm(
          hcmListener({
            streamIdleTimeout: { seconds: 0 },
            requestTimeout: { seconds: 3, nanos: 500_000_000 },
          }),
        );
        return [h.streamIdleTimeoutMs, h.requestTimeoutMs];
      },
      [undefined, 3500],
    ],
    [
      'reads codec, client cert details and enabled upgrades only',
      () => {
        const h = hcm(
          hcmListener({
            codecType: 'HTTP2',
            forwardClientCertDetails: 'SANITIZE_SET',
            setCurrentClientCertDetails: { subject: { value: true }, cert: true },
            upgradeConfigs: [
              { upgradeType: 'WebSocket' },
              { upgradeType: 'CONNECT', enabled: { value: false } },
            ],
          }),
        );
        return [h.codec, h.forwardClientCert, h.clientCertDetails, h.upgrades];
      },
      [
        'HTTP2',
        'SANITIZE_SET',
        { subject: true, uri: false, dns: false, cert: true },
        ['websocket'],
      ],
    ],
    [
      'knows the fault and CORS filters, accepts RBAC and optional unknown filters',
      () => {
        const h = hcm(
          hcmListener({
            httpFilters: [
              { name: 'envoy.filters.http.rbac', typedConfig: { '@type': URL.httpRbac } },
              { name: 'envoy.filters.http.fault', typedConfig: { '@type': URL.fault } },
              {
                name: 'envoy.filters.http.cors',
                typedConfig: { '@type': URL.cors },
                disabled: true,
              },
              { name: 'istio.stats', isOptional: true },
              ROUTER,
            ],
          }),
        );
        return [h.faultFilter, h.corsFilter];
      },
      [true, false],
    ],
    [
      'compiles an inline route configuration',
      () => {
        const h = hcm(
          hcmListener({
            rds: undefined,
            routeConfig: {
              name: 'inline',
              virtualHosts: [
                {
                  name: 'vh',
                  domains: ['*'],
                  routes: [{ match: { prefix: '/' }, route: { cluster: 'x' } }],
                },
              ],
            },
          }),
        );
        return [h.rdsName, h.routeTable?.name, h.routeTable?.virtualHosts[0]?.name];
      },
      [undefined, 'inline', 'vh'],
    ],
    [
      'compiles tcp_proxy to weighted clusters with an idle timeout',
      () => {
        const l = decoded(TYPE.listener, {
          name: 'l',
          address: { socketAddress: { address: '::', portValue: 1 } },
          filterChains: [
            {
              filters: [
                { name: 'envoy.filters.network.rbac', typedConfig: { '@type': URL.networkRbac } },
                {
                  name: 'x',
                  typedConfig: {
                    '@type': URL.tcpProxy,
                    statPrefix: 's',
                    weightedClusters: {
                      clusters: [
                        { name: 'a', weight: 3 },
                        { name: 'b', weight: 1 },
                      ],
                    },
                    idleTimeout: { seconds: 0 },
                  },
                },
              ],
            },
          ],
        });
        const h = handler(l) as TcpProxyHandler;
        return [h.kind, h.clusters.map(c => [c.name, c.weight]), h.totalWeight, h.idleTimeoutMs];
      },
      [
        'tcp',
        [
          ['a', 3],
          ['b', 1],
        ],
        4,
        0,
      ],
    ],
    [
      'compiles filter chain matches (lowercase server names, prefix lengths)',
      () =>
        compileListener(
          tcpListener([
            {
              filterChainMatch: {
                destinationPort: { value: 443 },
                prefixRanges: [
                  { addressPrefix: '10.0.0.0', prefixLen: { value: 8 } },
                  { addressPrefix: '::1' },
                ],
                sourcePrefixRanges: [{ addressPrefix: '192.168.0.0', prefixLen: { value: 16 } }],
                transportProtocol: 'tls',
                serverNames: ['*.Example.COM'],
                applicationProtocols: ['h2'],
              },
            },
          ]),
        ).filterChains[0]!.match,
      {
        destinationPort: 443,
        prefixRanges: [
          { address: '10.0.0.0', prefixLen: 8 },
          { address: '::1', prefixLen: 0 },
        ],
        sourcePrefixRanges: [{ address: '192.168.0.0', prefixLen: 16 }],
        transportProtocol: 'tls',
        serverNames: ['*.example.com'],
        applicationProtocols: ['h2'],
      },
    ],
    [
      'inspects TLS when a chain matches on server names',
      () =>
        compileListener(tcpListener([{ filterChainMatch: { serverNames: ['a.com'] } }, {}]))
          .inspectTls,
      true,
    ],
    [
      'inspects TLS when the tls_inspector listener filter is there',
      () =>
        compileListener(
          tcpListener([{}], {
            listenerFilters: [
              {
                name: 'envoy.filters.listener.tls_inspector',
                typedConfig: { '@type': URL.tlsInspector },
              },
            ],
          }),
        ).inspectTls,
      true,
    ],
    [
      'terminates TLS with files and a files trust anchor, legacy SAN matchers on every SAN type',
      () =>
        compileListener(
          tcpListener([
            {
              transportSocket: downstreamTlsSocket({
                commonTlsContext: {
                  tlsCertificates: [
                    {
                      certificateChain: { filename: '/c.pem' },
                      privateKey: { filename: '/k.pem' },
                    },
                  ],
                  validationContext: {
                    trustedCa: { filename: '/ca.pem' },
                    matchSubjectAltNames: [{ exact: 'a' }],
                  },
                },
              }),
            },
          ]),
        ).filterChains[0]!.tls,
      {
        certificate: { kind: 'files', certChainPath: '/c.pem', privateKeyPath: '/k.pem' },
        validation: {
          trust: { kind: 'files', path: '/ca.pem' },
          sanMatchers: ['DNS', 'URI', 'EMAIL', 'IP_ADDRESS'].map(sanType => ({
            sanType,
            matcher: { kind: 'exact', value: 'a', ignoreCase: false },
          })),
        },
        requireClientCertificate: false,
        alpn: [],
      },
    ],
    [
      'terminates TLS without verifying clients when there is no validation context',
      () =>
        compileListener(
          tcpListener([
            {
              transportSocket: downstreamTlsSocket({
                commonTlsContext: { ...SDS_CERT, alpnProtocols: ['h2'] },
              }),
            },
          ]),
        ).filterChains[0]!.tls,
      {
        certificate: { kind: 'sds', name: 'default' },
        requireClientCertificate: false,
        alpn: ['h2'],
      },
    ],
    [
      'trusts the SDS roots alone, and drops chain checks for ACCEPT_UNTRUSTED',
      () =>
        ['VERIFY_TRUST_CHAIN', 'ACCEPT_UNTRUSTED'].map(
          trustChainVerification =>
            compileListener(
              tcpListener([
                {
                  transportSocket: downstreamTlsSocket({
                    commonTlsContext: {
                      ...SDS_CERT,
                      combinedValidationContext: {
                        defaultValidationContext: { trustChainVerification },
                        validationContextSdsSecretConfig: { name: 'ROOTCA' },
                      },
                    },
                  }),
                },
              ]),
            ).filterChains[0]!.tls!.validation,
        ),
      [{ trust: { kind: 'sds', name: 'ROOTCA' }, sanMatchers: [] }, { sanMatchers: [] }],
    ],
    [
      'treats a raw_buffer transport socket as plaintext',
      () =>
        compileListener(
          tcpListener([
            {
              transportSocket: {
                name: 'envoy.transport_sockets.raw_buffer',
                typedConfig: { '@type': URL.rawBuffer },
              },
            },
          ]),
        ).filterChains[0]!.tls,
      undefined,
    ],
  ])('%s', (_name, get, expected) => {
    expect(get()).toEqual(expected);
  });

  const listenerAddress = { socketAddress: { address: '0.0.0.0', portValue: 1 } };
  it.each<[string, Resource, string | RegExp]>([
    ['a missing name', { address: listenerAddress }, 'listener (unnamed): name: required'],
    ['a missing address', decoded(TYPE.listener, { name: 'l' }), 'listener l: address: required'],
    [
      'an unknown network filter',
      tcpListener([{ filters: [{ name: 'envoy.filters.network.foo' }] }]),
      'listener l: filterChains[0].filters[0]: unsupported network filter envoy.filters.network.foo',
    ],
    [
      'an unknown network filter packed as an unknown Any',
      {
        ...tcpListener([{}]),
        filterChains: [
          {
            filters: [
              { name: 'x', typedConfig: { type_url: 'type.googleapis.com/foo.v1.Bar', value: '' } },
            ],
          },
        ],
      },
      'listener l: filterChains[0].filters[0]: unsupported network filter foo.v1.Bar',
    ],
    [
      'a chain without filters',
      tcpListener([{ filters: [] }]),
      'listener l: filterChains[0].filters: a filter chain needs a terminal filter',
    ],
    [
      'a filter after the terminal one',
      tcpListener([
        {
          filters: [
            {
              name: 'envoy.filters.network.tcp_proxy',
              typedConfig: { '@type': URL.tcpProxy, statPrefix: 's', cluster: 'c' },
            },
            {
              name: 'envoy.filters.network.tcp_proxy',
              typedConfig: { '@type': URL.tcpProxy, statPrefix: 's', cluster: 'c' },
            },
          ],
        },
      ]),
      'listener l: filterChains[0].filters[1]: no filter may follow the terminal filter',
    ],
    [
      'no chains at all',
      decoded(TYPE.listener, { name: 'l', address: listenerAddress }),
      /needs a filter chain/,
    ],
    [
      'a pipe address',
      decoded(TYPE.listener, { name: 'l', address: { pipe: { path: '/x' } } }),
      'listener l: address.pipe: not supported',
    ],
    [
      'a host name address',
      tcpListener([{}], { address: { socketAddress: { address: 'example.com', portValue: 1 } } }),
      /address.socketAddress.address: example.com is not an IP address/,
    ],
    [
      'a UDP address',
      tcpListener([{}], {
        address: { socketAddress: { address: '0.0.0.0', portValue: 1, protocol: 'UDP' } },
      }),
      /protocol: unsupported value "UDP"/,
    ],
    [
      'an API listener',
      tcpListener([{}], { apiListener: { apiListener: { '@type': URL.hcm, statPrefix: 'x' } } }),
      'listener l: apiListener: not supported',
    ],
    [
      'an unknown listener filter',
      tcpListener([{}], { listenerFilters: [{ name: 'envoy.filters.listener.proxy_protocol' }] }),
      'listener l: listenerFilters[0]: unsupported listener filter envoy.filters.listener.proxy_protocol',
    ],
    [
      'two chains with the same match',
      tcpListener([
        { name: 'a', filterChainMatch: { serverNames: ['x', 'y'] } },
        { name: 'b', filterChainMatch: { serverNames: ['y'] } },
      ]),
      'listener l: filterChains[1].filterChainMatch: same match as filter chain "a"',
    ],
    [
      'plaintext ALPN matches (http_inspector)',
      tcpListener([{ filterChainMatch: { applicationProtocols: ['http/1.1'] } }], {
        listenerFilters: [
          {
            name: 'envoy.filters.listener.http_inspector',
            typedConfig: { '@type': URL.httpInspector },
          },
        ],
      }),
      /http_inspector\) is not supported/,
    ],
    [
      'source port matches',
      tcpListener([{ filterChainMatch: { sourcePorts: [1] } }]),
      'listener l: filterChains[0].filterChainMatch.sourcePorts: not supported',
    ],
    [
      'an unknown transport protocol',
      tcpListener([{ filterChainMatch: { transportProtocol: 'quic' } }]),
      /unsupported transport protocol quic/,
    ],
    [
      'a bad CIDR',
      tcpListener([
        {
          filterChainMatch: {
            prefixRanges: [{ addressPrefix: '10.0.0.0', prefixLen: { value: 33 } }],
          },
        },
      ]),
      /prefixLen.value: must be at most 32/,
    ],
    [
      'an unknown transport socket',
      tcpListener([{ transportSocket: { name: 'envoy.transport_sockets.alts' } }]),
      'listener l: filterChains[0].transportSocket: unsupported transport socket envoy.transport_sockets.alts',
    ],
    [
      'server TLS without a certificate',
      tcpListener([{ transportSocket: downstreamTlsSocket({}) }]),
      /commonTlsContext: a server certificate is required/,
    ],
    [
      'inline certificate material',
      tcpListener([
        {
          transportSocket: downstreamTlsSocket({
            commonTlsContext: {
              tlsCertificates: [
                { certificateChain: { inlineString: 'x' }, privateKey: { filename: '/k' } },
              ],
            },
          }),
        },
      ]),
      /tlsCertificates\[0\].certificateChain: only filename data sources are supported/,
    ],
    [
      'two certificates',
      tcpListener([
        {
          transportSocket: downstreamTlsSocket({
            commonTlsContext: { tlsCertificateSdsSecretConfigs: [{ name: 'a' }, { name: 'b' }] },
          }),
        },
      ]),
      /more than one certificate is not supported/,
    ],
    [
      'SAN checks without trusted roots',
      tcpListener([
        {
          transportSocket: downstreamTlsSocket({
            commonTlsContext: {
              ...SDS_CERT,
              validationContext: {
                matchTypedSubjectAltNames: [{ sanType: 'DNS', matcher: { exact: 'a' } }],
              },
            },
          }),
        },
      ]),
      /validationContext: subject alt name matchers need a trusted CA/,
    ],
    [
      'OTHER_NAME SANs',
      tcpListener([
        {
          transportSocket: downstreamTlsSocket({
            commonTlsContext: {
              ...SDS_CERT,
              validationContext: {
                trustedCa: { filename: '/ca' },
                matchTypedSubjectAltNames: [{ sanType: 'OTHER_NAME', matcher: { exact: 'a' } }],
              },
            },
          }),
        },
      ]),
      /sanType: OTHER_NAME is not supported/,
    ],
    [
      'SNI required',
      tcpListener([
        {
          transportSocket: downstreamTlsSocket({
            commonTlsContext: SDS_CERT,
            requireSni: { value: true },
          }),
        },
      ]),
      /requireSni: not supported/,
    ],
    [
      'an unknown HTTP filter',
      hcmListener({ httpFilters: [{ name: 'envoy.filters.http.ext_authz' }, ROUTER] }),
      'listener l: filterChains[0].filters[0].typedConfig.httpFilters[0]: unsupported http filter envoy.filters.http.ext_authz',
    ],
    ['no router', hcmListener({ httpFilters: [] }), /httpFilters: the router filter is required/],
    [
      'a filter after the router',
      hcmListener({
        httpFilters: [
          ROUTER,
          { name: 'envoy.filters.http.fault', typedConfig: { '@type': URL.fault } },
        ],
      }),
      /httpFilters\[1\]: the router must be the last HTTP filter/,
    ],
    [
      'filter-level fault injection',
      hcmListener({
        httpFilters: [
          { name: 'f', typedConfig: { '@type': URL.fault, abort: { httpStatus: 500 } } },
          ROUTER,
        ],
      }),
      /httpFilters\[0\].typedConfig: filter-level fault injection is not supported/,
    ],
    [
      'neither RDS nor a route configuration',
      hcmListener({ rds: undefined }),
      /typedConfig: needs rds or routeConfig/,
    ],
    [
      'scoped routes',
      hcmListener({ rds: undefined, scopedRoutes: { name: 'x' } }),
      /scopedRoutes: not supported/,
    ],
    ['HTTP/3', hcmListener({ codecType: 'HTTP3' }), /codecType: unsupported value "HTTP3"/],
    ['a missing stat prefix', hcmListener({ statPrefix: '' }), /statPrefix: required/],
    [
      'a bad inline route',
      hcmListener({
        rds: undefined,
        routeConfig: {
          virtualHosts: [{ name: 'v', domains: ['*'], routes: [{ match: { prefix: '/' } }] }],
        },
      }),
      'listener l: filterChains[0].filters[0].typedConfig.routeConfig.virtualHosts[0].routes[0]: route has no action (route, redirect or directResponse)',
    ],
    [
      'tcp_proxy without a cluster',
      tcpListener([
        { filters: [{ name: 'x', typedConfig: { '@type': URL.tcpProxy, statPrefix: 's' } }] },
      ]),
      /tcp_proxy names no cluster/,
    ],
    [
      'tcp_proxy tunnelling',
      tcpListener([
        {
          filters: [
            {
              name: 'x',
              typedConfig: {
                '@type': URL.tcpProxy,
                statPrefix: 's',
                cluster: 'c',
                tunnelingConfig: { hostname: 'h' },
              },
            },
          ],
        },
      ]),
      /tunnelingConfig: not supported/,
    ],
    [
      'a zero tcp_proxy weight',
      tcpListener([
        {
          filters: [
            {
              name: 'x',
              typedConfig: {
                '@type': URL.tcpProxy,
                statPrefix: 's',
                weightedClusters: { clusters: [{ name: 'a', weight: 0 }] },
              },
            },
          ],
        },
      ]),
      /weight: must be at least 1/,
    ],
  ])('rejects %s', (_name, resource, message) => {
    let err: unknown;
    try {
      compileListener(resource);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CompileError);
    if (typeof message === 'string') expect((err as Error).message).toBe(message);
    else expect((err as Error).message).toMatch(message);
  });
});
