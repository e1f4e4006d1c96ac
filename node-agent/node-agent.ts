/**
 * The node agent: the per-host daemon of DESIGN §1. It obtains and rotates the host's identity,
 * registers the workload with pilot and probes its health, supervises the proxy, installs traffic
 * capture once the proxy is ready, answers mesh names on its DNS server, relays xDS for proxyless
 * gRPC applications, and reports all of it on the status server (:15020).
 *
 * Start order (each step only after the one before, so the host never captures traffic without a
 * ready proxy): status server → identity (from disk at once when still valid, else the CA) →
 * stale capture rules removed → registration, DNS, xDS relay (none of them waits on the control
 * plane) → the proxy, until ready → capture. Stop order is the reverse: capture first, so
 * applications' new connections go direct while the proxy drains.
 */
import * as path from 'node:path';
import { type Clock, systemClock } from '../common/clock';
import { AlreadyStartedError, ClosedError } from '../common/errors';
import { CloseOnce, type Lifecycle, runTasks } from '../common/lifecycle';
import type { Logger } from '../common/logging';
import type { prom } from '../common/metrics';
import { StartAbortedError } from './errors';
import { CaClient } from './identity/ca-client';
import { CertStore, type WorkloadIdentity } from './identity/cert-store';
import { PendingKeyStore } from './identity/keys';
import {
  CertRotator,
  type CertificateListener,
  DEFAULT_RETRY_INITIAL_MS,
  DEFAULT_RETRY_MAX_MS,
} from './identity/rotator';
import type { NodeAgentOptions } from './options';
import { HostMesh } from './host-mesh';
import { AgentMetrics } from './status/metrics';
import { StatusServer } from './status/status-server';

/** Default bound on close(). */
export const DEFAULT_SHUTDOWN_GRACE_MS = 5_000;
/** Subdirectory of stateDir for identity state (the pending key). */
export const IDENTITY_STATE_SUBDIR = 'identity';

/**
 * The node agent. The constructor does no I/O. start() binds the status server, loads a valid
 * certificate from disk or obtains one from the CA, and resolves once the host has a certificate —
 * at once when the one on disk is still good, so a restart does not wait for the control plane.
 * Renewal then runs in the background until close().
 */
export class NodeAgent implements Lifecycle {
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly ca: CaClient;
  private readonly rotator: CertRotator;
  private readonly metrics: AgentMetrics;
  private readonly status: StatusServer;
  private readonly mesh: HostMesh;
  /** Aborted by close(): stops the background tasks and a start() still waiting for a certificate. */
  private readonly abort = new AbortController();
  private readonly closeOnce = new CloseOnce();
  private started = false;
  /** The background tasks; settles after abort. */
  private tasks: Promise<void> | undefined;

  constructor(private readonly opts: NodeAgentOptions) {
    this.log = opts.logger.child({ component: 'node-agent' });
    this.clock = opts.clock ?? systemClock;
    const random = opts.random ?? Math.random;
    const tuning = opts.identityTuning ?? {};
    const retryInitialMs = tuning.retryInitialMs ?? DEFAULT_RETRY_INITIAL_MS;
    const retryMaxMs = tuning.retryMaxMs ?? DEFAULT_RETRY_MAX_MS;
    const cp = opts.controlPlane;
    this.ca = new CaClient({
      address: cp.caAddress,
      serverSpiffeId: cp.caSpiffeId,
      logger: this.log.child({ subsystem: 'ca-client' }),
      ...(tuning.caRequestTimeoutMs !== undefined
        ? { requestTimeoutMs: tuning.caRequestTimeoutMs }
        : {}),
      reconnectBackoffMs: { initial: retryInitialMs, max: retryMaxMs },
    });
    this.rotator = new CertRotator({
      logger: this.log.child({ subsystem: 'rotator' }),
      clock: this.clock,
      random,
      nodeName: opts.nodeName,
      trustDomain: opts.trustDomain,
      namespace: opts.workload.namespace,
      serviceAccount: opts.workload.serviceAccount,
      ttlMs: opts.certs.ttlMs,
      keyAlgorithm: opts.certs.keyAlgorithm,
      store: new CertStore({
        dir: opts.certs.dir,
        ...(opts.certs.owner ? { owner: opts.certs.owner } : {}),
      }),
      pendingKeys: new PendingKeyStore(path.join(opts.stateDir, IDENTITY_STATE_SUBDIR)),
      ca: this.ca,
      rootCertFile: cp.rootCertFile,
      tokenFile: cp.tokenFile,
      ...(cp.bootstrapCertFile !== undefined && cp.bootstrapKeyFile !== undefined
        ? { bootstrap: { certFile: cp.bootstrapCertFile, keyFile: cp.bootstrapKeyFile } }
        : {}),
      retryInitialMs,
      retryMaxMs,
    });
    this.metrics = new AgentMetrics({
      clock: this.clock,
      current: () => this.rotator.current(),
      processMetrics: opts.processMetrics ?? true,
    });
    this.rotator.onCertificateChanged((_id, change) => {
      if (change.source === 'ca') this.metrics.rotated();
    });
    this.rotator.onRotationError(reason => this.metrics.rotationFailed(reason));
    this.mesh = new HostMesh({
      settings: opts,
      logger: this.log,
      clock: this.clock,
      registry: this.metrics.registry,
      identity: () => this.rotator.current(),
      ...(opts.proxyUser ? { proxyUser: opts.proxyUser } : {}),
      ...(opts.proxyCommand ? { proxyCommand: opts.proxyCommand } : {}),
      ...(opts.logLevel ? { logLevel: opts.logLevel } : {}),
      ...(opts.proxyStdio ? { proxyStdio: opts.proxyStdio } : {}),
    });
    this.rotator.onCertificateChanged((_id, change) => {
      if (change.source === 'ca') this.mesh.certificatesChanged();
    });
    this.status = new StatusServer({
      listen: opts.status.listen,
      logger: this.log.child({ subsystem: 'status' }),
      clock: this.clock,
      current: () => this.rotator.current(),
      meshReady: () => this.mesh.ready,
      details: async () => ({ node: opts.nodeName, ...(await this.mesh.status()) }),
      registry: this.metrics.registry,
    });
  }

