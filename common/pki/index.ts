/** PKI helpers: DER, PEM, X.509 and SPIFFE IDs. */
export * from './pem';
export * from './spiffe';
export * from './x509';
export { DerError } from './der';
