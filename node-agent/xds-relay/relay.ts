/**
 * The node agent's local xDS endpoint for proxyless gRPC applications (DESIGN 3.2, last row).
 *
 * gRPC's own xDS client speaks only plaintext (or Google credentials) to its xDS server, while pilot
 * serves ADS only over mTLS. The relay bridges the two: a gRPC server on a unix socket
 * (`/run/sail/xds.sock`) that local applications reach with `channel_creds: insecure`, and for
 * every stream it accepts, one stream to pilot over mTLS with this host's workload certificate.
 * Messages are relayed as opaque bytes (identity serializers): the relay never decodes xDS, so it
 * works for State of the World and Delta alike, for every type URL, and costs one copy per message.
 *
 * Pilot sees the host's certificate, so a proxyless application gets the configuration view of
 * this host's workload (its namespace), exactly what the proxy would get.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { parseHostPort } from '../../common/config';
import { ClosedError, getErrorMessage, NotReadyError } from '../../common/errors';
import { clientCredentials, toStatus } from '../../common/grpc';
import type { Lifecycle } from '../../common/lifecycle';
import { CloseOnce } from '../../common/lifecycle';
import { LogField, type Logger } from '../../common/logging';
import { prom } from '../../common/metrics';

/** The gRPC service both relayed methods belong to. */
export const ADS_SERVICE = 'envoy.service.discovery.v3.AggregatedDiscoveryService';

/** The two ADS methods: State of the World and Delta (incremental) xDS. */
export const ADS_METHODS = ['StreamAggregatedResources', 'DeltaAggregatedResources'] as const;
export type AdsMethod = (typeof ADS_METHODS)[number];

/** The error code the relay answers with while the host has no workload certificate. */
export const XDS_RELAY_NO_IDENTITY = 'AGENT_XDS_RELAY_NO_IDENTITY';

/** Default bound on close(): streams are ended at once, the server gets this long to let go. */
export const DEFAULT_RELAY_SHUTDOWN_GRACE_MS = 2_000;

/** The host's workload identity, PEM, as the agent's cert store holds it. */
export interface RelayIdentity {
  readonly certChainPem: string;
  readonly keyPem: string;
  readonly rootsPem: string;
}

/** Options of {@link XdsRelay}. */
export interface XdsRelayOptions {
  readonly logger: Logger;
  readonly registry: prom.Registry;
  /**
   * The unix socket to serve on, e.g. `/run/sail/xds.sock`. Its directory is created (0755) if
   * missing; a stale socket left by a crashed agent is replaced; the socket is made 0666 so local
   * applications of any user can connect (see docs/proxyless.md, "Security").
   */
  readonly socketPath: string;
  /** Pilot's `HOST:PORT` (mTLS, normally :15010). */
  readonly pilotAddress: string;
  /** The SPIFFE ID pilot's serving certificate must carry (checked instead of a host name). */
  readonly pilotSpiffeId: string;
  /**
   * The host's current identity, read when a stream opens; undefined while the agent has none
   * (the stream is then refused with UNAVAILABLE). After a rotation call identityChanged().
   */
  readonly identity: () => RelayIdentity | undefined;
  /**
   * Reconnection delays of the channel to pilot (grpc-js's subchannel backoff). Default 1 s up to
   * 10 s: after a pilot restart the next application stream should find pilot within seconds, not
   * grpc-js's default of up to two minutes.
   */
  readonly reconnectBackoff?: { readonly initialMs: number; readonly maxMs: number };
  /** Bound on close() waiting for the server to release the socket, ms. Default 2 s. */
  readonly shutdownGraceMs?: number;
}

/** Channel options for the streams to pilot (as the proxy's ADS client: proxy/xds/ads-stream.ts). */
const UPSTREAM_CHANNEL_OPTIONS: grpc.ChannelOptions = {
  // Streams stay open for days: keepalives find a dead pilot (or NAT mapping) in ~40 s.
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  // Pilot sends up to 64 MiB; grpc-js receives 4 MiB by default.
  'grpc.max_receive_message_length': 64 * 1024 * 1024,
  // A channel per certificate: never share a subchannel that still holds the previous one.
  'grpc.use_local_subchannel_pool': 1,
};

/**
 * Pilot is usually addressed by IP, and RFC 6066 forbids an IP as TLS server name (Node warns,
 * DEP0123). The name proves nothing here (pilot's SPIFFE ID does), so a fixed one is sent.
 */
