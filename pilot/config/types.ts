/**
 * The configuration model: Istio's own documents (apiVersion/kind/metadata/spec), typed as the
 * JSON/YAML users write them (camelCase field names, durations as strings like "5s", enums as
 * their upper-case names). These types are the contract between validation (`validate.ts`, which
 * turns unknown input into these), the stores, the registry and the xDS generator.
 *
 * Only what Sail reads or validates is typed; every field here is optional unless Istio requires
 * it, exactly as in Istio's protos.
 */

/** The API groups and versions Sail accepts. */
export const NETWORKING_GROUP = 'networking.istio.io';
export const SECURITY_GROUP = 'security.istio.io';
export const NETWORKING_VERSIONS = ['v1alpha3', 'v1beta1', 'v1'] as const;
export const SECURITY_VERSIONS = ['v1beta1', 'v1'] as const;

/** Every kind Sail stores, in the order an apply processes them. */
export const KINDS = [
  'ServiceEntry',
  'WorkloadEntry',
  'WorkloadGroup',
  'DestinationRule',
  'VirtualService',
  'Gateway',
  'Sidecar',
  'PeerAuthentication',
  'AuthorizationPolicy',
] as const;
export type Kind = (typeof KINDS)[number];

export interface ObjectMeta {
  name: string;
  /** Defaults to `default` when a document omits it. */
  namespace: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  /** Set by the store: changes on every write of this object. Clients may send it back for optimistic concurrency. */
  resourceVersion?: string;
  /** Set by the store at first write, RFC 3339. */
  creationTimestamp?: string;
  /** Set by the store: bumped when the spec changes. */
  generation?: number;
}

/** A stored or applied document. `spec` is typed per kind by {@link SpecOf}. */
export interface ConfigObject<K extends Kind = Kind> {
  apiVersion: string;
  kind: K;
  metadata: ObjectMeta;
  spec: SpecOf<K>;
}

/** How one object is addressed. */
export interface ConfigKey {
  kind: Kind;
  namespace: string;
  name: string;
}

export type SpecOf<K extends Kind> = K extends 'ServiceEntry'
  ? ServiceEntrySpec
  : K extends 'WorkloadEntry'
    ? WorkloadEntrySpec
    : K extends 'WorkloadGroup'
      ? WorkloadGroupSpec
      : K extends 'DestinationRule'
        ? DestinationRuleSpec
        : K extends 'VirtualService'
          ? VirtualServiceSpec
          : K extends 'Gateway'
            ? GatewaySpec
            : K extends 'Sidecar'
              ? SidecarSpec
              : K extends 'PeerAuthentication'
                ? PeerAuthenticationSpec
                : K extends 'AuthorizationPolicy'
                  ? AuthorizationPolicySpec
                  : never;

// ---------------------------------------------------------------------------------------------
// networking.istio.io

export interface StringMatch {
  exact?: string;
  prefix?: string;
  /** RE2 syntax in Istio; Sail compiles it with JavaScript's RegExp (`u` flag) to check it. */
  regex?: string;
}

export interface PortSelector {
  number?: number;
}

export interface Destination {
  host: string;
  subset?: string;
  port?: PortSelector;
}

export interface Percent {
  value: number;
}

export interface Headers {
  request?: HeaderOperations;
  response?: HeaderOperations;
}

export interface HeaderOperations {
  set?: Record<string, string>;
  add?: Record<string, string>;
  remove?: string[];
}

export interface HTTPMatchRequest {
  name?: string;
  uri?: StringMatch;
  scheme?: StringMatch;
  method?: StringMatch;
  authority?: StringMatch;
  headers?: Record<string, StringMatch>;
  withoutHeaders?: Record<string, StringMatch>;
  queryParams?: Record<string, StringMatch>;
  port?: number;
  sourceLabels?: Record<string, string>;
  sourceNamespace?: string;
  gateways?: string[];
  ignoreUriCase?: boolean;
}

export interface HTTPRouteDestination {
  destination: Destination;
  /** 0–100; when a route has several destinations the weights sum to 100. Omitted with one destination. */
  weight?: number;
  headers?: Headers;
}

export interface HTTPRedirect {
  uri?: string;
  authority?: string;
  port?: number;
  scheme?: string;
  /** Default 301. */
  redirectCode?: number;
}

export interface HTTPRewrite {
  uri?: string;
  authority?: string;
}

export interface HTTPRetry {
  attempts: number;
  perTryTimeout?: string;
  /** Envoy retry conditions, comma-separated: `5xx,gateway-error,connect-failure,retriable-4xx,refused-stream,reset,cancelled,deadline-exceeded,unavailable,resource-exhausted,internal` or HTTP status codes. */
  retryOn?: string;
  retryRemoteLocalities?: boolean;
}

export interface HTTPFaultInjection {
  delay?: {
    fixedDelay?: string;
    percentage?: Percent;
    /** v1alpha3's integer percent; `percentage` wins when both are given. */
    percent?: number;
  };
  abort?: {
    httpStatus?: number;
    grpcStatus?: string;
    http2Error?: string;
    percentage?: Percent;
    percent?: number;
  };
}

