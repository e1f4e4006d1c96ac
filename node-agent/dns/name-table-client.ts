/**
 * The node agent's subscription to pilot's name table (sail.pilot.v1.NameTable): one ADS State of
 * the World stream over mTLS with the host's certificate, asking only for the name table, ACKing
 * what it applies and NACKing what it cannot. The last good table is kept in a state file and
 * loaded at start, so mesh names resolve while pilot is down (peers.md §5.4).
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { NAME_TABLE_TYPE_URL, nameTableType } from '../../api';
import { discoveryType } from '../../api/envoy';
import { Backoff } from '../../common/backoff';
import { type Clock, systemClock } from '../../common/clock';
import { parseHostPort } from '../../common/config';
import { writeFileAtomic } from '../../common/fs';
import { clientCredentials } from '../../common/grpc';
import { CloseOnce, type Lifecycle } from '../../common/lifecycle';
import type { Logger } from '../../common/logging';
import { prom } from '../../common/metrics';
import type { NameTableEntry } from './names';

const ADS_SERVICE = 'envoy.service.discovery.v3.AggregatedDiscoveryService';
/** gRPC INVALID_ARGUMENT, the code a NACK carries. */
const INVALID_ARGUMENT = 3;
/** The state file's format version. */
const STATE_FORMAT = 1;

/** The host's identity, as the other agent clients take it. */
export interface NameTableIdentity {
  readonly certChainPem: string;
  readonly keyPem: string;
  readonly rootsPem: string;
}

/** Options of {@link NameTableClient}. */
export interface NameTableClientOptions {
  readonly logger: Logger;
  readonly clock?: Clock;
  readonly registry: prom.Registry;
  /** Pilot's mTLS address, HOST:PORT. */
  readonly pilotAddress: string;
  /** The SPIFFE ID pilot's certificate must carry (controlPlaneSpiffeId(trustDomain)). */
  readonly pilotSpiffeId: string;
  /** The node id sent with the first request (the proxy's, so `sail proxy-config` lists both). */
  readonly nodeId: string;
  /** The current identity; undefined until the agent has one (the client waits and retries). */
  readonly identity: () => NameTableIdentity | undefined;
  /** Where the last good table is kept (written 0600, atomically). */
  readonly stateFile: string;
  /** Called with each new table: from the state file at start, then from pilot. */
  readonly onTable: (table: ReadonlyMap<string, NameTableEntry>) => void;
  /** Reconnect delays. Default 1 s doubling to 30 s. */
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
}

/** What `sail status` shows of the name table. */
export interface NameTableStatus {
  readonly connected: boolean;
  /** Where the table in use came from. */
  readonly source: 'none' | 'state-file' | 'pilot';
  /** Pilot's version_info of the table in use (also for one loaded from the state file). */
  readonly version?: string;
  readonly names: number;
  /** When the table in use was received (ISO 8601). */
  readonly updatedAt?: string;
  /** The last table rejected (NACK), if the newest one was rejected. */
  readonly lastError?: string;
}

interface DiscoveryResponse {
  versionInfo: string;
  typeUrl: string;
  nonce: string;
  resources: { type_url: string; value: Uint8Array }[];
}

interface StateFile {
  readonly format: number;
  readonly version: string;
  readonly savedAt: string;
  readonly table: Record<string, { ips: string[]; shortname?: string; namespace?: string }>;
}

type AdsCall = grpc.ClientDuplexStream<object, DiscoveryResponse>;
type AdsClient = grpc.Client & { StreamAggregatedResources(): AdsCall };
type AdsClientConstructor = new (
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ChannelOptions,
) => AdsClient;

let ctor: AdsClientConstructor | undefined;

