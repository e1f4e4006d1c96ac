import { ConfigInvalidError } from '../errors';
import type { ParsedDocument } from './parse';
import type { ConfigObject, Kind, SpecOf } from './types';
import { validateDocuments, validateSet } from './validate';

function object<K extends Kind>(
  kind: K,
  name: string,
  spec: SpecOf<K>,
  namespace = 'default',
): ConfigObject<K> {
  const group =
    kind === 'PeerAuthentication' || kind === 'AuthorizationPolicy' ? 'security' : 'networking';
  return { apiVersion: `${group}.istio.io/v1`, kind, metadata: { name, namespace }, spec };
}

const se = (name: string, hosts: string[], namespace = 'default') =>
  object(
    'ServiceEntry',
    name,
    { hosts, ports: [{ number: 80, name: 'http', protocol: 'HTTP' }], resolution: 'DNS' },
    namespace,
  );
const vs = (
  name: string,
  hosts: string[],
  dests: { host: string; subset?: string }[],
  extra: object = {},
  namespace = 'default',
) =>
  object(
    'VirtualService',
    name,
    {
      hosts,
      http: [
        {
          route: dests.map(d => ({
            destination: d,
            ...(dests.length > 1 ? { weight: 100 / dests.length } : {}),
          })),
        },
      ],
      ...extra,
    },
    namespace,
  );
const dr = (
  name: string,
  host: string,
  subsets: string[],
  extra: object = {},
  namespace = 'default',
) =>
  object(
    'DestinationRule',
    name,
    { host, subsets: subsets.map(s => ({ name: s, labels: { version: s } })), ...extra },
    namespace,
  );

const docOf = (obj: ConfigObject, source: string, index = 0): ParsedDocument => ({
  source,
  index,
  basePath: [],
  raw: obj,
});

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (!(err instanceof ConfigInvalidError)) throw err;
    return err.message.split('\n');
  }
  return [];
}

