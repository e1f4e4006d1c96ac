/**
 * CertificateAuthority: Sail's CA component. Keeps the root (or plugged-in CA), node entries and
 * join tokens in the data dir, serves CertificateAuthority over gRPC/TLS, and issues the control
 * plane's own serving and admin certificates.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as net from 'node:net';
import { loadCaProto } from '../api';
import type { AdminTlsMaterial } from '../common/admin-server';
import { Backoff } from '../common/backoff';
import { type Clock, systemClock } from '../common/clock';
import { parseDuration } from '../common/duration';
import { AlreadyStartedError, ConfigError, InvalidInputError } from '../common/errors';
import { writeFileAtomic } from '../common/fs';
import { serverCredentials, StaticCertificateProvider } from '../common/grpc';
import type { Route } from '../common/http';
import { CloseOnce, isAbortError, type Lifecycle, runTasks } from '../common/lifecycle';
import type { Logger } from '../common/logging';
import { createRegistry, prom } from '../common/metrics';
import {
  controlPlaneSpiffeId,
  formatSpiffeId,
  generateKey,
  isSignedBy,
  isValidTrustDomain,
  parseCertificate,
  parseCertificatesPem,
  parseServiceAccountRef,
  privateKeyToPem,
  toPem,
} from '../common/pki';
import { Authenticator, type BootstrapCa, toBootstrapCa } from './authorizer';
import {
  type CaOptions,
  DEFAULT_CA_LISTEN,
  DEFAULT_CERT_TTL_MS,
  DEFAULT_MAX_CERT_TTL_MS,
  DEFAULT_MAX_QUEUED,
  DEFAULT_MAX_QUEUED_PER_CALLER,
  DEFAULT_ROOT_TTL_MS,
  DEFAULT_TOKEN_TTL_MS,
  DEFAULT_TRUST_DOMAIN,
  MAX_TOKEN_TTL_MS,
  MIN_CERT_TTL_MS,
} from './config';
import { notReady, PluggedCertsError } from './errors';
import { FairQueue } from './fair-queue';
import { CertIssuer, workloadSubject } from './issuer';
import { loadOrCreateSelfSigned, loadPlugged, rootPaths, type SigningMaterial } from './keystore';
import { isValidNodeName, Registry } from './registry';
import { CaMetrics, createCaHandlers } from './service';

/** The namespace of the control plane's own identities. */
export const SYSTEM_NAMESPACE = 'sail-system';
/** The identity every control-plane listener serves with; clients pin it instead of host names
 * (defined once, in common/pki, for the agent and the proxy too). */
export { controlPlaneSpiffeId };
/** The identity of admin client certificates. */
export const adminSpiffeId = (trustDomain: string) =>
  formatSpiffeId({ trustDomain, namespace: SYSTEM_NAMESPACE, serviceAccount: 'sail-admin' });

/** Lifetime of the control plane's serving certificate; renewed at half of it. */
const SERVING_CERT_TTL_MS = 24 * 3600_000;
/** Lifetime of the admin client certificate written into DATA_DIR/admin/. */
const ADMIN_CERT_TTL_MS = 365 * 24 * 3600_000;
/** The admin certificate is reissued at start when it has less than this left. */
const ADMIN_CERT_RENEW_BEFORE_MS = 30 * 24 * 3600_000;
/** How often node bookkeeping (last issued) is written to disk. */
const REGISTRY_FLUSH_INTERVAL_MS = 60_000;
/** How long close() waits for in-flight calls before cancelling them. */
const SHUTDOWN_GRACE_MS = 5000;

export class CertificateAuthority implements Lifecycle {
  private readonly log: Logger;
  private readonly clock: Clock;
  readonly trustDomain: string;
  private readonly defaultTtlMs: number;
  private readonly maxTtlMs: number;
  /** Prometheus metrics of the CA (sail_ca_*). */
  readonly metrics: prom.Registry;
  private readonly registry: Registry;
  private readonly queue: FairQueue;
  private material: SigningMaterial | undefined;
  private issuer: CertIssuer | undefined;
  private provider: StaticCertificateProvider | undefined;
  private serving: AdminTlsMaterial | undefined;
  private readonly servingListeners = new Set<(m: AdminTlsMaterial) => void>();
  private server: grpc.Server | undefined;
  private boundAddress: string | undefined;
  private started = false;
  private readonly closer = new CloseOnce();
  private readonly abort = new AbortController();
  private tasks: Promise<void> | undefined;

