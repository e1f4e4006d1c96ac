/**
 * `sail proxy`: the data plane of a host, normally spawned by the node agent. The main script of
 * STYLE 2.3 rule 6: load the config (exit 2 when invalid), make the root logger, construct,
 * start, and close on SIGTERM/SIGINT (exit 0). SIGHUP re-reads the certificate directory. A start
 * failure (a port in use) exits 1.
 */
import cluster from 'node:cluster';
import * as path from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { LOG_LEVELS, type Logger, type LogLevel } from '../../common/logging';
import {
  DEFAULT_PROXY_CONFIG_FILE,
  describeProxyConfig,
  type LoadedProxyConfig,
  loadProxyConfig,
  type ProxyConfigOverrides,
} from '../../proxy/config/proxy-config';
import type * as ProxyModule from '../../proxy/proxy';
import { ProxyPrimary } from '../../proxy/workers/primary';
import type { WorkerSpec } from '../../proxy/workers/protocol';
import type * as WorkerModule from '../../proxy/workers/worker';
import { commandLogger, notifySystemdReady, runUntilSignal } from '../run';

/* eslint-disable @typescript-eslint/no-require-imports -- loaded on demand, typed by the imports above */
/**
 * The data path's modules, loaded only where a Proxy runs: a `--concurrency` primary runs none and
 * is ~7 MB smaller without them.
 */
const proxyModule = () => require('../../proxy/proxy') as typeof ProxyModule;
const workerModule = () => require('../../proxy/workers/worker') as typeof WorkerModule;
/* eslint-enable @typescript-eslint/no-require-imports */

interface ProxyArgs {
  config: string;
  validate: boolean;
  'log-level'?: string;
  'node-id'?: string;
  'pilot-address'?: string;
  'certs-dir'?: string;
  'state-dir'?: string;
  'admin-listen'?: string;
  'metrics-listen'?: string;
  'traffic-mode'?: string;
  'access-log'?: boolean;
  concurrency?: number;
}

function overridesOf(args: ProxyArgs): ProxyConfigOverrides {
  return {
    ...(args['node-id'] !== undefined ? { nodeId: args['node-id'] } : {}),
    ...(args['pilot-address'] !== undefined ? { pilotAddress: args['pilot-address'] } : {}),
    ...(args['certs-dir'] !== undefined ? { certsDir: args['certs-dir'] } : {}),
    ...(args['state-dir'] !== undefined ? { stateDir: args['state-dir'] } : {}),
    ...(args['admin-listen'] !== undefined ? { adminListen: args['admin-listen'] } : {}),
    ...(args['metrics-listen'] !== undefined ? { metricsListen: args['metrics-listen'] } : {}),
    ...(args['traffic-mode'] !== undefined ? { trafficMode: args['traffic-mode'] } : {}),
    ...(args['access-log'] !== undefined ? { accessLog: args['access-log'] } : {}),
    ...(args.concurrency !== undefined ? { concurrency: args.concurrency } : {}),
  };
}

