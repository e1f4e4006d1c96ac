/**
 * A minimal raw ADS client for protocol tests and the xDS benchmark: it sends exactly the
 * requests a test asks for (no automatic ACKs unless told), and decodes responses with the real
 * Envoy protos. Not a model client: gRPC's own xDS client is the independent peer in conformance tests.
 */
import * as grpc from '@grpc/grpc-js';
import { ENVOY_JSON_OPTIONS, envoyType, jsonToStruct } from '../../api/envoy';
import { ADS_SERVICE, adsMethodDefinition } from '../../proxy/xds/ads-stream';

export interface DecodedResponse {
  versionInfo: string;
  nonce: string;
  typeUrl: string;
  /** Decoded resources (JSON as in a config dump). */
  resources: Record<string, unknown>[];
}

export interface DecodedDeltaResponse {
  systemVersionInfo: string;
  nonce: string;
  typeUrl: string;
  resources: { name: string; version: string; resource: Record<string, unknown> }[];
  removedResources: string[];
}

function adsClientConstructor() {
  return grpc.makeGenericClientConstructor(
    {
      StreamAggregatedResources: adsMethodDefinition('StreamAggregatedResources'),
      DeltaAggregatedResources: adsMethodDefinition('DeltaAggregatedResources'),
    },
    ADS_SERVICE,
  );
}

let ctor: ReturnType<typeof adsClientConstructor> | undefined;

/** Decodes one Any (type URL + bytes) to JSON. */
export function decodeAny(any: { type_url: string; value: Uint8Array }): Record<string, unknown> {
  const type = envoyType(any.type_url.slice(any.type_url.lastIndexOf('/') + 1));
  return type.toObject(type.decode(any.value), ENVOY_JSON_OPTIONS);
}

export interface NodeSpec {
  id: string;
  metadata?: Record<string, unknown>;
}

function wireNode(node: NodeSpec) {
  return {
    id: node.id,
    cluster: 'test',
    ...(node.metadata ? { metadata: jsonToStruct(node.metadata) } : {}),
    userAgentName: 'sail-test',
  };
}

