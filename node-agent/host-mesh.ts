/**
 * What makes the host a mesh member once it has an identity: registration and health probes, the
 * DNS server and its name table, the xDS relay for proxyless applications, the supervised proxy,
 * and traffic capture. NodeAgent owns one and starts it after the first certificate.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import type { Clock } from '../common/clock';
import { writeFileAtomic } from '../common/fs';
import type { Lifecycle } from '../common/lifecycle';
import type { Logger } from '../common/logging';
import type { prom } from '../common/metrics';
import {
  Capture,
  type CaptureStatus,
  captureSpecFromSettings,
  DEFAULT_INBOUND_PORT,
  TPROXY_CHILD_FD,
  TPROXY_MARK,
  TproxySocket,
} from './capture';
import { DnsServer, NameTableClient, type NameTableStatus, parseResolvConf } from './dns';
import type { WorkloadIdentity } from './identity/cert-store';
import type { NodeAgentSettings } from './options';
import { RegistrationClient, type HealthProbeSpec, resolveWorkloadAddress } from './registration';
import { ProxySupervisor, type ProxyStatus, selfCommand } from './supervisor';
import { XdsRelay, grpcBootstrap, proxylessNodeId } from './xds-relay';

/** The DNS suffix of Istio's node id domain (`NS.svc.cluster.local`). */
const NODE_DOMAIN_SUFFIX = 'svc.cluster.local';
/** Subdirectory of stateDir for the proxy's and the name table's last-known-good state. */
export const STATE_SUBDIR = 'state';

/** Istio's sidecar node id for a host: `sidecar~IP~NAME.NS~NS.svc.cluster.local`. */
export function sidecarNodeId(name: string, ip: string, namespace: string): string {
  return `sidecar~${ip}~${name}.${namespace}~${namespace}.${NODE_DOMAIN_SUFFIX}`;
}

/** Options of {@link HostMesh}. */
export interface HostMeshOptions {
  readonly settings: NodeAgentSettings;
  readonly logger: Logger;
  readonly clock: Clock;
  readonly registry: prom.Registry;
  /** The current certificate; undefined when none is valid. */
  readonly identity: () => WorkloadIdentity | undefined;
  /** The proxy's system user (looked up by the CLI); absent: the proxy runs as the agent's user. */
  readonly proxyUser?: { readonly uid: number; readonly gid: number };
  /** How to run `sail proxy`. Default selfCommand(). */
  readonly proxyCommand?: readonly string[];
  /** The agent's log level, the proxy's default. */
  readonly logLevel?: string;
  /** `pipe` re-logs the proxy's lines (tests); default `inherit` (the journal gets them). */
  readonly proxyStdio?: 'inherit' | 'pipe';
}

/** What `sail status` shows about the mesh side of the host. */
export interface HostMeshStatus {
  readonly address: string | undefined;
  readonly nodeId: string | undefined;
  readonly registration:
    | { connected: boolean; registered: boolean; healthy?: boolean; lastMessage?: string }
    | undefined;
  readonly proxy: ProxyStatus | undefined;
  readonly capture: (CaptureStatus & { mode: string }) | { mode: 'none' } | undefined;
  readonly dns:
    | { listen: string; upstreams: readonly string[]; names: number; table: NameTableStatus }
    | undefined;
  readonly proxyless: { socket: string; bootstrapFile: string; streams: number } | undefined;
}

function identityPems(
  id: WorkloadIdentity | undefined,
): { certChainPem: string; keyPem: string; rootsPem: string } | undefined {
  return id
    ? { certChainPem: id.certChainPem, keyPem: id.privateKeyPem, rootsPem: id.rootsPem }
    : undefined;
}

/** The nameservers of `dns.resolvConf`: where the host's applications send their queries. */
export function resolvConfNameservers(settings: NodeAgentSettings): string[] {
  return hostResolvConf(settings).nameservers;
}

