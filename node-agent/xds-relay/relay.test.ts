/**
 * XdsRelay against a fake pilot: a real gRPC server on loopback with mTLS (the mesh CA's roots, a
 * serving certificate with the control plane's SPIFFE ID) that records what it receives and
 * answers as each test tells it. Applications are raw gRPC clients on the relay's unix socket.
 */
import * as child from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { peerCertificate, serverCredentials, StaticCertificateProvider } from '../../common/grpc';
import { prom } from '../../common/metrics';
import { parseCertificate } from '../../common/pki';
import { LogCapture } from '../../test/helpers/log-capture';
import { TestCa } from '../../test/helpers/test-ca';
import { makeTmpDir } from '../../test/helpers/tmp-dir';
import { waitFor } from '../../test/helpers/wait-for';
import { ADS_SERVICE, type AdsMethod, type RelayIdentity, XdsRelay } from './relay';

const raw = (b: Buffer) => b;
type ServerStream = grpc.ServerDuplexStream<Buffer, Buffer>;
type ClientStream = grpc.ClientDuplexStream<Buffer, Buffer>;

/** One stream pilot accepted. */
interface PilotStream {
  readonly method: AdsMethod;
  readonly call: ServerStream;
  /** The client certificate's URI SANs. */
  readonly peerUris: readonly string[];
  readonly received: Buffer[];
  cancelled: boolean;
  halfClosed: boolean;
}

/** A fake pilot: echoes every message back with a one-byte prefix, unless told otherwise. */
class FakePilot {
  readonly streams: PilotStream[] = [];
  private server: grpc.Server | undefined;
  port = 0;

  constructor(private readonly provider: StaticCertificateProvider) {}

  async start(port = this.port): Promise<void> {
    const server = new grpc.Server();
    const handler = (method: AdsMethod) => (call: ServerStream) => {
      const der = peerCertificate(call);
      const s: PilotStream = {
        method,
        call,
        peerUris: der ? parseCertificate(der).uris : [],
        received: [],
        cancelled: false,
        halfClosed: false,
      };
      this.streams.push(s);
      call.on('data', (m: Buffer) => {
        s.received.push(m);
        call.write(Buffer.concat([Buffer.from([0xee]), m]));
      });
      call.on('end', () => (s.halfClosed = true));
      call.on('cancelled', () => (s.cancelled = true));
      call.on('error', () => undefined);
    };
    const def = (method: AdsMethod): grpc.MethodDefinition<Buffer, Buffer> => ({
      path: `/${ADS_SERVICE}/${method}`,
      requestStream: true,
      responseStream: true,
      requestSerialize: raw,
      requestDeserialize: raw,
      responseSerialize: raw,
      responseDeserialize: raw,
    });
    server.addService(
      {
        StreamAggregatedResources: def('StreamAggregatedResources'),
        DeltaAggregatedResources: def('DeltaAggregatedResources'),
      },
      {
        StreamAggregatedResources: handler('StreamAggregatedResources'),
        DeltaAggregatedResources: handler('DeltaAggregatedResources'),
      },
    );
    this.port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`127.0.0.1:${port}`, serverCredentials(this.provider, true), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    this.server = server;
  }

  /** Cuts every connection at once, as a dying process does. */
  stop(): void {
    this.server?.forceShutdown();
    this.server = undefined;
  }
}