  constructor(private readonly opts: CaOptions) {
    this.log = opts.logger.child({ component: 'ca' });
    this.clock = opts.clock ?? systemClock;
    this.trustDomain = opts.trustDomain ?? DEFAULT_TRUST_DOMAIN;
    this.defaultTtlMs = opts.defaultCertTtlMs ?? DEFAULT_CERT_TTL_MS;
    this.maxTtlMs = opts.maxCertTtlMs ?? DEFAULT_MAX_CERT_TTL_MS;
    if (!isValidTrustDomain(this.trustDomain))
      throw new ConfigError(`invalid trust domain ${JSON.stringify(this.trustDomain)}`);
    if (this.defaultTtlMs < MIN_CERT_TTL_MS || this.maxTtlMs < MIN_CERT_TTL_MS) {
      throw new ConfigError(`certificate lifetimes must be at least ${MIN_CERT_TTL_MS / 1000}s`);
    }
    if (this.defaultTtlMs > this.maxTtlMs)
      throw new ConfigError('--default-cert-ttl is longer than --max-cert-ttl');
    this.metrics = createRegistry(false);
    this.registry = new Registry(path.join(opts.dataDir, 'ca'), () => this.clock.now());
    this.queue = new FairQueue({
      maxPerCaller: opts.maxQueuedPerCaller ?? DEFAULT_MAX_QUEUED_PER_CALLER,
      maxTotal: opts.maxQueued ?? DEFAULT_MAX_QUEUED,
    });
  }

  /** The bound gRPC address after start (`127.0.0.1:41234` when port 0 was asked for). */
  get address(): string {
    if (!this.boundAddress) throw notReady('CA is not started');
    return this.boundAddress;
  }

  /** The trust bundle as one PEM text. */
  get rootsPem(): string {
    if (!this.material) throw notReady('CA is not started');
    return this.material.rootsPem.join('');
  }

  /** True once the CA serves. */
  get ready(): boolean {
    return this.server !== undefined;
  }

  /** The control plane's current serving certificate, key and roots (for the admin listener). */
  get servingMaterial(): AdminTlsMaterial {
    if (!this.serving) throw notReady('CA is not started');
    return this.serving;
  }

  /** Calls `listener` whenever the serving certificate is renewed. */
  onServingCertRotated(listener: (m: AdminTlsMaterial) => void): void {
    this.servingListeners.add(listener);
  }

