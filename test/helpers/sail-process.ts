/** Runs the built `sail` CLI as real child processes for tests, collecting their JSON log lines. */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as readline from 'node:readline';

/** build/cli/sail.js; tests that use it need `npm run build` first (npm test does it). */
export const SAIL_JS = path.join(__dirname, '..', '..', 'build', 'cli', 'sail.js');

export function sailBuilt(): boolean {
  return fs.existsSync(SAIL_JS);
}

/** Runs a short sail command to completion. */
export function sailSync(
  args: string[],
  opts: { input?: string; env?: NodeJS.ProcessEnv } = {},
): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [SAIL_JS, ...args], {
    encoding: 'utf8',
    input: opts.input,
    env: { ...process.env, ...opts.env },
    timeout: 30_000,
  });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** How to run a {@link SailProcess} other than `node build/cli/sail.js ARGS` with this env. */
export interface SailProcessOptions {
  /** The whole command line instead (e.g. the single executable, under `ip netns exec`). */
  readonly command?: readonly string[];
  readonly cwd?: string;
  /** Exactly this environment, nothing of this process's own. */
  readonly exactEnv?: NodeJS.ProcessEnv;
}

/** A long-running sail process and the log lines it printed. */
export class SailProcess {
  readonly lines: Record<string, unknown>[] = [];
  readonly stderr: string[] = [];
  private readonly proc: ChildProcess;
  private exited: Promise<number | null>;

  constructor(args: string[], env: NodeJS.ProcessEnv = {}, opts: SailProcessOptions = {}) {
    const [file, ...argv] = opts.command ?? [process.execPath, SAIL_JS, ...args];
    this.proc = spawn(file as string, argv, {
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: opts.cwd,
      env: opts.exactEnv ?? { ...process.env, ...env },
    });
    readline
      .createInterface({ input: this.proc.stdout as NodeJS.ReadableStream })
      .on('line', line => {
        try {
          this.lines.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          this.lines.push({ msg: line });
        }
      });
    readline
      .createInterface({ input: this.proc.stderr as NodeJS.ReadableStream })
      .on('line', line => this.stderr.push(line));
    this.exited = new Promise(resolve => this.proc.once('exit', code => resolve(code)));
  }

  get pid(): number {
    return this.proc.pid as number;
  }

  /** Log lines whose msg is `msg`. */
  logs(msg: string): Record<string, unknown>[] {
    return this.lines.filter(l => l.msg === msg);
  }

  /** Resolves with the first log line with `msg` (and matching `where`), or rejects after `timeoutMs`. */
  async waitForLog(
    msg: string,
    timeoutMs = 15_000,
    where: (l: Record<string, unknown>) => boolean = () => true,
  ): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.lines.find(l => l.msg === msg && where(l));
      if (hit) return hit;
      if (this.proc.exitCode !== null || this.proc.signalCode !== null)
        throw new Error(
          `process exited (${this.proc.exitCode ?? this.proc.signalCode}) before logging "${msg}": ${this.stderr.join('\n')} ${JSON.stringify(this.lines.slice(-5))}`,
        );
      if (Date.now() > deadline)
        throw new Error(
          `no "${msg}" log line within ${timeoutMs} ms; last lines: ${JSON.stringify(this.lines.slice(-5))}`,
        );
      await new Promise(r => setTimeout(r, 50));
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code. */
  async stop(graceMs = 10_000): Promise<number | null> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return this.proc.exitCode;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }
}

/** A TCP port free right now on 127.0.0.1 (for processes that must come back on the same port). */
export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>(r => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>(r => srv.close(() => r()));
  return port;
}
