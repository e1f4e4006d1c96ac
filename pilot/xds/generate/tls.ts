/**
 * TLS transport sockets. Sidecars get their certificates by SDS from the node agent (secret
 * `default` for the workload's key and chain, `ROOTCA` for the mesh roots, over the bootstrap
 * cluster `sds-grpc`, as Istio does): no file paths travel in xDS for mesh mTLS. Proxyless gRPC
 * clients name certificate provider instances from their bootstrap instead.
 */
import type { ClientTLSSettings } from '../../config/types';
import { SDS_CERT_NAME, SDS_CLUSTER, SDS_ROOT_NAME } from './names';
import { FILTERS, TYPES, type Obj } from './util';

/** ALPN a sidecar offers for mesh mTLS; the inbound TLS chain of a PERMISSIVE port matches it. */
export const MESH_ALPN = ['istio-peer-exchange', 'istio'];
/** ALPN values that mark a connection as mesh mTLS (Istio's list), for inbound chain matches. */
export const MESH_ALPN_MATCH = [
  'istio-peer-exchange',
  'istio',
  'istio-http/1.0',
  'istio-http/1.1',
  'istio-h2',
];

/** The certificate provider instance a proxyless client's bootstrap must define. */
export const GRPC_CERT_PROVIDER = 'default';

const sdsConfig = (): Obj => ({
  apiConfigSource: {
    apiType: 'GRPC',
    transportApiVersion: 'V3',
    grpcServices: [{ envoyGrpc: { clusterName: SDS_CLUSTER } }],
    setNodeOnFirstMessageOnly: true,
  },
  resourceApiVersion: 'V3',
});

const sdsSecret = (name: string): Obj => ({ name, sdsConfig: sdsConfig() });

/** SAN matchers: SPIFFE IDs as URI SANs, anything else as DNS. */
function sanMatchers(sans: readonly string[]): Obj[] {
  return sans.map(san => ({
    sanType: san.startsWith('spiffe://') ? 'URI' : 'DNS',
    matcher: { exact: san },
  }));
}

const transportSocket = (typedConfig: Obj): Obj => ({ name: FILTERS.tls, typedConfig });

/**
 * Mesh mTLS to an upstream (ISTIO_MUTUAL): present the workload certificate, trust the mesh roots,
 * and require the server to be one of `sans` (the service's service accounts; any mesh identity
 * when empty).
 */
export function istioMutualUpstream(sans: readonly string[], sni?: string): Obj {
  const validation: Obj = {};
  if (sans.length > 0) validation.matchTypedSubjectAltNames = sanMatchers(sans);
  return transportSocket({
    '@type': TYPES.upstreamTls,
    commonTlsContext: {
      tlsCertificateSdsSecretConfigs: [sdsSecret(SDS_CERT_NAME)],
      combinedValidationContext: {
        defaultValidationContext: validation,
        validationContextSdsSecretConfig: sdsSecret(SDS_ROOT_NAME),
      },
      alpnProtocols: MESH_ALPN,
    },
    ...(sni ? { sni } : {}),
  });
}

/**
 * TLS the DestinationRule configures by hand (SIMPLE: verify the server; MUTUAL: also present a
 * client certificate). The files are paths on the proxy's host, as the user wrote them.
 */
export function userTlsUpstream(tls: ClientTLSSettings): Obj {
  const common: Obj = {};
  if (tls.mode === 'MUTUAL' && tls.clientCertificate && tls.privateKey) {
    common.tlsCertificates = [
      {
        certificateChain: { filename: tls.clientCertificate },
        privateKey: { filename: tls.privateKey },
      },
    ];
  }
  if (!tls.insecureSkipVerify && (tls.caCertificates || tls.subjectAltNames?.length)) {
    const validation: Obj = {};
    if (tls.caCertificates) validation.trustedCa = { filename: tls.caCertificates };
    if (tls.subjectAltNames?.length)
      validation.matchTypedSubjectAltNames = sanMatchers(tls.subjectAltNames);
    common.validationContext = validation;
  }
  return transportSocket({
    '@type': TYPES.upstreamTls,
    commonTlsContext: common,
    ...(tls.sni ? { sni: tls.sni } : {}),
  });
}

/**
 * Mesh mTLS for a proxyless gRPC client (gRPC's xDS security, A29): certificates come from the
 * bootstrap's `certificate_providers.default`, which the node agent's files feed.
 */
export function grpcMutualUpstream(sans: readonly string[]): Obj {
  const validation: Obj = {
    caCertificateProviderInstance: {
      instanceName: GRPC_CERT_PROVIDER,
      certificateName: SDS_ROOT_NAME,
    },
  };
  // gRPC reads the untyped matchers (A29); a SPIFFE ID is matched against URI SANs.
  if (sans.length > 0) validation.matchSubjectAltNames = sans.map(exact => ({ exact }));
  return transportSocket({
    '@type': TYPES.upstreamTls,
    commonTlsContext: {
      tlsCertificateProviderInstance: {
        instanceName: GRPC_CERT_PROVIDER,
        certificateName: SDS_CERT_NAME,
      },
      combinedValidationContext: { defaultValidationContext: validation },
    },
  });
}

/**
 * The server side of mesh mTLS in a proxyless gRPC server (`XdsServer`, gRPC A29/A36): the
 * workload certificate and the mesh roots from the bootstrap's certificate provider, a client
 * certificate required. gRPC servers take no SAN matchers: any certificate of the mesh roots is
 * accepted, as the sidecar's inbound does.
 */
export function grpcMutualDownstream(): Obj {
  return transportSocket({
    '@type': TYPES.downstreamTls,
    commonTlsContext: {
      tlsCertificateProviderInstance: {
        instanceName: GRPC_CERT_PROVIDER,
        certificateName: SDS_CERT_NAME,
      },
      combinedValidationContext: {
        defaultValidationContext: {
          caCertificateProviderInstance: {
            instanceName: GRPC_CERT_PROVIDER,
            certificateName: SDS_ROOT_NAME,
          },
        },
      },
    },
    requireClientCertificate: { value: true },
  });
}

/** Plaintext, for the endpoints auto mTLS leaves alone. */
export function rawBufferSocket(): Obj {
  return { name: FILTERS.rawBuffer, typedConfig: { '@type': TYPES.rawBuffer } };
}

/**
 * The server side of mesh mTLS on an inbound port: present the workload certificate and require a
 * client certificate from this trust domain.
 */
export function istioMutualDownstream(trustDomain: string, alpn: readonly string[]): Obj {
  return transportSocket({
    '@type': TYPES.downstreamTls,
    commonTlsContext: {
      tlsCertificateSdsSecretConfigs: [sdsSecret(SDS_CERT_NAME)],
      combinedValidationContext: {
        defaultValidationContext: {
          matchTypedSubjectAltNames: [
            { sanType: 'URI', matcher: { prefix: `spiffe://${trustDomain}/` } },
          ],
        },
        validationContextSdsSecretConfig: sdsSecret(SDS_ROOT_NAME),
      },
      ...(alpn.length > 0 ? { alpnProtocols: [...alpn] } : {}),
    },
    requireClientCertificate: { value: true },
  });
}
