/**
 * A tiny authoritative DNS server for the mesh lab's LAN (test/helpers/mesh-lab.ts): the resolver
 * a real VM would find in its /etc/resolv.conf. It answers A queries for a fixed set of names
 * (`controlplane.lan`, `vm1.lan`, …), NODATA for other types of those names, and NXDOMAIN for
 * everything else, over UDP and TCP, and logs every query as a JSON line on stdout so a test can
 * prove that a non-mesh name went through the node agent's forwarding to it.
 *
 * Run as a process inside the lab's control-plane namespace (it is compiled to
 * build/test/helpers/lan-dns.js):
 *
 *   node build/test/helpers/lan-dns.js --listen 10.200.4.2:53 \
 *     --record controlplane.lan=10.200.4.2 --record vm1.lan=10.200.4.11
 *
 * Output lines: `{"event":"listening","address":"10.200.4.2:53"}` once both sockets are bound,
 * then `{"event":"query","transport":"udp","from":"10.200.4.11","name":"vm1.lan","type":"A",
 * "rcode":"NOERROR","answers":["10.200.4.11"]}` per question.
 */
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import * as dnsPacket from 'dns-packet';
import type { Lifecycle } from '../../common/lifecycle';

/** One logged question. */
export interface LanDnsQuery {
  readonly event: 'query';
  readonly transport: 'udp' | 'tcp';
  /** Source address of the query (the agent's forwarder, or the VM itself without an agent). */
  readonly from: string;
  /** The name as asked, lowercased, without a trailing dot. */
  readonly name: string;
  readonly type: string;
  readonly rcode: 'NOERROR' | 'NXDOMAIN' | 'FORMERR';
  readonly answers: readonly string[];
}

/** Options of {@link LanDnsServer}. */
export interface LanDnsServerOptions {
  /** IP to bind UDP and TCP on. */
  readonly host: string;
  /** Port (53 in the lab; 0 picks a free one for unit use). */
  readonly port: number;
  /** Name (any case, no trailing dot) → IPv4 address. */
  readonly records: Readonly<Record<string, string>>;
  /** TTL of the answers, seconds. Default 5. */
  readonly ttl?: number;
  /** Called for every question answered. */
  readonly onQuery?: (q: LanDnsQuery) => void;
}

const NXDOMAIN = 3;
const FORMERR = 1;

const normalize = (name: string) => name.toLowerCase().replace(/\.$/, '');

/** The LAN resolver: authoritative for its names, NXDOMAIN for the rest, never recursive. */
export class LanDnsServer implements Lifecycle {
  private readonly records: ReadonlyMap<string, string>;
  private udp: dgram.Socket | undefined;
  private tcp: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();

  constructor(private readonly opts: LanDnsServerOptions) {
    this.records = new Map(Object.entries(opts.records).map(([k, v]) => [normalize(k), v]));
    for (const [name, ip] of this.records) {
      if (!net.isIPv4(ip)) throw new Error(`record ${name}: ${ip} is not an IPv4 address`);
    }
  }

  /** `HOST:PORT` once started. */
  get address(): string | undefined {
    const a = this.udp?.address();
    return a ? `${a.address}:${a.port}` : undefined;
  }

