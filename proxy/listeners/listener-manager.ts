/**
 * The proxy's listeners: which sockets are bound (capture or explicit mode), where each accepted
 * connection was going, which listener and filter chain it belongs to (Envoy's matching, with
 * TLS ClientHello sniffing), TLS termination, and the hand-over to the HTTP connection manager or
 * the TCP proxy.
 *
 * Capture mode (iptables REDIRECT): `virtualOutbound` and `virtualInbound` are bound (their
 * addresses, or `traffic.outboundListen` / `inboundListen`), and the original destination comes
 * from SO_ORIGINAL_DST (common/native). Explicit mode: no capture listeners; one socket per outbound
 * service port (`0.0.0.0_PORT` → `outboundBindHost:PORT`) and per inbound workload port (the ports
 * of virtualInbound's chains → `inboundBindHost:PORT`), and the original destination is the
 * socket's local address.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import { type Clock, systemClock } from '../../common/clock';
import { parseHostPort } from '../../common/config';
import type { Logger } from '../../common/logging';
import type { FilterChain, Listener, ProxyConfig, SocketAddress } from '../model';
import { dupFd, getOriginalDst, loadNativeAddon, socketFd } from '../../common/native';
import type { TrafficOptions } from '../options';
import { serverSocketOptions } from '../tls';
import type {
  ClusterManager,
  ConfigHolder,
  DownstreamContext,
  HttpConnectionManager,
  PeerIdentity,
  ProxyTelemetry,
  TlsProvider,
} from '../types';
import { selectFilterChain, type ConnectionFacts } from './chain-match';
import {
  type ClientHelloResult,
  parseClientHello,
  TLS_UNKNOWN,
  MAX_CLIENT_HELLO_BYTES,
} from './client-hello';
import { TcpProxy } from './tcp-proxy';

/** Names pilot gives the capture listeners (pilot/xds/generate). */
export const VIRTUAL_OUTBOUND = 'virtualOutbound';
export const VIRTUAL_INBOUND = 'virtualInbound';
/**
 * How long a sniffing listener waits for the first bytes: server-first protocols (MySQL, SMTP)
 * send nothing until the server speaks, so after this the connection is matched as raw_buffer.
 */
export const SNIFF_TIMEOUT_MS = 1_000;
/** A TLS handshake that takes longer than this is abandoned (slowloris). */
export const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;

/** Options of {@link ListenerManager}. */
export interface ListenerManagerOptions {
  readonly logger: Logger;
  readonly clock?: Clock;
  readonly config: ConfigHolder;
  readonly tls: TlsProvider;
  readonly clusters: ClusterManager;
  readonly http: HttpConnectionManager;
  readonly telemetry: ProxyTelemetry;
  readonly traffic: TrafficOptions;
  /** How long a removed or moved listener's open connections may run before they are destroyed. */
  readonly drainMs: number;
  /** Explicit mode: the inbound bind host when `traffic.inboundBindHost` is unset (the node IP
   * from the node id). Without either, inbound ports are not bound (logged). */
  readonly nodeIp?: string;
  /**
   * Where a captured connection was going; undefined when it was not redirected. Default:
   * SO_ORIGINAL_DST through the native addon.
   * @internal tests without iptables put the kernel's answer here
   */
  readonly originalDst?: (socket: net.Socket) => SocketAddress | undefined;
}

/** Counters for the admin page and tests. Monotonic. */
export interface ListenerCounters {
  /** Connections accepted on any bound socket. */
  accepted: number;
  /** Closed because no filter chain (nor default chain) matched. */
  noFilterChain: number;
  /** Closed because the original destination was the capture listener itself. */
  loops: number;
  /** Closed because the TLS handshake failed or timed out, or no certificate was available. */
  tlsFailures: number;
  /** Closed because the client certificate was rejected (chain, SANs) or missing. */
  peerRejected: number;
  /** Binds that failed (EADDRINUSE, EACCES, …); retried at the next update. */
  bindFailures: number;
}

