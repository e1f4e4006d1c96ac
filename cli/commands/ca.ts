/** `sail ca` and `sail control-plane`: the CA alone, or the embedded control plane. */
import * as path from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { CertificateAuthority, type CaOptions, DEFAULT_TRUST_DOMAIN } from '../../ca';
import { AdminServer } from '../../common/admin-server';
import { ConfigError } from '../../common/errors';
import { routeGrpcLogs } from '../../common/grpc';
import type { Route } from '../../common/http';
import { createRootLogger, type LogLevel, LOG_LEVELS } from '../../common/logging';
import { createRegistry, renderMetrics } from '../../common/metrics';
import { KEY_ALGORITHMS, type KeyAlgorithm } from '../../common/pki';
import { adminSpiffeId } from '../../ca';
import { DEFAULT_DATA_DIR } from '../admin-client';
import { notifySystemdReady, runUntilSignal } from '../run';
import { durationFlag } from './admin-options';
import type { Pilot } from '../../pilot/pilot';
import { type PilotArgs, pilotFromArgs, pilotOptions } from './pilot';

interface CaArgs {
  'data-dir': string;
  listen?: string;
  'ca-listen'?: string;
  'admin-listen': string;
  'trust-domain': string;
  'default-cert-ttl': string;
  'max-cert-ttl': string;
  'root-key-algorithm': string;
  'root-cert-ttl': string;
  'ca-cert'?: string;
  'ca-key'?: string;
  'root-cert'?: string;
  'cert-chain'?: string;
  'bootstrap-ca': string[];
  'server-name': string[];
  'log-level': string;
}

/** Options shared by `sail ca` and `sail control-plane`. */
function caOptions<T>(y: Argv<T>) {
  return y
    .option('data-dir', {
      type: 'string',
      default: DEFAULT_DATA_DIR,
      describe:
        'Where the root key, tokens, node entries and admin credentials live (created 0700)',
    })
    .option('admin-listen', {
      type: 'string',
      default: '0.0.0.0:15014',
      describe:
        'HTTPS admin endpoint (mTLS for writes; /healthz, /readyz, /metrics open); "" turns it off',
    })
    .option('trust-domain', {
      type: 'string',
      default: DEFAULT_TRUST_DOMAIN,
      describe: 'SPIFFE trust domain of the mesh',
    })
    .option('default-cert-ttl', {
      type: 'string',
      default: '24h',
      describe: 'Lifetime of a workload certificate when the request names none',
    })
    .option('max-cert-ttl', {
      type: 'string',
      default: '2160h',
      describe: 'Longest workload certificate the CA issues; longer requests are capped',
    })
    .option('root-key-algorithm', {
      type: 'string',
      choices: KEY_ALGORITHMS as string[],
      default: 'ec-p256',
      describe: 'Key algorithm of the self-signed root made at first start',
    })
    .option('root-cert-ttl', {
      type: 'string',
      default: '87600h',
      describe: 'Lifetime of the self-signed root made at first start',
    })
    .option('ca-cert', {
      type: 'string',
      describe: 'Plugged-in CA: the signing certificate (with --ca-key, --root-cert, --cert-chain)',
    })
    .option('ca-key', { type: 'string', describe: 'Plugged-in CA: the signing key' })
    .option('root-cert', {
      type: 'string',
      describe: 'Plugged-in CA: the root certificate(s) workloads trust',
    })
    .option('cert-chain', {
      type: 'string',
      describe: 'Plugged-in CA: chain from the signing certificate up to the root',
    })
    .option('bootstrap-ca', {
      type: 'string',
      array: true,
      default: [] as string[],
      describe: 'PEM file of a CA whose certificates (CN = node name) may attest nodes; repeatable',
    })
    .option('server-name', {
      type: 'string',
      array: true,
      default: [] as string[],
      describe: 'Extra DNS name or IP for the serving certificate; repeatable',
    })
    .option('log-level', {
      type: 'string',
      choices: LOG_LEVELS as unknown as string[],
      default: process.env.SAIL_LOG_LEVEL ?? 'info',
      describe: 'Log level (env SAIL_LOG_LEVEL)',
    });
}

function toCaOptions(args: CaArgs, listen: string, logger: CaOptions['logger']): CaOptions {
  const plugged = [args['ca-cert'], args['ca-key'], args['root-cert'], args['cert-chain']];
  const given = plugged.filter(v => v !== undefined).length;
  if (given !== 0 && given !== 4)
    throw new ConfigError(
      '--ca-cert, --ca-key, --root-cert and --cert-chain go together: give all four or none',
    );
  const abs = (p: string) => path.resolve(p);
  return {
    logger,
    dataDir: abs(args['data-dir']),
    listen,
    trustDomain: args['trust-domain'],
    defaultCertTtlMs: durationFlag('default-cert-ttl', args['default-cert-ttl']),
    maxCertTtlMs: durationFlag('max-cert-ttl', args['max-cert-ttl']),
    rootKeyAlgorithm: args['root-key-algorithm'] as KeyAlgorithm,
    rootTtlMs: durationFlag('root-cert-ttl', args['root-cert-ttl']),
    ...(given === 4
      ? {
          plugged: {
            caCertFile: abs(args['ca-cert']!),
            caKeyFile: abs(args['ca-key']!),
            rootCertFile: abs(args['root-cert']!),
            certChainFile: abs(args['cert-chain']!),
          },
        }
      : {}),
    bootstrapCaFiles: args['bootstrap-ca'].map(abs),
    serverNames: args['server-name'],
  };
}

