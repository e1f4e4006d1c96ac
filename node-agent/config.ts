/**
 * The node agent's config file (DESIGN §3.4): a zod schema of the YAML, and its conversion into
 * {@link NodeAgentSettings}. Unknown keys are rejected and every error names the field path
 * (`/etc/sail/node-agent.yaml: certs.ttl: invalid duration "1 day": …`).
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
} from '../common/config';
import { ConfigError } from '../common/errors';
import { LOG_LEVELS, type LogLevel } from '../common/logging';
import {
  KEY_ALGORITHMS,
  type KeyAlgorithm,
  controlPlaneSpiffeId,
  isValidName,
  isValidTrustDomain,
} from '../common/pki';
import type { NodeAgentSettings } from './options';
import { DEFAULT_PROXY_NODE_OPTIONS } from './supervisor/self-command';

/** Where `sail join` writes the config and where `sail node-agent` reads it. */
export const DEFAULT_CONFIG_FILE = '/etc/sail/node-agent.yaml';
export const DEFAULT_ROOT_CERT_FILE = '/etc/sail/root-cert.pem';
export const DEFAULT_TOKEN_FILE = '/etc/sail/join-token';
export const DEFAULT_CERTS_DIR = '/var/lib/sail/certs';
export const DEFAULT_STATE_DIR = '/var/lib/sail';
export const DEFAULT_TRUST_DOMAIN = 'cluster.local';
export const DEFAULT_CERT_TTL = '24h';
export const DEFAULT_STATUS_LISTEN = '127.0.0.1:15020';
export const DEFAULT_DNS_LISTEN = '127.0.0.1:15053';
export const CA_PORT = 15012;
export const PILOT_PORT = 15010;
export const MIXER_PORT = 9091;
/** The CA refuses shorter lifetimes, so the agent rejects them up front. */
export const MIN_CERT_TTL_MS = 10_000;
export const DEFAULT_HEALTH_INTERVAL_SECONDS = 5;
export const DEFAULT_HEALTH_TIMEOUT_SECONDS = 2;
export const DEFAULT_HEALTH_FAILURE_THRESHOLD = 3;
export const DEFAULT_HEALTH_SUCCESS_THRESHOLD = 1;
export const DEFAULT_PROXY_USER = 'sail-proxy';
export const DEFAULT_PROXY_ADMIN_LISTEN = '127.0.0.1:15000';
export const DEFAULT_PROXY_STOP_GRACE = '20s';
export const DEFAULT_RUN_DIR = '/run/sail';
export const DEFAULT_RESOLV_CONF = '/etc/resolv.conf';

/** The SPIFFE ID the CA serves with, in trust domain `trustDomain` (defined once, in common/pki). */
export { controlPlaneSpiffeId };

const PORT_MESSAGE = 'want a port number from 1 to 65535';
const zPort = z
  .number({ message: PORT_MESSAGE })
  .int(PORT_MESSAGE)
  .min(1, PORT_MESSAGE)
  .max(65535, PORT_MESSAGE);

/** `HOST:PORT` to connect to: like zHostPort, but port 0 means nothing to a client. */
const zDialAddress = z.string().refine(s => (parseHostPort(s)?.port ?? 0) > 0, {
  message: 'want HOST:PORT with a port from 1 to 65535 (e.g. 10.0.0.10:15012)',
});

const zName = (what: string) =>
  z.string().refine(isValidName, {
    message: `invalid ${what}: want lowercase letters, digits, '-' and '.' (at most 253)`,
  });

const zPath = z.string().min(1, 'want a file or directory path');

/** True for a host name or an IP address without a port. */
export function isHost(s: string): boolean {
  return (
    net.isIP(s) !== 0 ||
    /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/.test(
      s,
    )
  );
}

/** True for `IP` or `IP/PREFIX` with a prefix that fits the address family. */
export function isCidr(s: string): boolean {
  const [ip = '', prefix, extra] = s.split('/');
  const family = net.isIP(ip);
  if (family === 0 || extra !== undefined) return false;
  if (prefix === undefined) return true;
  if (!/^\d{1,3}$/.test(prefix)) return false;
  return Number(prefix) <= (family === 4 ? 32 : 128);
}

