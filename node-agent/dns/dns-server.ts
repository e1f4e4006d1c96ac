/**
 * The node agent's DNS resolver (docs/dns.md), on UDP and TCP 127.0.0.1:15053: A and AAAA for mesh
 * names from pilot's name table, everything else forwarded unchanged to the host's own
 * nameservers. The rule that matters most (peers.md §5.2: Istio's "dns request before lookup table
 * is loaded" broke every lookup): a name that is not in the table always goes upstream, with or
 * without a table, and an upstream failure is a SERVFAIL within the timeout, never a hang.
 */
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import * as dnsPacket from 'dns-packet';
import { parseHostPort } from '../../common/config';
import type { Lifecycle } from '../../common/lifecycle';
import { CloseOnce } from '../../common/lifecycle';
import type { Logger } from '../../common/logging';
import { prom } from '../../common/metrics';
import { type MeshAnswer, NameIndex, type NameTableEntry } from './names';
import { formatUpstream, parseUpstream, type Upstream } from './resolv-conf';
import { exchangeTcp, exchangeUdp } from './upstream';

/** Options of {@link DnsServer}. */
export interface DnsServerOptions {
  readonly logger: Logger;
  readonly registry: prom.Registry;
  /** `127.0.0.1:15053` (UDP and TCP on the same port; port 0 picks a free one, see `address`). */
  readonly listen: string;
  /** The host's original nameservers, `IP` (port 53) or `IP:PORT`, tried in order. */
  readonly upstreams: readonly string[];
  /** The workload's namespace: `reviews` alone means `reviews.<namespace>.svc.<domainSuffix>`. */
  readonly namespace: string;
  /** Default `cluster.local`. */
  readonly domainSuffix?: string;
  /**
   * The host's resolv.conf `search` domains: `reviews.corp.example` is answered as `reviews`
   * when `reviews` is a mesh name, so a search-path lookup never waits on the upstreams (nor
   * fails while they are down). Default none.
   */
  readonly searchDomains?: readonly string[];
  /** How long to wait for each upstream before trying the next one. Default 2000 ms. */
  readonly upstreamTimeoutMs?: number;
  /** TTL of mesh answers. Default 30 s. */
  readonly ttlSeconds?: number;
  /** Forwarded queries in flight at most; beyond, SERVFAIL at once. Default 1024. */
  readonly maxInFlight?: number;
}

/** How a query ended, the `result` label of sail_agent_dns_requests_total. */
export type DnsResult = 'mesh' | 'forwarded' | 'nxdomain' | 'servfail' | 'formerr';

type Transport = 'udp' | 'tcp';

const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, REFUSED: 5 } as const;
const QR = 0x8000;
const HEADER_BYTES = 12;
/** Plain DNS over UDP without EDNS (RFC 1035 §4.2.1). */
const UDP_DEFAULT_SIZE = 512;
/** What we advertise in our own EDNS answers (the DNS flag day 2020 size). */
const EDNS_SIZE = 1232;
/** A TCP client that sends nothing for this long is closed (RFC 7766 suggests seconds). */
const TCP_IDLE_MS = 10_000;

class DnsMetrics {
  readonly requests: prom.Counter<'result'>;
  readonly upstream: prom.Histogram<'protocol'>;
  readonly names: prom.Gauge;
  constructor(registry: prom.Registry) {
    this.requests = new prom.Counter({
      name: 'sail_agent_dns_requests_total',
      help: 'DNS queries answered by the agent, by result: mesh (from the name table), forwarded (upstream answered), nxdomain (upstream said no such name), servfail (no upstream answered), formerr (malformed query)',
      labelNames: ['result'],
      registers: [registry],
    });
    this.upstream = new prom.Histogram({
      name: 'sail_agent_dns_upstream_duration_seconds',
      help: 'Seconds per exchange with an upstream nameserver (failures included), by protocol',
      labelNames: ['protocol'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5],
      registers: [registry],
    });
    this.names = new prom.Gauge({
      name: 'sail_agent_dns_mesh_names',
      help: 'Mesh hostnames in the DNS name table',
      registers: [registry],
    });
  }
}

