/**
 * Proxyless gRPC through the node agent's xDS relay: the CA and pilot in this process, the relay
 * on a unix socket with a real host certificate from the CA, gRPC echo servers registered with
 * pilot (ServiceEntry + a registered workload), and an application that knows nothing of Sail
 * but a bootstrap file: a child process (grpc-js-xds reads GRPC_XDS_BOOTSTRAP once per process)
 * dialling `xds:///echo.default.svc.cluster.local:7070`.
 *
 *   app (child) ──unix socket, plaintext──▶ XdsRelay ──mTLS, host cert──▶ pilot
 *   app (child) ──────── (mutual TLS with XdsChannelCredentials) ───────▶ echo servers
 *
 * One of the echo servers is itself proxyless: a grpc-js-xds XdsServer (child process) on the
 * echo host, with that host's own relay and bootstrap, taking its listener and mTLS from pilot.
 */
import * as child from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import * as grpc from '@grpc/grpc-js';
import { clientCredentials, peerCertificate } from '../../common/grpc';
import { prom } from '../../common/metrics';
import { parseCertificate } from '../../common/pki';
import {
  grpcBootstrap,
  proxylessNodeId,
  type RelayIdentity,
  XdsRelay,
} from '../../node-agent/xds-relay';
import { Pilot } from '../../pilot/pilot';
import { GRPC_CERT_PROVIDER } from '../../pilot/xds/generate/tls';
import { ECHO_METHOD, type EchoServer, startEchoServer } from '../helpers/echo-grpc';
import {
  type ConfigDocument,
  type IdentityFiles,
  MeshControlPlane,
  NAMESPACE,
  spiffeIdOf,
  TRUST_DOMAIN,
  testLogger,
  writeIdentity,
} from '../helpers/proxy-pair';
import { TestRegistrationAgent } from '../helpers/registration-agent';
import { freePort } from '../helpers/sail-process';
import { makeTmpDir } from '../helpers/tmp-dir';
import { waitFor } from '../helpers/wait-for';
import { AdsTestClient } from '../helpers/xds-client';

jest.setTimeout(60_000);

const REPO_ROOT = path.resolve(__dirname, '..', '..');
const ENDPOINT_TYPE_URL = 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment';
/** The service port clients dial; endpoints map to the servers' real ports by port name. */
const SERVICE_PORT = 7070;
const fqdn = (name: string) => `${name}.${NAMESPACE}.svc.cluster.local`;
const target = (name: string) => `${fqdn(name)}:${SERVICE_PORT}`;

/**
 * The application: plain grpc-js + grpc-js-xds, configured only by GRPC_XDS_BOOTSTRAP. It reads
 * one JSON request per stdin line ({id, target, secure, timeoutMs}), makes one echo call on a
 * channel per (target, credentials) and prints {id, value} or {id, code, details}.
 */
const APP_SCRIPT = `
const grpc = require('@grpc/grpc-js');
const xds = require('@grpc/grpc-js-xds');
const readline = require('node:readline');
xds.register();
const raw = b => b;
const channels = new Map();
function clientFor(target, secure) {
  const key = target + (secure ? '|xds-creds' : '|insecure');
  let c = channels.get(key);
  if (!c) {
    const insecure = grpc.credentials.createInsecure();
    c = new grpc.Client('xds:///' + target, secure ? new xds.XdsChannelCredentials(insecure) : insecure);
    channels.set(key, c);
  }
  return c;
}
readline.createInterface({ input: process.stdin }).on('line', line => {
  const { id, target, secure, timeoutMs } = JSON.parse(line);
  clientFor(target, secure).makeUnaryRequest(${JSON.stringify(ECHO_METHOD)}, raw, raw, Buffer.alloc(0),
    new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, value) => {
      const out = err ? { id, code: err.code, details: err.details } : { id, value: value.toString() };
      process.stdout.write(JSON.stringify(out) + '\\n');
    });
});
process.stdout.write(JSON.stringify({ ready: true }) + '\\n');
`;

interface CallResult {
  readonly value?: string;
  readonly code?: number;
  readonly details?: string;
}

