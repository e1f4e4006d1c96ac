/**
 * CDS: `outbound|PORT|SUBSET|HOST` clusters for every service port (and DestinationRule subset) a
 * proxy sees, with the DestinationRule's load balancing, connection pool, outlier detection and
 * TLS; for sidecars also `inbound|PORT||` clusters for the workloads on the host and the fixed
 * `PassthroughCluster` and `BlackHoleCluster`.
 */
import type { LoadBalancerSettings, OutlierDetection } from '../../config/types';
import type { Protocol, Service, ServiceInstance, ServicePortModel } from '../../registry/types';
import { autoMtlsEligible, type Flavor, localityEndpoints } from './endpoints';
import { inboundPorts } from './inbound';
import {
  BLACKHOLE_CLUSTER,
  inboundClusterName,
  outboundClusterName,
  PASSTHROUGH_CLUSTER,
} from './names';
import { peerAuthenticationMode, type DestinationRuleEntry, type ProxyScope } from './scope';
import { effectivePolicy, type EffectivePolicy } from './traffic-policy';
import { grpcMutualUpstream, istioMutualUpstream, rawBufferSocket, userTlsUpstream } from './tls';
import {
  duration,
  durationFromMs,
  durationMs,
  FILTERS,
  isHttp2Protocol,
  isHttpProtocol,
  memo,
  stringStruct,
  TYPES,
  UINT32_MAX,
  type Obj,
} from './util';

const ADS_CONFIG_SOURCE: Obj = { ads: {}, resourceApiVersion: 'V3' };

/** The Envoy lb_policy for a DestinationRule's loadBalancer; gRPC knows only two. */
export function lbPolicy(lb: LoadBalancerSettings | undefined, flavor: Flavor): string {
  if (lb?.consistentHash) return 'RING_HASH';
  if (flavor === 'proxyless') return 'ROUND_ROBIN';
  switch (lb?.simple) {
    case 'LEAST_CONN':
    case 'LEAST_REQUEST':
      return 'LEAST_REQUEST';
    case 'RANDOM':
      return 'RANDOM';
    default:
      return 'ROUND_ROBIN';
  }
}

function outlierDetection(od: OutlierDetection): Obj {
  const out: Obj = {};
  const consecutive5xx = od.consecutive5xxErrors ?? od.consecutiveErrors;
  if (consecutive5xx !== undefined) {
    out.consecutive_5xx = { value: consecutive5xx };
    // 0 turns the check off; Envoy's default enforcement is 100 %.
    out.enforcingConsecutive_5xx = { value: consecutive5xx > 0 ? 100 : 0 };
  }
  if (od.consecutiveGatewayErrors !== undefined) {
    out.consecutiveGatewayFailure = { value: od.consecutiveGatewayErrors };
    out.enforcingConsecutiveGatewayFailure = { value: od.consecutiveGatewayErrors > 0 ? 100 : 0 };
  }
  const interval = duration(od.interval);
  if (interval) out.interval = interval;
  const base = duration(od.baseEjectionTime);
  if (base) out.baseEjectionTime = base;
  if (od.maxEjectionPercent !== undefined)
    out.maxEjectionPercent = { value: Math.min(100, Math.max(0, od.maxEjectionPercent)) };
  // Istio ejects on consecutive errors only: success-rate ejection (on by default) is turned off.
  out.enforcingSuccessRate = { value: 0 };
  return out;
}

/** Connection-pool limits as circuit breakers; sidecars get Istio's "unlimited" defaults. */
function circuitBreakers(policy: EffectivePolicy, flavor: Flavor): Obj | undefined {
  const tcp = policy.connectionPool?.tcp;
  const http = policy.connectionPool?.http;
  if (flavor === 'proxyless') {
    // gRPC reads max_requests only.
    if (http?.http2MaxRequests === undefined) return undefined;
    return { thresholds: [{ maxRequests: { value: http.http2MaxRequests } }] };
  }
  return {
    thresholds: [
      {
        maxConnections: { value: tcp?.maxConnections ?? UINT32_MAX },
        maxPendingRequests: { value: http?.http1MaxPendingRequests ?? UINT32_MAX },
        maxRequests: { value: http?.http2MaxRequests ?? UINT32_MAX },
        maxRetries: { value: http?.maxRetries ?? UINT32_MAX },
        trackRemaining: true,
      },
    ],
  };
}

