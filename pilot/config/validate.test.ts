import { ConfigInvalidError } from '../errors';
import { parseSource, type ParsedDocument } from './parse';
import type { ConfigObject, Kind } from './types';
import { formatPath, validateDocuments } from './validate';

const API: Record<Kind, string> = {
  ServiceEntry: 'networking.istio.io/v1',
  WorkloadEntry: 'networking.istio.io/v1',
  WorkloadGroup: 'networking.istio.io/v1',
  DestinationRule: 'networking.istio.io/v1',
  VirtualService: 'networking.istio.io/v1',
  Gateway: 'networking.istio.io/v1',
  Sidecar: 'networking.istio.io/v1',
  PeerAuthentication: 'security.istio.io/v1',
  AuthorizationPolicy: 'security.istio.io/v1',
};

const doc = (raw: unknown, source = 'test.yaml', index = 0): ParsedDocument => ({
  source,
  index,
  basePath: [],
  raw,
});

const manifest = (kind: Kind, spec: unknown, metadata: unknown = { name: 'x' }) => ({
  apiVersion: API[kind],
  kind,
  metadata,
  spec,
});

function invalid(fn: () => unknown): ConfigInvalidError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigInvalidError) return err;
    throw err;
  }
  throw new Error('expected a ConfigInvalidError');
}

/** `path: message` of every problem in one document of `kind` (none when valid). */
function problemsOf(kind: Kind, spec: unknown, metadata?: unknown): string[] {
  try {
    validateDocuments([doc(manifest(kind, spec, metadata))]);
    return [];
  } catch (err) {
    if (!(err instanceof ConfigInvalidError)) throw err;
    return err.problems.map(p => `${p.path ?? ''}: ${p.message}`);
  }
}

interface Case {
  name: string;
  spec: unknown;
  /** Substrings of `path: message`, one per expected problem, in order. */
  want: string[];
}

function expectProblems(kind: Kind, c: Case, metadata?: unknown) {
  const got = problemsOf(kind, c.spec, metadata);
  try {
    expect(got).toHaveLength(c.want.length);
    c.want.forEach((w, i) => expect(got[i]).toContain(w));
  } catch (err) {
    throw new Error(`${(err as Error).message}\n\ngot:\n${got.join('\n')}`);
  }
}

describe('formatPath', () => {
  it.each([
    [['spec', 'http', 0, 'route', 1, 'weight'], 'spec.http[0].route[1].weight'],
    [
      ['spec', 'match', 0, 'headers', 'end-user', 'exact'],
      'spec.match[0].headers["end-user"].exact',
    ],
    [[0, 'kind'], '[0].kind'],
    [['items', 2, 'metadata'], 'items[2].metadata'],
    [[], ''],
  ] as const)('%j is %s', (path, want) => {
    expect(formatPath(path)).toBe(want);
  });
});

describe('validateDocuments: the envelope', () => {
  const vs = {
    hosts: ['reviews'],
    http: [{ route: [{ destination: { host: 'reviews' } }] }],
  };

  it('returns typed objects with a default namespace and only the metadata Sail keeps', () => {
    const [obj] = validateDocuments([
      doc({
        ...manifest('VirtualService', vs, {
          name: 'reviews',
          labels: { app: 'reviews' },
          annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{}' },
          resourceVersion: '42',
          uid: '6a1c',
          generation: 3,
          creationTimestamp: '2024-01-01T00:00:00Z',
          managedFields: [{ manager: 'kubectl' }],
          ownerReferences: [],
          finalizers: ['x'],
        }),
        status: { validationMessages: [] },
      }),
    ]);
    expect(obj).toEqual({
      apiVersion: 'networking.istio.io/v1',
      kind: 'VirtualService',
      metadata: {
        name: 'reviews',
        namespace: 'default',
        labels: { app: 'reviews' },
        annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{}' },
        resourceVersion: '42',
      },
      spec: vs,
    });
  });

  it('keeps the apiVersion as written', () => {
    const [obj] = validateDocuments([
      doc({ ...manifest('VirtualService', vs), apiVersion: 'networking.istio.io/v1alpha3' }),
    ]);
    expect(obj?.apiVersion).toBe('networking.istio.io/v1alpha3');
  });

  it('reports an unknown kind with code PILOT_KIND_UNKNOWN and what is accepted', () => {
    const err = invalid(() =>
      validateDocuments([
        doc(
          {
            apiVersion: 'networking.istio.io/v1alpha3',
            kind: 'EnvoyFilter',
            metadata: { name: 'f' },
          },
          'f.yaml',
          2,
        ),
      ]),
    );
    expect(err.code).toBe('PILOT_KIND_UNKNOWN');
    expect(err.problems).toEqual([
      {
        source: 'f.yaml',
        index: 2,
        object: 'EnvoyFilter default/f',
        path: 'kind',
        message: expect.stringContaining(
          'unknown kind "EnvoyFilter" in apiVersion "networking.istio.io/v1alpha3"; Sail accepts networking.istio.io/{v1alpha3,v1beta1,v1} ServiceEntry',
        ) as string,
      },
    ]);
  });

  it('uses PILOT_CONFIG_INVALID when any failing document failed for another reason', () => {
    const err = invalid(() =>
      validateDocuments([
        doc({ apiVersion: 'v1', kind: 'Service', metadata: { name: 's' } }),
        doc(manifest('VirtualService', { ...vs, hots: [] }), 'test.yaml', 1),
      ]),
    );
    expect(err.code).toBe('PILOT_CONFIG_INVALID');
    expect(err.problems).toHaveLength(2);
  });

  it.each([
    [[1, 2], '', 'want a mapping with apiVersion, kind, metadata and spec, got a list'],
    [{ kind: 'VirtualService', metadata: { name: 'a' } }, 'apiVersion', 'required'],
    [{ apiVersion: 'networking.istio.io/v1', kind: 3 }, 'kind', 'want a string, got number 3'],
    [{ ...manifest('Gateway', { servers: [] }), extra: 1 }, '', 'unknown field "extra"'],
    [{ ...manifest('Gateway', {}), Spec: 1 }, '', 'unknown field "Spec" (did you mean "spec"?)'],
  ])('rejects a bad envelope: %j', (raw, path, message) => {
    const err = invalid(() => validateDocuments([doc(raw)]));
    expect(err.problems[0]?.path).toBe(path || undefined);
    expect(err.problems[0]?.message).toBe(message);
  });

  it.each([
    [{}, 'metadata.name: required'],
    [{ name: 'Reviews' }, 'metadata.name: invalid name "Reviews": want lower-case letters'],
    [{ name: 'r', namespace: 'a.b' }, 'metadata.namespace: invalid namespace "a.b"'],
    [{ name: 'r', labels: { app: 3 } }, 'metadata.labels.app: want a string, got number 3'],
    [
      { name: 'r', labels: { app: 'a b' } },
      'metadata.labels.app: invalid value "a b" for label "app"',
    ],
    [{ name: 'r', lables: {} }, 'metadata: unknown field "lables" (did you mean "labels"?)'],
  ])('checks metadata %j', (metadata, want) => {
    expectProblems('VirtualService', { name: 'metadata', spec: vs, want: [want] }, metadata);
  });

  it('reports metadata and spec problems of one document together', () => {
    expect(problemsOf('VirtualService', { ...vs, hots: 1 }, { name: 'A' })).toEqual([
      expect.stringContaining('metadata.name: invalid name "A"'),
      'spec: unknown field "hots" (did you mean "hosts"?)',
    ]);
  });

  it('reports every problem of every document, naming file, document, object, path and line', () => {
    const text = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: prod
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 80
    - destination: {host: reviews, subset: v2}
      weight: 10
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: ext
spec:
  hosts: [api.example.com]
  ports:
  - number: 70000
    name: http
    protocol: HTTP
`;
    const err = invalid(() => validateDocuments(parseSource(text, 'mesh.yaml')));
    expect(err.code).toBe('PILOT_CONFIG_INVALID');
    expect(err.message.split('\n')).toEqual([
      'mesh.yaml#0 (VirtualService prod/reviews): spec.http[0].route: weights sum to 90, want 100 (line 9)',
      'mesh.yaml#1 (ServiceEntry default/ext): spec.ports[0].number: want a port number from 1 to 65535, got 70000 (line 22)',
    ]);
  });

  it('reports schema and semantic problems of a document in one pass; cross-document rules wait', () => {
    const text = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: {exact: jason, prefix: j}
    route:
    - destination: {host: reviews, subset: v3}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 80
    - destination: {host: reviews, subset: v2}
      weight: 10
    timeout: 5
`;
    // No DestinationRule defines v1, v2 or v3, but that is reported once the document is valid.
    expect(
      invalid(() => validateDocuments(parseSource(text, 'vs.yaml'))).message.split('\n'),
    ).toEqual([
      'vs.yaml#0 (VirtualService default/reviews): spec.http[1].timeout: want a string, got number 5 (line 18)',
      'vs.yaml#0 (VirtualService default/reviews): spec.http[0].match[0].headers["end-user"]: want exactly one of exact, prefix or regex, got exact and prefix (line 10)',
      'vs.yaml#0 (VirtualService default/reviews): spec.http[1].route: weights sum to 90, want 100 (line 13)',
    ]);
    const fixed = text.replace('timeout: 5', 'timeout: 5s').replace(', prefix: j', '');
    expect(
      invalid(() => validateDocuments(parseSource(fixed, 'vs.yaml'))).problems.map(p => p.path),
    ).toEqual([
      'spec.http[1].route',
      'spec.http[0].route[0].destination.subset',
      'spec.http[1].route[0].destination.subset',
      'spec.http[1].route[1].destination.subset',
    ]);
  });

  it('prefixes List item paths', () => {
    const list = {
      apiVersion: 'v1',
      kind: 'List',
      items: [manifest('Gateway', { servers: [] }, { name: 'gw' })],
    };
    const err = invalid(() => validateDocuments(parseSource(JSON.stringify(list), 'l.json')));
    expect(err.problems[0]).toMatchObject({
      source: 'l.json',
      index: 0,
      path: 'items[0].spec.servers',
      message: 'at least one server is required (line 1)',
    });
  });

  it('rejects the same object twice in one apply', () => {
    const a = manifest('VirtualService', vs, { name: 'reviews' });
    const err = invalid(() => validateDocuments([doc(a, 'a.yaml'), doc(a, 'b.yaml', 3)]));
    expect(err.problems).toEqual([
      {
        source: 'b.yaml',
        index: 3,
        object: 'VirtualService default/reviews',
        path: 'metadata.name',
        message: 'VirtualService default/reviews is defined twice: also at a.yaml#0',
      },
    ]);
  });

  it('treats a missing spec as empty', () => {
    const [obj] = validateDocuments([
      doc({
        apiVersion: API.AuthorizationPolicy,
        kind: 'AuthorizationPolicy',
        metadata: { name: 'deny' },
      }),
    ]);
    expect(obj?.spec).toEqual({});
  });
});

