// Original file: sail/ca/v1/ca.proto


export interface GetTrustBundleResponse {
  /**
   * Root certificates, PEM each, current root first.
   */
  'rootCerts'?: (string)[];
  /**
   * The trust domain of the mesh.
   */
  'trustDomain'?: (string);
}

export interface GetTrustBundleResponse__Output {
  /**
   * Root certificates, PEM each, current root first.
   */
  'rootCerts': (string)[];
  /**
   * The trust domain of the mesh.
   */
  'trustDomain': (string);
}
