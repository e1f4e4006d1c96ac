// Original file: sail/pilot/v1/registration.proto

import type { WorkloadPort as _sail_pilot_v1_WorkloadPort, WorkloadPort__Output as _sail_pilot_v1_WorkloadPort__Output } from '../../../sail/pilot/v1/WorkloadPort';
import type { HostFacts as _sail_pilot_v1_HostFacts, HostFacts__Output as _sail_pilot_v1_HostFacts__Output } from '../../../sail/pilot/v1/HostFacts';
import type { HealthReport as _sail_pilot_v1_HealthReport, HealthReport__Output as _sail_pilot_v1_HealthReport__Output } from '../../../sail/pilot/v1/HealthReport';

/**
 * The workload a host runs.
 */
export interface WorkloadRegistration {
  /**
   * The node name: must equal the common name of the client certificate.
   */
  'node'?: (string);
  /**
   * The workload's namespace: must be the namespace of the certificate's SPIFFE ID.
   */
  'namespace'?: (string);
  /**
   * The workload's service account: must be the one of the certificate's SPIFFE ID. Empty: the
   * service account of the workload group's template.
   */
  'serviceAccount'?: (string);
  /**
   * The IP address (v4 or v6) other proxies reach this workload at.
   */
  'address'?: (string);
  /**
   * Labels of the workload (ServiceEntry workloadSelectors and DestinationRule subsets match
   * them). Keys and values follow Kubernetes label syntax.
   */
  'labels'?: ({[key: string]: string});
  /**
   * The ports the workload serves; the name's prefix carries the protocol (`http-`, `grpc-`, ...)
   * and is what ServiceEntry ports map to by name.
   */
  'ports'?: (_sail_pilot_v1_WorkloadPort)[];
  /**
   * Facts about the host, for `sail status` and debugging.
   */
  'host'?: (_sail_pilot_v1_HostFacts | null);
  /**
   * Optional WorkloadGroup `NAMESPACE/NAME` (in the workload's namespace) whose template fills in
   * what the host does not say: labels, ports, service account, locality, weight and network.
   * The host's own values win.
   */
  'group'?: (string);
  /**
   * The workload's health at registration. Absent: healthy (a host without health checks).
   */
  'health'?: (_sail_pilot_v1_HealthReport | null);
}

/**
 * The workload a host runs.
 */
export interface WorkloadRegistration__Output {
  /**
   * The node name: must equal the common name of the client certificate.
   */
  'node': (string);
  /**
   * The workload's namespace: must be the namespace of the certificate's SPIFFE ID.
   */
  'namespace': (string);
  /**
   * The workload's service account: must be the one of the certificate's SPIFFE ID. Empty: the
   * service account of the workload group's template.
   */
  'serviceAccount': (string);
  /**
   * The IP address (v4 or v6) other proxies reach this workload at.
   */
  'address': (string);
  /**
   * Labels of the workload (ServiceEntry workloadSelectors and DestinationRule subsets match
   * them). Keys and values follow Kubernetes label syntax.
   */
  'labels': ({[key: string]: string});
  /**
   * The ports the workload serves; the name's prefix carries the protocol (`http-`, `grpc-`, ...)
   * and is what ServiceEntry ports map to by name.
   */
  'ports': (_sail_pilot_v1_WorkloadPort__Output)[];
  /**
   * Facts about the host, for `sail status` and debugging.
   */
  'host': (_sail_pilot_v1_HostFacts__Output | null);
  /**
   * Optional WorkloadGroup `NAMESPACE/NAME` (in the workload's namespace) whose template fills in
   * what the host does not say: labels, ports, service account, locality, weight and network.
   * The host's own values win.
   */
  'group': (string);
  /**
   * The workload's health at registration. Absent: healthy (a host without health checks).
   */
  'health': (_sail_pilot_v1_HealthReport__Output | null);
}
