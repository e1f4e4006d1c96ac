/**
 * The peer metadata header (`x-sail-peer-metadata`, PEER_METADATA_HEADER): base64url of the JSON
 * of a {@link PeerMetadata}. Sail's counterpart of Istio's `x-envoy-peer-metadata`, simplified to
 * the five fields the standard metric labels need.
 */
import type { PeerMetadata } from '../types';

/** A header value longer than this is refused unread (it would only be abuse). */
export const MAX_PEER_METADATA_LENGTH = 2048;
/** Longest value of one field; longer ones make the header malformed. */
const MAX_FIELD_LENGTH = 253;
const FIELDS = ['workload', 'namespace', 'app', 'version', 'principal'] as const;
const BASE64URL_RE = /^[A-Za-z0-9_-]+={0,2}$/;

/** Encodes `meta` as a header value: base64url (no padding) of its JSON. */
export function encodePeerMetadata(meta: PeerMetadata): string {
  const json = JSON.stringify({
    workload: meta.workload,
    namespace: meta.namespace,
    app: meta.app,
    version: meta.version,
    principal: meta.principal,
  });
  return Buffer.from(json, 'utf8').toString('base64url');
}

/**
 * Parses a header value; undefined when it is not base64url JSON of an object with the five string
 * fields (each at most 253 characters, and no control characters: the values become metric labels
 * and log fields). Unknown fields are ignored, so a newer peer can add some. The result is frozen.
 */
export function decodePeerMetadataValue(value: string): PeerMetadata | undefined {
  if (value.length === 0 || value.length > MAX_PEER_METADATA_LENGTH) return undefined;
  // Buffer.from(…, 'base64url') skips characters outside the alphabet instead of failing; check.
  if (!BASE64URL_RE.test(value)) return undefined;
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(value, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) return undefined;
  const src = doc as Record<string, unknown>;
  const out: Record<string, string> = {};
  for (const field of FIELDS) {
    const v = src[field];
    if (typeof v !== 'string' || v.length > MAX_FIELD_LENGTH || hasControlCharacter(v))
      return undefined;
    out[field] = v;
  }
  return Object.freeze(out as unknown as PeerMetadata);
}

function hasControlCharacter(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}
