// Builds the single executable: dist/sail (a Node single executable application, Linux x64) and
// its resource directory dist/lib/sail/ (protos, the proxy's Envoy descriptor and the native
// addon), installed as /usr/bin/sail and /usr/lib/sail/. Run by `npm run package:sea` after
// `npm run build`; all offline:
//   1. esbuild bundles build/cli/sail.js and everything it imports into one CommonJS file;
//   2. `node --experimental-sea-config` turns it into a blob (with V8's code cache);
//   3. a copy of this Node binary gets the blob injected with postject.
// The layout of dist/lib/sail/ is common/resources.ts's RESOURCE_LAYOUT (read from build/).
//
// Environment: SAIL_DIST_DIR (default dist/) is where the output goes; SAIL_SKIP_NATIVE=1 builds
// without the native addon (the binary then runs the proxy in explicit mode only).
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const root = path.join(__dirname, '..', '..');
const buildDir = path.join(root, 'build');
const distDir = path.resolve(process.env.SAIL_DIST_DIR || path.join(root, 'dist'));
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
const SEA_RESOURCE = 'NODE_SEA_BLOB';

/**
 * esbuild warnings that are expected: api/envoy.js calls require.resolve() only when running from a
 * checkout; the single executable reads those protos from its resource directory.
 */
const KNOWN_WARNINGS = [
  /api[\\/]envoy\.js: "(@grpc\/grpc-js-xds|protobufjs)\/package\.json" should be marked as external for use with "require\.resolve"/,
];

function fail(message) {
  console.error(`package:sea: ${message}`);
  process.exit(1);
}

function need(file, hint) {
  if (!fs.existsSync(file)) fail(`${path.relative(root, file)} is missing: ${hint}`);
}

/** Copies the .proto files under `from` into `to`, keeping the tree (and nothing else). */
function copyProtos(from, to) {
  need(from, 'run `npm ci`');
  fs.cpSync(from, to, {
    recursive: true,
    filter: src => fs.statSync(src).isDirectory() || src.endsWith('.proto'),
  });
}

/** The resource directory's contents, in `dir`. */
function buildResources(dir, layout) {
  const nodeModules = path.join(root, 'node_modules');
  // Sail's own protos: the build copies them beside build/api/index.js; take the sources.
  copyProtos(path.join(root, 'api', 'sail'), path.join(dir, layout.sailProtos, 'sail'));
  const xdsDeps = path.join(nodeModules, '@grpc', 'grpc-js-xds', 'deps');
  for (const d of layout.envoyProtos)
    copyProtos(path.join(xdsDeps, path.basename(d)), path.join(dir, d));
  copyProtos(
    path.join(nodeModules, 'protobufjs', 'google'),
    path.join(dir, layout.wellKnownProtos, 'google'),
  );
  copyProtos(path.join(nodeModules, 'etcd3', 'proto'), path.join(dir, layout.etcdProtos));
  // The proxy's pruned Envoy API: without it the proxy would parse the protos (more memory).
  const descriptor = path.join(buildDir, 'api', layout.envoyProxyDescriptor);
  need(descriptor, 'run `node scripts/gen-envoy-descriptor.js` (or `npm run build`)');
  fs.copyFileSync(descriptor, path.join(dir, layout.envoyProxyDescriptor));
  const addon = path.join(buildDir, 'common', 'native', 'sail_native.node');
  if (process.env.SAIL_SKIP_NATIVE === '1') {
    console.log('package:sea: without the native addon (SAIL_SKIP_NATIVE=1): no capture mode');
  } else {
    need(addon, 'run `node scripts/build-native.js` (or `npm run build`)');
    fs.copyFileSync(addon, path.join(dir, layout.nativeAddon));
    fs.chmodSync(path.join(dir, layout.nativeAddon), 0o644);
  }
}

/**
 * esbuild plugin: etcd3 (1.1.2) loads its protos from `${__dirname}/../proto/` as soon as it is
 * imported, which every `sail` command does (pilot's store module imports it). In the bundle the
 * files come from the resource directory, and they are loaded on first use (only
 * `--store etcd` needs them), so that no other command depends on them or pays for them.
 */
