/**
 * The node agent's DNS against a real control plane in this process (CA + pilot, as
 * `sail control-plane` wires them): the host's certificate comes from the CA with a join token,
 * the NameTableClient subscribes to pilot's name table over mTLS ADS, and the DnsServer answers
 * from it, forwarding other names to a real (dns-packet) nameserver on loopback.
 *
 * Shown: a `sail apply`-equivalent ServiceEntry → `reviews` resolves to its endpoint IPs, and a VIP
 * service to its VIP; an endpoint change is pushed and ACKed (pilot records the version); a
 * ServiceEntry deleted → the name goes back to the upstream; pilot stopped → names still answer;
 * a restarted client and server with pilot still down answer from the state file (0600).
 */
import * as fs from 'node:fs';
import { Resolver } from 'node:dns/promises';
import * as path from 'node:path';
import { prom } from '../../common/metrics';
import { DnsServer, NameTableClient, type NameTableEntry } from '../../node-agent/dns';
import { FakeUpstream } from '../../node-agent/dns/testing';
import {
  type ConfigDocument,
  type IdentityFiles,
  MeshControlPlane,
  NAMESPACE,
  testLogger,
} from '../helpers/proxy-pair';
import { makeTmpDir } from '../helpers/tmp-dir';
import { waitFor } from '../helpers/wait-for';

jest.setTimeout(30_000);

const NODE = 'vm-dns';
const NODE_ID = `sidecar~127.0.0.1~${NODE}.${NAMESPACE}~${NAMESPACE}.svc.cluster.local`;

function reviews(addresses: readonly string[]): ConfigDocument {
  return {
    apiVersion: 'networking.istio.io/v1beta1',
    kind: 'ServiceEntry',
    metadata: { name: 'reviews', namespace: NAMESPACE },
    spec: {
      hosts: [`reviews.${NAMESPACE}.svc.cluster.local`],
      location: 'MESH_INTERNAL',
      resolution: 'STATIC',
      ports: [{ number: 9080, name: 'http', protocol: 'HTTP' }],
      endpoints: addresses.map(address => ({ address })),
    },
  };
}

const ratings: ConfigDocument = {
  apiVersion: 'networking.istio.io/v1beta1',
  kind: 'ServiceEntry',
  metadata: { name: 'ratings', namespace: 'shop' },
  spec: {
    hosts: ['ratings.shop.svc.cluster.local'],
    addresses: ['240.0.0.20', '10.99.0.0/16'],
    location: 'MESH_INTERNAL',
    resolution: 'STATIC',
    ports: [{ number: 9080, name: 'http', protocol: 'HTTP' }],
    endpoints: [{ address: '10.78.0.1' }],
  },
};

