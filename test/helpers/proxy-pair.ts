/**
 * Two Sail proxies on loopback driven by a real control plane, for data-plane tests and the proxy
 * benchmark: the CA and pilot run in this process (as `sail control-plane` wires them), host A
 * (`vm-a`, service account `client`) and host B (`vm-b`, service account `server`) get workload
 * certificates from the CA the way a node agent gets them (a join token, then CreateCertificate;
 * renewals with the current certificate), written in the node agent's layout (`cert-chain.pem`,
 * `key.pem`, `root-cert.pem`, swapped atomically through `..data`). Host B registers its workload
 * with pilot (address {@link DEFAULT_WORKLOAD_HOST}, ports http / http2 / grpc / tcp), and a
 * ServiceEntry with a workloadSelector makes it the service {@link SERVICE_HOST}.
 *
 * Both proxies run in **explicit** mode: proxy A binds one outbound listener per service port on
 * {@link DEFAULT_OUTBOUND_HOST} (clients dial `OUTBOUND_HOST:PORT` with `Host: SERVICE_HOST`),
 * proxy B binds its inbound listeners on B's workload address, and the applications behind B listen
 * on `127.0.0.1:PORT` (what pilot's `inbound|PORT||` clusters point at). The test starts the
 * applications; the pair only picks free port numbers for them.
 *
 *   client → A 127.0.77.10:PORT → mTLS → B 127.0.77.20:PORT → app 127.0.0.1:PORT
 *
 * Addresses and ports are unusual on purpose (127.0.77.0/24; ports picked free on 127.0.0.1) so
 * that other tests running at the same time do not collide.
 */
import * as http from 'node:http';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { CertificateAuthority, controlPlaneSpiffeId } from '../../ca';
import { writeFileSetAtomic } from '../../common/fs';
import type { Route } from '../../common/http';
import { createRootLogger, type Logger, type LogLevel, silentLogger } from '../../common/logging';
import { Pilot } from '../../pilot/pilot';
import { Proxy as SailProxy, type ProxyOptions } from '../../proxy';
import { makeCsr, TestCaClient } from './ca-client';
import { TestRegistrationAgent } from './registration-agent';
import { freePort } from './sail-process';

export const TRUST_DOMAIN = 'cluster.local';
export const NAMESPACE = 'default';
/** The service host B's workload serves. */
export const SERVICE_HOST = `server.${NAMESPACE}.svc.cluster.local`;
/** Where proxy A's outbound listeners bind (explicit mode). */
export const DEFAULT_OUTBOUND_HOST = '127.0.77.10';
/** Host B's workload address: registered with pilot, where proxy B's inbound listeners bind. */
export const DEFAULT_WORKLOAD_HOST = '127.0.77.20';
/**
 * Where proxy B's own outbound listeners bind. Not 127.0.0.1: explicit mode binds one outbound
 * listener per service port, and B's applications already listen on 127.0.0.1 on those ports.
 */
export const B_OUTBOUND_HOST = '127.0.77.21';

/** The SPIFFE ID of a service account in the test mesh. */
export const spiffeIdOf = (sa: string, ns = NAMESPACE) =>
  `spiffe://${TRUST_DOMAIN}/ns/${ns}/sa/${sa}`;

/** The service's port numbers: the same numbers on A's listeners, B's listeners and the apps. */
export interface PairPorts {
  readonly http: number;
  readonly http2: number;
  readonly grpc: number;
  readonly tcp: number;
}

/** A workload identity as the node agent stores it. */
export interface IdentityFiles {
  readonly certChainPem: string;
  readonly keyPem: string;
  readonly rootsPem: string;
  readonly spiffeId: string;
}

/** A configuration document, as `sail apply` would send it (already parsed YAML). */
export type ConfigDocument = Readonly<Record<string, unknown>>;

// ---------------------------------------------------------------------------------------------
// Control plane

/** Options of {@link startControlPlane}. */
export interface ControlPlaneOptions {
  readonly logger?: Logger;
  /** Data directory (CA keys, tokens, pilot's file store). */
  readonly dataDir: string;
  /** Address to bind the CA and pilot on (port 0); default 127.0.0.1. */
  readonly host?: string;
  /** Pilot's push debounce; default 10 ms quiet, 50 ms max (tests want pushes fast). */
  readonly debounce?: { readonly quietMs: number; readonly maxMs: number };
}

/**
 * Silent, unless SAIL_TEST_LOG names a level: then JSON lines on stderr (to debug a failing test
 * with `SAIL_TEST_LOG=debug npx jest …`).
 */
