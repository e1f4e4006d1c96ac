/**
 * Loads Sail's own .proto files at run time with @grpc/proto-loader. The generated types in gen/
 * come from the same files with the same options (`npm run gen:proto`).
 */
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { ProtoGrpcType as CaProtoGrpcType } from './gen/ca';

/** One set of loader options for every proto, matching `proto-loader-gen-types` in gen:proto. */
export const PROTO_LOADER_OPTIONS: protoLoader.Options = {
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** Where the .proto sources are: beside this file (the build copies them next to index.js). */
export const PROTO_ROOT = __dirname;

let caProto: CaProtoGrpcType | undefined;

/** The loaded sail.ca.v1 package (cached). */
export function loadCaProto(): CaProtoGrpcType {
  caProto ??= grpc.loadPackageDefinition(
    protoLoader.loadSync(path.join('sail', 'ca', 'v1', 'ca.proto'), {
      ...PROTO_LOADER_OPTIONS,
      includeDirs: [PROTO_ROOT],
    }),
  ) as unknown as CaProtoGrpcType;
  return caProto;
}

export type {
  CertificateAuthorityClient,
  CertificateAuthorityHandlers,
} from './gen/sail/ca/v1/CertificateAuthority';
export type { CreateCertificateRequest__Output } from './gen/sail/ca/v1/CreateCertificateRequest';
export type {
  CreateCertificateResponse,
  CreateCertificateResponse__Output,
} from './gen/sail/ca/v1/CreateCertificateResponse';
export type {
  GetTrustBundleResponse,
  GetTrustBundleResponse__Output,
} from './gen/sail/ca/v1/GetTrustBundleResponse';
