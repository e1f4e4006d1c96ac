/**
 * Builders of compiled model objects and small harness pieces for the HTTP layer's tests: a
 * ConfigHolder, a recording ProxyTelemetry, and a loopback listener that hands each accepted
 * socket to an HttpConnectionManager (standing in for the listener subsystem).
 * @internal test support only
 */
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import type * as tls from 'node:tls';
import type {
  Cluster,
  FilterChain,
  HeaderEdits,
  HttpHandler,
  Listener,
  ProxyConfig,
  Route,
  RouteAction,
  RouteMatch,
  RouteTable,
  TransportChoice,
  VirtualHost,
} from '../model';
import { type Logger, silentLogger } from '../../common/logging';
import { NO_HEADER_EDITS } from '../model';
import { TrafficLabeler } from '../telemetry';
import { DefaultClusterManager } from '../upstream';
import {
  DefaultHttpConnectionManager,
  type HttpConnectionManagerOptions,
} from './connection-manager';
import type {
  ConfigHolder,
  DownstreamContext,
  HttpConnectionManager,
  ProxyTelemetry,
  RequestRecord,
  TcpRecord,
  TlsProvider,
  TrafficLabels,
} from '../types';

/** Header edits with empty lists unless given. */
export function edits(e: Partial<HeaderEdits> = {}): HeaderEdits {
  return { set: [], add: [], remove: [], ...e };
}

/** A route match: prefix `/` unless given. */
export function match(m: Partial<RouteMatch> = {}): RouteMatch {
  return {
    path: { kind: 'prefix', value: '/' },
    caseSensitive: true,
    headers: [],
    queryParameters: [],
    ...m,
  };
}

/** A route action to one cluster. */
export function routeTo(cluster: string, more: Partial<RouteAction> = {}): RouteAction {
  return {
    kind: 'route',
    clusters: [
      {
        name: cluster,
        weight: 1,
        requestHeaders: NO_HEADER_EDITS,
        responseHeaders: NO_HEADER_EDITS,
      },
    ],
    totalWeight: 1,
    timeoutMs: 0,
    mirrors: [],
    hashPolicies: [],
    upgrades: [],
    ...more,
  };
}

/** A route. */
export function route(action: Route['action'], more: Partial<Route> = {}): Route {
  return {
    name: '',
    match: match(),
    action,
    requestHeaders: NO_HEADER_EDITS,
    responseHeaders: NO_HEADER_EDITS,
    ...more,
  };
}

/** A virtual host. */
export function vhost(
  name: string,
  domains: string[],
  routes: Route[],
  more: Partial<VirtualHost> = {},
): VirtualHost {
  return {
    name,
    domains,
    routes,
    requestHeaders: NO_HEADER_EDITS,
    responseHeaders: NO_HEADER_EDITS,
    ...more,
  };
}

/** A route table. */
export function table(name: string, virtualHosts: VirtualHost[]): RouteTable {
  return { name, virtualHosts };
}

/** An HTTP handler with an inline route table. */
export function httpHandler(routeTable: RouteTable, more: Partial<HttpHandler> = {}): HttpHandler {
  return {
    kind: 'http',
    statPrefix: 'test',
    codec: 'AUTO',
    routeTable,
    faultFilter: true,
    corsFilter: false,
    forwardClientCert: 'SANITIZE',
    clientCertDetails: { subject: false, uri: false, dns: false, cert: false },
    upgrades: ['websocket'],
    ...more,
  };
}

/** A STATIC cluster with plaintext endpoints on 127.0.0.1. */
export function staticCluster(
  name: string,
  ports: number[],
  more: Partial<Cluster> = {},
  transports: TransportChoice[] = [],
): Cluster {
  return {
    name,
    type: 'STATIC',
    loadAssignment: {
      clusterName: name,
      endpoints: ports.map(port => ({
        address: '127.0.0.1',
        port,
        weight: 1,
        healthy: true,
        locality: { region: '', zone: '', subZone: '' },
        priority: 0,
        transportMatch: {},
      })),
    },
    lbPolicy: 'ROUND_ROBIN',
    ringHash: { minimumRingSize: 1024, maximumRingSize: 8388608 },
    connectTimeoutMs: 2_000,
    circuitBreakers: {
      maxConnections: 2 ** 32 - 1,
      maxPendingRequests: 2 ** 32 - 1,
      maxRequests: 2 ** 32 - 1,
      maxRetries: 2 ** 32 - 1,
    },
    healthyPanicThreshold: 50,
    transports,
    upstreamProtocol: 'http1',
    dnsRefreshRateMs: 5_000,
    ...more,
  };
}

/** Istio's mesh mTLS toward a Sail (or Envoy) sidecar: SDS `default` + `ROOTCA`, peer exchange ALPN. */
export const MESH_TRANSPORT: TransportChoice = {
  name: 'tlsMode-istio',
  match: {},
  tls: {
    certificate: { kind: 'sds', name: 'default' },
    validation: { trust: { kind: 'sds', name: 'ROOTCA' }, sanMatchers: [] },
    alpn: ['istio-peer-exchange', 'istio'],
    mesh: true,
  },
};