export function testLogger(): Logger {
  const level = process.env.SAIL_TEST_LOG as LogLevel | undefined;
  return level ? createRootLogger(level, process.stderr) : silentLogger();
}

/** Calls one of a component's admin routes in-process, as the admin server would for an admin. */
async function callRoute(
  routes: readonly Route[],
  method: Route['method'],
  routePath: string,
  body: Record<string, unknown>,
): Promise<unknown> {
  const route = routes.find(r => r.method === method && r.path === routePath);
  if (!route) throw new Error(`no admin route ${method} ${routePath}`);
  const res = await route.handler({
    req: undefined as unknown as http.IncomingMessage,
    params: {},
    query: new URLSearchParams(),
    admin: true,
    body: () => Promise.resolve(body),
  });
  return 'json' in res ? res.json : res.text;
}

/** The CA and pilot in this process, with the verbs the tests need. */
export class MeshControlPlane {
  private constructor(
    readonly ca: CertificateAuthority,
    readonly pilot: Pilot,
  ) {}

  /** Starts the CA, then pilot with the CA's serving certificate (as `sail control-plane`). */
  static async start(opts: ControlPlaneOptions): Promise<MeshControlPlane> {
    const logger = opts.logger ?? silentLogger();
    const host = opts.host ?? '127.0.0.1';
    const ca = new CertificateAuthority({
      logger,
      dataDir: opts.dataDir,
      listen: `${host}:0`,
      trustDomain: TRUST_DOMAIN,
    });
    await ca.start();
    const pilot = new Pilot({
      logger,
      listen: `${host}:0`,
      tls: ca.servingMaterial,
      store: { type: 'file', dataDir: opts.dataDir },
      mesh: { trustDomain: TRUST_DOMAIN },
      debounce: opts.debounce ?? { quietMs: 10, maxMs: 50 },
    });
    try {
      await pilot.start();
    } catch (err) {
      await ca.close();
      throw err;
    }
    ca.onServingCertRotated(m => pilot.updateTls(m));
    return new MeshControlPlane(ca, pilot);
  }

  get caAddress(): string {
    return this.ca.address;
  }

  /** Pilot's mTLS address (xDS and registration). */
  get pilotAddress(): string {
    const a = this.pilot.address;
    if (!a) throw new Error('pilot is not started');
    return a;
  }

  get rootsPem(): string {
    return this.ca.rootsPem;
  }

  /** The SPIFFE ID pilot's serving certificate carries. */
  get pilotSpiffeId(): string {
    return controlPlaneSpiffeId(TRUST_DOMAIN);
  }

  /** Applies documents the way `sail apply` does (validated against what is stored). */
  async apply(docs: readonly ConfigDocument[]): Promise<void> {
    await callRoute(this.pilot.adminRoutes(), 'POST', '/v1/config/apply', {
      documents: docs.map((raw, index) => ({ source: 'proxy-pair', index, raw })),
    });
  }

  /** Deletes objects (`sail delete`); missing ones are ignored. */
  async remove(keys: readonly { kind: string; name: string; namespace?: string }[]): Promise<void> {
    await callRoute(this.pilot.adminRoutes(), 'POST', '/v1/config/delete', {
      keys,
      ignoreNotFound: true,
    });
  }

  /**
   * A first workload certificate for `node` (service account `namespace/sa`), the agent's way:
   * a join token from the admin API, then CreateCertificate with it and a fresh key.
   */
  async enroll(
    node: string,
    sa: string,
    namespace = NAMESPACE,
    validitySeconds = 0,
  ): Promise<IdentityFiles> {
    const created = (await callRoute(this.ca.adminRoutes(), 'POST', '/v1/tokens', {
      node,
      serviceAccounts: [`${namespace}/${sa}`],
    })) as { token: string };
    return this.sign(created.token, undefined, validitySeconds);
  }

  /** A renewal with the current certificate as the TLS client identity, with a fresh key. */
  async renew(current: IdentityFiles, validitySeconds = 0): Promise<IdentityFiles> {
    return this.sign(undefined, current, validitySeconds);
  }