describe('validateDocuments: schema messages', () => {
  it.each<Case>([
    {
      name: 'type error',
      spec: { hosts: 'reviews' },
      want: ['spec.hosts: want a list, got the string "reviews"'],
    },
    {
      name: 'integer',
      spec: { hosts: ['a'], http: [{ route: [{ destination: { host: 'a' }, weight: 50.5 }] }] },
      want: ['spec.http[0].route[0].weight: want an integer, got number 50.5'],
    },
    {
      name: 'range',
      spec: { hosts: ['a'], http: [{ route: [{ destination: { host: 'a' }, weight: 101 }] }] },
      want: ['spec.http[0].route[0].weight: want a weight from 0 to 100, got 101'],
    },
    {
      name: 'required',
      spec: { hosts: ['a'], http: [{ route: [{ weight: 100 }] }] },
      want: ['spec.http[0].route[0].destination: required'],
    },
    {
      name: 'typo in a nested field',
      spec: { hosts: ['a'], http: [{ rout: [] }] },
      want: ['spec.http[0]: unknown field "rout" (did you mean "route"?)'],
    },
    {
      name: 'snake case',
      spec: {
        hosts: ['a'],
        http: [
          {
            route: [{ destination: { host: 'a' } }],
            retries: { attempts: 1, per_try_timeout: '1s' },
          },
        ],
      },
      want: [
        'spec.http[0].retries: unknown field "per_try_timeout" (did you mean "perTryTimeout"?)',
      ],
    },
    {
      name: 'duration',
      spec: { hosts: ['a'], http: [{ route: [{ destination: { host: 'a' } }], timeout: '5' }] },
      want: ['spec.http[0].timeout: invalid duration "5": want e.g. 100ms, 1.5s, 5s, 1m, 1h30m'],
    },
    {
      name: 'sub-millisecond duration',
      spec: {
        hosts: ['a'],
        http: [
          {
            route: [{ destination: { host: 'a' } }],
            retries: { attempts: 2, perTryTimeout: '500us' },
          },
        ],
      },
      want: [
        'spec.http[0].retries.perTryTimeout: duration "500us" is too short: want at least 1ms',
      ],
    },
    {
      name: 'regex',
      spec: {
        hosts: ['a'],
        http: [{ match: [{ uri: { regex: '/a(b' } }], route: [{ destination: { host: 'a' } }] }],
      },
      want: ['spec.http[0].match[0].uri.regex: regex "/a(b" does not compile'],
    },
    {
      name: 'header key quoted in the path',
      spec: {
        hosts: ['a'],
        http: [
          {
            match: [{ headers: { 'end-user': { exakt: 'jason' } } }],
            route: [{ destination: { host: 'a' } }],
          },
        ],
      },
      want: [
        'spec.http[0].match[0].headers["end-user"]: unknown field "exakt" (did you mean "exact"?)',
      ],
    },
  ])('VirtualService $name', c => {
    expectProblems('VirtualService', c);
  });

  it('stores protocols upper case, accepting any case', () => {
    const [obj] = validateDocuments([
      doc(
        manifest('ServiceEntry', {
          hosts: ['a.example.com'],
          ports: [
            { number: 80, name: 'http', protocol: 'http' },
            { number: 27017, name: 'mongo', protocol: 'Mongo' },
          ],
        }),
      ),
    ]) as [ConfigObject<'ServiceEntry'>];
    expect(obj.spec.ports?.map(p => p.protocol)).toEqual(['HTTP', 'MONGO']);
    expect(
      problemsOf('ServiceEntry', {
        hosts: ['a.b'],
        ports: [{ number: 1, name: 'p', protocol: 'SMTP' }],
      }),
    ).toEqual([
      'spec.ports[0].protocol: unknown protocol "SMTP": want one of HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, HTTP_PROXY, TCP, TLS, UDP, MONGO, REDIS, MYSQL (any case)',
    ]);
  });

  it('names the choices of an enum', () => {
    expect(problemsOf('ServiceEntry', { hosts: ['a.b'], resolution: 'dns' })).toEqual([
      'spec.resolution: want one of NONE, STATIC, DNS, DNS_ROUND_ROBIN, got the string "dns"',
    ]);
  });
});

const route = (host: string, extra: object = {}) => ({ destination: { host, ...extra } });