function etcdProtosPlugin(resourcesModule, layout) {
  const filter = /[\\/]etcd3[\\/]lib[\\/]connection-pool\.js$/;
  const edits = [
    [
      'const packageDefinition = (0, proto_loader_1.loadSync)(`${__dirname}/../proto/rpc.proto`, {',
      'const packageDefinition = () => (0, proto_loader_1.loadSync)(' +
        `require(${JSON.stringify(resourcesModule)}).resourcePath(` +
        `${JSON.stringify(layout.etcdProtos)}, 'rpc.proto'), {`,
    ],
    [
      'const services = grpc.loadPackageDefinition(packageDefinition);\n' +
        'const etcdserverpb = services.etcdserverpb;',
      'let etcdServices;\n' +
        'const etcdserverpb = new Proxy({}, { get: (_target, name) => (etcdServices ??= ' +
        'grpc.loadPackageDefinition(packageDefinition()).etcdserverpb)[name] });',
    ],
  ];
  return {
    name: 'sail-etcd3-protos',
    setup(build) {
      build.onLoad({ filter }, args => {
        let text = fs.readFileSync(args.path, 'utf8');
        for (const [from, to] of edits) {
          if (!text.includes(from)) {
            throw new Error(
              `${args.path} no longer has \`${from}\`: update scripts/package/sea.js`,
            );
          }
          text = text.replace(from, to);
        }
        return { contents: text, loader: 'js' };
      });
    },
  };
}

/** Bundles the CLI into `outfile`; returns esbuild's warnings. */
async function bundle(outfile, layout) {
  const esbuild = require('esbuild');
  const resourcesModule = path.join(buildDir, 'common', 'resources.js');
  const result = await esbuild.build({
    stdin: {
      // The CLI's own `require.main === module` check does not hold inside the bundle.
      contents:
        "const { main } = require('./cli/sail.js');\n" +
        "const { reportCliError } = require('./cli/errors.js');\n" +
        'main(process.argv.slice(2)).catch(reportCliError);\n',
      resolveDir: buildDir,
      sourcefile: 'sea-main.js',
      loader: 'js',
    },
    outfile,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    // node:_http_common is a builtin esbuild does not list (proxy/http uses its HTTP parser).
    external: ['_http_common'],
    plugins: [etcdProtosPlugin(resourcesModule, layout)],
    legalComments: 'none',
    // V8 keeps every script's source for lazy compilation, and each process maps the blob: minus
    // whitespace and with syntax shortened the bundle is ~40 % smaller, and a packaged proxy uses
    // ~7 MB less RSS (BENCHMARKS.md, proxy "Memory"). Identifiers are kept: error classes report
    // their names and stack traces stay readable.
    minifyWhitespace: true,
    minifySyntax: true,
    logLevel: 'silent',
  });
  return result.warnings;
}

function run(cmd, args, opts = {}) {
  const res = spawnSync(cmd, args, { stdio: 'inherit', ...opts });
  if (res.error) fail(`failed to run ${cmd}: ${res.error.message}`);
  if (res.status !== 0) fail(`${cmd} ${args.join(' ')} exited with ${res.status ?? res.signal}`);
  return res;
}

/**
 * Injects the blob with postject's CLI, in a child whose output is shown only on failure: LIEF
 * prints harmless warnings about the ELF notes of Node's binary on every run.
 */
function postject(binary, blob) {
  const cli = path.join(path.dirname(require.resolve('postject/package.json')), 'dist', 'cli.js');
  const res = spawnSync(
    process.execPath,
    [cli, binary, SEA_RESOURCE, blob, '--sentinel-fuse', SEA_FUSE],
    { encoding: 'utf8' },
  );
  if (res.error) fail(`failed to run postject: ${res.error.message}`);
  if (res.status !== 0) {
    const noise = /^warning: Can't find string offset for section name '\.note[^']*'$/;
    const out = `${res.stdout ?? ''}${res.stderr ?? ''}`
      .split('\n')
      .filter(l => l.trim() !== '' && !noise.test(l));
    fail(`postject exited with ${res.status ?? res.signal}:\n${out.join('\n')}`);
  }
}

const mib = bytes => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

function dirSize(dir) {
  let total = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += fs.statSync(path.join(e.parentPath ?? e.path, e.name)).size;
  }
  return total;
}

