import * as childProcess from 'node:child_process';
import * as dgram from 'node:dgram';
import { Resolver } from 'node:dns/promises';
import * as net from 'node:net';
import { promisify } from 'node:util';
import * as dnsPacket from 'dns-packet';
import { silentLogger } from '../../common/logging';
import { prom } from '../../common/metrics';
import { DnsServer, type DnsServerOptions } from './dns-server';
import type { NameTableEntry } from './names';
import { FakeUpstream, makeQuery, tcpQuery, udpQuery } from './testing';

const execFile = promisify(childProcess.execFile);

/** dns-packet decodes the rcode but does not type it. */
const rcode = (p: dnsPacket.DecodedPacket) => (p as { rcode?: string }).rcode;

const TABLE: ReadonlyMap<string, NameTableEntry> = new Map([
  [
    'reviews.default.svc.cluster.local',
    { ips: ['10.1.0.5', '10.1.0.6'], shortname: 'reviews', namespace: 'default' },
  ],
  [
    'ratings.other.svc.cluster.local',
    { ips: ['fd00::7'], shortname: 'ratings', namespace: 'other' },
  ],
  ['api.example.com', { ips: ['240.0.0.9'] }],
  [
    'big.default.svc.cluster.local',
    {
      ips: Array.from({ length: 100 }, (_, i) => `10.2.${Math.floor(i / 250)}.${(i % 250) + 1}`),
      shortname: 'big',
      namespace: 'default',
    },
  ],
]);

/** A port nothing listens on (bound then released): an upstream that is down. */
async function deadPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>(resolve => s.bind(0, '127.0.0.1', resolve));
  const port = s.address().port;
  await new Promise<void>(resolve => s.close(() => resolve()));
  return port;
}

async function counter(registry: prom.Registry, result: string): Promise<number> {
  const m = await registry.getSingleMetric('sail_agent_dns_requests_total')?.get();
  return m?.values.find(v => v.labels.result === result)?.value ?? 0;
}

async function dig(server: DnsServer, ...args: string[]): Promise<string> {
  const [host, port] = server.address!.split(':') as [string, string];
  const { stdout } = await execFile('dig', [
    `@${host}`,
    '-p',
    port,
    '+time=3',
    '+tries=1',
    ...args,
  ]);
  return stdout;
}