describe('VirtualService checks', () => {
  const ok = (http: object) => ({ hosts: ['reviews'], http: [http] });
  it.each<Case>([
    {
      name: 'single destination without weight',
      spec: ok({ route: [route('reviews')] }),
      want: [],
    },
    {
      name: 'weights summing to 100',
      spec: ok({
        route: [
          { ...route('reviews', { port: { number: 9080 } }), weight: 80 },
          { ...route('reviews.prod'), weight: 20 },
        ],
      }),
      want: [],
    },
    {
      name: 'weights not summing to 100',
      spec: ok({
        route: [
          { ...route('a'), weight: 50 },
          { ...route('b'), weight: 40 },
        ],
      }),
      want: ['spec.http[0].route: weights sum to 90, want 100'],
    },
    {
      name: 'a missing weight among several destinations',
      spec: ok({ route: [{ ...route('a'), weight: 100 }, route('b')] }),
      want: ['spec.http[0].route[1].weight: required when a route has several destinations'],
    },
    {
      name: 'no route nor redirect',
      spec: ok({}),
      want: ['spec.http[0].route: a route or a redirect is required'],
    },
    {
      name: 'redirect and route',
      spec: ok({ redirect: { uri: '/x' }, route: [route('a')] }),
      want: ['spec.http[0].redirect: redirect and route are exclusive'],
    },
    {
      name: 'a redirect alone',
      spec: ok({
        redirect: { uri: '/v1/bookRatings', authority: 'newratings.default.svc.cluster.local' },
      }),
      want: [],
    },
    {
      name: 'an empty redirect',
      spec: ok({ redirect: {} }),
      want: [
        'spec.http[0].redirect: a redirect needs at least one of uri, authority, port or scheme',
      ],
    },
    {
      name: 'redirect scheme',
      spec: ok({ redirect: { scheme: 'ftp' } }),
      want: ['spec.http[0].redirect.scheme: invalid redirect scheme "ftp"'],
    },
    {
      name: 'redirect code',
      spec: ok({ redirect: { uri: '/', redirectCode: 200 } }),
      want: [
        'spec.http[0].redirect.redirectCode: want a 3xx redirect code from 300 to 399, got 200',
      ],
    },
    {
      name: 'redirect with fault and rewrite',
      spec: ok({
        redirect: { uri: '/' },
        fault: { abort: { httpStatus: 500 } },
        rewrite: { uri: '/' },
      }),
      want: ['redirect and fault are exclusive', 'redirect and rewrite are exclusive'],
    },
    {
      name: 'empty rewrite',
      spec: ok({ route: [route('a')], rewrite: {} }),
      want: ['spec.http[0].rewrite: a rewrite needs uri or authority'],
    },
    {
      name: 'string match with two kinds',
      spec: ok({ match: [{ uri: { exact: '/a', prefix: '/b' } }], route: [route('a')] }),
      want: [
        'spec.http[0].match[0].uri: want exactly one of exact, prefix or regex, got exact and prefix',
      ],
    },
    {
      name: 'empty string match',
      spec: ok({ match: [{ method: {} }], route: [route('a')] }),
      want: ['spec.http[0].match[0].method: want one of exact, prefix or regex'],
    },
    {
      name: 'header presence match',
      spec: ok({
        match: [{ headers: { 'x-debug': {} }, queryParams: { v: { exact: '1' } } }],
        route: [route('a')],
      }),
      want: [],
    },
    {
      name: 'bad header name',
      spec: ok({ match: [{ headers: { 'bad header': { exact: 'x' } } }], route: [route('a')] }),
      want: ['spec.http[0].match[0].headers["bad header"]: invalid header name "bad header"'],
    },
    {
      name: 'empty prefix',
      spec: ok({ match: [{ uri: { prefix: '' } }], route: [route('a')] }),
      want: ['spec.http[0].match[0].uri.prefix: empty prefix'],
    },
    {
      name: 'match fields',
      spec: ok({
        match: [
          { port: 0, sourceNamespace: 'Prod', sourceLabels: { app: 'a b' }, gateways: ['a/b/c'] },
        ],
        route: [route('a')],
      }),
      // The schema's problem and the semantic ones, in one pass.
      want: [
        'spec.http[0].match[0].port: want a port number from 1 to 65535, got 0',
        'spec.http[0].match[0].sourceLabels.app: invalid value "a b"',
        'spec.http[0].match[0].sourceNamespace: invalid namespace "Prod"',
        'spec.http[0].match[0].gateways[0]: invalid gateway "a/b/c"',
      ],
    },
    {
      name: 'match fields after the schema',
      spec: ok({
        match: [{ sourceNamespace: 'Prod', sourceLabels: { app: 'a b' }, gateways: ['ns/Gw'] }],
        route: [route('a')],
      }),
      want: [
        'spec.http[0].match[0].sourceLabels.app: invalid value "a b"',
        'spec.http[0].match[0].sourceNamespace: invalid namespace "Prod"',
        'spec.http[0].match[0].gateways[0]: invalid gateway "ns/Gw"',
      ],
    },
    {
      name: 'destination host *',
      spec: ok({ route: [route('*')] }),
      want: ['spec.http[0].route[0].destination.host: a destination host cannot be "*"'],
    },
    {
      name: 'destination host invalid',
      spec: ok({ route: [route('a_b')] }),
      want: ['spec.http[0].route[0].destination.host: invalid host "a_b"'],
    },
    {
      name: 'subset name',
      spec: ok({ route: [route('a', { subset: 'v_1' })] }),
      want: ['spec.http[0].route[0].destination.subset: invalid subset name "v_1"'],
    },
    {
      name: 'destination port',
      spec: ok({ route: [route('a', { port: { number: 65536 } })] }),
      want: [
        'spec.http[0].route[0].destination.port.number: want a port number from 1 to 65535, got 65536',
      ],
    },
    { name: 'timeout 0s disables it', spec: ok({ route: [route('a')], timeout: '0s' }), want: [] },
    {
      name: 'timeouts',
      spec: ok({
        route: [route('a')],
        timeout: '1.5s',
        retries: {
          attempts: 3,
          perTryTimeout: '100ms',
          retryOn: 'gateway-error,connect-failure,503',
        },
      }),
      want: [],
    },
    {
      name: 'negative attempts',
      spec: ok({ route: [route('a')], retries: { attempts: -1 } }),
      want: ['spec.http[0].retries.attempts: want a number of attempts of at least 0, got -1'],
    },
    {
      name: 'retry settings with zero attempts',
      spec: ok({ route: [route('a')], retries: { attempts: 0, perTryTimeout: '1s' } }),
      want: ['spec.http[0].retries: retry settings given while attempts is 0'],
    },
    {
      name: 'retryOn',
      spec: ok({ route: [route('a')], retries: { attempts: 1, retryOn: '5xx,sometimes' } }),
      want: ['spec.http[0].retries.retryOn: unknown retry condition "sometimes"'],
    },
    {
      name: 'empty fault',
      spec: ok({ route: [route('a')], fault: {} }),
      want: ['spec.http[0].fault: a fault needs an abort, a delay or both'],
    },
    {
      name: 'abort with two error types',
      spec: ok({
        route: [route('a')],
        fault: { abort: { httpStatus: 503, grpcStatus: 'UNAVAILABLE', percentage: { value: 10 } } },
      }),
      want: [
        'spec.http[0].fault.abort: want exactly one of httpStatus, grpcStatus or http2Error, got httpStatus and grpcStatus',
      ],
    },
    {
      name: 'abort without an error type',
      spec: ok({ route: [route('a')], fault: { abort: { percent: 5 } } }),
      want: [
        'spec.http[0].fault.abort: an abort needs one of httpStatus, grpcStatus or http2Error',
      ],
    },
    {
      name: 'abort status',
      spec: ok({ route: [route('a')], fault: { abort: { httpStatus: 600 } } }),
      want: ['spec.http[0].fault.abort.httpStatus: want an HTTP status from 200 to 599, got 600'],
    },
    {
      name: 'abort gRPC status',
      spec: ok({ route: [route('a')], fault: { abort: { grpcStatus: 'BROKEN' } } }),
      want: ['spec.http[0].fault.abort.grpcStatus: unknown gRPC status "BROKEN"'],
    },
    {
      name: 'abort http2Error',
      spec: ok({ route: [route('a')], fault: { abort: { http2Error: 'REFUSED_STREAM' } } }),
      want: ['spec.http[0].fault.abort.http2Error: HTTP/2 error aborts are not supported'],
    },
    {
      name: 'fault percentages',
      spec: ok({
        route: [route('a')],
        fault: {
          delay: { fixedDelay: '5s', percentage: { value: 100.5 } },
          abort: { httpStatus: 400, percent: 101 },
        },
      }),
      want: [
        'spec.http[0].fault.delay.percentage.value: want a percentage from 0 to 100, got 100.5',
        'spec.http[0].fault.abort.percent: want a percentage from 0 to 100, got 101',
      ],
    },
    {
      name: 'delay without fixedDelay',
      spec: ok({ route: [route('a')], fault: { delay: { percent: 10 } } }),
      want: ['spec.http[0].fault.delay.fixedDelay: required'],
    },
    {
      name: 'mirror',
      spec: ok({ route: [route('a')], mirror: { host: 'b' }, mirrorPercentage: { value: 50 } }),
      want: [],
    },
    {
      name: 'bad mirror',
      spec: ok({ route: [route('a')], mirror: { host: '*' }, mirrorPercent: 200 }),
      want: [
        'spec.http[0].mirrorPercent: want a percentage from 0 to 100, got 200',
        'spec.http[0].mirror.host: a destination host cannot be "*"',
      ],
    },
    {
      name: 'bad mirror host',
      spec: ok({ route: [route('a')], mirror: { host: '*' } }),
      want: ['spec.http[0].mirror.host: a destination host cannot be "*"'],
    },
    {
      name: 'cors',
      spec: ok({
        route: [route('a')],
        corsPolicy: {
          allowOrigins: [{ exact: 'https://example.com' }],
          allowMethods: ['GET', 'FETCH'],
          allowHeaders: ['*', 'x y'],
          maxAge: '24h',
        },
      }),
      want: [
        'spec.http[0].corsPolicy.allowMethods[1]: unknown HTTP method "FETCH"',
        'spec.http[0].corsPolicy.allowHeaders[1]: invalid header name "x y"',
      ],
    },
    {
      name: 'header operations',
      spec: ok({
        route: [{ ...route('a'), headers: { response: { set: { host: 'x' } } } }],
        headers: { request: { set: { ':authority': 'a', ':path': '/' }, remove: ['Host'] } },
      }),
      want: [
        'spec.http[0].route[0].headers.response.set.host: the Host header cannot be changed here',
        'spec.http[0].headers.request.set[":path"]: pseudo-header ":path" cannot be changed',
        'spec.http[0].headers.request.remove[0]: the Host header cannot be changed here',
      ],
    },
  ])('$name', c => {
    expectProblems('VirtualService', c);
  });

  it.each<Case>([
    {
      name: 'no hosts',
      spec: { http: [{ route: [route('a')] }] },
      want: ['spec.hosts: at least one host is required'],
    },
    {
      name: 'no routes',
      spec: { hosts: ['a'] },
      want: ['spec: at least one of http, tcp or tls routes is required'],
    },
    {
      name: 'bad host',
      spec: { hosts: ['*foo.com'], http: [{ route: [route('a')] }] },
      want: ['spec.hosts[0]: invalid host "*foo.com"'],
    },
    { name: 'IP host', spec: { hosts: ['10.0.0.1'], http: [{ route: [route('a')] }] }, want: [] },
    {
      name: 'wildcard * bound to the mesh',
      spec: { hosts: ['*'], http: [{ route: [route('a')] }] },
      want: [
        'spec.hosts[0]: the wildcard host "*" is allowed only for virtual services bound to gateways',
      ],
    },
    {
      name: 'wildcard * bound to a gateway',
      spec: { hosts: ['*'], gateways: ['istio-system/ingress'], http: [{ route: [route('a')] }] },
      want: [],
    },
    {
      name: 'wildcard * bound to a gateway and the mesh',
      spec: { hosts: ['*'], gateways: ['gw', 'mesh'], http: [{ route: [route('a')] }] },
      want: ['spec.hosts[0]: the wildcard host'],
    },
    {
      name: 'overlapping hosts',
      spec: { hosts: ['*.example.com', 'a.example.com'], http: [{ route: [route('a')] }] },
      want: ['spec.hosts[1]: host "a.example.com" duplicates or overlaps host "*.example.com"'],
    },
    {
      name: 'gateway names',
      spec: { hosts: ['a'], gateways: ['Bad_Name', '/gw'], http: [{ route: [route('a')] }] },
      want: [
        'spec.gateways[0]: invalid gateway "Bad_Name"',
        'spec.gateways[1]: invalid gateway "/gw"',
      ],
    },
    {
      name: 'exportTo',
      spec: {
        hosts: ['a'],
        exportTo: ['*', 'prod', 'prod', 'Bad'],
        http: [{ route: [route('a')] }],
      },
      want: [
        'spec.exportTo[2]: duplicate exportTo entry "prod"',
        'spec.exportTo[3]: invalid exportTo entry "Bad"',
        'spec.exportTo: "*" exports to every namespace',
      ],
    },
    {
      name: 'tcp route',
      spec: {
        hosts: ['mongo.prod.svc.cluster.local'],
        tcp: [
          {
            match: [
              { port: 27017, destinationSubnets: ['10.0.0.0/8', '10.0.0.0/40'], sourceSubnet: 'x' },
            ],
            route: [
              { destination: { host: 'mongo.backup.svc.cluster.local', port: { number: 5555 } } },
            ],
          },
        ],
      },
      want: [
        'spec.tcp[0].match[0].destinationSubnets[1]: "10.0.0.0/40" is not a valid CIDR block',
        'spec.tcp[0].match[0].sourceSubnet: "x" is not an IP address',
      ],
    },
    {
      name: 'tcp without route',
      spec: { hosts: ['a'], tcp: [{}] },
      want: ['spec.tcp[0].route: at least one destination is required'],
    },
    {
      name: 'tcp weights',
      spec: {
        hosts: ['a'],
        tcp: [
          {
            route: [
              { ...route('a'), weight: 30 },
              { ...route('b'), weight: 30 },
            ],
          },
        ],
      },
      want: ['spec.tcp[0].route: weights sum to 60, want 100'],
    },
    {
      name: 'tls route',
      spec: {
        hosts: ['*.bookinfo.com'],
        gateways: ['mygateway'],
        tls: [
          {
            match: [{ port: 443, sniHosts: ['login.bookinfo.com'] }],
            route: [route('login.prod.svc.cluster.local')],
          },
        ],
      },
      want: [],
    },
    {
      name: 'tls route sni outside the hosts',
      spec: {
        hosts: ['*.bookinfo.com'],
        tls: [
          { match: [{ sniHosts: ['login.example.com'] }], route: [route('a')] },
          { match: [], route: [route('a')] },
          { match: [{ sniHosts: [] }] },
        ],
      },
      want: [
        'spec.tls[0].match[0].sniHosts[0]: SNI host "login.example.com" is not covered by any of the virtual service\'s hosts (*.bookinfo.com)',
        'spec.tls[1].match: at least one match is required',
        'spec.tls[2].match[0].sniHosts: at least one SNI host is required',
        'spec.tls[2].route: at least one destination is required',
      ],
    },
    {
      name: 'tls route needs match',
      spec: { hosts: ['a'], tls: [{ route: [route('a')] }] },
      want: ['spec.tls[0].match: required'],
    },
  ])('$name', c => {
    expectProblems('VirtualService', c);
  });
});