/** `*`, empty, or a comma-separated list of items that pass `valid`. */
function listOf(what: string, valid: (item: string) => boolean, allowStar: boolean) {
  return z.string().superRefine((s, ctx) => {
    const text = s.trim();
    if (text === '' || (allowStar && text === '*')) return;
    for (const item of text.split(',').map(i => i.trim())) {
      if (!valid(item)) {
        ctx.addIssue({
          code: 'custom',
          message: `${JSON.stringify(item)} is not ${what}${allowStar ? ' (or "*" for all)' : ''}`,
        });
      }
    }
  });
}

const isPortText = (s: string) => /^\d{1,5}$/.test(s) && Number(s) >= 1 && Number(s) <= 65535;

const LABEL_NAME_RE = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_PREFIX_RE =
  /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Kubernetes label key syntax: `[prefix/]name`. */
export function isLabelKey(key: string): boolean {
  const slash = key.indexOf('/');
  if (slash < 0) return LABEL_NAME_RE.test(key);
  return LABEL_PREFIX_RE.test(key.slice(0, slash)) && LABEL_NAME_RE.test(key.slice(slash + 1));
}

/** Kubernetes label value syntax: empty, or a name of at most 63 characters. */
export function isLabelValue(value: string): boolean {
  return value === '' || LABEL_NAME_RE.test(value);
}

const PORT_NAME_RE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

const controlPlaneSchema = z
  .strictObject(
    {
      address: z
        .string()
        .refine(isHost, {
          message: 'want a host name or IP address without a port (e.g. 10.0.0.10)',
        })
        .optional(),
      caAddress: zDialAddress.optional(),
      pilotAddress: zDialAddress.optional(),
      mixerAddress: zDialAddress.optional(),
      rootCertFile: zPath.default(DEFAULT_ROOT_CERT_FILE),
      tokenFile: zPath.default(DEFAULT_TOKEN_FILE),
      bootstrapCertFile: zPath.optional(),
      bootstrapKeyFile: zPath.optional(),
    },
    {
      error: iss =>
        iss.input === undefined
          ? 'required: where the control plane is (at least controlPlane.address)'
          : 'want a mapping',
    },
  )
  .superRefine((cp, ctx) => {
    if (cp.address === undefined) {
      const missing = (['caAddress', 'pilotAddress', 'mixerAddress'] as const).filter(
        k => cp[k] === undefined,
      );
      if (missing.length > 0) {
        ctx.addIssue({
          code: 'custom',
          path: ['address'],
          message: `required unless ${missing.join(', ')} ${missing.length > 1 ? 'are' : 'is'} set`,
        });
      }
    }
    if ((cp.bootstrapCertFile === undefined) !== (cp.bootstrapKeyFile === undefined)) {
      const missing = cp.bootstrapCertFile === undefined ? 'bootstrapCertFile' : 'bootstrapKeyFile';
      ctx.addIssue({
        code: 'custom',
        path: [missing],
        message: 'bootstrapCertFile and bootstrapKeyFile go together',
      });
    }
  });

const healthSchema = z
  .strictObject({
    http: z
      .strictObject({
        port: zPort,
        path: z.string().startsWith('/', 'want an absolute URL path').default('/'),
      })
      .optional(),
    tcp: z.strictObject({ port: zPort }).optional(),
    exec: z
      .strictObject({
        command: z
          .array(z.string().min(1, 'want a non-empty argument'))
          .min(1, 'want the program and its arguments, e.g. [/usr/bin/check, --quick]'),
      })
      .optional(),
    intervalSeconds: z
      .number()
      .int()
      .min(1, 'want at least 1 second')
      .max(3600, 'want at most 3600 seconds')
      .default(DEFAULT_HEALTH_INTERVAL_SECONDS),
    timeoutSeconds: z
      .number()
      .positive('want more than 0 seconds')
      .max(600, 'want at most 600 seconds')
      .default(DEFAULT_HEALTH_TIMEOUT_SECONDS),
    failureThreshold: z
      .number()
      .int()
      .min(1, 'want at least 1')
      .max(100, 'want at most 100')
      .default(DEFAULT_HEALTH_FAILURE_THRESHOLD),
    successThreshold: z
      .number()
      .int()
      .min(1, 'want at least 1')
      .max(100, 'want at most 100')
      .default(DEFAULT_HEALTH_SUCCESS_THRESHOLD),
  })
  .superRefine((h, ctx) => {
    if ([h.http, h.tcp, h.exec].filter(x => x !== undefined).length !== 1)
      ctx.addIssue({ code: 'custom', message: 'want exactly one of http, tcp or exec' });
  });

