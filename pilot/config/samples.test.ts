/**
 * Istio's own samples (BookInfo, the egress and security tasks), reproduced unchanged in
 * testdata/: Sail must accept what Istio users already have.
 */
import * as path from 'node:path';
import { canonicalize } from './objects';
import { loadSources } from './parse';
import type { ConfigObject } from './types';
import { validateDocuments } from './validate';

const BOOKINFO = path.join(__dirname, 'testdata', 'bookinfo');
const DOCS = path.join(__dirname, 'testdata', 'docs');
const file = (dir: string, name: string) => path.join(dir, name);

describe('Istio samples', () => {
  it.each([
    'destination-rule-all.yaml',
    'destination-rule-all-mtls.yaml',
    'bookinfo-gateway.yaml',
    'egress-rule-google-apis.yaml',
  ])('bookinfo %s validates on its own', async name => {
    const objects = validateDocuments(await loadSources([file(BOOKINFO, name)]));
    expect(objects.length).toBeGreaterThan(0);
  });

  it.each([
    'virtual-service-all-v1.yaml',
    'virtual-service-reviews-80-20.yaml',
    'virtual-service-reviews-jason-v2-v3.yaml',
    'virtual-service-ratings-test-abort.yaml',
    'virtual-service-ratings-test-delay.yaml',
  ])('bookinfo %s validates with the destination rules applied first', async name => {
    const rules = validateDocuments(
      await loadSources([file(BOOKINFO, 'destination-rule-all.yaml')]),
    );
    const objects = validateDocuments(await loadSources([file(BOOKINFO, name)]), {
      existing: rules,
    });
    expect(objects.every(o => o.kind === 'VirtualService')).toBe(true);
  });

  it('reads the 80/20 split as Istio does', async () => {
    const [vs] = validateDocuments(
      await loadSources([file(BOOKINFO, 'virtual-service-reviews-80-20.yaml')]),
      {
        existing: validateDocuments(
          await loadSources([file(BOOKINFO, 'destination-rule-all.yaml')]),
        ),
      },
    ) as [ConfigObject<'VirtualService'>];
    expect(canonicalize(vs)).toEqual({
      apiVersion: 'networking.istio.io/v1alpha3',
      kind: 'VirtualService',
      metadata: { name: 'reviews', namespace: 'default' },
      spec: {
        hosts: ['reviews'],
        http: [
          {
            route: [
              { destination: { host: 'reviews', subset: 'v1' }, weight: 80 },
              { destination: { host: 'reviews', subset: 'v2' }, weight: 20 },
            ],
          },
        ],
      },
    });
  });

  it('reads the fault injection samples', async () => {
    const rules = validateDocuments(
      await loadSources([file(BOOKINFO, 'destination-rule-all.yaml')]),
    );
    const [abort] = validateDocuments(
      await loadSources([file(BOOKINFO, 'virtual-service-ratings-test-abort.yaml')]),
      { existing: rules },
    ) as [ConfigObject<'VirtualService'>];
    expect(abort.spec.http?.[0]?.fault).toEqual({ abort: { percent: 100, httpStatus: 500 } });
    expect(abort.spec.http?.[0]?.match).toEqual([{ headers: { 'end-user': { exact: 'jason' } } }]);
    const [delay] = validateDocuments(
      await loadSources([file(BOOKINFO, 'virtual-service-ratings-test-delay.yaml')]),
      { existing: rules },
    ) as [ConfigObject<'VirtualService'>];
    expect(delay.spec.http?.[0]?.fault).toEqual({ delay: { percent: 100, fixedDelay: '7s' } });
  });

  it('reads the egress and security samples from the Istio docs', async () => {
    const objects = validateDocuments(await loadSources([DOCS]));
    expect(objects.map(o => `${o.kind} ${o.metadata.namespace}/${o.metadata.name}`)).toEqual([
      'AuthorizationPolicy default/allow-nothing',
      'AuthorizationPolicy default/productpage-viewer',
      'AuthorizationPolicy default/details-viewer',
      'AuthorizationPolicy default/reviews-viewer',
      'AuthorizationPolicy default/ratings-viewer',
      'ServiceEntry default/google',
      'ServiceEntry default/httpbin-ext',
      'VirtualService default/httpbin-ext',
      'PeerAuthentication istio-system/default',
    ]);
    const pa = objects.find(
      o => o.kind === 'PeerAuthentication',
    ) as ConfigObject<'PeerAuthentication'>;
    expect(pa.spec).toEqual({ mtls: { mode: 'STRICT' } });
    const se = objects.find(o => o.metadata.name === 'httpbin-ext') as ConfigObject<'ServiceEntry'>;
    expect(se.spec).toEqual({
      hosts: ['httpbin.org'],
      ports: [{ number: 80, name: 'http', protocol: 'HTTP' }],
      resolution: 'DNS',
      location: 'MESH_EXTERNAL',
    });
  });

  it('validates every sample together, as one apply of a whole directory', async () => {
    // The all-v1 routes and the gateway's VirtualService (bound to a gateway, so no conflict).
    const docs = await loadSources([
      file(BOOKINFO, 'destination-rule-all-mtls.yaml'),
      file(BOOKINFO, 'virtual-service-all-v1.yaml'),
      file(BOOKINFO, 'bookinfo-gateway.yaml'),
      file(BOOKINFO, 'egress-rule-google-apis.yaml'),
      DOCS,
    ]);
    expect(validateDocuments(docs)).toHaveLength(docs.length);
  });

  it('rejects applying two routings for one host at once', async () => {
    const docs = await loadSources([
      file(BOOKINFO, 'destination-rule-all.yaml'),
      file(BOOKINFO, 'virtual-service-all-v1.yaml'),
      file(BOOKINFO, 'virtual-service-reviews-80-20.yaml'),
    ]);
    expect(() => validateDocuments(docs)).toThrow(
      /virtual-service-reviews-80-20\.yaml#0 \(VirtualService default\/reviews\): metadata\.name: VirtualService default\/reviews is defined twice: also at .*virtual-service-all-v1\.yaml#1/,
    );
  });
});