  private async sign(
    token: string | undefined,
    current: IdentityFiles | undefined,
    validitySeconds: number,
  ): Promise<IdentityFiles> {
    const { keyPem, csrPem } = await makeCsr();
    const client = new TestCaClient({
      address: this.caAddress,
      rootsPem: this.rootsPem,
      trustDomain: TRUST_DOMAIN,
      ...(current
        ? { identity: { certChainPem: current.certChainPem, keyPem: current.keyPem } }
        : {}),
    });
    try {
      const res = await client.create({ csr: csrPem, validitySeconds }, token);
      return {
        certChainPem: res.certChain.map(p => (p.endsWith('\n') ? p : `${p}\n`)).join(''),
        keyPem,
        rootsPem: this.rootsPem,
        spiffeId: res.spiffeId,
      };
    } finally {
      client.close();
    }
  }

  /** Stops pilot, then the CA. */
  async close(): Promise<void> {
    await this.pilot.close();
    await this.ca.close();
  }
}

/** Writes an identity into `dir` exactly as the node agent's cert store does (atomic set). */
export async function writeIdentity(dir: string, id: IdentityFiles): Promise<void> {
  await writeFileSetAtomic(dir, [
    { name: 'cert-chain.pem', data: id.certChainPem, mode: 0o644 },
    { name: 'key.pem', data: id.keyPem, mode: 0o600 },
    { name: 'root-cert.pem', data: id.rootsPem, mode: 0o644 },
  ]);
}

// ---------------------------------------------------------------------------------------------
// Configuration

/**
 * The ServiceEntry that makes host B's workload the service {@link SERVICE_HOST}; `addresses`
 * (VIPs or IPs) also route requests whose Host is one of them, and match TCP by destination.
 */
export function serviceEntry(ports: PairPorts, addresses: readonly string[] = []): ConfigDocument {
  return {
    apiVersion: 'networking.istio.io/v1beta1',
    kind: 'ServiceEntry',
    metadata: { name: 'server', namespace: NAMESPACE },
    spec: {
      hosts: [SERVICE_HOST],
      ...(addresses.length > 0 ? { addresses } : {}),
      location: 'MESH_INTERNAL',
      resolution: 'STATIC',
      ports: [
        { number: ports.http, name: 'http', protocol: 'HTTP' },
        { number: ports.http2, name: 'http2', protocol: 'HTTP2' },
        { number: ports.grpc, name: 'grpc', protocol: 'GRPC' },
        { number: ports.tcp, name: 'tcp', protocol: 'TCP' },
      ],
      workloadSelector: { labels: { app: 'server' } },
    },
  };
}

/** A PeerAuthentication for host B's workload (selector app=server). */
export function peerAuthentication(mode: 'STRICT' | 'PERMISSIVE' | 'DISABLE'): ConfigDocument {
  return {
    apiVersion: 'security.istio.io/v1beta1',
    kind: 'PeerAuthentication',
    metadata: { name: 'server', namespace: NAMESPACE },
    spec: { selector: { matchLabels: { app: 'server' } }, mtls: { mode } },
  };
}

// ---------------------------------------------------------------------------------------------
// The pair

/** Options of {@link startProxyPair}. */
export interface ProxyPairOptions {
  /** Root directory for the control plane's data, the cert dirs and the proxies' state. */
  readonly dir: string;
  /** Logger for the control plane and the proxies (default silent). */
  readonly logger?: Logger;
  readonly outboundHost?: string;
  readonly workloadHost?: string;
  /** Port numbers; each missing one is picked free on 127.0.0.1. */
  readonly ports?: Partial<PairPorts>;
  /** Host B's labels (must keep `app: server` for the ServiceEntry to select it). */
  readonly labelsB?: Readonly<Record<string, string>>;
  /** More documents applied with the ServiceEntry, before the proxies start. */
  readonly config?: readonly ConfigDocument[];
  /** Overrides of the proxies' options. */
  readonly proxyA?: Partial<ProxyOptions>;
  readonly proxyB?: Partial<ProxyOptions>;
  /** Do not construct or start the proxies (the bench runs them as processes). */
  readonly withoutProxies?: boolean;
  /** Lifetime of the workload certificates, seconds (0: the CA's default). */
  readonly certTtlSeconds?: number;
}

/** One host of the pair: its identity, its cert dir and the options its proxy runs with. */
export interface PairHost {
  readonly node: string;
  readonly serviceAccount: string;
  readonly certsDir: string;
  readonly stateDir: string;
  /** The identity currently in `certsDir`. */
  identity: IdentityFiles;
  /** The options the proxy was (or would be) built with. */
  readonly options: ProxyOptions;
}

