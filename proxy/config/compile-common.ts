/**
 * Shared pieces of the Envoy → model compiler: the error type, typed readers over decoded
 * protobufjs JSON that fail with a {@link CompileError} naming the field, and the small messages
 * every resource uses (durations, percentages, string and header matchers, header edits).
 *
 * Readers take the parent object, the key and the parent's path, and build the full path only
 * when they fail, so reading a valid resource concatenates no strings per field.
 * @internal
 */
import { structToJson } from '../../api/envoy';
import type {
  HeaderEdits,
  HeaderMatcher,
  HeaderValue,
  QueryParameterMatcher,
  StringMatcher,
} from '../model';
import { NO_HEADER_EDITS } from '../model';
import { compileRe2 } from './compile-regex';

/** A resource the proxy cannot use; `message` names the resource and the field path. */
export class CompileError extends Error {
  override readonly name = 'CompileError';
}

/** A decoded protobuf message. */
export type Json = Record<string, unknown>;

/** The resource being compiled, for error messages: `<kind> <name>`. */
export interface Where {
  readonly kind: string;
  readonly name: string;
}

/** Throws `<kind> <name>: <path>: <problem>`. */
export function fail(w: Where, path: string, problem: string): never {
  throw new CompileError(`${w.kind} ${w.name}: ${path === '' ? '(resource)' : path}: ${problem}`);
}