  async start(): Promise<void> {
    if (this.started) throw new AlreadyStartedError('CA');
    this.started = true;
    try {
      await this.startInner();
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  private async startInner(): Promise<void> {
    const { dataDir } = this.opts;
    await fs.promises.mkdir(dataDir, { recursive: true, mode: 0o700 });
    const now = this.clock.now();

    // Signing material: plugged-in files, or the persisted self-signed root
    if (this.opts.plugged) {
      this.material = loadPlugged(this.opts.plugged, now);
      await fs.promises.mkdir(path.join(dataDir, 'ca'), { recursive: true, mode: 0o700 });
      await writeFileAtomic(rootPaths(dataDir).publicRoot, this.material.rootsPem.join(''), 0o644);
      this.log.info({ caCert: this.opts.plugged.caCertFile }, 'Loaded plugged-in CA certificate');
    } else {
      this.material = await loadOrCreateSelfSigned({
        dataDir,
        trustDomain: this.trustDomain,
        algorithm: this.opts.rootKeyAlgorithm ?? 'ec-p256',
        ttlMs: this.opts.rootTtlMs ?? DEFAULT_ROOT_TTL_MS,
        now,
        log: this.log,
      });
    }
    this.issuer = new CertIssuer(this.material);
    const material = this.material;
    await this.registry.load();
    const bootstrapCas = this.loadBootstrapCas();

    // Serving certificate, and the admin client certificate for `sail` admin verbs over HTTPS
    this.serving = await this.issueServingCert();
    await this.ensureAdminCert();

    // Bind and serve
    const metrics = new CaMetrics(this.metrics, () => this.queue.depth);
    new prom.Gauge({
      name: 'sail_ca_signing_cert_expiry_timestamp_seconds',
      help: 'When the CA signing certificate expires, Unix seconds',
      registers: [this.metrics],
      collect() {
        this.set(material.signingCert.notAfter.getTime() / 1000);
      },
    });
    const registry = this.registry;
    new prom.Gauge({
      name: 'sail_ca_join_tokens_active',
      help: 'Join tokens that are neither used nor expired',
      registers: [this.metrics],
      collect() {
        this.set(registry.activeTokenCount());
      },
    });
    const bootstrapPem = bootstrapCas.map(b => toPem('CERTIFICATE', b.cert.der)).join('');
    this.provider = new StaticCertificateProvider(
      this.rootsPem + bootstrapPem,
      this.serving.certChainPem,
      this.serving.keyPem,
    );
    const server = new grpc.Server({
      'grpc.max_receive_message_length': 64 * 1024,
      'grpc.keepalive_time_ms': 60_000,
      'grpc.keepalive_permit_without_calls': 1,
      // Channelz (per-call counters and timestamps for a debug service) is on by default in
      // grpc-js; the CA serves no channelz service, and the bookkeeping costs on every call.
      'grpc.enable_channelz': 0,
    });
    const proto = loadCaProto();
    server.addService(
      proto.sail.ca.v1.CertificateAuthority.service,
      createCaHandlers({
        log: this.log,
        trustDomain: this.trustDomain,
        defaultTtlMs: this.defaultTtlMs,
        maxTtlMs: this.maxTtlMs,
        now: () => this.clock.now(),
        issuer: () => this.issuer as CertIssuer,
        roots: () => material.rootsPem,
        authenticator: new Authenticator(
          this.registry,
          () => material.signingPublicKey,
          bootstrapCas,
        ),
        registry: this.registry,
        queue: this.queue,
        metrics,
      }),
    );
    const listen = this.opts.listen ?? DEFAULT_CA_LISTEN;
    const port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(
        listen,
        serverCredentials(this.provider as StaticCertificateProvider, false),
        (err, p) =>
          err
            ? reject(new Error(`cannot listen on ${listen}: ${err.message}`, { cause: err }))
            : resolve(p),
      );
    });
    this.server = server;
    this.boundAddress = listen.replace(/:\d+$/, `:${port}`);
    this.log.info(
      {
        address: this.boundAddress,
        trustDomain: this.trustDomain,
        mode: material.mode,
        spiffeId: controlPlaneSpiffeId(this.trustDomain),
      },
      'CA listening',
    );

    this.tasks = runTasks(
      [s => this.renewServingCertLoop(s), s => this.flushLoop(s)],
      this.abort.signal,
    ).catch((err: unknown) => {
      this.log.error({ err }, 'CA background task failed');
    });
  }