export const proxyCommand: CommandModule<object, ProxyArgs> = {
  command: 'proxy',
  describe:
    'Run the proxy: the data plane of this host (xDS from pilot, mTLS, admin on 127.0.0.1:15000, metrics on :15090)',
  builder: y =>
    y
      .option('config', {
        type: 'string',
        default: DEFAULT_PROXY_CONFIG_FILE,
        describe: 'Proxy config file (written by the node agent, or by hand)',
      })
      .option('validate', {
        type: 'boolean',
        default: false,
        describe: 'Check the config file (and flags) and exit: 0 when valid, 2 when not',
      })
      .option('log-level', {
        type: 'string',
        choices: LOG_LEVELS as unknown as string[],
        describe: 'Log level (env SAIL_LOG_LEVEL; default: logLevel in the config, else info)',
      })
      .option('node-id', {
        type: 'string',
        describe: 'Istio node id sidecar~IP~NAME.NAMESPACE~DOMAIN (overrides node/nodeId)',
      })
      .option('pilot-address', { type: 'string', describe: "pilot's xDS HOST:PORT" })
      .option('certs-dir', {
        type: 'string',
        describe: 'Certificate directory: cert-chain.pem, key.pem, root-cert.pem',
      })
      .option('state-dir', {
        type: 'string',
        describe: 'Where the last-known-good configuration is kept',
      })
      .option('admin-listen', { type: 'string', describe: 'Admin HOST:PORT (loopback)' })
      .option('metrics-listen', { type: 'string', describe: 'Prometheus HOST:PORT' })
      .option('traffic-mode', {
        type: 'string',
        describe: 'capture (iptables sends traffic to :15001/:15006) or explicit',
      })
      .option('access-log', {
        type: 'boolean',
        describe: 'One JSON line per request and TCP connection on stdout',
      })
      .option('concurrency', {
        type: 'number',
        describe:
          'Worker processes (overrides concurrency): 1 runs the data plane in this process, N > 1 forks N behind one admin port, 0 one per core',
      })
      .example('$0 proxy --config /etc/sail/proxy.yaml', 'Run the proxy (the node agent does this)')
      .example('$0 proxy --concurrency 2', 'Two worker processes behind one admin port')
      .example(
        '$0 proxy --validate --config /etc/sail/proxy.yaml',
        'Check an edited config',
      ) as unknown as Argv<ProxyArgs>,
  handler: async args => {
    // A worker of a --concurrency primary: the primary's config, not the file's current one.
    const spec = cluster.isWorker ? workerModule().workerSpec() : undefined;
    if (spec) {
      const logger = commandLogger('proxy', flagLevel(args), spec.logLevel).child({
        worker: spec.index,
      });
      await runWorker(logger, spec);
      return;
    }

    // Load the config: a ConfigError maps to exit code 2.
    const configFile = path.resolve(args.config);
    const config = loadProxyConfig(configFile, overridesOf(args));
    if (args.validate) {
      process.stdout.write(`${configFile}: valid (${describeProxyConfig(config)})\n`);
      return;
    }

    // Root logger: flag, then environment, then the config file.
    const logger = commandLogger('proxy', flagLevel(args), config.logLevel);
    if (config.concurrency > 1) await runPrimary(logger, config);
    else await runProxy(logger, new (proxyModule().Proxy)({ ...config.options, logger }));
  },
};

function flagLevel(args: ProxyArgs): LogLevel | undefined {
  return args['log-level'] as LogLevel | undefined;
}

/** What `sail proxy` runs: a Proxy, or the primary of its workers. */
interface ProxyRunnable {
  start(): Promise<void>;
  close(): Promise<void>;
  whenReady(): Promise<void>;
  reloadCertificates(): Promise<void> | void;
}

/**
 * Starts `proxy`, tells systemd once it is ready (logging `readyFields` with it), and closes it on
 * SIGTERM/SIGINT or when `stop` aborts; SIGHUP re-reads the certificates. `onStarted` runs once
 * start() resolved.
 */
async function runProxy(
  logger: Logger,
  proxy: ProxyRunnable,
  opts: { stop?: AbortSignal; onStarted?: () => void; readyFields?: Record<string, unknown> } = {},
): Promise<void> {
  const onHup = () => {
    logger.info('Reloading certificates (SIGHUP)');
    Promise.resolve(proxy.reloadCertificates()).catch((err: unknown) => {
      logger.error({ err }, 'Certificate reload failed');
    });
  };
  await runUntilSignal(
    logger,
    {
      start: async () => {
        process.on('SIGHUP', onHup);
        await proxy.start();
        opts.onStarted?.();
        proxy.whenReady().then(
          () => {
            logger.info(opts.readyFields ?? {}, 'Proxy ready');
            notifySystemdReady(logger);
          },
          (err: unknown) => logger.debug({ err }, 'Proxy closed before it was ready'),
        );
      },
      close: async () => {
        process.off('SIGHUP', onHup);
        await proxy.close();
      },
    },
    opts.stop,
  );
}

/** A worker: its Proxy, run until the primary (or a signal) says stop. */
async function runWorker(logger: Logger, spec: WorkerSpec): Promise<void> {
  const { serveWorker, workerProxy } = workerModule();
  const proxy = workerProxy(spec, logger);
  const stop = new AbortController();
  const wiring = serveWorker(proxy, logger, () => stop.abort('primary'));
  try {
    await runProxy(logger, proxy, { stop: stop.signal, onStarted: () => wiring.started() });
  } finally {
    wiring.detach();
    // Leave the IPC channel so the process can exit (node:cluster then knows it meant to).
    if (process.connected) cluster.worker?.disconnect();
  }
}

/** The primary of --concurrency N: forks the workers and is their admin, metrics and signals. */
async function runPrimary(logger: Logger, config: LoadedProxyConfig): Promise<void> {
  const primary = new ProxyPrimary({
    logger,
    workers: config.concurrency,
    options: config.options,
    logLevel: config.logLevel,
  });
  await runProxy(logger, primary, { readyFields: { workers: config.concurrency } });
}
