import { mergeStats } from './merge-stats';

describe('mergeStats', () => {
  it('adds counters and gauges of traffic, shows the configuration once, states the worst', () => {
    const w1 = new Map<string, number | string>([
      ['http.downstream_rq_total', 30],
      ['server.total_connections', 4],
      ['control_plane.acks', 5],
      ['cluster.outbound|80||a.upstream_rq_total', 7],
      ['server.state', 0],
      ['server.live', 1],
      ['server.uptime', 100],
      ['server.days_until_first_cert_expiring', 20],
      ['control_plane.connected_state', 1],
      ['cluster_manager.active_clusters', 12],
      ['listener_manager.total_listeners_active', 3],
      ['listener_manager.lds.version_text', 'v7'],
      ['cluster.outbound|80||a.membership_total', 3],
      ['cluster.outbound|80||a.membership_healthy', 3],
    ]);
    const w2 = new Map<string, number | string>([
      ['http.downstream_rq_total', 12],
      ['server.total_connections', 1],
      ['control_plane.acks', 5],
      ['cluster.outbound|80||a.upstream_rq_total', 2],
      ['server.state', 2],
      ['server.live', 0],
      ['server.uptime', 3],
      ['server.days_until_first_cert_expiring', 19],
      ['control_plane.connected_state', 0],
      ['cluster_manager.active_clusters', 12],
      ['listener_manager.total_listeners_active', 3],
      ['listener_manager.lds.version_text', 'v6'],
      ['cluster.outbound|80||a.membership_total', 3],
      ['cluster.outbound|80||a.membership_healthy', 2],
      // Only worker 2 has it (a cluster worker 1 has not received yet).
      ['cluster.outbound|81||b.upstream_rq_total', 1],
    ]);
    expect(Object.fromEntries(mergeStats([w1, w2]))).toEqual({
      'http.downstream_rq_total': 42,
      'server.total_connections': 5,
      'control_plane.acks': 10,
      'cluster.outbound|80||a.upstream_rq_total': 9,
      'server.state': 2,
      'server.live': 0,
      'server.uptime': 100,
      'server.days_until_first_cert_expiring': 19,
      'control_plane.connected_state': 0,
      'cluster_manager.active_clusters': 12,
      'listener_manager.total_listeners_active': 3,
      'listener_manager.lds.version_text': 'v7',
      'cluster.outbound|80||a.membership_total': 3,
      'cluster.outbound|80||a.membership_healthy': 2,
      'cluster.outbound|81||b.upstream_rq_total': 1,
    });
  });

  it('is the one worker when there is one, and empty when none answered', () => {
    const one = new Map<string, number | string>([['http.downstream_rq_total', 3]]);
    expect(mergeStats([one])).toEqual(one);
    expect(mergeStats([])).toEqual(new Map());
  });
});
