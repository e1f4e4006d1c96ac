/**
 * Strict zod schemas for every Sail kind: the structure and the value formats of Istio's
 * documents (unknown fields rejected, enums, integers and their ranges, durations, protocols,
 * regexes). Rules that relate several fields (one-ofs, weights summing to 100, hosts) are in
 * `validate.ts`. Each schema's output is exactly its type in `types.ts`, checked at compile time
 * by {@link strict}.
 */
import { z } from 'zod';
import type {
  AuthorizationPolicySpec,
  ClientTLSSettings,
  ConnectionPoolSettings,
  CorsPolicy,
  Destination,
  DestinationRuleSpec,
  GatewayServer,
  GatewaySpec,
  HTTPFaultInjection,
  HTTPMatchRequest,
  HTTPRedirect,
  HTTPRetry,
  HTTPRewrite,
  HTTPRoute,
  HTTPRouteDestination,
  HeaderOperations,
  Headers,
  IstioEgressListener,
  IstioIngressListener,
  Kind,
  L4MatchAttributes,
  LabelSelector,
  LoadBalancerSettings,
  OutlierDetection,
  PeerAuthenticationSpec,
  Percent,
  PortSelector,
  ReadinessProbe,
  RouteDestination,
  ServiceEntrySpec,
  ServicePort,
  SidecarSpec,
  SpecOf,
  StringMatch,
  Subset,
  TCPRoute,
  TLSMatchAttributes,
  TLSRoute,
  TrafficPolicy,
  VirtualServiceSpec,
  WorkloadEntrySpec,
  WorkloadGroupSpec,
  WorkloadSelector,
} from './types';

// ---------------------------------------------------------------------------------------------
// Building blocks

/**
 * The zod shape for type T: every key of T, optional keys as `.optional()` schemas, each value
 * schema producing T's field type. An extra, missing or mistyped field is a compile error.
 */
type Shape<T> = {
  [K in keyof T]-?: object extends Pick<T, K>
    ? z.ZodOptional<z.ZodType<Exclude<T[K], undefined>>>
    : z.ZodType<T[K]>;
};

/**
 * A strict object schema (unknown fields rejected, with a "did you mean" for near misses) whose
 * output is T.
 */
export function strict<T>(shape: Shape<T>): z.ZodType<T> {
  const known = Object.keys(shape);
  return z.strictObject(shape, {
    error: iss =>
      iss.code === 'unrecognized_keys' ? unknownFieldsMessage(iss.keys, known) : undefined,
  }) as unknown as z.ZodType<T>;
}

/** `unknown field "rout" (did you mean "route"?)`. */
export function unknownFieldsMessage(keys: readonly string[], known: readonly string[]): string {
  const parts = keys.map(key => {
    const guess = suggest(key, known);
    return `${JSON.stringify(key)}${guess ? ` (did you mean ${JSON.stringify(guess)}?)` : ''}`;
  });
  return `unknown field${keys.length > 1 ? 's' : ''} ${parts.join(', ')}`;
}

