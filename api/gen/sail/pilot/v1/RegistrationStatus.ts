// Original file: sail/pilot/v1/registration.proto


/**
 * Pilot's answer to each report.
 */
export interface RegistrationStatus {
  /**
   * True when the report was applied. False when this stream no longer holds the registration
   * (a newer stream for the same node replaced it); pilot then ends the stream.
   */
  'accepted'?: (boolean);
  /**
   * The registered workload, `NAMESPACE/NODE`.
   */
  'workload'?: (string);
  /**
   * What happened, e.g. `registered`, `healthy`, `unhealthy: probe failed`, `deregistered`.
   */
  'message'?: (string);
}

/**
 * Pilot's answer to each report.
 */
export interface RegistrationStatus__Output {
  /**
   * True when the report was applied. False when this stream no longer holds the registration
   * (a newer stream for the same node replaced it); pilot then ends the stream.
   */
  'accepted': (boolean);
  /**
   * The registered workload, `NAMESPACE/NODE`.
   */
  'workload': (string);
  /**
   * What happened, e.g. `registered`, `healthy`, `unhealthy: probe failed`, `deregistered`.
   */
  'message': (string);
}
