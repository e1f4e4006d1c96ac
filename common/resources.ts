/**
 * Files Sail reads at run time besides its code: the .proto sources and the proxy's native addon.
 * From a checkout they come from node_modules/ and build/ (each module knows where). The single
 * executable (`dist/sail`, installed as /usr/bin/sail) cannot read those, so they are installed
 * beside it in a resource directory (/usr/lib/sail/), laid out as {@link RESOURCE_LAYOUT} says.
 * `scripts/package/sea.js` builds that directory from this same layout.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Environment variable naming the resource directory (overrides where the binary looks). */
export const RESOURCE_DIR_ENV = 'SAIL_RESOURCE_DIR';

/** Paths inside the resource directory, relative to it. */
export const RESOURCE_LAYOUT = {
  /** Sail's own protos: the include root of `sail/ca/v1/ca.proto` and the others. */
  sailProtos: 'proto',
  /**
   * Envoy's API and what it imports, as @grpc/grpc-js-xds ships them in its deps/ folder: one
   * include root per folder, searched in this order.
   */
  envoyProtos: ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map(d =>
    path.join('proto', d),
  ),
  /** protobufjs' copies of google/protobuf/*.proto (those it has no built-in definition of). */
  wellKnownProtos: path.join('proto', 'protobufjs'),
  /** etcd's rpc.proto, kv.proto and auth.proto (the etcd3 client loads them when imported). */
  etcdProtos: path.join('proto', 'etcd3'),
  /**
   * The proxy's pruned Envoy descriptor (protobufjs JSON of only the types it decodes), written to
   * build/api/ by scripts/gen-envoy-descriptor.js; the proxy parses the .proto files when it is
   * missing.
   */
  envoyProxyDescriptor: 'envoy-proxy.json',
  /** The proxy's native addon (SO_ORIGINAL_DST), built by scripts/build-native.js. */
  nativeAddon: 'sail_native.node',
} as const;

/** True inside a Node single executable application (`node:sea`); false where Node lacks it. */
export function isSingleExecutable(): boolean {
  try {
    // getBuiltinModule and node:sea are both newer than some Node 20 releases: guard each.
    const getBuiltin = (process as { getBuiltinModule?: (id: string) => unknown }).getBuiltinModule;
    const sea = getBuiltin?.call(process, 'node:sea') as { isSea?: () => boolean } | undefined;
    return sea?.isSea?.() ?? false;
  } catch {
    return false;
  }
}

/**
 * The resource directory: `SAIL_RESOURCE_DIR` when set, else, inside the single executable,
 * `lib/sail/` beside the binary's directory (installed: `/usr/bin/sail` → `/usr/lib/sail`) or, when
 * that does not exist, `lib/sail/` in the binary's own directory (the build output: `dist/sail` →
 * `dist/lib/sail`); undefined when running from a checkout (node_modules/ and build/ are used).
 */
export function resourceDir(
  env: NodeJS.ProcessEnv = process.env,
  sea: boolean = isSingleExecutable(),
  execPath: string = process.execPath,
  exists: (dir: string) => boolean = fs.existsSync,
): string | undefined {
  const override = env[RESOURCE_DIR_ENV];
  if (override) return path.resolve(override);
  if (!sea) return undefined;
  const installed = path.join(path.dirname(execPath), '..', 'lib', 'sail');
  const beside = path.join(path.dirname(execPath), 'lib', 'sail');
  return !exists(installed) && exists(beside) ? beside : installed;
}

/**
 * A path inside the resource directory, e.g. `resourcePath(RESOURCE_LAYOUT.nativeAddon)`.
 * @throws Error naming SAIL_RESOURCE_DIR when there is no resource directory (running from a
 * checkout: callers use their own paths then)
 */
export function resourcePath(...parts: string[]): string {
  const dir = resourceDir();
  if (dir === undefined) {
    throw new Error(
      `no resource directory for ${path.join(...parts)}: set ${RESOURCE_DIR_ENV} ` +
        '(the single executable uses lib/sail/ beside its bin/ directory)',
    );
  }
  return path.join(dir, ...parts);
}
