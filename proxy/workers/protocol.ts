/**
 * The messages between a `sail proxy --concurrency N` primary and its workers, over the IPC
 * channel node:cluster opens. The primary never looks inside a worker: it asks, and the worker
 * answers from its own Proxy.
 *
 *   primary → worker   query {id, what}    readiness | stats | metrics
 *                      reload              SIGHUP's certificate reload
 *                      shutdown            drain and exit (the primary got SIGTERM or SIGINT)
 *   worker → primary   started {admin}     its Proxy started; its own admin server's address
 *                      ready               its Proxy became ready (the first time)
 *                      answer {id, ...}    to a query: value, or error
 */
import type { LogLevel } from '../../common/logging';
import type { Readiness } from '../admin';

/** The environment variable that carries a worker's {@link WorkerSpec}. */
export const WORKER_ENV = 'SAIL_PROXY_WORKER';

/** What a worker is told at fork: its number and the primary's resolved config. */
export interface WorkerSpec {
  /** 1 to N. */
  readonly index: number;
  /** The primary's ProxyOptions without the logger (plain data). */
  readonly options: Record<string, unknown>;
  /** The config file's log level (a flag or SAIL_LOG_LEVEL still wins, as in the primary). */
  readonly logLevel: LogLevel;
}

export type QueryKind = 'readiness' | 'stats' | 'metrics';

export type ToWorker =
  | { readonly sail: 'query'; readonly id: number; readonly what: QueryKind }
  | { readonly sail: 'reload' }
  | { readonly sail: 'shutdown' };

export type FromWorker =
  | { readonly sail: 'started'; readonly admin: string }
  | { readonly sail: 'ready' }
  | {
      readonly sail: 'answer';
      readonly id: number;
      readonly value?: unknown;
      readonly error?: string;
    };

/** What each query is answered with. */
export interface QueryAnswers {
  readonly readiness: Readiness;
  /** `/stats` entries. */
  readonly stats: readonly (readonly [string, number | string])[];
  /** prom-client `getMetricsAsJSON()` of the worker's registries. */
  readonly metrics: readonly unknown[];
}

function isRecord(m: unknown): m is Record<string, unknown> {
  return typeof m === 'object' && m !== null;
}

/** True for a message of ours (other users of the channel, like prom-client's, are ignored). */
export function isToWorker(m: unknown): m is ToWorker {
  return (
    isRecord(m) &&
    (m.sail === 'reload' ||
      m.sail === 'shutdown' ||
      (m.sail === 'query' && typeof m.id === 'number' && typeof m.what === 'string'))
  );
}

export function isFromWorker(m: unknown): m is FromWorker {
  return (
    isRecord(m) &&
    ((m.sail === 'started' && typeof m.admin === 'string') ||
      m.sail === 'ready' ||
      (m.sail === 'answer' && typeof m.id === 'number'))
  );
}
