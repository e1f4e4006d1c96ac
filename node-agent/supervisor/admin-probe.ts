/**
 * Reads the proxy's admin endpoints (`/ready`, `/server_info`) over loopback HTTP, with a short
 * deadline and no connection pooling: the supervisor's polls must never hold a socket open or
 * wait on a wedged proxy.
 */
import * as http from 'node:http';
import { parseHostPort } from '../../common/config';
import { InvalidInputError } from '../../common/errors';

/** Deadline of one admin request. A healthy proxy answers in well under a millisecond. */
export const ADMIN_REQUEST_TIMEOUT_MS = 1_000;
/** Larger bodies are cut off: /server_info is a few hundred bytes. */
const MAX_ADMIN_BODY_BYTES = 256 * 1024;

/** One admin response. */
export interface AdminResponse {
  readonly status: number;
  readonly body: string;
}

/**
 * GET `path` from the admin server at `address` (`HOST:PORT`).
 * Rejects on a connection error, a timeout (`timeoutMs`) or an over-long body.
 * @throws InvalidInputError when `address` is not HOST:PORT
 */
export function adminGet(
  address: string,
  path: string,
  timeoutMs = ADMIN_REQUEST_TIMEOUT_MS,
): Promise<AdminResponse> {
  const hp = parseHostPort(address);
  if (!hp)
    return Promise.reject(new InvalidInputError(`adminAddress: want HOST:PORT, got ${address}`));
  return new Promise((resolve, reject) => {
    const req = http.get(
      {
        host: hp.host,
        port: hp.port,
        path,
        agent: false,
        signal: AbortSignal.timeout(timeoutMs),
        headers: { connection: 'close' },
      },
      res => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_ADMIN_BODY_BYTES) {
            req.destroy(new Error(`admin ${path}: body larger than ${MAX_ADMIN_BODY_BYTES} bytes`));
            return;
          }
          chunks.push(c);
        });
        res.on('end', () => {
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
  });
}

/** What the supervisor reports of the proxy's xDS state (ProxyStatus.xds). */
export interface XdsStatus {
  readonly connected: boolean;
  /** version_info last ACKed per resource kind (`clusters`, `listeners`, `routes`, `endpoints`). */
  readonly versions: Readonly<Record<string, string>>;
}

/** `body` parsed when it is a JSON object; undefined otherwise. */
function jsonObject(body: string): Record<string, unknown> | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return undefined;
  }
  return typeof parsed === 'object' && parsed !== null
    ? (parsed as Record<string, unknown>)
    : undefined;
}

/** A `--concurrency` proxy's workers, from its `/server_info` (ProxyStatus.workers). */
export interface WorkersStatus {
  readonly concurrency: number;
  /** Running now (one may be restarting). */
  readonly live: number;
}

/**
 * The workers of a `--concurrency` proxy from a `/server_info` body (`workers`, which only a
 * primary adds: proxy/workers/primary.ts); undefined for a proxy without workers.
 */
export function parseWorkers(body: string): WorkersStatus | undefined {
  const w = jsonObject(body)?.workers;
  if (typeof w !== 'object' || w === null) return undefined;
  const { concurrency, live } = w as { concurrency?: unknown; live?: unknown };
  if (typeof concurrency !== 'number' || typeof live !== 'number') return undefined;
  return { concurrency, live };
}

/**
 * Extracts the xDS state from a `/server_info` body (`control_plane.connected` and
 * `control_plane.versions`, proxy/proxy.ts); undefined when the body does not have them.
 */
export function parseServerInfo(body: string): XdsStatus | undefined {
  const cp = jsonObject(body)?.control_plane;
  if (typeof cp !== 'object' || cp === null) return undefined;
  const { connected, versions } = cp as { connected?: unknown; versions?: unknown };
  if (typeof connected !== 'boolean') return undefined;
  const out: Record<string, string> = {};
  if (typeof versions === 'object' && versions !== null) {
    for (const [kind, v] of Object.entries(versions)) if (typeof v === 'string') out[kind] = v;
  }
  return { connected, versions: out };
}