  /** The workload SPIFFE ID this agent obtains certificates for. */
  get spiffeId(): string {
    return this.rotator.spiffeId;
  }

  /** The current certificate, key and roots; undefined when none is valid. Never log the key. */
  get identity(): WorkloadIdentity | undefined {
    return this.rotator.current();
  }

  /** Bound address of the status server (`HOST:PORT`); undefined before start(). */
  get statusAddress(): string | undefined {
    return this.status.address;
  }

  /** The agent's metrics registry (rendered at /metrics). */
  get metricsRegistry(): prom.Registry {
    return this.metrics.registry;
  }

  /**
   * Calls `listener` with every new certificate: the one loaded from disk at start and each one
   * the CA issues. Listeners run synchronously and must not throw (a throw is logged). Returns a
   * function that removes the listener.
   */
  onCertificateChanged(listener: CertificateListener): () => void {
    return this.rotator.onCertificateChanged(listener);
  }

  /**
   * Starts the agent; resolves once the host is meshed: it has a valid certificate, the proxy is
   * ready and capture installed (HostMesh's order). Waits (retrying the CA, waiting for the
   * proxy) as long as it takes, unless close() is called.
   * @throws AlreadyStartedError on a second call; ClosedError after close();
   *   StartAbortedError when close() ends the wait; the status server's bind error
   */
  async start(): Promise<void> {
    if (this.closeOnce.closed) throw new ClosedError('node agent');
    if (this.started) throw new AlreadyStartedError('node agent');
    this.started = true;
    this.log.info(
      {
        node: this.opts.nodeName,
        spiffeId: this.rotator.spiffeId,
        address: this.opts.controlPlane.caAddress,
      },
      'Starting node agent',
    );
    const signal = this.abort.signal;
    const startedAt = performance.now();
    try {
      await this.status.start();
      await this.rotator.loadFromDisk();
      this.tasks = runTasks([s => this.rotator.run(s)], signal).catch((err: unknown) => {
        this.log.error({ err }, 'Node agent task failed');
        this.opts.onFatal?.(err);
      });
      const identity = await this.rotator.waitForIdentity(signal);
      this.log.info(
        { spiffeId: identity.spiffeId, notAfter: identity.notAfter.toISOString() },
        'Workload identity ready',
      );
      await this.mesh.start(signal);
      if (signal.aborted) throw new StartAbortedError();
      this.log.info(
        {
          spiffeId: identity.spiffeId,
          address: this.status.address,
          startupMs: Math.round(performance.now() - startedAt),
        },
        'Node agent ready',
      );
    } catch (err) {
      const abortedByClose = signal.aborted;
      await this.close();
      if (abortedByClose) throw new StartAbortedError();
      throw err;
    }
  }

  /**
   * Leaves the mesh (capture removed, the workload deregistered, the proxy drained: HostMesh's
   * close, bounded by the proxy's stop grace), then stops renewal (cancelling a CA call in
   * flight), closes the CA channel and the status server. Idempotent; concurrent callers share
   * one promise.
   */
  close(): Promise<void> {
    return this.closeOnce.run(async () => {
      this.abort.abort();
      await this.mesh.close();
      if (this.tasks) {
        // Real time, not the injected clock: the bound must hold even when a test's clock stands still.
        let timer: NodeJS.Timeout | undefined;
        const grace = new Promise<'timeout'>(resolve => {
          timer = setTimeout(
            () => resolve('timeout'),
            this.opts.shutdownGraceMs ?? DEFAULT_SHUTDOWN_GRACE_MS,
          );
          timer.unref();
        });
        const outcome = await Promise.race([this.tasks.then(() => 'done' as const), grace]);
        clearTimeout(timer);
        if (outcome === 'timeout')
          this.log.warn('Background tasks did not stop within the grace period');
      }
      this.ca.close();
      await this.status.close();
      if (this.started) this.log.info('Node agent stopped');
    });
  }

  /** close(), for `await using agent = new NodeAgent(…)`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
