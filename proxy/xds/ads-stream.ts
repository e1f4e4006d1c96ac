/**
 * The ADS wire: a generic grpc-js client for
 * `envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources` with
 * protobufjs (de)serializers from the proxy's Envoy API (api/envoy.ts `proxyEnvoyType`: the
 * build's pruned descriptor), so no generated code is needed.
 */
import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { parseHostPort } from '../../common/config';
import { proxyEnvoyType } from '../../api/envoy';
import type { WireAny } from './resources';

/** The gRPC service of ADS. */
export const ADS_SERVICE = 'envoy.service.discovery.v3.AggregatedDiscoveryService';

/** How the generic definitions decode requests to plain objects: every field, enum names. */
const RAW_OBJECT = { arrays: true, defaults: true, enums: String, longs: String };

/**
 * The generic definition of one ADS stream method (State of the World or Delta) with protobufjs
 * (de)serializers from the Envoy protos: requests are written as `fromObject` input and read as
 * plain objects, responses are written as messages and read as protobufjs messages. The client
 * below, the fake server and the test client share it.
 */
export function adsMethodDefinition(
  method: 'StreamAggregatedResources' | 'DeltaAggregatedResources',
): grpc.MethodDefinition<object, object> {
  const delta = method === 'DeltaAggregatedResources' ? 'Delta' : '';
  const req = proxyEnvoyType(`envoy.service.discovery.v3.${delta}DiscoveryRequest`);
  const res = proxyEnvoyType(`envoy.service.discovery.v3.${delta}DiscoveryResponse`);
  return {
    path: `/${ADS_SERVICE}/${method}`,
    requestStream: true,
    responseStream: true,
    requestSerialize: (m: object) => Buffer.from(req.encode(req.fromObject(m)).finish()),
    requestDeserialize: (b: Buffer) => req.toObject(req.decode(b), RAW_OBJECT),
    responseSerialize: (m: object) => Buffer.from(res.encode(m).finish()),
    responseDeserialize: (b: Buffer) => res.decode(b),
  };
}

/** A DiscoveryRequest as the client writes it (protobufjs `fromObject` input). */
export interface AdsRequest {
  readonly typeUrl: string;
  readonly versionInfo?: string;
  readonly responseNonce?: string;
  readonly resourceNames?: readonly string[];
  readonly node?: Record<string, unknown>;
  readonly errorDetail?: { readonly code: number; readonly message: string };
}

/** A DiscoveryResponse as decoded (resources left encoded: each is decoded only when it changed). */
export interface AdsResponse {
  readonly versionInfo: string;
  readonly typeUrl: string;
  readonly nonce: string;
  readonly resources: readonly WireAny[];
}

/** The bidi stream. */
export type AdsCall = grpc.ClientDuplexStream<AdsRequest, AdsResponse>;

type AdsClient = grpc.Client & {
  StreamAggregatedResources(): AdsCall;
};

let ctor:
  | (new (
      address: string,
      creds: grpc.ChannelCredentials,
      options?: grpc.ChannelOptions,
    ) => AdsClient)
  | undefined;

function adsClientConstructor() {
  const res = proxyEnvoyType('envoy.service.discovery.v3.DiscoveryResponse');
  return grpc.makeGenericClientConstructor(
    {
      StreamAggregatedResources: {
        ...adsMethodDefinition('StreamAggregatedResources'),
        responseDeserialize: (b: Buffer) => {
          const m = res.decode(b) as unknown as Partial<AdsResponse>;
          return {
            versionInfo: m.versionInfo ?? '',
            typeUrl: m.typeUrl ?? '',
            nonce: m.nonce ?? '',
            resources: m.resources ?? [],
          };
        },
      },
    },
    ADS_SERVICE,
  ) as unknown as new (
    address: string,
    creds: grpc.ChannelCredentials,
    options?: grpc.ChannelOptions,
  ) => AdsClient;
}

/** Channel options for the stream to pilot. */
export const ADS_CHANNEL_OPTIONS: grpc.ChannelOptions = {
  // One stream kept open for days: keepalives find a dead pilot (or a dead NAT mapping) in
  // ~40 s instead of at the next TCP retransmission timeout. Pilot permits pings every 5 s.
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  // Pilot sends up to 64 MiB (pilot.ts serverOptions); grpc-js receives 4 MiB by default.
  'grpc.max_receive_message_length': 64 * 1024 * 1024,
  // Each reconnect builds a new channel (fresh credentials): do not share subchannels with an
  // old one that still holds the previous certificate.
  'grpc.use_local_subchannel_pool': 1,
};

/** TLS server name sent when pilot is addressed by IP; see tlsNameOptions. */
const IP_TARGET_SERVER_NAME = 'sail-pilot';

/**
 * Proxies usually reach pilot by IP, and RFC 6066 forbids an IP address as the TLS server name
 * (Node warns, DEP0123). The name does not identify pilot here (its SPIFFE ID does), so a fixed
 * name is sent instead (as node-agent's CA client does).
 */
function tlsNameOptions(address: string): grpc.ChannelOptions {
  const host = parseHostPort(address)?.host;
  return host !== undefined && net.isIP(host) !== 0
    ? { 'grpc.ssl_target_name_override': IP_TARGET_SERVER_NAME }
    : {};
}

/** A new client (one channel) to `address`; the caller closes it. */
export function newAdsClient(address: string, credentials: grpc.ChannelCredentials): AdsClient {
  ctor ??= adsClientConstructor();
  return new ctor(address, credentials, { ...ADS_CHANNEL_OPTIONS, ...tlsNameOptions(address) });
}
