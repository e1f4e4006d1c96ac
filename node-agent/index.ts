/** The node agent's public surface: the component, its options and config, its errors. */
export { NodeAgent, DEFAULT_SHUTDOWN_GRACE_MS } from './node-agent';
export type {
  NodeAgentOptions,
  NodeAgentSettings,
  ControlPlaneOptions,
  WorkloadOptions,
  WorkloadPort,
  HealthCheckOptions,
  CertsOptions,
  CaptureOptions,
  DnsOptions,
  ProxyOptions,
  ProxylessOptions,
  IdentityTuning,
} from './options';
export { lookupSystemUser } from './capture';
export {
  HostMesh,
  captureNameservers,
  resolvConfNameservers,
  sidecarNodeId,
  type HostMeshStatus,
} from './host-mesh';
export {
  DEFAULT_CONFIG_FILE,
  DEFAULT_TRUST_DOMAIN,
  controlPlaneSpiffeId,
  loadNodeAgentConfig,
  parseNodeAgentConfig,
  nodeAgentFileSchema,
  type NodeAgentConfig,
  type NodeAgentFileConfig,
} from './config';
export {
  AGENT_ERROR_CODES,
  type AgentErrorCode,
  AgentError,
  CertStoreError,
  RootCertError,
  NoCredentialsError,
  CaRequestError,
  CaResponseInvalidError,
  FingerprintMismatchError,
  StartAbortedError,
  JoinConfigExistsError,
} from './errors';
export type { WorkloadIdentity } from './identity/cert-store';
export type { CertificateChange, CertificateListener, Attestation } from './identity/rotator';
export type { ReadinessReport } from './status/status-server';
export {
  join,
  parseFingerprint,
  parseLabelsFlag,
  parsePortFlags,
  renderJoinConfig,
  type JoinOptions,
  type JoinResult,
} from './join';
