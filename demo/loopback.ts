/**
 * The demo's fallback without root: everything on this host's loopback, no network namespaces,
 * no iptables. Each workload still gets its own identity, registration and proxy, but traffic
 * reaches the proxies explicitly (the proxy's explicit mode, docs/proxy.md#traffic-modes):
 *
 *   127.L.M.2    sail control-plane (CA, pilot, admin)
 *   127.L.M.N    (N = 11..17: the client host `vmsleep`, then one per workload) the host's address:
 *                 - sail node-agent, identity only (capture none, no DNS, proxy disabled),
 *                   status server; it registers the workload (address 127.L.M.N, port http:APP)
 *                 - sail proxy (explicit mode), run by the demo with the agent's certificates:
 *                   inbound listener 127.L.M.N:APP (mTLS), admin, metrics
 *                 (the control plane's, agents' and proxies' ports are free ports, not the
 *                 well-known ones: other meshes on a shared host may hold those on 0.0.0.0)
 *   127.L.M.N+100 the proxy's outbound listener :9080 (one per host, so six can coexist)
 *   127.0.0.1:APP the application (APP: a free port per workload), behind its proxy's inbound side
 *
 * Applications cannot dial `http://details:9080` here (no capture, no mesh DNS): they dial their
 * own proxy's outbound listener (127.L.M.N+100:9080, `--via`) with `Host: details:9080`, and
 * pilot's routes do the rest exactly as in the namespaces topology: subsets, weights, header
 * matches and faults, mTLS between proxies. Six agents cannot share one host's well-known ports
 * (the agent's proxy has fixed metrics and outbound addresses), so the demo runs the proxies itself.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { hostExec, LabProcess } from '../test/helpers/mesh-lab';
import { waitFor } from '../test/helpers/wait-for';
import type { CallSummary } from './bookinfo-apps';
import {
  destinationRules,
  type Doc,
  NAMESPACE,
  SERVICES,
  type Service,
  serviceEntries,
  SERVICE_PORT,
  strictMtls,
} from './mesh-config';
import {
  APPS_JS,
  type BookinfoMesh,
  type CallOptions,
  CLIENT,
  CONTROL_PLANE_PORTS,
  type ControlPlanePorts,
  controlPlaneArgs,
  createToken,
  joinArgs,
  callCommand,
  parseCallSummary,
  patchAgentConfig,
  SAIL_JS,
  type Say,
  sailApply,
  type Workload,
  HOSTS,
} from './mesh';

/** A TCP port free on `host` right now. */
async function freePort(host: string): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, host, () => resolve());
  });
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>(r => srv.close(() => r()));
  return port;
}

