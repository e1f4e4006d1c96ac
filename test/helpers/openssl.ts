/** Runs the real openssl CLI; tests use it as the independent judge of what Sail produces. */
import { execFileSync, spawnSync } from 'node:child_process';

/** Runs openssl; returns stdout+stderr and the exit status without throwing. */
export function openssl(args: string[], input?: string): { status: number; output: string } {
  const r = spawnSync('openssl', args, { input, encoding: 'utf8' });
  return { status: r.status ?? -1, output: `${r.stdout}${r.stderr}` };
}

/** True when openssl is on PATH (CI installs it; `npm test` skips with a message otherwise). */
export function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
