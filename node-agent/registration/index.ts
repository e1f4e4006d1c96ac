/**
 * Registration and health (issue 5): the host's registration stream to pilot, the health probes
 * of its application, host facts and the workload address.
 */
export {
  DEFAULT_DEREGISTER_TIMEOUT_MS,
  DEFAULT_REFUSED_RETRY_MS,
  DEFAULT_REGISTRATION_INITIAL_BACKOFF_MS,
  DEFAULT_REGISTRATION_MAX_BACKOFF_MS,
  RegistrationClient,
  type RegistrationClientOptions,
  type RegistrationIdentity,
  type RegistrationStatusInfo,
  type WorkloadSpec,
} from './registration-client';
export { HealthChecker, HealthThresholds, type WorkloadHealth } from './health-checker';
export { type HealthProbeSpec, type ProbeResult, runProbe } from './probes';
export { type HostFacts, hostFacts } from './host-facts';
export { resolveWorkloadAddress } from './workload-address';
