import { parseServerInfo, parseWorkers } from './admin-probe';

describe('the proxy /server_info readers', () => {
  const primary = JSON.stringify({
    state: 'LIVE',
    control_plane: { connected: true, versions: { clusters: '3', listeners: '3', bad: 7 } },
    workers: { concurrency: 2, answered_by: 1, live: 1 },
  });

  it('reads the xDS state', () => {
    expect(parseServerInfo(primary)).toEqual({
      connected: true,
      versions: { clusters: '3', listeners: '3' },
    });
    expect(parseServerInfo('{"control_plane":{"connected":"yes"}}')).toBeUndefined();
    expect(parseServerInfo('not json')).toBeUndefined();
  });

  it('reads the workers of a --concurrency proxy, and nothing from one without', () => {
    expect(parseWorkers(primary)).toEqual({ concurrency: 2, live: 1 });
    expect(parseWorkers('{"state":"LIVE"}')).toBeUndefined();
    expect(parseWorkers('{"workers":{"concurrency":"2","live":2}}')).toBeUndefined();
    expect(parseWorkers('null')).toBeUndefined();
    expect(parseWorkers('{')).toBeUndefined();
  });
});