export interface CorsPolicy {
  allowOrigins?: StringMatch[];
  /** Deprecated in Istio; still accepted. */
  allowOrigin?: string[];
  allowMethods?: string[];
  allowHeaders?: string[];
  exposeHeaders?: string[];
  maxAge?: string;
  allowCredentials?: boolean;
}

export interface HTTPRoute {
  name?: string;
  match?: HTTPMatchRequest[];
  route?: HTTPRouteDestination[];
  redirect?: HTTPRedirect;
  rewrite?: HTTPRewrite;
  timeout?: string;
  retries?: HTTPRetry;
  fault?: HTTPFaultInjection;
  mirror?: Destination;
  mirrorPercentage?: Percent;
  /** Deprecated integer form of mirrorPercentage. */
  mirrorPercent?: number;
  corsPolicy?: CorsPolicy;
  headers?: Headers;
  /** Istio 1.0 (v1alpha3) header fields, still accepted. */
  appendHeaders?: Record<string, string>;
  removeResponseHeaders?: string[];
  appendResponseHeaders?: Record<string, string>;
  removeRequestHeaders?: string[];
  appendRequestHeaders?: Record<string, string>;
  websocketUpgrade?: boolean;
}

export interface L4MatchAttributes {
  destinationSubnets?: string[];
  port?: number;
  sourceSubnet?: string;
  sourceLabels?: Record<string, string>;
  sourceNamespace?: string;
  gateways?: string[];
}

export interface RouteDestination {
  destination: Destination;
  weight?: number;
}

export interface TCPRoute {
  match?: L4MatchAttributes[];
  route?: RouteDestination[];
}

export interface TLSMatchAttributes extends L4MatchAttributes {
  sniHosts: string[];
}

export interface TLSRoute {
  match: TLSMatchAttributes[];
  route?: RouteDestination[];
}

export interface VirtualServiceSpec {
  hosts?: string[];
  gateways?: string[];
  http?: HTTPRoute[];
  tls?: TLSRoute[];
  tcp?: TCPRoute[];
  exportTo?: string[];
}

export type SimpleLB =
  'UNSPECIFIED' | 'ROUND_ROBIN' | 'LEAST_CONN' | 'LEAST_REQUEST' | 'RANDOM' | 'PASSTHROUGH';

export interface LoadBalancerSettings {
  simple?: SimpleLB;
  consistentHash?: {
    httpHeaderName?: string;
    httpCookie?: { name: string; path?: string; ttl?: string };
    useSourceIp?: boolean;
    httpQueryParameterName?: string;
    minimumRingSize?: number;
  };
}

export interface ConnectionPoolSettings {
  tcp?: {
    maxConnections?: number;
    connectTimeout?: string;
    tcpKeepalive?: { probes?: number; time?: string; interval?: string };
  };
  http?: {
    http1MaxPendingRequests?: number;
    http2MaxRequests?: number;
    maxRequestsPerConnection?: number;
    maxRetries?: number;
    idleTimeout?: string;
    h2UpgradePolicy?: 'DEFAULT' | 'DO_NOT_UPGRADE' | 'UPGRADE';
    maxConcurrentStreams?: number;
  };
}

export interface OutlierDetection {
  /** Istio 1.0's name; consecutive5xxErrors in later versions. */
  consecutiveErrors?: number;
  consecutive5xxErrors?: number;
  consecutiveGatewayErrors?: number;
  interval?: string;
  baseEjectionTime?: string;
  maxEjectionPercent?: number;
  minHealthPercent?: number;
}

export type TLSmode = 'DISABLE' | 'SIMPLE' | 'MUTUAL' | 'ISTIO_MUTUAL';

export interface ClientTLSSettings {
  mode?: TLSmode;
  clientCertificate?: string;
  privateKey?: string;
  caCertificates?: string;
  credentialName?: string;
  subjectAltNames?: string[];
  sni?: string;
  insecureSkipVerify?: boolean;
}

export interface TrafficPolicy {
  loadBalancer?: LoadBalancerSettings;
  connectionPool?: ConnectionPoolSettings;
  outlierDetection?: OutlierDetection;
  tls?: ClientTLSSettings;
  portLevelSettings?: (Omit<TrafficPolicy, 'portLevelSettings'> & { port?: PortSelector })[];
}

export interface Subset {
  name: string;
  labels?: Record<string, string>;
  trafficPolicy?: TrafficPolicy;
}

export interface DestinationRuleSpec {
  host: string;
  trafficPolicy?: TrafficPolicy;
  subsets?: Subset[];
  exportTo?: string[];
  /** `matchLabels`, as in Istio's DestinationRule (type.v1beta1.WorkloadSelector), unlike ServiceEntry's `labels`. */
  workloadSelector?: LabelSelector;
}

export interface ServicePort {
  number: number;
  /** HTTP|HTTPS|GRPC|HTTP2|MONGO|TCP|TLS|REDIS (case-insensitive in Istio; stored upper-case). */
  protocol?: string;
  name: string;
  targetPort?: number;
}

