import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { AlreadyStartedError, ClosedError } from '../common/errors';
import { silentLogger } from '../common/logging';
import { LogCapture } from '../test/helpers/log-capture';
import { TestCa } from '../test/helpers/test-ca';
import { makeTmpDir } from '../test/helpers/tmp-dir';
import { waitFor } from '../test/helpers/wait-for';
import { parseNodeAgentConfig } from './config';
import { StartAbortedError } from './errors';
import { NodeAgent } from './node-agent';
import type { NodeAgentOptions } from './options';

const NODE = 'vm-1';
const SPIFFE = 'spiffe://cluster.local/ns/default/sa/reviews';

let tmp: { dir: string; cleanup: () => void };
let ca: TestCa;
let agents: NodeAgent[];

beforeEach(async () => {
  tmp = makeTmpDir('sail-agent-');
  ca = await TestCa.create();
  await ca.start(0);
  ca.assign(NODE, SPIFFE);
  agents = [];
  fs.writeFileSync(path.join(tmp.dir, 'root-cert.pem'), ca.rootPem);
  fs.writeFileSync(path.join(tmp.dir, 'join-token'), ca.createToken(NODE), { mode: 0o600 });
});

afterEach(async () => {
  for (const a of agents) await a.close();
  await ca.stop();
  tmp.cleanup();
});

/** Agent options from a config file in the temp dir, the way `sail node-agent` builds them. */
function options(extra: Partial<NodeAgentOptions> = {}): NodeAgentOptions {
  const yaml = `
nodeName: ${NODE}
controlPlane:
  caAddress: ${ca.address}
  pilotAddress: 127.0.0.1:15010
  mixerAddress: 127.0.0.1:9091
  rootCertFile: root-cert.pem
  tokenFile: join-token
workload: { namespace: default, serviceAccount: reviews }
certs: { dir: certs, ttl: 1h }
stateDir: state
runDir: run
status: { listen: 127.0.0.1:0 }
# Identity and status only: the mesh side (proxy, capture, DNS, relay) has its own tests.
proxy: { enabled: false }
capture: { mode: none }
dns: { enabled: false }
proxyless: { enabled: false }
`;
  const { settings } = parseNodeAgentConfig('node-agent.yaml', yaml, {
    baseDir: tmp.dir,
    hostname: 'h',
  });
  return {
    ...settings,
    logger: silentLogger(),
    processMetrics: false,
    identityTuning: { retryInitialMs: 20, retryMaxMs: 100, caRequestTimeoutMs: 2_000 },
    ...extra,
  };
}

function makeAgent(extra: Partial<NodeAgentOptions> = {}): NodeAgent {
  const agent = new NodeAgent(options(extra));
  agents.push(agent);
  return agent;
}

function get(
  address: string,
  urlPath: string,
): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(`http://${address}${urlPath}`, { agent: false }, res => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            type: String(res.headers['content-type']),
            body: Buffer.concat(chunks).toString('utf8'),
          }),
        );
      })
      .on('error', reject);
  });
}

