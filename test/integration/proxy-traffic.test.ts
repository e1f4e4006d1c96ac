/**
 * Two real Sail proxies, configured by a real control plane, carrying real traffic over mesh mTLS
 * on loopback (test/helpers/proxy-pair.ts):
 *
 *   client → proxy A (outbound, 127.0.77.10:PORT) → mTLS → proxy B (inbound, 127.0.77.20:PORT)
 *          → application on 127.0.0.1:PORT
 *
 * Clients are real tools and libraries: curl (HTTP/1.1 keep-alive, chunked, 100-continue, 24 MB
 * bodies both ways checked by SHA-256, h2c with prior knowledge), @grpc/grpc-js (unary, server
 * and bidi streaming, status and trailers), a hand-rolled RFC 6455 WebSocket client, raw TCP
 * (byte-exact, half-close). Then B's side of the connection is shown to be mutual TLS (B's
 * metrics, and the caller's SPIFFE ID in x-forwarded-client-cert); PeerAuthentication STRICT and
 * PERMISSIVE are enforced on B's inbound port; a VirtualService change and a certificate rotation
 * under continuous load fail no request; /ready follows the first configuration; and the Istio
 * metrics carry the expected names and labels.
 */
import { execFile, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import * as tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { silentLogger } from '../../common/logging';
import { Proxy as SailProxy } from '../../proxy';
import {
  MeshControlPlane,
  peerAuthentication,
  pickPorts,
  proxyOptionsFor,
  type ProxyPair,
  SERVICE_HOST,
  serviceEntry,
  spiffeIdOf,
  startProxyPair,
  writeIdentity,
} from '../helpers/proxy-pair';
import { freePort } from '../helpers/sail-process';
import { makeTmpDir } from '../helpers/tmp-dir';
import { waitFor } from '../helpers/wait-for';

const haveCurl = spawnSync('curl', ['--version']).status === 0;
const run = haveCurl ? describe : describe.skip;
if (!haveCurl) console.warn('proxy traffic test skipped: curl is not installed');

jest.setTimeout(60_000);

const BIG_BYTES = 24 * 1024 * 1024;
const sha256 = (b: Buffer | string) => crypto.createHash('sha256').update(b).digest('hex');

// ---------------------------------------------------------------------------------------------
// Clients

interface CurlResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** Runs curl without blocking the event loop (the proxies run in this process). */
function curl(args: string[], timeoutMs = 30_000): Promise<CurlResult> {
  return new Promise(resolve => {
    execFile(
      'curl',
      ['-sS', '--max-time', String(Math.floor(timeoutMs / 1000) - 1), ...args],
      { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024, timeout: timeoutMs },
      (err, stdout, stderr) =>
        resolve({
          code: err ? Number((err as { code?: unknown }).code ?? 1) || 1 : 0,
          stdout,
          stderr: stderr.toString(),
        }),
    );
  });
}

/** Prometheus text → the series of `name` as label maps with their value. */
function series(text: string, name: string): { labels: Record<string, string>; value: number }[] {
  const out: { labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const open = line.indexOf('{');
    const close = line.lastIndexOf('}');
    const labels: Record<string, string> = {};
    if (open >= 0 && close > open) {
      const re = /(\w+)="((?:[^"\\]|\\.)*)"/g;
      const body = line.slice(open + 1, close);
      for (let m = re.exec(body); m; m = re.exec(body)) labels[m[1]!] = m[2]!;
    }
    out.push({ labels, value: Number(line.slice(line.lastIndexOf(' ') + 1)) });
  }
  return out;
}

async function scrape(address: string): Promise<string> {
  const res = await fetch(`http://${address}/stats/prometheus`);
  expect(res.status).toBe(200);
  return res.text();
}

// ---------------------------------------------------------------------------------------------
// Applications behind proxy B

/** RFC 6455 §5.2 frame; clients mask (§5.3), servers do not. */
function wsFrame(opcode: number, payload: Buffer, mask: boolean): Buffer {
  const len = payload.length;
  const ext = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const head = Buffer.alloc(2 + ext + (mask ? 4 : 0));
  head[0] = 0x80 | opcode;
  head[1] = (mask ? 0x80 : 0) | (ext === 0 ? len : ext === 2 ? 126 : 127);
  if (ext === 2) head.writeUInt16BE(len, 2);
  if (ext === 8) head.writeBigUInt64BE(BigInt(len), 2);
  if (!mask) return Buffer.concat([head, payload]);
  const key = crypto.randomBytes(4);
  key.copy(head, 2 + ext);
  const body = Buffer.alloc(len);
  for (let i = 0; i < len; i++) body[i] = payload[i]! ^ key[i & 3]!;
  return Buffer.concat([head, body]);
}