/** The application process and a promise-returning call. */
class AppProcess {
  private readonly proc: child.ChildProcess;
  private readonly pending = new Map<number, (r: CallResult) => void>();
  private nextId = 1;
  private stderr = '';
  readonly ready: Promise<void>;

  constructor(bootstrapFile: string) {
    this.proc = child.spawn(process.execPath, ['-e', APP_SCRIPT], {
      cwd: REPO_ROOT, // `node -e` resolves require() from the working directory
      env: { ...process.env, GRPC_XDS_BOOTSTRAP: bootstrapFile, GRPC_XDS_BOOTSTRAP_CONFIG: '' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.proc.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    let onReady: () => void = () => undefined;
    this.ready = new Promise<void>(resolve => (onReady = resolve));
    readline.createInterface({ input: this.proc.stdout! }).on('line', line => {
      const msg = JSON.parse(line) as CallResult & { id?: number; ready?: boolean };
      if (msg.ready) onReady();
      if (msg.id !== undefined) {
        this.pending.get(msg.id)?.(msg);
        this.pending.delete(msg.id);
      }
    });
  }

  /** One echo call to `xds:///target`; `secure` uses XdsChannelCredentials. */
  call(t: string, opts: { secure?: boolean; timeoutMs?: number } = {}): Promise<CallResult> {
    const id = this.nextId++;
    const timeoutMs = opts.timeoutMs ?? 5_000;
    return new Promise<CallResult>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`app call ${id} got no answer; app stderr: ${this.stderr}`)),
        timeoutMs + 5_000,
      );
      this.pending.set(id, r => {
        clearTimeout(timer);
        resolve(r);
      });
      this.proc.stdin!.write(
        JSON.stringify({ id, target: t, secure: opts.secure ?? false, timeoutMs }) + '\n',
      );
    });
  }

  /** Waits until a call answers with a value (xDS configuration may still be arriving). */
  async callUntilAnswered(
    t: string,
    opts: { secure?: boolean; timeoutMs?: number } = {},
  ): Promise<string> {
    let last: CallResult | undefined;
    return waitFor(
      async () => {
        last = await this.call(t, { secure: opts.secure, timeoutMs: 2_000 });
        return last.value;
      },
      { timeoutMs: opts.timeoutMs ?? 15_000, intervalMs: 100, what: `an answer from xds:///${t}` },
    ).catch((err: unknown) => {
      // The last call's status says why (the message above is built before any call).
      throw new Error(`${(err as Error).message} (last: ${JSON.stringify(last)})`);
    });
  }

  close(): Promise<void> {
    return killChild(this.proc);
  }
}

/** SIGKILLs a child process and waits for it to be gone (at once when it already is). */
async function killChild(proc: child.ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise(r => proc.once('exit', r));
  proc.kill('SIGKILL');
  await exited;
}

/**
 * A proxyless gRPC server: grpc-js-xds's XdsServer on 127.0.0.1:PORT (argv), configured only by
 * GRPC_XDS_BOOTSTRAP. Its listener, and so its mTLS, comes from pilot through the host's relay.
 * It answers `xds-server:` and the caller's SANs (`none` without a client certificate), and
 * prints {listening: PORT} once it serves (XdsServer calls back from bindAsync only then: after
 * its listener came from pilot).
 */
const XDS_SERVER_SCRIPT = `
const grpc = require('@grpc/grpc-js');
const xds = require('@grpc/grpc-js-xds');
xds.register();
const raw = b => b;
const server = new xds.XdsServer();
server.addService(
  { Call: { path: ${JSON.stringify(ECHO_METHOD)}, requestStream: false, responseStream: false,
      requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw } },
  { Call: (call, cb) => {
      const san = call.getAuthContext().sslPeerCertificate?.subjectaltname;
      cb(null, Buffer.from('xds-server:' + (san || 'none')));
  } },
);
server.bindAsync('127.0.0.1:' + process.argv[1],
  new xds.XdsServerCredentials(grpc.ServerCredentials.createInsecure()), (err, port) => {
    if (err) { process.stderr.write(err.message + '\\n'); process.exit(1); }
    process.stdout.write(JSON.stringify({ listening: port }) + '\\n');
  });
`;