export type Location = 'MESH_EXTERNAL' | 'MESH_INTERNAL';
export type Resolution = 'NONE' | 'STATIC' | 'DNS' | 'DNS_ROUND_ROBIN';

export interface WorkloadSelector {
  labels?: Record<string, string>;
}

export interface ServiceEntrySpec {
  hosts: string[];
  addresses?: string[];
  ports?: ServicePort[];
  /** Default MESH_EXTERNAL. */
  location?: Location;
  /** Default NONE. */
  resolution?: Resolution;
  endpoints?: WorkloadEntrySpec[];
  workloadSelector?: WorkloadSelector;
  exportTo?: string[];
  subjectAltNames?: string[];
}

export interface WorkloadEntrySpec {
  /** IP address or DNS name (or `unix://` path). */
  address?: string;
  /** Port name → port number on this workload. */
  ports?: Record<string, number>;
  labels?: Record<string, string>;
  network?: string;
  locality?: string;
  weight?: number;
  serviceAccount?: string;
}

export interface ReadinessProbe {
  initialDelaySeconds?: number;
  timeoutSeconds?: number;
  periodSeconds?: number;
  successThreshold?: number;
  failureThreshold?: number;
  httpGet?: {
    path?: string;
    port: number;
    host?: string;
    scheme?: string;
    httpHeaders?: { name: string; value: string }[];
  };
  tcpSocket?: { host?: string; port: number };
  exec?: { command: string[] };
}

export interface WorkloadGroupSpec {
  metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> };
  template: WorkloadEntrySpec;
  probe?: ReadinessProbe;
}

export interface GatewayServer {
  port: { number: number; protocol: string; name: string; targetPort?: number };
  bind?: string;
  hosts: string[];
  tls?: {
    httpsRedirect?: boolean;
    mode?:
      'PASSTHROUGH' | 'SIMPLE' | 'MUTUAL' | 'AUTO_PASSTHROUGH' | 'ISTIO_MUTUAL' | 'OPTIONAL_MUTUAL';
    serverCertificate?: string;
    privateKey?: string;
    caCertificates?: string;
    credentialName?: string;
    subjectAltNames?: string[];
    minProtocolVersion?: string;
    maxProtocolVersion?: string;
    cipherSuites?: string[];
  };
  defaultEndpoint?: string;
  name?: string;
}

export interface GatewaySpec {
  servers: GatewayServer[];
  selector?: Record<string, string>;
}

export interface IstioIngressListener {
  port: { number: number; protocol?: string; name?: string };
  bind?: string;
  captureMode?: 'DEFAULT' | 'IPTABLES' | 'NONE';
  defaultEndpoint?: string;
}

export interface IstioEgressListener {
  port?: { number: number; protocol?: string; name?: string };
  bind?: string;
  captureMode?: 'DEFAULT' | 'IPTABLES' | 'NONE';
  /** `namespace/dnsName` entries; `*` and `.` (this namespace) allowed for the namespace. */
  hosts: string[];
}

export interface SidecarSpec {
  workloadSelector?: WorkloadSelector;
  ingress?: IstioIngressListener[];
  egress?: IstioEgressListener[];
  outboundTrafficPolicy?: { mode?: 'REGISTRY_ONLY' | 'ALLOW_ANY'; egressProxy?: Destination };
}

// ---------------------------------------------------------------------------------------------
// security.istio.io

export interface LabelSelector {
  matchLabels?: Record<string, string>;
}

export type MtlsMode = 'UNSET' | 'DISABLE' | 'PERMISSIVE' | 'STRICT';

export interface PeerAuthenticationSpec {
  selector?: LabelSelector;
  mtls?: { mode?: MtlsMode };
  /** Port number (as a string key, as in YAML) → mode. Needs a selector. */
  portLevelMtls?: Record<string, { mode?: MtlsMode }>;
}

export interface AuthorizationSource {
  principals?: string[];
  notPrincipals?: string[];
  requestPrincipals?: string[];
  notRequestPrincipals?: string[];
  namespaces?: string[];
  notNamespaces?: string[];
  ipBlocks?: string[];
  notIpBlocks?: string[];
  remoteIpBlocks?: string[];
  notRemoteIpBlocks?: string[];
}

export interface AuthorizationOperation {
  hosts?: string[];
  notHosts?: string[];
  ports?: string[];
  notPorts?: string[];
  methods?: string[];
  notMethods?: string[];
  paths?: string[];
  notPaths?: string[];
}

export interface AuthorizationCondition {
  key: string;
  values?: string[];
  notValues?: string[];
}

export interface AuthorizationRule {
  from?: { source: AuthorizationSource }[];
  to?: { operation: AuthorizationOperation }[];
  when?: AuthorizationCondition[];
}

export interface AuthorizationPolicySpec {
  selector?: LabelSelector;
  /** Default ALLOW. */
  action?: 'ALLOW' | 'DENY' | 'AUDIT' | 'CUSTOM';
  rules?: AuthorizationRule[];
  provider?: { name: string };
}
