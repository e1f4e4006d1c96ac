// Copies what tsc does not: the .proto sources, beside the compiled api/index.js that loads them.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
fs.cpSync(path.join(root, 'api', 'sail'), path.join(root, 'build', 'api', 'sail'), {
  recursive: true,
  filter: src => fs.statSync(src).isDirectory() || src.endsWith('.proto'),
});
