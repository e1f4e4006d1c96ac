/** The one place errors become gRPC statuses (spire MakeErr, linkerd2 Certify). */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../logging';
import { errorKind, SailError } from '../errors';

/** A status grpc-js can send: code, details and optional metadata. */
export interface StatusLike {
  code: grpc.status;
  details: string;
  metadata?: grpc.Metadata;
}

/**
 * Maps an error to a status and logs it at the level it deserves: caller mistakes at debug or
 * warn, refused identities at warn (an operator may want to know), unknown errors at error with
 * a generic message sent back so internals do not leak.
 */
export function toStatus(err: unknown, log: Logger, method: string): StatusLike {
  const code = err instanceof SailError ? err.code : undefined;
  const withCode = (status: grpc.status, details: string): StatusLike => {
    const metadata = new grpc.Metadata();
    if (code) metadata.set('sail-error-code', code);
    return { code: status, details, metadata };
  };
  const message = (err as Error).message;
  switch (errorKind(err)) {
    case 'invalid':
      log.debug({ err, method }, 'Rejected invalid request');
      return withCode(grpc.status.INVALID_ARGUMENT, message);
    case 'unauthenticated':
      log.warn({ method, code, reason: message }, 'Rejected unauthenticated request');
      return withCode(grpc.status.UNAUTHENTICATED, message);
    case 'denied':
      log.warn({ method, code, reason: message }, 'Denied request');
      return withCode(grpc.status.PERMISSION_DENIED, message);
    case 'not_ready':
      log.debug({ method, reason: message }, 'Refused request while not ready');
      return withCode(grpc.status.UNAVAILABLE, message);
    case 'exhausted':
      log.debug({ method, reason: message }, 'Refused request under load');
      return withCode(grpc.status.RESOURCE_EXHAUSTED, message);
    case 'not_found':
    case 'internal':
      break;
  }
  log.error({ err, method }, 'Request failed');
  return withCode(grpc.status.INTERNAL, 'internal error');
}

/** The Sail error code a status carried, if any. */
export function statusErrorCode(err: unknown): string | undefined {
  const md = (err as { metadata?: grpc.Metadata }).metadata;
  const v = md?.get('sail-error-code')[0];
  return typeof v === 'string' ? v : undefined;
}

/** The numeric gRPC status of a client-side error, if it has one. */
export function statusCode(err: unknown): grpc.status | undefined {
  const c = (err as { code?: unknown }).code;
  return typeof c === 'number' ? (c as grpc.status) : undefined;
}

/**
 * Wraps a promise-returning unary handler into a grpc-js handler that maps errors with toStatus
 * and never lets an exception escape into grpc-js.
 */
export function unaryHandler<Req, Res>(
  log: Logger,
  method: string,
  fn: (call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    fn(call).then(
      res => callback(null, res),
      (err: unknown) => callback(toStatus(err, log, method)),
    );
  };
}
