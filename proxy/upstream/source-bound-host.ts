/**
 * Connections that keep their caller's address (Envoy's `original_src`). Under TPROXY capture
 * with `traffic.originalSourceMark`, the proxy's connection to the local application is bound to
 * the address of the host that called, so the application sees its real caller instead of the
 * proxy. The host's policy route (mark → table 133 → local) brings the application's replies back
 * to the proxy. Only local destinations qualify: a loopback endpoint (the inbound clusters' usual
 * `127.0.0.1`) is reached at the address the caller dialed, since a packet from another host's
 * address cannot go to a loopback address.
 */
import * as net from 'node:net';
import type { DownstreamContext, UpstreamHost } from '../types';

/**
 * `host` as dialed from `source`: pools keyed by it hold only connections bound to that source.
 * Health and load are the base host's, which the cluster keeps counting.
 */
export class SourceBoundHost implements UpstreamHost {
  readonly cluster: string;
  readonly address: string;
  readonly port: number;
  readonly key: string;
  readonly transport: UpstreamHost['transport'];
  readonly source: NonNullable<UpstreamHost['source']>;

  constructor(
    readonly base: UpstreamHost,
    /** The caller's address, the connection's source. */
    address: string,
    /** Where the connection goes: the local address the caller dialed, for a loopback host. */
    destination: string,
  ) {
    this.cluster = base.cluster;
    this.address = base.address;
    this.port = base.port;
    this.transport = base.transport;
    this.key = `${base.key}|from ${address}`;
    this.source = { address, destination };
  }

  get healthy(): boolean {
    return this.base.healthy;
  }

  get activeRequests(): number {
    return this.base.activeRequests;
  }
}

function isLoopback(address: string): boolean {
  return address === '::1' || (net.isIPv4(address) && address.startsWith('127.'));
}

/**
 * The host a connection for `ctx` dials: `host` itself, or, when `ctx` keeps its caller's address
 * and `host` is local (loopback, or the very address the caller dialed), `host` bound to that
 * address. Callers keep `host` for the cluster's bookkeeping.
 */
export function dialHost(host: UpstreamHost, ctx: DownstreamContext): UpstreamHost {
  const source = ctx.originalSource;
  if (source === undefined) return host;
  const dialed = ctx.originalDst.address;
  const destination = isLoopback(host.address)
    ? dialed
    : host.address === dialed
      ? host.address
      : undefined;
  // A remote endpoint would send its replies to the caller, not to us; and a source and a
  // destination of different families cannot make one connection.
  if (destination === undefined || net.isIP(source) !== net.isIP(destination)) return host;
  return new SourceBoundHost(host, source, destination);
}
