/** pino into memory, so tests can assert on log entries (STYLE 2.10 rule 5; pino's `sink()`). */
import { Writable } from 'node:stream';
import pino from 'pino';
import type { Logger } from '../../common/logging';
import { REDACT_PATHS } from '../../common/logging';

/** One parsed log line. */
export interface LogEntry {
  readonly level: string;
  readonly msg: string;
  readonly [field: string]: unknown;
}

/** A logger that records every entry (with the production redaction list) in `entries`. */
export class LogCapture {
  readonly entries: LogEntry[] = [];
  readonly logger: Logger;

  constructor(level: pino.LevelWithSilent = 'debug') {
    const entries = this.entries;
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const line of chunk.toString('utf8').split('\n')) {
          if (line.trim() !== '') entries.push(JSON.parse(line) as LogEntry);
        }
        cb();
      },
    });
    this.logger = pino(
      {
        level,
        redact: { paths: REDACT_PATHS, censor: '[redacted]' },
        formatters: { level: label => ({ level: label }) },
      },
      sink,
    );
  }

  /** Entries with message `msg` (and, when given, level `level`). */
  find(msg: string, level?: string): LogEntry[] {
    return this.entries.filter(e => e.msg === msg && (level === undefined || e.level === level));
  }

  /** Every entry as one string, to check that a secret never appears. */
  text(): string {
    return this.entries.map(e => JSON.stringify(e)).join('\n');
  }
}