/** Parses whole frames off `buf`; returns them and the unparsed rest. */
function wsParse(buf: Buffer): {
  frames: { opcode: number; payload: Buffer }[];
  rest: Buffer;
} {
  const frames: { opcode: number; payload: Buffer }[] = [];
  let off = 0;
  for (;;) {
    if (buf.length - off < 2) break;
    const b1 = buf[off + 1]!;
    let len = b1 & 0x7f;
    let p = off + 2;
    if (len === 126) {
      if (buf.length - p < 2) break;
      len = buf.readUInt16BE(p);
      p += 2;
    } else if (len === 127) {
      if (buf.length - p < 8) break;
      len = Number(buf.readBigUInt64BE(p));
      p += 8;
    }
    const masked = (b1 & 0x80) !== 0;
    const key = masked ? buf.subarray(p, p + 4) : undefined;
    if (masked) p += 4;
    if (buf.length - p < len) break;
    const payload = Buffer.from(buf.subarray(p, p + len));
    if (key) for (let i = 0; i < len; i++) payload[i] = payload[i]! ^ key[i & 3]!;
    frames.push({ opcode: buf[off]! & 0x0f, payload });
    off = p + len;
  }
  return { frames, rest: buf.subarray(off) };
}

const wsAccept = (key: string) =>
  crypto.createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC11B65`).digest('base64');

/** What the HTTP/1.1 application saw of each request. */
interface Seen {
  headers: http.IncomingHttpHeaders;
  method: string;
  url: string;
}

/** Reads a request body to its end, then gives `done` its SHA-256 (hex) and size. */
function digestBody(req: Readable, done: (sha256: string, bytes: number) => void): void {
  const hash = crypto.createHash('sha256');
  let bytes = 0;
  req.on('data', (c: Buffer) => {
    hash.update(c);
    bytes += c.length;
  });
  req.on('end', () => {
    done(hash.digest('hex'), bytes);
  });
}

/**
 * The HTTP/1.1 application: /headers echoes the request headers as JSON, /upload answers the
 * body's SHA-256 and size, /blob serves `big` with a length, /chunked serves it chunked, and any
 * Upgrade: websocket becomes an echo WebSocket.
 */
function startHttpApp(port: number, big: Buffer, seen: Seen[]): Promise<http.Server> {
  const server = http.createServer({ keepAliveTimeout: 30_000 }, (req, res) => {
    seen.push({ headers: req.headers, method: req.method ?? '', url: req.url ?? '' });
    if (req.url === '/upload') {
      digestBody(req, (sha256, bytes) => {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ sha256, bytes }));
      });
      return;
    }
    req.resume();
    if (req.url === '/blob') {
      res.writeHead(200, {
        'content-length': big.length,
        'content-type': 'application/octet-stream',
      });
      res.end(big);
    } else if (req.url === '/chunked') {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      let off = 0;
      const step = () => {
        while (off < big.length) {
          const end = Math.min(big.length, off + 65_536 + (off % 7919));
          const ok = res.write(big.subarray(off, end));
          off = end;
          if (!ok) {
            res.once('drain', step);
            return;
          }
        }
        res.end();
      };
      step();
    } else {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ headers: req.headers, httpVersion: req.httpVersion }));
    }
  });
  // 100-continue: answer "go on" ourselves (Node's default does too; made explicit to count it).
  server.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => {
    res.writeContinue();
    server.emit('request', req, res);
  });
  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    seen.push({ headers: req.headers, method: req.method ?? '', url: req.url ?? '' });
    const key = req.headers['sec-websocket-key'];
    if (typeof key !== 'string' || req.headers.upgrade?.toLowerCase() !== 'websocket') {
      socket.end('HTTP/1.1 400 Bad Request\r\n\r\n');
      return;
    }
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${wsAccept(key)}\r\n\r\n`,
    );
    let buf: Buffer = head;
    socket.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      const { frames, rest } = wsParse(buf);
      buf = rest;
      for (const f of frames) {
        if (f.opcode === 0x8) {
          socket.end(wsFrame(0x8, f.payload, false));
          return;
        }
        socket.write(wsFrame(f.opcode, f.payload, false));
      }
    });
    socket.on('error', () => undefined); // the client may go first
  });
  return new Promise(resolve => server.listen(port, '127.0.0.1', () => resolve(server)));
}

/** The h2c application: answers with the HTTP version and the body's SHA-256. */
function startH2cApp(port: number): Promise<http2.Http2Server> {
  const server = http2.createServer((req, res) => {
    digestBody(req, (sha256, bytes) => {
      res.setHeader('content-type', 'application/json');
      res.end(
        JSON.stringify({
          httpVersion: req.httpVersion,
          sha256,
          bytes,
          xfcc: req.headers['x-forwarded-client-cert'] ?? '',
        }),
      );
    });
  });
  return new Promise(resolve => server.listen(port, '127.0.0.1', () => resolve(server)));
}

