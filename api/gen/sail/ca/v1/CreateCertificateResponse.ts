// Original file: sail/ca/v1/ca.proto


export interface CreateCertificateResponse {
  /**
   * The issued certificate first, then any intermediates, then the root, PEM each.
   */
  'certChain'?: (string)[];
  /**
   * The SPIFFE ID the certificate carries.
   */
  'spiffeId'?: (string);
  /**
   * The authenticated node name.
   */
  'node'?: (string);
}

export interface CreateCertificateResponse__Output {
  /**
   * The issued certificate first, then any intermediates, then the root, PEM each.
   */
  'certChain': (string)[];
  /**
   * The SPIFFE ID the certificate carries.
   */
  'spiffeId': (string);
  /**
   * The authenticated node name.
   */
  'node': (string);
}
