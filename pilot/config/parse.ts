/**
 * Reading configuration documents: YAML streams (`---` separated) or JSON (one object, an array
 * of objects, or a `kind: List`), from files, directories and stdin. Parsing only finds the
 * documents; `validate.ts` checks what is in them.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { ConfigInvalidError, type ConfigProblem } from '../errors';

/** A segment of a field path: a key or an array index. */
export type PathSegment = string | number;

/** One object found in a source, not yet validated. */
export interface ParsedDocument {
  /** File path as given, `-` for stdin, or `request` for an API body. */
  readonly source: string;
  /** 0-based index of the YAML document in the source (0 for JSON). */
  readonly index: number;
  /**
   * Where the object sits inside its document when the document is a `kind: List` or a JSON
   * array (`['items', 2]`, `[2]`); empty for a plain document. Prefixed to field paths in errors.
   */
  readonly basePath: readonly PathSegment[];
  /** The decoded document (or list item), as plain JSON values. */
  readonly raw: unknown;
  /** The 1-based line of the value at `path` (relative to the object), when the source has one. */
  readonly lineOf?: (path: readonly PathSegment[]) => number | undefined;
}

/** File extensions read from a directory. */
export const CONFIG_EXTENSIONS: readonly string[] = ['.yaml', '.yml', '.json'];

/** Aliases a document may expand (YAML "billion laughs" guard). */
const MAX_ALIAS_COUNT = 100;

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Splits text into documents. Empty documents (only comments or whitespace) are skipped; a JSON
 * array and a `kind: List` (YAML or JSON) yield one document per item.
 * @param source the file name (or `-`, `request`) used in every message; a `.json` name is
 *   parsed as strict JSON
 * @throws ConfigInvalidError (PILOT_CONFIG_PARSE) naming the source, document and line of every
 *   syntax error
 */
export function parseSource(text: string, source: string): ParsedDocument[] {
  const { documents, problems } = parseText(text, source);
  if (problems.length > 0) throw new ConfigInvalidError(problems, 'PILOT_CONFIG_PARSE');
  return documents;
}

function parseText(
  text: string,
  source: string,
): { documents: ParsedDocument[]; problems: ConfigProblem[] } {
  const problems: ConfigProblem[] = [];
  const documents: ParsedDocument[] = [];
  const lineCounter = new YAML.LineCounter();
  const lineAt = (offset: number) => lineCounter.linePos(offset);

  if (source.toLowerCase().endsWith('.json')) {
    // YAML accepts more than JSON (`{"a": }`, comments, single quotes); a .json file must be JSON.
    try {
      JSON.parse(text);
    } catch (err) {
      const msg = (err as Error).message;
      const pos = /position (\d+)/.exec(msg);
      const where = pos ? describePos(text, Number(pos[1])) : '';
      problems.push({ source, index: 0, message: `invalid JSON${where}: ${firstLine(msg)}` });
      return { documents, problems };
    }
  }

  const docs = YAML.parseAllDocuments(text, { uniqueKeys: true, lineCounter, prettyErrors: true });
  for (const [index, doc] of docs.entries()) {
    const [error] = doc.errors;
    if (error) {
      const pos = error.linePos?.[0] ?? lineAt(error.pos[0]);
      problems.push({
        source,
        index,
        message: `invalid YAML at line ${pos.line}, column ${pos.col}: ${firstLine(error.message).replace(/ at line \d+, column \d+:?$/, '')}`,
      });
      continue;
    }
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
    } catch (err) {
      const line = doc.range[0] !== undefined ? lineAt(doc.range[0]).line : undefined;
      problems.push({
        source,
        index,
        message: `invalid YAML${line === undefined ? '' : ` in the document starting at line ${line}`}: ${firstLine((err as Error).message)}`,
      });
      continue;
    }
    if (value === null || value === undefined) continue; // an empty document

    // The line of a field's key (or a list item); a missing field is reported at the line of
    // its nearest existing parent.
    const lineOfNode = (p: readonly PathSegment[]): number | undefined => {
      if (p.length === 0)
        return doc.contents?.range ? lineAt(doc.contents.range[0]).line : undefined;
      const parent = doc.getIn(p.slice(0, -1), true);
      const last = p[p.length - 1];
      let range: readonly number[] | null | undefined;
      if (YAML.isMap(parent)) {
        const key = parent.items.find(
          pair => YAML.isScalar(pair.key) && pair.key.value === last,
        )?.key;
        range = YAML.isNode(key) ? key.range : undefined;
      } else if (YAML.isSeq(parent) && typeof last === 'number') {
        const item = parent.items[last];
        range = YAML.isNode(item) ? item.range : undefined;
      }
      return range?.[0] === undefined ? undefined : lineAt(range[0]).line;
    };
    const lineOfIn = (basePath: readonly PathSegment[]) => (p: readonly PathSegment[]) => {
      const full = [...basePath, ...p];
      for (let n = full.length; n >= 0; n--) {
        const line = lineOfNode(full.slice(0, n));
        if (line !== undefined) return line;
      }
      return undefined;
    };

    if (Array.isArray(value)) {
      // A JSON (or YAML) array of objects, as `kubectl get -o json` tools sometimes emit.
      for (const [i, item] of value.entries())
        documents.push({ source, index, basePath: [i], raw: item, lineOf: lineOfIn([i]) });
    } else if (isRecord(value) && value.kind === 'List' && !('spec' in value)) {
      const items = value.items;
      if (!Array.isArray(items)) {
        problems.push({
          source,
          index,
          path: 'items',
          message: 'a List needs an items array',
        });
        continue;
      }
      for (const [i, item] of items.entries())
        documents.push({
          source,
          index,
          basePath: ['items', i],
          raw: item,
          lineOf: lineOfIn(['items', i]),
        });
    } else {
      documents.push({ source, index, basePath: [], raw: value, lineOf: lineOfIn([]) });
    }
  }
  return { documents, problems };
}

