/**
 * The demo's main topology (root): the control plane and one "VM" per host, each a network
 * namespace on one bridge (test/helpers/mesh-lab.ts), joined exactly as a real VM is: `sail token
 * create` on the control plane, `sail join` then `sail node-agent` (as root) on the VM. The
 * agents capture traffic with iptables, so the applications call each other by plain name
 * (http://reviews:9080) and every hop is mutual TLS between two proxies.
 *
 *   cp         10.A.B.2   sail control-plane (:15012 CA, :15010 pilot, :15014 admin), LAN DNS
 *   vmsleep    10.A.B.11  the client ("browser"): no app ┐ each: sail node-agent (capture,
 *   vmpage     10.A.B.12  productpage v1   ┐             │ DNS, the proxy as the proxy user;
 *   vmdetails  10.A.B.13  details v1       │ the app     │ status :15020, proxy admin
 *   vmrev1     10.A.B.14  reviews v1       │ on :9080    │ 127.0.0.1:15000, metrics :15090)
 *   vmrev2     10.A.B.15  reviews v2       │             │
 *   vmrev3     10.A.B.16  reviews v3       │             │
 *   vmratings  10.A.B.17  ratings v1       ┘             ┘
 *   VIPs 10.A.(B+1).1-4: productpage, details, reviews, ratings (ServiceEntry addresses)
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CP, hostExec, type LabProcess, MeshLab } from '../test/helpers/mesh-lab';
import { waitFor } from '../test/helpers/wait-for';
import type { CallSummary } from './bookinfo-apps';
import {
  destinationRules,
  type Doc,
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
  WORKLOADS,
} from './mesh';

/** The system user the agents run the proxy as: the package's `sail-proxy`, else `nobody`. */
async function proxyUser(): Promise<string> {
  if ((await hostExec('getent', ['passwd', 'sail-proxy'])).code === 0) return 'sail-proxy';
  return 'nobody';
}

/** BookInfo on VMs in network namespaces; see the file comment. */
export class NamespacesMesh implements BookinfoMesh {
  readonly kind = 'namespaces';
  private readonly agents = new Map<string, LabProcess>();
  private closed = false;

  private constructor(
    private readonly lab: MeshLab,
    private readonly dataDir: string,
  ) {}

  /**
   * Builds the lab, starts the control plane and the apps, applies the ServiceEntries,
   * DestinationRules and STRICT mTLS, joins every VM and waits until every agent is ready.
   * On failure everything made so far is removed.
   */
  static async create(say: Say): Promise<NamespacesMesh> {
    await MeshLab.sweep();
    const lab = await MeshLab.create({ vms: HOSTS.map(w => w.node) });
    const mesh = new NamespacesMesh(lab, path.join(lab.dir, 'control-plane'));
    try {
      await mesh.start(say);
    } catch (err) {
      await mesh.close().catch(() => {});
      throw err;
    }
    return mesh;
  }

  private async start(say: Say): Promise<void> {
    const { lab } = this;
    say(
      `Lab ${lab.tag}: bridge ${lab.bridge} ${lab.subnet}, namespaces ${lab.nodes.map(n => lab.netns(n)).join(', ')}`,
    );
    const cp = lab.spawn(CP, [process.execPath, ...controlPlaneArgs(this.dataDir, lab.ip(CP))], {
      name: 'control-plane',
    });
    await cp.waitForOutput('Admin HTTPS listening', 30_000);
    say(
      `Control plane up in ${lab.netns(CP)} (${lab.ip(CP)}): CA :15012, pilot :15010, admin :15014`,
    );

    await Promise.all(
      WORKLOADS.map(async w => {
        const app = lab.spawn(
          w.node,
          [
            process.execPath,
            APPS_JS,
            'serve',
            '--service',
            w.service,
            '--version',
            w.version,
            '--node',
            w.node,
          ],
          { name: `${w.service}-${w.version}` },
        );
        await app.waitForOutput('"event":"listening"', 15_000);
      }),
    );
    const vips = Object.fromEntries(SERVICES.map((s, i) => [s, lab.vip(i + 1)])) as Record<
      Service,
      string
    >;
    await this.apply([...serviceEntries(vips), ...destinationRules(), strictMtls]);
    say(
      `Applied ServiceEntries (${SERVICES.map(s => `${s} ${vips[s]}`).join(', ')}), DestinationRules (subsets by version), PeerAuthentication STRICT`,
    );

    const user = await proxyUser();
    const files = await Promise.all(HOSTS.map(w => this.join(w, user)));
    say(
      `Joined ${HOSTS.length} VMs (sail token create, then sail join on each); starting the node agents`,
    );
    await Promise.all(HOSTS.map((w, i) => this.startAgent(w, files[i] as string, say)));
  }

