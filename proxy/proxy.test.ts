/**
 * The Proxy component with its real parts: certificates from a test CA in the agent's layout,
 * a fake pilot (FakeAdsServer) over mTLS with the control plane's SPIFFE ID, explicit traffic mode
 * on 127.0.0.1. The full data path (two proxies and pilot) is test/integration/proxy-traffic.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { serverCredentials, StaticCertificateProvider } from '../common/grpc';
import { LogCapture } from '../test/helpers/log-capture';
import { freePort } from '../test/helpers/sail-process';
import { TestCa } from '../test/helpers/test-ca';
import { makeTmpDir } from '../test/helpers/tmp-dir';
import { waitFor } from '../test/helpers/wait-for';
import { writeWorkloadIdentity } from '../test/helpers/workload-identity';
import { StartAbortedError } from './errors';
import type { ProxyOptions } from './options';
import { Proxy } from './proxy';
import { FakeAdsServer } from './xds/fake-ads-server';

const TD = 'cluster.local';
const WORKLOAD_ID = `spiffe://${TD}/ns/default/sa/web`;
const NODE_ID = 'sidecar~127.0.0.1~vm-1.default~default.svc.cluster.local';

async function get(address: string, urlPath: string): Promise<{ status: number; text: string }> {
  const res = await fetch(`http://${address}${urlPath}`);
  return { status: res.status, text: await res.text() };
}

/** A port nothing listens on (bound, then closed). */
async function deadAddress(): Promise<string> {
  return `127.0.0.1:${await freePort()}`;
}