/** A gRPC echo server that requires a client certificate from the mesh and answers with its SPIFFE ID. */
async function startMtlsEchoServer(
  id: IdentityFiles,
): Promise<{ port: number; close: () => void }> {
  const server = new grpc.Server();
  const passthrough = (b: Buffer) => b;
  server.addService(
    {
      Call: {
        path: ECHO_METHOD,
        requestStream: false,
        responseStream: false,
        requestSerialize: passthrough,
        requestDeserialize: passthrough,
        responseSerialize: passthrough,
        responseDeserialize: passthrough,
      },
    },
    {
      Call: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        const der = peerCertificate(call);
        cb(null, Buffer.from(`mtls:${der ? parseCertificate(der).uris.join(',') : 'none'}`));
      },
    },
  );
  const creds = grpc.ServerCredentials.createSsl(
    Buffer.from(id.rootsPem),
    [{ cert_chain: Buffer.from(id.certChainPem), private_key: Buffer.from(id.keyPem) }],
    true, // require a client certificate signed by the mesh roots
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', creds, (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { port, close: () => server.forceShutdown() };
}

function serviceEntry(name: string, portName: string): ConfigDocument {
  return {
    apiVersion: 'networking.istio.io/v1beta1',
    kind: 'ServiceEntry',
    metadata: { name, namespace: NAMESPACE },
    spec: {
      hosts: [fqdn(name)],
      location: 'MESH_INTERNAL',
      resolution: 'STATIC',
      ports: [{ number: SERVICE_PORT, name: portName, protocol: 'GRPC' }],
      workloadSelector: { labels: { app: 'echo' } },
    },
  };
}

/** The echo host's PeerAuthentication: port-level modes over PERMISSIVE. */
function echoPeerAuthentication(ports: Record<number, 'STRICT' | 'PERMISSIVE'>): ConfigDocument {
  return {
    apiVersion: 'security.istio.io/v1beta1',
    kind: 'PeerAuthentication',
    metadata: { name: 'echo', namespace: NAMESPACE },
    spec: {
      selector: { matchLabels: { app: 'echo' } },
      portLevelMtls: Object.fromEntries(
        Object.entries(ports).map(([port, mode]) => [port, { mode }]),
      ),
    },
  };
}

function destinationRule(name: string, tls: Record<string, unknown>): ConfigDocument {
  return {
    apiVersion: 'networking.istio.io/v1beta1',
    kind: 'DestinationRule',
    metadata: { name, namespace: NAMESPACE },
    spec: { host: fqdn(name), trafficPolicy: { tls: { mode: 'ISTIO_MUTUAL', ...tls } } },
  };
}

