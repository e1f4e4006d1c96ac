/**
 * A real, single-member etcd for tests (DESIGN §4: real parts in tests): `/usr/bin/etcd` from
 * Debian's `etcd-server` package (`.ci/run` installs it), on free loopback ports, with its data in
 * a temporary directory. Tests that use it FAIL (never skip) when the binary is missing, so a CI
 * machine without it cannot pass silently.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

/** The etcd binary; `SAIL_TEST_ETCD` overrides it (e.g. a newer etcd in a developer's PATH). */
export const ETCD_BIN = process.env.SAIL_TEST_ETCD ?? '/usr/bin/etcd';

const START_TIMEOUT_MS = 20_000;
/** Starts on fresh ports after a port was taken between choosing and binding it. */
const START_ATTEMPTS = 3;
const STOP_TIMEOUT_MS = 10_000;
/** How much of etcd's own output to keep for error messages. */
const MAX_LOG_CHARS = 8_000;

/** A free TCP port on 127.0.0.1 (bound to 0, read back, released). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** TLS for etcd's client port: PEM files; with `clientCa`, clients must present a certificate. */
export interface EtcdServerTls {
  readonly cert: string;
  readonly key: string;
  readonly clientCa?: string;
  /** Client certificate and key the health check uses when `clientCa` is set. */
  readonly clientCert?: string;
  readonly clientKey?: string;
  /** CA that signed `cert`, for the health check. */
  readonly ca: string;
}

/** A running etcd test server; `stop()` kills it and removes its data. */
export class EtcdServer {
  /** `http://127.0.0.1:PORT` (`https://` with TLS), the client URL to give the store. */
  readonly endpoint: string;
  private proc: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private log = '';

  private constructor(
    private readonly dataDir: string,
    clientPort: number,
    private readonly peerPort: number,
    private readonly tls: EtcdServerTls | undefined,
  ) {
    this.endpoint = `${tls ? 'https' : 'http'}://127.0.0.1:${clientPort}`;
  }

  /**
   * Starts etcd on free ports in a fresh temporary directory and resolves once it answers
   * `/health`.
   * @throws Error naming the binary when /usr/bin/etcd is missing (install Debian's etcd-server).
   */
  static async start(opts: { tls?: EtcdServerTls } = {}): Promise<EtcdServer> {
    if (!fs.existsSync(ETCD_BIN)) {
      throw new Error(
        `etcd not found at ${ETCD_BIN}: the etcd store tests need a real etcd; install Debian's ` +
          `etcd-server package (apt-get install etcd-server; .ci/run does) or set SAIL_TEST_ETCD`,
      );
    }
    // A free port can be taken by a parallel test before etcd binds it: new ports, a few times.
    for (let attempt = 1; ; attempt++) {
      const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sail-etcd-'));
      const server = new EtcdServer(dataDir, await freePort(), await freePort(), opts.tls);
      try {
        await server.launch();
        return server;
      } catch (err) {
        await server.stop();
        const raced = err instanceof Error && err.message.includes('address already in use');
        if (!raced || attempt === START_ATTEMPTS) throw err;
      }
    }
  }

  /** Kills etcd (SIGKILL: a crash, not a clean shutdown) and waits for it to exit. Data stays. */
  async kill(): Promise<void> {
    await this.signal('SIGKILL');
  }

  /** Kills etcd if it runs, then starts it again on the same ports and data. */
  async restart(): Promise<void> {
    await this.kill();
    await this.launch();
  }

  /** Kills etcd and removes its data directory. Idempotent. */
  async stop(): Promise<void> {
    await this.signal('SIGKILL');
    fs.rmSync(this.dataDir, { recursive: true, force: true });
  }

  private async signal(sig: NodeJS.Signals): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill(sig);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.exited,
      new Promise<void>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`etcd (pid ${proc.pid}) did not exit after ${sig}`)),
          STOP_TIMEOUT_MS,
        );
      }),
    ]).finally(() => clearTimeout(timer));
  }

  private async launch(): Promise<void> {
    const peerUrl = `http://127.0.0.1:${this.peerPort}`;
    const name = 'sail-test';
    const proc = spawn(
      ETCD_BIN,
      [
        '--name',
        name,
        '--data-dir',
        path.join(this.dataDir, 'data'),
        '--listen-client-urls',
        this.endpoint,
        '--advertise-client-urls',
        this.endpoint,
        '--listen-peer-urls',
        peerUrl,
        '--initial-advertise-peer-urls',
        peerUrl,
        '--initial-cluster',
        `${name}=${peerUrl}`,
        '--initial-cluster-state',
        'new',
        ...(this.tls
          ? [
              '--cert-file',
              this.tls.cert,
              '--key-file',
              this.tls.key,
              ...(this.tls.clientCa
                ? ['--client-cert-auth', '--trusted-ca-file', this.tls.clientCa]
                : []),
            ]
          : []),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.proc = proc;
    const keep = (chunk: Buffer) => {
      this.log = (this.log + chunk.toString('utf8')).slice(-MAX_LOG_CHARS);
    };
    proc.stdout?.on('data', keep);
    proc.stderr?.on('data', keep);
    this.exited = new Promise(resolve => proc.once('exit', () => resolve()));
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new Error(`etcd exited (${proc.exitCode ?? proc.signalCode}) at start:\n${this.log}`);
      }
      if (await this.healthy()) return;
      if (Date.now() > deadline) {
        throw new Error(`etcd did not become healthy within ${START_TIMEOUT_MS} ms:\n${this.log}`);
      }
      await new Promise(r => setTimeout(r, 50));
    }
  }

  /** etcd's `/health` says `{"health":"true"}` (node:http(s), so TLS client certificates work). */
  private healthy(): Promise<boolean> {
    const tls = this.tls;
    return new Promise(resolve => {
      const options: https.RequestOptions = { timeout: 1000 };
      if (tls) {
        // No SNI: the server is an IP address (Node warns about IP server names, RFC 6066).
        options.servername = '';
        options.ca = fs.readFileSync(tls.ca);
        if (tls.clientCert && tls.clientKey) {
          options.cert = fs.readFileSync(tls.clientCert);
          options.key = fs.readFileSync(tls.clientKey);
        }
      }
      const req = (tls ? https : http).get(`${this.endpoint}/health`, options, res => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString('utf8')));
        res.on('end', () => {
          try {
            resolve(
              res.statusCode === 200 &&
                (JSON.parse(body) as { health?: unknown }).health === 'true',
            );
          } catch {
            resolve(false);
          }
        });
      });
      req.on('timeout', () => req.destroy());
      req.on('error', () => resolve(false)); // not listening yet
    });
  }
}
