/** Pilot's error codes (registry; docs/errors.md lists each under "## pilot"). */
import {
  ConfigError,
  InvalidInputError,
  NotAuthenticatedError,
  NotAuthorizedError,
  NotReadyError,
  SailError,
} from '../common/errors';

export const PILOT_ERROR_CODES = [
  'PILOT_CONFIG_PARSE',
  'PILOT_CONFIG_INVALID',
  'PILOT_KIND_UNKNOWN',
  'PILOT_CONFIG_CONFLICT',
  'PILOT_CONFIG_NOT_FOUND',
  'PILOT_STORE_UNAVAILABLE',
  'PILOT_STORE_BATCH_TOO_LARGE',
  'PILOT_NOT_READY',
  'PILOT_REGISTRATION_INVALID',
  'PILOT_REGISTRATION_DENIED',
  'PILOT_REGISTRATION_UNAUTHENTICATED',
  'PILOT_XDS_UNAUTHENTICATED',
  'PILOT_XDS_DENIED',
  'PILOT_XDS_REQUEST_INVALID',
] as const;

export type PilotErrorCode = (typeof PILOT_ERROR_CODES)[number];

/** One problem found in a document: where it is, and what is wrong. */
export interface ConfigProblem {
  /** File path, `-` for stdin, or `request` for an API body. */
  readonly source: string;
  /** 0-based index of the document in its file (multi-document YAML), when known. */
  readonly index?: number;
  /** `Kind namespace/name`, when known. */
  readonly object?: string;
  /** Field path, e.g. `spec.http[0].route[1].weight`. */
  readonly path?: string;
  readonly message: string;
}

/** Formats a problem as `FILE[#INDEX] (Kind ns/name): PATH: MESSAGE`. */
export function formatProblem(p: ConfigProblem): string {
  const where = p.index === undefined ? p.source : `${p.source}#${p.index}`;
  const obj = p.object ? ` (${p.object})` : '';
  const path = p.path ? `${p.path}: ` : '';
  return `${where}${obj}: ${path}${p.message}`;
}

/** Documents that could not be parsed or failed validation; nothing was applied. */
export class ConfigInvalidError extends InvalidInputError {
  readonly problems: readonly ConfigProblem[];
  constructor(
    problems: readonly ConfigProblem[],
    code:
      'PILOT_CONFIG_INVALID' | 'PILOT_CONFIG_PARSE' | 'PILOT_KIND_UNKNOWN' = 'PILOT_CONFIG_INVALID',
  ) {
    super(problems.map(formatProblem).join('\n'), { code });
    this.problems = problems;
  }
}

/** A write named a resourceVersion that is not the stored one. */
export class ConfigConflictError extends SailError {
  constructor(message: string) {
    super('PILOT_CONFIG_CONFLICT', message);
  }
}

/** A get or delete named an object that does not exist. */
export class ConfigNotFoundError extends SailError {
  constructor(message: string) {
    super('PILOT_CONFIG_NOT_FOUND', message);
  }
}

/** The store's backend (etcd) cannot be reached; callers retry. */
export class StoreUnavailableError extends NotReadyError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, { ...options, code: 'PILOT_STORE_UNAVAILABLE' });
  }
}

/** A write changes more objects than one etcd transaction may hold (etcd `--max-txn-ops`). */
export const storeBatchTooLarge = (message: string) =>
  new InvalidInputError(message, { code: 'PILOT_STORE_BATCH_TOO_LARGE' });

export const pilotNotReady = (message: string) =>
  new NotReadyError(message, { code: 'PILOT_NOT_READY' });

export const registrationInvalid = (message: string) =>
  new InvalidInputError(message, { code: 'PILOT_REGISTRATION_INVALID' });

export const registrationDenied = (message: string) =>
  new NotAuthorizedError(message, { code: 'PILOT_REGISTRATION_DENIED' });

export const registrationUnauthenticated = (message: string) =>
  new NotAuthenticatedError(message, { code: 'PILOT_REGISTRATION_UNAUTHENTICATED' });

export const xdsUnauthenticated = (message: string) =>
  new NotAuthenticatedError(message, { code: 'PILOT_XDS_UNAUTHENTICATED' });

export const xdsDenied = (message: string) =>
  new NotAuthorizedError(message, { code: 'PILOT_XDS_DENIED' });

export const xdsRequestInvalid = (message: string) =>
  new InvalidInputError(message, { code: 'PILOT_XDS_REQUEST_INVALID' });

export { ConfigError };
