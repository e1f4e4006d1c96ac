import { describeAcceptedKinds, KIND_INFO, lookupKind, resolveKind } from './kinds';
import { KINDS } from './types';

describe('lookupKind', () => {
  it.each([
    ['VirtualService', 'VirtualService'],
    ['virtualservice', 'VirtualService'],
    ['virtualservices', 'VirtualService'],
    ['vs', 'VirtualService'],
    ['VS', 'VirtualService'],
    ['virtualservices.networking.istio.io', 'VirtualService'],
    ['virtualservices.v1alpha3.networking.istio.io', 'VirtualService'],
    ['dr', 'DestinationRule'],
    ['destinationrules', 'DestinationRule'],
    ['se', 'ServiceEntry'],
    ['serviceentries', 'ServiceEntry'],
    ['gw', 'Gateway'],
    ['gateways', 'Gateway'],
    ['we', 'WorkloadEntry'],
    ['workloadentries', 'WorkloadEntry'],
    ['wg', 'WorkloadGroup'],
    ['sidecars', 'Sidecar'],
    [' Sidecar ', 'Sidecar'],
    ['pa', 'PeerAuthentication'],
    ['peerauthentications.security.istio.io', 'PeerAuthentication'],
    ['ap', 'AuthorizationPolicy'],
    ['authorizationpolicies', 'AuthorizationPolicy'],
  ])('%s is %s', (name, kind) => {
    expect(lookupKind(name)).toBe(kind);
  });

  it.each([
    'pods',
    'virtualservicess',
    'virtualservices.security.istio.io',
    'virtualservices.v2.networking.istio.io',
    'peerauthentications.v1alpha3.security.istio.io',
    '',
  ])('%s is not a kind', name => {
    expect(lookupKind(name)).toBeUndefined();
  });
});

describe('KIND_INFO', () => {
  it('describes every kind, all namespaced', () => {
    for (const kind of KINDS) {
      const info = KIND_INFO[kind];
      expect(info.kind).toBe(kind);
      expect(info.namespaced).toBe(true);
      expect(lookupKind(info.plural)).toBe(kind);
    }
    expect(KIND_INFO.VirtualService).toMatchObject({
      group: 'networking.istio.io',
      versions: ['v1alpha3', 'v1beta1', 'v1'],
      plural: 'virtualservices',
      shortNames: ['vs'],
    });
    expect(KIND_INFO.AuthorizationPolicy).toMatchObject({
      group: 'security.istio.io',
      versions: ['v1beta1', 'v1'],
    });
  });
});

describe('resolveKind', () => {
  it('accepts every served group/version', () => {
    expect(resolveKind('networking.istio.io/v1alpha3', 'VirtualService')).toEqual({
      kind: 'VirtualService',
    });
    expect(resolveKind('networking.istio.io/v1', 'Sidecar')).toEqual({ kind: 'Sidecar' });
    expect(resolveKind('security.istio.io/v1beta1', 'PeerAuthentication')).toEqual({
      kind: 'PeerAuthentication',
    });
  });

  it('names the versions a known kind is served at', () => {
    expect(resolveKind('networking.istio.io/v1alpha1', 'VirtualService').error).toBe(
      'VirtualService is not served at apiVersion "networking.istio.io/v1alpha1": want networking.istio.io/v1alpha3, networking.istio.io/v1beta1, networking.istio.io/v1',
    );
    expect(resolveKind('security.istio.io/v1alpha3', 'AuthorizationPolicy').error).toContain(
      'want security.istio.io/v1beta1, security.istio.io/v1',
    );
  });

  it('lists what is accepted for an unknown kind, with hints for replaced and mis-cased kinds', () => {
    const accepted = describeAcceptedKinds();
    expect(accepted).toBe(
      'networking.istio.io/{v1alpha3,v1beta1,v1} ServiceEntry, WorkloadEntry, WorkloadGroup, DestinationRule, VirtualService, Gateway, Sidecar; security.istio.io/{v1beta1,v1} PeerAuthentication, AuthorizationPolicy',
    );
    expect(resolveKind('v1', 'Service').error).toBe(
      `unknown kind "Service" in apiVersion "v1"; Sail accepts ${accepted}`,
    );
    expect(resolveKind('authentication.istio.io/v1alpha1', 'Policy').error).toContain(
      '(Istio replaced it with PeerAuthentication (security.istio.io/v1beta1))',
    );
    expect(resolveKind('networking.istio.io/v1', 'virtualservice').error).toContain(
      '(kinds are case-sensitive: did you mean VirtualService?)',
    );
  });
});