async function main() {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    fail(`builds Linux x64 only (this is ${process.platform} ${process.arch})`);
  }
  need(path.join(buildDir, 'cli', 'sail.js'), 'run `npm run build` first');
  need(path.join(buildDir, 'common', 'resources.js'), 'run `npm run build` first');
  const { RESOURCE_LAYOUT: layout } = require(path.join(buildDir, 'common', 'resources.js'));
  const nodeBinary = process.execPath;
  if (!fs.readFileSync(nodeBinary).includes(SEA_FUSE)) {
    fail(`${nodeBinary} has no SEA fuse (${SEA_FUSE}): it cannot make single executables`);
  }

  fs.mkdirSync(distDir, { recursive: true });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'sail-sea-'));
  try {
    // 1. One CommonJS file.
    const bundleFile = path.join(work, 'sail.cjs');
    const warnings = await bundle(bundleFile, layout);
    for (const w of warnings) {
      if (KNOWN_WARNINGS.some(k => k.test(`${w.location ? w.location.file : ''}: ${w.text}`)))
        continue;
      const where = w.location ? `${w.location.file}:${w.location.line}: ` : '';
      console.warn(`package:sea: esbuild: ${where}${w.text}`);
    }

    // 2. The SEA blob.
    const blob = path.join(work, 'sea-prep.blob');
    const seaConfig = path.join(work, 'sea-config.json');
    fs.writeFileSync(
      seaConfig,
      JSON.stringify({
        // Relative (run in `work`): stack traces then name `sail.cjs`, not a temporary path.
        main: path.basename(bundleFile),
        output: path.basename(blob),
        disableExperimentalSEAWarning: true,
        useSnapshot: false,
        useCodeCache: true,
      }),
    );
    run(nodeBinary, ['--experimental-sea-config', seaConfig], { cwd: work });

    // 3. The executable: this Node with the blob injected (written aside, then renamed).
    const tmpBinary = path.join(distDir, '.sail.tmp');
    fs.copyFileSync(nodeBinary, tmpBinary);
    fs.chmodSync(tmpBinary, 0o755);
    // Strip Node's symbols first (103 -> 86 MB; lintian wants a stripped binary): stripping after
    // the injection would drop the blob's note and the binary would crash.
    if (process.env.SAIL_SEA_NO_STRIP !== '1') run('strip', ['--strip-unneeded', tmpBinary]);
    postject(tmpBinary, blob);

    // 4. The resource directory, beside it.
    const libDir = path.join(distDir, 'lib', 'sail');
    const tmpLib = path.join(distDir, 'lib', '.sail.tmp');
    fs.rmSync(tmpLib, { recursive: true, force: true });
    fs.mkdirSync(tmpLib, { recursive: true });
    buildResources(tmpLib, layout);
    fs.rmSync(libDir, { recursive: true, force: true });
    fs.renameSync(tmpLib, libDir);
    fs.renameSync(tmpBinary, path.join(distDir, 'sail'));

    // 5. Smoke test: the binary runs without node_modules.
    const sail = path.join(distDir, 'sail');
    const res = spawnSync(sail, ['version'], { cwd: os.tmpdir(), encoding: 'utf8' });
    if (res.status !== 0)
      fail(`${sail} version failed (${res.status ?? res.signal}): ${res.stderr}`);
    console.log(
      `package:sea: ${path.relative(root, sail) || sail} ${mib(fs.statSync(sail).size)} ` +
        `(${res.stdout.trim()}), ${path.relative(root, libDir) || libDir}/ ${mib(dirSize(libDir))}`,
    );
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch(err => fail(err && err.stack ? err.stack : String(err)));
