import * as path from 'node:path';
import {
  isSingleExecutable,
  RESOURCE_DIR_ENV,
  RESOURCE_LAYOUT,
  resourceDir,
  resourcePath,
} from './resources';

describe('resourceDir', () => {
  const none = () => false;

  it('is undefined when running from a checkout without SAIL_RESOURCE_DIR', () => {
    expect(resourceDir({}, false, '/usr/bin/node', none)).toBeUndefined();
  });

  it('takes SAIL_RESOURCE_DIR first, made absolute, in or out of the single executable', () => {
    const rel = { [RESOURCE_DIR_ENV]: 'res' };
    expect(resourceDir(rel, false, '/usr/bin/node', none)).toBe(path.resolve('res'));
    const abs = { [RESOURCE_DIR_ENV]: '/opt/sail/lib' };
    expect(resourceDir(abs, true, '/usr/bin/sail', none)).toBe('/opt/sail/lib');
  });

  it('is lib/sail beside the bin directory of an installed binary', () => {
    const exists = (d: string) => d === '/usr/lib/sail';
    expect(resourceDir({}, true, '/usr/bin/sail', exists)).toBe('/usr/lib/sail');
    // Neither exists: the installed layout, so that errors name /usr/lib/sail.
    expect(resourceDir({}, true, '/usr/bin/sail', none)).toBe('/usr/lib/sail');
  });

  it('is lib/sail in the binary directory for the build output (dist/sail, dist/lib/sail)', () => {
    const exists = (d: string) => d === '/src/dist/lib/sail';
    expect(resourceDir({}, true, '/src/dist/sail', exists)).toBe('/src/dist/lib/sail');
  });

  it('prefers the installed layout when both exist', () => {
    const exists = () => true;
    expect(resourceDir({}, true, '/usr/bin/sail', exists)).toBe('/usr/lib/sail');
  });
});

describe('resourcePath', () => {
  const saved = process.env[RESOURCE_DIR_ENV];
  afterEach(() => {
    if (saved === undefined) delete process.env.SAIL_RESOURCE_DIR;
    else process.env[RESOURCE_DIR_ENV] = saved;
  });

  it('joins the parts under the resource directory', () => {
    process.env[RESOURCE_DIR_ENV] = '/usr/lib/sail';
    expect(resourcePath(RESOURCE_LAYOUT.nativeAddon)).toBe('/usr/lib/sail/sail_native.node');
    expect(resourcePath(RESOURCE_LAYOUT.etcdProtos, 'rpc.proto')).toBe(
      '/usr/lib/sail/proto/etcd3/rpc.proto',
    );
  });

  it('names SAIL_RESOURCE_DIR when there is no resource directory', () => {
    delete process.env.SAIL_RESOURCE_DIR;
    expect(() => resourcePath('proto')).toThrow(
      /no resource directory for proto: set SAIL_RESOURCE_DIR/,
    );
  });
});

describe('isSingleExecutable', () => {
  it('is false under jest (plain node)', () => {
    expect(isSingleExecutable()).toBe(false);
  });
});

describe('RESOURCE_LAYOUT', () => {
  it('keeps every proto include root under proto/', () => {
    const dirs = [
      RESOURCE_LAYOUT.sailProtos,
      ...RESOURCE_LAYOUT.envoyProtos,
      RESOURCE_LAYOUT.wellKnownProtos,
      RESOURCE_LAYOUT.etcdProtos,
    ];
    for (const d of dirs) expect(d === 'proto' || d.startsWith(`proto${path.sep}`)).toBe(true);
    expect(RESOURCE_LAYOUT.envoyProtos.map(d => path.basename(d))).toEqual([
      'envoy-api',
      'xds',
      'googleapis',
      'protoc-gen-validate',
    ]);
  });
});