/** A ConfigHolder whose configuration tests replace. */
export class TestConfig implements ConfigHolder {
  current: ProxyConfig;

  constructor(clusters: Cluster[] = [], routes: RouteTable[] = []) {
    this.current = TestConfig.make(clusters, routes);
  }

  static make(
    clusters: Cluster[],
    routes: RouteTable[] = [],
    listeners: Listener[] = [],
  ): ProxyConfig {
    return {
      versions: { clusters: '1', endpoints: '1', listeners: '1', routes: '1' },
      listeners: new Map(listeners.map(l => [l.name, l])),
      routes: new Map(routes.map(r => [r.name, r])),
      clusters: new Map(clusters.map(c => [c.name, c])),
      endpoints: new Map(),
    };
  }
}

/** ProxyTelemetry that keeps every request record (labels from the real TrafficLabeler). */
export class RecordingTelemetry implements ProxyTelemetry {
  readonly labels: TrafficLabeler;
  readonly requests: RequestRecord[] = [];

  constructor(name = 'vm-1', principal = '') {
    this.labels = new TrafficLabeler({
      workload: { name, namespace: 'default', labels: { app: name } },
      principal,
    });
  }

  recordRequest(record: RequestRecord): void {
    this.requests.push(record);
  }

  tcpOpened(_labels: TrafficLabels): void {}

  tcpClosed(_record: TcpRecord): void {}
}

/** A TlsProvider for plaintext-only tests: any TLS use is a test bug. */
export const NO_TLS: TlsProvider = {
  ready: false,
  spiffeId: '',
  serverContext(): tls.SecureContext {
    throw new Error('no tls in this test');
  },
  clientOptions(): tls.ConnectionOptions {
    throw new Error('no tls in this test');
  },
  verifyPeer: () => 'no tls in this test',
  peerIdentity: () => undefined,
  onRotate: () => () => undefined,
};

const TEST_LISTENER: Listener = {
  name: 'test',
  address: { address: '127.0.0.1', port: 0 },
  bindToPort: true,
  useOriginalDst: false,
  direction: 'outbound',
  filterChains: [],
  inspectTls: false,
};

/** The DownstreamContext a listener would give for `socket`. */
export function contextFor(
  socket: net.Socket,
  handler: HttpHandler,
  more: Partial<DownstreamContext> = {},
): DownstreamContext {
  const chain: FilterChain = {
    name: 'test',
    match: {
      prefixRanges: [],
      sourcePrefixRanges: [],
      applicationProtocols: [],
      serverNames: [],
    },
    handler,
  };
  return {
    listener: TEST_LISTENER,
    chain,
    direction: 'outbound',
    remoteAddress: socket.remoteAddress ?? '127.0.0.1',
    remotePort: socket.remotePort ?? 0,
    originalDst: { address: socket.localAddress ?? '127.0.0.1', port: socket.localPort ?? 0 },
    connectionSecurity: 'none',
    ...more,
  };
}

/** A server on 127.0.0.1:0 that destroys the connections it accepted when it closes. */
abstract class LoopbackServer {
  private readonly sockets = new Set<net.Socket>();
  port = 0;

  protected constructor(private readonly server: net.Server) {
    server.on('connection', (s: net.Socket) => {
      this.sockets.add(s);
      s.once('close', () => this.sockets.delete(s));
    });
  }

  async start(): Promise<number> {
    await new Promise<void>(resolve => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this.port;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>(resolve => this.server.close(() => resolve()));
  }
}

/** A loopback listener handing each connection to `http` with `handler` (the listeners' job). */
export class TestListener extends LoopbackServer {
  constructor(
    http: HttpConnectionManager,
    handler: HttpHandler,
    more: (socket: net.Socket) => Partial<DownstreamContext> = () => ({}),
  ) {
    super(
      net.createServer(socket => {
        http.handle(socket, handler, contextFor(socket, handler, more(socket)));
      }),
    );
  }
}

/** Result of {@link runCurl}. */
export interface CurlResult {
  readonly code: number;
  readonly stdout: Buffer;
  readonly stderr: string;
}

/** Runs `curl` with `args` (never rejects; the exit code is in the result). */
export function runCurl(args: string[], timeoutMs = 60_000): Promise<CurlResult> {
  return new Promise(resolve => {
    const child = spawn('curl', ['--silent', '--show-error', '--max-time', '60', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.on('close', code => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr: err });
    });
  });
}

/** What {@link EchoOrigin} saw of one request. */
export interface OriginRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly bodyBytes: number;
  readonly bodySha256: string;
  readonly httpVersion: string;
}

type AnyReq = http.IncomingMessage | http2.Http2ServerRequest;
type AnyRes = http.ServerResponse | http2.Http2ServerResponse;

/** Deterministic bytes for large-body tests: `n` bytes of a repeating 1 MiB pattern. */
export function patternBytes(n: number): Buffer {
  const block = Buffer.alloc(Math.min(n, 1 << 20));
  for (let i = 0; i < block.length; i++) block[i] = (i * 31 + (i >> 8)) & 0xff;
  if (n <= block.length) return block;
  const out = Buffer.alloc(n);
  for (let off = 0; off < n; off += block.length)
    block.copy(out, off, 0, Math.min(block.length, n - off));
  return out;
}