describe('DestinationRule checks', () => {
  it.each<Case>([
    {
      name: 'subsets and a traffic policy',
      spec: {
        host: 'reviews',
        trafficPolicy: {
          loadBalancer: { simple: 'LEAST_REQUEST' },
          connectionPool: {
            tcp: {
              maxConnections: 100,
              connectTimeout: '30ms',
              tcpKeepalive: { time: '7200s', interval: '75s' },
            },
            http: { http2MaxRequests: 1000, maxRequestsPerConnection: 10, idleTimeout: '0s' },
          },
          outlierDetection: { consecutive5xxErrors: 7, interval: '5m', baseEjectionTime: '15m' },
        },
        subsets: [
          { name: 'v1', labels: { version: 'v1' } },
          {
            name: 'v2',
            labels: { version: 'v2' },
            trafficPolicy: { loadBalancer: { simple: 'ROUND_ROBIN' } },
          },
        ],
      },
      want: [],
    },
    {
      name: 'wildcard host',
      spec: { host: '*.local', trafficPolicy: { tls: { mode: 'ISTIO_MUTUAL' } } },
      want: [],
    },
    { name: 'bad host', spec: { host: 'a b' }, want: ['spec.host: invalid host "a b"'] },
    { name: 'host missing', spec: { subsets: [] }, want: ['spec.host: required'] },
    {
      name: 'duplicate subsets',
      spec: { host: 'a', subsets: [{ name: 'v1' }, { name: 'v1' }, { name: 'V_2' }] },
      want: [
        'spec.subsets[1].name: duplicate subset name "v1"',
        'spec.subsets[2].name: invalid subset name "V_2"',
      ],
    },
    {
      name: 'subset labels',
      spec: { host: 'a', subsets: [{ name: 'v1', labels: { version: 'v 1' } }] },
      want: ['spec.subsets[0].labels.version: invalid value "v 1"'],
    },
    {
      name: 'empty traffic policy',
      spec: { host: 'a', trafficPolicy: {} },
      want: ['spec.trafficPolicy: a traffic policy needs at least one of loadBalancer'],
    },
    {
      name: 'consistent hash with one key',
      spec: {
        host: 'a',
        trafficPolicy: {
          loadBalancer: { consistentHash: { httpCookie: { name: 'user', ttl: '0s' } } },
        },
      },
      want: [],
    },
    {
      name: 'consistent hash with two keys',
      spec: {
        host: 'a',
        trafficPolicy: {
          loadBalancer: { consistentHash: { httpHeaderName: 'x-user', useSourceIp: true } },
        },
      },
      want: [
        'spec.trafficPolicy.loadBalancer.consistentHash: want exactly one hash key of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName, got httpHeaderName and useSourceIp',
      ],
    },
    {
      name: 'consistent hash without a key',
      spec: {
        host: 'a',
        trafficPolicy: { loadBalancer: { consistentHash: { minimumRingSize: 1024 } } },
      },
      want: ['got none'],
    },
    {
      name: 'simple and consistent hash',
      spec: {
        host: 'a',
        trafficPolicy: {
          loadBalancer: { simple: 'RANDOM', consistentHash: { useSourceIp: true } },
        },
      },
      want: ['spec.trafficPolicy.loadBalancer: simple and consistentHash are exclusive'],
    },
    {
      name: 'bad simple',
      spec: { host: 'a', trafficPolicy: { loadBalancer: { simple: 'FASTEST' } } },
      want: [
        'spec.trafficPolicy.loadBalancer.simple: want one of UNSPECIFIED, ROUND_ROBIN, LEAST_CONN, LEAST_REQUEST, RANDOM, PASSTHROUGH, got the string "FASTEST"',
      ],
    },
    {
      name: 'empty connection pool',
      spec: { host: 'a', trafficPolicy: { connectionPool: {} } },
      want: ['spec.trafficPolicy.connectionPool: a connection pool needs tcp or http settings'],
    },
    {
      name: 'outlier percent',
      spec: { host: 'a', trafficPolicy: { outlierDetection: { maxEjectionPercent: 120 } } },
      want: [
        'spec.trafficPolicy.outlierDetection.maxEjectionPercent: want a percentage from 0 to 100, got 120',
      ],
    },
    {
      name: 'connect timeout 0',
      spec: { host: 'a', trafficPolicy: { connectionPool: { tcp: { connectTimeout: '0s' } } } },
      want: ['spec.trafficPolicy.connectionPool.tcp.connectTimeout: duration "0s" is too short'],
    },
    {
      name: 'mutual TLS without certificates',
      spec: { host: 'a', trafficPolicy: { tls: { mode: 'MUTUAL' } } },
      want: [
        'spec.trafficPolicy.tls.clientCertificate: required for MUTUAL TLS',
        'spec.trafficPolicy.tls.privateKey: required for MUTUAL TLS',
      ],
    },
    {
      name: 'mutual TLS with a credential',
      spec: {
        host: 'a',
        trafficPolicy: { tls: { mode: 'MUTUAL', credentialName: 'client-cred' } },
      },
      want: [],
    },
    {
      name: 'credential and files',
      spec: {
        host: 'a',
        trafficPolicy: { tls: { mode: 'SIMPLE', credentialName: 'c', caCertificates: '/ca.pem' } },
      },
      want: ['spec.trafficPolicy.tls: credentialName and caCertificates are exclusive'],
    },
    {
      name: 'ISTIO_MUTUAL with files',
      spec: { host: 'a', trafficPolicy: { tls: { mode: 'ISTIO_MUTUAL', privateKey: '/k' } } },
      want: ['spec.trafficPolicy.tls: ISTIO_MUTUAL uses the mesh certificates'],
    },
    {
      name: 'port level settings',
      spec: {
        host: 'a',
        trafficPolicy: {
          portLevelSettings: [
            { port: { number: 80 }, loadBalancer: { simple: 'LEAST_CONN' } },
            { loadBalancer: { simple: 'RANDOM' } },
            { port: { number: 9080 } },
          ],
        },
      },
      want: [
        'spec.trafficPolicy.portLevelSettings[1].port.number: required',
        'spec.trafficPolicy.portLevelSettings[2]: a traffic policy needs at least one of loadBalancer, connectionPool, outlierDetection, tls',
      ],
    },
    {
      name: 'workload selector',
      spec: { host: 'a', workloadSelector: { matchLabels: { app: '*' } } },
      want: [
        'spec.workloadSelector.matchLabels.app: wildcards are not supported in selectors: "app=*"',
      ],
    },
    {
      name: 'exportTo',
      spec: { host: 'a', exportTo: ['.', '~'] },
      want: ['spec.exportTo[1]: invalid exportTo entry "~"'],
    },
  ])('$name', c => {
    expectProblems('DestinationRule', c);
  });
});

