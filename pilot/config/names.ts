/**
 * Names, hosts, addresses and labels as Istio checks them (`pkg/config/validation/agent`,
 * `pkg/config/labels`), plus the host resolution rule the validator and the xDS generator share.
 * Every `check*` function returns an error message, or `undefined` when the value is valid.
 */
import * as net from 'node:net';

/** The default DNS suffix of mesh hosts (`reviews.default.svc.cluster.local`). */
export const DEFAULT_DOMAIN_SUFFIX = 'cluster.local';

// Istio's labels.IsDNS1123Label: letters of either case (hosts are case-insensitive).
const DNS_LABEL_RE = /^[A-Za-z0-9](?:[-A-Za-z0-9]*[A-Za-z0-9])?$/;
// Kubernetes object names and namespaces: lower case only.
const K8S_LABEL_RE = /^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?$/;
// Kubernetes label names (the part after an optional `prefix/`) and values.
const LABEL_NAME_RE = /^[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

/** A DNS label as Istio accepts it in hosts, subset and port names: at most 63 letters, digits and `-`. */
export function isDnsLabel(s: string): boolean {
  return s.length <= 63 && DNS_LABEL_RE.test(s);
}

/** A Kubernetes DNS-1123 label (namespaces, Gateway names): at most 63 lower-case letters, digits and `-`. */
export function isDns1123Label(s: string): boolean {
  return s.length <= 63 && K8S_LABEL_RE.test(s);
}

/** A Kubernetes DNS-1123 subdomain (object names): dot-separated DNS-1123 labels, at most 253 characters. */
export function isDns1123Subdomain(s: string): boolean {
  return s.length > 0 && s.length <= 253 && s.split('.').every(l => K8S_LABEL_RE.test(l));
}

/** An IPv4 or IPv6 address (no brackets, no zone). */
export function isIp(s: string): boolean {
  return net.isIP(s) !== 0;
}

/** An IP address or a CIDR block (`10.0.0.0/8`, `2001:db8::/32`). */
export function checkIpOrCidr(s: string): string | undefined {
  const slash = s.indexOf('/');
  if (slash < 0) return isIp(s) ? undefined : `${JSON.stringify(s)} is not an IP address`;
  const ip = s.slice(0, slash);
  const bits = s.slice(slash + 1);
  const family = net.isIP(ip);
  const max = family === 6 ? 128 : 32;
  if (family === 0 || !/^\d{1,3}$/.test(bits) || Number(bits) > max)
    return `${JSON.stringify(s)} is not a valid CIDR block`;
  return undefined;
}

function checkLabels(domain: string, labels: readonly string[]): string | undefined {
  const last = labels[labels.length - 1] ?? '';
  if (/^\d+$/.test(last))
    return `invalid host ${JSON.stringify(domain)}: the top-level domain ${JSON.stringify(last)} cannot be all-numeric`;
  for (const [i, label] of labels.entries()) {
    // A trailing dot (`istio.io.`) is an unambiguous absolute name.
    if (i === labels.length - 1 && label === '' && i > 0) return undefined;
    if (label.includes('*'))
      return `invalid host ${JSON.stringify(domain)}: a wildcard is allowed only as the whole first label ("*.example.com")`;
    if (!isDnsLabel(label))
      return `invalid host ${JSON.stringify(domain)}: ${JSON.stringify(label)} is not a DNS label (letters, digits and "-", at most 63)`;
  }
  return undefined;
}

function checkLength(domain: string): string | undefined {
  if (domain === '') return 'empty host';
  if (domain.length > 255)
    return `host ${JSON.stringify(domain.slice(0, 40))}… is too long (max 255)`;
  return undefined;
}

/** A fully qualified or short DNS name without wildcards (Istio `ValidateFQDN`). */
export function checkFqdn(domain: string): string | undefined {
  return checkLength(domain) ?? checkLabels(domain, domain.split('.'));
}

/**
 * A DNS name whose first label may be the wildcard `*` (`*`, `*.example.com`, `reviews`,
 * `reviews.default.svc.cluster.local`); Istio `ValidateWildcardDomain` without partial wildcards.
 */
export function checkWildcardDomain(domain: string): string | undefined {
  const err = checkLength(domain);
  if (err) return err;
  const [first = '', ...rest] = domain.split('.');
  if (first === '*') return rest.length === 0 ? undefined : checkLabels(domain, rest);
  return checkLabels(domain, [first, ...rest]);
}

/** True when the host has no dot: a short name, resolved against the namespace. */
export function isShortName(host: string): boolean {
  return host !== '*' && !host.includes('.');
}

/**
 * Resolves a host as written in a document of `namespace`, Istio's rule: a name without a dot
 * is a short name and expands to `NAME.NAMESPACE.svc.SUFFIX`; a name with dots (including
 * wildcards like `*.example.com`) and `*` stay as written.
 */
export function resolveHost(
  host: string,
  namespace: string,
  domainSuffix: string = DEFAULT_DOMAIN_SUFFIX,
): string {
  return isShortName(host) ? `${host}.${namespace}.svc.${domainSuffix}` : host;
}

/**
 * True when the resolved host `pattern` covers `host`: equal, `*`, or a wildcard
 * `*.example.com` covering `a.example.com` and `*.a.example.com` (Istio `host.Name.Matches`
 * one way). Comparison is case-insensitive.
 */
export function hostCovers(pattern: string, host: string): boolean {
  const p = pattern.toLowerCase();
  const h = host.toLowerCase();
  if (p === h || p === '*') return true;
  if (!p.startsWith('*.')) return false;
  const suffix = p.slice(1); // `.example.com`
  if (h.startsWith('*.')) return h.slice(1).endsWith(suffix) && h.length > p.length;
  return h.endsWith(suffix);
}

/**
 * Kubernetes label (and selector) keys and values, Istio `labels.Instance.Validate`: a key is
 * `[prefix/]name`, prefix a DNS-1123 subdomain, name at most 63 of letters, digits, `-`, `_`, `.`;
 * a value is empty or a name.
 * @returns the key and a message for each bad entry
 */
export function checkLabelMap(
  labels: Readonly<Record<string, string>>,
): { key: string; message: string }[] {
  const problems: { key: string; message: string }[] = [];
  for (const [key, value] of Object.entries(labels)) {
    const slash = key.lastIndexOf('/');
    const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
    const name = slash >= 0 ? key.slice(slash + 1) : key;
    if (
      (prefix !== undefined && !isDns1123Subdomain(prefix)) ||
      name.length > 63 ||
      !LABEL_NAME_RE.test(name)
    )
      problems.push({
        key,
        message: `invalid label key ${JSON.stringify(key)}: want [prefix/]name, name at most 63 letters, digits, "-", "_" or "." starting and ending with a letter or digit`,
      });
    else if (value !== '' && (value.length > 63 || !LABEL_NAME_RE.test(value)))
      problems.push({
        key,
        message: `invalid value ${JSON.stringify(value)} for label ${JSON.stringify(key)}: want at most 63 letters, digits, "-", "_" or "." starting and ending with a letter or digit`,
      });
  }
  return problems;
}
