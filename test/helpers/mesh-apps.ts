/**
 * Applications for the mesh lab (test/helpers/mesh-lab.ts) that know nothing of the mesh: plain
 * Node processes in a VM's namespace, calling each other BY NAME through the VM's ordinary
 * resolver. Compiled to build/test/helpers/mesh-apps.js and run as
 *
 *   node mesh-apps.js serve  --service reviews --version v1 --node vm2
 *        [--bind 0.0.0.0] [--http 9080] [--grpc 9090] [--tcp 9100]
 *   node mesh-apps.js client [--http-url http://reviews:9080/] [--grpc-target reviews:9090]
 *        [--tcp-target reviews:9100] [--header end-user:jason …] [--timeout-ms 2000]
 *        ( --interval-ms 100 [--status 127.0.0.1:9181] | --once [--count N] )
 *   node mesh-apps.js probe  --host H --port P [--send TEXT] [--until-newline] [--timeout-ms 3000]
 *
 * serve, on 0.0.0.0 (with capture the inbound proxy delivers to 127.0.0.1:PORT, also bound; under
 *   TPROXY to the host's own address, from the caller's):
 *   HTTP :9080  GET /            → 200 {service, version, node, method, path, remoteAddress, headers}
 *                                  (headers as seen, x-forwarded-client-cert among them)
 *               GET /health      → 200 {"status":"ok"}, or 500 {"status":"unhealthy"}
 *               POST|GET /admin/unhealthy, /admin/healthy  → flips /health
 *   gRPC :9090  /sail.test.Echo/Call (echo-grpc.ts's service; raw bytes) → JSON
 *               {service, version, node, metadata}
 *   TCP  :9100  each line received → one JSON line
 *               {service, version, node, echo: line, remoteAddress}
 *   prints {"event":"listening",…} once all three are bound.
 *
 * client: each round calls every configured target once (in parallel) and counts the results
 *   per kind ({@link KindStats}); with --interval-ms it loops and serves GET /status (and POST
 *   /reset) on --status (default 127.0.0.1:9181); with --once it runs --count rounds (default 1),
 *   prints the {@link ClientStatus} JSON and exits 0.
 *
 * probe: one TCP connection; prints a {@link TcpProbeResult} JSON (mesh-lab's tcpProbe,
 *   sshReachable and the "plaintext is refused" checks).
 *
 * The test side: {@link startApp}, {@link startClient}, {@link callOnce}.
 */
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as grpc from '@grpc/grpc-js';
import { ECHO_METHOD, EchoClient } from './echo-grpc';
import type { LabProcess, MeshLab, TcpProbeResult } from './mesh-lab';
import { MESH_APPS_JS } from './mesh-lab';
import { waitFor } from './wait-for';
import { type Args, one, parseArgs } from './cli-args';

/** The apps' ports (service port names: http, grpc, tcp). */
export const APP_PORTS = { http: 9080, grpc: 9090, tcp: 9100 } as const;
/** Where a looping client serves its /status (loopback of its VM). */
export const CLIENT_STATUS_PORT = 9181;

/** What GET / answers. */
export interface HttpReply {
  readonly service: string;
  readonly version: string;
  readonly node: string;
  readonly method: string;
  readonly path: string;
  readonly remoteAddress: string;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
}

/** Results of one kind of call (http, grpc or tcp). */
export interface KindStats {
  ok: number;
  errors: number;
  /** Successful calls by the answering app's version / node. */
  byVersion: Record<string, number>;
  byNode: Record<string, number>;
  /** Failed calls by message (`HTTP 503`, `UNAVAILABLE: …`, `ECONNREFUSED …`). */
  errorsByMessage: Record<string, number>;
  consecutiveErrors: number;
  lastError?: string;
  lastErrorAt?: string;
  lastOkAt?: string;
  /** The last successful reply (for HTTP: {@link HttpReply}). */
  lastOk?: Record<string, unknown>;
}

/** What a client reports. */
export interface ClientStatus {
  readonly since: string;
  rounds: number;
  readonly http?: KindStats;
  readonly grpc?: KindStats;
  readonly tcp?: KindStats;
}

// ---------------------------------------------------------------------------------------------
// The processes (main)

const num = (args: Args, k: string, dflt: number): number => {
  const v = Number(one(args, k, String(dflt)));
  if (!Number.isFinite(v)) throw new Error(`--${k}: want a number`);
  return v;
};

const print = (v: unknown) => process.stdout.write(`${JSON.stringify(v)}\n`);
const errMessage = (e: unknown) => (e instanceof Error ? e.message : String(e));