describe('validateSet', () => {
  it('accepts a consistent set', () => {
    expect(
      validateSet([
        dr('reviews', 'reviews', ['v1', 'v2']),
        vs(
          'reviews',
          ['reviews'],
          [
            { host: 'reviews', subset: 'v1' },
            { host: 'reviews', subset: 'v2' },
          ],
        ),
        se('ext', ['api.example.com']),
        vs('ext', ['api.example.com'], [{ host: 'api.example.com' }]),
      ]),
    ).toEqual([]);
  });

  it('rejects two ServiceEntries claiming one host in one namespace, on the later one', () => {
    const a = se('a', ['api.example.com', 'b.example.com']);
    const b = se('b', ['other.example.com', 'API.example.com']);
    expect(validateSet([a, b, se('c', ['api.example.com'], 'prod')])).toEqual([
      {
        source: 'store',
        object: 'ServiceEntry default/b',
        path: 'spec.hosts[1]',
        message:
          'host api.example.com is already claimed by ServiceEntry default/a (store): two ServiceEntries in one namespace cannot define the same host',
      },
    ]);
  });

  it('rejects two mesh VirtualServices for one host in one namespace, comparing resolved hosts', () => {
    const a = vs('a', ['reviews'], [{ host: 'reviews' }]);
    const b = vs('b', ['reviews.default.svc.cluster.local'], [{ host: 'reviews' }], {
      gateways: ['mesh', 'gw'],
    });
    const gw1 = vs('gw1', ['reviews'], [{ host: 'reviews' }], { gateways: ['gw'] });
    const gw2 = vs('gw2', ['reviews'], [{ host: 'reviews' }], { gateways: ['gw'] });
    const other = vs('other', ['reviews'], [{ host: 'reviews' }], {}, 'prod');
    const origins = new Map([[b, { source: 'b.yaml', index: 2 }]]);
    expect(validateSet([a, b, gw1, gw2, other], { origins })).toEqual([
      {
        source: 'b.yaml',
        index: 2,
        object: 'VirtualService default/b',
        path: 'spec.hosts[0]',
        message:
          'host reviews.default.svc.cluster.local is already claimed by VirtualService default/a (store): sidecars use only one VirtualService per host: merge the routes into one, or bind one to gateways',
      },
    ]);
  });

  it('rejects a subset no DestinationRule defines, naming what is defined', () => {
    const v = vs(
      'reviews',
      ['reviews'],
      [
        { host: 'reviews', subset: 'v1' },
        { host: 'reviews', subset: 'v3' },
      ],
    );
    expect(
      validateSet([dr('reviews', 'reviews.default.svc.cluster.local', ['v1', 'v2']), v]),
    ).toEqual([
      {
        source: 'store',
        object: 'VirtualService default/reviews',
        path: 'spec.http[0].route[1].destination.subset',
        message:
          'subset "v3" is not defined by any DestinationRule for host reviews.default.svc.cluster.local (DestinationRule default/reviews (store) defines v1, v2)',
      },
    ]);
  });

  it('resolves short names in the namespace of each document', () => {
    // `reviews` in prod is reviews.prod…, which the default namespace's rule does not cover.
    const v = vs('r', ['reviews'], [{ host: 'reviews', subset: 'v1' }], {}, 'prod');
    expect(validateSet([dr('reviews', 'reviews', ['v1']), v])[0]?.message).toContain(
      'for host reviews.prod.svc.cluster.local (no DestinationRule for that host)',
    );
    expect(validateSet([dr('reviews', 'reviews', ['v1'], {}, 'prod'), v])).toEqual([]);
    expect(validateSet([dr('reviews', 'reviews.prod.svc.cluster.local', ['v1']), v])).toEqual([]);
    expect(
      validateSet(
        [
          dr('reviews', 'reviews', ['v1']),
          vs('r', ['reviews'], [{ host: 'reviews', subset: 'v1' }], {}, 'prod'),
        ],
        {
          domainSuffix: 'mesh.internal',
        },
      )[0]?.message,
    ).toContain('reviews.prod.svc.mesh.internal');
  });

  it('checks subsets of mirrors and TCP and TLS routes', () => {
    const v = object('VirtualService', 'v', {
      hosts: ['db.example.com'],
      http: [
        {
          route: [{ destination: { host: 'db.example.com' } }],
          mirror: { host: 'db.example.com', subset: 'm' },
        },
      ],
      tcp: [{ route: [{ destination: { host: 'db.example.com', subset: 't' } }] }],
      tls: [
        {
          match: [{ sniHosts: ['db.example.com'] }],
          route: [{ destination: { host: 'db.example.com', subset: 's' } }],
        },
      ],
    });
    expect(validateSet([v]).map(p => p.path)).toEqual([
      'spec.http[0].mirror.subset',
      'spec.tcp[0].route[0].destination.subset',
      'spec.tls[0].route[0].destination.subset',
    ]);
  });

  it('uses the most specific DestinationRule: an exact host before a wildcard', () => {
    const v = vs('v', ['reviews'], [{ host: 'reviews', subset: 'v1' }]);
    expect(validateSet([dr('all', '*.local', ['v1']), v])).toEqual([]);
    expect(
      validateSet([dr('all', '*.local', ['v1']), dr('reviews', 'reviews', ['v2']), v]),
    ).toHaveLength(1);
  });

  it('honours a DestinationRule’s exportTo', () => {
    const v = vs(
      'v',
      ['reviews.prod.svc.cluster.local'],
      [{ host: 'reviews.prod.svc.cluster.local', subset: 'v1' }],
    );
    const hidden = dr('reviews', 'reviews', ['v1'], { exportTo: ['.'] }, 'prod');
    expect(validateSet([hidden, v])).toHaveLength(1);
    expect(
      validateSet([dr('reviews', 'reviews', ['v1'], { exportTo: ['default'] }, 'prod'), v]),
    ).toEqual([]);
    expect(validateSet([dr('reviews', 'reviews', ['v1'], { exportTo: ['*'] }, 'prod'), v])).toEqual(
      [],
    );
  });
});

