/**
 * `sail node-agent`: the per-host daemon. The main script of STYLE 2.3 rule 6: load the config
 * (exit 2 when invalid), make the root logger, construct, start, and close on SIGTERM/SIGINT.
 */
import * as path from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { ConfigError } from '../../common/errors';
import { LOG_LEVELS, type LogLevel } from '../../common/logging';
import {
  DEFAULT_CONFIG_FILE,
  NodeAgent,
  type NodeAgentSettings,
  loadNodeAgentConfig,
  lookupSystemUser,
} from '../../node-agent';
import { commandLogger, notifySystemdReady, runUntilSignal } from '../run';

interface NodeAgentArgs {
  config: string;
  validate: boolean;
  'log-level'?: string;
}

export const nodeAgentCommand: CommandModule<object, NodeAgentArgs> = {
  command: 'node-agent',
  describe:
    "Run the node agent: this host's identity, registration and health, the supervised proxy, traffic capture, DNS and status (:15020)",
  builder: y =>
    y
      .option('config', {
        type: 'string',
        default: DEFAULT_CONFIG_FILE,
        describe: 'Agent config file (written by `sail join`)',
      })
      .option('validate', {
        type: 'boolean',
        default: false,
        describe: 'Check the config file and exit: 0 when valid, 2 when not',
      })
      .option('log-level', {
        type: 'string',
        choices: LOG_LEVELS as unknown as string[],
        describe: 'Log level (env SAIL_LOG_LEVEL; default: logLevel in the config, else info)',
      })
      .example(
        '$0 node-agent --config /etc/sail/node-agent.yaml',
        'Run the agent (systemd does this)',
      )
      .example(
        '$0 node-agent --validate --config /etc/sail/node-agent.yaml',
        'Check an edited config',
      ) as unknown as Argv<NodeAgentArgs>,
  handler: async args => {
    // Load the config: a ConfigError maps to exit code 2.
    const configFile = path.resolve(args.config);
    const config = loadNodeAgentConfig(configFile);
    if (args.validate) {
      const s = config.settings;
      process.stdout.write(
        `${configFile}: valid (node ${s.nodeName}, spiffe://${s.trustDomain}/ns/${s.workload.namespace}/sa/${s.workload.serviceAccount}, CA ${s.controlPlane.caAddress})\n`,
      );
      return;
    }

    // Root logger: flag, then environment, then the config file.
    const logger = commandLogger(
      'node-agent',
      args['log-level'] as LogLevel | undefined,
      config.logLevel,
    );

    // The proxy's user: the proxy runs as it and owns the certificate files. The agent takes it as
    // its own group, so capture's owner match (by gid) also exempts the agent's own connections
    // to the control plane and its DNS forwarding.
    const settings = config.settings;
    const proxyUser = resolveProxyUser(configFile, settings);
    if (proxyUser && process.getgid?.() !== proxyUser.gid) process.setgid?.(proxyUser.gid);

    // Construct, start, and run until a signal.
    const agent = new NodeAgent({
      ...settings,
      certs: proxyUser ? { ...settings.certs, owner: proxyUser } : settings.certs,
      ...(proxyUser ? { proxyUser } : {}),
      logLevel: logger.level as LogLevel,
      logger,
      onFatal: err => {
        logger.fatal({ err }, 'Node agent failed');
        process.exit(1);
      },
    });
    await runUntilSignal(logger, {
      start: async () => {
        await agent.start();
        notifySystemdReady(logger);
      },
      close: () => agent.close(),
    });
  },
};

/**
 * The proxy's system user when the agent runs as root and supervises a proxy; undefined
 * otherwise (the proxy then runs as the agent's user).
 * @throws ConfigError when the user does not exist or capture is on without root
 */
function resolveProxyUser(
  configFile: string,
  settings: NodeAgentSettings,
): { uid: number; gid: number } | undefined {
  if (!settings.proxy.enabled) return undefined;
  const root = process.getuid?.() === 0;
  if (!root) {
    if (settings.capture.mode !== 'none')
      throw new ConfigError(
        `${configFile}: capture.mode: ${settings.capture.mode} needs root (iptables); run the agent as root or set capture.mode: none`,
      );
    return undefined;
  }
  const user = lookupSystemUser(settings.proxy.user);
  if (!user)
    throw new ConfigError(
      `${configFile}: proxy.user: no such user ${JSON.stringify(settings.proxy.user)} in /etc/passwd (the sail-node-agent package creates it; by hand: useradd --system --no-create-home --shell /usr/sbin/nologin ${settings.proxy.user})`,
    );
  return user;
}
