/** The lifecycle contract every long-lived part implements (STYLE 2.3), and task running. */

/** Implemented by components and their subsystems. */
export interface Lifecycle {
  /** Binds listeners and starts background tasks; resolves once ready to serve. */
  start(): Promise<void>;
  /** Graceful stop; idempotent; resolves when every resource is released. */
  close(): Promise<void>;
}

/** A background task: runs until `signal` aborts, then resolves. */
export type Task = (signal: AbortSignal) => Promise<void>;

/**
 * Runs tasks concurrently. The first rejection aborts the others and is rethrown once all have
 * settled; if `signal` aborts, every task is asked to stop and runTasks resolves (spire RunTasks).
 */
export async function runTasks(tasks: readonly Task[], signal: AbortSignal): Promise<void> {
  const inner = new AbortController();
  const onAbort = () => inner.abort(signal.reason);
  if (signal.aborted) onAbort();
  else signal.addEventListener('abort', onAbort, { once: true });
  let firstError: unknown;
  let failed = false;
  await Promise.all(
    tasks.map(async task => {
      try {
        await task(inner.signal);
      } catch (err) {
        // A task that lets the abort surface (an aborted sleep, or the abort reason itself) ended normally.
        if (inner.signal.aborted && (isAbortError(err) || err === inner.signal.reason)) return;
        if (!failed) {
          failed = true;
          firstError = err;
        }
        inner.abort(err);
      }
    }),
  );
  signal.removeEventListener('abort', onAbort);
  if (failed) throw firstError;
}

/** True for the rejection an aborted sleep or fetch produces. */
export function isAbortError(err: unknown): boolean {
  // No instanceof: errors made by Node internals may come from another realm (jest's sandbox).
  if (typeof err !== 'object' || err === null) return false;
  const e = err as { name?: unknown; code?: unknown };
  return e.name === 'AbortError' || e.code === 'ABORT_ERR';
}

/**
 * Makes `close()` idempotent and shared: concurrent and later callers get the same promise
 * (undici's dispatcher-base habit).
 */
export class CloseOnce {
  private promise: Promise<void> | undefined;
  run(fn: () => Promise<void>): Promise<void> {
    this.promise ??= fn();
    return this.promise;
  }
  get closed(): boolean {
    return this.promise !== undefined;
  }
}
