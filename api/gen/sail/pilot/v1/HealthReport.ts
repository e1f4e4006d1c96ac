// Original file: sail/pilot/v1/registration.proto


/**
 * The workload's health, from the agent's probes.
 */
export interface HealthReport {
  'healthy'?: (boolean);
  /**
   * Why, for `sail status` (e.g. the failing probe's error). At most 1024 bytes.
   */
  'message'?: (string);
}

/**
 * The workload's health, from the agent's probes.
 */
export interface HealthReport__Output {
  'healthy': (boolean);
  /**
   * Why, for `sail status` (e.g. the failing probe's error). At most 1024 bytes.
   */
  'message': (string);
}
