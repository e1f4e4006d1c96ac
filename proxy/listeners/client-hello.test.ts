import * as net from 'node:net';
import * as tls from 'node:tls';
import { MAX_CLIENT_HELLO_BYTES, parseClientHello } from './client-hello';

/** The first flight of a real `tls.connect` with `options`, captured by a plain TCP server. */
async function captureClientHello(options: tls.ConnectionOptions): Promise<Buffer> {
  const server = net.createServer();
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  try {
    const got = new Promise<Buffer>((resolve, reject) => {
      server.once('connection', (s: net.Socket) => {
        let buf = Buffer.alloc(0);
        s.on('data', (d: Buffer) => {
          buf = Buffer.concat([buf, d]);
          // The whole hello: its record length says when it is complete.
          if (buf.length >= 5 && buf.length >= 5 + buf.readUInt16BE(3)) {
            resolve(buf);
            s.destroy();
          }
        });
        s.on('error', reject);
      });
    });
    const client = tls.connect({ port, host: '127.0.0.1', ...options });
    client.on('error', () => {
      // The capturing server hangs up mid-handshake; that is the point.
    });
    try {
      return await got;
    } finally {
      client.destroy();
    }
  } finally {
    await new Promise(resolve => server.close(resolve));
  }
}

/** Re-frames one single-record hello as several records of at most `size` fragment bytes. */
function fragment(hello: Buffer, size: number): Buffer {
  const body = hello.subarray(5);
  const out: Buffer[] = [];
  for (let i = 0; i < body.length; i += size) {
    const part = body.subarray(i, i + size);
    const header = Buffer.from([22, hello[1]!, hello[2]!, 0, 0]);
    header.writeUInt16BE(part.length, 3);
    out.push(header, part);
  }
  return Buffer.concat(out);
}

interface HelloCase {
  name: string;
  options: tls.ConnectionOptions;
  serverName: string;
  alpn: string[];
}

const cases: HelloCase[] = [
  {
    name: 'reads SNI and ALPN as Istio mTLS clients send them',
    options: {
      servername: 'outbound_.9080_._.reviews.default.svc.cluster.local',
      ALPNProtocols: ['istio-peer-exchange', 'istio', 'istio-http/1.1'],
    },
    serverName: 'outbound_.9080_._.reviews.default.svc.cluster.local',
    alpn: ['istio-peer-exchange', 'istio', 'istio-http/1.1'],
  },
  {
    name: 'reads h2 and http/1.1 in the client order',
    options: { servername: 'example.com', ALPNProtocols: ['h2', 'http/1.1'] },
    serverName: 'example.com',
    alpn: ['h2', 'http/1.1'],
  },
  {
    name: 'gives no server name when the client dials an IP without servername',
    options: { ALPNProtocols: ['http/1.1'] },
    serverName: '',
    alpn: ['http/1.1'],
  },
  {
    name: 'gives no ALPN when the client offers none',
    options: { servername: 'db.internal' },
    serverName: 'db.internal',
    alpn: [],
  },
  {
    name: 'lowercases the server name',
    options: { servername: 'Reviews.Default.SVC' },
    serverName: 'reviews.default.svc',
    alpn: [],
  },
  {
    name: 'parses a TLS 1.2-only hello',
    options: { servername: 'old.example', maxVersion: 'TLSv1.2', ALPNProtocols: ['h2'] },
    serverName: 'old.example',
    alpn: ['h2'],
  },
];

describe('parseClientHello', () => {
  describe.each(cases)('$name', ({ options, serverName, alpn }) => {
    let hello: Buffer;
    beforeAll(async () => {
      hello = await captureClientHello({ ...options, rejectUnauthorized: false });
    });

    it('from one record', () => {
      expect(parseClientHello(hello)).toEqual({ kind: 'tls', serverName, alpn });
    });

    it('says incomplete for every strict prefix', () => {
      for (let n = 0; n < hello.length; n++) {
        expect([n, parseClientHello(hello.subarray(0, n)).kind]).toEqual([n, 'incomplete']);
      }
    });

    it('from a hello fragmented over several records', () => {
      const split = fragment(hello, 37);
      expect(parseClientHello(split)).toEqual({ kind: 'tls', serverName, alpn });
      expect(parseClientHello(split.subarray(0, split.length - 1)).kind).toBe('incomplete');
    });

    it('ignores bytes after the hello', () => {
      const more = Buffer.concat([hello, Buffer.from('trailing application bytes')]);
      expect(parseClientHello(more)).toEqual({ kind: 'tls', serverName, alpn });
    });
  });

  it.each([
    { name: 'an HTTP/1.1 request', data: Buffer.from('GET / HTTP/1.1\r\nHost: a\r\n\r\n') },
    { name: 'the HTTP/2 preface', data: Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n') },
    { name: 'a single non-TLS byte', data: Buffer.from([0x01]) },
    { name: 'a handshake byte with a non-TLS version', data: Buffer.from([22, 9]) },
    {
      name: 'a TLS record that is not a ClientHello',
      data: Buffer.from([22, 3, 1, 0, 4, 2, 0, 0, 0]),
    },
    { name: 'an oversized record', data: Buffer.from([22, 3, 1, 0x48, 0x01, 1]) },
    {
      name: 'a ClientHello whose body is truncated inside',
      data: Buffer.from([22, 3, 1, 0, 8, 1, 0, 0, 4, 3, 3, 0, 0]),
    },
  ])('says notTls for $name', ({ data }) => {
    expect(parseClientHello(data)).toEqual({ kind: 'notTls' });
  });

  it('says incomplete for no bytes and for a lone handshake byte', () => {
    expect(parseClientHello(Buffer.alloc(0)).kind).toBe('incomplete');
    expect(parseClientHello(Buffer.from([22])).kind).toBe('incomplete');
  });

  it('gives up reading a hello larger than the limit but still calls it TLS', () => {
    const header = Buffer.from([22, 3, 1, 0x40, 0x00, 1, 0, 0, 0]);
    header.writeUIntBE(MAX_CLIENT_HELLO_BYTES, 6, 3);
    expect(parseClientHello(header)).toEqual({ kind: 'tls', serverName: '', alpn: [] });
  });
});
