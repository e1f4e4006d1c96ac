/**
 * Pure parts of the registration client. The client itself runs against a real pilot in
 * test/integration/agent-registration.test.ts.
 */
import { configKeysIn } from './registration-client';

describe('configKeysIn', () => {
  // Messages as pilot/registry/workloads.ts and registration-service.ts word them.
  it.each([
    {
      details: 'node "vm-wrong" is not the node the client certificate names ("vm-d")',
      keys: ['nodeName'],
    },
    {
      details:
        'namespace "prod" of node vm-1 is not the one its certificate proves (spiffe://cluster.local/ns/default/sa/app)',
      keys: ['workload.namespace'],
    },
    {
      details:
        'serviceAccount "web" of node vm-1 is not the one its certificate proves (spiffe://cluster.local/ns/default/sa/app)',
      keys: ['workload.serviceAccount'],
    },
    {
      details:
        'registration of node vm-1 is invalid: address: "10.0.0" is not an IP address; ports[1].port: 0 is not in 1-65535',
      keys: ['workload.address', 'workload.ports'],
    },
    {
      details: 'registration of node vm-1 is invalid: labels["a b"]: key "a b" is not a label name',
      keys: ['workload.labels'],
    },
    {
      details: 'group default/web of node vm-1: no such WorkloadGroup (create it first)',
      keys: ['workload.group'],
    },
    {
      details:
        'the client certificate of node vm-1 is for trust domain other.local, not cluster.local',
      keys: ['trustDomain'],
    },
    {
      details:
        'no client certificate: register with the workload certificate the CA issued to this node',
      keys: ['certs.dir'],
    },
  ])('$keys for "$details"', ({ details, keys }) => {
    expect(configKeysIn(details)).toEqual(keys);
  });
});
