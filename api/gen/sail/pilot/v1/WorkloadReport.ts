// Original file: sail/pilot/v1/registration.proto

import type { WorkloadRegistration as _sail_pilot_v1_WorkloadRegistration, WorkloadRegistration__Output as _sail_pilot_v1_WorkloadRegistration__Output } from '../../../sail/pilot/v1/WorkloadRegistration';
import type { HealthReport as _sail_pilot_v1_HealthReport, HealthReport__Output as _sail_pilot_v1_HealthReport__Output } from '../../../sail/pilot/v1/HealthReport';
import type { Deregister as _sail_pilot_v1_Deregister, Deregister__Output as _sail_pilot_v1_Deregister__Output } from '../../../sail/pilot/v1/Deregister';

/**
 * One message from the host.
 */
export interface WorkloadReport {
  /**
   * Registers (or, sent again, re-registers) the host's workload. Must be the first report.
   */
  'registration'?: (_sail_pilot_v1_WorkloadRegistration | null);
  /**
   * The workload's health changed. Takes effect at once: an unhealthy workload leaves every
   * other proxy's endpoints.
   */
  'health'?: (_sail_pilot_v1_HealthReport | null);
  /**
   * The host is leaving: remove the workload now, without a grace period. Pilot then ends the
   * stream.
   */
  'deregister'?: (_sail_pilot_v1_Deregister | null);
  'report'?: "registration"|"health"|"deregister";
}

/**
 * One message from the host.
 */
export interface WorkloadReport__Output {
  /**
   * Registers (or, sent again, re-registers) the host's workload. Must be the first report.
   */
  'registration'?: (_sail_pilot_v1_WorkloadRegistration__Output | null);
  /**
   * The workload's health changed. Takes effect at once: an unhealthy workload leaves every
   * other proxy's endpoints.
   */
  'health'?: (_sail_pilot_v1_HealthReport__Output | null);
  /**
   * The host is leaving: remove the workload now, without a grace period. Pilot then ends the
   * stream.
   */
  'deregister'?: (_sail_pilot_v1_Deregister__Output | null);
  'report'?: "registration"|"health"|"deregister";
}
