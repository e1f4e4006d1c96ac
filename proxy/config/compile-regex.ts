/**
 * RE2 (Envoy's `safe_regex`) to JavaScript RegExp. The two syntaxes mostly agree; where they do
 * not, the pattern is translated (`\z`, `\A`, `\Q…\E`, `[[:alpha:]]`, `(?P<name>`, RE2's ASCII
 * `\s`, a leading `(?i)`) or rejected: what RE2 forbids (lookarounds, backreferences) and what
 * this Node cannot express (inline flags after the start, `(?U)`). Patterns compile with the `u`
 * flag, so `.` matches a whole code point as RE2 matches a whole rune.
 *
 * Unlike RE2, JavaScript backtracks: a pathological pattern (`(a+)+$`) can be slow on long input.
 * Envoy's default program-size limit is not enforced here.
 * @internal
 */

/** Compiled patterns by `anchored|pattern`, reused across pushes (RegExps without `g` are stateless). */
const CACHE = new Map<string, RegExp>();
const MAX_CACHE = 4096;

/** RE2 rejects repetition counts above this. */
const MAX_REPEAT = 1000;

/**
 * Compiles an RE2 pattern. `anchored`: the whole input must match (Envoy's full match, for
 * matchers); otherwise the RegExp is global (`g`), for `regex_rewrite`'s replace-all.
 * @throws Error with a lowercase message saying what is wrong with the pattern
 */
export function compileRe2(pattern: string, anchored: boolean): RegExp {
  const key = `${anchored ? 'a' : 'g'}|${pattern}`;
  const cached = CACHE.get(key);
  if (cached) return cached;
  if (pattern === '') throw new Error('empty regex');
  const { source, flags, multiline } = translate(pattern);
  let re: RegExp;
  try {
    if (anchored) {
      // `^`/`$` would match at line breaks under the `m` flag; lookarounds anchor to the text.
      const body = multiline ? `(?<![\\s\\S])(?:${source})(?![\\s\\S])` : `^(?:${source})$`;
      re = new RegExp(body, flags);
    } else {
      re = new RegExp(source, `${flags}g`);
    }
  } catch (err) {
    throw new Error(`invalid regex: ${(err as Error).message}`, { cause: err });
  }
  if (CACHE.size >= MAX_CACHE) CACHE.clear();
  CACHE.set(key, re);
  return re;
}

/** Converts an RE2 substitution (`\1`, `\\`) to a String.prototype.replace one (`$1`, `$$`). */
export function re2Substitution(sub: string): string {
  let out = '';
  for (let i = 0; i < sub.length; i++) {
    const c = sub[i]!;
    if (c === '$') out += '$$';
    else if (c === '\\') {
      const n = sub[i + 1];
      if (n !== undefined && n >= '0' && n <= '9') {
        out += `$${n}`;
        i++;
      } else if (n === '\\') {
        out += '\\';
        i++;
      } else {
        throw new Error('invalid substitution: a backslash must be followed by a digit or \\');
      }
    } else out += c;
  }
  return out;
}

/** Unicode general categories JavaScript takes bare in `\p{…}`; anything else is a script. */
const GENERAL_CATEGORIES = new Set(
  'L Lu Ll Lt Lm Lo M Mn Mc Me N Nd Nl No P Pc Pd Ps Pe Pi Pf Po S Sm Sc Sk So Z Zs Zl Zp C Cc Cf Cs Co Cn Any'.split(
    ' ',
  ),
);

/** RE2's POSIX classes, as JavaScript class contents. */
const POSIX_CLASSES: Readonly<Record<string, string>> = {
  alnum: '0-9A-Za-z',
  alpha: 'A-Za-z',
  ascii: '\\x00-\\x7F',
  blank: '\\t ',
  cntrl: '\\x00-\\x1F\\x7F',
  digit: '0-9',
  graph: '!-~',
  lower: 'a-z',
  print: ' -~',
  punct: '!-\\/:-@\\[-`\\{-~',
  space: '\\t\\n\\v\\f\\r ',
  upper: 'A-Z',
  word: '0-9A-Za-z_',
  xdigit: '0-9A-Fa-f',
};

