import { compileRe2, re2Substitution } from './compile-regex';

describe('compileRe2 (anchored)', () => {
  it.each([
    // [pattern, matches, does not match]
    ['/api/.*', ['/api/', '/api/x/y'], ['/apix', 'x/api/']],
    ['a|b', ['a', 'b'], ['ab', '']],
    ['/v[0-9]+/r', ['/v12/r'], ['/v/r', '/v1/rx']],
    ['(?i)abc', ['ABC', 'aBc'], ['abcd']],
    ['(?s)a.b', ['a\nb'], ['ab']],
    ['a.b', ['axb'], ['a\nb']],
    ['\\Aabc\\z', ['abc'], ['abc\n']],
    ['\\Qa.b*\\E+', ['a.b*', 'a.b**'], ['axb']],
    ['[[:digit:]]+', ['0123'], ['12a']],
    ['[[:alpha:][:digit:]_-]+', ['a-1_b'], ['a b']],
    ['[]a]+', [']a]'], ['b']],
    ['\\s+', [' \t'], ['\u00a0']],
    ['\\S+', ['ab'], ['a b']],
    ['[\\s,]+', [' ,\t'], ['x']],
    ['(?P<ver>v[0-9])/x', ['v1/x'], ['v/x']],
    ['(?<ver>v[0-9])/x', ['v1/x'], ['v/x']],
    ['a{2,3}', ['aa', 'aaa'], ['a', 'aaaa']],
    ['a{,2}', ['a{,2}'], ['aa']],
    ['x{', ['x{'], ['x']],
    ['\\-\\#\\<', ['-#<'], ['x']],
    ['[a\\-z]+', ['a-z'], ['b']],
    ['\\x41\\x{42}\\101', ['ABA'], ['AB']],
    ['\\pL+', ['abcé'], ['a1']],
    ['\\p{Greek}+', ['αβ'], ['ab']],
    ['\\PL', ['1'], ['a']],
    ['.', ['😀'], ['😀😀']],
    ['(?m)a$', ['a'], ['a\n']],
    ['a*?b', ['aab'], ['aa']],
    ['x/y', ['x/y'], ['xy']],
  ])('%s', (pattern, yes, no) => {
    const re = compileRe2(pattern, true);
    for (const s of yes) expect(re.test(s)).toBe(true);
    for (const s of no) expect(re.test(s)).toBe(false);
  });

  it.each([
    ['a(?=b)', /lookaround/],
    ['a(?!b)', /lookaround/],
    ['(?<=a)b', /lookaround/],
    ['(?<!a)b', /lookaround/],
    ['(a)\\1', /backreferences/],
    ['(?P<x>a)(?P=x)', /backreferences/],
    ['a(?i)b', /inline flags/],
    ['(?i:a)b', /inline flags/],
    ['(?U)a*', /unsupported flag U/],
    ['\\C', /invalid escape|not supported/],
    ['\\k<x>', /invalid escape/],
    ['a{1001}', /repetition count/],
    ['[a', /missing \]/],
    ['(a', /invalid regex/],
    ['a**', /invalid regex/],
    ['a\\', /trailing backslash/],
    ['[[:^alpha:]]', /negated POSIX/],
    ['[[:nope:]]', /unknown class/],
    ['[\\S]', /\\S inside/],
    ['', /empty regex/],
    ['\\p{NotAScript}', /invalid regex/],
  ])('rejects %s', (pattern, message) => {
    expect(() => compileRe2(pattern, true)).toThrow(message);
  });

  it('caches compiled patterns', () => {
    expect(compileRe2('cache-me-[0-9]', true)).toBe(compileRe2('cache-me-[0-9]', true));
    expect(compileRe2('cache-me-[0-9]', false)).not.toBe(compileRe2('cache-me-[0-9]', true));
  });
});

describe('compileRe2 (rewrite)', () => {
  it.each([
    ['^/service/([^/]+)(/.*)$', '\\2/instance/\\1', '/service/foo/v1/api', '/v1/api/instance/foo'],
    ['one', 'two', 'one/one', 'two/two'],
    ['a', '$x', 'bab', 'b$xb'],
    ['(b)', '\\\\\\1', 'abc', 'a\\bc'],
  ])('replaces %s with %s in %s', (pattern, sub, input, output) => {
    expect(input.replace(compileRe2(pattern, false), re2Substitution(sub))).toBe(output);
  });

  it('rejects a substitution with a stray backslash', () => {
    expect(() => re2Substitution('\\x')).toThrow(/invalid substitution/);
  });
});
