/** The node agent's Prometheus metrics (`sail_agent_*`), on a registry of its own. */
import type { Clock } from '../../common/clock';
import { createRegistry, prom } from '../../common/metrics';
import { ROTATION_ERROR_REASONS, type RotationErrorReason } from '../identity/rotator';
import type { WorkloadIdentity } from '../identity/cert-store';

/** Options of {@link AgentMetrics}. */
export interface AgentMetricsOptions {
  readonly clock: Clock;
  /** The current certificate, read at scrape time. */
  readonly current: () => WorkloadIdentity | undefined;
  /** Add Node's process metrics (CPU, memory, fds, event loop lag). */
  readonly processMetrics: boolean;
}

/** The agent's metrics; gauges are computed at scrape time from the injected clock. */
export class AgentMetrics {
  readonly registry: prom.Registry;
  private readonly rotations: prom.Counter;
  private readonly rotationErrors: prom.Counter<'reason'>;

  constructor(opts: AgentMetricsOptions) {
    this.registry = createRegistry(opts.processMetrics);
    const registers = [this.registry];
    new prom.Gauge({
      name: 'sail_agent_cert_expiry_seconds',
      help: 'Seconds until the workload certificate expires (0 when there is none or it has expired)',
      registers,
      collect() {
        const id = opts.current();
        this.set(id ? Math.max(0, (id.notAfter.getTime() - opts.clock.now()) / 1000) : 0);
      },
    });
    new prom.Gauge({
      name: 'sail_agent_cert_not_after_timestamp_seconds',
      help: 'Expiry of the workload certificate as a Unix timestamp (0 when there is none)',
      registers,
      collect() {
        const id = opts.current();
        this.set(id ? id.notAfter.getTime() / 1000 : 0);
      },
    });
    this.rotations = new prom.Counter({
      name: 'sail_agent_cert_rotations_total',
      help: 'Workload certificates obtained from the CA (first issue and renewals)',
      registers,
    });
    this.rotationErrors = new prom.Counter({
      name: 'sail_agent_cert_rotation_errors_total',
      help: 'Failed attempts to obtain a workload certificate, by reason',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of ROTATION_ERROR_REASONS) this.rotationErrors.inc({ reason }, 0);
  }

  /** Counts a certificate obtained from the CA. */
  rotated(): void {
    this.rotations.inc();
  }

  /** Counts a failed attempt. */
  rotationFailed(reason: RotationErrorReason): void {
    this.rotationErrors.inc({ reason });
  }
}
