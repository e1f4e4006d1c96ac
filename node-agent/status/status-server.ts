/**
 * The agent's status endpoint (:15020, loopback by default): `/healthz/ready` for systemd, load
 * balancers and humans, `/status` (JSON, what `sail status` prints), and `/metrics` for
 * Prometheus.
 */
import * as http from 'node:http';
import type { Clock } from '../../common/clock';
import { closeServer, createRouter, listen, type Route } from '../../common/http';
import type { Lifecycle } from '../../common/lifecycle';
import type { Logger } from '../../common/logging';
import { type prom, renderMetrics } from '../../common/metrics';
import type { WorkloadIdentity } from '../identity/cert-store';

/** The body of `/healthz/ready`. */
export interface ReadinessReport {
  readonly ready: boolean;
  readonly spiffeId: string | null;
  /** ISO 8601 expiry of the certificate, null without one. */
  readonly notAfter: string | null;
  /** Whole seconds until expiry (0 when expired or absent). */
  readonly secondsLeft: number;
}

/**
 * Readiness: ready while the certificate is valid and the mesh side (the proxy ready, capture
 * installed; true when the host runs neither) is up.
 */
export function readiness(
  identity: WorkloadIdentity | undefined,
  nowMs: number,
  meshReady = true,
): ReadinessReport {
  if (!identity) return { ready: false, spiffeId: null, notAfter: null, secondsLeft: 0 };
  const leftMs = identity.notAfter.getTime() - nowMs;
  return {
    ready: leftMs > 0 && meshReady,
    spiffeId: identity.spiffeId,
    notAfter: identity.notAfter.toISOString(),
    secondsLeft: Math.max(0, Math.floor(leftMs / 1000)),
  };
}

/** Options of {@link StatusServer}. */
export interface StatusServerOptions {
  /** `HOST:PORT`; port 0 picks a free port (read it back from `address`). */
  readonly listen: string;
  readonly logger: Logger;
  readonly clock: Clock;
  /** The current certificate (undefined when none is valid). */
  readonly current: () => WorkloadIdentity | undefined;
  /** True when the proxy is ready and capture installed (or the host runs neither). Default: true. */
  readonly meshReady?: () => boolean;
  /** The rest of `/status`: registration, proxy, capture, DNS, relay. */
  readonly details?: () => Promise<Record<string, unknown>>;
  readonly registry: prom.Registry;
}

/** The HTTP status server. start() binds; close() stops it (idempotent). */
export class StatusServer implements Lifecycle {
  private readonly server: http.Server;
  private bound: string | undefined;

  constructor(private readonly opts: StatusServerOptions) {
    const routes: Route[] = [
      {
        method: 'GET',
        path: '/healthz/ready',
        admin: false,
        handler: () => {
          const report = readiness(opts.current(), opts.clock.now(), opts.meshReady?.() ?? true);
          return { status: report.ready ? 200 : 503, json: report };
        },
      },
      {
        method: 'GET',
        path: '/status',
        admin: false,
        handler: async () => {
          const report = readiness(opts.current(), opts.clock.now(), opts.meshReady?.() ?? true);
          const details = opts.details ? await opts.details() : {};
          return { status: 200, json: { ...report, ...details } };
        },
      },
      {
        method: 'GET',
        path: '/metrics',
        admin: false,
        handler: async () => renderMetrics(opts.registry),
      },
    ];
    this.server = http.createServer(createRouter(routes, opts.logger, () => false));
  }

  /** The bound address (`HOST:PORT`, the real port when 0 was asked for); undefined before start. */
  get address(): string | undefined {
    return this.bound;
  }

  /** Binds the listen address. @throws Error when it cannot (e.g. EADDRINUSE) */
  async start(): Promise<void> {
    this.bound = await listen(this.server, this.opts.listen);
    this.opts.logger.info({ address: this.bound }, 'Status server listening');
  }

  /** Stops listening and ends idle connections. Idempotent. */
  async close(): Promise<void> {
    await closeServer(this.server);
  }
}
