/**
 * Builders of compiled model objects (proxy/model.ts) for the listener tests: short, with the
 * defaults config/compile gives.
 * @internal test support only
 */
import * as net from 'node:net';
import type {
  Cluster,
  DownstreamTls,
  FilterChain,
  FilterChainMatch,
  HttpHandler,
  Listener,
  TcpProxyHandler,
} from '../model';
import { NO_HEADER_EDITS } from '../model';
import { TrafficLabeler } from '../telemetry';
import type {
  ClusterManager,
  ClusterStatus,
  DownstreamContext,
  HttpConnectionManager,
  ProxyTelemetry,
  RequestRecord,
  TcpRecord,
  TrafficLabels,
  UpstreamCluster,
  UpstreamHost,
  UpstreamOutcome,
} from '../types';

/** A FilterChainMatch with empty lists unless given. */
export function chainMatch(m: Partial<FilterChainMatch> = {}): FilterChainMatch {
  return {
    prefixRanges: [],
    sourcePrefixRanges: [],
    applicationProtocols: [],
    serverNames: [],
    ...m,
  };
}

/** A tcp_proxy handler to `cluster` (or weighted clusters). */
export function tcpHandler(
  cluster: string | { name: string; weight: number }[],
  idleTimeoutMs?: number,
): TcpProxyHandler {
  const list = typeof cluster === 'string' ? [{ name: cluster, weight: 1 }] : cluster;
  return {
    kind: 'tcp',
    statPrefix: list[0]!.name,
    clusters: list.map(c => ({
      name: c.name,
      weight: c.weight,
      requestHeaders: NO_HEADER_EDITS,
      responseHeaders: NO_HEADER_EDITS,
    })),
    totalWeight: list.reduce((a, c) => a + c.weight, 0),
    ...(idleTimeoutMs === undefined ? {} : { idleTimeoutMs }),
  };
}

/** An http_connection_manager handler with an RDS name. */
export function httpHandler(rdsName = '9080'): HttpHandler {
  return {
    kind: 'http',
    statPrefix: rdsName,
    codec: 'AUTO',
    rdsName,
    faultFilter: false,
    corsFilter: false,
    forwardClientCert: 'APPEND_FORWARD',
    clientCertDetails: { subject: true, uri: true, dns: true, cert: false },
    upgrades: ['websocket'],
  };
}

/** A filter chain named `name`. */
export function chain(
  name: string,
  match: Partial<FilterChainMatch> = {},
  handler: FilterChain['handler'] = tcpHandler(name),
  tls?: DownstreamTls,
): FilterChain {
  return { name, match: chainMatch(match), handler, ...(tls ? { tls } : {}) };
}

/** A listener with the given chains; bound, no hand-off, direction outbound unless given. */
export function listener(
  name: string,
  address: { address: string; port: number },
  chains: FilterChain[],
  more: Partial<Omit<Listener, 'name' | 'address' | 'filterChains'>> = {},
): Listener {
  return {
    name,
    address,
    bindToPort: true,
    useOriginalDst: false,
    direction: 'outbound',
    filterChains: chains,
    inspectTls: chains.some(
      c =>
        c.match.transportProtocol !== undefined ||
        c.match.serverNames.length > 0 ||
        c.match.applicationProtocols.length > 0,
    ),
    ...more,
  };
}

/** Istio's mesh mTLS server side: SDS `default` + `ROOTCA`, client certificate required. */
export const MESH_DOWNSTREAM_TLS: DownstreamTls = {
  certificate: { kind: 'sds', name: 'default' },
  validation: {
    trust: { kind: 'sds', name: 'ROOTCA' },
    sanMatchers: [
      {
        sanType: 'URI',
        matcher: { kind: 'prefix', value: 'spiffe://cluster.local/', ignoreCase: false },
      },
    ],
  },
  requireClientCertificate: true,
  alpn: ['h2', 'http/1.1'],
};

