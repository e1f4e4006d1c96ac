/**
 * Probes the local application on an interval and turns results into a health state with
 * Kubernetes' thresholds: `failureThreshold` consecutive failures make a healthy workload
 * unhealthy, `successThreshold` consecutive successes make an unhealthy one healthy. The first
 * result sets the initial state at once, so a host whose application is down at boot never
 * registers as healthy.
 */
import { type Clock, systemClock } from '../../common/clock';
import { CloseOnce, isAbortError } from '../../common/lifecycle';
import type { Lifecycle } from '../../common/lifecycle';
import type { Logger } from '../../common/logging';
import { prom } from '../../common/metrics';
import { type HealthProbeSpec, type ProbeResult, probeKind, runProbe } from './probes';

/** A health state as reported to pilot. */
export interface WorkloadHealth {
  readonly healthy: boolean;
  /** The probe result behind the state, e.g. `HTTP 500 from http://127.0.0.1:9080/health`. */
  readonly message: string;
}

/**
 * Consecutive-result counting (pure). `record` returns the new state when it changed, including
 * the first result, and undefined otherwise.
 */
export class HealthThresholds {
  private state: boolean | undefined;
  private successes = 0;
  private failures = 0;

  constructor(
    private readonly failureThreshold: number,
    private readonly successThreshold: number,
  ) {
    if (!(failureThreshold >= 1) || !(successThreshold >= 1))
      throw new RangeError(
        `health thresholds must be at least 1 (failureThreshold ${failureThreshold}, successThreshold ${successThreshold})`,
      );
  }

  /** The current state; undefined before the first result. */
  get healthy(): boolean | undefined {
    return this.state;
  }

  /** Counts one result. */
  record(ok: boolean): boolean | undefined {
    if (ok) {
      this.successes++;
      this.failures = 0;
    } else {
      this.failures++;
      this.successes = 0;
    }
    const next =
      this.state === undefined
        ? ok
        : this.state
          ? this.failures < this.failureThreshold
          : this.successes >= this.successThreshold;
    if (next === this.state) return undefined;
    this.state = next;
    return next;
  }
}

/** Probe metrics, registered once per prom Registry. */
export class HealthMetrics {
  readonly probes: prom.Counter<'result'>;
  readonly healthy: prom.Gauge;

  constructor(registry: prom.Registry) {
    this.probes = new prom.Counter({
      name: 'sail_agent_health_probe_total',
      help: 'Health probes of the local application, by result (success, failure)',
      labelNames: ['result'],
      registers: [registry],
    });
    this.healthy = new prom.Gauge({
      name: 'sail_agent_workload_healthy',
      help: 'Health of the local application after the probe thresholds: 1 healthy, 0 unhealthy or not probed yet',
      registers: [registry],
    });
  }
}

/** Options of {@link HealthChecker}. */
export interface HealthCheckerOptions {
  readonly logger: Logger;
  readonly clock?: Clock;
  readonly metrics: HealthMetrics;
  readonly spec: HealthProbeSpec;
  /** Called with every state change, the first result included. Must not throw. */
  readonly onChange: (health: WorkloadHealth) => void;
  /** Runs one probe; default {@link runProbe}. */
  readonly probe?: (spec: HealthProbeSpec, signal: AbortSignal) => Promise<ProbeResult>;
}

/** The probe loop. start() resolves at once; the first probe runs immediately. */
export class HealthChecker implements Lifecycle {
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly thresholds: HealthThresholds;
  private readonly abort = new AbortController();
  private readonly closer = new CloseOnce();
  private loop: Promise<void> | undefined;
  private current: WorkloadHealth | undefined;
  private last: ProbeResult | undefined;

  constructor(private readonly opts: HealthCheckerOptions) {
    this.log = opts.logger.child({ subsystem: 'health', probe: probeKind(opts.spec) });
    this.clock = opts.clock ?? systemClock;
    this.thresholds = new HealthThresholds(opts.spec.failureThreshold, opts.spec.successThreshold);
  }

  /** The current state; undefined until the first probe finished. */
  get health(): WorkloadHealth | undefined {
    return this.current;
  }

  /** The latest probe result (which may not have changed the state yet). */
  get lastResult(): ProbeResult | undefined {
    return this.last;
  }

  start(): Promise<void> {
    if (this.loop || this.closer.closed) return Promise.resolve();
    this.loop = this.run(this.abort.signal).catch((err: unknown) => {
      if (!isAbortError(err)) this.log.error({ err }, 'Health probe loop failed');
    });
    return Promise.resolve();
  }

  close(): Promise<void> {
    return this.closer.run(async () => {
      this.abort.abort();
      await this.loop;
    });
  }

  private async run(signal: AbortSignal): Promise<void> {
    const probe = this.opts.probe ?? runProbe;
    while (!signal.aborted) {
      const result = await probe(this.opts.spec, signal);
      if (signal.aborted) return;
      this.last = result;
      this.opts.metrics.probes.inc({ result: result.ok ? 'success' : 'failure' });
      this.log.debug({ ok: result.ok, message: result.message }, 'Health probe finished');
      const change = this.thresholds.record(result.ok);
      if (change !== undefined) {
        const first = this.current === undefined;
        this.current = { healthy: change, message: result.message };
        this.opts.metrics.healthy.set(change ? 1 : 0);
        const fields = { healthy: change, message: result.message };
        if (first) this.log.info(fields, 'Workload health probed for the first time');
        else if (change) this.log.info(fields, 'Workload is healthy again');
        else this.log.warn(fields, 'Workload is unhealthy: taking it out of rotation');
        this.opts.onChange(this.current);
      }
      await this.clock.sleep(this.opts.spec.intervalMs, signal);
    }
  }
}
