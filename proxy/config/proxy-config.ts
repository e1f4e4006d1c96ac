/**
 * The proxy's config file, `/etc/sail/proxy.yaml` (STYLE 2.4): a zod schema of the YAML and its
 * conversion into {@link ProxyOptions}. Unknown keys are rejected and every error names the file
 * and the field path (`/etc/sail/proxy.yaml: traffic.mode: want capture or explicit`). Flags of
 * `sail proxy` override single keys; their errors name the flag.
 *
 * The node agent normally writes this file and spawns the proxy; it can also be written by hand
 * for a proxy run on its own (explicit traffic mode, no capture).
 */
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { z } from 'zod';
import {
  loadConfigFile,
  parseConfig,
  parseHostPort,
  zConcurrency,
  zDuration,
  zHostPort,
} from '../../common/config';
import { ConfigError } from '../../common/errors';
import { LOG_LEVELS, type LogLevel } from '../../common/logging';
import { checkAdminAddress } from '../admin/admin-server';
import { controlPlaneSpiffeId, isValidName, isValidTrustDomain } from '../../common/pki';
import {
  DEFAULT_ADMIN_LISTEN,
  DEFAULT_DRAIN_MS,
  DEFAULT_INITIAL_FETCH_TIMEOUT_MS,
  DEFAULT_METRICS_LISTEN,
  DEFAULT_SHUTDOWN_GRACE_MS,
  type ProxyOptions,
} from '../options';

/** Where `sail proxy` reads its config by default. */
export const DEFAULT_PROXY_CONFIG_FILE = '/etc/sail/proxy.yaml';
export const DEFAULT_TRUST_DOMAIN = 'cluster.local';
export const DEFAULT_CERTS_DIR = '/var/lib/sail/certs';
export const DEFAULT_STATE_DIR = '/var/lib/sail/state';
export const DEFAULT_OUTBOUND_BIND_HOST = '127.0.0.1';
/** The DNS suffix of the Istio node id's domain (`NS.svc.cluster.local`). */
const NODE_DOMAIN_SUFFIX = 'svc.cluster.local';

const LABEL_NAME_RE = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_PREFIX_RE =
  /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Kubernetes label key syntax: `[prefix/]name`. */
function isLabelKey(key: string): boolean {
  const slash = key.indexOf('/');
  if (slash < 0) return LABEL_NAME_RE.test(key);
  return LABEL_PREFIX_RE.test(key.slice(0, slash)) && LABEL_NAME_RE.test(key.slice(slash + 1));
}

/** An Istio node id `TYPE~IP~NAME.NAMESPACE~DOMAIN`, split. */
export interface ParsedNodeId {
  readonly type: 'sidecar' | 'router';
  readonly ip: string;
  readonly name: string;
  readonly namespace: string;
  readonly domain: string;
}

/** Splits an Istio node id; undefined when it is not `sidecar|router~IP~NAME.NS~DOMAIN`. */
export function parseNodeId(id: string): ParsedNodeId | undefined {
  const parts = id.split('~');
  if (parts.length !== 4) return undefined;
  const [type, ip, nameNs, domain] = parts as [string, string, string, string];
  if (type !== 'sidecar' && type !== 'router') return undefined;
  if (net.isIP(ip) === 0) return undefined;
  const dot = nameNs.indexOf('.');
  if (dot <= 0) return undefined;
  const name = nameNs.slice(0, dot);
  const namespace = nameNs.slice(dot + 1);
  if (!isValidName(name) || !isValidName(namespace)) return undefined;
  return { type, ip, name, namespace, domain };
}

/** Builds Istio's sidecar node id for a host. */
export function formatNodeId(node: { name: string; ip: string; namespace: string }): string {
  return `sidecar~${node.ip}~${node.name}.${node.namespace}~${node.namespace}.${NODE_DOMAIN_SUFFIX}`;
}

const zName = (what: string) =>
  z.string().refine(isValidName, {
    message: `invalid ${what}: want lowercase letters, digits, '-' and '.' (at most 253)`,
  });

