/**
 * A fair admission queue for signing. Work is queued per caller (a node, a token, a peer address)
 * and served round-robin across callers, so a thousand hosts renewing at once are all served in
 * turn, and one host that floods the CA waits behind everyone else instead of starving them.
 * Bounded: a caller with `maxPerCaller` queued requests is told RESOURCE_EXHAUSTED, and a CA with
 * `maxTotal` queued answers UNAVAILABLE; both are retried by clients with backoff.
 */
import { exhausted, notReady } from './errors';

interface Job {
  run: () => Promise<void>;
}

export interface FairQueueOptions {
  readonly maxPerCaller: number;
  readonly maxTotal: number;
  /** Jobs run back to back before yielding to I/O (so new requests get in and are queued fairly). */
  readonly batch?: number;
}

export class FairQueue {
  /** Callers with queued work, in round-robin order; a Map keeps insertion order. */
  private readonly queues = new Map<string, Job[]>();
  private total = 0;
  private running = false;
  private readonly batch: number;

  constructor(private readonly opts: FairQueueOptions) {
    this.batch = opts.batch ?? 16;
  }

  /** Jobs waiting now. */
  get depth(): number {
    return this.total;
  }

  /**
   * Runs `fn` when this caller's turn comes.
   * @throws ResourceExhaustedError (CA_QUEUE_FULL) or NotReadyError (CA_OVERLOADED) without running it
   */
  submit<T>(caller: string, fn: () => Promise<T> | T): Promise<T> {
    let q = this.queues.get(caller);
    if (q && q.length >= this.opts.maxPerCaller) {
      return Promise.reject(
        exhausted('CA_QUEUE_FULL', `caller ${caller} has ${q.length} requests queued; retry later`),
      );
    }
    if (this.total >= this.opts.maxTotal) {
      return Promise.reject(
        notReady(`the CA has ${this.total} requests queued; retry later`, 'CA_OVERLOADED'),
      );
    }
    return new Promise<T>((resolve, reject) => {
      const job: Job = {
        run: async () => {
          try {
            resolve(await fn());
          } catch (err) {
            reject(err instanceof Error ? err : new Error(String(err)));
          }
        },
      };
      if (!q) {
        q = [];
        this.queues.set(caller, q);
      }
      q.push(job);
      this.total++;
      if (!this.running) {
        this.running = true;
        setImmediate(() => {
          this.drain().catch(() => undefined); // jobs catch their own errors; drain cannot reject
        });
      }
    });
  }

  private async drain(): Promise<void> {
    let ran = 0;
    while (this.total > 0) {
      // One job from each caller in turn: take the first caller, move it to the back.
      const [caller, q] = this.queues.entries().next().value as [string, Job[]];
      const job = q.shift() as Job;
      this.total--;
      this.queues.delete(caller);
      if (q.length > 0) this.queues.set(caller, q);
      await job.run();
      if (++ran % this.batch === 0) await new Promise<void>(r => setImmediate(r));
    }
    this.running = false;
  }
}
