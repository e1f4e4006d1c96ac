import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as protobuf from 'protobufjs';
import { RESOURCE_DIR_ENV, RESOURCE_LAYOUT } from '../common/resources';
import { buildProxyDescriptor, ENVOY_JSON_OPTIONS, envoyType, loadEnvoyRoot } from './envoy';
import type * as Envoy from './envoy';

const REPO = path.join(__dirname, '..');

/** What pilot sends a sidecar (proxy/testdata, written by scripts/gen-proxy-testdata.js). */
const SAMPLES = ['sidecar-sample.json', 'sidecar-strict-sample.json'];

const RESOURCE_TYPES: Readonly<Record<string, string>> = {
  Cluster: 'envoy.config.cluster.v3.Cluster',
  ClusterLoadAssignment: 'envoy.config.endpoint.v3.ClusterLoadAssignment',
  Listener: 'envoy.config.listener.v3.Listener',
  RouteConfiguration: 'envoy.config.route.v3.RouteConfiguration',
};

/** The descriptor as the proxy gets it: JSON text written at build time, read with fromJSON. */
function descriptorRoot(): { root: protobuf.Root; text: string } {
  const text = JSON.stringify(buildProxyDescriptor());
  return { root: protobuf.Root.fromJSON(JSON.parse(text) as protobuf.INamespace), text };
}

/** Every type (not enum) name in `root`, without the leading dot. */
function typeNames(root: protobuf.NamespaceBase): string[] {
  const out: string[] = [];
  for (const o of root.nestedArray) {
    if (o instanceof protobuf.Type) out.push(o.fullName.slice(1));
    if (o instanceof protobuf.Namespace || o instanceof protobuf.Type) out.push(...typeNames(o));
  }
  return out;
}

/** `{ sample, kind, name, bytes }` for every resource of the samples, encoded with the full API. */
function sampleResources() {
  const out: { sample: string; type: string; name: string; bytes: Uint8Array }[] = [];
  for (const sample of SAMPLES) {
    const file = path.join(REPO, 'proxy', 'testdata', sample);
    const byKind = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown[]>;
    for (const [kind, list] of Object.entries(byKind)) {
      const type = RESOURCE_TYPES[kind];
      if (type === undefined) throw new Error(`${sample}: unknown kind ${kind}`);
      const T = envoyType(type);
      for (const r of list) {
        const o = r as { name?: string; clusterName?: string };
        out.push({
          sample,
          type,
          name: o.name ?? o.clusterName ?? '',
          bytes: T.encode(T.fromObject(o)).finish(),
        });
      }
    }
  }
  return out;
}

/** How many `google.protobuf.Any` values `json` holds unpacked (`@type`) and packed (`type_url`). */
function countAnys(json: unknown, n = { unpacked: 0, packed: 0 }) {
  if (Array.isArray(json)) for (const v of json) countAnys(v, n);
  else if (typeof json === 'object' && json !== null) {
    if ('@type' in json) n.unpacked++;
    if ('type_url' in json) n.packed++;
    for (const v of Object.values(json)) countAnys(v, n);
  }
  return n;
}

