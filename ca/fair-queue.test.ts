import { FairQueue } from './fair-queue';

describe('FairQueue', () => {
  it('serves callers round-robin so a flooding caller does not starve others', async () => {
    const q = new FairQueue({ maxPerCaller: 100, maxTotal: 1000, batch: 4 });
    const order: string[] = [];
    const jobs: Promise<void>[] = [];
    for (let i = 0; i < 20; i++) jobs.push(q.submit('flood', () => void order.push('flood')));
    for (const c of ['a', 'b', 'c']) jobs.push(q.submit(c, () => void order.push(c)));
    await Promise.all(jobs);
    // a, b and c each get a turn within the first four jobs, not after the twenty floods.
    expect(order.slice(0, 4).sort()).toEqual(['a', 'b', 'c', 'flood']);
    expect(order).toHaveLength(23);
  });

  it('refuses a caller past its own limit but still admits others', async () => {
    const q = new FairQueue({ maxPerCaller: 2, maxTotal: 1000 });
    const a1 = q.submit('a', () => 1);
    const a2 = q.submit('a', () => 2);
    await expect(q.submit('a', () => 3)).rejects.toMatchObject({ code: 'CA_QUEUE_FULL' });
    await expect(q.submit('b', () => 4)).resolves.toBe(4);
    await expect(Promise.all([a1, a2])).resolves.toEqual([1, 2]);
  });

  it('answers not-ready when the whole queue is full', async () => {
    const q = new FairQueue({ maxPerCaller: 10, maxTotal: 2 });
    const held = [q.submit('a', () => 1), q.submit('b', () => 2)];
    await expect(q.submit('c', () => 3)).rejects.toMatchObject({ code: 'CA_OVERLOADED' });
    await Promise.all(held);
    expect(q.depth).toBe(0);
  });

  it('passes a job failure to its caller only', async () => {
    const q = new FairQueue({ maxPerCaller: 10, maxTotal: 10 });
    const bad = q.submit('a', () => {
      throw new Error('boom');
    });
    const good = q.submit('b', () => 'ok');
    await expect(bad).rejects.toThrow('boom');
    await expect(good).resolves.toBe('ok');
  });
});
