/** The CertificateAuthority gRPC service: validation, fair queueing, authn/z, signing, metrics. */
import { performance } from 'node:perf_hooks';
import type * as grpc from '@grpc/grpc-js';
import type {
  CertificateAuthorityHandlers,
  CreateCertificateRequest__Output,
  CreateCertificateResponse,
  GetTrustBundleResponse,
} from '../api';
import { errorKind, NotAuthorizedError } from '../common/errors';
import { peerCertificateOf, unaryHandler } from '../common/grpc';
import type { Logger } from '../common/logging';
import { prom } from '../common/metrics';
import { CsrError, parseCsrAsync, parsePem } from '../common/pki';
import { type Authenticator, bearerToken, chooseIdentity } from './authorizer';
import { MAX_CSR_BYTES, MIN_CERT_TTL_MS } from './config';
import { CsrInvalidError, invalid } from './errors';
import type { FairQueue } from './fair-queue';
import { type CertIssuer, workloadSubject } from './issuer';
import { type Registry, spkiHash } from './registry';

/** The service's metrics, registered on the component's registry. */
export class CaMetrics {
  readonly requests: prom.Counter<'attestation' | 'result'>;
  readonly signSeconds: prom.Histogram;
  readonly queueDepth: prom.Gauge;

  constructor(registry: prom.Registry, queue: () => number) {
    this.requests = new prom.Counter({
      name: 'sail_ca_csr_requests_total',
      help: 'CreateCertificate requests by attestation method and result',
      labelNames: ['attestation', 'result'],
      registers: [registry],
    });
    this.signSeconds = new prom.Histogram({
      name: 'sail_ca_csr_duration_seconds',
      help: 'Time from a CreateCertificate request arriving to its answer, queueing included',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    });
    this.queueDepth = new prom.Gauge({
      name: 'sail_ca_queue_depth',
      help: 'CreateCertificate requests waiting for their turn',
      registers: [registry],
      collect() {
        this.set(queue());
      },
    });
  }
}

/** The `result` label of sail_ca_csr_requests_total for a failure. */
function resultOf(err: unknown): string {
  const kind = errorKind(err);
  if (kind === 'invalid' || kind === 'unauthenticated' || kind === 'denied') return kind;
  if (kind === 'exhausted' || kind === 'not_ready') return 'overloaded';
  return 'error';
}

export interface CaServiceDeps {
  readonly log: Logger;
  readonly trustDomain: string;
  readonly defaultTtlMs: number;
  readonly maxTtlMs: number;
  readonly now: () => number;
  readonly issuer: () => CertIssuer;
  readonly roots: () => readonly string[];
  readonly authenticator: Authenticator;
  readonly registry: Registry;
  readonly queue: FairQueue;
  readonly metrics: CaMetrics;
}

/** Parses the requested lifetime: 0 is the default, below the minimum is an error, above the max is capped. */
export function resolveTtlMs(
  validitySeconds: string | number,
  defaultMs: number,
  maxMs: number,
): number {
  const s = Number(validitySeconds);
  if (!Number.isFinite(s) || s < 0)
    throw invalid(
      'CA_TTL_INVALID',
      `validity_seconds ${String(validitySeconds)} is not a non-negative number`,
    );
  if (s === 0) return Math.min(defaultMs, maxMs);
  const ms = s * 1000;
  if (ms < MIN_CERT_TTL_MS)
    throw invalid(
      'CA_TTL_INVALID',
      `validity_seconds ${s} is below the minimum of ${MIN_CERT_TTL_MS / 1000}`,
    );
  return Math.min(ms, maxMs);
}