const zPath = z.string().min(1, 'want a file or directory path');

/** `HOST:PORT` to connect to: port 0 means nothing to a client. */
const zDialAddress = z.string().refine(s => (parseHostPort(s)?.port ?? 0) > 0, {
  message: 'want HOST:PORT with a port from 1 to 65535 (e.g. 10.0.0.10:15010)',
});

const zIp = z.string().refine(s => net.isIP(s) !== 0, { message: 'want an IP address' });

const zNodeId = z.string().refine(s => parseNodeId(s) !== undefined, {
  message: 'want an Istio node id sidecar~IP~NAME.NAMESPACE~DOMAIN',
});

const nodeSchema = z.strictObject({
  name: zName('node name'),
  ip: zIp,
  namespace: zName('namespace').default('default'),
});

const zTrafficMode = z.enum(['capture', 'explicit'], { message: 'want capture or explicit' });

const trafficSchema = z
  .strictObject({
    mode: zTrafficMode.default('capture'),
    outboundListen: zHostPort.optional(),
    inboundListen: zHostPort.optional(),
    inboundFd: z
      .number({ message: 'want a file descriptor number' })
      .int({ message: 'want a file descriptor number' })
      .min(3, { message: 'want an inherited file descriptor (3 or above)' })
      .optional(),
    originalSourceMark: z
      .number({ message: 'want a packet mark (a number from 1 to 2147483647)' })
      .int({ message: 'want a packet mark (a number from 1 to 2147483647)' })
      .min(1, { message: 'want a packet mark (a number from 1 to 2147483647)' })
      .max(0x7fffffff, { message: 'want a packet mark (a number from 1 to 2147483647)' })
      .optional(),
    outboundBindHost: zIp.default(DEFAULT_OUTBOUND_BIND_HOST),
    inboundBindHost: zIp.optional(),
  })
  .superRefine((t, ctx) => {
    if (t.originalSourceMark !== undefined && t.inboundFd === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['originalSourceMark'],
        message:
          "needs traffic.inboundFd: a caller's address is kept only for TPROXY capture (capture.mode tproxy)",
      });
    }
  })
  .prefault({});

/** The schema of /etc/sail/proxy.yaml. Everything has a default except the node and pilot. */
export const proxyFileSchema = z
  .strictObject({
    nodeId: zNodeId.optional(),
    node: nodeSchema.optional(),
    labels: z
      .record(z.string(), z.string())
      .default({})
      .superRefine((labels, ctx) => {
        for (const [key, value] of Object.entries(labels)) {
          if (!isLabelKey(key))
            ctx.addIssue({
              code: 'custom',
              path: [key],
              message: 'invalid label key: want [prefix/]name, name at most 63 of [A-Za-z0-9-_.]',
            });
          else if (value !== '' && !LABEL_NAME_RE.test(value))
            ctx.addIssue({
              code: 'custom',
              path: [key],
              message:
                'invalid label value: want at most 63 of [A-Za-z0-9-_.], starting and ending alphanumeric',
            });
        }
      }),
    trustDomain: z
      .string()
      .refine(isValidTrustDomain, {
        message: 'invalid trust domain: want lowercase letters, digits, ".", "-" and "_"',
      })
      .default(DEFAULT_TRUST_DOMAIN),
    pilotAddress: zDialAddress.optional(),
    pilotSpiffeId: z
      .string()
      .startsWith('spiffe://', 'want a SPIFFE ID spiffe://TRUST_DOMAIN/…')
      .optional(),
    certsDir: zPath.default(DEFAULT_CERTS_DIR),
    stateDir: zPath.default(DEFAULT_STATE_DIR),
    traffic: trafficSchema,
    adminListen: zHostPort.default(DEFAULT_ADMIN_LISTEN),
    adminAllowRemote: z.boolean().default(false),
    metricsListen: zHostPort.default(DEFAULT_METRICS_LISTEN),
    accessLog: z.boolean().default(false),
    concurrency: zConcurrency.default(1),
    meshUpstreamProtocol: z
      .enum(['http2', 'http1'], { message: 'want http2 or http1' })
      .default('http1'),
    drain: zDuration.prefault(`${DEFAULT_DRAIN_MS}ms`),
    shutdownGrace: zDuration.prefault(`${DEFAULT_SHUTDOWN_GRACE_MS}ms`),
    initialFetchTimeout: zDuration.prefault(`${DEFAULT_INITIAL_FETCH_TIMEOUT_MS}ms`),
    logLevel: z
      .enum(LOG_LEVELS, { message: `want one of ${LOG_LEVELS.join(', ')}` })
      .default('info'),
  })
  .superRefine((f, ctx) => {
    if (f.nodeId === undefined && f.node === undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['node'],
        message: 'required: node {name, ip, namespace} or nodeId',
      });
    if (f.nodeId !== undefined && f.node !== undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['nodeId'],
        message: 'give node or nodeId, not both',
      });
    if (f.shutdownGrace < f.drain)
      ctx.addIssue({
        code: 'custom',
        path: ['shutdownGrace'],
        message: 'want at least drain (close() drains within the shutdown grace)',
      });
  });

