/**
 * The workload certificate from the node agent's certificate directory (DESIGN §3.3), and the TLS
 * contexts built from it. The agent replaces `cert-chain.pem`, `key.pem` and `root-cert.pem`
 * together through a `..data` symlink swap (common/fs writeFileSetAtomic), so reading through the
 * `..data` target gives one consistent version. Changes are seen through fs.watch on the
 * directory, a slow poll (watches miss events when the directory is replaced) and `reload()`
 * (SIGHUP). New connections get the new material; open connections are not touched.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as tls from 'node:tls';
import { type Clock, systemClock } from '../../common/clock';
import {
  CERT_CHAIN_FILE,
  KEY_FILE,
  ROOT_CERT_FILE,
  readIdentityFiles,
} from '../../common/identity-files';
import { LogField, type Logger } from '../../common/logging';
import { parseCertificate, parseCertificatesPem } from '../../common/pki';
import type {
  CertificateValidation,
  DownstreamTls,
  SecretRef,
  TrustRef,
  UpstreamTls,
} from '../model';
import { SDS_CERT_NAME, SDS_ROOT_NAME } from '../model';
import { PEER_EXCHANGE_ALPN, type PeerIdentity, type TlsProvider } from '../types';
import { peerIdentityOf, sanChecker, verifyPeerSocket } from './peer';

/** The poll behind fs.watch: slow, since the watch sees almost every change. */
export const DEFAULT_TLS_POLL_INTERVAL_MS = 10_000;

/** Options of {@link FileTlsProvider}. */
export interface FileTlsProviderOptions {
  readonly logger: Logger;
  /** The agent's certificate directory. */
  readonly certsDir: string;
  /** The mesh trust domain; a workload certificate from another one is logged. */
  readonly trustDomain: string;
  /** Validity checks of loaded certificates. Default: the system clock. */
  readonly clock?: Clock;
  /** How often the directory (and `files` secrets in use) are re-read without a watch event. */
  readonly pollIntervalMs?: number;
}

/** A loaded, checked workload identity. */
interface WorkloadMaterial {
  readonly certChainPem: string;
  readonly keyPem: string;
  readonly rootsPem: string;
  readonly spiffeId: string;
  readonly serialHex: string;
  readonly notAfter: Date;
}

/** A file named by a `files` secret or trust ref, cached by path and mtime. */
interface FileEntry {
  mtimeMs: number;
  size: number;
  content: string | undefined;
}

/** A context cached for one config object, valid while `generation` is current. */
interface CachedContext {
  readonly generation: number;
  readonly context: tls.SecureContext;
}

interface CachedClientOptions {
  readonly generation: number;
  readonly options: tls.ConnectionOptions;
}

/** The three files of one version (common/identity-files), undefined when one is missing. */
async function readVersion(dir: string): Promise<[string, string, string] | undefined> {
  const { certChainPem, keyPem, rootsPem } = await readIdentityFiles(dir);
  if (certChainPem === undefined || keyPem === undefined || rootsPem === undefined)
    return undefined;
  return [certChainPem, keyPem, rootsPem];
}

/**
 * Checks that the key belongs to the leaf and the leaf is within its validity at `nowMs`.
 * @throws Error naming what is wrong
 */
function checkMaterial(
  certChainPem: string,
  keyPem: string,
  rootsPem: string,
  nowMs: number,
): WorkloadMaterial {
  const chain = parseCertificatesPem(certChainPem);
  const first = chain[0];
  if (first === undefined) throw new Error(`${CERT_CHAIN_FILE} holds no certificate`);
  if (parseCertificatesPem(rootsPem).length === 0)
    throw new Error(`${ROOT_CERT_FILE} holds no certificate`);
  const leaf = parseCertificate(first);
  if (nowMs < leaf.notBefore.getTime())
    throw new Error(
      `certificate serial ${leaf.serialHex} is not valid before ${leaf.notBefore.toISOString()}`,
    );
  if (nowMs >= leaf.notAfter.getTime())
    throw new Error(
      `certificate serial ${leaf.serialHex} expired at ${leaf.notAfter.toISOString()}`,
    );
  let spki: Buffer;
  try {
    spki = crypto
      .createPublicKey(crypto.createPrivateKey(keyPem))
      .export({ type: 'spki', format: 'der' });
  } catch (err) {
    throw new Error(`${KEY_FILE} is unreadable`, { cause: err });
  }
  if (!spki.equals(leaf.publicKeySpki))
    throw new Error(`${KEY_FILE} does not belong to certificate serial ${leaf.serialHex}`);
  return {
    certChainPem,
    keyPem,
    rootsPem,
    spiffeId: leaf.uris.find(u => u.startsWith('spiffe://')) ?? '',
    serialHex: leaf.serialHex,
    notAfter: leaf.notAfter,
  };
}

