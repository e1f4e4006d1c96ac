// Original file: sail/pilot/v1/registration.proto


/**
 * A clean goodbye.
 */
export interface Deregister {
  /**
   * Why the host leaves, for the log (e.g. `shutdown`). At most 1024 bytes.
   */
  'reason'?: (string);
}

/**
 * A clean goodbye.
 */
export interface Deregister__Output {
  /**
   * Why the host leaves, for the log (e.g. `shutdown`). At most 1024 bytes.
   */
  'reason': (string);
}
