/**
 * One health probe of the local application, Kubernetes-style: an HTTP GET (2xx and 3xx are
 * healthy, redirects are not followed), a TCP connect, or a command (exit code 0 is healthy).
 * Every probe is bounded by its timeout; a command that overruns is killed with its process group.
 */
import { spawn } from 'node:child_process';
import * as http from 'node:http';
import * as net from 'node:net';

/** What to probe and how often; exactly one of `http`, `tcp` and `exec`. */
export interface HealthProbeSpec {
  /** GET http://HOST:PORT/PATH; HOST defaults to 127.0.0.1. */
  readonly http?: { readonly port: number; readonly path: string; readonly host?: string };
  /** A TCP connection to HOST:PORT; HOST defaults to 127.0.0.1. */
  readonly tcp?: { readonly port: number; readonly host?: string };
  /** A program and its arguments, run without a shell as the agent's user. */
  readonly exec?: { readonly command: readonly string[] };
  /** Time between the end of one probe and the start of the next. */
  readonly intervalMs: number;
  /** A probe that takes longer fails (and a command is killed). */
  readonly timeoutMs: number;
  /** Consecutive failures that make a healthy workload unhealthy (Kubernetes default 3). */
  readonly failureThreshold: number;
  /** Consecutive successes that make an unhealthy workload healthy (Kubernetes default 1). */
  readonly successThreshold: number;
}

/** The outcome of one probe. */
export interface ProbeResult {
  readonly ok: boolean;
  /** Why, for the log and pilot's `health.message` (at most {@link MAX_PROBE_MESSAGE_BYTES}). */
  readonly message: string;
}

/** Pilot's limit on a health message (bytes). */
export const MAX_PROBE_MESSAGE_BYTES = 1024;
/** How much of a command's output is kept for its message. */
const MAX_OUTPUT_BYTES = 512;
/** After a command exits, how long to wait for its output pipes to close (a daemonised child may hold them). */
const EXEC_CLOSE_GRACE_MS = 100;
const DEFAULT_PROBE_HOST = '127.0.0.1';

/**
 * An error's message. Not common/errors getErrorMessage: errors made by Node internals may come
 * from another realm (jest's sandbox), where `instanceof Error` is false.
 */
function getErrorMessage(err: unknown): string {
  const m = (err as { message?: unknown } | null)?.message;
  return typeof m === 'string' ? m : String(err);
}

/** Which kind of probe a spec describes, for logs and metrics. */
export function probeKind(spec: HealthProbeSpec): 'http' | 'tcp' | 'exec' {
  if (spec.http) return 'http';
  if (spec.tcp) return 'tcp';
  return 'exec';
}

