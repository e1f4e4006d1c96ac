/**
 * The identity loop: get a workload certificate, renew it at half its lifetime, and keep trying —
 * with capped, jittered backoff — whenever the CA cannot be reached or refuses. It never gives up
 * (Istio's node agent exited after five failures and left systemd to restart it) and never spins.
 *
 * Credentials, tried in this order on every attempt until one is accepted:
 *  1. the current certificate, as the TLS client certificate (renewal), while it is unexpired;
 *  2. the bootstrap certificate, when one is configured;
 *  3. the join token in the token file, re-read on every attempt (so a new token is picked up).
 * A refusal (PERMISSION_DENIED, UNAUTHENTICATED) moves on to the next kind; any other failure
 * ends the attempt, since the next kind would fail the same way.
 */
import * as fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import type { GetTrustBundleResponse__Output } from '../../api';
import { Backoff } from '../../common/backoff';
import type { Clock } from '../../common/clock';
import { getErrorMessage } from '../../common/errors';
import type { ClientIdentity } from '../../common/grpc';
import type { Logger } from '../../common/logging';
import { type KeyAlgorithm, parseCertificate, parseCertificatesPem } from '../../common/pki';
import {
  CaRequestError,
  CaResponseInvalidError,
  CertStoreError,
  NoCredentialsError,
  RootCertError,
} from '../errors';
import type { CaApi } from './ca-client';
import { type CertStore, type WorkloadIdentity, validateIdentity } from './cert-store';
import { buildCsr, workloadSpiffeId } from './csr';
import { type PendingKeyStore, parsePrivateKeyPem, publicKeySpki } from './keys';
import { isExpired, nextRotationDelayMs } from './rotation';

/** First retry delay after a failed attempt. */
export const DEFAULT_RETRY_INITIAL_MS = 1_000;
/** Cap of the retry delay: a down CA is asked at least this often. */
export const DEFAULT_RETRY_MAX_MS = 30_000;

/** How the agent authenticated to the CA for a certificate. */
export type Attestation = 'certificate' | 'bootstrap' | 'token';

/** Why an attempt failed; the `reason` label of `sail_agent_cert_rotation_errors_total`. */
export type RotationErrorReason =
  | 'unavailable'
  | 'refused'
  | 'invalid_request'
  | 'invalid_response'
  | 'no_credentials'
  | 'no_root'
  | 'internal';

/** Every RotationErrorReason, so metrics can show zeros. */
export const ROTATION_ERROR_REASONS: readonly RotationErrorReason[] = [
  'unavailable',
  'refused',
  'invalid_request',
  'invalid_response',
  'no_credentials',
  'no_root',
  'internal',
];

/** Where a new current certificate came from. */
export interface CertificateChange {
  /** `disk`: loaded at start; `ca`: issued just now. */
  readonly source: 'disk' | 'ca';
  /** For `ca`: the credentials that were accepted. */
  readonly attestation?: Attestation;
}

/** Called with each new certificate. */
export type CertificateListener = (identity: WorkloadIdentity, change: CertificateChange) => void;

/** Options of {@link CertRotator}. */
export interface CertRotatorOptions {
  readonly logger: Logger;
  readonly clock: Clock;
  /** Returns [0, 1): jitter of the rotation point and of retry delays. */
  readonly random: () => number;
  readonly nodeName: string;
  readonly trustDomain: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  /** Requested certificate lifetime in milliseconds. */
  readonly ttlMs: number;
  readonly keyAlgorithm: KeyAlgorithm;
  readonly store: CertStore;
  readonly pendingKeys: PendingKeyStore;
  readonly ca: CaApi;
  /** Trust anchor for the CA connection until the agent has a trust bundle of its own. */
  readonly rootCertFile: string;
  readonly tokenFile: string;
  readonly bootstrap?: { readonly certFile: string; readonly keyFile: string };
  readonly retryInitialMs?: number;
  readonly retryMaxMs?: number;
}

interface Credential {
  readonly kind: Attestation;
  readonly identity?: ClientIdentity;
  readonly token?: string;
}