/** A running pair; `close()` stops everything it started, in reverse order. */
export interface ProxyPair {
  readonly cp: MeshControlPlane;
  readonly ports: PairPorts;
  readonly outboundHost: string;
  readonly workloadHost: string;
  readonly hostA: PairHost;
  readonly hostB: PairHost;
  /** Undefined with `withoutProxies`. */
  readonly a: SailProxy | undefined;
  readonly b: SailProxy | undefined;
  readonly registration: TestRegistrationAgent;
  /** `OUTBOUND_HOST:PORT`: where a client on host A sends traffic for the service port. */
  outbound(port: number): string;
  /** `WORKLOAD_HOST:PORT`: proxy B's inbound listener for the port. */
  inbound(port: number): string;
  /** Renews both hosts' certificates (fresh keys) and writes them as the agent does. */
  rotate(): Promise<void>;
  close(): Promise<void>;
}

/**
 * The registration stream of a host serving the service's four ports (not started: call
 * `start()`, and `close()` when done).
 */
export function registerWorkload(
  cp: MeshControlPlane,
  w: {
    node: string;
    serviceAccount: string;
    identity: IdentityFiles;
    address: string;
    labels: Readonly<Record<string, string>>;
    ports: PairPorts;
  },
): TestRegistrationAgent {
  return new TestRegistrationAgent({
    address: cp.pilotAddress,
    rootsPem: cp.rootsPem,
    identity: { certChainPem: w.identity.certChainPem, keyPem: w.identity.keyPem },
    registration: {
      node: w.node,
      namespace: NAMESPACE,
      serviceAccount: w.serviceAccount,
      address: w.address,
      labels: { ...w.labels },
      ports: [
        { name: 'http', port: w.ports.http },
        { name: 'http2', port: w.ports.http2 },
        { name: 'grpc', port: w.ports.grpc },
        { name: 'tcp', port: w.ports.tcp },
      ],
    },
  });
}

/** The options of a proxy for `host` in this pair. */
export function proxyOptionsFor(p: {
  logger: Logger;
  node: string;
  ip: string;
  labels: Readonly<Record<string, string>>;
  cp: MeshControlPlane;
  certsDir: string;
  stateDir: string;
  outboundBindHost: string;
  inboundBindHost: string;
}): ProxyOptions {
  return {
    logger: p.logger,
    nodeId: `sidecar~${p.ip}~${p.node}.${NAMESPACE}~${NAMESPACE}.svc.cluster.local`,
    workload: { name: p.node, namespace: NAMESPACE, labels: p.labels },
    trustDomain: TRUST_DOMAIN,
    pilotAddress: p.cp.pilotAddress,
    pilotSpiffeId: p.cp.pilotSpiffeId,
    certsDir: p.certsDir,
    stateDir: p.stateDir,
    traffic: {
      mode: 'explicit',
      outboundBindHost: p.outboundBindHost,
      inboundBindHost: p.inboundBindHost,
    },
    adminListen: '127.0.0.1:0',
    metricsListen: '127.0.0.1:0',
    accessLog: false,
    drainMs: 1_000,
    shutdownGraceMs: 3_000,
    initialFetchTimeoutMs: 5_000,
  };
}

/**
 * The `sail proxy --config FILE` text (proxy/config/proxy-config.ts) for the options `o`, plus
 * `extra` file keys (e.g. `logLevel`).
 */
export function proxyConfigYaml(o: ProxyOptions, extra: Record<string, unknown> = {}): string {
  return YAML.stringify({
    nodeId: o.nodeId,
    labels: o.workload.labels,
    trustDomain: o.trustDomain,
    pilotAddress: o.pilotAddress,
    pilotSpiffeId: o.pilotSpiffeId,
    certsDir: o.certsDir,
    ...(o.stateDir !== undefined ? { stateDir: o.stateDir } : {}),
    traffic: o.traffic,
    adminListen: o.adminListen,
    metricsListen: o.metricsListen,
    accessLog: o.accessLog,
    drain: `${o.drainMs}ms`,
    shutdownGrace: `${o.shutdownGraceMs}ms`,
    initialFetchTimeout: `${o.initialFetchTimeoutMs}ms`,
    ...extra,
  });
}

/** Free port numbers on 127.0.0.1 for the ports not given. */
export async function pickPorts(given: Partial<PairPorts> = {}): Promise<PairPorts> {
  return {
    http: given.http ?? (await freePort()),
    http2: given.http2 ?? (await freePort()),
    grpc: given.grpc ?? (await freePort()),
    tcp: given.tcp ?? (await freePort()),
  };
}

/**
 * Starts the control plane, enrolls both hosts, applies the ServiceEntry (plus `config`),
 * registers host B and starts both proxies. Resolves once both proxies are started (not
 * necessarily configured: wait for `ready` or for traffic to flow).
 */
