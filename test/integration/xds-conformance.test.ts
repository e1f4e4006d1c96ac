/**
 * Pilot against an independent xDS client: gRPC's own proxyless client (@grpc/grpc-js-xds, an
 * `xds:///HOST:PORT` target, bootstrap pointed at pilot's plaintext xDS listener) calling real gRPC
 * servers that registered themselves as workloads, all against a real `sail control-plane`
 * process from the build, configured with the real CLI (`sail apply`).
 *
 * The echo servers register the way a node agent does: a join token (`sail token create`), a
 * workload certificate from the CA with it, then the Registration stream to pilot over mTLS,
 * reconnecting with backoff when it drops. Each server listens on its own loopback address
 * (127.0.0.2, .3, ...; Linux routes 127/8 to lo): the registry keeps one workload per address
 * (docs/registry.md), so two registered hosts on distinct ports of one address would be one
 * endpoint.
 *
 * Shown: a header match routes to v2; an 80/20 split holds over 1,000 calls; a fault abort returns
 * its status without reaching a server; endpoints follow registration, deregistration, a dropped
 * stream (after the grace period) and health; the client keeps working while pilot is down, is
 * served the endpoints it had when it reconnects before the hosts have registered again, and
 * follows a change applied after the restart; `sail proxy-config` shows what the client ACKed.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { register as registerGrpcXds } from '@grpc/grpc-js-xds';
import * as YAML from 'yaml';
import {
  callEcho,
  EchoClient,
  type EchoServer,
  startEchoServer,
  tallyCalls,
} from '../helpers/echo-grpc';
import { makeCsr, TestCaClient } from '../helpers/ca-client';
import { TestRegistrationAgent } from '../helpers/registration-agent';
import { SAIL_JS, SailProcess, sailBuilt } from '../helpers/sail-process';
import { makeTmpDir } from '../helpers/tmp-dir';
import { waitFor } from '../helpers/wait-for';

const run = sailBuilt() ? describe : describe.skip;
if (!sailBuilt())
  console.warn('xDS conformance test skipped: run `npm run build` first (npm test does)');

jest.setTimeout(60_000);

// grpc-js-xds keeps a priority child it deactivated (when a cluster's localities change, e.g.
// all its endpoints go away) for 15 minutes, on a timer that holds the process and that closing
// the client does not clear: after a failed case, jest would wait that long to exit. Long timers
// in this file's environment (grpc-js-xds runs in it) do not hold the process.
const realSetTimeout = global.setTimeout;
global.setTimeout = Object.assign(
  (fn: (...args: unknown[]) => void, ms?: number, ...args: unknown[]) => {
    const t = realSetTimeout(fn, ms, ...args);
    if ((ms ?? 0) >= 60_000) t.unref();
    return t;
  },
  realSetTimeout,
) as typeof setTimeout;

const HOST = 'echo.default.svc.cluster.local';
const TARGET = `xds:///${HOST}:50051`;
const CLIENT_NODE = 'conformance-client';
const GRACE_MS = 6_000;

const dest = (subset: string, weight?: number) => ({
  destination: { host: HOST, subset },
  ...(weight === undefined ? {} : { weight }),
});

/** The service, its subsets, and one VirtualService with a route for each case. */
const MESH_CONFIG = [
  {
    apiVersion: 'networking.istio.io/v1beta1',
    kind: 'ServiceEntry',
    metadata: { name: 'echo', namespace: 'default' },
    spec: {
      hosts: [HOST],
      location: 'MESH_INTERNAL',
      resolution: 'STATIC',
      ports: [{ number: 50051, name: 'grpc', protocol: 'GRPC' }],
      workloadSelector: { labels: { app: 'echo' } },
    },
  },
  {
    apiVersion: 'networking.istio.io/v1beta1',
    kind: 'DestinationRule',
    metadata: { name: 'echo', namespace: 'default' },
    spec: {
      host: HOST,
      subsets: [
        { name: 'v1', labels: { version: 'v1' } },
        { name: 'v2', labels: { version: 'v2' } },
      ],
    },
  },
  {
    apiVersion: 'networking.istio.io/v1beta1',
    kind: 'VirtualService',
    metadata: { name: 'echo', namespace: 'default' },
    spec: {
      hosts: [HOST],
      http: [
        {
          name: 'header-v2',
          match: [{ headers: { 'x-version': { exact: 'v2' } } }],
          route: [dest('v2')],
        },
        {
          name: 'split-80-20',
          match: [{ headers: { 'x-split': { exact: 'yes' } } }],
          route: [dest('v1', 80), dest('v2', 20)],
        },
        {
          name: 'abort-http',
          match: [{ headers: { 'x-fault': { exact: 'http' } } }],
          fault: { abort: { httpStatus: 503, percentage: { value: 100 } } },
          route: [dest('v1')],
        },
        {
          name: 'abort-grpc',
          match: [{ headers: { 'x-fault': { exact: 'grpc' } } }],
          fault: { abort: { grpcStatus: 'RESOURCE_EXHAUSTED', percentage: { value: 100 } } },
          route: [dest('v1')],
        },
        { name: 'default', route: [dest('v1')] },
      ],
    },
  },
];

