/** Time as a dependency: components take a Clock so tests can use a FakeClock. */

/** Wall-clock time and abortable sleeps. */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /**
   * Resolves after `ms`; rejects with the signal's reason when `signal` aborts first.
   * The timer is an ordinary (ref'd) one: a process whose only work is a pending rotation stays up.
   */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** The longest delay setTimeout takes; longer ones fire at once (with a TimeoutOverflowWarning). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** The real clock. Sleeps longer than MAX_TIMER_MS (24.8 days) are chained timers. */
export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason as Error);
        return;
      }
      const end = Date.now() + Math.max(0, ms);
      let timer: NodeJS.Timeout | undefined;
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal?.reason as Error);
      };
      const arm = () => {
        const left = end - Date.now();
        if (left <= 0 && timer !== undefined) {
          signal?.removeEventListener('abort', onAbort);
          resolve();
          return;
        }
        timer = setTimeout(arm, Math.min(Math.max(0, left), MAX_TIMER_MS));
      };
      arm();
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
};