/**
 * An origin server (HTTP/1.1, or h2c with `h2: true`) answering:
 * - `/status/N`: status N;
 * - `/big?bytes=N`: N pattern bytes, streamed without content-length;
 * - `/hold`: writes `first\n`, then ends when `release()` is called;
 * - anything else: JSON of what it received (method, url, headers, body size and sha256).
 * Every request is recorded in `requests`; `onRequest` may take over a request.
 */
export class EchoOrigin extends LoopbackServer {
  readonly requests: OriginRequest[] = [];
  onRequest: ((req: AnyReq, res: AnyRes) => boolean) | undefined;
  private readonly held: AnyRes[] = [];

  constructor(opts: { h2?: boolean } = {}) {
    const server = opts.h2 ? http2.createServer() : http.createServer();
    super(server);
    server.on('request', (req: AnyReq, res: AnyRes) => {
      this.serve(req, res);
    });
  }

  private serve(req: AnyReq, res: AnyRes): void {
    const hash = crypto.createHash('sha256');
    let bytes = 0;
    req.on('data', (d: Buffer) => {
      hash.update(d);
      bytes += d.length;
    });
    req.on('end', () => {
      const rec: OriginRequest = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: { ...req.headers },
        bodyBytes: bytes,
        bodySha256: hash.digest('hex'),
        httpVersion: req.httpVersion,
      };
      this.requests.push(rec);
      if (this.onRequest?.(req, res)) return;
      const url = new URL(rec.url, 'http://x');
      const r = res as http.ServerResponse;
      if (url.pathname.startsWith('/status/')) {
        r.writeHead(Number(url.pathname.slice(8)), { 'content-type': 'text/plain' });
        r.end('status');
      } else if (url.pathname === '/big') {
        const total = Number(url.searchParams.get('bytes') ?? '0');
        const data = patternBytes(total);
        r.writeHead(200, { 'content-type': 'application/octet-stream' });
        let off = 0;
        const pump = (): void => {
          while (off < total) {
            const end = Math.min(total, off + 256 * 1024);
            const ok = r.write(data.subarray(off, end));
            off = end;
            if (!ok) {
              r.once('drain', pump);
              return;
            }
          }
          r.end();
        };
        pump();
      } else if (url.pathname === '/hold') {
        r.writeHead(200, { 'content-type': 'text/plain' });
        r.write('first\n');
        this.held.push(res);
      } else {
        const body = JSON.stringify(rec);
        r.writeHead(200, { 'content-type': 'application/json', 'x-origin': 'echo' });
        r.end(body);
      }
    });
  }

  /** Ends every `/hold` response. */
  release(): void {
    for (const r of this.held.splice(0)) (r as http.ServerResponse).end('last\n');
  }
}

/** Options of {@link Harness.start}. */
export interface HarnessOptions {
  readonly clusters: Cluster[];
  readonly routes: RouteTable;
  readonly handler?: Partial<HttpHandler>;
  readonly context?: (socket: net.Socket) => Partial<DownstreamContext>;
  readonly manager?: Partial<HttpConnectionManagerOptions>;
  readonly tls?: TlsProvider;
  readonly telemetry?: RecordingTelemetry;
  readonly logger?: Logger;
}

/** A real DefaultClusterManager and DefaultHttpConnectionManager behind a TestListener. */
export class Harness {
  private constructor(
    readonly config: TestConfig,
    readonly clusters: DefaultClusterManager,
    readonly manager: DefaultHttpConnectionManager,
    readonly listener: TestListener,
    readonly telemetry: RecordingTelemetry,
  ) {}

  /** `http://127.0.0.1:PORT` of the listener. */
  get base(): string {
    return `http://127.0.0.1:${String(this.listener.port)}`;
  }

  static async start(o: HarnessOptions): Promise<Harness> {
    const logger = o.logger ?? silentLogger();
    const config = new TestConfig(o.clusters, [o.routes]);
    const clusters = new DefaultClusterManager({ logger, tls: o.tls ?? NO_TLS });
    clusters.update(config.current);
    const telemetry = o.telemetry ?? new RecordingTelemetry();
    const manager = new DefaultHttpConnectionManager({
      logger,
      config,
      clusters,
      telemetry,
      localPrincipal: () => '',
      ...o.manager,
    });
    const listener = new TestListener(manager, httpHandler(o.routes, o.handler), o.context);
    await listener.start();
    return new Harness(config, clusters, manager, listener, telemetry);
  }

  /** The last request record (waits for it when `after` records exist already). */
  async lastRecord(after: number): Promise<RequestRecord> {
    const deadline = Date.now() + 5_000;
    while (this.telemetry.requests.length <= after) {
      if (Date.now() > deadline) throw new Error('no request record');
      await new Promise(r => setTimeout(r, 5));
    }
    return this.telemetry.requests[this.telemetry.requests.length - 1] as RequestRecord;
  }

  async close(): Promise<void> {
    await this.listener.close();
    await this.manager.close();
    this.clusters.close();
  }
}
