/**
 * `sail proxy`: the data plane of a host, normally spawned by the node agent. The main script of
 * STYLE 2.3 rule 6: load the config (exit 2 when invalid), make the root logger, construct,
 * start, and close on SIGTERM/SIGINT (exit 0). SIGHUP re-reads the certificate directory. A start
 * failure (a port in use) exits 1.
 */
import * as path from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { LOG_LEVELS, type LogLevel } from '../../common/logging';
import {
  DEFAULT_PROXY_CONFIG_FILE,
  describeProxyConfig,
  loadProxyConfig,
  Proxy,
  type ProxyConfigOverrides,
} from '../../proxy';
import { commandLogger, notifySystemdReady, runUntilSignal } from '../run';

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
      .example('$0 proxy --config /etc/sail/proxy.yaml', 'Run the proxy (the node agent does this)')
      .example(
        '$0 proxy --validate --config /etc/sail/proxy.yaml',
        'Check an edited config',
      ) as unknown as Argv<ProxyArgs>,
  handler: async args => {
    // Load the config: a ConfigError maps to exit code 2.
    const configFile = path.resolve(args.config);
    const config = loadProxyConfig(configFile, overridesOf(args));
    if (args.validate) {
      process.stdout.write(`${configFile}: valid (${describeProxyConfig(config)})\n`);
      return;
    }

    // Root logger: flag, then environment, then the config file.
    const logger = commandLogger(
      'proxy',
      args['log-level'] as LogLevel | undefined,
      config.logLevel,
    );

    // Construct, start, and run until a signal.
    const proxy = new Proxy({ ...config.options, logger });
    const onHup = () => {
      logger.info('Reloading certificates (SIGHUP)');
      proxy.reloadCertificates().catch((err: unknown) => {
        logger.error({ err }, 'Certificate reload failed');
      });
    };
    await runUntilSignal(logger, {
      start: async () => {
        process.on('SIGHUP', onHup);
        await proxy.start();
        proxy.whenReady().then(
          () => {
            logger.info('Proxy ready');
            notifySystemdReady(logger);
          },
          (err: unknown) => logger.debug({ err }, 'Proxy closed before it was ready'),
        );
      },
      close: async () => {
        process.off('SIGHUP', onHup);
        await proxy.close();
      },
    });
  },
};