/** The flags of an answer: the query's opcode and RD bit, RA set, and `rcode` (QR is added by the encoder). */
function answerFlags(queryFlags: number, rcode: number, extra = 0): number {
  return (queryFlags & 0x7900) | 0x0080 | extra | rcode; // opcode (0x7800) + RD (0x0100), RA
}

/**
 * A bare answer header to `query`: its id, QR, `rcode`, no sections. Built from bytes, so a query
 * dns-packet cannot decode still gets its FORMERR.
 */
function headerOnly(query: Buffer, rcode: number): Buffer {
  const out = Buffer.alloc(HEADER_BYTES);
  out.writeUInt16BE(query.readUInt16BE(0), 0);
  out.writeUInt16BE(QR | answerFlags(query.readUInt16BE(2), rcode), 2);
  return out;
}

const rcodeOf = (answer: Buffer) => (answer.length >= 4 ? answer.readUInt16BE(2) & 0xf : -1);

/** The DNS resolver of the node agent. */
export class DnsServer implements Lifecycle {
  private readonly log: Logger;
  private readonly metrics: DnsMetrics;
  private readonly upstreams: readonly Upstream[];
  private readonly timeoutMs: number;
  private readonly ttl: number;
  private readonly maxInFlight: number;
  private index: NameIndex;
  private udp: dgram.Socket | undefined;
  private tcp: net.Server | undefined;
  private readonly tcpSockets = new Set<net.Socket>();
  private bound: string | undefined;
  private inFlight = 0;
  private readonly abort = new AbortController();
  private readonly closeOnce = new CloseOnce();

  constructor(private readonly opts: DnsServerOptions) {
    this.log = opts.logger.child({ subsystem: 'dns' });
    this.upstreams = opts.upstreams.map(u => {
      const parsed = parseUpstream(u);
      if (!parsed) throw new Error(`dns.upstreams: ${JSON.stringify(u)} is not IP or IP:PORT`);
      return parsed;
    });
    if (!parseHostPort(opts.listen))
      throw new Error(`dns.listen: ${JSON.stringify(opts.listen)} is not HOST:PORT`);
    this.timeoutMs = opts.upstreamTimeoutMs ?? 2000;
    this.ttl = opts.ttlSeconds ?? 30;
    this.maxInFlight = opts.maxInFlight ?? 1024;
    this.metrics = new DnsMetrics(opts.registry);
    this.index = new NameIndex(new Map(), opts.namespace, opts.domainSuffix, opts.searchDomains);
  }

  /** Replaces the mesh names at once (queries in progress finish with the old table). */
  setTable(table: ReadonlyMap<string, NameTableEntry>): void {
    this.index = new NameIndex(
      table,
      this.opts.namespace,
      this.opts.domainSuffix,
      this.opts.searchDomains,
    );
    this.metrics.names.set(this.index.size);
    this.log.debug({ names: this.index.size }, 'DNS name table updated');
  }

  /** `HOST:PORT` the server listens on (UDP and TCP), once started. */
  get address(): string | undefined {
    return this.bound;
  }

  /** Binds UDP, then TCP on the same port. */
  async start(): Promise<void> {
    const { host, port } = parseHostPort(this.opts.listen)!;
    // With port 0 the UDP port is picked first; TCP may find it taken by someone else: retry.
    for (let attempt = 0; ; attempt++) {
      const udp = await this.bindUdp(host, port);
      const udpPort = udp.address().port;
      try {
        this.tcp = await this.bindTcp(host, udpPort);
        this.udp = udp;
        break;
      } catch (err) {
        await new Promise<void>(resolve => udp.close(() => resolve()));
        if (port !== 0 || attempt >= 5) throw err;
      }
    }
    const p = this.udp.address().port;
    this.bound = host.includes(':') ? `[${host}]:${p}` : `${host}:${p}`;
    this.log.info(
      { address: this.bound, upstreams: this.upstreams.map(formatUpstream) },
      'DNS resolver listening',
    );
    if (this.upstreams.length === 0)
      this.log.warn(
        'DNS resolver has no upstream nameservers: names outside the mesh get SERVFAIL',
      );
  }

