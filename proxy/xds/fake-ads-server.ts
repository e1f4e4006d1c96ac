/**
 * A small ADS State-of-the-World server for the XdsClient's unit tests (test-only; a fake of pilot
 * at the gRPC seam, since a component's tests may not import pilot). Real grpc-js on 127.0.0.1,
 * resources encoded with the real Envoy protos. It behaves like pilot where the client can tell:
 * a fresh nonce per response, stale requests ignored, a request with a new name set or no nonce
 * answered, wildcard clusters and listeners, named endpoints and routes; and it records every
 * request so tests can check ACKs, NACKs and subscriptions.
 * @internal
 */
import * as grpc from '@grpc/grpc-js';
import { envoyType } from '../../api/envoy';
import type { XdsKind } from '../model';
import { adsMethodDefinition } from './ads-stream';
import { isWildcardKind, kindOfTypeUrl, TYPE_URLS } from './resources';

/** One request the server received, decoded. */
export interface ReceivedRequest {
  /** Which stream (1, 2, … in the order they opened). */
  readonly stream: number;
  readonly kind: XdsKind | undefined;
  readonly typeUrl: string;
  readonly versionInfo: string;
  readonly responseNonce: string;
  readonly resourceNames: readonly string[];
  readonly errorDetail?: { readonly code: number; readonly message: string };
  readonly node?: Record<string, unknown>;
}

interface Watch {
  /** Undefined: wildcard. */
  names: ReadonlySet<string> | undefined;
  nonceSent: string;
}

interface FakeStream {
  readonly id: number;
  readonly call: grpc.ServerDuplexStream<ReceivedRequest, object>;
  readonly watches: Map<XdsKind, Watch>;
}

const nameOf = (kind: XdsKind, r: Record<string, unknown>) =>
  String(kind === 'endpoints' ? r.clusterName : r.name);

/** The fake server. Resources are JSON as in proxy/testdata (protobufjs `fromObject` input). */
export class FakeAdsServer {
  /** Every request received, oldest first. */
  readonly requests: ReceivedRequest[] = [];
  /** Kinds the server does not answer at all. */
  readonly silent = new Set<XdsKind>();
  /** Streams opened so far. */
  streamsOpened = 0;
  private readonly tables: Record<XdsKind, Map<string, Record<string, unknown>>> = {
    clusters: new Map(),
    endpoints: new Map(),
    listeners: new Map(),
    routes: new Map(),
  };
  private readonly versions: Record<XdsKind, number> = {
    clusters: 0,
    endpoints: 0,
    listeners: 0,
    routes: 0,
  };
  /** Resources sent as given (already encoded), to feed the client bytes it cannot decode. */
  private readonly rawExtra: Partial<Record<XdsKind, { type_url: string; value: Uint8Array }[]>> =
    {};
  private readonly streams = new Set<FakeStream>();
  private server: grpc.Server | undefined;
  private port = 0;
  private nonce = 0;

  /** `127.0.0.1:PORT` (after the first start). */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Streams open now. */
  get openStreams(): number {
    return this.streams.size;
  }

  /** Replaces every resource of `kind` and pushes the new version to subscribers. */
  set(kind: XdsKind, resources: readonly Record<string, unknown>[]): void {
    const table = this.tables[kind];
    table.clear();
    for (const r of resources) table.set(nameOf(kind, r), r);
    this.bump(kind);
  }

  /** Adds or replaces resources of `kind` (by name) and pushes. */
  put(kind: XdsKind, ...resources: Record<string, unknown>[]): void {
    for (const r of resources) this.tables[kind].set(nameOf(kind, r), r);
    this.bump(kind);
  }

  /** Removes resources of `kind` by name and pushes. */
  remove(kind: XdsKind, ...names: string[]): void {
    for (const n of names) this.tables[kind].delete(n);
    this.bump(kind);
  }

  /** Sends `extra` (raw Anys) along with the next responses of `kind` until cleared with `[]`. */
  setRawExtra(kind: XdsKind, extra: { type_url: string; value: Uint8Array }[]): void {
    this.rawExtra[kind] = extra;
    this.bump(kind);
  }