/** One socket to bind: which host:port, for which listener. */
export interface BindingPlan {
  /** Unique name: the listener's, or `virtualInbound_PORT` for explicit inbound ports. */
  readonly name: string;
  readonly listenerName: string;
  readonly host: string;
  readonly port: number;
  /** The original destination comes from SO_ORIGINAL_DST (capture mode). */
  readonly capture: boolean;
  /**
   * Listen on (a duplicate of) this inherited listening socket instead of binding host:port: the
   * node agent's IP_TRANSPARENT socket for TPROXY capture. Its connections' local address is their
   * original destination.
   */
  readonly fd?: number;
}

/** Whether `l` is a capture listener (it receives redirected traffic in capture mode). */
function isCaptureListener(l: Listener): boolean {
  return l.useOriginalDst || l.name === VIRTUAL_OUTBOUND || l.name === VIRTUAL_INBOUND;
}

function isInboundCapture(l: Listener): boolean {
  return l.name === VIRTUAL_INBOUND || (l.name !== VIRTUAL_OUTBOUND && l.direction === 'inbound');
}

function isWildcard(address: string): boolean {
  return address === '0.0.0.0' || address === '::';
}

/**
 * The sockets `config` asks for in `traffic`'s mode (pure). Explicit inbound ports use
 * `traffic.inboundBindHost ?? nodeIp`; without either they are left out.
 * @internal exported for tests
 */
export function planBindings(
  config: ProxyConfig,
  traffic: TrafficOptions,
  nodeIp: string | undefined,
): BindingPlan[] {
  const plans: BindingPlan[] = [];
  for (const l of config.listeners.values()) {
    const capture = isCaptureListener(l);
    if (traffic.mode === 'capture') {
      if (!l.bindToPort) continue;
      const override = capture
        ? isInboundCapture(l)
          ? traffic.inboundListen
          : traffic.outboundListen
        : undefined;
      const hp = override !== undefined ? parseHostPort(override) : undefined;
      const fd = capture && isInboundCapture(l) ? traffic.inboundFd : undefined;
      plans.push({
        name: l.name,
        listenerName: l.name,
        host: hp?.host ?? l.address.address,
        port: hp?.port ?? l.address.port,
        capture: true,
        ...(fd !== undefined ? { fd } : {}),
      });
      continue;
    }
    if (capture) {
      if (!isInboundCapture(l)) continue;
      const host = traffic.inboundBindHost ?? nodeIp;
      if (host === undefined) continue;
      const ports = new Set<number>();
      for (const c of l.filterChains) {
        if (c.match.destinationPort !== undefined) ports.add(c.match.destinationPort);
      }
      for (const port of [...ports].sort((a, b) => a - b)) {
        plans.push({ name: `${l.name}_${port}`, listenerName: l.name, host, port, capture: false });
      }
    } else if (!l.bindToPort) {
      if (l.direction === 'inbound' || !isWildcard(l.address.address)) continue;
      plans.push({
        name: l.name,
        listenerName: l.name,
        host: traffic.outboundBindHost,
        port: l.address.port,
        capture: false,
      });
    } else {
      plans.push({
        name: l.name,
        listenerName: l.name,
        host: l.address.address,
        port: l.address.port,
        capture: false,
      });
    }
  }
  return plans;
}

function planKey(p: BindingPlan): string {
  return `${p.name}|${p.host}|${p.port}|${p.capture}|${p.fd ?? ''}`;
}