/** Characters a JavaScript `u` pattern lets (and makes) us escape; `-` only inside classes. */
const JS_SYNTAX = new Set('^$\\.*+?()[]{}|/'.split(''));

/** `ch` as a literal in a `u` pattern. */
const literal = (ch: string, inClass: boolean): string =>
  JS_SYNTAX.has(ch) || (inClass && ch === '-') ? `\\${ch}` : ch;

/** RE2's `\s`: ASCII whitespace without `\v`. */
const RE2_SPACE = '\\t\\n\\f\\r ';

function translate(pattern: string): { source: string; flags: string; multiline: boolean } {
  let flags = 'u';
  let multiline = false;
  let i = 0;
  // A leading `(?flags)` applies to the whole pattern: the one inline-flag form JS can express.
  const lead = /^\(\?([a-zA-Z]+)\)/.exec(pattern);
  if (lead) {
    for (const f of lead[1]!) {
      if (f === 'i' || f === 's') {
        if (!flags.includes(f)) flags += f;
      } else if (f === 'm') {
        multiline = true;
        if (!flags.includes('m')) flags += 'm';
      } else {
        throw new Error(`unsupported flag ${f} in ${lead[0]}`);
      }
    }
    i = lead[0].length;
  }
  let out = '';
  while (i < pattern.length) {
    const c = pattern[i]!;
    if (c === '\\') {
      const e = escape(pattern, i, false);
      out += e.text;
      i = e.next;
    } else if (c === '[') {
      const cls = charClass(pattern, i);
      out += cls.text;
      i = cls.next;
    } else if (c === '(') {
      const g = groupOpen(pattern, i);
      out += g.text;
      i = g.next;
    } else if (c === '{') {
      const rep = /^\{(\d+)(,(\d*))?\}/.exec(pattern.slice(i));
      if (rep) {
        const min = Number(rep[1]);
        const max = rep[3] === undefined || rep[3] === '' ? min : Number(rep[3]);
        if (min > MAX_REPEAT || max > MAX_REPEAT)
          throw new Error(`repetition count above ${MAX_REPEAT} in ${rep[0]}`);
        out += rep[0];
        i += rep[0].length;
      } else {
        // RE2 takes a `{` that starts no repetition literally; a JS `u` pattern would not.
        out += '\\{';
        i++;
      }
    } else if (c === '}' || c === ']') {
      out += `\\${c}`;
      i++;
    } else {
      out += c;
      i++;
    }
  }
  return { source: out, flags, multiline };
}

/** `(`, `(?:`, `(?P<name>`, `(?<name>`; everything else RE2 or JS cannot do is an error. */
function groupOpen(p: string, i: number): { text: string; next: number } {
  if (p[i + 1] !== '?') return { text: '(', next: i + 1 };
  const rest = p.slice(i + 2);
  if (rest.startsWith(':')) return { text: '(?:', next: i + 3 };
  const named = /^P?<([A-Za-z_][A-Za-z0-9_]*)>/.exec(rest);
  if (named) return { text: `(?<${named[1]}>`, next: i + 2 + named[0].length };
  if (/^(=|!|<=|<!)/.test(rest)) throw new Error('lookaround assertions are not supported (RE2)');
  if (/^P[=>]/.test(rest)) throw new Error('backreferences are not supported (RE2)');
  if (/^[-a-zA-Z]+[:)]/.test(rest))
    throw new Error('inline flags are only supported as a leading (?i), (?s) or (?m)');
  throw new Error(`invalid group ${JSON.stringify(p.slice(i, i + 4))}`);
}