describe('node agent DNS with a real pilot', () => {
  const tmp = makeTmpDir('sail-agent-dns-');
  const logger = testLogger();
  let cp: MeshControlPlane | undefined;
  let upstream: FakeUpstream;
  let identity: IdentityFiles;
  let pilot: { address: string; spiffeId: string };
  const closers: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    cp = await MeshControlPlane.start({ dataDir: path.join(tmp.dir, 'cp'), logger });
    identity = await cp.enroll(NODE, 'reviews');
    pilot = { address: cp.pilotAddress, spiffeId: cp.pilotSpiffeId };
    upstream = new FakeUpstream(new Map([['example.test', ['192.0.2.1']]]));
    await upstream.start();
  });

  afterAll(async () => {
    for (const close of closers.reverse()) await close();
    await cp?.close();
    await upstream.close();
    tmp.cleanup();
  });

  async function agentDns(stateFile: string) {
    const server = new DnsServer({
      logger,
      registry: new prom.Registry(),
      listen: '127.0.0.1:0',
      upstreams: [upstream.address],
      namespace: NAMESPACE,
    });
    await server.start();
    closers.push(() => server.close());
    const tables: ReadonlyMap<string, NameTableEntry>[] = [];
    const client = new NameTableClient({
      logger,
      registry: new prom.Registry(),
      pilotAddress: pilot.address,
      pilotSpiffeId: pilot.spiffeId,
      nodeId: NODE_ID,
      identity: () => identity,
      stateFile,
      onTable: t => {
        tables.push(t);
        server.setTable(t);
      },
      backoff: { initialMs: 50, maxMs: 200 },
    });
    await client.start();
    closers.push(() => client.close());
    const resolver = new Resolver({ timeout: 2000, tries: 1 });
    resolver.setServers([server.address!]);
    const a = (name: string) =>
      resolver.resolve4(name).then(
        ips => ips.sort().join(','),
        (err: unknown) => (err as NodeJS.ErrnoException).code ?? 'error',
      );
    return { server, client, resolver, tables, a };
  }

  it('serves the name table from pilot, follows pushes, and survives pilot going away', async () => {
    const stateFile = path.join(tmp.dir, 'state', 'dns-table.json');
    await cp!.apply([reviews(['10.77.0.5', '10.77.0.6']), ratings]);
    const first = await agentDns(stateFile);

    await waitFor(async () => (await first.a('reviews')) === '10.77.0.5,10.77.0.6', {
      what: 'reviews from pilot',
    });
    expect(await first.a('reviews.default.svc.cluster.local')).toBe('10.77.0.5,10.77.0.6');
    // A VIP wins over endpoints; the CIDR is skipped. Another namespace: NAME.NS forms only.
    expect(await first.a('ratings.shop')).toBe('240.0.0.20');
    expect(await first.a('ratings')).toBe('ENOTFOUND');
    expect(await first.a('example.test')).toBe('192.0.2.1');
    expect(first.client.status()).toMatchObject({ connected: true, source: 'pilot', names: 2 });

    // Pilot recorded the ACK of what it sent.
    const acked = await waitFor(() => {
      const nds = cp!.pilot.xds.connectionsInfo(NODE)[0]?.resources.nametable;
      return nds?.versionAcked !== undefined && nds.versionAcked === nds.versionSent
        ? nds
        : undefined;
    });
    expect(acked.subscribed).toBe('*');

    // An endpoint change is pushed like any other type.
    await cp!.apply([reviews(['10.77.0.7'])]);
    await waitFor(async () => (await first.a('reviews')) === '10.77.0.7', { what: 'the update' });

    // Deleted: the name is no longer ours and goes to the upstream (which does not know it).
    await cp!.remove([{ kind: 'ServiceEntry', name: 'ratings', namespace: 'shop' }]);
    await waitFor(async () => (await first.a('ratings.shop')) === 'ENOTFOUND', { what: 'removal' });

    await waitFor(
      () => fs.existsSync(stateFile) && fs.readFileSync(stateFile, 'utf8').includes('10.77.0.7'),
    );
    expect(fs.statSync(stateFile).mode & 0o777).toBe(0o600);

    // Pilot goes away: the stream ends, the names stay.
    await cp!.close();
    cp = undefined;
    await waitFor(() => !first.client.status().connected, { what: 'the stream to end' });
    expect(await first.a('reviews')).toBe('10.77.0.7');
    await first.client.close();
    await first.server.close();
  });

  it('answers from the state file after a restart while pilot is still down', async () => {
    const stateFile = path.join(tmp.dir, 'state', 'dns-table.json');
    expect(cp).toBeUndefined();
    expect(fs.existsSync(stateFile)).toBe(true);
    const second = await agentDns(stateFile);
    expect(second.tables).toHaveLength(1);
    expect(second.client.status()).toMatchObject({ connected: false, source: 'state-file' });
    expect(await second.a('reviews')).toBe('10.77.0.7');
    expect(await second.a('reviews.default.svc')).toBe('10.77.0.7');
    expect(await second.a('example.test')).toBe('192.0.2.1');
  });
});