describe('proxyless gRPC through the node agent xDS relay', () => {
  const logger = testLogger();
  let tmp: { dir: string; cleanup: () => void };
  let cp: MeshControlPlane;
  let pilot2: Pilot | undefined;
  let plain: EchoServer;
  let late: EchoServer;
  let mtls: { port: number; close: () => void };
  let xdsServer: child.ChildProcess;
  let xdsServerOut = '';
  let xdsPort: number;
  let registration: TestRegistrationAgent;
  let appIdentity: IdentityFiles;
  let relay: XdsRelay;
  let registry: prom.Registry;
  let socketPath: string;
  let pilotAddress: string;
  let app: AppProcess;
  const closers: (() => Promise<void> | void)[] = [];

  /**
   * A host's part for proxyless applications, as the node agent does it: the host's certificate
   * files, the xDS relay on a unix socket (to pilot with that certificate), the gRPC bootstrap.
   */
  async function meshHost(node: string, identity: IdentityFiles, reg: prom.Registry) {
    const certsDir = path.join(tmp.dir, node, 'certs');
    await writeIdentity(certsDir, identity);
    const hostSocket = path.join(tmp.dir, node, 'run', 'xds.sock');
    const hostRelay = new XdsRelay({
      logger,
      registry: reg,
      socketPath: hostSocket,
      pilotAddress: cp.pilotAddress,
      pilotSpiffeId: cp.pilotSpiffeId,
      identity: (): RelayIdentity => identity,
      reconnectBackoff: { initialMs: 100, maxMs: 1_000 },
    });
    closers.push(() => hostRelay.close());
    await hostRelay.start();
    const bootstrap = grpcBootstrap({
      socketPath: hostSocket,
      nodeId: proxylessNodeId(node, NAMESPACE),
      namespace: NAMESPACE,
      certsDir,
      refreshInterval: '5s',
    });
    const bootstrapFile = path.join(tmp.dir, node, 'run', 'grpc-bootstrap.json');
    fs.writeFileSync(bootstrapFile, JSON.stringify(bootstrap, null, 2));
    return { relay: hostRelay, socketPath: hostSocket, bootstrap, bootstrapFile };
  }

  beforeAll(async () => {
    tmp = makeTmpDir('sail-proxyless-');
    cp = await MeshControlPlane.start({ logger, dataDir: path.join(tmp.dir, 'cp') });
    pilotAddress = cp.pilotAddress;

    // The echo host: three servers, registered with pilot as one workload (app=echo).
    const echoIdentity = await cp.enroll('vm-echo', 'echo');
    plain = await startEchoServer('plain');
    late = await startEchoServer('late');
    mtls = await startMtlsEchoServer(echoIdentity);
    xdsPort = await freePort();
    closers.push(
      () => plain.close(),
      () => late.close(),
      () => mtls.close(),
    );
    await cp.apply([
      serviceEntry('echo', 'grpc'),
      serviceEntry('secure-echo', 'grpc-secure'),
      serviceEntry('strict-echo', 'grpc-strict'),
      serviceEntry('impostor-echo', 'grpc-impostor'),
      serviceEntry('late-echo', 'grpc-late'),
      serviceEntry('xds-echo', 'grpc-xds'),
      // secure-echo: mTLS because a DestinationRule says ISTIO_MUTUAL.
      destinationRule('secure-echo', {}),
      // strict-echo: mTLS because the server's port is STRICT (pilot's proxyless auto mTLS).
      echoPeerAuthentication({ [mtls.port]: 'STRICT', [xdsPort]: 'STRICT' }),
      // impostor-echo: the client expects another identity than the server's.
      destinationRule('impostor-echo', { subjectAltNames: [spiffeIdOf('someone-else')] }),
    ]);
    registration = new TestRegistrationAgent({
      address: cp.pilotAddress,
      rootsPem: cp.rootsPem,
      identity: echoIdentity,
      registration: {
        node: 'vm-echo',
        namespace: NAMESPACE,
        serviceAccount: 'echo',
        address: '127.0.0.1',
        labels: { app: 'echo' },
        ports: [
          { name: 'grpc', port: plain.port },
          { name: 'grpc-secure', port: mtls.port },
          { name: 'grpc-strict', port: mtls.port },
          { name: 'grpc-impostor', port: mtls.port },
          { name: 'grpc-late', port: late.port },
          { name: 'grpc-xds', port: xdsPort },
        ],
      },
    });
    closers.push(() => registration.close());
    await registration.start();

    // The echo host runs a proxyless gRPC server too: its own relay, bootstrap and identity.
    const echoHost = await meshHost('vm-echo', echoIdentity, new prom.Registry());
    xdsServer = child.spawn(process.execPath, ['-e', XDS_SERVER_SCRIPT, String(xdsPort)], {
      cwd: REPO_ROOT,
      env: {
        ...process.env,
        GRPC_XDS_BOOTSTRAP: echoHost.bootstrapFile,
        GRPC_XDS_BOOTSTRAP_CONFIG: '',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    xdsServer.stdout!.on('data', (d: Buffer) => (xdsServerOut += d.toString()));
    xdsServer.stderr!.on('data', (d: Buffer) => (xdsServerOut += d.toString()));
    closers.push(() => killChild(xdsServer));

    // The application's host: its certificate files, the relay, the bootstrap.
    appIdentity = await cp.enroll('vm-app', 'app');
    registry = new prom.Registry();
    const appHost = await meshHost('vm-app', appIdentity, registry);
    ({ relay, socketPath } = appHost);
    expect(Object.keys(appHost.bootstrap.certificate_providers)).toEqual([GRPC_CERT_PROVIDER]);
    const { bootstrapFile } = appHost;
    app = new AppProcess(bootstrapFile);
    closers.push(() => app.close());
    await app.ready;
  });

  afterAll(async () => {
    for (const c of closers.reverse()) await c();
    await pilot2?.close();
    await cp?.close();
    tmp?.cleanup();
  });

  it('serves the socket to any local user', () => {
    expect(fs.statSync(socketPath).mode & 0o777).toBe(0o666);
  });

  it('resolves xds:/// targets through the relay and calls the registered server', async () => {
    expect(await app.callUntilAnswered(target('echo'))).toBe('plain');
    expect(relay.activeStreams).toBe(1); // one ADS stream for the whole process
    const text = await registry.metrics();
    expect(text).toMatch(/^sail_agent_xds_relay_streams 1$/m);
    expect(text).toMatch(/^sail_agent_xds_relay_messages_total\{direction="from_pilot"\} [1-9]/m);
  });

  it('makes the call mutual TLS with XdsChannelCredentials and the agent certificate files', async () => {
    // The server sees the application host's SPIFFE ID: the client presented the agent's certificate.
    expect(await app.callUntilAnswered(target('secure-echo'), { secure: true })).toBe(
      `mtls:${spiffeIdOf('app')}`,
    );
    // Without XdsChannelCredentials gRPC ignores the cluster's TLS settings: plaintext is refused.
    const insecure = await app.call(target('secure-echo'), { timeoutMs: 2_000 });
    expect(insecure.value).toBeUndefined();
    expect(insecure.code).toBe(grpc.status.UNAVAILABLE);
    // And a plaintext cluster stays plaintext with XdsChannelCredentials (its fallback).
    expect((await app.call(target('echo'), { secure: true })).value).toBe('plain');
  });

  it('uses mutual TLS without a DestinationRule when the server port is STRICT', async () => {
    expect(await app.callUntilAnswered(target('strict-echo'), { secure: true })).toBe(
      `mtls:${spiffeIdOf('app')}`,
    );
  });

  it('serves a proxyless gRPC server (XdsServer) its listener, with STRICT mutual TLS, from pilot', async () => {
    // The server asked pilot for xds.istio.io/grpc/lds/inbound/127.0.0.1:PORT through its
    // host's relay, and serves once the listener came: TLS with the echo host's certificate,
    // a client certificate required (the port is STRICT).
    await waitFor(() => /"listening":/.test(xdsServerOut), {
      timeoutMs: 15_000,
      what: 'the XdsServer serving',
    }).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; its output: ${xdsServerOut}`);
    });
    expect(await app.callUntilAnswered(target('xds-echo'), { secure: true })).toBe(
      `xds-server:URI:${spiffeIdOf('app')}`,
    );
    // A plaintext client gets nowhere.
    const plaintext = await app.call(target('xds-echo'), { timeoutMs: 2_000 });
    expect(plaintext.value).toBeUndefined();
    expect(plaintext.code).toBe(grpc.status.UNAVAILABLE);
  });

  it('serves it plaintext under PERMISSIVE, and tells sidecars to send it plaintext until it stops', async () => {
    // A sidecar's view of the two echo services: is each endpoint marked for auto mTLS?
    const sidecar = new AdsTestClient(
      cp.pilotAddress,
      clientCredentials(cp.rootsPem, cp.pilotSpiffeId, appIdentity),
      { id: `sidecar~127.0.0.1~vm-app.${NAMESPACE}~${NAMESPACE}.svc.cluster.local` },
    );
    closers.push(() => sidecar.close());
    const clusterOf = (name: string) => `outbound|${SERVICE_PORT}||${fqdn(name)}`;
    const names = [clusterOf('echo'), clusterOf('xds-echo')];
    type Cla = { clusterName: string; endpoints?: { lbEndpoints?: { metadata?: unknown }[] }[] };
    const modes = (r: { resources: Record<string, unknown>[] }) =>
      Object.fromEntries(
        (r.resources as Cla[]).map(c => [
          c.clusterName,
          c.endpoints?.[0]?.lbEndpoints?.[0]?.metadata === undefined ? 'plaintext' : 'mtls',
        ]),
      );

    // The XdsServer's port goes PERMISSIVE: it can only serve it plaintext.
    await cp.apply([echoPeerAuthentication({ [mtls.port]: 'STRICT', [xdsPort]: 'PERMISSIVE' })]);
    expect(await app.callUntilAnswered(target('xds-echo'))).toBe('xds-server:none');
    sidecar.request({ typeUrl: ENDPOINT_TYPE_URL, resourceNames: names });
    let r = await sidecar.next(10_000);
    // Pilot knows the host serves that port with an XdsServer (its stream asked for the
    // listener): no auto mTLS there. The host's other PERMISSIVE port keeps it.
    expect(modes(r)).toEqual({ [clusterOf('echo')]: 'mtls', [clusterOf('xds-echo')]: 'plaintext' });

    // The server stops: its port is an ordinary mesh port again, mTLS through the host's proxy.
    await killChild(xdsServer);
    sidecar.ack(r, names);
    r = await sidecar.next(10_000);
    expect(modes(r)).toEqual({ [clusterOf('echo')]: 'mtls', [clusterOf('xds-echo')]: 'mtls' });
  });

  it("refuses a server whose identity is not the one pilot's settings expect", async () => {
    // gRPC checks the server certificate against the SANs pilot sent (DestinationRule
    // subjectAltNames, else the service accounts of the service).
    let last: { value?: string; code?: number; details?: string } | undefined;
    await waitFor(
      async () => {
        last = await app.call(target('impostor-echo'), { secure: true, timeoutMs: 2_000 });
        return /No matching subject alternative name/.test(last.details ?? '');
      },
      {
        timeoutMs: 10_000,
        intervalMs: 100,
        what: `a refused handshake (last: ${JSON.stringify(last)})`,
      },
    );
    expect(last).toMatchObject({ code: grpc.status.UNAVAILABLE });
    expect(last?.value).toBeUndefined();
  });

  it('keeps the relay up while pilot is down and reconnects when pilot returns', async () => {
    await cp.pilot.close();
    await waitFor(() => relay.activeStreams === 0, { what: 'the relayed stream ending' });

    // gRPC keeps the configuration it has: the known target still answers.
    expect((await app.call(target('echo'))).value).toBe('plain');
    // A target it never asked for cannot be resolved while pilot is away.
    const unresolved = await app.call(target('late-echo'), { timeoutMs: 1_500 });
    expect(unresolved.value).toBeUndefined();
    expect([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED]).toContain(unresolved.code);
    expect(fs.statSync(socketPath).isSocket()).toBe(true);

    // Pilot comes back on the same address with the same store; the echo host re-registers.
    pilot2 = new Pilot({
      logger,
      listen: pilotAddress,
      tls: cp.ca.servingMaterial,
      store: { type: 'file', dataDir: path.join(tmp.dir, 'cp') },
      mesh: { trustDomain: TRUST_DOMAIN },
      debounce: { quietMs: 10, maxMs: 50 },
    });
    await pilot2.start();
    await registration.waitRegistered(2, 15_000);
    // The application's xDS client reconnects through the relay and fetches the new target.
    expect(await app.callUntilAnswered(target('late-echo'), { timeoutMs: 25_000 })).toBe('late');
    expect(relay.activeStreams).toBe(1);
  });

  it('answers UNAVAILABLE while the host has no certificate', async () => {
    const noIdSocket = path.join(tmp.dir, 'no-id', 'xds.sock');
    const noId = new XdsRelay({
      logger,
      registry: new prom.Registry(),
      socketPath: noIdSocket,
      pilotAddress,
      pilotSpiffeId: cp.pilotSpiffeId,
      identity: () => undefined,
    });
    closers.push(() => noId.close());
    await noId.start();
    const client = new grpc.Client(`unix://${noIdSocket}`, grpc.credentials.createInsecure());
    closers.push(() => client.close());
    const status = await new Promise<grpc.StatusObject>(resolve => {
      const call = client.makeBidiStreamRequest(
        '/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources',
        (b: Buffer) => b,
        (b: Buffer) => b,
        new grpc.Metadata(),
      );
      call.on('error', () => undefined);
      call.on('status', resolve);
      call.write(Buffer.alloc(0));
    });
    expect(status.code).toBe(grpc.status.UNAVAILABLE);
    expect(status.details).toMatch(/no workload certificate yet/);
  });
});
