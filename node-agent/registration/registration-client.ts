/**
 * The host's registration with pilot (`sail.pilot.v1.Registration/Connect`): one bidirectional
 * stream over mutual TLS with the host's workload certificate. The first report registers the
 * workload (node, namespace, service account, address, labels, ports, host facts, health); health
 * changes follow at once; close() deregisters. The open stream is the host's liveness: when it
 * drops, pilot keeps the workload (with its last health) for its grace period while this client
 * reconnects, forever, with capped jittered backoff.
 *
 * Pilot's answers and what the client does about them:
 * - `accepted: true`: registered (or the report applied).
 * - `accepted: false`: a newer stream of the same node replaced this one. Only another process
 *   holding this node's certificate does that (this client never runs two streams), e.g. a second
 *   agent or a cloned VM. Logged as an error; the client retries after `refusedRetryMs` rather than
 *   at once, so two agents do not take the registration from each other in a tight loop.
 * - PERMISSION_DENIED / INVALID_ARGUMENT / UNAUTHENTICATED: the registration does not match the
 *   certificate, or a field is invalid. Logged as an error with pilot's message and the
 *   node-agent.yaml keys it names; retried every `refusedRetryMs`, because some causes are fixed on
 *   the control plane's side without touching this host (a WorkloadGroup created, a certificate
 *   renewed), while a fix in node-agent.yaml needs an agent restart anyway.
 * - anything else (UNAVAILABLE, a dropped connection, pilot restarting): reconnect with backoff.
 */
import * as crypto from 'node:crypto';
import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import {
  loadPilotProto,
  type RegistrationClient as RegistrationGrpcClient,
  type RegistrationStatus__Output,
  type WorkloadRegistration,
  type WorkloadReport,
} from '../../api';
import { Backoff } from '../../common/backoff';
import { type Clock, systemClock } from '../../common/clock';
import { parseHostPort } from '../../common/config';
import { AlreadyStartedError, ClosedError, getErrorMessage } from '../../common/errors';
import { clientCredentials } from '../../common/grpc';
import { CloseOnce, isAbortError, type Lifecycle } from '../../common/lifecycle';
import type { Logger } from '../../common/logging';
import { prom } from '../../common/metrics';
import { HealthChecker, HealthMetrics, type WorkloadHealth } from './health-checker';
import { type HostFacts, hostFacts } from './host-facts';
import type { HealthProbeSpec } from './probes';
import { resolveWorkloadAddress } from './workload-address';

/** First reconnection delay unless configured. */
export const DEFAULT_REGISTRATION_INITIAL_BACKOFF_MS = 500;
/** Longest reconnection delay unless configured. */
export const DEFAULT_REGISTRATION_MAX_BACKOFF_MS = 30_000;
/** Delay after pilot refused the registration or another stream replaced it. */
export const DEFAULT_REFUSED_RETRY_MS = 60_000;
/** How long close() waits for pilot to confirm the deregistration. */
export const DEFAULT_DEREGISTER_TIMEOUT_MS = 2_000;
/** While pilot stays unreachable, one warning per this many failed attempts (debug otherwise). */
const WARN_EVERY_ATTEMPTS = 10;

/** A host identity: certificate chain (leaf first), its key, and the mesh roots, PEM. */
export interface RegistrationIdentity {
  readonly certChainPem: string;
  readonly keyPem: string;
  readonly rootsPem: string;
}

/** The workload this host registers. */
export interface WorkloadSpec {
  /** The node name: the certificate's common name. */
  readonly node: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  /** An IP address, or `auto`: the local address toward pilot, found again at each connection. */
  readonly address: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly ports: readonly { readonly name: string; readonly port: number }[];
  /** Optional WorkloadGroup `NAMESPACE/NAME` whose template fills in the rest. */
  readonly group?: string;
}

