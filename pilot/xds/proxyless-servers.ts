/**
 * Which ports each node serves with proxyless gRPC servers (grpc-js-xds's `XdsServer` and its
 * peers in other languages), as their xDS streams show it: a server on HOST:PORT subscribes to the
 * listener `xds.istio.io/grpc/lds/inbound/HOST:PORT`. Clients' auto mTLS needs to know, because
 * such a server cannot serve TLS and plaintext on one port (endpoints.ts autoMtlsEligible). A
 * node may have several streams (one per process); its ports are the union of theirs.
 */
export class ProxylessServerIndex {
  /** node → connection id → that stream's ports. */
  private readonly byNode = new Map<string, Map<string, readonly number[]>>();
  private snapshot: ReadonlyMap<string, ReadonlySet<number>> = new Map();

  /** What push contexts carry: replaced, never mutated, on each change. */
  get current(): ReadonlyMap<string, ReadonlySet<number>> {
    return this.snapshot;
  }

  /** The ports `node` serves now (empty when none). */
  portsOf(node: string): readonly number[] {
    return [...(this.snapshot.get(node) ?? [])].sort((a, b) => a - b);
  }

  /**
   * Records the ports of one stream of `node` (`[]`: none, or the stream closed). True when the
   * node's ports changed.
   */
  set(node: string, connection: string, ports: readonly number[]): boolean {
    const streams = this.byNode.get(node) ?? new Map<string, readonly number[]>();
    if (ports.length > 0) streams.set(connection, ports);
    else streams.delete(connection);
    if (streams.size > 0) this.byNode.set(node, streams);
    else this.byNode.delete(node);
    const union = new Set<number>();
    for (const list of streams.values()) for (const p of list) union.add(p);
    const before = this.snapshot.get(node);
    if ((before?.size ?? 0) === union.size && [...union].every(p => before?.has(p))) return false;
    const next = new Map(this.snapshot);
    if (union.size > 0) next.set(node, union);
    else next.delete(node);
    this.snapshot = next;
    return true;
  }
}
