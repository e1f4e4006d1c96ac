/**
 * `/stats` of a `--concurrency` proxy: the workers' stats merged into one process's view, as
 * Envoy's single process with worker threads reports them. Counters and connection or request
 * gauges add up; what describes the configuration is the same in every worker and is shown once;
 * states take the worst worker's.
 */

type Merge = 'sum' | 'min' | 'max';

/** How each stat merges; the first rule whose pattern matches wins, else numbers add up. */
const RULES: readonly (readonly [RegExp, Merge])[] = [
  // LIVE 0, DRAINING 1, PRE_INITIALIZING 2: the least ready worker's.
  [/^server\.state$/, 'max'],
  [/^server\.live$/, 'min'],
  [/^server\.uptime$/, 'max'],
  [/^server\.days_until_first_cert_expiring$/, 'min'],
  [/^control_plane\.connected_state$/, 'min'],
  // The configuration in force (each worker has its own copy from pilot).
  [/^cluster_manager\.active_clusters$/, 'max'],
  [/^listener_manager\.total_listeners_active$/, 'max'],
  [/^cluster\..*\.membership_total$/, 'max'],
  // Outlier detection runs per worker: a host one worker ejected is not healthy for all.
  [/^cluster\..*\.membership_healthy$/, 'min'],
];

function ruleOf(name: string): Merge {
  for (const [re, merge] of RULES) if (re.test(name)) return merge;
  return 'sum';
}

function combine(merge: Merge, a: number, b: number): number {
  switch (merge) {
    case 'sum':
      return a + b;
    case 'min':
      return Math.min(a, b);
    case 'max':
      return Math.max(a, b);
  }
}

/**
 * Merges the workers' `/stats` (in worker order). Text values (the `version_text` stats) are the
 * first worker's; a stat only some workers have is merged over those.
 */
export function mergeStats(
  workers: readonly ReadonlyMap<string, number | string>[],
): Map<string, number | string> {
  const out = new Map<string, number | string>();
  for (const stats of workers) {
    for (const [name, value] of stats) {
      const seen = out.get(name);
      if (seen === undefined) out.set(name, value);
      else if (typeof seen === 'number' && typeof value === 'number')
        out.set(name, combine(ruleOf(name), seen, value));
    }
  }
  return out;
}
