/** Durations as operators write them: `30s`, `10m`, `24h`, `1h30m`, `500ms`, `7d`. */

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const DURATION_RE = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)/;

/**
 * Parses a duration to milliseconds.
 * @throws Error naming the value when it is not a positive sequence of NUMBER+UNIT
 */
export function parseDuration(text: string): number {
  let rest = text.trim();
  if (rest === '') throw new Error('empty duration');
  let total = 0;
  while (rest.length > 0) {
    const m = DURATION_RE.exec(rest);
    if (!m)
      throw new Error(`invalid duration ${JSON.stringify(text)}: want e.g. 30s, 10m, 24h, 1h30m`);
    total += Number(m[1]) * (UNIT_MS[m[2] as string] as number);
    rest = rest.slice(m[0].length);
  }
  return Math.round(total);
}

/** Formats milliseconds compactly (`1h30m`, `20s`, `250ms`). */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  let s = Math.round(ms / 1000);
  const parts: string[] = [];
  for (const [unit, size] of [
    ['d', 86400],
    ['h', 3600],
    ['m', 60],
    ['s', 1],
  ] as const) {
    if (s >= size) {
      parts.push(`${Math.floor(s / size)}${unit}`);
      s %= size;
    }
  }
  return parts.join('');
}
