// Original file: sail/ca/v1/ca.proto


export interface GetTrustBundleRequest {
}

export interface GetTrustBundleRequest__Output {
}
