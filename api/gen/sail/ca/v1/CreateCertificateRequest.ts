// Original file: sail/ca/v1/ca.proto

import type { Long } from '@grpc/proto-loader';

export interface CreateCertificateRequest {
  /**
   * The PKCS#10 certificate request, PEM. At most 16 KiB.
   */
  'csr'?: (string);
  /**
   * Requested lifetime in seconds; 0 means the CA's default. Capped at the CA's maximum.
   */
  'validitySeconds'?: (number | string | Long);
  /**
   * The SPIFFE ID wanted, when the node is assigned several. Empty: the URI SAN of the request if
   * it has one, else the node's only identity.
   */
  'spiffeId'?: (string);
  /**
   * The node name the caller believes it is; when set it must match the authenticated node.
   */
  'node'?: (string);
}

export interface CreateCertificateRequest__Output {
  /**
   * The PKCS#10 certificate request, PEM. At most 16 KiB.
   */
  'csr': (string);
  /**
   * Requested lifetime in seconds; 0 means the CA's default. Capped at the CA's maximum.
   */
  'validitySeconds': (string);
  /**
   * The SPIFFE ID wanted, when the node is assigned several. Empty: the URI SAN of the request if
   * it has one, else the node's only identity.
   */
  'spiffeId': (string);
  /**
   * The node name the caller believes it is; when set it must match the authenticated node.
   */
  'node': (string);
}