describe('the proxy descriptor', () => {
  const { root: pruned, text } = descriptorRoot();
  const full = loadEnvoyRoot();

  it('decodes every resource pilot sends a sidecar exactly as the full API does', () => {
    const resources = sampleResources();
    expect(resources.length).toBeGreaterThan(40);
    let anys = 0;
    for (const r of resources) {
      const F = full.lookupType(r.type);
      const want = F.toObject(F.decode(r.bytes), ENVOY_JSON_OPTIONS);
      const T = pruned.lookupType(r.type);
      const got = T.toObject(T.decode(r.bytes), ENVOY_JSON_OPTIONS);
      expect({ resource: `${r.sample} ${r.name}`, json: got }).toEqual({
        resource: `${r.sample} ${r.name}`,
        json: want,
      });
      // Every Any unpacked: a typed config missing from the descriptor would stay packed.
      const n = countAnys(got);
      expect({ resource: r.name, packed: n.packed }).toEqual({ resource: r.name, packed: 0 });
      anys += n.unpacked;
    }
    // The samples carry filters, TLS contexts, protocol options and per-route configs in Anys.
    expect(anys).toBeGreaterThan(50);
  });

  it('decodes a DiscoveryResponse of Resource-wrapped resources as the full API does', () => {
    const [first] = sampleResources();
    if (!first) throw new Error('no sample resources');
    const any = (typeUrl: string, value: Uint8Array) => ({ type_url: typeUrl, value });
    const Resource = envoyType('envoy.service.discovery.v3.Resource');
    const wrapped = Resource.encode(
      Resource.fromObject({
        name: first.name,
        version: '3',
        resource: any(`type.googleapis.com/${first.type}`, first.bytes),
      }),
    ).finish();
    const Response = envoyType('envoy.service.discovery.v3.DiscoveryResponse');
    const bytes = Response.encode(
      Response.fromObject({
        versionInfo: '3',
        nonce: 'n',
        typeUrl: `type.googleapis.com/${first.type}`,
        resources: [any('type.googleapis.com/envoy.service.discovery.v3.Resource', wrapped)],
        controlPlane: { identifier: 'pilot' },
      }),
    ).finish();
    const P = pruned.lookupType('envoy.service.discovery.v3.DiscoveryResponse');
    const got = P.toObject(P.decode(bytes), ENVOY_JSON_OPTIONS);
    expect(got).toEqual(Response.toObject(Response.decode(bytes), ENVOY_JSON_OPTIONS));
    expect(JSON.stringify(got)).toContain(`"@type":"type.googleapis.com/${first.type}"`);
  });

  it('encodes the requests the proxy writes to the same bytes as the full API', () => {
    const request = {
      versionInfo: '7',
      responseNonce: 'abc',
      typeUrl: 'type.googleapis.com/envoy.config.cluster.v3.Cluster',
      resourceNames: ['a', 'b'],
      node: {
        id: 'sidecar~10.0.0.1~a~default',
        cluster: 'sail',
        metadata: {
          fields: { LABELS: { structValue: { fields: { app: { stringValue: 'a' } } } } },
        },
        userAgentName: 'sail',
        userAgentVersion: '0.1.0',
      },
      errorDetail: { code: 3, message: 'bad' },
    };
    const want = envoyType('envoy.service.discovery.v3.DiscoveryRequest');
    const got = pruned.lookupType('envoy.service.discovery.v3.DiscoveryRequest');
    expect(Buffer.from(got.encode(got.fromObject(request)).finish()).toString('hex')).toBe(
      Buffer.from(want.encode(want.fromObject(request)).finish()).toString('hex'),
    );
  });

  it('knows every Envoy type the proxy compiler names that the full API knows', () => {
    const dir = path.join(REPO, 'proxy', 'config');
    const named = new Set<string>();
    for (const f of fs.readdirSync(dir).filter(f => f.endsWith('.ts') && !f.endsWith('.test.ts'))) {
      const src = fs.readFileSync(path.join(dir, f), 'utf8');
      for (const m of src.matchAll(/\benvoy\.[a-z_.0-9]+\.v3\.[A-Z][A-Za-z0-9]*/g)) named.add(m[0]);
    }
    const known = [...named].filter(n => full.lookup(n) !== null);
    expect(known.length).toBeGreaterThan(20);
    const have = new Set(typeNames(pruned));
    expect(known.filter(n => !have.has(n))).toEqual([]);
  });

  it('leaves out what the proxy never decodes, comments and custom options', () => {
    const have = new Set(typeNames(pruned));
    const all = typeNames(full);
    expect(have.size).toBeLessThan(all.length);
    for (const gone of [
      'envoy.admin.v3.ListenersConfigDump',
      'envoy.service.status.v3.ClientStatusRequest',
      'validate.FieldRules',
      'google.protobuf.FieldOptions',
    ]) {
      expect(all).toContain(gone);
      expect(have.has(gone)).toBe(false);
    }
    expect(text).not.toContain('(validate.rules)');
    expect(text).not.toContain('(udpa.annotations');
    expect(text).not.toContain('"comment"');
    // Built-in options stay (they can change the encoding).
    expect(text).toContain('"deprecated":true');
  });
});

describe('loadProxyEnvoyRoot', () => {
  const saved = process.env[RESOURCE_DIR_ENV];
  let dir: string | undefined;
  afterEach(() => {
    if (saved === undefined) delete process.env.SAIL_RESOURCE_DIR;
    else process.env[RESOURCE_DIR_ENV] = saved;
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  /** A fresh copy of the module (its root is cached per process). */
  function freshLoad(): Envoy.ProxyEnvoyRoot {
    let out: Envoy.ProxyEnvoyRoot | undefined;
    jest.isolateModules(() => {
      out = jest.requireActual<typeof Envoy>('./envoy').loadProxyEnvoyRoot();
    });
    if (!out) throw new Error('not loaded');
    return out;
  }

  it('reads the descriptor from the resource directory when it is there', () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sail-envoy-'));
    fs.writeFileSync(
      path.join(dir, RESOURCE_LAYOUT.envoyProxyDescriptor),
      JSON.stringify(buildProxyDescriptor()),
    );
    process.env[RESOURCE_DIR_ENV] = dir;
    const { root, source } = freshLoad();
    expect(source).toBe('descriptor');
    expect(root.lookupType('envoy.config.cluster.v3.Cluster').fullName).toBe(
      '.envoy.config.cluster.v3.Cluster',
    );
    expect(root.lookup('envoy.admin.v3.ListenersConfigDump')).toBeNull();
  });

  it('parses the .proto files when there is no descriptor', () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sail-envoy-'));
    // The resource directory of an old build: protos (from node_modules here), no descriptor.
    const xds = path.dirname(require.resolve('@grpc/grpc-js-xds/package.json'));
    for (const d of RESOURCE_LAYOUT.envoyProtos) {
      fs.mkdirSync(path.dirname(path.join(dir, d)), { recursive: true });
      fs.symlinkSync(path.join(xds, 'deps', path.basename(d)), path.join(dir, d));
    }
    fs.symlinkSync(
      path.dirname(require.resolve('protobufjs/package.json')),
      path.join(dir, RESOURCE_LAYOUT.wellKnownProtos),
    );
    process.env[RESOURCE_DIR_ENV] = dir;
    const { root, source } = freshLoad();
    expect(source).toBe('protos');
    expect(root.lookupType('envoy.admin.v3.ListenersConfigDump').name).toBe('ListenersConfigDump');
  });

  it('fails on a descriptor it cannot read rather than hiding it', () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sail-envoy-'));
    fs.writeFileSync(path.join(dir, RESOURCE_LAYOUT.envoyProxyDescriptor), '{"nested":');
    process.env[RESOURCE_DIR_ENV] = dir;
    expect(() => freshLoad()).toThrow(/JSON/);
  });
});
