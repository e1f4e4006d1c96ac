import {
  canonicalize,
  deepEqual,
  describeObject,
  keyString,
  objectKey,
  specEquals,
} from './objects';
import type { ConfigObject } from './types';

const base: ConfigObject<'DestinationRule'> = {
  apiVersion: 'networking.istio.io/v1beta1',
  kind: 'DestinationRule',
  metadata: { name: 'reviews', namespace: 'prod' },
  spec: { host: 'reviews', subsets: [{ name: 'v1', labels: { version: 'v1' } }] },
};

describe('canonicalize', () => {
  it('orders fields, keeps store metadata and the apiVersion, drops undefined and empty maps', () => {
    const input = {
      spec: {
        subsets: [{ name: 'v1', labels: { version: 'v1' }, trafficPolicy: undefined }],
        host: 'reviews',
      },
      metadata: {
        generation: 2,
        annotations: {},
        labels: { app: 'reviews' },
        creationTimestamp: '2024-05-01T10:00:00Z',
        resourceVersion: '7',
        namespace: 'prod',
        name: 'reviews',
      },
      kind: 'DestinationRule',
      apiVersion: 'networking.istio.io/v1alpha3',
    } as unknown as ConfigObject;
    const out = canonicalize(input);
    expect(JSON.stringify(out)).toBe(
      JSON.stringify({
        apiVersion: 'networking.istio.io/v1alpha3',
        kind: 'DestinationRule',
        metadata: {
          name: 'reviews',
          namespace: 'prod',
          labels: { app: 'reviews' },
          resourceVersion: '7',
          creationTimestamp: '2024-05-01T10:00:00Z',
          generation: 2,
        },
        spec: { subsets: [{ name: 'v1', labels: { version: 'v1' } }], host: 'reviews' },
      }),
    );
  });

  it('copies deeply', () => {
    const out = canonicalize(base);
    out.spec.subsets?.push({ name: 'v2' });
    expect(base.spec.subsets).toHaveLength(1);
  });
});

describe('specEquals', () => {
  it('compares spec, labels and annotations only', () => {
    const same = {
      ...base,
      apiVersion: 'networking.istio.io/v1',
      metadata: { ...base.metadata, resourceVersion: '9', generation: 4, labels: {} },
      spec: {
        subsets: [{ labels: { version: 'v1' }, name: 'v1' }],
        host: 'reviews',
        exportTo: undefined,
      },
    };
    expect(specEquals(base, same)).toBe(true);
    expect(specEquals(base, { ...base, spec: { ...base.spec, host: 'ratings' } })).toBe(false);
    expect(specEquals(base, { ...base, metadata: { ...base.metadata, labels: { a: 'b' } } })).toBe(
      false,
    );
    expect(
      specEquals(base, { ...base, metadata: { ...base.metadata, annotations: { a: 'b' } } }),
    ).toBe(false);
  });

  it('deepEqual distinguishes arrays, order within arrays and types', () => {
    expect(deepEqual([1, 2], [2, 1])).toBe(false);
    expect(deepEqual({ a: [1] }, { a: { 0: 1 } })).toBe(false);
    expect(deepEqual({ a: 1, b: undefined }, { a: 1 })).toBe(true);
    expect(deepEqual('1', 1)).toBe(false);
    expect(deepEqual(null, {})).toBe(false);
  });
});

describe('keys', () => {
  it('names objects', () => {
    expect(objectKey(base)).toEqual({
      kind: 'DestinationRule',
      namespace: 'prod',
      name: 'reviews',
    });
    expect(keyString(objectKey(base))).toBe('DestinationRule/prod/reviews');
    expect(describeObject(base)).toBe('DestinationRule prod/reviews');
  });
});