function csrDerFrom(pem: string): Buffer {
  if (!pem) throw new CsrInvalidError('csr is empty');
  if (Buffer.byteLength(pem) > MAX_CSR_BYTES)
    throw new CsrInvalidError(
      `csr is ${Buffer.byteLength(pem)} bytes; the limit is ${MAX_CSR_BYTES}`,
    );
  let blocks;
  try {
    blocks = parsePem(pem).filter(
      b => b.label === 'CERTIFICATE REQUEST' || b.label === 'NEW CERTIFICATE REQUEST',
    );
  } catch (err) {
    throw new CsrInvalidError(`csr is not valid PEM: ${(err as Error).message}`);
  }
  if (blocks.length !== 1)
    throw new CsrInvalidError(
      `csr must hold exactly one PEM "CERTIFICATE REQUEST" block, found ${blocks.length}`,
    );
  return (blocks[0] as { der: Buffer }).der;
}

/** Builds the grpc-js handlers. */
export function createCaHandlers(d: CaServiceDeps): CertificateAuthorityHandlers {
  const create = async (
    call: grpc.ServerUnaryCall<CreateCertificateRequest__Output, CreateCertificateResponse>,
  ): Promise<CreateCertificateResponse> => {
    const started = performance.now();
    const req = call.request;
    // Read once per connection (common/grpc), with its SHA-256 fingerprint.
    const peer = peerCertificateOf(call);
    const token = bearerToken(call.metadata.get('authorization'));
    // The fairness key must be cheap to compute: the peer certificate, the token id, or the address.
    const callerKey = peer
      ? `cert:${peer.fingerprint}`
      : token
        ? `token:${token.slice(0, 16)}`
        : `addr:${call.getPeer().replace(/:\d+$/, '')}`;
    let attestation = 'none';
    try {
      const res = await d.queue.submit(callerKey, async () => {
        const ttlMs = resolveTtlMs(req.validitySeconds, d.defaultTtlMs, d.maxTtlMs);
        let csr;
        try {
          csr = await parseCsrAsync(csrDerFrom(req.csr));
        } catch (err) {
          if (err instanceof CsrError) throw new CsrInvalidError(err.message, { cause: err });
          throw err;
        }
        const keyHash = spkiHash(csr.publicKeySpki);
        const caller = d.authenticator.authenticate(peer, token, keyHash);
        attestation = caller.attestation;
        if (req.node && req.node !== caller.node) {
          throw new NotAuthorizedError(
            `request names node ${req.node} but the credentials are for node ${caller.node}`,
            { code: 'CA_NODE_MISMATCH' },
          );
        }
        const entry = d.registry.getNode(caller.node);
        if (!entry)
          throw new NotAuthorizedError(`node ${caller.node} is not registered`, {
            code: 'CA_NODE_UNKNOWN',
          });
        const spiffeId = chooseIdentity(entry, req.spiffeId, csr.uris, d.trustDomain);
        // Persist the token's use before answering: a crash after answering must not let it be reused.
        if (caller.tokenId) await d.registry.redeemToken(caller.tokenId, keyHash);
        const issued = d.issuer().issue({
          publicKeySpki: csr.publicKeySpki,
          subject: workloadSubject(d.trustDomain, caller.node),
          sans: { uris: [spiffeId] },
          ttlMs,
          now: d.now(),
        });
        d.registry.noteIssued(caller.node, caller.attestation);
        // Checked first so that a CA logging at warn does not build the line (a hot path).
        if (d.log.isLevelEnabled('info'))
          d.log.info(
            {
              node: caller.node,
              spiffeId,
              serial: issued.serialHex,
              notAfter: issued.notAfter.toISOString(),
              attestation: caller.attestation,
              tokenId: caller.tokenId,
            },
            'Issued certificate',
          );
        return { certChain: issued.chainPem, spiffeId, node: caller.node };
      });
      d.metrics.requests.inc({ attestation, result: 'ok' });
      return res;
    } catch (err) {
      d.metrics.requests.inc({ attestation, result: resultOf(err) });
      throw err;
    } finally {
      d.metrics.signSeconds.observe((performance.now() - started) / 1000);
    }
  };
  return {
    CreateCertificate: unaryHandler(d.log, 'CreateCertificate', create),
    GetTrustBundle: unaryHandler(d.log, 'GetTrustBundle', (): Promise<GetTrustBundleResponse> =>
      Promise.resolve({ rootCerts: [...d.roots()], trustDomain: d.trustDomain }),
    ),
  };
}