/** `dns.resolvConf`'s nameservers and search domains; none of either when it does not exist. */
function hostResolvConf(settings: NodeAgentSettings): { nameservers: string[]; search: string[] } {
  let text: string;
  try {
    text = fs.readFileSync(settings.dns.resolvConf, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { nameservers: [], search: [] };
    throw err;
  }
  return parseResolvConf(text, settings.dns.listen);
}

/**
 * The nameservers whose port 53 capture sends to the agent's DNS server, undefined when DNS is
 * off. IPv4 only: the server listens on 127.0.0.1, and a query to an IPv6 nameserver is left
 * alone (it still resolves every name but the mesh's).
 */
export function captureNameservers(
  settings: NodeAgentSettings,
  nameservers: readonly string[] = resolvConfNameservers(settings),
): string[] | undefined {
  if (!settings.dns.enabled) return undefined;
  return nameservers.filter(ns => net.isIPv4(ns));
}

/** The health probe of the config in the registration client's terms. */
function probeSpec(settings: NodeAgentSettings): HealthProbeSpec | undefined {
  const h = settings.workload.health;
  if (!h) return undefined;
  return {
    ...(h.http ? { http: h.http } : {}),
    ...(h.tcp ? { tcp: h.tcp } : {}),
    ...(h.exec ? { exec: h.exec } : {}),
    intervalMs: h.intervalMs,
    timeoutMs: h.timeoutMs,
    failureThreshold: h.failureThreshold,
    successThreshold: h.successThreshold,
  };
}

/**
 * The mesh side of the agent. start() brings everything up in order and resolves when the host is
 * meshed (the proxy ready, capture installed); close() takes it down in reverse.
 */
export class HostMesh implements Lifecycle {
  private readonly log: Logger;
  private address: string | undefined;
  private nodeId: string | undefined;
  private capture: Capture | undefined;
  /** capture.mode tproxy: the transparent socket the proxy inherits for virtualInbound. */
  private tproxySocket: TproxySocket | undefined;
  private registration: RegistrationClient | undefined;
  private dns: DnsServer | undefined;
  private dnsUpstreams: readonly string[] = [];
  private names: NameTableClient | undefined;
  private relay: XdsRelay | undefined;
  private supervisor: ProxySupervisor | undefined;
  private captureInstalled = false;
  private closed = false;

  constructor(private readonly opts: HostMeshOptions) {
    this.log = opts.logger;
  }

  /** True once the proxy (if any) is ready and capture (if any) installed. */
  get ready(): boolean {
    const s = this.opts.settings;
    if (s.proxy.enabled && !this.supervisor?.ready) return false;
    if (this.capture && !this.captureInstalled) return false;
    return this.address !== undefined;
  }

  /**
   * Brings the host into the mesh. Waits for the proxy to become ready (as long as it takes,
   * unless `signal` aborts); nothing else waits on the control plane.
   */
  async start(signal?: AbortSignal): Promise<void> {
    const s = this.opts.settings;
    const pilot = s.controlPlane.pilotAddress;
    const pilotSpiffeId = s.controlPlane.caSpiffeId;
    const identity = () => identityPems(this.opts.identity());
    const stateDir = path.join(s.stateDir, STATE_SUBDIR);
    fs.mkdirSync(stateDir, { recursive: true, mode: 0o755 });
    fs.mkdirSync(s.runDir, { recursive: true, mode: 0o755 });
    // The proxy (another user) keeps its state in stateDir/state/proxy: it must be able to pass
    // through the directories above it.
    if (this.opts.proxyUser) for (const dir of [s.stateDir, stateDir]) this.ensureTraversable(dir);

    const address = await this.workloadAddress(signal);
    const nodeId = sidecarNodeId(s.nodeName, address, s.workload.namespace);
    this.address = address;
    this.nodeId = nodeId;
    this.log.info({ address, nodeId }, 'Workload address');

    // Capture: remove what a crashed agent left behind now; install once the proxy is ready.
    const capturing = s.proxy.enabled && s.capture.mode !== 'none';
    // The host's resolvers, read once: where DNS forwards to, and what capture sends to it.
    let hostNameservers: string[] = [];
    let searchDomains: string[] = [];
    if (s.dns.enabled) {
      const resolv = hostResolvConf(s);
      hostNameservers = resolv.nameservers;
      if (s.dns.stripSearchDomains) searchDomains = resolv.search;
      this.dnsUpstreams = s.dns.upstreams ? [...s.dns.upstreams] : hostNameservers;
      if (this.dnsUpstreams.length === 0)
        this.log.warn(
          { file: s.dns.resolvConf },
          'No nameservers to forward non-mesh names to; only mesh names will resolve',
        );
    }
    if (capturing) {
      const proxyUser = this.opts.proxyUser ?? {
        uid: process.getuid?.() ?? 0,
        gid: process.getgid?.() ?? 0,
      };
      this.capture = new Capture({
        spec: captureSpecFromSettings(s, proxyUser, captureNameservers(s, hostNameservers)),
        logger: this.log,
        registry: this.opts.registry,
        stateDir,
      });
      await this.capture.remove();
    }

    const health = probeSpec(s);
    this.registration = new RegistrationClient({
      logger: this.log,
      clock: this.opts.clock,
      registry: this.opts.registry,
      pilotAddress: pilot,
      pilotSpiffeId,
      identity,
      registration: {
        node: s.nodeName,
        namespace: s.workload.namespace,
        serviceAccount: s.workload.serviceAccount,
        address,
        labels: { ...s.workload.labels },
        ports: s.workload.ports.map(p => ({ name: p.name, port: p.port })),
        ...(s.workload.group !== undefined ? { group: s.workload.group } : {}),
      },
      ...(health ? { health } : {}),
    });
    await this.registration.start();

    if (s.dns.enabled) {
      const dns = new DnsServer({
        logger: this.log,
        registry: this.opts.registry,
        listen: s.dns.listen,
        upstreams: this.dnsUpstreams,
        namespace: s.workload.namespace,
        searchDomains,
      });
      this.dns = dns;
      await dns.start();
      this.names = new NameTableClient({
        logger: this.log,
        clock: this.opts.clock,
        registry: this.opts.registry,
        pilotAddress: pilot,
        pilotSpiffeId,
        nodeId,
        identity,
        stateFile: path.join(stateDir, 'names.json'),
        onTable: table => dns.setTable(table),
      });
      await this.names.start();
    }

    if (s.proxyless.enabled) {
      this.relay = new XdsRelay({
        logger: this.log,
        registry: this.opts.registry,
        socketPath: s.proxyless.socket,
        pilotAddress: pilot,
        pilotSpiffeId,
        identity,
      });
      await this.relay.start();
      const bootstrap = grpcBootstrap({
        socketPath: s.proxyless.socket,
        // Not the proxy's sidecar id: pilot serves a proxyless node gRPC's API listeners.
        nodeId: proxylessNodeId(s.nodeName, s.workload.namespace),
        namespace: s.workload.namespace,
        certsDir: s.certs.dir,
      });
      await writeFileAtomic(
        s.proxyless.bootstrapFile,
        `${JSON.stringify(bootstrap, null, 2)}\n`,
        0o644,
      );
    }

    if (s.proxy.enabled) {
      this.supervisor = new ProxySupervisor({
        logger: this.log,
        clock: this.opts.clock,
        registry: this.opts.registry,
        command: this.opts.proxyCommand ?? selfCommand(),
        configFile: path.join(s.runDir, 'proxy.yaml'),
        // Its own directory: the supervisor gives it to the proxy's user.
        config: this.proxyConfig(path.join(stateDir, 'proxy')),
        ...(this.opts.proxyUser ? { user: this.opts.proxyUser } : {}),
        // Binding a caller's address (original_src) needs CAP_NET_ADMIN, and only that.
        ...(this.opts.proxyUser && this.keepsSourceAddress()
          ? { capabilities: ['net_admin'] }
          : {}),
        // Opened at the first spawn: after a proxy a crashed agent left running (holding the
        // port) was stopped.
        ...(capturing && s.capture.mode === 'tproxy'
          ? { inheritFds: async () => [(await this.openTproxySocket()).fd] }
          : {}),
        ...(s.proxy.nodeOptions ? { env: { NODE_OPTIONS: s.proxy.nodeOptions } } : {}),
        adminAddress: s.proxy.adminListen,
        stopGraceMs: s.proxy.stopGraceMs,
        ...(this.opts.proxyStdio ? { stdio: this.opts.proxyStdio } : {}),
      });
      await this.supervisor.start();
      await this.supervisor.waitReady(signal);
      this.log.info('Proxy ready');
    }

    if (this.capture && !this.closed) {
      await this.capture.install();
      this.captureInstalled = true;
      this.log.info('Traffic capture installed');
    }
  }

  /**
   * The workload address: the configured IP, or (`auto`) the source address toward pilot. When
   * the host has no route to pilot yet (the network is still coming up), retries every second
   * as long as it takes, unless `signal` aborts.
   */
  private async workloadAddress(signal: AbortSignal | undefined): Promise<string> {
    const s = this.opts.settings;
    for (let attempt = 1; ; attempt++) {
      try {
        return await resolveWorkloadAddress(s.workload.address, s.controlPlane.pilotAddress);
      } catch (err) {
        if (s.workload.address !== 'auto' || signal?.aborted) throw err;
        if (attempt === 1 || attempt % 30 === 0)
          this.log.warn({ err, attempt }, 'Cannot find the workload address yet; retrying');
        await new Promise(resolve => setTimeout(resolve, 1000));
      }
    }
  }

  /** Adds search (x) permission for group and others to a directory that lacks it. */
  private ensureTraversable(dir: string): void {
    const mode = fs.statSync(dir).mode & 0o7777;
    if ((mode & 0o011) === 0o011) return;
    fs.chmodSync(dir, mode | 0o011);
    this.log.info(
      { path: dir, mode: (mode | 0o011).toString(8) },
      "Made the state directory traversable for the proxy's user",
    );
  }

  /**
   * The transparent inbound socket, opened on first use. A proxy that was just stopped (one a
   * crashed agent left running) may still hold the port for a moment after it is reported gone
   * (its threads exit after the main one): the port is tried again for a few seconds.
   * @throws CaptureError
   */
  private async openTproxySocket(): Promise<TproxySocket> {
    if (!this.tproxySocket) {
      this.tproxySocket = await TproxySocket.openWhenFree(DEFAULT_INBOUND_PORT, {
        clock: this.opts.clock,
        onBusy: () => {
          this.log.warn(
            { port: DEFAULT_INBOUND_PORT },
            'The TPROXY port is still in use; trying again (a proxy that was just stopped may still hold it)',
          );
        },
      });
      this.log.info(
        { host: this.tproxySocket.host, port: this.tproxySocket.port },
        'Opened the transparent inbound socket for TPROXY',
      );
    }
    return this.tproxySocket;
  }

  /** Whether applications see their callers' addresses (TPROXY with capture.preserveSourceAddress). */
  private keepsSourceAddress(): boolean {
    const c = this.opts.settings.capture;
    return c.mode === 'tproxy' && c.preserveSourceAddress;
  }

  /** The proxy's config file (the keys of `sail proxy --config`). */
  private proxyConfig(stateDir: string): Record<string, unknown> {
    const s = this.opts.settings;
    const level = s.proxy.logLevel ?? this.opts.logLevel;
    return {
      node: { name: s.nodeName, ip: this.address, namespace: s.workload.namespace },
      labels: { ...s.workload.labels },
      trustDomain: s.trustDomain,
      pilotAddress: s.controlPlane.pilotAddress,
      pilotSpiffeId: s.controlPlane.caSpiffeId,
      certsDir: s.certs.dir,
      stateDir,
      // Without capture, applications dial the proxy's per-service listeners on 127.0.0.1.
      traffic: {
        mode: s.capture.mode === 'none' ? 'explicit' : 'capture',
        ...(s.capture.mode === 'tproxy' ? { inboundFd: TPROXY_CHILD_FD } : {}),
        ...(this.keepsSourceAddress() ? { originalSourceMark: TPROXY_MARK } : {}),
      },
      adminListen: s.proxy.adminListen,
      accessLog: s.proxy.accessLog,
      concurrency: s.proxy.concurrency,
      ...(level ? { logLevel: level } : {}),
    };
  }

  /** New certificate files were written: the proxy, registration and the relay pick them up. */
  certificatesChanged(): void {
    this.supervisor?.certificatesChanged();
    this.registration?.identityChanged();
    this.names?.identityChanged();
    this.relay?.identityChanged();
  }

  /** What `sail status` shows; runs `iptables-save` for the capture check. */
  async status(): Promise<HostMeshStatus> {
    const s = this.opts.settings;
    let capture: HostMeshStatus['capture'];
    if (this.capture) {
      try {
        capture = { mode: s.capture.mode, ...(await this.capture.verify()) };
      } catch (err) {
        this.log.warn({ err }, 'Could not verify traffic capture');
      }
    } else if (s.proxy.enabled) capture = { mode: 'none' };
    return {
      address: this.address,
      nodeId: this.nodeId,
      registration: this.registration?.status(),
      proxy: this.supervisor ? await this.supervisor.status() : undefined,
      capture,
      dns: this.dns
        ? {
            listen: this.dns.address ?? s.dns.listen,
            upstreams: this.dnsUpstreams,
            names: this.names!.status().names,
            table: this.names!.status(),
          }
        : undefined,
      proxyless: this.relay
        ? {
            socket: s.proxyless.socket,
            bootstrapFile: s.proxyless.bootstrapFile,
            streams: this.relay.activeStreams,
          }
        : undefined,
    };
  }

  /**
   * Leaves the mesh in reverse order: capture removed first (applications' new connections go
   * direct), the DNS server and relay stopped, the workload deregistered, then the proxy drained.
   * Each step runs even when one before it failed.
   */
  async close(): Promise<void> {
    this.closed = true;
    const step = async (what: string, fn: (() => Promise<void>) | undefined) => {
      if (!fn) return;
      try {
        await fn();
      } catch (err) {
        this.log.error({ err }, `Could not stop ${what}`);
      }
    };
    await step('traffic capture', this.capture && (() => this.capture!.remove()));
    this.captureInstalled = false;
    await step('the name table client', this.names && (() => this.names!.close()));
    await step('the DNS server', this.dns && (() => this.dns!.close()));
    await step('the xDS relay', this.relay && (() => this.relay!.close()));
    await step('registration', this.registration && (() => this.registration!.close()));
    await step('the proxy', this.supervisor && (() => this.supervisor!.close()));
    // Only now: until the proxy is gone, connections queue on it rather than being refused.
    await step(
      'the transparent inbound socket',
      this.tproxySocket && (async () => this.tproxySocket!.close()),
    );
  }
}
