/**
 * Envoy v3 resources (protobufjs JSON, as `ENVOY_JSON_OPTIONS` decodes them) → the proxy's
 * compiled model (proxy/model.ts). Each function validates what the proxy relies on, fills in
 * Envoy's defaults, and throws a {@link CompileError} naming the resource and field
 * (`listener virtualInbound: filterChains[0].filters[0]: unsupported network filter …`); the xDS
 * client NACKs with that message. Features that would change what happens to traffic and that the
 * proxy does not implement are errors, never silently dropped; fields that only tune Envoy
 * (stats, buffers, access logs, tracing) are ignored.
 *
 * The functions are pure and run once per push per resource. Regexes are compiled here (and
 * cached across pushes); the results are not frozen, but must be treated as immutable.
 */
import type { Cluster, Listener, LoadAssignment, RouteTable } from '../model';
import { compileAssignment, cluster } from './compile-cluster';
import { CompileError, isObj, type Json, type Where } from './compile-common';
import { listener } from './compile-listener';
import { routeTable } from './compile-routes';

export { CompileError };

/**
 * Runs `body` for the resource `json` of `kind`, named by `json[nameKey]`. Anything other than a
 * CompileError escaping `body` is a bug; it still becomes a CompileError so that a malformed
 * resource is NACKed rather than crashing the xDS client.
 */
function compile<T>(
  kind: string,
  nameKey: string,
  json: unknown,
  body: (w: Where, j: Json) => T,
): T {
  if (!isObj(json)) throw new CompileError(`${kind} (unnamed): expected an object`);
  const name = json[nameKey];
  if (typeof name !== 'string' || name === '')
    throw new CompileError(`${kind} (unnamed): ${nameKey}: required`);
  const w: Where = { kind, name };
  try {
    return body(w, json);
  } catch (err) {
    if (err instanceof CompileError) throw err;
    throw new CompileError(
      `${kind} ${name}: internal error: ${(err as Error)?.message ?? String(err)}`,
      {
        cause: err,
      },
    );
  }
}

/** Compiles an `envoy.config.listener.v3.Listener`. @throws CompileError */
export function compileListener(json: Record<string, unknown>): Listener {
  return compile('listener', 'name', json, listener);
}

/** Compiles an `envoy.config.route.v3.RouteConfiguration` (RDS). @throws CompileError */
export function compileRouteTable(json: Record<string, unknown>): RouteTable {
  return compile('route configuration', 'name', json, (w, j) => routeTable(w, j, ''));
}

/** Compiles an `envoy.config.cluster.v3.Cluster`. @throws CompileError */
export function compileCluster(json: Record<string, unknown>): Cluster {
  return compile('cluster', 'name', json, cluster);
}

/**
 * Compiles an `envoy.config.endpoint.v3.ClusterLoadAssignment` (EDS: addresses must be IPs).
 * @throws CompileError
 */
export function compileLoadAssignment(json: Record<string, unknown>): LoadAssignment {
  return compile('load assignment', 'clusterName', json, (w, j) =>
    compileAssignment(w, j, '', false),
  );
}
