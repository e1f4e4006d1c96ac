/**
 * The proxy's xDS client: one ADS State-of-the-World stream to pilot (Envoy xDS v3), turning what
 * pilot sends into a compiled ProxyConfig (config/compile.ts) and emitting it.
 *
 * - Subscriptions: clusters and listeners by wildcard; endpoints for every EDS cluster
 *   (`edsServiceName ?? name`) and routes for every RDS name the listeners' HTTP handlers use.
 *   When those sets change, a new request names the new set (with the last ACKed version and the
 *   last nonce received, so pilot does not take it for a stale request).
 * - ACK/NACK: a response is compiled whole; if any resource fails it is NACKed (previous
 *   version_info, its nonce, `error_detail` listing every failure) and nothing of it is applied
 *   (xDS: "the client SHOULD NACK ... and continue using the previous configuration").
 * - The data path never waits for pilot: start() resolves at once, after restoring the last
 *   ACKed state from `stateFile` when there is one (ready from the cache). Without a cache the
 *   client is ready once clusters, listeners and every subscribed endpoint and route arrived, or
 *   `initialFetchTimeoutMs` after the stream first connected (Envoy's initial_fetch_timeout).
 * - The stream reconnects after any failure with capped, jittered backoff, on a new channel with
 *   fresh credentials (a rotated workload certificate), and starts again from what it holds.
 */
import * as grpc from '@grpc/grpc-js';
import pkg from '../../package.json';
import { jsonToStruct } from '../../api/envoy';
import { Backoff, DEFAULT_INITIAL_BACKOFF_MS, DEFAULT_MAX_BACKOFF_MS } from '../../common/backoff';
import { type Clock, systemClock } from '../../common/clock';
import { AlreadyStartedError, ClosedError, getErrorMessage } from '../../common/errors';
import { CloseOnce, type Lifecycle, runTasks } from '../../common/lifecycle';
import type { Logger } from '../../common/logging';
import type { ProxyConfig, XdsKind } from '../model';
import { type AdsCall, type AdsRequest, type AdsResponse, newAdsClient } from './ads-stream';
import { isWildcardKind, kindOfTypeUrl, TYPE_URLS, XDS_KINDS } from './resources';
import { readStateFile, writeStateFile } from './state-file';
import type {
  RawResources,
  XdsAckInfo,
  XdsClientOptions,
  XdsClientStatus,
  XdsNackInfo,
  XdsUpdate,
} from './types';
import { XdsState } from './xds-state';

/** Minimum time between two state file writes, by default. */
export const DEFAULT_STATE_WRITE_INTERVAL_MS = 1_000;
/** `node.cluster` and `node.user_agent_name` the proxy sends. */
export const XDS_NODE_CLUSTER = 'sail-proxy';
/** `google.rpc.Code.INVALID_ARGUMENT`, the code of a NACK's error_detail (as Envoy sends). */
const NACK_CODE = 3;
/** How many missing names a readiness message lists before "and N more". */
const MAX_LISTED_MISSING = 10;

const USER_AGENT_VERSION: string = typeof pkg.version === 'string' ? pkg.version : '0.1.0';

/** The protocol state of one stream. */
class StreamContext {
  /** The node goes on the first request of a stream only (pilot reads it there). */
  first = true;
  closed = false;
  responses = 0;
  /** Nonce of the last response received, per kind. */
  readonly nonces: Partial<Record<XdsKind, string>> = {};
  /** The name set last requested for endpoints/routes (XdsState gives a new set per change). */
  readonly requested: Partial<Record<XdsKind, ReadonlySet<string>>> = {};
  constructor(readonly call: AdsCall) {}
}

/** How one stream ended. */
interface StreamOutcome {
  readonly responses: number;
  readonly error?: unknown;
}

/**
 * The ADS client (a Lifecycle). Register `onUpdate` listeners before start(): the update restored
 * from the state file is emitted during start().
 */