/** True when `host:port` can be bound right now (nothing on it, nor on 0.0.0.0:port). */
function canBind(host: string, port: number): Promise<boolean> {
  return new Promise(resolve => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}

/** A random 127.L.M prefix (all of 127/8 is this host's loopback on Linux). */
function pickPrefix(): string {
  const b = crypto.randomBytes(2);
  return `127.${100 + ((b[0] as number) % 150)}.${(b[1] as number) % 250}`;
}

/** Per workload: its addresses and ports. */
interface Host {
  readonly w: Workload;
  /** The workload's address (registration, inbound listener, admin, metrics, agent status). */
  readonly ip: string;
  /** The proxy's outbound listener host. */
  readonly outbound: string;
  /** Where the application listens (127.0.0.1:appPort) and its registered port (unused for the client). */
  readonly appPort: number;
  /** On `ip`: the agent's status server, the proxy's admin and metrics servers. */
  readonly statusPort: number;
  readonly adminPort: number;
  readonly metricsPort: number;
  readonly dir: string;
}

/** BookInfo on one host's loopback; see the file comment. */
export class LoopbackMesh implements BookinfoMesh {
  readonly kind = 'loopback';
  private readonly procs: LabProcess[] = [];
  private readonly hosts = new Map<string, Host>();
  private closed = false;

  /** Free ports: other meshes on this host may hold the well-known ones on 0.0.0.0. */
  private cpPorts: ControlPlanePorts = CONTROL_PLANE_PORTS;

  private constructor(
    private readonly prefix: string,
    private readonly dir: string,
  ) {}

  private get dataDir(): string {
    return path.join(this.dir, 'control-plane');
  }

  /** Starts everything and waits until every proxy is ready. On failure, undoes it all. */
  static async create(say: Say): Promise<LoopbackMesh> {
    const prefix = pickPrefix();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sail-demo-'));
    const mesh = new LoopbackMesh(prefix, dir);
    try {
      await mesh.start(say);
    } catch (err) {
      await mesh.close().catch(() => {});
      throw err;
    }
    return mesh;
  }

  private spawn(argv: readonly string[], name: string): LabProcess {
    const child: ChildProcess = spawn(argv[0] as string, argv.slice(1), {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: process.env,
    });
    const p = new LabProcess('loopback', argv, name, child);
    this.procs.push(p);
    return p;
  }

  private async start(say: Say): Promise<void> {
    const cpIp = `${this.prefix}.2`;
    say(`Loopback topology in ${this.dir}: control plane ${cpIp}, hosts ${this.prefix}.11-17`);
    if (!(await canBind(`${this.prefix}.111`, SERVICE_PORT)))
      throw new Error(
        `port ${SERVICE_PORT} is taken on every address (something listens on 0.0.0.0:${SERVICE_PORT}): the proxies' outbound listeners need it; stop that program and retry`,
      );
    this.cpPorts = {
      ca: await freePort(cpIp),
      pilot: await freePort(cpIp),
      admin: await freePort(cpIp),
    };
    const cp = this.spawn(
      [process.execPath, ...controlPlaneArgs(this.dataDir, cpIp, this.cpPorts)],
      'control-plane',
    );
    await cp.waitForOutput('Admin HTTPS listening', 30_000);
    const { ca, pilot, admin } = this.cpPorts;
    say(`Control plane up on ${cpIp}: CA :${ca}, pilot :${pilot}, admin :${admin}`);

    for (const [i, w] of HOSTS.entries()) {
      const hostDir = path.join(this.dir, w.node);
      fs.mkdirSync(hostDir, { recursive: true });
      const ip = `${this.prefix}.${11 + i}`;
      this.hosts.set(w.node, {
        w,
        ip,
        outbound: `${this.prefix}.${111 + i}`,
        appPort: await freePort('127.0.0.1'),
        statusPort: await freePort(ip),
        adminPort: await freePort(ip),
        metricsPort: await freePort(ip),
        dir: hostDir,
      });
    }
    await Promise.all(
      [...this.hosts.values()].map(async h => {
        if (h.w === CLIENT) return;
        const app = this.spawn(
          [
            process.execPath,
            APPS_JS,
            'serve',
            '--service',
            h.w.service,
            '--version',
            h.w.version,
            '--node',
            h.w.node,
            '--listen',
            `127.0.0.1:${h.appPort}`,
            '--via',
            h.outbound,
          ],
          `${h.w.service}-${h.w.version}`,
        );
        await app.waitForOutput('"event":"listening"', 15_000);
      }),
    );
    // VIPs are never dialed in explicit mode, but a ServiceEntry with resolution STATIC has some.
    const vips = Object.fromEntries(
      SERVICES.map((s, i) => [s, `${this.prefix}.${201 + i}`]),
    ) as Record<Service, string>;
    await this.apply([...serviceEntries(vips), ...destinationRules(), strictMtls]);
    say('Applied ServiceEntries, DestinationRules (subsets by version), PeerAuthentication STRICT');

    await Promise.all([...this.hosts.values()].map(h => this.startHost(h, say)));
  }

  /** token, join, identity-only agent, then the proxy in explicit mode. */
  private async startHost(h: Host, say: Say): Promise<void> {
    const token = await createToken(this.dataDir, h.w);
    const config = path.join(h.dir, 'node-agent.yaml');
    const join = await hostExec(
      process.execPath,
      joinArgs({
        w: h.w,
        controlPlane: `${this.prefix}.2`,
        token,
        rootCert: path.join(this.dataDir, 'root-cert.pem'),
        ...(h.w === CLIENT ? {} : { port: h.appPort }),
        config,
      }),
      { timeoutMs: 30_000 },
    );
    if (join.code !== 0) throw new Error(`sail join --node ${h.w.node}: ${join.stderr.trim()}`);
    const certs = path.join(h.dir, 'certs');
    const agentConfig = patchAgentConfig(config, {
      logLevel: process.env.SAIL_DEMO_LOG ?? 'warn',
      certs: { dir: certs, ttl: '1h' },
      stateDir: path.join(h.dir, 'state'),
      runDir: path.join(h.dir, 'run'),
      workload: {
        address: h.ip,
        ...(h.w === CLIENT
          ? {}
          : {
              health: {
                http: { port: h.appPort, path: '/health' },
                intervalSeconds: 1,
                failureThreshold: 2,
                successThreshold: 1,
              },
            }),
      },
      capture: { mode: 'none' },
      dns: { enabled: false },
      proxy: { enabled: false },
      proxyless: { enabled: false },
      controlPlane: {
        caAddress: `${this.prefix}.2:${this.cpPorts.ca}`,
        pilotAddress: `${this.prefix}.2:${this.cpPorts.pilot}`,
      },
      status: { listen: `${h.ip}:${h.statusPort}` },
    });
    const agent = this.spawn(
      [process.execPath, SAIL_JS, 'node-agent', '--config', agentConfig],
      `node-agent ${h.w.node}`,
    );
    await this.waitHttp(
      agent,
      `http://${h.ip}:${h.statusPort}/healthz/ready`,
      `the agent of ${h.w.node}`,
    );

    const proxyConfig = path.join(h.dir, 'proxy.yaml');
    fs.writeFileSync(
      proxyConfig,
      YAML.stringify({
        node: { name: h.w.node, ip: h.ip, namespace: NAMESPACE },
        labels: { app: h.w.service, version: h.w.version },
        pilotAddress: `${this.prefix}.2:${this.cpPorts.pilot}`,
        certsDir: certs,
        stateDir: path.join(h.dir, 'proxy-state'),
        traffic: { mode: 'explicit', outboundBindHost: h.outbound },
        adminListen: `${h.ip}:${h.adminPort}`,
        metricsListen: `${h.ip}:${h.metricsPort}`,
        logLevel: process.env.SAIL_DEMO_LOG ?? 'warn',
      }),
    );
    const proxy = this.spawn(
      [process.execPath, SAIL_JS, 'proxy', '--config', proxyConfig],
      `proxy ${h.w.node}`,
    );
    await this.waitHttp(proxy, `http://${h.ip}:${h.adminPort}/ready`, `the proxy of ${h.w.node}`);
    say(
      `  ${h.w.node.padEnd(10)} ${h.ip.padEnd(16)} ${`${h.w.service} ${h.w.version}`.padEnd(15)} ready: identity ${h.w.sa}, ${h.w === CLIENT ? 'no app' : `app 127.0.0.1:${h.appPort}`}, proxy outbound ${h.outbound}:9080`,
    );
  }

  private async waitHttp(p: LabProcess, url: string, what: string): Promise<void> {
    await waitFor(
      async () => {
        if (!p.running) throw new Error(`${what} exited: ${p.tail()}`);
        const res = await fetch(url, { signal: AbortSignal.timeout(2_000) }).catch(() => undefined);
        return res?.status === 200;
      },
      { timeoutMs: 60_000, intervalMs: 250, what: `${what} ready (${url})` },
    ).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; its output: ${p.tail()}`);
    });
  }

  apply(docs: readonly Doc[]): Promise<void> {
    return sailApply(this.dataDir, this.dir, docs);
  }

  async call(opts: CallOptions): Promise<CallSummary> {
    const h = this.hosts.get(CLIENT.node) as Host;
    const { argv, timeoutMs } = callCommand(opts, h.outbound);
    const r = await hostExec(process.execPath, argv, { timeoutMs });
    return parseCallSummary(r.stdout, r.stderr, r.code);
  }

  howTo(): string[] {
    const page = this.hosts.get(CLIENT.node) as Host;
    const rev2 = this.hosts.get('vmrev2') as Host;
    const admin = `unix://${path.join(this.dataDir, 'admin.sock')}`;
    return [
      "Call productpage yourself (through the client host's proxy, explicit mode: dial it, name the service in Host):",
      `  curl -s -H 'Host: productpage:9080' http://${page.outbound}:9080/productpage`,
      `  curl -s -H 'Host: productpage:9080' -H 'end-user: jason' http://${page.outbound}:9080/productpage`,
      'Metrics (Istio standard metrics, Prometheus text) and status:',
      `  curl -s http://${rev2.ip}:${rev2.metricsPort}/stats/prometheus | grep istio_requests_total`,
      `  curl -s http://${rev2.ip}:${rev2.statusPort}/metrics      # the node agent (identity only here)`,
      `  curl -s http://${rev2.ip}:${rev2.adminPort}/clusters     # proxy admin`,
      'Routes and config on the control plane:',
      `  ${process.execPath} ${SAIL_JS} get virtualservices --server ${admin}`,
      `  ${process.execPath} ${SAIL_JS} proxy-config vmpage --server ${admin}`,
      `Hosts: ${[...this.hosts.values()].map(h => `${h.w.node} ${h.ip} (${h.w.service} ${h.w.version})`).join(', ')}`,
      `Files: ${this.dir}`,
    ];
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(this.procs.map(p => p.stop(15_000)));
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