/** Options of {@link RegistrationClient}. */
export interface RegistrationClientOptions {
  readonly logger: Logger;
  readonly clock?: Clock;
  readonly registry: prom.Registry;
  /** Pilot's mTLS address, HOST:PORT. */
  readonly pilotAddress: string;
  /** The SPIFFE ID pilot's serving certificate must carry (controlPlaneSpiffeId(trustDomain)). */
  readonly pilotSpiffeId: string;
  /** The current identity; undefined while the host has none yet. A new channel is made when it changes. */
  readonly identity: () => RegistrationIdentity | undefined;
  readonly registration: WorkloadSpec;
  /** Health probes of the local application; absent: pilot takes the workload as healthy. */
  readonly health?: HealthProbeSpec;
  /** Reconnection backoff; default 500 ms doubling to 30 s, each delay jittered in [½, 1]. */
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
  /** Delay before retrying after a refusal or a replacement; default {@link DEFAULT_REFUSED_RETRY_MS}. */
  readonly refusedRetryMs?: number;
  /** Bound of close()'s wait for pilot's answer; default {@link DEFAULT_DEREGISTER_TIMEOUT_MS}. */
  readonly deregisterTimeoutMs?: number;
  /** Host facts; default {@link hostFacts}. */
  readonly hostFacts?: () => Promise<HostFacts>;
}

/** What `sail status` shows about the registration. */
export interface RegistrationStatusInfo {
  /** A stream to pilot is open. */
  readonly connected: boolean;
  /** Pilot accepted the registration on the open stream. */
  readonly registered: boolean;
  /** The probed health; undefined without probes or before the first probe. */
  readonly healthy?: boolean;
  /** Pilot's last answer, or why the last attempt failed. */
  readonly lastMessage?: string;
  /** When `registered` last changed (ISO 8601). */
  readonly since?: string;
}

type Call = grpc.ClientDuplexStream<WorkloadReport, RegistrationStatus__Output>;

interface Channel {
  readonly client: RegistrationGrpcClient;
  /** Hash of the identity it presents and the roots it trusts. */
  readonly key: string;
}

/** One registration stream. */
interface Stream {
  readonly call: Call;
  readonly channel: Channel;
  readonly address: string;
  /** Pilot accepted the registration on this stream. */
  accepted: boolean;
  /** Pilot answered accepted=false: a newer stream of this node took over. */
  replaced: boolean;
  /** Set when this client ended the stream on purpose. */
  ending: 'identity' | 'close' | undefined;
  /** The end status, once ended. */
  status: grpc.StatusObject | undefined;
  readonly ended: Promise<grpc.StatusObject>;
}

type Outcome =
  | { readonly kind: 'no-identity' }
  | { readonly kind: 'aborted' }
  | { readonly kind: 'failed'; readonly err: unknown }
  | { readonly kind: 'ended'; readonly stream: Stream; readonly status: grpc.StatusObject };

/** Status codes meaning "pilot refuses this registration", as opposed to "try again". */
const REFUSED_CODES: ReadonlySet<grpc.status> = new Set([
  grpc.status.PERMISSION_DENIED,
  grpc.status.INVALID_ARGUMENT,
  grpc.status.UNAUTHENTICATED,
]);

/**
 * Which node-agent.yaml keys pilot's refusal message is about (pilot names registration fields:
 * `node "x" is not the node the client certificate names`, `address: ...`, `ports[1].port: ...`).
 * @internal exported for tests
 */
