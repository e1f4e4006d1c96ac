/**
 * Tiny real gRPC servers for data-plane tests: a generic service `/sail.test.Echo/Call` (raw
 * bytes in and out, no .proto) that answers with the server's name and counts its calls, and a
 * client for it.
 */
import * as grpc from '@grpc/grpc-js';

export const ECHO_METHOD = '/sail.test.Echo/Call';

const raw = (b: Buffer): Buffer => b;

const echoService: grpc.ServiceDefinition = {
  Call: {
    path: ECHO_METHOD,
    requestStream: false,
    responseStream: false,
    requestSerialize: raw,
    requestDeserialize: raw,
    responseSerialize: raw,
    responseDeserialize: raw,
  },
};

/** The client class of the echo service (`new EchoClient(target, creds, options)`). */
export const EchoClient = grpc.makeGenericClientConstructor(echoService, 'Echo');

/** A running echo server. */
export interface EchoServer {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  /** Calls it has answered. */
  readonly calls: () => number;
  close(): void;
}

/** Starts an echo server answering with `name` on `host` (a loopback address), a free port. */
export async function startEchoServer(name: string, host = '127.0.0.1'): Promise<EchoServer> {
  const server = new grpc.Server();
  let calls = 0;
  server.addService(echoService, {
    Call: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      calls++;
      cb(null, Buffer.from(name));
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host}:0`, grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return { name, host, port, calls: () => calls, close: () => server.forceShutdown() };
}

/** One echo call; resolves with the name of the server that answered. */
export function callEcho(
  client: grpc.Client,
  opts: { metadata?: Record<string, string>; timeoutMs?: number } = {},
): Promise<string> {
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(opts.metadata ?? {})) md.set(k, v);
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      ECHO_METHOD,
      raw,
      raw,
      Buffer.alloc(0),
      md,
      { deadline: Date.now() + (opts.timeoutMs ?? 5_000) },
      (err, value) => (err ? reject(err) : resolve((value as Buffer).toString())),
    );
  });
}

/** What `n` calls returned: answers by server name, and errors by `CODE_NAME: details`. */
export interface CallTally {
  readonly byServer: Record<string, number>;
  readonly errors: Record<string, number>;
  readonly total: number;
}

/** Makes `n` calls, `concurrency` at a time, and counts where they landed. */
export async function tallyCalls(
  client: grpc.Client,
  n: number,
  opts: { metadata?: Record<string, string>; timeoutMs?: number; concurrency?: number } = {},
): Promise<CallTally> {
  const byServer: Record<string, number> = {};
  const errors: Record<string, number> = {};
  let next = 0;
  const worker = async () => {
    while (next < n) {
      next++;
      try {
        const name = await callEcho(client, opts);
        byServer[name] = (byServer[name] ?? 0) + 1;
      } catch (err) {
        const e = err as grpc.ServiceError;
        const key = `${grpc.status[e.code] ?? e.code}: ${e.details}`;
        errors[key] = (errors[key] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, opts.concurrency ?? 1) }, worker));
  return { byServer, errors, total: n };
}
