/**
 * Envoy's xDS v3 API, loaded with protobufjs from the .proto files the @grpc/grpc-js-xds package
 * ships (DESIGN §3.5: never copied into this repo). Pilot encodes resources with it; the proxy and
 * tests decode them. The proxy loads a pruned copy instead ({@link loadProxyEnvoyRoot}): a JSON
 * descriptor of only the types it decodes, which the build derives from the same .proto files.
 *
 * Objects handed to `fromObject` use protobufjs' conventions: camelCase field names, `Any` as
 * `{ '@type': 'type.googleapis.com/<name>', ...fields }`, Durations as `{ seconds, nanos }`, enums
 * by name.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as protobuf from 'protobufjs';
import { RESOURCE_LAYOUT, resourceDir } from '../common/resources';

/** The Envoy protos Sail uses: ADS, the four resource types and the extensions they reference. */
export const ENVOY_PROTO_FILES = [
  'envoy/service/discovery/v3/ads.proto',
  'envoy/config/listener/v3/listener.proto',
  'envoy/config/route/v3/route.proto',
  'envoy/config/cluster/v3/cluster.proto',
  'envoy/config/endpoint/v3/endpoint.proto',
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
  'envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto',
  'envoy/extensions/filters/http/router/v3/router.proto',
  'envoy/extensions/filters/http/fault/v3/fault.proto',
  'envoy/extensions/filters/http/cors/v3/cors.proto',
  'envoy/extensions/filters/http/rbac/v3/rbac.proto',
  'envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto',
  'envoy/extensions/filters/listener/original_dst/v3/original_dst.proto',
  'envoy/extensions/filters/listener/http_inspector/v3/http_inspector.proto',
  'envoy/extensions/filters/network/rbac/v3/rbac.proto',
  'envoy/extensions/transport_sockets/tls/v3/tls.proto',
  'envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.proto',
  'envoy/extensions/upstreams/http/v3/http_protocol_options.proto',
  'envoy/extensions/load_balancing_policies/ring_hash/v3/ring_hash.proto',
  'envoy/extensions/load_balancing_policies/round_robin/v3/round_robin.proto',
  'envoy/extensions/load_balancing_policies/least_request/v3/least_request.proto',
  'envoy/extensions/load_balancing_policies/random/v3/random.proto',
  'envoy/service/status/v3/csds.proto',
];

/**
 * Where @grpc/grpc-js-xds keeps its copies of the Envoy, xDS, googleapis and validate protos (the
 * single executable's resource directory holds copies of them).
 */
export function envoyProtoDirs(): string[] {
  const res = resourceDir();
  if (res !== undefined) return RESOURCE_LAYOUT.envoyProtos.map(d => path.join(res, d));
  const pkg = path.dirname(require.resolve('@grpc/grpc-js-xds/package.json'));
  return ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map(d =>
    path.join(pkg, 'deps', d),
  );
}

let root: protobuf.Root | undefined;
let discoveryRoot: protobuf.Root | undefined;

/** Loads and resolves `files` (and what they import) from the Envoy proto directories. */
function loadRoot(files: readonly string[]): protobuf.Root {
  const dirs = envoyProtoDirs();
  // protobufjs ships the well-known types (google/protobuf/*.proto) itself.
  const res = resourceDir();
  const wellKnown =
    res !== undefined
      ? path.join(res, RESOURCE_LAYOUT.wellKnownProtos)
      : path.dirname(require.resolve('protobufjs/package.json'));
  const r = new protobuf.Root();
  r.resolvePath = (_origin, target) => {
    if (path.isAbsolute(target)) return target;
    if (target.startsWith('google/protobuf/')) {
      const p = path.join(wellKnown, target);
      if (fs.existsSync(p)) return p;
    }
    for (const d of dirs) {
      const p = path.join(d, target);
      if (fs.existsSync(p)) return p;
    }
    return target;
  };
  const loaded = r.loadSync([...files], { keepCase: false });
  loaded.resolveAll();
  return loaded;
}

/** The loaded and resolved Envoy API (cached; ~150 ms the first time). */
export function loadEnvoyRoot(): protobuf.Root {
  root ??= loadRoot(ENVOY_PROTO_FILES);
  return root;
}

/** A message type of the Envoy API by full name, e.g. `envoy.config.cluster.v3.Cluster`. */
export function envoyType(fullName: string): protobuf.Type {
  return loadEnvoyRoot().lookupType(fullName);
}

/**
 * A message of `envoy/service/discovery/v3/discovery.proto` alone (DiscoveryRequest,
 * DiscoveryResponse, the Delta pair), for clients that carry resources of their own type and never
 * decode Envoy's: the node agent's name table client. About 2 MB of heap and 70 ms, against
 * 11 MB and 470 ms for the whole API.
 */