function firstLine(message: string): string {
  return (message.split('\n')[0] ?? '').trim();
}

function describePos(text: string, offset: number): string {
  const before = text.slice(0, offset).split('\n');
  return ` at line ${before.length}, column ${(before[before.length - 1]?.length ?? 0) + 1}`;
}

/** Reads all of stdin as UTF-8. */
export async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Reads every document from `paths`: files (any extension), directories (their `*.yaml`,
 * `*.yml` and `*.json` files, sorted by name, not recursive) and `-` for stdin. Documents come
 * back in the order of `paths`, then of files, then of documents.
 * @param readAll reads stdin; tests pass their own
 * @throws ConfigInvalidError (PILOT_CONFIG_PARSE) listing every unreadable path and every syntax
 *   error in all sources at once
 */
export async function loadSources(
  paths: readonly string[],
  readAll: () => Promise<string> = readStdin,
): Promise<ParsedDocument[]> {
  const problems: ConfigProblem[] = [];
  const documents: ParsedDocument[] = [];
  let stdinRead = false;

  const addText = (text: string, source: string) => {
    const parsed = parseText(text, source);
    documents.push(...parsed.documents);
    problems.push(...parsed.problems);
  };
  const readFile = async (file: string) => {
    try {
      addText(await fs.readFile(file, 'utf8'), file);
    } catch (err) {
      problems.push({ source: file, message: `cannot read file: ${describeFsError(err)}` });
    }
  };

  for (const p of paths) {
    if (p === '-') {
      if (stdinRead) {
        problems.push({ source: '-', message: 'stdin (-) given more than once' });
        continue;
      }
      stdinRead = true;
      addText(await readAll(), '-');
      continue;
    }
    let stat;
    try {
      stat = await fs.stat(p);
    } catch (err) {
      problems.push({ source: p, message: `cannot read: ${describeFsError(err)}` });
      continue;
    }
    if (!stat.isDirectory()) {
      await readFile(p);
      continue;
    }
    let entries: string[];
    try {
      entries = await fs.readdir(p);
    } catch (err) {
      problems.push({ source: p, message: `cannot read directory: ${describeFsError(err)}` });
      continue;
    }
    for (const name of entries.sort()) {
      if (!CONFIG_EXTENSIONS.includes(path.extname(name).toLowerCase())) continue;
      const file = path.join(p, name);
      try {
        if (!(await fs.stat(file)).isFile()) continue;
      } catch (err) {
        problems.push({ source: file, message: `cannot read: ${describeFsError(err)}` });
        continue;
      }
      await readFile(file);
    }
  }
  if (problems.length > 0) throw new ConfigInvalidError(problems, 'PILOT_CONFIG_PARSE');
  return documents;
}

const FS_ERRORS: Readonly<Record<string, string>> = {
  ENOENT: 'no such file or directory',
  EACCES: 'permission denied',
  EISDIR: 'is a directory',
  ENOTDIR: 'not a directory',
};

function describeFsError(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code && FS_ERRORS[code]) return `${FS_ERRORS[code]} (${code})`;
  return code ?? (err as Error).message;
}
