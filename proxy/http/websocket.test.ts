import * as crypto from 'node:crypto';
import * as http from 'node:http';
import * as net from 'node:net';
import { Harness, route, routeTo, staticCluster, table, vhost } from './testing';

const CLUSTER = 'outbound|80||ws.default.svc.cluster.local';
const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** One RFC 6455 frame (FIN, opcode) with an optional mask (clients must mask, §5.3). */
function frame(opcode: number, payload: Buffer, mask: boolean): Buffer {
  const len = payload.length;
  const ext = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const head = Buffer.alloc(2 + ext + (mask ? 4 : 0));
  head[0] = 0x80 | opcode;
  head[1] = (mask ? 0x80 : 0) | (len < 126 ? len : len < 65536 ? 126 : 127);
  if (ext === 2) head.writeUInt16BE(len, 2);
  if (ext === 8) head.writeBigUInt64BE(BigInt(len), 2);
  if (!mask) return Buffer.concat([head, payload]);
  const key = crypto.randomBytes(4);
  key.copy(head, 2 + ext);
  const masked = Buffer.from(payload);
  for (let i = 0; i < masked.length; i++) masked[i] = (masked[i] ?? 0) ^ (key[i % 4] ?? 0);
  return Buffer.concat([head, masked]);
}

/** Parses complete frames from `buf`; returns them and the unparsed rest. */
function parseFrames(buf: Buffer): { frames: { opcode: number; payload: Buffer }[]; rest: Buffer } {
  const frames: { opcode: number; payload: Buffer }[] = [];
  let off = 0;
  while (buf.length - off >= 2) {
    const b0 = buf[off] ?? 0;
    const b1 = buf[off + 1] ?? 0;
    let len = b1 & 0x7f;
    let p = off + 2;
    if (len === 126) {
      if (buf.length < p + 2) break;
      len = buf.readUInt16BE(p);
      p += 2;
    } else if (len === 127) {
      if (buf.length < p + 8) break;
      len = Number(buf.readBigUInt64BE(p));
      p += 8;
    }
    const masked = (b1 & 0x80) !== 0;
    const key = masked ? buf.subarray(p, p + 4) : undefined;
    if (masked) p += 4;
    if (buf.length < p + len) break;
    const payload = Buffer.from(buf.subarray(p, p + len));
    if (key)
      for (let i = 0; i < payload.length; i++) payload[i] = (payload[i] ?? 0) ^ (key[i % 4] ?? 0);
    frames.push({ opcode: b0 & 0x0f, payload });
    off = p + len;
  }
  return { frames, rest: buf.subarray(off) };
}

describe('WebSocket through the connection manager', () => {
  const origin = http.createServer((_req, res) => res.end('plain'));
  const upstreamSockets = new Set<net.Socket>();
  let seenHeaders: http.IncomingHttpHeaders | undefined;
  let harness: Harness;

  beforeAll(async () => {
    origin.on('upgrade', (req: http.IncomingMessage, socket: net.Socket) => {
      seenHeaders = req.headers;
      upstreamSockets.add(socket);
      const accept = crypto
        .createHash('sha1')
        .update(String(req.headers['sec-websocket-key']) + WS_GUID)
        .digest('base64');
      socket.write(
        'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
          `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
      );
      let buf: Buffer = Buffer.alloc(0);
      socket.on('data', (d: Buffer) => {
        const parsed = parseFrames(Buffer.concat([buf, d]));
        buf = parsed.rest;
        for (const f of parsed.frames) {
          if (f.opcode === 8) {
            socket.end(frame(8, Buffer.alloc(0), false));
            return;
          }
          socket.write(frame(f.opcode, Buffer.concat([Buffer.from('echo:'), f.payload]), false));
        }
      });
      socket.on('error', () => socket.destroy());
    });
    await new Promise<void>(r => origin.listen(0, '127.0.0.1', r));
    const port = (origin.address() as net.AddressInfo).port;
    harness = await Harness.start({
      clusters: [staticCluster(CLUSTER, [port])],
      routes: table('80', [vhost('ws', ['*'], [route(routeTo(CLUSTER))])]),
      handler: { upgrades: ['websocket'] },
    });
  });

  afterAll(async () => {
    await harness.close();
    for (const s of upstreamSockets) s.destroy();
    await new Promise<void>(r => origin.close(() => r()));
  });

  it('upgrades, relays the 101 and echoes frames both ways', async () => {
    const before = harness.telemetry.requests.length;
    const key = crypto.randomBytes(16).toString('base64');
    const client = net.connect(harness.listener.port, '127.0.0.1');
    let buf: Buffer = Buffer.alloc(0);
    const received: string[] = [];
    let head = '';
    const done = new Promise<void>((resolve, reject) => {
      client.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (head === '') {
          const end = buf.indexOf('\r\n\r\n');
          if (end < 0) return;
          head = buf.subarray(0, end).toString();
          buf = buf.subarray(end + 4);
          client.write(frame(1, Buffer.from('hello'), true));
          client.write(frame(2, crypto.randomBytes(70_000), true));
        }
        const parsed = parseFrames(buf);
        buf = parsed.rest;
        for (const f of parsed.frames) {
          if (f.opcode === 8) {
            client.end();
            resolve();
            return;
          }
          received.push(
            f.opcode === 1 ? f.payload.toString() : `binary:${String(f.payload.length)}`,
          );
          if (received.length === 2) client.write(frame(8, Buffer.alloc(0), true));
        }
      });
      client.on('error', reject);
    });
    client.write(
      'GET /chat HTTP/1.1\r\nHost: ws.default\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
    await done;
    const expectedAccept = crypto
      .createHash('sha1')
      .update(key + WS_GUID)
      .digest('base64');
    expect(head).toMatch(/^HTTP\/1\.1 101 Switching Protocols/);
    expect(head).toContain(`Sec-WebSocket-Accept: ${expectedAccept}`);
    expect(received).toEqual(['echo:hello', 'binary:70005']);
    expect(seenHeaders?.upgrade).toBe('websocket');
    expect(seenHeaders?.['x-request-id']).toBeDefined();
    const rec = await harness.lastRecord(before);
    expect(rec.responseCode).toBe(101);
  });

  it('refuses an upgrade type the handler does not allow with 403', async () => {
    const reply = await new Promise<string>((resolve, reject) => {
      const c = net.connect(harness.listener.port, '127.0.0.1', () =>
        c.write('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: spdy/3\r\nConnection: Upgrade\r\n\r\n'),
      );
      let got = '';
      c.on('data', (d: Buffer) => (got += d.toString()));
      c.on('close', () => resolve(got));
      c.on('error', reject);
    });
    expect(reply).toMatch(/^HTTP\/1\.1 403/);
  });
});
