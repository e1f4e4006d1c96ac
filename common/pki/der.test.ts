import * as crypto from 'node:crypto';
import * as der from './der';
import { DerError, Tag } from './der';

const hex = (b: Buffer): string => b.toString('hex');

describe('tlv lengths', () => {
  it.each([
    { name: 'empty content uses the short form', length: 0, header: '0400' },
    { name: '127 bytes is the largest short form', length: 127, header: '047f' },
    { name: '128 bytes needs one length byte', length: 128, header: '048180' },
    { name: '255 bytes fits one length byte', length: 255, header: '0481ff' },
    { name: '256 bytes needs two length bytes', length: 256, header: '04820100' },
    { name: '65536 bytes needs three length bytes', length: 65536, header: '0483010000' },
    { name: '65535 bytes fits two length bytes', length: 65535, header: '0482ffff' },
    {
      name: '16777216 bytes needs four length bytes',
      length: 16777216,
      header: '048401000000',
    },
  ])('$name', ({ length, header }) => {
    const content = crypto.randomBytes(length);
    const encoded = der.octetString(content);
    expect(hex(encoded.subarray(0, header.length / 2))).toBe(header);
    expect(encoded.length).toBe(header.length / 2 + length);
    const node = der.decode(encoded);
    expect(node.tag).toBe(Tag.octetString);
    expect(node.content.equals(content)).toBe(true);
    expect(node.raw.equals(encoded)).toBe(true);
  });

  it('concatenates several content buffers', () => {
    expect(hex(der.tlv(Tag.sequence, Buffer.from([1]), Buffer.from([2, 3])))).toBe('3003010203');
  });
});

describe('primitive encoders', () => {
  it.each([
    { name: 'zero', value: 0 as number | Buffer, want: '020100' },
    { name: 'a small number', value: 127, want: '02017f' },
    { name: 'a number with the high bit set gets a leading zero', value: 128, want: '02020080' },
    { name: 'a multi-byte number', value: 0x0102, want: '02020102' },
    { name: 'leading zero bytes are stripped', value: Buffer.from([0, 0, 5]), want: '020105' },
    {
      name: 'a buffer with the high bit set stays positive',
      value: Buffer.from([0xff, 1]),
      want: '020300ff01',
    },
    { name: 'an all-zero buffer is zero', value: Buffer.from([0, 0]), want: '020100' },
    { name: 'an empty buffer is zero', value: Buffer.alloc(0), want: '020100' },
  ])('integer: $name', ({ value, want }) => {
    expect(hex(der.integer(value))).toBe(want);
  });

  it.each([
    { name: 'true is 0xff (DER)', value: true, want: '0101ff' },
    { name: 'false is 0x00', value: false, want: '010100' },
  ])('boolean: $name', ({ value, want }) => {
    expect(hex(der.boolean(value))).toBe(want);
  });

  it('encodes NULL, UTF8String, IA5String and a BIT STRING with no unused bits', () => {
    expect(hex(der.nullValue())).toBe('0500');
    expect(hex(der.utf8String('é'))).toBe('0c02c3a9');
    expect(hex(der.ia5String('ab'))).toBe('16026162');
    expect(hex(der.bitString(Buffer.from([0xaa])))).toBe('030200aa');
    expect(
      der.readBitString(der.decode(der.bitString(Buffer.from([1, 2])))).equals(Buffer.from([1, 2])),
    ).toBe(true);
  });

  it('encodes explicit (constructed) and implicit (primitive) context tags', () => {
    expect(hex(der.explicit(0, der.integer(2)))).toBe('a003020102');
    expect(hex(der.implicitPrimitive(6, Buffer.from('u')))).toBe('860175');
  });

  it.each([
    { name: 'KeyUsage digitalSignature + keyEncipherment', bits: [0, 2], want: '030205a0' },
    {
      name: 'KeyUsage digitalSignature + keyCertSign + cRLSign',
      bits: [0, 5, 6],
      want: '03020186',
    },
    { name: 'a bit in the second byte', bits: [8], want: '0303070080' },
  ])('namedBits: $name', ({ bits, want }) => {
    expect(hex(der.namedBits(bits))).toBe(want);
  });
});

