/**
 * The proxy's admin server (Envoy's :15000) and metrics server (Istio's :15090).
 *
 * Admin, loopback only by default: it shows the whole configuration and has no authentication,
 * like Envoy's admin port. `/ready` answers 200 `LIVE` only once the first complete configuration
 * is applied AND the workload certificate is loaded: Istio 0.2's ingress reported ready before it
 * had heard from pilot, so traffic arrived at a proxy with no routes. Endpoints:
 *   GET /ready          200 LIVE, or 503 `STATE: reason`
 *   GET /healthz        200 while the process serves (liveness)
 *   GET /stats          `name: value` lines (?format=json, ?format=prometheus, ?filter=REGEX)
 *   GET /config_dump    Envoy's config dump of the ACKed resources
 *   GET /clusters       Envoy's text format (?format=json)
 *   GET /listeners      `NAME::ADDRESS` lines (?format=json)
 *   GET /server_info    version, node, uptime, state
 * Metrics, any address: GET /stats/prometheus and /metrics, the Prometheus text.
 */
import * as http from 'node:http';
import * as net from 'node:net';
import { parseHostPort } from '../../common/config';
import { InvalidInputError } from '../../common/errors';
import { closeServer, createRouter, listen, type HttpResult, type Route } from '../../common/http';
import type { Lifecycle } from '../../common/lifecycle';
import type { Logger } from '../../common/logging';
import { AdminNotLoopbackError, ListenFailedError } from '../errors';
import type { Cluster } from '../model';
import type { ClusterStatus } from '../types';
import {
  type ConfigDumpInput,
  type ListenerInfo,
  renderClustersJson,
  renderClustersText,
  renderConfigDump,
  renderListenersJson,
  renderListenersText,
  renderStatsText,
} from './render';

/** The proxy's state as Envoy names it: starting, serving, or shutting down. */
export type ServerState = 'PRE_INITIALIZING' | 'LIVE' | 'DRAINING';

export interface Readiness {
  readonly state: ServerState;
  /** Why not LIVE (empty when LIVE), e.g. `waiting for the first configuration from pilot`. */
  readonly reason: string;
}

/** Prometheus text with its content type. */
export interface MetricsText {
  readonly text: string;
  readonly contentType: string;
}

/** What the admin endpoints read; implemented by the Proxy. Called per admin request. */
export interface AdminSource {
  readiness(): Readiness;
  serverInfo(): Record<string, unknown>;
  configDump(): ConfigDumpInput;
  clusters(): readonly ClusterStatus[];
  clusterConfig(name: string): Cluster | undefined;
  listeners(): readonly ListenerInfo[];
  /** Envoy-style counters and gauges for `/stats`. */
  stats(): ReadonlyMap<string, number | string>;
  metrics(): Promise<MetricsText>;
}

/** True for `localhost`, 127.0.0.0/8, ::1 and ::ffff:127.x. */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  if (net.isIPv4(host)) return host.startsWith('127.');
  if (net.isIPv6(host)) {
    const h = host.toLowerCase();
    return h === '::1' || h === '0:0:0:0:0:0:0:1' || h.startsWith('::ffff:127.');
  }
  return false;
}

/**
 * Throws unless `address` (`HOST:PORT`) is on loopback or `allowRemote` is set.
 * @throws AdminNotLoopbackError
 */
export function checkAdminAddress(address: string, allowRemote: boolean, source: string): void {
  const hp = parseHostPort(address);
  if (hp && !allowRemote && !isLoopbackHost(hp.host))
    throw new AdminNotLoopbackError(
      `${source}: ${address} is not a loopback address; the admin port has no authentication ` +
        'and shows the whole configuration: use 127.0.0.1, or set adminAllowRemote: true',
    );
}

function formatOf(query: URLSearchParams): string {
  return query.get('format') ?? 'text';
}

/** The paths the admin server's index lists. */
export const ADMIN_PATHS: readonly string[] = [
  '/ready',
  '/healthz',
  '/stats',
  '/config_dump',
  '/clusters',
  '/listeners',
  '/server_info',
];

/** `GET /`: the index, with `note` lines after the paths. */
export function indexRoute(title: string, note = ''): Route {
  return {
    method: 'GET',
    path: '/',
    admin: false,
    handler: () => ({ text: `${title}\n${ADMIN_PATHS.join('\n')}\n${note}` }),
  };
}

/** `GET /ready` (200 LIVE, else 503 `STATE: reason`) and `GET /healthz` (200 while serving). */
export function readinessRoutes(readiness: () => Readiness | Promise<Readiness>): Route[] {
  return [
    {
      method: 'GET',
      path: '/ready',
      admin: false,
      handler: async () => {
        const r = await readiness();
        if (r.state === 'LIVE') return { text: 'LIVE\n' };
        return { status: 503, text: r.reason ? `${r.state}: ${r.reason}\n` : `${r.state}\n` };
      },
    },
    { method: 'GET', path: '/healthz', admin: false, handler: () => ({ text: 'ok\n' }) },
  ];
}

type Stats = ReadonlyMap<string, number | string>;

/**
 * `GET /stats` in text, JSON (`?format=json`) or Prometheus, with `?filter=REGEX`. `stats` sees
 * the query (a `--concurrency` primary reads `?worker=N` from it).
 */
