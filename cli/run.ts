/** The common main script of long-running commands (STYLE 2.3 rule 6). */
import type { Logger } from '../common/logging';

/**
 * Starts, then waits for SIGTERM/SIGINT and closes. A signal that arrives while start() is still
 * waiting (an agent with no certificate yet) closes at once, which aborts the start. A start
 * failure is rethrown for the CLI to map to an exit code; a second signal exits immediately.
 */
export async function runUntilSignal(
  log: Logger,
  parts: { start(): Promise<void>; close(): Promise<void> },
): Promise<void> {
  let stopping = false;
  const stopped = new Promise<NodeJS.Signals>(resolve => {
    const onSignal = (sig: NodeJS.Signals) => {
      if (stopping) {
        log.warn({ signal: sig }, 'Second signal; exiting now');
        process.exit(1);
      }
      stopping = true;
      resolve(sig);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
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