describe('ServiceEntry checks', () => {
  const http = [{ number: 80, name: 'http', protocol: 'HTTP' }];
  it.each<Case>([
    {
      name: 'an external API',
      spec: {
        hosts: ['api.example.com'],
        ports: http,
        location: 'MESH_EXTERNAL',
        resolution: 'DNS',
      },
      want: [],
    },
    {
      name: 'wildcard with resolution NONE',
      spec: {
        hosts: ['*.wikipedia.org'],
        ports: [{ number: 443, name: 'https', protocol: 'TLS' }],
        resolution: 'NONE',
      },
      want: [],
    },
    {
      name: 'wildcard with resolution DNS and no endpoints',
      spec: { hosts: ['*.wikipedia.org'], ports: http, resolution: 'DNS' },
      want: [
        'spec.hosts[0]: wildcard host "*.wikipedia.org" cannot be resolved with resolution DNS and no endpoints',
      ],
    },
    {
      name: 'VM workloads by selector',
      spec: {
        hosts: ['reviews.prod.svc.cluster.local'],
        ports: [{ number: 9080, name: 'http', protocol: 'HTTP', targetPort: 8080 }],
        location: 'MESH_INTERNAL',
        resolution: 'STATIC',
        workloadSelector: { labels: { app: 'reviews' } },
      },
      want: [],
    },
    { name: 'no hosts', spec: { hosts: [] }, want: ['spec.hosts: at least one host is required'] },
    {
      name: 'host *',
      spec: { hosts: ['*'] },
      want: ['spec.hosts[0]: a ServiceEntry cannot claim every host ("*")'],
    },
    {
      name: 'short host',
      spec: { hosts: ['reviews'] },
      want: [
        'spec.hosts[0]: short name "reviews": ServiceEntry hosts are not expanded, write a fully qualified name (e.g. reviews.default.svc.cluster.local)',
      ],
    },
    {
      name: 'partial wildcard',
      spec: { hosts: ['*api.example.com'] },
      want: ['spec.hosts[0]: invalid host "*api.example.com"'],
    },
    {
      name: 'port range',
      spec: { hosts: ['a.b'], ports: [{ number: 0, name: 'x' }] },
      want: ['spec.ports[0].number: want a port number from 1 to 65535, got 0'],
    },
    {
      name: 'duplicate ports',
      spec: {
        hosts: ['a.b'],
        ports: [
          { number: 80, name: 'http' },
          { number: 80, name: 'http' },
          { number: 81, name: 'Bad_Name' },
        ],
      },
      want: [
        'spec.ports[1].name: duplicate port name "http"',
        'spec.ports[1].number: duplicate port number 80',
        'spec.ports[2].name: invalid port name "Bad_Name"',
      ],
    },
    {
      name: 'port name required',
      spec: { hosts: ['a.b'], ports: [{ number: 80 }] },
      want: ['spec.ports[0].name: required'],
    },
    {
      name: 'addresses',
      spec: { hosts: ['a.b'], addresses: ['10.0.0.1', '192.168.0.0/16', 'nope'] },
      want: ['spec.addresses[2]: "nope" is not an IP address'],
    },
    {
      name: 'CIDR with DNS',
      spec: { hosts: ['a.b'], addresses: ['10.0.0.0/8'], resolution: 'DNS' },
      want: ['spec.addresses: CIDR addresses are allowed only with resolution NONE or STATIC'],
    },
    {
      name: 'static endpoints',
      spec: {
        hosts: ['mymongodb.somedomain'],
        addresses: ['192.192.192.192/24'],
        ports: [{ number: 27018, name: 'mongodb', protocol: 'MONGO' }],
        location: 'MESH_INTERNAL',
        resolution: 'STATIC',
        endpoints: [{ address: '2.2.2.2' }, { address: '3.3.3.3', ports: { mongodb: 27019 } }],
      },
      want: [],
    },
    {
      name: 'STATIC without endpoints',
      spec: { hosts: ['a.b'], resolution: 'STATIC' },
      want: ['spec: resolution STATIC needs endpoints or a workloadSelector'],
    },
    {
      name: 'STATIC with a DNS name',
      spec: { hosts: ['a.b'], resolution: 'STATIC', endpoints: [{ address: 'db.example.com' }] },
      want: [
        'spec.endpoints[0].address: "db.example.com" is not an IP address: resolution STATIC needs IP addresses',
      ],
    },
    {
      name: 'STATIC with a unix socket',
      spec: {
        hosts: ['a.b'],
        ports: [{ number: 80, name: 'http' }],
        resolution: 'STATIC',
        endpoints: [{ address: 'unix:///var/run/a.sock' }],
      },
      want: [],
    },
    {
      name: 'endpoint without address',
      spec: { hosts: ['a.b'], resolution: 'STATIC', endpoints: [{ labels: { a: 'b' } }] },
      want: ['spec.endpoints[0].address: required'],
    },
    {
      name: 'endpoint port names',
      spec: {
        hosts: ['a.b'],
        ports: http,
        resolution: 'STATIC',
        endpoints: [{ address: '10.0.0.1', ports: { https: 8443 } }],
      },
      want: ['spec.endpoints[0].ports.https: no port named "https" in spec.ports (declared: http)'],
    },
    {
      name: 'endpoint port range',
      spec: {
        hosts: ['a.b'],
        ports: http,
        resolution: 'STATIC',
        endpoints: [{ address: '10.0.0.1', ports: { http: 70000 } }],
      },
      want: ['spec.endpoints[0].ports.http: want a port number from 1 to 65535, got 70000'],
    },
    {
      name: 'selector and endpoints',
      spec: {
        hosts: ['a.b'],
        resolution: 'STATIC',
        workloadSelector: { labels: { app: 'a' } },
        endpoints: [{ address: '10.0.0.1' }],
      },
      want: ['spec: workloadSelector and endpoints are exclusive'],
    },
    {
      name: 'NONE with endpoints',
      spec: { hosts: ['a.b'], endpoints: [{ address: '10.0.0.1' }] },
      want: ['spec.endpoints: endpoints cannot be given with resolution NONE'],
    },
    {
      name: 'DNS endpoints',
      spec: {
        hosts: ['a.b'],
        ports: http,
        resolution: 'DNS',
        endpoints: [
          { address: 'us.example.com' },
          { address: '10.1.1.1' },
          { address: 'bad_name' },
        ],
      },
      want: ['spec.endpoints[2].address: "bad_name" is not an IP address or a DNS name'],
    },
    {
      name: 'DNS_ROUND_ROBIN with two endpoints',
      spec: {
        hosts: ['a.b'],
        resolution: 'DNS_ROUND_ROBIN',
        endpoints: [{ address: 'x.b' }, { address: 'y.b' }],
      },
      want: ['spec.endpoints: resolution DNS_ROUND_ROBIN allows at most one endpoint'],
    },
    {
      name: 'several hosts on TCP',
      spec: {
        hosts: ['a.b', 'c.d'],
        ports: [{ number: 5432, name: 'tcp-pg', protocol: 'TCP' }],
        resolution: 'DNS',
      },
      want: [
        'spec.ports[0].protocol: several hosts need HTTP or TLS ports to be told apart, got TCP',
      ],
    },
    {
      name: 'several hosts on HTTP',
      spec: { hosts: ['a.b', 'c.d'], ports: http, resolution: 'DNS' },
      want: [],
    },
    { name: 'exportTo ~', spec: { hosts: ['a.b'], exportTo: ['~'] }, want: [] },
    {
      name: 'exportTo ~ and more',
      spec: { hosts: ['a.b'], exportTo: ['~', 'prod'] },
      want: ['spec.exportTo: "~" exports to no namespace'],
    },
    {
      name: 'bad location',
      spec: { hosts: ['a.b'], location: 'OUTSIDE' },
      want: ['spec.location: want one of MESH_EXTERNAL, MESH_INTERNAL'],
    },
  ])('$name', c => {
    expectProblems('ServiceEntry', c);
  });
});

