/** The service registry: the service model, its sources, and host registration. */
export * from './types';
export { AggregateRegistry, MeshRegistry, type MeshRegistryOptions } from './registry';
export { compareInstances, deriveServiceEntry, protocolOf, selects } from './service-entries';
export {
  DEFAULT_DISCONNECT_GRACE_MS,
  TLS_MODE_LABEL,
  WorkloadRegistry,
  WorkloadSession,
  validateRegistration,
  type AuthenticatedPeer,
  type HealthState,
  type HostFacts,
  type RegisteredWorkload,
  type WorkloadEvent,
  type WorkloadEventType,
  type WorkloadPortSpec,
  type WorkloadRegistration,
  type WorkloadRegistryOptions,
} from './workloads';
export {
  RegistrationMetrics,
  certificatePeer,
  createRegistrationHandlers,
  registrationFromProto,
  type PeerResolver,
  type RegistrationCall,
  type RegistrationServiceDeps,
} from './registration-service';
