/**
 * One DNS exchange with an upstream nameserver, bytes in and bytes out: the query is sent exactly
 * as the application wrote it (its id, flags, EDNS options), and the answer comes back unchanged.
 */
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import type { Upstream } from './resolv-conf';

/** An exchange that got no usable answer (timeout, refused, reset, closed early). */
export class UpstreamError extends Error {
  constructor(
    message: string,
    readonly upstream: Upstream,
  ) {
    super(message);
    this.name = 'UpstreamError';
  }
}

const idOf = (b: Buffer) => (b.length >= 2 ? b.readUInt16BE(0) : -1);

/** What one exchange does with its socket, given the `finish` that settles it. */
type Exchange = (finish: (err: Error | undefined, answer?: Buffer) => void) => {
  /** Releases the socket (close or destroy). */
  release(): void;
};

/**
 * Runs one exchange with the settling every transport shares: the first of an answer, an error,
 * the timeout or `signal` wins, and the socket is released exactly once.
 */
function exchange(
  upstream: Upstream,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  start: Exchange,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let done = false;
    let release: (() => void) | undefined;
    const finish = (err: Error | undefined, answer?: Buffer) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      release?.();
      if (err) reject(err);
      else resolve(answer!);
    };
    const onAbort = () => finish(new UpstreamError('closed', upstream));
    const timer = setTimeout(
      () => finish(new UpstreamError(`no answer within ${timeoutMs} ms`, upstream)),
      timeoutMs,
    );
    if (signal?.aborted) {
      onAbort();
      return;
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    const started = start(finish);
    if (done) started.release();
    else release = () => started.release();
  });
}

/**
 * Sends `query` over UDP from a fresh socket (a random source port per query, as stub resolvers
 * do, so answers cannot be spoofed by guessing one port) connected to the upstream: only its
 * answers are read, and an ICMP port unreachable fails at once instead of waiting out the timeout.
 */
export function exchangeUdp(
  query: Buffer,
  upstream: Upstream,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<Buffer> {
  return exchange(upstream, timeoutMs, signal, finish => {
    const host = upstream.host.split('%')[0] ?? upstream.host;
    const socket = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
    socket.on('error', err => finish(new UpstreamError(err.message, upstream)));
    socket.on('message', msg => {
      // Another query's late answer cannot reach this socket; a wrong id is a spoofing attempt.
      if (idOf(msg) === idOf(query)) finish(undefined, msg);
    });
    socket.connect(upstream.port, upstream.host, () => {
      socket.send(query, err => {
        if (err) finish(new UpstreamError(err.message, upstream));
      });
    });
    return { release: () => socket.close() };
  });
}

/** Sends `query` (without its length prefix) over a new TCP connection and reads one answer. */
export function exchangeTcp(
  query: Buffer,
  upstream: Upstream,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<Buffer> {
  return exchange(upstream, timeoutMs, signal, finish => {
    const socket = net.connect({ host: upstream.host, port: upstream.port });
    let buffered = Buffer.alloc(0);
    socket.on('error', err => finish(new UpstreamError(err.message, upstream)));
    socket.on('close', () =>
      finish(new UpstreamError('connection closed before an answer', upstream)),
    );
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (buffered.length < 2) return;
      const length = buffered.readUInt16BE(0);
      if (buffered.length < 2 + length) return;
      finish(undefined, buffered.subarray(2, 2 + length));
    });
    const prefix = Buffer.alloc(2);
    prefix.writeUInt16BE(query.length);
    socket.write(Buffer.concat([prefix, query]));
    return { release: () => socket.destroy() };
  });
}
