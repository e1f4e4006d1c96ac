/**
 * Sail's coded errors. Subclass only what callers branch on (STYLE 2.5); everything else is a
 * plain Error with a `cause`. Every code is listed in docs/errors.md (checked by a test).
 */

/** Base class: a stable `code` plus the ES2022 `cause`. */
export class SailError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** Invalid input from a user or a caller: a flag, a file, a request field. Exit code 2. */
export class InvalidInputError extends SailError {
  constructor(message: string, options?: { cause?: unknown; code?: string }) {
    super(options?.code ?? 'COMMON_INVALID_INPUT', message, options);
  }
}

/** A configuration file or flag set that fails validation. Exit code 2. */
export class ConfigError extends SailError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('COMMON_CONFIG_INVALID', message, options);
  }
}

/** The caller could not be authenticated. */
export class NotAuthenticatedError extends SailError {
  constructor(message: string, options?: { cause?: unknown; code?: string }) {
    super(options?.code ?? 'COMMON_NOT_AUTHENTICATED', message, options);
  }
}

/** The caller is authenticated but may not do this. */
export class NotAuthorizedError extends SailError {
  constructor(message: string, options?: { cause?: unknown; code?: string }) {
    super(options?.code ?? 'COMMON_NOT_AUTHORIZED', message, options);
  }
}

/** A component cannot serve yet (or any more): callers should retry. */
export class NotReadyError extends SailError {
  constructor(message: string, options?: { cause?: unknown; code?: string }) {
    super(options?.code ?? 'COMMON_NOT_READY', message, options);
  }
}

/** Too much load from one caller or in all; callers should back off and retry. */
export class ResourceExhaustedError extends SailError {
  constructor(message: string, options?: { cause?: unknown; code?: string }) {
    super(options?.code ?? 'COMMON_RESOURCE_EXHAUSTED', message, options);
  }
}

/** Used after close(). */
export class ClosedError extends SailError {
  constructor(what: string) {
    super('COMMON_CLOSED', `${what} is closed`);
  }
}

/** start() called twice. */
export class AlreadyStartedError extends SailError {
  constructor(what: string) {
    super('COMMON_ALREADY_STARTED', `${what} is already started`);
  }
}

/** Every code defined in common/, for the docs test. */
export const COMMON_ERROR_CODES = [
  'COMMON_INVALID_INPUT',
  'COMMON_CONFIG_INVALID',
  'COMMON_NOT_AUTHENTICATED',
  'COMMON_NOT_AUTHORIZED',
  'COMMON_NOT_READY',
  'COMMON_RESOURCE_EXHAUSTED',
  'COMMON_CLOSED',
  'COMMON_ALREADY_STARTED',
  'COMMON_NOT_FOUND',
  'COMMON_METHOD_NOT_ALLOWED',
  'COMMON_INTERNAL',
] as const;

/** What kind of failure an error is: the one classification gRPC statuses, HTTP statuses and metric labels derive from. */
export type ErrorKind =
  'invalid' | 'unauthenticated' | 'denied' | 'not_ready' | 'exhausted' | 'not_found' | 'internal';

/** Classifies an error by its class (and, for `not_found`, a code ending in NOT_FOUND). */
export function errorKind(err: unknown): ErrorKind {
  if (err instanceof InvalidInputError || err instanceof ConfigError) return 'invalid';
  if (err instanceof NotAuthenticatedError) return 'unauthenticated';
  if (err instanceof NotAuthorizedError) return 'denied';
  if (err instanceof NotReadyError) return 'not_ready';
  if (err instanceof ResourceExhaustedError) return 'exhausted';
  if (err instanceof SailError && err.code.endsWith('NOT_FOUND')) return 'not_found';
  return 'internal';
}

/** A message for any thrown value (grpc-js `getErrorMessage`). */
export function getErrorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
