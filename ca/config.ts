/** The CA's runtime options and their defaults. */
import type { Clock } from '../common/clock';
import type { Logger } from '../common/logging';
import type { KeyAlgorithm } from '../common/pki';

export const DEFAULT_CA_LISTEN = '0.0.0.0:15012';
export const DEFAULT_TRUST_DOMAIN = 'cluster.local';
export const DEFAULT_CERT_TTL_MS = 24 * 3600_000;
export const DEFAULT_MAX_CERT_TTL_MS = 90 * 24 * 3600_000;
/** Shortest certificate the CA issues; below this, rotation would be all the agent does. */
export const MIN_CERT_TTL_MS = 10_000;
export const DEFAULT_ROOT_TTL_MS = 10 * 365 * 24 * 3600_000;
export const DEFAULT_TOKEN_TTL_MS = 3600_000;
export const MAX_TOKEN_TTL_MS = 30 * 24 * 3600_000;
/** Requests one node may have queued before it gets RESOURCE_EXHAUSTED. */
export const DEFAULT_MAX_QUEUED_PER_CALLER = 64;
/** Requests queued in all before the CA answers UNAVAILABLE. */
export const DEFAULT_MAX_QUEUED = 20_000;
/** Largest CSR accepted, PEM bytes. */
export const MAX_CSR_BYTES = 16 * 1024;

/** Bring-your-own CA files (Istio's "plugged" CA): all four paths are required together. */
export interface PluggedCaFiles {
  /** The certificate the CA signs with (an intermediate or the root itself). */
  readonly caCertFile: string;
  readonly caKeyFile: string;
  readonly rootCertFile: string;
  /** The chain from the signing certificate up to (not including) the root. */
  readonly certChainFile: string;
}

/** What CertificateAuthority needs; see ca/ca.ts. */
export interface CaOptions {
  readonly logger: Logger;
  /** Where keys, roots, tokens and node entries live; created 0700 if missing. */
  readonly dataDir: string;
  /** `HOST:PORT` for the gRPC API; port 0 picks one (read `address` after start). */
  readonly listen?: string;
  readonly trustDomain?: string;
  readonly defaultCertTtlMs?: number;
  readonly maxCertTtlMs?: number;
  /** Key algorithm of a self-signed root generated at first start. */
  readonly rootKeyAlgorithm?: KeyAlgorithm;
  readonly rootTtlMs?: number;
  readonly plugged?: PluggedCaFiles;
  /** PEM files of CAs whose certificates may attest nodes (x509 proof of possession). */
  readonly bootstrapCaFiles?: readonly string[];
  /** Extra DNS names or IPs for the serving certificate (host names are not checked by Sail clients). */
  readonly serverNames?: readonly string[];
  readonly maxQueuedPerCaller?: number;
  readonly maxQueued?: number;
  readonly clock?: Clock;
}