export async function startProxyPair(opts: ProxyPairOptions): Promise<ProxyPair> {
  const logger = opts.logger ?? testLogger();
  const outboundHost = opts.outboundHost ?? DEFAULT_OUTBOUND_HOST;
  const workloadHost = opts.workloadHost ?? DEFAULT_WORKLOAD_HOST;
  const ports = await pickPorts(opts.ports);
  const labelsA = { app: 'client', version: 'v1' };
  const labelsB = opts.labelsB ?? { app: 'server', version: 'v1' };
  const cleanups: (() => Promise<void> | void)[] = [];
  let closing: Promise<void> | undefined;
  // Idempotent; every step runs even when an earlier one fails, the first failure is rethrown.
  const closeAll = () =>
    (closing ??= (async () => {
      let first: unknown;
      for (const c of [...cleanups].reverse()) {
        try {
          await c();
        } catch (err) {
          first ??= err;
        }
      }
      if (first !== undefined)
        throw first instanceof Error
          ? first
          : new Error('proxy pair: close failed', { cause: first });
    })());
  try {
    const cp = await MeshControlPlane.start({ logger, dataDir: path.join(opts.dir, 'cp') });
    cleanups.push(() => cp.close());

    const ttl = opts.certTtlSeconds ?? 0;
    const host = async (node: string, sa: string, ip: string, labels: Record<string, string>) => {
      const certsDir = path.join(opts.dir, node, 'certs');
      const stateDir = path.join(opts.dir, node, 'state');
      const identity = await cp.enroll(node, sa, NAMESPACE, ttl);
      await writeIdentity(certsDir, identity);
      // The state directory exists on a host (systemd StateDirectory=); the proxy writes into it.
      await fs.promises.mkdir(stateDir, { recursive: true });
      const options = proxyOptionsFor({
        logger,
        node,
        ip,
        labels,
        cp,
        certsDir,
        stateDir,
        outboundBindHost: ip === workloadHost ? B_OUTBOUND_HOST : outboundHost,
        inboundBindHost: ip,
      });
      return { node, serviceAccount: sa, certsDir, stateDir, identity, options };
    };
    const hostA: PairHost = await host('vm-a', 'client', outboundHost, labelsA);
    const hostB: PairHost = await host('vm-b', 'server', workloadHost, labelsB);

    await cp.apply([serviceEntry(ports), ...(opts.config ?? [])]);

    const registration = registerWorkload(cp, {
      node: hostB.node,
      serviceAccount: hostB.serviceAccount,
      identity: hostB.identity,
      address: workloadHost,
      labels: labelsB,
      ports,
    });
    cleanups.push(() => registration.close());
    await registration.start();

    let a: SailProxy | undefined;
    let b: SailProxy | undefined;
    if (!opts.withoutProxies) {
      b = new SailProxy({ ...hostB.options, ...opts.proxyB });
      cleanups.push(() => b?.close());
      a = new SailProxy({ ...hostA.options, ...opts.proxyA });
      cleanups.push(() => a?.close());
      await Promise.all([b.start(), a.start()]);
      // start() does not wait for pilot; the pair is handed over configured.
      await Promise.all([a.whenReady(), b.whenReady()]);
    }

    return {
      cp,
      ports,
      outboundHost,
      workloadHost,
      hostA,
      hostB,
      a,
      b,
      registration,
      outbound: port => `${outboundHost}:${port}`,
      inbound: port => `${workloadHost}:${port}`,
      rotate: async () => {
        for (const h of [hostA, hostB]) {
          h.identity = await cp.renew(h.identity, ttl);
          await writeIdentity(h.certsDir, h.identity);
        }
      },
      close: closeAll,
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

/**
 * One HTTP/1.1 GET to `HOST:PORT` on a fresh connection (no agent), with `Host: hostHeader`; the
 * status and body as text.
 */
export function getOnce(
  address: string,
  urlPath: string,
  hostHeader: string,
  timeoutMs = 10_000,
): Promise<{ status: number; body: string }> {
  const hp = /^(.*):(\d+)$/.exec(address);
  if (!hp) throw new Error(`want HOST:PORT, got ${address}`);
  return new Promise((resolve, reject) => {
    const req = http.get(
      {
        host: hp[1],
        port: Number(hp[2]),
        path: urlPath,
        agent: false,
        headers: { host: hostHeader },
        timeout: timeoutMs,
      },
      res => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
  });
}
