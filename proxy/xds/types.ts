/** The XdsClient's public types: what it emits and what it reports. */
import type * as grpc from '@grpc/grpc-js';
import type { Clock } from '../../common/clock';
import type { Logger } from '../../common/logging';
import type { ProxyConfig, XdsKind } from '../model';

/** One ACKed resource as pilot sent it (decoded JSON, as in a config dump). */
export interface RawResource {
  /** The decoded resource (protobufjs JSON with `ENVOY_JSON_OPTIONS`). Never mutated. */
  readonly resource: Readonly<Record<string, unknown>>;
  /** `version_info` of the response that last changed this resource. */
  readonly version: string;
  /** When this resource last changed (the client's clock). */
  readonly lastUpdated: Date;
}

/** The raw ACKed resources in force, by kind and name (for config dumps and the state file). */
export type RawResources = Readonly<Record<XdsKind, ReadonlyMap<string, RawResource>>>;

/** What the client emits after applying configuration. */
export interface XdsUpdate {
  /** The complete configuration now in force. Maps of kinds that did not change are shared with the previous update. */
  readonly config: ProxyConfig;
  readonly raw: RawResources;
  /**
   * The kinds whose resources changed (added, changed or removed). May be empty when a response
   * only moved a version (pilot resends unchanged resources after a reconnect).
   */
  readonly changed: ReadonlySet<XdsKind>;
  /** True for the update emitted at start() from the state file. */
  readonly fromCache: boolean;
}

/** The last ACK of one kind. */
export interface XdsAckInfo {
  readonly version: string;
  readonly nonce: string;
  readonly at: Date;
}

/** The last NACK sent. */
export interface XdsNackInfo {
  readonly kind: XdsKind;
  /** `version_info` of the rejected response. */
  readonly version: string;
  readonly nonce: string;
  /** What was wrong, resource by resource (the `error_detail` message sent). */
  readonly error: string;
  readonly at: Date;
}

/** The client's state for the admin endpoint and metrics. */
export interface XdsClientStatus {
  /** A stream to pilot is established now. */
  readonly connected: boolean;
  readonly ready: boolean;
  /** Why ready (or what it waits for), for `/ready` and logs. */
  readonly readyReason: string;
  readonly lastAck: Readonly<Record<XdsKind, XdsAckInfo | undefined>>;
  readonly lastNack?: XdsNackInfo;
  /** Responses rejected since start (counter). */
  readonly nacks: number;
  /** Streams opened after the first (counter). */
  readonly reconnects: number;
  /** Responses ACKed since start (counter). */
  readonly acks: number;
  /** Updates emitted since start, the one from the state file included (counter). */
  readonly updates: number;
}

/** Reconnect backoff: capped, jittered (common/backoff.ts). */
export interface XdsBackoffOptions {
  readonly initialMs: number;
  readonly maxMs: number;
}

export interface XdsClientOptions {
  readonly logger: Logger;
  readonly clock?: Clock;
  /** pilot's xDS address, `host:port`. */
  readonly address: string;
  /** Istio form `sidecar~IP~NAME.NS~NS.svc.cluster.local`. */
  readonly nodeId: string;
  /** Node metadata (sent as a Struct): labels, namespace, … */
  readonly nodeMetadata: Readonly<Record<string, unknown>>;
  /**
   * Channel credentials, called at every (re)connect so a rotated workload certificate is used.
   * In production: mTLS with `clientCredentials` (common/grpc/credentials.ts).
   */
  readonly credentials: () => grpc.ChannelCredentials;
  /** Last-known-good resources are kept here (JSON); undefined: not kept. */
  readonly stateFile?: string;
  /** Ready with what has arrived this long after the stream first connected (Envoy's initial_fetch_timeout). */
  readonly initialFetchTimeoutMs: number;
  /** Default 1 s → 30 s. */
  readonly backoff?: XdsBackoffOptions;
  /** Minimum time between two writes of `stateFile`, ms (default 1000). */
  readonly stateWriteIntervalMs?: number;
}