/** A queue of messages from a stream, awaited one by one. */
class Inbox<T> {
  private readonly items: T[] = [];
  private readonly waiters: { resolve: (v: T) => void; reject: (e: unknown) => void }[] = [];
  private error: unknown;
  push(item: T): void {
    const w = this.waiters.shift();
    if (w) w.resolve(item);
    else this.items.push(item);
  }
  fail(err: unknown): void {
    this.error = err;
    for (const w of this.waiters.splice(0)) w.reject(err);
  }
  get size(): number {
    return this.items.length;
  }
  next(timeoutMs = 5000): Promise<T> {
    const item = this.items.shift();
    if (item !== undefined) return Promise.resolve(item);
    if (this.error !== undefined) return Promise.reject(this.error as Error);
    return new Promise<T>((resolve, reject) => {
      const waiter = {
        resolve: (v: T) => {
          clearTimeout(timer);
          resolve(v);
        },
        reject: (e: unknown) => {
          clearTimeout(timer);
          reject(e as Error);
        },
      };
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`no message within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }
}

interface RawResponse {
  versionInfo: string;
  nonce: string;
  typeUrl: string;
  resources: { type_url: string; value: Uint8Array }[];
}

interface RawDeltaResponse {
  systemVersionInfo: string;
  nonce: string;
  typeUrl: string;
  resources: { name: string; version: string; resource: { type_url: string; value: Uint8Array } }[];
  removedResources: string[];
}

export class AdsTestClient {
  private readonly client: grpc.Client;
  private readonly call: grpc.ClientDuplexStream<object, RawResponse>;
  private readonly inbox = new Inbox<RawResponse>();
  private first = true;
  /** The status the stream ended with, once it has. */
  status: grpc.StatusObject | undefined;
  readonly ended: Promise<grpc.StatusObject>;

  constructor(
    address: string,
    credentials: grpc.ChannelCredentials,
    private readonly node: NodeSpec,
    /** Decode resources (off for benchmarks that only count). */
    private readonly decode = true,
    options: grpc.ChannelOptions = {},
  ) {
    ctor ??= adsClientConstructor();
    this.client = new ctor(address, credentials, options);
    this.call = (
      this.client as unknown as {
        StreamAggregatedResources(): grpc.ClientDuplexStream<object, RawResponse>;
      }
    ).StreamAggregatedResources();
    this.call.on('data', (m: RawResponse) => this.inbox.push(m));
    this.ended = new Promise(resolve => {
      this.call.on('status', s => {
        this.status = s;
        resolve(s);
      });
    });
    this.call.on('error', err => this.inbox.fail(err));
  }

  /** Sends a DiscoveryRequest; the node goes on the first one only. */
  request(r: {
    typeUrl: string;
    resourceNames?: string[];
    versionInfo?: string;
    responseNonce?: string;
    errorDetail?: { code: number; message: string };
  }): void {
    this.call.write({ ...r, ...(this.first ? { node: wireNode(this.node) } : {}) });
    this.first = false;
  }

  async next(timeoutMs?: number): Promise<DecodedResponse> {
    const m = await this.inbox.next(timeoutMs);
    return {
      versionInfo: m.versionInfo,
      nonce: m.nonce,
      typeUrl: m.typeUrl,
      resources: this.decode ? m.resources.map(decodeAny) : m.resources.map(() => ({})),
    };
  }

  /** Resolves to the number of responses still queued after `ms` (to assert silence). */
  async quiet(ms: number): Promise<number> {
    await new Promise(r => setTimeout(r, ms));
    return this.inbox.size;
  }

  /** ACKs a response. */
  ack(r: DecodedResponse, resourceNames?: string[]): void {
    this.request({
      typeUrl: r.typeUrl,
      versionInfo: r.versionInfo,
      responseNonce: r.nonce,
      ...(resourceNames ? { resourceNames } : {}),
    });
  }

  close(): void {
    this.call.end();
    this.client.close();
  }
}

export class DeltaTestClient {
  private readonly client: grpc.Client;
  private readonly call: grpc.ClientDuplexStream<object, RawDeltaResponse>;
  private readonly inbox = new Inbox<RawDeltaResponse>();
  private first = true;

  constructor(
    address: string,
    credentials: grpc.ChannelCredentials,
    private readonly node: NodeSpec,
  ) {
    ctor ??= adsClientConstructor();
    this.client = new ctor(address, credentials);
    this.call = (
      this.client as unknown as {
        DeltaAggregatedResources(): grpc.ClientDuplexStream<object, RawDeltaResponse>;
      }
    ).DeltaAggregatedResources();
    this.call.on('data', (m: RawDeltaResponse) => this.inbox.push(m));
    this.call.on('error', err => this.inbox.fail(err));
  }

  request(r: {
    typeUrl: string;
    resourceNamesSubscribe?: string[];
    resourceNamesUnsubscribe?: string[];
    initialResourceVersions?: Record<string, string>;
    responseNonce?: string;
    errorDetail?: { code: number; message: string };
  }): void {
    this.call.write({ ...r, ...(this.first ? { node: wireNode(this.node) } : {}) });
    this.first = false;
  }

  async next(timeoutMs?: number): Promise<DecodedDeltaResponse> {
    const m = await this.inbox.next(timeoutMs);
    return {
      systemVersionInfo: m.systemVersionInfo,
      nonce: m.nonce,
      typeUrl: m.typeUrl,
      removedResources: m.removedResources,
      resources: m.resources.map(r => ({
        name: r.name,
        version: r.version,
        resource: decodeAny(r.resource),
      })),
    };
  }

  async quiet(ms: number): Promise<number> {
    await new Promise(r => setTimeout(r, ms));
    return this.inbox.size;
  }

  close(): void {
    this.call.end();
    this.client.close();
  }
}
