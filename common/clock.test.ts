import { MAX_TIMER_MS, systemClock } from './clock';

describe('systemClock.sleep', () => {
  it('resolves after a short delay', async () => {
    const t0 = Date.now();
    await systemClock.sleep(30);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(25);
  });

  it('does not fire early for delays beyond the 24.8-day timer limit', async () => {
    const ac = new AbortController();
    let settled = false;
    const p = systemClock.sleep(MAX_TIMER_MS * 2, ac.signal).then(
      () => (settled = true),
      () => 'aborted',
    );
    await new Promise(r => setTimeout(r, 50));
    expect(settled).toBe(false);
    ac.abort(new Error('stop'));
    await expect(p).resolves.toBe('aborted');
  });

  it('rejects at once when the signal is already aborted', async () => {
    const ac = new AbortController();
    ac.abort(new Error('gone'));
    await expect(systemClock.sleep(1000, ac.signal)).rejects.toThrow('gone');
  });
});
