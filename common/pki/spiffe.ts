/** SPIFFE IDs in Istio's form: spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>. */

/** The parts of a workload SPIFFE ID. */
export interface WorkloadId {
  readonly trustDomain: string;
  readonly namespace: string;
  readonly serviceAccount: string;
}

const TRUST_DOMAIN_RE = /^[a-z0-9._-]{1,255}$/;
/** Kubernetes-style DNS label names, which namespaces and service accounts follow. */
const NAME_RE = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

/** True when `s` is a valid trust domain name (SPIFFE ID spec §2.1: lowercase letters, digits, `.-_`). */
export function isValidTrustDomain(s: string): boolean {
  return TRUST_DOMAIN_RE.test(s);
}

/** True when `s` is a valid namespace or service-account name. */
export function isValidName(s: string): boolean {
  return NAME_RE.test(s);
}

/** Formats a workload identity as its SPIFFE URI. */
export function formatSpiffeId(id: WorkloadId): string {
  return `spiffe://${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}

/** Parses a workload SPIFFE URI; returns undefined for anything not of the /ns/X/sa/Y form. */
export function parseSpiffeId(uri: string): WorkloadId | undefined {
  const m = /^spiffe:\/\/([^/]+)\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(uri);
  if (!m) return undefined;
  const [, trustDomain, namespace, serviceAccount] = m as unknown as [
    string,
    string,
    string,
    string,
  ];
  if (!isValidTrustDomain(trustDomain) || !isValidName(namespace) || !isValidName(serviceAccount)) {
    return undefined;
  }
  return { trustDomain, namespace, serviceAccount };
}

/**
 * Parses `NS/SA` (the form `sail token create --sa` takes).
 * @throws Error naming the value when it is not two valid names separated by a slash
 */
export function parseServiceAccountRef(ref: string): { namespace: string; serviceAccount: string } {
  const parts = ref.split('/');
  if (parts.length !== 2 || !isValidName(parts[0] as string) || !isValidName(parts[1] as string)) {
    throw new Error(
      `invalid service account ${JSON.stringify(ref)}: want NAMESPACE/NAME, lowercase`,
    );
  }
  return { namespace: parts[0] as string, serviceAccount: parts[1] as string };
}

/** Namespace and service account of the control plane's own identity (CA and pilot serve with it). */
export const CONTROL_PLANE_NAMESPACE = 'sail-system';
export const CONTROL_PLANE_SERVICE_ACCOUNT = 'sail-control-plane';

/** The SPIFFE ID the control plane (CA, pilot) serves with in `trustDomain`. */
export function controlPlaneSpiffeId(trustDomain: string): string {
  return formatSpiffeId({
    trustDomain,
    namespace: CONTROL_PLANE_NAMESPACE,
    serviceAccount: CONTROL_PLANE_SERVICE_ACCOUNT,
  });
}