const raw = (b: Buffer): Buffer => b;
const method = (name: string, requestStream: boolean, responseStream: boolean) => ({
  path: `/sail.test.Traffic/${name}`,
  requestStream,
  responseStream,
  requestSerialize: raw,
  requestDeserialize: raw,
  responseSerialize: raw,
  responseDeserialize: raw,
});
const trafficService: grpc.ServiceDefinition = {
  Unary: method('Unary', false, false),
  ServerStream: method('ServerStream', false, true),
  Bidi: method('Bidi', true, true),
  Fail: method('Fail', false, false),
};
const TrafficClient = grpc.makeGenericClientConstructor(trafficService, 'Traffic');

/** The gRPC application: echo, N-message stream, bidi echo, and a failure with trailers. */
async function startGrpcApp(port: number): Promise<grpc.Server> {
  const server = new grpc.Server();
  server.addService(trafficService, {
    Unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
      cb(null, call.request),
    ServerStream: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      const n = call.request.readUInt32BE(0);
      for (let i = 0; i < n; i++) {
        const b = Buffer.alloc(4);
        b.writeUInt32BE(i);
        call.write(b);
      }
      call.end();
    },
    Bidi: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      call.on('data', (b: Buffer) => call.write(Buffer.concat([Buffer.from('echo:'), b])));
      call.on('end', () => call.end());
    },
    Fail: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      const md = new grpc.Metadata();
      md.set('x-trailer', 'kept');
      cb({ code: grpc.status.FAILED_PRECONDITION, details: 'not today', metadata: md });
    },
  });
  await new Promise<number>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return server;
}

/** The TCP application: echoes; after the client's FIN it sends `bye` and closes. */
function startTcpApp(port: number): Promise<net.Server> {
  const server = net.createServer({ allowHalfOpen: true }, socket => {
    socket.on('data', c => socket.write(c));
    socket.on('end', () => socket.end('bye'));
    socket.on('error', () => undefined);
  });
  return new Promise(resolve => server.listen(port, '127.0.0.1', () => resolve(server)));
}

// ---------------------------------------------------------------------------------------------
// Load under change

/** A loop of requests through A (2 in flight, keep-alive) until stopped; counts outcomes. */
function startLoad(pair: ProxyPair, port: number) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 2 });
  const result = { ok: 0, failed: 0, errors: [] as string[], subsets: [] as string[] };
  let stopped = false;
  const one = () =>
    new Promise<void>(resolve => {
      const req = http.request(
        {
          host: pair.outboundHost,
          port,
          path: '/headers',
          agent,
          headers: { host: `${SERVICE_HOST}:${port}` },
          timeout: 10_000,
        },
        res => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            if (res.statusCode === 200) {
              result.ok++;
              const body = JSON.parse(Buffer.concat(chunks).toString()) as {
                headers: Record<string, string>;
              };
              const s = body.headers['x-subset'] ?? '-';
              if (result.subsets[result.subsets.length - 1] !== s) result.subsets.push(s);
            } else {
              result.failed++;
              result.errors.push(`status ${res.statusCode}`);
            }
            resolve();
          });
          res.on('error', err => {
            result.failed++;
            result.errors.push(err.message);
            resolve();
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', err => {
        result.failed++;
        result.errors.push(err.message);
        resolve();
      });
      req.end();
    });
  const worker = async () => {
    while (!stopped && result.ok + result.failed < 200_000) await one();
  };
  const workers = [worker(), worker()];
  return {
    result,
    /** Requests answered so far. */
    get count() {
      return result.ok + result.failed;
    },
    async stop() {
      stopped = true;
      await Promise.all(workers);
      agent.destroy();
      return result;
    },
  };
}

const destination = (subset: string, weight: number) => ({
  destination: { host: SERVICE_HOST, subset },
  weight,
});

const destinationRule = (http2Port: number) => ({
  apiVersion: 'networking.istio.io/v1beta1',
  kind: 'DestinationRule',
  metadata: { name: 'server', namespace: 'default' },
  spec: {
    host: SERVICE_HOST,
    // One request per upstream connection on the HTTP/2 port only: each request there is a new
    // mTLS handshake from A to B, so a certificate rotation shows in the very next request (open
    // connections keep the certificate they started with). The other ports pool as usual.
    trafficPolicy: {
      portLevelSettings: [
        { port: { number: http2Port }, connectionPool: { http: { maxRequestsPerConnection: 1 } } },
      ],
    },
    // Two subsets over the same workload: which one served a request shows in the header its
    // route sets, so the test sees the switch without a second host.
    subsets: [
      { name: 'blue', labels: { app: 'server' } },
      { name: 'green', labels: { app: 'server' } },
    ],
  },
});

