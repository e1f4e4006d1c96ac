/**
 * A Clock whose time moves only when a test says so (spire's `clock.NewMock`). Sleeps resolve when
 * advance() passes their due time, in due order; an aborted sleep rejects with the signal's
 * reason, like systemClock.
 */
import type { Clock } from '../../common/clock';

interface Sleeper {
  readonly dueMs: number;
  readonly seq: number;
  readonly resolve: () => void;
  readonly detach: () => void;
}

/** Default start time: a fixed instant, so tests do not depend on the day they run. */
export const FAKE_CLOCK_START_MS = Date.UTC(2026, 0, 1, 0, 0, 0);

export class FakeClock implements Clock {
  private nowMs: number;
  private seq = 0;
  private readonly sleepers: Sleeper[] = [];
  private readonly waiters = new Set<() => void>();

  constructor(startMs: number = FAKE_CLOCK_START_MS) {
    this.nowMs = startMs;
  }

  now(): number {
    return this.nowMs;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason as Error);
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        this.remove(sleeper);
        reject(signal?.reason as Error);
      };
      const sleeper: Sleeper = {
        dueMs: this.nowMs + Math.max(0, ms),
        seq: this.seq++,
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        detach: () => signal?.removeEventListener('abort', onAbort),
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.sleepers.push(sleeper);
      this.sleepers.sort((a, b) => a.dueMs - b.dueMs || a.seq - b.seq);
      for (const w of [...this.waiters]) w();
      // A zero sleep yields to the event loop, as a real timer would, instead of waiting for advance().
      if (ms <= 0) setImmediate(() => this.fireDue());
    });
  }

  /** Moves time forward by `ms` and wakes every sleep that is due by then. */
  advance(ms: number): void {
    if (ms < 0) throw new Error('FakeClock cannot go back in time');
    this.nowMs += ms;
    this.fireDue();
  }

  /** Sets the time (forward only) and wakes what is due. */
  setTime(ms: number): void {
    this.advance(ms - this.nowMs);
  }

  /**
   * Advances exactly to the earliest pending sleep and wakes it (and any due at the same time).
   * Returns how far time moved, or undefined when nothing sleeps.
   */
  advanceToNextSleep(): number | undefined {
    const next = this.sleepers[0];
    if (!next) return undefined;
    const delta = Math.max(0, next.dueMs - this.nowMs);
    this.advance(delta);
    return delta;
  }

  /** Number of sleeps waiting for time to pass. */
  get pendingSleeps(): number {
    return this.sleepers.length;
  }

  /** Milliseconds until the earliest pending sleep is due, or undefined when nothing sleeps. */
  get nextSleepInMs(): number | undefined {
    const next = this.sleepers[0];
    return next ? next.dueMs - this.nowMs : undefined;
  }

  /**
   * Resolves once at least `count` sleeps are pending (the code under test has gone idle), or
   * rejects after `timeoutMs` of real time.
   */
  waitForSleepers(count = 1, timeoutMs = 5_000): Promise<void> {
    if (this.sleepers.length >= count) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const check = () => {
        if (this.sleepers.length >= count) {
          clearTimeout(timer);
          this.waiters.delete(check);
          resolve();
        }
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(
          new Error(
            `FakeClock: expected ${count} pending sleep(s) within ${timeoutMs} ms, have ${this.sleepers.length}`,
          ),
        );
      }, timeoutMs);
      this.waiters.add(check);
    });
  }

  private fireDue(): void {
    while (this.sleepers.length > 0 && (this.sleepers[0] as Sleeper).dueMs <= this.nowMs) {
      (this.sleepers.shift() as Sleeper).resolve();
    }
  }

  private remove(s: Sleeper): void {
    const i = this.sleepers.indexOf(s);
    if (i >= 0) this.sleepers.splice(i, 1);
    s.detach();
  }
}
