/**
 * Every error code a component defines is unique and documented in docs/errors.md, under that
 * component's heading (STYLE 2.5; fastify's test/internals/errors.test.js).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

const ROOT = path.join(__dirname, '..', '..');

/**
 * The error-code registries: source file, exported list, and the `## section` of docs/errors.md
 * that documents them. A component adds its registry with one line, e.g.
 * `['ca/errors.ts', 'CA_ERROR_CODES', 'ca']`.
 */
const REGISTRIES: readonly (readonly [file: string, exportName: string, section: string])[] = [
  ['common/errors.ts', 'COMMON_ERROR_CODES', 'common'],
  ['ca/errors.ts', 'CA_ERROR_CODES', 'ca'],
  ['node-agent/errors.ts', 'AGENT_ERROR_CODES', 'node-agent'],
  ['pilot/errors.ts', 'PILOT_ERROR_CODES', 'pilot'],
  ['proxy/errors.ts', 'PROXY_ERROR_CODES', 'proxy'],
];

interface Registry {
  readonly name: string;
  readonly prefix: string;
  readonly section: string;
  readonly codes: readonly string[];
}

async function loadRegistry([
  file,
  exportName,
  section,
]: (typeof REGISTRIES)[number]): Promise<Registry> {
  const mod = (await import(path.join(ROOT, file.replace(/\.ts$/, '')))) as Record<string, unknown>;
  const codes = mod[exportName];
  if (!Array.isArray(codes) || !codes.every(c => typeof c === 'string')) {
    throw new Error(`${file} does not export ${exportName} as a list of strings`);
  }
  return {
    name: `${file} ${exportName}`,
    prefix: exportName.replace(/ERROR_CODES$/, ''),
    section,
    codes,
  };
}

/** The codes in the first column of each table row, by `## section` of docs/errors.md. */
function documentedCodes(markdown: string): Map<string, string[]> {
  const bySection = new Map<string, string[]>();
  let section = '';
  for (const line of markdown.split('\n')) {
    const heading = /^## +(.+?)\s*$/.exec(line);
    if (heading) {
      section = heading[1]!;
      bySection.set(section, []);
      continue;
    }
    const row = /^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|/.exec(line);
    if (row) bySection.get(section)?.push(row[1]!);
  }
  return bySection;
}

const docsFile = path.join(ROOT, 'docs', 'errors.md');
const docs = documentedCodes(fs.readFileSync(docsFile, 'utf8'));
let registries: Registry[] = [];

beforeAll(async () => {
  registries = await Promise.all(REGISTRIES.map(loadRegistry));
});

describe('error code registries', () => {
  it('are listed once each', () => {
    expect(new Set(REGISTRIES.map(r => r[0])).size).toBe(REGISTRIES.length);
  });

  it.each(REGISTRIES.map(r => ({ name: `${r[0]} ${r[1]}` })))('$name is not empty', ({ name }) => {
    expect(registries.find(r => r.name === name)?.codes.length).toBeGreaterThan(0);
  });

  it('hold no code twice, within or across components', () => {
    const seen = new Map<string, string>();
    const duplicates: string[] = [];
    for (const r of registries) {
      for (const code of r.codes) {
        const other = seen.get(code);
        if (other) duplicates.push(`${code} (${other} and ${r.name})`);
        seen.set(code, r.name);
      }
    }
    expect(duplicates).toEqual([]);
  });

  it('use UPPER_SNAKE codes with the component prefix', () => {
    const bad = registries.flatMap(r =>
      r.codes
        .filter(c => !c.startsWith(r.prefix) || !/^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$/.test(c))
        .map(c => `${r.name}: ${c}`),
    );
    expect(bad).toEqual([]);
  });
});

describe('docs/errors.md', () => {
  it('has a section for every registry', () => {
    const missing = REGISTRIES.map(r => r[2]).filter(section => !docs.has(section));
    expect(missing).toEqual([]);
  });

  it('documents every code in its component section', () => {
    const missing = registries.flatMap(r =>
      r.codes
        .filter(c => !docs.get(r.section)?.includes(c))
        .map(c => `${c} (from ${r.name}) under "## ${r.section}"`),
    );
    expect(missing).toEqual([]);
  });

  it('documents each code only once', () => {
    const all = [...docs.values()].flat();
    expect(all.filter((c, i) => all.indexOf(c) !== i)).toEqual([]);
  });

  it('documents no code under a section of another component', () => {
    const misplaced = registries.flatMap(r =>
      [...docs.entries()]
        .filter(([section]) => section !== r.section)
        .flatMap(([section, codes]) =>
          codes.filter(c => r.codes.includes(c)).map(c => `${c} under "## ${section}"`),
        ),
    );
    expect(misplaced).toEqual([]);
  });
});
