/** The certificate authority component. */
export { CertificateAuthority, adminSpiffeId, controlPlaneSpiffeId, SYSTEM_NAMESPACE } from './ca';
export * from './config';
export { CA_ERROR_CODES, CsrInvalidError, PluggedCertsError } from './errors';
