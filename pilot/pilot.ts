/**
 * Pilot: the mesh's configuration store, its service registry and the xDS server, wired
 * together. Configuration and registry changes are debounced into pushes (100 ms quiet, 1 s max
 * by default); each push builds one PushContext shared by every client.
 *
 * Listeners: `listen` (default :15010) is gRPC over mTLS and carries ADS and host registration;
 * `plaintextListen` (off by default) carries ADS only, for gRPC's proxyless clients, which cannot
 * present a certificate to their xDS server.
 *
 * With the file store, registered workloads survive a clean restart: pilot writes them to
 * DATA_DIR/registry/workloads.json when it stops and takes them back, for a grace period, when it
 * starts (registry/workload-snapshot.ts).
 */
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadPilotProto } from '../api';
import type { AdminTlsMaterial } from '../common/admin-server';
import { AlreadyStartedError, InvalidInputError } from '../common/errors';
import { StaticCertificateProvider, serverCredentials } from '../common/grpc';
import type { Route } from '../common/http';
import type { Lifecycle } from '../common/lifecycle';
import type { Logger } from '../common/logging';
import { prom } from '../common/metrics';
import {
  type ConfigKey,
  type ConfigObject,
  KIND_INFO,
  type Kind,
  KINDS,
  lookupKind,
  type ParsedDocument,
  validateDocuments,
  validateSet,
} from './config';
import { DEFAULT_DEBOUNCE, type DebounceOptions, Debouncer } from './debounce';
import { ConfigInvalidError, ConfigNotFoundError, formatProblem, pilotNotReady } from './errors';
import { MeshRegistry } from './registry/registry';
import { createRegistrationHandlers } from './registry/registration-service';
import type { RegistryChange } from './registry/types';
import {
  saveWorkloadSnapshot,
  takeWorkloadSnapshot,
  WORKLOAD_SNAPSHOT_PATH,
} from './registry/workload-snapshot';
import { type ConfigEvent, type ConfigStore, createStore, type StoreOptions } from './store';
import { mergeRequests, XdsServer } from './xds/ads';
import { createGenerator } from './xds/generate';
import {
  type ConfigView,
  DEFAULT_MESH_CONFIG,
  type Generator,
  type MeshConfig,
  type ProxyNode,
  type PushContext,
  type PushRequest,
} from './xds/model';
import { ProxylessServerIndex } from './xds/proxyless-servers';

export interface PilotOptions {
  readonly logger: Logger;
  /** gRPC mTLS listen address for xDS and registration; port 0 picks a free one. */
  readonly listen: string;
  /** Plaintext xDS listener for proxyless gRPC clients; off when omitted. */
  readonly plaintextListen?: string;
  /** The serving certificate (SPIFFE ID of the control plane) and the mesh roots. */
  readonly tls: AdminTlsMaterial;
  readonly store: StoreOptions;
  readonly mesh?: Partial<MeshConfig>;
  readonly debounce?: DebounceOptions;
  /** How long a host whose registration stream dropped keeps its endpoints, ms. */
  readonly disconnectGraceMs?: number;
  /** Replaces the built-in generator (tests). */
  readonly generator?: Generator;
}

/** The stored config, indexed by kind and namespace, for one push. */
class IndexedConfig implements ConfigView {
  private readonly byKind = new Map<Kind, ConfigObject[]>();
  private readonly byKey = new Map<string, ConfigObject>();
  private readonly byKindNs = new Map<string, ConfigObject[]>();

  constructor(objects: readonly ConfigObject[]) {
    for (const o of objects) {
      const kindList = this.byKind.get(o.kind) ?? [];
      kindList.push(o);
      this.byKind.set(o.kind, kindList);
      const nsKey = `${o.kind}/${o.metadata.namespace}`;
      const nsList = this.byKindNs.get(nsKey) ?? [];
      nsList.push(o);
      this.byKindNs.set(nsKey, nsList);
      this.byKey.set(`${o.kind}/${o.metadata.namespace}/${o.metadata.name}`, o);
    }
  }

