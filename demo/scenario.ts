/**
 * The BookInfo demo's scenario: Istio's traffic-management tasks, in order, on a running
 * {@link BookinfoMesh}. Each step applies its rules, waits until productpage's calls show them in
 * force (the push reaches every proxy within a second or so), then makes a fresh batch of calls,
 * prints what they saw and checks it. The printed lines are what test/e2e/demo.e2e.test.ts reads.
 */
import { waitFor } from '../test/helpers/wait-for';
import type { CallSummary } from './bookinfo-apps';
import {
  allV1,
  type Doc,
  ratingsAbortForJason,
  ratingsDelayForJason,
  reviews50v3,
  reviewsJasonV2,
} from './mesh-config';
import type { BookinfoMesh, CallOptions, Say } from './mesh';

/** Options of {@link runScenario}. */
export interface ScenarioOptions {
  /** Calls per batch. Default 20. */
  readonly calls?: number;
  /** The ratings delay for jason, in seconds. Default 2. */
  readonly delaySeconds?: number;
  /** How long a rule may take to show in the calls. Default 20 s. */
  readonly settleMs?: number;
}

/** One step's outcome. */
export interface StepResult {
  readonly name: string;
  readonly ok: boolean;
  readonly problems: string[];
}

const JASON = { 'end-user': 'jason' };

const pct = (n: number, of: number) => `${Math.round((100 * n) / Math.max(of, 1))}%`;

/** `v1 ×11 (55%), v3 ×9 (45%)` */
function versions(s: CallSummary): string {
  const parts = Object.entries(s.byVersion)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([v, n]) => `${v} ×${n} (${pct(n, s.count)})`);
  if (s.errors > 0) parts.push(`errors ×${s.errors}`);
  return parts.join(', ') || 'nothing';
}

function stars(s: CallSummary): string {
  return Object.entries(s.byStars)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([c, n]) => `${c} ×${n}`)
    .join(', ');
}

function latency(s: CallSummary): string {
  const l = s.latencyMs;
  if (l.length === 0) return '-';
  return `min ${Math.min(...l)} ms, max ${Math.max(...l)} ms`;
}

const only = (s: CallSummary, v: string) => s.byVersion[v] === s.count && s.errors === 0;

/**
 * Runs every step and prints as it goes; resolves with the results (never rejects on a failed
 * step: it is reported and the next step runs).
 */