/** What a config file may contain (camelCase, durations as text). */
export type ProxyFileConfig = z.input<typeof proxyFileSchema>;

/** Flags of `sail proxy` that override file keys; undefined: not given. */
export interface ProxyConfigOverrides {
  readonly nodeId?: string;
  readonly pilotAddress?: string;
  readonly certsDir?: string;
  readonly stateDir?: string;
  readonly adminListen?: string;
  readonly metricsListen?: string;
  readonly trafficMode?: string;
  readonly accessLog?: boolean;
  readonly concurrency?: number;
}

/** The flag naming each override in errors. */
const OVERRIDE_FLAGS: Readonly<Record<keyof ProxyConfigOverrides, string>> = {
  nodeId: '--node-id',
  pilotAddress: '--pilot-address',
  certsDir: '--certs-dir',
  stateDir: '--state-dir',
  adminListen: '--admin-listen',
  metricsListen: '--metrics-listen',
  trafficMode: '--traffic-mode',
  accessLog: '--access-log',
  concurrency: '--concurrency',
};

/** A loaded config: the proxy's options (without logger) plus what only main uses. */
export interface LoadedProxyConfig {
  readonly options: Omit<ProxyOptions, 'logger'>;
  readonly logLevel: LogLevel;
  /**
   * Worker processes to run the data plane in (`concurrency`, 0 resolved to the number of
   * cores): 1 runs it in this process.
   */
  readonly concurrency: number;
}

/** Checks one flag value with the field's schema. @throws ConfigError naming the flag */
function checkFlag<T>(key: keyof ProxyConfigOverrides, schema: z.ZodType<T>, value: unknown): T {
  const r = schema.safeParse(value);
  if (!r.success)
    throw new ConfigError(`${OVERRIDE_FLAGS[key]}: ${r.error.issues[0]?.message ?? 'invalid'}`);
  return r.data;
}