  /** `sail token create` + `sail join` for one VM; resolves with the agent config to run. */
  private async join(w: Workload, user: string): Promise<string> {
    const { lab } = this;
    const token = await createToken(this.dataDir, w);
    const dir = path.join(lab.dir, w.node);
    fs.mkdirSync(dir, { recursive: true });
    const config = path.join(dir, 'node-agent.yaml');
    await lab.run(
      w.node,
      [
        process.execPath,
        ...joinArgs({
          w,
          controlPlane: lab.ip(CP),
          token,
          rootCert: path.join(this.dataDir, 'root-cert.pem'),
          ...(w === CLIENT ? {} : { port: SERVICE_PORT }),
          config,
        }),
      ],
      { timeoutMs: 30_000 },
    );
    // Six "hosts" share this machine's file system: nothing may default to /var or /run.
    return patchAgentConfig(config, {
      logLevel: process.env.SAIL_DEMO_LOG ?? 'warn',
      certs: { dir: path.join(dir, 'certs'), ttl: '1h' },
      stateDir: path.join(dir, 'state'),
      runDir: path.join(dir, 'run'),
      workload: {
        address: lab.ip(w.node),
        ...(w === CLIENT
          ? {}
          : {
              health: {
                http: { port: SERVICE_PORT, path: '/health' },
                intervalSeconds: 1,
                failureThreshold: 2,
                successThreshold: 1,
              },
            }),
      },
      capture: { mode: 'redirect', excludeInboundPorts: '22' },
      dns: { enabled: true },
      proxy: { enabled: true, user, stopGrace: '2s' },
      status: { listen: '127.0.0.1:15020' },
    });
  }

  private async startAgent(w: Workload, config: string, say: Say): Promise<void> {
    const { lab } = this;
    const agent = lab.spawn(w.node, [process.execPath, SAIL_JS, 'node-agent', '--config', config], {
      name: 'node-agent',
    });
    this.agents.set(w.node, agent);
    await waitFor(
      async () => {
        if (!agent.running) throw new Error(`the agent in ${w.node} exited: ${agent.tail()}`);
        const r = await lab.curl(w.node, 'http://127.0.0.1:15020/healthz/ready', {
          timeoutMs: 2_000,
        });
        return r.status === 200;
      },
      { timeoutMs: 60_000, intervalMs: 250, what: `the node agent in ${w.node} ready` },
    ).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; agent output: ${agent.tail()}`);
    });
    say(
      `  ${w.node.padEnd(10)} ${lab.ip(w.node).padEnd(13)} ${`${w.service} ${w.version}`.padEnd(15)} ready: spiffe://cluster.local/ns/default/sa/${w.sa}, capture on, proxy ready`,
    );
  }

  apply(docs: readonly Doc[]): Promise<void> {
    return sailApply(this.dataDir, this.lab.dir, docs);
  }

  async call(opts: CallOptions): Promise<CallSummary> {
    const { argv, timeoutMs } = callCommand(opts);
    const r = await this.lab.exec(CLIENT.node, [process.execPath, ...argv], { timeoutMs });
    return parseCallSummary(r.stdout, r.stderr, r.code);
  }

  howTo(): string[] {
    const { lab } = this;
    const ns = (node: string) => lab.netns(node);
    return [
      "Call productpage yourself (from the client VM, by name, through its proxy, as Istio's sleep sample does):",
      `  sudo ip netns exec ${ns(CLIENT.node)} curl -s http://productpage:9080/productpage`,
      `  sudo ip netns exec ${ns(CLIENT.node)} curl -s -H 'end-user: jason' http://productpage:9080/productpage`,
      'Metrics (Istio standard metrics, Prometheus text) and status, in any VM:',
      `  sudo ip netns exec ${ns('vmrev2')} curl -s http://127.0.0.1:15090/stats/prometheus | grep istio_requests_total`,
      `  sudo ip netns exec ${ns('vmrev2')} curl -s http://127.0.0.1:15020/metrics      # the node agent`,
      `  sudo ip netns exec ${ns('vmrev2')} ${process.execPath} ${SAIL_JS} status`,
      `  sudo ip netns exec ${ns('vmrev2')} curl -s http://127.0.0.1:15000/clusters     # proxy admin`,
      'Routes and config on the control plane:',
      `  sudo ${process.execPath} ${SAIL_JS} get virtualservices --server unix://${path.join(this.dataDir, 'admin.sock')}`,
      `  sudo ${process.execPath} ${SAIL_JS} proxy-config vmpage --server unix://${path.join(this.dataDir, 'admin.sock')}`,
      `VMs: ${HOSTS.map(w => `${ns(w.node)} (${lab.ip(w.node)}, ${w.service} ${w.version})`).join(', ')}`,
      `Control plane: ${ns(CP)} (${lab.ip(CP)}), data in ${this.dataDir}`,
    ];
  }

  /** Stops the agents (they remove their capture), then everything else, then the lab. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.agents.values()].map(a => a.stop(15_000)));
    await this.lab.destroy();
  }
}
