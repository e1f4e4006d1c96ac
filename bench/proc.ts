/** What the benchmarks share: pinning processes to cores, and reading a process's CPU and memory. */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** build/cli/sail.js, which the benches run unless BENCH_SAIL_BINARY names a single executable. */
export const SAIL_JS = path.join(__dirname, '..', 'cli', 'sail.js');
/** BENCH_SAIL_BINARY: run `sail` from this single executable (dist/sail) instead of the build. */
export const SAIL_BINARY = process.env.BENCH_SAIL_BINARY
  ? path.resolve(process.env.BENCH_SAIL_BINARY)
  : undefined;

/**
 * How to run `sail ARGS`: the file and the arguments before ARGS. From the build, `nodeArgs` go to
 * node before the script; the single executable takes no node flags on its command line.
 */
export function sailCommand(nodeArgs: readonly string[] = []): [string, string[]] {
  return SAIL_BINARY ? [SAIL_BINARY, []] : [process.execPath, [...nodeArgs, SAIL_JS]];
}

/** True when `taskset` works and there are two cores to split between server and load. */
export const haveTaskset =
  spawnSync('taskset', ['-c', '0', 'true']).status === 0 && os.cpus().length >= 2;

/** Clock ticks per second, for /proc CPU times. */
export const TICKS = Number(
  spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim() || 100,
);

/** The command line that runs `cmd args` on `core` (unchanged without taskset). */
export function pin(core: number, cmd: string, args: string[]): [string, string[]] {
  return haveTaskset ? ['taskset', ['-c', String(core), cmd, ...args]] : [cmd, args];
}

/**
 * RSS, peak RSS (MB) and CPU ticks (user+system, and system alone) of a process, from /proc; RSS
 * split into anonymous memory (the process's own heap and stacks) and file-backed pages (mostly
 * the node binary's code, shared by every node process on the host), and PSS (each shared page
 * divided among the processes that map it) from smaps_rollup.
 */
export function procStatus(pid: number): {
  rssMb: number;
  hwmMb: number;
  anonMb: number;
  fileMb: number;
  pssMb: number;
  cpuTicks: number;
  sysTicks: number;
} {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  let pssKb = 0;
  try {
    const rollup = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    pssKb = Number(/^Pss:\s+(\d+)/m.exec(rollup)?.[1] ?? 0);
  } catch {
    // Kernels before 4.14 have no smaps_rollup: PSS stays 0.
  }
  return {
    rssMb: kb('VmRSS') / 1024,
    hwmMb: kb('VmHWM') / 1024,
    anonMb: kb('RssAnon') / 1024,
    fileMb: kb('RssFile') / 1024,
    pssMb: pssKb / 1024,
    cpuTicks: Number(stat[11]) + Number(stat[12]),
    sysTicks: Number(stat[12]),
  };
}
