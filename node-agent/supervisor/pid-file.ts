/**
 * The proxy's pid file (`proxy.pid` beside its config file), and the cleanup of a proxy that a
 * crashed agent left running: it still holds the admin and traffic ports, so a new proxy could
 * not bind them, and /ready would report the orphan's state instead of the new child's.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Clock } from '../../common/clock';
import { writeFileAtomic } from '../../common/fs';

/** File name of the pid file, in the config file's directory. */
export const PID_FILE_NAME = 'proxy.pid';
/** How often a leftover proxy is checked for exit after a signal. */
const EXIT_POLL_MS = 50;
/** How long to wait for a leftover proxy to go after SIGKILL. */
const KILL_WAIT_MS = 5_000;

/** The pid file of the proxy whose config is `configFile`. */
export function pidFileOf(configFile: string): string {
  return path.join(path.dirname(configFile), PID_FILE_NAME);
}

/** Writes `pid` to `file` (atomically, 0644). */
export async function writePidFile(file: string, pid: number): Promise<void> {
  await writeFileAtomic(file, `${pid}\n`, 0o644);
}

/** Removes the pid file; a missing file is fine. */
export async function removePidFile(file: string): Promise<void> {
  await fs.promises.rm(file, { force: true });
}

/** The pid in `file`, or undefined when the file is missing or holds no positive integer. */
export async function readPidFile(file: string): Promise<number | undefined> {
  let text: string;
  try {
    text = await fs.promises.readFile(file, 'utf8');
  } catch {
    return undefined;
  }
  const pid = Number(text.trim());
  return Number.isInteger(pid) && pid > 1 ? pid : undefined;
}

/** The argv of a running (non-zombie) process, or undefined when there is none with that pid. */
export async function processArgv(pid: number): Promise<string[] | undefined> {
  try {
    const status = await fs.promises.readFile(`/proc/${pid}/status`, 'utf8');
    // A zombie has exited; only its parent's wait() is missing, and it holds no ports.
    if (/^State:\s+Z/m.test(status)) return undefined;
    const cmdline = await fs.promises.readFile(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.split('\0').filter(s => s.length > 0);
  } catch {
    return undefined;
  }
}

/**
 * True when `argv` looks like a Sail proxy: some argument is exactly `proxy` (the subcommand).
 * The pid in a stale file may have been reused by an unrelated process, which must not be killed.
 */
export function isProxyArgv(argv: readonly string[]): boolean {
  return argv.includes('proxy');
}

/** What {@link killLeftoverProxy} found and did. */
export type LeftoverOutcome = 'none' | 'not-proxy' | 'terminated' | 'killed';

/**
 * Stops the proxy recorded in `pidFile` if it still runs: SIGTERM (its own bounded drain), then
 * SIGKILL after `graceMs`. A pid that is gone, or that now belongs to something that is not a
 * proxy, is left alone. The pid file is removed in every case.
 */
export async function killLeftoverProxy(
  pidFile: string,
  graceMs: number,
  clock: Clock,
): Promise<{ outcome: LeftoverOutcome; pid?: number }> {
  const pid = await readPidFile(pidFile);
  if (pid === undefined || pid === process.pid) {
    await removePidFile(pidFile);
    return { outcome: 'none' };
  }
  const argv = await processArgv(pid);
  if (!argv) {
    await removePidFile(pidFile);
    return { outcome: 'none', pid };
  }
  if (!isProxyArgv(argv)) {
    await removePidFile(pidFile);
    return { outcome: 'not-proxy', pid };
  }
  const gone = async (deadlineMs: number): Promise<boolean> => {
    const end = clock.now() + deadlineMs;
    for (;;) {
      if ((await processArgv(pid)) === undefined) return true;
      if (clock.now() >= end) return false;
      await clock.sleep(EXIT_POLL_MS);
    }
  };
  let outcome: LeftoverOutcome = 'terminated';
  signal(pid, 'SIGTERM');
  if (!(await gone(graceMs))) {
    outcome = 'killed';
    signal(pid, 'SIGKILL');
    await gone(KILL_WAIT_MS);
  }
  await removePidFile(pidFile);
  return { outcome, pid };
}

/** process.kill that ignores ESRCH (the process went on its own meanwhile). */
function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}