/**
 * TlsProvider over the node agent's certificate directory. `start()` resolves even when no
 * certificate is there yet (`ready` stays false until one appears). A reload that finds unusable
 * material keeps the last good one and logs a warning.
 */
export class FileTlsProvider implements TlsProvider {
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly pollIntervalMs: number;
  private material: WorkloadMaterial | undefined;
  /** Bumped whenever any material contexts are built from changes; caches compare against it. */
  private generation = 0;
  /** Contexts by material key (`sds:default|sds:ROOTCA`…) for the current generation. */
  private contextsByKey = new Map<string, tls.SecureContext>();
  private readonly serverContexts = new WeakMap<DownstreamTls, CachedContext>();
  private readonly clientOptionCache = new WeakMap<UpstreamTls, CachedClientOptions>();
  private readonly files = new Map<string, FileEntry>();
  private readonly rotateListeners = new Set<() => void>();
  private watcher: fs.FSWatcher | undefined;
  private abort: AbortController | undefined;
  private pollTask: Promise<void> | undefined;
  /** The reload in progress; a request during it sets `reloadAgain` so changes are not missed. */
  private reloading: Promise<void> | undefined;
  private reloadAgain = false;
  private closed = false;

  constructor(private readonly opts: FileTlsProviderOptions) {
    this.log = opts.logger.child({ component: 'proxy', subsystem: 'tls' });
    this.clock = opts.clock ?? systemClock;
    this.pollIntervalMs = opts.pollIntervalMs ?? DEFAULT_TLS_POLL_INTERVAL_MS;
  }

  get ready(): boolean {
    return this.material !== undefined;
  }

  get spiffeId(): string {
    return this.material?.spiffeId ?? '';
  }

  /**
   * The loaded and checked workload identity (chain, key, roots, PEM) for clients that build
   * their own credentials (the xDS channel to pilot); undefined before one loads.
   */
  identity(): Pick<WorkloadMaterial, 'certChainPem' | 'keyPem' | 'rootsPem'> | undefined {
    return this.material;
  }

  /** The workload certificate's notAfter (for the telemetry gauge), undefined before one loads. */
  certificateExpiry(): Date | undefined {
    return this.material?.notAfter;
  }

  /** Loads what is there, then watches and polls. Resolves whether or not a certificate exists. */
  async start(): Promise<void> {
    if (this.abort) throw new Error('tls provider already started');
    this.abort = new AbortController();
    await this.reload();
    this.ensureWatch();
    const signal = this.abort.signal;
    this.pollTask = this.pollLoop(signal);
  }

  /** Stops watching and polling. Idempotent. Contexts already handed out stay usable. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.watcher?.close();
    this.watcher = undefined;
    this.abort?.abort(new Error('tls provider closed'));
    await this.pollTask;
    await this.reloading;
  }

  /**
   * Re-reads the certificate directory and the `files` secrets in use (SIGHUP). Resolves when done;
   * never rejects (failures are logged and the last good material stays).
   */
  reload(): Promise<void> {
    if (this.reloading) {
      this.reloadAgain = true;
      return this.reloading;
    }
    const run = async (): Promise<void> => {
      try {
        do {
          this.reloadAgain = false;
          await this.reloadOnce();
        } while (this.reloadAgain && !this.closed);
      } finally {
        this.reloading = undefined;
      }
    };
    this.reloading = run();
    return this.reloading;
  }

  onRotate(listener: () => void): () => void {
    this.rotateListeners.add(listener);
    return () => this.rotateListeners.delete(listener);
  }

  serverContext(config: DownstreamTls): tls.SecureContext {
    const cached = this.serverContexts.get(config);
    if (cached?.generation === this.generation) return cached.context;
    const context = this.buildContext(config.certificate, config.validation?.trust);
    this.serverContexts.set(config, { generation: this.generation, context });
    return context;
  }

