/** `sail proxy --concurrency N`: the primary and its worker processes. */
export { mergeStats } from './merge-stats';
export { ProxyPrimary, type ProxyPrimaryOptions } from './primary';
export { WORKER_ENV, type WorkerSpec } from './protocol';
export { serveWorker, workerProxy, workerSpec } from './worker';