const virtualService = (subset: 'blue' | 'green') => ({
  apiVersion: 'networking.istio.io/v1beta1',
  kind: 'VirtualService',
  metadata: { name: 'server', namespace: 'default' },
  spec: {
    hosts: [SERVICE_HOST],
    http: [
      {
        headers: { request: { set: { 'x-subset': subset } } },
        route:
          subset === 'blue'
            ? [destination('blue', 100), destination('green', 0)]
            : [destination('blue', 0), destination('green', 100)],
      },
    ],
  },
});

// ---------------------------------------------------------------------------------------------

run('Sail proxy pair: traffic over mesh mTLS', () => {
  const tmp = makeTmpDir('sail-proxy-traffic-');
  const big = crypto.randomBytes(BIG_BYTES);
  const bigSha = sha256(big);
  const bigFile = path.join(tmp.dir, 'big.bin');
  const seen: Seen[] = [];
  let pair: ProxyPair;
  const servers: { close(cb?: () => void): unknown }[] = [];
  let grpcServer: grpc.Server | undefined;

  /** curl through proxy A to the service port (Host: SERVICE_HOST:PORT). */
  const viaA = (port: number, urlPath: string, args: string[] = []) =>
    curl([
      '--connect-to',
      `${SERVICE_HOST}:${port}:${pair.outboundHost}:${port}`,
      ...args,
      `http://${SERVICE_HOST}:${port}${urlPath}`,
    ]);

  beforeAll(async () => {
    fs.writeFileSync(bigFile, big);
    const ports = await pickPorts();
    servers.push(await startHttpApp(ports.http, big, seen));
    servers.push(await startH2cApp(ports.http2));
    servers.push(await startTcpApp(ports.tcp));
    grpcServer = await startGrpcApp(ports.grpc);
    pair = await startProxyPair({
      dir: tmp.dir,
      ports,
      config: [destinationRule(ports.http2), virtualService('blue')],
    });
  });

  afterAll(async () => {
    await pair?.close();
    grpcServer?.forceShutdown();
    for (const s of servers) await new Promise<void>(r => s.close(() => r()));
    tmp.cleanup();
  });

  it('is ready once configured, and reports it on /ready', async () => {
    expect(pair.a?.ready).toBe(true);
    expect(pair.b?.ready).toBe(true);
    const res = await fetch(`http://${pair.a!.adminAddress!}/ready`);
    expect(res.status).toBe(200);
  });

  it('carries HTTP/1.1 with keep-alive to the client', async () => {
    const url = `http://${SERVICE_HOST}:${pair.ports.http}/headers`;
    const r = await curl([
      '-v',
      '--connect-to',
      `${SERVICE_HOST}:${pair.ports.http}:${pair.outboundHost}:${pair.ports.http}`,
      url,
      url,
    ]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/Re-using existing connection/);
    expect(r.stderr.match(/< HTTP\/1\.1 200/g)).toHaveLength(2);
  });

  it('uploads 24 MB byte-exact, with Expect: 100-continue answered', async () => {
    const r = await viaA(pair.ports.http, '/upload', [
      '-v',
      '-H',
      'Expect: 100-continue',
      '--expect100-timeout',
      '20',
      '--data-binary',
      `@${bigFile}`,
      '-H',
      'content-type: application/octet-stream',
    ]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/< HTTP\/1\.1 100 Continue/);
    expect(JSON.parse(r.stdout.toString())).toEqual({ sha256: bigSha, bytes: BIG_BYTES });
  });

  it('uploads 24 MB chunked byte-exact', async () => {
    const r = await viaA(pair.ports.http, '/upload', [
      '-H',
      'Transfer-Encoding: chunked',
      '-H',
      'Expect:',
      '--data-binary',
      `@${bigFile}`,
    ]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout.toString())).toEqual({ sha256: bigSha, bytes: BIG_BYTES });
  });

  it.each(['/blob', '/chunked'])('downloads 24 MB byte-exact from %s', async p => {
    const r = await viaA(pair.ports.http, p, ['-D', '-', '-o', path.join(tmp.dir, 'down.bin')]);
    expect(r.code).toBe(0);
    const head = r.stdout.toString();
    expect(head).toMatch(/^HTTP\/1\.1 200/);
    if (p === '/chunked') expect(head.toLowerCase()).toMatch(/transfer-encoding: chunked/);
    const got = fs.readFileSync(path.join(tmp.dir, 'down.bin'));
    expect(got.length).toBe(BIG_BYTES);
    expect(sha256(got)).toBe(bigSha);
  });

  it('carries h2c with prior knowledge, end to end as HTTP/2', async () => {
    const body = crypto.randomBytes(3 * 1024 * 1024);
    const file = path.join(tmp.dir, 'h2.bin');
    fs.writeFileSync(file, body);
    const r = await viaA(pair.ports.http2, '/h2', [
      '--http2-prior-knowledge',
      '-w',
      '\n%{http_version}',
      '--data-binary',
      `@${file}`,
    ]);
    expect(r.code).toBe(0);
    const [json, version] = r.stdout.toString().split('\n');
    expect(version).toBe('2');
    expect(JSON.parse(json!)).toMatchObject({
      httpVersion: '2.0',
      sha256: sha256(body),
      bytes: body.length,
    });
  });

  describe('gRPC', () => {
    let client: grpc.Client;
    beforeAll(() => {
      client = new TrafficClient(
        `${pair.outboundHost}:${pair.ports.grpc}`,
        grpc.credentials.createInsecure(),
        { 'grpc.default_authority': `${SERVICE_HOST}:${pair.ports.grpc}` },
      );
    });
    afterAll(() => client.close());
    const deadline = () => ({ deadline: Date.now() + 10_000 });

    it('makes unary calls', async () => {
      const payload = crypto.randomBytes(200_000);
      const got = await new Promise<Buffer>((resolve, reject) =>
        client.makeUnaryRequest(
          '/sail.test.Traffic/Unary',
          raw,
          raw,
          payload,
          new grpc.Metadata(),
          deadline(),
          (err, v) => (err ? reject(err) : resolve(v as Buffer)),
        ),
      );
      expect(got.equals(payload)).toBe(true);
    });

    it('streams from the server', async () => {
      const req = Buffer.alloc(4);
      req.writeUInt32BE(500);
      const call = client.makeServerStreamRequest(
        '/sail.test.Traffic/ServerStream',
        raw,
        raw,
        req,
        new grpc.Metadata(),
        deadline(),
      );
      const got: number[] = [];
      call.on('error', () => undefined); // the status below carries it
      call.on('data', (b: Buffer) => got.push(b.readUInt32BE(0)));
      const status = await new Promise<grpc.StatusObject>(r => call.on('status', r));
      expect(status.code).toBe(grpc.status.OK);
      expect(got).toEqual(Array.from({ length: 500 }, (_, i) => i));
    });

    it('streams both ways', async () => {
      const call = client.makeBidiStreamRequest(
        '/sail.test.Traffic/Bidi',
        raw,
        raw,
        new grpc.Metadata(),
        deadline(),
      );
      const got: string[] = [];
      call.on('error', () => undefined); // the status below carries it
      call.on('data', (b: Buffer) => {
        got.push(b.toString());
        if (got.length < 50) call.write(Buffer.from(`m${got.length}`));
        else call.end();
      });
      call.write(Buffer.from('m0'));
      const status = await new Promise<grpc.StatusObject>(r => call.on('status', r));
      expect(status.code).toBe(grpc.status.OK);
      expect(got).toEqual(Array.from({ length: 50 }, (_, i) => `echo:m${i}`));
    });

    it('passes a failure status, its message and trailers', async () => {
      const err = await new Promise<grpc.ServiceError>((resolve, reject) =>
        client.makeUnaryRequest(
          '/sail.test.Traffic/Fail',
          raw,
          raw,
          Buffer.alloc(0),
          new grpc.Metadata(),
          deadline(),
          e => (e ? resolve(e) : reject(new Error('the call succeeded'))),
        ),
      );
      expect(err.code).toBe(grpc.status.FAILED_PRECONDITION);
      expect(err.details).toBe('not today');
      expect(err.metadata.get('x-trailer')).toEqual(['kept']);
    });
  });

  it('upgrades to WebSocket and echoes frames both ways', async () => {
    const socket = net.connect(pair.ports.http, pair.outboundHost);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const key = crypto.randomBytes(16).toString('base64');
    socket.write(
      `GET /ws HTTP/1.1\r\nHost: ${SERVICE_HOST}:${pair.ports.http}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
    let buf: Buffer = Buffer.alloc(0);
    const frames: { opcode: number; payload: Buffer }[] = [];
    let head: string | undefined;
    const ended = new Promise<void>(r => socket.on('close', () => r()));
    socket.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (head === undefined) {
        const i = buf.indexOf('\r\n\r\n');
        if (i < 0) return;
        head = buf.subarray(0, i).toString();
        buf = buf.subarray(i + 4);
      }
      const parsed = wsParse(buf);
      frames.push(...parsed.frames);
      buf = parsed.rest;
    });
    await waitFor(() => head, { what: 'the 101 response' });
    expect(head).toMatch(/^HTTP\/1\.1 101/);
    expect(head).toContain(wsAccept(key));
    const binary = crypto.randomBytes(300_000);
    socket.write(wsFrame(0x1, Buffer.from('hello'), true));
    socket.write(wsFrame(0x2, binary, true));
    await waitFor(() => frames.length >= 2, { timeoutMs: 10_000, what: 'two echoed frames' });
    expect(frames[0]).toEqual({ opcode: 0x1, payload: Buffer.from('hello') });
    expect(frames[1]!.opcode).toBe(0x2);
    expect(frames[1]!.payload.equals(binary)).toBe(true);
    socket.write(wsFrame(0x8, Buffer.from([0x03, 0xe8]), true));
    await waitFor(() => frames.length >= 3, { what: 'the close frame' });
    expect(frames[2]!.opcode).toBe(0x8);
    await ended;
  });

  it('carries TCP byte-exact, with half-close', async () => {
    const data = crypto.randomBytes(8 * 1024 * 1024);
    const socket = net.connect({
      port: pair.ports.tcp,
      host: pair.outboundHost,
      allowHalfOpen: true,
    });
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    const ended = new Promise<void>((resolve, reject) => {
      socket.on('end', resolve);
      socket.on('error', reject);
    });
    socket.end(data);
    await ended;
    const got = Buffer.concat(chunks);
    expect(got.length).toBe(data.length + 3);
    expect(sha256(got.subarray(0, data.length))).toBe(sha256(data));
    // Sent by the application after it saw our FIN: the proxies kept the other direction open.
    expect(got.subarray(data.length).toString()).toBe('bye');
    socket.destroy();
  });

  it("is mutual TLS on B's side: the app sees A's SPIFFE ID, B's metrics say mutual_tls", async () => {
    const r = await viaA(pair.ports.http, '/headers');
    const { headers } = JSON.parse(r.stdout.toString()) as { headers: Record<string, string> };
    const xfcc = headers['x-forwarded-client-cert'] ?? '';
    expect(xfcc).toContain(`URI=${spiffeIdOf('client')}`);
    expect(xfcc).toContain(`By=${spiffeIdOf('server')}`);
    const text = await scrape(pair.b!.metricsAddress!);
    const inbound = series(text, 'istio_requests_total').filter(
      s => s.labels.reporter === 'destination',
    );
    expect(inbound.length).toBeGreaterThan(0);
    for (const s of inbound) expect(s.labels.connection_security_policy).toBe('mutual_tls');
    const tcp = series(text, 'istio_tcp_connections_opened_total').filter(
      s => s.labels.reporter === 'destination',
    );
    expect(tcp.length).toBeGreaterThan(0);
    for (const s of tcp) expect(s.labels.connection_security_policy).toBe('mutual_tls');
  });

  it('reports Istio metrics with the standard names and labels', async () => {
    const a = await scrape(pair.a!.metricsAddress!);
    const b = await scrape(pair.b!.metricsAddress!);
    const common = {
      source_workload: 'vm-a',
      source_workload_namespace: 'default',
      source_principal: spiffeIdOf('client'),
      source_app: 'client',
      destination_workload: 'vm-b',
      destination_workload_namespace: 'default',
      destination_principal: spiffeIdOf('server'),
      destination_app: 'server',
      destination_service: SERVICE_HOST,
      destination_service_name: 'server',
      destination_service_namespace: 'default',
    };
    const http200 = { ...common, request_protocol: 'http', response_code: '200' };
    const has = (text: string, name: string, want: Record<string, string>) =>
      series(text, name).some(s => Object.entries(want).every(([k, v]) => s.labels[k] === v));
    expect(has(a, 'istio_requests_total', { ...http200, reporter: 'source' })).toBe(true);
    expect(
      has(b, 'istio_requests_total', {
        ...http200,
        reporter: 'destination',
        connection_security_policy: 'mutual_tls',
      }),
    ).toBe(true);
    expect(
      has(a, 'istio_requests_total', {
        ...common,
        reporter: 'source',
        request_protocol: 'grpc',
        grpc_response_status: String(grpc.status.FAILED_PRECONDITION),
      }),
    ).toBe(true);
    for (const text of [a, b])
      for (const name of [
        'istio_request_duration_milliseconds_bucket',
        'istio_request_bytes_bucket',
        'istio_response_bytes_bucket',
      ])
        expect(has(text, name, { destination_service: SERVICE_HOST })).toBe(true);
    // TCP carries no peer metadata between the proxies: each side knows its own workload, the
    // service, and (B) the caller's principal from its certificate.
    const service = {
      destination_service: SERVICE_HOST,
      destination_service_name: 'server',
      destination_service_namespace: 'default',
      request_protocol: 'tcp',
    };
    for (const name of [
      'istio_tcp_connections_opened_total',
      'istio_tcp_connections_closed_total',
      'istio_tcp_sent_bytes_total',
      'istio_tcp_received_bytes_total',
    ]) {
      expect(
        has(a, name, {
          ...service,
          reporter: 'source',
          source_workload: 'vm-a',
          source_principal: spiffeIdOf('client'),
          source_app: 'client',
        }),
      ).toBe(true);
      expect(
        has(b, name, {
          ...service,
          reporter: 'destination',
          source_principal: spiffeIdOf('client'),
          destination_workload: 'vm-b',
          destination_principal: spiffeIdOf('server'),
          destination_app: 'server',
          connection_security_policy: 'mutual_tls',
        }),
      ).toBe(true);
    }
    // Byte counters saw the 8 MB TCP round trip, in both directions.
    const sent = series(a, 'istio_tcp_sent_bytes_total').reduce((s, x) => s + x.value, 0);
    const received = series(a, 'istio_tcp_received_bytes_total').reduce((s, x) => s + x.value, 0);
    expect(Math.min(sent, received)).toBeGreaterThanOrEqual(8 * 1024 * 1024);
  });

  it('switches a VirtualService under load without failing a request', async () => {
    const load = startLoad(pair, pair.ports.http);
    await waitFor(() => load.count >= 50, { timeoutMs: 10_000, what: '50 requests before' });
    await pair.cp.apply([virtualService('green')]);
    await waitFor(() => load.result.subsets[load.result.subsets.length - 1] === 'green', {
      timeoutMs: 10_000,
      what: 'requests routed to green',
    });
    const at = load.count;
    await waitFor(() => load.count >= at + 200, { timeoutMs: 10_000, what: '200 requests after' });
    const result = await load.stop();
    expect(result.errors).toEqual([]);
    expect(result.failed).toBe(0);
    // One switch, no flapping back: the new route is in force everywhere once seen.
    expect(result.subsets).toEqual(['blue', 'green']);
  });

  it('rotates both certificates under load without failing a request', async () => {
    const leafOf = (pem: string) => new crypto.X509Certificate(pem);
    const oldA = leafOf(pair.hostA.identity.certChainPem);
    const oldHash = sha256(oldA.raw);
    // The HTTP/2 port opens a new upstream connection per request (see destinationRule).
    const xfccOfNextRequest = async () => {
      const r = await viaA(pair.ports.http2, '/xfcc', ['--http2-prior-knowledge']);
      return (JSON.parse(r.stdout.toString()) as { xfcc: string }).xfcc;
    };
    // Until the rotation, B sees A's current certificate.
    await waitFor(async () => (await xfccOfNextRequest()).includes(`Hash=${oldHash}`), {
      what: 'requests through the pair before the rotation',
    });
    const load = startLoad(pair, pair.ports.http);
    await waitFor(() => load.count >= 50, { timeoutMs: 10_000, what: '50 requests before' });
    await pair.rotate();
    const newA = leafOf(pair.hostA.identity.certChainPem);
    const newB = leafOf(pair.hostB.identity.certChainPem);
    expect(newA.serialNumber).not.toBe(oldA.serialNumber);
    // A presents its new certificate: B's XFCC Hash is the SHA-256 of the DER A sent.
    const newHash = sha256(newA.raw);
    await waitFor(async () => (await xfccOfNextRequest()).includes(`Hash=${newHash}`), {
      timeoutMs: 15_000,
      intervalMs: 200,
      what: "B seeing A's new certificate",
    });
    // B presents its new certificate to a new mesh client.
    await waitFor(
      async () => {
        const socket = tls.connect({
          host: pair.workloadHost,
          port: pair.ports.http,
          ca: pair.hostA.identity.rootsPem,
          cert: pair.hostA.identity.certChainPem,
          key: pair.hostA.identity.keyPem,
          ALPNProtocols: ['istio-http/1.1', 'istio', 'http/1.1'],
          checkServerIdentity: () => undefined,
        });
        try {
          await new Promise<void>((resolve, reject) => {
            socket.once('secureConnect', resolve);
            socket.once('error', reject);
          });
          return socket.getPeerX509Certificate()?.serialNumber === newB.serialNumber;
        } finally {
          socket.destroy();
        }
      },
      { timeoutMs: 15_000, intervalMs: 200, what: 'B serving its new certificate' },
    );
    const at = load.count;
    await waitFor(() => load.count >= at + 100, { timeoutMs: 10_000, what: '100 requests after' });
    const result = await load.stop();
    expect(result.errors).toEqual([]);
    expect(result.failed).toBe(0);
  });

  describe('PeerAuthentication on B', () => {
    afterAll(async () => {
      await pair.cp.remove([{ kind: 'PeerAuthentication', name: 'server' }]);
    });

    const plaintextToB = () =>
      curl(
        [
          '-H',
          `Host: ${SERVICE_HOST}:${pair.ports.http}`,
          `http://${pair.inbound(pair.ports.http)}/headers`,
        ],
        5_000,
      );

    it('STRICT refuses a plaintext client and serves mTLS', async () => {
      await pair.cp.apply([peerAuthentication('STRICT')]);
      await waitFor(async () => (await plaintextToB()).code !== 0, {
        timeoutMs: 10_000,
        intervalMs: 100,
        what: 'B refusing plaintext',
      });
      const r = await plaintextToB();
      expect(r.code).not.toBe(0);
      expect(r.stdout.toString()).not.toContain('headers');
      const viaMesh = await viaA(pair.ports.http, '/headers');
      expect(viaMesh.code).toBe(0);
      expect(viaMesh.stdout.toString()).toContain(spiffeIdOf('client'));
    });

    it('PERMISSIVE serves plaintext and mTLS on the same port', async () => {
      await pair.cp.apply([peerAuthentication('PERMISSIVE')]);
      const plain = await waitFor(
        async () => {
          const r = await plaintextToB();
          return r.code === 0 ? r : undefined;
        },
        { timeoutMs: 10_000, intervalMs: 100, what: 'B serving plaintext' },
      );
      const body = JSON.parse(plain.stdout.toString()) as { headers: Record<string, string> };
      // No client certificate: the app is told of no caller identity.
      expect(body.headers['x-forwarded-client-cert']).toBeUndefined();
      const viaMesh = await viaA(pair.ports.http, '/headers');
      expect(viaMesh.code).toBe(0);
      expect(viaMesh.stdout.toString()).toContain(spiffeIdOf('client'));
    });
  });
});

