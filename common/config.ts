/**
 * Configuration files: YAML (or JSON, which is YAML) validated by a zod schema with unknown keys
 * rejected. Errors name the file and the path of the field at fault.
 */
import * as fs from 'node:fs';
import * as YAML from 'yaml';
import { z } from 'zod';
import { ConfigError } from './errors';
import { parseDuration } from './duration';

/** A zod string field holding a duration; parses to milliseconds. */
export const zDuration = z.string().transform((s, ctx) => {
  try {
    const ms = parseDuration(s);
    if (ms <= 0) throw new Error(`duration ${JSON.stringify(s)} must be positive`);
    return ms;
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
    return z.NEVER;
  }
});

/** `HOST:PORT` (IPv6 in brackets); port 0 allowed where a server may pick one. */
export const zHostPort = z.string().refine(s => parseHostPort(s) !== undefined, {
  message: 'want HOST:PORT (e.g. 127.0.0.1:15020, [::1]:15020)',
});

/** The most worker processes the proxy's `concurrency` may ask for. */
export const MAX_CONCURRENCY = 256;

const CONCURRENCY_MESSAGE = `want a number of worker processes from 0 to ${MAX_CONCURRENCY} (0: one per core)`;

/** The proxy's worker processes (`sail proxy --concurrency`): 1 runs none, 0 one per core. */
export const zConcurrency = z
  .number({ message: CONCURRENCY_MESSAGE })
  .int({ message: CONCURRENCY_MESSAGE })
  .min(0, { message: CONCURRENCY_MESSAGE })
  .max(MAX_CONCURRENCY, { message: CONCURRENCY_MESSAGE });

/** Splits HOST:PORT; undefined when malformed. */
export function parseHostPort(s: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(s);
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  return { host: (m[1] ?? m[2]) as string, port };
}

/** Formats a zod error as `FILE: field.path: message` lines. */
export function formatZodError(source: string, err: z.ZodError): string {
  return err.issues
    .map(issue => {
      const where = issue.path.length ? issue.path.map(String).join('.') : '(top level)';
      let msg = issue.message;
      if (issue.code === 'unrecognized_keys')
        msg = `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map(k => JSON.stringify(k)).join(', ')}`;
      return `${source}: ${where}: ${msg}`;
    })
    .join('\n');
}

/**
 * Parses YAML text and validates it.
 * @throws ConfigError naming `source`, the line for syntax errors, and the field path otherwise
 */
export function parseConfig<S extends z.ZodType>(
  source: string,
  text: string,
  schema: S,
): z.output<S> {
  let doc: unknown;
  try {
    const parsed = YAML.parseDocument(text, { uniqueKeys: true });
    const [first] = parsed.errors;
    if (first) throw first;
    doc = parsed.toJS() ?? {};
  } catch (err) {
    throw new ConfigError(
      `${source}: invalid YAML: ${(err as Error).message.split('\n')[0]?.replace(/:$/, '')}`,
      { cause: err },
    );
  }
  const result = schema.safeParse(doc);
  if (!result.success) throw new ConfigError(formatZodError(source, result.error));
  return result.data;
}

/**
 * Reads and validates a configuration file.
 * @throws ConfigError when it cannot be read or is invalid
 */
export function loadConfigFile<S extends z.ZodType>(file: string, schema: S): z.output<S> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(
      `cannot read config file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      { cause: err },
    );
  }
  return parseConfig(file, text, schema);
}