describe('XdsRelay', () => {
  let ca: TestCa;
  let pilot: FakePilot;
  let tmp: { dir: string; cleanup: () => void };
  let hostA: RelayIdentity;
  let hostB: RelayIdentity;
  const relays: XdsRelay[] = [];
  const clients: grpc.Client[] = [];
  const SA_A = 'spiffe://cluster.local/ns/default/sa/app-a';
  const SA_B = 'spiffe://cluster.local/ns/default/sa/app-b';

  async function identity(spiffeId: string): Promise<RelayIdentity> {
    const now = Date.now();
    const cert = await ca.issueWorkloadCert({
      node: 'vm-1',
      spiffeId,
      notBeforeMs: now - 60_000,
      notAfterMs: now + 3600_000,
    });
    return { certChainPem: cert.certChainPem, keyPem: cert.keyPem, rootsPem: ca.rootPem };
  }

  beforeAll(async () => {
    tmp = makeTmpDir('sail-xds-relay-');
    ca = await TestCa.create();
    const serving = await identity(ca.serverSpiffeId);
    pilot = new FakePilot(
      new StaticCertificateProvider(ca.rootPem, serving.certChainPem, serving.keyPem),
    );
    await pilot.start();
    hostA = await identity(SA_A);
    hostB = await identity(SA_B);
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await Promise.all(relays.splice(0).map(r => r.close()));
    pilot.streams.splice(0);
  });

  afterAll(() => {
    pilot.stop();
    tmp.cleanup();
  });

  function newRelay(
    opts: { identity?: () => RelayIdentity | undefined; socketPath?: string } = {},
  ): { relay: XdsRelay; registry: prom.Registry; socketPath: string; logs: LogCapture } {
    const registry = new prom.Registry();
    const logs = new LogCapture();
    const socketPath =
      opts.socketPath ?? path.join(tmp.dir, crypto.randomBytes(4).toString('hex'), 'xds.sock');
    const relay = new XdsRelay({
      logger: logs.logger,
      registry,
      socketPath,
      pilotAddress: `127.0.0.1:${pilot.port}`,
      pilotSpiffeId: ca.serverSpiffeId,
      identity: opts.identity ?? (() => hostA),
      reconnectBackoff: { initialMs: 50, maxMs: 200 },
    });
    relays.push(relay);
    return { relay, registry, socketPath, logs };
  }

  /** An application's ADS stream through the relay, collecting what it receives. */
  function openStream(socketPath: string, method: AdsMethod = 'StreamAggregatedResources') {
    const client = new grpc.Client(`unix://${socketPath}`, grpc.credentials.createInsecure());
    clients.push(client);
    const call: ClientStream = client.makeBidiStreamRequest(
      `/${ADS_SERVICE}/${method}`,
      raw,
      raw,
      new grpc.Metadata(),
    );
    const received: Buffer[] = [];
    let status: grpc.StatusObject | undefined;
    call.on('data', (m: Buffer) => received.push(m));
    call.on('error', () => undefined);
    call.on('status', (s: grpc.StatusObject) => (status = s));
    return { call, received, status: () => status };
  }

  async function metric(registry: prom.Registry, name: string, labels = ''): Promise<number> {
    const text = await registry.metrics();
    const line = text.split('\n').find(l => l.startsWith(`${name}${labels} `));
    return Number(line?.split(' ')[1] ?? NaN);
  }

  it.each(['StreamAggregatedResources', 'DeltaAggregatedResources'] as const)(
    'relays %s byte for byte both ways with the host certificate',
    async method => {
      const { relay, registry, socketPath } = newRelay();
      await relay.start();
      const app = openStream(socketPath, method);
      // Not protobuf at all: the relay must not decode. One message larger than a TCP window.
      const small = Buffer.from([0x00, 0xff, 0x10, 0x80]);
      const large = crypto.randomBytes(3 * 1024 * 1024);
      app.call.write(small);
      app.call.write(large);
      await waitFor(() => app.received.length === 2, { what: 'two answers from pilot' });
      expect(app.received[0]).toEqual(Buffer.concat([Buffer.from([0xee]), small]));
      expect(app.received[1]!.equals(Buffer.concat([Buffer.from([0xee]), large]))).toBe(true);
      const [upstream] = pilot.streams;
      expect(pilot.streams).toHaveLength(1);
      expect(upstream!.method).toBe(method);
      expect(upstream!.peerUris).toEqual([SA_A]);
      expect(upstream!.received.map(b => b.length)).toEqual([small.length, large.length]);
      expect(relay.activeStreams).toBe(1);
      expect(await metric(registry, 'sail_agent_xds_relay_streams')).toBe(1);
      expect(
        await metric(registry, 'sail_agent_xds_relay_messages_total', '{direction="to_pilot"}'),
      ).toBe(2);
      expect(
        await metric(registry, 'sail_agent_xds_relay_messages_total', '{direction="from_pilot"}'),
      ).toBe(2);

      // Half-close reaches pilot; pilot's OK ends the application's stream with OK.
      app.call.end();
      await waitFor(() => upstream!.halfClosed, { what: 'pilot seeing the half-close' });
      upstream!.call.end();
      const status = await waitFor(() => app.status(), { what: 'the application stream status' });
      expect(status.code).toBe(grpc.status.OK);
      await waitFor(() => relay.activeStreams === 0, { what: 'the relay forgetting the stream' });
      expect(await metric(registry, 'sail_agent_xds_relay_streams')).toBe(0);
    },
  );

  it("passes pilot's error status to the application", async () => {
    const { relay, socketPath } = newRelay();
    await relay.start();
    const app = openStream(socketPath);
    app.call.write(Buffer.from('hello'));
    const upstream = await waitFor(() => pilot.streams[0], { what: 'pilot stream' });
    upstream.call.emit('error', {
      code: grpc.status.PERMISSION_DENIED,
      details: 'node metadata NAMESPACE x differs',
    });
    const status = await waitFor(() => app.status(), { what: 'the application stream status' });
    expect(status).toMatchObject({
      code: grpc.status.PERMISSION_DENIED,
      details: 'node metadata NAMESPACE x differs',
    });
    await waitFor(() => relay.activeStreams === 0, { what: 'the relay forgetting the stream' });
  });

  it('cancels the pilot stream when the application goes away', async () => {
    const { relay, registry, socketPath } = newRelay();
    await relay.start();
    const app = openStream(socketPath, 'DeltaAggregatedResources');
    app.call.write(Buffer.from('x'));
    const upstream = await waitFor(() => pilot.streams[0], { what: 'pilot stream' });
    await waitFor(() => app.received.length === 1, { what: 'the first answer' });
    app.call.cancel();
    await waitFor(() => upstream.cancelled, { what: 'pilot seeing the cancellation' });
    await waitFor(() => relay.activeStreams === 0, { what: 'the relay forgetting the stream' });
    expect(await metric(registry, 'sail_agent_xds_relay_streams')).toBe(0);
  });

  it('answers UNAVAILABLE with a clear message while the host has no certificate', async () => {
    let current: RelayIdentity | undefined = undefined;
    const { relay, socketPath } = newRelay({ identity: () => current });
    await relay.start();
    const app = openStream(socketPath);
    const status = await waitFor(() => app.status(), { what: 'the refusal' });
    expect(status.code).toBe(grpc.status.UNAVAILABLE);
    expect(status.details).toMatch(/no workload certificate yet/);
    expect(status.metadata.get('sail-error-code')).toEqual(['AGENT_XDS_RELAY_NO_IDENTITY']);
    expect(pilot.streams).toHaveLength(0);
    expect(relay.activeStreams).toBe(0);

    // Once the agent has a certificate, the next stream goes through.
    current = hostA;
    const next = openStream(socketPath);
    next.call.write(Buffer.from('y'));
    await waitFor(() => next.received.length === 1, { what: 'an answer with the certificate' });
  });

  it('uses a new certificate for new streams after identityChanged, keeping open ones', async () => {
    let current = hostA;
    const { relay, socketPath } = newRelay({ identity: () => current });
    await relay.start();
    const first = openStream(socketPath);
    first.call.write(Buffer.from('1'));
    await waitFor(() => first.received.length === 1, { what: 'the first stream working' });

    current = hostB;
    relay.identityChanged();
    const second = openStream(socketPath);
    second.call.write(Buffer.from('2'));
    await waitFor(() => second.received.length === 1, { what: 'the second stream working' });
    expect(pilot.streams.map(s => s.peerUris)).toEqual([[SA_A], [SA_B]]);

    // The first stream still flows on the old channel.
    first.call.write(Buffer.from('3'));
    await waitFor(() => first.received.length === 2, { what: 'the old stream still working' });
    expect(pilot.streams[0]!.received.map(b => b.toString())).toEqual(['1', '3']);
  });

  it('survives pilot going away and relays again once pilot is back', async () => {
    const { relay, socketPath, logs } = newRelay();
    await relay.start();
    const app = openStream(socketPath);
    app.call.write(Buffer.from('before'));
    await waitFor(() => app.received.length === 1, { what: 'a first answer' });

    const port = pilot.port;
    pilot.stop();
    const status = await waitFor(() => app.status(), { what: 'the stream failing' });
    expect(status.code).toBe(grpc.status.UNAVAILABLE);
    expect(logs.find('Pilot ended a relayed xDS stream', 'warn')).toHaveLength(1);

    // While pilot is down, new streams fail fast and the relay keeps serving.
    const during = openStream(socketPath);
    during.call.write(Buffer.from('during'));
    expect((await waitFor(() => during.status(), { what: 'a refused stream' })).code).toBe(
      grpc.status.UNAVAILABLE,
    );
    expect(relay.activeStreams).toBe(0);

    await pilot.start(port);
    const after = await waitFor(
      async () => {
        const s = openStream(socketPath);
        s.call.write(Buffer.from('after'));
        await waitFor(() => s.received.length === 1 || s.status(), { timeoutMs: 2_000 });
        return s.received.length === 1 ? s : undefined;
      },
      { timeoutMs: 10_000, intervalMs: 100, what: 'a stream through the restarted pilot' },
    );
    expect(after.received[0]).toEqual(Buffer.concat([Buffer.from([0xee]), Buffer.from('after')]));
    expect(logs.find('Relaying xDS from pilot again', 'info')).toHaveLength(1);
  });

  it('makes the directory and a 0666 socket, replacing a stale socket', async () => {
    const dir = path.join(tmp.dir, 'run-sail');
    const socketPath = path.join(dir, 'xds.sock');
    fs.mkdirSync(dir);
    // A socket file nobody listens on, as a crashed agent leaves it (SIGKILL: nothing unlinks it).
    const crashed = child.spawn(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(socketPath)})`,
    ]);
    await waitFor(() => fs.existsSync(socketPath), { what: 'the doomed server socket' });
    crashed.kill('SIGKILL');
    await new Promise(r => crashed.once('exit', r));
    fs.writeFileSync(path.join(dir, 'other'), ''); // unrelated files are left alone
    expect(fs.lstatSync(socketPath).isSocket()).toBe(true);

    const { relay } = newRelay({ socketPath });
    await relay.start();
    expect(fs.statSync(socketPath).mode & 0o777).toBe(0o666);
    expect(fs.existsSync(path.join(dir, 'other'))).toBe(true);
    const app = openStream(socketPath);
    app.call.write(Buffer.from('z'));
    await waitFor(() => app.received.length === 1, { what: 'an answer on the new socket' });

    // A second relay on the same path refuses to steal the live socket.
    const second = newRelay({ socketPath });
    await expect(second.relay.start()).rejects.toThrow(/another process is serving on/);
  });

  it('refuses a path that is not a socket', async () => {
    const socketPath = path.join(tmp.dir, 'not-a-socket');
    fs.writeFileSync(socketPath, 'data');
    const { relay } = newRelay({ socketPath });
    await expect(relay.start()).rejects.toThrow(/exists and is not a socket/);
    expect(fs.readFileSync(socketPath, 'utf8')).toBe('data');
  });

  it('ends open streams with UNAVAILABLE and removes the socket on close (idempotent)', async () => {
    const { relay, socketPath } = newRelay();
    await relay.start();
    const app = openStream(socketPath);
    app.call.write(Buffer.from('q'));
    const upstream = await waitFor(() => pilot.streams[0], { what: 'pilot stream' });
    await Promise.all([relay.close(), relay.close()]);
    const status = await waitFor(() => app.status(), { what: 'the application stream status' });
    expect(status.code).toBe(grpc.status.UNAVAILABLE);
    expect(status.details).toMatch(/shutting down/);
    await waitFor(() => upstream.cancelled, { what: 'pilot seeing the cancellation' });
    expect(fs.existsSync(socketPath)).toBe(false);
    await relay.close();
  });
});
