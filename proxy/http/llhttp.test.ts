import * as http from 'node:http';
import type { HeaderMap } from './headers';
import { foldHeaders } from './llhttp';

/** What Node's own IncomingMessage makes of the same raw headers: the behaviour to match. */
function nodeFold(raw: readonly string[]): HeaderMap {
  const msg = new http.IncomingMessage(null as never);
  const add = (
    msg as unknown as { _addHeaderLine(f: string, v: string, d: HeaderMap): void }
  )._addHeaderLine.bind(msg);
  const h: HeaderMap = {};
  for (let i = 0; i < raw.length; i += 2) add(raw[i]!, raw[i + 1]!, h);
  return h;
}

describe('foldHeaders', () => {
  const cases: Record<string, string[]> = {
    'single headers, mixed case': [
      'Host',
      'a',
      'User-Agent',
      'curl',
      'X-Custom',
      'v',
      'accept',
      '*/*',
    ],
    'duplicates Node drops': [
      'Host',
      'a',
      'host',
      'b',
      'Content-Length',
      '1',
      'content-length',
      '2',
      'Authorization',
      'x',
      'AUTHORIZATION',
      'y',
      'user-agent',
      'u1',
      'User-Agent',
      'u2',
      'Age',
      '1',
      'age',
      '2',
      'Server',
      's1',
      'server',
      's2',
      'Retry-After',
      '1',
      'retry-after',
      '2',
    ],
    'duplicates Node joins': [
      'Accept',
      'a',
      'accept',
      'b',
      'X-Forwarded-For',
      '1.1.1.1',
      'x-forwarded-for',
      '2.2.2.2',
      'X-Custom',
      '1',
      'x-custom',
      '2',
      'X-CUSTOM',
      '3',
      'Vary',
      'a',
      'vary',
      'b',
      'Transfer-Encoding',
      'gzip',
      'transfer-encoding',
      'chunked',
    ],
    cookies: ['Cookie', 'a=1', 'cookie', 'b=2', 'Set-Cookie', 's=1', 'set-cookie', 's=2'],
    'one set-cookie': ['Set-Cookie', 's=1'],
    'names Object.prototype has': [
      'constructor',
      'c1',
      'Constructor',
      'c2',
      'toString',
      't',
      'hasOwnProperty',
      'h',
      '__proto__',
      'p',
      'valueOf',
      'v1',
      'valueof',
      'v2',
    ],
    'empty values': ['x-empty', '', 'x-empty', '', 'host', '', 'host', 'h'],
    none: [],
  };
  for (const [name, raw] of Object.entries(cases)) {
    it(`folds ${name} as IncomingMessage does`, () => {
      const ours = foldHeaders(raw);
      const node = nodeFold(raw);
      expect(Object.keys(ours)).toEqual(Object.keys(node));
      expect(ours).toEqual(node);
    });
  }

  it('keeps the first of a dropped duplicate and joins the others in order', () => {
    expect(
      foldHeaders(['Host', 'a', 'host', 'b', 'X-A', '1', 'x-a', '2', 'Cookie', 'a', 'cookie', 'b']),
    ).toEqual({ host: 'a', 'x-a': '1, 2', cookie: 'a; b' });
  });
});
