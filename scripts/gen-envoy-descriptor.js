// Writes build/api/envoy-proxy.json: the Envoy API the proxy decodes, as a protobufjs JSON
// descriptor pruned to the types it needs, without comments and custom options (api/envoy.ts
// buildProxyDescriptor). The proxy reads it with protobuf.Root.fromJSON instead of parsing ~90
// .proto files at start (BENCHMARKS.md, proxy "Memory"). The protos come from @grpc/grpc-js-xds
// as at run time; none is copied into the repository (DESIGN §3.5). Run by `npm run build` after
// tsc (it needs build/api/envoy.js); scripts/package/sea.js ships the file.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const buildApi = path.join(__dirname, '..', 'build', 'api');
const envoyModule = path.join(buildApi, 'envoy.js');
if (!fs.existsSync(envoyModule)) {
  console.error('gen-envoy-descriptor: build/api/envoy.js is missing: run `tsc -p .` first');
  process.exit(1);
}
const { buildProxyDescriptor } = require(envoyModule);
const { RESOURCE_LAYOUT } = require(path.join(__dirname, '..', 'build', 'common', 'resources.js'));

const out = path.join(buildApi, RESOURCE_LAYOUT.envoyProxyDescriptor);
const text = JSON.stringify(buildProxyDescriptor());
// Written aside and renamed: a proxy starting meanwhile reads the old file or the new, never half.
fs.writeFileSync(`${out}.tmp`, text);
fs.renameSync(`${out}.tmp`, out);
