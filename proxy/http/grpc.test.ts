import * as grpc from '@grpc/grpc-js';
import { Harness, route, routeTo, staticCluster, table, vhost } from './testing';

const CLUSTER = 'outbound|9090||grpc.default.svc.cluster.local';
const raw = (b: Buffer): Buffer => b;

const service: grpc.ServiceDefinition = {
  Unary: {
    path: '/sail.test.Stream/Unary',
    requestStream: false,
    responseStream: false,
    requestSerialize: raw,
    requestDeserialize: raw,
    responseSerialize: raw,
    responseDeserialize: raw,
  },
  ServerStream: {
    path: '/sail.test.Stream/ServerStream',
    requestStream: false,
    responseStream: true,
    requestSerialize: raw,
    requestDeserialize: raw,
    responseSerialize: raw,
    responseDeserialize: raw,
  },
  Bidi: {
    path: '/sail.test.Stream/Bidi',
    requestStream: true,
    responseStream: true,
    requestSerialize: raw,
    requestDeserialize: raw,
    responseSerialize: raw,
    responseDeserialize: raw,
  },
};

const Client = grpc.makeGenericClientConstructor(service, 'Stream');
type StreamClient = grpc.Client & {
  Unary: (
    req: Buffer,
    md: grpc.Metadata,
    cb: (err: grpc.ServiceError | null, res?: Buffer) => void,
  ) => grpc.ClientUnaryCall;
  ServerStream: (req: Buffer) => grpc.ClientReadableStream<Buffer>;
  Bidi: () => grpc.ClientDuplexStream<Buffer, Buffer>;
};

describe('gRPC through the connection manager', () => {
  const server = new grpc.Server();
  let harness: Harness;
  let client: StreamClient;

  beforeAll(async () => {
    server.addService(service, {
      Unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        const text = call.request.toString();
        if (text === 'fail') {
          cb({ code: grpc.status.FAILED_PRECONDITION, details: 'asked to fail' });
          return;
        }
        const md = new grpc.Metadata();
        md.set('x-trailer-echo', text);
        cb(null, Buffer.from(`hello ${text}`), md);
      },
      ServerStream: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
        const n = Number(call.request.toString());
        for (let i = 0; i < n; i++) call.write(Buffer.from(`item ${String(i)}`));
        call.end();
      },
      Bidi: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
        call.on('data', (d: Buffer) => call.write(Buffer.from(`echo ${d.toString()}`)));
        call.on('end', () => call.end());
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    harness = await Harness.start({
      clusters: [staticCluster(CLUSTER, [port], { upstreamProtocol: 'http2' })],
      routes: table('9090', [
        vhost(
          'grpc',
          ['*'],
          [
            // The fault filter is not in this handler's chain: the route's fault must not apply.
            route(routeTo(CLUSTER), { fault: { abort: { grpcStatus: 14, fraction: 1 } } }),
          ],
        ),
      ]),
      handler: { faultFilter: false },
    });
    client = new Client(
      `127.0.0.1:${String(harness.listener.port)}`,
      grpc.credentials.createInsecure(),
    ) as unknown as StreamClient;
  });

  afterAll(async () => {
    client.close();
    await harness.close();
    server.forceShutdown();
  });

  it('passes a unary call with its trailers', async () => {
    const before = harness.telemetry.requests.length;
    const trailers = await new Promise<grpc.Metadata>((resolve, reject) => {
      const call = client.Unary(Buffer.from('world'), new grpc.Metadata(), (err, res) => {
        if (err) reject(err);
        else expect(res?.toString()).toBe('hello world');
      });
      call.on('status', (s: grpc.StatusObject) => resolve(s.metadata));
    });
    expect(trailers.get('x-trailer-echo')).toEqual(['world']);
    const rec = await harness.lastRecord(before);
    expect(rec).toMatchObject({
      requestProtocol: 'grpc',
      responseCode: 200,
      grpcResponseStatus: '0',
    });
  });

  it('passes an error status from the upstream', async () => {
    const before = harness.telemetry.requests.length;
    const err = await new Promise<grpc.ServiceError>(resolve => {
      client.Unary(Buffer.from('fail'), new grpc.Metadata(), e => resolve(e as grpc.ServiceError));
    });
    expect(err.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(err.details).toBe('asked to fail');
    const rec = await harness.lastRecord(before);
    expect(rec.grpcResponseStatus).toBe(String(grpc.status.FAILED_PRECONDITION));
  });

  it('streams server responses', async () => {
    const items: string[] = [];
    await new Promise<void>((resolve, reject) => {
      const call = client.ServerStream(Buffer.from('50'));
      call.on('data', (d: Buffer) => items.push(d.toString()));
      call.on('error', reject);
      call.on('end', resolve);
    });
    expect(items).toHaveLength(50);
    expect(items[49]).toBe('item 49');
  });

  it('streams both ways', async () => {
    const got: string[] = [];
    await new Promise<void>((resolve, reject) => {
      const call = client.Bidi();
      call.on('data', (d: Buffer) => {
        got.push(d.toString());
        if (got.length < 5) call.write(Buffer.from(String(got.length)));
        else call.end();
      });
      call.on('error', reject);
      call.on('end', resolve);
      call.write(Buffer.from('0'));
    });
    expect(got).toEqual(['echo 0', 'echo 1', 'echo 2', 'echo 3', 'echo 4']);
  });

  it('aborts with a gRPC status from the fault filter (trailers-only)', async () => {
    const h = await Harness.start({
      clusters: [staticCluster(CLUSTER, [1])],
      routes: table('9090', [
        vhost(
          'grpc',
          ['*'],
          [route(routeTo(CLUSTER), { fault: { abort: { grpcStatus: 14, fraction: 1 } } })],
        ),
      ]),
    });
    const c = new Client(
      `127.0.0.1:${String(h.listener.port)}`,
      grpc.credentials.createInsecure(),
    ) as unknown as StreamClient;
    try {
      const err = await new Promise<grpc.ServiceError>(resolve => {
        c.Unary(Buffer.from('x'), new grpc.Metadata(), e => resolve(e as grpc.ServiceError));
      });
      expect(err.code).toBe(grpc.status.UNAVAILABLE);
      expect(err.details).toBe('fault filter abort');
      const rec = await h.lastRecord(0);
      expect(rec).toMatchObject({
        responseFlags: 'FI',
        grpcResponseStatus: '14',
        responseCode: 200,
      });
    } finally {
      c.close();
      await h.close();
    }
  });
});
