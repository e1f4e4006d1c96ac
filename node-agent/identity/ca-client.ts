/**
 * A promise-returning client of the CA (`sail.ca.v1.CertificateAuthority`). One channel per
 * credential set (trust roots + client identity), replaced and closed when the credentials change:
 * a renewal presents the current certificate, so each new certificate needs a new TLS identity.
 */
import * as crypto from 'node:crypto';
import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import {
  type CertificateAuthorityClient,
  type CreateCertificateResponse__Output,
  type GetTrustBundleResponse__Output,
  loadCaProto,
} from '../../api';
import { parseHostPort } from '../../common/config';
import { getErrorMessage } from '../../common/errors';
import {
  type ClientIdentity,
  clientCredentials,
  statusCode,
  statusErrorCode,
} from '../../common/grpc';
import type { Logger } from '../../common/logging';
import { CaRequestError } from '../errors';

/** Deadline of one CA call unless configured. */
export const DEFAULT_CA_REQUEST_TIMEOUT_MS = 10_000;

/** What a channel trusts and presents. */
export interface CaCredentials {
  /** PEM roots the CA's serving certificate must chain to. */
  readonly rootsPem: string;
  /** Client certificate and key for mTLS (renewal, bootstrap); none for token attestation. */
  readonly identity?: ClientIdentity;
}

/** A certificate request as the agent sends it. */
export interface CertificateRequest {
  readonly csrPem: string;
  readonly validitySeconds: number;
  readonly spiffeId: string;
  readonly node: string;
}

/** Per-call options. */
export interface CaCallOptions {
  /** Sent as `authorization: Bearer <token>` (join token attestation). */
  readonly token?: string;
  /** Cancels the call. */
  readonly signal?: AbortSignal;
}

/** The calls the rotator makes; CaClient implements it and tests may substitute a fake. */
export interface CaApi {
  setCredentials(creds: CaCredentials): void;
  createCertificate(
    req: CertificateRequest,
    opts?: CaCallOptions,
  ): Promise<CreateCertificateResponse__Output>;
  getTrustBundle(opts?: CaCallOptions): Promise<GetTrustBundleResponse__Output>;
  close(): void;
}

/** Options of {@link CaClient}. */
export interface CaClientOptions {
  /** The CA's `HOST:PORT`. */
  readonly address: string;
  /** The SPIFFE ID the CA's serving certificate must carry (checked instead of the host name). */
  readonly serverSpiffeId: string;
  readonly logger: Logger;
  /** Deadline of each call. Default DEFAULT_CA_REQUEST_TIMEOUT_MS. */
  readonly requestTimeoutMs?: number;
  /**
   * Bounds of grpc-js's own reconnect backoff. Without a cap grpc-js waits up to 120 s before it
   * dials again, and calls made meanwhile fail at once: the agent's retries would be wasted.
   */
  readonly reconnectBackoffMs?: { readonly initial: number; readonly max: number };
}

interface Channel {
  readonly key: string;
  readonly client: CertificateAuthorityClient;
}

function credentialsKey(c: CaCredentials): string {
  const h = crypto.createHash('sha256').update(c.rootsPem);
  if (c.identity)
    h.update('\0').update(c.identity.certChainPem).update('\0').update(c.identity.keyPem);
  return h.digest('hex');
}

/** TLS server name sent when the CA is addressed by IP; see tlsNameOptions. */
const IP_TARGET_SERVER_NAME = 'sail-ca';

/**
 * VMs usually reach the CA by IP, and RFC 6066 forbids an IP address as the TLS server name (Node
 * warns, DEP0123). The name is not what identifies the CA here — its SPIFFE ID is — so a fixed
 * name is sent instead.
 */
function tlsNameOptions(address: string): grpc.ChannelOptions {
  const host = parseHostPort(address)?.host;
  return host !== undefined && net.isIP(host) !== 0
    ? { 'grpc.ssl_target_name_override': IP_TARGET_SERVER_NAME }
    : {};
}

/** Turns a grpc-js error into a CaRequestError carrying the status and the CA's error code. */
function toCaRequestError(method: string, err: unknown): CaRequestError {
  const code = statusCode(err) ?? grpc.status.UNKNOWN;
  const caCode = statusErrorCode(err);
  const details = (err as { details?: unknown }).details;
  const why = typeof details === 'string' && details !== '' ? details : getErrorMessage(err);
  return new CaRequestError(
    method,
    code,
    caCode,
    `${method} failed: ${grpc.status[code] ?? code}${caCode ? ` (${caCode})` : ''}: ${why}`,
    { cause: err },
  );
}

/**
 * The CA client. Not usable before setCredentials(); close() releases the channel and is
 * idempotent. Calls reject with CaRequestError, or with the signal's reason when aborted.
 */
export class CaClient implements CaApi {
  private channel: Channel | undefined;
  private closed = false;
  private readonly timeoutMs: number;
  private readonly log: Logger;