async function serve(args: Args): Promise<void> {
  const service = one(args, 'service') ?? 'app';
  const version = one(args, 'version') ?? 'v1';
  const node = one(args, 'node') ?? os.hostname();
  const bind = one(args, 'bind', '0.0.0.0') as string;
  const ports = {
    http: num(args, 'http', APP_PORTS.http),
    grpc: num(args, 'grpc', APP_PORTS.grpc),
    tcp: num(args, 'tcp', APP_PORTS.tcp),
  };
  const who = { service, version, node };
  let healthy = true;

  const httpServer = http.createServer((req, res) => {
    req.resume();
    const url = new URL(req.url ?? '/', 'http://x');
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (url.pathname === '/health')
      return send(healthy ? 200 : 500, { status: healthy ? 'ok' : 'unhealthy' });
    if (url.pathname === '/admin/unhealthy' || url.pathname === '/admin/healthy') {
      healthy = url.pathname === '/admin/healthy';
      print({ event: 'health', healthy });
      return send(200, { healthy });
    }
    const reply: HttpReply = {
      ...who,
      method: req.method ?? '',
      path: req.url ?? '',
      remoteAddress: req.socket.remoteAddress ?? '',
      headers: req.headers,
    };
    return send(200, reply);
  });
  await new Promise<void>((resolve, reject) => {
    httpServer.once('error', reject);
    httpServer.listen(ports.http, bind, () => resolve());
  });

  const grpcServer = new grpc.Server();
  grpcServer.addService(EchoClient.service, {
    Call: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      cb(null, Buffer.from(JSON.stringify({ ...who, metadata: call.metadata.getMap() })));
    },
  });
  await new Promise<void>((resolve, reject) =>
    grpcServer.bindAsync(`${bind}:${ports.grpc}`, grpc.ServerCredentials.createInsecure(), err =>
      err ? reject(err) : resolve(),
    ),
  );

  const tcpServer = net.createServer(sock => {
    sock.on('error', () => sock.destroy());
    let buf = '';
    sock.on('data', chunk => {
      buf += chunk.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        sock.write(
          `${JSON.stringify({ ...who, echo: line, remoteAddress: sock.remoteAddress ?? '' })}\n`,
        );
      }
    });
    sock.on('end', () => sock.end());
  });
  await new Promise<void>((resolve, reject) => {
    tcpServer.once('error', reject);
    tcpServer.listen(ports.tcp, bind, () => resolve());
  });

  print({ event: 'listening', ...who, bind, ports });
  const stop = () => {
    httpServer.close();
    tcpServer.close();
    grpcServer.forceShutdown();
    process.exit(0);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

const newStats = (): KindStats => ({
  ok: 0,
  errors: 0,
  byVersion: {},
  byNode: {},
  errorsByMessage: {},
  consecutiveErrors: 0,
});

function countOk(s: KindStats, reply: Record<string, unknown>): void {
  s.ok++;
  s.consecutiveErrors = 0;
  s.lastOkAt = new Date().toISOString();
  s.lastOk = reply;
  const v = typeof reply.version === 'string' ? reply.version : '?';
  const n = typeof reply.node === 'string' ? reply.node : '?';
  s.byVersion[v] = (s.byVersion[v] ?? 0) + 1;
  s.byNode[n] = (s.byNode[n] ?? 0) + 1;
}

function countError(s: KindStats, message: string): void {
  s.errors++;
  s.consecutiveErrors++;
  s.lastError = message;
  s.lastErrorAt = new Date().toISOString();
  s.errorsByMessage[message] = (s.errorsByMessage[message] ?? 0) + 1;
}

/** One HTTP GET; resolves with the parsed reply or rejects with `HTTP <status>` / the error. */
function httpCall(
  url: string,
  headers: Record<string, string>,
  timeoutMs: number,
  agent: http.Agent,
): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers, agent, timeout: timeoutMs }, res => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        if (res.statusCode !== 200) return reject(new Error(`HTTP ${res.statusCode}`));
        try {
          resolve(JSON.parse(body) as Record<string, unknown>);
        } catch {
          reject(new Error(`HTTP 200 with a body that is not JSON: ${body.slice(0, 80)}`));
        }
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`timeout after ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

function grpcCall(
  client: grpc.Client,
  headers: Record<string, string>,
  timeoutMs: number,
): Promise<Record<string, unknown>> {
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(headers)) md.set(k, v);
  const raw = (b: Buffer) => b;
  return new Promise((resolve, reject) =>
    client.makeUnaryRequest(
      ECHO_METHOD,
      raw,
      raw,
      Buffer.from('ping'),
      md,
      { deadline: Date.now() + timeoutMs },
      (err, value) => {
        if (err) return reject(new Error(`${grpc.status[err.code] ?? err.code}: ${err.details}`));
        try {
          resolve(JSON.parse((value as Buffer).toString()) as Record<string, unknown>);
        } catch {
          reject(new Error('reply is not JSON'));
        }
      },
    ),
  );
}

/** One TCP round trip on a fresh connection: a line out, a JSON line back. */
function tcpCall(target: string, timeoutMs: number, seq: number): Promise<Record<string, unknown>> {
  const i = target.lastIndexOf(':');
  const host = target.slice(0, i);
  const port = Number(target.slice(i + 1));
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port });
    let buf = '';
    const timer = setTimeout(
      () => sock.destroy(new Error(`timeout after ${timeoutMs} ms`)),
      timeoutMs,
    );
    const done = (err: Error | undefined, v?: Record<string, unknown>) => {
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(v as Record<string, unknown>);
    };
    sock.on('connect', () => sock.write(`ping ${seq}\n`));
    sock.on('data', c => {
      buf += c.toString();
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      try {
        const v = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
        if (v.echo !== `ping ${seq}`) return done(new Error(`echo mismatch: ${buf.slice(0, nl)}`));
        done(undefined, v);
      } catch {
        done(new Error(`reply is not JSON: ${buf.slice(0, 80)}`));
      }
    });
    sock.on('end', () => done(new Error(`closed by peer after ${buf.length} bytes`)));
    sock.on('error', err => done(err));
  });
}

async function client(args: Args): Promise<void> {
  const httpUrl = one(args, 'http-url');
  const grpcTarget = one(args, 'grpc-target');
  const tcpTarget = one(args, 'tcp-target');
  if (!httpUrl && !grpcTarget && !tcpTarget)
    throw new Error('client: want at least one of --http-url, --grpc-target, --tcp-target');
  const timeoutMs = num(args, 'timeout-ms', 2_000);
  const headers: Record<string, string> = {};
  for (const h of args.get('header') ?? []) {
    const c = h.indexOf(':');
    if (c <= 0) throw new Error(`--header ${h}: want NAME:VALUE`);
    headers[h.slice(0, c).trim().toLowerCase()] = h.slice(c + 1).trim();
  }
  const status: ClientStatus = {
    since: new Date().toISOString(),
    rounds: 0,
    ...(httpUrl ? { http: newStats() } : {}),
    ...(grpcTarget ? { grpc: newStats() } : {}),
    ...(tcpTarget ? { tcp: newStats() } : {}),
  };
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  const grpcClient = grpcTarget
    ? new EchoClient(grpcTarget, grpc.credentials.createInsecure(), {
        // Re-resolve and reconnect quickly: the name may only resolve once the agent is up.
        'grpc.dns_min_time_between_resolutions_ms': 500,
        'grpc.initial_reconnect_backoff_ms': 200,
        'grpc.max_reconnect_backoff_ms': 2_000,
      })
    : undefined;

  const round = async () => {
    const seq = status.rounds;
    const jobs: Promise<void>[] = [];
    const track = (s: KindStats | undefined, p: Promise<Record<string, unknown>>) => {
      if (!s) return;
      jobs.push(
        p.then(
          v => countOk(s, v),
          (e: unknown) => countError(s, errMessage(e)),
        ),
      );
    };
    if (httpUrl) track(status.http, httpCall(httpUrl, headers, timeoutMs, agent));
    if (grpcClient) track(status.grpc, grpcCall(grpcClient, headers, timeoutMs));
    if (tcpTarget) track(status.tcp, tcpCall(tcpTarget, timeoutMs, seq));
    await Promise.all(jobs);
    status.rounds++;
  };

  if (one(args, 'once') === 'true') {
    const count = num(args, 'count', 1);
    for (let i = 0; i < count; i++) await round();
    print(status);
    grpcClient?.close();
    agent.destroy();
    return;
  }

  const intervalMs = num(args, 'interval-ms', 100);
  const listen = one(args, 'status', `127.0.0.1:${CLIENT_STATUS_PORT}`) as string;
  const c = listen.lastIndexOf(':');
  const statusServer = http.createServer((req, res) => {
    req.resume();
    if (req.method === 'POST' && req.url === '/reset') {
      for (const k of ['http', 'grpc', 'tcp'] as const) {
        if (status[k])
          Object.assign(status[k], newStats(), { lastOk: undefined, lastError: undefined });
      }
      status.rounds = 0;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(status));
  });
  await new Promise<void>((resolve, reject) => {
    statusServer.once('error', reject);
    statusServer.listen(Number(listen.slice(c + 1)), listen.slice(0, c), () => resolve());
  });
  print({ event: 'client-started', status: listen });
  let stopping = false;
  const stop = () => {
    stopping = true;
    statusServer.close();
    grpcClient?.close();
    agent.destroy();
    print({ event: 'client-stopped', ...status });
    process.exit(0);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  while (!stopping) {
    const started = Date.now();
    await round();
    await new Promise(r => setTimeout(r, Math.max(0, intervalMs - (Date.now() - started))));
  }
}

async function probe(args: Args): Promise<void> {
  const host = one(args, 'host') as string;
  const port = num(args, 'port', 0);
  const timeoutMs = num(args, 'timeout-ms', 3_000);
  const send = one(args, 'send');
  const untilNewline = one(args, 'until-newline') === 'true';
  const started = Date.now();
  const result = await new Promise<TcpProbeResult>(resolve => {
    let connected = false;
    let data = '';
    let settled = false;
    const sock = net.connect({ host, port });
    const finish = (end: TcpProbeResult['end'], error?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ connected, data, end, ms: Date.now() - started, ...(error ? { error } : {}) });
    };
    const timer = setTimeout(() => finish('timeout'), timeoutMs);
    sock.on('connect', () => {
      connected = true;
      if (send !== undefined) sock.write(send.replace(/\\r/g, '\r').replace(/\\n/g, '\n'));
    });
    sock.on('data', c => {
      if (data.length < 4096) data += c.toString('utf8').slice(0, 4096 - data.length);
      if (untilNewline && data.includes('\n')) finish('newline');
    });
    sock.on('end', () => finish('close'));
    sock.on('close', () => finish('close'));
    sock.on('error', (err: NodeJS.ErrnoException) =>
      finish(
        err.code === 'ECONNRESET' ? 'reset' : 'error',
        `${err.code ?? ''} ${err.message}`.trim(),
      ),
    );
  });
  print(result);
}

async function main(argv: readonly string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  const args = parseArgs(rest);
  if (cmd === 'serve') return serve(args);
  if (cmd === 'client') return client(args);
  if (cmd === 'probe') return probe(args);
  throw new Error(`want a command: serve, client or probe (got ${String(cmd)})`);
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`mesh-apps: ${errMessage(err)}\n`);
    process.exit(1);
  });
}

// ---------------------------------------------------------------------------------------------
// The test side

/** Options of {@link startApp}. */
export interface AppOptions {
  readonly service: string;
  readonly version: string;
  /** Default 0.0.0.0. */
  readonly bind?: string;
  readonly ports?: Partial<typeof APP_PORTS>;
  /** Run as this user (default: root, like the test). */
  readonly uid?: number;
  readonly gid?: number;
}

/** A running `serve` app in a VM. */
export class MeshApp {
  constructor(
    private readonly lab: MeshLab,
    readonly node: string,
    readonly process: LabProcess,
    readonly ports: typeof APP_PORTS | { http: number; grpc: number; tcp: number },
  ) {}

  /** Flips /health (from inside the VM, on loopback: never through a proxy). */
  async setHealthy(healthy: boolean): Promise<void> {
    const r = await this.lab.curl(
      this.node,
      `http://127.0.0.1:${this.ports.http}/admin/${healthy ? 'healthy' : 'unhealthy'}`,
      { method: 'POST' },
    );
    if (r.status !== 200)
      throw new Error(`setHealthy(${healthy}) in ${this.node}: ${r.status} ${r.stderr}`);
  }

  stop(): Promise<unknown> {
    return this.process.stop();
  }
}