/** HTTP protocol options for HTTP-family ports: HTTP/2 to gRPC and HTTP2 upstreams, pool limits. */
function httpProtocolOptions(protocol: Protocol, policy: EffectivePolicy): Obj | undefined {
  if (!isHttpProtocol(protocol)) return undefined;
  const http = policy.connectionPool?.http;
  const common: Obj = {};
  const idle = duration(http?.idleTimeout);
  if (idle) common.idleTimeout = idle;
  if (http?.maxRequestsPerConnection !== undefined && http.maxRequestsPerConnection > 0)
    common.maxRequestsPerConnection = { value: http.maxRequestsPerConnection };
  const h2 =
    isHttp2Protocol(protocol) || (protocol === 'HTTP' && http?.h2UpgradePolicy === 'UPGRADE');
  if (!h2 && Object.keys(common).length === 0) return undefined;
  const h2Options: Obj = {};
  if (http?.maxConcurrentStreams !== undefined)
    h2Options.maxConcurrentStreams = { value: http.maxConcurrentStreams };
  return {
    [FILTERS.httpProtocolOptions]: {
      '@type': TYPES.httpProtocolOptions,
      ...(Object.keys(common).length > 0 ? { commonHttpProtocolOptions: common } : {}),
      explicitHttpConfig: h2 ? { http2ProtocolOptions: h2Options } : { httpProtocolOptions: {} },
    },
  };
}

/** Istio's SNI for mesh mTLS, which lets gateways route it: `outbound_.PORT_.SUBSET_.HOST`. */
function meshSni(host: string, port: number, subset: string): string {
  return `outbound_.${port}_.${subset}_.${host}`;
}

/** The first locality with only its first endpoint, its weight that endpoint's. */
function firstEndpointOnly(localities: Obj[]): Obj[] {
  const first = localities[0];
  const lb = (first?.lbEndpoints as Obj[] | undefined)?.[0];
  if (!first || !lb) return [];
  return [{ ...first, lbEndpoints: [lb], loadBalancingWeight: lb.loadBalancingWeight }];
}

/** The port an endpoint is reached on when the registry lists none (DNS services by name). */
const targetPort = (p: ServicePortModel) => p.targetPort ?? p.port;

interface OutboundClusterInput {
  readonly scope: ProxyScope;
  readonly flavor: Flavor;
  readonly service: Service;
  readonly port: ServicePortModel;
  readonly subset: string;
  readonly subsetLabels: Readonly<Record<string, string>> | undefined;
  readonly dr: DestinationRuleEntry | undefined;
}

/** Instances for inline (DNS) load assignments. */
function dnsInstances(input: OutboundClusterInput): ServiceInstance[] {
  const { scope, service, port, subsetLabels } = input;
  const all = scope.push.registry.instances(service.hostname, port.port);
  const selected = all.filter(i =>
    Object.entries(subsetLabels ?? {}).every(([k, v]) => i.labels[k] === v),
  );
  if (all.length > 0 || service.hostname.includes('*')) return selected;
  // A DNS ServiceEntry without endpoints resolves its own host name (Istio).
  return [
    {
      hostname: service.hostname,
      servicePort: port.port,
      endpoint: { address: service.hostname, port: targetPort(port) },
      labels: {},
      workload: '',
      healthy: true,
      weight: 1,
      tlsMode: 'disabled',
    },
  ];
}

/**
 * Auto mTLS for gRPC's xDS client. gRPC has no transport socket matches, so the whole cluster
 * decides: mutual TLS when every endpoint runs the mesh proxy under a STRICT PeerAuthentication
 * (it refuses plaintext). Under PERMISSIVE the cluster stays plaintext, which the proxy accepts:
 * its inbound side tells mesh mTLS from an application's own TLS by Istio's ALPN values, which
 * gRPC never offers, so gRPC's TLS would be passed to the application undecrypted.
 */
