/**
 * A minimal DER (X.690) encoder and decoder: just what X.509 certificates and PKCS#10 requests
 * need. It exists because the certificate libraries on npm build certificates in JavaScript
 * ASN.1 object models that cost ~1.3 ms a certificate here (BENCHMARKS.md, "why not a library"),
 * while the CA's target is 2,000 signatures/s on one core. Signing and verification themselves
 * always go through native `node:crypto`.
 */
import { Buffer } from 'node:buffer';

/** Thrown for any malformed DER input; the message says what and where. */
export class DerError extends Error {
  override readonly name = 'DerError';
}

/** Universal and context tags used by X.509. */
export const Tag = {
  boolean: 0x01,
  integer: 0x02,
  bitString: 0x03,
  octetString: 0x04,
  null: 0x05,
  oid: 0x06,
  utf8String: 0x0c,
  printableString: 0x13,
  ia5String: 0x16,
  utcTime: 0x17,
  generalizedTime: 0x18,
  sequence: 0x30,
  set: 0x31,
} as const;

/** Bytes of the DER length field for `length` (X.690 §8.1.3: short form below 128). */
function lengthSize(length: number): number {
  if (length < 0x80) return 1;
  let n = 1;
  for (let l = length; l > 0xff; l = Math.floor(l / 256)) n++;
  return 1 + n;
}

/**
 * Encodes one TLV whose content is the concatenation of `content`. One allocation per element:
 * the CA builds a certificate of ~30 elements per request (BENCHMARKS.md).
 */
export function tlv(tag: number, ...content: Buffer[]): Buffer {
  let length = 0;
  for (const c of content) length += c.length;
  const lenBytes = lengthSize(length);
  const out = Buffer.allocUnsafe(1 + lenBytes + length);
  out[0] = tag;
  if (lenBytes === 1) {
    out[1] = length;
  } else {
    out[1] = 0x80 | (lenBytes - 1);
    for (let i = lenBytes, n = length; i >= 2; i--, n = Math.floor(n / 256)) out[i] = n & 0xff;
  }
  let offset = 1 + lenBytes;
  for (const c of content) {
    out.set(c, offset);
    offset += c.length;
  }
  return out;
}

export const sequence = (...content: Buffer[]): Buffer => tlv(Tag.sequence, ...content);
export const set = (...content: Buffer[]): Buffer => tlv(Tag.set, ...content);
export const octetString = (content: Buffer): Buffer => tlv(Tag.octetString, content);
export const nullValue = (): Buffer => Buffer.from([Tag.null, 0]);
export const boolean = (value: boolean): Buffer =>
  tlv(Tag.boolean, Buffer.from([value ? 0xff : 0]));
export const utf8String = (s: string): Buffer => tlv(Tag.utf8String, Buffer.from(s, 'utf8'));
export const ia5String = (s: string): Buffer => tlv(Tag.ia5String, Buffer.from(s, 'ascii'));
/** Context-specific, constructed, explicit tag `[n]`. */
export const explicit = (n: number, ...content: Buffer[]): Buffer => tlv(0xa0 | n, ...content);
/** Context-specific, primitive, implicit tag `[n]` around raw content bytes. */
export const implicitPrimitive = (n: number, content: Buffer): Buffer => tlv(0x80 | n, content);

/** A BIT STRING with no unused bits (keys, signatures). */
export const bitString = (content: Buffer): Buffer => tlv(Tag.bitString, Buffer.from([0]), content);

/** A non-negative INTEGER from big-endian magnitude bytes or a small number. */
export function integer(value: Buffer | number): Buffer {
  let bytes: Buffer;
  if (typeof value === 'number') {
    const hex = value.toString(16);
    bytes = Buffer.from(hex.length % 2 ? `0${hex}` : hex, 'hex');
  } else {
    bytes = value;
  }
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  bytes = bytes.subarray(start);
  if (bytes.length === 0) bytes = Buffer.from([0]);
  if ((bytes[0] as number) & 0x80) bytes = Buffer.concat([Buffer.from([0]), bytes]);
  return tlv(Tag.integer, bytes);
}

const oidCache = new Map<string, Buffer>();

/** An OBJECT IDENTIFIER from its dotted form; cached, since the same few repeat. */
export function oid(dotted: string): Buffer {
  const cached = oidCache.get(dotted);
  if (cached) return cached;
  const arcs = dotted.split('.').map(Number);
  if (arcs.length < 2 || arcs.some(a => !Number.isSafeInteger(a) || a < 0)) {
    throw new DerError(`invalid object identifier ${dotted}`);
  }
  if ((arcs[0] as number) > 2 || ((arcs[0] as number) < 2 && (arcs[1] as number) > 39)) {
    throw new DerError(`invalid object identifier ${dotted}`);
  }
  // X.690 §8.19: the first two arcs share one base-128 subidentifier, 40 * X + Y.
  const out: number[] = [];
  for (const arc of [(arcs[0] as number) * 40 + (arcs[1] as number), ...arcs.slice(2)]) {
    const chunk: number[] = [];
    let n = arc;
    do {
      chunk.unshift(n & 0x7f);
      n = Math.floor(n / 128);
    } while (n > 0);
    for (let i = 0; i < chunk.length - 1; i++) chunk[i] = (chunk[i] as number) | 0x80;
    out.push(...chunk);
  }
  const encoded = tlv(Tag.oid, Buffer.from(out));
  oidCache.set(dotted, encoded);
  return encoded;
}