/** Starts the HTTP + gRPC + TCP app in `node` and waits until all three listen. */
export async function startApp(lab: MeshLab, node: string, opts: AppOptions): Promise<MeshApp> {
  const ports = { ...APP_PORTS, ...opts.ports };
  const p = lab.spawn(
    node,
    [
      process.execPath,
      MESH_APPS_JS,
      'serve',
      '--service',
      opts.service,
      '--version',
      opts.version,
      '--node',
      node,
      '--bind',
      opts.bind ?? '0.0.0.0',
      '--http',
      String(ports.http),
      '--grpc',
      String(ports.grpc),
      '--tcp',
      String(ports.tcp),
    ],
    {
      name: `${opts.service}-${opts.version}`,
      ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
      ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
    },
  );
  await p.waitForOutput('"event":"listening"', 15_000);
  return new MeshApp(lab, node, p, ports);
}

/** What a client calls: any of the three. */
export interface CallTargets {
  /** e.g. http://reviews:9080/ */
  readonly httpUrl?: string;
  /** e.g. reviews:9090 (grpc-js dns: resolution, through the VM's resolver) */
  readonly grpcTarget?: string;
  /** e.g. reviews:9100 */
  readonly tcpTarget?: string;
  /** HTTP headers / gRPC metadata on every call (e.g. { 'end-user': 'jason' }). */
  readonly headers?: Readonly<Record<string, string>>;
  /** Per call, default 2 s. */
  readonly timeoutMs?: number;
  readonly uid?: number;
  readonly gid?: number;
}

