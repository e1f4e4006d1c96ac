/** Flags every admin verb takes, and table output. */
import type { Argv } from 'yargs';
import { parseDuration } from '../../common/duration';
import { ConfigError, InvalidInputError } from '../../common/errors';
import { parseServiceAccountRef } from '../../common/pki';
import { DEFAULT_ADMIN_DIR, DEFAULT_SERVER } from '../admin-client';

export interface AdminArgs {
  server: string;
  'admin-dir': string;
}

export function adminOptions<T>(y: Argv<T>) {
  return y
    .option('server', {
      type: 'string',
      default: process.env.SAIL_SERVER ?? DEFAULT_SERVER,
      describe:
        'Control plane admin endpoint: unix:///DATA_DIR/admin.sock or https://HOST:15014 (env SAIL_SERVER)',
    })
    .option('admin-dir', {
      type: 'string',
      default: process.env.SAIL_ADMIN_DIR ?? DEFAULT_ADMIN_DIR,
      describe: 'Admin client certificate directory for https (env SAIL_ADMIN_DIR)',
    });
}

/** Prints rows as aligned columns, kubectl style. */
export function printTable(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map(r => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('   ')
      .trimEnd();
  process.stdout.write([line(header), ...rows.map(line)].join('\n') + '\n');
}

/** Checks `--sa NAMESPACE/NAME` values before anything is sent. */
export function validateServiceAccounts(sas: readonly string[]): void {
  for (const sa of sas) {
    try {
      parseServiceAccountRef(sa);
    } catch (err) {
      throw new InvalidInputError(`--sa: ${(err as Error).message}`);
    }
  }
}

/** Parses a duration flag (`30s`, `10m`, `24h`); a bad value is a ConfigError naming the flag (exit 2). */
export function durationFlag(name: string, value: string): number {
  try {
    return parseDuration(value);
  } catch (err) {
    throw new ConfigError(`--${name}: ${(err as Error).message}`);
  }
}