/** `::ffff:10.0.0.1` → `10.0.0.1`: dual-stack sockets report IPv4 peers that way. */
function plainAddress(address: string | undefined): string {
  if (address === undefined) return '';
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

/** The listener a hand-off (`useOriginalDst`) reaches for `dst`: exact address, else wildcard. */
const handoffIndexes = new WeakMap<ProxyConfig, Map<string, Listener>>();

function findHandoff(config: ProxyConfig, dst: SocketAddress): Listener | undefined {
  let index = handoffIndexes.get(config);
  if (!index) {
    index = new Map();
    for (const l of config.listeners.values()) {
      if (l.useOriginalDst) continue;
      const a = isWildcard(l.address.address) ? '*' : l.address.address;
      const key = `${a}:${l.address.port}`;
      if (!index.has(key)) index.set(key, l);
    }
    handoffIndexes.set(config, index);
  }
  return index.get(`${dst.address}:${dst.port}`) ?? index.get(`*:${dst.port}`);
}

const kBinding = Symbol('sail.binding');

interface TrackedSocket extends net.Socket {
  [kBinding]?: Binding;
}

/** Untracks a socket when it closes (shared: no closure per connection). */
function onTrackedClose(this: TrackedSocket): void {
  this[kBinding]?.untrack(this);
}

/** A bound server socket and the connections it accepted. */
class Binding {
  readonly server: net.Server;
  /** The outermost socket of each open connection (the TLSSocket once TLS is terminated). */
  private readonly connections = new Set<net.Socket>();
  private idleWaiters: (() => void)[] = [];
  /** Set once the server stopped accepting (removed, moved or closing). */
  closing = false;
  bound: SocketAddress | undefined;

  constructor(
    readonly plan: BindingPlan,
    /** The listener as it was when bound; connections prefer the one in the current config. */
    readonly listener: Listener,
    onConnection: (binding: Binding, socket: net.Socket) => void,
  ) {
    this.server = net.createServer({ allowHalfOpen: true }, socket => onConnection(this, socket));
  }

  get size(): number {
    return this.connections.size;
  }

  track(socket: TrackedSocket): void {
    socket[kBinding] = this;
    this.connections.add(socket);
    socket.once('close', onTrackedClose);
  }

  untrack(socket: net.Socket): void {
    if (!this.connections.delete(socket) || this.connections.size > 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  /** Resolves when no connection is open. */
  whenIdle(): Promise<void> {
    if (this.connections.size === 0) return Promise.resolve();
    return new Promise(resolve => this.idleWaiters.push(resolve));
  }

  /** Stops accepting; open connections keep running. Idempotent. */
  stopAccepting(): void {
    if (this.closing) return;
    this.closing = true;
    this.server.close();
  }

  destroyAll(): void {
    for (const s of [...this.connections]) s.destroy();
  }
}

/** What the sniffer learnt: the ClientHello, or nothing (raw_buffer). */
const RAW: ClientHelloResult = Object.freeze({ kind: 'notTls' });

/** One accepted connection on its way to a handler. */
interface Pending {
  readonly binding: Binding;
  readonly socket: net.Socket;
  readonly listener: Listener;
  readonly originalDst: SocketAddress;
}

/** Socket errors before a handler owns the connection: the socket is destroyed by Node already. */
function ignoreSocketError(): void {
  // An 'error' listener is required or Node throws; the close that follows untracks the socket.
}

/**
 * Binds the listeners of the configuration in force and routes every accepted connection to its
 * handler. `update` after each push; `close` at shutdown.
 */
export class ListenerManager {
  /** Monotonic counters (admin page, tests). */
  readonly counters: ListenerCounters = {
    accepted: 0,
    noFilterChain: 0,
    loops: 0,
    tlsFailures: 0,
    peerRejected: 0,
    bindFailures: 0,
  };
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly debug: boolean;
  private readonly tcp: TcpProxy;
  private readonly readOriginalDst: (socket: net.Socket) => SocketAddress | undefined;
  /** Bound sockets by plan key. */
  private readonly bindings = new Map<string, Binding>();
  /** Removed bindings whose connections are draining. */
  private readonly draining = new Set<Binding>();
  private readonly drainAbort = new AbortController();
  /** Updates run one at a time, in order. */
  private updating: Promise<void> = Promise.resolve();
  private closing: Promise<void> | undefined;
  private warnedNoInboundHost = false;

  constructor(private readonly opts: ListenerManagerOptions) {
    this.log = opts.logger.child({ component: 'proxy', subsystem: 'listeners' });
    this.clock = opts.clock ?? systemClock;
    this.debug = this.log.isLevelEnabled('debug');
    this.tcp = new TcpProxy({
      logger: opts.logger,
      clock: this.clock,
      clusters: opts.clusters,
      telemetry: opts.telemetry,
    });
    this.readOriginalDst = opts.originalDst ?? readOriginalDstNative;
  }

  /**
   * Binds and unbinds to match `config` (call after each push). Unchanged bindings keep their
   * sockets; a removed or moved one stops accepting at once and its connections drain for
   * `drainMs`. A bind that fails is logged at warn and retried by the next update.
   * @throws Error in capture mode when the native addon (SO_ORIGINAL_DST) cannot be loaded
   */
  update(config: ProxyConfig): Promise<void> {
    const run = this.updating.then(() => this.apply(config));
    // The chain continues after a failed update; the caller sees the failure through `run`.
    this.updating = run.catch(() => undefined);
    return run;
  }

  /** Bound sockets by binding name (the listener's, or `virtualInbound_PORT` in explicit mode). */
  addresses(): Map<string, SocketAddress> {
    const out = new Map<string, SocketAddress>();
    for (const b of this.bindings.values()) if (b.bound) out.set(b.plan.name, b.bound);
    return out;
  }

  /** Open downstream connections, draining ones included. */
  get connectionCount(): number {
    let n = 0;
    for (const b of this.bindings.values()) n += b.size;
    for (const b of this.draining) n += b.size;
    return n;
  }

  /**
   * Stops accepting everywhere, lets open connections finish for up to `drainMs`, then destroys
   * what is left. Idempotent; concurrent callers share one promise.
   */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private async doClose(): Promise<void> {
    await this.updating;
    const all = [...this.bindings.values(), ...this.draining];
    this.bindings.clear();
    for (const b of all) b.stopAccepting();
    const idle = Promise.all(all.map(b => b.whenIdle()));
    const grace = this.clock
      .sleep(this.opts.drainMs, this.drainAbort.signal)
      .catch(() => undefined);
    await Promise.race([idle, grace]);
    this.drainAbort.abort(new Error('listener manager closed'));
    for (const b of all) b.destroyAll();
    await Promise.all(all.map(b => b.whenIdle()));
    this.draining.clear();
    this.log.info('Listeners closed');
  }

  private async apply(config: ProxyConfig): Promise<void> {
    if (this.closing) return;
    const traffic = this.opts.traffic;
    if (traffic.mode === 'capture' && this.opts.originalDst === undefined) loadNativeAddon();
    if (
      traffic.mode === 'explicit' &&
      traffic.inboundBindHost === undefined &&
      this.opts.nodeIp === undefined &&
      !this.warnedNoInboundHost
    ) {
      this.warnedNoInboundHost = true;
      this.log.warn('No inbound bind host: inbound ports are not bound in explicit mode');
    }
    const wanted = new Map<string, BindingPlan>();
    for (const p of planBindings(config, traffic, this.opts.nodeIp)) wanted.set(planKey(p), p);

    // Removed or moved: stop accepting first, so a new binding on the same port can take it.
    for (const [key, b] of this.bindings) {
      if (wanted.has(key)) continue;
      this.bindings.delete(key);
      this.drain(b);
    }
    const binds: Promise<void>[] = [];
    for (const [key, plan] of wanted) {
      if (this.bindings.has(key)) continue;
      const listener = config.listeners.get(plan.listenerName)!;
      binds.push(this.bind(key, plan, listener));
    }
    await Promise.all(binds);
  }

  private async bind(key: string, plan: BindingPlan, listener: Listener): Promise<void> {
    const b = new Binding(plan, listener, this.onConnection);
    try {
      await new Promise<void>((resolve, reject) => {
        b.server.once('error', reject);
        const listening = () => {
          b.server.off('error', reject);
          resolve();
        };
        if (plan.fd !== undefined) b.server.listen(inheritedHandle(plan.fd), listening);
        else b.server.listen({ host: plan.host, port: plan.port }, listening);
      });
    } catch (err: unknown) {
      this.counters.bindFailures++;
      this.log.warn(
        { err, listener: plan.name, host: plan.host, port: plan.port },
        'Failed to bind listener; retrying at the next update',
      );
      b.server.close();
      return;
    }
    b.server.on('error', (err: Error) => {
      // accept() failures (EMFILE): the server keeps listening.
      this.log.warn({ err, listener: plan.name }, 'Listener socket error');
    });
    const addr = b.server.address() as net.AddressInfo;
    b.bound = { address: addr.address, port: addr.port };
    if (this.closing) {
      b.stopAccepting();
      return;
    }
    this.bindings.set(key, b);
    this.log.info(
      { listener: plan.name, host: addr.address, port: addr.port, capture: plan.capture },
      'Listener bound',
    );
  }

  /** Stops accepting on `b` and destroys its connections after `drainMs`. */
  private drain(b: Binding): void {
    b.stopAccepting();
    this.log.info(
      { listener: b.plan.name, connections: b.size, drainMs: this.opts.drainMs },
      'Listener removed; draining its connections',
    );
    if (b.size === 0) return;
    this.draining.add(b);
    const done = (): void => {
      this.draining.delete(b);
      b.destroyAll();
    };
    Promise.race([b.whenIdle(), this.clock.sleep(this.opts.drainMs, this.drainAbort.signal)]).then(
      done,
      done,
    );
  }

  // -------------------------------------------------------------------------------------------
  // Per connection

  private readonly onConnection = (b: Binding, socket: net.Socket): void => {
    this.counters.accepted++;
    socket.on('error', ignoreSocketError);
    b.track(socket);
    if (b.closing) {
      socket.destroy();
      return;
    }
    const config = this.opts.config.current;
    let listener = config.listeners.get(b.plan.listenerName) ?? b.listener;
    const local: SocketAddress = {
      address: plainAddress(socket.localAddress),
      port: socket.localPort ?? 0,
    };
    let originalDst = local;
    if (b.plan.capture) {
      // TPROXY (an inherited transparent socket) keeps the destination: the local address is it.
      if (b.plan.fd === undefined) {
        let od: SocketAddress | undefined;
        try {
          od = this.readOriginalDst(socket);
        } catch (err: unknown) {
          // The socket is gone (fd closed by a reset) or the addon failed: nothing to route.
          if (this.debug) this.log.debug({ err }, 'Failed to read the original destination');
          socket.destroy();
          return;
        }
        if (od) originalDst = { address: plainAddress(od.address), port: od.port };
      }
      // Not redirected (or redirected to itself): a capture listener would forward to itself.
      // Under TPROXY every connection keeps its own destination: only one to the socket's own
      // port is such a loop.
      const toItself =
        b.plan.fd !== undefined
          ? local.port === b.bound?.port
          : originalDst.port === local.port && originalDst.address === local.address;
      if (isCaptureListener(listener) && toItself) {
        this.counters.loops++;
        if (this.debug) {
          this.log.debug(
            { listener: listener.name, remote: socket.remoteAddress },
            'Closed a connection to the capture listener itself',
          );
        }
        socket.destroy();
        return;
      }
    }
    if (listener.useOriginalDst) listener = findHandoff(config, originalDst) ?? listener;
    const pending: Pending = { binding: b, socket, listener, originalDst };
    if (listener.inspectTls) this.sniff(pending);
    else this.route(pending, RAW);
  };

  /** Reads the first bytes (up to a complete ClientHello or SNIFF_TIMEOUT_MS), then routes. */
  private sniff(p: Pending): void {
    const socket = p.socket;
    let buffered: Buffer | undefined;
    let done = false;
    const finish = (hello: ClientHelloResult): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.off('readable', onReadable);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      if (socket.destroyed) return;
      if (buffered) {
        // Ended after an incomplete ClientHello: there is no connection to serve.
        if (socket.readableEnded) {
          socket.destroy();
          return;
        }
        // Removing the last 'readable' listener puts the stream back in its initial mode, so the
        // next owner can read the bytes given back here with 'data', pipe() or a TLSSocket.
        socket.unshift(buffered);
      }
      this.route(p, hello);
    };
    const onReadable = (): void => {
      let chunk: Buffer | null;
      while ((chunk = socket.read() as Buffer | null) !== null) {
        buffered = buffered ? Buffer.concat([buffered, chunk]) : chunk;
      }
      if (!buffered) return;
      const hello = parseClientHello(buffered);
      if (hello.kind !== 'incomplete') finish(hello);
      else if (buffered.length > MAX_CLIENT_HELLO_BYTES) finish(TLS_UNKNOWN);
    };
    // Half-closed before sending anything (or a whole request, then FIN): route what there is.
    const onEnd = (): void => {
      const hello = buffered ? parseClientHello(buffered) : RAW;
      finish(hello.kind === 'incomplete' ? TLS_UNKNOWN : hello);
    };
    const timer = setTimeout(() => {
      // A partial ClientHello after the timeout is still TLS; nothing at all is raw_buffer.
      const hello = buffered ? parseClientHello(buffered) : RAW;
      finish(hello.kind === 'incomplete' ? TLS_UNKNOWN : hello);
    }, SNIFF_TIMEOUT_MS);
    socket.on('readable', onReadable);
    socket.once('end', onEnd);
    socket.once('close', onEnd);
  }

  /** Picks the chain and hands the connection to it (after TLS termination when it has TLS). */
  private route(p: Pending, hello: ClientHelloResult): void {
    const socket = p.socket;
    const isTls = hello.kind === 'tls';
    const facts: ConnectionFacts = {
      destinationAddress: p.originalDst.address,
      destinationPort: p.originalDst.port,
      sourceAddress: plainAddress(socket.remoteAddress),
      serverName: isTls ? hello.serverName : '',
      transportProtocol: isTls ? 'tls' : 'raw_buffer',
      alpn: isTls ? hello.alpn : [],
    };
    const chain = selectFilterChain(p.listener, facts);
    if (!chain) {
      this.counters.noFilterChain++;
      if (this.debug) {
        this.log.debug(
          { listener: p.listener.name, ...facts },
          'No filter chain matched; closing the connection',
        );
      }
      socket.destroy();
      return;
    }
    if (chain.tls) this.terminateTls(p, chain);
    else this.dispatch(p, chain, socket, undefined);
  }

  private terminateTls(p: Pending, chain: FilterChain): void {
    const tlsConfig = chain.tls!;
    let options: tls.TLSSocketOptions;
    try {
      options = serverSocketOptions(this.opts.tls, tlsConfig);
    } catch (err: unknown) {
      // No certificate yet (the agent has not written one): nothing to serve TLS with.
      this.counters.tlsFailures++;
      if (this.debug) this.log.debug({ err, chain: chain.name }, 'No TLS context for the chain');
      p.socket.destroy();
      return;
    }
    // A TLSSocket over a socket whose bytes were unshifted consumes them first (_tls_wrap
    // initRead), so the sniffed ClientHello reaches OpenSSL.
    const secure = new tls.TLSSocket(p.socket, options);
    secure.on('error', ignoreSocketError);
    // The TLSSocket owns the connection from here: drains destroy it (and with it the TCP socket).
    p.binding.track(secure);
    p.binding.untrack(p.socket);
    let established = false;
    secure.setTimeout(TLS_HANDSHAKE_TIMEOUT_MS);
    const onTimeout = (): void => {
      this.counters.tlsFailures++;
      secure.destroy();
    };
    secure.once('timeout', onTimeout);
    secure.once('error', (err: Error) => {
      if (established) return;
      this.counters.tlsFailures++;
      if (this.debug) this.log.debug({ err, chain: chain.name }, 'Downstream TLS handshake failed');
      p.socket.destroy();
    });
    secure.once('secure', () => {
      established = true;
      secure.setTimeout(0);
      secure.off('timeout', onTimeout);
      const why = this.opts.tls.verifyPeer(secure, tlsConfig.validation);
      const peer = this.opts.tls.peerIdentity(secure);
      if (why !== undefined || (tlsConfig.requireClientCertificate && !peer)) {
        this.counters.peerRejected++;
        if (this.debug) {
          this.log.debug(
            { chain: chain.name, reason: why ?? 'no client certificate' },
            'Downstream peer certificate rejected',
          );
        }
        secure.destroy();
        return;
      }
      this.dispatch(p, chain, secure, {
        ...(peer ? { peer } : {}),
        ...(secure.servername ? { sni: secure.servername } : {}),
        ...(secure.alpnProtocol ? { alpn: secure.alpnProtocol } : {}),
      });
    });
  }

  private dispatch(
    p: Pending,
    chain: FilterChain,
    socket: net.Socket,
    tlsInfo: { peer?: PeerIdentity; sni?: string; alpn?: string } | undefined,
  ): void {
    const ctx: DownstreamContext = {
      listener: p.listener,
      chain,
      direction: p.listener.direction === 'inbound' ? 'inbound' : 'outbound',
      remoteAddress: plainAddress(p.socket.remoteAddress),
      remotePort: p.socket.remotePort ?? 0,
      originalDst: p.originalDst,
      // TPROXY keeps the caller's address on the packets; with original_src the connection to the
      // application keeps it too.
      ...(p.binding.plan.fd !== undefined && this.opts.traffic.originalSourceMark !== undefined
        ? { originalSource: plainAddress(p.socket.remoteAddress) }
        : {}),
      ...(tlsInfo ? { tls: tlsInfo } : {}),
      connectionSecurity: tlsInfo?.peer ? 'mutual_tls' : 'none',
    };
    const handler = chain.handler;
    if (handler.kind === 'http') this.opts.http.handle(socket, handler, ctx);
    else this.tcp.handle(socket, handler, ctx);
  }
}

/**
 * A handle on a duplicate of the inherited listening socket `fd`, for `server.listen(handle)`.
 *
 * A duplicate, because closing a binding (a drain) must leave the original for the next one. A
 * handle rather than `listen({ fd })`, because in a `--concurrency` worker Node's cluster module
 * would ask the primary to listen on the primary's descriptor of that number; a handle is listened
 * on in this process, so each worker accepts from the shared socket itself. The wrapping socket
 * neither reads nor writes: it only carries the handle.
 * @throws Error naming traffic.inboundFd
 */
export function inheritedHandle(fd: number): net.Socket {
  let dup: number;
  try {
    dup = dupFd(fd);
  } catch (err) {
    throw new Error(
      `traffic.inboundFd ${fd} is not an open file descriptor (the node agent passes its TPROXY socket as 3; run by hand, leave traffic.inboundFd out)`,
      { cause: err },
    );
  }
  return new net.Socket({ fd: dup, readable: false, writable: false });
}

/** SO_ORIGINAL_DST of an accepted socket through the native addon. */
function readOriginalDstNative(socket: net.Socket): SocketAddress | undefined {
  const fd = socketFd(socket);
  if (fd === undefined) throw new Error('accepted socket has no file descriptor');
  return getOriginalDst(fd);
}