  close(): Promise<void> {
    return this.closeOnce.run(async () => {
      this.abort.abort();
      const udp = this.udp;
      const tcp = this.tcp;
      this.udp = undefined;
      this.tcp = undefined;
      for (const s of this.tcpSockets) s.destroy();
      await Promise.all([
        udp ? new Promise<void>(resolve => udp.close(() => resolve())) : undefined,
        tcp ? new Promise<void>(resolve => tcp.close(() => resolve())) : undefined,
      ]);
    });
  }

  private bindUdp(host: string, port: number): Promise<dgram.Socket> {
    return new Promise((resolve, reject) => {
      const socket = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
      socket.once('error', reject);
      socket.bind(port, host, () => {
        socket.off('error', reject);
        socket.on('error', err => this.log.warn({ err }, 'DNS UDP socket error'));
        socket.on('message', (msg, rinfo) => this.onUdp(socket, msg, rinfo));
        resolve(socket);
      });
    });
  }

  private bindTcp(host: string, port: number): Promise<net.Server> {
    return new Promise((resolve, reject) => {
      const server = net.createServer(socket => this.onTcpConnection(socket));
      server.once('error', reject);
      server.listen({ host, port, exclusive: true }, () => {
        server.off('error', reject);
        server.on('error', err => this.log.warn({ err }, 'DNS TCP server error'));
        resolve(server);
      });
    });
  }

  private onUdp(socket: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    this.handle(msg, 'udp').then(
      answer => {
        if (answer && this.udp === socket) socket.send(answer, rinfo.port, rinfo.address);
      },
      (err: unknown) => this.log.error({ err }, 'DNS query failed'),
    );
  }

