/**
 * Short `sail` CLI runs that do not block the test's event loop (unlike `sailSync`), so that
 * gRPC clients in the test process keep reading and answering while the CLI runs; and plain
 * HTTP requests to an admin unix socket.
 */
import { spawn } from 'node:child_process';
import * as http from 'node:http';
import { SAIL_JS } from './sail-process';

export interface SailResult {
  readonly status: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `sail ARGS` to completion (killed after `timeoutMs`), with `input` on stdin. */
export function sail(
  args: readonly string[],
  opts: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<SailResult> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [SAIL_JS, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...opts.env },
    });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    proc.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const timer = setTimeout(() => proc.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    proc.once('error', err => {
      clearTimeout(timer);
      reject(err);
    });
    proc.once('close', code => {
      clearTimeout(timer);
      resolve({ status: code ?? -1, stdout, stderr });
    });
    // A command that never reads stdin may exit before the input is written: not an error.
    proc.stdin.on('error', () => undefined);
    proc.stdin.end(opts.input ?? '');
  });
}

/** `GET path` on an admin unix socket; rejects when nothing listens there. */
export function socketGet(
  socketPath: string,
  urlPath: string,
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath, path: urlPath, timeout: 5_000 }, res => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString('utf8')));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer on ${socketPath} within 5 s`)));
    req.on('error', reject);
  });
}
