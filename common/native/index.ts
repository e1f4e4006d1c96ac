/**
 * Sail's native addon (`sail-native.c`, built by `scripts/build-native.js` into
 * `build/common/native/sail_native.node`, into `common/native/build/Release/` when run from the
 * sources, and installed in the resource directory beside the single executable): the socket calls
 * Node has no API for. The proxy reads SO_ORIGINAL_DST of redirected connections; the node agent
 * creates the IP_TRANSPARENT listening socket TPROXY capture needs and hands it to the proxy. Only
 * capture mode needs the addon, so it is loaded lazily on first use and explicit mode runs without
 * it.
 */
import * as fs from 'node:fs';
import type * as net from 'node:net';
import * as path from 'node:path';
import { RESOURCE_LAYOUT, resourceDir } from '../resources';

/** Where a redirected connection was going before iptables sent it to the proxy. */
export interface OriginalDst {
  readonly address: string;
  readonly port: number;
  readonly family: 4 | 6;
}

interface NativeAddon {
  getOriginalDst(fd: number): OriginalDst | undefined;
  transparentListen(host: string, port: number, backlog: number): number;
  transparentSocket(host: string, mark: number): number;
  dupFd(fd: number): number;
  closeFd(fd: number): void;
}

/** The functions the addon must export (an older build lacks the socket ones). */
const ADDON_FUNCTIONS = [
  'getOriginalDst',
  'transparentListen',
  'transparentSocket',
  'dupFd',
  'closeFd',
] as const;

/** The addon's file name, in the places a build leaves it, nearest first. */
const ADDON_FILE = 'sail_native.node';
const RESOURCES = resourceDir();
const ADDON_CANDIDATES = [
  // The single executable's resource directory (/usr/lib/sail/), or SAIL_RESOURCE_DIR.
  ...(RESOURCES !== undefined ? [path.join(RESOURCES, RESOURCE_LAYOUT.nativeAddon)] : []),
  // build/common/native/ (copied there by scripts/build-native.js).
  path.join(__dirname, ADDON_FILE),
  // common/native/ itself, when running the TypeScript sources (jest): node-gyp's output.
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
    const missing = ADDON_FUNCTIONS.filter(f => typeof mod.exports[f] !== 'function');
    if (missing.length > 0) {
      throw new Error(
        `native addon ${file} does not export ${missing.join(', ')} (built from older sources: run \`npm run build\`)`,
      );
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

/**
 * A new listening TCP socket on `host`:`port` with IP_TRANSPARENT (an IPv4 host) or
 * IPV6_TRANSPARENT (an IPv6 host; dual-stack, so `::` also takes IPv4 connections), SO_REUSEADDR
 * and close-on-exec, as TPROXY needs: its file descriptor, which the caller owns (pass it to a
 * child with `spawn`'s `stdio`, close it with {@link closeFd}).
 * @throws Error with code `ERRNO_<n>` naming the failed call: EPERM without CAP_NET_ADMIN,
 *   EADDRINUSE when the port is taken
 */
export function transparentListen(host: string, port: number, backlog = 511): number {
  return load().transparentListen(host, port, backlog);
}

/**
 * A new, unconnected TCP socket bound to `host` (port chosen by the kernel) with IP_TRANSPARENT
 * (IPv4) or IPV6_TRANSPARENT (IPv6), so `host` may be another machine's address, and SO_MARK
 * `mark` when it is above 0: the proxy's connection to a local application that keeps the caller's
 * address as its source. Close-on-exec; the caller owns the fd (wrap it in a `net.Socket` with
 * `manualStart` and connect it).
 * @throws Error with code `ERRNO_<n>` naming the failed call: EPERM without CAP_NET_ADMIN
 */
export function transparentSocket(host: string, mark = 0): number {
  return load().transparentSocket(host, mark);
}

/** A close-on-exec duplicate of `fd` (numbered 3 or above). @throws Error for a bad fd */
export function dupFd(fd: number): number {
  return load().dupFd(fd);
}

/** Closes `fd`. @throws Error for a bad fd */
export function closeFd(fd: number): void {
  load().closeFd(fd);
}

/** The file descriptor of a connected `net.Socket` (Node keeps it on the libuv handle); undefined
 * when the socket has no OS handle (closed, or not a TCP socket). */
export function socketFd(socket: net.Socket): number | undefined {
  const handle = (socket as unknown as { _handle?: { fd?: number } | null })._handle;
  const fd = handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}
