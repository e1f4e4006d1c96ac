/**
 * Turns generated resources into `google.protobuf.Any`s, once per distinct object: generators
 * share unchanged objects between proxies and pushes, so a push to 10,000 proxies of one
 * namespace encodes each resource once. The version of a resource is a hash of its bytes, so
 * "unchanged" is byte equality and Delta xDS can skip what a client already has.
 */
import * as crypto from 'node:crypto';
import type * as protobuf from 'protobufjs';
import { NAME_TABLE_TYPE_URL, nameTableType } from '../../api';
import { envoyType } from '../../api/envoy';
import { type GeneratedResource, TYPE_URL_PREFIX } from './model';

export interface EncodedResource {
  readonly name: string;
  /** 16 hex digits of the SHA-256 of the encoded bytes. */
  readonly version: string;
  readonly typeUrl: string;
  readonly value: Buffer;
  /** The generated object, for config dumps. */
  readonly resource: Readonly<Record<string, unknown>>;
}

export class ResourceEncoder {
  private readonly cache = new WeakMap<object, EncodedResource>();
  private readonly types = new Map<string, protobuf.Type>();
  /** Objects encoded since start (cache misses), for metrics and tests. */
  encodedCount = 0;

  encode(typeUrl: string, generated: GeneratedResource): EncodedResource {
    const hit = this.cache.get(generated.resource);
    if (hit && hit.name === generated.name && hit.typeUrl === typeUrl) return hit;
    const type = this.type(typeUrl);
    const message = type.fromObject(generated.resource);
    const value = Buffer.from(type.encode(message).finish());
    const version = crypto.createHash('sha256').update(value).digest('hex').slice(0, 16);
    const encoded: EncodedResource = {
      name: generated.name,
      version,
      typeUrl,
      value,
      resource: generated.resource,
    };
    this.cache.set(generated.resource, encoded);
    this.encodedCount++;
    return encoded;
  }

  private type(typeUrl: string): protobuf.Type {
    let t = this.types.get(typeUrl);
    if (!t) {
      if (!typeUrl.startsWith(TYPE_URL_PREFIX)) throw new Error(`not a type URL: ${typeUrl}`);
      // Sail's own name table is not an Envoy type (api/sail/pilot/v1/nds.proto).
      t =
        typeUrl === NAME_TABLE_TYPE_URL
          ? nameTableType()
          : envoyType(typeUrl.slice(TYPE_URL_PREFIX.length));
      this.types.set(typeUrl, t);
    }
    return t;
  }
}
