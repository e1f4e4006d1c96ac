import * as fs from 'node:fs';
import * as path from 'node:path';
import { ConfigError, SailError } from '../common/errors';
import * as errors from './errors';

/** The codes in the first column of the tables under `## proxy` of docs/errors.md. */
function documentedProxyCodes(): string[] {
  const text = fs.readFileSync(path.join(__dirname, '..', 'docs', 'errors.md'), 'utf8');
  const codes: string[] = [];
  let inProxy = false;
  for (const line of text.split('\n')) {
    const heading = /^## +(.+?)\s*$/.exec(line);
    if (heading) inProxy = heading[1] === 'proxy';
    const row = /^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|/.exec(line);
    if (inProxy && row) codes.push(row[1] as string);
  }
  return codes;
}

describe('proxy errors', () => {
  it('has unique PROXY_ codes', () => {
    expect(new Set(errors.PROXY_ERROR_CODES).size).toBe(errors.PROXY_ERROR_CODES.length);
    for (const code of errors.PROXY_ERROR_CODES) expect(code).toMatch(/^PROXY_[A-Z_]+$/);
  });

  it('documents every code under "## proxy" in docs/errors.md, and no other', () => {
    expect(documentedProxyCodes().sort()).toEqual([...errors.PROXY_ERROR_CODES].sort());
  });

  it.each([
    new errors.AdminNotLoopbackError('x'),
    new errors.ListenFailedError('x'),
    new errors.NoCertificateError('x'),
    new errors.StartAbortedError(),
  ])('$name carries a registered code', err => {
    expect(err).toBeInstanceOf(SailError);
    expect(err.name).toBe(err.constructor.name);
    expect(errors.PROXY_ERROR_CODES).toContain(err.code);
  });

  it('makes a remote admin address a configuration error (exit 2)', () => {
    expect(new errors.AdminNotLoopbackError('x')).toBeInstanceOf(ConfigError);
  });
});