  /**
   * `tls.connect` options toward an upstream: the client certificate when `certificate` is set,
   * the trust roots, SNI, ALPN, and the SAN matchers as checkServerIdentity (with trust, a chain or
   * SAN failure fails the handshake; without trust nothing is verified, see verifyPeer). The
   * object is cached per config and shared: spread it, never mutate it.
   * @throws Error when a named secret or file is not available
   */
  clientOptions(config: UpstreamTls): tls.ConnectionOptions {
    const cached = this.clientOptionCache.get(config);
    if (cached?.generation === this.generation) return cached.options;
    const validation = config.validation;
    const options: tls.ConnectionOptions = {
      secureContext: this.buildContext(config.certificate, validation?.trust),
      // Without trust the peer is not verified at all (DestinationRule insecureSkipVerify).
      rejectUnauthorized: validation?.trust !== undefined,
      checkServerIdentity: sanChecker(validation?.sanMatchers ?? []),
      ...(config.sni !== undefined && config.sni !== '' ? { servername: config.sni } : {}),
      ...(config.alpn.length > 0 ? { ALPNProtocols: [...config.alpn] } : {}),
    };
    this.clientOptionCache.set(config, { generation: this.generation, options });
    return options;
  }

  verifyPeer(
    socket: tls.TLSSocket,
    validation: CertificateValidation | undefined,
  ): string | undefined {
    return verifyPeerSocket(socket, validation);
  }

  peerIdentity(socket: tls.TLSSocket): PeerIdentity | undefined {
    return peerIdentityOf(socket);
  }

  // -------------------------------------------------------------------------------------------
  // Contexts

  private buildContext(
    cert: SecretRef | undefined,
    trust: TrustRef | undefined,
  ): tls.SecureContext {
    const key = `${cert ? secretKey(cert) : '-'}|${trust ? trustKey(trust) : '-'}`;
    let context = this.contextsByKey.get(key);
    if (context) return context;
    const options: tls.SecureContextOptions = {};
    if (cert) {
      const { chain, key: privateKey } = this.secret(cert);
      options.cert = chain;
      options.key = privateKey;
    }
    if (trust && trust.kind !== 'system') options.ca = this.trustPem(trust);
    try {
      context = tls.createSecureContext(options);
    } catch (err) {
      throw new Error(`failed to build tls context for ${key}`, { cause: err });
    }
    this.contextsByKey.set(key, context);
    return context;
  }

  private secret(ref: SecretRef): { chain: string; key: string } {
    if (ref.kind === 'sds') {
      if (ref.name !== SDS_CERT_NAME)
        throw new Error(`sds secret ${ref.name} is not a certificate`);
      const m = this.material;
      if (!m) throw new Error(`sds secret ${ref.name} is not loaded yet`);
      return { chain: m.certChainPem, key: m.keyPem };
    }
    return {
      chain: this.fileContent(ref.certChainPath),
      key: this.fileContent(ref.privateKeyPath),
    };
  }

  private trustPem(ref: TrustRef & { kind: 'sds' | 'files' }): string {
    if (ref.kind === 'sds') {
      if (ref.name !== SDS_ROOT_NAME)
        throw new Error(`sds secret ${ref.name} is not a root certificate bundle`);
      const m = this.material;
      if (!m) throw new Error(`sds secret ${ref.name} is not loaded yet`);
      return m.rootsPem;
    }
    return this.fileContent(ref.path);
  }

  /** A `files` secret's content. Read synchronously once, then refreshed by the poll. */
  private fileContent(file: string): string {
    let entry = this.files.get(file);
    if (!entry) {
      entry = { mtimeMs: -1, size: -1, content: undefined };
      try {
        const st = fs.statSync(file);
        entry.mtimeMs = st.mtimeMs;
        entry.size = st.size;
        entry.content = fs.readFileSync(file, 'utf8');
      } catch (err) {
        this.log.warn({ err, [LogField.path]: file }, 'Cannot read TLS file');
      }
      this.files.set(file, entry);
    }
    if (entry.content === undefined) throw new Error(`tls file ${file} is not readable`);
    return entry.content;
  }

  // -------------------------------------------------------------------------------------------
  // Loading