  list<K extends Kind>(kind: K, namespace?: string): readonly ConfigObject<K>[] {
    const list =
      namespace === undefined ? this.byKind.get(kind) : this.byKindNs.get(`${kind}/${namespace}`);
    return (list ?? []) as ConfigObject<K>[];
  }

  get<K extends Kind>(kind: K, namespace: string, name: string): ConfigObject<K> | undefined {
    return this.byKey.get(`${kind}/${namespace}/${name}`) as ConfigObject<K> | undefined;
  }
}

class PilotMetrics {
  readonly services: prom.Gauge;
  readonly virtualServices: prom.Gauge;
  readonly pushTriggers: prom.Counter<'type'>;
  readonly configChanges: prom.Counter<'kind' | 'event'>;
  constructor(registry: prom.Registry, pilot: Pilot) {
    this.services = new prom.Gauge({
      name: 'pilot_services',
      help: 'Services in the registry',
      registers: [registry],
      collect() {
        this.set(pilot.registry.services().length);
      },
    });
    this.virtualServices = new prom.Gauge({
      name: 'pilot_virt_services',
      help: 'VirtualServices in the store',
      registers: [registry],
      collect() {
        this.set(pilot.storeOrUndefined?.list({ kind: 'VirtualService' }).length ?? 0);
      },
    });
    this.pushTriggers = new prom.Counter({
      name: 'pilot_push_triggers',
      help: 'Pushes, by what triggered them (config, endpoint, service)',
      labelNames: ['type'],
      registers: [registry],
    });
    this.configChanges = new prom.Counter({
      name: 'pilot_config_changes_total',
      help: 'Stored configuration changes seen by this pilot, by kind and event',
      labelNames: ['kind', 'event'],
      registers: [registry],
    });
  }
}

export class Pilot implements Lifecycle {
  readonly metrics = new prom.Registry();
  readonly registry: MeshRegistry;
  readonly xds: XdsServer;
  readonly mesh: MeshConfig;
  private readonly log: Logger;
  private readonly store: ConfigStore;
  private readonly provider: StaticCertificateProvider;
  private readonly debouncer: Debouncer<PushRequest>;
  private readonly pilotMetrics: PilotMetrics;
  private servers: grpc.Server[] = [];
  private unwatch: (() => void) | undefined;
  private unregistry: (() => void) | undefined;
  private version = 0;
  private started = false;
  private isReady = false;
  private boundListen: string | undefined;
  private boundPlaintext: string | undefined;
  /** Where registered workloads wait across a restart (file store: in its data dir). */
  private readonly snapshotFile: string | undefined;
  private snapshotTaken = false;
  /** Ports each node serves with proxyless gRPC servers (from their xDS streams). */
  private readonly proxylessServers = new ProxylessServerIndex();

  constructor(private readonly opts: PilotOptions) {
    this.snapshotFile =
      opts.store.type === 'file'
        ? path.join(opts.store.dataDir, WORKLOAD_SNAPSHOT_PATH)
        : undefined;
    this.log = opts.logger.child({ component: 'pilot' });
    this.mesh = { ...DEFAULT_MESH_CONFIG, ...opts.mesh };
    this.store = createStore(opts.store, opts.logger);
    this.registry = new MeshRegistry({
      logger: opts.logger,
      trustDomain: this.mesh.trustDomain,
      ...(opts.disconnectGraceMs !== undefined
        ? { disconnectGraceMs: opts.disconnectGraceMs }
        : {}),
    });
    this.xds = new XdsServer({
      logger: opts.logger,
      generator: opts.generator ?? createGenerator(),
      trustDomain: this.mesh.trustDomain,
      metrics: this.metrics,
      labelsOf: (node, namespace) => {
        const w = this.registry.workloads.get(node);
        return w && w.namespace === namespace ? { ...w.labels } : undefined;
      },
      onProxylessServerPorts: (connection, node, ports) => {
        this.onProxylessServerPorts(connection, node, ports);
      },
    });
    this.provider = new StaticCertificateProvider(
      opts.tls.rootsPem,
      opts.tls.certChainPem,
      opts.tls.keyPem,
    );
    this.debouncer = new Debouncer(opts.debounce ?? DEFAULT_DEBOUNCE, mergeRequests, req =>
      this.push(req),
    );
    this.pilotMetrics = new PilotMetrics(this.metrics, this);
  }

