/**
 * Facts about the host for its registration (`sail status` and debugging on pilot's side): the
 * operating system, kernel, CPUs, memory and host name.
 *
 * Read with node:os and /etc/os-release rather than `systeminformation`: its `osInfo()` (the only
 * call that gives the distribution) runs `hostname -f`, `echo $LANG` and `date` with execSync,
 * which measured 20-37 ms of blocked event loop per call here, and `hostname -f` resolves the host
 * name with no timeout: with a dead resolver the whole agent (its DNS server, status endpoint and
 * streams) would freeze for the resolver's timeouts. /etc/os-release is the file it parses anyway.
 */
import { readFile } from 'node:fs/promises';
import * as os from 'node:os';

/** What a host reports about itself (sail.pilot.v1.HostFacts). */
export interface HostFacts {
  /** Operating system, e.g. `Debian GNU/Linux 12 (bookworm)`. */
  readonly os: string;
  /** Kernel release, e.g. `6.1.0-18-amd64`. */
  readonly kernel: string;
  /** Logical CPUs. */
  readonly cpus: number;
  /** Physical memory in bytes. */
  readonly memoryBytes: number;
  /** The host's own host name (may differ from the node name). */
  readonly hostname: string;
}

/** Where the distribution names itself (os-release(5)); /usr/lib/os-release is the fallback. */
export const OS_RELEASE_FILES = ['/etc/os-release', '/usr/lib/os-release'] as const;

/** Pilot's limit on each text fact (bytes). */
const MAX_FACT_BYTES = 256;

/**
 * The operating system's name from os-release(5) text: PRETTY_NAME, else NAME and VERSION, else
 * undefined. Values may be quoted with `"` or `'`.
 * @internal exported for tests
 */
export function parseOsRelease(text: string): string | undefined {
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Z0-9_]+)=(.*)$/.exec(line);
    if (!m) continue;
    let value = (m[2] as string).trim();
    if (/^(["']).*\1$/.test(value)) value = value.slice(1, -1);
    fields.set(m[1] as string, value.replace(/\\(.)/g, '$1'));
  }
  const pretty = fields.get('PRETTY_NAME');
  if (pretty) return pretty;
  const name = fields.get('NAME');
  if (!name) return undefined;
  const version = fields.get('VERSION') ?? fields.get('VERSION_ID');
  return version ? `${name} ${version}` : name;
}

/** Cuts `s` to at most `max` bytes of UTF-8 without splitting a character. */
function truncateBytes(s: string, max: number): string {
  if (Buffer.byteLength(s) <= max) return s;
  let out = s;
  while (Buffer.byteLength(out) > max) out = out.slice(0, -1);
  return out;
}

async function osName(): Promise<string> {
  for (const file of OS_RELEASE_FILES) {
    try {
      const name = parseOsRelease(await readFile(file, 'utf8'));
      if (name) return name;
    } catch {
      // Missing or unreadable: try the next file, then fall back to the kernel's name below.
    }
  }
  return `${os.type()} ${os.release()}`;
}

let cached: Promise<HostFacts> | undefined;

/**
 * The host's facts, read once per process and cached (they do not change while it runs; a
 * resized VM restarts the agent with it). Never rejects: a missing os-release gives the kernel's
 * name instead. Takes well under a millisecond of CPU plus one small file read.
 */
export function hostFacts(): Promise<HostFacts> {
  cached ??= osName().then(name => ({
    os: truncateBytes(name, MAX_FACT_BYTES),
    kernel: truncateBytes(os.release(), MAX_FACT_BYTES),
    cpus: os.cpus().length,
    memoryBytes: os.totalmem(),
    hostname: truncateBytes(os.hostname(), MAX_FACT_BYTES),
  }));
  return cached;
}