const IP_TARGET_SERVER_NAME = 'sail-pilot';

const passthrough = (b: Buffer): Buffer => b;

function rawAdsMethod(method: AdsMethod): grpc.MethodDefinition<Buffer, Buffer> {
  return {
    path: `/${ADS_SERVICE}/${method}`,
    requestStream: true,
    responseStream: true,
    requestSerialize: passthrough,
    requestDeserialize: passthrough,
    responseSerialize: passthrough,
    responseDeserialize: passthrough,
  };
}

/** The ADS service with identity (de)serializers: every message is relayed as bytes. */
const RAW_ADS_SERVICE: grpc.ServiceDefinition = {
  StreamAggregatedResources: rawAdsMethod('StreamAggregatedResources'),
  DeltaAggregatedResources: rawAdsMethod('DeltaAggregatedResources'),
};

type Downstream = grpc.ServerDuplexStream<Buffer, Buffer>;
type Upstream = grpc.ClientDuplexStream<Buffer, Buffer>;

/** One channel to pilot, made with one identity; closed when stale and no stream uses it. */
interface PilotChannel {
  readonly client: grpc.Client;
  streams: number;
  /** A newer identity exists: no new streams on this channel. */
  stale: boolean;
}

/** A relayed stream pair; `finish` ends both sides once. */
interface RelayedStream {
  readonly method: AdsMethod;
  readonly downstream: Downstream;
  readonly upstream: Upstream;
  finish(status: grpc.StatusObject | undefined): void;
}

class RelayMetrics {
  readonly streams: prom.Gauge;
  readonly messages: prom.Counter<'direction'>;
  constructor(registry: prom.Registry) {
    this.streams = new prom.Gauge({
      name: 'sail_agent_xds_relay_streams',
      help: 'ADS streams of proxyless gRPC applications currently relayed to pilot',
      registers: [registry],
    });
    this.messages = new prom.Counter({
      name: 'sail_agent_xds_relay_messages_total',
      help: 'xDS messages relayed: direction "to_pilot" (requests) or "from_pilot" (responses)',
      labelNames: ['direction'],
      registers: [registry],
    });
    // Both series exist from the start, so a dashboard shows 0 rather than no data.
    this.messages.inc({ direction: 'to_pilot' }, 0);
    this.messages.inc({ direction: 'from_pilot' }, 0);
  }
}

/**
 * Serves ADS on a unix socket and relays every stream, byte for byte, to pilot over mTLS with the
 * host's certificate: one upstream stream per downstream stream, half-close, cancellation and
 * status propagated both ways, flow control end to end. Streams opened after identityChanged()
 * use a channel with the new certificate; open streams keep theirs until they end.
 */
export class XdsRelay implements Lifecycle {
  private readonly log: Logger;
  private readonly metrics: RelayMetrics;
  private readonly closer = new CloseOnce();
  private readonly streams = new Set<RelayedStream>();
  private readonly channels = new Set<PilotChannel>();
  private current: PilotChannel | undefined;
  private server: grpc.Server | undefined;
  private started = false;
  /** Whether the last upstream stream failed: warn once per outage, not once per retry. */
  private pilotFailing = false;

  constructor(private readonly opts: XdsRelayOptions) {
    this.log = opts.logger.child({ subsystem: 'xds-relay' });
    this.metrics = new RelayMetrics(opts.registry);
  }

  /** Streams currently relayed. */
  get activeStreams(): number {
    return this.streams.size;
  }

  /** The socket path served (the option, for status pages). */
  get socketPath(): string {
    return this.opts.socketPath;
  }

  /**
   * Creates the socket's directory, replaces a stale socket, binds and makes the socket 0666.
   * @throws Error when the path is held by a live server or by something that is not a socket
   */
  async start(): Promise<void> {
    if (this.closer.closed) throw new ClosedError('xDS relay');
    if (this.started) return;
    this.started = true;
    const socketPath = this.opts.socketPath;
    await fs.promises.mkdir(path.dirname(socketPath), { recursive: true, mode: 0o755 });
    await removeStaleSocket(socketPath);
    const server = new grpc.Server();
    server.addService(RAW_ADS_SERVICE, {
      StreamAggregatedResources: (call: Downstream) =>
        this.relay('StreamAggregatedResources', call),
      DeltaAggregatedResources: (call: Downstream) => this.relay('DeltaAggregatedResources', call),
    });
    await new Promise<void>((resolve, reject) => {
      server.bindAsync(`unix://${socketPath}`, grpc.ServerCredentials.createInsecure(), err =>
        err
          ? reject(new Error(`failed to listen on unix socket ${socketPath}`, { cause: err }))
          : resolve(),
      );
    });
    this.server = server;
    // Local applications run as any user; the socket gives what the proxy admin port gives: this
    // host's view of the mesh configuration (docs/proxyless.md, "Security").
    await fs.promises.chmod(socketPath, 0o666);
    this.log.info({ [LogField.path]: socketPath }, 'Serving xDS to proxyless gRPC applications');
  }

