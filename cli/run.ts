/** The common main script of long-running commands (STYLE 2.3 rule 6). */
import { spawn } from 'node:child_process';
import { routeGrpcLogs } from '../common/grpc';
import { createRootLogger, LOG_LEVELS, type Logger, type LogLevel } from '../common/logging';

/**
 * The root logger of a long-running command (with `role`), at the level of the `--log-level`
 * flag, else of SAIL_LOG_LEVEL when that names a level, else of the config file; gRPC's own log
 * lines go to it too.
 */
export function commandLogger(
  role: string,
  flagLevel: LogLevel | undefined,
  configLevel: LogLevel,
): Logger {
  const envLevel = process.env.SAIL_LOG_LEVEL;
  const level =
    flagLevel ??
    (envLevel && (LOG_LEVELS as readonly string[]).includes(envLevel)
      ? (envLevel as LogLevel)
      : configLevel);
  const logger = createRootLogger(level).child({ role });
  routeGrpcLogs(logger);
  return logger;
}

/**
 * Starts, then waits for SIGTERM/SIGINT (or `stop` to abort) and closes. A signal that arrives
 * while start() is still waiting (an agent with no certificate yet) closes at once, which aborts
 * the start. A start failure is rethrown for the CLI to map to an exit code; a second signal
 * exits immediately (`stop` aborting after a signal, or a signal after it, is not a second one).
 */
export async function runUntilSignal(
  log: Logger,
  parts: { start(): Promise<void>; close(): Promise<void> },
  stop?: AbortSignal,
): Promise<void> {
  let signalled = false;
  const stopped = new Promise<string>(resolve => {
    const onSignal = (sig: NodeJS.Signals) => {
      if (signalled) {
        log.warn({ signal: sig }, 'Second signal; exiting now');
        process.exit(1);
      }
      signalled = true;
      resolve(sig);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    if (stop?.aborted) resolve(String(stop.reason));
    stop?.addEventListener('abort', () => resolve(String(stop.reason)), { once: true });
  });
  const starting = parts.start();
  const first = await Promise.race([starting.then(() => undefined), stopped]).catch(
    async (err: unknown) => {
      await parts.close().catch(() => undefined);
      throw err;
    },
  );
  const sig = first ?? (await stopped);
  log.info({ signal: sig }, 'Shutting down');
  await parts.close();
  await starting.catch(() => undefined);
  log.info('Stopped');
}

/**
 * Tells systemd a server is ready (Type=notify) when it runs under it. systemd-notify is a child
 * process, hence NotifyAccess=all in the unit and --pid naming us.
 */
export function notifySystemdReady(log: Logger): void {
  if (!process.env.NOTIFY_SOCKET) return;
  const child = spawn('systemd-notify', ['--ready', `--pid=${process.pid}`], { stdio: 'ignore' });
  child.on('error', err => log.warn({ err }, 'Could not notify systemd'));
  child.unref();
}