describe('WorkloadEntry and WorkloadGroup checks', () => {
  it.each<Case>([
    {
      name: 'a VM',
      spec: {
        address: '10.0.0.5',
        ports: { http: 9080 },
        labels: { app: 'reviews', version: 'v1' },
        serviceAccount: 'reviews',
        network: 'vm-net',
        locality: 'us-east/1a',
        weight: 1,
      },
      want: [],
    },
    { name: 'a DNS address', spec: { address: 'vm1.internal.example.com' }, want: [] },
    { name: 'no address', spec: { labels: { app: 'a' } }, want: ['spec.address: required'] },
    {
      name: 'bad address',
      spec: { address: 'not an address' },
      want: ['spec.address: "not an address" is not an IP address or a DNS name'],
    },
    {
      name: 'unix socket with ports',
      spec: { address: 'unix://relative.sock', ports: { http: 80 } },
      want: [
        'spec.address: "unix://relative.sock" is not unix:// and an absolute file path',
        'spec.ports: a unix socket endpoint cannot have ports',
      ],
    },
    {
      name: 'port',
      spec: { address: '10.0.0.5', ports: { HTTP_1: 80, web: 0 } },
      want: [
        'spec.ports.web: want a port number from 1 to 65535, got 0',
        'spec.ports.HTTP_1: invalid port name "HTTP_1"',
      ],
    },
    {
      name: 'port name',
      spec: { address: '10.0.0.5', ports: { http_1: 80 } },
      want: ['spec.ports.http_1: invalid port name "http_1"'],
    },
    {
      name: 'service account',
      spec: { address: '10.0.0.5', serviceAccount: 'Reviews' },
      want: ['spec.serviceAccount: invalid service account "Reviews"'],
    },
    {
      name: 'negative weight',
      spec: { address: '10.0.0.5', weight: -1 },
      want: ['spec.weight: want a number of at least 0, got -1'],
    },
  ])('WorkloadEntry: $name', c => {
    expectProblems('WorkloadEntry', c);
  });

  it.each<Case>([
    {
      name: 'a template without address',
      spec: {
        metadata: { labels: { app: 'reviews' } },
        template: { ports: { http: 9080 }, serviceAccount: 'reviews' },
        probe: {
          periodSeconds: 5,
          initialDelaySeconds: 1,
          httpGet: { port: 9080, path: '/ready' },
        },
      },
      want: [],
    },
    { name: 'no template', spec: {}, want: ['spec.template: required'] },
    {
      name: 'bad template address',
      spec: { template: { address: '1.2.3' } },
      want: ['spec.template.address: "1.2.3" is not an IP address or a DNS name'],
    },
    {
      name: 'probe with no method',
      spec: { template: {}, probe: { periodSeconds: 5 } },
      want: ['spec.probe: a probe needs one of httpGet, tcpSocket or exec'],
    },
    {
      name: 'probe with two methods',
      spec: { template: {}, probe: { tcpSocket: { port: 22 }, exec: { command: ['true'] } } },
      want: ['spec.probe: want exactly one of httpGet, tcpSocket or exec, got tcpSocket and exec'],
    },
    {
      name: 'probe fields',
      spec: {
        template: {},
        probe: {
          timeoutSeconds: -1,
          httpGet: { port: 80, scheme: 'FTP', httpHeaders: [{ name: 'bad name', value: 'x' }] },
        },
      },
      want: [
        'spec.probe.timeoutSeconds: want a number of at least 0, got -1',
        'spec.probe.httpGet.scheme: invalid scheme "FTP"',
        'spec.probe.httpGet.httpHeaders[0].name: invalid header name "bad name"',
      ],
    },
    {
      name: 'probe fields after the schema',
      spec: {
        template: {},
        probe: {
          httpGet: { port: 80, scheme: 'FTP', httpHeaders: [{ name: 'bad name', value: 'x' }] },
        },
      },
      want: [
        'spec.probe.httpGet.scheme: invalid scheme "FTP"',
        'spec.probe.httpGet.httpHeaders[0].name: invalid header name "bad name"',
      ],
    },
    {
      name: 'empty exec',
      spec: { template: {}, probe: { exec: { command: [] } } },
      want: ['spec.probe.exec.command: at least one word is required'],
    },
    {
      name: 'metadata labels',
      spec: { metadata: { labels: { app: 'a b' } }, template: {} },
      want: ['spec.metadata.labels.app: invalid value "a b"'],
    },
  ])('WorkloadGroup: $name', c => {
    expectProblems('WorkloadGroup', c);
  });
});

