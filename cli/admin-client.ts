/**
 * The client side of the control plane's admin API, used by `sail token`, `sail node` and later
 * `sail apply/get/delete`. It speaks HTTP over the unix socket, or HTTPS with the admin client
 * certificate from `--admin-dir` (written by the control plane into DATA_DIR/admin/).
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as path from 'node:path';
import { InvalidInputError, SailError } from '../common/errors';
import { parseCertificate } from '../common/pki';

export const DEFAULT_DATA_DIR = '/var/lib/sail/control-plane';
export const DEFAULT_SERVER = `unix://${DEFAULT_DATA_DIR}/admin.sock`;
export const DEFAULT_ADMIN_DIR = `${DEFAULT_DATA_DIR}/admin`;

/** An error answer from the admin API. */
export class AdminApiError extends SailError {
  constructor(
    readonly status: number,
    code: string,
    message: string,
  ) {
    super(code, message);
  }
}

export interface AdminClientOptions {
  /** `unix:///path/admin.sock` or `https://HOST:PORT`. */
  readonly server: string;
  /** Directory with cert-chain.pem, key.pem and root-cert.pem, for https. */
  readonly adminDir: string;
  readonly timeoutMs?: number;
}

export class AdminClient {
  constructor(private readonly opts: AdminClientOptions) {}

  /**
   * Sends one request and parses the JSON answer.
   * @throws AdminApiError for an error answer (a 400 becomes InvalidInputError, exit code 2; others exit 1);
   *   Error when the server cannot be reached
   */
  async request<T>(method: string, urlPath: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (payload !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(Buffer.byteLength(payload));
    }
    const { server } = this.opts;
    let req: http.ClientRequest;
    const timeout = this.opts.timeoutMs ?? 15_000;
    const done = new Promise<{ status: number; text: string }>((resolve, reject) => {
      const onResponse = (res: http.IncomingMessage) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }),
        );
        res.on('error', reject);
      };
      if (server.startsWith('unix://')) {
        const socketPath = server.slice('unix://'.length);
        req = http.request({ socketPath, path: urlPath, method, headers, timeout }, onResponse);
      } else if (server.startsWith('https://')) {
        const url = new URL(urlPath, server);
        const dir = this.opts.adminDir;
        const read = (f: string) => {
          try {
            return fs.readFileSync(path.join(dir, f));
          } catch (err) {
            throw new InvalidInputError(
              `cannot read ${path.join(dir, f)} (set --admin-dir): ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
            );
          }
        };
        req = https.request(
          {
            host: url.hostname.replace(/^\[|\]$/g, ''),
            port: url.port || 15014,
            path: url.pathname + url.search,
            method,
            headers,
            timeout,
            ca: read('root-cert.pem'),
            cert: read('cert-chain.pem'),
            key: read('key.pem'),
            // The control plane is pinned by its SPIFFE ID, not its host name.
            checkServerIdentity: (_host, cert) =>
              cert.raw &&
              parseCertificate(cert.raw).uris.some(u =>
                /^spiffe:\/\/[^/]+\/ns\/sail-system\/sa\/sail-control-plane$/.test(u),
              )
                ? undefined
                : new Error('server is not the Sail control plane (SPIFFE ID mismatch)'),
          },
          onResponse,
        );
      } else {
        throw new InvalidInputError(
          `--server ${JSON.stringify(server)}: want unix:///PATH/admin.sock or https://HOST:PORT`,
        );
      }
      req.on('timeout', () =>
        req.destroy(new Error(`no answer from ${server} within ${timeout} ms`)),
      );
      req.on('error', err => {
        const code = (err as NodeJS.ErrnoException).code;
        const hint =
          code === 'ENOENT' || code === 'ECONNREFUSED'
            ? ' (is the control plane running? set --server or SAIL_SERVER)'
            : '';
        reject(
          new Error(`cannot reach the control plane at ${server}: ${err.message}${hint}`, {
            cause: err,
          }),
        );
      });
      req.end(payload);
    });
    const { status, text } = await done;
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : {};
    } catch {
      throw new Error(`control plane answered ${status} with a body that is not JSON`);
    }
    if (status >= 400) {
      const e = (json as { error?: { code?: string; message?: string } }).error ?? {};
      if (status === 400)
        throw new InvalidInputError(e.message ?? `HTTP ${status}`, {
          code: e.code ?? 'COMMON_INVALID_INPUT',
        });
      throw new AdminApiError(status, e.code ?? 'COMMON_INTERNAL', e.message ?? `HTTP ${status}`);
    }
    return json as T;
  }
}
