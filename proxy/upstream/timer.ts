/** Repeating background work on a Clock (DNS refresh, outlier sweeps, original-dst clean-up). */
import { type Clock, systemClock } from '../../common/clock';
import type { Logger } from '../../common/logging';

/**
 * Calls `fn` every `intervalMs` until the returned function is called. With the system clock the
 * timer is unref'd: these sweeps never keep the process alive on their own. With another clock
 * (a FakeClock in tests) it sleeps on that clock, so tests move time themselves.
 */
export function every(clock: Clock, intervalMs: number, fn: () => void, log: Logger): () => void {
  const ms = Math.max(1, intervalMs);
  const run = () => {
    try {
      fn();
    } catch (err) {
      log.warn({ err }, 'Periodic task failed');
    }
  };
  if (clock === systemClock) {
    let timer: NodeJS.Timeout | undefined;
    const tick = () => {
      run();
      if (timer !== undefined) timer = setTimeout(tick, ms).unref();
    };
    timer = setTimeout(tick, ms).unref();
    return () => {
      clearTimeout(timer);
      timer = undefined;
    };
  }
  const ac = new AbortController();
  const loop = async () => {
    for (;;) {
      await clock.sleep(ms, ac.signal);
      run();
    }
  };
  loop().catch((err: unknown) => {
    if (!ac.signal.aborted) log.warn({ err }, 'Periodic task failed');
  });
  return () => ac.abort();
}
