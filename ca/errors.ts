/** The CA's error codes (registry; docs/errors.md lists each). */
import {
  ConfigError,
  InvalidInputError,
  NotAuthenticatedError,
  NotAuthorizedError,
  NotReadyError,
  ResourceExhaustedError,
  SailError,
} from '../common/errors';

export const CA_ERROR_CODES = [
  'CA_CSR_INVALID',
  'CA_TTL_INVALID',
  'CA_NO_CREDENTIALS',
  'CA_TOKEN_INVALID',
  'CA_TOKEN_EXPIRED',
  'CA_TOKEN_USED',
  'CA_CERT_UNTRUSTED',
  'CA_NODE_UNKNOWN',
  'CA_NODE_MISMATCH',
  'CA_IDENTITY_DENIED',
  'CA_IDENTITY_AMBIGUOUS',
  'CA_QUEUE_FULL',
  'CA_OVERLOADED',
  'CA_NOT_READY',
  'CA_PLUGGED_CERTS_INVALID',
  'CA_NODE_NOT_FOUND',
] as const;

export type CaErrorCode = (typeof CA_ERROR_CODES)[number];

/** The CSR was malformed, weakly keyed or asked for something it may not. */
export class CsrInvalidError extends InvalidInputError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, { ...options, code: 'CA_CSR_INVALID' });
  }
}

export const invalid = (code: CaErrorCode, message: string) =>
  new InvalidInputError(message, { code });
export const unauthenticated = (code: CaErrorCode, message: string) =>
  new NotAuthenticatedError(message, { code });
export const denied = (code: CaErrorCode, message: string) =>
  new NotAuthorizedError(message, { code });
export const exhausted = (code: CaErrorCode, message: string) =>
  new ResourceExhaustedError(message, { code });
export const notReady = (message: string, code: CaErrorCode = 'CA_NOT_READY') =>
  new NotReadyError(message, { code });

/** Plugged-in ("bring your own") CA material that fails the start-up checks. */
export class PluggedCertsError extends ConfigError {
  override readonly code = 'CA_PLUGGED_CERTS_INVALID';
}

/** An admin request for a node that does not exist. */
export class NodeNotFoundError extends SailError {
  constructor(node: string) {
    super('CA_NODE_NOT_FOUND', `node ${JSON.stringify(node)} is not registered`);
  }
}
