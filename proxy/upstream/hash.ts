/**
 * The proxy's hash for consistent hashing (ring hash, hash policies): 32-bit FNV-1a over the
 * UTF-16 code units, finished with murmur3's avalanche so nearby keys spread over the ring.
 * Not cryptographic; stable across processes, so every proxy maps a key to the same endpoint.
 */
export function hashString(s: string, seed = 0x811c9dc5): number {
  let h = seed >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Combines two hashes (several hash policies on one route), order-sensitive. */
export function combineHashes(a: number, b: number): number {
  return hashString(String(b), (Math.imul(a, 31) ^ 0x9e3779b9) >>> 0);
}
