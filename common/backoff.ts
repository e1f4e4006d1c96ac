/** Capped exponential backoff with "equal jitter": each delay is random between half and all of its base. */

export const DEFAULT_INITIAL_BACKOFF_MS = 1000;
export const DEFAULT_MAX_BACKOFF_MS = 30_000;

export interface BackoffOptions {
  readonly initialMs?: number;
  readonly maxMs?: number;
  readonly multiplier?: number;
  /** Returns a number in [0, 1); injectable for tests. */
  readonly random?: () => number;
}

/**
 * Produces successive delays: attempt n waits a random time in [base/2, base] where
 * base = min(max, initial * multiplier^n). Half-jitter keeps a floor so a fleet never spins,
 * and the spread keeps it from retrying in lockstep.
 */
export class Backoff {
  private attempt = 0;
  private readonly initialMs: number;
  private readonly maxMs: number;
  private readonly multiplier: number;
  private readonly random: () => number;

  constructor(opts: BackoffOptions = {}) {
    this.initialMs = opts.initialMs ?? DEFAULT_INITIAL_BACKOFF_MS;
    this.maxMs = opts.maxMs ?? DEFAULT_MAX_BACKOFF_MS;
    this.multiplier = opts.multiplier ?? 2;
    this.random = opts.random ?? Math.random;
  }

  /** The next delay in milliseconds; each call advances the attempt count. */
  next(): number {
    const base = Math.min(this.maxMs, this.initialMs * this.multiplier ** this.attempt);
    this.attempt++;
    return Math.round(base / 2 + (this.random() * base) / 2);
  }

  /** How many delays have been handed out since the last reset. */
  get attempts(): number {
    return this.attempt;
  }

  /** Back to the initial delay (after a success). */
  reset(): void {
    this.attempt = 0;
  }
}
