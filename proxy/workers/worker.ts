/**
 * One worker of `sail proxy --concurrency N` (see primary.ts): a whole Proxy on the primary's
 * options, with its admin and metrics servers on 127.0.0.1 ports of its own, answering the
 * primary's queries over IPC.
 */
import cluster from 'node:cluster';
import type { Logger } from '../../common/logging';
import type { ProxyOptions } from '../options';
import { Proxy } from '../proxy';
import {
  type FromWorker,
  isToWorker,
  type QueryAnswers,
  type QueryKind,
  WORKER_ENV,
  type WorkerSpec,
} from './protocol';

/** The spec the primary forked this process with; undefined outside a worker. */
export function workerSpec(): WorkerSpec | undefined {
  const text = process.env[WORKER_ENV];
  if (!cluster.isWorker || text === undefined) return undefined;
  return JSON.parse(text) as WorkerSpec;
}

/** The worker's Proxy, on the primary's options but admin and metrics of its own. */
export function workerProxy(spec: WorkerSpec, logger: Logger): Proxy {
  const options = {
    ...(spec.options as unknown as Omit<ProxyOptions, 'logger'>),
    logger,
    adminListen: '127.0.0.1:0',
    adminAllowRemote: false,
    metricsListen: '127.0.0.1:0',
  };
  return new Proxy(options);
}

function send(m: FromWorker): void {
  if (!process.connected) return;
  try {
    process.send?.(m);
  } catch {
    // The primary is gone: node:cluster exits this worker on the disconnect.
  }
}

async function answer(proxy: Proxy, what: QueryKind): Promise<QueryAnswers[QueryKind]> {
  switch (what) {
    case 'readiness':
      return proxy.readiness();
    case 'stats':
      return [...proxy.stats()];
    case 'metrics':
      return proxy.metricsJson();
  }
}

/**
 * Wires `proxy` to the primary: queries are answered, `reload` re-reads the certificates, and
 * `shutdown` calls `onShutdown`. Returns what tells the primary the proxy started (call after
 * start()) and undoes the wiring.
 */
export function serveWorker(
  proxy: Proxy,
  log: Logger,
  onShutdown: () => void,
): { started(): void; detach(): void } {
  const onMessage = (m: unknown) => {
    if (!isToWorker(m)) return;
    switch (m.sail) {
      case 'query':
        answer(proxy, m.what).then(
          value => send({ sail: 'answer', id: m.id, value }),
          (err: unknown) => send({ sail: 'answer', id: m.id, error: (err as Error).message }),
        );
        return;
      case 'reload':
        log.info('Reloading certificates (primary)');
        proxy.reloadCertificates().catch((err: unknown) => {
          log.error({ err }, 'Certificate reload failed');
        });
        return;
      case 'shutdown':
        onShutdown();
    }
  };
  process.on('message', onMessage);
  return {
    started() {
      if (proxy.adminAddress) send({ sail: 'started', admin: proxy.adminAddress });
      proxy.whenReady().then(
        () => send({ sail: 'ready' }),
        () => undefined,
      );
    },
    detach() {
      process.off('message', onMessage);
    },
  };
}