  private async reloadOnce(): Promise<void> {
    let changed = false;
    try {
      changed = await this.loadWorkload();
    } catch (err) {
      this.log.warn(
        { err, [LogField.path]: this.opts.certsDir, kept: this.material?.serialHex },
        'Cannot load workload certificate; keeping the previous one',
      );
    }
    if (await this.refreshFiles()) changed = true;
    if (changed) this.bumpGeneration();
  }

  /** Loads the directory; true when the material changed. */
  private async loadWorkload(): Promise<boolean> {
    const dir = this.opts.certsDir;
    let files = await readVersion(dir);
    // The agent removes the old version directory right after the swap: a read that raced it
    // finds nothing, and the next read follows the new link.
    if (files === undefined) files = await readVersion(dir);
    const [chain, key, roots] = files ?? [];
    if (chain === undefined || key === undefined || roots === undefined) {
      if (this.material) throw new Error(`certificate files missing from ${dir}`);
      this.log.debug({ [LogField.path]: dir }, 'Workload certificate not there yet');
      return false;
    }
    const old = this.material;
    if (old?.certChainPem === chain && old.keyPem === key && old.rootsPem === roots) return false;
    const m = checkMaterial(chain, key, roots, this.clock.now());
    this.material = m;
    if (m.spiffeId !== '' && !m.spiffeId.startsWith(`spiffe://${this.opts.trustDomain}/`)) {
      this.log.warn(
        { [LogField.spiffeId]: m.spiffeId, trustDomain: this.opts.trustDomain },
        'Workload certificate is from another trust domain',
      );
    }
    this.log.info(
      {
        [LogField.spiffeId]: m.spiffeId,
        [LogField.serial]: m.serialHex,
        [LogField.notAfter]: m.notAfter.toISOString(),
      },
      old ? 'Rotated workload certificate' : 'Loaded workload certificate',
    );
    return true;
  }

  /** Re-stats the `files` secrets in use; true when one changed. */
  private async refreshFiles(): Promise<boolean> {
    let changed = false;
    for (const [file, entry] of this.files) {
      try {
        const st = await fs.promises.stat(file);
        if (st.mtimeMs === entry.mtimeMs && st.size === entry.size) continue;
        entry.content = await fs.promises.readFile(file, 'utf8');
        entry.mtimeMs = st.mtimeMs;
        entry.size = st.size;
        changed = true;
      } catch (err) {
        // Keep the last content: a file being replaced is briefly missing.
        this.log.debug({ err, [LogField.path]: file }, 'Cannot refresh TLS file');
      }
    }
    return changed;
  }

  private bumpGeneration(): void {
    this.generation++;
    this.contextsByKey = new Map();
    for (const l of this.rotateListeners) {
      try {
        l();
      } catch (err) {
        this.log.warn({ err }, 'Rotation listener failed');
      }
    }
  }

  private ensureWatch(): void {
    if (this.watcher || this.closed) return;
    try {
      const w = fs.watch(this.opts.certsDir, { persistent: false }, () => {
        this.reload().catch((err: unknown) => this.log.warn({ err }, 'Reload failed'));
      });
      w.on('error', (err: Error) => {
        // The directory went away (replaced or removed): the poll re-creates the watch.
        this.log.debug({ err }, 'Certificate directory watch failed');
        w.close();
        if (this.watcher === w) this.watcher = undefined;
      });
      this.watcher = w;
    } catch (err) {
      // Usually ENOENT before the agent creates the directory; the poll retries.
      this.log.debug(
        { err, [LogField.path]: this.opts.certsDir },
        'Cannot watch certificate directory',
      );
    }
  }

  private async pollLoop(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      try {
        await this.clock.sleep(this.pollIntervalMs, signal);
      } catch {
        return; // aborted by close()
      }
      this.ensureWatch();
      await this.reload();
    }
  }
}

function secretKey(ref: SecretRef): string {
  return ref.kind === 'sds'
    ? `sds:${ref.name}`
    : `files:${ref.certChainPath}:${ref.privateKeyPath}`;
}

function trustKey(ref: TrustRef): string {
  switch (ref.kind) {
    case 'sds':
      return `sds:${ref.name}`;
    case 'files':
      return `files:${ref.path}`;
    case 'system':
      return 'system';
  }
}

