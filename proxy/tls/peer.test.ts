import * as crypto from 'node:crypto';
import type * as tls from 'node:tls';
import {
  Oid,
  createCertificate,
  encodeName,
  generateKey,
  keyIdentifier,
  randomSerial,
} from '../../common/pki';
import type { SanMatcher, StringMatcher } from '../model';
import { matchString, sanChecker } from './peer';

const m = (kind: StringMatcher['kind'], value: string, ignoreCase = false): StringMatcher => ({
  kind,
  value,
  ignoreCase,
  ...(kind === 'regex' ? { regex: new RegExp(`^(?:${value})$`) } : {}),
});

describe('matchString', () => {
  it.each([
    [m('exact', 'a.b'), 'a.b', true],
    [m('exact', 'a.b'), 'A.B', false],
    [m('exact', 'a.b', true), 'A.B', true],
    [m('prefix', 'spiffe://td/'), 'spiffe://td/ns/x', true],
    [m('prefix', 'spiffe://td/'), 'spiffe://other/ns/x', false],
    [m('suffix', '/sa/web'), 'spiffe://td/ns/x/sa/web', true],
    [m('contains', '/ns/x/'), 'spiffe://td/ns/x/sa/web', true],
    [m('regex', 'spiffe://td/ns/[a-z]+/sa/web'), 'spiffe://td/ns/abc/sa/web', true],
    [m('regex', 'spiffe://td/ns/[a-z]+/sa/web'), 'spiffe://td/ns/abc/sa/webx', false],
  ])('%o on %s → %s', (matcher, value, want) => {
    expect(matchString(matcher, value)).toBe(want);
  });
});

describe('sanChecker', () => {
  let raw: Buffer;
  beforeAll(async () => {
    const key = await generateKey('ec-p256');
    const spki = crypto.createPublicKey(key).export({ type: 'spki', format: 'der' });
    const subject = [[Oid.commonName, 'peer']] as const;
    raw = createCertificate(
      {
        serial: randomSerial(),
        subject,
        publicKeySpki: spki,
        notBefore: new Date(Date.now() - 60_000),
        notAfter: new Date(Date.now() + 3600_000),
        isCa: false,
        sans: {
          uris: ['spiffe://td/ns/a/sa/b'],
          dnsNames: ['svc.example.com'],
          ips: ['10.1.2.3'],
        },
      },
      { key, subjectDer: encodeName(subject), keyId: keyIdentifier(spki) },
    );
  });

  const check = (matchers: SanMatcher[]) =>
    sanChecker(matchers)('10.0.0.1', { raw } as unknown as tls.PeerCertificate);

  it.each<[string, SanMatcher[], boolean]>([
    ['no matchers', [], true],
    ['URI exact', [{ sanType: 'URI', matcher: m('exact', 'spiffe://td/ns/a/sa/b') }], true],
    ['URI mismatch', [{ sanType: 'URI', matcher: m('exact', 'spiffe://td/ns/a/sa/c') }], false],
    ['DNS suffix', [{ sanType: 'DNS', matcher: m('suffix', '.example.com') }], true],
    [
      'DNS value under URI type',
      [{ sanType: 'URI', matcher: m('exact', 'svc.example.com') }],
      false,
    ],
    ['IP exact', [{ sanType: 'IP_ADDRESS', matcher: m('exact', '10.1.2.3') }], true],
    ['EMAIL none', [{ sanType: 'EMAIL', matcher: m('contains', '@') }], false],
    [
      'any of several',
      [
        { sanType: 'URI', matcher: m('exact', 'spiffe://td/ns/a/sa/c') },
        { sanType: 'DNS', matcher: m('exact', 'svc.example.com') },
      ],
      true,
    ],
  ])('%s', (_name, matchers, ok) => {
    const err = check(matchers);
    if (ok) expect(err).toBeUndefined();
    else expect(err?.message).toMatch(/match no allowed subject alt name/);
  });
});
