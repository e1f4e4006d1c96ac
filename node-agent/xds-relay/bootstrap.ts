/**
 * The gRPC xDS bootstrap for proxyless applications on a Sail host (gRFC A27 bootstrap, A29
 * certificate providers), as @grpc/grpc-js-xds 1.14 validates it (build/src/xds-bootstrap.js).
 * The agent writes it to /run/sail/grpc-bootstrap.json; applications point GRPC_XDS_BOOTSTRAP at
 * it and dial `xds:///HOST:PORT`.
 */
import * as path from 'node:path';
import { CERT_CHAIN_FILE, KEY_FILE, ROOT_CERT_FILE } from '../../common/identity-files';

/** Where the agent writes the bootstrap for applications. */
export const DEFAULT_GRPC_BOOTSTRAP_FILE = '/run/sail/grpc-bootstrap.json';
/** The relay's socket (DESIGN 3.2). */
export const DEFAULT_XDS_SOCKET = '/run/sail/xds.sock';
/**
 * The certificate provider instance pilot's proxyless TLS settings name
 * (pilot/xds/generate/tls.ts GRPC_CERT_PROVIDER); the bootstrap must define it.
 */
export const GRPC_CERT_PROVIDER_INSTANCE = 'default';
/**
 * Where a proxyless gRPC server (`XdsServer`) listening on HOST:PORT finds its listener: the
 * bootstrap's `server_listener_resource_name_template`, Istio's value, which pilot serves
 * (pilot/xds/generate/listeners.ts GRPC_SERVER_LISTENER_PREFIX).
 */
export const GRPC_SERVER_LISTENER_TEMPLATE = 'xds.istio.io/grpc/lds/inbound/%s';
/**
 * How often gRPC re-reads the certificate files. The agent renews at half the lifetime (hours),
 * so a minute is plenty and costs three small reads per minute per process.
 */
export const DEFAULT_CERT_REFRESH_INTERVAL = '60s';

/**
 * The node id for a host's proxyless applications: `proxyless~NODE.NAMESPACE`. Not Istio's
 * `TYPE~IP~ID~DOMAIN` form, which pilot reads as a proxy; pilot takes the node and namespace
 * from the host certificate anyway, so the id only names the client in `sail proxy-config`.
 */
export function proxylessNodeId(nodeName: string, namespace: string): string {
  return `proxyless~${nodeName}.${namespace}`;
}

/** Options of {@link grpcBootstrap}. */
export interface GrpcBootstrapOptions {
  /** The relay's unix socket, absolute (`/run/sail/xds.sock`). */
  readonly socketPath: string;
  /**
   * The node id sent to pilot; {@link proxylessNodeId}. A proxy's id in Istio's form
   * (`sidecar~IP~vm-1.default~…`, which pilot would serve as a sidecar) is turned into
   * `proxyless~vm-1.default`.
   */
  readonly nodeId: string;
  /** The workload's namespace; pilot refuses a NAMESPACE other than the certificate's. */
  readonly namespace: string;
  /** The agent's certificate directory (cert-chain.pem, key.pem, root-cert.pem). */
  readonly certsDir: string;
  /** file_watcher refresh interval, a protobuf JSON duration (`"60s"`). */
  readonly refreshInterval?: string;
}

/** The bootstrap JSON (snake_case, as gRPC reads it). */
export interface GrpcBootstrap {
  readonly xds_servers: readonly {
    readonly server_uri: string;
    readonly channel_creds: readonly { readonly type: 'insecure' }[];
    readonly server_features: readonly string[];
  }[];
  readonly node: {
    readonly id: string;
    readonly locality: Readonly<Record<string, string>>;
    readonly metadata: { readonly NAMESPACE: string };
  };
  readonly server_listener_resource_name_template: string;
  readonly certificate_providers: Readonly<
    Record<
      string,
      {
        readonly plugin_name: 'file_watcher';
        readonly config: {
          readonly certificate_file: string;
          readonly private_key_file: string;
          readonly ca_certificate_file: string;
          readonly refresh_interval: string;
        };
      }
    >
  >;
}

/**
 * The gRPC xDS bootstrap for proxyless applications: the xDS server is the agent's unix socket
 * with insecure channel credentials (the socket is local; the agent adds mTLS toward pilot),
 * `xds_v3`, the node id with its namespace, and the certificate provider `default` reading the
 * agent's certificate files, which pilot's ISTIO_MUTUAL clusters name for mutual TLS.
 * `server_listener_resource_name_template` lets gRPC servers (`XdsServer`) take their listener,
 * and with it their mTLS, from pilot.
 * @throws Error when socketPath or certsDir is not absolute, or nodeId/namespace is empty
 */
export function grpcBootstrap(opts: GrpcBootstrapOptions): GrpcBootstrap {
  if (!path.isAbsolute(opts.socketPath))
    throw new Error(`grpc bootstrap: socketPath ${opts.socketPath} is not an absolute path`);
  if (!path.isAbsolute(opts.certsDir))
    throw new Error(`grpc bootstrap: certsDir ${opts.certsDir} is not an absolute path`);
  if (opts.nodeId === '') throw new Error('grpc bootstrap: nodeId is empty');
  if (opts.namespace === '') throw new Error('grpc bootstrap: namespace is empty');
  // Pilot reads Istio's TYPE~IP~ID~DOMAIN as a proxy and would send listeners gRPC cannot use:
  // the host proxy's id becomes the proxyless id of the same node.
  const istio = /^(?:sidecar|router)~[^~]*~([^~]+)~[^~]*$/.exec(opts.nodeId);
  const nodeId = istio ? `proxyless~${istio[1]}` : opts.nodeId;
  return {
    xds_servers: [
      {
        // unix:///abs/path (grpc-js reads `unix:` URIs with an absolute path)
        server_uri: `unix://${opts.socketPath}`,
        channel_creds: [{ type: 'insecure' }],
        server_features: ['xds_v3'],
      },
    ],
    // grpc-js-xds requires `locality` (empty is fine: pilot does not use the client's locality).
    node: { id: nodeId, locality: {}, metadata: { NAMESPACE: opts.namespace } },
    server_listener_resource_name_template: GRPC_SERVER_LISTENER_TEMPLATE,
    certificate_providers: {
      [GRPC_CERT_PROVIDER_INSTANCE]: {
        plugin_name: 'file_watcher',
        config: {
          certificate_file: path.join(opts.certsDir, CERT_CHAIN_FILE),
          private_key_file: path.join(opts.certsDir, KEY_FILE),
          ca_certificate_file: path.join(opts.certsDir, ROOT_CERT_FILE),
          refresh_interval: opts.refreshInterval ?? DEFAULT_CERT_REFRESH_INTERVAL,
        },
      },
    },
  };
}
