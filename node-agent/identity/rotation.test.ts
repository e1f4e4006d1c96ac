import { FakeClock } from '../../test/helpers/fake-clock';
import { isExpired, nextRotationDelayMs, shouldRotate } from './rotation';

const H = 3600_000;
const noJitter = () => 0.5;

describe('shouldRotate', () => {
  // A certificate issued at the clock's start, backdated 60 s like the CA does.
  const cases = [
    { name: 'keeps a fresh certificate', ttl: 24 * H, advance: 0, want: false },
    {
      name: 'keeps a certificate just before half its lifetime',
      ttl: 24 * H,
      advance: 12 * H - 30_000 - 1,
      want: false,
    },
    {
      name: 'renews when half the lifetime has passed',
      ttl: 24 * H,
      advance: 12 * H - 30_000,
      want: true,
    },
    {
      name: 'renews a certificate three quarters through',
      ttl: 24 * H,
      advance: 18 * H,
      want: true,
    },
    { name: 'renews an expired certificate', ttl: 24 * H, advance: 25 * H, want: true },
    {
      name: 'renews a 10 s certificate after 5 s',
      ttl: 10_000,
      advance: 5_000 - 1_000 / 2,
      want: true,
    },
  ];
  it.each(cases)('$name', ({ ttl, advance, want }) => {
    const clock = new FakeClock();
    const backdate = Math.min(60_000, ttl / 10);
    const notBefore = clock.now() - backdate;
    const notAfter = clock.now() + ttl;
    clock.advance(advance);
    expect(shouldRotate(clock.now(), notBefore, notAfter)).toBe(want);
  });
});

describe('nextRotationDelayMs', () => {
  const cases = [
    {
      name: 'waits until half the lifetime without jitter',
      ttl: 24 * H,
      advance: 0,
      random: 0.5,
      want: 12 * H,
    },
    {
      name: 'comes 10% early at the lowest jitter',
      ttl: 24 * H,
      advance: 0,
      random: 0,
      want: 38_880_000,
    },
    {
      name: 'comes up to 10% late at the highest jitter',
      ttl: 24 * H,
      advance: 0,
      random: 1 - 1e-12,
      want: 47_520_000,
    },
    {
      name: 'counts from notBefore, not from now',
      ttl: 24 * H,
      advance: 2 * H,
      random: 0.5,
      want: 10 * H,
    },
    {
      name: 'is zero once the point has passed',
      ttl: 24 * H,
      advance: 13 * H,
      random: 0.5,
      want: 0,
    },
    {
      name: 'is never negative for an expired certificate',
      ttl: 24 * H,
      advance: 30 * H,
      random: 0,
      want: 0,
    },
    { name: 'handles the CA minimum of 10 s', ttl: 10_000, advance: 0, random: 0.5, want: 5_000 },
  ];
  it.each(cases)('$name', ({ ttl, advance, random, want }) => {
    const clock = new FakeClock();
    const notBefore = clock.now();
    const notAfter = clock.now() + ttl;
    clock.advance(advance);
    expect(nextRotationDelayMs(clock.now(), notBefore, notAfter, () => random)).toBe(want);
  });

  it('spreads a fleet over ±10% of the half-life', () => {
    const delays = Array.from({ length: 1000 }, () =>
      nextRotationDelayMs(0, 0, 24 * H, Math.random),
    );
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(12 * H * 0.9);
    expect(Math.max(...delays)).toBeLessThanOrEqual(12 * H * 1.1);
    expect(new Set(delays).size).toBeGreaterThan(900);
  });

  it('agrees with shouldRotate when there is no jitter', () => {
    const clock = new FakeClock();
    const nb = clock.now();
    const na = nb + 24 * H;
    clock.advance(nextRotationDelayMs(clock.now(), nb, na, noJitter));
    expect(shouldRotate(clock.now(), nb, na)).toBe(true);
    expect(shouldRotate(clock.now() - 1, nb, na)).toBe(false);
  });
});

describe('isExpired', () => {
  it.each([
    { name: 'valid before notAfter', offset: -1, want: false },
    { name: 'expired at notAfter', offset: 0, want: true },
    { name: 'expired after notAfter', offset: 1, want: true },
  ])('$name', ({ offset, want }) => {
    expect(isExpired(1_000_000 + offset, 1_000_000)).toBe(want);
  });
});