describe('Gateway checks', () => {
  const server = (extra: object = {}) => ({
    port: { number: 80, name: 'http', protocol: 'HTTP' },
    hosts: ['*'],
    ...extra,
  });
  it.each<Case>([
    {
      name: 'an HTTP server',
      spec: { selector: { istio: 'ingressgateway' }, servers: [server()] },
      want: [],
    },
    {
      name: 'HTTPS with a credential and a redirect server',
      spec: {
        servers: [
          server({ hosts: ['uk.bookinfo.com', 'eu.bookinfo.com'], tls: { httpsRedirect: true } }),
          {
            port: { number: 443, name: 'https-443', protocol: 'HTTPS' },
            hosts: ['prod/uk.bookinfo.com', './eu.bookinfo.com', '*/*.bookinfo.com'],
            tls: { mode: 'SIMPLE', credentialName: 'bookinfo-secret' },
          },
        ],
      },
      want: [],
    },
    {
      name: 'protocol case',
      spec: { servers: [server({ port: { number: 80, name: 'http', protocol: 'http' } })] },
      want: [],
    },
    {
      name: 'no servers',
      spec: { servers: [] },
      want: ['spec.servers: at least one server is required'],
    },
    {
      name: 'no hosts',
      spec: { servers: [server({ hosts: [] })] },
      want: ['spec.servers[0].hosts: at least one host is required'],
    },
    {
      name: 'short host',
      spec: { servers: [server({ hosts: ['reviews', 'ns/reviews'] })] },
      want: [
        'spec.servers[0].hosts[0]: short name "reviews" is not allowed here',
        'spec.servers[0].hosts[1]: short name "reviews"',
      ],
    },
    { name: 'IP host', spec: { servers: [server({ hosts: ['10.0.0.1'] })] }, want: [] },
    {
      name: 'bad namespace',
      spec: { servers: [server({ hosts: ['Prod/a.b', '/a.b'] })] },
      want: [
        'spec.servers[0].hosts[0]: invalid namespace "Prod" in host "Prod/a.b"',
        'spec.servers[0].hosts[1]: invalid host "/a.b": the namespace and the DNS name cannot be empty',
      ],
    },
    {
      name: 'port fields required',
      spec: { servers: [{ port: { number: 80 }, hosts: ['*'] }] },
      want: ['spec.servers[0].port.protocol: required', 'spec.servers[0].port.name: required'],
    },
    {
      name: 'duplicate port names',
      spec: {
        servers: [
          server(),
          server({ port: { number: 8080, name: 'http', protocol: 'HTTP', targetPort: 80 } }),
        ],
      },
      want: [
        'spec.servers[1].port.name: duplicate port name "http" (also spec.servers[0])',
        'spec.servers[1].port.targetPort: targetPort has no effect on gateways',
      ],
    },
    {
      name: 'HTTPS without TLS',
      spec: { servers: [server({ port: { number: 443, name: 'https', protocol: 'HTTPS' } })] },
      want: ['spec.servers[0].tls: required for HTTPS servers'],
    },
    {
      name: 'SIMPLE without certificates',
      spec: {
        servers: [
          server({
            port: { number: 443, name: 'https', protocol: 'HTTPS' },
            tls: { mode: 'SIMPLE' },
          }),
        ],
      },
      want: [
        'spec.servers[0].tls.serverCertificate: required for SIMPLE TLS',
        'spec.servers[0].tls.privateKey: required for SIMPLE TLS',
      ],
    },
    {
      name: 'MUTUAL without a CA',
      spec: {
        servers: [
          server({
            port: { number: 443, name: 'https', protocol: 'HTTPS' },
            tls: { mode: 'MUTUAL', serverCertificate: '/c', privateKey: '/k' },
          }),
        ],
      },
      want: ['spec.servers[0].tls.caCertificates: required for MUTUAL TLS'],
    },
    {
      name: 'ISTIO_MUTUAL with a key',
      spec: {
        servers: [
          server({
            port: { number: 15443, name: 'tls', protocol: 'TLS' },
            tls: { mode: 'ISTIO_MUTUAL', privateKey: '/k' },
          }),
        ],
      },
      want: ['spec.servers[0].tls.privateKey: cannot be set with ISTIO_MUTUAL'],
    },
    {
      name: 'TLS passthrough',
      spec: {
        servers: [
          server({
            port: { number: 443, name: 'tls', protocol: 'TLS' },
            hosts: ['*.example.com'],
            tls: { mode: 'PASSTHROUGH' },
          }),
        ],
      },
      want: [],
    },
    {
      name: 'HTTP with certificates',
      spec: {
        servers: [server({ tls: { mode: 'SIMPLE', serverCertificate: '/c', privateKey: '/k' } })],
      },
      want: ['spec.servers[0].tls: a plain-text HTTP server may set only httpsRedirect'],
    },
    {
      name: 'TCP with TLS',
      spec: {
        servers: [
          server({
            port: { number: 31400, name: 'tcp', protocol: 'TCP' },
            tls: { httpsRedirect: true },
          }),
        ],
      },
      want: ['spec.servers[0].tls: a TCP server cannot have TLS settings'],
    },
    {
      name: 'bind',
      spec: { servers: [server({ bind: 'localhost' })] },
      want: ['spec.servers[0].bind: "localhost" is not an IP address or unix:///path'],
    },
  ])('$name', c => {
    expectProblems('Gateway', c, { name: 'gw', namespace: 'istio-system' });
  });

  it('needs a name without dots', () => {
    expect(problemsOf('Gateway', { servers: [server()] }, { name: 'my.gateway' })).toEqual([
      'metadata.name: invalid Gateway name "my.gateway": want a DNS label (no dots), as VirtualServices refer to it as NAMESPACE/NAME',
    ]);
  });
});