/** The known name closest to `key`: same letters ignoring case, `_` and `-`, or at most 2 edits away. */
function suggest(key: string, known: readonly string[]): string | undefined {
  const norm = (s: string) => s.toLowerCase().replace(/[-_]/g, '');
  const exact = known.find(k => norm(k) === norm(key));
  if (exact) return exact;
  let best: string | undefined;
  let bestDistance = 3;
  for (const k of known) {
    const d = editDistance(key.toLowerCase(), k.toLowerCase());
    if (d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++)
      cur[j] = Math.min(
        (prev[j] ?? 0) + 1,
        (cur[j - 1] ?? 0) + 1,
        (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

const str = z.string();
const strList = z.array(z.string());
const strMap = z.record(z.string(), z.string());
const bool = z.boolean();

/** An integer from `min` to `max` inclusive; the message names what it is. */
function int(what: string, min: number, max: number = Number.MAX_SAFE_INTEGER): z.ZodType<number> {
  return z
    .number()
    .int()
    .superRefine((n, ctx) => {
      if (n < min || n > max)
        ctx.addIssue({
          code: 'custom',
          message:
            max === Number.MAX_SAFE_INTEGER
              ? `want ${what} of at least ${min}, got ${n}`
              : `want ${what} from ${min} to ${max}, got ${n}`,
        });
    });
}

const port = int('a port number', 1, 65535);
const count = int('a number', 0);
const percentInt = int('a percentage', 0, 100);

/** Protocol names Istio knows (`protocol.Parse`); matched case-insensitively, stored upper-case. */
export const PROTOCOLS = [
  'HTTP',
  'HTTPS',
  'HTTP2',
  'GRPC',
  'GRPC-WEB',
  'HTTP_PROXY',
  'TCP',
  'TLS',
  'UDP',
  'MONGO',
  'REDIS',
  'MYSQL',
] as const;

const protocol: z.ZodType<string> = z.string().transform((s, ctx) => {
  const upper = s.toUpperCase();
  if (!(PROTOCOLS as readonly string[]).includes(upper))
    ctx.addIssue({
      code: 'custom',
      message: `unknown protocol ${JSON.stringify(s)}: want one of ${PROTOCOLS.join(', ')} (any case)`,
    });
  return upper;
});

const DURATION_UNITS_NS: Readonly<Record<string, number>> = {
  ns: 1,
  us: 1e3,
  µs: 1e3,
  ms: 1e6,
  s: 1e9,
  m: 60e9,
  h: 3600e9,
};
const DURATION_PART_RE = /^(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/;

/**
 * Parses a duration as Istio's YAML accepts it: Go's `time.ParseDuration` syntax (`5s`, `1.5s`,
 * `100ms`, `1m`, `1h30m`), which includes protobuf's JSON form (`0.5s`).
 * @returns nanoseconds, or undefined when the text is not a duration
 */
export function parseIstioDuration(text: string): number | undefined {
  if (text === '0') return 0;
  let rest = text;
  let total = 0;
  if (rest === '') return undefined;
  while (rest !== '') {
    const m = DURATION_PART_RE.exec(rest);
    if (!m) return undefined;
    total += Number(m[1]) * (DURATION_UNITS_NS[m[2] as string] as number);
    rest = rest.slice(m[0].length);
  }
  return total;
}

/**
 * A duration string of at least 1ms, whole milliseconds (Istio `ValidateDuration`); with
 * `allowZero`, `0s` is accepted too (it disables a timeout).
 */
function duration(allowZero = false): z.ZodType<string> {
  return z.string().superRefine((s, ctx) => {
    const ns = parseIstioDuration(s);
    if (ns === undefined)
      ctx.addIssue({
        code: 'custom',
        message: `invalid duration ${JSON.stringify(s)}: want e.g. 100ms, 1.5s, 5s, 1m, 1h30m`,
      });
    else if (ns === 0 && allowZero) return;
    else if (ns < 1e6)
      ctx.addIssue({
        code: 'custom',
        message: `duration ${JSON.stringify(s)} is too short: want at least 1ms`,
      });
    else if (Math.round(ns) % 1e6 !== 0)
      ctx.addIssue({
        code: 'custom',
        message: `duration ${JSON.stringify(s)} is finer than a millisecond: only whole milliseconds are supported`,
      });
  });
}

/** A regular expression that compiles as a JavaScript RegExp with the `u` flag. */
const regex: z.ZodType<string> = z.string().superRefine((s, ctx) => {
  if (s === '') {
    ctx.addIssue({ code: 'custom', message: 'empty regex' });
    return;
  }
  if (s.length > 1024) {
    ctx.addIssue({ code: 'custom', message: 'regex is too long (max 1024 characters)' });
    return;
  }
  try {
    new RegExp(s, 'u');
  } catch (err) {
    ctx.addIssue({
      code: 'custom',
      message: `regex ${JSON.stringify(s)} does not compile: ${(err as Error).message.replace(/^Invalid regular expression: /, '')}`,
    });
  }
});

/** A percentage as a float from 0 to 100. */
const percentFloat: z.ZodType<number> = z.number().superRefine((n, ctx) => {
  if (n < 0 || n > 100)
    ctx.addIssue({ code: 'custom', message: `want a percentage from 0 to 100, got ${n}` });
});

// ---------------------------------------------------------------------------------------------
// networking.istio.io

const stringMatch = strict<StringMatch>({
  exact: str.optional(),
  prefix: str.optional(),
  regex: regex.optional(),
});
const stringMatchMap = z.record(z.string(), stringMatch);

const portSelector = strict<PortSelector>({ number: port.optional() });

const destination = strict<Destination>({
  host: str,
  subset: str.optional(),
  port: portSelector.optional(),
});

const percent = strict<Percent>({ value: percentFloat });

const headerOperations = strict<HeaderOperations>({
  set: strMap.optional(),
  add: strMap.optional(),
  remove: strList.optional(),
});
const headers = strict<Headers>({
  request: headerOperations.optional(),
  response: headerOperations.optional(),
});

const httpMatchRequest = strict<HTTPMatchRequest>({
  name: str.optional(),
  uri: stringMatch.optional(),
  scheme: stringMatch.optional(),
  method: stringMatch.optional(),
  authority: stringMatch.optional(),
  headers: stringMatchMap.optional(),
  withoutHeaders: stringMatchMap.optional(),
  queryParams: stringMatchMap.optional(),
  port: port.optional(),
  sourceLabels: strMap.optional(),
  sourceNamespace: str.optional(),
  gateways: strList.optional(),
  ignoreUriCase: bool.optional(),
});

const weight = int('a weight', 0, 100);

const httpRouteDestination = strict<HTTPRouteDestination>({
  destination,
  weight: weight.optional(),
  headers: headers.optional(),
});

const httpRedirect = strict<HTTPRedirect>({
  uri: str.optional(),
  authority: str.optional(),
  port: port.optional(),
  scheme: str.optional(),
  redirectCode: int('a 3xx redirect code', 300, 399).optional(),
});

const httpRewrite = strict<HTTPRewrite>({ uri: str.optional(), authority: str.optional() });

const httpRetry = strict<HTTPRetry>({
  attempts: int('a number of attempts', 0),
  perTryTimeout: duration().optional(),
  retryOn: str.optional(),
  retryRemoteLocalities: bool.optional(),
});

const httpFaultInjection = strict<HTTPFaultInjection>({
  delay: strict<NonNullable<HTTPFaultInjection['delay']>>({
    fixedDelay: duration().optional(),
    percentage: percent.optional(),
    percent: percentInt.optional(),
  }).optional(),
  abort: strict<NonNullable<HTTPFaultInjection['abort']>>({
    httpStatus: int('an HTTP status', 200, 599).optional(),
    grpcStatus: str.optional(),
    http2Error: str.optional(),
    percentage: percent.optional(),
    percent: percentInt.optional(),
  }).optional(),
});

const corsPolicy = strict<CorsPolicy>({
  allowOrigins: z.array(stringMatch).optional(),
  allowOrigin: strList.optional(),
  allowMethods: strList.optional(),
  allowHeaders: strList.optional(),
  exposeHeaders: strList.optional(),
  maxAge: duration().optional(),
  allowCredentials: bool.optional(),
});

const httpRoute = strict<HTTPRoute>({
  name: str.optional(),
  match: z.array(httpMatchRequest).optional(),
  route: z.array(httpRouteDestination).optional(),
  redirect: httpRedirect.optional(),
  rewrite: httpRewrite.optional(),
  timeout: duration(true).optional(),
  retries: httpRetry.optional(),
  fault: httpFaultInjection.optional(),
  mirror: destination.optional(),
  mirrorPercentage: percent.optional(),
  mirrorPercent: percentInt.optional(),
  corsPolicy: corsPolicy.optional(),
  headers: headers.optional(),
  appendHeaders: strMap.optional(),
  removeResponseHeaders: strList.optional(),
  appendResponseHeaders: strMap.optional(),
  removeRequestHeaders: strList.optional(),
  appendRequestHeaders: strMap.optional(),
  websocketUpgrade: bool.optional(),
});

const l4Fields = {
  destinationSubnets: strList.optional(),
  port: port.optional(),
  sourceSubnet: str.optional(),
  sourceLabels: strMap.optional(),
  sourceNamespace: str.optional(),
  gateways: strList.optional(),
};
const l4Match = strict<L4MatchAttributes>(l4Fields);
const tlsMatch = strict<TLSMatchAttributes>({ ...l4Fields, sniHosts: strList });

const routeDestination = strict<RouteDestination>({ destination, weight: weight.optional() });

const tcpRoute = strict<TCPRoute>({
  match: z.array(l4Match).optional(),
  route: z.array(routeDestination).optional(),
});
const tlsRoute = strict<TLSRoute>({
  match: z.array(tlsMatch),
  route: z.array(routeDestination).optional(),
});

const virtualService = strict<VirtualServiceSpec>({
  hosts: strList.optional(),
  gateways: strList.optional(),
  http: z.array(httpRoute).optional(),
  tls: z.array(tlsRoute).optional(),
  tcp: z.array(tcpRoute).optional(),
  exportTo: strList.optional(),
});

const loadBalancer = strict<LoadBalancerSettings>({
  simple: z
    .enum(['UNSPECIFIED', 'ROUND_ROBIN', 'LEAST_CONN', 'LEAST_REQUEST', 'RANDOM', 'PASSTHROUGH'])
    .optional(),
  consistentHash: strict<NonNullable<LoadBalancerSettings['consistentHash']>>({
    httpHeaderName: str.optional(),
    httpCookie: strict<{ name: string; path?: string; ttl?: string }>({
      name: str,
      path: str.optional(),
      ttl: duration(true).optional(),
    }).optional(),
    useSourceIp: bool.optional(),
    httpQueryParameterName: str.optional(),
    minimumRingSize: count.optional(),
  }).optional(),
});

type TcpPool = NonNullable<ConnectionPoolSettings['tcp']>;
type HttpPool = NonNullable<ConnectionPoolSettings['http']>;
const connectionPool = strict<ConnectionPoolSettings>({
  tcp: strict<TcpPool>({
    maxConnections: count.optional(),
    connectTimeout: duration().optional(),
    tcpKeepalive: strict<NonNullable<TcpPool['tcpKeepalive']>>({
      probes: count.optional(),
      time: duration().optional(),
      interval: duration().optional(),
    }).optional(),
  }).optional(),
  http: strict<HttpPool>({
    http1MaxPendingRequests: count.optional(),
    http2MaxRequests: count.optional(),
    maxRequestsPerConnection: count.optional(),
    maxRetries: count.optional(),
    // Istio documents `0s` as "disabled" here.
    idleTimeout: duration(true).optional(),
    h2UpgradePolicy: z.enum(['DEFAULT', 'DO_NOT_UPGRADE', 'UPGRADE']).optional(),
    maxConcurrentStreams: count.optional(),
  }).optional(),
});

const outlierDetection = strict<OutlierDetection>({
  consecutiveErrors: count.optional(),
  consecutive5xxErrors: count.optional(),
  consecutiveGatewayErrors: count.optional(),
  interval: duration().optional(),
  baseEjectionTime: duration().optional(),
  maxEjectionPercent: percentInt.optional(),
  minHealthPercent: percentInt.optional(),
});

const clientTls = strict<ClientTLSSettings>({
  mode: z.enum(['DISABLE', 'SIMPLE', 'MUTUAL', 'ISTIO_MUTUAL']).optional(),
  clientCertificate: str.optional(),
  privateKey: str.optional(),
  caCertificates: str.optional(),
  credentialName: str.optional(),
  subjectAltNames: strList.optional(),
  sni: str.optional(),
  insecureSkipVerify: bool.optional(),
});

type PortTrafficPolicy = NonNullable<TrafficPolicy['portLevelSettings']>[number];
const portTrafficPolicy = strict<PortTrafficPolicy>({
  port: portSelector.optional(),
  loadBalancer: loadBalancer.optional(),
  connectionPool: connectionPool.optional(),
  outlierDetection: outlierDetection.optional(),
  tls: clientTls.optional(),
});

const trafficPolicy = strict<TrafficPolicy>({
  loadBalancer: loadBalancer.optional(),
  connectionPool: connectionPool.optional(),
  outlierDetection: outlierDetection.optional(),
  tls: clientTls.optional(),
  portLevelSettings: z.array(portTrafficPolicy).optional(),
});

const subset = strict<Subset>({
  name: str,
  labels: strMap.optional(),
  trafficPolicy: trafficPolicy.optional(),
});

const labelSelector = strict<LabelSelector>({ matchLabels: strMap.optional() });
const workloadSelector = strict<WorkloadSelector>({ labels: strMap.optional() });

const destinationRule = strict<DestinationRuleSpec>({
  host: str,
  trafficPolicy: trafficPolicy.optional(),
  subsets: z.array(subset).optional(),
  exportTo: strList.optional(),
  workloadSelector: labelSelector.optional(),
});

const servicePort = strict<ServicePort>({
  number: port,
  protocol: protocol.optional(),
  name: str,
  targetPort: port.optional(),
});

const workloadEntry = strict<WorkloadEntrySpec>({
  address: str.optional(),
  ports: z.record(z.string(), port).optional(),
  labels: strMap.optional(),
  network: str.optional(),
  locality: str.optional(),
  weight: count.optional(),
  serviceAccount: str.optional(),
});

const serviceEntry = strict<ServiceEntrySpec>({
  hosts: strList,
  addresses: strList.optional(),
  ports: z.array(servicePort).optional(),
  location: z.enum(['MESH_EXTERNAL', 'MESH_INTERNAL']).optional(),
  resolution: z.enum(['NONE', 'STATIC', 'DNS', 'DNS_ROUND_ROBIN']).optional(),
  endpoints: z.array(workloadEntry).optional(),
  workloadSelector: workloadSelector.optional(),
  exportTo: strList.optional(),
  subjectAltNames: strList.optional(),
});

type HttpGet = NonNullable<ReadinessProbe['httpGet']>;
const readinessProbe = strict<ReadinessProbe>({
  initialDelaySeconds: count.optional(),
  timeoutSeconds: count.optional(),
  periodSeconds: count.optional(),
  successThreshold: count.optional(),
  failureThreshold: count.optional(),
  httpGet: strict<HttpGet>({
    path: str.optional(),
    port,
    host: str.optional(),
    scheme: str.optional(),
    httpHeaders: z
      .array(strict<{ name: string; value: string }>({ name: str, value: str }))
      .optional(),
  }).optional(),
  tcpSocket: strict<NonNullable<ReadinessProbe['tcpSocket']>>({
    host: str.optional(),
    port,
  }).optional(),
  exec: strict<NonNullable<ReadinessProbe['exec']>>({ command: strList }).optional(),
});

const workloadGroup = strict<WorkloadGroupSpec>({
  metadata: strict<NonNullable<WorkloadGroupSpec['metadata']>>({
    labels: strMap.optional(),
    annotations: strMap.optional(),
  }).optional(),
  template: workloadEntry,
  probe: readinessProbe.optional(),
});

type ServerTls = NonNullable<GatewayServer['tls']>;
const gatewayServer = strict<GatewayServer>({
  port: strict<GatewayServer['port']>({
    number: port,
    protocol,
    name: str,
    targetPort: port.optional(),
  }),
  bind: str.optional(),
  hosts: strList,
  tls: strict<ServerTls>({
    httpsRedirect: bool.optional(),
    mode: z
      .enum([
        'PASSTHROUGH',
        'SIMPLE',
        'MUTUAL',
        'AUTO_PASSTHROUGH',
        'ISTIO_MUTUAL',
        'OPTIONAL_MUTUAL',
      ])
      .optional(),
    serverCertificate: str.optional(),
    privateKey: str.optional(),
    caCertificates: str.optional(),
    credentialName: str.optional(),
    subjectAltNames: strList.optional(),
    minProtocolVersion: str.optional(),
    maxProtocolVersion: str.optional(),
    cipherSuites: strList.optional(),
  }).optional(),
  defaultEndpoint: str.optional(),
  name: str.optional(),
});

const gateway = strict<GatewaySpec>({
  servers: z.array(gatewayServer),
  selector: strMap.optional(),
});

const captureMode = z.enum(['DEFAULT', 'IPTABLES', 'NONE']);
const sidecarPort = strict<{ number: number; protocol?: string; name?: string }>({
  number: port,
  protocol: protocol.optional(),
  name: str.optional(),
});

const sidecar = strict<SidecarSpec>({
  workloadSelector: workloadSelector.optional(),
  ingress: z
    .array(
      strict<IstioIngressListener>({
        port: sidecarPort,
        bind: str.optional(),
        captureMode: captureMode.optional(),
        defaultEndpoint: str.optional(),
      }),
    )
    .optional(),
  egress: z
    .array(
      strict<IstioEgressListener>({
        port: sidecarPort.optional(),
        bind: str.optional(),
        captureMode: captureMode.optional(),
        hosts: strList,
      }),
    )
    .optional(),
  outboundTrafficPolicy: strict<NonNullable<SidecarSpec['outboundTrafficPolicy']>>({
    mode: z.enum(['REGISTRY_ONLY', 'ALLOW_ANY']).optional(),
    egressProxy: destination.optional(),
  }).optional(),
});

// ---------------------------------------------------------------------------------------------
// security.istio.io

const mtlsMode = strict<{ mode?: 'UNSET' | 'DISABLE' | 'PERMISSIVE' | 'STRICT' }>({
  mode: z.enum(['UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT']).optional(),
});

const peerAuthentication = strict<PeerAuthenticationSpec>({
  selector: labelSelector.optional(),
  mtls: mtlsMode.optional(),
  portLevelMtls: z.record(z.string(), mtlsMode).optional(),
});

type Rule = NonNullable<AuthorizationPolicySpec['rules']>[number];
type Source = NonNullable<Rule['from']>[number]['source'];
type Operation = NonNullable<Rule['to']>[number]['operation'];
type Condition = NonNullable<Rule['when']>[number];

const source = strict<Source>({
  principals: strList.optional(),
  notPrincipals: strList.optional(),
  requestPrincipals: strList.optional(),
  notRequestPrincipals: strList.optional(),
  namespaces: strList.optional(),
  notNamespaces: strList.optional(),
  ipBlocks: strList.optional(),
  notIpBlocks: strList.optional(),
  remoteIpBlocks: strList.optional(),
  notRemoteIpBlocks: strList.optional(),
});
const operation = strict<Operation>({
  hosts: strList.optional(),
  notHosts: strList.optional(),
  ports: strList.optional(),
  notPorts: strList.optional(),
  methods: strList.optional(),
  notMethods: strList.optional(),
  paths: strList.optional(),
  notPaths: strList.optional(),
});
const condition = strict<Condition>({
  key: str,
  values: strList.optional(),
  notValues: strList.optional(),
});

const authorizationPolicy = strict<AuthorizationPolicySpec>({
  selector: labelSelector.optional(),
  action: z.enum(['ALLOW', 'DENY', 'AUDIT', 'CUSTOM']).optional(),
  rules: z
    .array(
      strict<Rule>({
        from: z.array(strict<{ source: Source }>({ source })).optional(),
        to: z.array(strict<{ operation: Operation }>({ operation })).optional(),
        when: z.array(condition).optional(),
      }),
    )
    .optional(),
  provider: strict<{ name: string }>({ name: str }).optional(),
});

/** The spec schema of each kind. */
export const SPEC_SCHEMAS: { readonly [K in Kind]: z.ZodType<SpecOf<K>> } = {
  ServiceEntry: serviceEntry,
  WorkloadEntry: workloadEntry,
  WorkloadGroup: workloadGroup,
  DestinationRule: destinationRule,
  VirtualService: virtualService,
  Gateway: gateway,
  Sidecar: sidecar,
  PeerAuthentication: peerAuthentication,
  AuthorizationPolicy: authorizationPolicy,
};

// ---------------------------------------------------------------------------------------------
// metadata

/** What a document's `metadata` may hold: what users write plus what kubectl and `sail get` add. */
export interface MetadataInput {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  resourceVersion?: string;
  // Server-managed or Kubernetes-only: accepted (so `get -o yaml` output re-applies) and dropped.
  uid?: unknown;
  generation?: unknown;
  creationTimestamp?: unknown;
  deletionTimestamp?: unknown;
  deletionGracePeriodSeconds?: unknown;
  managedFields?: unknown;
  ownerReferences?: unknown;
  finalizers?: unknown;
  selfLink?: unknown;
  generateName?: unknown;
}

const anything = z.unknown();
/** The `metadata` schema; the name and namespace formats are checked here too. */
export const metadataSchema = strict<MetadataInput>({
  name: z.string().superRefine((s, ctx) => {
    if (
      !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/.test(s) ||
      s.length > 253
    )
      ctx.addIssue({
        code: 'custom',
        message: `invalid name ${JSON.stringify(s)}: want lower-case letters, digits, "-" and ".", starting and ending with a letter or digit, at most 253 characters`,
      });
  }),
  namespace: z
    .string()
    .superRefine((s, ctx) => {
      if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(s) || s.length > 63)
        ctx.addIssue({
          code: 'custom',
          message: `invalid namespace ${JSON.stringify(s)}: want lower-case letters, digits and "-", starting and ending with a letter or digit, at most 63 characters`,
        });
    })
    .optional(),
  labels: strMap.optional(),
  annotations: strMap.optional(),
  resourceVersion: str.optional(),
  uid: anything.optional(),
  generation: anything.optional(),
  creationTimestamp: anything.optional(),
  deletionTimestamp: anything.optional(),
  deletionGracePeriodSeconds: anything.optional(),
  managedFields: anything.optional(),
  ownerReferences: anything.optional(),
  finalizers: anything.optional(),
  selfLink: anything.optional(),
  generateName: anything.optional(),
});
