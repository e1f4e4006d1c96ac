import { KIND_INFO } from './kinds';
import { metadataSchema, parseIstioDuration, SPEC_SCHEMAS, unknownFieldsMessage } from './schemas';
import { KINDS, type Kind } from './types';
import { validateDocuments } from './validate';

describe('parseIstioDuration', () => {
  it.each([
    ['5s', 5e9],
    ['1.5s', 1.5e9],
    ['0.5s', 0.5e9],
    ['100ms', 100e6],
    ['1m', 60e9],
    ['1h30m', 5400e9],
    ['600.000s', 600e9],
    ['500us', 500e3],
    ['500µs', 500e3],
    ['10ns', 10],
    ['0s', 0],
    ['0', 0],
    ['.5s', 0.5e9],
  ])('%s is %d ns', (text, ns) => {
    expect(parseIstioDuration(text)).toBe(ns);
  });

  it.each(['', '5', '5 s', '-5s', '1d', '5S', 's', '1h 30m', 'PT5S'])(
    '%j is not a duration',
    text => {
      expect(parseIstioDuration(text)).toBeUndefined();
    },
  );
});

describe('unknownFieldsMessage', () => {
  it.each([
    [['rout'], ['route', 'redirect'], 'unknown field "rout" (did you mean "route"?)'],
    [['Hosts'], ['hosts'], 'unknown field "Hosts" (did you mean "hosts"?)'],
    [
      ['per_try_timeout'],
      ['perTryTimeout'],
      'unknown field "per_try_timeout" (did you mean "perTryTimeout"?)',
    ],
    [['zzz'], ['route'], 'unknown field "zzz"'],
    [['a', 'rout'], ['route'], 'unknown fields "a", "rout" (did you mean "route"?)'],
  ])('%j among %j', (keys, known, want) => {
    expect(unknownFieldsMessage(keys, known)).toBe(want);
  });
});

const MINIMAL: { [K in Kind]: unknown } = {
  ServiceEntry: { hosts: ['api.example.com'] },
  WorkloadEntry: { address: '10.0.0.1' },
  WorkloadGroup: { template: {} },
  DestinationRule: { host: 'reviews' },
  VirtualService: { hosts: ['reviews'], http: [{ route: [{ destination: { host: 'reviews' } }] }] },
  Gateway: { servers: [{ port: { number: 80, name: 'http', protocol: 'HTTP' }, hosts: ['*'] }] },
  Sidecar: { egress: [{ hosts: ['./*'] }] },
  PeerAuthentication: {},
  AuthorizationPolicy: {},
};

describe('every kind at every version', () => {
  const cases = KINDS.flatMap(kind =>
    KIND_INFO[kind].versions.map(v => [kind, `${KIND_INFO[kind].group}/${v}`] as const),
  );
  it.each(cases)(
    '%s %s: a minimal document validates, an unknown field does not',
    (kind, apiVersion) => {
      const doc = (spec: unknown) => ({
        source: 'k.yaml',
        index: 0,
        basePath: [],
        raw: { apiVersion, kind, metadata: { name: 'a', namespace: 'ns' }, spec },
      });
      const [obj] = validateDocuments([doc(MINIMAL[kind])]);
      expect(obj).toMatchObject({ apiVersion, kind, metadata: { name: 'a', namespace: 'ns' } });
      expect(() => validateDocuments([doc({ ...(MINIMAL[kind] as object), bogus: true })])).toThrow(
        'k.yaml#0 (' + kind + ' ns/a): spec: unknown field "bogus"',
      );
    },
  );

  it('has a schema per kind that is strict at every level', () => {
    for (const kind of KINDS) expect(SPEC_SCHEMAS[kind].safeParse({ x: 1 }).success).toBe(false);
    expect(metadataSchema.safeParse({ name: 'a', uid: 'u', managedFields: [] }).success).toBe(true);
    expect(metadataSchema.safeParse({ name: 'a', nam: 'b' }).success).toBe(false);
  });
});
