/**
 * HTTP/1.1 upgrades (WebSocket and the other types a handler or route allows): route like any
 * request, connect to the upstream over HTTP/1.1 (TLS when the host's transport says so), send
 * the request head, relay the response head (101 or not), then splice the two sockets.
 */
import type * as http from 'node:http';
import type * as net from 'node:net';
import { performance } from 'node:perf_hooks';
import { PEER_METADATA_HEADER, type PeerMetadata, type UpstreamHost } from '../types';
import { newRequestId } from './request-id';
import { dialHost } from '../upstream/source-bound-host';
import { type ConnState, type ExchangeEnv, routeTableOf } from './exchange';
import {
  type HeaderMap,
  applyHeaderEdits,
  applyXfcc,
  copyEndToEnd,
  deleteHeader,
  firstValue,
} from './headers';
import { findRoute, pickWeightedCluster, rewritePath } from './routing';
import { upstreamAlpn } from './upstream-pool';

/** The response head of an upgrade may not exceed this (it is buffered until complete). */
const MAX_RESPONSE_HEAD_BYTES = 64 * 1024;
const HEAD_END = Buffer.from('\r\n\r\n');

const STATUS_TEXT: Readonly<Record<number, string>> = {
  403: 'Forbidden',
  404: 'Not Found',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

function rawReply(socket: net.Socket, status: number, text: string): void {
  const body = Buffer.from(text);
  socket.end(
    `HTTP/1.1 ${String(status)} ${STATUS_TEXT[status] ?? 'Error'}\r\n` +
      `content-type: text/plain\r\ncontent-length: ${String(body.length)}\r\nconnection: close\r\n\r\n` +
      text,
  );
}

function serializeHead(method: string, path: string, headers: HeaderMap): string {
  let s = `${method} ${path} HTTP/1.1\r\n`;
  for (const name of Object.keys(headers)) {
    const v = headers[name];
    if (v === undefined) continue;
    if (typeof v === 'string') s += `${name}: ${v}\r\n`;
    else for (const x of v) s += `${name}: ${x}\r\n`;
  }
  return s + '\r\n';
}

/** One upgraded connection, for telemetry and cleanup. */
class Tunnel {
  private readonly startMs = performance.now();
  private readonly startTime: number;
  status = 0;
  flags = '';
  upstream: net.Socket | undefined;
  host: UpstreamHost | undefined;
  clusterName = '';
  routeName = '';
  requestId = '';
  peerMeta: PeerMetadata | undefined;
  mtls = false;
  private headBytes = 0;
  private responseHeadBytes = 0;
  private recorded = false;

  constructor(
    private readonly env: ExchangeEnv,
    private readonly conn: ConnState,
    private readonly req: http.IncomingMessage,
    readonly socket: net.Socket,
  ) {
    this.startTime = env.clock.now();
  }

  fail(status: number, flag: string, text: string): void {
    this.status = status;
    this.flags = flag;
    rawReply(this.socket, status, text);
    this.upstream?.destroy();
    this.record();
  }

  /** Connects, sends the head and relays the response. */
  async run(
    head: Buffer,
    method: string,
    path: string,
    headers: HeaderMap,
    connect: () => Promise<net.Socket>,
  ): Promise<void> {
    let up: net.Socket;
    try {
      up = await connect();
    } catch (err) {
      if (this.env.log.isLevelEnabled('debug')) {
        this.env.log.debug({ err }, 'Upgrade connect failed');
      }
      this.fail(
        503,
        'UF',
        'upstream connect error or disconnect/reset before headers. reset reason: connection failure',
      );
      return;
    }
    this.upstream = up;
    if (this.socket.destroyed) {
      up.destroy();
      this.flags = 'DC';
      this.record();
      return;
    }
    up.setNoDelay(true);
    const reqHead = serializeHead(method, path, headers);
    this.headBytes = Buffer.byteLength(reqHead) + head.length;
    up.write(reqHead);
    if (head.length > 0) up.write(head);
    let buffered: Buffer | undefined;
    const onData = (chunk: Buffer): void => {
      buffered = buffered ? Buffer.concat([buffered, chunk]) : chunk;
      const end = buffered.indexOf(HEAD_END);
      if (end < 0) {
        if (buffered.length > MAX_RESPONSE_HEAD_BYTES) {
          up.removeListener('data', onData);
          this.fail(502, 'UPE', 'upstream response head too large');
        }
        return;
      }
      up.removeListener('data', onData);
      up.removeListener('end', onEarlyEnd);
      up.pause();
      const headText = buffered.subarray(0, end).toString('latin1');
      const rest = buffered.subarray(end + HEAD_END.length);
      this.relay(headText, rest, up);
    };
    const onEarlyEnd = (): void => {
      up.removeListener('data', onData);
      this.fail(
        503,
        'UC',
        'upstream connect error or disconnect/reset before headers. reset reason: connection termination',
      );
    };
    up.on('data', onData);
    up.once('end', onEarlyEnd);
    up.on('error', err => {
      if (this.env.log.isLevelEnabled('debug'))
        this.env.log.debug({ err }, 'Upgrade upstream error');
      this.socket.destroy();
    });
    this.socket.on('error', () => {
      up.destroy();
    });
    this.socket.once('close', () => {
      up.destroy();
      this.record();
    });
    up.once('close', () => {
      this.socket.destroy();
    });
  }

  private relay(headText: string, rest: Buffer, up: net.Socket): void {
    const lines = headText.split('\r\n');
    const statusLine = lines[0] ?? '';
    this.status = Number(statusLine.split(' ')[1]) || 502;
    const kept: string[] = [statusLine];
    const inbound = this.conn.ctx.direction === 'inbound';
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i] ?? '';
      const colon = line.indexOf(':');
      const name = colon > 0 ? line.slice(0, colon).trim().toLowerCase() : '';
      if (name === PEER_METADATA_HEADER) {
        if (!inbound) {
          this.peerMeta = this.env.telemetry.labels.decodePeerMetadata(
            line.slice(colon + 1).trim(),
          );
        }
        continue;
      }
      kept.push(line);
    }
    if (inbound && this.peerMeta) {
      kept.push(`${PEER_METADATA_HEADER}: ${this.env.telemetry.labels.peerMetadataHeader}`);
    }
    const outHead = kept.join('\r\n') + '\r\n\r\n';
    this.responseHeadBytes = Buffer.byteLength(outHead);
    this.socket.write(outHead);
    if (rest.length > 0) this.socket.write(rest);
    this.socket.pipe(up);
    up.pipe(this.socket);
    this.socket.resume();
    up.resume();
  }

  record(): void {
    if (this.recorded) return;
    this.recorded = true;
    const env = this.env;
    const up = this.upstream;
    try {
      const labels = this.conn.requestLabels(
        env.telemetry.labels,
        this.clusterName,
        this.mtls,
        this.peerMeta,
      );
      env.telemetry.recordRequest({
        labels,
        requestProtocol: 'http',
        responseCode: this.status,
        grpcResponseStatus: '',
        responseFlags: this.flags === '' ? '-' : this.flags,
        durationMs: performance.now() - this.startMs,
        requestBytes: up ? Math.max(0, up.bytesWritten - this.headBytes) : 0,
        responseBytes: up ? Math.max(0, up.bytesRead - this.responseHeadBytes) : 0,
        method: this.req.method ?? 'GET',
        authority: this.req.headers.host ?? '',
        path: this.req.url ?? '/',
        requestId: this.requestId,
        upstreamHost: this.host ? `${this.host.address}:${String(this.host.port)}` : '',
        upstreamCluster: this.clusterName,
        routeName: this.routeName,
        downstreamRemote: this.conn.remote,
        userAgent: this.req.headers['user-agent'] ?? '',
        startTime: this.startTime,
      });
    } catch (err) {
      env.log.warn({ err }, 'Request telemetry failed');
    }
  }
}

