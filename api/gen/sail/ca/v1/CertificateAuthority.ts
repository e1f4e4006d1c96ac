// Original file: sail/ca/v1/ca.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { CreateCertificateRequest as _sail_ca_v1_CreateCertificateRequest, CreateCertificateRequest__Output as _sail_ca_v1_CreateCertificateRequest__Output } from '../../../sail/ca/v1/CreateCertificateRequest';
import type { CreateCertificateResponse as _sail_ca_v1_CreateCertificateResponse, CreateCertificateResponse__Output as _sail_ca_v1_CreateCertificateResponse__Output } from '../../../sail/ca/v1/CreateCertificateResponse';
import type { GetTrustBundleRequest as _sail_ca_v1_GetTrustBundleRequest, GetTrustBundleRequest__Output as _sail_ca_v1_GetTrustBundleRequest__Output } from '../../../sail/ca/v1/GetTrustBundleRequest';
import type { GetTrustBundleResponse as _sail_ca_v1_GetTrustBundleResponse, GetTrustBundleResponse__Output as _sail_ca_v1_GetTrustBundleResponse__Output } from '../../../sail/ca/v1/GetTrustBundleResponse';

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
export interface CertificateAuthorityClient extends grpc.Client {
  /**
   * Signs a PKCS#10 request. Errors: INVALID_ARGUMENT for a malformed or weak request,
   * UNAUTHENTICATED without valid credentials, PERMISSION_DENIED for an identity the node is not
   * assigned, RESOURCE_EXHAUSTED when this node has too many requests queued, UNAVAILABLE when the
   * CA as a whole is saturated (retry with backoff).
   */
  CreateCertificate(argument: _sail_ca_v1_CreateCertificateRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_sail_ca_v1_CreateCertificateResponse__Output>): grpc.ClientUnaryCall;
  CreateCertificate(argument: _sail_ca_v1_CreateCertificateRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_sail_ca_v1_CreateCertificateResponse__Output>): grpc.ClientUnaryCall;
  CreateCertificate(argument: _sail_ca_v1_CreateCertificateRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_sail_ca_v1_CreateCertificateResponse__Output>): grpc.ClientUnaryCall;
  CreateCertificate(argument: _sail_ca_v1_CreateCertificateRequest, callback: grpc.requestCallback<_sail_ca_v1_CreateCertificateResponse__Output>): grpc.ClientUnaryCall;
  /**
   * Signs a PKCS#10 request. Errors: INVALID_ARGUMENT for a malformed or weak request,
   * UNAUTHENTICATED without valid credentials, PERMISSION_DENIED for an identity the node is not
   * assigned, RESOURCE_EXHAUSTED when this node has too many requests queued, UNAVAILABLE when the
   * CA as a whole is saturated (retry with backoff).
   */
  createCertificate(argument: _sail_ca_v1_CreateCertificateRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_sail_ca_v1_CreateCertificateResponse__Output>): grpc.ClientUnaryCall;
  createCertificate(argument: _sail_ca_v1_CreateCertificateRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_sail_ca_v1_CreateCertificateResponse__Output>): grpc.ClientUnaryCall;
  createCertificate(argument: _sail_ca_v1_CreateCertificateRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_sail_ca_v1_CreateCertificateResponse__Output>): grpc.ClientUnaryCall;
  createCertificate(argument: _sail_ca_v1_CreateCertificateRequest, callback: grpc.requestCallback<_sail_ca_v1_CreateCertificateResponse__Output>): grpc.ClientUnaryCall;
  
  /**
   * Returns the trust bundle: every root certificate workloads should trust. Needs no credentials.
   */
  GetTrustBundle(argument: _sail_ca_v1_GetTrustBundleRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_sail_ca_v1_GetTrustBundleResponse__Output>): grpc.ClientUnaryCall;
  GetTrustBundle(argument: _sail_ca_v1_GetTrustBundleRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_sail_ca_v1_GetTrustBundleResponse__Output>): grpc.ClientUnaryCall;
  GetTrustBundle(argument: _sail_ca_v1_GetTrustBundleRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_sail_ca_v1_GetTrustBundleResponse__Output>): grpc.ClientUnaryCall;
  GetTrustBundle(argument: _sail_ca_v1_GetTrustBundleRequest, callback: grpc.requestCallback<_sail_ca_v1_GetTrustBundleResponse__Output>): grpc.ClientUnaryCall;
  /**
   * Returns the trust bundle: every root certificate workloads should trust. Needs no credentials.
   */
  getTrustBundle(argument: _sail_ca_v1_GetTrustBundleRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_sail_ca_v1_GetTrustBundleResponse__Output>): grpc.ClientUnaryCall;
  getTrustBundle(argument: _sail_ca_v1_GetTrustBundleRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_sail_ca_v1_GetTrustBundleResponse__Output>): grpc.ClientUnaryCall;
  getTrustBundle(argument: _sail_ca_v1_GetTrustBundleRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_sail_ca_v1_GetTrustBundleResponse__Output>): grpc.ClientUnaryCall;
  getTrustBundle(argument: _sail_ca_v1_GetTrustBundleRequest, callback: grpc.requestCallback<_sail_ca_v1_GetTrustBundleResponse__Output>): grpc.ClientUnaryCall;
  
}

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
export interface CertificateAuthorityHandlers extends grpc.UntypedServiceImplementation {
  /**
   * Signs a PKCS#10 request. Errors: INVALID_ARGUMENT for a malformed or weak request,
   * UNAUTHENTICATED without valid credentials, PERMISSION_DENIED for an identity the node is not
   * assigned, RESOURCE_EXHAUSTED when this node has too many requests queued, UNAVAILABLE when the
   * CA as a whole is saturated (retry with backoff).
   */
  CreateCertificate: grpc.handleUnaryCall<_sail_ca_v1_CreateCertificateRequest__Output, _sail_ca_v1_CreateCertificateResponse>;
  
  /**
   * Returns the trust bundle: every root certificate workloads should trust. Needs no credentials.
   */
  GetTrustBundle: grpc.handleUnaryCall<_sail_ca_v1_GetTrustBundleRequest__Output, _sail_ca_v1_GetTrustBundleResponse>;
  
}

export interface CertificateAuthorityDefinition extends grpc.ServiceDefinition {
  CreateCertificate: MethodDefinition<_sail_ca_v1_CreateCertificateRequest, _sail_ca_v1_CreateCertificateResponse, _sail_ca_v1_CreateCertificateRequest__Output, _sail_ca_v1_CreateCertificateResponse__Output>
  GetTrustBundle: MethodDefinition<_sail_ca_v1_GetTrustBundleRequest, _sail_ca_v1_GetTrustBundleResponse, _sail_ca_v1_GetTrustBundleRequest__Output, _sail_ca_v1_GetTrustBundleResponse__Output>
}
