// A stand-in for `sail proxy --config FILE` in the supervisor's unit tests: it starts in a few
// milliseconds where the real proxy takes half a second, and its behaviour comes from the config
// file the supervisor writes. Keys (all test-only): adminListen (serves /ready and /server_info),
// readyAfterMs, exitCode (exit at once with it), ignoreTerm (SIGTERM does nothing), termDelayMs
// (drain time before exit 0), eventsFile (one line per event: start, env, hup, term).
'use strict';
const fs = require('node:fs');
const http = require('node:http');
const { setTimeout } = require('node:timers');
const YAML = require('yaml');

const configFile = process.argv[process.argv.indexOf('--config') + 1];
const config = YAML.parse(fs.readFileSync(configFile, 'utf8'));
const event = line => {
  if (config.eventsFile) fs.appendFileSync(config.eventsFile, `${process.pid} ${line}\n`);
};
if (config.exitCode !== undefined) process.exit(config.exitCode);

event(`start uid=${process.getuid()} gid=${process.getgid()}`);
const caps = fs
  .readFileSync('/proc/self/status', 'utf8')
  .match(/^CapEff:\s+(\S+)$[\s\S]*^CapAmb:\s+(\S+)$/m);
if (caps) event(`caps eff=${caps[1]} amb=${caps[2]}`);
event(
  `env NOTIFY_SOCKET=${process.env.NOTIFY_SOCKET ?? ''} FAKE_MARK=${process.env.FAKE_MARK ?? ''}`,
);
const started = Date.now();
const [host, port] = config.adminListen.split(':');
const server = http.createServer((req, res) => {
  if (req.url === '/ready') {
    const ready = Date.now() - started >= (config.readyAfterMs ?? 0);
    res.writeHead(ready ? 200 : 503);
    res.end(ready ? 'LIVE\n' : 'PRE_INITIALIZING: waiting\n');
  } else if (req.url === '/server_info') {
    res.setHeader('content-type', 'application/json');
    res.end(
      JSON.stringify({
        state: 'LIVE',
        control_plane: { connected: true, versions: { clusters: 'v7', listeners: 'v7' } },
      }),
    );
  } else {
    res.writeHead(404);
    res.end();
  }
});
process.on('SIGTERM', () => {
  event('term');
  if (config.ignoreTerm) return;
  server.close();
  setTimeout(() => process.exit(0), config.termDelayMs ?? 0);
});
const listenDelay = config.listenDelayMs ?? 0;
setTimeout(() => {
  // As in the real proxy, SIGHUP is handled (not fatal) from just before the admin server listens.
  process.on('SIGHUP', () => event('hup'));
  server.listen(Number(port), host);
}, listenDelay);