function proxylessStrictMtls(input: OutboundClusterInput): boolean {
  const { scope, service, port, subsetLabels } = input;
  const instances = scope.push.registry
    .instances(service.hostname, port.port)
    .filter(i => Object.entries(subsetLabels ?? {}).every(([k, v]) => i.labels[k] === v));
  return (
    instances.length > 0 &&
    instances.every(i => {
      if (i.tlsMode !== 'istio') return false;
      // The workload's own namespace (`namespace/name`) holds its PeerAuthentication.
      const slash = i.workload.indexOf('/');
      const ns = slash > 0 ? i.workload.slice(0, slash) : service.namespace;
      return peerAuthenticationMode(scope.push, ns, i.labels, i.endpoint.port) === 'STRICT';
    })
  );
}

function buildOutboundCluster(input: OutboundClusterInput): Obj {
  const { scope, flavor, service, port, subset, dr } = input;
  const name = outboundClusterName(service.hostname, port.port, subset);
  const policy = effectivePolicy(dr?.spec, port.port, subset);
  const connectMs = durationMs(policy.connectionPool?.tcp?.connectTimeout);
  const cluster: Obj = {
    name,
    connectTimeout: durationFromMs(connectMs ?? scope.push.mesh.connectTimeoutMs),
  };
  const passthrough =
    flavor === 'sidecar' &&
    (service.resolution === 'NONE' || policy.loadBalancer?.simple === 'PASSTHROUGH');
  const dns = service.resolution === 'DNS' || service.resolution === 'DNS_ROUND_ROBIN';
  const mtlsFor = (i: ServiceInstance) => autoMtlsEligible(scope, service.namespace, i);
  const autoMtls = flavor === 'sidecar' && !passthrough && policy.tls?.mode === undefined;

  if (passthrough) {
    cluster.type = 'ORIGINAL_DST';
    cluster.lbPolicy = 'CLUSTER_PROVIDED';
  } else if (dns) {
    // Envoy and gRPC take exactly one endpoint for LOGICAL_DNS (they resolve it and use the first
    // address); STRICT_DNS resolves every endpoint and balances over all the addresses.
    const logical = flavor === 'proxyless' || service.resolution === 'DNS_ROUND_ROBIN';
    let endpoints = localityEndpoints(dnsInstances(input), {
      ipOnly: false,
      ...(autoMtls ? { mtls: mtlsFor } : {}),
    });
    if (logical) endpoints = firstEndpointOnly(endpoints);
    cluster.type = logical ? 'LOGICAL_DNS' : 'STRICT_DNS';
    cluster.lbPolicy = lbPolicy(policy.loadBalancer, flavor);
    if (flavor === 'sidecar') cluster.dnsLookupFamily = 'V4_ONLY';
    cluster.loadAssignment = { clusterName: name, endpoints };
  } else {
    cluster.type = 'EDS';
    cluster.lbPolicy = lbPolicy(policy.loadBalancer, flavor);
    cluster.edsClusterConfig = { edsConfig: ADS_CONFIG_SOURCE, serviceName: name };
  }

  const minRing = policy.loadBalancer?.consistentHash?.minimumRingSize;
  if (cluster.lbPolicy === 'RING_HASH' && minRing !== undefined && minRing > 0)
    cluster.ringHashLbConfig = { minimumRingSize: { value: minRing } };

  const breakers = circuitBreakers(policy, flavor);
  if (breakers) cluster.circuitBreakers = breakers;
  if (policy.outlierDetection) {
    cluster.outlierDetection = outlierDetection(policy.outlierDetection);
    const minHealth = policy.outlierDetection.minHealthPercent;
    if (flavor === 'sidecar' && minHealth !== undefined)
      cluster.commonLbConfig = { healthyPanicThreshold: { value: minHealth } };
  }

  if (flavor === 'sidecar') {
    const keepalive = policy.connectionPool?.tcp?.tcpKeepalive;
    if (keepalive) {
      const ka: Obj = {};
      if (keepalive.probes !== undefined) ka.keepaliveProbes = { value: keepalive.probes };
      const time = durationMs(keepalive.time);
      if (time !== undefined) ka.keepaliveTime = { value: Math.max(1, Math.round(time / 1000)) };
      const interval = durationMs(keepalive.interval);
      if (interval !== undefined)
        ka.keepaliveInterval = { value: Math.max(1, Math.round(interval / 1000)) };
      cluster.upstreamConnectionOptions = { tcpKeepalive: ka };
    }
    const protocolOptions = httpProtocolOptions(port.protocol, policy);
    if (protocolOptions) cluster.typedExtensionProtocolOptions = protocolOptions;
  }

  const tls = policy.tls;
  const sans =
    tls?.subjectAltNames && tls.subjectAltNames.length > 0
      ? tls.subjectAltNames
      : service.serviceAccounts;
  if (tls?.mode === 'ISTIO_MUTUAL') {
    cluster.transportSocket =
      flavor === 'proxyless'
        ? grpcMutualUpstream(sans)
        : istioMutualUpstream(sans, tls.sni ?? meshSni(service.hostname, port.port, subset));
  } else if (
    flavor === 'proxyless' &&
    tls?.mode === undefined &&
    cluster.type === 'EDS' &&
    proxylessStrictMtls(input)
  ) {
    cluster.transportSocket = grpcMutualUpstream(sans);
  } else if ((tls?.mode === 'SIMPLE' || tls?.mode === 'MUTUAL') && flavor === 'sidecar') {
    cluster.transportSocket = userTlsUpstream(tls);
  } else if (autoMtls) {
    // Auto mTLS (Istio): per endpoint, by the tlsMode metadata EDS puts on mesh endpoints.
    cluster.transportSocketMatches = [
      {
        name: 'tlsMode-istio',
        match: stringStruct({ tlsMode: 'istio' }),
        transportSocket: istioMutualUpstream(sans, meshSni(service.hostname, port.port, subset)),
      },
      { name: 'tlsMode-disabled', match: {}, transportSocket: rawBufferSocket() },
    ];
  }
  return cluster;
}