/** A generic ADS client with protobufjs (de)serializers from the Envoy protos. */
function adsClientConstructor(): AdsClientConstructor {
  const req = discoveryType('envoy.service.discovery.v3.DiscoveryRequest');
  const res = discoveryType('envoy.service.discovery.v3.DiscoveryResponse');
  return grpc.makeGenericClientConstructor(
    {
      StreamAggregatedResources: {
        path: `/${ADS_SERVICE}/StreamAggregatedResources`,
        requestStream: true,
        responseStream: true,
        requestSerialize: (m: object) => Buffer.from(req.encode(req.fromObject(m)).finish()),
        requestDeserialize: (b: Buffer) => req.toObject(req.decode(b)),
        responseSerialize: (m: object) => Buffer.from(res.encode(res.fromObject(m)).finish()),
        // google.protobuf.Any keeps its proto field names in protobufjs (type_url).
        responseDeserialize: (b: Buffer) =>
          res.toObject(res.decode(b), { arrays: true, defaults: true, longs: String }),
      },
    },
    ADS_SERVICE,
  ) as unknown as AdsClientConstructor;
}

/** Channel options: as the proxy's ADS stream (keepalives find a dead pilot in ~40 s). */
function channelOptions(address: string): grpc.ChannelOptions {
  const host = parseHostPort(address)?.host;
  return {
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.max_receive_message_length': 64 * 1024 * 1024,
    'grpc.use_local_subchannel_pool': 1,
    // RFC 6066 forbids an IP as the TLS server name; pilot is checked by SPIFFE ID anyway.
    ...(host !== undefined && net.isIP(host) !== 0
      ? { 'grpc.ssl_target_name_override': 'sail-pilot' }
      : {}),
  };
}

const HOSTNAME = /^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$/;

/**
 * Checks and converts a decoded table; throws with the first fault (which becomes the NACK's
 * message). Hostnames are lower case without a trailing dot; every IP must parse.
 */
export function toNameTable(
  table: Readonly<Record<string, { ips?: string[]; shortname?: string; namespace?: string }>>,
): Map<string, NameTableEntry> {
  const out = new Map<string, NameTableEntry>();
  for (const [host, info] of Object.entries(table)) {
    if (host.length > 253 || !HOSTNAME.test(host))
      throw new Error(`table: ${JSON.stringify(host)} is not a lower-case hostname`);
    const ips = info.ips ?? [];
    const bad = ips.find(ip => net.isIP(ip) === 0);
    if (bad !== undefined)
      throw new Error(`table[${JSON.stringify(host)}].ips: ${JSON.stringify(bad)} is not an IP`);
    out.set(host, {
      ips: [...ips],
      ...(info.shortname ? { shortname: info.shortname } : {}),
      ...(info.namespace ? { namespace: info.namespace } : {}),
    });
  }
  return out;
}

function tableJson(table: ReadonlyMap<string, NameTableEntry>): StateFile['table'] {
  const out: StateFile['table'] = {};
  for (const host of [...table.keys()].sort()) {
    const e = table.get(host)!;
    out[host] = {
      ips: [...e.ips],
      ...(e.shortname ? { shortname: e.shortname } : {}),
      ...(e.namespace ? { namespace: e.namespace } : {}),
    };
  }
  return out;
}

/** The name table subscription; see the file comment. */
export class NameTableClient implements Lifecycle {
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly backoff: Backoff;
  private readonly abort = new AbortController();
  private readonly closeOnce = new CloseOnce();
  private loop: Promise<void> | undefined;
  private call: AdsCall | undefined;
  private connected = false;
  private source: NameTableStatus['source'] = 'none';
  private version: string | undefined;
  private names = 0;
  private updatedAt: string | undefined;
  private lastError: string | undefined;
  private savedJson: string | undefined;
  private readonly metrics: {
    readonly updates: prom.Counter<'result'>;
    readonly connectedGauge: prom.Gauge;
  };