describe('object identifiers', () => {
  it.each([
    {
      name: 'sha256WithRSAEncryption',
      oid: '1.2.840.113549.1.1.11',
      want: '06092a864886f70d01010b',
    },
    { name: 'subjectAltName', oid: '2.5.29.17', want: '0603551d11' },
    { name: 'ecdsa-with-SHA384', oid: '1.2.840.10045.4.3.3', want: '06082a8648ce3d040303' },
    { name: 'Ed25519', oid: '1.3.101.112', want: '06032b6570' },
    { name: 'an arc of exactly 128', oid: '1.2.128', want: '06032a8100' },
  ])('$name round-trips', ({ oid, want }) => {
    const encoded = der.oid(oid);
    expect(hex(encoded)).toBe(want);
    expect(der.readOid(der.decode(encoded))).toBe(oid);
  });

  it.each(['1', '', '1.2.x', '1.-2.3', '1.2.3.4.5.6.7.8.9.99999999999999999999'])(
    'rejects the invalid identifier %j',
    bad => {
      expect(() => der.oid(bad)).toThrow(DerError);
      expect(() => der.oid(bad)).toThrow(/invalid object identifier/);
    },
  );

  it('refuses to read an element that is not an object identifier', () => {
    expect(() => der.readOid(der.decode(der.integer(1)))).toThrow(
      new DerError('expected an object identifier'),
    );
    expect(() => der.readOid(der.decode(Buffer.from([Tag.oid, 0])))).toThrow(DerError);
  });
});

describe('times', () => {
  it.each([
    {
      name: 'a date in 2026 is UTCTime',
      date: '2026-11-21T05:38:09.123Z',
      tag: Tag.utcTime,
      text: '261121053809Z',
    },
    {
      name: 'the last second of 2049 is UTCTime',
      date: '2049-12-31T23:59:59Z',
      tag: Tag.utcTime,
      text: '491231235959Z',
    },
    {
      name: 'the first second of 2050 is GeneralizedTime',
      date: '2050-01-01T00:00:00Z',
      tag: Tag.generalizedTime,
      text: '20500101000000Z',
    },
    {
      name: 'a date far in the future is GeneralizedTime',
      date: '9999-12-31T23:59:59Z',
      tag: Tag.generalizedTime,
      text: '99991231235959Z',
    },
  ])('$name (RFC 5280 §4.1.2.5)', ({ date, tag, text }) => {
    const encoded = der.time(new Date(date));
    const node = der.decode(encoded);
    expect(node.tag).toBe(tag);
    expect(node.content.toString('ascii')).toBe(text);
    // Milliseconds are dropped: X.509 times have second precision.
    expect(der.readTime(node).toISOString()).toBe(
      new Date(Math.floor(Date.parse(date) / 1000) * 1000).toISOString(),
    );
  });

  it('encodes every UTCTime field the way the ISO form reads (1950..2049)', () => {
    const start = Date.UTC(1950, 0, 1);
    const end = Date.UTC(2050, 0, 1);
    const dates = [start, end - 1000, Date.UTC(2000, 1, 29, 9, 5, 7)];
    for (let i = 0; i < 500; i++) dates.push(start + Math.floor(Math.random() * (end - start)));
    for (const ms of dates) {
      const date = new Date(ms);
      const iso = date.toISOString().slice(2, 19).replace(/[-:T]/g, '') + 'Z';
      const node = der.decode(der.time(date));
      expect(node.tag).toBe(Tag.utcTime);
      expect(node.content.toString('ascii')).toBe(iso);
    }
  });

  it('reads two-digit UTCTime years 50..99 as 19xx', () => {
    const node = der.decode(der.tlv(Tag.utcTime, Buffer.from('500101000000Z')));
    expect(der.readTime(node).toISOString()).toBe('1950-01-01T00:00:00.000Z');
  });

  it.each([
    { name: 'a UTCTime without seconds', tag: Tag.utcTime, text: '2611210538Z' },
    { name: 'a UTCTime with a time zone offset', tag: Tag.utcTime, text: '261121053809+0100' },
    {
      name: 'a GeneralizedTime with fractional seconds',
      tag: Tag.generalizedTime,
      text: '20261121053809.5Z',
    },
    { name: 'a four-digit year tagged UTCTime', tag: Tag.utcTime, text: '20261121053809Z' },
    { name: 'an integer instead of a time', tag: Tag.integer, text: '261121053809Z' },
  ])('rejects $name', ({ tag, text }) => {
    expect(() => der.readTime(der.decode(der.tlv(tag, Buffer.from(text))))).toThrow(
      new DerError(`invalid time ${JSON.stringify(text)}`),
    );
  });
});