export function discoveryType(fullName: string): protobuf.Type {
  discoveryRoot ??= loadRoot(['envoy/service/discovery/v3/discovery.proto']);
  return discoveryRoot.lookupType(fullName);
}

// ---------------------------------------------------------------------------------------------
// The proxy's pruned descriptor

/**
 * The types the proxy's descriptor keeps, with everything their fields reference: every message
 * of the packages the ADS wire, the four resource types and their extensions' typed configs live
 * in, and the well-known types. A type inside a `google.protobuf.Any` is unpacked only when the
 * root knows it, so these are the types pilot may put in an Any (a filter's `typed_config`,
 * `typed_per_filter_config`, `typed_extension_protocol_options`, a load balancing policy).
 * Dropped: admin and CSDS messages, access log data, validate rules, annotations and
 * descriptor.proto (only the options use them).
 */
function isProxyDescriptorSeed(type: protobuf.Type): boolean {
  if (/(^|\/)google\/protobuf\/descriptor\.proto$/.test(type.filename ?? '')) return false;
  return /^\.(envoy\.(config\.(cluster|core|endpoint|listener|route)\.v3|extensions|service\.discovery\.v3)\.|google\.protobuf\.)/.test(
    type.fullName,
  );
}

/** The full names (no leading dot) of the types and enums the proxy's descriptor holds. */
function proxyDescriptorTypes(full: protobuf.Root): Set<string> {
  const keep = new Set<protobuf.ReflectionObject>();
  const pending: protobuf.ReflectionObject[] = [];
  const collect = (ns: protobuf.NamespaceBase) => {
    for (const o of ns.nestedArray) {
      if (o instanceof protobuf.Type && isProxyDescriptorSeed(o)) pending.push(o);
      if (o instanceof protobuf.Namespace || o instanceof protobuf.Type) collect(o);
    }
  };
  collect(full);
  for (let o = pending.pop(); o !== undefined; o = pending.pop()) {
    if (keep.has(o)) continue;
    keep.add(o);
    if (!(o instanceof protobuf.Type)) continue;
    for (const f of o.fieldsArray) {
      f.resolve();
      if (f.resolvedType) pending.push(f.resolvedType);
    }
  }
  return new Set([...keep].map(o => o.fullName.slice(1)));
}

type JsonObject = Record<string, unknown>;

function isJsonObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * `options` without the custom ones (`(validate.rules)`, `(udpa.annotations.*)`, …: only protoc
 * plugins and Envoy's validation read them); protobufjs' own (`packed`, `proto3_optional`,
 * `deprecated`) stay, as they can change the encoding. Undefined when none is left.
 */
function builtinOptions(options: unknown): JsonObject | undefined {
  if (!isJsonObject(options)) return undefined;
  const kept = Object.entries(options).filter(([k]) => !k.startsWith('('));
  return kept.length > 0 ? Object.fromEntries(kept) : undefined;
}

/** One type, enum, field or oneof of `toJSON()` without comments and custom options. */
function stripped(json: JsonObject): JsonObject {
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(json)) {
    if (k === 'comment' || k === 'comments' || k === 'nested') continue;
    if (k === 'options') {
      const o = builtinOptions(v);
      if (o) out[k] = o;
    } else if (k === 'valuesOptions' && isJsonObject(v)) {
      const vo = Object.entries(v)
        .map(([name, o]) => [name, builtinOptions(o)] as const)
        .filter(([, o]) => o !== undefined);
      if (vo.length > 0) out[k] = Object.fromEntries(vo);
    } else if ((k === 'fields' || k === 'oneofs') && isJsonObject(v)) {
      out[k] = Object.fromEntries(
        Object.entries(v).map(([name, f]) => [name, isJsonObject(f) ? stripped(f) : f]),
      );
    } else out[k] = v;
  }
  return out;
}

/**
 * The `nested` of `ns` (a namespace, type or enum of `toJSON()` named `prefix`) with only the kept
 * types and enums and the namespaces that lead to them; undefined when nothing is left. A type that
 * is not kept but holds a kept one becomes a plain namespace, so full names do not change.
 */
