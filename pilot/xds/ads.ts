/**
 * The xDS v3 Aggregated Discovery Service: State of the World and Delta on one gRPC service, so
 * our proxy, gRPC's proxyless clients and Envoy can all connect (go-control-plane's server and
 * Istio's pilot/pkg/xds are the models).
 *
 * Protocol rules kept here:
 * - A stream's first request carries the node; identity comes from the client certificate when
 *   the stream is mTLS (see node.ts).
 * - SotW: every response carries a fresh nonce; a request whose `response_nonce` is not the last
 *   nonce sent for its type is stale and only updates nothing; a request with `error_detail` is a
 *   NACK (recorded, logged, counted; the client keeps its previous config and pilot does not
 *   resend the same config); otherwise it ACKs `version_info`. A change of `resource_names`
 *   is a new subscription and is answered.
 * - Delta: subscriptions change by `resource_names_subscribe/unsubscribe`; only resources whose
 *   version differs from what the client has are sent, and `removed_resources` names what went away.
 * - Pushes go CDS → EDS → LDS → RDS on each stream, so a route never names a cluster the client
 *   has not been sent (Istio 0.2's "periodic 404", istio/istio#1038). Unchanged types are not resent.
 */
import * as grpc from '@grpc/grpc-js';
import type * as protobuf from 'protobufjs';
import { envoyType } from '../../api/envoy';
import { peerCertificate, toStatus } from '../../common/grpc';
import type { Logger } from '../../common/logging';
import { prom } from '../../common/metrics';
import { xdsRequestInvalid, xdsUnauthenticated } from '../errors';
import { type EncodedResource, ResourceEncoder } from './encode';
import { proxylessServerAddress } from './generate/listeners';
import { generateNameTable, NAME_TABLE_TYPE, nameTableCacheKey } from './generate/name-table';
import {
  CLUSTER_TYPE,
  ENDPOINT_TYPE,
  type Generator,
  LISTENER_TYPE,
  type ProxyNode,
  PUSH_ORDER,
  type PushContext,
  type PushRequest,
  TYPE_SHORT_NAMES,
} from './model';
import { type PeerIdentity, peerIdentity, proxyNodeFrom, type WireNode } from './node';

const ADS_SERVICE = 'envoy.service.discovery.v3.AggregatedDiscoveryService';
const CONTROL_PLANE_ID = 'sail-pilot';
/** Connections pushed between two yields to the event loop, so ACKs and new streams are served during a big push. */
const PUSH_BATCH = 64;

/**
 * Every type served: Envoy's four in push order, then Sail's name table for node agents' DNS
 * (docs/dns.md), which is generated here rather than by the Envoy generator.
 */
const ADS_TYPES = [...PUSH_ORDER, NAME_TABLE_TYPE] as const;
type AdsType = (typeof ADS_TYPES)[number];
const SHORT_NAMES: Readonly<Record<AdsType, string>> = {
  ...TYPE_SHORT_NAMES,
  [NAME_TABLE_TYPE]: 'nametable',
};

const isXdsType = (t: string): t is AdsType => (ADS_TYPES as readonly string[]).includes(t);

/** A NACK, as shown by `sail proxy-config`. */
export interface NackInfo {
  readonly version: string;
  readonly nonce: string;
  readonly message: string;
  readonly at: string;
}

/** What one stream was sent and ACKed for one type. */
interface Watch {
  readonly type: AdsType;
  /** SotW: the names of the last request; Delta: the subscribed names. Empty + wildcard = all. */
  names: Set<string>;
  wildcard: boolean;
  /** SotW: version_info of the last response; Delta: system_version_info. */
  versionSent?: string;
  nonceSent?: string;
  versionAcked?: string;
  nonceAcked?: string;
  nack?: NackInfo;
  /** Delta: name → what the client was last sent (and has, unless it NACKed). */
  sent: Map<string, EncodedResource>;
  /** SotW: the resources of the last response (shared between streams; never mutated). */
  sentList?: readonly EncodedResource[];
  /** Fingerprint of the last SotW response, to skip identical resends. */
  fingerprint?: string;
  /** The shared result the last SotW response came from. */
  generated?: Generated;
  /** Delta: subscribed names already reported as missing. */
  reportedMissing: Set<string>;
  /** When the last response was sent (ms since epoch), for convergence metrics. */
  sentAt?: number;
}