describe('NodeAgent', () => {
  it('does no I/O in the constructor', () => {
    makeAgent();
    expect(fs.readdirSync(tmp.dir).sort()).toEqual(['join-token', 'root-cert.pem']);
  });

  it('starts with a join token, reports ready with its identity, and serves metrics', async () => {
    const logs = new LogCapture('info');
    const agent = makeAgent({ logger: logs.logger, processMetrics: true });
    const seen: string[] = [];
    agent.onCertificateChanged(id => seen.push(id.serialHex));
    await agent.start();

    expect(agent.identity?.spiffeId).toBe(SPIFFE);
    expect(seen).toEqual([agent.identity?.serialHex]);
    expect(fs.existsSync(path.join(tmp.dir, 'join-token'))).toBe(false);
    const address = agent.statusAddress!;
    expect(address).toMatch(/^127\.0\.0\.1:\d+$/);

    const ready = await get(address, '/healthz/ready');
    expect(ready.status).toBe(200);
    const body = JSON.parse(ready.body);
    expect(body).toEqual({
      ready: true,
      spiffeId: SPIFFE,
      notAfter: agent.identity!.notAfter.toISOString(),
      secondsLeft: expect.any(Number),
    });
    expect(body.secondsLeft).toBeGreaterThan(3500);
    expect(body.secondsLeft).toBeLessThanOrEqual(3600);

    const metrics = await get(address, '/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.type).toContain('text/plain');
    expect(metrics.body).toMatch(/^sail_agent_cert_expiry_seconds 3[56]\d\d(\.\d+)?$/m);
    expect(metrics.body).toContain(
      `sail_agent_cert_not_after_timestamp_seconds ${agent.identity!.notAfter.getTime() / 1000}`,
    );
    expect(metrics.body).toMatch(/^sail_agent_cert_rotations_total 1$/m);
    expect(metrics.body).toMatch(
      /^sail_agent_cert_rotation_errors_total\{reason="unavailable"\} 0$/m,
    );
    expect(metrics.body).toContain('process_cpu_user_seconds_total');

    expect(logs.find('Node agent ready', 'info')).toEqual([
      expect.objectContaining({ spiffeId: SPIFFE, address }),
    ]);
    expect(logs.text()).not.toContain('PRIVATE KEY');

    await agent.close();
    await agent.close(); // idempotent
    await expect(get(address, '/healthz/ready')).rejects.toThrow(/ECONNREFUSED/);
  });

  it('restarts from the certificate on disk while the CA is down, ready at once', async () => {
    const first = makeAgent();
    await first.start();
    const serial = first.identity!.serialHex;
    await first.close();
    await ca.stop();

    const second = makeAgent();
    await second.start();
    expect(second.identity?.serialHex).toBe(serial);
    const ready = await get(second.statusAddress!, '/healthz/ready');
    expect(ready.status).toBe(200);
    const metrics = await get(second.statusAddress!, '/metrics');
    expect(metrics.body).toMatch(/^sail_agent_cert_rotations_total 0$/m);
  });

  it('is not ready while it has no certificate, and close() aborts a start that is waiting', async () => {
    fs.rmSync(path.join(tmp.dir, 'join-token'));
    const agent = makeAgent();
    const starting = agent.start();
    const outcome = starting.then(
      () => 'started',
      (err: unknown) => err,
    );
    await waitFor(() => agent.statusAddress, { what: 'status server' });
    const ready = await get(agent.statusAddress!, '/healthz/ready');
    expect(ready.status).toBe(503);
    expect(JSON.parse(ready.body)).toEqual({
      ready: false,
      spiffeId: null,
      notAfter: null,
      secondsLeft: 0,
    });
    await waitFor(
      async () =>
        /sail_agent_cert_rotation_errors_total\{reason="no_credentials"\} [1-9]/.test(
          (await get(agent.statusAddress!, '/metrics')).body,
        ),
      {
        what: 'a no_credentials failure in the metrics',
      },
    );

    const closing = agent.close();
    expect(await outcome).toBeInstanceOf(StartAbortedError);
    await closing;
  });

  it('refuses a second start and a start after close', async () => {
    const agent = makeAgent();
    await agent.start();
    await expect(agent.start()).rejects.toBeInstanceOf(AlreadyStartedError);
    await agent.close();
    const closed = makeAgent();
    await closed.close();
    await expect(closed.start()).rejects.toBeInstanceOf(ClosedError);
  });

  it('fails start() and releases everything when the status port is taken', async () => {
    const blocker = net.createServer();
    await new Promise<void>(resolve => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const agent = makeAgent({ status: { listen: `127.0.0.1:${port}` } });
      await expect(agent.start()).rejects.toMatchObject({ code: 'EADDRINUSE' });
      expect(ca.calls).toHaveLength(0);
    } finally {
      await new Promise(resolve => blocker.close(resolve));
    }
  });
});
