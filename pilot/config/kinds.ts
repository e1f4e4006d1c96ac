/**
 * The kinds Sail serves: their API group and versions, the resource names `sail get` accepts
 * (plural, singular, short names, as Istio's CRDs declare them), and apiVersion/kind resolution.
 */
import {
  KINDS,
  NETWORKING_GROUP,
  NETWORKING_VERSIONS,
  SECURITY_GROUP,
  SECURITY_VERSIONS,
  type Kind,
} from './types';

/** What `sail get` and the validator know about one kind. */
export interface KindInfo {
  readonly kind: Kind;
  readonly group: string;
  /** Accepted versions, oldest first. */
  readonly versions: readonly string[];
  /** Lower-case plural resource name: `sail get virtualservices`. */
  readonly plural: string;
  /** Lower-case singular name. */
  readonly singular: string;
  /** Istio's CRD short names (`vs`, `dr`, …); Sidecar has none. */
  readonly shortNames: readonly string[];
  /** Every Sail kind lives in a namespace. */
  readonly namespaced: true;
}

function info(
  kind: Kind,
  group: string,
  versions: readonly string[],
  plural: string,
  shortNames: readonly string[],
): KindInfo {
  return {
    kind,
    group,
    versions,
    plural,
    singular: kind.toLowerCase(),
    shortNames,
    namespaced: true,
  };
}

/** Per-kind group, versions and names. */
export const KIND_INFO: { readonly [K in Kind]: KindInfo } = {
  ServiceEntry: info('ServiceEntry', NETWORKING_GROUP, NETWORKING_VERSIONS, 'serviceentries', [
    'se',
  ]),
  WorkloadEntry: info('WorkloadEntry', NETWORKING_GROUP, NETWORKING_VERSIONS, 'workloadentries', [
    'we',
  ]),
  WorkloadGroup: info('WorkloadGroup', NETWORKING_GROUP, NETWORKING_VERSIONS, 'workloadgroups', [
    'wg',
  ]),
  DestinationRule: info(
    'DestinationRule',
    NETWORKING_GROUP,
    NETWORKING_VERSIONS,
    'destinationrules',
    ['dr'],
  ),
  VirtualService: info('VirtualService', NETWORKING_GROUP, NETWORKING_VERSIONS, 'virtualservices', [
    'vs',
  ]),
  Gateway: info('Gateway', NETWORKING_GROUP, NETWORKING_VERSIONS, 'gateways', ['gw']),
  Sidecar: info('Sidecar', NETWORKING_GROUP, NETWORKING_VERSIONS, 'sidecars', []),
  PeerAuthentication: info(
    'PeerAuthentication',
    SECURITY_GROUP,
    SECURITY_VERSIONS,
    'peerauthentications',
    ['pa'],
  ),
  AuthorizationPolicy: info(
    'AuthorizationPolicy',
    SECURITY_GROUP,
    SECURITY_VERSIONS,
    'authorizationpolicies',
    ['ap'],
  ),
};

const BY_NAME = new Map<string, Kind>();
for (const kind of KINDS) {
  const k = KIND_INFO[kind];
  for (const name of [k.singular, k.plural, ...k.shortNames]) BY_NAME.set(name, kind);
}

/**
 * Finds a kind by any of its names, case-insensitively: `VirtualService`, `virtualservice`,
 * `virtualservices`, `vs`, and the kubectl forms `virtualservices.networking.istio.io` and
 * `virtualservices.v1.networking.istio.io`.
 * @returns the kind, or undefined when no kind has that name
 */
export function lookupKind(nameOrAlias: string): Kind | undefined {
  const name = nameOrAlias.trim().toLowerCase();
  const dot = name.indexOf('.');
  if (dot < 0) return BY_NAME.get(name);
  const kind = BY_NAME.get(name.slice(0, dot));
  if (!kind) return undefined;
  const { group, versions } = KIND_INFO[kind];
  const rest = name.slice(dot + 1);
  if (rest === group) return kind;
  const vdot = rest.indexOf('.');
  return vdot > 0 && versions.includes(rest.slice(0, vdot)) && rest.slice(vdot + 1) === group
    ? kind
    : undefined;
}

/** `networking.istio.io/{v1alpha3,v1beta1,v1} VirtualService, …; security.istio.io/{…} …`, for messages. */
export function describeAcceptedKinds(): string {
  const groups = new Map<string, Kind[]>();
  for (const kind of KINDS) {
    const { group, versions } = KIND_INFO[kind];
    const key = `${group}/{${versions.join(',')}}`;
    groups.set(key, [...(groups.get(key) ?? []), kind]);
  }
  return [...groups].map(([gv, kinds]) => `${gv} ${kinds.join(', ')}`).join('; ');
}

/** Istio kinds Sail does not serve, and what replaced them. */
const REPLACED_KINDS: Readonly<Record<string, string>> = {
  'authentication.istio.io/Policy': 'PeerAuthentication (security.istio.io/v1beta1)',
  'authentication.istio.io/MeshPolicy':
    'a PeerAuthentication in the root namespace (security.istio.io/v1beta1)',
  'rbac.istio.io/ServiceRole': 'AuthorizationPolicy (security.istio.io/v1beta1)',
  'rbac.istio.io/ServiceRoleBinding': 'AuthorizationPolicy (security.istio.io/v1beta1)',
  'rbac.istio.io/RbacConfig': 'AuthorizationPolicy (security.istio.io/v1beta1)',
  'rbac.istio.io/ClusterRbacConfig': 'AuthorizationPolicy (security.istio.io/v1beta1)',
  'config.istio.io/RouteRule': 'VirtualService (networking.istio.io/v1alpha3)',
  'config.istio.io/DestinationPolicy': 'DestinationRule (networking.istio.io/v1alpha3)',
  'config.istio.io/EgressRule': 'ServiceEntry (networking.istio.io/v1alpha3)',
};

/**
 * Resolves a document's apiVersion and kind.
 * @returns the kind, or a message saying why the pair is not served and what is
 */
export function resolveKind(
  apiVersion: string,
  kind: string,
): { kind: Kind; error?: undefined } | { kind?: undefined; error: string } {
  const slash = apiVersion.indexOf('/');
  const group = slash < 0 ? '' : apiVersion.slice(0, slash);
  const version = slash < 0 ? apiVersion : apiVersion.slice(slash + 1);
  const known = (KINDS as readonly string[]).includes(kind) ? (kind as Kind) : undefined;
  if (known) {
    const k = KIND_INFO[known];
    if (group === k.group && k.versions.includes(version)) return { kind: known };
    return {
      error: `${kind} is not served at apiVersion ${JSON.stringify(apiVersion)}: want ${k.group}/${k.versions.join(`, ${k.group}/`)}`,
    };
  }
  const replaced = REPLACED_KINDS[`${group}/${kind}`];
  const hint = replaced ? ` (Istio replaced it with ${replaced})` : '';
  const sameName = lookupKind(kind);
  const caseHint =
    !replaced && sameName ? ` (kinds are case-sensitive: did you mean ${sameName}?)` : '';
  return {
    error: `unknown kind ${JSON.stringify(kind)} in apiVersion ${JSON.stringify(apiVersion)}${hint}${caseHint}; Sail accepts ${describeAcceptedKinds()}`,
  };
}
