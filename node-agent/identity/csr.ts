/** The certificate request the agent sends: its key, its node name and the SPIFFE ID it wants. */
import type * as crypto from 'node:crypto';
import { Oid, createCsr, formatSpiffeId, toPem } from '../../common/pki';

/** Who the request is for. */
export interface CsrSubject {
  readonly trustDomain: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly nodeName: string;
}

/** The workload SPIFFE ID for a subject: spiffe://<td>/ns/<namespace>/sa/<serviceAccount>. */
export function workloadSpiffeId(
  s: Pick<CsrSubject, 'trustDomain' | 'namespace' | 'serviceAccount'>,
): string {
  return formatSpiffeId({
    trustDomain: s.trustDomain,
    namespace: s.namespace,
    serviceAccount: s.serviceAccount,
  });
}

/**
 * Builds a PKCS#10 request signed by `key`, with subject `O=<trustDomain>, CN=<node>` (what the CA
 * will issue) and the workload SPIFFE ID as its only URI SAN. The CA decides the identity from its
 * own assignment; the SAN here only says which assigned identity the agent wants.
 */
export function buildCsr(
  key: crypto.KeyObject,
  subject: CsrSubject,
): { csrPem: string; spiffeId: string } {
  const spiffeId = workloadSpiffeId(subject);
  const der = createCsr(
    key,
    [
      [Oid.organization, subject.trustDomain],
      [Oid.commonName, subject.nodeName],
    ],
    { uris: [spiffeId] },
  );
  return { csrPem: toPem('CERTIFICATE REQUEST', der), spiffeId };
}
