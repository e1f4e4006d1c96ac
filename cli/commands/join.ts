/** `sail join`: write the node agent's config, join token and control-plane root on a host. */
import type { Argv, CommandModule } from 'yargs';
import { DEFAULT_CONFIG_FILE, join, parseLabelsFlag, parsePortFlags } from '../../node-agent';

interface JoinArgs {
  'control-plane': string;
  token: string;
  'ca-root'?: string;
  'ca-fingerprint'?: string;
  node?: string;
  namespace: string;
  'service-account': string;
  labels: string[];
  port: string[];
  config: string;
  'trust-domain'?: string;
  'ca-address'?: string;
  'capture-mode': 'redirect' | 'tproxy' | 'none';
  force: boolean;
}

export const joinCommand: CommandModule<object, JoinArgs> = {
  command: 'join',
  describe:
    'Prepare this host to join the mesh: write /etc/sail/node-agent.yaml, the join token and the control plane root; starts nothing',
  builder: y =>
    y
      .option('control-plane', {
        type: 'string',
        demandOption: true,
        describe: 'Host name or IP of the control plane (CA :15012, pilot :15010, mixer :9091)',
      })
      .option('token', {
        type: 'string',
        demandOption: true,
        describe: 'Join token from `sail token create` (single-use; written 0600)',
      })
      .option('ca-root', {
        type: 'string',
        describe: 'PEM file with the control plane root (its DATA_DIR/root-cert.pem)',
      })
      .option('ca-fingerprint', {
        type: 'string',
        describe:
          'SHA-256 of the control plane root (hex, colons allowed); the root is fetched from the CA and checked',
      })
      .conflicts('ca-root', 'ca-fingerprint')
      .option('node', {
        type: 'string',
        describe: 'Node name the token was created for (default: this host name)',
      })
      .option('namespace', {
        type: 'string',
        default: 'default',
        describe: 'Namespace of the workload identity',
      })
      .option('service-account', {
        type: 'string',
        default: 'default',
        describe: 'Service account of the workload identity',
      })
      .option('labels', {
        type: 'string',
        array: true,
        default: [] as string[],
        describe: 'Workload labels k=v,k2=v2 (repeatable)',
      })
      .option('port', {
        type: 'string',
        array: true,
        default: [] as string[],
        describe:
          'Workload port NAME:PORT, the name carrying the protocol (http, grpc-api, tcp-db); repeatable',
      })
      .option('config', {
        type: 'string',
        default: DEFAULT_CONFIG_FILE,
        describe: 'Config file to write; the token and root go to the same directory',
      })
      .option('trust-domain', {
        type: 'string',
        describe:
          "Trust domain of the mesh (default: the CA's with --ca-fingerprint, else cluster.local)",
      })
      .option('ca-address', {
        type: 'string',
        describe: 'CA HOST:PORT when it is not CONTROL_PLANE:15012',
      })
      .option('capture-mode', {
        choices: ['redirect', 'tproxy', 'none'] as const,
        default: 'redirect' as const,
        describe:
          'Inbound capture: nat REDIRECT, TPROXY (no NAT; the agent holds the transparent socket), or none (applications dial 127.0.0.1:PORT)',
      })
      .option('force', {
        type: 'boolean',
        default: false,
        describe: 'Overwrite an existing config file',
      })
      .example(
        '$0 join --control-plane 10.0.0.10 --token "$TOKEN" --ca-fingerprint 3f:9a:…:c2 --namespace default --service-account reviews --labels app=reviews,version=v1 --port http:9080',
        'Join with the root checked against its fingerprint',
      )
      .example(
        '$0 join --control-plane cp.example.com --token "$TOKEN" --ca-root ./root-cert.pem',
        'Join with a root copied from the control plane',
      )
      .example(
        'sudo systemctl enable --now sail-node-agent',
        'Then start the agent',
      ) as unknown as Argv<JoinArgs>,
  handler: async args => {
    const result = await join({
      controlPlane: args['control-plane'],
      token: args.token,
      ...(args['ca-root'] !== undefined ? { caRootFile: args['ca-root'] } : {}),
      ...(args['ca-fingerprint'] !== undefined ? { caFingerprint: args['ca-fingerprint'] } : {}),
      ...(args.node !== undefined ? { nodeName: args.node } : {}),
      namespace: args.namespace,
      serviceAccount: args['service-account'],
      labels: parseLabelsFlag(args.labels),
      ports: parsePortFlags(args.port),
      configFile: args.config,
      ...(args['trust-domain'] !== undefined ? { trustDomain: args['trust-domain'] } : {}),
      ...(args['ca-address'] !== undefined ? { caAddress: args['ca-address'] } : {}),
      captureMode: args['capture-mode'],
      force: args.force,
    });
    process.stdout.write(
      [
        `Wrote ${result.configFile}`,
        `      ${result.rootCertFile} (root SHA-256 ${result.rootFingerprints.join(', ')})`,
        `      ${result.tokenFile} (0600, deleted by the agent after use)`,
        `Node ${result.nodeName} will ask ${result.caAddress} for ${result.spiffeId}.`,
        'Start the agent with: systemctl enable --now sail-node-agent',
        '',
      ].join('\n'),
    );
  },
};
