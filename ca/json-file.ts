/** A small JSON document on disk, rewritten atomically after each change, writes serialized. */
import * as fs from 'node:fs';
import { writeFileAtomic } from '../common/fs';

export class JsonFile<T> {
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly file: string,
    private readonly empty: () => T,
  ) {}

  /** Reads the document; a missing file is the empty document. */
  async read(): Promise<T> {
    try {
      return JSON.parse(await fs.promises.readFile(this.file, 'utf8')) as T;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return this.empty();
      throw new Error(`failed to read ${this.file}`, { cause: err });
    }
  }

  /**
   * Writes `value` after any write already queued. Each call snapshots `value` now, so later
   * in-memory changes do not leak into an earlier write.
   */
  write(value: T): Promise<void> {
    const text = JSON.stringify(value, null, 2) + '\n';
    const next = this.chain.then(() => writeFileAtomic(this.file, text, 0o600));
    this.chain = next.catch(() => undefined);
    return next;
  }
}
