/**
 * The Node.js floor of the proxy benchmark (bench/proxy.ts, setup `node-floor`): the same pair
 * as the Sail and nginx pairs, built from the least a Node.js process can do to carry the
 * traffic, so that what is Node's and what is Sail's can be told apart.
 *
 *   a LISTEN UPSTREAM CERTS   plain TCP in; for each connection one mutual-TLS connection to B
 *                             (A's workload certificate, B's verified against the mesh root)
 *   b LISTEN ORIGIN CERTS     mutual TLS in (client certificate required and verified); for each
 *                             connection one plain TCP connection to the origin
 *
 * Bytes are piped both ways, one downstream connection to one upstream connection, so HTTP/1.1
 * keep-alive works end to end without any HTTP being parsed: no routing, no header edits, no
 * telemetry, no pooling beyond connections to B opened ahead of need. Whatever CPU, memory and latency this pair costs is the runtime's
 * (sockets, TLS, streams, the event loop), and any HTTP proxy in Node.js costs at least that.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as tls from 'node:tls';

/** Connections A keeps open to B ahead of need (more than the benchmark's clients open). */
const SPARES = 64;

function hostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  return { host: s.slice(0, i), port: Number(s.slice(i + 1)) };
}

/** Pipes `a` and `b` into each other; either side's end or error closes both. */
function splice(a: net.Socket, b: net.Socket): void {
  a.setNoDelay(true);
  b.setNoDelay(true);
  a.pipe(b);
  b.pipe(a);
  const close = () => {
    a.destroy();
    b.destroy();
  };
  a.once('error', close).once('close', close);
  b.once('error', close).once('close', close);
}

function main(argv: string[]): void {
  const [side, listen, upstream, certs] = argv;
  if ((side !== 'a' && side !== 'b') || !listen || !upstream || !certs) {
    console.error('usage: proxy-node-floor a|b LISTEN UPSTREAM CERTS_DIR');
    process.exit(2);
  }
  const identity = {
    cert: fs.readFileSync(path.join(certs, 'cert-chain.pem')),
    key: fs.readFileSync(path.join(certs, 'key.pem')),
    ca: fs.readFileSync(path.join(certs, 'root-cert.pem')),
  };
  const up = hostPort(upstream);
  // A opens SPARES mutual-TLS connections to B at start, ahead of need, and hands one to each
  // client connection, so that no client waits for a handshake in the measured windows: the Sail
  // and nginx pairs reuse pooled connections, while a handshake here costs a few ms of the shared
  // core and the load generator opens 10 new connections per run (36 in the whole benchmark).
  const secureContext = tls.createSecureContext({ ...identity, minVersion: 'TLSv1.3' });
  const dialB = () =>
    tls.connect({
      ...up,
      secureContext,
      // The workload certificates carry a SPIFFE URI SAN only; the chain is what is checked.
      checkServerIdentity: () => undefined,
    });
  const spares: tls.TLSSocket[] = [];
  if (side === 'a') {
    for (let i = 0; i < SPARES; i++) {
      const s = dialB();
      spares.push(s);
      s.once('close', () => {
        const j = spares.indexOf(s);
        if (j >= 0) spares.splice(j, 1);
      });
    }
  }
  const server =
    side === 'a'
      ? net.createServer({ noDelay: true }, down => {
          splice(down, spares.shift() ?? dialB());
        })
      : tls.createServer(
          {
            ...identity,
            noDelay: true,
            requestCert: true,
            rejectUnauthorized: true,
            minVersion: 'TLSv1.3',
          },
          down => splice(down, net.connect({ ...up, noDelay: true })),
        );
  const at = hostPort(listen);
  server.listen(at.port, at.host, () => console.log(`node-floor ${side} on ${listen}`));
  process.once('SIGTERM', () => process.exit(0));
}

main(process.argv.slice(2));