const workloadSchema = z
  .strictObject({
    namespace: zName('namespace').default('default'),
    serviceAccount: zName('service account').default('default'),
    labels: z
      .record(z.string(), z.string())
      .default({})
      .superRefine((labels, ctx) => {
        // Checked here rather than in the key schema: zod reports a bad record key without its message.
        for (const [key, value] of Object.entries(labels)) {
          if (!isLabelKey(key)) {
            ctx.addIssue({
              code: 'custom',
              path: [key],
              message: 'invalid label key: want [prefix/]name, name at most 63 of [A-Za-z0-9-_.]',
            });
          } else if (!isLabelValue(value)) {
            ctx.addIssue({
              code: 'custom',
              path: [key],
              message:
                'invalid label value: want at most 63 of [A-Za-z0-9-_.], starting and ending alphanumeric',
            });
          }
        }
      }),
    ports: z
      .array(
        z.strictObject({
          name: z
            .string()
            .regex(
              PORT_NAME_RE,
              'invalid port name: want lowercase letters, digits and "-", e.g. http, grpc-api',
            ),
          port: zPort,
        }),
      )
      .default([])
      .superRefine((ports, ctx) => {
        const names = new Set<string>();
        const numbers = new Set<number>();
        ports.forEach((p, i) => {
          if (names.has(p.name))
            ctx.addIssue({
              code: 'custom',
              path: [i, 'name'],
              message: `duplicate port name ${JSON.stringify(p.name)}`,
            });
          if (numbers.has(p.port))
            ctx.addIssue({
              code: 'custom',
              path: [i, 'port'],
              message: `duplicate port ${p.port}`,
            });
          names.add(p.name);
          numbers.add(p.port);
        });
      }),
    address: z
      .string()
      .refine(s => s === 'auto' || net.isIP(s) !== 0, { message: 'want "auto" or an IP address' })
      .default('auto'),
    health: healthSchema.optional(),
    group: z
      .string()
      .refine(g => g.split('/').length === 2 && g.split('/').every(isValidName), {
        message: 'want a WorkloadGroup as NAMESPACE/NAME',
      })
      .optional(),
  })
  .prefault({});

const certsSchema = z
  .strictObject({
    dir: zPath.default(DEFAULT_CERTS_DIR),
    ttl: zDuration
      .refine(ms => ms >= MIN_CERT_TTL_MS, {
        message: `want at least ${MIN_CERT_TTL_MS / 1000}s (the CA's minimum)`,
      })
      .prefault(DEFAULT_CERT_TTL),
    keyAlgorithm: z
      .enum(KEY_ALGORITHMS as unknown as readonly [KeyAlgorithm, ...KeyAlgorithm[]], {
        message: `want one of ${KEY_ALGORITHMS.join(', ')}`,
      })
      .default('ec-p256'),
  })
  .prefault({});

const captureSchema = z
  .strictObject({
    mode: z
      .enum(['redirect', 'tproxy', 'none'], { message: 'want redirect, tproxy or none' })
      .default('redirect'),
    includeOutboundCidrs: listOf('a CIDR', isCidr, true).default('*'),
    excludeOutboundCidrs: listOf('a CIDR', isCidr, false).default(''),
    includeInboundPorts: listOf('a port', isPortText, true).default('*'),
    excludeInboundPorts: listOf('a port', isPortText, false).default('22'),
    excludeOutboundPorts: listOf('a port', isPortText, false).default(''),
    ipv6: z
      .union([z.literal('auto'), z.boolean()], { message: 'want auto, true or false' })
      .default('auto'),
    preserveSourceAddress: z.boolean().default(true),
  })
  .prefault({});

