/**
 * The Proxy component: wires TLS, upstream clusters, HTTP, listeners, the xDS client, telemetry
 * and the admin and metrics servers (proxy/types.ts describes each), in the order a push needs:
 *
 *   xDS update → `current` config → clusters.update(cfg) → await listeners.update(cfg)
 *
 * Clusters first, so a route or listener that names a new cluster finds it. Readiness (`ready`,
 * admin `/ready`) needs three things: the xDS client is ready (a complete first configuration, the
 * one restored from the state file, or the initial fetch timed out), the workload certificate is
 * loaded, and the first listeners update is done. start() does not wait for pilot: with a state
 * file the proxy serves its last-known-good configuration while pilot is down.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { clientCredentials } from '../common/grpc';
import { type Clock, systemClock } from '../common/clock';
import { AlreadyStartedError, ClosedError } from '../common/errors';
import { CloseOnce, type Lifecycle } from '../common/lifecycle';
import type { Logger } from '../common/logging';
import { createRegistry, type prom, renderMetrics } from '../common/metrics';
import pkg from '../package.json';
import {
  AdminServer,
  type AdminSource,
  type ConfigDumpInput,
  type DumpedResource,
  type ListenerInfo,
  MetricsServer,
  type MetricsText,
  type Readiness,
} from './admin';
import { NoCertificateError, StartAbortedError } from './errors';
import { DefaultHttpConnectionManager } from './http';
import { ListenerManager } from './listeners/listener-manager';
import type { Cluster, ProxyConfig, SocketAddress, XdsKind } from './model';
import { type ProxyOptions, XDS_STATE_FILE } from './options';
import {
  createAccessLogger,
  inboundServicesOf,
  IstioTelemetry,
  registerProxyMetrics,
  TrafficLabeler,
} from './telemetry';
import { FileTlsProvider } from './tls';
import type { ClusterStatus, ConfigHolder } from './types';
import { DefaultClusterManager } from './upstream';
import { XdsClient, type XdsUpdate } from './xds';

const KINDS: readonly XdsKind[] = ['clusters', 'endpoints', 'listeners', 'routes'];

/** The configuration before anything arrived: no listeners, so nothing is bound. */
const EMPTY_CONFIG: ProxyConfig = Object.freeze({
  versions: Object.freeze({ clusters: '', endpoints: '', listeners: '', routes: '' }),
  listeners: new Map(),
  routes: new Map(),
  clusters: new Map(),
  endpoints: new Map(),
});

/** Envoy's numeric server.state. */
const SERVER_STATE_NUMBER = { LIVE: 0, DRAINING: 1, PRE_INITIALIZING: 2 } as const;

/** The node metadata pilot reads (pilot/xds/node.ts), in Istio's keys. */
function nodeMetadata(opts: ProxyOptions): Record<string, unknown> {
  const ip = opts.nodeId.split('~')[1] ?? '';
  return {
    NAME: opts.workload.name,
    NAMESPACE: opts.workload.namespace,
    LABELS: { ...opts.workload.labels },
    ...(ip ? { INSTANCE_IPS: ip } : {}),
    SAIL_VERSION: pkg.version,
  };
}

/**
 * The data plane of one host. The constructor builds every part and does no I/O; start() binds
 * the admin and metrics ports and starts xDS; close() drains and releases everything, bounded by
 * `shutdownGraceMs`.
 */
