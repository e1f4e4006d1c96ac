'use strict';
/**
 * Prints a machine-readable debian/copyright (DEP-5) for one of Sail's packages:
 *
 *   node packaging/deb/copyright.js sail [NODE_LICENSE_FILE]   the executable: Sail, Node.js and
 *                                                             the npm packages bundled into it
 *   node packaging/deb/copyright.js sail-node-agent           Sail's own files only
 *
 * The bundled npm packages are the production dependency closure of package.json, read from
 * node_modules (a superset of what esbuild keeps). Exits 1 naming the package whose licence is
 * not one this file carries the text of, so a new dependency cannot slip in unlicensed.
 */
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');

/** Licence texts this file carries (DEP-5 standalone paragraphs); Apache-2.0 is in common-licenses. */
const TEXTS = {
  'Apache-2.0': [
    'Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file',
    'except in compliance with the License. You may obtain a copy of the License at',
    '.',
    '    http://www.apache.org/licenses/LICENSE-2.0',
    '.',
    'Unless required by applicable law or agreed to in writing, software distributed under the',
    'License is distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND,',
    'either express or implied. See the License for the specific language governing permissions',
    'and limitations under the License.',
    '.',
    'On Debian systems, the complete text of the Apache License, Version 2.0 can be found in',
    '"/usr/share/common-licenses/Apache-2.0".',
  ],
  Expat: [
    'Permission is hereby granted, free of charge, to any person obtaining a copy of this software',
    'and associated documentation files (the "Software"), to deal in the Software without',
    'restriction, including without limitation the rights to use, copy, modify, merge, publish,',
    'distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the',
    'Software is furnished to do so, subject to the following conditions:',
    '.',
    'The above copyright notice and this permission notice shall be included in all copies or',
    'substantial portions of the Software.',
    '.',
    'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING',
    'BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND',
    'NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,',
    'DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,',
    'OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.',
  ],
  ISC: [
    'Permission to use, copy, modify, and/or distribute this software for any purpose with or',
    'without fee is hereby granted, provided that the above copyright notice and this permission',
    'notice appear in all copies.',
    '.',
    'THE SOFTWARE IS PROVIDED "AS IS" AND THE AUTHOR DISCLAIMS ALL WARRANTIES WITH REGARD TO THIS',
    'SOFTWARE INCLUDING ALL IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS. IN NO EVENT SHALL THE',
    'AUTHOR BE LIABLE FOR ANY SPECIAL, DIRECT, INDIRECT, OR CONSEQUENTIAL DAMAGES OR ANY DAMAGES',
    'WHATSOEVER RESULTING FROM LOSS OF USE, DATA OR PROFITS, WHETHER IN AN ACTION OF CONTRACT,',
    'NEGLIGENCE OR OTHER TORTIOUS ACTION, ARISING OUT OF OR IN CONNECTION WITH THE USE OR',
    'PERFORMANCE OF THIS SOFTWARE.',
  ],
  'BSD-2-Clause': [
    'Redistribution and use in source and binary forms, with or without modification, are',
    'permitted provided that the following conditions are met:',
    '1. Redistributions of source code must retain the above copyright notice, this list of',
    '   conditions and the following disclaimer.',
    '2. Redistributions in binary form must reproduce the above copyright notice, this list of',
    '   conditions and the following disclaimer in the documentation and/or other materials',
    '   provided with the distribution.',
    '.',
    'THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY EXPRESS OR',
    'IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY',
    'AND FITNESS FOR A PARTICULAR PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR',
    'CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR',
    'CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR',
    'SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY',
    'THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR',
    'OTHERWISE) ARISING IN ANY WAY OUT OF THE USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE',
    'POSSIBILITY OF SUCH DAMAGE.',
  ],
  'BSD-3-Clause': [
    'Redistribution and use in source and binary forms, with or without modification, are',
    'permitted provided that the following conditions are met:',
    '1. Redistributions of source code must retain the above copyright notice, this list of',
    '   conditions and the following disclaimer.',
    '2. Redistributions in binary form must reproduce the above copyright notice, this list of',
    '   conditions and the following disclaimer in the documentation and/or other materials',
    '   provided with the distribution.',
    '3. Neither the name of the copyright holder nor the names of its contributors may be used to',
    '   endorse or promote products derived from this software without specific prior written',
    '   permission.',
    '.',
    'THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY EXPRESS OR',
    'IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY',
    'AND FITNESS FOR A PARTICULAR PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR',
    'CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR',
    'CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR',
    'SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY',
    'THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR',
    'OTHERWISE) ARISING IN ANY WAY OUT OF THE USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE',
    'POSSIBILITY OF SUCH DAMAGE.',
  ],
  'GPL-2': [
    'On Debian systems, the complete text of the GNU General Public License version 2 can be',
    'found in "/usr/share/common-licenses/GPL-2".',
  ],
};

