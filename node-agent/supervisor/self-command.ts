/** How the node agent runs another `sail` subcommand (the proxy) with its own binary. */
import { isSingleExecutable } from '../../common/resources';

export { isSingleExecutable };

/**
 * `NODE_OPTIONS` the node agent starts the proxy with unless `proxy.nodeOptions` says otherwise.
 * V8's young generation (16 MB semi-spaces by default) is most of what a busy proxy's memory grows
 * by; 2 MB semi-spaces keep a proxy at 1,000 requests/s near 80 MB RSS instead of 110 MB with no
 * measurable CPU cost (BENCHMARKS.md, proxy "Memory"). bench/proxy.ts starts its proxies with it too.
 */
export const DEFAULT_PROXY_NODE_OPTIONS = '--max-semi-space-size=2';

/** Environment variable naming the `sail` to run instead of this process's own. */
export const SAIL_BINARY_ENV = 'SAIL_BINARY';

/**
 * The command that runs this same `sail`: `[node, .../cli/sail.js]` when running the JS CLI,
 * `[/usr/bin/sail]` inside the single executable. `SAIL_BINARY` overrides it: a path ending in
 * `.js` (or `.cjs`) is run with this Node, anything else is run as an executable. Append the
 * subcommand and its flags (`proxy --config FILE`).
 */
export function selfCommand(
  env: NodeJS.ProcessEnv = process.env,
  sea: boolean = isSingleExecutable(),
): string[] {
  const override = env[SAIL_BINARY_ENV];
  if (override) return /\.c?js$/.test(override) ? [process.execPath, override] : [override];
  if (sea) return [process.execPath];
  const script = process.argv[1];
  return script ? [process.execPath, script] : [process.execPath];
}