/**
 * Options for wrapping an accepted socket as the server side of `config`'s TLS
 * (`new tls.TLSSocket(socket, serverSocketOptions(provider, config))`). A client certificate is
 * requested when the chain validates peers; when required, a client without one fails the
 * handshake. A presented certificate's chain and SANs are not judged by the handshake of a bare
 * TLSSocket: call `provider.verifyPeer(socket, config.validation)` on 'secure' and destroy the
 * socket when it returns a reason. Call it per connection (it is cheap: the context is cached) so
 * that connections after a rotation get the new certificate. ALPN never fails the handshake: the server's first preference
 * the client offers is chosen, else the client's first, and the HTTP layer sniffs the codec. A mesh
 * chain without ALPN of its own (pilot's tcp_proxy chains) selects {@link PEER_EXCHANGE_ALPN} when
 * the client offers it (a Sail proxy: the TCP proxy then exchanges peer metadata), see
 * {@link selectMeshTcpAlpn}.
 * @throws Error when the certificate material is not available (see TlsProvider.serverContext)
 */
export function serverSocketOptions(
  provider: TlsProvider,
  config: DownstreamTls,
): tls.TLSSocketOptions {
  const requestCert = config.validation !== undefined || config.requireClientCertificate;
  return {
    isServer: true,
    secureContext: provider.serverContext(config),
    requestCert,
    rejectUnauthorized: config.requireClientCertificate,
    ...(config.alpn.length > 0
      ? { ALPNCallback: alpnSelector(config.alpn) }
      : isMeshServer(config)
        ? { ALPNCallback: selectMeshTcpAlpn }
        : {}),
  };
}

type AlpnCallback = NonNullable<tls.TLSSocketOptions['ALPNCallback']>;

/** One selector per server ALPN list, so sockets share it (no closure per connection). */
const alpnSelectors = new WeakMap<readonly string[], AlpnCallback>();

function alpnSelector(serverAlpn: readonly string[]): AlpnCallback {
  let cb = alpnSelectors.get(serverAlpn);
  if (!cb) {
    // Node 20 answers a mismatch under ALPNProtocols with a fatal no_application_protocol alert;
    // Envoy never fails a handshake over ALPN, so pick something the client offered.
    cb = ({ protocols }) => {
      for (const p of serverAlpn) if (protocols.includes(p)) return p;
      return protocols[0];
    };
    alpnSelectors.set(serverAlpn, cb);
  }
  return cb;
}

/**
 * Mesh mTLS (the workload certificate, a client certificate required). With an empty ALPN list
 * this is what pilot sends for a tcp_proxy inbound chain; its HTTP chains list `h2`/`http/1.1`.
 */
function isMeshServer(config: DownstreamTls): boolean {
  return (
    config.requireClientCertificate &&
    config.certificate.kind === 'sds' &&
    config.certificate.name === SDS_CERT_NAME
  );
}

/** Istio's own TCP metadata exchange: selecting it makes an Envoy client send its MX frame. */
const ISTIO_PEER_EXCHANGE_ALPN = 'istio-peer-exchange';
/** Codecs an HTTP client offers last (proxy/http upstreamAlpn); picked over Istio's markers. */
const CODEC_ALPN = ['h2', 'http/1.1'];

/**
 * The ALPN selection of a mesh chain without ALPN of its own: {@link PEER_EXCHANGE_ALPN} when the
 * client offers it (a Sail proxy's TCP proxy). Otherwise the chain would answer no ALPN at all,
 * but Node's ALPNCallback cannot decline (undefined is a fatal alert), so: a codec the client
 * offers (an HTTP client on such a chain speaks it), else its first protocol other than
 * `istio-peer-exchange` (an Envoy client offers `istio-peer-exchange`, `istio`: selecting the
 * former would start Istio's metadata exchange, which nothing here answers), else its first.
 * @internal exported for tests
 */
export const selectMeshTcpAlpn: AlpnCallback = ({ protocols }) => {
  if (protocols.includes(PEER_EXCHANGE_ALPN)) return PEER_EXCHANGE_ALPN;
  for (const p of CODEC_ALPN) if (protocols.includes(p)) return p;
  for (const p of protocols) if (p !== ISTIO_PEER_EXCHANGE_ALPN) return p;
  return protocols[0];
};
