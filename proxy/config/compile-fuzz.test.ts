import {
  CompileError,
  compileCluster,
  compileListener,
  compileLoadAssignment,
  compileRouteTable,
} from './compile';
import { loadSample, prng, type Resource } from './compile-testing';

/** Malformed input must be NACKed with a CompileError, never crash the xDS client. */
const SAMPLES = [loadSample('sidecar-sample.json'), loadSample('sidecar-strict-sample.json')];
const COMPILERS: [string, (r: Resource) => unknown, Resource[]][] = [
  ['listener', compileListener, SAMPLES.flatMap(s => s.Listener)],
  ['route configuration', compileRouteTable, SAMPLES.flatMap(s => s.RouteConfiguration)],
  ['cluster', compileCluster, SAMPLES.flatMap(s => s.Cluster)],
  ['load assignment', compileLoadAssignment, SAMPLES.flatMap(s => s.ClusterLoadAssignment)],
];

/** Every key that appears in the samples: garbage built from them reaches deep into the code. */
const KEYS = [...collectKeys(SAMPLES, new Set<string>())];

function collectKeys(v: unknown, out: Set<string>): Set<string> {
  if (Array.isArray(v)) for (const x of v) collectKeys(x, out);
  else if (typeof v === 'object' && v !== null)
    for (const [k, x] of Object.entries(v)) {
      out.add(k);
      collectKeys(x, out);
    }
  return out;
}

function garbage(rand: () => number, depth: number): unknown {
  const pick = Math.floor(rand() * (depth > 3 ? 8 : 11));
  switch (pick) {
    case 0:
      return null;
    case 1:
      return rand() < 0.5;
    case 2:
      return Math.floor(rand() * 2 ** 33) - 2 ** 32;
    case 3:
      return rand() * 1e6;
    case 4:
      return ['', 'x', '0', '-1', '1.5', '(?=a)', '\\', '%s%', 'tls', 'HEALTHY', 'EDS', 'MILLION'][
        Math.floor(rand() * 12)
      ];
    case 5:
      return String(Math.floor(rand() * 100000));
    case 6:
      return undefined;
    case 7:
      return NaN;
    case 8:
    case 9: {
      const o: Record<string, unknown> = {};
      const n = Math.floor(rand() * 5);
      for (let i = 0; i < n; i++)
        o[KEYS[Math.floor(rand() * KEYS.length)]!] = garbage(rand, depth + 1);
      return o;
    }
    default: {
      const n = Math.floor(rand() * 4);
      return Array.from({ length: n }, () => garbage(rand, depth + 1));
    }
  }
}

/** A deep copy of `v` with one randomly chosen node replaced by garbage. */
function mutate(v: unknown, rand: () => number): unknown {
  const copy = structuredClone(v);
  const nodes: [Record<string, unknown> | unknown[], string | number][] = [];
  const walk = (x: unknown) => {
    if (Array.isArray(x))
      x.forEach((y, i) => {
        nodes.push([x, i]);
        walk(y);
      });
    else if (typeof x === 'object' && x !== null)
      for (const [k, y] of Object.entries(x)) {
        nodes.push([x as Record<string, unknown>, k]);
        walk(y);
      }
  };
  walk(copy);
  const n = 1 + Math.floor(rand() * 3);
  for (let i = 0; i < n && nodes.length > 0; i++) {
    const [parent, key] = nodes[Math.floor(rand() * nodes.length)]!;
    (parent as Record<string | number, unknown>)[key] = garbage(rand, 0);
  }
  return copy;
}

function expectCompileErrorOrSuccess(compile: (r: Resource) => unknown, input: unknown): void {
  try {
    compile(input as Resource);
  } catch (err) {
    if (!(err instanceof CompileError)) throw err;
    // An internal error would mean an unguarded read; the message says where.
    expect(err.message).not.toMatch(/internal error/);
  }
}

describe('malformed input gives CompileError, never anything else', () => {
  it.each(COMPILERS)('%s: random objects', (_kind, compile) => {
    const rand = prng(1234);
    for (let i = 0; i < 2000; i++) {
      const input = garbage(rand, 0);
      const named =
        typeof input === 'object' && input !== null && !Array.isArray(input)
          ? { name: 'n', clusterName: 'n', ...input }
          : input;
      expectCompileErrorOrSuccess(compile, named);
    }
  });

  it.each(COMPILERS)('%s: samples with random parts replaced', (_kind, compile, resources) => {
    const rand = prng(42);
    for (let i = 0; i < 3000; i++) {
      const resource = resources[i % resources.length]!;
      expectCompileErrorOrSuccess(compile, mutate(resource, rand));
    }
  });

  it.each(COMPILERS)('%s: not an object', (_kind, compile) => {
    for (const input of [null, undefined, 1, 'x', [], true])
      expect(() => compile(input as unknown as Resource)).toThrow(CompileError);
  });
});
