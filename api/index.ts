/**
 * Loads Sail's own .proto files at run time with @grpc/proto-loader. The generated types in gen/
 * come from the same files with the same options (`npm run gen:proto`).
 */
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import * as protobuf from 'protobufjs';
import { RESOURCE_LAYOUT, resourceDir } from '../common/resources';
import type { ProtoGrpcType as CaProtoGrpcType } from './gen/ca';
import type { ProtoGrpcType as PilotProtoGrpcType } from './gen/registration';

/** One set of loader options for every proto, matching `proto-loader-gen-types` in gen:proto. */
export const PROTO_LOADER_OPTIONS: protoLoader.Options = {
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

/**
 * Where the .proto sources are: beside this file (the build copies them next to index.js), or in
 * the single executable's resource directory.
 */
export const PROTO_ROOT: string = protoRoot();

function protoRoot(): string {
  const res = resourceDir();
  return res !== undefined ? path.join(res, RESOURCE_LAYOUT.sailProtos) : __dirname;
}

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

let pilotProto: PilotProtoGrpcType | undefined;

/** The loaded sail.pilot.v1 package: host registration (cached). */
export function loadPilotProto(): PilotProtoGrpcType {
  pilotProto ??= grpc.loadPackageDefinition(
    protoLoader.loadSync(path.join('sail', 'pilot', 'v1', 'registration.proto'), {
      ...PROTO_LOADER_OPTIONS,
      includeDirs: [PROTO_ROOT],
    }),
  ) as unknown as PilotProtoGrpcType;
  return pilotProto;
}

/**
 * The type URL of pilot's name table (sail.pilot.v1.NameTable, nds.proto), served over ADS to
 * node agents for their DNS resolver.
 */
export const NAME_TABLE_TYPE_URL = 'type.googleapis.com/sail.pilot.v1.NameTable';

let nameTable: protobuf.Type | undefined;

/**
 * The protobufjs type of sail.pilot.v1.NameTable (cached): pilot encodes the xDS resource with it
 * and the node agent decodes it. Field names are camelCase (protobufjs' default), as for Envoy's types.
 */
export function nameTableType(): protobuf.Type {
  if (!nameTable) {
    const root = new protobuf.Root();
    root.loadSync(path.join(PROTO_ROOT, 'sail', 'pilot', 'v1', 'nds.proto'), { keepCase: false });
    root.resolveAll();
    nameTable = root.lookupType('sail.pilot.v1.NameTable');
  }
  return nameTable;
}

export type {
  NameTable,
  NameTable__Output,
  _sail_pilot_v1_NameTable_NameInfo__Output as NameInfo__Output,
} from './gen/sail/pilot/v1/NameTable';
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
export type { RegistrationClient, RegistrationHandlers } from './gen/sail/pilot/v1/Registration';
export type { WorkloadReport, WorkloadReport__Output } from './gen/sail/pilot/v1/WorkloadReport';
export type {
  WorkloadRegistration,
  WorkloadRegistration__Output,
} from './gen/sail/pilot/v1/WorkloadRegistration';
export type {
  RegistrationStatus,
  RegistrationStatus__Output,
} from './gen/sail/pilot/v1/RegistrationStatus';
export type { HealthReport__Output } from './gen/sail/pilot/v1/HealthReport';
export type { HostFacts__Output } from './gen/sail/pilot/v1/HostFacts';