interface Connection {
  readonly id: string;
  readonly delta: boolean;
  readonly peerAddress: string;
  readonly connectedAt: Date;
  readonly peer: PeerIdentity | undefined;
  node?: ProxyNode;
  readonly watches: Map<AdsType, Watch>;
  nonce: number;
  readonly write: (msg: object) => void;
  closed: boolean;
  /** Push version of the last push applied to this connection. */
  pushVersion?: string;
  /** Proxyless: the ports it serves with gRPC's XdsServer, as last reported (sorted, joined). */
  serverPorts?: string;
}

/** What `sail proxy-config` shows for one connection. */
export interface ConnectionInfo {
  readonly connectionId: string;
  readonly nodeId: string;
  readonly node: string;
  readonly namespace: string;
  readonly type: ProxyNode['type'];
  readonly spiffeId?: string;
  readonly peerAddress: string;
  readonly connectedAt: string;
  readonly protocol: 'sotw' | 'delta';
  readonly resources: Record<
    string,
    {
      readonly subscribed: string[] | '*';
      readonly versionSent?: string;
      readonly versionAcked?: string;
      readonly nonceSent?: string;
      readonly nack?: NackInfo;
      readonly resources: Readonly<Record<string, unknown>>[];
    }
  >;
}

export interface XdsServerOptions {
  readonly logger: Logger;
  readonly generator: Generator;
  readonly trustDomain: string;
  readonly metrics: prom.Registry;
  /** Labels of a node's registered workload, if any. */
  readonly labelsOf?: (node: string, namespace: string) => Record<string, string> | undefined;
  /** Called when a stream closes (registration may want to know). */
  readonly onDisconnect?: (node: ProxyNode) => void;
  /**
   * Called when the ports a proxyless stream serves with gRPC's XdsServer change: the ports of
   * the `xds.istio.io/grpc/lds/inbound/HOST:PORT` listeners it subscribes to, sorted; `[]` when it
   * stops or the stream closes. `connection` tells apart several streams of one node.
   */
  readonly onProxylessServerPorts?: (
    connection: string,
    node: ProxyNode,
    ports: readonly number[],
  ) => void;
}

class XdsMetrics {
  readonly connected: prom.Gauge;
  readonly pushes: prom.Counter<'type'>;
  readonly pushErrors: prom.Counter<'type'>;
  readonly rejects: prom.Counter<'type'>;
  readonly pushTime: prom.Histogram;
  readonly convergence: prom.Histogram;
  constructor(registry: prom.Registry, count: () => number) {
    this.connected = new prom.Gauge({
      name: 'pilot_xds',
      help: 'Connected xDS clients',
      registers: [registry],
      collect() {
        this.set(count());
      },
    });
    this.pushes = new prom.Counter({
      name: 'pilot_xds_pushes',
      help: 'xDS responses sent, by type (cds, eds, lds, rds)',
      labelNames: ['type'],
      registers: [registry],
    });
    this.pushErrors = new prom.Counter({
      name: 'pilot_xds_push_errors',
      help: 'Responses that could not be generated or encoded, by type',
      labelNames: ['type'],
      registers: [registry],
    });
    this.rejects = new prom.Counter({
      name: 'pilot_xds_rejects',
      help: 'Responses clients rejected (NACKs), by type; details in the log and sail proxy-config',
      labelNames: ['type'],
      registers: [registry],
    });
    this.pushTime = new prom.Histogram({
      name: 'pilot_xds_push_time',
      help: 'Seconds to push one configuration change to every connected client',
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10],
      registers: [registry],
    });
    this.convergence = new prom.Histogram({
      name: 'pilot_proxy_convergence_time',
      help: 'Seconds from a response being sent to the client ACKing it',
      buckets: [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5],
      registers: [registry],
    });
  }
}