describe('Proxy', () => {
  let ca: TestCa;
  let tmp: { dir: string; cleanup: () => void };
  let logs: LogCapture;
  const proxies: Proxy[] = [];

  const options = (over: Partial<ProxyOptions>): ProxyOptions => ({
    logger: logs.logger,
    nodeId: NODE_ID,
    workload: { name: 'vm-1', namespace: 'default', labels: { app: 'web', version: 'v1' } },
    trustDomain: TD,
    pilotAddress: '127.0.0.1:1',
    pilotSpiffeId: ca.serverSpiffeId,
    certsDir: path.join(tmp.dir, 'certs'),
    stateDir: path.join(tmp.dir, 'state'),
    traffic: { mode: 'explicit', outboundBindHost: '127.0.0.1', inboundBindHost: '127.0.0.1' },
    adminListen: '127.0.0.1:0',
    metricsListen: '127.0.0.1:0',
    accessLog: false,
    drainMs: 200,
    shutdownGraceMs: 2_000,
    initialFetchTimeoutMs: 30_000,
    ...over,
  });
  const newProxy = (over: Partial<ProxyOptions> = {}) => {
    const p = new Proxy(options(over));
    proxies.push(p);
    return p;
  };

  beforeAll(async () => {
    ca = await TestCa.create({ trustDomain: TD });
  });

  beforeEach(() => {
    tmp = makeTmpDir('sail-proxy-');
    logs = new LogCapture('info');
  });

  afterEach(async () => {
    await Promise.all(proxies.splice(0).map(p => p.close()));
    tmp.cleanup();
  });

  it('starts without pilot and without a certificate, and says why it is not ready', async () => {
    const proxy = newProxy({ pilotAddress: await deadAddress() });
    await proxy.start();
    expect(proxy.ready).toBe(false);
    const ready = await get(proxy.adminAddress!, '/ready');
    expect(ready.status).toBe(503);
    expect(ready.text).toContain('PRE_INITIALIZING: ');
    expect(ready.text).toContain(`no workload certificate in ${path.join(tmp.dir, 'certs')} yet`);
    expect(ready.text).toContain('xds: waiting for pilot');
    const info = JSON.parse((await get(proxy.adminAddress!, '/server_info')).text) as Record<
      string,
      unknown
    >;
    expect(info).toMatchObject({ state: 'PRE_INITIALIZING', node: { id: NODE_ID } });
    const metrics = await get(proxy.metricsAddress!, '/stats/prometheus');
    expect(metrics.text).toContain('sail_proxy_ready 0');
    expect(metrics.text).toContain('sail_proxy_xds_connected 0');
    expect(metrics.text).toContain('process_cpu_seconds_total');
    const stats = await get(proxy.adminAddress!, '/stats');
    expect(stats.text).toContain('server.live: 0\n');
    expect(stats.text).toContain('control_plane.connected_state: 0\n');
  });

  it('refuses a second start and closes idempotently', async () => {
    const proxy = newProxy();
    await proxy.start();
    await expect(proxy.start()).rejects.toMatchObject({ code: 'COMMON_ALREADY_STARTED' });
    await Promise.all([proxy.close(), proxy.close()]);
    await proxy.close();
    await expect(proxy.start()).rejects.toMatchObject({ code: 'COMMON_CLOSED' });
  });

  it('aborts a start when closed meanwhile and leaves no port bound', async () => {
    const adminPort = await freePort();
    const proxy = newProxy({ adminListen: `127.0.0.1:${adminPort}` });
    const starting = proxy.start();
    const closing = proxy.close();
    await expect(starting).rejects.toBeInstanceOf(StartAbortedError);
    await closing;
    // The port is free again.
    const srv = net.createServer();
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(adminPort, '127.0.0.1', resolve);
    });
    await new Promise<void>(r => srv.close(() => r()));
  });

  it('fails start when the admin port is taken, naming it', async () => {
    const first = newProxy();
    await first.start();
    const second = newProxy({ adminListen: first.adminAddress! });
    await expect(second.start()).rejects.toMatchObject({ code: 'PROXY_LISTEN_FAILED' });
  });

  describe('with pilot', () => {
    let pilot: FakeAdsServer;
    let echo: net.Server;
    let echoPort = 0;
    let servicePort = 0;
    const cluster = () => `outbound|${servicePort}||echo.default.svc.cluster.local`;

    beforeEach(async () => {
      echo = net.createServer(s => s.pipe(s));
      await new Promise<void>(r => echo.listen(0, '127.0.0.1', r));
      echoPort = (echo.address() as net.AddressInfo).port;
      servicePort = await freePort();
      const pilotServing = await ca.issueWorkloadCert({
        node: 'pilot',
        spiffeId: ca.serverSpiffeId,
        notBeforeMs: Date.now() - 60_000,
        notAfterMs: Date.now() + 3600_000,
      });
      pilot = new FakeAdsServer();
      pilot.set('clusters', [
        {
          name: cluster(),
          type: 'STATIC',
          connectTimeout: { seconds: '1' },
          loadAssignment: {
            clusterName: cluster(),
            endpoints: [
              {
                lbEndpoints: [
                  {
                    endpoint: {
                      address: { socketAddress: { address: '127.0.0.1', portValue: echoPort } },
                    },
                  },
                ],
              },
            ],
          },
        },
      ]);
      pilot.set('listeners', [
        {
          name: `0.0.0.0_${servicePort}`,
          address: { socketAddress: { address: '0.0.0.0', portValue: servicePort } },
          bindToPort: { value: false },
          trafficDirection: 'OUTBOUND',
          filterChains: [
            {
              filters: [
                {
                  name: 'envoy.filters.network.tcp_proxy',
                  typedConfig: {
                    '@type':
                      'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy',
                    statPrefix: cluster(),
                    cluster: cluster(),
                  },
                },
              ],
            },
          ],
        },
      ]);
      await pilot.start(
        serverCredentials(
          new StaticCertificateProvider(ca.rootPem, pilotServing.certChainPem, pilotServing.keyPem),
          true,
        ),
      );
    });

    afterEach(async () => {
      await Promise.all(proxies.splice(0).map(p => p.close()));
      await pilot.stop();
      await new Promise<void>(r => echo.close(() => r()));
    });

    /** Opens a TCP connection through the proxy's outbound listener and echoes `text`. */
    const echoThrough = (text: string) =>
      new Promise<string>((resolve, reject) => {
        const s = net.connect(servicePort, '127.0.0.1');
        let got = '';
        s.on('data', (c: Buffer) => {
          got += c.toString('utf8');
          if (got.length >= text.length) s.end();
        });
        s.on('close', () => resolve(got));
        s.on('error', reject);
        s.write(text);
      });

    it('becomes ready over mTLS to pilot, binds, proxies and reports', async () => {
      await writeWorkloadIdentity(ca, path.join(tmp.dir, 'certs'), WORKLOAD_ID);
      const proxy = newProxy({ pilotAddress: pilot.address });
      await proxy.start();
      await proxy.whenReady();
      expect(proxy.ready).toBe(true);
      expect(await get(proxy.adminAddress!, '/ready')).toEqual({ status: 200, text: 'LIVE\n' });
      expect(proxy.listenerAddresses().get(`0.0.0.0_${servicePort}`)).toEqual({
        address: '127.0.0.1',
        port: servicePort,
      });

      // pilot saw the node metadata it reads.
      const first = pilot.requests.find(r => r.node !== undefined);
      expect(JSON.stringify(first?.node)).toContain('INSTANCE_IPS');

      expect(await echoThrough('hello')).toBe('hello');

      const dump = JSON.parse((await get(proxy.adminAddress!, '/config_dump')).text) as {
        configs: Record<string, unknown>[];
      };
      expect(dump.configs[1]).toMatchObject({
        '@type': 'type.googleapis.com/envoy.admin.v3.ClustersConfigDump',
        version_info: pilot.version('clusters'),
        dynamic_active_clusters: [{ cluster: { name: cluster() } }],
      });
      expect((await get(proxy.adminAddress!, '/clusters')).text).toContain(
        `${cluster()}::127.0.0.1:${echoPort}::health_flags::healthy`,
      );
      expect((await get(proxy.adminAddress!, '/listeners')).text).toContain(
        `0.0.0.0_${servicePort}::127.0.0.1:${servicePort}`,
      );

      const metrics = await waitFor(
        async () => {
          const t = (await get(proxy.metricsAddress!, '/metrics')).text;
          return t.includes('istio_tcp_connections_closed_total{') ? t : undefined;
        },
        { what: 'the TCP connection in the metrics' },
      );
      expect(metrics).toContain('sail_proxy_ready 1');
      expect(metrics).toContain('sail_proxy_xds_connected 1');
      expect(metrics).toMatch(/sail_proxy_cert_expiry_seconds \d+/);
      expect(metrics).toMatch(
        /istio_tcp_connections_opened_total\{[^}]*reporter="source"[^}]*destination_service="echo\.default\.svc\.cluster\.local"[^}]*\} 1/,
      );
      expect(metrics).toContain(`source_principal="${WORKLOAD_ID}"`);
      expect(logs.find('Applied first configuration', 'info')).toHaveLength(1);
    });

    it('serves its last-known-good configuration when pilot is down at start', async () => {
      await writeWorkloadIdentity(ca, path.join(tmp.dir, 'certs'), WORKLOAD_ID);
      const first = newProxy({ pilotAddress: pilot.address });
      await first.start();
      await first.whenReady();
      await first.close();
      expect(fs.existsSync(path.join(tmp.dir, 'state', 'proxy-xds.json'))).toBe(true);
      await pilot.stop();

      const second = newProxy({ pilotAddress: pilot.address });
      await second.start();
      // Ready at once from the state file, without pilot.
      expect(second.ready).toBe(true);
      expect(await echoThrough('again')).toBe('again');
    });

    it('is not ready until the certificate appears, then recovers', async () => {
      const proxy = newProxy({ pilotAddress: pilot.address });
      await proxy.start();
      expect((await get(proxy.adminAddress!, '/ready')).text).toContain('no workload certificate');
      await writeWorkloadIdentity(ca, path.join(tmp.dir, 'certs'), WORKLOAD_ID);
      await proxy.reloadCertificates();
      // xDS reconnects with the certificate after its backoff (1 s at first).
      await proxy.whenReady();
      expect((await get(proxy.adminAddress!, '/ready')).status).toBe(200);
    });

    it('reports DRAINING while closing and drains open connections', async () => {
      await writeWorkloadIdentity(ca, path.join(tmp.dir, 'certs'), WORKLOAD_ID);
      const proxy = newProxy({ pilotAddress: pilot.address });
      await proxy.start();
      await proxy.whenReady();
      const s = net.connect(servicePort, '127.0.0.1');
      await new Promise<void>((resolve, reject) => {
        s.once('connect', () => resolve());
        s.once('error', reject);
      });
      s.on('error', () => undefined);
      const closed = new Promise<void>(r => s.once('close', () => r()));
      const started = Date.now();
      const closing = proxy.close();
      // The admin server closes last: it tells load balancers the proxy is going away.
      expect(await get(proxy.adminAddress!, '/ready')).toEqual({
        status: 503,
        text: 'DRAINING: shutting down\n',
      });
      await closing;
      await closed;
      // The connection was given drainMs, then closed: close() is bounded.
      expect(Date.now() - started).toBeLessThan(2_000);
      expect(proxy.ready).toBe(false);
    });
  });
});