  /** True once the store is loaded, the registry synced and the first push context built. */
  get ready(): boolean {
    return this.isReady;
  }

  /** The bound mTLS address (after start). */
  get address(): string | undefined {
    return this.boundListen;
  }

  /** The bound plaintext xDS address, when enabled. */
  get plaintextAddress(): string | undefined {
    return this.boundPlaintext;
  }

  /** @internal for metrics */
  get storeOrUndefined(): ConfigStore | undefined {
    return this.started ? this.store : undefined;
  }

  async start(): Promise<void> {
    if (this.started) throw new AlreadyStartedError('pilot');
    this.started = true;
    try {
      await this.store.start();
      await this.restoreWorkloads();
      this.registry.applyConfig(this.store.list());
      this.unwatch = this.store.watch(events => this.onConfigEvents(events));
      this.unregistry = this.registry.onChange(change => this.onRegistryChange(change));
      this.push({ full: true, kinds: new Set(KINDS), endpointHosts: new Set() });

      const secure = new grpc.Server(serverOptions);
      this.xds.addTo(secure, true);
      secure.addService(
        loadPilotProto().sail.pilot.v1.Registration.service,
        createRegistrationHandlers({
          logger: this.opts.logger,
          registry: this.registry,
          metrics: this.metrics,
        }),
      );
      this.servers.push(secure);
      this.boundListen = await bind(
        secure,
        this.opts.listen,
        serverCredentials(this.provider, false),
      );
      this.log.info({ address: this.boundListen }, 'Pilot xDS (mTLS) listening');
      if (this.opts.plaintextListen) {
        const plain = new grpc.Server(serverOptions);
        this.xds.addTo(plain, false);
        this.servers.push(plain);
        this.boundPlaintext = await bind(
          plain,
          this.opts.plaintextListen,
          grpc.ServerCredentials.createInsecure(),
        );
        this.log.warn(
          { address: this.boundPlaintext },
          'Pilot xDS plaintext listener on: clients there are not authenticated (meant for loopback and trusted networks)',
        );
      }
      this.isReady = true;
      this.log.info(
        {
          store: this.store.type,
          objects: this.store.list().length,
          services: this.registry.services().length,
        },
        'Pilot ready',
      );
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  /** New serving certificate or roots, for new connections. */
  updateTls(m: AdminTlsMaterial): void {
    this.provider.update({ caPem: m.rootsPem, certChainPem: m.certChainPem, keyPem: m.keyPem });
  }

  async close(): Promise<void> {
    this.isReady = false;
    this.debouncer.close();
    this.unwatch?.();
    this.unregistry?.();
    this.xds.closeAll();
    await Promise.all(
      this.servers.map(
        s =>
          new Promise<void>(resolve => {
            s.forceShutdown();
            resolve();
          }),
      ),
    );
    this.servers = [];
    await this.saveWorkloads();
    await this.registry.workloads.close();
    if (this.started) await this.store.close();
  }

  /**
   * Takes back the workloads registered when pilot last stopped, so that proxies reconnecting to
   * a restarted pilot keep their endpoints while the hosts register again (they stay for the grace
   * period). Before the registry derives services: restoring emits no events.
   */
  private async restoreWorkloads(): Promise<void> {
    if (!this.snapshotFile) return;
    this.snapshotTaken = true;
    try {
      this.registry.workloads.restore(await takeWorkloadSnapshot(this.snapshotFile));
    } catch (err) {
      this.log.warn(
        { err, file: this.snapshotFile },
        'Cannot restore the workloads registered before the restart; each comes back when its host registers again',
      );
    }
  }

  /** Writes the registered workloads for the next start (see restoreWorkloads). */
  private async saveWorkloads(): Promise<void> {
    if (!this.snapshotFile || !this.snapshotTaken) return;
    this.snapshotTaken = false;
    const workloads = this.registry.workloads.list();
    if (workloads.length === 0) return;
    try {
      await saveWorkloadSnapshot(this.snapshotFile, workloads);
      this.log.info(
        { workloads: workloads.length, file: this.snapshotFile },
        'Saved the registered workloads for the next start',
      );
    } catch (err) {
      this.log.warn(
        { err, file: this.snapshotFile },
        'Cannot save the registered workloads for the next start',
      );
    }
  }

  private onConfigEvents(events: readonly ConfigEvent[]): void {
    for (const e of events)
      this.pilotMetrics.configChanges.inc({ kind: e.object.kind, event: e.type });
    this.registry.onConfigEvents(events);
    this.pilotMetrics.pushTriggers.inc({ type: 'config' });
    this.debouncer.add({
      full: true,
      kinds: new Set(events.map(e => e.object.kind)),
      endpointHosts: new Set(),
    });
  }

  private onRegistryChange(change: RegistryChange): void {
    const full = change.services.length > 0;
    this.pilotMetrics.pushTriggers.inc({ type: full ? 'service' : 'endpoint' });
    this.debouncer.add({
      full,
      kinds: new Set(),
      endpointHosts: new Set([...change.services, ...change.endpoints]),
    });
  }

  /**
   * A node's proxyless gRPC servers changed the ports they serve: its endpoints' auto mTLS may
   * change with them (endpoints.ts autoMtlsEligible), so its services' endpoints are pushed.
   */
  private onProxylessServerPorts(connection: string, node: ProxyNode, ports: readonly number[]) {
    const name = node.identity.node;
    if (!this.proxylessServers.set(name, connection, ports)) return;
    this.log.info(
      {
        node: name,
        namespace: node.identity.namespace,
        ports: this.proxylessServers.portsOf(name),
      },
      'Proxyless gRPC server ports changed',
    );
    const hosts = new Set(
      this.registry
        .proxyInstances({ node: name, namespace: node.identity.namespace, ips: [] })
        .map(i => i.hostname),
    );
    if (hosts.size > 0) this.debouncer.add({ full: false, kinds: new Set(), endpointHosts: hosts });
  }

  private push(request: PushRequest): void {
    const context: PushContext = {
      version: `${++this.version}`,
      mesh: this.mesh,
      config: new IndexedConfig(this.store.list()),
      registry: this.registry,
      cache: new Map(),
      proxylessServers: this.proxylessServers.current,
    };
    this.xds.push(context, request);
  }

  /**
   * Refuses a delete that would leave stored configuration dangling, e.g. a DestinationRule whose
   * subsets a VirtualService still routes to: the same cross-document rules as apply, over what
   * would remain. `force` skips the check.
   */
  private checkDeletion(keys: readonly ConfigKey[], force: boolean): void {
    if (force || keys.length === 0) return;
    const gone = new Set(keys.map(k => `${k.kind}/${k.namespace}/${k.name}`));
    const all = this.store.list();
    const remaining = all.filter(
      o => !gone.has(`${o.kind}/${o.metadata.namespace}/${o.metadata.name}`),
    );
    const opts = { domainSuffix: this.mesh.domainSuffix };
    const before = new Set(validateSet(all, opts).map(formatProblem));
    const introduced = validateSet(remaining, opts).filter(p => !before.has(formatProblem(p)));
    if (introduced.length > 0)
      throw new ConfigInvalidError([
        {
          source: 'request',
          message: `deleting ${keys.map(k => `${k.kind} ${k.namespace}/${k.name}`).join(', ')} would leave the stored configuration invalid (delete or change the objects below first, or pass --force):`,
        },
        ...introduced,
      ]);
  }

  // ---------------------------------------------------------------------------------------------
  // Admin API (DESIGN §3.1): apply, get, delete, proxy-config.

  adminRoutes(): Route[] {
    const requireReady = () => {
      if (!this.isReady) throw pilotNotReady('pilot is starting: the store is not loaded yet');
    };
    return [
      {
        method: 'POST',
        path: '/v1/config/apply',
        admin: true,
        handler: async ctx => {
          requireReady();
          const body = await ctx.body();
          const docs = documentsOf(body.documents);
          const dryRun = body.dryRun === true;
          const objects = validateDocuments(docs, { existing: this.store.list() });
          if (dryRun)
            return { json: { items: objects.map(o => ({ ...ref(o), outcome: 'validated' })) } };
          const result = await this.store.write({ put: objects });
          result.put.forEach((o, i) => {
            const outcome = result.putOutcome[i];
            if (outcome !== 'unchanged')
              this.log.info(
                { object: `${o.kind} ${o.metadata.namespace}/${o.metadata.name}`, outcome },
                'Config applied',
              );
          });
          return {
            json: {
              items: result.put.map((o, i) => ({
                ...ref(o),
                resourceVersion: o.metadata.resourceVersion,
                outcome: result.putOutcome[i],
              })),
            },
          };
        },
      },
      {
        method: 'POST',
        path: '/v1/config/delete',
        admin: true,
        handler: async ctx => {
          requireReady();
          const body = await ctx.body();
          const keys = keysOf(body.keys);
          const ignoreNotFound = body.ignoreNotFound === true;
          const present = keys.filter(k => this.store.get(k));
          if (!ignoreNotFound && present.length < keys.length) {
            const missing = keys.find(k => !this.store.get(k))!;
            throw new ConfigNotFoundError(
              `${KIND_INFO[missing.kind].singular} ${JSON.stringify(missing.name)} not found in namespace ${missing.namespace}`,
            );
          }
          this.checkDeletion(present, body.force === true);
          const result =
            present.length > 0 ? await this.store.write({ delete: present }) : undefined;
          for (const o of result?.deleted ?? [])
            this.log.info(
              { object: `${o.kind} ${o.metadata.namespace}/${o.metadata.name}` },
              'Config deleted',
            );
          return {
            json: { items: (result?.deleted ?? []).map(o => ({ ...ref(o), outcome: 'deleted' })) },
          };
        },
      },
      {
        method: 'GET',
        path: '/v1/config',
        admin: true,
        handler: ctx => {
          requireReady();
          const kindArg = ctx.query.get('kind') ?? undefined;
          const kind = kindArg === undefined ? undefined : lookupKind(kindArg);
          if (kindArg !== undefined && !kind)
            throw new InvalidInputError(`kind: unknown kind ${JSON.stringify(kindArg)}`);
          const namespace = ctx.query.get('namespace') ?? undefined;
          const name = ctx.query.get('name') ?? undefined;
          if (name !== undefined) {
            if (!kind || !namespace) throw new InvalidInputError('name: needs kind and namespace');
            const obj = this.store.get({ kind, namespace, name });
            if (!obj)
              throw new ConfigNotFoundError(
                `${KIND_INFO[kind].singular} ${JSON.stringify(name)} not found in namespace ${namespace}`,
              );
            return { json: { items: [obj] } };
          }
          return {
            json: {
              items: this.store.list({
                ...(kind ? { kind } : {}),
                ...(namespace ? { namespace } : {}),
              }),
            },
          };
        },
      },
      {
        method: 'GET',
        path: '/v1/proxy-config',
        admin: true,
        handler: ctx => {
          const node = ctx.query.get('node') ?? undefined;
          const connections = this.xds.connectionsInfo(node);
          if (node !== undefined && connections.length === 0)
            throw new ConfigNotFoundError(
              `no xDS client of node ${JSON.stringify(node)} is connected to this pilot`,
            );
          return { json: { items: connections } };
        },
      },
      {
        method: 'GET',
        path: '/v1/workloads',
        admin: true,
        handler: ctx => {
          const namespace = ctx.query.get('namespace') ?? undefined;
          return { json: { items: this.registry.workloads.list(namespace) } };
        },
      },
      {
        method: 'GET',
        path: '/v1/services',
        admin: true,
        handler: ctx => {
          const namespace = ctx.query.get('namespace') ?? undefined;
          return {
            json: {
              items: this.registry
                .services()
                .filter(s => namespace === undefined || s.namespace === namespace)
                .map(s => ({
                  ...s,
                  endpoints: s.ports.flatMap(p => this.registry.instances(s.hostname, p.port)),
                })),
            },
          };
        },
      },
    ];
  }
}

const serverOptions: grpc.ServerOptions = {
  // A stream per proxy, kept open for days: keepalives find dead peers; no idle limit.
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.min_ping_interval_without_data_ms': 5_000,
  'grpc.max_receive_message_length': 16 * 1024 * 1024,
  'grpc.max_send_message_length': 64 * 1024 * 1024,
};

function bind(
  server: grpc.Server,
  address: string,
  creds: grpc.ServerCredentials,
): Promise<string> {
  return new Promise((resolve, reject) => {
    server.bindAsync(address, creds, (err, port) => {
      if (err) reject(new Error(`cannot listen on ${address}: ${err.message}`, { cause: err }));
      else resolve(address.replace(/:\d+$/, `:${port}`));
    });
  });
}

const ref = (o: ConfigObject) => ({
  kind: o.kind,
  apiVersion: o.apiVersion,
  namespace: o.metadata.namespace,
  name: o.metadata.name,
});

/** The `documents` of an apply request: what the CLI parsed from its files. */
function documentsOf(v: unknown): ParsedDocument[] {
  if (!Array.isArray(v) || v.length === 0)
    throw new InvalidInputError('documents: want a non-empty list of {source, index, raw}');
  if (v.length > 10_000) throw new InvalidInputError('documents: at most 10000 per apply');
  return v.map((d: unknown, i) => {
    const doc = d as Record<string, unknown> | null;
    if (!doc || typeof doc !== 'object' || !('raw' in doc))
      throw new InvalidInputError(`documents[${i}]: want {source, index, raw}`);
    return {
      source: typeof doc.source === 'string' ? doc.source : 'request',
      index: typeof doc.index === 'number' ? doc.index : i,
      basePath: Array.isArray(doc.basePath)
        ? (doc.basePath as unknown[]).filter(
            (s): s is string | number => typeof s === 'string' || typeof s === 'number',
          )
        : [],
      raw: doc.raw,
    };
  });
}

function keysOf(v: unknown): ConfigKey[] {
  if (!Array.isArray(v) || v.length === 0)
    throw new InvalidInputError('keys: want a non-empty list of {kind, namespace, name}');
  return v.map((k: unknown, i) => {
    const key = k as Record<string, unknown> | null;
    const kind = typeof key?.kind === 'string' ? lookupKind(key.kind) : undefined;
    if (!kind)
      throw new InvalidInputError(`keys[${i}].kind: unknown kind ${JSON.stringify(key?.kind)}`);
    if (typeof key?.name !== 'string' || key.name === '')
      throw new InvalidInputError(`keys[${i}].name: want a name`);
    const namespace =
      typeof key.namespace === 'string' && key.namespace ? key.namespace : 'default';
    return { kind, namespace, name: key.name };
  });
}