const shortType = (t: string) => SHORT_NAMES[t as AdsType]?.slice(0, 1) ?? '?';
const metricType = (t: AdsType) => `${shortType(t)}ds`;

export class XdsServer {
  private readonly log: Logger;
  private readonly encoder = new ResourceEncoder();
  private readonly connections = new Map<string, Connection>();
  private readonly metrics: XdsMetrics;
  private nextConnectionId = 1;
  private context: PushContext | undefined;
  private pending: PushRequest | undefined;
  private pushing = false;
  private readonly types: {
    request: protobuf.Type;
    response: protobuf.Type;
    deltaRequest: protobuf.Type;
    deltaResponse: protobuf.Type;
  };

  constructor(private readonly opts: XdsServerOptions) {
    this.log = opts.logger.child({ component: 'xds' });
    this.metrics = new XdsMetrics(opts.metrics, () => this.connections.size);
    this.types = {
      request: envoyType('envoy.service.discovery.v3.DiscoveryRequest'),
      response: envoyType('envoy.service.discovery.v3.DiscoveryResponse'),
      deltaRequest: envoyType('envoy.service.discovery.v3.DeltaDiscoveryRequest'),
      deltaResponse: envoyType('envoy.service.discovery.v3.DeltaDiscoveryResponse'),
    };
  }

  /** The push context new streams are answered from; undefined until pilot is ready. */
  get currentContext(): PushContext | undefined {
    return this.context;
  }

  /** Number of connected streams. */
  get connectionCount(): number {
    return this.connections.size;
  }

  /**
   * Adds the ADS service to a gRPC server. `secure`: the server's port is mTLS and every stream
   * must present a mesh certificate (grpc-js cannot tell "TLS without a client certificate" from
   * plaintext per call, so the mTLS and plaintext listeners are separate servers).
   */
  addTo(server: grpc.Server, secure: boolean): void {
    const { request, response, deltaRequest, deltaResponse } = this.types;
    const conv = { defaults: false, enums: String, longs: String, arrays: true };
    const definition: grpc.ServiceDefinition = {
      StreamAggregatedResources: {
        path: `/${ADS_SERVICE}/StreamAggregatedResources`,
        requestStream: true,
        responseStream: true,
        requestSerialize: (m: object) => Buffer.from(request.encode(m).finish()),
        requestDeserialize: (b: Buffer) => request.toObject(request.decode(b), conv),
        responseSerialize: (m: object) =>
          Buffer.isBuffer(m) ? m : Buffer.from(response.encode(m).finish()),
        responseDeserialize: (b: Buffer) => response.toObject(response.decode(b), conv),
      },
      DeltaAggregatedResources: {
        path: `/${ADS_SERVICE}/DeltaAggregatedResources`,
        requestStream: true,
        responseStream: true,
        requestSerialize: (m: object) => Buffer.from(deltaRequest.encode(m).finish()),
        requestDeserialize: (b: Buffer) => deltaRequest.toObject(deltaRequest.decode(b), conv),
        responseSerialize: (m: object) => Buffer.from(deltaResponse.encode(m).finish()),
        responseDeserialize: (b: Buffer) => deltaResponse.toObject(deltaResponse.decode(b), conv),
      },
    };
    server.addService(definition, {
      StreamAggregatedResources: (call: grpc.ServerDuplexStream<SotwRequest, object>) => {
        this.stream(call, false, secure);
      },
      DeltaAggregatedResources: (call: grpc.ServerDuplexStream<DeltaRequest, object>) => {
        this.stream(call, true, secure);
      },
    });
  }

  /**
   * Pushes a new context to every stream. Pushes arriving while one runs are merged and follow
   * it; each stream always ends on the newest context.
   */
  push(context: PushContext, request: PushRequest): void {
    this.context = context;
    this.pending = this.pending ? mergeRequests(this.pending, request) : request;
    if (!this.pushing)
      this.drainPushes().catch((err: unknown) => {
        this.log.error({ err }, 'xDS push failed');
      });
  }