export class Proxy implements Lifecycle, ConfigHolder {
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly registry: prom.Registry;
  private processRegistry: prom.Registry | undefined;
  private readonly tls: FileTlsProvider;
  private readonly labeler: TrafficLabeler;
  private readonly telemetry: IstioTelemetry;
  private readonly clusters: DefaultClusterManager;
  private readonly http: DefaultHttpConnectionManager;
  private readonly listeners: ListenerManager;
  private readonly xds: XdsClient;
  private readonly admin: AdminServer;
  private readonly metrics: MetricsServer;
  private readonly closeOnce = new CloseOnce();
  private readonly shutdownOnce = new CloseOnce();
  /** Set by close(): not ready any more, and a start in progress aborts. */
  private closing = false;
  private starting: Promise<void> | undefined;
  private startedAt = 0;
  /** The configuration in force (ConfigHolder): what the data path reads. */
  private config: ProxyConfig = EMPTY_CONFIG;
  /** Updates are applied one at a time, in order. */
  private applying: Promise<void> = Promise.resolve();
  /** Updates received from xDS / applied (listeners updated), counted from 1. */
  private updatesReceived = 0;
  private updatesApplied = 0;
  /**
   * The update that made the xDS client ready (the number received when it became ready): ready
   * needs it applied, not just any update, since the client turns ready on the response that
   * completes the configuration, before the proxy has bound its listeners.
   */
  private readyUpdate: number | undefined;
  /** Why the last listeners update failed ('' when it did not). */
  private listenerError = '';
  private readonly readyWaiters = new Set<() => void>();
  /** This host's addresses: the node id's IP and the explicit inbound bind host. */
  private readonly localIps: ReadonlySet<string>;
  private readonly unsubscribe: (() => void)[] = [];

  constructor(private readonly opts: ProxyOptions) {
    this.log = opts.logger.child({ component: 'proxy' });
    this.clock = opts.clock ?? systemClock;
    const logger = opts.logger;
    const clock = this.clock;
    this.registry = createRegistry(false);
    this.tls = new FileTlsProvider({
      logger,
      clock,
      certsDir: opts.certsDir,
      trustDomain: opts.trustDomain,
    });
    this.labeler = new TrafficLabeler({ workload: opts.workload });
    this.telemetry = new IstioTelemetry({
      logger,
      clock,
      registry: this.registry,
      labeler: this.labeler,
      ...(opts.accessLog ? { accessLogger: createAccessLogger() } : {}),
    });
    this.clusters = new DefaultClusterManager({
      logger,
      clock,
      tls: this.tls,
      ...(opts.traffic.originalSourceMark !== undefined
        ? { originalSourceMark: opts.traffic.originalSourceMark }
        : {}),
    });
    this.http = new DefaultHttpConnectionManager({
      logger,
      clock,
      config: this,
      clusters: this.clusters,
      telemetry: this.telemetry,
      localPrincipal: () => this.tls.spiffeId,
      ...(opts.meshUpstreamProtocol ? { meshUpstreamProtocol: opts.meshUpstreamProtocol } : {}),
    });
    const nodeIp = opts.nodeId.split('~')[1];
    this.localIps = new Set(
      [nodeIp, opts.traffic.inboundBindHost].filter((ip): ip is string => !!ip),
    );
    this.listeners = new ListenerManager({
      logger,
      clock,
      config: this,
      tls: this.tls,
      clusters: this.clusters,
      http: this.http,
      telemetry: this.telemetry,
      traffic: opts.traffic,
      drainMs: opts.drainMs,
      ...(nodeIp ? { nodeIp } : {}),
    });
    this.xds = new XdsClient({
      logger,
      clock,
      address: opts.pilotAddress,
      nodeId: opts.nodeId,
      nodeMetadata: nodeMetadata(opts),
      credentials: () => this.pilotCredentials(),
      ...(opts.stateDir !== undefined
        ? { stateFile: path.join(opts.stateDir, XDS_STATE_FILE) }
        : {}),
      initialFetchTimeoutMs: opts.initialFetchTimeoutMs,
    });
    this.admin = new AdminServer({
      logger,
      listen: opts.adminListen,
      allowRemote: opts.adminAllowRemote ?? false,
      source: this.adminSource(),
    });
    this.metrics = new MetricsServer({
      logger,
      listen: opts.metricsListen,
      metrics: () => this.renderMetrics(),
    });
    registerProxyMetrics(this.registry, {
      ready: () => this.ready,
      xdsConnected: () => this.xds.status().connected,
      configVersions: () => this.config.versions,
      xdsNacks: () => this.xds.status().nacks,
      configUpdates: () => this.xds.status().updates,
      certificateNotAfter: () => this.tls.certificateExpiry()?.getTime(),
      listenersBound: () => this.listeners.addresses().size,
      activeConnections: () => this.listeners.connectionCount,
      now: () => this.clock.now(),
    });
  }