/** The ALPN Istio's outbound side offers for mesh mTLS (what the inbound mTLS chains match). */
export const ISTIO_ALPN = [
  'istio-peer-exchange',
  'istio',
  'istio-http/1.0',
  'istio-http/1.1',
  'istio-h2',
];

// ---------------------------------------------------------------------------------------------
// Test doubles at the seams the listeners use (the real ClusterManager lives in proxy/upstream).

/** A host of {@link TestClusters}. */
export interface TestHostSpec {
  readonly address: string;
  readonly port: number;
}

/** One call to `requestFinished`. */
export interface FinishedCall {
  readonly cluster: string;
  readonly host: string;
  readonly outcome: UpstreamOutcome;
}

/**
 * A ClusterManager over fixed hosts, with the real data path bits the TCP proxy needs: round-robin
 * pick (ORIGINAL_DST clusters pick `originalDst`), a `connections` breaker with a limit, and plain
 * `net.connect`. Records requestStarted/Finished.
 */
export class TestClusters implements ClusterManager {
  readonly started: string[] = [];
  readonly finished: FinishedCall[] = [];
  /** Units of each breaker in use, by cluster. */
  readonly inUse = new Map<string, number>();
  /** Sockets opened by connect(), for cleanup. */
  readonly sockets = new Set<net.Socket>();
  private readonly clusters = new Map<string, UpstreamCluster>();

  /** Adds (or replaces) a cluster; `hosts: 'originalDst'` makes it a PassthroughCluster. */
  set(name: string, hosts: readonly TestHostSpec[] | 'originalDst', maxConnections = 1e9): void {
    const config: Cluster = {
      name,
      type: hosts === 'originalDst' ? 'ORIGINAL_DST' : 'STATIC',
      lbPolicy: 'ROUND_ROBIN',
      ringHash: { minimumRingSize: 1024, maximumRingSize: 8 * 1024 * 1024 },
      connectTimeoutMs: 1_000,
      circuitBreakers: {
        maxConnections,
        maxPendingRequests: 1e9,
        maxRequests: 1e9,
        maxRetries: 1e9,
      },
      healthyPanicThreshold: 50,
      transports: [],
      upstreamProtocol: 'http1',
      dnsRefreshRateMs: 5_000,
    };
    const makeHost = (h: TestHostSpec): UpstreamHost => ({
      cluster: name,
      address: h.address,
      port: h.port,
      key: `${h.address}:${h.port}|plaintext`,
      transport: { name: 'plaintext', match: {} },
      healthy: true,
      activeRequests: 0,
    });
    const fixed = hosts === 'originalDst' ? [] : hosts.map(makeHost);
    let next = 0;
    const inUse = this.inUse;
    const started = this.started;
    const finished = this.finished;
    this.clusters.set(name, {
      config,
      pick(ctx) {
        if (hosts === 'originalDst') return ctx.originalDst ? makeHost(ctx.originalDst) : undefined;
        if (fixed.length === 0) return undefined;
        return fixed[next++ % fixed.length];
      },
      tryAcquire(kind) {
        if (kind !== 'connections') return true;
        const n = inUse.get(name) ?? 0;
        if (n >= maxConnections) return false;
        inUse.set(name, n + 1);
        return true;
      },
      release(kind) {
        if (kind === 'connections') inUse.set(name, (inUse.get(name) ?? 1) - 1);
      },
      requestStarted(host) {
        started.push(`${name} ${host.address}:${host.port}`);
      },
      requestFinished(host, outcome) {
        finished.push({ cluster: name, host: `${host.address}:${host.port}`, outcome });
      },
    });
  }

  update(): void {
    // Clusters are set by the test.
  }

  get(name: string): UpstreamCluster | undefined {
    return this.clusters.get(name);
  }

  status(): ClusterStatus[] {
    return [];
  }

  connect(host: UpstreamHost): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const s = net.connect(host.port, host.address);
      this.sockets.add(s);
      s.once('close', () => this.sockets.delete(s));
      s.once('connect', () => {
        s.off('error', reject);
        resolve(s);
      });
      s.once('error', reject);
    });
  }

  close(): void {
    for (const s of this.sockets) s.destroy();
  }
}