  /** Resolves when no push is in progress (tests, benchmarks). */
  async idle(): Promise<void> {
    while (this.pushing) await new Promise(resolve => setImmediate(resolve));
  }

  private async drainPushes(): Promise<void> {
    this.pushing = true;
    try {
      while (this.pending && this.context) {
        const request = this.pending;
        const context = this.context;
        this.pending = undefined;
        const started = process.hrtime.bigint();
        let n = 0;
        for (const con of [...this.connections.values()]) {
          if (con.closed || !con.node) continue;
          this.pushConnection(con, context, request);
          if (++n % PUSH_BATCH === 0) await new Promise(resolve => setImmediate(resolve));
        }
        const seconds = Number(process.hrtime.bigint() - started) / 1e9;
        this.metrics.pushTime.observe(seconds);
        this.log.debug(
          { version: context.version, full: request.full, clients: n, seconds },
          'Pushed configuration',
        );
      }
    } finally {
      this.pushing = false;
    }
  }

  /** Per connection, for `sail proxy-config`: optionally only those of one node (name or node id). */
  connectionsInfo(node?: string): ConnectionInfo[] {
    const out: ConnectionInfo[] = [];
    for (const con of this.connections.values()) {
      const n = con.node;
      if (!n) continue;
      if (node !== undefined && n.identity.node !== node && n.id !== node) continue;
      const resources: ConnectionInfo['resources'] = {};
      for (const type of ADS_TYPES) {
        const w = con.watches.get(type);
        if (!w) continue;
        resources[SHORT_NAMES[type]] = {
          subscribed: w.wildcard ? '*' : [...w.names].sort(),
          ...(w.versionSent !== undefined ? { versionSent: w.versionSent } : {}),
          ...(w.versionAcked !== undefined ? { versionAcked: w.versionAcked } : {}),
          ...(w.nonceSent !== undefined ? { nonceSent: w.nonceSent } : {}),
          ...(w.nack ? { nack: w.nack } : {}),
          resources: (con.delta ? [...w.sent.values()] : (w.sentList ?? [])).map(r => r.resource),
        };
      }
      out.push({
        connectionId: con.id,
        nodeId: n.id,
        node: n.identity.node,
        namespace: n.identity.namespace,
        type: n.type,
        ...(n.spiffeId ? { spiffeId: n.spiffeId } : {}),
        peerAddress: con.peerAddress,
        connectedAt: con.connectedAt.toISOString(),
        protocol: con.delta ? 'delta' : 'sotw',
        resources,
      });
    }
    return out;
  }

  /** Ends every stream (pilot shutdown); clients reconnect with backoff. */
  closeAll(): void {
    for (const con of this.connections.values()) con.closed = true;
    this.connections.clear();
  }

  // -------------------------------------------------------------------------------------------

  private stream(
    call: grpc.ServerDuplexStream<SotwRequest | DeltaRequest, object>,
    delta: boolean,
    secure: boolean,
  ) {
    const method = delta ? 'DeltaAggregatedResources' : 'StreamAggregatedResources';
    let peer: PeerIdentity | undefined;
    try {
      if (secure) {
        const der = peerCertificate(call);
        if (!der) throw xdsUnauthenticated('no valid client certificate: the xDS port needs mTLS');
        peer = peerIdentity(der, this.opts.trustDomain);
      }
    } catch (err) {
      // grpc-js listens for 'error' only once the handler has returned.
      const status = toStatus(err, this.log, method);
      setImmediate(() => call.emit('error', status));
      return;
    }
    const con: Connection = {
      id: `${this.nextConnectionId++}`,
      delta,
      peerAddress: call.getPeer(),
      connectedAt: new Date(),
      peer,
      watches: new Map(),
      nonce: 0,
      closed: false,
      write: msg => {
        if (!con.closed) call.write(msg);
      },
    };
    const fail = (err: unknown) => {
      if (con.closed) return;
      this.close(con, err instanceof Error ? err.message : String(err));
      call.emit('error', toStatus(err, this.log, method));
    };
    call.on('data', (req: SotwRequest | DeltaRequest) => {
      try {
        if (delta) this.onDeltaRequest(con, req as DeltaRequest);
        else this.onSotwRequest(con, req as SotwRequest);
      } catch (err) {
        fail(err);
      }
    });
    call.on('end', () => {
      this.close(con, 'the client ended the stream');
      call.end();
    });
    call.on('error', (err: Error) => this.close(con, err.message));
    call.on('cancelled', () => this.close(con, 'cancelled'));
  }

