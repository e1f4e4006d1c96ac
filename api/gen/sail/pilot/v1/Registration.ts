// Original file: sail/pilot/v1/registration.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { RegistrationStatus as _sail_pilot_v1_RegistrationStatus, RegistrationStatus__Output as _sail_pilot_v1_RegistrationStatus__Output } from '../../../sail/pilot/v1/RegistrationStatus';
import type { WorkloadReport as _sail_pilot_v1_WorkloadReport, WorkloadReport__Output as _sail_pilot_v1_WorkloadReport__Output } from '../../../sail/pilot/v1/WorkloadReport';

/**
 * Registration keeps one stream per host. The stream is the host's liveness: while it is open the
 * workload stays registered; when it drops, pilot keeps the workload (with its last reported
 * health) for a grace period (30 s by default) so a pilot restart or a network blip does not pull
 * every endpoint of the host, then removes it. A clean `deregister` removes it at once.
 * 
 * The caller must present its Sail workload certificate as the TLS client certificate: the node
 * name is its subject common name and the namespace and service account come from its
 * spiffe://TRUST_DOMAIN/ns/NS/sa/SA URI SAN. A host may register only that node, namespace and
 * service account (PERMISSION_DENIED otherwise); the IP address it reports is never its identity.
 */
export interface RegistrationClient extends grpc.Client {
  /**
   * Opens the registration stream. The first report must be a `registration`; later reports are
   * `health` changes or a final `deregister`. Pilot answers every report with a status. A second
   * stream for the same node replaces the first, which pilot then ends.
   * 
   * Errors end the stream: UNAUTHENTICATED without a client certificate that names a node and a
   * SPIFFE ID, INVALID_ARGUMENT for a malformed report (the message names every field at fault),
   * PERMISSION_DENIED for a node, namespace or service account the certificate does not prove.
   */
  Connect(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<_sail_pilot_v1_WorkloadReport, _sail_pilot_v1_RegistrationStatus__Output>;
  Connect(options?: grpc.CallOptions): grpc.ClientDuplexStream<_sail_pilot_v1_WorkloadReport, _sail_pilot_v1_RegistrationStatus__Output>;
  /**
   * Opens the registration stream. The first report must be a `registration`; later reports are
   * `health` changes or a final `deregister`. Pilot answers every report with a status. A second
   * stream for the same node replaces the first, which pilot then ends.
   * 
   * Errors end the stream: UNAUTHENTICATED without a client certificate that names a node and a
   * SPIFFE ID, INVALID_ARGUMENT for a malformed report (the message names every field at fault),
   * PERMISSION_DENIED for a node, namespace or service account the certificate does not prove.
   */
  connect(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<_sail_pilot_v1_WorkloadReport, _sail_pilot_v1_RegistrationStatus__Output>;
  connect(options?: grpc.CallOptions): grpc.ClientDuplexStream<_sail_pilot_v1_WorkloadReport, _sail_pilot_v1_RegistrationStatus__Output>;
  
}

/**
 * Registration keeps one stream per host. The stream is the host's liveness: while it is open the
 * workload stays registered; when it drops, pilot keeps the workload (with its last reported
 * health) for a grace period (30 s by default) so a pilot restart or a network blip does not pull
 * every endpoint of the host, then removes it. A clean `deregister` removes it at once.
 * 
 * The caller must present its Sail workload certificate as the TLS client certificate: the node
 * name is its subject common name and the namespace and service account come from its
 * spiffe://TRUST_DOMAIN/ns/NS/sa/SA URI SAN. A host may register only that node, namespace and
 * service account (PERMISSION_DENIED otherwise); the IP address it reports is never its identity.
 */
export interface RegistrationHandlers extends grpc.UntypedServiceImplementation {
  /**
   * Opens the registration stream. The first report must be a `registration`; later reports are
   * `health` changes or a final `deregister`. Pilot answers every report with a status. A second
   * stream for the same node replaces the first, which pilot then ends.
   * 
   * Errors end the stream: UNAUTHENTICATED without a client certificate that names a node and a
   * SPIFFE ID, INVALID_ARGUMENT for a malformed report (the message names every field at fault),
   * PERMISSION_DENIED for a node, namespace or service account the certificate does not prove.
   */
  Connect: grpc.handleBidiStreamingCall<_sail_pilot_v1_WorkloadReport__Output, _sail_pilot_v1_RegistrationStatus>;
  
}

export interface RegistrationDefinition extends grpc.ServiceDefinition {
  Connect: MethodDefinition<_sail_pilot_v1_WorkloadReport, _sail_pilot_v1_RegistrationStatus, _sail_pilot_v1_WorkloadReport__Output, _sail_pilot_v1_RegistrationStatus__Output>
}
