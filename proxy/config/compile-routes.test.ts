import type { RouteAction, RouteMatch, StringMatcher } from '../model';
import { NO_HEADER_EDITS } from '../model';
import { CompileError, compileRouteTable } from './compile';
import { decoded, oneRoute, TYPE, URL, type Resource } from './compile-testing';

const first = (r: Resource) => compileRouteTable(r).virtualHosts[0]!.routes[0]!;
const action = (r: Resource) => first(r).action as RouteAction;
const match = (m: object) => first(oneRoute({ match: m })).match;
const fault = (config: object) => ({
  typedPerFilterConfig: { 'envoy.filters.http.fault': { '@type': URL.fault, ...config } },
});
const cors = (config: object) => ({
  typedPerFilterConfig: { 'envoy.filters.http.cors': { '@type': URL.corsPolicy, ...config } },
});
const str = (kind: StringMatcher['kind'], value: string, ignoreCase = false) => ({
  kind,
  value,
  ignoreCase,
});

describe('compileRouteTable', () => {
  it.each<[string, () => unknown, unknown]>([
    [
      'defaults the route timeout to 15 s and has no retries',
      () => {
        const a = action(oneRoute({}));
        return [
          a.timeoutMs,
          a.retry,
          a.clusters,
          a.totalWeight,
          a.mirrors,
          a.hashPolicies,
          a.upgrades,
        ];
      },
      [
        15_000,
        undefined,
        [
          {
            name: 'c',
            weight: 1,
            requestHeaders: NO_HEADER_EDITS,
            responseHeaders: NO_HEADER_EDITS,
          },
        ],
        1,
        [],
        [],
        [],
      ],
    ],
    [
      'reads timeout 0 as no timeout',
      () => action(oneRoute({ route: { cluster: 'c', timeout: { seconds: 0 } } })).timeoutMs,
      0,
    ],
    [
      'fills retry defaults: one retry, 25 ms base, 250 ms max',
      () =>
        action(oneRoute({ route: { cluster: 'c', retryPolicy: { retryOn: '5xx, reset' } } })).retry,
      {
        retryOn: new Set(['5xx', 'reset']),
        numRetries: 1,
        retriableStatusCodes: [],
        backoffBaseMs: 25,
        backoffMaxMs: 250,
      },
    ],
    [
      'reads the retry back-off, max defaulting to ten times the base',
      () =>
        [
          { baseInterval: { nanos: 100_000_000 } },
          { baseInterval: { seconds: 1 }, maxInterval: { seconds: 3 } },
        ].map(retryBackOff => {
          const r = action(
            oneRoute({
              route: { cluster: 'c', retryPolicy: { retryBackOff, perTryTimeout: { seconds: 0 } } },
            }),
          ).retry!;
          return [r.backoffBaseMs, r.backoffMaxMs, r.perTryTimeoutMs];
        }),
      [
        [100, 1000, undefined],
        [1000, 3000, undefined],
      ],
    ],
    [
      'accepts the previous-hosts retry predicate',
      () =>
        action(
          oneRoute({
            route: {
              cluster: 'c',
              retryPolicy: {
                retryHostPredicate: [{ name: 'envoy.retry_host_predicates.previous_hosts' }],
              },
            },
          }),
        ).retry?.numRetries,
      1,
    ],
    [
      'inherits the virtual host retry policy and mirrors unless the route has its own',
      () => {
        const t = compileRouteTable(
          decoded(TYPE.routes, {
            name: 'r',
            virtualHosts: [
              {
                name: 'vh',
                domains: ['*'],
                retryPolicy: { numRetries: { value: 5 } },
                requestMirrorPolicies: [{ cluster: 'm' }],
                routes: [
                  { match: { prefix: '/a' }, route: { cluster: 'c' } },
                  {
                    match: { prefix: '/b' },
                    route: {
                      cluster: 'c',
                      retryPolicy: { numRetries: { value: 0 } },
                      requestMirrorPolicies: [
                        {
                          cluster: 'n',
                          runtimeFraction: {
                            defaultValue: { numerator: 5, denominator: 'TEN_THOUSAND' },
                          },
                        },
                      ],
                    },
                  },
                ],
              },
            ],
          }),
        );
        return t.virtualHosts[0]!.routes.map(r => [
          (r.action as RouteAction).retry!.numRetries,
          (r.action as RouteAction).mirrors,
        ]);
      },
      [
        [5, [{ cluster: 'm', fraction: 1 }]],
        [0, [{ cluster: 'n', fraction: 0.0005 }]],
      ],
    ],
    [
      'reads weighted clusters with per-cluster header edits',
      () => {
        const a = action(
          oneRoute({
            route: {
              weightedClusters: {
                clusters: [
                  {
                    name: 'a',
                    weight: { value: 1 },
                    requestHeadersToAdd: [{ header: { key: 'X-A', value: '1' } }],
                    responseHeadersToRemove: ['x-b'],
                  },
                  { name: 'b', weight: { value: 3 } },
                  { name: 'z', weight: { value: 0 } },
                ],
              },
            },
          }),
        );
        return [
          a.clusters.map(c => [c.name, c.weight, c.requestHeaders, c.responseHeaders]),
          a.totalWeight,
        ];
      },
      [
        [
          [
            'a',
            1,
            { set: [], add: [{ name: 'x-a', value: '1' }], remove: [] },
            { set: [], add: [], remove: ['x-b'] },
          ],
          ['b', 3, NO_HEADER_EDITS, NO_HEADER_EDITS],
          ['z', 0, NO_HEADER_EDITS, NO_HEADER_EDITS],
        ],
        4,
      ],
    ],
    [
      'reads rewrites and hash policies',
      () => {
        const a = action(
          oneRoute({
            route: {
              cluster: 'c',
              regexRewrite: { pattern: { regex: '^/v1/(.*)$' }, substitution: '/\\1' },
              hostRewriteLiteral: 'h.example.com',
              hashPolicy: [
                { header: { headerName: 'X-User' }, terminal: true },
                { cookie: { name: 's', ttl: { seconds: 0 } } },
                { connectionProperties: { sourceIp: true } },
                { connectionProperties: { sourceIp: false } },
                { queryParameter: { name: 'u' } },
              ],
              upgradeConfigs: [{ upgradeType: 'WebSocket' }],
            },
          }),
        );
        return [
          '/v1/x/y'.replace(a.regexRewrite!.regex, a.regexRewrite!.substitution),
          a.hostRewrite,
          a.hashPolicies,
          a.upgrades,
        ];
      },
      [
        '/x/y',
        'h.example.com',
        [
          { kind: 'header', name: 'x-user', terminal: true },
          { kind: 'cookie', name: 's', ttlMs: 0, terminal: false },
          { kind: 'sourceIp', terminal: false },
          { kind: 'queryParameter', name: 'u', terminal: false },
        ],
        ['websocket'],
      ],
    ],
    [
      'reads path matches, case sensitivity and the runtime fraction',
      () =>
        [
          { prefix: '' },
          { path: '/exact', caseSensitive: { value: false } },
          { pathSeparatedPrefix: '/api' },
          { prefix: '/', runtimeFraction: { defaultValue: { numerator: 25 } } },
        ].map(m => {
          const x = match(m);
          return [x.path, x.caseSensitive, x.fraction];
        }),
      [
        [{ kind: 'prefix', value: '' }, true, undefined],
        [{ kind: 'path', value: '/exact' }, false, undefined],
        [{ kind: 'pathSeparatedPrefix', value: '/api' }, true, undefined],
        [{ kind: 'prefix', value: '/' }, true, 0.25],
      ],
    ],
    [
      'compiles a safe_regex path as an anchored RegExp',
      () => {
        const p = match({ safeRegex: { regex: '/items/[0-9]+' } }).path as Extract<
          RouteMatch['path'],
          { kind: 'regex' }
        >;
        return ['/items/12', '/items/12/x', 'x/items/1'].map(s => p.regex.test(s));
      },
      [true, false, false],
    ],
    [
      'reads string and legacy header matchers',
      () =>
        match({
          prefix: '/',
          headers: [
            { name: 'A', stringMatch: { exact: 'X', ignoreCase: true } },
            { name: 'b', stringMatch: { suffix: '.com' } },
            { name: 'c', stringMatch: { contains: 'mid' } },
            { name: 'd', exactMatch: '' },
            { name: 'e', prefixMatch: 'p' },
            { name: 'f', suffixMatch: 's' },
            { name: 'g', containsMatch: 'c' },
            { name: 'h', presentMatch: true, invertMatch: true },
            { name: 'i', presentMatch: false },
            { name: 'j' },
            { name: ':method', stringMatch: { exact: 'GET' } },
          ],
        }).headers,
      [
        { name: 'a', match: str('exact', 'x', true), invert: false },
        { name: 'b', match: str('suffix', '.com'), invert: false },
        { name: 'c', match: str('contains', 'mid'), invert: false },
        { name: 'd', match: str('exact', ''), invert: false },
        { name: 'e', match: str('prefix', 'p'), invert: false },
        { name: 'f', match: str('suffix', 's'), invert: false },
        { name: 'g', match: str('contains', 'c'), invert: false },
        { name: 'h', match: { kind: 'present', present: true }, invert: true },
        { name: 'i', match: { kind: 'present', present: false }, invert: false },
        { name: 'j', match: { kind: 'present', present: true }, invert: false },
        { name: ':method', match: str('exact', 'GET'), invert: false },
      ],
    ],
    [
      'compiles regex header matchers, legacy and new',
      () =>
        match({
          prefix: '/',
          headers: [
            { name: 'a', safeRegexMatch: { regex: 'v[12]' } },
            { name: 'b', stringMatch: { safeRegex: { regex: 'x+' }, ignoreCase: true } },
          ],
        }).headers.map(h => {
          const m = h.match as StringMatcher;
          return [m.kind, m.value, m.ignoreCase, m.regex!.test('v1'), m.regex!.test('xx')];
        }),
      [
        ['regex', 'v[12]', false, true, false],
        ['regex', 'x+', false, false, true],
      ],
    ],
    [
      'reads query parameter matchers',
      () =>
        match({
          prefix: '/',
          queryParameters: [
            { name: 'a', stringMatch: { prefix: 'x' } },
            { name: 'b', presentMatch: true },
          ],
        }).queryParameters,
      [{ name: 'a', match: str('prefix', 'x') }, { name: 'b' }],
    ],
    [
      'sorts header additions into set and add (append_action and the legacy append)',
      () =>
        first(
          oneRoute({
            requestHeadersToAdd: [
              { header: { key: 'a', value: '1' } },
              { header: { key: 'b', value: '2' }, appendAction: 'OVERWRITE_IF_EXISTS_OR_ADD' },
              { header: { key: 'c', value: '3' }, appendAction: 'APPEND_IF_EXISTS_OR_ADD' },
              { header: { key: 'd', value: '4' }, append: { value: false } },
              { header: { key: 'e', value: '5' }, append: { value: true } },
              { header: { key: 'f', value: '' } },
              { header: { key: 'g', value: '' }, keepEmptyValue: true },
              { header: { key: 'h', value: '100%% sure' } },
            ],
            requestHeadersToRemove: ['X-Gone'],
          }),
        ).requestHeaders,
      {
        set: [
          { name: 'b', value: '2' },
          { name: 'd', value: '4' },
        ],
        add: [
          { name: 'a', value: '1' },
          { name: 'c', value: '3' },
          { name: 'e', value: '5' },
          { name: 'g', value: '' },
          { name: 'h', value: '100% sure' },
        ],
        remove: ['x-gone'],
      },
    ],
    [
      'appends route configuration header edits to each virtual host',
      () => {
        const vh = compileRouteTable(
          oneRoute(
            {},
            { responseHeadersToAdd: [{ header: { key: 'v', value: '1' } }] },
            {
              responseHeadersToAdd: [{ header: { key: 'g', value: '2' } }],
              requestHeadersToRemove: ['x'],
            },
          ),
        ).virtualHosts[0]!;
        return [vh.requestHeaders, vh.responseHeaders];
      },
      [
        { set: [], add: [], remove: ['x'] },
        {
          set: [],
          add: [
            { name: 'v', value: '1' },
            { name: 'g', value: '2' },
          ],
          remove: [],
        },
      ],
    ],
    [
      'lowercases domains',
      () =>
        compileRouteTable(oneRoute({}, { domains: ['Reviews:9080', '*.Example.com'] }))
          .virtualHosts[0]!.domains,
      ['reviews:9080', '*.example.com'],
    ],
    [
      'reads delay and abort faults with every denominator (absent percentage = 0)',
      () =>
        [
          { delay: { fixedDelay: { seconds: 2 }, percentage: { numerator: 50 } } },
          {
            abort: { httpStatus: 418, percentage: { numerator: 25, denominator: 'TEN_THOUSAND' } },
          },
          {
            abort: { grpcStatus: 14, percentage: { numerator: 1000, denominator: 'MILLION' } },
            delay: { fixedDelay: { nanos: 1_000_000 } },
          },
          {},
        ].map(f => first(oneRoute(fault(f))).fault),
      [
        { delay: { delayMs: 2000, fraction: 0.5 } },
        { abort: { httpStatus: 418, fraction: 0.0025 } },
        { abort: { grpcStatus: 14, fraction: 0.001 }, delay: { delayMs: 1, fraction: 0 } },
        undefined,
      ],
    ],
    [
      'inherits virtual host faults unless the route disables the filter',
      () => {
        const t = compileRouteTable(
          decoded(TYPE.routes, {
            name: 'r',
            virtualHosts: [
              {
                name: 'vh',
                domains: ['*'],
                ...fault({ abort: { httpStatus: 500, percentage: { numerator: 100 } } }),
                routes: [
                  { match: { prefix: '/a' }, route: { cluster: 'c' } },
                  {
                    match: { prefix: '/b' },
                    route: { cluster: 'c' },
                    typedPerFilterConfig: {
                      'envoy.filters.http.fault': { '@type': URL.filterConfig, disabled: true },
                    },
                  },
                ],
              },
            ],
          }),
        );
        return t.virtualHosts[0]!.routes.map(r => r.fault);
      },
      [{ abort: { httpStatus: 500, fraction: 1 } }, undefined],
    ],
    [
      'reads CORS policies from the filter config and the legacy fields',
      () => {
        const t = compileRouteTable(
          oneRoute(
            cors({
              allowOriginStringMatch: [{ exact: 'https://a.com' }, { safeRegex: { regex: '.*' } }],
              allowMethods: 'GET,POST',
              allowHeaders: 'x-a',
              exposeHeaders: 'x-b',
              maxAge: '60',
              allowCredentials: { value: true },
            }),
            { cors: { allowMethods: 'GET' } },
          ),
        );
        const route = t.virtualHosts[0]!.routes[0]!.cors!;
        return [
          route.allowOrigins.map(o => o.kind),
          route.allowMethods,
          route.allowHeaders,
          route.exposeHeaders,
          route.maxAge,
          route.allowCredentials,
          t.virtualHosts[0]!.cors,
        ];
      },
      [
        ['exact', 'regex'],
        'GET,POST',
        'x-a',
        'x-b',
        '60',
        true,
        {
          allowOrigins: [],
          allowMethods: 'GET',
          allowHeaders: '',
          exposeHeaders: '',
          allowCredentials: false,
        },
      ],
    ],
    [
      'treats a CORS policy enabled for 0 % as none',
      () => first(oneRoute(cors({ filterEnabled: { defaultValue: { numerator: 0 } } }))).cors,
      undefined,
    ],
    [
      'accepts RBAC and optional unknown per-filter configs',
      () =>
        first(
          oneRoute({
            typedPerFilterConfig: {
              'envoy.filters.http.rbac': {
                '@type': 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute',
              },
              'istio.stats': { '@type': URL.filterConfig, isOptional: true },
            },
          }),
        ).fault,
      undefined,
    ],
    [
      'reads redirects',
      () =>
        [
          {
            httpsRedirect: true,
            portRedirect: 8443,
            stripQuery: true,
            responseCode: 'PERMANENT_REDIRECT',
          },
          { schemeRedirect: 'HTTP', prefixRewrite: '/new/' },
          {},
        ].map(redirect => first(oneRoute({ route: undefined, redirect })).action),
      [
        { kind: 'redirect', scheme: 'https', port: 8443, responseCode: 308, stripQuery: true },
        {
          kind: 'redirect',
          scheme: 'http',
          prefixRewrite: '/new/',
          responseCode: 301,
          stripQuery: false,
        },
        { kind: 'redirect', responseCode: 301, stripQuery: false },
      ],
    ],
    [
      'reads direct responses with inline bodies',
      () =>
        [
          { status: 403, body: { inlineString: 'denied' } },
          { status: 200, body: { inlineBytes: Buffer.from('ok').toString('base64') } },
          { status: 204 },
        ].map(directResponse => first(oneRoute({ route: undefined, directResponse })).action),
      [
        { kind: 'direct', status: 403, body: 'denied' },
        { kind: 'direct', status: 200, body: 'ok' },
        { kind: 'direct', status: 204 },
      ],
    ],
  ])('%s', (_name, get, expected) => {
    expect(get()).toEqual(expected);
  });

  it.each<[string, Resource, string | RegExp]>([
    ['a missing name', decoded(TYPE.routes, {}), 'route configuration (unnamed): name: required'],
    [
      'a route without a match',
      oneRoute({ match: undefined }),
      'route configuration r: virtualHosts[0].routes[0].match: required',
    ],
    [
      'a route without an action',
      oneRoute({ route: undefined }),
      'route configuration r: virtualHosts[0].routes[0]: route has no action (route, redirect or directResponse)',
    ],
    [
      'a filter action',
      oneRoute({ route: undefined, filterAction: { action: { '@type': URL.router } } }),
      'route configuration r: virtualHosts[0].routes[0].filterAction: not supported',
    ],
    [
      'a cluster header',
      oneRoute({ route: { clusterHeader: 'x-cluster' } }),
      'route configuration r: virtualHosts[0].routes[0].route.clusterHeader: not supported',
    ],
    [
      'a route action without a cluster',
      oneRoute({ route: { timeout: { seconds: 1 } } }),
      /route action names no cluster/,
    ],
    [
      'weights adding up to 0',
      oneRoute({ route: { weightedClusters: { clusters: [{ name: 'a' }] } } }),
      /weightedClusters: total weight must be greater than 0/,
    ],
    [
      'a wrong total weight',
      oneRoute({
        route: {
          weightedClusters: {
            clusters: [{ name: 'a', weight: { value: 1 } }],
            totalWeight: { value: 100 },
          },
        },
      }),
      /totalWeight: is 100 but the weights add up to 1/,
    ],
    [
      'a lookahead regex',
      oneRoute({ match: { safeRegex: { regex: 'a(?=b)' } } }),
      'route configuration r: virtualHosts[0].routes[0].match.safeRegex.regex: lookaround assertions are not supported (RE2)',
    ],
    [
      'an invalid regex',
      oneRoute({ match: { safeRegex: { regex: '(' } } }),
      /match.safeRegex.regex: invalid regex/,
    ],
    [
      'a match without a path specifier',
      oneRoute({ match: { headers: [{ name: 'a' }] } }),
      /match: route match has no path specifier/,
    ],
    [
      'a gRPC-only match',
      oneRoute({ match: { prefix: '/', grpc: {} } }),
      /match.grpc: not supported/,
    ],
    [
      'a range header match',
      oneRoute({
        match: { prefix: '/', headers: [{ name: 'a', rangeMatch: { start: 1, end: 2 } }] },
      }),
      /headers\[0\].rangeMatch: not supported/,
    ],
    [
      'an empty string matcher',
      oneRoute({
        match: { prefix: '/', headers: [{ name: 'a', stringMatch: { ignoreCase: true } }] },
      }),
      /stringMatch: string matcher has no pattern/,
    ],
    [
      'a header matcher without a name',
      oneRoute({ match: { prefix: '/', headers: [{ exactMatch: 'x' }] } }),
      /headers\[0\].name: required/,
    ],
    [
      'a duplicate domain in one host',
      oneRoute({}, { domains: ['a', 'A'] }),
      /domains\[1\]: duplicate domain a/,
    ],
    [
      'a domain in two hosts',
      decoded(TYPE.routes, {
        name: 'r',
        virtualHosts: [
          { name: 'x', domains: ['a'] },
          { name: 'y', domains: ['a'] },
        ],
      }),
      'route configuration r: virtualHosts[1].domains: domain a is also in virtual host x',
    ],
    [
      'a host without domains',
      oneRoute({}, { domains: [] }),
      /virtualHosts\[0\].domains: at least one domain is required/,
    ],
    ['required TLS', oneRoute({}, { requireTls: 'ALL' }), /requireTls: ALL is not supported/],
    [
      'a hedge policy',
      oneRoute({ route: { cluster: 'c', hedgePolicy: { hedgeOnPerTryTimeout: true } } }),
      /route.hedgePolicy: not supported/,
    ],
    [
      'HIGH priority',
      oneRoute({ route: { cluster: 'c', priority: 'HIGH' } }),
      /route.priority: HIGH is not supported/,
    ],
    [
      'ADD_IF_ABSENT header edits',
      oneRoute({
        requestHeadersToAdd: [{ header: { key: 'a', value: 'b' }, appendAction: 'ADD_IF_ABSENT' }],
      }),
      /requestHeadersToAdd\[0\].appendAction: ADD_IF_ABSENT is not supported/,
    ],
    [
      'append and append_action together',
      oneRoute({
        requestHeadersToAdd: [
          {
            header: { key: 'a', value: 'b' },
            append: { value: true },
            appendAction: 'OVERWRITE_IF_EXISTS_OR_ADD',
          },
        ],
      }),
      /append and appendAction are both set/,
    ],
    [
      'header value formatters',
      oneRoute({
        requestHeadersToAdd: [{ header: { key: 'a', value: '%DOWNSTREAM_REMOTE_ADDRESS%' } }],
      }),
      /header.value: header value formatters/,
    ],
    [
      'setting a pseudo-header',
      oneRoute({ requestHeadersToAdd: [{ header: { key: ':path', value: '/' } }] }),
      /pseudo-headers cannot be modified/,
    ],
    [
      'removing host',
      oneRoute({ requestHeadersToRemove: ['Host'] }),
      /requestHeadersToRemove\[0\]: host cannot be removed/,
    ],
    [
      'an unknown retry host predicate',
      oneRoute({
        route: {
          cluster: 'c',
          retryPolicy: {
            retryHostPredicate: [{ name: 'envoy.retry_host_predicates.omit_canary_hosts' }],
          },
        },
      }),
      /unsupported retry host predicate/,
    ],
    [
      'a back-off max below its base',
      oneRoute({
        route: {
          cluster: 'c',
          retryPolicy: {
            retryBackOff: { baseInterval: { seconds: 2 }, maxInterval: { seconds: 1 } },
          },
        },
      }),
      /retryBackOff.maxInterval: must not be below baseInterval/,
    ],
    [
      'a back-off without a base',
      oneRoute({ route: { cluster: 'c', retryPolicy: { retryBackOff: {} } } }),
      /retryBackOff.baseInterval: must be greater than 0/,
    ],
    [
      'retriable headers',
      oneRoute({ route: { cluster: 'c', retryPolicy: { retriableHeaders: [{ name: 'x' }] } } }),
      /retriableHeaders: not supported/,
    ],
    [
      'a hash policy without a specifier',
      oneRoute({ route: { cluster: 'c', hashPolicy: [{ terminal: true }] } }),
      /hashPolicy\[0\]: hash policy has no policy specifier/,
    ],
    [
      'filter state hashing',
      oneRoute({ route: { cluster: 'c', hashPolicy: [{ filterState: { key: 'k' } }] } }),
      /hashPolicy\[0\].filterState: not supported/,
    ],
    [
      'a route disabling an upgrade',
      oneRoute({
        route: {
          cluster: 'c',
          upgradeConfigs: [{ upgradeType: 'websocket', enabled: { value: false } }],
        },
      }),
      /disabling an upgrade on a route is not supported/,
    ],
    [
      'a mirror without a cluster',
      oneRoute({ route: { cluster: 'c', requestMirrorPolicies: [{}] } }),
      /requestMirrorPolicies\[0\].cluster: required/,
    ],
    [
      'an abort without a status',
      oneRoute(fault({ abort: { percentage: { numerator: 1 } } })),
      /abort: abort needs httpStatus or grpcStatus/,
    ],
    [
      'an abort status out of range',
      oneRoute(fault({ abort: { httpStatus: 100 } })),
      /abort.httpStatus: must be in 200-599/,
    ],
    [
      'header-controlled delays',
      oneRoute(fault({ delay: { headerDelay: {} } })),
      /delay.headerDelay: not supported/,
    ],
    [
      'faults limited to some upstream',
      oneRoute(fault({ upstreamCluster: 'x', abort: { httpStatus: 500 } })),
      /upstreamCluster: not supported/,
    ],
    [
      'an unknown per-filter config',
      oneRoute({ typedPerFilterConfig: { 'envoy.filters.http.lua': { '@type': URL.router } } }),
      /typedPerFilterConfig.envoy.filters.http.lua: unsupported per-filter config envoy.extensions.filters.http.router.v3.Router/,
    ],
    [
      'a partial CORS rollout',
      oneRoute(cors({ filterEnabled: { defaultValue: { numerator: 50 } } })),
      /filterEnabled: a partial CORS rollout is not supported/,
    ],
    [
      'a redirect with a regex rewrite',
      oneRoute({
        route: undefined,
        redirect: { regexRewrite: { pattern: { regex: 'a' }, substitution: 'b' } },
      }),
      /redirect.regexRewrite: not supported/,
    ],
    [
      'a direct response from a file',
      oneRoute({
        route: undefined,
        directResponse: { status: 200, body: { filename: '/etc/passwd' } },
      }),
      /directResponse.body.filename: not supported/,
    ],
    [
      'a direct response status out of range',
      oneRoute({ route: undefined, directResponse: { status: 999 } }),
      /directResponse.status: expected an HTTP status code/,
    ],
    [
      'a bad regex rewrite substitution',
      oneRoute({
        route: { cluster: 'c', regexRewrite: { pattern: { regex: 'a' }, substitution: '\\x' } },
      }),
      /regexRewrite: invalid substitution/,
    ],
    [
      'a negative timeout',
      {
        name: 'r',
        virtualHosts: [
          {
            name: 'v',
            domains: ['*'],
            routes: [
              { match: { prefix: '/' }, route: { cluster: 'c', timeout: { seconds: '-1' } } },
            ],
          },
        ],
      },
      /route.timeout: must not be negative/,
    ],
    [
      'VHDS',
      oneRoute({}, {}, { vhds: { configSource: { ads: {} } } }),
      'route configuration r: vhds: not supported',
    ],
  ])('rejects %s', (_name, resource, message) => {
    let err: unknown;
    try {
      compileRouteTable(resource);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CompileError);
    if (typeof message === 'string') expect((err as Error).message).toBe(message);
    else expect((err as Error).message).toMatch(message);
  });
});