/** Everything to v2: the change applied after pilot's restart. */
const ALL_TO_V2 = {
  apiVersion: 'networking.istio.io/v1beta1',
  kind: 'VirtualService',
  metadata: { name: 'echo', namespace: 'default' },
  spec: { hosts: [HOST], http: [{ name: 'all-v2', route: [dest('v2')] }] },
};

interface ProxyConfigItem {
  nodeId: string;
  resources: Record<
    string,
    { versionSent?: string; versionAcked?: string; nack?: unknown; resources: unknown[] }
  >;
}

run('xDS conformance: gRPC proxyless client against a real control plane', () => {
  const tmp = makeTmpDir('sail-xds-');
  const dataDir = path.join(tmp.dir, 'cp');
  const env = { SAIL_SERVER: `unix://${dataDir}/admin.sock` };
  let cp: SailProcess | undefined;
  let caAddress = '';
  let pilotAddress = '';
  let plaintextAddress = '';
  let rootsPem = '';
  const servers: Record<string, EchoServer> = {};
  const identities: Record<string, { certChainPem: string; keyPem: string }> = {};
  const agents: TestRegistrationAgent[] = [];
  let client: grpc.Client;

  const startControlPlane = async (ports?: { ca: string; pilot: string; plaintext: string }) => {
    const proc = new SailProcess([
      'control-plane',
      '--data-dir',
      dataDir,
      '--ca-listen',
      ports?.ca ?? '127.0.0.1:0',
      '--pilot-listen',
      ports?.pilot ?? '127.0.0.1:0',
      '--xds-plaintext-listen',
      ports?.plaintext ?? '127.0.0.1:0',
      '--admin-listen',
      '',
      '--debounce-after',
      '50ms',
      '--workload-grace',
      `${GRACE_MS}ms`,
      '--log-level',
      'info',
    ]);
    cp = proc;
    // Pilot logs "ready" after binding its listeners, and the CA starts first.
    await proc.waitForLog('Pilot ready', 20_000);
    const addressOf = (prefix: string) => {
      const line = proc.lines.find(l => String(l.msg).startsWith(prefix));
      if (!line) throw new Error(`control plane logged no "${prefix}" line`);
      return String(line.address);
    };
    caAddress = addressOf('CA listening');
    pilotAddress = addressOf('Pilot xDS (mTLS) listening');
    plaintextAddress = addressOf('Pilot xDS plaintext listener on');
    return proc;
  };

  /** Runs the sail CLI without blocking the event loop (the gRPC client keeps working meanwhile). */
  const sailAsync = (args: string[]) =>
    new Promise<{ status: number; stdout: string; stderr: string }>(resolve => {
      execFile(
        process.execPath,
        [SAIL_JS, ...args],
        { env: { ...process.env, ...env }, timeout: 15_000 },
        (err, stdout, stderr) =>
          resolve({ status: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
      );
    });

  const sail = async (args: string[]) => {
    const r = await sailAsync(args);
    if (r.status !== 0)
      throw new Error(`sail ${args.join(' ')} exited ${r.status}: ${r.stderr}${r.stdout}`);
    return r.stdout;
  };

  const apply = (docs: unknown[]) => {
    const file = path.join(tmp.dir, `apply-${Date.now()}.yaml`);
    fs.writeFileSync(file, docs.map(d => YAML.stringify(d)).join('---\n'));
    return sail(['apply', '-f', file]);
  };

  /** A workload certificate for `node`, the real way: a join token, then the CA. */
  const enroll = async (node: string) => {
    const token = (await sail(['token', 'create', '--node', node, '--sa', 'default/echo'])).trim();
    const { keyPem, csrPem } = await makeCsr();
    const ca = new TestCaClient({ address: caAddress, rootsPem });
    try {
      const res = await ca.create({ csr: csrPem }, token);
      identities[node] = {
        certChainPem: res.certChain.map(p => (p.endsWith('\n') ? p : `${p}\n`)).join(''),
        keyPem,
      };
    } finally {
      ca.close();
    }
  };

  const agentFor = (node: string, version: string) => {
    const server = servers[node]!;
    const agent = new TestRegistrationAgent({
      address: pilotAddress,
      rootsPem,
      identity: identities[node]!,
      registration: {
        node,
        namespace: 'default',
        serviceAccount: 'echo',
        address: server.host,
        labels: { app: 'echo', version },
        ports: [{ name: 'grpc', port: server.port }],
      },
    });
    agents.push(agent);
    return agent;
  };

  /** Waits until `n` default-route calls land as `want` says (checked on a fresh batch each time). */
  const waitForTally = (
    what: string,
    want: (byServer: Record<string, number>) => boolean,
    opts: { n?: number; metadata?: Record<string, string>; timeoutMs?: number } = {},
  ) => {
    let last: unknown;
    return waitFor(
      async () => {
        const t = await tallyCalls(client, opts.n ?? 20, {
          concurrency: 4,
          timeoutMs: 2_000,
          ...(opts.metadata ? { metadata: opts.metadata } : {}),
        });
        last = t;
        return Object.keys(t.errors).length === 0 && want(t.byServer) ? t : undefined;
      },
      {
        timeoutMs: opts.timeoutMs ?? 10_000,
        intervalMs: 50,
        what: `${what} (last: ${JSON.stringify(last)})`,
      },
    );
  };

  const proxyConfig = async (): Promise<ProxyConfigItem[]> =>
    JSON.parse(await sail(['proxy-config', CLIENT_NODE, '-o', 'json'])) as ProxyConfigItem[];

  /** Every xDS type the client uses was sent and ACKed at the same version, without a NACK. */
  const expectAllAcked = (items: ProxyConfigItem[]) => {
    expect(items).toHaveLength(1);
    const res = items[0]!.resources;
    for (const type of ['listeners', 'routes', 'clusters', 'endpoints']) {
      const w = res[type];
      expect({ type, sent: w?.versionSent, nack: w?.nack }).toEqual({
        type,
        sent: expect.any(String),
        nack: undefined,
      });
      expect({ type, acked: w?.versionAcked }).toEqual({ type, acked: w?.versionSent });
      expect(w?.resources.length).toBeGreaterThan(0);
    }
    return res;
  };

  beforeAll(async () => {
    await startControlPlane();
    rootsPem = fs.readFileSync(path.join(dataDir, 'root-cert.pem'), 'utf8');
    const layout: [string, string][] = [
      ['echo-v1-a', '127.0.0.2'],
      ['echo-v2-a', '127.0.0.3'],
      ['echo-v1-c', '127.0.0.4'],
    ];
    for (const [node, host] of layout) {
      servers[node] = await startEchoServer(node.replace(/^echo-/, ''), host);
      await enroll(node);
    }
    await apply(MESH_CONFIG);
    await Promise.all([agentFor('echo-v1-a', 'v1').start(), agentFor('echo-v2-a', 'v2').start()]);

    // gRPC reads its bootstrap once, on the first xds: channel (jest gives this file its own
    // module registry, so its own grpc-js-xds instance).
    process.env.GRPC_XDS_BOOTSTRAP_CONFIG = JSON.stringify({
      xds_servers: [
        {
          server_uri: plaintextAddress,
          channel_creds: [{ type: 'insecure' }],
          server_features: ['xds_v3'],
        },
      ],
      // grpc-js-xds refuses a node without a locality.
      node: { id: CLIENT_NODE, locality: {}, metadata: { NAMESPACE: 'default' } },
    });
    registerGrpcXds();
    client = new EchoClient(TARGET, grpc.credentials.createInsecure());
    await waitFor(() => callEcho(client, { timeoutMs: 2_000 }), {
      timeoutMs: 15_000,
      intervalMs: 100,
      what: 'a first call through xDS',
    });
  });

  afterAll(async () => {
    client?.close();
    for (const a of agents) a.close();
    for (const s of Object.values(servers)) s.close();
    await cp?.stop();
    tmp.cleanup();
  });

  it('routes by header match: x-version v2 to subset v2, everything else to v1', async () => {
    const withHeader = await tallyCalls(client, 50, { metadata: { 'x-version': 'v2' } });
    expect(withHeader).toEqual({ byServer: { 'v2-a': 50 }, errors: {}, total: 50 });
    const other = await tallyCalls(client, 50, { metadata: { 'x-version': 'v3' } });
    expect(other).toEqual({ byServer: { 'v1-a': 50 }, errors: {}, total: 50 });
    const without = await tallyCalls(client, 50);
    expect(without).toEqual({ byServer: { 'v1-a': 50 }, errors: {}, total: 50 });
  });

  it('shows the client in `sail proxy-config` with listeners, routes, clusters and endpoints ACKed', async () => {
    const res = expectAllAcked(await proxyConfig());
    const names = (type: string) =>
      (res[type]?.resources ?? []).map(r => {
        const o = r as Record<string, unknown>;
        return String(o.name ?? o.cluster_name ?? o.clusterName);
      });
    expect(names('listeners')).toEqual([`${HOST}:50051`]);
    expect(names('routes')).toEqual([`${HOST}:50051`]);
    expect(names('clusters').sort()).toEqual([
      `outbound|50051|v1|${HOST}`,
      `outbound|50051|v2|${HOST}`,
    ]);
  });

  it('splits 80/20 by weight over 1,000 calls', async () => {
    const t = await tallyCalls(client, 1_000, { metadata: { 'x-split': 'yes' }, concurrency: 20 });
    expect(t.errors).toEqual({});
    const v1 = (t.byServer['v1-a'] ?? 0) / t.total;
    expect(v1 + (t.byServer['v2-a'] ?? 0) / t.total).toBe(1);
    expect(v1).toBeGreaterThanOrEqual(0.74);
    expect(v1).toBeLessThanOrEqual(0.86);
  });

  it('aborts with the configured status without calling a server', async () => {
    const before = Object.values(servers).map(s => s.calls());
    const http = await tallyCalls(client, 20, { metadata: { 'x-fault': 'http' } });
    // httpStatus 503 becomes UNAVAILABLE, as gRPC maps HTTP statuses.
    expect(http.byServer).toEqual({});
    expect(Object.keys(http.errors)).toHaveLength(1);
    expect(Object.keys(http.errors)[0]).toMatch(/^UNAVAILABLE: /);
    const grpcStatus = await tallyCalls(client, 20, { metadata: { 'x-fault': 'grpc' } });
    expect(grpcStatus.byServer).toEqual({});
    expect(Object.keys(grpcStatus.errors)).toHaveLength(1);
    expect(Object.keys(grpcStatus.errors)[0]).toMatch(/^RESOURCE_EXHAUSTED: /);
    expect(Object.values(servers).map(s => s.calls())).toEqual(before);
    // The same client still reaches the servers without the header.
    expect(await callEcho(client)).toBe('v1-a');
  });

  it('follows registration, deregistration, a dropped stream after its grace period, and health', async () => {
    const hasC = (b: Record<string, number>) => (b['v1-c'] ?? 0) > 0 && (b['v1-a'] ?? 0) > 0;
    const onlyA = (b: Record<string, number>) => Object.keys(b).join() === 'v1-a';

    // A third v1 server registers: round robin reaches it.
    const first = agentFor('echo-v1-c', 'v1');
    await first.start();
    await waitForTally('v1-c receiving after it registered', hasC);

    // It deregisters cleanly: gone at once (no grace period).
    const deregisteredAt = Date.now();
    expect(await first.deregister('shutdown')).toMatchObject({ accepted: true });
    await waitForTally('v1-c gone after deregistration', onlyA);
    expect(Date.now() - deregisteredAt).toBeLessThan(GRACE_MS);
    expect((await tallyCalls(client, 40, { concurrency: 4 })).byServer).toEqual({ 'v1-a': 40 });

    // It registers again, then its stream is cut without a goodbye: it keeps its endpoint for
    // the grace period, then leaves.
    const second = agentFor('echo-v1-c', 'v1');
    await second.start();
    await waitForTally('v1-c receiving after it registered again', hasC);
    second.cut();
    const cutAt = Date.now();
    const during = await tallyCalls(client, 20, { concurrency: 4 });
    expect(Date.now() - cutAt).toBeLessThan(GRACE_MS / 2);
    expect(during.errors).toEqual({});
    expect(during.byServer['v1-c']).toBeGreaterThan(0);
    await waitForTally('v1-c gone after the grace period', onlyA);
    expect(Date.now() - cutAt).toBeGreaterThanOrEqual(GRACE_MS - 100);

    // Health: unhealthy leaves the rotation, healthy comes back.
    const third = agentFor('echo-v1-c', 'v1');
    await third.start();
    await waitForTally('v1-c receiving after its third registration', hasC);
    expect(await third.reportHealth(false, 'probe failed')).toMatchObject({ accepted: true });
    await waitForTally('v1-c out of rotation while unhealthy', onlyA);
    expect((await tallyCalls(client, 40, { concurrency: 4 })).byServer).toEqual({ 'v1-a': 40 });
    expect(await third.reportHealth(true)).toMatchObject({ accepted: true });
    await waitForTally('v1-c back in rotation once healthy', hasC);
    await third.deregister();
    await waitForTally('v1-c gone after its last deregistration', onlyA);
  });

  it('keeps calling through a pilot restart, serves the endpoints it had until the hosts are back, then follows a change', async () => {
    const ports = { ca: caAddress, pilot: pilotAddress, plaintext: plaintextAddress };
    const hosts = agents.slice(0, 2) as [TestRegistrationAgent, TestRegistrationAgent];
    const regsBefore = hosts.map(h => h.registrations);

    // Calls in the background the whole time, each tagged with the phase it started in.
    type Phase = 'up' | 'down' | 'restarted' | 'hosts back';
    let phase: Phase = 'up';
    const results: { phase: Phase; result: string }[] = [];
    let stop = false;
    const loop = (async () => {
      while (!stop) {
        const p = phase;
        let result: string;
        try {
          result = await callEcho(client, { timeoutMs: 2_000 });
        } catch (err) {
          const e = err as grpc.ServiceError;
          result = `${grpc.status[e.code]}: ${e.details}`;
        }
        results.push({ phase: p, result });
        await new Promise(r => setTimeout(r, 20));
      }
    })();
    const of = (p: Phase) => results.filter(r => r.phase === p).map(r => r.result);
    const timings: Record<string, number> = {};

    try {
      await waitFor(() => of('up').length >= 10, { what: 'calls before the restart' });
      // The hosts come back only after the client has: pilot must serve the client the endpoints
      // it had before its restart, not an empty list while the hosts are still reconnecting.
      for (const h of hosts) h.holdReconnects();
      phase = 'down';
      const downAt = Date.now();
      expect(await cp!.stop()).toBe(0);
      expect(cp!.logs('Saved the registered workloads for the next start')).toHaveLength(1);
      // Down for a while: the client serves from the configuration it has.
      await waitFor(() => Date.now() - downAt >= 1_000 && of('down').length >= 20, {
        what: 'calls while pilot is down',
      });
      await startControlPlane(ports);
      const upAt = Date.now();
      timings.downMs = upAt - downAt;
      phase = 'restarted';
      expect(
        cp!.logs(
          'Restored the workloads registered before pilot restarted; keeping them for the grace period',
        ),
      ).toMatchObject([{ workloads: 2 }]);
      // gRPC's xDS client reconnects by itself (its backoff: about 1 s, 1.6 s, 2.6 s...).
      await waitFor(
        async () => {
          const r = await sailAsync(['proxy-config', CLIENT_NODE, '-o', 'json']);
          if (r.status !== 0) return undefined;
          const items = JSON.parse(r.stdout) as ProxyConfigItem[];
          const eds = items[0]?.resources.endpoints;
          return eds?.versionAcked !== undefined && eds.versionAcked === eds.versionSent;
        },
        {
          timeoutMs: 10_000,
          intervalMs: 100,
          what: 'the client ACKing endpoints from the restarted pilot',
        },
      );
      timings.clientBackMs = Date.now() - upAt;
      expect(hosts.map(h => h.connected)).toEqual([false, false]);
      const restored = await tallyCalls(client, 20);
      expect(restored).toEqual({ byServer: { 'v1-a': 20 }, errors: {}, total: 20 });
      // The hosts' agents reconnect and register again; nothing moves.
      phase = 'hosts back';
      for (const h of hosts) h.resumeReconnects();
      await Promise.all(hosts.map((h, i) => h.waitRegistered(regsBefore[i]! + 1)));
      timings.hostsBackMs = Date.now() - upAt;
      await waitFor(() => of('hosts back').length >= 10, {
        what: 'calls after the hosts came back',
      });
    } finally {
      stop = true;
      await loop;
    }
    // Within the grace period of the restored workloads (else this test's own timing is at fault).
    expect({ ...timings, withinGrace: timings.hostsBackMs! < GRACE_MS }).toMatchObject({
      withinGrace: true,
    });
    const tally = (list: string[]) =>
      list.reduce<Record<string, number>>((m, r) => ((m[r] = (m[r] ?? 0) + 1), m), {});
    for (const p of ['up', 'down', 'restarted', 'hosts back'] as const)
      expect({ phase: p, calls: tally(of(p)) }).toEqual({
        phase: p,
        calls: { 'v1-a': of(p).length },
      });

    // The configuration came back from the file store; a change now reaches the client.
    await apply([ALL_TO_V2]);
    await waitForTally('every call on v2 after the change', b => Object.keys(b).join() === 'v2-a');
    expect(await tallyCalls(client, 50, { metadata: { 'x-version': 'v1' } })).toEqual({
      byServer: { 'v2-a': 50 },
      errors: {},
      total: 50,
    });
    expectAllAcked(await proxyConfig());
  });
});
