/**
 * `x-request-id` values: random (version 4) UUIDs, as `crypto.randomUUID()` makes them, with
 * less garbage. Node's randomUUID builds its string from 20 concatenations (about 600 bytes of
 * short-lived strings per call, the largest single allocation of a proxied request on the side
 * that adds the header); here the hex digits are written into a reused buffer and read out as one
 * 36-character string. The random bytes come from the same CSPRNG, 128 UUIDs' worth at a time
 * (randomUUID caches them the same way).
 */
import { randomFillSync } from 'node:crypto';

const PER_FILL = 128;
const random = Buffer.alloc(16 * PER_FILL);
let offset = random.length;
const text = Buffer.alloc(36);
const HEX = Buffer.from('0123456789abcdef', 'latin1');

/** A random UUID, lower case (RFC 9562 version 4, variant 10). */
export function newRequestId(): string {
  if (offset === random.length) {
    randomFillSync(random);
    offset = 0;
  }
  let o = 0;
  for (let i = 0; i < 16; i++) {
    let b = random[offset + i] as number;
    if (i === 6) b = (b & 0x0f) | 0x40;
    else if (i === 8) b = (b & 0x3f) | 0x80;
    if (i === 4 || i === 6 || i === 8 || i === 10) text[o++] = 0x2d;
    text[o++] = HEX[b >> 4] as number;
    text[o++] = HEX[b & 0x0f] as number;
  }
  offset += 16;
  return text.toString('latin1', 0, 36);
}
