/**
 * `sail pilot`: pilot alone (for split or replicated deployments), and the pilot flags
 * `sail control-plane` shares.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import type { AdminTlsMaterial } from '../../common/admin-server';
import { AdminServer } from '../../common/admin-server';
import { ConfigError } from '../../common/errors';
import { routeGrpcLogs } from '../../common/grpc';
import type { Route } from '../../common/http';
import { createRootLogger, type Logger, type LogLevel, LOG_LEVELS } from '../../common/logging';
import { createRegistry, renderMetrics } from '../../common/metrics';
import { Pilot, type PilotOptions } from '../../pilot/pilot';
import { parseEtcdEndpoints, type StoreOptions } from '../../pilot/store';
import { DEFAULT_DATA_DIR } from '../admin-client';
import { notifySystemdReady, runUntilSignal } from '../run';
import { durationFlag as duration } from './admin-options';

export interface PilotArgs {
  'data-dir': string;
  store: string;
  'etcd-endpoints'?: string;
  'etcd-prefix'?: string;
  'etcd-ca'?: string;
  'etcd-cert'?: string;
  'etcd-key'?: string;
  'xds-plaintext-listen'?: string;
  'trust-domain': string;
  'domain-suffix': string;
  'outbound-traffic-policy': string;
  'debounce-after': string;
  'debounce-max': string;
  'workload-grace': string;
}

/** The flags of pilot, on `sail pilot` and `sail control-plane`. */
export function pilotOptions<T>(y: Argv<T>) {
  return y
    .option('store', {
      type: 'string',
      choices: ['file', 'etcd'],
      default: 'file',
      describe:
        'Where configuration lives: DATA_DIR/config (one pilot) or etcd (replicated pilots)',
    })
    .option('etcd-endpoints', {
      type: 'string',
      describe: 'etcd client URLs, comma-separated (with --store etcd), e.g. http://10.0.0.2:2379',
    })
    .option('etcd-prefix', {
      type: 'string',
      describe: 'Key prefix in etcd (default /sail/config/)',
    })
    .option('etcd-ca', { type: 'string', describe: 'CA file for etcd over TLS' })
    .option('etcd-cert', { type: 'string', describe: 'Client certificate file for etcd' })
    .option('etcd-key', { type: 'string', describe: 'Client key file for etcd' })
    .option('xds-plaintext-listen', {
      type: 'string',
      describe:
        'Also serve xDS WITHOUT TLS on HOST:PORT, for gRPC proxyless clients (off by default; loopback and trusted networks only)',
    })
    .option('domain-suffix', {
      type: 'string',
      default: 'cluster.local',
      describe: 'Short hosts expand to NAME.NAMESPACE.svc.SUFFIX',
    })
    .option('outbound-traffic-policy', {
      type: 'string',
      choices: ['ALLOW_ANY', 'REGISTRY_ONLY'],
      default: 'ALLOW_ANY',
      describe:
        'What sidecars do with destinations outside the registry (a Sidecar resource overrides it)',
    })
    .option('debounce-after', {
      type: 'string',
      default: '100ms',
      describe: 'Push once configuration has been quiet this long',
    })
    .option('debounce-max', {
      type: 'string',
      default: '1s',
      describe: 'Push at the latest this long after the first change of a burst',
    })
    .option('workload-grace', {
      type: 'string',
      default: '30s',
      describe: 'How long a host whose agent disconnected keeps its endpoints',
    });
}

function storeOptions(args: PilotArgs): StoreOptions {
  if (args.store === 'etcd') {
    if (!args['etcd-endpoints'])
      throw new ConfigError('--store etcd needs --etcd-endpoints URL[,URL...]');
    if ((args['etcd-cert'] || args['etcd-key']) && !args['etcd-ca'])
      throw new ConfigError('--etcd-cert and --etcd-key need --etcd-ca');
    return {
      type: 'etcd',
      endpoints: parseEtcdEndpoints(args['etcd-endpoints']),
      ...(args['etcd-prefix'] ? { prefix: args['etcd-prefix'] } : {}),
      ...(args['etcd-ca']
        ? {
            tls: {
              ca: path.resolve(args['etcd-ca']),
              ...(args['etcd-cert'] ? { cert: path.resolve(args['etcd-cert']) } : {}),
              ...(args['etcd-key'] ? { key: path.resolve(args['etcd-key']) } : {}),
            },
          }
        : {}),
    };
  }
  if (args['etcd-endpoints']) throw new ConfigError('--etcd-endpoints needs --store etcd');
  return { type: 'file', dataDir: path.resolve(args['data-dir']) };
}

