/**
 * The proxy's error codes (its registry, STYLE 2.5; docs/errors.md lists each under "## proxy")
 * and the error classes callers branch on. Inside the data path errors are plain Errors with a
 * `cause` (the response flags say what went wrong); these codes are for the operator.
 */
import { ConfigError, SailError } from '../common/errors';

/** Every code the proxy defines. */
export const PROXY_ERROR_CODES = [
  'PROXY_ADMIN_NOT_LOOPBACK',
  'PROXY_LISTEN_FAILED',
  'PROXY_NO_CERTIFICATE',
  'PROXY_START_ABORTED',
] as const;

/** One of PROXY_ERROR_CODES. */
export type ProxyErrorCode = (typeof PROXY_ERROR_CODES)[number];

/** Base class of the proxy's coded errors. */
export class ProxyError extends SailError {
  declare readonly code: ProxyErrorCode;
  constructor(code: ProxyErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/**
 * `adminListen` is not a loopback address and `adminAllowRemote` is not set. The admin port shows
 * the whole configuration and has no authentication, as Envoy's. Invalid configuration: exit 2.
 */
export class AdminNotLoopbackError extends ConfigError {
  override readonly code = 'PROXY_ADMIN_NOT_LOOPBACK';
}

/** A port the proxy must serve on (admin, metrics, a listener) could not be bound. */
export class ListenFailedError extends ProxyError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PROXY_LISTEN_FAILED', message, options);
  }
}

/** No usable workload certificate in the certificate directory (yet): pilot cannot be reached
 * and mTLS chains cannot serve until the node agent writes one. */
export class NoCertificateError extends ProxyError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PROXY_NO_CERTIFICATE', message, options);
  }
}

/** close() was called while start() was still running. */
export class StartAbortedError extends ProxyError {
  constructor() {
    super('PROXY_START_ABORTED', 'proxy was closed while starting');
  }
}