/** The schema of /etc/sail/node-agent.yaml. Every key is optional except the control plane's address. */
export const nodeAgentFileSchema = z.strictObject({
  nodeName: zName('node name').optional(),
  trustDomain: z
    .string()
    .refine(isValidTrustDomain, {
      message: 'invalid trust domain: want lowercase letters, digits, ".", "-" and "_"',
    })
    .default(DEFAULT_TRUST_DOMAIN),
  logLevel: z.enum(LOG_LEVELS, { message: `want one of ${LOG_LEVELS.join(', ')}` }).default('info'),
  controlPlane: controlPlaneSchema,
  workload: workloadSchema,
  certs: certsSchema,
  stateDir: zPath.default(DEFAULT_STATE_DIR),
  capture: captureSchema,
  dns: z
    .strictObject({
      enabled: z.boolean().default(true),
      listen: zHostPort.default(DEFAULT_DNS_LISTEN),
      resolvConf: zPath.default(DEFAULT_RESOLV_CONF),
      upstreams: z
        .array(
          z.string().refine(s => net.isIP(s) !== 0 || (parseHostPort(s)?.port ?? 0) > 0, {
            message: 'want an IP address or IP:PORT',
          }),
        )
        .optional(),
      stripSearchDomains: z.boolean().default(true),
    })
    .prefault({}),
  proxy: z
    .strictObject({
      enabled: z.boolean().default(true),
      user: z
        .string()
        .regex(/^[a-z_][a-z0-9_-]*[$]?$/, 'want a system user name, e.g. sail-proxy')
        .default(DEFAULT_PROXY_USER),
      adminListen: zHostPort.default(DEFAULT_PROXY_ADMIN_LISTEN),
      stopGrace: zDuration
        .refine(ms => ms >= 1000, { message: 'want at least 1s' })
        .prefault(DEFAULT_PROXY_STOP_GRACE),
      logLevel: z.enum(LOG_LEVELS, { message: `want one of ${LOG_LEVELS.join(', ')}` }).optional(),
      accessLog: z.boolean().default(false),
      nodeOptions: z.string().default(DEFAULT_PROXY_NODE_OPTIONS),
      concurrency: zConcurrency.default(1),
    })
    .prefault({}),
  proxyless: z
    .strictObject({
      enabled: z.boolean().default(true),
      socket: zPath.optional(),
      bootstrapFile: zPath.optional(),
    })
    .prefault({}),
  runDir: zPath.default(DEFAULT_RUN_DIR),
  status: z.strictObject({ listen: zHostPort.default(DEFAULT_STATUS_LISTEN) }).prefault({}),
});

/** What a config file may contain (all camelCase, durations as text). */
export type NodeAgentFileConfig = z.input<typeof nodeAgentFileSchema>;

/** A loaded config: the agent's settings plus what only main.ts uses. */
export interface NodeAgentConfig {
  readonly settings: NodeAgentSettings;
  readonly logLevel: LogLevel;
}

/** Facts of the host a config falls back on; injectable for tests. */
export interface ConfigEnvironment {
  /** Default node name. Default: os.hostname(), lowercased. */
  readonly hostname?: string;
  /** Directory relative paths in the file are resolved against. Default: the file's directory. */
  readonly baseDir?: string;
}