describe('decoding', () => {
  const nested = der.sequence(
    der.integer(1),
    der.sequence(der.oid('2.5.4.3'), der.utf8String('x')),
    der.nullValue(),
  );

  it('walks constructed elements', () => {
    const [one, inner, nul] = der.children(der.decode(nested));
    expect(one?.tag).toBe(Tag.integer);
    expect(nul?.tag).toBe(Tag.null);
    const [type, value] = der.children(inner!);
    expect(der.readOid(type!)).toBe('2.5.4.3');
    expect(value?.content.toString()).toBe('x');
  });

  it('reads an element at an offset', () => {
    const buf = Buffer.concat([der.integer(7), der.nullValue()]);
    const second = der.readNode(buf, 3);
    expect(second.tag).toBe(Tag.null);
    expect(second.raw.length).toBe(2);
  });

  it('round-trips a SubjectPublicKeyInfo from node:crypto unchanged', () => {
    const { publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const spki = publicKey.export({ type: 'spki', format: 'der' });
    const node = der.decode(spki);
    const [alg, bits] = der.children(node);
    const [algOid, curveOid] = der.children(alg!);
    expect(der.readOid(algOid!)).toBe('1.2.840.10045.2.1');
    expect(der.readOid(curveOid!)).toBe('1.2.840.10045.3.1.7');
    expect(der.readBitString(bits!).length).toBe(65);
    expect(der.sequence(alg!.raw, bits!.raw).equals(spki)).toBe(true);
  });

  it.each([
    { name: 'an empty buffer', bytes: '', message: 'truncated element at byte 0' },
    { name: 'a lone tag byte', bytes: '30', message: 'truncated element at byte 0' },
    {
      name: 'content shorter than its length',
      bytes: '3005020101',
      message: 'element at byte 0 runs past the end',
    },
    {
      name: 'an indefinite length (BER, not DER)',
      bytes: '30800000',
      message: 'invalid length at byte 0',
    },
    { name: 'a five-byte length', bytes: '3085000000000100', message: 'invalid length at byte 0' },
    {
      name: 'a long-form length cut short',
      bytes: '308201',
      message: 'truncated length at byte 0',
    },
    {
      name: 'a high tag number',
      bytes: '1f8100',
      message: 'unsupported high tag number at byte 0',
    },
    { name: 'trailing bytes', bytes: '05000500', message: 'trailing bytes after the element' },
  ])('decode rejects $name with a DerError', ({ bytes, message }) => {
    expect(() => der.decode(Buffer.from(bytes, 'hex'))).toThrow(new DerError(message));
  });

  it('rejects a child that runs past its parent', () => {
    // SEQUENCE of length 3 holding an INTEGER that claims 5 bytes.
    const node = der.decode(Buffer.from('3003020501', 'hex'));
    expect(() => der.children(node)).toThrow(new DerError('element at byte 0 runs past the end'));
  });

  it('refuses the children of a primitive element', () => {
    expect(() => der.children(der.decode(der.integer(1)))).toThrow(
      new DerError('element with tag 0x2 is not constructed'),
    );
  });

  it('refuses a BIT STRING read from another type or with no unused-bits byte', () => {
    expect(() => der.readBitString(der.decode(der.integer(1)))).toThrow(
      new DerError('expected a bit string'),
    );
    expect(() => der.readBitString(der.decode(Buffer.from('0300', 'hex')))).toThrow(DerError);
  });

  it('every truncation of a valid structure fails with a DerError, never another exception', () => {
    for (let n = 0; n < nested.length; n++) {
      const cut = nested.subarray(0, n);
      expect(() => der.decode(cut)).toThrow(DerError);
    }
  });

  it('DerError names itself', () => {
    const err = new DerError('x');
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe('DerError');
  });
});
