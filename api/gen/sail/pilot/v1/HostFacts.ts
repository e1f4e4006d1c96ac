// Original file: sail/pilot/v1/registration.proto

import type { Long } from '@grpc/proto-loader';

/**
 * Facts about the host the workload runs on.
 */
export interface HostFacts {
  /**
   * Operating system, e.g. `Debian GNU/Linux 12 (bookworm)`.
   */
  'os'?: (string);
  /**
   * Kernel release, e.g. `6.1.0-18-amd64`.
   */
  'kernel'?: (string);
  /**
   * Logical CPUs.
   */
  'cpus'?: (number);
  /**
   * Physical memory in bytes.
   */
  'memoryBytes'?: (number | string | Long);
  /**
   * The host's own host name (may differ from the node name).
   */
  'hostname'?: (string);
}

/**
 * Facts about the host the workload runs on.
 */
export interface HostFacts__Output {
  /**
   * Operating system, e.g. `Debian GNU/Linux 12 (bookworm)`.
   */
  'os': (string);
  /**
   * Kernel release, e.g. `6.1.0-18-amd64`.
   */
  'kernel': (string);
  /**
   * Logical CPUs.
   */
  'cpus': (number);
  /**
   * Physical memory in bytes.
   */
  'memoryBytes': (string);
  /**
   * The host's own host name (may differ from the node name).
   */
  'hostname': (string);
}