  private onTcpConnection(socket: net.Socket): void {
    this.tcpSockets.add(socket);
    let buffered = Buffer.alloc(0);
    socket.setTimeout(TCP_IDLE_MS, () => socket.destroy());
    socket.on('error', () => socket.destroy());
    socket.on('close', () => this.tcpSockets.delete(socket));
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      // Pipelined queries are answered as they complete; answers carry their query's id.
      while (buffered.length >= 2) {
        const length = buffered.readUInt16BE(0);
        if (buffered.length < 2 + length) break;
        const query = buffered.subarray(2, 2 + length);
        buffered = buffered.subarray(2 + length);
        this.handle(Buffer.from(query), 'tcp').then(
          answer => {
            if (!answer || socket.destroyed) return;
            const prefix = Buffer.alloc(2);
            prefix.writeUInt16BE(answer.length);
            socket.write(Buffer.concat([prefix, answer]));
          },
          (err: unknown) => this.log.error({ err }, 'DNS query failed'),
        );
      }
    });
  }

  /**
   * Answers one query (wire format) from either transport. Undefined: nothing to send (a packet
   * too short to carry an id, or a response sent to us).
   */
  async handle(query: Buffer, transport: Transport): Promise<Buffer | undefined> {
    if (query.length < HEADER_BYTES || (query.readUInt16BE(2) & QR) !== 0) {
      this.metrics.requests.inc({ result: 'formerr' });
      return undefined;
    }
    let packet: dnsPacket.DecodedPacket;
    try {
      packet = dnsPacket.decode(query);
    } catch {
      this.metrics.requests.inc({ result: 'formerr' });
      return headerOnly(query, RCODE.FORMERR);
    }
    const question = packet.questions?.[0];
    const opcode = (query.readUInt16BE(2) >> 11) & 0xf;
    if (opcode === 0 && packet.questions?.length === 1 && question && question.class === 'IN') {
      const mesh = this.index.lookup(question.name);
      if (mesh) {
        this.metrics.requests.inc({ result: 'mesh' });
        return this.meshAnswer(query, packet, question, mesh, transport);
      }
    }
    return this.forward(query, transport);
  }

  private meshAnswer(
    query: Buffer,
    packet: dnsPacket.DecodedPacket,
    question: dnsPacket.Question,
    mesh: MeshAnswer,
    transport: Transport,
  ): Buffer {
    // A, AAAA, or NODATA (NOERROR, no answers) for a family or type the name does not have: the
    // name exists, so never NXDOMAIN, which a stub would cache for every type.
    const ips = question.type === 'A' ? mesh.ipv4 : question.type === 'AAAA' ? mesh.ipv6 : [];
    const answers: dnsPacket.Answer[] = ips.map(ip => ({
      // The name as asked (its case too: some resolvers check 0x20 randomization).
      name: question.name,
      type: question.type as 'A' | 'AAAA',
      class: 'IN',
      ttl: this.ttl,
      data: ip,
    }));
    const opt = packet.additionals?.find(a => a.type === 'OPT') as dnsPacket.OptAnswer | undefined;
    const flags = answerFlags(query.readUInt16BE(2), RCODE.NOERROR, dnsPacket.AUTHORITATIVE_ANSWER);
    const edns: dnsPacket.OptAnswer = {
      name: '.',
      type: 'OPT',
      udpPayloadSize: EDNS_SIZE,
      extendedRcode: 0,
      ednsVersion: 0,
      flags: 0,
      flag_do: false,
      options: [],
    };
    const build = (list: dnsPacket.Answer[], extra: number) =>
      dnsPacket.encode({
        type: 'response',
        id: packet.id ?? 0,
        flags: flags | extra,
        questions: [question],
        answers: list,
        additionals: opt ? [edns] : [],
      });
    const full = build(answers, 0);
    if (transport === 'tcp') return full;
    const limit = Math.max(UDP_DEFAULT_SIZE, opt?.udpPayloadSize ?? UDP_DEFAULT_SIZE);
    // Too big for this client's UDP: say so (TC) with no partial answers; it retries over TCP.
    return full.length <= limit ? full : build([], dnsPacket.TRUNCATED_RESPONSE);
  }

  /**
   * Forwards the query bytes unchanged to each upstream in turn: the first answer that is not
   * SERVFAIL or REFUSED is returned unchanged (same id, same truncation); if every upstream fails
   * or times out, the last such answer, else SERVFAIL.
   */
  private async forward(query: Buffer, transport: Transport): Promise<Buffer> {
    if (this.inFlight >= this.maxInFlight || this.upstreams.length === 0) {
      this.metrics.requests.inc({ result: 'servfail' });
      return headerOnlyWithQuestion(query, RCODE.SERVFAIL);
    }
    this.inFlight++;
    try {
      let last: Buffer | undefined;
      for (const upstream of this.upstreams) {
        if (this.abort.signal.aborted) break;
        const started = process.hrtime.bigint();
        try {
          const answer =
            transport === 'udp'
              ? await exchangeUdp(query, upstream, this.timeoutMs, this.abort.signal)
              : await exchangeTcp(query, upstream, this.timeoutMs, this.abort.signal);
          const rcode = rcodeOf(answer);
          if (rcode === RCODE.SERVFAIL || rcode === RCODE.REFUSED) {
            last = answer;
            continue;
          }
          this.metrics.requests.inc({
            result: rcode === RCODE.NXDOMAIN ? 'nxdomain' : 'forwarded',
          });
          return answer;
        } catch (err) {
          this.log.debug(
            { upstream: formatUpstream(upstream), transport, reason: (err as Error).message },
            'DNS upstream failed',
          );
        } finally {
          this.metrics.upstream.observe(
            { protocol: transport },
            Number(process.hrtime.bigint() - started) / 1e9,
          );
        }
      }
      this.metrics.requests.inc({ result: 'servfail' });
      return last ?? headerOnlyWithQuestion(query, RCODE.SERVFAIL);
    } finally {
      this.inFlight--;
    }
  }
}

/** An error answer that echoes the question section (what stub resolvers match answers by). */
function headerOnlyWithQuestion(query: Buffer, rcode: number): Buffer {
  try {
    const packet = dnsPacket.decode(query);
    return dnsPacket.encode({
      type: 'response',
      id: packet.id ?? 0,
      flags: answerFlags(query.readUInt16BE(2), rcode),
      questions: packet.questions ?? [],
    });
  } catch {
    return headerOnly(query, rcode);
  }
}