/** Maps a failure to its metric label. */
export function classifyRotationError(err: unknown): RotationErrorReason {
  if (err instanceof NoCredentialsError) return 'no_credentials';
  if (err instanceof RootCertError) return 'no_root';
  if (err instanceof CaResponseInvalidError) return 'invalid_response';
  if (err instanceof CaRequestError) {
    if (err.refused) return 'refused';
    if (err.grpcCode === grpc.status.INVALID_ARGUMENT) return 'invalid_request';
    return 'unavailable';
  }
  return 'internal';
}

function readOptional(file: string): Promise<string | undefined> {
  return fs.promises.readFile(file, 'utf8').catch((err: unknown) => {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  });
}

/** Joins PEM blocks from the CA, each ending in a newline. */
function joinPem(blocks: readonly string[]): string {
  return blocks.map(b => (b.endsWith('\n') ? b : `${b}\n`)).join('');
}

/**
 * Keeps the workload certificate fresh. loadFromDisk() first, then run() as a background task;
 * waitForIdentity() resolves once there is a usable certificate.
 */
export class CertRotator {
  /** The workload SPIFFE ID the agent asks for. */
  readonly spiffeId: string;
  private readonly log: Logger;
  private readonly clock: Clock;
  /**
   * The last identity obtained, from disk or the CA. It may be expired, or (after a config change)
   * for another SPIFFE ID; it then still serves as the renewal credential while unexpired.
   */
  private held: WorkloadIdentity | undefined;
  /** Epoch ms at which `held` is renewed; fixed when it is obtained, so the jitter is drawn once. */
  private rotateAtMs = 0;
  private readonly listeners = new Set<CertificateListener>();
  private readonly errorListeners = new Set<(reason: RotationErrorReason, err: unknown) => void>();

  constructor(private readonly opts: CertRotatorOptions) {
    this.log = opts.logger;
    this.clock = opts.clock;
    this.spiffeId = workloadSpiffeId(opts);
  }

  /** The current certificate when it is valid now and carries the configured SPIFFE ID. */
  current(): WorkloadIdentity | undefined {
    const h = this.held;
    if (!h || h.spiffeId !== this.spiffeId || isExpired(this.clock.now(), h.notAfter.getTime()))
      return undefined;
    return h;
  }

  /** Epoch ms of the next planned renewal (for status and tests). */
  get nextRotationAtMs(): number | undefined {
    return this.held ? this.rotateAtMs : undefined;
  }

