/** Polling instead of sleeping (STYLE 2.10 rule 6): wait until a condition holds, bounded in time. */

/**
 * Resolves with the first truthy value `cond` returns, polling every `intervalMs` of real time;
 * rejects after `timeoutMs` with `what` in the message.
 */
export async function waitFor<T>(
  cond: () => T | Promise<T>,
  opts: { timeoutMs?: number; intervalMs?: number; what?: string } = {},
): Promise<NonNullable<T>> {
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const intervalMs = opts.intervalMs ?? 10;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const suffix = lastError instanceof Error ? ` (last error: ${lastError.message})` : '';
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${opts.what ?? 'condition'}${suffix}`,
      );
    }
    await new Promise(r => setTimeout(r, intervalMs));
  }
}
