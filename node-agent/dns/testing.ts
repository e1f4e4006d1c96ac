/**
 * A small real DNS server for tests (dns-packet over UDP and TCP on one loopback port): it plays
 * the host's original nameserver. Only tests import this file.
 * @internal
 */
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import * as dnsPacket from 'dns-packet';

/** A query the upstream received. */
export interface ReceivedQuery {
  readonly transport: 'udp' | 'tcp';
  readonly id: number;
  readonly name: string;
  readonly type: string;
  readonly bytes: Buffer;
}

/** A DNS server answering A records from `records`, NXDOMAIN for the rest. */
export class FakeUpstream {
  readonly received: ReceivedQuery[] = [];
  /** When true, queries are read and never answered (a black-holed nameserver). */
  silent = false;
  /** When set, every answer has this rcode and no records. */
  rcode: 'SERVFAIL' | 'REFUSED' | undefined;
  private udp: dgram.Socket | undefined;
  private tcp: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  port = 0;

  constructor(readonly records: Map<string, string[]> = new Map()) {}

  /** `127.0.0.1:PORT`. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const udp = dgram.createSocket('udp4');
      await new Promise<void>(resolve => udp.bind(0, '127.0.0.1', resolve));
      const port = udp.address().port;
      const tcp = net.createServer(s => this.onTcp(s));
      try {
        await new Promise<void>((resolve, reject) => {
          tcp.once('error', reject);
          tcp.listen(port, '127.0.0.1', resolve);
        });
      } catch (err) {
        udp.close();
        if (attempt > 5) throw err;
        continue;
      }
      udp.on('message', (msg, rinfo) => {
        const answer = this.answer(msg, 'udp');
        if (answer) udp.send(answer, rinfo.port, rinfo.address);
      });
      this.udp = udp;
      this.tcp = tcp;
      this.port = port;
      return;
    }
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await Promise.all([
      new Promise<void>(resolve => (this.udp ? this.udp.close(() => resolve()) : resolve())),
      new Promise<void>(resolve => (this.tcp ? this.tcp.close(() => resolve()) : resolve())),
    ]);
  }

  private onTcp(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    let buffered = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
        const msg = buffered.subarray(2, 2 + buffered.readUInt16BE(0));
        buffered = buffered.subarray(2 + msg.length);
        const answer = this.answer(Buffer.from(msg), 'tcp');
        if (answer) {
          const prefix = Buffer.alloc(2);
          prefix.writeUInt16BE(answer.length);
          socket.write(Buffer.concat([prefix, answer]));
        }
      }
    });
  }

  private answer(msg: Buffer, transport: 'udp' | 'tcp'): Buffer | undefined {
    const q = dnsPacket.decode(msg);
    const question = q.questions?.[0];
    if (!question) return undefined;
    this.received.push({
      transport,
      id: q.id ?? 0,
      name: question.name,
      type: question.type,
      bytes: Buffer.from(msg),
    });
    if (this.silent) return undefined;
    const ips = this.rcode ? undefined : this.records.get(question.name.toLowerCase());
    const rcode = this.rcode ?? (ips ? 'NOERROR' : 'NXDOMAIN');
    const rcodeNumber = { NOERROR: 0, SERVFAIL: 2, NXDOMAIN: 3, REFUSED: 5 }[rcode];
    const answers: dnsPacket.Answer[] =
      question.type === 'A'
        ? (ips ?? []).map(ip => ({ name: question.name, type: 'A', ttl: 60, data: ip }))
        : [];
    let out = dnsPacket.encode({
      type: 'response',
      id: q.id ?? 0,
      flags: dnsPacket.RECURSION_AVAILABLE | rcodeNumber,
      questions: [question],
      answers,
    });
    if (transport === 'udp' && out.length > 512) {
      out = dnsPacket.encode({
        type: 'response',
        id: q.id ?? 0,
        flags: dnsPacket.RECURSION_AVAILABLE | dnsPacket.TRUNCATED_RESPONSE,
        questions: [question],
      });
    }
    return out;
  }
}

/** Sends one UDP query to `address` and resolves with the answer (rejects after `timeoutMs`). */
export function udpQuery(address: string, query: Buffer, timeoutMs = 5000): Promise<Buffer> {
  const [host, port] = splitAddress(address);
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket('udp4');
    const timer = setTimeout(() => {
      socket.close();
      reject(new Error(`no UDP answer within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on('message', msg => {
      clearTimeout(timer);
      socket.close();
      resolve(msg);
    });
    socket.send(query, port, host);
  });
}

/** Sends length-prefixed queries on one TCP connection and resolves with as many answers. */
export function tcpQuery(address: string, queries: readonly Buffer[]): Promise<Buffer[]> {
  const [host, port] = splitAddress(address);
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    const answers: Buffer[] = [];
    let buffered = Buffer.alloc(0);
    socket.on('error', reject);
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
        answers.push(Buffer.from(buffered.subarray(2, 2 + buffered.readUInt16BE(0))));
        buffered = buffered.subarray(2 + answers[answers.length - 1]!.length);
      }
      if (answers.length === queries.length) {
        socket.end();
        resolve(answers);
      }
    });
    socket.on('close', () => {
      if (answers.length < queries.length)
        reject(new Error(`connection closed after ${answers.length} answers`));
    });
    socket.write(
      Buffer.concat(
        queries.map(q => {
          const prefix = Buffer.alloc(2);
          prefix.writeUInt16BE(q.length);
          return Buffer.concat([prefix, q]);
        }),
      ),
    );
  });
}

/** A query for `name`/`type` with `id`; `edns` adds an OPT record with that UDP size. */
export function makeQuery(
  name: string,
  type: 'A' | 'AAAA' | 'MX' | 'TXT',
  id = 4242,
  edns?: number,
): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name, type, class: 'IN' }],
    additionals:
      edns === undefined
        ? []
        : [
            {
              name: '.',
              type: 'OPT',
              udpPayloadSize: edns,
              extendedRcode: 0,
              ednsVersion: 0,
              flags: 0,
              flag_do: false,
              options: [],
            },
          ],
  });
}

function splitAddress(address: string): [string, number] {
  const i = address.lastIndexOf(':');
  return [address.slice(0, i), Number(address.slice(i + 1))];
}
