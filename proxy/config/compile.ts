/**
 * Envoy v3 resources (protobufjs JSON, as `ENVOY_JSON_OPTIONS` decodes them) → the proxy's
 * compiled model (proxy/model.ts). Each function validates what the proxy relies on and throws a
 * {@link CompileError} naming the resource and field; the xDS client NACKs with that message.
 * CONTRACT STUB: implemented by the config/ owner.
 */
import type { Cluster, Listener, LoadAssignment, RouteTable } from '../model';

/** A resource the proxy cannot use; `message` names the resource and the field path. */
export class CompileError extends Error {
  override readonly name = 'CompileError';
}

/** @throws CompileError */
export function compileListener(_json: Record<string, unknown>): Listener {
  throw new CompileError('not implemented');
}

/** @throws CompileError */
export function compileRouteTable(_json: Record<string, unknown>): RouteTable {
  throw new CompileError('not implemented');
}

/** @throws CompileError */
export function compileCluster(_json: Record<string, unknown>): Cluster {
  throw new CompileError('not implemented');
}

/** @throws CompileError */
export function compileLoadAssignment(_json: Record<string, unknown>): LoadAssignment {
  throw new CompileError('not implemented');
}
