/**
 * The proxy's native addon (`original-dst.c`, built by `scripts/build-native.js` into
 * `build/proxy/native/sail_native.node`, into `proxy/native/build/Release/` when run from the
 * sources, and installed in the resource directory beside the single executable). It reads
 * SO_ORIGINAL_DST, which Node cannot: only capture mode needs it, so it is loaded lazily on first
 * use and explicit mode runs without it.
 */
import * as fs from 'node:fs';
import type * as net from 'node:net';
import * as path from 'node:path';
import { RESOURCE_LAYOUT, resourceDir } from '../../common/resources';

/** Where a redirected connection was going before iptables sent it to the proxy. */
export interface OriginalDst {
  readonly address: string;
  readonly port: number;
  readonly family: 4 | 6;
}

interface NativeAddon {
  getOriginalDst(fd: number): OriginalDst | undefined;
}

/** The addon's file name, in the places a build leaves it, nearest first. */
const ADDON_FILE = 'sail_native.node';
const RESOURCES = resourceDir();
const ADDON_CANDIDATES = [
  // The single executable's resource directory (/usr/lib/sail/), or SAIL_RESOURCE_DIR.
  ...(RESOURCES !== undefined ? [path.join(RESOURCES, RESOURCE_LAYOUT.nativeAddon)] : []),
  // build/proxy/native/ (copied there by scripts/build-native.js).
  path.join(__dirname, ADDON_FILE),
  // proxy/native/ itself, when running the TypeScript sources (jest): node-gyp's output.
  path.join(__dirname, 'build', 'Release', ADDON_FILE),
];

/** The loaded addon, or the reason it could not be loaded (remembered: loading is tried once). */
let addon: NativeAddon | undefined;
let loadError: Error | undefined;

function load(): NativeAddon {
  if (addon) return addon;
  if (loadError) throw loadError;
  const file = nativeAddonPath();
  if (file === undefined) {
    loadError = new Error(
      `native addon ${ADDON_FILE} not found (looked in ${ADDON_CANDIDATES.join(', ')}); ` +
        'capture mode needs it: run `npm run build` on Linux with Node headers installed, ' +
        'or use traffic mode explicit',
    );
    throw loadError;
  }
  try {
    const mod = { exports: {} as Partial<NativeAddon> };
    process.dlopen(mod, file);
    if (typeof mod.exports.getOriginalDst !== 'function') {
      throw new Error(`native addon ${file} does not export getOriginalDst`);
    }
    addon = mod.exports as NativeAddon;
    return addon;
  } catch (err: unknown) {
    loadError = new Error(`failed to load native addon ${file}`, { cause: err });
    throw loadError;
  }
}

/**
 * Loads the addon now (capture mode calls this at start so a missing addon is reported before any
 * connection arrives). Idempotent.
 * @throws Error naming the file and what to do when the addon is missing or cannot be loaded
 */
export function loadNativeAddon(): void {
  load();
}

/**
 * The addon file that {@link getOriginalDst} loads (or would load), undefined when none is built.
 * @internal for tests that load it in a child process
 */
export function nativeAddonPath(): string | undefined {
  return ADDON_CANDIDATES.find(f => fs.existsSync(f));
}

/** Whether the addon can be loaded (tests skip on machines without it). */
export function isNativeAddonAvailable(): boolean {
  try {
    load();
    return true;
  } catch {
    // The reason is kept and thrown by the next call that needs the addon.
    return false;
  }
}

/**
 * The original destination of the connection on file descriptor `fd` (getsockopt SO_ORIGINAL_DST,
 * or IP6T_SO_ORIGINAL_DST for IPv6 sockets). Undefined when the connection was not redirected (no
 * conntrack entry, or no conntrack at all).
 * @throws Error when the addon is missing, or when getsockopt fails otherwise (a bad fd)
 */
export function getOriginalDst(fd: number): OriginalDst | undefined {
  return load().getOriginalDst(fd);
}

/** The file descriptor of a connected `net.Socket` (Node keeps it on the libuv handle); undefined
 * when the socket has no OS handle (closed, or not a TCP socket). */
export function socketFd(socket: net.Socket): number | undefined {
  const handle = (socket as unknown as { _handle?: { fd?: number } | null })._handle;
  const fd = handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}
