import type * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';

import type { CertificateAuthorityClient as _sail_ca_v1_CertificateAuthorityClient, CertificateAuthorityDefinition as _sail_ca_v1_CertificateAuthorityDefinition } from './sail/ca/v1/CertificateAuthority';
import type { CreateCertificateRequest as _sail_ca_v1_CreateCertificateRequest, CreateCertificateRequest__Output as _sail_ca_v1_CreateCertificateRequest__Output } from './sail/ca/v1/CreateCertificateRequest';
import type { CreateCertificateResponse as _sail_ca_v1_CreateCertificateResponse, CreateCertificateResponse__Output as _sail_ca_v1_CreateCertificateResponse__Output } from './sail/ca/v1/CreateCertificateResponse';
import type { GetTrustBundleRequest as _sail_ca_v1_GetTrustBundleRequest, GetTrustBundleRequest__Output as _sail_ca_v1_GetTrustBundleRequest__Output } from './sail/ca/v1/GetTrustBundleRequest';
import type { GetTrustBundleResponse as _sail_ca_v1_GetTrustBundleResponse, GetTrustBundleResponse__Output as _sail_ca_v1_GetTrustBundleResponse__Output } from './sail/ca/v1/GetTrustBundleResponse';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  sail: {
    ca: {
      v1: {
        /**
         * CertificateAuthority signs certificate requests for the identities a node is assigned.
         * 
         * A caller authenticates one of three ways, tried in this order:
         * 1. its current Sail certificate, presented as the TLS client certificate (renewal);
         * 2. a bootstrap certificate signed by a bootstrap CA the CA was configured with (x509 proof of
         * possession); the node name is the certificate's common name;
         * 3. a single-use join token in the `authorization: Bearer <token>` metadata (first join).
         * The SAN of the issued certificate comes from the identity the node is authorized for, never from
         * the request's extensions.
         */
        CertificateAuthority: SubtypeConstructor<typeof grpc.Client, _sail_ca_v1_CertificateAuthorityClient> & { service: _sail_ca_v1_CertificateAuthorityDefinition }
        CreateCertificateRequest: MessageTypeDefinition<_sail_ca_v1_CreateCertificateRequest, _sail_ca_v1_CreateCertificateRequest__Output>
        CreateCertificateResponse: MessageTypeDefinition<_sail_ca_v1_CreateCertificateResponse, _sail_ca_v1_CreateCertificateResponse__Output>
        GetTrustBundleRequest: MessageTypeDefinition<_sail_ca_v1_GetTrustBundleRequest, _sail_ca_v1_GetTrustBundleRequest__Output>
        GetTrustBundleResponse: MessageTypeDefinition<_sail_ca_v1_GetTrustBundleResponse, _sail_ca_v1_GetTrustBundleResponse__Output>
      }
    }
  }
}