function resolve(
  source: string,
  file: z.output<typeof proxyFileSchema>,
  overrides: ProxyConfigOverrides,
): LoadedProxyConfig {
  const base = source.startsWith('<') ? process.cwd() : path.dirname(path.resolve(source));
  const abs = (p: string) => path.resolve(base, p);
  const flagPath = (p: string) => path.resolve(p);

  // Flags over the file.
  let nodeIdText = file.nodeId ?? (file.node ? formatNodeId(file.node) : undefined);
  if (overrides.nodeId !== undefined) nodeIdText = checkFlag('nodeId', zNodeId, overrides.nodeId);
  const pilotAddress =
    overrides.pilotAddress !== undefined
      ? checkFlag('pilotAddress', zDialAddress, overrides.pilotAddress)
      : file.pilotAddress;
  if (pilotAddress === undefined)
    throw new ConfigError(`${source}: pilotAddress: required (or --pilot-address)`);
  const adminListen =
    overrides.adminListen !== undefined
      ? checkFlag('adminListen', zHostPort, overrides.adminListen)
      : file.adminListen;
  const metricsListen =
    overrides.metricsListen !== undefined
      ? checkFlag('metricsListen', zHostPort, overrides.metricsListen)
      : file.metricsListen;
  const mode =
    overrides.trafficMode !== undefined
      ? checkFlag('trafficMode', zTrafficMode, overrides.trafficMode)
      : file.traffic.mode;

  // The schema guarantees node or nodeId.
  const node = parseNodeId(nodeIdText as string) as ParsedNodeId;

  // The admin port shows everything and has no authentication (PROXY_ADMIN_NOT_LOOPBACK).
  checkAdminAddress(
    adminListen,
    file.adminAllowRemote,
    overrides.adminListen !== undefined ? '--admin-listen' : `${source}: adminListen`,
  );

  const t = file.traffic;
  const options: Omit<ProxyOptions, 'logger'> = {
    nodeId: nodeIdText as string,
    workload: { name: node.name, namespace: node.namespace, labels: file.labels },
    trustDomain: file.trustDomain,
    pilotAddress,
    pilotSpiffeId: file.pilotSpiffeId ?? controlPlaneSpiffeId(file.trustDomain),
    certsDir:
      overrides.certsDir !== undefined
        ? flagPath(checkFlag('certsDir', zPath, overrides.certsDir))
        : abs(file.certsDir),
    stateDir:
      overrides.stateDir !== undefined
        ? flagPath(checkFlag('stateDir', zPath, overrides.stateDir))
        : abs(file.stateDir),
    traffic: {
      mode,
      ...(t.outboundListen !== undefined ? { outboundListen: t.outboundListen } : {}),
      ...(t.inboundListen !== undefined ? { inboundListen: t.inboundListen } : {}),
      ...(t.inboundFd !== undefined ? { inboundFd: t.inboundFd } : {}),
      ...(t.originalSourceMark !== undefined ? { originalSourceMark: t.originalSourceMark } : {}),
      outboundBindHost: t.outboundBindHost,
      // Explicit inbound listeners bind the workload's address, which the node id carries.
      inboundBindHost: t.inboundBindHost ?? node.ip,
    },
    adminListen,
    adminAllowRemote: file.adminAllowRemote,
    metricsListen,
    accessLog: overrides.accessLog ?? file.accessLog,
    meshUpstreamProtocol: file.meshUpstreamProtocol,
    drainMs: file.drain,
    shutdownGraceMs: file.shutdownGrace,
    initialFetchTimeoutMs: file.initialFetchTimeout,
  };
  const concurrency =
    overrides.concurrency !== undefined
      ? checkFlag('concurrency', zConcurrency, overrides.concurrency)
      : file.concurrency;
  return {
    options,
    logLevel: file.logLevel,
    concurrency: concurrency === 0 ? os.availableParallelism() : concurrency,
  };
}

/**
 * Parses and validates config text. `source` names it in errors (a file name, or `<flags>`).
 * @throws ConfigError naming the source and each field at fault, or the flag
 */
export function parseProxyConfig(
  source: string,
  text: string,
  overrides: ProxyConfigOverrides = {},
): LoadedProxyConfig {
  return resolve(source, parseConfig(source, text, proxyFileSchema), overrides);
}

/**
 * Reads, validates and resolves a config file; relative paths are taken from its directory.
 * @throws ConfigError when the file cannot be read or is invalid
 */
export function loadProxyConfig(
  file: string,
  overrides: ProxyConfigOverrides = {},
): LoadedProxyConfig {
  return resolve(file, loadConfigFile(file, proxyFileSchema), overrides);
}

/** A one-line summary of a loaded config for `--validate` and the start log. */
export function describeProxyConfig(c: LoadedProxyConfig): string {
  const o = c.options;
  return `node ${o.nodeId}, pilot ${o.pilotAddress} (${o.pilotSpiffeId}), traffic ${o.traffic.mode}, admin ${o.adminListen}${c.concurrency > 1 ? `, ${c.concurrency} workers` : ''}`;
}