  constructor(private readonly opts: NameTableClientOptions) {
    this.log = opts.logger.child({ subsystem: 'dns-table' });
    this.clock = opts.clock ?? systemClock;
    this.backoff = new Backoff({
      initialMs: opts.backoff?.initialMs ?? 1000,
      maxMs: opts.backoff?.maxMs ?? 30_000,
    });
    this.metrics = {
      updates: new prom.Counter({
        name: 'sail_agent_dns_table_updates_total',
        help: 'Name tables received from pilot, by result: applied (ACK) or rejected (NACK)',
        labelNames: ['result'],
        registers: [opts.registry],
      }),
      connectedGauge: new prom.Gauge({
        name: 'sail_agent_dns_pilot_connected',
        help: '1 while the name table stream to pilot is up',
        registers: [opts.registry],
      }),
    };
  }

  /**
   * Loads the state file (its table goes to onTable at once), then connects in the background:
   * resolves without waiting for pilot.
   */
  async start(): Promise<void> {
    await this.loadState();
    this.loop = this.run(this.abort.signal);
  }

  /** Ends the stream and the reconnect loop. */
  close(): Promise<void> {
    return this.closeOnce.run(async () => {
      this.abort.abort();
      this.call?.cancel();
      await this.loop;
      await this.saving;
    });
  }

  /** The identity changed (rotation): reconnect now with the new certificate. */
  identityChanged(): void {
    this.call?.cancel();
  }

  status(): NameTableStatus {
    return {
      connected: this.connected,
      source: this.source,
      names: this.names,
      ...(this.version !== undefined ? { version: this.version } : {}),
      ...(this.updatedAt !== undefined ? { updatedAt: this.updatedAt } : {}),
      ...(this.lastError !== undefined ? { lastError: this.lastError } : {}),
    };
  }

