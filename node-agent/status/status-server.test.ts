import type { WorkloadIdentity } from '../identity/cert-store';
import { readiness } from './status-server';

const id = (notAfterMs: number): WorkloadIdentity => ({
  spiffeId: 'spiffe://cluster.local/ns/default/sa/reviews',
  certChainPem: '',
  privateKeyPem: '',
  rootsPem: '',
  notBefore: new Date(0),
  notAfter: new Date(notAfterMs),
  serialHex: '01',
});

describe('readiness', () => {
  it.each([
    {
      name: 'not ready without a certificate',
      identity: undefined,
      now: 0,
      want: { ready: false, spiffeId: null, notAfter: null, secondsLeft: 0 },
    },
    {
      name: 'ready with a valid certificate, counting whole seconds left',
      identity: id(100_500),
      now: 0,
      want: {
        ready: true,
        spiffeId: 'spiffe://cluster.local/ns/default/sa/reviews',
        notAfter: new Date(100_500).toISOString(),
        secondsLeft: 100,
      },
    },
    {
      name: 'still ready in the last second before expiry',
      identity: id(1_000),
      now: 500,
      want: {
        ready: true,
        spiffeId: 'spiffe://cluster.local/ns/default/sa/reviews',
        notAfter: new Date(1_000).toISOString(),
        secondsLeft: 0,
      },
    },
    {
      name: 'not ready once expired',
      identity: id(1_000),
      now: 2_000,
      want: {
        ready: false,
        spiffeId: 'spiffe://cluster.local/ns/default/sa/reviews',
        notAfter: new Date(1_000).toISOString(),
        secondsLeft: 0,
      },
    },
  ])('$name', ({ identity, now, want }) => {
    expect(readiness(identity, now)).toEqual(want);
  });
});