  /**
   * The host has a new certificate: streams opened from now on use a new channel with it; open
   * streams continue on the old channel, which is closed when the last of them ends.
   */
  identityChanged(): void {
    const old = this.current;
    this.current = undefined;
    if (!old) return;
    old.stale = true;
    if (old.streams === 0) this.closeChannel(old);
  }

  /**
   * Ends every relayed stream (UNAVAILABLE to the application, so its xDS client retries against
   * the next agent), stops serving and removes the socket. Idempotent; bounded by shutdownGraceMs.
   */
  close(): Promise<void> {
    return this.closer.run(async () => {
      for (const s of [...this.streams])
        s.finish({
          code: grpc.status.UNAVAILABLE,
          details: 'the node agent is shutting down',
          metadata: new grpc.Metadata(),
        });
      const server = this.server;
      this.server = undefined;
      if (server) {
        const grace = this.opts.shutdownGraceMs ?? DEFAULT_RELAY_SHUTDOWN_GRACE_MS;
        await new Promise<void>(resolve => {
          const timer = setTimeout(() => {
            server.forceShutdown();
            resolve();
          }, grace);
          server.tryShutdown(() => {
            clearTimeout(timer);
            resolve();
          });
        });
        await fs.promises.rm(this.opts.socketPath, { force: true });
      }
      for (const ch of [...this.channels]) this.closeChannel(ch);
      this.current = undefined;
      this.log.info({ [LogField.path]: this.opts.socketPath }, 'Stopped the xDS relay');
    });
  }

  /** A channel with the current identity, or undefined when the host has none. */
  private channel(): PilotChannel | undefined {
    const identity = this.opts.identity();
    if (!identity) return undefined;
    if (this.current) return this.current;
    const host = parseHostPort(this.opts.pilotAddress)?.host;
    const backoff = this.opts.reconnectBackoff ?? { initialMs: 1_000, maxMs: 10_000 };
    const client = new grpc.Client(
      this.opts.pilotAddress,
      clientCredentials(identity.rootsPem, this.opts.pilotSpiffeId, identity),
      {
        ...UPSTREAM_CHANNEL_OPTIONS,
        'grpc.initial_reconnect_backoff_ms': backoff.initialMs,
        'grpc.max_reconnect_backoff_ms': backoff.maxMs,
        ...(host !== undefined && net.isIP(host) !== 0
          ? { 'grpc.ssl_target_name_override': IP_TARGET_SERVER_NAME }
          : {}),
      },
    );
    const ch: PilotChannel = { client, streams: 0, stale: false };
    this.channels.add(ch);
    this.current = ch;
    return ch;
  }

  private closeChannel(ch: PilotChannel): void {
    if (!this.channels.delete(ch)) return;
    ch.client.close();
  }

  private release(ch: PilotChannel): void {
    ch.streams--;
    if (ch.stale && ch.streams === 0) this.closeChannel(ch);
  }