  private loadBootstrapCas(): BootstrapCa[] {
    const out: BootstrapCa[] = [];
    for (const file of this.opts.bootstrapCaFiles ?? []) {
      let text: string;
      try {
        text = fs.readFileSync(file, 'utf8');
      } catch (err) {
        throw new ConfigError(
          `cannot read bootstrap CA file ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
        );
      }
      const ders = parseCertificatesPem(text);
      if (ders.length === 0)
        throw new ConfigError(`bootstrap CA file ${file} holds no PEM certificate`);
      for (const der of ders) {
        const b = toBootstrapCa(file, der);
        if (!b.cert.isCa)
          throw new ConfigError(`bootstrap CA file ${file} holds a certificate that is not a CA`);
        out.push(b);
      }
      this.log.info(
        { path: file, count: ders.length },
        'Trusting bootstrap CA for node attestation',
      );
    }
    return out;
  }

  /** Issues a certificate for a key made here (the control plane's own identities). */
  private async issueLocal(
    spiffeId: string,
    ttlMs: number,
    sans: { dnsNames?: string[]; ips?: string[] } = {},
  ) {
    const key = await generateKey('ec-p256');
    const spki = crypto.createPublicKey(key).export({ type: 'spki', format: 'der' });
    const issued = (this.issuer as CertIssuer).issue({
      publicKeySpki: spki,
      subject: workloadSubject(this.trustDomain, os.hostname().toLowerCase()),
      sans: { uris: [spiffeId], ...sans },
      ttlMs,
      now: this.clock.now(),
    });
    return { keyPem: privateKeyToPem(key), issued };
  }

  private async issueServingCert(): Promise<AdminTlsMaterial> {
    const names = new Set([
      'localhost',
      os.hostname().toLowerCase(),
      ...(this.opts.serverNames ?? []),
    ]);
    const ips = new Set(['127.0.0.1', '::1']);
    for (const addrs of Object.values(os.networkInterfaces()))
      for (const a of addrs ?? []) if (!a.address.includes('%')) ips.add(a.address);
    for (const n of [...names]) {
      if (net.isIP(n)) {
        ips.add(n);
        names.delete(n);
      }
    }
    const { keyPem, issued } = await this.issueLocal(
      controlPlaneSpiffeId(this.trustDomain),
      SERVING_CERT_TTL_MS,
      {
        dnsNames: [...names],
        ips: [...ips],
      },
    );
    this.log.info(
      { serial: issued.serialHex, notAfter: issued.notAfter.toISOString() },
      'Issued control plane serving certificate',
    );
    return { certChainPem: issued.chainPem.slice(0, -1).join(''), keyPem, rootsPem: this.rootsPem };
  }

  private async ensureAdminCert(): Promise<void> {
    const dir = path.join(this.opts.dataDir, 'admin');
    const certFile = path.join(dir, 'cert-chain.pem');
    try {
      const [der] = parseCertificatesPem(await fs.promises.readFile(certFile, 'utf8'));
      const cert = der && parseCertificate(der);
      const fresh = cert && cert.notAfter.getTime() - this.clock.now() > ADMIN_CERT_RENEW_BEFORE_MS;
      const ours = der && isSignedBy(der, (this.material as SigningMaterial).signingPublicKey);
      if (fresh && ours) return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        this.log.warn({ err, path: certFile }, 'Reissuing unreadable admin certificate');
    }
    await fs.promises.mkdir(dir, { recursive: true, mode: 0o700 });
    const { keyPem, issued } = await this.issueLocal(
      adminSpiffeId(this.trustDomain),
      ADMIN_CERT_TTL_MS,
    );
    await writeFileAtomic(path.join(dir, 'key.pem'), keyPem, 0o600);
    await writeFileAtomic(certFile, issued.chainPem.slice(0, -1).join(''), 0o644);
    await writeFileAtomic(path.join(dir, 'root-cert.pem'), this.rootsPem, 0o644);
    this.log.info(
      { path: dir, notAfter: issued.notAfter.toISOString() },
      'Issued admin client certificate',
    );
  }

  private async renewServingCertLoop(signal: AbortSignal): Promise<void> {
    const backoff = new Backoff();
    while (!signal.aborted) {
      try {
        await this.clock.sleep(SERVING_CERT_TTL_MS / 2, signal);
      } catch (err) {
        if (isAbortError(err) || signal.aborted) return;
        throw err;
      }
      for (;;) {
        try {
          const m = await this.issueServingCert();
          this.serving = m;
          this.provider?.update({ certChainPem: m.certChainPem, keyPem: m.keyPem });
          for (const l of this.servingListeners) l(m);
          backoff.reset();
          break;
        } catch (err) {
          this.log.warn({ err }, 'Failed to renew serving certificate; retrying');
          await this.clock.sleep(backoff.next(), signal).catch(() => undefined);
          if (signal.aborted) return;
        }
      }
    }
  }

  private async flushLoop(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      await this.clock.sleep(REGISTRY_FLUSH_INTERVAL_MS, signal).catch(() => undefined);
      await this.registry
        .flush()
        .catch((err: unknown) => this.log.warn({ err }, 'Failed to write node entries'));
    }
  }

  /** Admin API routes for tokens, nodes and the trust bundle (mounted by the admin server). */
  adminRoutes(): Route[] {
    const spiffeIdsOf = (body: Record<string, unknown>): string[] => {
      const sas = body.serviceAccounts;
      if (!Array.isArray(sas) || sas.length === 0 || !sas.every(s => typeof s === 'string')) {
        throw new InvalidInputError('serviceAccounts: want a non-empty list of "NAMESPACE/NAME"');
      }
      return (sas as string[]).map(s => {
        try {
          const ref = parseServiceAccountRef(s);
          if (ref.namespace === SYSTEM_NAMESPACE) {
            throw new Error(
              `namespace ${SYSTEM_NAMESPACE} is reserved for the control plane's own identities`,
            );
          }
          return formatSpiffeId({ trustDomain: this.trustDomain, ...ref });
        } catch (err) {
          throw new InvalidInputError(`serviceAccounts: ${(err as Error).message}`);
        }
      });
    };
    const nodeName = (v: unknown): string => {
      if (typeof v !== 'string' || !isValidNodeName(v)) {
        throw new InvalidInputError(
          `node: ${JSON.stringify(v)} is not a valid node name (lowercase letters, digits, '-', '.')`,
        );
      }
      return v;
    };
    return [
      {
        method: 'POST',
        path: '/v1/tokens',
        admin: true,
        handler: async ctx => {
          const body = await ctx.body();
          const node = nodeName(body.node);
          const spiffeIds = spiffeIdsOf(body);
          let ttlMs = DEFAULT_TOKEN_TTL_MS;
          if (body.ttl !== undefined) {
            if (typeof body.ttl !== 'string')
              throw new InvalidInputError('ttl: want a duration such as 1h');
            try {
              ttlMs = parseDuration(body.ttl);
            } catch (err) {
              throw new InvalidInputError(`ttl: ${(err as Error).message}`);
            }
            if (ttlMs < 1000 || ttlMs > MAX_TOKEN_TTL_MS)
              throw new InvalidInputError(
                `ttl: ${body.ttl} is outside 1s..${MAX_TOKEN_TTL_MS / 86_400_000}d`,
              );
          }
          const { token, info } = await this.registry.createToken(node, spiffeIds, ttlMs);
          this.log.info(
            { tokenId: info.id, node, spiffeIds, expiresAt: info.expiresAt },
            'Created join token',
          );
          return { status: 201, json: { token, ...info } };
        },
      },
      {
        method: 'GET',
        path: '/v1/tokens',
        admin: true,
        handler: () => ({ json: { tokens: this.registry.listTokens() } }),
      },
      {
        method: 'GET',
        path: '/v1/nodes',
        admin: true,
        handler: () => ({ json: { nodes: this.registry.listNodes() } }),
      },
      {
        method: 'PUT',
        path: '/v1/nodes/:name',
        admin: true,
        handler: async ctx => {
          const node = nodeName(ctx.params.name);
          const entry = await this.registry.upsertNode(node, spiffeIdsOf(await ctx.body()));
          this.log.info({ node, spiffeIds: entry.spiffeIds }, 'Registered node');
          return { json: entry };
        },
      },
      {
        method: 'DELETE',
        path: '/v1/nodes/:name',
        admin: true,
        handler: async ctx => {
          const node = nodeName(ctx.params.name);
          await this.registry.removeNode(node);
          this.log.info({ node }, 'Removed node');
          return { json: { deleted: node } };
        },
      },
      {
        method: 'GET',
        path: '/v1/trust-bundle',
        admin: false,
        handler: () => ({
          json: { trustDomain: this.trustDomain, rootCerts: this.material?.rootsPem ?? [] },
        }),
      },
    ];
  }

  /** Graceful stop: in-flight calls get SHUTDOWN_GRACE_MS, then are cancelled. Idempotent. */
  close(): Promise<void> {
    return this.closer.run(async () => {
      this.abort.abort(new Error('CA closing'));
      const server = this.server;
      this.server = undefined;
      if (server) {
        await new Promise<void>(resolve => {
          const timer = setTimeout(() => {
            server.forceShutdown();
            resolve();
          }, SHUTDOWN_GRACE_MS);
          server.tryShutdown(() => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
      await this.tasks;
      await this.registry
        .flush()
        .catch((err: unknown) => this.log.warn({ err }, 'Failed to write node entries'));
      if (this.started) this.log.info('CA stopped');
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

export { PluggedCertsError };
