/** The `--key value` (repeatable; a bare `--flag` is "true") arguments of the test and demo apps. */
export type Args = Map<string, string[]>;

/** Parses `--key value` pairs; anything else is an error. */
export function parseArgs(argv: readonly string[]): Args {
  const args: Args = new Map();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const next = argv[i + 1];
    const value = next === undefined || next.startsWith('--') ? 'true' : (i++, next);
    args.set(a.slice(2), [...(args.get(a.slice(2)) ?? []), value]);
  }
  return args;
}

/** The first value of `--k`, or `dflt`. */
export const one = (args: Args, k: string, dflt?: string): string | undefined =>
  args.get(k)?.[0] ?? dflt;