export class XdsClient implements Lifecycle {
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly state = new XdsState();
  private readonly backoff: Backoff;
  /** Aborts the current backoff sleep (see retryNow). */
  private wakeBackoff: AbortController | undefined;
  private readonly stateWriteIntervalMs: number;
  private readonly updateListeners = new Set<(u: XdsUpdate) => void>();
  private readonly readyListeners = new Set<() => void>();
  private readonly closeOnce = new CloseOnce();
  private readonly abort = new AbortController();
  private started = false;
  private tasks: Promise<void> | undefined;
  private isConnected = false;
  /** Set once the stream first connected; starts the initial fetch timer. */
  private onFirstConnect: (() => void) | undefined;
  private everConnected = false;
  /** In a streak of failed streams (warn once per streak). */
  private failing = false;
  private isReady = false;
  private reason = 'waiting for pilot';
  /** The first clusters / listeners response was applied (or restored from the state file). */
  private readonly received = { clusters: false, listeners: false };
  private readonly lastAck: Record<XdsKind, XdsAckInfo | undefined> = {
    clusters: undefined,
    endpoints: undefined,
    listeners: undefined,
    routes: undefined,
  };
  private lastNack: XdsNackInfo | undefined;
  private readonly counters = { nacks: 0, reconnects: 0, acks: 0, updates: 0 };
  /** State changed since the last state file write. */
  private dirty = false;
  private wakePersist: (() => void) | undefined;
  private latest: XdsUpdate | undefined;

  constructor(private readonly opts: XdsClientOptions) {
    this.log = opts.logger.child({ component: 'proxy', subsystem: 'xds' });
    this.clock = opts.clock ?? systemClock;
    this.backoff = new Backoff({
      initialMs: opts.backoff?.initialMs ?? DEFAULT_INITIAL_BACKOFF_MS,
      maxMs: opts.backoff?.maxMs ?? DEFAULT_MAX_BACKOFF_MS,
    });
    this.stateWriteIntervalMs = opts.stateWriteIntervalMs ?? DEFAULT_STATE_WRITE_INTERVAL_MS;
  }

  /**
   * Restores the state file (emitting its configuration as an update with `fromCache: true`,
   * ready at once) and opens the stream in the background. Resolves without waiting for pilot.
   * @throws AlreadyStartedError when called twice; ClosedError after close()
   */
  async start(): Promise<void> {
    if (this.closeOnce.closed) throw new ClosedError('xds client');
    if (this.started) throw new AlreadyStartedError('xds client');
    this.started = true;
    if (this.opts.stateFile !== undefined) await this.restore(this.opts.stateFile);
    this.tasks = runTasks(
      [s => this.runStreams(s), s => this.runInitialFetchTimer(s), s => this.runPersist(s)],
      this.abort.signal,
    ).catch((err: unknown) => {
      // The tasks handle their own errors; reaching here is a bug, and the proxy keeps its config.
      this.log.error({ err }, 'xDS client task failed');
    });
  }

