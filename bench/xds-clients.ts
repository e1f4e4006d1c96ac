/**
 * The load side of `npm run bench:xds`: many simulated sidecars on ADS (SotW), run as a child
 * process pinned to its own core. Each behaves like Envoy: CDS and LDS wildcards, then EDS for
 * every EDS cluster and RDS for every route name the listeners reference, ACKing every response.
 * Streams share HTTP/2 connections, BENCH_STREAMS_PER_CONN each (default 50).
 *
 * Talks to the parent over IPC: {cmd:'connect', n} → {event:'synced', ms}; {cmd:'mark'} starts a
 * convergence measurement; every client reports the time it ACKs its first response after the
 * mark → {event:'converged', latencies}.
 */
import * as crypto from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { envoyType } from '../api/envoy';

const ADS = 'envoy.service.discovery.v3.AggregatedDiscoveryService';
const CDS = 'type.googleapis.com/envoy.config.cluster.v3.Cluster';
const EDS = 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment';
const LDS = 'type.googleapis.com/envoy.config.listener.v3.Listener';
const RDS = 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration';
const PER_CONN = Number(process.env.BENCH_STREAMS_PER_CONN ?? 50);

const reqType = envoyType('envoy.service.discovery.v3.DiscoveryRequest');
const resType = envoyType('envoy.service.discovery.v3.DiscoveryResponse');

interface Any {
  type_url: string;
  value: Uint8Array;
}
interface Response {
  versionInfo: string;
  nonce: string;
  typeUrl: string;
  resources: Any[];
}

const Client = grpc.makeGenericClientConstructor(
  {
    StreamAggregatedResources: {
      path: `/${ADS}/StreamAggregatedResources`,
      requestStream: true,
      responseStream: true,
      requestSerialize: (m: object) => Buffer.from(reqType.encode(m).finish()),
      requestDeserialize: (b: Buffer) => reqType.decode(b),
      responseSerialize: (m: object) => Buffer.from(resType.encode(m).finish()),
      responseDeserialize: (b: Buffer) => resType.decode(b) as unknown as Response,
    },
  },
  ADS,
);

/** What a resource refers to (EDS cluster names, RDS names), decoded once per distinct bytes. */
const refsCache = new Map<string, string[]>();

function refsOf(any: Any): string[] {
  const key = crypto.createHash('sha1').update(any.value).digest('base64');
  let refs = refsCache.get(key);
  if (refs) return refs;
  refs = [];
  if (any.type_url === CDS) {
    const c = envoyType('envoy.config.cluster.v3.Cluster').decode(any.value) as unknown as {
      name: string;
      type?: number;
      edsClusterConfig?: unknown;
    };
    if (c.edsClusterConfig) refs.push(c.name);
  } else if (any.type_url === LDS) {
    const json = JSON.stringify(
      envoyType('envoy.config.listener.v3.Listener').toObject(
        envoyType('envoy.config.listener.v3.Listener').decode(any.value),
        { json: true },
      ),
    );
    for (const m of json.matchAll(/"routeConfigName":"([^"]+)"/g)) refs.push(m[1]!);
  }
  refsCache.set(key, refs);
  return refs;
}

class SimClient {
  private call: grpc.ClientDuplexStream<object, Response>;
  private first = true;
  private eds = new Set<string>();
  private rds = new Set<string>();
  private readonly acked = new Set<string>();
  markAt = 0;
  convergedMs = -1;
  onSynced: (() => void) | undefined;
  onConverged: (() => void) | undefined;
  synced = false;

  constructor(
    client: grpc.Client,
    private readonly id: string,
  ) {
    this.call = (
      client as unknown as {
        StreamAggregatedResources(): grpc.ClientDuplexStream<object, Response>;
      }
    ).StreamAggregatedResources();
    this.call.on('data', (r: Response) => this.onResponse(r));
    this.call.on('error', err => {
      process.send?.({ event: 'error', id: this.id, message: err.message });
    });
    this.send({ typeUrl: CDS });
    this.send({ typeUrl: LDS });
  }

  private send(r: Record<string, unknown>) {
    if (this.first) {
      r.node = { id: this.id, cluster: 'bench', userAgentName: 'sail-bench' };
      this.first = false;
    }
    this.call.write(r);
  }

  private onResponse(r: Response) {
    const names = new Set<string>();
    if (r.typeUrl === CDS || r.typeUrl === LDS)
      for (const any of r.resources) for (const n of refsOf(any)) names.add(n);
    // A SotW ACK repeats the subscription (empty = wildcard for CDS and LDS).
    const subscribed = r.typeUrl === EDS ? this.eds : r.typeUrl === RDS ? this.rds : undefined;
    this.send({
      typeUrl: r.typeUrl,
      versionInfo: r.versionInfo,
      responseNonce: r.nonce,
      ...(subscribed ? { resourceNames: [...subscribed] } : {}),
    });
    if (this.markAt && this.convergedMs < 0) {
      this.convergedMs = performance.now() - this.markAt;
      this.onConverged?.();
    }
    if (r.typeUrl === CDS && !sameSet(names, this.eds)) {
      this.eds = names;
      this.send({ typeUrl: EDS, resourceNames: [...names] });
    }
    if (r.typeUrl === LDS && !sameSet(names, this.rds)) {
      this.rds = names;
      this.send({ typeUrl: RDS, resourceNames: [...names] });
    }
    this.acked.add(r.typeUrl);
    if (!this.synced && this.acked.size === 4) {
      this.synced = true;
      this.onSynced?.();
    }
  }

  close() {
    this.call.end();
  }
}

function sameSet(a: Set<string>, b: Set<string>) {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}

const clients: SimClient[] = [];
const channels: grpc.Client[] = [];
let address = '';

process.on('message', (msg: { cmd: string; n?: number; address?: string }) => {
  if (msg.cmd === 'connect') {
    address = msg.address ?? address;
    const start = performance.now();
    const target = msg.n ?? 0;
    let synced = clients.filter(c => c.synced).length;
    const done = () => {
      if (++synced === target) process.send?.({ event: 'synced', ms: performance.now() - start });
    };
    for (let i = clients.length; i < target; i++) {
      const conn = Math.floor(i / PER_CONN);
      if (!channels[conn]) {
        // A distinct option per connection keeps grpc-js from sharing one subchannel among all.
        channels[conn] = new Client(address, grpc.credentials.createInsecure(), {
          'sail.bench.connection': conn,
          'grpc.max_receive_message_length': 64 * 1024 * 1024,
        });
      }
      const ip = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
      const c = new SimClient(
        channels[conn],
        `sidecar~${ip}~vm-${i}.default~default.svc.cluster.local`,
      );
      c.onSynced = done;
      clients.push(c);
    }
  } else if (msg.cmd === 'mark') {
    const at = performance.now();
    let left = clients.length;
    for (const c of clients) {
      c.markAt = at;
      c.convergedMs = -1;
      c.onConverged = () => {
        if (--left === 0)
          process.send?.({ event: 'converged', latencies: clients.map(x => x.convergedMs) });
      };
    }
    process.send?.({ event: 'marked' });
    if (process.env.BENCH_DEBUG)
      setTimeout(() => {
        const n = clients.filter(c => c.convergedMs >= 0).length;
        if (n < clients.length)
          console.error(`[clients] ${n}/${clients.length} converged after 5 s`);
      }, 5000).unref();
  } else if (msg.cmd === 'close') {
    for (const c of clients) c.close();
    for (const ch of channels) ch.close();
    process.exit(0);
  }
});
process.send?.({ event: 'ready' });
