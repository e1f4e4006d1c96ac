/** One endpoint of one cluster with its per-endpoint state (load, outlier detection, counters). */
import type { Endpoint, TransportChoice } from '../model';
import type { UpstreamHost } from '../types';

/** The transport of endpoints no TransportChoice applies to. */
export const PLAINTEXT_TRANSPORT: TransportChoice = Object.freeze({
  name: 'raw_buffer',
  match: Object.freeze({}),
});

/**
 * The first transport whose `match` is a subset of the endpoint's `envoy.transport_socket_match`
 * metadata (Envoy's transport_socket_matches), else plaintext.
 */
export function chooseTransport(
  transports: readonly TransportChoice[],
  metadata: Readonly<Record<string, string>>,
): TransportChoice {
  for (const t of transports) {
    let ok = true;
    for (const k in t.match) {
      if (metadata[k] !== t.match[k]) {
        ok = false;
        break;
      }
    }
    if (ok) return t;
  }
  return PLAINTEXT_TRANSPORT;
}

/**
 * An UpstreamHost with the mutable state the cluster keeps. The same object lives across config
 * pushes while its address, port and transport stay the same, so connection pools keyed by it
 * survive pushes and its counters keep counting.
 */
export class Host implements UpstreamHost {
  readonly key: string;
  /** Load-balancing weight (≥ 1); may change across pushes. */
  weight = 1;
  /** The health EDS reports. */
  edsHealthy = true;
  priority = 0;
  activeRequests = 0;
  totalRequests = 0;
  failedRequests = 0;
  /** Outlier detection: ejected until `ejectedUntilMs`. */
  ejected = false;
  ejectedUntilMs = 0;
  /** Ejections so far (the ejection time multiplier); decays while the host behaves. */
  timesEjected = 0;
  /** When it was last ejected or returned (the multiplier decays from there). */
  lastEjectionChangeMs = 0;
  consecutive5xx = 0;
  consecutiveGatewayFailures = 0;
  /** ORIGINAL_DST hosts: last pick, for idle clean-up. */
  lastUsedMs = 0;

  constructor(
    readonly cluster: string,
    readonly address: string,
    readonly port: number,
    readonly transport: TransportChoice,
  ) {
    this.key = `${address}:${port}|${transport.name}`;
  }

  /** Usable for new requests: EDS says healthy and outlier detection has not ejected it. */
  get healthy(): boolean {
    return this.edsHealthy && !this.ejected;
  }

  /** Copies what an endpoint says about this host. */
  apply(e: Pick<Endpoint, 'weight' | 'healthy' | 'priority'>): void {
    this.weight = Math.max(1, e.weight);
    this.edsHealthy = e.healthy;
    this.priority = e.priority;
  }
}
