/** The node agent's local xDS endpoint for proxyless gRPC applications, and their bootstrap. */
export {
  ADS_METHODS,
  ADS_SERVICE,
  type AdsMethod,
  DEFAULT_RELAY_SHUTDOWN_GRACE_MS,
  type RelayIdentity,
  XDS_RELAY_NO_IDENTITY,
  XdsRelay,
  type XdsRelayOptions,
} from './relay';
export {
  DEFAULT_CERT_REFRESH_INTERVAL,
  DEFAULT_GRPC_BOOTSTRAP_FILE,
  DEFAULT_XDS_SOCKET,
  GRPC_CERT_PROVIDER_INSTANCE,
  type GrpcBootstrap,
  type GrpcBootstrapOptions,
  grpcBootstrap,
  proxylessNodeId,
} from './bootstrap';