  /** The configuration in force (ConfigHolder). */
  get current(): ProxyConfig {
    return this.config;
  }

  /** True when `/ready` answers 200: configured, certificate loaded, listeners bound. */
  get ready(): boolean {
    return (
      !this.closing &&
      this.xds.ready &&
      this.tls.ready &&
      this.readyUpdate !== undefined &&
      this.updatesApplied >= Math.max(1, this.readyUpdate) &&
      this.listenerError === ''
    );
  }

  /** The admin server's `host:port` (after start). */
  get adminAddress(): string | undefined {
    return this.admin.address;
  }

  /** The metrics server's `host:port` (after start). */
  get metricsAddress(): string | undefined {
    return this.metrics.address;
  }

  /** The bound listener sockets by binding name (`virtualOutbound`, `virtualInbound_9080`, …). */
  listenerAddresses(): ReadonlyMap<string, SocketAddress> {
    return this.listeners.addresses();
  }

  /** Resolves once `ready` (at once if it is); rejects with ClosedError if closed first. */
  whenReady(): Promise<void> {
    if (this.ready) return Promise.resolve();
    if (this.closing) return Promise.reject(new ClosedError('proxy'));
    return new Promise((resolve, reject) => {
      const waiter = () => {
        if (this.closing) reject(new ClosedError('proxy'));
        else if (this.ready) resolve();
        else return;
        this.readyWaiters.delete(waiter);
      };
      this.readyWaiters.add(waiter);
    });
  }

  /**
   * Loads the certificate (if there is one yet), binds the admin and metrics ports, restores the
   * last-known-good configuration and starts xDS. Resolves without waiting for pilot; with a
   * state file, its configuration is applied (listeners bound) before start() resolves.
   * @throws AlreadyStartedError; ClosedError after close(); StartAbortedError when close() is
   * called meanwhile; ListenFailedError when the admin or metrics port is taken. Whatever was
   * started is released before it rejects.
   */
  start(): Promise<void> {
    if (this.closing) return Promise.reject(new ClosedError('proxy'));
    if (this.starting) return Promise.reject(new AlreadyStartedError('proxy'));
    this.starting = this.doStart();
    return this.starting;
  }

  private async doStart(): Promise<void> {
    this.startedAt = this.clock.now();
    const check = () => {
      if (this.closing) throw new StartAbortedError();
    };
    try {
      // Certificates: start() resolves whether or not the agent wrote them yet.
      await this.tls.start();
      check();
      this.labeler.setLocalPrincipal(this.tls.spiffeId);
      this.unsubscribe.push(this.tls.onRotate(() => this.onRotate()));

      // The xDS client writes its state file there; the agent's StateDirectory may be all we have.
      if (this.opts.stateDir !== undefined) await this.ensureStateDir(this.opts.stateDir);

      // Admin and metrics first, so /ready can say what the proxy waits for.
      this.processRegistry = createRegistry(true);
      await this.admin.start();
      check();
      await this.metrics.start();
      check();

      // xDS: the state file's configuration is emitted during start().
      this.unsubscribe.push(this.xds.onUpdate(u => this.onUpdate(u)));
      this.unsubscribe.push(
        this.xds.onReady(() => {
          this.readyUpdate = this.updatesReceived;
          this.notifyReady();
        }),
      );
      await this.xds.start();
      await this.applying;
      check();
    } catch (err) {
      await this.shutdown();
      throw err;
    }
    this.log.info(
      {
        nodeId: this.opts.nodeId,
        address: this.admin.address,
        ready: this.ready,
        spiffeId: this.tls.spiffeId || undefined,
      },
      'Proxy started',
    );
  }

  /** Re-reads the certificate directory (SIGHUP). Never rejects. */
  reloadCertificates(): Promise<void> {
    return this.tls.reload();
  }