describe('Sidecar checks', () => {
  it.each<Case>([
    {
      name: 'egress hosts',
      spec: { egress: [{ hosts: ['./*', 'istio-system/*', '*/api.example.com', '~/*'] }] },
      want: [],
    },
    {
      name: 'ingress and egress listeners',
      spec: {
        workloadSelector: { labels: { app: 'productpage' } },
        ingress: [
          {
            port: { number: 9080, protocol: 'http', name: 'somename' },
            defaultEndpoint: '127.0.0.1:8080',
            captureMode: 'NONE',
          },
        ],
        egress: [
          {
            port: { number: 3306, protocol: 'MYSQL', name: 'egressmysql' },
            captureMode: 'NONE',
            bind: '127.0.0.1',
            hosts: ['*/mysql.foo.com'],
          },
          { hosts: ['istio-system/*'] },
        ],
        outboundTrafficPolicy: { mode: 'REGISTRY_ONLY' },
      },
      want: [],
    },
    {
      name: 'empty',
      spec: {},
      want: ['spec: a Sidecar needs at least one of egress, ingress or outboundTrafficPolicy'],
    },
    {
      name: 'host without namespace',
      spec: { egress: [{ hosts: ['reviews.default.svc.cluster.local'] }] },
      want: [
        'spec.egress[0].hosts[0]: invalid host "reviews.default.svc.cluster.local": want NAMESPACE/DNS_NAME',
      ],
    },
    {
      name: 'short host',
      spec: { egress: [{ hosts: ['./reviews'] }] },
      want: ['spec.egress[0].hosts[0]: short name "reviews" is not allowed here'],
    },
    {
      name: 'bad namespace and partial wildcard',
      spec: { egress: [{ hosts: ['Prod/*', '*/*foo.com'] }] },
      want: [
        'spec.egress[0].hosts[0]: invalid namespace "Prod"',
        'spec.egress[0].hosts[1]: invalid host "*foo.com"',
      ],
    },
    {
      name: 'no hosts',
      spec: { egress: [{ hosts: [] }] },
      want: ['spec.egress[0].hosts: at least one host is required'],
    },
    {
      name: 'catch-all not last',
      spec: { egress: [{ hosts: ['*/*'] }, { port: { number: 80 }, hosts: ['*/*'] }] },
      want: ['spec.egress[0]: the catch-all egress listener (no port) must be the last one'],
    },
    {
      name: 'duplicate ports',
      spec: {
        ingress: [{ port: { number: 80 } }, { port: { number: 80, name: 'Web_1' } }],
        egress: [
          { port: { number: 81 }, hosts: ['*/*'] },
          { port: { number: 81 }, hosts: ['*/*'] },
        ],
      },
      want: [
        'spec.ingress[1].port.name: invalid port name "Web_1"',
        'spec.ingress[1].port.number: duplicate ingress port 80',
        'spec.egress[1].port.number: duplicate egress port 81',
      ],
    },
    {
      name: 'defaultEndpoint',
      spec: {
        ingress: [
          { port: { number: 80 }, defaultEndpoint: '10.0.0.1:80' },
          { port: { number: 81 }, defaultEndpoint: 'unix:///var/run/app.sock' },
          { port: { number: 82 }, defaultEndpoint: '[::1]:8080' },
        ],
      },
      want: ['spec.ingress[0].defaultEndpoint: invalid defaultEndpoint "10.0.0.1:80"'],
    },
    {
      name: 'egress proxy without ALLOW_ANY',
      spec: {
        outboundTrafficPolicy: {
          mode: 'REGISTRY_ONLY',
          egressProxy: { host: 'proxy.example.com' },
        },
      },
      want: [
        'spec.outboundTrafficPolicy.egressProxy: egressProxy needs mode ALLOW_ANY',
        'spec.outboundTrafficPolicy.egressProxy.port.number: required',
      ],
    },
    {
      name: 'capture mode',
      spec: { ingress: [{ port: { number: 80 }, captureMode: 'TPROXY' }] },
      want: ['spec.ingress[0].captureMode: want one of DEFAULT, IPTABLES, NONE'],
    },
  ])('$name', c => {
    expectProblems('Sidecar', c);
  });
});

describe('PeerAuthentication checks', () => {
  it.each<Case>([
    { name: 'mesh-wide strict', spec: { mtls: { mode: 'STRICT' } }, want: [] },
    {
      name: 'per port',
      spec: {
        selector: { matchLabels: { app: 'finance' } },
        mtls: { mode: 'STRICT' },
        portLevelMtls: { '8080': { mode: 'DISABLE' } },
      },
      want: [],
    },
    {
      name: 'per port without selector',
      spec: { portLevelMtls: { '8080': { mode: 'DISABLE' } } },
      want: ['spec.portLevelMtls: portLevelMtls needs a selector with matchLabels'],
    },
    {
      name: 'bad port',
      spec: {
        selector: { matchLabels: { app: 'a' } },
        portLevelMtls: { http: { mode: 'DISABLE' }, '0': {} },
      },
      want: [
        'spec.portLevelMtls["0"]: invalid port "0"',
        'spec.portLevelMtls.http: invalid port "http"',
      ],
    },
    {
      name: 'empty port map',
      spec: { selector: { matchLabels: { app: 'a' } }, portLevelMtls: {} },
      want: ['spec.portLevelMtls: at least one port is required'],
    },
    {
      name: 'bad mode',
      spec: { mtls: { mode: 'strict' } },
      want: [
        'spec.mtls.mode: want one of UNSET, DISABLE, PERMISSIVE, STRICT, got the string "strict"',
      ],
    },
    {
      name: 'selector wildcard',
      spec: { selector: { matchLabels: { app: 'a*' } } },
      want: ['spec.selector.matchLabels.app: wildcards are not supported in selectors'],
    },
  ])('$name', c => {
    expectProblems('PeerAuthentication', c);
  });
});

describe('AuthorizationPolicy checks', () => {
  it.each<Case>([
    { name: 'allow nothing', spec: {}, want: [] },
    { name: 'deny all', spec: { action: 'DENY', rules: [{}] }, want: [] },
    {
      name: 'a full rule',
      spec: {
        selector: { matchLabels: { app: 'httpbin' } },
        action: 'ALLOW',
        rules: [
          {
            from: [
              {
                source: {
                  principals: ['cluster.local/ns/default/sa/sleep'],
                  ipBlocks: ['10.0.0.0/8'],
                },
              },
            ],
            to: [{ operation: { methods: ['GET'], paths: ['/info*'], ports: ['8080'] } }],
            when: [{ key: 'request.auth.claims[iss]', values: ['https://accounts.google.com'] }],
          },
        ],
      },
      want: [],
    },
    {
      name: 'DENY without rules',
      spec: { action: 'DENY' },
      want: ['spec.rules: a DENY policy without rules never triggers'],
    },
    {
      name: 'CUSTOM',
      spec: {
        action: 'CUSTOM',
        provider: { name: 'my-ext-authz' },
        rules: [{ to: [{ operation: { paths: ['/admin/*'] } }] }],
      },
      want: [],
    },
    {
      name: 'CUSTOM without rules or provider',
      spec: { action: 'CUSTOM' },
      want: [
        'spec.rules: a CUSTOM policy without rules never triggers',
        'spec.provider.name: required for action CUSTOM',
      ],
    },
    {
      name: 'CUSTOM with unsupported fields',
      spec: {
        action: 'CUSTOM',
        provider: { name: 'p' },
        rules: [
          {
            from: [{ source: { principals: ['a'] } }],
            when: [{ key: 'source.namespace', values: ['a'] }],
          },
        ],
      },
      want: [
        'spec.rules[0].from[0].source.principals: not supported with action CUSTOM',
        'spec.rules[0].when[0].key: "source.namespace" is not supported with action CUSTOM',
      ],
    },
    {
      name: 'provider without CUSTOM',
      spec: { action: 'ALLOW', provider: { name: 'p' }, rules: [{}] },
      want: ['spec.provider: provider is only for action CUSTOM, not ALLOW'],
    },
    {
      name: 'empty from and to',
      spec: { rules: [{ from: [], to: [] }] },
      want: ['spec.rules[0].from: cannot be empty', 'spec.rules[0].to: cannot be empty'],
    },
    {
      name: 'empty source and operation',
      spec: { rules: [{ from: [{ source: {} }], to: [{ operation: { methods: [] } }] }] },
      want: [
        'spec.rules[0].from[0].source: a source needs at least one field',
        'spec.rules[0].to[0].operation: an operation needs at least one field',
      ],
    },
    {
      name: 'bad values',
      spec: {
        rules: [
          {
            from: [{ source: { ipBlocks: ['10.0.0.0/33'], namespaces: [''] } }],
            to: [{ operation: { ports: ['http', '99999'] } }],
          },
        ],
      },
      want: [
        'spec.rules[0].from[0].source.namespaces[0]: empty value',
        'spec.rules[0].from[0].source.ipBlocks[0]: "10.0.0.0/33" is not a valid CIDR block',
        'spec.rules[0].to[0].operation.ports[0]: invalid port "http"',
        'spec.rules[0].to[0].operation.ports[1]: invalid port "99999"',
      ],
    },
    {
      name: 'ports as numbers',
      spec: { rules: [{ to: [{ operation: { ports: [8080] } }] }] },
      want: ['spec.rules[0].to[0].operation.ports[0]: want a string, got number 8080'],
    },
    {
      name: 'condition without values',
      spec: { rules: [{ when: [{ key: 'request.headers[x]' }, { key: '', values: ['a'] }] }] },
      want: [
        'spec.rules[0].when[0]: a condition on "request.headers[x]" needs values or notValues',
        'spec.rules[0].when[1].key: required',
      ],
    },
    {
      name: 'bad action',
      spec: { action: 'LOG' },
      want: ['spec.action: want one of ALLOW, DENY, AUDIT, CUSTOM'],
    },
  ])('$name', c => {
    expectProblems('AuthorizationPolicy', c);
  });
});
