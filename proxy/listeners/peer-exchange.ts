/**
 * Sail's TCP peer metadata exchange, in the spirit of Istio's ALPN-negotiated
 * `istio-peer-exchange` (istio/proxy `metadata_exchange`), but with its own ALPN value
 * ({@link PEER_EXCHANGE_ALPN}) and magic, so an Envoy peer never takes part. Over mesh mTLS for
 * tcp_proxy traffic the outbound proxy offers the ALPN before the transport's own; when the
 * inbound proxy selects it, each side sends one frame before any application byte:
 *
 *   magic (4 bytes, 0x5341494c `SAIL`) | length (4 bytes, big-endian) | payload (length bytes)
 *
 * The payload is the PEER_METADATA_HEADER value (base64url JSON of PeerMetadata), so both
 * transports share one encoding and one decode cache (Labeler.decodePeerMetadata). The outbound
 * side writes its frame right after the handshake and may send application bytes right behind
 * it; the inbound side reads the client's frame, answers with its own, then proxies. A frame that
 * is malformed, too long or late closes the connection: past that point neither side could tell
 * metadata from application bytes.
 */
import type { UpstreamTls } from '../model';
import { PEER_EXCHANGE_ALPN } from '../types';

/** `SAIL`: the first four bytes of a frame. */
export const PEER_EXCHANGE_MAGIC = 0x5341494c;
/** Magic and length. */
export const PEER_EXCHANGE_HEADER_BYTES = 8;
/** Longest payload accepted; a longer announced length is refused before it is read. */
export const MAX_PEER_EXCHANGE_PAYLOAD_BYTES = 16 * 1024;
/** How long a side waits for the other's frame before closing the connection. */
export const PEER_EXCHANGE_TIMEOUT_MS = 5_000;

/** What {@link parsePeerExchangeFrame} found at the start of a buffer. */
export type PeerExchangeParse =
  /** Not enough bytes yet; nothing is wrong so far. */
  | { readonly kind: 'incomplete' }
  /** Not a frame: wrong magic or a length over the limit. */
  | { readonly kind: 'invalid'; readonly reason: string }
  /** A whole frame; application bytes start at `frameBytes`. */
  | { readonly kind: 'frame'; readonly payload: string; readonly frameBytes: number };

const INCOMPLETE: PeerExchangeParse = Object.freeze({ kind: 'incomplete' });
const MAGIC_BYTES = Buffer.from([0x53, 0x41, 0x49, 0x4c]);

/** Frames `payload` (ASCII: a PEER_METADATA_HEADER value). The result may be shared by sockets. */
export function encodePeerExchangeFrame(payload: string): Buffer {
  const body = Buffer.from(payload, 'latin1');
  const frame = Buffer.allocUnsafe(PEER_EXCHANGE_HEADER_BYTES + body.length);
  frame.writeUInt32BE(PEER_EXCHANGE_MAGIC, 0);
  frame.writeUInt32BE(body.length, 4);
  body.copy(frame, PEER_EXCHANGE_HEADER_BYTES);
  return frame;
}

/**
 * Parses the frame at the start of `buf` (everything received so far; pure). Wrong magic is
 * reported as soon as the bytes there differ, and an oversized length as soon as it is complete,
 * so garbage is refused without waiting for more of it.
 */
export function parsePeerExchangeFrame(buf: Buffer): PeerExchangeParse {
  const magicBytes = Math.min(buf.length, 4);
  if (buf.compare(MAGIC_BYTES, 0, magicBytes, 0, magicBytes) !== 0)
    return { kind: 'invalid', reason: 'bad magic' };
  if (buf.length < PEER_EXCHANGE_HEADER_BYTES) return INCOMPLETE;
  const length = buf.readUInt32BE(4);
  if (length > MAX_PEER_EXCHANGE_PAYLOAD_BYTES)
    return { kind: 'invalid', reason: `payload of ${length} bytes is over the limit` };
  const frameBytes = PEER_EXCHANGE_HEADER_BYTES + length;
  if (buf.length < frameBytes) return INCOMPLETE;
  return {
    kind: 'frame',
    payload: buf.toString('latin1', PEER_EXCHANGE_HEADER_BYTES, frameBytes),
    frameBytes,
  };
}

/** Connect options per upstream TLS config, so connections share one ALPN array. */
const connectOptions = new WeakMap<UpstreamTls, { alpn: readonly string[] }>();

/**
 * `ClusterManager.connect` options toward a mesh mTLS upstream: {@link PEER_EXCHANGE_ALPN} first,
 * then the transport's ALPN (Istio's `istio-peer-exchange`, `istio`, which the peer's inbound
 * mTLS chain matches on). Cached per config object.
 */
export function peerExchangeConnectOptions(config: UpstreamTls): { alpn: readonly string[] } {
  let options = connectOptions.get(config);
  if (!options) {
    const alpn = config.alpn.filter(p => p !== PEER_EXCHANGE_ALPN);
    options = { alpn: Object.freeze([PEER_EXCHANGE_ALPN, ...alpn]) };
    connectOptions.set(config, options);
  }
  return options;
}
