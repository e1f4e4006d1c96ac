/**
 * Test helpers that hold generated resources against the real Envoy v3 protos (from
 * @grpc/grpc-js-xds's deps/, loaded with protobufjs) and against gRPC's own xDS resource
 * validation. A misspelled field does not survive `fromObject`, so every resource is encoded,
 * decoded and compared with what was generated: anything lost is a failure. Only tests import
 * this file.
 * @internal
 */
import type * as protobuf from 'protobufjs';
import { loadEnvoyRoot } from '../../../api/envoy';
import { ClusterResourceType } from '@grpc/grpc-js-xds/build/src/xds-resource-type/cluster-resource-type';
import { EndpointResourceType } from '@grpc/grpc-js-xds/build/src/xds-resource-type/endpoint-resource-type';
import { ListenerResourceType } from '@grpc/grpc-js-xds/build/src/xds-resource-type/listener-resource-type';
import { RouteConfigurationResourceType } from '@grpc/grpc-js-xds/build/src/xds-resource-type/route-config-resource-type';
import type {
  XdsDecodeContext,
  XdsResourceType,
} from '@grpc/grpc-js-xds/build/src/xds-resource-type/xds-resource-type';
import { register as registerGrpcXds } from '@grpc/grpc-js-xds';
import {
  CLUSTER_TYPE,
  ENDPOINT_TYPE,
  type GeneratedResource,
  LISTENER_TYPE,
  ROUTE_TYPE,
  TYPE_URL_PREFIX,
  type XdsType,
} from '../model';

/**
 * The Envoy protos, exactly as pilot loads them in production (api/envoy.ts): a resource type the
 * production root lacks would encode as an empty Any, so the tests must use the same root.
 */
export function envoyRoot(): protobuf.Root {
  return loadEnvoyRoot();
}

/** Drops `undefined` members and empty lists: protobuf cannot tell either from an absent field. */
function normalize(value: unknown): unknown {
  return JSON.parse(
    JSON.stringify(value, (_k, v: unknown) => (Array.isArray(v) && v.length === 0 ? undefined : v)),
  ) as unknown;
}

/** The first path at which two JSON values differ, or undefined when equal. */
export function firstDifference(a: unknown, b: unknown, at = ''): string | undefined {
  if (a === b) return undefined;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object') {
    return `${at || '.'}: generated ${JSON.stringify(a)}, after round trip ${JSON.stringify(b)}`;
  }
  if (Array.isArray(a) !== Array.isArray(b)) return `${at}: array vs object`;
  const ao = a as Record<string, unknown>;
  const bo = b as Record<string, unknown>;
  for (const k of new Set([...Object.keys(ao), ...Object.keys(bo)])) {
    const d = firstDifference(ao[k], bo[k], `${at}.${k}`);
    if (d) return d;
  }
  return undefined;
}

/**
 * Encodes a generated message of type `fullName` and decodes it back; throws naming the first
 * field that did not survive (a typo, a wrong type, an unknown `@type`).
 * @returns the encoded bytes
 */
export function roundTrip(
  fullName: string,
  resource: Readonly<Record<string, unknown>>,
): Uint8Array {
  const type = envoyRoot().lookupType(fullName);
  const bytes = type.encode(type.fromObject(resource)).finish();
  const back = type.toObject(type.decode(bytes), {
    json: true,
    enums: String,
    longs: Number,
    defaults: false,
  });
  const diff = firstDifference(normalize(resource), normalize(back));
  const name = typeof resource.name === 'string' ? ` ${resource.name}` : '';
  if (diff) throw new Error(`${fullName}${name} does not round-trip: ${diff}`);
  return bytes;
}

/** Round-trips every resource of a generated list as its xDS type; returns the encoded bytes. */
export function expectEncodes(
  type: XdsType,
  resources: readonly GeneratedResource[],
): Uint8Array[] {
  const fullName = type.slice(TYPE_URL_PREFIX.length);
  return resources.map(r => roundTrip(fullName, r.resource));
}

const GRPC_TYPES: Record<XdsType, () => XdsResourceType> = {
  [LISTENER_TYPE]: () => ListenerResourceType.get(),
  [ROUTE_TYPE]: () => RouteConfigurationResourceType.get(),
  [CLUSTER_TYPE]: () => ClusterResourceType.get(),
  [ENDPOINT_TYPE]: () => EndpointResourceType.get(),
};

/** The decode context gRPC's client would use: a bootstrap with certificate provider `default`. */
const GRPC_CONTEXT = {
  server: {
    serverUri: 'localhost:15010',
    channelCredentials: { type: 'insecure' },
    serverFeatures: [],
  },
  bootstrap: {
    certificateProviders: { default: { pluginName: 'file_watcher', config: {} } },
  },
} as unknown as XdsDecodeContext;

/**
 * Decodes resources with gRPC's own xDS client code (the validation it applies before using a
 * resource, gRFC A27 and on); throws with gRPC's error when it would NACK.
 * @returns what gRPC decoded, for assertions on how it reads the resource
 */
export function expectGrpcAccepts(
  type: XdsType,
  resources: readonly GeneratedResource[],
): Record<string, unknown>[] {
  registerGrpcXds(); // registers the HTTP filters gRPC validates against
  const bytes = expectEncodes(type, resources);
  return bytes.map((value, i) => {
    const result = GRPC_TYPES[type]().decode(GRPC_CONTEXT, {
      type_url: type,
      value: Buffer.from(value),
    });
    if (result.error) throw new Error(`gRPC rejects ${resources[i]!.name}: ${result.error}`);
    return result.value as Record<string, unknown>;
  });
}