  /** Relays one application stream to a new stream to pilot. */
  private relay(method: AdsMethod, downstream: Downstream): void {
    const log = this.log.child({ [LogField.method]: method });
    const ch = this.closer.closed ? undefined : this.channel();
    if (!ch) {
      const err = this.closer.closed
        ? new NotReadyError('the node agent is shutting down')
        : new NotReadyError(
            'the node agent has no workload certificate yet, so it cannot reach pilot; retry later',
            { code: XDS_RELAY_NO_IDENTITY },
          );
      const status = toStatus(err, log, method);
      downstream.on('error', () => undefined); // the status below is the outcome
      downstream.emit('error', status);
      return;
    }
    ch.streams++;
    // No deadline (ADS streams live as long as the application) and no metadata: the xDS client
    // sends none pilot uses, and pilot authenticates the certificate, not the caller.
    const upstream = ch.client.makeBidiStreamRequest(
      `/${ADS_SERVICE}/${method}`,
      passthrough,
      passthrough,
      new grpc.Metadata(),
    );
    let done = false;
    let receivedFromPilot = false;
    const stream: RelayedStream = {
      method,
      downstream,
      upstream,
      finish: status => {
        if (done) return;
        done = true;
        this.streams.delete(stream);
        this.metrics.streams.dec();
        this.release(ch);
        if (status === undefined) {
          // The application went away: cancelling tells pilot at once.
          upstream.cancel();
          log.debug('Application ended its xDS stream');
          return;
        }
        if (status.code === grpc.status.OK) downstream.end();
        else {
          upstream.cancel(); // no-op when pilot ended the stream; ends it when the relay closes
          downstream.emit('error', {
            code: status.code,
            details: status.details,
            metadata: new grpc.Metadata(),
          });
        }
        this.noteUpstreamEnd(status, receivedFromPilot, log);
      },
    };
    this.streams.add(stream);
    this.metrics.streams.inc();
    log.debug('Relaying an xDS stream to pilot');

    // Application → pilot.
    downstream.on('data', (msg: Buffer) => {
      if (done) return;
      this.metrics.messages.inc({ direction: 'to_pilot' });
      if (!upstream.write(msg)) {
        downstream.pause();
        upstream.once('drain', () => downstream.resume());
      }
    });
    downstream.on('end', () => {
      if (!done) upstream.end(); // half-close: the application sent its last request
    });
    downstream.on('cancelled', () => stream.finish(undefined));
    downstream.on('error', (err: unknown) => {
      if (done) return; // the status the relay itself sent (see finish)
      log.debug({ err }, 'Application xDS stream failed');
      stream.finish(undefined);
    });

    // Pilot → application.
    upstream.on('data', (msg: Buffer) => {
      if (done) return;
      if (!receivedFromPilot) {
        receivedFromPilot = true;
        if (this.pilotFailing) {
          this.pilotFailing = false;
          log.info({ address: this.opts.pilotAddress }, 'Relaying xDS from pilot again');
        }
      }
      this.metrics.messages.inc({ direction: 'from_pilot' });
      if (!downstream.write(msg)) {
        upstream.pause();
        downstream.once('drain', () => upstream.resume());
      }
    });
    upstream.on('error', () => undefined); // the 'status' event carries the outcome
    upstream.on('status', (status: grpc.StatusObject) => {
      // grpc-js emits 'status' right after pushing the end of the stream; messages still
      // buffered (the application was slow) are delivered before the stream is ended.
      if (upstream.readableEnded) stream.finish(status);
      else upstream.once('end', () => stream.finish(status));
    });
  }

  private noteUpstreamEnd(status: grpc.StatusObject, received: boolean, log: Logger): void {
    if (status.code === grpc.status.OK) return;
    if (!this.pilotFailing && !this.closer.closed) {
      this.pilotFailing = true;
      log.warn(
        {
          address: this.opts.pilotAddress,
          [LogField.code]: grpc.status[status.code],
          [LogField.reason]: status.details,
          received,
        },
        'Pilot ended a relayed xDS stream',
      );
    } else {
      log.debug(
        { [LogField.code]: grpc.status[status.code], [LogField.reason]: status.details },
        'Pilot ended a relayed xDS stream',
      );
    }
  }
}

/**
 * Removes a socket file left behind by a crashed agent. A socket a live server still answers on
 * is not touched (two agents on one host would otherwise steal each other's applications).
 * @throws Error when the path is held by a live server or is not a socket
 */
async function removeStaleSocket(socketPath: string): Promise<void> {
  let stat: fs.Stats;
  try {
    stat = await fs.promises.lstat(socketPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new Error(`failed to inspect ${socketPath}`, { cause: err });
  }
  if (!stat.isSocket())
    throw new Error(`${socketPath} exists and is not a socket; remove it or choose another path`);
  const live = await new Promise<boolean>(resolve => {
    const probe = net.connect(socketPath);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live) throw new Error(`another process is serving on ${socketPath}`);
  try {
    await fs.promises.unlink(socketPath);
  } catch (err) {
    throw new Error(`failed to remove the stale socket ${socketPath}: ${getErrorMessage(err)}`, {
      cause: err,
    });
  }
}
