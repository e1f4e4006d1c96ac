import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ConfigInvalidError } from '../errors';
import { loadSources, parseSource } from './parse';

const VS = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
`;

function parseError(fn: () => unknown): ConfigInvalidError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigInvalidError);
    return err as ConfigInvalidError;
  }
  throw new Error('expected a ConfigInvalidError');
}

async function loadError(p: Promise<unknown>): Promise<ConfigInvalidError> {
  const err: unknown = await p.then(
    () => new Error('expected a ConfigInvalidError'),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ConfigInvalidError);
  return err as ConfigInvalidError;
}

describe('parseSource', () => {
  it('splits a YAML stream into documents, skipping empty ones but keeping their index', () => {
    const text = `${VS}---\n# only a comment\n---\n${VS.replace('reviews', 'ratings')}---\n`;
    const docs = parseSource(text, 'vs.yaml');
    expect(docs.map(d => [d.source, d.index, d.basePath])).toEqual([
      ['vs.yaml', 0, []],
      ['vs.yaml', 2, []],
    ]);
    expect(docs[1]?.raw).toMatchObject({ metadata: { name: 'ratings' } });
  });

  it('returns nothing for an empty or comment-only source', () => {
    expect(parseSource('', 'a.yaml')).toEqual([]);
    expect(parseSource('# nothing\n---\n', 'a.yaml')).toEqual([]);
  });

  it('reads a JSON object, a JSON array and a List', () => {
    const obj = { apiVersion: 'networking.istio.io/v1', kind: 'Gateway', metadata: { name: 'g' } };
    expect(parseSource(JSON.stringify(obj), 'g.json').map(d => d.raw)).toEqual([obj]);
    const arr = parseSource(JSON.stringify([obj, { ...obj, metadata: { name: 'h' } }]), 'a.json');
    expect(arr.map(d => [d.index, d.basePath])).toEqual([
      [0, [0]],
      [0, [1]],
    ]);
    const list = parseSource(
      JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [obj, obj] }),
      'list.json',
    );
    expect(list.map(d => d.basePath)).toEqual([
      ['items', 0],
      ['items', 1],
    ]);
    expect(list[1]?.raw).toEqual(obj);
  });

  it('reads a YAML List too', () => {
    const text = `apiVersion: v1\nkind: List\nitems:\n- ${VS.trim().split('\n').join('\n  ')}\n`;
    const docs = parseSource(text, 'l.yaml');
    expect(docs).toHaveLength(1);
    expect(docs[0]?.basePath).toEqual(['items', 0]);
    expect(docs[0]?.lineOf?.(['metadata', 'name'])).toBe(7);
  });

  it('rejects a List without an items array', () => {
    const err = parseError(() => parseSource('apiVersion: v1\nkind: List\nitems: 3\n', 'l.yaml'));
    expect(err.code).toBe('PILOT_CONFIG_PARSE');
    expect(err.message).toBe('l.yaml#0: items: a List needs an items array');
  });

  it('maps field paths to lines, falling back to the nearest existing parent', () => {
    const [doc] = parseSource(`\n\n${VS}`, 'vs.yaml');
    expect(doc?.lineOf?.(['metadata', 'name'])).toBe(6);
    expect(doc?.lineOf?.(['spec', 'hosts', 0])).toBe(8);
    expect(doc?.lineOf?.(['spec', 'http', 0, 'route'])).toBe(7);
  });

  it('names the file, document and line of a syntax error, for every broken document', () => {
    const text = `${VS}---\nkind: [a\n---\nmetadata:\n  name: a\n  name: b\n`;
    const err = parseError(() => parseSource(text, 'bad.yaml'));
    expect(err.code).toBe('PILOT_CONFIG_PARSE');
    expect(err.problems).toHaveLength(2);
    expect(err.problems[0]).toMatchObject({ source: 'bad.yaml', index: 1 });
    expect(err.problems[0]?.message).toMatch(/^invalid YAML at line \d+, column \d+: /);
    expect(err.problems[1]).toEqual({
      source: 'bad.yaml',
      index: 2,
      message: 'invalid YAML at line 12, column 3: Map keys must be unique',
    });
    expect(err.message.split('\n')[1]).toBe(
      'bad.yaml#2: invalid YAML at line 12, column 3: Map keys must be unique',
    );
  });

  it('parses .json sources as strict JSON', () => {
    const err = parseError(() => parseSource('{"a": 1,\n  "b": }', 'x.json'));
    expect(err.problems[0]?.source).toBe('x.json');
    expect(err.problems[0]?.message).toMatch(/^invalid JSON/);
    // The same text is valid YAML (a null value).
    expect(parseSource('{"a": 1,\n  "b": }', 'x.yaml')).toHaveLength(1);
  });

  it('reports the line of a JSON error when the parser gives a position', () => {
    const err = parseError(() => parseSource('{\n  "a": 1\n  "b": 2\n}', 'x.json'));
    expect(err.problems[0]?.message).toMatch(/^invalid JSON at line 3, column 3: /);
  });

  it('stops alias bombs', () => {
    const lines = ['a0: &a0 [x, x, x, x, x, x, x, x, x, x]'];
    for (let i = 1; i < 8; i++)
      lines.push(
        `a${i}: &a${i} [${Array(10)
          .fill(`*a${i - 1}`)
          .join(', ')}]`,
      );
    const err = parseError(() => parseSource(lines.join('\n'), 'bomb.yaml'));
    expect(err.problems[0]?.message).toMatch(/^invalid YAML in the document starting at line 1: /);
  });
});

describe('loadSources', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sail-config-'));
  });
  afterEach(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const write = (name: string, text: string) => {
    const file = path.join(dir, name);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, text);
    return file;
  };

  it('reads a directory: yaml, yml and json files sorted by name, other files and subdirectories skipped', async () => {
    write('b.yml', VS);
    write('a.yaml', `${VS}---\n${VS}`);
    write('c.json', JSON.stringify({ kind: 'Gateway' }));
    write('README.md', '# not config');
    write('sub/d.yaml', VS);
    const docs = await loadSources([dir]);
    expect(docs.map(d => [path.basename(d.source), d.index])).toEqual([
      ['a.yaml', 0],
      ['a.yaml', 1],
      ['b.yml', 0],
      ['c.json', 0],
    ]);
  });

  it('reads named files whatever their extension, in the order given, and stdin for -', async () => {
    const f = write('conf.txt', VS);
    const docs = await loadSources([f, '-'], () => Promise.resolve(VS));
    expect(docs.map(d => d.source)).toEqual([f, '-']);
  });

  it('reports every unreadable path and every syntax error at once', async () => {
    const bad = write('bad.yaml', 'a: [1\n');
    const missing = path.join(dir, 'missing.yaml');
    const err = await loadError(
      loadSources([missing, bad, '-', '-'], () => Promise.resolve('x: 1\n')),
    );
    expect(err.code).toBe('PILOT_CONFIG_PARSE');
    expect(err.problems.map(p => p.source)).toEqual([missing, bad, '-']);
    expect(err.problems[0]?.message).toBe('cannot read: no such file or directory (ENOENT)');
    expect(err.problems[1]?.message).toMatch(/^invalid YAML at line 2, column 1: /);
    expect(err.problems[2]?.message).toBe('stdin (-) given more than once');
  });

  it('returns nothing for an empty directory', async () => {
    await expect(loadSources([dir])).resolves.toEqual([]);
  });
});