export async function runScenario(
  mesh: BookinfoMesh,
  say: Say,
  opts: ScenarioOptions = {},
): Promise<StepResult[]> {
  const n = opts.calls ?? 20;
  const delay = opts.delaySeconds ?? 2;
  const settleMs = opts.settleMs ?? 20_000;
  const results: StepResult[] = [];
  let index = 0;

  /** Calls until `pred` holds for one batch (the rule is in force); the last batch on timeout. */
  async function settle(
    call: CallOptions,
    pred: (s: CallSummary) => boolean,
  ): Promise<string | undefined> {
    let last: CallSummary | undefined;
    try {
      await waitFor(
        async () => {
          last = await mesh.call(call);
          return pred(last);
        },
        { timeoutMs: settleMs, intervalMs: 200, what: 'the rule to take effect' },
      );
      return undefined;
    } catch (err) {
      return `${(err as Error).message}; last batch: ${last ? versions(last) : 'none'}${
        last && last.errors > 0 ? ` ${JSON.stringify(last.errorsByMessage)}` : ''
      }`;
    }
  }

  async function step(
    name: string,
    title: string,
    docs: readonly Doc[],
    body: () => Promise<string[]>,
  ): Promise<void> {
    index++;
    say('');
    say(`== ${index}. ${title} ==`);
    let problems: string[];
    try {
      if (docs.length > 0) {
        await mesh.apply(docs);
        say(
          `   sail apply: ${docs.map(d => `${String(d.kind)}/${String((d.metadata as { name: string }).name)}`).join(', ')}`,
        );
      }
      problems = await body();
    } catch (err) {
      problems = [(err as Error).message];
    }
    results.push({ name, ok: problems.length === 0, problems });
    say(problems.length === 0 ? `   result: ok` : `   result: FAILED: ${problems.join('; ')}`);
  }

  await step('default', 'No route rules: reviews round-robin over v1, v2 and v3', [], async () => {
    const problems: string[] = [];
    const wait = await settle(
      { count: 6 },
      s => s.errors === 0 && ['v1', 'v2', 'v3'].every(v => (s.byVersion[v] ?? 0) > 0),
    );
    if (wait) problems.push(wait);
    const s = await mesh.call({ count: n });
    say(`   ${n} calls: ${versions(s)}   stars: ${stars(s)}`);
    if (s.errors > 0)
      problems.push(`${s.errors} calls failed: ${JSON.stringify(s.errorsByMessage)}`);
    for (const v of ['v1', 'v2', 'v3'])
      if (!s.byVersion[v]) problems.push(`reviews ${v} never answered`);
    return problems;
  });

  await step('all-v1', 'Route all traffic to v1 (virtual-service-all-v1)', allV1(), async () => {
    const problems: string[] = [];
    const wait = await settle({ count: 5 }, s => only(s, 'v1'));
    if (wait) problems.push(wait);
    const s = await mesh.call({ count: n });
    say(`   ${n} calls: ${versions(s)}   stars: ${stars(s)}`);
    if (!only(s, 'v1')) problems.push('not every call went to v1');
    return problems;
  });

  await step(
    'weighted',
    'Weighted route: reviews 50% v1, 50% v3 (virtual-service-reviews-50-v3)',
    [reviews50v3()],
    async () => {
      const problems: string[] = [];
      const wait = await settle(
        { count: 10 },
        s => s.errors === 0 && (s.byVersion.v3 ?? 0) > 0 && !s.byVersion.v2,
      );
      if (wait) problems.push(wait);
      const s = await mesh.call({ count: n });
      say(`   ${n} calls: ${versions(s)}   stars: ${stars(s)}`);
      if (s.errors > 0) problems.push(`${s.errors} calls failed`);
      if (!s.byVersion.v1 || !s.byVersion.v3) problems.push('want both v1 and v3');
      if (s.byVersion.v2) problems.push('v2 answered, want only v1 and v3');
      return problems;
    },
  );

  await step(
    'header',
    'Header route: end-user jason → v2, everyone else → v1 (virtual-service-reviews-test-v2)',
    [reviewsJasonV2()],
    async () => {
      const problems: string[] = [];
      const wait = await settle({ count: 5, headers: JASON }, s => only(s, 'v2'));
      if (wait) problems.push(wait);
      const j = await mesh.call({ count: n, headers: JASON });
      const a = await mesh.call({ count: n });
      say(`   ${n} calls as jason: ${versions(j)}   stars: ${stars(j)}`);
      say(`   ${n} calls anonymous: ${versions(a)}   stars: ${stars(a)}`);
      if (!only(j, 'v2')) problems.push('jason did not always get v2');
      if (j.byStars.black !== n) problems.push('jason did not always see black stars');
      if (!only(a, 'v1')) problems.push('anonymous users did not always get v1');
      return problems;
    },
  );

  const delayed = Math.max(3, Math.min(n, 5));
  await step(
    'delay',
    `Fault injection: ratings delayed ${delay} s for jason (virtual-service-ratings-test-delay)`,
    [ratingsDelayForJason(delay)],
    async () => {
      const problems: string[] = [];
      const slow = delay * 1000 * 0.95;
      const wait = await settle(
        { count: 1, headers: JASON },
        s => s.ok === 1 && (s.latencyMs[0] ?? 0) >= slow,
      );
      if (wait) problems.push(wait);
      const j = await mesh.call({ count: delayed, headers: JASON });
      const a = await mesh.call({ count: delayed });
      say(`   ${delayed} calls as jason: ${versions(j)}, latency ${latency(j)}`);
      say(`   ${delayed} calls anonymous: ${versions(a)}, latency ${latency(a)}`);
      if (j.ok !== delayed || j.latencyMs.some(ms => ms < slow))
        problems.push(`want every jason call to succeed after at least ${delay} s`);
      if (j.ratingsUnavailable > 0)
        problems.push('the ratings call failed instead of being delayed');
      if (a.errors > 0 || a.latencyMs.some(ms => ms >= slow))
        problems.push('anonymous calls were slowed down too');
      return problems;
    },
  );

  await step(
    'abort',
    'Fault injection: ratings aborts with HTTP 500 for jason (virtual-service-ratings-test-abort)',
    [ratingsAbortForJason()],
    async () => {
      const problems: string[] = [];
      const wait = await settle(
        { count: 3, headers: JASON },
        s => s.ok === 3 && s.ratingsUnavailable === 3,
      );
      if (wait) problems.push(wait);
      const j = await mesh.call({ count: n, headers: JASON });
      say(
        `   ${n} calls as jason: ${versions(j)}, "Ratings service is currently unavailable" on ${j.ratingsUnavailable} of ${n} pages`,
      );
      if (j.ok !== n || j.ratingsUnavailable !== n)
        problems.push('want every jason page to load with ratings unavailable');
      return problems;
    },
  );

  return results;
}