  constructor(private readonly opts: CaClientOptions) {
    this.timeoutMs = opts.requestTimeoutMs ?? DEFAULT_CA_REQUEST_TIMEOUT_MS;
    this.log = opts.logger;
  }

  /** Uses `creds` from the next call on; a different set replaces (and closes) the channel. */
  setCredentials(creds: CaCredentials): void {
    if (this.closed) throw new Error('CA client is closed');
    const key = credentialsKey(creds);
    if (this.channel?.key === key) return;
    this.channel?.client.close();
    const Ctor = loadCaProto().sail.ca.v1.CertificateAuthority;
    const backoff = this.opts.reconnectBackoffMs;
    const channelOptions: grpc.ChannelOptions = {
      ...tlsNameOptions(this.opts.address),
      ...(backoff
        ? {
            'grpc.initial_reconnect_backoff_ms': backoff.initial,
            'grpc.max_reconnect_backoff_ms': backoff.max,
          }
        : {}),
    };
    const client = new Ctor(
      this.opts.address,
      clientCredentials(creds.rootsPem, this.opts.serverSpiffeId, creds.identity),
      channelOptions,
    );
    this.channel = { key, client };
    this.log.debug(
      { address: this.opts.address, mtls: creds.identity !== undefined },
      'Opened CA channel',
    );
  }

  /** CreateCertificate: sends the CSR and returns the chain (leaf first). */
  createCertificate(
    req: CertificateRequest,
    opts: CaCallOptions = {},
  ): Promise<CreateCertificateResponse__Output> {
    return this.unary<CreateCertificateResponse__Output>(
      'CreateCertificate',
      opts,
      (client, md, callOpts, cb) =>
        client.CreateCertificate(
          {
            csr: req.csrPem,
            validitySeconds: req.validitySeconds,
            spiffeId: req.spiffeId,
            node: req.node,
          },
          md,
          callOpts,
          cb,
        ),
    );
  }

  /** GetTrustBundle: the roots to trust (needs no credentials, but is asked over the verified channel). */
  getTrustBundle(opts: CaCallOptions = {}): Promise<GetTrustBundleResponse__Output> {
    return this.unary<GetTrustBundleResponse__Output>(
      'GetTrustBundle',
      opts,
      (client, md, callOpts, cb) => client.GetTrustBundle({}, md, callOpts, cb),
    );
  }

  private unary<Res>(
    method: string,
    opts: CaCallOptions,
    invoke: (
      client: CertificateAuthorityClient,
      md: grpc.Metadata,
      callOpts: grpc.CallOptions,
      cb: (err: grpc.ServiceError | null, res?: Res) => void,
    ) => grpc.ClientUnaryCall,
  ): Promise<Res> {
    const channel = this.channel;
    if (this.closed || !channel)
      return Promise.reject(
        new Error(this.closed ? 'CA client is closed' : 'CA client has no credentials yet'),
      );
    const { signal, token } = opts;
    if (signal?.aborted) return Promise.reject(signal.reason as Error);
    const md = new grpc.Metadata();
    if (token !== undefined) md.set('authorization', `Bearer ${token}`);
    return new Promise<Res>((resolve, reject) => {
      let call: grpc.ClientUnaryCall | undefined = undefined;
      const onAbort = () => {
        call?.cancel();
        reject(signal?.reason as Error);
      };
      // grpc deadlines are wall-clock by nature; the injected Clock governs only the agent's own timing.
      call = invoke(channel.client, md, { deadline: Date.now() + this.timeoutMs }, (err, res) => {
        signal?.removeEventListener('abort', onAbort);
        if (signal?.aborted) return; // already rejected by onAbort
        if (err) reject(toCaRequestError(method, err));
        else if (res === undefined) reject(toCaRequestError(method, new Error('empty response')));
        else resolve(res);
      });
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Closes the channel; later calls reject. Idempotent. */
  close(): void {
    this.closed = true;
    this.channel?.client.close();
    this.channel = undefined;
  }
}

/**
 * Fetches the trust bundle from a CA whose root is not known yet (`sail join --ca-fingerprint`):
 * TLS without verifying the server. The caller must check what comes back (a fingerprint) before
 * trusting any of it.
 */
export async function fetchTrustBundleUnverified(
  address: string,
  timeoutMs = DEFAULT_CA_REQUEST_TIMEOUT_MS,
): Promise<GetTrustBundleResponse__Output> {
  const Ctor = loadCaProto().sail.ca.v1.CertificateAuthority;
  // rejectUnauthorized: false is the point: the root that would verify the server is what we fetch.
  const client = new Ctor(
    address,
    grpc.credentials.createSsl(null, null, null, { rejectUnauthorized: false }),
    tlsNameOptions(address),
  );
  try {
    return await new Promise<GetTrustBundleResponse__Output>((resolve, reject) => {
      client.GetTrustBundle({}, { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err) reject(toCaRequestError('GetTrustBundle', err));
        else if (!res) reject(toCaRequestError('GetTrustBundle', new Error('empty response')));
        else resolve(res);
      });
    });
  } finally {
    client.close();
  }
}
