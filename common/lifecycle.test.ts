import { setTimeout as sleep } from 'node:timers/promises';
import { systemClock } from './clock';
import { CloseOnce, isAbortError, runTasks, type Task } from './lifecycle';

/** A task that runs until its signal aborts, recording the abort reason. */
function untilAborted(seen: { reason?: unknown; stopped: boolean }): Task {
  return async signal => {
    try {
      await systemClock.sleep(3_600_000, signal);
    } finally {
      seen.stopped = true;
      seen.reason = signal.reason;
    }
  };
}

describe('runTasks', () => {
  it('resolves when every task finishes', async () => {
    const done: number[] = [];
    await runTasks(
      [1, 2, 3].map(n => async () => {
        await sleep(n);
        done.push(n);
      }),
      new AbortController().signal,
    );
    expect(done.sort()).toEqual([1, 2, 3]);
  });

  it('resolves at once with no tasks', async () => {
    await expect(runTasks([], new AbortController().signal)).resolves.toBeUndefined();
  });

  it('aborts the other tasks on the first error and rethrows it once all have settled', async () => {
    const boom = new Error('rotator failed');
    const a = { stopped: false } as { reason?: unknown; stopped: boolean };
    const b = { stopped: false } as { reason?: unknown; stopped: boolean };
    const failing: Task = async () => {
      await sleep(1);
      throw boom;
    };
    await expect(
      runTasks([untilAborted(a), failing, untilAborted(b)], new AbortController().signal),
    ).rejects.toBe(boom);
    expect(a).toEqual({ stopped: true, reason: boom });
    expect(b).toEqual({ stopped: true, reason: boom });
  });

  it('keeps the first error when several tasks fail', async () => {
    const first = new Error('first');
    const second = new Error('second');
    await expect(
      runTasks(
        [
          async () => {
            await sleep(1);
            throw first;
          },
          async signal => {
            await systemClock.sleep(3_600_000, signal).catch(() => undefined);
            throw second;
          },
        ],
        new AbortController().signal,
      ),
    ).rejects.toBe(first);
  });

  it('waits for slow cleanup in the other tasks before rejecting', async () => {
    let cleanedUp = false;
    const slowToStop: Task = async signal => {
      await systemClock.sleep(3_600_000, signal).catch(() => undefined);
      await sleep(20);
      cleanedUp = true;
    };
    await expect(
      runTasks([slowToStop, () => Promise.reject(new Error('x'))], new AbortController().signal),
    ).rejects.toThrow('x');
    expect(cleanedUp).toBe(true);
  });

  it('rethrows a non-Error rejection as it is', async () => {
    await expect(
      // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- the point of the test
      runTasks([() => Promise.reject('plain string')], new AbortController().signal),
    ).rejects.toBe('plain string');
  });

  /** A task that stops cleanly when asked: it turns its own abort into a normal return. */
  function stopsWhenAsked(seen: { stopped: boolean }): Task {
    return async signal => {
      await systemClock.sleep(3_600_000, signal).catch(() => undefined);
      seen.stopped = signal.aborted;
    };
  }

  it('resolves when the caller aborts, after every task stopped', async () => {
    const controller = new AbortController();
    const seen = [{ stopped: false }, { stopped: false }];
    const running = runTasks(seen.map(stopsWhenAsked), controller.signal);
    await sleep(5);
    expect(seen.some(s => s.stopped)).toBe(false);
    controller.abort();
    await expect(running).resolves.toBeUndefined();
    expect(seen.every(s => s.stopped)).toBe(true);
  });

  it('resolves when started with an already-aborted signal', async () => {
    const controller = new AbortController();
    controller.abort();
    const seen = { stopped: false };
    await expect(runTasks([stopsWhenAsked(seen)], controller.signal)).resolves.toBeUndefined();
    expect(seen.stopped).toBe(true);
  });

  // Known bug (reported): isAbortError uses `instanceof Error`, which is false for the AbortError
  // and DOMException that Node's own code creates when the caller is in another realm, as jest's
  // test context is. So a task that just lets `clock.sleep`'s abort propagate makes runTasks
  // reject under jest (it works in a plain `node` process). Flip to `it` once isAbortError
  // duck-types (`name === 'AbortError' || code === 'ABORT_ERR'` on any object).
  it('resolves when a task lets the abort of its sleep propagate', async () => {
    const controller = new AbortController();
    const seen = { stopped: false };
    const running = runTasks([untilAborted(seen)], controller.signal);
    controller.abort();
    await expect(running).resolves.toBeUndefined();
  });

  it('still reports a real failure that happens while stopping', async () => {
    const controller = new AbortController();
    const broken: Task = async signal => {
      await systemClock.sleep(3_600_000, signal).catch(() => undefined);
      throw new Error('failed to flush');
    };
    const running = runTasks([broken], controller.signal);
    controller.abort();
    await expect(running).rejects.toThrow('failed to flush');
  });

  // Known bug (reported): with a custom abort reason, clock.sleep rejects with that reason (not an
  // AbortError), so runTasks rejects instead of resolving as documented. Flip to `it` once fixed.
  it('resolves when the caller aborts with a custom reason', async () => {
    const controller = new AbortController();
    const running = runTasks([untilAborted({ stopped: false })], controller.signal);
    controller.abort(new Error('shutting down'));
    await expect(running).resolves.toBeUndefined();
  });
});

describe('isAbortError', () => {
  // Known bug (reported): these two come from Node's realm, not jest's; see runTasks above.
  it.each([
    { name: 'an aborted sleep', make: () => abortedSleepError() },
    { name: 'an AbortController reason', make: async () => abortedReason() },
  ])('$name: true', async ({ make }) => {
    expect(isAbortError(await make())).toBe(true);
  });

  it.each([
    {
      name: 'an AbortError made here',
      make: async () => Object.assign(new Error('x'), { name: 'AbortError' }),
      want: true,
    },
    {
      name: 'an error with code ABORT_ERR',
      make: async () => Object.assign(new Error('x'), { code: 'ABORT_ERR' }),
      want: true,
    },
    { name: 'a plain Error', make: async () => new Error('AbortError'), want: false },
    { name: 'a string', make: async () => 'AbortError', want: false },
    { name: 'undefined', make: async () => undefined, want: false },
  ])('$name: $want', async ({ make, want }) => {
    expect(isAbortError(await make())).toBe(want);
  });

  function abortedReason(): unknown {
    const controller = new AbortController();
    controller.abort();
    return controller.signal.reason;
  }

  async function abortedSleepError(): Promise<unknown> {
    const controller = new AbortController();
    const p = sleep(3_600_000, undefined, { signal: controller.signal });
    controller.abort();
    return p.then(
      () => undefined,
      (err: unknown) => err,
    );
  }
});

describe('CloseOnce', () => {
  it('runs the close function once and shares its promise', async () => {
    const once = new CloseOnce();
    let calls = 0;
    const close = async () => {
      calls++;
      await sleep(5);
    };
    expect(once.closed).toBe(false);
    const p1 = once.run(close);
    const p2 = once.run(close);
    expect(once.closed).toBe(true);
    expect(p1).toBe(p2);
    await Promise.all([p1, p2]);
    await once.run(close);
    expect(calls).toBe(1);
  });

  it('shares a rejection too', async () => {
    const once = new CloseOnce();
    const p1 = once.run(() => Promise.reject(new Error('stuck')));
    await expect(p1).rejects.toThrow('stuck');
    await expect(once.run(() => Promise.resolve())).rejects.toThrow('stuck');
  });
});
