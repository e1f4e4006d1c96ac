import { FakeClock } from './fake-clock';

describe('FakeClock', () => {
  it('wakes sleeps in due order only when time passes them', async () => {
    const clock = new FakeClock(1_000);
    const woke: string[] = [];
    const a = clock.sleep(200).then(() => woke.push(`a@${clock.now()}`));
    const b = clock.sleep(100).then(() => woke.push(`b@${clock.now()}`));
    expect(clock.pendingSleeps).toBe(2);
    expect(clock.nextSleepInMs).toBe(100);
    clock.advance(99);
    await Promise.resolve();
    expect(woke).toEqual([]);
    expect(clock.advanceToNextSleep()).toBe(1);
    await b;
    clock.advance(500);
    await a;
    expect(woke).toEqual(['b@1100', 'a@1600']);
    expect(clock.pendingSleeps).toBe(0);
  });

  it('rejects an aborted sleep with the reason and forgets it', async () => {
    const clock = new FakeClock();
    const ac = new AbortController();
    const p = clock.sleep(1_000, ac.signal);
    ac.abort(new Error('stop'));
    await expect(p).rejects.toThrow('stop');
    expect(clock.pendingSleeps).toBe(0);
    await expect(clock.sleep(1, ac.signal)).rejects.toThrow('stop');
  });

  it('lets a test wait until the code under test sleeps', async () => {
    const clock = new FakeClock();
    const waiting = clock.waitForSleepers(1);
    let slept: Promise<void> | undefined;
    setImmediate(() => {
      slept = clock.sleep(10);
    });
    await waiting;
    expect(clock.pendingSleeps).toBe(1);
    clock.advance(10);
    await slept;
    await expect(new FakeClock().waitForSleepers(1, 20)).rejects.toThrow(
      'expected 1 pending sleep(s) within 20 ms',
    );
  });

  it('resolves a zero sleep without advancing time', async () => {
    const clock = new FakeClock(5);
    await clock.sleep(0);
    expect(clock.now()).toBe(5);
  });
});