/** Outbound clusters of one scope by name, memoized per push. */
export function outboundClusters(scope: ProxyScope, flavor: Flavor): ReadonlyMap<string, Obj> {
  return memo(scope.push.cache, `xdsgen|cds|${flavor}|${scope.key}`, () => {
    const out = new Map<string, Obj>();
    for (const { service, ports } of scope.services) {
      const dr = scope.destinationRule(service.hostname);
      const subsets = dr?.spec.subsets ?? [];
      for (const port of ports) {
        if (port.protocol === 'UDP') continue;
        const base = { scope, flavor, service, port, dr };
        const all = [
          buildOutboundCluster({ ...base, subset: '', subsetLabels: undefined }),
          ...subsets.map(s =>
            buildOutboundCluster({ ...base, subset: s.name, subsetLabels: s.labels ?? {} }),
          ),
        ];
        for (const c of all) out.set(c.name as string, c);
      }
    }
    return out;
  });
}

/** `inbound|PORT||` clusters: STATIC to 127.0.0.1:PORT for each port of the host's workloads. */
export function inboundClusters(scope: ProxyScope): Obj[] {
  return inboundPorts(scope).map(({ port, protocol }) => {
    const name = inboundClusterName(port);
    const cluster: Obj = {
      name,
      type: 'STATIC',
      connectTimeout: durationFromMs(scope.push.mesh.connectTimeoutMs),
      lbPolicy: 'ROUND_ROBIN',
      loadAssignment: {
        clusterName: name,
        endpoints: [
          {
            lbEndpoints: [
              {
                endpoint: { address: { socketAddress: { address: '127.0.0.1', portValue: port } } },
              },
            ],
          },
        ],
      },
    };
    const protocolOptions = httpProtocolOptions(protocol, {});
    if (protocolOptions) cluster.typedExtensionProtocolOptions = protocolOptions;
    return cluster;
  });
}

/** `PassthroughCluster` (to the original destination) and `BlackHoleCluster` (nowhere). */
export function fixedClusters(scope: ProxyScope): Obj[] {
  return memo(scope.push.cache, 'xdsgen|cds|fixed', () => {
    const connectTimeout = durationFromMs(scope.push.mesh.connectTimeoutMs);
    return [
      { name: BLACKHOLE_CLUSTER, type: 'STATIC', connectTimeout },
      {
        name: PASSTHROUGH_CLUSTER,
        type: 'ORIGINAL_DST',
        lbPolicy: 'CLUSTER_PROVIDED',
        connectTimeout,
        circuitBreakers: circuitBreakers({}, 'sidecar'),
      },
    ];
  });
}