/** Builds (does not start) pilot from flags. */
export function pilotFromArgs(
  args: PilotArgs,
  listen: string,
  tls: AdminTlsMaterial,
  logger: Logger,
): Pilot {
  const quietMs = duration('debounce-after', args['debounce-after']);
  const maxMs = duration('debounce-max', args['debounce-max']);
  if (maxMs < quietMs) throw new ConfigError('--debounce-max must be at least --debounce-after');
  const opts: PilotOptions = {
    logger,
    listen,
    ...(args['xds-plaintext-listen'] ? { plaintextListen: args['xds-plaintext-listen'] } : {}),
    tls,
    store: storeOptions(args),
    mesh: {
      trustDomain: args['trust-domain'],
      domainSuffix: args['domain-suffix'],
      outboundTrafficPolicy: args['outbound-traffic-policy'] as 'ALLOW_ANY' | 'REGISTRY_ONLY',
    },
    debounce: { quietMs, maxMs },
    disconnectGraceMs: duration('workload-grace', args['workload-grace']),
  };
  return new Pilot(opts);
}

/** Health, readiness and metrics routes for a server made of these parts. */
export function baseRoutes(
  parts: { ready: boolean; metrics: Parameters<typeof renderMetrics>[1] }[],
): Route[] {
  const processMetrics = createRegistry(true);
  return [
    { method: 'GET', path: '/healthz', admin: false, handler: () => ({ text: 'ok\n' }) },
    {
      method: 'GET',
      path: '/readyz',
      admin: false,
      handler: () =>
        parts.every(p => p.ready) ? { text: 'ready\n' } : { status: 503, text: 'not ready\n' },
    },
    {
      method: 'GET',
      path: '/metrics',
      admin: false,
      handler: async () => renderMetrics(processMetrics, ...parts.map(p => p.metrics)),
    },
  ];
}

interface StandaloneArgs extends PilotArgs {
  listen: string;
  'admin-listen': string;
  'cert-dir': string;
  'log-level': string;
}

function readTls(dir: string): AdminTlsMaterial {
  const read = (f: string) => {
    const p = path.join(dir, f);
    try {
      return fs.readFileSync(p, 'utf8');
    } catch (err) {
      throw new ConfigError(
        `--cert-dir: cannot read ${p}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      );
    }
  };
  return {
    certChainPem: read('cert-chain.pem'),
    keyPem: read('key.pem'),
    rootsPem: read('root-cert.pem'),
  };
}

export const pilotCommand: CommandModule<object, StandaloneArgs> = {
  command: 'pilot',
  describe: 'Run pilot alone: configuration, registry and xDS (gRPC mTLS on :15010)',
  builder: y =>
    pilotOptions(y)
      .option('data-dir', {
        type: 'string',
        default: DEFAULT_DATA_DIR,
        describe: 'Where the file store and the admin socket live',
      })
      .option('listen', {
        type: 'string',
        default: '0.0.0.0:15010',
        describe:
          'xDS and registration listen address (mTLS); port 0 picks a free port and logs it',
      })
      .option('admin-listen', {
        type: 'string',
        default: '0.0.0.0:15014',
        describe: 'HTTPS admin endpoint; "" turns it off',
      })
      .option('cert-dir', {
        type: 'string',
        demandOption: true,
        describe:
          'cert-chain.pem, key.pem and root-cert.pem: a serving certificate for spiffe://TD/ns/sail-system/sa/sail-control-plane from the mesh CA; re-read on SIGHUP',
      })
      .option('trust-domain', {
        type: 'string',
        default: 'cluster.local',
        describe: 'SPIFFE trust domain of the mesh',
      })
      .option('log-level', {
        type: 'string',
        choices: LOG_LEVELS as unknown as string[],
        default: process.env.SAIL_LOG_LEVEL ?? 'info',
        describe: 'Log level (env SAIL_LOG_LEVEL)',
      })
      .example(
        '$0 pilot --store etcd --etcd-endpoints http://10.0.0.2:2379 --cert-dir /etc/sail/pilot',
        'A replicated pilot on etcd',
      ) as unknown as Argv<StandaloneArgs>,
  handler: async args => {
    const logger = createRootLogger(args['log-level'] as LogLevel).child({ role: 'pilot' });
    routeGrpcLogs(logger);
    const certDir = path.resolve(args['cert-dir']);
    const tls = readTls(certDir);
    const pilot = pilotFromArgs(args, args.listen, tls, logger);
    let admin: AdminServer | undefined;
    const onHup = () => {
      try {
        const m = readTls(certDir);
        pilot.updateTls(m);
        admin?.updateTls(m);
        logger.info({ certDir }, 'Reloaded serving certificate');
      } catch (err) {
        logger.error({ err }, 'Cannot reload serving certificate; keeping the old one');
      }
    };
    await runUntilSignal(logger, {
      start: async () => {
        await pilot.start();
        admin = new AdminServer({
          logger,
          routes: [...baseRoutes([pilot]), ...pilot.adminRoutes()],
          socket: `unix://${path.join(path.resolve(args['data-dir']), 'admin.sock')}`,
          ...(args['admin-listen'] ? { listen: args['admin-listen'], tls } : {}),
          adminSpiffeIds: [`spiffe://${args['trust-domain']}/ns/sail-system/sa/sail-admin`],
        });
        await admin.start();
        process.on('SIGHUP', onHup);
        notifySystemdReady(logger);
      },
      close: async () => {
        process.off('SIGHUP', onHup);
        await admin?.close();
        await pilot.close();
      },
    });
  },
};
