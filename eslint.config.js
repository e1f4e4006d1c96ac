// ESLint flat config (STYLE 2.11). Type-aware typescript-eslint `strictTypeChecked`, tuned to catch
// the bugs that kill a daemon (floating and misused promises, non-exhaustive switches, unused
// code) rather than to police style; Prettier owns formatting. Layout boundaries (DESIGN §2) are
// `no-restricted-imports` rules generated below.
'use strict';
const js = require('@eslint/js');
const tseslint = require('typescript-eslint');
const { defineConfig, globalIgnores } = require('eslint/config');

/** Top-level folders that are components: each may import only common/ and api/. */
const COMPONENTS = ['ca', 'pilot', 'mixer', 'proxy', 'node-agent'];
/** Top-level folders no library code may import (cli wires components; tests and benches sit on top). */
const WIRING = ['cli', 'test', 'bench'];
/** How deep a source file may sit inside a component or common/ for the layout rules to see it. */
const MAX_DEPTH = 8;

/** Globals for the few CommonJS .js files (config files and scripts/). */
const NODE_COMMONJS_GLOBALS = Object.fromEntries(
  ['require', 'module', 'exports', '__dirname', '__filename', 'process', 'console', 'Buffer'].map(
    name => [name, 'readonly'],
  ),
);

const escapeRe = s => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * `no-restricted-imports` blocks for files under `dir`, one per folder depth, so that `../pilot`
 * from `ca/x.ts` (a sibling component) is caught while `../x` from `ca/sub/y.ts` (inside ca) is not.
 * A relative import leaves the top-level folder exactly when it climbs depth+1 levels.
 */
function layoutRules(dir, forbidden, why) {
  const blocks = [];
  for (let depth = 0; depth <= MAX_DEPTH; depth++) {
    const prefix = `${dir}/${'*/'.repeat(depth)}`;
    const restrict = names => ({
      regex: `^(\\./)?(\\.\\./){${depth + 1}}(${names.map(escapeRe).join('|')})(/|$)`,
      message: why,
    });
    const others = forbidden.filter(f => f !== dir);
    blocks.push(
      {
        files: [`${prefix}*.ts`],
        ignores: [`${prefix}*.test.ts`],
        rules: {
          'no-restricted-imports': ['error', { patterns: [restrict([...others, ...WIRING])] }],
        },
      },
      {
        // Tests may use test/fakes and test/helpers, but still no other component.
        files: [`${prefix}*.test.ts`],
        rules: {
          'no-restricted-imports': ['error', { patterns: [restrict([...others, 'cli', 'bench'])] }],
        },
      },
    );
  }
  return blocks;
}

const componentLayout = COMPONENTS.flatMap(c =>
  layoutRules(
    c,
    COMPONENTS,
    `a component imports only common/ and api/ (its tests also test/): never another component, cli/ or bench/ (DESIGN §2)`,
  ),
);
const libraryLayout = ['common', 'api'].flatMap(dir =>
  layoutRules(
    dir,
    COMPONENTS,
    `${dir}/ is shared library code: it imports no component, cli/ or bench/ (DESIGN §2)`,
  ),
);

const FOCUSED_TEST_MESSAGE =
  'no focused tests: .only silently skips the rest of the suite (STYLE 2.10)';

module.exports = defineConfig(
  globalIgnores(['build/', 'node_modules/', 'api/gen/', 'coverage/', 'dist/', '.tmp/']),

  js.configs.recommended,
  tseslint.configs.strictTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: __dirname },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // The reasons for linting at all (STYLE 2.3 rule 5, 2.11).
      '@typescript-eslint/no-floating-promises': ['error', { ignoreVoid: false }],
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': [
        'error',
        { considerDefaultExhaustiveForUnions: true, requireDefaultForNonUnion: false },
      ],
      '@typescript-eslint/no-unused-vars': [
        'error',
        {
          args: 'after-used',
          argsIgnorePattern: '^_',
          varsIgnorePattern: '^_',
          caughtErrors: 'none',
          ignoreRestSiblings: true,
        },
      ],
      'no-console': 'error',
      eqeqeq: ['error', 'smart'],
      'no-restricted-properties': [
        'error',
        ...['describe', 'it', 'test'].map(object => ({
          object,
          property: 'only',
          message: FOCUSED_TEST_MESSAGE,
        })),
      ],
      'no-restricted-globals': [
        'error',
        { name: 'fdescribe', message: FOCUSED_TEST_MESSAGE },
        { name: 'fit', message: FOCUSED_TEST_MESSAGE },
      ],

      // Numbers and booleans in messages are normal, and with noUncheckedIndexedAccess every
      // `m[1]` of a regex match is `string | undefined`; `${obj}` -> "[object Object]" is the bug.
      '@typescript-eslint/restrict-template-expressions': [
        'error',
        { allowNumber: true, allowBoolean: true, allowRegExp: true, allowNullish: true },
      ],
      // Noise for this codebase: `x!` after a check TS cannot follow, defensive conditions on
      // values from the network, `return resolve()` in executors, async methods that satisfy
      // the Lifecycle interface without awaiting, and explicit conversions kept for readability.
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-unnecessary-condition': 'off',
      '@typescript-eslint/no-confusing-void-expression': 'off',
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/no-unnecessary-type-conversion': 'off',
      '@typescript-eslint/no-unnecessary-type-assertion': 'off',
      // Node types sockets and streams by their base class (`req.socket` is a `net.Socket` even
      // when it is a `TLSSocket`), so a narrowing assertion to a class is the idiom, not a bug.
      '@typescript-eslint/no-unsafe-class-instance-assignment': 'off',
      // A constructor that only narrows its parameter types (`code: AgentErrorCode`) is useful.
      '@typescript-eslint/no-useless-constructor': 'off',
      // We write no enums (STYLE 2.8); the only ones are grpc-js's, and `code as grpc.status` on a
      // number read off the wire is deliberate.
      '@typescript-eslint/no-unsafe-enum-assignment': 'off',
    },
  },

  // Tests: jest matchers and JSON bodies are loosely typed, and skip reasons are printed.
  {
    files: ['**/*.test.ts', 'test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/unbound-method': 'off',
      '@typescript-eslint/no-explicit-any': 'off',
      'no-console': ['error', { allow: ['warn'] }],
    },
  },

  // Programs whose output is the point: the CLI's user-facing output, scripts and benchmarks.
  { files: ['cli/**/*.ts', 'bench/**/*.ts', 'scripts/**'], rules: { 'no-console': 'off' } },

  ...componentLayout,
  ...libraryLayout,

  // Plain CommonJS JavaScript (this file, jest.config.js, scripts/): no type information.
  {
    files: ['**/*.js', '**/*.cjs'],
    extends: [tseslint.configs.disableTypeChecked],
    languageOptions: { sourceType: 'commonjs', globals: NODE_COMMONJS_GLOBALS },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
);