  /** Registers a listener for new certificates; returns a function that removes it. */
  onCertificateChanged(listener: CertificateListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Registers a listener for failed attempts (metrics); returns a function that removes it. */
  onRotationError(listener: (reason: RotationErrorReason, err: unknown) => void): () => void {
    this.errorListeners.add(listener);
    return () => this.errorListeners.delete(listener);
  }

  /**
   * Loads the stored certificate if it can be used: the chain verifies against the stored bundle
   * (or the root file), the key matches and it has not expired. Returns it, or undefined (logged)
   * when the agent must obtain a new one. Never throws for bad files.
   */
  async loadFromDisk(): Promise<WorkloadIdentity | undefined> {
    const fallback = await this.readRootCertFile().catch(() => undefined);
    let identity: WorkloadIdentity;
    try {
      identity = await this.opts.store.load(this.clock.now(), fallback);
    } catch (err) {
      if (err instanceof CertStoreError && err.code === 'AGENT_CERT_MISSING') {
        this.log.info({ path: this.opts.store.paths.certChain }, 'No workload certificate on disk');
      } else {
        this.log.warn(
          { err, path: this.opts.store.paths.certChain },
          'Ignoring unusable workload certificate on disk',
        );
      }
      return undefined;
    }
    if (identity.spiffeId !== this.spiffeId) {
      this.log.warn(
        { spiffeId: identity.spiffeId, wanted: this.spiffeId },
        'Workload certificate on disk has another identity',
      );
    } else {
      this.log.info(
        {
          spiffeId: identity.spiffeId,
          serial: identity.serialHex,
          notAfter: identity.notAfter.toISOString(),
        },
        'Loaded workload certificate from disk',
      );
    }
    this.setHeld(identity, { source: 'disk' });
    return identity;
  }

  /** Resolves with the first usable certificate; rejects with the signal's reason if it aborts first. */
  waitForIdentity(signal: AbortSignal): Promise<WorkloadIdentity> {
    const ready = this.current();
    if (ready) return Promise.resolve(ready);
    if (signal.aborted) return Promise.reject(signal.reason as Error);
    return new Promise((resolve, reject) => {
      const cleanup = () => {
        off();
        signal.removeEventListener('abort', onAbort);
      };
      const off = this.onCertificateChanged(() => {
        const id = this.current();
        if (id) {
          cleanup();
          resolve(id);
        }
      });
      const onAbort = () => {
        cleanup();
        reject(signal.reason as Error);
      };
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /**
   * The loop, as a background task: sleeps until the renewal point of the current certificate,
   * renews, and retries failures after a capped, jittered backoff. Resolves when `signal` aborts;
   * rejects only on a bug.
   */
  async run(signal: AbortSignal): Promise<void> {
    const backoff = new Backoff({
      initialMs: this.opts.retryInitialMs ?? DEFAULT_RETRY_INITIAL_MS,
      maxMs: this.opts.retryMaxMs ?? DEFAULT_RETRY_MAX_MS,
      random: this.opts.random,
    });
    try {
      while (!signal.aborted) {
        const now = this.clock.now();
        const held = this.held;
        if (
          held &&
          held.spiffeId === this.spiffeId &&
          now < held.notAfter.getTime() &&
          now < this.rotateAtMs
        ) {
          this.log.debug(
            { delayMs: this.rotateAtMs - now, notAfter: held.notAfter.toISOString() },
            'Waiting to renew workload certificate',
          );
          await this.clock.sleep(this.rotateAtMs - now, signal);
          continue;
        }
        let failure: unknown;
        try {
          await this.rotateOnce(signal);
        } catch (err) {
          if (signal.aborted) return;
          failure = err;
        }
        if (failure === undefined) {
          if (this.rotateAtMs > this.clock.now()) {
            backoff.reset();
            continue;
          }
          // The new certificate is already due: the CA's clock or its TTL cap disagrees with ours.
          // Renewing at once would loop, so wait like after a failure.
          const delayMs = backoff.next();
          this.log.warn(
            { delayMs, notAfter: this.held?.notAfter.toISOString() },
            'New workload certificate is already due for renewal; check the clocks',
          );
          this.rotateAtMs = this.clock.now() + delayMs;
          continue;
        }
        const delayMs = backoff.next();
        this.reportFailure(failure, delayMs, backoff.attempts);
        await this.clock.sleep(delayMs, signal);
      }
    } catch (err) {
      if (signal.aborted) return;
      throw err;
    }
  }

  private reportFailure(err: unknown, delayMs: number, attempt: number): void {
    const reason = classifyRotationError(err);
    for (const l of this.errorListeners) l(reason, err);
    const held = this.held;
    const expired = !held || isExpired(this.clock.now(), held.notAfter.getTime());
    const fields = {
      err,
      reason,
      attempt,
      delayMs,
      ...(err instanceof CaRequestError && err.caErrorCode ? { code: err.caErrorCode } : {}),
      ...(held ? { notAfter: held.notAfter.toISOString(), expired } : {}),
    };
    // error: an operator must act (no way to authenticate, no trust anchor, refused, or the
    // workload is left without a valid certificate); warn: degraded but it heals by itself.
    const operatorMustAct =
      reason === 'no_credentials' || reason === 'no_root' || reason === 'refused' || expired;
    if (operatorMustAct)
      this.log.error(fields, 'Could not obtain workload certificate; will retry');
    else this.log.warn(fields, 'Could not renew workload certificate; will retry');
  }

  /** The roots to verify the CA with: the trust bundle when there is one, else the root file. */
  private async connectionRoots(): Promise<string> {
    if (this.held) return this.held.rootsPem;
    return (await this.opts.store.readRoots()) ?? (await this.readRootCertFile());
  }

  private async readRootCertFile(): Promise<string> {
    const file = this.opts.rootCertFile;
    let text: string | undefined;
    try {
      text = await readOptional(file);
    } catch (err) {
      throw new RootCertError(
        `cannot read root certificate file ${file}: ${getErrorMessage(err)}`,
        { cause: err },
      );
    }
    if (text === undefined)
      throw new RootCertError(
        `root certificate file ${file} does not exist; run sail join or copy the control plane's root-cert.pem there`,
      );
    let count: number;
    try {
      count = parseCertificatesPem(text).length;
    } catch (err) {
      throw new RootCertError(
        `root certificate file ${file} is not valid PEM: ${getErrorMessage(err)}`,
        { cause: err },
      );
    }
    if (count === 0) throw new RootCertError(`root certificate file ${file} holds no certificate`);
    return text;
  }

  /** The join token, trimmed; undefined when the file is absent or empty. */
  private async readToken(): Promise<string | undefined> {
    const text = await readOptional(this.opts.tokenFile);
    const token = text?.trim();
    return token ? token : undefined;
  }

  private async bootstrapCredential(nowMs: number): Promise<Credential | undefined> {
    const b = this.opts.bootstrap;
    if (!b) return undefined;
    try {
      const [certChainPem, keyPem] = await Promise.all([
        fs.promises.readFile(b.certFile, 'utf8'),
        fs.promises.readFile(b.keyFile, 'utf8'),
      ]);
      const leaf = parseCertificatesPem(certChainPem)[0];
      if (!leaf) throw new Error(`${b.certFile} holds no certificate`);
      const notAfter = parseCertificate(leaf).notAfter;
      if (isExpired(nowMs, notAfter.getTime())) {
        this.log.warn(
          { path: b.certFile, notAfter: notAfter.toISOString() },
          'Bootstrap certificate has expired',
        );
        return undefined;
      }
      return { kind: 'bootstrap', identity: { certChainPem, keyPem } };
    } catch (err) {
      this.log.warn({ err, path: b.certFile }, 'Cannot use bootstrap certificate');
      return undefined;
    }
  }

  /** The credentials to try, in order (see the file comment). */
  private async credentials(nowMs: number): Promise<Credential[]> {
    const out: Credential[] = [];
    const h = this.held;
    if (h && !isExpired(nowMs, h.notAfter.getTime())) {
      out.push({
        kind: 'certificate',
        identity: { certChainPem: h.certChainPem, keyPem: h.privateKeyPem },
      });
    }
    const bootstrap = await this.bootstrapCredential(nowMs);
    if (bootstrap) out.push(bootstrap);
    const token = await this.readToken();
    if (token !== undefined) out.push({ kind: 'token', token });
    return out;
  }

  /**
   * One attempt: fetch the trust bundle, send the CSR with each kind of credential until one is
   * accepted, check the answer, store it, and make it current.
   * @internal exported for tests; run() is the only caller in the agent
   * @throws NoCredentialsError, RootCertError, CaRequestError, CaResponseInvalidError, or an I/O error
   */
  async rotateOnce(signal: AbortSignal): Promise<WorkloadIdentity> {
    const o = this.opts;
    const rootsPem = await this.connectionRoots();
    const creds = await this.credentials(this.clock.now());
    if (creds.length === 0) {
      throw new NoCredentialsError(
        `nothing to authenticate to the CA with: no valid certificate${o.bootstrap ? ', no usable bootstrap certificate' : ''} and no join token in ${o.tokenFile}`,
      );
    }
    // The pending key goes to disk before the request does: a retry (or a restart) then sends the
    // same public key, which the CA requires to accept a join token a second time.
    const heldSpki = this.held
      ? publicKeySpki(parsePrivateKeyPem(this.held.privateKeyPem))
      : undefined;
    const pending = await o.pendingKeys.loadOrCreate(
      o.keyAlgorithm,
      key => heldSpki !== undefined && publicKeySpki(key).equals(heldSpki),
    );
    const { csrPem } = buildCsr(pending.key, o);
    let bundle: GetTrustBundleResponse__Output | undefined;
    for (const [i, cred] of creds.entries()) {
      o.ca.setCredentials({ rootsPem, ...(cred.identity ? { identity: cred.identity } : {}) });
      try {
        // Roots are refreshed on every rotation, over the channel verified with the old ones.
        bundle ??= await o.ca.getTrustBundle({ signal });
        const res = await o.ca.createCertificate(
          {
            csrPem,
            validitySeconds: Math.round(o.ttlMs / 1000),
            spiffeId: this.spiffeId,
            node: o.nodeName,
          },
          { signal, ...(cred.token !== undefined ? { token: cred.token } : {}) },
        );
        const identity = this.acceptResponse(
          res.certChain,
          res.spiffeId,
          res.node,
          bundle,
          pending.pem,
        );
        await o.store.write(identity);
        await o.pendingKeys.remove();
        if (cred.kind === 'token') await this.consumeToken();
        this.setHeld(identity, { source: 'ca', attestation: cred.kind });
        this.log.info(
          {
            spiffeId: identity.spiffeId,
            serial: identity.serialHex,
            notAfter: identity.notAfter.toISOString(),
            attestation: cred.kind,
          },
          'Rotated workload certificate',
        );
        return identity;
      } catch (err) {
        if (err instanceof CaRequestError && err.refused && i < creds.length - 1) {
          this.log.warn(
            { attestation: cred.kind, code: err.caErrorCode, reason: err.message },
            'CA refused credentials; trying the next kind',
          );
          continue;
        }
        if (err instanceof CaRequestError && err.grpcCode === grpc.status.INVALID_ARGUMENT) {
          // The CA rejected the request itself (e.g. the key type): retrying the same key is futile.
          await o.pendingKeys.remove();
        }
        throw err;
      }
    }
    throw new Error('unreachable: the last credential either succeeds or throws');
  }

  /**
   * Checks the CA's answer before anything is written: the SPIFFE ID and node are the ones asked
   * for, the trust domain matches, the chain verifies against the fresh bundle and holds our key.
   * @throws CaResponseInvalidError
   */
  private acceptResponse(
    certChain: readonly string[],
    spiffeId: string,
    node: string,
    bundle: GetTrustBundleResponse__Output,
    keyPem: string,
  ): WorkloadIdentity {
    const o = this.opts;
    if (bundle.trustDomain && bundle.trustDomain !== o.trustDomain) {
      throw new CaResponseInvalidError(
        `CA serves trust domain ${bundle.trustDomain}, the agent is configured for ${o.trustDomain}`,
      );
    }
    if (spiffeId && spiffeId !== this.spiffeId)
      throw new CaResponseInvalidError(
        `CA issued ${spiffeId}, the agent asked for ${this.spiffeId}`,
      );
    if (node && node !== o.nodeName)
      throw new CaResponseInvalidError(
        `CA issued for node ${node}, the agent is node ${o.nodeName}`,
      );
    if (bundle.rootCerts.length === 0) throw new CaResponseInvalidError('CA trust bundle is empty');
    let identity: WorkloadIdentity;
    try {
      identity = validateIdentity(
        {
          certChainPem: joinPem(certChain),
          privateKeyPem: keyPem,
          rootsPem: joinPem(bundle.rootCerts),
        },
        this.clock.now(),
      );
    } catch (err) {
      throw new CaResponseInvalidError(
        `CA issued an unusable certificate: ${getErrorMessage(err)}`,
        { cause: err },
      );
    }
    if (identity.spiffeId !== this.spiffeId) {
      throw new CaResponseInvalidError(
        `CA issued a certificate for ${identity.spiffeId}, the agent asked for ${this.spiffeId}`,
      );
    }
    return identity;
  }

  /** Deletes the join token after it bought a certificate: it is single-use and a secret. */
  private async consumeToken(): Promise<void> {
    try {
      await fs.promises.rm(this.opts.tokenFile, { force: true });
      this.log.info({ path: this.opts.tokenFile }, 'Deleted used join token');
    } catch (err) {
      this.log.warn({ err, path: this.opts.tokenFile }, 'Could not delete used join token');
    }
  }

  private setHeld(identity: WorkloadIdentity, change: CertificateChange): void {
    const now = this.clock.now();
    this.held = identity;
    this.rotateAtMs =
      now +
      nextRotationDelayMs(
        now,
        identity.notBefore.getTime(),
        identity.notAfter.getTime(),
        this.opts.random,
      );
    for (const l of this.listeners) {
      try {
        l(identity, change);
      } catch (err) {
        this.log.error({ err }, 'Certificate listener failed');
      }
    }
  }
}