function withPort(host: string, port: number): string {
  return net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Turns a validated file into settings: fills the addresses derived from `controlPlane.address`,
 * the node name from the host name, and resolves relative paths.
 * @throws ConfigError (through parseConfig's format) when the host name is not a valid node name
 */
function resolve(
  source: string,
  file: z.output<typeof nodeAgentFileSchema>,
  env: ConfigEnvironment,
): NodeAgentConfig {
  const base =
    env.baseDir ?? (source.startsWith('<') ? process.cwd() : path.dirname(path.resolve(source)));
  const abs = (p: string) => path.resolve(base, p);
  const hostname = (env.hostname ?? os.hostname()).toLowerCase();
  const nodeName = file.nodeName ?? hostname;
  if (!isValidName(nodeName)) {
    throw new ConfigError(
      `${source}: nodeName: the host name ${JSON.stringify(hostname)} is not a valid node name; set nodeName`,
    );
  }
  const cp = file.controlPlane;
  // The schema guarantees `address` when one of the three is missing.
  const derive = (explicit: string | undefined, port: number) =>
    explicit ?? withPort(cp.address as string, port);
  const w = file.workload;
  const settings: NodeAgentSettings = {
    nodeName,
    trustDomain: file.trustDomain,
    controlPlane: {
      caAddress: derive(cp.caAddress, CA_PORT),
      pilotAddress: derive(cp.pilotAddress, PILOT_PORT),
      mixerAddress: derive(cp.mixerAddress, MIXER_PORT),
      caSpiffeId: controlPlaneSpiffeId(file.trustDomain),
      rootCertFile: abs(cp.rootCertFile),
      tokenFile: abs(cp.tokenFile),
      ...(cp.bootstrapCertFile !== undefined && cp.bootstrapKeyFile !== undefined
        ? {
            bootstrapCertFile: abs(cp.bootstrapCertFile),
            bootstrapKeyFile: abs(cp.bootstrapKeyFile),
          }
        : {}),
    },
    workload: {
      namespace: w.namespace,
      serviceAccount: w.serviceAccount,
      labels: w.labels,
      ports: w.ports,
      address: w.address,
      ...(w.health
        ? {
            health: {
              ...(w.health.http ? { http: w.health.http } : {}),
              ...(w.health.tcp ? { tcp: w.health.tcp } : {}),
              ...(w.health.exec ? { exec: w.health.exec } : {}),
              intervalMs: w.health.intervalSeconds * 1000,
              timeoutMs: Math.round(w.health.timeoutSeconds * 1000),
              failureThreshold: w.health.failureThreshold,
              successThreshold: w.health.successThreshold,
            },
          }
        : {}),
      ...(w.group !== undefined ? { group: w.group } : {}),
    },
    certs: {
      dir: abs(file.certs.dir),
      ttlMs: file.certs.ttl,
      keyAlgorithm: file.certs.keyAlgorithm,
    },
    stateDir: abs(file.stateDir),
    capture: file.capture,
    dns: {
      enabled: file.dns.enabled,
      listen: file.dns.listen,
      resolvConf: abs(file.dns.resolvConf),
      ...(file.dns.upstreams ? { upstreams: file.dns.upstreams } : {}),
      stripSearchDomains: file.dns.stripSearchDomains,
    },
    proxy: {
      enabled: file.proxy.enabled,
      user: file.proxy.user,
      adminListen: file.proxy.adminListen,
      stopGraceMs: file.proxy.stopGrace,
      ...(file.proxy.logLevel ? { logLevel: file.proxy.logLevel } : {}),
      accessLog: file.proxy.accessLog,
      nodeOptions: file.proxy.nodeOptions,
      concurrency: file.proxy.concurrency,
    },
    proxyless: {
      enabled: file.proxyless.enabled,
      socket: abs(file.proxyless.socket ?? path.join(file.runDir, 'xds.sock')),
      bootstrapFile: abs(
        file.proxyless.bootstrapFile ?? path.join(file.runDir, 'grpc-bootstrap.json'),
      ),
    },
    runDir: abs(file.runDir),
    status: file.status,
  };
  return { settings, logLevel: file.logLevel };
}

/**
 * Parses and validates config text. `source` names it in errors (a file name, or `<flags>`).
 * @throws ConfigError naming the source and the path of each field at fault
 */
export function parseNodeAgentConfig(
  source: string,
  text: string,
  env: ConfigEnvironment = {},
): NodeAgentConfig {
  return resolve(source, parseConfig(source, text, nodeAgentFileSchema), env);
}

/**
 * Reads, validates and resolves a config file; relative paths are taken from the file's directory.
 * @throws ConfigError when the file cannot be read or is invalid
 */
export function loadNodeAgentConfig(file: string, env: ConfigEnvironment = {}): NodeAgentConfig {
  return resolve(file, loadConfigFile(file, nodeAgentFileSchema), env);
}