function clientArgs(t: CallTargets): string[] {
  return [
    ...(t.httpUrl ? ['--http-url', t.httpUrl] : []),
    ...(t.grpcTarget ? ['--grpc-target', t.grpcTarget] : []),
    ...(t.tcpTarget ? ['--tcp-target', t.tcpTarget] : []),
    ...Object.entries(t.headers ?? {}).flatMap(([k, v]) => ['--header', `${k}:${v}`]),
    '--timeout-ms',
    String(t.timeoutMs ?? 2_000),
  ];
}

/** A looping client in a VM, polled through its /status on the VM's loopback. */
export class MeshClient {
  constructor(
    private readonly lab: MeshLab,
    readonly node: string,
    readonly process: LabProcess,
    private readonly statusPort: number,
  ) {}

  /** The counters so far. */
  async status(): Promise<ClientStatus> {
    const r = await this.lab.curl(this.node, `http://127.0.0.1:${this.statusPort}/status`);
    if (r.status !== 200)
      throw new Error(
        `client status in ${this.node}: ${r.status} ${r.stderr}; ${this.process.tail()}`,
      );
    return JSON.parse(r.body) as ClientStatus;
  }

  /** Zeroes the counters. */
  async reset(): Promise<void> {
    const r = await this.lab.curl(this.node, `http://127.0.0.1:${this.statusPort}/reset`, {
      method: 'POST',
    });
    if (r.status !== 200) throw new Error(`client reset in ${this.node}: ${r.status} ${r.stderr}`);
  }