  private close(con: Connection, reason?: string): void {
    if (con.closed) return;
    con.closed = true;
    if (con.serverPorts && con.node) this.opts.onProxylessServerPorts?.(con.id, con.node, []);
    if (this.connections.delete(con.id) && con.node) {
      this.log.info(
        { connection: con.id, nodeId: con.node.id, node: con.node.identity.node, reason },
        'xDS client disconnected',
      );
      this.opts.onDisconnect?.(con.node);
    }
  }

  private identify(con: Connection, node: WireNode | null | undefined): ProxyNode {
    if (con.node) return con.node;
    const proxy = proxyNodeFrom(node, con.peer, this.opts.labelsOf ?? (() => undefined));
    con.node = proxy;
    this.connections.set(con.id, con);
    this.log.info(
      {
        connection: con.id,
        nodeId: proxy.id,
        node: proxy.identity.node,
        namespace: proxy.identity.namespace,
        type: proxy.type,
        spiffeId: proxy.spiffeId,
        peer: con.peerAddress,
        protocol: con.delta ? 'delta' : 'sotw',
      },
      'xDS client connected',
    );
    return proxy;
  }

  private watch(con: Connection, type: AdsType): Watch {
    let w = con.watches.get(type);
    if (!w) {
      w = { type, names: new Set(), wildcard: false, sent: new Map(), reportedMissing: new Set() };
      con.watches.set(type, w);
    }
    return w;
  }

  private onSotwRequest(con: Connection, req: SotwRequest): void {
    const proxy = this.identify(con, req.node);
    const type = req.typeUrl ?? '';
    if (!isXdsType(type)) throw xdsRequestInvalid(`unknown type_url ${JSON.stringify(type)}`);
    const names = req.resourceNames ?? [];
    const existing = con.watches.get(type);
    const w = this.watch(con, type);
    const nonce = req.responseNonce ?? '';
    if (nonce !== '') {
      if (nonce !== w.nonceSent) {
        // Stale: an answer to a response the client has since been sent a newer one of.
        this.log.debug({ connection: con.id, type, nonce }, 'Ignoring stale xDS request');
        return;
      }
      if (req.errorDetail)
        this.recordNack(con, proxy, w, req.versionInfo ?? '', nonce, req.errorDetail);
      else this.recordAck(w, req.versionInfo ?? '', nonce);
    }
    const newNames = new Set(names);
    // Listeners and clusters with no names are a wildcard subscription (SotW legacy wildcard).
    const wildcard =
      (names.length === 0 && type !== ENDPOINT_TYPE && type !== PUSH_ORDER[3]) || newNames.has('*');
    newNames.delete('*');
    const namesChanged = !sameSet(newNames, w.names);
    const changed = !existing || wildcard !== w.wildcard || namesChanged || nonce === '';
    // Keep the same set while unchanged: namesKey() caches by set identity.
    if (namesChanged) {
      w.names = newNames;
      if (type === LISTENER_TYPE) this.noteServerPorts(con, proxy, newNames);
    }
    w.wildcard = wildcard;
    if (!changed) return;
    if (!this.context) return; // answered at the first push
    this.respondSotw(con, proxy, w, this.context, true);
  }