export function configKeysIn(details: string): string[] {
  const keys: string[] = [];
  const add = (re: RegExp, key: string) => {
    if (re.test(details) && !keys.includes(key)) keys.push(key);
  };
  add(/(^|[;:] )node[:"]|node ".*" is not the node/, 'nodeName');
  add(/(^|[;:] )namespace[:"]|namespace ".*" of node/, 'workload.namespace');
  add(/serviceAccount\b/, 'workload.serviceAccount');
  add(/(^|[;:] )address:/, 'workload.address');
  add(/(^|[;:] )labels[:[]/, 'workload.labels');
  add(/(^|[;:] )ports[:[]/, 'workload.ports');
  add(/(^|[;:] )group\b|\bgroup \S+ of node/, 'workload.group');
  add(/trust domain/, 'trustDomain');
  add(
    /no client certificate|client certificate (cannot be parsed|names no node|of node \S+ carries)/,
    'certs.dir',
  );
  return keys;
}

/** TLS server name sent when pilot is addressed by IP (RFC 6066 forbids an IP as SNI; pilot's SPIFFE ID is what is checked). */
const IP_TARGET_SERVER_NAME = 'sail-pilot';

function channelOptions(address: string): grpc.ChannelOptions {
  const host = parseHostPort(address)?.host;
  return {
    // One stream kept open for days: keepalives find a dead pilot (or NAT mapping) in ~40 s
    // instead of at the next TCP retransmission timeout. Pilot permits pings every 5 s.
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
    // Each identity gets its own channel: never share a subchannel that presents an old certificate.
    'grpc.use_local_subchannel_pool': 1,
    // The client's own backoff paces attempts; grpc-js's would add up to 120 s on top.
    'grpc.initial_reconnect_backoff_ms': 500,
    'grpc.max_reconnect_backoff_ms': 5_000,
    ...(host !== undefined && net.isIP(host) !== 0
      ? { 'grpc.ssl_target_name_override': IP_TARGET_SERVER_NAME }
      : {}),
  };
}

function identityKey(id: RegistrationIdentity): string {
  return crypto
    .createHash('sha256')
    .update(id.certChainPem)
    .update('\0')
    .update(id.keyPem)
    .update('\0')
    .update(id.rootsPem)
    .digest('hex');
}

/**
 * Keeps the host registered with pilot. start() resolves at once and never waits on pilot;
 * close() deregisters (bounded by `deregisterTimeoutMs`). See the module comment for how each of
 * pilot's answers is handled.
 */
export class RegistrationClient implements Lifecycle {
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly backoff: Backoff;
  private readonly refusedRetryMs: number;
  private readonly deregisterTimeoutMs: number;
  private readonly abort = new AbortController();
  private readonly closer = new CloseOnce();
  private readonly connectedGauge: prom.Gauge;
  private readonly checker: HealthChecker | undefined;
  private started = false;
  private loop: Promise<void> | undefined;
  private channel: Channel | undefined;
  /** The open stream, if any (at most one at a time). */
  private stream: Stream | undefined;
  /** The probed health; undefined without probes or before the first result. */
  private health: WorkloadHealth | undefined;
  /** Resolves when the first probe result is in (at once without probes). */
  private readonly firstHealth: Promise<void>;
  private resolveFirstHealth: () => void = () => undefined;
  /** Aborts the current pause between attempts (identityChanged). */
  private wake: AbortController | undefined;
  private lastMessage: string | undefined;
  private since: string | undefined;
  private failedAttempts = 0;
  private waitingForIdentityLogged = false;

  constructor(private readonly opts: RegistrationClientOptions) {
    this.log = opts.logger.child({ subsystem: 'registration' });
    this.clock = opts.clock ?? systemClock;
    this.backoff = new Backoff({
      initialMs: opts.backoff?.initialMs ?? DEFAULT_REGISTRATION_INITIAL_BACKOFF_MS,
      maxMs: opts.backoff?.maxMs ?? DEFAULT_REGISTRATION_MAX_BACKOFF_MS,
    });
    this.refusedRetryMs = opts.refusedRetryMs ?? DEFAULT_REFUSED_RETRY_MS;
    this.deregisterTimeoutMs = opts.deregisterTimeoutMs ?? DEFAULT_DEREGISTER_TIMEOUT_MS;
    this.connectedGauge = new prom.Gauge({
      name: 'sail_agent_registration_connected',
      help: 'Whether pilot holds this host registration: 1 while the registration stream is open and accepted',
      registers: [opts.registry],
    });
    if (opts.health) {
      this.firstHealth = new Promise(resolve => (this.resolveFirstHealth = resolve));
      this.checker = new HealthChecker({
        logger: opts.logger,
        ...(opts.clock ? { clock: opts.clock } : {}),
        metrics: new HealthMetrics(opts.registry),
        spec: opts.health,
        onChange: h => this.onHealth(h),
      });
    } else {
      this.firstHealth = Promise.resolve();
    }
  }

  /** Pilot accepted the registration on the open stream. */
  get registered(): boolean {
    return this.stream?.accepted === true && this.stream.status === undefined;
  }

  /** The probed health; undefined without probes or before the first probe finished. */
  get healthy(): boolean | undefined {
    return this.health?.healthy;
  }

  /** A snapshot for `sail status`. */
  status(): RegistrationStatusInfo {
    return {
      connected: this.stream !== undefined && this.stream.status === undefined,
      registered: this.registered,
      ...(this.health ? { healthy: this.health.healthy } : {}),
      ...(this.lastMessage !== undefined ? { lastMessage: this.lastMessage } : {}),
      ...(this.since !== undefined ? { since: this.since } : {}),
    };
  }

  /**
   * Starts probing and connecting, and resolves at once: registration happens in the background
   * (after the first probe result, so an application that is down at boot never shows as healthy).
   * @throws AlreadyStartedError on a second call; ClosedError after close()
   */
  async start(): Promise<void> {
    if (this.closer.closed) throw new ClosedError('registration client');
    if (this.started) throw new AlreadyStartedError('registration client');
    this.started = true;
    await this.checker?.start();
    this.loop = this.run(this.abort.signal);
  }

  /**
   * The identity changed (a renewed certificate or new roots): reconnects at once on a new channel
   * when the open stream uses another identity, and cuts short a pause between attempts. Pilot
   * keeps the workload across the few milliseconds this takes (its disconnect grace period).
   */
  identityChanged(): void {
    if (this.closer.closed || !this.started) return;
    const id = this.opts.identity();
    const s = this.stream;
    if (
      s &&
      s.status === undefined &&
      s.ending === undefined &&
      id &&
      identityKey(id) !== s.channel.key
    ) {
      s.ending = 'identity';
      s.call.cancel();
    }
    this.wake?.abort();
  }

  /**
   * Deregisters (`deregister{reason: shutdown}`) when a stream is open and waits for pilot's
   * answer at most `deregisterTimeoutMs`, then stops probing and closes the channel. Without a
   * stream (pilot unreachable) the workload expires after pilot's grace period. Idempotent.
   */
  close(): Promise<void> {
    return this.closer.run(async () => {
      this.abort.abort();
      this.wake?.abort();
      const s = this.stream;
      if (s && s.status === undefined) {
        s.ending = 'close';
        s.call.write({ deregister: { reason: 'shutdown' } });
        const timer = new AbortController();
        const status = await Promise.race([
          s.ended,
          this.clock.sleep(this.deregisterTimeoutMs, timer.signal).then(
            () => undefined,
            () => undefined,
          ),
        ]);
        timer.abort();
        if (status?.code === grpc.status.OK)
          this.log.info(
            { node: this.opts.registration.node },
            'Deregistered the workload from pilot',
          );
        else
          this.log.warn(
            {
              node: this.opts.registration.node,
              timeoutMs: this.deregisterTimeoutMs,
              ...(status ? { code: grpc.status[status.code], details: status.details } : {}),
            },
            'Pilot did not confirm the deregistration; it removes the workload after its grace period',
          );
        if (s.status === undefined) s.call.cancel();
      } else if (this.started) {
        this.log.info(
          { node: this.opts.registration.node },
          'Not connected to pilot at shutdown: the workload expires after pilot grace period',
        );
      }
      await this.loop;
      await this.checker?.close();
      this.channel?.client.close();
      this.channel = undefined;
      this.connectedGauge.set(0);
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private onHealth(h: WorkloadHealth): void {
    this.health = h;
    this.resolveFirstHealth();
    const s = this.stream;
    if (s && s.status === undefined && s.ending === undefined)
      s.call.write({ health: { healthy: h.healthy, message: h.message } });
  }

  private setRegistered(registered: boolean): void {
    this.connectedGauge.set(registered ? 1 : 0);
    this.since = new Date(this.clock.now()).toISOString();
  }

  /** Attempts forever until close(); never rejects. */
  private async run(signal: AbortSignal): Promise<void> {
    try {
      await Promise.race([
        this.firstHealth,
        new Promise<void>(resolve =>
          signal.addEventListener('abort', () => resolve(), { once: true }),
        ),
      ]);
      while (!signal.aborted) {
        let outcome: Outcome;
        try {
          outcome = await this.attempt(signal);
        } catch (err) {
          outcome = { kind: 'failed', err };
        }
        if (signal.aborted || outcome.kind === 'aborted') return;
        await this.pause(this.delayAfter(outcome), signal);
      }
    } catch (err) {
      if (!isAbortError(err) && !signal.aborted)
        this.log.error(
          { err },
          'Registration loop failed; the host stays unregistered until restart',
        );
    }
  }

  /** One connection: resolves when its stream ends (or it could not start). */
  private async attempt(signal: AbortSignal): Promise<Outcome> {
    const identity = this.opts.identity();
    if (!identity) return { kind: 'no-identity' };
    const reg = this.opts.registration;
    const address = await resolveWorkloadAddress(reg.address, this.opts.pilotAddress);
    const host = await (this.opts.hostFacts ?? hostFacts)();
    if (signal.aborted) return { kind: 'aborted' };
    const channel = this.channelFor(identity);
    const registration: WorkloadRegistration = {
      node: reg.node,
      namespace: reg.namespace,
      serviceAccount: reg.serviceAccount,
      address,
      labels: { ...reg.labels },
      ports: reg.ports.map(p => ({ name: p.name, port: p.port })),
      host: { ...host, memoryBytes: String(host.memoryBytes) },
      ...(reg.group ? { group: reg.group } : {}),
      ...(this.health ? { health: { ...this.health } } : {}),
    };
    const stream = this.open(channel, address);
    stream.call.write({ registration });
    this.log.debug(
      { address, pilot: this.opts.pilotAddress },
      'Registering the workload with pilot',
    );
    const status = await stream.ended;
    return { kind: 'ended', stream, status };
  }

  /** The channel for `identity`, replacing (and closing) one made for another identity. */
  private channelFor(identity: RegistrationIdentity): Channel {
    const key = identityKey(identity);
    if (this.channel?.key === key) return this.channel;
    this.channel?.client.close();
    this.channel = undefined;
    const Ctor = loadPilotProto().sail.pilot.v1.Registration;
    const client = new Ctor(
      this.opts.pilotAddress,
      clientCredentials(identity.rootsPem, this.opts.pilotSpiffeId, identity),
      channelOptions(this.opts.pilotAddress),
    ) as unknown as RegistrationGrpcClient;
    this.channel = { client, key };
    return this.channel;
  }

  private open(channel: Channel, address: string): Stream {
    const call = channel.client.Connect();
    let resolveEnded: (s: grpc.StatusObject) => void = () => undefined;
    const stream: Stream = {
      call,
      channel,
      address,
      accepted: false,
      replaced: false,
      ending: undefined,
      status: undefined,
      ended: new Promise(resolve => (resolveEnded = resolve)),
    };
    this.stream = stream;
    call.on('data', (s: RegistrationStatus__Output) => this.onAnswer(stream, s));
    // The 'status' event carries the outcome; without an 'error' listener grpc-js would throw.
    call.on('error', () => undefined);
    call.on('status', (s: grpc.StatusObject) => {
      stream.status = s;
      if (this.stream === stream) this.stream = undefined;
      if (stream.accepted) this.setRegistered(false);
      call.end();
      resolveEnded(s);
    });
    return stream;
  }

  private onAnswer(stream: Stream, s: RegistrationStatus__Output): void {
    this.lastMessage = s.message;
    if (!s.accepted) {
      // Pilot ends the stream right after; the outcome is handled then (delayAfter).
      if (stream.ending !== 'close') stream.replaced = true;
      return;
    }
    if (stream.accepted) {
      this.log.debug({ message: s.message }, 'Pilot applied the report');
      return;
    }
    stream.accepted = true;
    this.backoff.reset();
    this.failedAttempts = 0;
    this.waitingForIdentityLogged = false;
    this.setRegistered(true);
    this.log.info(
      { workload: s.workload, address: stream.address, message: s.message },
      'Registered the workload with pilot',
    );
  }

  /** How long to wait before the next attempt, logging why. */
  private delayAfter(outcome: Outcome): number {
    const node = this.opts.registration.node;
    switch (outcome.kind) {
      case 'aborted':
        return 0;
      case 'no-identity':
        if (!this.waitingForIdentityLogged) {
          this.waitingForIdentityLogged = true;
          this.log.info({ node }, 'Waiting for the workload certificate before registering');
        }
        return this.backoff.next();
      case 'failed': {
        this.lastMessage = getErrorMessage(outcome.err);
        this.noteFailure({ err: outcome.err }, 'Cannot start the registration stream; retrying');
        return this.backoff.next();
      }
      case 'ended': {
        const { stream, status } = outcome;
        const details = status.details;
        if (stream.ending === 'identity') {
          this.log.info({ node }, 'Reconnecting to pilot with the new certificate');
          return 0;
        }
        if (stream.replaced) {
          this.log.error(
            { node, message: this.lastMessage, retryInMs: this.refusedRetryMs },
            'Another registration stream of this node replaced this one: is a second agent running with this node certificate? Retrying later',
          );
          return this.refusedRetryMs;
        }
        if (REFUSED_CODES.has(status.code)) {
          this.lastMessage = details;
          this.log.error(
            {
              node,
              code: grpc.status[status.code],
              details,
              configKeys: configKeysIn(details),
              retryInMs: this.refusedRetryMs,
            },
            'Pilot refused the registration: fix the named setting (or the certificate) and restart the agent',
          );
          return this.refusedRetryMs;
        }
        const fields = { node, code: grpc.status[status.code], details };
        if (stream.accepted) {
          this.lastMessage = `stream ended: ${grpc.status[status.code]} ${details}`;
          this.log.warn(
            fields,
            'Lost the registration stream to pilot; reconnecting (pilot keeps the workload for its grace period)',
          );
          this.backoff.reset();
          this.failedAttempts = 0;
        } else {
          this.lastMessage = `${grpc.status[status.code]} ${details}`;
          this.noteFailure(fields, 'Cannot register with pilot; retrying');
        }
        return this.backoff.next();
      }
    }
  }

  /** Logs a failed attempt: a warning on the first and every WARN_EVERY_ATTEMPTS-th, debug otherwise. */
  private noteFailure(fields: Record<string, unknown>, msg: string): void {
    this.failedAttempts++;
    const attempt = this.failedAttempts;
    if (attempt === 1 || attempt % WARN_EVERY_ATTEMPTS === 0)
      this.log.warn({ ...fields, attempt, pilot: this.opts.pilotAddress }, msg);
    else this.log.debug({ ...fields, attempt, pilot: this.opts.pilotAddress }, msg);
  }

  /** Sleeps `ms` on the clock; identityChanged() cuts it short, close() ends it (rejecting). */
  private async pause(ms: number, signal: AbortSignal): Promise<void> {
    if (ms <= 0) return;
    const wake = new AbortController();
    this.wake = wake;
    try {
      await this.clock.sleep(ms, AbortSignal.any([signal, wake.signal]));
    } catch (err) {
      if (signal.aborted || !wake.signal.aborted) throw err;
    } finally {
      if (this.wake === wake) this.wake = undefined;
    }
  }
}