run('Sail proxy readiness', () => {
  const tmp = makeTmpDir('sail-proxy-ready-');
  afterAll(() => tmp.cleanup());

  it('/ready is 503 until the first configuration arrives, then 200', async () => {
    const cp = await MeshControlPlane.start({ dataDir: path.join(tmp.dir, 'cp') });
    // A gate in front of pilot: connections wait until it opens, so the proxy runs without
    // configuration for as long as the test wants.
    let open = false;
    const held: net.Socket[] = [];
    const pipes: net.Socket[] = [];
    const [pilotHost, pilotPort] = cp.pilotAddress.split(':') as [string, string];
    const connect = (s: net.Socket) => {
      const up = net.connect(Number(pilotPort), pilotHost);
      pipes.push(s, up);
      s.pipe(up).pipe(s);
      s.on('error', () => up.destroy());
      up.on('error', () => s.destroy());
    };
    const gate = net.createServer(s => {
      s.on('error', () => undefined);
      if (open) connect(s);
      else held.push(s);
    });
    await new Promise<void>(r => gate.listen(0, '127.0.0.1', r));
    const gatePort = (gate.address() as net.AddressInfo).port;
    const ports = await pickPorts();
    await cp.apply([serviceEntry(ports)]);
    const identity = await cp.enroll('vm-r', 'client');
    const certsDir = path.join(tmp.dir, 'certs');
    await writeIdentity(certsDir, identity);
    const adminPort = await freePort();
    const proxy = new SailProxy({
      ...proxyOptionsFor({
        logger: silentLogger(),
        node: 'vm-r',
        ip: '127.0.77.30',
        labels: { app: 'client' },
        cp,
        certsDir,
        stateDir: fs.mkdtempSync(path.join(tmp.dir, 'state-')),
        outboundBindHost: '127.0.77.30',
        inboundBindHost: '127.0.77.30',
      }),
      pilotAddress: `127.0.0.1:${gatePort}`,
      adminListen: `127.0.0.1:${adminPort}`,
      initialFetchTimeoutMs: 60_000,
    });
    const readyStatus = async () => {
      try {
        return (await fetch(`http://127.0.0.1:${adminPort}/ready`)).status;
      } catch {
        return 0;
      }
    };
    // start() may resolve before or after the first configuration: do not wait for it yet.
    const started = proxy.start();
    started.catch(() => undefined);
    try {
      await waitFor(async () => (await readyStatus()) !== 0, { what: 'the admin server' });
      await waitFor(() => held.length > 0, { what: 'the proxy dialling pilot' });
      expect(await readyStatus()).toBe(503);
      expect(proxy.ready).toBe(false);
      open = true;
      for (const s of held.splice(0)) connect(s);
      await waitFor(async () => (await readyStatus()) === 200, {
        timeoutMs: 15_000,
        intervalMs: 50,
        what: '/ready 200 after pilot is reachable',
      });
      await started;
      expect(proxy.ready).toBe(true);
    } finally {
      await proxy.close();
      for (const s of [...held, ...pipes]) s.destroy();
      await new Promise<void>(r => gate.close(() => r()));
      await cp.close();
    }
  });
});