/** A named BIT STRING (KeyUsage): bit 0 is the most significant bit of the first byte. */
export function namedBits(bits: readonly number[]): Buffer {
  const max = Math.max(...bits);
  const bytes = Buffer.alloc(Math.floor(max / 8) + 1);
  for (const b of bits) bytes[b >> 3] = (bytes[b >> 3] as number) | (0x80 >> (b & 7));
  const unused = 7 - (max & 7);
  return tlv(Tag.bitString, Buffer.from([unused]), bytes);
}

/** X.509 Time: UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5). */
export function time(date: Date): Buffer {
  const year = date.getUTCFullYear();
  if (year >= 1950 && year < 2050) {
    // The common case without the ISO string round trip: YYMMDDHHMMSSZ.
    const out = Buffer.allocUnsafe(15);
    out[0] = Tag.utcTime;
    out[1] = 13;
    const fields = [
      year % 100,
      date.getUTCMonth() + 1,
      date.getUTCDate(),
      date.getUTCHours(),
      date.getUTCMinutes(),
      date.getUTCSeconds(),
    ];
    for (let i = 0; i < 6; i++) {
      const v = fields[i] as number;
      out[2 + 2 * i] = 0x30 + Math.floor(v / 10);
      out[3 + 2 * i] = 0x30 + (v % 10);
    }
    out[14] = 0x5a; // Z
    return out;
  }
  const iso = date.toISOString(); // 2026-11-21T05:38:00.000Z
  const digits = iso.slice(0, 19).replace(/[-:T]/g, '') + 'Z'; // 20261121053800Z
  if (date.getUTCFullYear() < 2050) return tlv(Tag.utcTime, Buffer.from(digits.slice(2), 'ascii'));
  return tlv(Tag.generalizedTime, Buffer.from(digits, 'ascii'));
}

/** One decoded TLV: `raw` is the whole element, `content` its value bytes. */
export interface DerNode {
  readonly tag: number;
  readonly raw: Buffer;
  readonly content: Buffer;
}

/** Reads the TLV at `offset`; throws DerError when it runs past the buffer. */
export function readNode(buf: Buffer, offset = 0): DerNode {
  if (offset + 2 > buf.length) throw new DerError(`truncated element at byte ${offset}`);
  const tag = buf[offset] as number;
  if ((tag & 0x1f) === 0x1f) throw new DerError(`unsupported high tag number at byte ${offset}`);
  let length = buf[offset + 1] as number;
  let header = 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    if (count === 0 || count > 4) throw new DerError(`invalid length at byte ${offset}`);
    if (offset + 2 + count > buf.length) throw new DerError(`truncated length at byte ${offset}`);
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + (buf[offset + 2 + i] as number);
    header += count;
  }
  const end = offset + header + length;
  if (end > buf.length) throw new DerError(`element at byte ${offset} runs past the end`);
  return { tag, raw: buf.subarray(offset, end), content: buf.subarray(offset + header, end) };
}

/** Decodes a whole buffer as exactly one element (no trailing bytes). */
export function decode(buf: Buffer): DerNode {
  const node = readNode(buf, 0);
  if (node.raw.length !== buf.length) throw new DerError('trailing bytes after the element');
  return node;
}

/** The child elements of a constructed element. */
export function children(node: DerNode): DerNode[] {
  if (!(node.tag & 0x20))
    throw new DerError(`element with tag 0x${node.tag.toString(16)} is not constructed`);
  const out: DerNode[] = [];
  for (let offset = 0; offset < node.content.length;) {
    const child = readNode(node.content, offset);
    out.push(child);
    offset += child.raw.length;
  }
  return out;
}

/** Decodes an OBJECT IDENTIFIER element to dotted form. */
export function readOid(node: DerNode): string {
  if (node.tag !== Tag.oid || node.content.length === 0)
    throw new DerError('expected an object identifier');
  const c = node.content;
  const subids: number[] = [];
  let n = 0;
  for (let i = 0; i < c.length; i++) {
    n = n * 128 + ((c[i] as number) & 0x7f);
    if (!((c[i] as number) & 0x80)) {
      subids.push(n);
      n = 0;
    }
  }
  if ((c[c.length - 1] as number) & 0x80) throw new DerError('truncated object identifier');
  const first = subids[0] as number;
  const arcs = [
    first < 80 ? Math.floor(first / 40) : 2,
    first < 80 ? first % 40 : first - 80,
    ...subids.slice(1),
  ];
  return arcs.join('.');
}

/** Decodes a UTCTime or GeneralizedTime element (the forms RFC 5280 allows). */
export function readTime(node: DerNode): Date {
  const s = node.content.toString('ascii');
  let m: RegExpMatchArray | null;
  if (node.tag === Tag.utcTime && (m = /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s))) {
    const yy = Number(m[1]);
    return new Date(
      Date.UTC(yy >= 50 ? 1900 + yy : 2000 + yy, Number(m[2]) - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!),
    );
  }
  if (
    node.tag === Tag.generalizedTime &&
    (m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s))
  ) {
    return new Date(Date.UTC(+m[1]!, Number(m[2]) - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!));
  }
  throw new DerError(`invalid time ${JSON.stringify(s)}`);
}

/** The bytes of a BIT STRING with no unused bits. */
export function readBitString(node: DerNode): Buffer {
  if (node.tag !== Tag.bitString || node.content.length < 1)
    throw new DerError('expected a bit string');
  return node.content.subarray(1);
}