  private async loadState(): Promise<void> {
    let text: string;
    try {
      text = await fs.promises.readFile(this.opts.stateFile, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        this.log.warn({ err, path: this.opts.stateFile }, 'Cannot read the DNS name table state');
      return;
    }
    try {
      const state = JSON.parse(text) as StateFile;
      if (state.format !== STATE_FORMAT || typeof state.table !== 'object' || !state.table)
        throw new Error(`format: want ${STATE_FORMAT}`);
      const table = toNameTable(state.table);
      this.savedJson = JSON.stringify(tableJson(table));
      this.apply(table, String(state.version), 'state-file', state.savedAt);
      this.log.info(
        { path: this.opts.stateFile, version: state.version, names: table.size },
        'Loaded the last known DNS name table',
      );
    } catch (err) {
      this.log.warn(
        { path: this.opts.stateFile, reason: (err as Error).message },
        'Ignoring an unreadable DNS name table state file',
      );
    }
  }

  private apply(
    table: ReadonlyMap<string, NameTableEntry>,
    version: string,
    source: NameTableStatus['source'],
    at: string | undefined,
  ): void {
    this.opts.onTable(table);
    this.source = source;
    this.version = version;
    this.names = table.size;
    this.updatedAt = at ?? new Date(this.clock.now()).toISOString();
  }

  private async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const identity = this.opts.identity();
      if (identity) {
        const received = await this.stream(identity, signal);
        if (received) this.backoff.reset();
      }
      if (signal.aborted) break;
      const delayMs = this.backoff.next();
      this.log.debug({ delayMs, hasIdentity: identity !== undefined }, 'Name table stream retry');
      try {
        await this.clock.sleep(delayMs, signal);
      } catch {
        break;
      }
    }
  }

  /** One stream, until it ends. True when pilot answered at least once. */
  private stream(identity: NameTableIdentity, signal: AbortSignal): Promise<boolean> {
    ctor ??= adsClientConstructor();
    const client = new ctor(
      this.opts.pilotAddress,
      clientCredentials(identity.rootsPem, this.opts.pilotSpiffeId, identity),
      channelOptions(this.opts.pilotAddress),
    );
    const call = client.StreamAggregatedResources();
    this.call = call;
    let received = false;
    let ackedVersion = '';
    return new Promise<boolean>(resolve => {
      const onAbort = () => call.cancel();
      signal.addEventListener('abort', onAbort, { once: true });
      const done = (reason: string) => {
        if (this.call !== call) return;
        this.call = undefined;
        signal.removeEventListener('abort', onAbort);
        if (this.connected)
          this.log.info({ reason }, 'Name table stream to pilot ended; keeping the last table');
        else this.log.debug({ reason }, 'Name table stream to pilot failed');
        this.connected = false;
        this.metrics.connectedGauge.set(0);
        client.close();
        resolve(received);
      };
      call.on('data', (res: DiscoveryResponse) => {
        if (res.typeUrl !== NAME_TABLE_TYPE_URL) return;
        if (!received) {
          received = true;
          this.connected = true;
          this.metrics.connectedGauge.set(1);
          this.log.info({ address: this.opts.pilotAddress }, 'Name table stream to pilot is up');
        }
        const error = this.onResponse(res);
        if (error === undefined) ackedVersion = res.versionInfo;
        call.write({
          typeUrl: NAME_TABLE_TYPE_URL,
          versionInfo: ackedVersion,
          responseNonce: res.nonce,
          ...(error !== undefined
            ? { errorDetail: { code: INVALID_ARGUMENT, message: error } }
            : {}),
        });
      });
      call.on('error', (err: grpc.ServiceError) => done(err.details || err.message));
      call.on('end', () => done('ended by pilot'));
      call.write({
        node: { id: this.opts.nodeId, userAgentName: 'sail-node-agent' },
        typeUrl: NAME_TABLE_TYPE_URL,
      });
    });
  }

  /** Applies one response; returns the NACK message when it cannot. */
  private onResponse(res: DiscoveryResponse): string | undefined {
    let table: Map<string, NameTableEntry>;
    try {
      if (res.resources.length > 1)
        throw new Error(`resources: want one name table, got ${res.resources.length}`);
      const any = res.resources[0];
      if (any && any.type_url !== NAME_TABLE_TYPE_URL)
        throw new Error(
          `resources[0].type_url: ${JSON.stringify(any.type_url)} is not a name table`,
        );
      const type = nameTableType();
      const decoded = any
        ? (type.toObject(type.decode(any.value), { arrays: true, objects: true }) as {
            table: Record<string, { ips?: string[]; shortname?: string; namespace?: string }>;
          })
        : { table: {} };
      table = toNameTable(decoded.table);
    } catch (err) {
      const message = (err as Error).message;
      this.lastError = message;
      this.metrics.updates.inc({ result: 'rejected' });
      this.log.warn(
        { version: res.versionInfo, reason: message },
        'Rejected a DNS name table from pilot (NACK); keeping the previous one',
      );
      return message;
    }
    this.lastError = undefined;
    this.metrics.updates.inc({ result: 'applied' });
    this.apply(table, res.versionInfo, 'pilot', undefined);
    this.log.debug({ version: res.versionInfo, names: table.size }, 'DNS name table applied');
    this.save(table, res.versionInfo);
    return undefined;
  }

  /** Writes the table to the state file when its contents changed (not on every version). */
  private save(table: ReadonlyMap<string, NameTableEntry>, version: string): void {
    const json = tableJson(table);
    const key = JSON.stringify(json);
    if (key === this.savedJson) return;
    this.savedJson = key;
    const state: StateFile = {
      format: STATE_FORMAT,
      version,
      savedAt: new Date(this.clock.now()).toISOString(),
      table: json,
    };
    const file = this.opts.stateFile;
    // Serialized through one promise chain so an older table never overwrites a newer one.
    this.saving = this.saving
      .then(async () => {
        await fs.promises.mkdir(path.dirname(file), { recursive: true, mode: 0o755 });
        await writeFileAtomic(file, `${JSON.stringify(state, null, 2)}\n`, 0o600);
      })
      .catch((err: unknown) => {
        this.savedJson = undefined;
        this.log.warn({ err, path: file }, 'Cannot save the DNS name table state');
      });
  }

  private saving: Promise<void> = Promise.resolve();

  /** Resolves when the state file holds the newest table (tests). */
  async flushed(): Promise<void> {
    await this.saving;
  }
}
