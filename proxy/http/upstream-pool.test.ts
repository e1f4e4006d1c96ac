/**
 * The HTTP/2 upstream pool's event order toward its listener: response headers always come before
 * any body. Node emits a client stream's 'response' on a later tick than the HEADERS frame arrived
 * but may push the DATA frames read with it into a flowing stream at once; when the session's
 * input is processed inside a JavaScript callback (here: a JS duplex in front of the socket, the
 * way Node feeds a non-native stream to nghttp2) that happens for every response, so this test
 * shows the order deterministically. Under load it also happened on TLS sockets, a few times in
 * ten thousand requests, and the HTTP/1.1 downstream was reset mid-response.
 */
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { Duplex } from 'node:stream';
import { silentLogger } from '../../common/logging';
import type { ClusterManager, UpstreamHost } from '../types';
import type { HeaderMap } from './headers';
import { staticCluster } from './testing';
import {
  type UpstreamFailure,
  type UpstreamListener,
  UpstreamPools,
  type UpstreamRequest,
} from './upstream-pool';

const BODY = Buffer.alloc(1024, 0x61);

/** A JS duplex in front of a TCP socket: what the pool reads arrives from a JS 'data' callback. */
function jsDuplexOver(socket: net.Socket): Duplex {
  const d = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      socket.write(chunk, cb);
    },
    final(cb) {
      socket.end();
      cb();
    },
    destroy(err, cb) {
      socket.destroy();
      cb(err);
    },
  });
  socket.on('data', (c: Buffer) => {
    if (!d.push(c)) socket.pause();
  });
  socket.on('end', () => d.push(null));
  socket.on('error', () => d.destroy());
  return d;
}

/** Connects to the host over plain TCP and hands the pool a JS duplex over that socket. */
class JsStreamClusters {
  readonly sockets = new Set<net.Socket>();

  connect(host: UpstreamHost): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const s = net.connect(host.port, host.address);
      this.sockets.add(s);
      s.once('close', () => this.sockets.delete(s));
      s.once('error', reject);
      s.once('connect', () => {
        resolve(jsDuplexOver(s) as unknown as net.Socket);
      });
    });
  }
}

/** Records what the pool reports for one request, in order. */
class Recorder implements UpstreamListener {
  readonly events: string[] = [];
  status = 0;
  body: Buffer[] = [];
  readonly done: Promise<void>;
  private finish!: () => void;

  constructor() {
    this.done = new Promise(resolve => (this.finish = resolve));
  }

  onUpstreamConnected(): void {}
  onUpstreamContinue(): void {}
  onUpstreamHeaders(_u: UpstreamRequest, status: number, _h: HeaderMap): void {
    this.events.push('headers');
    this.status = status;
  }
  onUpstreamData(_u: UpstreamRequest, chunk: Buffer): void {
    if (this.events.at(-1) !== 'data') this.events.push('data');
    this.body.push(chunk);
  }
  onUpstreamEnd(): void {
    this.events.push('end');
    this.finish();
  }
  onUpstreamError(_u: UpstreamRequest, kind: UpstreamFailure): void {
    this.events.push(`error:${kind}`);
    this.finish();
  }
  onUpstreamDrain(): void {}
}

describe('UpstreamPools HTTP/2', () => {
  let server: http2.Http2Server;
  let port = 0;
  const clusters = new JsStreamClusters();
  let pools: UpstreamPools;

  beforeAll(async () => {
    server = http2.createServer();
    server.on('stream', stream => {
      // HEADERS and DATA in one write: the client reads them together.
      stream.respond({ ':status': 200, 'content-length': String(BODY.length) });
      stream.end(BODY);
    });
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as net.AddressInfo).port;
    pools = new UpstreamPools(clusters as unknown as ClusterManager, silentLogger());
  });

  afterAll(async () => {
    pools.close();
    for (const s of clusters.sockets) s.destroy();
    await new Promise(resolve => server.close(resolve));
  });

  it('reports response headers before any body chunk', async () => {
    const cluster = staticCluster('outbound|80||h2', [port], { upstreamProtocol: 'http2' });
    const host: UpstreamHost = {
      cluster: cluster.name,
      address: '127.0.0.1',
      port,
      key: `127.0.0.1:${String(port)}|plaintext`,
      transport: { name: 'plaintext', match: {} },
      healthy: true,
      activeRequests: 0,
    };
    const head = { method: 'GET', path: '/', authority: 'h2', scheme: 'http', headers: {} };
    // Sequential and concurrent requests on one session.
    for (let round = 0; round < 5; round++) {
      const recorders = Array.from({ length: 10 }, () => new Recorder());
      for (const r of recorders) pools.request(host, cluster, 'http2', head, r, true);
      await Promise.all(recorders.map(r => r.done));
      for (const r of recorders) {
        expect(r.events).toEqual(['headers', 'data', 'end']);
        expect(r.status).toBe(200);
        expect(Buffer.concat(r.body).equals(BODY)).toBe(true);
      }
    }
  });
});