  /** Polls status until `pred` holds (default timeout 20 s); resolves with that status. */
  async waitUntil(
    pred: (s: ClientStatus) => boolean,
    what: string,
    timeoutMs = 20_000,
  ): Promise<ClientStatus> {
    let last: ClientStatus | undefined;
    try {
      return await waitFor(
        async () => {
          last = await this.status();
          return pred(last) ? last : undefined;
        },
        { timeoutMs, intervalMs: 250, what },
      );
    } catch (err) {
      throw new Error(`${(err as Error).message}; last status: ${JSON.stringify(last)}`);
    }
  }

  stop(): Promise<unknown> {
    return this.process.stop();
  }
}

/** Starts a looping client in `node` (status on 127.0.0.1:statusPort there). */
export async function startClient(
  lab: MeshLab,
  node: string,
  opts: CallTargets & { intervalMs?: number; statusPort?: number },
): Promise<MeshClient> {
  const statusPort = opts.statusPort ?? CLIENT_STATUS_PORT;
  const p = lab.spawn(
    node,
    [
      process.execPath,
      MESH_APPS_JS,
      'client',
      ...clientArgs(opts),
      '--interval-ms',
      String(opts.intervalMs ?? 100),
      '--status',
      `127.0.0.1:${statusPort}`,
    ],
    {
      name: 'client',
      ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
      ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
    },
  );
  await p.waitForOutput('"event":"client-started"', 15_000);
  return new MeshClient(lab, node, p, statusPort);
}

/** Runs `count` rounds (default 1) of calls from `node` and resolves with the counters. */
export async function callOnce(
  lab: MeshLab,
  node: string,
  opts: CallTargets & { count?: number },
): Promise<ClientStatus> {
  const r = await lab.exec(
    node,
    [
      process.execPath,
      MESH_APPS_JS,
      'client',
      ...clientArgs(opts),
      '--once',
      '--count',
      String(opts.count ?? 1),
    ],
    {
      timeoutMs: 30_000 + (opts.count ?? 1) * (opts.timeoutMs ?? 2_000) * 3,
      ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
      ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
    },
  );
  if (r.code !== 0) throw new Error(`client --once in ${node} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as ClientStatus;
}