/** npm licence expressions as DEP-5 short names. */
const DEP5_NAMES = {
  MIT: 'Expat',
  ISC: 'ISC',
  'Apache-2.0': 'Apache-2.0',
  'BSD-2-Clause': 'BSD-2-Clause',
  'BSD-3-Clause': 'BSD-3-Clause',
  '(BSD-3-Clause OR GPL-2.0)': 'BSD-3-Clause or GPL-2',
};

/** package.json of `name` as node_modules resolution finds it from `fromDir`. */
function findPackage(name, fromDir) {
  for (let dir = fromDir; ; dir = path.dirname(dir)) {
    const file = path.join(dir, 'node_modules', name, 'package.json');
    if (fs.existsSync(file)) return file;
    if (path.dirname(dir) === dir) return undefined;
  }
}

/** The production dependency closure of the checkout: [{ name, version, license }], sorted. */
function bundledPackages() {
  const seen = new Map();
  const visit = (name, fromDir) => {
    const file = findPackage(name, fromDir);
    if (!file) return; // an optional dependency for another platform
    const dir = path.dirname(file);
    if (seen.has(dir)) return;
    const pkg = JSON.parse(fs.readFileSync(file, 'utf8'));
    const license = typeof pkg.license === 'string' ? pkg.license : JSON.stringify(pkg.license);
    seen.set(dir, { name: pkg.name, version: pkg.version, license });
    for (const dep of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies }))
      visit(dep, dir);
  };
  const root = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  for (const dep of Object.keys(root.dependencies)) visit(dep, ROOT);
  const unique = new Map([...seen.values()].map(p => [`${p.name}@${p.version}`, p]));
  return [...unique.values()].sort((a, b) =>
    `${a.name}@${a.version}`.localeCompare(`${b.name}@${b.version}`),
  );
}

/**
 * Every licence of the executable as one DEP-5 expression: `A or B, and C and D` (', and' binds
 * looser than 'or', so the choices come first).
 */
function licenseExpression(names) {
  const all = ['Apache-2.0', 'Expat', ...names];
  const unique = [...new Set(all)];
  const choices = unique.filter(n => n.includes(' or '));
  const plain = unique.filter(n => !n.includes(' or '));
  return [...choices, plain.join(' and ')].join(', and ');
}

function paragraph(fields) {
  return Object.entries(fields)
    .map(([k, v]) => {
      const lines = Array.isArray(v) ? v : [v];
      return `${k}: ${lines[0]}${lines
        .slice(1)
        .map(l => `\n ${l}`)
        .join('')}`;
    })
    .join('\n');
}

function main() {
  const [pkgName, nodeLicense] = process.argv.slice(2);
  if (!pkgName) {
    process.stderr.write('usage: copyright.js PACKAGE [NODE_LICENSE_FILE]\n');
    process.exit(2);
  }
  const out = [
    paragraph({
      Format: 'https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/',
      'Upstream-Name': 'sail',
      Comment: [
        `This is the copyright file of the ${pkgName} package, built from the Sail`,
        'source tree by packaging/deb/build.sh.',
      ],
    }),
    paragraph({ Files: '*', Copyright: '2026 The Sail Authors', License: 'Apache-2.0' }),
  ];
  const used = new Set(['Apache-2.0']);
  if (pkgName === 'sail') {
    const bundled = bundledPackages();
    const names = new Set();
    for (const p of bundled) {
      const dep5 = DEP5_NAMES[p.license];
      if (!dep5) {
        process.stderr.write(
          `copyright.js: ${p.name}@${p.version}: licence ${p.license} has no text here; add it to TEXTS and DEP5_NAMES\n`,
        );
        process.exit(1);
      }
      names.add(dep5);
      for (const n of dep5.split(' or ')) used.add(n);
    }
    out.push(
      paragraph({
        Files: 'usr/bin/sail',
        Copyright: ['2026 The Sail Authors', 'Node.js contributors and the authors listed below'],
        License: licenseExpression(names),
        Comment: [
          'usr/bin/sail is a Node.js single executable application: the Node.js runtime',
          '(Expat; it bundles third-party code under the licences in /usr/share/doc/sail/',
          'NODE-LICENSE) with Sail and these npm packages compiled into it:',
          ...bundled.map(p => `  ${p.name} ${p.version}: ${DEP5_NAMES[p.license]}`),
          ...(nodeLicense ? [] : ['(NODE-LICENSE was not found on the build machine.)']),
        ],
      }),
    );
    used.add('Expat');
  }
  for (const name of [...used].sort()) {
    const text = TEXTS[name];
    out.push(paragraph({ License: [name, ...text] }));
  }
  process.stdout.write(`${out.join('\n\n')}\n`);
}

main();