/**
 * Serves an HTTP/1.1 request with `Upgrade` (the server's 'upgrade' event). Types not allowed by
 * the handler or the route get 403, as in Envoy.
 */
export function handleUpgrade(
  env: ExchangeEnv,
  conn: ConnState,
  req: http.IncomingMessage,
  socket: net.Socket,
  head: Buffer,
): void {
  const tunnel = new Tunnel(env, conn, req, socket);
  socket.on('error', () => {
    // Reported through 'close'; without a listener a reset would throw.
  });
  const type = (firstValue(req.headers.upgrade) ?? '').toLowerCase();
  const input = {
    method: req.method ?? 'GET',
    authority: req.headers.host ?? '',
    scheme: conn.scheme,
    path: req.url ?? '/',
    headers: req.headers as HeaderMap,
  };
  const table = routeTableOf(conn.handler, env.config);
  const r = table ? findRoute(table, input) : undefined;
  if (!r) {
    tunnel.fail(404, 'NR', 'no route');
    return;
  }
  tunnel.routeName = r.route.name;
  const action = r.route.action;
  if (
    action.kind !== 'route' ||
    !(conn.handler.upgrades.includes(type) || r.upgrades.includes(type))
  ) {
    tunnel.fail(403, '', 'upgrade not allowed');
    return;
  }
  const wc = pickWeightedCluster(action);
  const cluster = wc ? env.clusters.get(wc.name) : undefined;
  if (!wc || !cluster) {
    tunnel.fail(503, 'NC', 'cluster not found');
    return;
  }
  tunnel.clusterName = wc.name;
  const host = cluster.pick({ originalDst: conn.ctx.originalDst });
  if (!host) {
    tunnel.fail(503, 'UH', 'no healthy upstream');
    return;
  }
  tunnel.host = host;
  tunnel.mtls = host.transport.tls?.mesh === true;
  const h = copyEndToEnd(req.headers as HeaderMap);
  if (conn.ctx.direction === 'inbound') {
    const pm = firstValue(h[PEER_METADATA_HEADER]);
    if (pm !== undefined) tunnel.peerMeta = env.telemetry.labels.decodePeerMetadata(pm);
  }
  deleteHeader(h, PEER_METADATA_HEADER);
  let rid = firstValue(h['x-request-id']);
  if (rid === undefined) {
    rid = newRequestId();
    h['x-request-id'] = rid;
  }
  tunnel.requestId = rid;
  if (h['x-forwarded-proto'] === undefined) h['x-forwarded-proto'] = conn.scheme;
  const xff = firstValue(h['x-forwarded-for']);
  h['x-forwarded-for'] = xff ? `${xff}, ${conn.ctx.remoteAddress}` : conn.ctx.remoteAddress;
  applyXfcc(h, conn.handler.forwardClientCert, conn.xfccElement(env.localPrincipal));
  for (const e of r.requestEdits) applyHeaderEdits(h, e);
  applyHeaderEdits(h, wc.requestHeaders);
  if (tunnel.mtls) h[PEER_METADATA_HEADER] = env.telemetry.labels.peerMetadataHeader;
  const authority = action.hostRewrite ?? input.authority;
  const out: HeaderMap = { host: authority, connection: 'Upgrade', upgrade: req.headers.upgrade };
  Object.assign(out, h);
  const path = rewritePath(r, action, input.path);
  if (!cluster.tryAcquire('requests')) {
    tunnel.fail(
      503,
      'UO',
      'upstream connect error or disconnect/reset before headers. reset reason: overflow',
    );
    return;
  }
  cluster.requestStarted(host);
  socket.once('close', () => {
    cluster.requestFinished(
      host,
      tunnel.status === 101 ? 'success' : tunnel.status >= 500 ? '5xx' : 'success',
    );
    cluster.release('requests');
  });
  const alpn = upstreamAlpn(host, 'http/1.1');
  tunnel
    .run(head, input.method, path, out, () => env.clusters.connect(dialHost(host, conn.ctx), alpn))
    .catch((err: unknown) => {
      env.log.warn({ err }, 'Upgrade relay failed');
      socket.destroy();
    });
}