/** `[…]`, POSIX classes expanded; a leading `]` is literal in RE2 and must be escaped in JS. */
function charClass(p: string, start: number): { text: string; next: number } {
  let i = start + 1;
  let out = '[';
  if (p[i] === '^') {
    out += '^';
    i++;
  }
  if (p[i] === ']') {
    out += '\\]';
    i++;
  }
  while (i < p.length) {
    const c = p[i]!;
    if (c === ']') return { text: `${out}]`, next: i + 1 };
    if (c === '[' && p[i + 1] === ':') {
      const posix = /^\[:(\^?)([a-z]+):\]/.exec(p.slice(i));
      if (posix) {
        const expansion = POSIX_CLASSES[posix[2]!];
        if (expansion === undefined) throw new Error(`unknown class ${posix[0]}`);
        if (posix[1] === '^') throw new Error(`negated POSIX class ${posix[0]} is not supported`);
        out += expansion;
        i += posix[0].length;
        continue;
      }
    }
    if (c === '\\') {
      const e = escape(p, i, true);
      out += e.text;
      i = e.next;
      continue;
    }
    out += c === '[' ? '\\[' : c;
    i++;
  }
  throw new Error('missing ] in character class');
}

const hex = (cp: number): string => `\\u{${cp.toString(16)}}`;

/** A backslash escape at `p[i]`, in or outside a class. */
function escape(p: string, i: number, inClass: boolean): { text: string; next: number } {
  const c = p[i + 1];
  if (c === undefined) throw new Error('trailing backslash');
  const next = i + 2;
  if (c >= '0' && c <= '9') {
    // RE2: \0 and \1-\7 followed by another octal digit are octal escapes; a lone \1-\9 would be
    // a backreference, which RE2 does not have.
    const octal = /^(0[0-7]{0,2}|[1-7][0-7]{1,2})/.exec(p.slice(i + 1));
    if (!octal) throw new Error('backreferences are not supported (RE2)');
    return { text: hex(parseInt(octal[1]!, 8)), next: i + 1 + octal[1]!.length };
  }
  switch (c) {
    case 'x': {
      const m = /^x(\{([0-9A-Fa-f]{1,6})\}|([0-9A-Fa-f]{2}))/.exec(p.slice(i + 1));
      if (!m) throw new Error('invalid \\x escape');
      const cp = parseInt(m[2] ?? m[3]!, 16);
      if (cp > 0x10ffff) throw new Error('invalid \\x escape');
      return { text: hex(cp), next: i + 1 + m[0].length };
    }
    case 'a':
      return { text: '\\x07', next };
    case 'f':
    case 'n':
    case 'r':
    case 't':
    case 'v':
    case 'd':
    case 'D':
    case 'w':
    case 'W':
      return { text: `\\${c}`, next };
    case 's':
      return { text: inClass ? RE2_SPACE : `[${RE2_SPACE}]`, next };
    case 'S':
      if (inClass) throw new Error('\\S inside a character class is not supported');
      return { text: `[^${RE2_SPACE}]`, next };
    case 'b':
    case 'B':
      if (inClass) throw new Error(`\\${c} inside a character class is not supported`);
      return { text: `\\${c}`, next };
    case 'A':
      if (inClass) throw new Error('\\A inside a character class is not supported');
      return { text: '(?<![\\s\\S])', next };
    case 'z':
      if (inClass) throw new Error('\\z inside a character class is not supported');
      return { text: '(?![\\s\\S])', next };
    case 'p':
    case 'P': {
      const m = /^[pP](\{(\^?)([A-Za-z_]+)\}|([A-Za-z]))/.exec(p.slice(i + 1));
      if (!m) throw new Error('invalid Unicode class escape');
      const name = m[3] ?? m[4]!;
      const negate = (c === 'P') !== (m[2] === '^');
      const prop = GENERAL_CATEGORIES.has(name) ? name : `Script=${name}`;
      return { text: `\\${negate ? 'P' : 'p'}{${prop}}`, next: i + 1 + m[0].length };
    }
    case 'Q': {
      const end = p.indexOf('\\E', next);
      let text = '';
      for (const ch of end < 0 ? p.slice(next) : p.slice(next, end)) text += literal(ch, inClass);
      return { text, next: end < 0 ? p.length : end + 2 };
    }
    default:
      break;
  }
  const code = c.charCodeAt(0);
  // RE2 lets any ASCII punctuation be escaped; JS `u` patterns only syntax characters.
  if (code < 0x80 && !/[0-9A-Za-z]/.test(c)) {
    return { text: literal(c, inClass), next };
  }
  throw new Error(`invalid escape \\${c}`);
}
