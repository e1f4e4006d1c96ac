import { formatDuration, parseDuration } from './duration';

const S = 1000;
const M = 60 * S;
const H = 60 * M;
const D = 24 * H;

describe('parseDuration', () => {
  it.each([
    { name: 'seconds', text: '30s', ms: 30 * S },
    { name: 'minutes', text: '10m', ms: 10 * M },
    { name: 'hours', text: '24h', ms: 24 * H },
    { name: 'days', text: '7d', ms: 7 * D },
    { name: 'milliseconds, not minutes', text: '500ms', ms: 500 },
    { name: 'a compound duration', text: '1h30m', ms: 90 * M },
    { name: 'every unit at once', text: '1d2h3m4s5ms', ms: D + 2 * H + 3 * M + 4 * S + 5 },
    { name: 'a fraction', text: '1.5h', ms: 90 * M },
    { name: 'a fraction of a second, rounded to a millisecond', text: '0.0015s', ms: 2 },
    { name: 'zero', text: '0s', ms: 0 },
    { name: 'surrounding whitespace', text: '  5s\n', ms: 5 * S },
    { name: 'the same unit twice (added)', text: '1m1m', ms: 2 * M },
  ])('parses $name ($text)', ({ text, ms }) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each([
    { name: 'empty', text: '' },
    { name: 'only whitespace', text: '   ' },
  ])('rejects an $name duration', ({ text }) => {
    expect(() => parseDuration(text)).toThrow('empty duration');
  });

  it.each([
    { name: 'a bare number', text: '30' },
    { name: 'a unit alone', text: 's' },
    { name: 'a negative number', text: '-5s' },
    { name: 'an unknown unit', text: '5y' },
    { name: 'an upper-case unit', text: '5S' },
    { name: 'Go-style microseconds', text: '5us' },
    { name: 'a space between parts', text: '1h 30m' },
    { name: 'a trailing number', text: '1h30' },
    { name: 'a leading dot', text: '.5s' },
    { name: 'two dots', text: '1.2.3s' },
    { name: 'exponent notation', text: '1e3ms' },
    { name: 'words', text: 'ten seconds' },
  ])('rejects $name ($text) naming the value', ({ text }) => {
    expect(() => parseDuration(text)).toThrow(
      `invalid duration ${JSON.stringify(text)}: want e.g. 30s, 10m, 24h, 1h30m`,
    );
  });
});

describe('formatDuration', () => {
  it.each([
    { ms: 0, text: '0ms' },
    { ms: 250, text: '250ms' },
    { ms: 999, text: '999ms' },
    { ms: 1000, text: '1s' },
    { ms: 1499, text: '1s' },
    { ms: 20 * S, text: '20s' },
    { ms: 90 * M, text: '1h30m' },
    { ms: 24 * H, text: '1d' },
    { ms: D + H + M + S, text: '1d1h1m1s' },
    { ms: 2 * D + 5 * S, text: '2d5s' },
  ])('formats $ms ms as $text', ({ ms, text }) => {
    expect(formatDuration(ms)).toBe(text);
  });

  it.each([0, 1, 999, S, 59 * S, M, 61 * S, H + S, 36 * H, 400 * D + 7 * S])(
    'round-trips %d ms through parseDuration',
    ms => {
      expect(parseDuration(formatDuration(ms))).toBe(ms);
    },
  );
});
