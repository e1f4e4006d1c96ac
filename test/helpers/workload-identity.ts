/**
 * Workload identities on disk the way the node agent writes them (cert-chain.pem, key.pem and
 * root-cert.pem behind an atomic `..data` link), and FileTlsProviders serving them, for the
 * proxy's tests.
 */
import { writeFileSetAtomic } from '../../common/fs';
import { type Logger, silentLogger } from '../../common/logging';
import { FileTlsProvider } from '../../proxy/tls';
import type { TestCa } from './test-ca';

/** A certificate and key as {@link TestCa.issueWorkloadCert} returns them. */
export type WorkloadCert = Awaited<ReturnType<TestCa['issueWorkloadCert']>>;

/** Options of {@link writeWorkloadIdentity}. */
export interface WorkloadIdentityOptions {
  /** The node named in the certificate (default `vm-1`). */
  readonly node?: string;
  /** `other` signs with a CA the mesh does not trust. */
  readonly signer?: 'root' | 'other';
  /** Written instead of the certificate's own key (a mismatched pair). */
  readonly keyPem?: string;
}

/**
 * Issues `spiffeId` a certificate valid from a minute ago for an hour and writes it, with the
 * CA's root, into `dir` (created if missing). Returns what was issued.
 */
export async function writeWorkloadIdentity(
  ca: TestCa,
  dir: string,
  spiffeId: string,
  opts: WorkloadIdentityOptions = {},
): Promise<WorkloadCert> {
  const now = Date.now();
  const cert = await ca.issueWorkloadCert({
    node: opts.node ?? 'vm-1',
    spiffeId,
    notBeforeMs: now - 60_000,
    notAfterMs: now + 3600_000,
    ...(opts.signer ? { signer: opts.signer } : {}),
  });
  await writeFileSetAtomic(dir, [
    { name: 'cert-chain.pem', data: cert.certChainPem, mode: 0o644 },
    { name: 'key.pem', data: opts.keyPem ?? cert.keyPem, mode: 0o600 },
    { name: 'root-cert.pem', data: ca.rootPem, mode: 0o644 },
  ]);
  return cert;
}

/**
 * Writes an identity for `spiffeId` into `dir` and starts a FileTlsProvider on it (trust domain
 * `cluster.local`); the caller closes the provider.
 */
export async function startWorkloadTls(
  ca: TestCa,
  dir: string,
  spiffeId: string,
  opts: { readonly node?: string; readonly logger?: Logger } = {},
): Promise<{ provider: FileTlsProvider; cert: WorkloadCert }> {
  const cert = await writeWorkloadIdentity(ca, dir, spiffeId, { node: opts.node });
  const provider = new FileTlsProvider({
    logger: opts.logger ?? silentLogger(),
    certsDir: dir,
    trustDomain: 'cluster.local',
  });
  await provider.start();
  return { provider, cert };
}
