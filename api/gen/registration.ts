import type * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';

import type { Deregister as _sail_pilot_v1_Deregister, Deregister__Output as _sail_pilot_v1_Deregister__Output } from './sail/pilot/v1/Deregister';
import type { HealthReport as _sail_pilot_v1_HealthReport, HealthReport__Output as _sail_pilot_v1_HealthReport__Output } from './sail/pilot/v1/HealthReport';
import type { HostFacts as _sail_pilot_v1_HostFacts, HostFacts__Output as _sail_pilot_v1_HostFacts__Output } from './sail/pilot/v1/HostFacts';
import type { RegistrationClient as _sail_pilot_v1_RegistrationClient, RegistrationDefinition as _sail_pilot_v1_RegistrationDefinition } from './sail/pilot/v1/Registration';
import type { RegistrationStatus as _sail_pilot_v1_RegistrationStatus, RegistrationStatus__Output as _sail_pilot_v1_RegistrationStatus__Output } from './sail/pilot/v1/RegistrationStatus';
import type { WorkloadPort as _sail_pilot_v1_WorkloadPort, WorkloadPort__Output as _sail_pilot_v1_WorkloadPort__Output } from './sail/pilot/v1/WorkloadPort';
import type { WorkloadRegistration as _sail_pilot_v1_WorkloadRegistration, WorkloadRegistration__Output as _sail_pilot_v1_WorkloadRegistration__Output } from './sail/pilot/v1/WorkloadRegistration';
import type { WorkloadReport as _sail_pilot_v1_WorkloadReport, WorkloadReport__Output as _sail_pilot_v1_WorkloadReport__Output } from './sail/pilot/v1/WorkloadReport';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  sail: {
    pilot: {
      v1: {
        Deregister: MessageTypeDefinition<_sail_pilot_v1_Deregister, _sail_pilot_v1_Deregister__Output>
        HealthReport: MessageTypeDefinition<_sail_pilot_v1_HealthReport, _sail_pilot_v1_HealthReport__Output>
        HostFacts: MessageTypeDefinition<_sail_pilot_v1_HostFacts, _sail_pilot_v1_HostFacts__Output>
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
        Registration: SubtypeConstructor<typeof grpc.Client, _sail_pilot_v1_RegistrationClient> & { service: _sail_pilot_v1_RegistrationDefinition }
        RegistrationStatus: MessageTypeDefinition<_sail_pilot_v1_RegistrationStatus, _sail_pilot_v1_RegistrationStatus__Output>
        WorkloadPort: MessageTypeDefinition<_sail_pilot_v1_WorkloadPort, _sail_pilot_v1_WorkloadPort__Output>
        WorkloadRegistration: MessageTypeDefinition<_sail_pilot_v1_WorkloadRegistration, _sail_pilot_v1_WorkloadRegistration__Output>
        WorkloadReport: MessageTypeDefinition<_sail_pilot_v1_WorkloadReport, _sail_pilot_v1_WorkloadReport__Output>
      }
    }
  }
}

