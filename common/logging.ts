/**
 * Logging: pino JSON lines to stdout (journald captures them). Components take a `Logger` in their
 * options and make children; only `main` code creates the root logger.
 */
import pino from 'pino';

export type Logger = pino.Logger;

/** Log field names, declared once (docs/logging.md lists them). */
export const LogField = {
  component: 'component',
  subsystem: 'subsystem',
  spiffeId: 'spiffeId',
  node: 'node',
  serial: 'serial',
  notAfter: 'notAfter',
  address: 'address',
  tokenId: 'tokenId',
  peer: 'peer',
  dataDir: 'dataDir',
  path: 'path',
  delayMs: 'delayMs',
  attempt: 'attempt',
  method: 'method',
  code: 'code',
  reason: 'reason',
  attestation: 'attestation',
  expired: 'expired',
  wanted: 'wanted',
  mtls: 'mtls',
  role: 'role',
  namespace: 'namespace',
  nodeId: 'nodeId',
  connection: 'connection',
  object: 'object',
  outcome: 'outcome',
  revision: 'revision',
  // proxy (proxy/proxy.ts, proxy/admin)
  versions: 'versions',
  changed: 'changed',
  fromCache: 'fromCache',
  listeners: 'listeners',
  clusters: 'clusters',
  ready: 'ready',
  shutdownGraceMs: 'shutdownGraceMs',
  signal: 'signal',
  // proxy listeners (proxy/listeners)
  listener: 'listener',
  host: 'host',
  port: 'port',
  capture: 'capture',
  connections: 'connections',
  drainMs: 'drainMs',
  chain: 'chain',
  cluster: 'cluster',
  responseFlags: 'responseFlags',
  upstream: 'upstream',
  remote: 'remote',
  // proxy xDS client (proxy/xds)
  kind: 'kind',
  version: 'version',
  nonce: 'nonce',
  failed: 'failed',
  missing: 'missing',
  missingCount: 'missingCount',
  counts: 'counts',
  savedAt: 'savedAt',
  typeUrl: 'typeUrl',
  resources: 'resources',
  ignored: 'ignored',
} as const;

/** Fixed redaction list (never from config: pino's warning about user-defined redaction). */
export const REDACT_PATHS = [
  '*.privateKey',
  '*.privateKeyPem',
  '*.token',
  'token',
  'req.headers.authorization',
  'authorization',
];

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Creates the process's root logger; `destination` defaults to stdout. */
export function createRootLogger(
  level: LogLevel = 'info',
  destination?: pino.DestinationStream,
): Logger {
  return pino(
    {
      level,
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: label => ({ level: label }) },
    },
    destination ?? pino.destination({ dest: 1, sync: true }),
  );
}

/** A logger that drops everything (tests that do not look at logs). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
