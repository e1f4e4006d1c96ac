/**
 * The control plane's admin endpoint: the same routes on a unix socket (mode 0600: file
 * permissions are the authentication, the default on the control-plane host) and on HTTPS with
 * client certificates (remote admin). On HTTPS, admin routes need a client certificate that
 * chains to the mesh roots and carries one of the admin SPIFFE IDs; health and metrics routes
 * need none, so probes and Prometheus can reach them.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import type { TLSSocket } from 'node:tls';
import { closeServer, createRouter, listen, type Route } from './http';
import type { Lifecycle } from './lifecycle';
import type { Logger } from './logging';
import { parseCertificate } from './pki';

/** TLS material for the HTTPS listener. */
export interface AdminTlsMaterial {
  readonly certChainPem: string;
  readonly keyPem: string;
  readonly rootsPem: string;
}

export interface AdminServerOptions {
  readonly logger: Logger;
  readonly routes: readonly Route[];
  /** `unix:///path/admin.sock`; omitted: no socket. */
  readonly socket?: string;
  /** `HOST:PORT` for HTTPS; omitted: no HTTPS listener. */
  readonly listen?: string;
  readonly tls?: AdminTlsMaterial;
  /** SPIFFE IDs whose client certificates get admin rights over HTTPS. */
  readonly adminSpiffeIds: readonly string[];
}

export class AdminServer implements Lifecycle {
  private readonly log: Logger;
  private unixServer: http.Server | undefined;
  private httpsServer: https.Server | undefined;
  private boundAddress: string | undefined;

  constructor(private readonly opts: AdminServerOptions) {
    this.log = opts.logger.child({ component: 'admin' });
  }

  /** The bound HTTPS address (after start), e.g. `127.0.0.1:15014`. */
  get address(): string | undefined {
    return this.boundAddress;
  }

  async start(): Promise<void> {
    const { routes } = this.opts;
    try {
      if (this.opts.socket) {
        this.unixServer = http.createServer(createRouter(routes, this.log, () => true));
        await listen(this.unixServer, this.opts.socket);
        this.log.info({ address: this.opts.socket }, 'Admin socket listening');
      }
      if (this.opts.listen) {
        if (!this.opts.tls) throw new Error('admin HTTPS listener needs TLS material');
        const ids = new Set(this.opts.adminSpiffeIds);
        const isAdmin = (req: http.IncomingMessage): boolean => {
          const sock = req.socket as TLSSocket;
          if (!sock.authorized) return false;
          const raw = sock.getPeerCertificate().raw as Buffer | undefined;
          if (!raw || raw.length === 0) return false;
          return parseCertificate(raw).uris.some(u => ids.has(u));
        };
        this.httpsServer = https.createServer(
          { ...this.tlsOptions(this.opts.tls), requestCert: true, rejectUnauthorized: false },
          createRouter(routes, this.log, isAdmin),
        );
        this.boundAddress = await listen(this.httpsServer, this.opts.listen);
        this.log.info({ address: this.boundAddress }, 'Admin HTTPS listening');
      }
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  private tlsOptions(m: AdminTlsMaterial) {
    return { cert: m.certChainPem, key: m.keyPem, ca: m.rootsPem, minVersion: 'TLSv1.2' as const };
  }

  /** Swaps the HTTPS certificate and roots for new connections (serving certificate rotation). */
  updateTls(m: AdminTlsMaterial): void {
    this.httpsServer?.setSecureContext(this.tlsOptions(m));
  }

  async close(): Promise<void> {
    await Promise.all([
      this.unixServer && closeServer(this.unixServer),
      this.httpsServer && closeServer(this.httpsServer),
    ]);
    this.unixServer = undefined;
    this.httpsServer = undefined;
  }
}