  private onDeltaRequest(con: Connection, req: DeltaRequest): void {
    const proxy = this.identify(con, req.node);
    const type = req.typeUrl ?? '';
    if (!isXdsType(type)) throw xdsRequestInvalid(`unknown type_url ${JSON.stringify(type)}`);
    const existing = con.watches.get(type);
    const w = this.watch(con, type);
    const nonce = req.responseNonce ?? '';
    if (nonce !== '') {
      if (nonce === w.nonceSent) {
        if (req.errorDetail)
          this.recordNack(con, proxy, w, w.versionSent ?? '', nonce, req.errorDetail);
        else this.recordAck(w, w.versionSent ?? '', nonce);
      }
    }
    const subscribe = req.resourceNamesSubscribe ?? [];
    const unsubscribe = req.resourceNamesUnsubscribe ?? [];
    let changed = false;
    if (!existing) {
      // First request of a type: a wildcard when it names nothing (LDS/CDS) or names `*`.
      w.wildcard =
        (subscribe.length === 0 && type !== ENDPOINT_TYPE && type !== PUSH_ORDER[3]) ||
        subscribe.includes('*');
      // The client already has these (reconnect): do not resend what is unchanged.
      for (const [name, version] of Object.entries(req.initialResourceVersions ?? {})) {
        w.sent.set(name, { name, version, typeUrl: type, value: Buffer.alloc(0), resource: {} });
      }
      changed = true;
    }
    // A new set on every change: namesKey() caches by set identity.
    const names = new Set(w.names);
    for (const n of subscribe) {
      if (n === '*') {
        if (!w.wildcard) changed = true;
        w.wildcard = true;
      } else if (!names.has(n)) {
        names.add(n);
        changed = true;
      }
    }
    for (const n of unsubscribe) {
      if (n === '*') {
        if (w.wildcard) changed = true;
        w.wildcard = false;
      } else if (names.delete(n)) {
        w.sent.delete(n);
        w.reportedMissing.delete(n);
        changed = true;
      }
    }
    w.names = names;
    if (!changed) return;
    if (type === LISTENER_TYPE) this.noteServerPorts(con, proxy, names);
    if (!this.context) return;
    this.respondDelta(con, proxy, w, this.context);
  }

  /** Reports a proxyless stream's XdsServer ports when its listener names change them. */
  private noteServerPorts(con: Connection, proxy: ProxyNode, names: ReadonlySet<string>): void {
    // Only an authenticated stream speaks for its node: a plaintext one's node id is a claim.
    if (proxy.type !== 'proxyless' || !con.peer || !this.opts.onProxylessServerPorts) return;
    const ports = new Set<number>();
    for (const n of names) {
      const port = proxylessServerAddress(n)?.port;
      if (port !== undefined) ports.add(port);
    }
    const sorted = [...ports].sort((a, b) => a - b);
    const key = sorted.join(',');
    if (key === (con.serverPorts ?? '')) return;
    con.serverPorts = key;
    this.opts.onProxylessServerPorts(con.id, proxy, sorted);
  }

  private recordAck(w: Watch, version: string, nonce: string): void {
    w.versionAcked = version;
    w.nonceAcked = nonce;
    delete w.nack;
    if (w.sentAt !== undefined) {
      this.metrics.convergence.observe((Date.now() - w.sentAt) / 1000);
      delete w.sentAt;
    }
  }

  private recordNack(
    con: Connection,
    proxy: ProxyNode,
    w: Watch,
    version: string,
    nonce: string,
    detail: { code?: number; message?: string },
  ): void {
    const message = detail.message ?? `error code ${detail.code ?? '?'}`;
    w.nack = { version, nonce, message, at: new Date().toISOString() };
    delete w.sentAt;
    this.metrics.rejects.inc({ type: metricType(w.type) });
    this.log.warn(
      {
        connection: con.id,
        nodeId: proxy.id,
        node: proxy.identity.node,
        type: SHORT_NAMES[w.type],
        version,
        reason: message,
      },
      'xDS client rejected configuration (NACK); it keeps its previous one',
    );
  }