function prunedNested(ns: JsonObject, prefix: string, keep: ReadonlySet<string>) {
  if (!isJsonObject(ns.nested)) return undefined;
  const out: JsonObject = {};
  for (const [name, child] of Object.entries(ns.nested)) {
    if (!isJsonObject(child)) continue;
    const full = prefix ? `${prefix}.${name}` : name;
    const nested = prunedNested(child, full, keep);
    if (keep.has(full)) out[name] = { ...stripped(child), ...(nested ? { nested } : {}) };
    else if (nested) out[name] = { nested };
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/**
 * The proxy's Envoy descriptor: `root.toJSON()` of the full API pruned to the types
 * {@link isProxyDescriptorSeed} selects and what they reference, without comments and custom
 * options. `protobuf.Root.fromJSON` of it decodes those types exactly as the full API does, at a
 * fraction of the memory and load time (BENCHMARKS.md, proxy "Memory").
 * scripts/gen-envoy-descriptor.js writes it into build/ at build time.
 */
export function buildProxyDescriptor(full: protobuf.Root = loadEnvoyRoot()): protobuf.INamespace {
  const nested = prunedNested(full.toJSON() as JsonObject, '', proxyDescriptorTypes(full));
  return { nested: nested as protobuf.INamespace['nested'] };
}

/**
 * Where the proxy's descriptor is read from: the resource directory of the single executable, else
 * beside this module (build/api/ once compiled; from sources, under jest, there is none).
 */
export function proxyDescriptorPath(): string {
  const res = resourceDir();
  return res !== undefined
    ? path.join(res, RESOURCE_LAYOUT.envoyProxyDescriptor)
    : path.join(__dirname, RESOURCE_LAYOUT.envoyProxyDescriptor);
}

/** The proxy's Envoy API and where it came from. */
export interface ProxyEnvoyRoot {
  readonly root: protobuf.Root;
  /** `descriptor`: the build's pruned descriptor; `protos`: the .proto files, parsed. */
  readonly source: 'descriptor' | 'protos';
}

let proxyRoot: ProxyEnvoyRoot | undefined;

/**
 * The Envoy API as the proxy loads it (cached): the pruned descriptor when the build wrote one
 * (~60 ms, ~7 MB less RSS than parsing), else the full API parsed from the .proto files (running
 * from sources: jest). Both decode the proxy's types alike (api/envoy.test.ts).
 */
export function loadProxyEnvoyRoot(): ProxyEnvoyRoot {
  if (proxyRoot) return proxyRoot;
  const file = proxyDescriptorPath();
  let json: string | undefined;
  try {
    json = fs.readFileSync(file, 'utf8');
  } catch (err) {
    // No descriptor (running from sources): parse the .proto files instead; any other error is real.
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  proxyRoot =
    json === undefined
      ? { root: loadEnvoyRoot(), source: 'protos' }
      : {
          root: protobuf.Root.fromJSON(JSON.parse(json) as protobuf.INamespace),
          source: 'descriptor',
        };
  return proxyRoot;
}

/** A message type of the proxy's Envoy API ({@link loadProxyEnvoyRoot}) by full name. */
export function proxyEnvoyType(fullName: string): protobuf.Type {
  return loadProxyEnvoyRoot().root.lookupType(fullName);
}

/** toObject options that give JSON like Envoy's config_dump: enums by name, Anys unpacked. */
export const ENVOY_JSON_OPTIONS: protobuf.IConversionOptions = {
  enums: String,
  longs: String,
  bytes: String,
  json: true,
};

/** Converts a `google.protobuf.Struct` as protobufjs decodes it (fields → kinds) to plain JSON. */
export function structToJson(struct: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const fields = (struct as { fields?: Record<string, unknown> } | undefined)?.fields ?? {};
  for (const [k, v] of Object.entries(fields)) out[k] = valueToJson(v);
  return out;
}

function valueToJson(v: unknown): unknown {
  const value = v as Record<string, unknown> | undefined;
  if (!value) return null;
  if ('stringValue' in value) return value.stringValue;
  if ('numberValue' in value) return value.numberValue;
  if ('boolValue' in value) return value.boolValue;
  if ('structValue' in value) return structToJson(value.structValue);
  if ('listValue' in value) {
    const list = value.listValue as { values?: unknown[] } | undefined;
    return (list?.values ?? []).map(valueToJson);
  }
  return null;
}

/** The inverse of {@link structToJson}, for clients building node metadata. */
export function jsonToStruct(json: Record<string, unknown>): { fields: Record<string, unknown> } {
  const fields: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(json)) fields[k] = jsonToValue(v);
  return { fields };
}

function jsonToValue(v: unknown): unknown {
  if (v === null || v === undefined) return { nullValue: 'NULL_VALUE' };
  if (typeof v === 'string') return { stringValue: v };
  if (typeof v === 'number') return { numberValue: v };
  if (typeof v === 'boolean') return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(jsonToValue) } };
  if (typeof v === 'object') return { structValue: jsonToStruct(v as Record<string, unknown>) };
  return { stringValue: JSON.stringify(v) };
}