describe('validateDocuments with stored objects', () => {
  it('checks subsets against stored DestinationRules', () => {
    const stored = [dr('reviews', 'reviews', ['v1', 'v2'])];
    const apply = [
      docOf(vs('reviews', ['reviews'], [{ host: 'reviews', subset: 'v2' }]), 'vs.yaml'),
    ];
    expect(validateDocuments(apply, { existing: stored })).toHaveLength(1);
    const bad = [docOf(vs('reviews', ['reviews'], [{ host: 'reviews', subset: 'v9' }]), 'vs.yaml')];
    expect(problems(() => validateDocuments(bad, { existing: stored }))).toEqual([
      'vs.yaml#0 (VirtualService default/reviews): spec.http[0].route[0].destination.subset: subset "v9" is not defined by any DestinationRule for host reviews.default.svc.cluster.local (DestinationRule default/reviews (store) defines v1, v2)',
    ]);
  });

  it('lets an applied object replace the stored one with its key', () => {
    const stored = [
      dr('reviews', 'reviews', ['v1']),
      vs('reviews', ['reviews'], [{ host: 'reviews', subset: 'v1' }]),
    ];
    // The new DestinationRule adds v2 and the new VirtualService uses it: both in one apply.
    const apply = [
      docOf(dr('reviews', 'reviews', ['v1', 'v2']), 'dr.yaml'),
      docOf(vs('reviews', ['reviews'], [{ host: 'reviews', subset: 'v2' }]), 'vs.yaml'),
    ];
    expect(validateDocuments(apply, { existing: stored })).toHaveLength(2);
    // Re-applying a VirtualService is not a second claim on its host.
    expect(
      validateDocuments([docOf(stored[1] as ConfigObject, 'vs.yaml')], { existing: stored }),
    ).toHaveLength(1);
  });

  it('blocks a DestinationRule that drops a subset a stored VirtualService uses', () => {
    const stored = [
      dr('reviews', 'reviews', ['v1', 'v2']),
      vs('reviews', ['reviews'], [{ host: 'reviews', subset: 'v2' }]),
    ];
    expect(
      problems(() =>
        validateDocuments([docOf(dr('reviews', 'reviews', ['v1']), 'dr.yaml', 1)], {
          existing: stored,
        }),
      ),
    ).toEqual([
      'store (VirtualService default/reviews): spec.http[0].route[0].destination.subset: subset "v2" is not defined by any DestinationRule for host reviews.default.svc.cluster.local (DestinationRule default/reviews (dr.yaml#1) defines v1)',
    ]);
  });

  it('reports a host claimed by a stored object on the applied one', () => {
    const stored = [se('first', ['api.example.com'])];
    expect(
      problems(() =>
        validateDocuments([docOf(se('second', ['api.example.com']), 'se.yaml')], {
          existing: stored,
        }),
      ),
    ).toEqual([
      'se.yaml#0 (ServiceEntry default/second): spec.hosts[0]: host api.example.com is already claimed by ServiceEntry default/first (store): two ServiceEntries in one namespace cannot define the same host',
    ]);
  });

  it('reports conflicts between two applied documents with both locations', () => {
    const apply = [
      docOf(se('a', ['api.example.com']), 'a.yaml'),
      docOf(se('b', ['api.example.com']), 'b.yaml', 4),
    ];
    expect(problems(() => validateDocuments(apply))).toEqual([
      'b.yaml#4 (ServiceEntry default/b): spec.hosts[0]: host api.example.com is already claimed by ServiceEntry default/a (a.yaml#0): two ServiceEntries in one namespace cannot define the same host',
    ]);
  });

  it('does not report cascading problems from a broken document', () => {
    const v = docOf(vs('reviews', ['reviews'], [{ host: 'reviews', subset: 'v1' }]), 'vs.yaml', 1);
    // A semantic problem: the rule is still typed, and still defines v1 for the VirtualService.
    const dupSubsets = dr('reviews', 'reviews', ['v1', 'v1']);
    expect(problems(() => validateDocuments([docOf(dupSubsets, 'dr.yaml'), v]))).toEqual([
      'dr.yaml#0 (DestinationRule default/reviews): spec.subsets[1].name: duplicate subset name "v1"',
    ]);
    // A schema problem: the rule is unknown, so references to it are not checked at all.
    const typo = { ...dr('reviews', 'reviews', ['v1']), spec: { host: 'reviews', subset: [] } };
    expect(problems(() => validateDocuments([docOf(typo as ConfigObject, 'dr.yaml'), v]))).toEqual([
      'dr.yaml#0 (DestinationRule default/reviews): spec: unknown field "subset" (did you mean "subsets"?)',
    ]);
  });

  it('ignores conflicts among stored objects that the apply does not touch', () => {
    const stored = [se('a', ['api.example.com']), se('b', ['api.example.com'])];
    expect(
      validateDocuments([docOf(se('c', ['other.example.com']), 'c.yaml')], { existing: stored }),
    ).toHaveLength(1);
  });
});