/** ProxyTelemetry that keeps the TCP records (labels from the real TrafficLabeler). */
export class RecordingTelemetry implements ProxyTelemetry {
  readonly labels = new TrafficLabeler({
    workload: { name: 'vm-1', namespace: 'default', labels: { app: 'test' } },
  });
  readonly opened: TrafficLabels[] = [];
  readonly closed: TcpRecord[] = [];
  readonly requests: RequestRecord[] = [];

  recordRequest(record: RequestRecord): void {
    this.requests.push(record);
  }

  tcpOpened(labels: TrafficLabels): void {
    this.opened.push(labels);
  }

  tcpClosed(record: TcpRecord): void {
    this.closed.push(record);
  }
}

/** One connection handed to {@link RecordingHttp}. */
export interface HandedConnection {
  readonly socket: net.Socket;
  readonly handler: HttpHandler;
  readonly ctx: DownstreamContext;
  /** Everything read from the socket so far. */
  data: string;
}

/**
 * An HttpConnectionManager that records what it is handed and answers each request head (ending
 * in a blank line) with `HTTP/1.1 200 OK` and the chain name in the body, then closes.
 */
export class RecordingHttp implements HttpConnectionManager {
  readonly handed: HandedConnection[] = [];

  handle(socket: net.Socket, handler: HttpHandler, ctx: DownstreamContext): void {
    const rec: HandedConnection = { socket, handler, ctx, data: '' };
    this.handed.push(rec);
    socket.on('error', () => socket.destroy());
    socket.on('data', (d: Buffer) => {
      rec.data += d.toString('latin1');
      if (rec.data.includes('\r\n\r\n')) {
        const body = `chain=${ctx.chain.name}`;
        socket.end(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      }
    });
  }

  async drain(): Promise<void> {
    for (const h of this.handed) h.socket.destroy();
  }

  /** Nothing is pooled here. */
  retireUpstreamConnections(): void {}
}

// ---------------------------------------------------------------------------------------------
// Sockets a test opens on 127.0.0.1, closed after it through the test's `closers`.

/** What a test closes after itself, last opened first (its afterEach pops and awaits each). */
export type Closers = (() => unknown)[];

/** A port that was free a moment ago (explicit listeners bind the port the config names). */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>(resolve => s.listen(0, '127.0.0.1', resolve));
  const { port } = s.address() as net.AddressInfo;
  await new Promise(resolve => s.close(resolve));
  return port;
}

/** Listens on 127.0.0.1:0; `server` and the sockets it accepted close after the test. */
export async function listenTracked(closers: Closers, server: net.Server): Promise<number> {
  const sockets = new Set<net.Socket>();
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));
  closers.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise(resolve => server.close(resolve));
  });
  return (server.address() as net.AddressInfo).port;
}

/** A TCP application server (allowHalfOpen) running `onConnection`; returns its port. */
export function tcpServer(
  closers: Closers,
  onConnection: (s: net.Socket) => void,
): Promise<number> {
  return listenTracked(
    closers,
    net.createServer({ allowHalfOpen: true }, s => {
      s.on('error', () => s.destroy());
      onConnection(s);
    }),
  );
}

/** A connected client (allowHalfOpen, so it can keep sending after the server's FIN). */
export async function connect(
  closers: Closers,
  port: number,
  host = '127.0.0.1',
): Promise<net.Socket> {
  const c = net.connect({ port, host, allowHalfOpen: true });
  closers.push(() => c.destroy());
  c.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => c.once('connect', resolve).once('error', reject));
  return c;
}

/** Everything `socket` receives until it ends or closes. */
export function readAll(socket: net.Socket): Promise<Buffer> {
  return new Promise(resolve => {
    const chunks: Buffer[] = [];
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('error', () => undefined);
    const done = () => resolve(Buffer.concat(chunks));
    socket.once('end', done);
    socket.once('close', done);
  });
}