  /**
   * Stops xDS, drains the listeners and HTTP connections for `drainMs`, then releases everything.
   * Bounded by `shutdownGraceMs`: after it, open connections are destroyed. Idempotent.
   */
  close(): Promise<void> {
    this.closing = true;
    return this.closeOnce.run(async () => {
      this.notifyReady();
      // A start in progress finishes (or aborts) first, so nothing it binds is left behind.
      await this.starting?.catch(() => undefined);
      const graceful = this.shutdown();
      const abort = new AbortController();
      const timedOut = await Promise.race([
        graceful.then(() => false),
        this.clock
          .sleep(this.opts.shutdownGraceMs, abort.signal)
          .then(() => true)
          .catch(() => false),
      ]);
      abort.abort();
      if (timedOut) {
        this.log.warn(
          { shutdownGraceMs: this.opts.shutdownGraceMs },
          'Shutdown grace period over; closing open connections',
        );
        await this.http.close();
        await graceful.catch((err: unknown) => this.log.warn({ err }, 'Shutdown failed'));
      }
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ---------------------------------------------------------------------------------------------
  // Configuration

  private onUpdate(u: XdsUpdate): void {
    const seq = ++this.updatesReceived;
    this.applying = this.applying.then(() => this.apply(u, seq));
  }

  /** Applies one update. Never rejects: a failure is logged and shown on /ready. */
  private async apply(u: XdsUpdate, seq: number): Promise<void> {
    if (this.closing) return;
    this.config = u.config;
    // Which services this host serves (destination_service of inbound traffic) changes only
    // with clusters and endpoints.
    if (u.changed.has('clusters') || u.changed.has('endpoints') || u.fromCache)
      this.labeler.setInboundServices(inboundServicesOf(u.config, this.localIps));
    try {
      this.clusters.update(u.config);
      await this.listeners.update(u.config);
      if (this.listenerError !== '')
        this.log.info({ versions: u.config.versions }, 'Listeners recovered');
      this.listenerError = '';
    } catch (err) {
      this.listenerError = (err as Error).message;
      this.log.error({ err, versions: u.config.versions }, 'Cannot apply configuration');
    }
    const first = this.updatesApplied === 0;
    this.updatesApplied = seq;
    this.log.info(
      {
        versions: u.config.versions,
        changed: [...u.changed],
        fromCache: u.fromCache,
        listeners: u.config.listeners.size,
        clusters: u.config.clusters.size,
      },
      first ? 'Applied first configuration' : 'Applied configuration',
    );
    this.notifyReady();
  }

  private async ensureStateDir(dir: string): Promise<void> {
    try {
      await fs.promises.mkdir(dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      // Not fatal: the proxy works without its last-known-good copy, it just cannot start alone.
      this.log.warn({ err, path: dir }, 'Cannot create the state directory; xDS state not kept');
    }
  }

  private onRotate(): void {
    this.labeler.setLocalPrincipal(this.tls.spiffeId);
    // Pooled mTLS connections still present the old certificate; new requests get new ones.
    this.http.retireUpstreamConnections();
    // The first certificate may have just appeared: reach pilot now rather than after backoff.
    this.xds.retryNow();
    this.notifyReady();
  }

  private notifyReady(): void {
    for (const w of [...this.readyWaiters]) w();
  }

  /** mTLS to pilot with the current workload certificate, read at each (re)connect. */
  private pilotCredentials() {
    // The TLS provider already read and checked the files (key matches, in validity): use that
    // copy rather than reading the directory again, possibly mid-rotation.
    const id = this.tls.identity();
    if (!id)
      throw new NoCertificateError(
        `no workload certificate for pilot: none loaded from ${this.opts.certsDir} yet`,
      );
    return clientCredentials(id.rootsPem, this.opts.pilotSpiffeId, {
      certChainPem: id.certChainPem,
      keyPem: id.keyPem,
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Shutdown

  /** Releases everything, once (a failed start and close() share it). */
  private shutdown(): Promise<void> {
    return this.shutdownOnce.run(() => this.doShutdown());
  }

  private async doShutdown(): Promise<void> {
    const started = this.starting !== undefined;
    for (const off of this.unsubscribe.splice(0)) off();
    // Stop taking configuration, then let traffic finish: listeners stop accepting and drain, and
    // HTTP connections are told to go away (GOAWAY, Connection: close).
    await this.settle('xds', this.xds.close());
    await this.applying;
    if (started) {
      await Promise.all([
        this.settle('listeners', this.listeners.close()),
        this.settle('http', this.http.drain(this.opts.drainMs)),
      ]);
    }
    await this.settle('http', this.http.close());
    this.clusters.close();
    await this.settle('tls', this.tls.close());
    await Promise.all([
      this.settle('admin', this.admin.close()),
      this.settle('metrics', this.metrics.close()),
    ]);
    if (started) this.log.info('Proxy stopped');
  }

  /** Awaits a part's close, logging (not rethrowing) a failure so the others still close. */
  private async settle(part: string, p: Promise<void>): Promise<void> {
    try {
      await p;
    } catch (err) {
      this.log.warn({ err, subsystem: part }, 'Part failed to close');
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Admin and metrics

  /**
   * Every metric (process and proxy) as prom-client JSON, for a `--concurrency` primary to merge
   * with the other workers' (prom-client's AggregatorRegistry).
   */
  async metricsJson(): Promise<prom.MetricObjectWithValues<prom.MetricValue<string>>[]> {
    const registries = this.processRegistry
      ? [this.processRegistry, this.registry]
      : [this.registry];
    return (await Promise.all(registries.map(r => r.getMetricsAsJSON()))).flat();
  }

  private renderMetrics(): Promise<MetricsText> {
    return this.processRegistry
      ? renderMetrics(this.processRegistry, this.registry)
      : renderMetrics(this.registry);
  }

  /** What `/ready` answers: LIVE, or why not. */
  readiness(): Readiness {
    if (this.closing) return { state: 'DRAINING', reason: 'shutting down' };
    if (this.ready) return { state: 'LIVE', reason: '' };
    const reasons: string[] = [];
    if (!this.tls.ready) reasons.push(`no workload certificate in ${this.opts.certsDir} yet`);
    if (!this.xds.ready) reasons.push(`xds: ${this.xds.status().readyReason}`);
    else if (this.updatesApplied < Math.max(1, this.readyUpdate ?? 1))
      reasons.push('applying the configuration');
    if (this.listenerError !== '') reasons.push(`listeners: ${this.listenerError}`);
    return { state: 'PRE_INITIALIZING', reason: reasons.join('; ') };
  }

  private adminSource(): AdminSource {
    return {
      readiness: () => this.readiness(),
      serverInfo: () => this.serverInfo(),
      configDump: () => this.configDump(),
      clusters: (): readonly ClusterStatus[] => this.clusters.status(),
      clusterConfig: (name: string): Cluster | undefined => this.config.clusters.get(name),
      listeners: () => this.listenerInfo(),
      stats: () => this.stats(),
      metrics: () => this.renderMetrics(),
    };
  }

  private uptimeSeconds(): number {
    return this.startedAt === 0 ? 0 : Math.floor((this.clock.now() - this.startedAt) / 1000);
  }

  private serverInfo(): Record<string, unknown> {
    const r = this.readiness();
    const xds = this.xds.status();
    const notAfter = this.tls.certificateExpiry();
    return {
      version: `sail/${pkg.version}`,
      state: r.state,
      ...(r.reason ? { reason: r.reason } : {}),
      uptime_current_epoch: `${this.uptimeSeconds()}s`,
      uptime_all_epochs: `${this.uptimeSeconds()}s`,
      node: { id: this.opts.nodeId, metadata: nodeMetadata(this.opts) },
      command_line_options: {
        admin_address: this.admin.address ?? this.opts.adminListen,
        traffic_mode: this.opts.traffic.mode,
        drain_time: `${this.opts.drainMs / 1000}s`,
        shutdown_grace: `${this.opts.shutdownGraceMs / 1000}s`,
      },
      control_plane: {
        address: this.opts.pilotAddress,
        spiffe_id: this.opts.pilotSpiffeId,
        connected: xds.connected,
        versions: this.config.versions,
        ...(xds.lastNack
          ? {
              last_nack: {
                type: xds.lastNack.kind,
                version: xds.lastNack.version,
                error: xds.lastNack.error,
                at: xds.lastNack.at.toISOString(),
              },
            }
          : {}),
      },
      certificate: {
        spiffe_id: this.tls.spiffeId,
        ...(notAfter ? { not_after: notAfter.toISOString() } : {}),
      },
    };
  }

  private configDump(): ConfigDumpInput {
    const raw = this.xds.raw;
    const resources = {} as Record<XdsKind, DumpedResource[]>;
    for (const kind of KINDS) {
      resources[kind] = [...raw[kind]].map(([name, r]) => ({
        name,
        version: r.version,
        lastUpdated: r.lastUpdated.getTime(),
        resource: r.resource,
      }));
    }
    return {
      node: { id: this.opts.nodeId, metadata: nodeMetadata(this.opts) },
      versions: this.config.versions,
      resources,
      startedAt: this.startedAt,
    };
  }

  private listenerInfo(): ListenerInfo[] {
    return [...this.listeners.addresses()].map(([name, a]) => ({
      name,
      address: a.address.includes(':') ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`,
    }));
  }

  /** The Envoy-style counters and gauges of `/stats`. */
  stats(): Map<string, number | string> {
    const s = new Map<string, number | string>();
    const r = this.readiness();
    const xds = this.xds.status();
    s.set('server.state', SERVER_STATE_NUMBER[r.state]);
    s.set('server.live', r.state === 'LIVE' ? 1 : 0);
    s.set('server.uptime', this.uptimeSeconds());
    s.set('server.total_connections', this.listeners.connectionCount);
    const notAfter = this.tls.certificateExpiry();
    if (notAfter)
      s.set(
        'server.days_until_first_cert_expiring',
        Math.max(0, Math.floor((notAfter.getTime() - this.clock.now()) / 86_400_000)),
      );
    s.set('control_plane.connected_state', xds.connected ? 1 : 0);
    s.set('control_plane.reconnects', xds.reconnects);
    s.set('control_plane.acks', xds.acks);
    s.set('control_plane.rejected', xds.nacks);
    s.set('control_plane.updates', xds.updates);
    s.set('cluster_manager.cds.version_text', this.config.versions.clusters);
    s.set('cluster_manager.eds.version_text', this.config.versions.endpoints);
    s.set('listener_manager.lds.version_text', this.config.versions.listeners);
    s.set('http.rds.version_text', this.config.versions.routes);
    s.set('cluster_manager.active_clusters', this.config.clusters.size);
    s.set('listener_manager.total_listeners_active', this.listeners.addresses().size);
    const lc = this.listeners.counters;
    s.set('listener_manager.downstream_cx_total', lc.accepted);
    s.set('listener_manager.no_filter_chain_match', lc.noFilterChain);
    s.set('listener_manager.ssl.handshake_error', lc.tlsFailures);
    s.set('listener_manager.ssl.fail_verify', lc.peerRejected);
    s.set('listener_manager.bind_errors', lc.bindFailures);
    s.set('listener_manager.redirect_loops', lc.loops);
    const t = this.telemetry.totals();
    s.set('http.downstream_rq_total', t.requests);
    s.set('tcp.downstream_cx_total', t.tcpOpened);
    s.set('tcp.downstream_cx_closed', t.tcpClosed);
    for (const c of this.clusters.status()) {
      let active = 0;
      let total = 0;
      let errors = 0;
      let healthy = 0;
      for (const h of c.hosts) {
        active += h.activeRequests;
        total += h.totalRequests;
        errors += h.failedRequests;
        if (h.healthy && !h.ejected) healthy++;
      }
      const p = `cluster.${c.name}.`;
      s.set(`${p}membership_total`, c.hosts.length);
      s.set(`${p}membership_healthy`, healthy);
      s.set(`${p}upstream_rq_active`, active);
      s.set(`${p}upstream_rq_total`, total);
      s.set(`${p}upstream_rq_error`, errors);
    }
    return s;
  }
}
