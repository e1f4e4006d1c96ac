/**
 * Small HTTP/JSON plumbing for admin and status endpoints (no framework: a handful of routes).
 * Request bodies are size-capped and must be JSON objects; every error is a JSON body
 * `{ "error": { "code", "message" } }` with a status that matches its class.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { type ErrorKind, errorKind, InvalidInputError, SailError } from './errors';
import type { Logger } from './logging';
import { parseHostPort } from './config';

/** The largest request body accepted, in bytes. */
export const MAX_BODY_BYTES = 1 << 20;

/** What a route handler sees. */
export interface HttpRequestContext {
  readonly req: http.IncomingMessage;
  readonly params: Record<string, string>;
  readonly query: URLSearchParams;
  /** True when the caller proved admin rights (unix socket, or an admin client certificate). */
  readonly admin: boolean;
  /** Reads and parses the JSON body (an object), at most MAX_BODY_BYTES. */
  body(): Promise<Record<string, unknown>>;
}

/** A handler's answer: JSON (object), or text with a content type. */
export type HttpResult =
  { status?: number; json: unknown } | { status?: number; text: string; contentType?: string };

/** One route: a method, a path with `:param` segments, and whether it needs admin rights. */
export interface Route {
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  readonly path: string;
  readonly admin: boolean;
  readonly handler: (ctx: HttpRequestContext) => Promise<HttpResult> | HttpResult;
}

const HTTP_STATUS: Record<ErrorKind, number> = {
  invalid: 400,
  unauthenticated: 401,
  denied: 403,
  exhausted: 429,
  not_ready: 503,
  not_found: 404,
  internal: 500,
};

function statusFor(err: unknown): number {
  return HTTP_STATUS[errorKind(err)];
}

function matchPath(pattern: string, actual: string): Record<string, string> | undefined {
  const p = pattern.split('/');
  const a = actual.split('/');
  if (p.length !== a.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < p.length; i++) {
    const seg = p[i] as string;
    if (seg.startsWith(':')) {
      try {
        params[seg.slice(1)] = decodeURIComponent(a[i] as string);
      } catch {
        return undefined; // a malformed %-escape matches no route
      }
    } else if (seg !== a[i]) return undefined;
  }
  return params;
}

function readBody(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        // Stop buffering but keep draining, so the client reads the error instead of a reset.
        req.removeAllListeners('data');
        req.resume();
        reject(new InvalidInputError(`request body exceeds ${MAX_BODY_BYTES} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.on('error', reject);
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      if (text.trim() === '') return resolve({});
      try {
        const v: unknown = JSON.parse(text);
        if (v === null || typeof v !== 'object' || Array.isArray(v))
          throw new Error('body must be a JSON object');
        resolve(v as Record<string, unknown>);
      } catch (err) {
        reject(new InvalidInputError(`invalid JSON body: ${(err as Error).message}`));
      }
    });
  });
}

/**
 * Builds a request listener over `routes`. `isAdmin(req)` decides admin rights per request
 * (the unix socket grants them; TLS checks the client certificate).
 */
export function createRouter(
  routes: readonly Route[],
  log: Logger,
  isAdmin: (req: http.IncomingMessage) => boolean,
): http.RequestListener {
  return (req, res) => {
    const send = (status: number, body: string, contentType: string) => {
      const headers: http.OutgoingHttpHeaders = {
        'content-type': contentType,
        'content-length': Buffer.byteLength(body),
      };
      // An answer before the body was read (too large) ends the connection rather than reuse it.
      if (!req.complete) headers.connection = 'close';
      res.writeHead(status, headers);
      res.end(body);
    };
    const sendError = (status: number, code: string, message: string) =>
      send(status, JSON.stringify({ error: { code, message } }) + '\n', 'application/json');
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://localhost');
    } catch {
      sendError(400, 'COMMON_INVALID_INPUT', `invalid request path ${JSON.stringify(req.url)}`);
      return;
    }
    let params: Record<string, string> | undefined;
    const route = routes.find(
      r => r.method === req.method && (params = matchPath(r.path, url.pathname)) !== undefined,
    );
    if (!route || !params) {
      const pathExists = routes.some(r => matchPath(r.path, url.pathname));
      if (pathExists)
        sendError(
          405,
          'COMMON_METHOD_NOT_ALLOWED',
          `method ${String(req.method)} not allowed on ${url.pathname}`,
        );
      else sendError(404, 'COMMON_NOT_FOUND', `no such endpoint ${url.pathname}`);
      return;
    }
    const admin = isAdmin(req);
    if (route.admin && !admin) {
      sendError(
        403,
        'COMMON_NOT_AUTHORIZED',
        'this endpoint needs admin credentials (the unix socket, or an admin client certificate)',
      );
      return;
    }
    const ctx: HttpRequestContext = {
      req,
      params,
      query: url.searchParams,
      admin,
      body: () => readBody(req),
    };
    Promise.resolve()
      .then(() => route.handler(ctx))
      .then(
        result => {
          if ('json' in result)
            send(
              result.status ?? 200,
              JSON.stringify(result.json, null, 2) + '\n',
              'application/json',
            );
          else
            send(
              result.status ?? 200,
              result.text,
              result.contentType ?? 'text/plain; charset=utf-8',
            );
        },
        (err: unknown) => {
          const status = statusFor(err);
          if (status === 500) log.error({ err, path: url.pathname }, 'Admin request failed');
          else log.debug({ err, path: url.pathname }, 'Admin request refused');
          sendError(
            status,
            err instanceof SailError ? err.code : 'COMMON_INTERNAL',
            status === 500 ? 'internal error' : (err as Error).message,
          );
        },
      );
  };
}

/**
 * Listens on `HOST:PORT` or `unix:///path` (a socket file, mode 0600, replacing a stale one).
 * Resolves with the bound address as text (the real port when 0 was asked for).
 */
export async function listen(server: http.Server, address: string): Promise<string> {
  if (address.startsWith('unix://')) {
    const file = address.slice('unix://'.length);
    await fs.promises.rm(file, { force: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(file, () => {
        server.off('error', reject);
        resolve();
      });
    });
    await fs.promises.chmod(file, 0o600);
    return address;
  }
  const hp = parseHostPort(address);
  if (!hp)
    throw new InvalidInputError(
      `invalid listen address ${JSON.stringify(address)}: want HOST:PORT or unix:///PATH`,
    );
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // exclusive: in a `sail proxy --concurrency` worker, its own admin port rather than a share of
    // one the cluster primary holds (a no-op outside a cluster).
    server.listen({ port: hp.port, host: hp.host, exclusive: true }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  return bound.family === 'IPv6'
    ? `[${bound.address}]:${bound.port}`
    : `${bound.address}:${bound.port}`;
}

/** Closes a server, ending idle keep-alive connections so close() does not hang. */
export function closeServer(server: http.Server): Promise<void> {
  return new Promise(resolve => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    server.closeIdleConnections();
    setTimeout(() => server.closeAllConnections(), 2000).unref();
  });
}
