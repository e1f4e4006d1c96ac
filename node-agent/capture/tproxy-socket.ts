/**
 * The listening socket TPROXY delivers inbound connections to. TPROXY hands a connection only to
 * a socket with IP_TRANSPARENT, and setting that needs CAP_NET_ADMIN, which the proxy (running as
 * `sail-proxy`) does not have and should not: an agent-side socket keeps the proxy free of every
 * capability, where Istio's TPROXY mode gives the sidecar NET_ADMIN. The agent (root) opens it
 * once, the proxy inherits it at each start (as fd 3) and listens on it, and the agent closes it
 * when it stops. Connections that arrive while the proxy restarts wait in the backlog.
 */
import type { Clock } from '../../common/clock';
import { closeFd, transparentListen } from '../../common/native';
import { CaptureError } from './errors';

/** How long {@link TproxySocket.openWhenFree} waits for a port in use, and how often it tries. */
export const BUSY_WAIT_MS = 5_000;
const BUSY_RETRY_MS = 100;

/** The fd the proxy sees the socket as (the first after stdin, stdout and stderr). */
export const TPROXY_CHILD_FD = 3;

/** A transparent listening socket, open until close(). */
export class TproxySocket {
  private closed = false;

  private constructor(
    /** The agent's file descriptor of it (close-on-exec: only the proxy inherits it). */
    readonly fd: number,
    /** `::` (dual-stack: TPROXY of both families) or `0.0.0.0` on a host without IPv6. */
    readonly host: string,
    readonly port: number,
  ) {}

  /**
   * Opens `[::]:port` (dual-stack), or `0.0.0.0:port` where the host has no IPv6.
   * @throws CaptureError AGENT_CAPTURE_TPROXY_LISTEN_FAILED naming the port and the cause
   */
  static open(port: number): TproxySocket {
    let v6Error: unknown;
    try {
      return new TproxySocket(transparentListen('::', port), '::', port);
    } catch (err) {
      v6Error = err;
    }
    const code = (v6Error as { code?: string }).code;
    // No IPv6 on this host (EAFNOSUPPORT 97, EADDRNOTAVAIL 99): IPv4 alone.
    if (code === 'ERRNO_97' || code === 'ERRNO_99') {
      try {
        return new TproxySocket(transparentListen('0.0.0.0', port), '0.0.0.0', port);
      } catch (err) {
        throw listenFailed(port, err);
      }
    }
    throw listenFailed(port, v6Error);
  }

  /**
   * {@link open}, tried again every {@link BUSY_RETRY_MS} while the port is in use, for at most
   * `waitMs` (default {@link BUSY_WAIT_MS}); `onBusy` is called once, at the first refusal.
   * @throws CaptureError as open() does, the last refusal when the port stayed in use
   */
  static async openWhenFree(
    port: number,
    opts: { clock: Clock; waitMs?: number; onBusy?: () => void },
  ): Promise<TproxySocket> {
    const deadline = opts.clock.now() + (opts.waitMs ?? BUSY_WAIT_MS);
    for (let attempt = 0; ; attempt++) {
      try {
        return TproxySocket.open(port);
      } catch (err) {
        const inUse = ((err as Error).cause as { code?: string } | undefined)?.code === 'ERRNO_98';
        if (!inUse || opts.clock.now() >= deadline) throw err;
        if (attempt === 0) opts.onBusy?.();
      }
      await opts.clock.sleep(BUSY_RETRY_MS);
    }
  }

  /** Closes the agent's copy. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeFd(this.fd);
  }
}

function listenFailed(port: number, err: unknown): CaptureError {
  const code = (err as { code?: string }).code;
  const hint =
    code === 'ERRNO_1'
      ? ': setting IP_TRANSPARENT needs CAP_NET_ADMIN (run the agent as root)'
      : code === 'ERRNO_98'
        ? `: port ${port} is in use (another proxy, or capture.mode redirect's listener)`
        : '';
  return new CaptureError(
    'AGENT_CAPTURE_TPROXY_LISTEN_FAILED',
    `capture.mode tproxy: cannot open the transparent inbound socket on port ${port}: ${(err as Error).message}${hint}`,
    { cause: err },
  );
}