  /** Ends the stream, writes the state file one last time, and drops listeners. Idempotent. */
  close(): Promise<void> {
    return this.closeOnce.run(async () => {
      this.abort.abort(new ClosedError('xds client'));
      await this.tasks;
      if (this.dirty && this.opts.stateFile !== undefined)
        await this.writeState(this.opts.stateFile);
      this.updateListeners.clear();
      this.readyListeners.clear();
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Calls `cb` after every applied response (and once from the state file). Returns an unsubscribe function. */
  onUpdate(cb: (u: XdsUpdate) => void): () => void {
    this.updateListeners.add(cb);
    return () => this.updateListeners.delete(cb);
  }

  /** Calls `cb` once when the client becomes ready (at once if it is). Returns an unsubscribe function. */
  onReady(cb: () => void): () => void {
    if (this.isReady) {
      cb();
      return () => undefined;
    }
    this.readyListeners.add(cb);
    return () => this.readyListeners.delete(cb);
  }

  /** Resolves when the client is ready; rejects with ClosedError if it is closed first. */
  whenReady(): Promise<void> {
    if (this.isReady) return Promise.resolve();
    if (this.closeOnce.closed) return Promise.reject(new ClosedError('xds client'));
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        off();
        reject(new ClosedError('xds client'));
      };
      const off = this.onReady(() => {
        this.abort.signal.removeEventListener('abort', onAbort);
        resolve();
      });
      this.abort.signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** True once the first configuration is complete (or restored, or the initial fetch timed out). Never goes back. */
  get ready(): boolean {
    return this.isReady;
  }

  /** The configuration in force. */
  get config(): ProxyConfig {
    return this.state.config;
  }

  /** The raw ACKed resources in force (config dump). */
  get raw(): RawResources {
    return this.state.raw;
  }

  /** The last update emitted, if any. */
  get current(): XdsUpdate | undefined {
    return this.latest;
  }

  /** Connection, readiness and counters, for the admin endpoint and metrics. */
  status(): XdsClientStatus {
    return {
      connected: this.isConnected,
      ready: this.isReady,
      readyReason: this.isReady ? this.reason : this.waitingFor(),
      lastAck: { ...this.lastAck },
      ...(this.lastNack ? { lastNack: this.lastNack } : {}),
      nacks: this.counters.nacks,
      reconnects: this.counters.reconnects,
      acks: this.counters.acks,
      updates: this.counters.updates,
    };
  }

  // -------------------------------------------------------------------------------------------
  // State file

  private async restore(file: string): Promise<void> {
    let snapshot;
    try {
      snapshot = await readStateFile(file);
    } catch (err) {
      this.log.warn({ err, path: file }, 'Ignoring unreadable xDS state file');
      return;
    }
    if (!snapshot) {
      this.log.debug({ path: file }, 'No xDS state file yet');
      return;
    }
    // Another node's configuration (another IP, another workload) would bind the wrong addresses.
    if (snapshot.nodeId !== this.opts.nodeId) {
      this.log.warn(
        { path: file, nodeId: snapshot.nodeId, wanted: this.opts.nodeId },
        'Ignoring xDS state file of another node',
      );
      return;
    }
    try {
      this.state.restore(snapshot);
    } catch (err) {
      this.log.warn({ err, path: file }, 'Ignoring xDS state file that does not compile');
      return;
    }
    this.received.clusters = true;
    this.received.listeners = true;
    this.log.info(
      {
        path: file,
        savedAt: snapshot.savedAt,
        versions: snapshot.versions,
        counts: this.counts(),
      },
      'Restored xDS configuration from state file',
    );
    this.emit(new Set(XDS_KINDS), true);
    this.setReady('restored from the state file');
  }

  private async runPersist(signal: AbortSignal): Promise<void> {
    const file = this.opts.stateFile;
    if (file === undefined) return;
    for (;;) {
      if (!this.dirty) {
        await new Promise<void>((resolve, reject) => {
          const onAbort = () => reject(signal.reason as Error);
          if (signal.aborted) {
            onAbort();
            return;
          }
          this.wakePersist = () => {
            signal.removeEventListener('abort', onAbort);
            resolve();
          };
          signal.addEventListener('abort', onAbort, { once: true });
        });
      }
      await this.writeState(file);
      // Throttle: a burst of pushes costs one write per interval (close() flushes the last one).
      await this.clock.sleep(this.stateWriteIntervalMs, signal);
    }
  }

  private markDirty(): void {
    this.dirty = true;
    const wake = this.wakePersist;
    this.wakePersist = undefined;
    wake?.();
  }

  private async writeState(file: string): Promise<void> {
    this.dirty = false;
    const snapshot = this.state.snapshot(this.opts.nodeId, new Date(this.clock.now()));
    try {
      await writeStateFile(file, snapshot);
      this.log.debug({ path: file, versions: snapshot.versions }, 'Wrote xDS state file');
    } catch (err) {
      // Not fatal: the proxy runs on; only a restart without pilot would miss this state.
      this.log.warn({ err, path: file }, 'Cannot write xDS state file');
    }
  }

  // -------------------------------------------------------------------------------------------
  // Readiness

  private async runInitialFetchTimer(signal: AbortSignal): Promise<void> {
    if (this.isReady) return;
    if (!this.everConnected) {
      await new Promise<void>((resolve, reject) => {
        const onAbort = () => reject(signal.reason as Error);
        if (signal.aborted) {
          onAbort();
          return;
        }
        this.onFirstConnect = () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        };
        signal.addEventListener('abort', onAbort, { once: true });
      });
    }
    await this.clock.sleep(this.opts.initialFetchTimeoutMs, signal);
    if (this.isReady) return;
    const missing = this.missing();
    this.log.warn(
      { missing: missing.slice(0, MAX_LISTED_MISSING), missingCount: missing.length },
      'Initial xDS fetch timed out: ready with the configuration received so far',
    );
    this.setReady(`initial fetch timed out; missing ${listNames(missing)}`);
  }

  /** What readiness still waits for: `clusters`, `listeners`, `endpoints NAME`, `routes NAME`. */
  private missing(): string[] {
    const out: string[] = [];
    if (!this.received.clusters) out.push('clusters');
    if (!this.received.listeners) out.push('listeners');
    for (const kind of ['endpoints', 'routes'] as const) {
      for (const name of this.state.subscription(kind) ?? []) {
        if (!this.state.has(kind, name)) out.push(`${kind} ${name}`);
      }
    }
    return out;
  }

  private waitingFor(): string {
    if (!this.everConnected) return 'waiting for pilot';
    return `waiting for ${listNames(this.missing())}`;
  }

  private checkReady(): void {
    if (this.isReady || this.missing().length > 0) return;
    this.setReady('received clusters, listeners and every subscribed endpoint and route');
  }

  private setReady(reason: string): void {
    if (this.isReady) return;
    this.isReady = true;
    this.reason = reason;
    this.log.info({ reason, counts: this.counts() }, 'xDS client ready');
    const listeners = [...this.readyListeners];
    this.readyListeners.clear();
    for (const cb of listeners) {
      try {
        cb();
      } catch (err) {
        this.log.error({ err }, 'xDS ready listener failed');
      }
    }
  }

  private setConnected(connected: boolean): void {
    if (this.isConnected === connected) return;
    this.isConnected = connected;
    if (connected && !this.everConnected) {
      this.everConnected = true;
      const cb = this.onFirstConnect;
      this.onFirstConnect = undefined;
      cb?.();
    }
  }

  // -------------------------------------------------------------------------------------------
  // The stream

  private async runStreams(signal: AbortSignal): Promise<void> {
    for (let attempt = 0; !signal.aborted; attempt++) {
      if (attempt > 0) this.counters.reconnects++;
      const outcome = await this.runStream(signal);
      if (signal.aborted) return;
      // A stream that got responses worked: the next failure starts the backoff again.
      if (outcome.responses > 0) this.backoff.reset();
      const delayMs = this.backoff.next();
      const fields = {
        address: this.opts.address,
        reason: describeFailure(outcome.error),
        delayMs,
      };
      if (!this.failing) {
        this.failing = true;
        this.log.warn(fields, 'xDS stream to pilot failed; reconnecting with backoff');
      } else {
        this.log.debug(fields, 'xDS stream to pilot failed again');
      }
      const wake = new AbortController();
      this.wakeBackoff = wake;
      try {
        await this.clock.sleep(delayMs, AbortSignal.any([signal, wake.signal]));
      } catch (err) {
        if (signal.aborted) throw err;
        // Woken by retryNow(): reconnect at once.
      } finally {
        this.wakeBackoff = undefined;
      }
    }
  }

  /**
   * Ends a backoff wait early and reconnects now (the proxy calls it when its first workload
   * certificate appears, so it need not wait up to the backoff cap). No-op while connected.
   */
  retryNow(): void {
    this.wakeBackoff?.abort();
  }

  /** Runs one stream until it fails or `signal` aborts. Never rejects. */
  private runStream(signal: AbortSignal): Promise<StreamOutcome> {
    return new Promise<StreamOutcome>(resolve => {
      let client: ReturnType<typeof newAdsClient>;
      let call: AdsCall;
      try {
        client = newAdsClient(this.opts.address, this.opts.credentials());
        call = client.StreamAggregatedResources();
      } catch (err) {
        resolve({ responses: 0, error: err });
        return;
      }
      const ctx = new StreamContext(call);
      const finish = (error?: unknown) => {
        if (ctx.closed) return;
        ctx.closed = true;
        signal.removeEventListener('abort', onAbort);
        this.setConnected(false);
        call.end();
        call.cancel();
        client.close();
        resolve({ responses: ctx.responses, ...(error !== undefined ? { error } : {}) });
      };
      const onAbort = () => finish();
      signal.addEventListener('abort', onAbort, { once: true });
      call.on('data', (res: AdsResponse) => {
        if (ctx.closed) return;
        ctx.responses++;
        this.setConnected(true);
        if (ctx.responses === 1) {
          if (this.failing)
            this.log.info({ address: this.opts.address }, 'xDS stream to pilot reconnected');
          else this.log.info({ address: this.opts.address }, 'xDS stream to pilot established');
          this.failing = false;
        }
        try {
          this.onResponse(ctx, res);
        } catch (err) {
          // A bug in handling, not bad input (that is a NACK): start over on a new stream.
          this.log.error({ err }, 'Cannot handle xDS response');
          finish(err);
        }
      });
      // grpc-js emits 'error' for a non-OK status and then 'status'; an OK status (pilot ended
      // the stream) only 'status'. Either way the stream is over.
      call.on('error', err => finish(err));
      call.on('status', (s: grpc.StatusObject) =>
        finish(s.code === grpc.status.OK ? new Error('pilot ended the xds stream') : s),
      );
      this.watchChannel(client.getChannel(), ctx);
      this.sendInitialRequests(ctx);
      if (signal.aborted) finish();
    });
  }

  /** Marks the client connected while the stream's channel is READY (TLS handshake done). */
  private watchChannel(channel: ReturnType<grpc.Client['getChannel']>, ctx: StreamContext): void {
    const check = () => {
      if (ctx.closed) return;
      const state = channel.getConnectivityState(false);
      if (state === grpc.connectivityState.READY) this.setConnected(true);
      try {
        channel.watchConnectivityState(state, Infinity, check);
      } catch (err) {
        // The channel was closed: the stream is over and finish() ran or is about to.
        this.log.debug({ err }, 'xDS channel closed while watched');
      }
    };
    check();
  }

  /** First requests of a stream: wildcard clusters and listeners, then the names already held. */
  private sendInitialRequests(ctx: StreamContext): void {
    for (const kind of ['clusters', 'listeners', 'endpoints', 'routes'] as const) {
      const names = this.state.subscription(kind);
      // An empty EDS/RDS request would be a legacy wildcard: send none until there are names.
      if (names && names.size === 0) continue;
      this.send(ctx, kind, { versionInfo: this.state.version(kind) });
    }
  }

  private send(
    ctx: StreamContext,
    kind: XdsKind,
    fields: Omit<AdsRequest, 'typeUrl' | 'resourceNames' | 'node'>,
  ): void {
    if (ctx.closed) return;
    const names = this.state.subscription(kind);
    if (names) ctx.requested[kind] = names;
    const req: AdsRequest = {
      typeUrl: TYPE_URLS[kind],
      ...(names ? { resourceNames: [...names] } : {}),
      ...fields,
      ...(ctx.first ? { node: this.node() } : {}),
    };
    ctx.first = false;
    ctx.call.write(req);
  }

  private node(): Record<string, unknown> {
    return {
      id: this.opts.nodeId,
      cluster: XDS_NODE_CLUSTER,
      metadata: jsonToStruct({ ...this.opts.nodeMetadata }),
      userAgentName: XDS_NODE_CLUSTER,
      userAgentVersion: USER_AGENT_VERSION,
      locality: {},
    };
  }

  /** Applies (and ACKs) or NACKs one response. */
  private onResponse(ctx: StreamContext, res: AdsResponse): void {
    const kind = kindOfTypeUrl(res.typeUrl);
    if (!kind) {
      this.log.warn({ typeUrl: res.typeUrl }, 'Ignoring xDS response of a type never requested');
      return;
    }
    ctx.nonces[kind] = res.nonce;
    const now = new Date(this.clock.now());
    const result = this.state.apply(kind, res.versionInfo, res.resources, now);
    if (!result.ok) {
      const error = result.errors.join('; ');
      this.counters.nacks++;
      this.lastNack = { kind, version: res.versionInfo, nonce: res.nonce, error, at: now };
      this.log.warn(
        {
          kind,
          version: res.versionInfo,
          nonce: res.nonce,
          failed: result.errors.length,
          reason: error,
        },
        'Rejected xDS configuration (NACK): keeping the previous one',
      );
      // xDS: a NACK carries the previous (last accepted) version_info and the rejected nonce.
      this.send(ctx, kind, {
        versionInfo: this.state.version(kind),
        responseNonce: res.nonce,
        errorDetail: { code: NACK_CODE, message: error },
      });
      return;
    }
    if (kind === 'clusters' || kind === 'listeners') this.received[kind] = true;
    this.counters.acks++;
    this.lastAck[kind] = { version: res.versionInfo, nonce: res.nonce, at: now };
    this.emit(result.changed, false);
    this.send(ctx, kind, { versionInfo: res.versionInfo, responseNonce: res.nonce });
    if (isWildcardKind(kind)) this.resubscribe(ctx, kind === 'clusters' ? 'endpoints' : 'routes');
    this.markDirty();
    const log =
      result.changed.size > 0 ? this.log.info.bind(this.log) : this.log.debug.bind(this.log);
    log(
      {
        kind,
        version: res.versionInfo,
        resources: result.applied,
        ...(result.ignored.length > 0 ? { ignored: result.ignored.length } : {}),
        changed: [...result.changed],
      },
      'Applied xDS configuration',
    );
    this.checkReady();
  }

  /** Sends a new EDS/RDS request when the clusters or listeners changed the names needed. */
  private resubscribe(ctx: StreamContext, kind: 'endpoints' | 'routes'): void {
    const names = this.state.subscription(kind);
    const prev = ctx.requested[kind];
    if (names === prev) return;
    // Never subscribed and nothing to subscribe to: an empty request would be a wildcard.
    if (prev === undefined && names?.size === 0) return;
    this.log.debug({ kind, names: names?.size }, 'Changing xDS subscription');
    // A new request for the type carries the last ACKed version and the last nonce received
    // (a request with an older nonce is stale and ignored by the server).
    this.send(ctx, kind, {
      versionInfo: this.state.version(kind),
      responseNonce: ctx.nonces[kind] ?? '',
    });
  }

  private emit(changed: ReadonlySet<XdsKind>, fromCache: boolean): void {
    const update: XdsUpdate = {
      config: this.state.config,
      raw: this.state.raw,
      changed,
      fromCache,
    };
    this.latest = update;
    this.counters.updates++;
    for (const cb of [...this.updateListeners]) {
      try {
        cb(update);
      } catch (err) {
        this.log.error({ err }, 'xDS update listener failed');
      }
    }
  }

  private counts(): Record<XdsKind, number> {
    return {
      clusters: this.state.count('clusters'),
      endpoints: this.state.count('endpoints'),
      listeners: this.state.count('listeners'),
      routes: this.state.count('routes'),
    };
  }
}

function listNames(names: readonly string[]): string {
  if (names.length === 0) return 'nothing';
  if (names.length <= MAX_LISTED_MISSING) return names.join(', ');
  return `${names.slice(0, MAX_LISTED_MISSING).join(', ')} and ${names.length - MAX_LISTED_MISSING} more`;
}

function describeFailure(err: unknown): string {
  if (err === undefined) return 'stream ended';
  if (typeof err === 'object' && err !== null && 'code' in err && 'details' in err) {
    const s = err as { code: number; details: string };
    return `${grpc.status[s.code] ?? s.code}: ${s.details}`;
  }
  return getErrorMessage(err);
}