/** Runs the CA (and, for `control-plane`, pilot) plus the admin endpoint until SIGTERM/SIGINT. */
async function runControlPlane(
  args: CaArgs,
  listen: string,
  role: string,
  pilotArgs?: PilotArgs & { 'pilot-listen': string },
): Promise<void> {
  const logger = createRootLogger(args['log-level'] as LogLevel).child({ role });
  routeGrpcLogs(logger);
  const ca = new CertificateAuthority(toCaOptions(args, listen, logger));
  const processMetrics = createRegistry(true);
  let pilot: Pilot | undefined;
  const base: Route[] = [
    { method: 'GET', path: '/healthz', admin: false, handler: () => ({ text: 'ok\n' }) },
    {
      method: 'GET',
      path: '/readyz',
      admin: false,
      handler: () =>
        ca.ready && (!pilotArgs || pilot?.ready)
          ? { text: 'ready\n' }
          : { status: 503, text: 'not ready\n' },
    },
    {
      method: 'GET',
      path: '/metrics',
      admin: false,
      handler: async () =>
        renderMetrics(processMetrics, ca.metrics, ...(pilot ? [pilot.metrics] : [])),
    },
  ];
  let admin: AdminServer | undefined;
  await runUntilSignal(logger, {
    start: async () => {
      await ca.start();
      if (pilotArgs) {
        pilot = pilotFromArgs(pilotArgs, pilotArgs['pilot-listen'], ca.servingMaterial, logger);
        await pilot.start();
      }
      admin = new AdminServer({
        logger,
        routes: [...base, ...ca.adminRoutes(), ...(pilot?.adminRoutes() ?? [])],
        socket: `unix://${path.join(path.resolve(args['data-dir']), 'admin.sock')}`,
        ...(args['admin-listen'] ? { listen: args['admin-listen'], tls: ca.servingMaterial } : {}),
        adminSpiffeIds: [adminSpiffeId(ca.trustDomain)],
      });
      ca.onServingCertRotated(m => {
        admin?.updateTls(m);
        pilot?.updateTls(m);
      });
      await admin.start();
      notifySystemdReady(logger);
    },
    close: async () => {
      await admin?.close();
      await pilot?.close();
      await ca.close();
    },
  });
}

export const caCommand: CommandModule<object, CaArgs> = {
  command: 'ca',
  describe:
    'Run the certificate authority alone (gRPC/TLS on :15012, admin on :15014 and DATA_DIR/admin.sock)',
  builder: y =>
    caOptions(y)
      .option('listen', {
        type: 'string',
        default: '0.0.0.0:15012',
        describe: 'gRPC listen address; port 0 picks a free port and logs it',
      })
      .example(
        '$0 ca --data-dir /var/lib/sail/control-plane',
        'Start a CA; the root goes to DATA_DIR/root-cert.pem',
      )
      .example(
        '$0 ca --data-dir D --ca-cert ca-cert.pem --ca-key ca-key.pem --root-cert root-cert.pem --cert-chain cert-chain.pem',
        'Sign with your own intermediate',
      ) as unknown as Argv<CaArgs>,
  handler: args => runControlPlane(args, args.listen ?? '0.0.0.0:15012', 'ca'),
};

export const controlPlaneCommand: CommandModule<
  object,
  CaArgs & PilotArgs & { 'pilot-listen': string }
> = {
  command: 'control-plane',
  describe:
    'Run the control plane in one process: the CA (:15012), pilot (:15010) and the admin endpoint (:15014, DATA_DIR/admin.sock)',
  builder: y =>
    pilotOptions(caOptions(y))
      .option('pilot-listen', {
        type: 'string',
        default: '0.0.0.0:15010',
        describe: 'Pilot xDS and registration listen address (mTLS); port 0 picks a free port',
      })
      .option('ca-listen', {
        type: 'string',
        default: '0.0.0.0:15012',
        describe: 'CA gRPC listen address; port 0 picks a free port and logs it',
      })
      .example(
        '$0 control-plane --data-dir /var/lib/sail/control-plane',
        'Start the control plane',
      ) as unknown as Argv<CaArgs & PilotArgs & { 'pilot-listen': string }>,
  handler: args =>
    runControlPlane(args, args['ca-listen'] ?? '0.0.0.0:15012', 'control-plane', args),
};
