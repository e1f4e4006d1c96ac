/** Kubernetes-style thresholds (pure) and the probe loop on a FakeClock with a scripted probe. */
import { prom } from '../../common/metrics';
import { FakeClock } from '../../test/helpers/fake-clock';
import { LogCapture } from '../../test/helpers/log-capture';
import { waitFor } from '../../test/helpers/wait-for';
import {
  HealthChecker,
  HealthMetrics,
  HealthThresholds,
  type WorkloadHealth,
} from './health-checker';
import type { HealthProbeSpec, ProbeResult } from './probes';

describe('HealthThresholds', () => {
  it.each([
    { name: 'the first success sets healthy', f: 3, s: 1, results: '+', changes: ['+'] },
    { name: 'the first failure sets unhealthy', f: 3, s: 1, results: '-', changes: ['-'] },
    {
      name: 'healthy turns unhealthy only after failureThreshold consecutive failures',
      f: 3,
      s: 1,
      results: '+--+---',
      changes: ['+', '', '', '', '', '', '-'],
    },
    {
      name: 'unhealthy turns healthy after successThreshold consecutive successes',
      f: 1,
      s: 2,
      results: '-+-++',
      changes: ['-', '', '', '', '+'],
    },
    {
      name: 'threshold 1 follows every result',
      f: 1,
      s: 1,
      results: '+-+-',
      changes: ['+', '-', '+', '-'],
    },
  ])('$name', ({ f, s, results, changes }) => {
    const t = new HealthThresholds(f, s);
    const got = Array.from(results, r => {
      const c = t.record(r === '+');
      return c === undefined ? '' : c ? '+' : '-';
    });
    expect(got).toEqual(changes);
  });

  it('rejects thresholds below 1', () => {
    expect(() => new HealthThresholds(0, 1)).toThrow('health thresholds must be at least 1');
  });
});

describe('HealthChecker', () => {
  const spec: HealthProbeSpec = {
    exec: { command: ['unused'] },
    intervalMs: 5000,
    timeoutMs: 1000,
    failureThreshold: 2,
    successThreshold: 1,
  };

  it('probes at once, then every interval, reports changes, counts results and logs transitions', async () => {
    const clock = new FakeClock();
    const logs = new LogCapture();
    const registry = new prom.Registry();
    const script: boolean[] = [true, false, false, true];
    let probes = 0;
    const changes: WorkloadHealth[] = [];
    const checker = new HealthChecker({
      logger: logs.logger,
      clock,
      metrics: new HealthMetrics(registry),
      spec,
      onChange: h => changes.push(h),
      probe: (): Promise<ProbeResult> => {
        const ok = script[probes++] ?? true;
        return Promise.resolve({ ok, message: ok ? 'fine' : `failure ${probes}` });
      },
    });
    await checker.start();
    await waitFor(() => probes === 1 && clock.pendingSleeps === 1);
    expect(changes).toEqual([{ healthy: true, message: 'fine' }]);
    expect(clock.nextSleepInMs).toBe(5000);
    for (let i = 2; i <= 4; i++) {
      clock.advance(5000);
      await waitFor(() => probes === i && clock.pendingSleeps === 1, { what: `probe ${i}` });
    }
    expect(changes).toEqual([
      { healthy: true, message: 'fine' },
      { healthy: false, message: 'failure 3' },
      { healthy: true, message: 'fine' },
    ]);
    expect(checker.health).toEqual({ healthy: true, message: 'fine' });
    expect(logs.find('Workload is unhealthy: taking it out of rotation', 'warn')).toMatchObject([
      { healthy: false, message: 'failure 3', probe: 'exec' },
    ]);
    expect(logs.find('Workload is healthy again', 'info')).toHaveLength(1);
    const text = await registry.metrics();
    expect(text).toContain('sail_agent_health_probe_total{result="success"} 2');
    expect(text).toContain('sail_agent_health_probe_total{result="failure"} 2');
    expect(text).toContain('sail_agent_workload_healthy 1');
    await checker.close();
    await checker.close();
    expect(clock.pendingSleeps).toBe(0);
  });
});
