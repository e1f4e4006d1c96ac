/**
 * Two connection managers back to back on loopback, as two sidecars: the outbound one (A) sends
 * the application's HTTP/1.1 over mesh mTLS (certificates from the test CA) to the inbound one
 * (B), which serves the local workload over plain HTTP/1.1.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { silentLogger } from '../../common/logging';
import { TestCa } from '../../test/helpers/test-ca';
import { makeTmpDir } from '../../test/helpers/tmp-dir';
import { startWorkloadTls, writeWorkloadIdentity } from '../../test/helpers/workload-identity';
import type { DownstreamTls } from '../model';
import { type FileTlsProvider, serverSocketOptions } from '../tls';
import { DefaultClusterManager } from '../upstream';
import { DefaultHttpConnectionManager } from './connection-manager';
import {
  EchoOrigin,
  Harness,
  MESH_TRANSPORT,
  type OriginRequest,
  RecordingTelemetry,
  TestConfig,
  contextFor,
  httpHandler,
  route,
  routeTo,
  runCurl,
  staticCluster,
  table,
  vhost,
} from './testing';

const OUTBOUND = 'outbound|80||echo.default.svc.cluster.local';
const INBOUND = 'inbound|80||';
const SPIFFE_A = 'spiffe://cluster.local/ns/default/sa/a';
const SPIFFE_B = 'spiffe://cluster.local/ns/default/sa/b';

const MESH_SERVER_TLS: DownstreamTls = {
  certificate: { kind: 'sds', name: 'default' },
  validation: { trust: { kind: 'sds', name: 'ROOTCA' }, sanMatchers: [] },
  requireClientCertificate: true,
  alpn: [],
};

describe('mesh: HTTP/1.1 → h2 over mTLS → HTTP/1.1 between two managers', () => {
  const tmp = makeTmpDir('sail-mesh-');
  const origin = new EchoOrigin();
  const telemetryB = new RecordingTelemetry('vm-b', SPIFFE_B);
  let tlsA: FileTlsProvider;
  let tlsB: FileTlsProvider;
  let clustersB: DefaultClusterManager;
  let managerB: DefaultHttpConnectionManager;
  let serverB: net.Server;
  let connectionsB = 0;
  const socketsB = new Set<tls.TLSSocket>();
  let a: Harness;
  let a1: Harness;

  let ca: TestCa;

  beforeAll(async () => {
    ca = await TestCa.create();
    ({ provider: tlsA } = await startWorkloadTls(ca, path.join(tmp.dir, 'a'), SPIFFE_A, {
      node: 'vm-a',
    }));
    ({ provider: tlsB } = await startWorkloadTls(ca, path.join(tmp.dir, 'b'), SPIFFE_B, {
      node: 'vm-b',
    }));
    await origin.start();

    // B: inbound sidecar. TLS is terminated here as the listeners would; no ALPN is offered, so
    // the codec is found by sniffing the bytes inside TLS.
    const configB = new TestConfig([staticCluster(INBOUND, [origin.port])]);
    clustersB = new DefaultClusterManager({ logger: silentLogger(), tls: tlsB });
    clustersB.update(configB.current);
    managerB = new DefaultHttpConnectionManager({
      logger: silentLogger(),
      config: configB,
      clusters: clustersB,
      telemetry: telemetryB,
      localPrincipal: () => SPIFFE_B,
    });
    const handlerB = httpHandler(
      table('inbound', [vhost('in', ['*'], [route(routeTo(INBOUND))])]),
      {
        forwardClientCert: 'APPEND_FORWARD',
        clientCertDetails: { subject: true, uri: true, dns: true, cert: false },
      },
    );
    // As the listeners do: a TLSSocket over the accepted TCP socket, handed over once secure.
    serverB = net.createServer(raw => {
      const socket = new tls.TLSSocket(raw, serverSocketOptions(tlsB, MESH_SERVER_TLS));
      socketsB.add(socket);
      socket.once('close', () => socketsB.delete(socket));
      socket.on('error', () => socket.destroy());
      socket.once('secure', () => {
        connectionsB++;
        const peer = tlsB.peerIdentity(socket);
        managerB.handle(
          socket,
          handlerB,
          contextFor(raw, handlerB, {
            direction: 'inbound',
            tls: { ...(peer ? { peer } : {}) },
            connectionSecurity: 'mutual_tls',
          }),
        );
      });
    });
    await new Promise<void>(r => serverB.listen(0, '127.0.0.1', r));
    const portB = (serverB.address() as { port: number }).port;

    // A: outbound sidecar toward B with the mesh transport.
    const clusterA = staticCluster(OUTBOUND, [portB], {}, [MESH_TRANSPORT]);
    const routesA = table('80', [vhost('echo', ['*'], [route(routeTo(OUTBOUND))])]);
    a = await Harness.start({
      clusters: [clusterA],
      routes: routesA,
      tls: tlsA,
      telemetry: new RecordingTelemetry('vm-a', SPIFFE_A),
      manager: { meshUpstreamProtocol: 'http2' },
    });
    a1 = await Harness.start({
      clusters: [clusterA],
      routes: routesA,
      tls: tlsA,
      manager: { meshUpstreamProtocol: 'http1' },
    });
  });

  afterAll(async () => {
    await a.close();
    await a1.close();
    for (const s of socketsB) s.destroy();
    await new Promise<void>(r => serverB.close(() => r()));
    await managerB.close();
    clustersB.close();
    await origin.close();
    await tlsA.close();
    await tlsB.close();
    tmp.cleanup();
  });

  it('carries requests as multiplexed h2 over one mTLS connection, with XFCC and peer metadata', async () => {
    const beforeB = telemetryB.requests.length;
    const conns = connectionsB;
    for (let i = 0; i < 3; i++) {
      const r = await runCurl(['-i', '-H', 'Host: echo.default', `${a.base}/mesh/${String(i)}`]);
      const text = r.stdout.toString();
      expect(text).toMatch(/^HTTP\/1\.1 200/);
      expect(text).not.toMatch(/x-sail-peer-metadata/i);
      const seen = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as OriginRequest;
      expect(seen.url).toBe(`/mesh/${String(i)}`);
      expect(seen.headers.host).toBe('echo.default');
      expect(seen.headers['x-sail-peer-metadata']).toBeUndefined();
      const xfcc = String(seen.headers['x-forwarded-client-cert']);
      expect(xfcc).toContain(`By=${SPIFFE_B}`);
      expect(xfcc).toContain(`URI=${SPIFFE_A}`);
      expect(xfcc).toMatch(/Hash=[0-9a-f]{64}/);
    }
    expect(connectionsB - conns).toBeLessThanOrEqual(1);

    const recA = await a.lastRecord(0);
    // Istio's source reporter says `unknown` for the policy; the peer's metadata names it.
    expect(recA.labels.destinationWorkload).toBe('vm-b');
    expect(recA.labels.destinationPrincipal).toBe(SPIFFE_B);
    const recB = telemetryB.requests[telemetryB.requests.length - 1];
    expect(telemetryB.requests.length).toBeGreaterThan(beforeB);
    expect(recB?.labels.sourceWorkload).toBe('vm-a');
    expect(recB?.labels.connectionSecurityPolicy).toBe('mutual_tls');
  });

  it('carries a large POST body through the h2 hop intact', async () => {
    const file = path.join(tmp.dir, 'post.bin');
    const data = Buffer.alloc(5 * 1024 * 1024, 7);
    fs.writeFileSync(file, data);
    const r = await runCurl(['--data-binary', `@${file}`, `${a.base}/upload`]);
    const seen = JSON.parse(r.stdout.toString()) as OriginRequest;
    expect(seen.bodyBytes).toBe(data.length);
  });

  it('opens new upstream connections with the new certificate once the pools are retired', async () => {
    const hashOf = async (base: string) => {
      const r = await runCurl([`${base}/rotate`]);
      const seen = JSON.parse(r.stdout.toString()) as OriginRequest;
      return /Hash=([0-9a-f]{64})/.exec(String(seen.headers['x-forwarded-client-cert']))?.[1];
    };
    const before = await hashOf(a.base);
    const beforeH1 = await hashOf(a1.base);
    await writeWorkloadIdentity(ca, path.join(tmp.dir, 'a'), SPIFFE_A, { node: 'vm-a' });
    await tlsA.reload();
    // The pooled connections still carry the old certificate until they are retired.
    expect(await hashOf(a.base)).toBe(before);
    a.manager.retireUpstreamConnections();
    a1.manager.retireUpstreamConnections();
    const after = await hashOf(a.base);
    expect(after).toBeDefined();
    expect(after).not.toBe(before);
    expect(await hashOf(a1.base)).not.toBe(beforeH1);
  });

  it('speaks HTTP/1.1 over mTLS when meshUpstreamProtocol is http1 (the default)', async () => {
    const r = await runCurl([`${a1.base}/h1-mesh`]);
    const seen = JSON.parse(r.stdout.toString()) as OriginRequest;
    expect(seen.url).toBe('/h1-mesh');
    expect(String(seen.headers['x-forwarded-client-cert'])).toContain(`URI=${SPIFFE_A}`);
  });
});