  /** The current version of `kind` as sent in `version_info`. */
  version(kind: XdsKind): string {
    return String(this.versions[kind]);
  }

  /** Requests of `kind` (optionally of one stream). */
  requestsOf(kind: XdsKind, stream?: number): ReceivedRequest[] {
    return this.requests.filter(
      r => r.kind === kind && (stream === undefined || r.stream === stream),
    );
  }

  async start(credentials = grpc.ServerCredentials.createInsecure()): Promise<string> {
    if (this.server) throw new Error('fake ADS server already started');
    const server = new grpc.Server();
    server.addService(
      { StreamAggregatedResources: adsMethodDefinition('StreamAggregatedResources') },
      {
        StreamAggregatedResources: (call: grpc.ServerDuplexStream<ReceivedRequest, object>) =>
          this.onStream(call),
      },
    );
    this.port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(`127.0.0.1:${this.port}`, credentials, (err, p) =>
        err ? reject(err) : resolve(p),
      );
    });
    this.server = server;
    return this.address;
  }

  /** Stops at once, cutting streams (as when pilot dies). Idempotent. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.streams.clear();
    if (!server) return;
    server.forceShutdown();
    await new Promise<void>(resolve => server.tryShutdown(() => resolve()));
  }

  private bump(kind: XdsKind): void {
    this.versions[kind]++;
    for (const s of this.streams) {
      const w = s.watches.get(kind);
      if (w) this.respond(s, kind, w);
    }
  }

  private onStream(call: grpc.ServerDuplexStream<ReceivedRequest, object>): void {
    const stream: FakeStream = { id: ++this.streamsOpened, call, watches: new Map() };
    this.streams.add(stream);
    const drop = () => this.streams.delete(stream);
    call.on('data', (req: ReceivedRequest) => this.onRequest(stream, req));
    call.on('end', () => {
      drop();
      call.end();
    });
    call.on('error', drop);
    call.on('cancelled', drop);
  }

  private onRequest(stream: FakeStream, req: ReceivedRequest): void {
    const kind = kindOfTypeUrl(req.typeUrl);
    const errorDetail = (req as { errorDetail?: { code: number; message: string } | null })
      .errorDetail;
    this.requests.push({
      stream: stream.id,
      kind,
      typeUrl: req.typeUrl,
      versionInfo: req.versionInfo,
      responseNonce: req.responseNonce,
      resourceNames: req.resourceNames,
      ...(errorDetail
        ? { errorDetail: { code: errorDetail.code, message: errorDetail.message } }
        : {}),
      ...(req.node ? { node: req.node } : {}),
    });
    if (!kind) return;
    const existing = stream.watches.get(kind);
    if (req.responseNonce !== '' && existing && req.responseNonce !== existing.nonceSent) return;
    const names =
      isWildcardKind(kind) && req.resourceNames.length === 0
        ? undefined
        : new Set(req.resourceNames);
    const namesChanged =
      !existing ||
      (names === undefined) !== (existing.names === undefined) ||
      (names !== undefined &&
        (names.size !== existing.names!.size || [...names].some(n => !existing.names!.has(n))));
    const w: Watch = existing ?? { names, nonceSent: '' };
    w.names = names;
    stream.watches.set(kind, w);
    if (namesChanged || req.responseNonce === '') this.respond(stream, kind, w);
  }

  private respond(stream: FakeStream, kind: XdsKind, w: Watch): void {
    if (this.silent.has(kind)) return;
    const type = envoyType(TYPE_URLS[kind].slice(TYPE_URLS[kind].lastIndexOf('/') + 1));
    const resources = [...this.tables[kind]]
      .filter(([name]) => w.names === undefined || w.names.has(name))
      .map(([, r]) => ({
        type_url: TYPE_URLS[kind],
        value: type.encode(type.fromObject(r)).finish(),
      }));
    resources.push(...(this.rawExtra[kind] ?? []));
    w.nonceSent = String(++this.nonce);
    stream.call.write({
      versionInfo: String(this.versions[kind]),
      typeUrl: TYPE_URLS[kind],
      nonce: w.nonceSent,
      resources,
    });
  }
}