/** `path.key` (or `key` at the top). */
export function at(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`;
}

/** `path[i]`. */
export function idx(path: string, i: number): string {
  return `${path}[${i}]`;
}

/** Whether `v` is a plain object (a decoded message), not an array or null. */
export function isObj(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Whether a field counts as set: protobuf defaults (absent, false, '', 0, []) do not. */
export function isSet(v: unknown): boolean {
  if (v === undefined || v === null || v === false || v === '' || v === 0) return false;
  if (Array.isArray(v)) return v.length > 0;
  return true;
}

/** Fails on the first of `keys` that is set: features whose absence the proxy relies on. */
export function rejectSet(w: Where, o: Json, path: string, keys: readonly string[]): void {
  for (const k of keys) if (isSet(o[k])) fail(w, at(path, k), 'not supported');
}

const EMPTY: readonly never[] = Object.freeze([]);

/** A message field; undefined when absent. */
export function obj(w: Where, o: Json, key: string, path: string): Json | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (!isObj(v)) fail(w, at(path, key), 'expected an object');
  return v;
}

/** A message that must be there. */
export function reqObj(w: Where, o: Json, key: string, path: string): Json {
  const v = obj(w, o, key, path);
  if (v === undefined) fail(w, at(path, key), 'required');
  return v;
}

/** A repeated field; empty when absent. */
export function list(w: Where, o: Json, key: string, path: string): readonly unknown[] {
  const v = o[key];
  if (v === undefined || v === null) return EMPTY;
  if (!Array.isArray(v)) fail(w, at(path, key), 'expected a list');
  return v;
}

/** Element `i` of a repeated message field. */
export function elem(w: Where, v: unknown, path: string): Json {
  if (!isObj(v)) fail(w, path, 'expected an object');
  return v;
}

/** A map field (`typedPerFilterConfig`, `filterMetadata`); undefined when absent. */
export function map(w: Where, o: Json, key: string, path: string): Json | undefined {
  return obj(w, o, key, path);
}

/** A string field; undefined when absent or empty (proto3 cannot tell them apart). */
export function str(w: Where, o: Json, key: string, path: string): string | undefined {
  const v = o[key];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') fail(w, at(path, key), 'expected a string');
  return v;
}

/** A string field that must be non-empty. */
export function reqStr(w: Where, o: Json, key: string, path: string): string {
  const v = str(w, o, key, path);
  if (v === undefined) fail(w, at(path, key), 'required');
  return v;
}

/** A repeated string field. */
export function strList(w: Where, o: Json, key: string, path: string): readonly string[] {
  const l = list(w, o, key, path);
  for (let i = 0; i < l.length; i++)
    if (typeof l[i] !== 'string') fail(w, idx(at(path, key), i), 'expected a string');
  return l as readonly string[];
}

/** A bool field; false when absent. */
export function bool(w: Where, o: Json, key: string, path: string): boolean {
  const v = o[key];
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') fail(w, at(path, key), 'expected a boolean');
  return v;
}

/** A number as protobufjs writes integers (numbers, or decimal strings for 64-bit fields). */
function toUint(v: unknown): number | undefined {
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) return undefined;
  return n;
}

/** An unsigned integer field; undefined when absent. */
export function uint(
  w: Where,
  o: Json,
  key: string,
  path: string,
  max?: number,
): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  const n = toUint(v);
  if (n === undefined) fail(w, at(path, key), 'expected a non-negative integer');
  if (max !== undefined && n > max) fail(w, at(path, key), `must be at most ${max}`);
  return n;
}

/** A `google.protobuf.UInt32Value`/`UInt64Value` (`{ value }`, `{}` being 0); undefined when absent. */
export function wrappedUint(
  w: Where,
  o: Json,
  key: string,
  path: string,
  max?: number,
): number | undefined {
  const wrapper = obj(w, o, key, path);
  if (wrapper === undefined) return undefined;
  return uint(w, wrapper, 'value', at(path, key), max) ?? 0;
}

/** A `google.protobuf.BoolValue` (`{}` being false); undefined when absent. */
export function wrappedBool(w: Where, o: Json, key: string, path: string): boolean | undefined {
  const wrapper = obj(w, o, key, path);
  if (wrapper === undefined) return undefined;
  return bool(w, wrapper, 'value', at(path, key));
}

/** A `google.protobuf.DoubleValue`-like `{ value }` number (type.v3.Percent); undefined when absent. */
export function wrappedNumber(w: Where, o: Json, key: string, path: string): number | undefined {
  const wrapper = obj(w, o, key, path);
  if (wrapper === undefined) return undefined;
  const v = wrapper.value ?? 0;
  if (typeof v !== 'number' || !Number.isFinite(v))
    fail(w, at(at(path, key), 'value'), 'expected a number');
  return v;
}

/** An enum field by name; `values[0]` (the proto default) when absent. */
export function enumOf<T extends string>(
  w: Where,
  o: Json,
  key: string,
  path: string,
  values: readonly T[],
): T {
  const v = o[key];
  if (v === undefined || v === null) return values[0]!;
  if (typeof v !== 'string' || !(values as readonly string[]).includes(v))
    fail(w, at(path, key), `unsupported value ${JSON.stringify(v)}`);
  return v as T;
}

/** Largest Duration protobuf allows (10,000 years). */
const MAX_DURATION_SECONDS = 315_576_000_000;

/** A `google.protobuf.Duration` in milliseconds (fractional below 1 ms); undefined when absent. */
export function durationMs(w: Where, o: Json, key: string, path: string): number | undefined {
  const d = obj(w, o, key, path);
  if (d === undefined) return undefined;
  const p = at(path, key);
  const secondsRaw = d.seconds ?? 0;
  const seconds =
    typeof secondsRaw === 'string' && /^-?\d+$/.test(secondsRaw) ? Number(secondsRaw) : secondsRaw;
  const nanos = d.nanos ?? 0;
  if (typeof seconds !== 'number' || !Number.isInteger(seconds))
    fail(w, at(p, 'seconds'), 'expected an integer');
  if (typeof nanos !== 'number' || !Number.isInteger(nanos) || Math.abs(nanos) >= 1e9)
    fail(w, at(p, 'nanos'), 'expected an integer below 1e9');
  if (seconds < 0 || nanos < 0) fail(w, p, 'must not be negative');
  if (seconds > MAX_DURATION_SECONDS) fail(w, p, 'out of range');
  return seconds * 1000 + nanos / 1e6;
}

const DENOMINATORS: Readonly<Record<string, number>> = {
  HUNDRED: 100,
  TEN_THOUSAND: 10_000,
  MILLION: 1_000_000,
};

/** An `envoy.type.v3.FractionalPercent` as a fraction in [0, 1] (Envoy caps at 100 %). */
export function fraction(w: Where, p: Json, path: string): number {
  const numerator = uint(w, p, 'numerator', path) ?? 0;
  const denominator = p.denominator ?? 'HUNDRED';
  const d = typeof denominator === 'string' ? DENOMINATORS[denominator] : undefined;
  if (d === undefined)
    fail(w, at(path, 'denominator'), `unsupported value ${JSON.stringify(denominator)}`);
  return Math.min(1, numerator / d);
}

/** A `RuntimeFractionalPercent`'s default value as a fraction (runtime overrides do not exist here). */
export function runtimeFraction(w: Where, o: Json, key: string, path: string): number | undefined {
  const rf = obj(w, o, key, path);
  if (rf === undefined) return undefined;
  const dv = obj(w, rf, 'defaultValue', at(path, key));
  // The default value is required by Envoy's validation; an empty one means 0 %.
  return dv === undefined ? 0 : fraction(w, dv, at(at(path, key), 'defaultValue'));
}

// ---------------------------------------------------------------------------------------------
// Any

/** The message name of an unpacked `google.protobuf.Any` (after the last `/`); '' when none. */
export function anyType(w: Where, a: Json, path: string): string {
  // protobufjs unpacks known types as `{ '@type', ...fields }` and leaves unknown ones packed as
  // `{ type_url, value }` (its Any keeps the proto field names).
  const url = a['@type'] ?? a.type_url ?? a.typeUrl;
  if (url === undefined) return '';
  if (typeof url !== 'string') fail(w, at(path, '@type'), 'expected a string');
  return url.slice(url.lastIndexOf('/') + 1);
}

/**
 * The typed config of an extension (`{ name, typedConfig }`) and the name it is known by: its type
 * (Envoy v3 picks the factory by type URL) else its `name`.
 */
export function extension(
  w: Where,
  e: Json,
  path: string,
): { readonly type: string; readonly name: string; readonly config: Json } {
  const name = str(w, e, 'name', path) ?? '';
  const config = obj(w, e, 'typedConfig', path) ?? {};
  const type = anyType(w, config, at(path, 'typedConfig'));
  if (type === '' && name === '') fail(w, path, 'extension has neither a name nor a typed config');
  if (isSet(e.configDiscovery)) fail(w, at(path, 'configDiscovery'), 'not supported');
  return { type, name, config };
}

// ---------------------------------------------------------------------------------------------
// Matchers

/** An `envoy.type.matcher.v3.RegexMatcher` as an anchored (full match) RegExp. */
export function regexMatcher(w: Where, m: Json, path: string): RegExp {
  const pattern = reqStr(w, m, 'regex', path);
  try {
    return compileRe2(pattern, true);
  } catch (err) {
    fail(w, at(path, 'regex'), (err as Error).message);
  }
}

/** An `envoy.type.matcher.v3.StringMatcher`. With `ignoreCase`, `value` is lowercased. */
export function stringMatcher(w: Where, m: Json, path: string): StringMatcher {
  const ignoreCase = bool(w, m, 'ignoreCase', path);
  if (typeof m.exact === 'string') return plainMatcher('exact', m.exact, ignoreCase);
  for (const kind of ['prefix', 'suffix', 'contains'] as const) {
    const v = str(w, m, kind, path);
    if (v !== undefined) return plainMatcher(kind, v, ignoreCase);
  }
  const re = obj(w, m, 'safeRegex', path);
  // Envoy: ignore_case has no effect on safe_regex.
  if (re) {
    const p = at(path, 'safeRegex');
    return {
      kind: 'regex',
      value: reqStr(w, re, 'regex', p),
      ignoreCase: false,
      regex: regexMatcher(w, re, p),
    };
  }
  if (isSet(m.custom)) fail(w, at(path, 'custom'), 'not supported');
  if (m.exact !== undefined) fail(w, at(path, 'exact'), 'expected a string');
  // Envoy requires one pattern (an empty prefix, suffix or contains is invalid too).
  fail(w, path, 'string matcher has no pattern');
}

function plainMatcher(
  kind: 'exact' | 'prefix' | 'suffix' | 'contains',
  value: string,
  ignoreCase: boolean,
): StringMatcher {
  return { kind, value: ignoreCase ? value.toLowerCase() : value, ignoreCase };
}

/** An `envoy.config.route.v3.HeaderMatcher`, legacy `*_match` fields included. */
export function headerMatcher(w: Where, h: Json, path: string): HeaderMatcher {
  const name = reqStr(w, h, 'name', path).toLowerCase();
  const invert = bool(w, h, 'invertMatch', path);
  rejectSet(w, h, path, ['rangeMatch', 'treatMissingHeaderAsEmpty']);
  let match: HeaderMatcher['match'];
  const sm = obj(w, h, 'stringMatch', path);
  if (sm) match = stringMatcher(w, sm, at(path, 'stringMatch'));
  else if (typeof h.exactMatch === 'string') match = plainMatcher('exact', h.exactMatch, false);
  else if (str(w, h, 'prefixMatch', path) !== undefined)
    match = plainMatcher('prefix', h.prefixMatch as string, false);
  else if (str(w, h, 'suffixMatch', path) !== undefined)
    match = plainMatcher('suffix', h.suffixMatch as string, false);
  else if (str(w, h, 'containsMatch', path) !== undefined)
    match = plainMatcher('contains', h.containsMatch as string, false);
  else if (obj(w, h, 'safeRegexMatch', path)) {
    const p = at(path, 'safeRegexMatch');
    const re = h.safeRegexMatch as Json;
    match = {
      kind: 'regex',
      value: reqStr(w, re, 'regex', p),
      ignoreCase: false,
      regex: regexMatcher(w, re, p),
    };
  } else if (h.presentMatch !== undefined) {
    match = { kind: 'present', present: bool(w, h, 'presentMatch', path) };
  } else {
    // Envoy: a matcher without a specifier checks that the header is present.
    match = { kind: 'present', present: true };
  }
  return { name, match, invert };
}

/** An `envoy.config.route.v3.QueryParameterMatcher`; no string match means "present". */
export function queryParameterMatcher(w: Where, q: Json, path: string): QueryParameterMatcher {
  const name = reqStr(w, q, 'name', path);
  const sm = obj(w, q, 'stringMatch', path);
  return sm ? { name, match: stringMatcher(w, sm, at(path, 'stringMatch')) } : { name };
}

// ---------------------------------------------------------------------------------------------
// Header edits

/**
 * Header edits from `*_headers_to_add` (HeaderValueOption) and `*_headers_to_remove`. Returns the
 * shared {@link NO_HEADER_EDITS} when there are none.
 */
export function headerEdits(
  w: Where,
  o: Json,
  addKey: string,
  removeKey: string,
  path: string,
): HeaderEdits {
  const adds = list(w, o, addKey, path);
  const removes = list(w, o, removeKey, path);
  if (adds.length === 0 && removes.length === 0) return NO_HEADER_EDITS;
  const set: HeaderValue[] = [];
  const add: HeaderValue[] = [];
  const addPath = at(path, addKey);
  for (let i = 0; i < adds.length; i++) {
    const p = idx(addPath, i);
    const option = elem(w, adds[i], p);
    const header = reqObj(w, option, 'header', p);
    const hp = at(p, 'header');
    const name = reqStr(w, header, 'key', hp).toLowerCase();
    if (name.startsWith(':')) fail(w, at(hp, 'key'), 'pseudo-headers cannot be modified');
    if (isSet(header.rawValue)) fail(w, at(hp, 'rawValue'), 'not supported');
    const raw = str(w, header, 'value', hp) ?? '';
    // Envoy adds nothing for an empty value unless told to keep it.
    if (raw === '' && !bool(w, option, 'keepEmptyValue', p)) continue;
    const value = headerValueLiteral(w, raw, at(hp, 'value'));
    const append = wrappedBool(w, option, 'append', p);
    const action = enumOf(w, option, 'appendAction', p, [
      'APPEND_IF_EXISTS_OR_ADD',
      'ADD_IF_ABSENT',
      'OVERWRITE_IF_EXISTS_OR_ADD',
      'OVERWRITE_IF_EXISTS',
    ]);
    if (
      append !== undefined &&
      option.appendAction !== undefined &&
      action !== 'APPEND_IF_EXISTS_OR_ADD'
    )
      fail(w, p, 'append and appendAction are both set');
    if (action === 'ADD_IF_ABSENT' || action === 'OVERWRITE_IF_EXISTS')
      fail(w, at(p, 'appendAction'), `${action} is not supported`);
    // The deprecated `append` wrapper wins when present; absent, append_action decides (its
    // default APPEND_IF_EXISTS_OR_ADD appends, as `append` defaulted to true).
    const overwrite = append !== undefined ? !append : action === 'OVERWRITE_IF_EXISTS_OR_ADD';
    (overwrite ? set : add).push({ name, value });
  }
  const remove: string[] = [];
  const removePath = at(path, removeKey);
  for (let i = 0; i < removes.length; i++) {
    const v = removes[i];
    if (typeof v !== 'string' || v === '') fail(w, idx(removePath, i), 'expected a header name');
    const name = v.toLowerCase();
    if (name.startsWith(':') || name === 'host')
      fail(w, idx(removePath, i), `${name} cannot be removed`);
    remove.push(name);
  }
  if (set.length === 0 && add.length === 0 && remove.length === 0) return NO_HEADER_EDITS;
  return { set, add, remove };
}

/**
 * A header value as a literal. Envoy treats `%…%` in header values as formatter commands
 * (`%DOWNSTREAM_REMOTE_ADDRESS%`), `%%` being a literal `%`; the proxy implements none of them,
 * so a command is an error rather than a header carrying the command text.
 */
function headerValueLiteral(w: Where, value: string, path: string): string {
  if (!value.includes('%')) return value;
  let out = '';
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (c !== '%') out += c;
    else if (value[i + 1] === '%') {
      out += '%';
      i++;
    } else
      fail(w, path, 'header value formatters (%…%) are not supported; write %% for a literal %');
  }
  return out;
}

/** Concatenates edits (applied in order: `a` first), sharing NO_HEADER_EDITS. */
export function concatEdits(a: HeaderEdits, b: HeaderEdits): HeaderEdits {
  if (b === NO_HEADER_EDITS) return a;
  if (a === NO_HEADER_EDITS) return b;
  return {
    set: [...a.set, ...b.set],
    add: [...a.add, ...b.add],
    remove: [...a.remove, ...b.remove],
  };
}

// ---------------------------------------------------------------------------------------------
// Metadata

const EMPTY_MATCH: Readonly<Record<string, string>> = Object.freeze({});
/** Interned string maps: thousands of endpoints share a handful of `{ tlsMode: 'istio' }`s. */
const INTERNED = new Map<string, Readonly<Record<string, string>>>();
const MAX_INTERNED = 1024;

/** A `google.protobuf.Struct` of scalar values as strings (transport socket match criteria). */
export function stringStruct(w: Where, s: Json, path: string): Readonly<Record<string, string>> {
  const fields = obj(w, s, 'fields', path);
  if (fields === undefined) return EMPTY_MATCH;
  // The interning key is built straight from the fields: the common case (a known match) then
  // allocates nothing but the key.
  let key = '';
  for (const k of Object.keys(fields)) {
    const v = fields[k];
    let text: string | undefined;
    // The same precedence as structToJson, which builds the result.
    if (isObj(v)) {
      if ('stringValue' in v) text = typeof v.stringValue === 'string' ? v.stringValue : undefined;
      else if ('numberValue' in v)
        text = typeof v.numberValue === 'number' ? String(v.numberValue) : undefined;
      else if ('boolValue' in v)
        text = typeof v.boolValue === 'boolean' ? String(v.boolValue) : undefined;
    }
    if (text === undefined)
      fail(w, at(at(path, 'fields'), k), 'expected a string, number or boolean value');
    key += `${k}\u0000${text}\u0000`;
  }
  if (key === '') return EMPTY_MATCH;
  const known = INTERNED.get(key);
  if (known) return known;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(structToJson(s))) out[k] = String(v);
  if (INTERNED.size >= MAX_INTERNED) INTERNED.clear();
  const frozen = Object.freeze(out);
  INTERNED.set(key, frozen);
  return frozen;
}