  private pushConnection(con: Connection, context: PushContext, request: PushRequest): void {
    const proxy = con.node!;
    con.pushVersion = context.version;
    for (const type of ADS_TYPES) {
      const w = con.watches.get(type);
      if (!w) continue;
      // The name table lists endpoint IPs (services without VIPs), so endpoint pushes reach it
      // too; so do a proxyless client's clusters, whose auto mTLS depends on the endpoints.
      if (
        !request.full &&
        request.kinds.size === 0 &&
        type !== ENDPOINT_TYPE &&
        type !== NAME_TABLE_TYPE &&
        !(type === CLUSTER_TYPE && proxy.type === 'proxyless')
      )
        continue;
      try {
        if (con.delta) this.respondDelta(con, proxy, w, context);
        else this.respondSotw(con, proxy, w, context, false);
      } catch (err) {
        this.pushError(con, w, err);
      }
      if (con.closed) return;
    }
  }

  private pushError(con: Connection, w: Watch, err: unknown): void {
    this.metrics.pushErrors.inc({ type: metricType(w.type) });
    this.log.error(
      { err, connection: con.id, nodeId: con.node?.id, type: SHORT_NAMES[w.type] },
      'Cannot generate xDS resources',
    );
  }

  /**
   * The encoded resources of a watch, shared (with their fingerprint and serialized SotW body)
   * by every stream whose generator cache key and names are the same in this push.
   */
  private generate(proxy: ProxyNode, w: Watch, context: PushContext): Generated {
    if (!w.wildcard && w.names.size === 0) return EMPTY_GENERATED;
    const nds = w.type === NAME_TABLE_TYPE;
    const key = nds
      ? nameTableCacheKey(proxy, context)
      : this.opts.generator.cacheKey?.(w.type, proxy, context);
    const memoKey =
      key === undefined
        ? undefined
        : `ads|${w.type}|${key}|${w.wildcard ? '*' : namesKey(w.names)}`;
    if (memoKey !== undefined) {
      const hit = context.cache.get(memoKey) as Generated | undefined;
      if (hit) return hit;
    }
    const names = w.wildcard ? [] : [...w.names];
    const generated = nds
      ? generateNameTable(proxy, context, names)
      : this.opts.generator.generate(w.type, proxy, context, names);
    const resources = generated.map(g => this.encoder.encode(w.type, g));
    const result: Generated = {
      resources,
      fingerprint: resources.map(r => `${r.name}@${r.version}`).join(','),
    };
    if (memoKey !== undefined) context.cache.set(memoKey, result);
    return result;
  }

  /** A SotW response without its nonce, serialized once per shared result and version. */
  private sotwBody(g: Generated, type: AdsType, version: string): Buffer {
    if (g.body?.version === version) return g.body.bytes;
    const bytes = Buffer.from(
      this.types.response
        .encode({
          versionInfo: version,
          // google.protobuf.Any keeps its proto field names in protobufjs (type_url).
          resources: g.resources.map(r => ({ type_url: r.typeUrl, value: r.value })),
          typeUrl: type,
          controlPlane: { identifier: CONTROL_PLANE_ID },
        })
        .finish(),
    );
    if (g !== EMPTY_GENERATED) g.body = { version, bytes };
    return bytes;
  }

  private respondSotw(
    con: Connection,
    proxy: ProxyNode,
    w: Watch,
    context: PushContext,
    force: boolean,
  ): void {
    let g: Generated;
    try {
      g = this.generate(proxy, w, context);
    } catch (err) {
      this.pushError(con, w, err);
      return;
    }
    if (!force && (g === w.generated || g.fingerprint === w.fingerprint)) return;
    w.generated = g;
    w.fingerprint = g.fingerprint;
    w.sentList = g.resources;
    const nonce = `${++con.nonce}`;
    w.nonceSent = nonce;
    w.versionSent = context.version;
    w.sentAt = Date.now();
    this.metrics.pushes.inc({ type: metricType(w.type) });
    // Protobuf fields may come in any order: the shared body, then this stream's nonce (field 5).
    con.write(Buffer.concat([this.sotwBody(g, w.type, context.version), nonceField(nonce)]));
  }