/** `host:port`, bracketing IPv6. */
function hostPort(host: string, port: number): string {
  return net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Cuts a message to pilot's limit. */
function clip(message: string): string {
  let m = message.replace(/\s+/g, ' ').trim();
  while (Buffer.byteLength(m) > MAX_PROBE_MESSAGE_BYTES) m = m.slice(0, -1);
  return m;
}

/**
 * Runs one probe. Never rejects: every failure (refused, timed out, bad status, non-zero exit,
 * command not found) is a failed result with its reason.
 */
export async function runProbe(spec: HealthProbeSpec, signal?: AbortSignal): Promise<ProbeResult> {
  try {
    if (spec.http) return await httpProbe(spec.http, spec.timeoutMs, signal);
    if (spec.tcp) return await tcpProbe(spec.tcp, spec.timeoutMs, signal);
    if (spec.exec) return await execProbe(spec.exec.command, spec.timeoutMs, signal);
    return { ok: false, message: 'no probe configured (want http, tcp or exec)' };
  } catch (err) {
    return { ok: false, message: clip(getErrorMessage(err)) };
  }
}

/**
 * Runs one network probe with the settling both share: the first of its result, `timeoutMs` or
 * `signal` wins, `release` frees its socket once, and the message is clipped. `what` prefixes the
 * timeout and cancel messages (`GET URL`, `connect HOST:PORT`).
 */
function settleProbe(
  what: string,
  silence: 'no response' | 'no answer',
  timeoutMs: number,
  signal: AbortSignal | undefined,
  start: (finish: (r: ProbeResult) => void) => { release(): void },
): Promise<ProbeResult> {
  return new Promise(resolve => {
    let settled = false;
    let release: (() => void) | undefined;
    const finish = (r: ProbeResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      release?.();
      resolve({ ok: r.ok, message: clip(r.message) });
    };
    const timer = setTimeout(
      () => finish({ ok: false, message: `${what}: ${silence} within ${timeoutMs} ms` }),
      timeoutMs,
    );
    const onAbort = () => finish({ ok: false, message: `${what}: probe cancelled` });
    signal?.addEventListener('abort', onAbort, { once: true });
    const started = start(finish);
    if (settled) started.release();
    else release = () => started.release();
  });
}

function httpProbe(
  p: NonNullable<HealthProbeSpec['http']>,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<ProbeResult> {
  const host = p.host ?? DEFAULT_PROBE_HOST;
  const url = `http://${hostPort(host, p.port)}${p.path}`;
  return settleProbe(`GET ${url}`, 'no response', timeoutMs, signal, finish => {
    // A fresh connection per probe (no agent, like the kubelet), so a probe sees what a new
    // client would: a wedged accept queue fails it.
    const req = http.get(
      {
        host,
        port: p.port,
        path: p.path,
        agent: false,
        headers: { 'user-agent': 'sail-health-probe', accept: '*/*', connection: 'close' },
      },
      res => {
        const code = res.statusCode ?? 0;
        res.resume();
        finish({ ok: code >= 200 && code < 400, message: `HTTP ${code} from ${url}` });
      },
    );
    req.on('error', err => finish({ ok: false, message: `GET ${url}: ${getErrorMessage(err)}` }));
    return { release: () => req.destroy() };
  });
}

function tcpProbe(
  p: NonNullable<HealthProbeSpec['tcp']>,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<ProbeResult> {
  const target = hostPort(p.host ?? DEFAULT_PROBE_HOST, p.port);
  return settleProbe(`connect ${target}`, 'no answer', timeoutMs, signal, finish => {
    const socket = net.connect({ host: p.host ?? DEFAULT_PROBE_HOST, port: p.port });
    socket.once('connect', () => finish({ ok: true, message: `connected to ${target}` }));
    socket.once('error', err =>
      finish({ ok: false, message: `connect ${target}: ${getErrorMessage(err)}` }),
    );
    return { release: () => socket.destroy() };
  });
}

function execProbe(
  command: readonly string[],
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<ProbeResult> {
  const [file, ...args] = command;
  if (!file) return Promise.resolve({ ok: false, message: 'exec probe has an empty command' });
  const name = JSON.stringify(file);
  return new Promise(resolve => {
    let settled = false;
    let output = '';
    let exitTimer: NodeJS.Timeout | undefined;
    // Its own process group (detached), so a timeout kills a shell script's children too.
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const killGroup = () => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // Already gone (ESRCH): nothing left to kill.
      }
    };
    const finish = (r: ProbeResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(exitTimer);
      signal?.removeEventListener('abort', onAbort);
      child.stdout.destroy();
      child.stderr.destroy();
      resolve({ ok: r.ok, message: clip(r.message) });
    };
    const collect = (chunk: Buffer) => {
      if (output.length < MAX_OUTPUT_BYTES) output += chunk.toString('utf8');
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    const tail = () => (output.trim() ? `: ${output.trim().slice(0, MAX_OUTPUT_BYTES)}` : '');
    const exited = (code: number | null, sig: NodeJS.Signals | null) =>
      finish(
        code === 0
          ? { ok: true, message: `${name} exited 0` }
          : {
              ok: false,
              message: `${name} ${code !== null ? `exited ${code}` : `was killed by ${sig}`}${tail()}`,
            },
      );
    child.once('error', err => finish({ ok: false, message: `${name}: ${getErrorMessage(err)}` }));
    child.once('close', exited);
    child.once('exit', (code, sig) => {
      exitTimer = setTimeout(() => exited(code, sig), EXEC_CLOSE_GRACE_MS);
    });
    const timer = setTimeout(() => {
      killGroup();
      finish({ ok: false, message: `${name} did not finish within ${timeoutMs} ms (killed)` });
    }, timeoutMs);
    const onAbort = () => {
      killGroup();
      finish({ ok: false, message: `${name}: probe cancelled` });
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