export function statsRoute(
  stats: (query: URLSearchParams) => Stats | Promise<Stats>,
  metrics: () => Promise<MetricsText>,
): Route {
  return {
    method: 'GET',
    path: '/stats',
    admin: false,
    handler: async ({ query }) => {
      const format = formatOf(query);
      if (format === 'prometheus') {
        const m = await metrics();
        return { text: m.text, contentType: m.contentType };
      }
      const filter = query.get('filter');
      let re: RegExp | undefined;
      if (filter) {
        try {
          re = new RegExp(filter);
        } catch (err) {
          throw new InvalidInputError(`filter: invalid regular expression ${filter}`, {
            cause: err,
          });
        }
      }
      if (format !== 'json' && format !== 'text')
        throw new InvalidInputError(`format: want text, json or prometheus`);
      let all = await stats(query);
      if (re) all = new Map([...all].filter(([k]) => re.test(k)));
      if (format === 'json')
        return {
          json: { stats: [...all.keys()].sort().map(name => ({ name, value: all.get(name) })) },
        };
      return { text: renderStatsText(all) };
    },
  };
}

/** The admin routes over `source`. @internal exported for tests of single routes */
export function adminRoutes(source: AdminSource): Route[] {
  const json = (v: unknown): HttpResult => ({ json: v });
  return [
    indexRoute('Sail proxy admin'),
    ...readinessRoutes(() => source.readiness()),
    statsRoute(
      () => source.stats(),
      () => source.metrics(),
    ),
    {
      method: 'GET',
      path: '/config_dump',
      admin: false,
      handler: () => json(renderConfigDump(source.configDump())),
    },
    {
      method: 'GET',
      path: '/clusters',
      admin: false,
      handler: ({ query }) => {
        const statuses = source.clusters();
        const configOf = (n: string) => source.clusterConfig(n);
        return formatOf(query) === 'json'
          ? json(renderClustersJson(statuses, configOf))
          : { text: renderClustersText(statuses, configOf) };
      },
    },
    {
      method: 'GET',
      path: '/listeners',
      admin: false,
      handler: ({ query }) => {
        const ls = source.listeners();
        return formatOf(query) === 'json'
          ? json(renderListenersJson(ls))
          : { text: renderListenersText(ls) };
      },
    },
    {
      method: 'GET',
      path: '/server_info',
      admin: false,
      handler: () => json(source.serverInfo()),
    },
  ];
}

/** The metrics routes over `metrics`. */
export function metricsRoutes(metrics: () => Promise<MetricsText>): Route[] {
  const handler = async (): Promise<HttpResult> => {
    const m = await metrics();
    return { text: m.text, contentType: m.contentType };
  };
  return [
    { method: 'GET', path: '/stats/prometheus', admin: false, handler },
    { method: 'GET', path: '/metrics', admin: false, handler },
  ];
}

export type AdminServerOptions = {
  readonly logger: Logger;
  /** `HOST:PORT`; port 0 picks one (read `address` after start). */
  readonly listen: string;
  /** Allow a non-loopback `listen` (default false). */
  readonly allowRemote?: boolean;
} & (
  | { readonly source: AdminSource }
  /** Other routes than a proxy's (a `--concurrency` primary's, which asks its workers). */
  | { readonly routes: readonly Route[] }
);

/** Binds an HTTP server on `address`, naming what it is for in the error. */
async function bind(server: http.Server, address: string, what: string): Promise<string> {
  try {
    return await listen(server, address);
  } catch (err) {
    if (err instanceof InvalidInputError) throw err;
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new ListenFailedError(`cannot listen on ${address} for the ${what}: ${code}`, {
      cause: err,
    });
  }
}

/** The admin server. start() binds; close() is idempotent. */
export class AdminServer implements Lifecycle {
  private readonly log: Logger;
  private server: http.Server | undefined;
  private bound: string | undefined;

  constructor(private readonly opts: AdminServerOptions) {
    this.log = opts.logger.child({ component: 'proxy', subsystem: 'admin' });
  }

  /** The bound `host:port` (after start). */
  get address(): string | undefined {
    return this.bound;
  }

  /**
   * @throws AdminNotLoopbackError when `listen` is not on loopback and remote is not allowed
   * @throws ListenFailedError when the port cannot be bound
   */
  async start(): Promise<void> {
    checkAdminAddress(this.opts.listen, this.opts.allowRemote ?? false, 'adminListen');
    const server = http.createServer(
      createRouter(
        'routes' in this.opts ? [...this.opts.routes] : adminRoutes(this.opts.source),
        this.log,
        () => true,
      ),
    );
    server.keepAliveTimeout = 5_000;
    this.bound = await bind(server, this.opts.listen, 'admin server');
    this.server = server;
    this.log.info({ address: this.bound }, 'Admin server listening');
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (s) await closeServer(s);
  }
}

export interface MetricsServerOptions {
  readonly logger: Logger;
  readonly listen: string;
  readonly metrics: () => Promise<MetricsText>;
}

/** The Prometheus endpoint (`/stats/prometheus`, `/metrics`). start() binds; close() is idempotent. */
export class MetricsServer implements Lifecycle {
  private readonly log: Logger;
  private server: http.Server | undefined;
  private bound: string | undefined;

  constructor(private readonly opts: MetricsServerOptions) {
    this.log = opts.logger.child({ component: 'proxy', subsystem: 'metrics' });
  }

  get address(): string | undefined {
    return this.bound;
  }

  /** @throws ListenFailedError when the port cannot be bound */
  async start(): Promise<void> {
    const server = http.createServer(
      createRouter(metricsRoutes(this.opts.metrics), this.log, () => false),
    );
    server.keepAliveTimeout = 5_000;
    this.bound = await bind(server, this.opts.listen, 'metrics server');
    this.server = server;
    this.log.info({ address: this.bound }, 'Metrics server listening');
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (s) await closeServer(s);
  }
}
