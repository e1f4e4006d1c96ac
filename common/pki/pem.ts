/** PEM encoding (RFC 7468) of DER blocks. */

const PEM_RE = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;

/** One decoded PEM block. */
export interface PemBlock {
  readonly label: string;
  readonly der: Buffer;
}

/** Encodes DER as a PEM block with 64-character lines and a trailing newline. */
export function toPem(label: string, der: Buffer): string {
  const b64 = der.toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 64) lines.push(b64.slice(i, i + 64));
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** Every PEM block in `text`, in order; text outside blocks is ignored. */
export function parsePem(text: string): PemBlock[] {
  const out: PemBlock[] = [];
  for (const m of text.matchAll(PEM_RE)) {
    const body = (m[2] as string).replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body))
      throw new Error(`invalid base64 in PEM block ${m[1]}`);
    out.push({ label: m[1] as string, der: Buffer.from(body, 'base64') });
  }
  return out;
}

/** The DER of every `CERTIFICATE` block in `text`. */
export function parseCertificatesPem(text: string): Buffer[] {
  return parsePem(text)
    .filter(b => b.label === 'CERTIFICATE')
    .map(b => b.der);
}
