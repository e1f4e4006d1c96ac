import { Backoff, DEFAULT_INITIAL_BACKOFF_MS, DEFAULT_MAX_BACKOFF_MS } from './backoff';

/** The delays of the first `n` calls to next(). */
function delays(b: Backoff, n: number): number[] {
  return Array.from({ length: n }, () => b.next());
}

describe('Backoff', () => {
  it('defaults to 1s doubling up to 30s', () => {
    expect(DEFAULT_INITIAL_BACKOFF_MS).toBe(1000);
    expect(DEFAULT_MAX_BACKOFF_MS).toBe(30_000);
  });

  it.each([
    {
      name: 'the lowest draw waits half the base, doubling, capped at half the maximum',
      random: () => 0,
      want: [500, 1000, 2000, 4000, 8000, 15_000, 15_000, 15_000],
    },
    {
      name: 'the highest draw waits the whole base, capped at the maximum',
      random: () => 0.999_999,
      want: [1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000],
    },
    {
      name: 'a middle draw waits three quarters of the base',
      random: () => 0.5,
      want: [750, 1500, 3000, 6000, 12_000, 22_500, 22_500, 22_500],
    },
  ])('$name', ({ random, want }) => {
    expect(delays(new Backoff({ random }), want.length)).toEqual(want);
  });

  it('honours initialMs, maxMs and multiplier', () => {
    const b = new Backoff({ initialMs: 100, maxMs: 1000, multiplier: 3, random: () => 0.999_999 });
    expect(delays(b, 5)).toEqual([100, 300, 900, 1000, 1000]);
  });

  it('stays within [base/2, base] with the real random source', () => {
    const b = new Backoff({ initialMs: 10, maxMs: 80 });
    const bases = [10, 20, 40, 80, 80, 80];
    for (const base of bases) {
      const d = b.next();
      expect(d).toBeGreaterThanOrEqual(base / 2);
      expect(d).toBeLessThanOrEqual(base);
    }
  });

  it('spreads a fleet: different draws give different delays', () => {
    const seen = new Set<number>();
    for (let i = 0; i < 50; i++) seen.add(new Backoff({ initialMs: 10_000 }).next());
    expect(seen.size).toBeGreaterThan(10);
  });

  it('counts attempts and starts over after reset()', () => {
    const b = new Backoff({ random: () => 0 });
    expect(b.attempts).toBe(0);
    delays(b, 3);
    expect(b.attempts).toBe(3);
    b.reset();
    expect(b.attempts).toBe(0);
    expect(b.next()).toBe(500);
  });

  it('never overflows to NaN or Infinity after very many attempts', () => {
    const b = new Backoff({ random: () => 0.999_999 });
    const last = delays(b, 2000).at(-1);
    expect(last).toBe(DEFAULT_MAX_BACKOFF_MS);
  });
});
