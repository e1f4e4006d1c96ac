// Builds the SO_ORIGINAL_DST addon (common/native/) with node-gyp and copies it next to the
// compiled loader (build/common/native/sail_native.node). Run by `npm run build`.
//
// There is no network on build machines, so node-gyp must never download Node's headers: it gets
// `--nodedir` pointing at the headers of the Node running this script (a distribution's
// /usr/include/node, or an official tarball's include/node), and the build fails with a clear
// message when none are found. Off Linux there is nothing to build (capture mode is Linux only).
// Set SAIL_SKIP_NATIVE=1 to skip the build (explicit mode needs no addon).
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const root = path.join(__dirname, '..');
const srcDir = path.join(root, 'common', 'native');
const built = path.join(srcDir, 'build', 'Release', 'sail_native.node');
const outDir = path.join(root, 'build', 'common', 'native');

function fail(message) {
  console.error(`build-native: ${message}`);
  process.exit(1);
}

/** Node's own headers: npm's `nodedir` setting, else the installation prefix of this node. */
function findNodeDir() {
  const candidates = [process.env.npm_config_nodedir, path.dirname(path.dirname(process.execPath))];
  for (const dir of candidates) {
    if (dir && fs.existsSync(path.join(dir, 'include', 'node', 'node_api.h'))) return dir;
  }
  return undefined;
}

/** node-gyp's entry script: the copy npm runs scripts with, npm's bundled copy, else PATH. */
function findNodeGyp() {
  const candidates = [];
  if (process.env.npm_config_node_gyp) candidates.push(process.env.npm_config_node_gyp);
  if (process.env.npm_execpath) {
    candidates.push(
      path.join(
        path.dirname(process.env.npm_execpath),
        '..',
        'node_modules',
        'node-gyp',
        'bin',
        'node-gyp.js',
      ),
    );
  }
  const prefix = path.dirname(path.dirname(process.execPath));
  candidates.push(
    path.join(
      prefix,
      'lib',
      'node_modules',
      'npm',
      'node_modules',
      'node-gyp',
      'bin',
      'node-gyp.js',
    ),
  );
  for (const file of candidates) {
    if (fs.existsSync(file)) return { cmd: process.execPath, args: [file] };
  }
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    if (dir && fs.existsSync(path.join(dir, 'node-gyp')))
      return { cmd: path.join(dir, 'node-gyp'), args: [] };
  }
  return undefined;
}

function run(gyp, args) {
  const res = spawnSync(gyp.cmd, [...gyp.args, ...args], { cwd: srcDir, stdio: 'inherit' });
  if (res.error) fail(`failed to run node-gyp ${args[0]}: ${res.error.message}`);
  if (res.status !== 0) fail(`node-gyp ${args[0]} exited with ${res.status ?? res.signal}`);
}

if (process.env.SAIL_SKIP_NATIVE === '1') {
  console.log('build-native: skipped (SAIL_SKIP_NATIVE=1)');
  process.exit(0);
}
if (process.platform !== 'linux') {
  console.log(`build-native: skipped on ${process.platform} (SO_ORIGINAL_DST is Linux only)`);
  process.exit(0);
}
const nodeDir = findNodeDir();
if (!nodeDir) {
  fail(
    `no Node headers (include/node/node_api.h) under ${path.dirname(path.dirname(process.execPath))}; ` +
      'install them (e.g. the libnode-dev package) or set npm_config_nodedir',
  );
}
const gyp = findNodeGyp();
if (!gyp) fail("node-gyp not found (neither npm's bundled copy nor on PATH)");

// `configure` once (and again when binding.gyp or the Node version changes); `build` is make, incremental.
const stamp = path.join(srcDir, 'build', 'sail-configured');
const want = `${process.version} ${nodeDir} ${fs.statSync(path.join(srcDir, 'binding.gyp')).mtimeMs}`;
const have = fs.existsSync(stamp) ? fs.readFileSync(stamp, 'utf8') : '';
if (have !== want || !fs.existsSync(path.join(srcDir, 'build', 'Makefile'))) {
  run(gyp, ['configure', `--nodedir=${nodeDir}`, '--loglevel=warn']);
  fs.writeFileSync(stamp, want);
}
run(gyp, ['build', `--nodedir=${nodeDir}`, '--loglevel=warn']);
if (!fs.existsSync(built)) fail(`node-gyp did not produce ${built}`);
fs.mkdirSync(outDir, { recursive: true });
fs.copyFileSync(built, path.join(outDir, 'sail_native.node'));
console.log(`build-native: ${path.relative(root, path.join(outDir, 'sail_native.node'))}`);
