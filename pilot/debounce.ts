/**
 * Coalesces bursts of changes into one push (Istio's PILOT_DEBOUNCE_AFTER / _MAX): fire once no
 * new change arrived for `quietMs`, or `maxMs` after the first change of the burst, whichever
 * comes first. Changes are merged with `merge`.
 */
export interface DebounceOptions {
  readonly quietMs: number;
  readonly maxMs: number;
}

export const DEFAULT_DEBOUNCE: DebounceOptions = { quietMs: 100, maxMs: 1000 };

export class Debouncer<T> {
  private pending: T | undefined;
  private firstAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly opts: DebounceOptions,
    private readonly merge: (a: T, b: T) => T,
    private readonly fire: (value: T) => void,
  ) {}

  add(change: T): void {
    if (this.closed) return;
    const now = Date.now();
    if (this.pending === undefined) {
      this.pending = change;
      this.firstAt = now;
    } else {
      this.pending = this.merge(this.pending, change);
    }
    if (this.timer) clearTimeout(this.timer);
    const wait = Math.max(0, Math.min(this.opts.quietMs, this.firstAt + this.opts.maxMs - now));
    this.timer = setTimeout(() => this.flush(), wait);
  }

  /** Fires now if anything is pending. */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const value = this.pending;
    this.pending = undefined;
    if (value !== undefined && !this.closed) this.fire(value);
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.pending = undefined;
  }
}
