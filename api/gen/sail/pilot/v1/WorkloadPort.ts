// Original file: sail/pilot/v1/registration.proto


/**
 * One port the workload listens on.
 */
export interface WorkloadPort {
  /**
   * Port name, lowercase letters, digits and `-`, e.g. `http`, `grpc-api`.
   */
  'name'?: (string);
  /**
   * Port number, 1-65535.
   */
  'port'?: (number);
}

/**
 * One port the workload listens on.
 */
export interface WorkloadPort__Output {
  /**
   * Port name, lowercase letters, digits and `-`, e.g. `http`, `grpc-api`.
   */
  'name': (string);
  /**
   * Port number, 1-65535.
   */
  'port': (number);
}