  private respondDelta(con: Connection, proxy: ProxyNode, w: Watch, context: PushContext): void {
    let resources: readonly EncodedResource[];
    try {
      resources = this.generate(proxy, w, context).resources;
    } catch (err) {
      this.pushError(con, w, err);
      return;
    }
    const now = new Map(resources.map(r => [r.name, r]));
    const changed = resources.filter(r => w.sent.get(r.name)?.version !== r.version);
    const removed: string[] = [];
    for (const name of w.sent.keys()) if (!now.has(name)) removed.push(name);
    // Subscribed names that do not exist are reported once as removed, so clients stop waiting.
    for (const name of w.names) {
      if (!now.has(name) && !w.sent.has(name) && !w.reportedMissing.has(name)) removed.push(name);
    }
    const first = w.nonceSent === undefined;
    if (changed.length === 0 && removed.length === 0 && !first) return;
    for (const name of removed) {
      w.sent.delete(name);
      if (w.names.has(name)) w.reportedMissing.add(name);
    }
    for (const r of changed) {
      w.sent.set(r.name, r);
      w.reportedMissing.delete(r.name);
    }
    const nonce = `${++con.nonce}`;
    w.nonceSent = nonce;
    w.versionSent = context.version;
    w.sentAt = Date.now();
    this.metrics.pushes.inc({ type: metricType(w.type) });
    con.write({
      systemVersionInfo: context.version,
      resources: changed.map(r => ({
        name: r.name,
        version: r.version,
        resource: { type_url: r.typeUrl, value: r.value },
      })),
      typeUrl: w.type,
      removedResources: removed,
      nonce,
      controlPlane: { identifier: CONTROL_PLANE_ID },
    });
  }
}

/** A DiscoveryRequest as protobufjs decodes it. */
interface SotwRequest {
  versionInfo?: string;
  node?: WireNode | null;
  resourceNames?: string[];
  typeUrl?: string;
  responseNonce?: string;
  errorDetail?: { code?: number; message?: string } | null;
}

/** A DeltaDiscoveryRequest as protobufjs decodes it. */
interface DeltaRequest {
  node?: WireNode | null;
  typeUrl?: string;
  resourceNamesSubscribe?: string[];
  resourceNamesUnsubscribe?: string[];
  initialResourceVersions?: Record<string, string>;
  responseNonce?: string;
  errorDetail?: { code?: number; message?: string } | null;
}

/** One watch's generated resources, shared between streams within a push. */
interface Generated {
  readonly resources: readonly EncodedResource[];
  readonly fingerprint: string;
  body?: { version: string; bytes: Buffer };
}

const EMPTY_GENERATED: Generated = { resources: [], fingerprint: '' };

const namesKeys = new WeakMap<ReadonlySet<string>, string>();
/** Interned name lists: equal subscriptions get the same short id, so memo keys stay short. */
const namesIds = new Map<string, string>();
let nextNamesId = 0;

/**
 * A short canonical key for a set of subscribed names, cached by set identity (a watch's set is
 * replaced, never mutated, when its subscription changes).
 */
function namesKey(names: ReadonlySet<string>): string {
  let k = namesKeys.get(names);
  if (k === undefined) {
    const canonical = [...names].sort().join('\n');
    k = namesIds.get(canonical);
    if (k === undefined) {
      k = `n${nextNamesId++}`;
      // Bounded: a pathological client cannot grow it without limit; old ids just stop sharing.
      if (namesIds.size >= 100_000) namesIds.clear();
      namesIds.set(canonical, k);
    }
    namesKeys.set(names, k);
  }
  return k;
}

/** The encoded `nonce` field (5, length-delimited) of a DiscoveryResponse. */
function nonceField(nonce: string): Buffer {
  const bytes = Buffer.from(nonce, 'utf8');
  // Nonces are short decimal counters: the length fits one varint byte.
  return Buffer.concat([Buffer.from([(5 << 3) | 2, bytes.length]), bytes]);
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}

export function mergeRequests(a: PushRequest, b: PushRequest): PushRequest {
  return {
    full: a.full || b.full,
    kinds: new Set([...a.kinds, ...b.kinds]),
    endpointHosts: new Set([...a.endpointHosts, ...b.endpointHosts]),
  };
}