describe('DnsServer', () => {
  let upstream: FakeUpstream;
  const servers: DnsServer[] = [];

  async function start(
    extra: Partial<DnsServerOptions> = {},
  ): Promise<{ server: DnsServer; registry: prom.Registry; resolver: Resolver }> {
    const registry = new prom.Registry();
    const server = new DnsServer({
      logger: silentLogger(),
      registry,
      listen: '127.0.0.1:0',
      upstreams: [upstream.address],
      namespace: 'default',
      ...extra,
    });
    servers.push(server);
    await server.start();
    server.setTable(TABLE);
    const resolver = new Resolver({ timeout: 3000, tries: 1 });
    resolver.setServers([server.address!]);
    return { server, registry, resolver };
  }

  beforeEach(async () => {
    upstream = new FakeUpstream(
      new Map([
        ['example.test', ['192.0.2.1']],
        ['many.example.test', Array.from({ length: 60 }, (_, i) => `192.0.2.${i + 1}`)],
      ]),
    );
    await upstream.start();
  });

  afterEach(async () => {
    await Promise.all(servers.splice(0).map(s => s.close()));
    await upstream.close();
  });

  it('answers mesh names in every short form, any case, with or without the trailing dot', async () => {
    const { resolver, registry } = await start();
    for (const name of [
      'reviews',
      'reviews.default',
      'reviews.default.svc',
      'reviews.default.svc.cluster.local',
      'REVIEWS.Default.svc.Cluster.Local.',
    ]) {
      expect((await resolver.resolve4(name)).sort()).toEqual(['10.1.0.5', '10.1.0.6']);
    }
    expect(await resolver.resolve6('ratings.other')).toEqual(['fd00::7']);
    expect(await resolver.resolve6('ratings.other.svc.cluster.local')).toEqual(['fd00::7']);
    expect(await resolver.resolve4('api.example.com')).toEqual(['240.0.0.9']);
    expect(await counter(registry, 'mesh')).toBe(8);
    // Another namespace's short name is not ours: forwarded, and the upstream does not know it.
    await expect(resolver.resolve4('ratings')).rejects.toMatchObject({ code: 'ENOTFOUND' });
    expect(upstream.received.map(q => q.name)).toEqual(['ratings']);
    expect(await counter(registry, 'nxdomain')).toBe(1);
  });

  it('answers NODATA (not NXDOMAIN) for a family a mesh name lacks, with a 30 s TTL', async () => {
    const { server, resolver } = await start();
    await expect(resolver.resolve6('reviews')).rejects.toMatchObject({ code: 'ENODATA' });
    await expect(resolver.resolve4('ratings.other')).rejects.toMatchObject({ code: 'ENODATA' });
    const out = await dig(
      server,
      'reviews.default.svc.cluster.local',
      'A',
      '+noall',
      '+answer',
      '+comments',
    );
    expect(out).toMatch(/status: NOERROR/);
    expect(out).toMatch(/^reviews\.default\.svc\.cluster\.local\.\s+30\s+IN\s+A\s+10\.1\.0\.5$/m);
    const mx = await dig(server, 'reviews', 'MX', '+noall', '+comments');
    expect(mx).toMatch(/status: NOERROR/);
    expect(mx).toMatch(/ANSWER: 0/);
    expect(upstream.received).toHaveLength(0);
  });

  it('answers dig over UDP and TCP', async () => {
    const { server } = await start();
    expect((await dig(server, 'reviews', '+short')).trim().split('\n').sort()).toEqual([
      '10.1.0.5',
      '10.1.0.6',
    ]);
    expect(
      (await dig(server, '+tcp', 'reviews.default', '+short')).trim().split('\n'),
    ).toHaveLength(2);
    expect((await dig(server, '+tcp', 'example.test', '+short')).trim()).toBe('192.0.2.1');
    expect(upstream.received.map(q => q.transport)).toEqual(['tcp']);
  });

  it('forwards other names unchanged and returns the upstream answer with the query id', async () => {
    const { server, registry } = await start();
    const query = makeQuery('Example.Test', 'A', 31337, 1232);
    const answer = dnsPacket.decode(await udpQuery(server.address!, query));
    expect(answer.id).toBe(31337);
    expect(answer.answers).toEqual([expect.objectContaining({ type: 'A', data: '192.0.2.1' })]);
    expect(upstream.received).toHaveLength(1);
    expect(upstream.received[0]!.bytes.equals(query)).toBe(true);
    expect(await counter(registry, 'forwarded')).toBe(1);
    const hist = await registry.getSingleMetric('sail_agent_dns_upstream_duration_seconds')?.get();
    expect(
      hist?.values.find(v => (v as { metricName?: string }).metricName?.endsWith('_count'))?.value,
    ).toBe(1);
  });

  it('passes a truncated upstream UDP answer through; the client retries over TCP', async () => {
    const { server } = await start();
    const viaUdp = dnsPacket.decode(
      await udpQuery(server.address!, makeQuery('many.example.test', 'A')),
    );
    expect(viaUdp.flag_tc).toBe(true);
    const [viaTcp] = await tcpQuery(server.address!, [makeQuery('many.example.test', 'A')]);
    expect(dnsPacket.decode(viaTcp!).answers).toHaveLength(60);
    // dig does that retry itself.
    expect((await dig(server, 'many.example.test', '+short')).trim().split('\n')).toHaveLength(60);
  });

  it('truncates a mesh answer too big for the client (TC, no partial answers)', async () => {
    const { server } = await start();
    const plain = await udpQuery(server.address!, makeQuery('big', 'A', 7));
    const decoded = dnsPacket.decode(plain);
    expect(plain.length).toBeLessThanOrEqual(512);
    expect(decoded.flag_tc).toBe(true);
    expect(decoded.id).toBe(7);
    expect(decoded.answers).toHaveLength(0);
    const edns = dnsPacket.decode(await udpQuery(server.address!, makeQuery('big', 'A', 8, 4096)));
    expect(edns.flag_tc).toBe(false);
    expect(edns.answers).toHaveLength(100);
    const [tcp] = await tcpQuery(server.address!, [makeQuery('big', 'A', 9)]);
    expect(dnsPacket.decode(tcp!).answers).toHaveLength(100);
    expect((await dig(server, '+noedns', 'big', '+short')).trim().split('\n')).toHaveLength(100);
  });

  it('answers SERVFAIL at once when the upstream is down, and within the timeout when it is silent', async () => {
    const down = await start({ upstreams: [`127.0.0.1:${await deadPort()}`] });
    let t0 = Date.now();
    const refused = dnsPacket.decode(
      await udpQuery(down.server.address!, makeQuery('example.test', 'A', 11)),
    );
    expect(rcode(refused)).toBe('SERVFAIL');
    expect(refused.id).toBe(11);
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(await counter(down.registry, 'servfail')).toBe(1);

    upstream.silent = true;
    const silent = await start({ upstreams: [upstream.address], upstreamTimeoutMs: 300 });
    t0 = Date.now();
    const timedOut = dnsPacket.decode(
      await udpQuery(silent.server.address!, makeQuery('example.test', 'A', 12)),
    );
    const elapsed = Date.now() - t0;
    expect(rcode(timedOut)).toBe('SERVFAIL');
    expect(timedOut.questions?.[0]?.name).toBe('example.test');
    expect(elapsed).toBeGreaterThanOrEqual(290);
    expect(elapsed).toBeLessThan(2000);
    const [tcp] = await tcpQuery(silent.server.address!, [makeQuery('example.test', 'A', 13)]);
    expect(rcode(dnsPacket.decode(tcp!))).toBe('SERVFAIL');
    // Mesh names do not depend on the upstream at all.
    expect(await silent.resolver.resolve4('api.example.com')).toEqual(['240.0.0.9']);
  });

  it("answers a mesh name with one of the host's search domains, without asking the upstream", async () => {
    // A silent upstream: glibc's first try, reviews.<search domain>, must not wait on it.
    upstream.silent = true;
    const { resolver, registry } = await start({
      searchDomains: ['corp.example'],
      upstreamTimeoutMs: 300,
    });
    const t0 = Date.now();
    expect((await resolver.resolve4('reviews.corp.example')).sort()).toEqual([
      '10.1.0.5',
      '10.1.0.6',
    ]);
    expect(await resolver.resolve6('ratings.other.corp.example')).toEqual(['fd00::7']);
    expect(Date.now() - t0).toBeLessThan(250);
    expect(upstream.received).toEqual([]);
    expect(await counter(registry, 'mesh')).toBe(2);
    // Any other name under the search domain is the upstream's.
    await expect(resolver.resolve4('nosuch.corp.example')).rejects.toMatchObject({
      code: 'ESERVFAIL',
    });
    expect(upstream.received.map(q => q.name)).toEqual(['nosuch.corp.example']);
  });

  it('tries each upstream in turn', async () => {
    const good = new FakeUpstream(new Map([['example.test', ['192.0.2.77']]]));
    await good.start();
    try {
      upstream.rcode = 'SERVFAIL';
      const dead = `127.0.0.1:${await deadPort()}`;
      const { resolver } = await start({ upstreams: [dead, upstream.address, good.address] });
      expect(await resolver.resolve4('example.test')).toEqual(['192.0.2.77']);
      expect(upstream.received).toHaveLength(1);
    } finally {
      await good.close();
    }
  });

  it('survives malformed packets: FORMERR when the header is readable, else dropped', async () => {
    const { server, resolver, registry } = await start();
    const header = Buffer.from([0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0]);
    const garbage = Buffer.concat([header, Buffer.from([0x3f, 0x41, 0x42])]);
    const formerr = await udpQuery(server.address!, garbage);
    expect(formerr.readUInt16BE(0)).toBe(0xabcd);
    expect(formerr.readUInt16BE(2) & 0x800f).toBe(0x8001); // QR, FORMERR
    const [tcpFormerr] = await tcpQuery(server.address!, [garbage]);
    expect(tcpFormerr!.readUInt16BE(2) & 0xf).toBe(1);
    // Too short for a header, and a response sent to us: dropped (no answer).
    await expect(udpQuery(server.address!, Buffer.from([1, 2, 3]), 300)).rejects.toThrow(
      /no UDP answer/,
    );
    const response = dnsPacket.encode({
      type: 'response',
      id: 1,
      questions: [{ name: 'x', type: 'A' }],
    });
    await expect(udpQuery(server.address!, response, 300)).rejects.toThrow(/no UDP answer/);
    // Random bytes, many times: the server keeps answering.
    for (let i = 0; i < 200; i++) {
      const junk = Buffer.from(
        Array.from({ length: 1 + (i % 40) }, () => Math.floor(Math.random() * 256)),
      );
      const s = dgram.createSocket('udp4');
      await new Promise<void>(resolve =>
        s.send(junk, Number(server.address!.split(':')[1]), '127.0.0.1', () => resolve()),
      );
      s.close();
    }
    const sock = net.connect(Number(server.address!.split(':')[1]), '127.0.0.1');
    await new Promise(resolve => sock.once('connect', resolve));
    sock.end(Buffer.from([0, 5, 1, 2, 3, 4, 5, 0, 3]));
    expect((await resolver.resolve4('reviews')).sort()).toEqual(['10.1.0.5', '10.1.0.6']);
    expect(await counter(registry, 'formerr')).toBeGreaterThanOrEqual(4);
  });

  it('answers pipelined TCP queries on one connection', async () => {
    const { server } = await start();
    const answers = await tcpQuery(server.address!, [
      makeQuery('reviews', 'A', 1),
      makeQuery('example.test', 'A', 2),
      makeQuery('ratings.other', 'AAAA', 3),
    ]);
    const byId = new Map(answers.map(a => dnsPacket.decode(a)).map(p => [p.id, p]));
    expect(byId.get(1)?.answers).toHaveLength(2);
    expect(byId.get(2)?.answers).toEqual([expect.objectContaining({ data: '192.0.2.1' })]);
    expect(byId.get(3)?.answers).toEqual([
      expect.objectContaining({ type: 'AAAA', data: 'fd00::7' }),
    ]);
  });

  it('forwards everything while it has no table, and swaps tables at once', async () => {
    const registry = new prom.Registry();
    const server = new DnsServer({
      logger: silentLogger(),
      registry,
      listen: '127.0.0.1:0',
      upstreams: [upstream.address],
      namespace: 'default',
    });
    servers.push(server);
    await server.start();
    const resolver = new Resolver({ timeout: 3000, tries: 1 });
    resolver.setServers([server.address!]);
    expect(await resolver.resolve4('example.test')).toEqual(['192.0.2.1']);
    await expect(resolver.resolve4('reviews')).rejects.toMatchObject({ code: 'ENOTFOUND' });
    server.setTable(TABLE);
    expect(await resolver.resolve4('reviews')).toHaveLength(2);
    server.setTable(new Map([['example.test', { ips: ['10.9.9.9'] }]]));
    expect(await resolver.resolve4('example.test')).toEqual(['10.9.9.9']);
    await expect(resolver.resolve4('reviews')).rejects.toMatchObject({ code: 'ENOTFOUND' });
  });

  it('rejects bad options naming the field, and close is idempotent', async () => {
    const base = { logger: silentLogger(), registry: new prom.Registry(), namespace: 'default' };
    expect(
      () => new DnsServer({ ...base, listen: '127.0.0.1:0', upstreams: ['dns.google'] }),
    ).toThrow(/dns\.upstreams: "dns\.google"/);
    expect(() => new DnsServer({ ...base, listen: 'localhost', upstreams: [] })).toThrow(
      /dns\.listen/,
    );
    const { server } = await start();
    await server.close();
    await server.close();
  });
});