  async start(): Promise<void> {
    const udp = dgram.createSocket({ type: 'udp4' });
    this.udp = udp;
    udp.on('message', (msg, rinfo) => {
      const reply = this.answer(msg, 'udp', rinfo.address);
      if (reply) udp.send(reply, rinfo.port, rinfo.address);
    });
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(this.opts.port, this.opts.host, () => {
        udp.off('error', reject);
        resolve();
      });
    });
    // TCP on the same port UDP got (matters when port is 0).
    const port = udp.address().port;
    const tcp = net.createServer(sock => this.serveTcp(sock));
    this.tcp = tcp;
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', reject);
      tcp.listen(port, this.opts.host, () => {
        tcp.off('error', reject);
        resolve();
      });
    });
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    const udp = this.udp;
    const tcp = this.tcp;
    this.udp = undefined;
    this.tcp = undefined;
    if (udp) await new Promise<void>(r => udp.close(() => r()));
    if (tcp) await new Promise<void>(r => tcp.close(() => r()));
  }

  private serveTcp(sock: net.Socket): void {
    this.sockets.add(sock);
    sock.on('close', () => this.sockets.delete(sock));
    sock.on('error', () => sock.destroy());
    let buf = Buffer.alloc(0);
    sock.on('data', chunk => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (buf.length < 2 + len) break;
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        const reply = this.answer(msg, 'tcp', sock.remoteAddress ?? '');
        if (!reply) {
          sock.destroy();
          return;
        }
        const framed = Buffer.alloc(2 + reply.length);
        framed.writeUInt16BE(reply.length, 0);
        reply.copy(framed, 2);
        sock.write(framed);
      }
    });
  }

  /** The encoded response to one message, or undefined when it is not even a DNS header. */
  private answer(msg: Buffer, transport: 'udp' | 'tcp', from: string): Buffer | undefined {
    let query: dnsPacket.DecodedPacket;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      if (msg.length < 2) return undefined;
      return dnsPacket.encode({
        type: 'response',
        id: msg.readUInt16BE(0),
        flags: FORMERR,
        questions: [],
        answers: [],
      });
    }
    const questions = query.questions ?? [];
    const answers: dnsPacket.Answer[] = [];
    let rcode = 0;
    for (const q of questions) {
      const name = normalize(q.name);
      const ip = this.records.get(name);
      if (ip === undefined) rcode = NXDOMAIN;
      else if (q.type === 'A' || (q.type as string) === 'ANY')
        answers.push({ type: 'A', class: 'IN', name: q.name, ttl: this.opts.ttl ?? 5, data: ip });
      this.opts.onQuery?.({
        event: 'query',
        transport,
        from,
        name,
        type: q.type,
        rcode: ip === undefined ? 'NXDOMAIN' : 'NOERROR',
        answers: ip !== undefined && q.type === 'A' ? [ip] : [],
      });
    }
    if (questions.length === 0) rcode = FORMERR;
    return dnsPacket.encode({
      type: 'response',
      id: query.id ?? 0,
      // Authoritative; echo RD; no recursion available (it is not a recursive resolver).
      flags:
        dnsPacket.AUTHORITATIVE_ANSWER | (query.flag_rd ? dnsPacket.RECURSION_DESIRED : 0) | rcode,
      questions,
      answers,
    });
  }
}

/** The query lines of a lan-dns process's stdout. */
export function parseLanDnsLog(stdout: string): LanDnsQuery[] {
  const out: LanDnsQuery[] = [];
  for (const line of stdout.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const v = JSON.parse(line) as { event?: unknown };
      if (v.event === 'query') out.push(v as LanDnsQuery);
    } catch {
      // A partial line at the end of the buffer.
    }
  }
  return out;
}

/** `--listen HOST:PORT --record NAME=IP …` → server options. */
export function parseLanDnsArgs(argv: readonly string[]): LanDnsServerOptions {
  let listen: string | undefined;
  const records: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (value === undefined) throw new Error(`${flag}: missing value`);
    i++;
    if (flag === '--listen') listen = value;
    else if (flag === '--record') {
      const eq = value.indexOf('=');
      if (eq <= 0) throw new Error(`--record ${value}: want NAME=IP`);
      records[value.slice(0, eq)] = value.slice(eq + 1);
    } else throw new Error(`unknown flag ${flag}`);
  }
  const m = listen ? /^(.+):(\d+)$/.exec(listen) : null;
  if (!m) throw new Error(`--listen ${String(listen)}: want HOST:PORT`);
  return { host: m[1] as string, port: Number(m[2]), records };
}

async function main(): Promise<void> {
  const server = new LanDnsServer({
    ...parseLanDnsArgs(process.argv.slice(2)),
    onQuery: q => process.stdout.write(`${JSON.stringify(q)}\n`),
  });
  await server.start();
  process.stdout.write(`${JSON.stringify({ event: 'listening', address: server.address })}\n`);
  const stop = () => {
    server.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`lan-dns: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
