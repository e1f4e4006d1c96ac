/**
 * The node agent's error codes (its registry, STYLE 2.5; docs/errors.md lists each) and the error
 * classes callers branch on.
 */
import * as grpc from '@grpc/grpc-js';
import { InvalidInputError, SailError } from '../common/errors';

/** Every code the node agent defines. */
export const AGENT_ERROR_CODES = [
  'AGENT_CERT_MISSING',
  'AGENT_CERT_INVALID',
  'AGENT_CERT_EXPIRED',
  'AGENT_KEY_MISMATCH',
  'AGENT_ROOT_CERT_INVALID',
  'AGENT_NO_CREDENTIALS',
  'AGENT_CA_REQUEST_FAILED',
  'AGENT_CA_RESPONSE_INVALID',
  'AGENT_CA_FINGERPRINT_MISMATCH',
  'AGENT_START_ABORTED',
  'AGENT_JOIN_CONFIG_EXISTS',
  // Defined next to their subsystems (supervisor/, capture/, xds-relay/ errors.ts), listed here.
  'AGENT_PROXY_SPAWN_FAILED',
  'AGENT_CAPTURE_NO_IPTABLES',
  'AGENT_CAPTURE_APPLY_FAILED',
  'AGENT_CAPTURE_TPROXY_LISTEN_FAILED',
  'AGENT_XDS_RELAY_NO_IDENTITY',
] as const;

/** One of AGENT_ERROR_CODES. */
export type AgentErrorCode = (typeof AGENT_ERROR_CODES)[number];

/** Base class of the node agent's coded errors. */
export class AgentError extends SailError {
  declare readonly code: AgentErrorCode;
  constructor(code: AgentErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/**
 * The certificate files on disk cannot be used: missing (`AGENT_CERT_MISSING`), unparsable or not
 * chaining to the trust roots (`AGENT_CERT_INVALID`), expired (`AGENT_CERT_EXPIRED`), or the key
 * does not belong to the certificate (`AGENT_KEY_MISMATCH`). The agent then obtains a new one.
 */
export class CertStoreError extends AgentError {
  constructor(
    code: 'AGENT_CERT_MISSING' | 'AGENT_CERT_INVALID' | 'AGENT_CERT_EXPIRED' | 'AGENT_KEY_MISMATCH',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

/** The trust anchor for the CA connection (root-cert.pem) is missing or holds no certificate. */
export class RootCertError extends AgentError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('AGENT_ROOT_CERT_INVALID', message, options);
  }
}

/**
 * The agent has nothing to authenticate to the CA with: no valid certificate, no bootstrap
 * certificate and no join token. It keeps retrying, so a token dropped into the token file later
 * is picked up.
 */
export class NoCredentialsError extends AgentError {
  constructor(message: string) {
    super('AGENT_NO_CREDENTIALS', message);
  }
}

/** Status codes that mean "the CA refused these credentials", as opposed to "try again later". */
const REFUSED_CODES: ReadonlySet<grpc.status> = new Set([
  grpc.status.PERMISSION_DENIED,
  grpc.status.UNAUTHENTICATED,
]);

/**
 * A call to the CA failed. `grpcCode` is the gRPC status (UNAVAILABLE for network failures) and
 * `caErrorCode` the CA's `sail-error-code` trailer when it sent one (e.g. `CA_TOKEN_USED`).
 */
export class CaRequestError extends AgentError {
  constructor(
    readonly method: string,
    readonly grpcCode: grpc.status,
    readonly caErrorCode: string | undefined,
    message: string,
    options?: { cause?: unknown },
  ) {
    super('AGENT_CA_REQUEST_FAILED', message, options);
  }

  /** True when the CA refused the credentials (PERMISSION_DENIED or UNAUTHENTICATED). */
  get refused(): boolean {
    return REFUSED_CODES.has(this.grpcCode);
  }
}

/** The CA answered with something the agent will not use (a chain that does not verify, another key, another identity). */
export class CaResponseInvalidError extends AgentError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('AGENT_CA_RESPONSE_INVALID', message, options);
  }
}

/** `sail join --ca-fingerprint`: no root in the CA's trust bundle has the given fingerprint. */
export class FingerprintMismatchError extends AgentError {
  constructor(message: string) {
    super('AGENT_CA_FINGERPRINT_MISMATCH', message);
  }
}

/** close() was called while start() was still waiting for the first certificate. */
export class StartAbortedError extends AgentError {
  constructor() {
    super('AGENT_START_ABORTED', 'node agent was closed before it obtained a certificate');
  }
}

/** `sail join` found a config file and was not given --force (bad usage: exit code 2). */
export class JoinConfigExistsError extends InvalidInputError {
  constructor(file: string) {
    super(`config file ${file} already exists; pass --force to overwrite it`, {
      code: 'AGENT_JOIN_CONFIG_EXISTS',
    });
  }
}
