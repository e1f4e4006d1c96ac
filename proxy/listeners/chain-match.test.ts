import type { FilterChain, Listener } from '../model';
import { type ConnectionFacts, parseIp, selectFilterChain } from './chain-match';
import { ISTIO_ALPN, chain, listener, MESH_DOWNSTREAM_TLS, httpHandler } from './testing';

const BASE: ConnectionFacts = {
  destinationAddress: '10.0.0.1',
  destinationPort: 9080,
  sourceAddress: '10.0.0.9',
  serverName: '',
  transportProtocol: 'raw_buffer',
  alpn: [],
};

interface SelectCase {
  name: string;
  chains: FilterChain[];
  defaultChain?: FilterChain;
  facts: Partial<ConnectionFacts>;
  /** The expected chain's name, or undefined for none. */
  want: string | undefined;
}

const cases: SelectCase[] = [
  {
    name: 'prefers the chain naming the destination port over one leaving it empty',
    chains: [chain('any'), chain('9080', { destinationPort: 9080 })],
    facts: {},
    want: '9080',
  },
  {
    name: 'falls back to the chains without a port when no chain names it',
    chains: [chain('8080', { destinationPort: 8080 }), chain('any')],
    facts: {},
    want: 'any',
  },
  {
    name: 'uses the default chain when no port matches and none is port-less',
    chains: [chain('8080', { destinationPort: 8080 })],
    defaultChain: chain('default'),
    facts: {},
    want: 'default',
  },
  {
    name: 'gives nothing when no chain matches and there is no default chain',
    chains: [chain('8080', { destinationPort: 8080 })],
    facts: {},
    want: undefined,
  },
  {
    name: 'picks the longest destination prefix',
    chains: [
      chain('empty'),
      chain('/8', { prefixRanges: [{ address: '10.0.0.0', prefixLen: 8 }] }),
      chain('/24', { prefixRanges: [{ address: '10.0.0.0', prefixLen: 24 }] }),
      chain('/32 other', { prefixRanges: [{ address: '10.0.0.2', prefixLen: 32 }] }),
    ],
    facts: {},
    want: '/24',
  },
  {
    name: 'falls back to chains without destination ranges when no range contains the address',
    chains: [
      chain('empty'),
      chain('/24', { prefixRanges: [{ address: '10.1.0.0', prefixLen: 24 }] }),
    ],
    facts: {},
    want: 'empty',
  },
  {
    name: 'applies IPv4 ranges to an IPv4-mapped IPv6 destination',
    chains: [
      chain('empty'),
      chain('/32', { prefixRanges: [{ address: '10.0.0.1', prefixLen: 32 }] }),
    ],
    facts: { destinationAddress: '::ffff:10.0.0.1' },
    want: '/32',
  },
  {
    name: 'matches IPv6 ranges',
    chains: [
      chain('empty'),
      chain('v6/64', { prefixRanges: [{ address: 'fd00:1::', prefixLen: 64 }] }),
      chain('v6/128', { prefixRanges: [{ address: 'fd00:1::5', prefixLen: 128 }] }),
    ],
    facts: { destinationAddress: 'fd00:1::7' },
    want: 'v6/64',
  },
  {
    name: 'prefers an exact server name over a wildcard and an empty list',
    chains: [
      chain('empty'),
      chain('wild', { serverNames: ['*.example.com'] }),
      chain('exact', { serverNames: ['api.example.com'] }),
    ],
    facts: { serverName: 'api.example.com', transportProtocol: 'tls' },
    want: 'exact',
  },
  {
    name: 'prefers the longest wildcard suffix, across several labels',
    chains: [
      chain('short', { serverNames: ['*.com'] }),
      chain('long', { serverNames: ['*.example.com'] }),
    ],
    facts: { serverName: 'a.b.example.com', transportProtocol: 'tls' },
    want: 'long',
  },
  {
    name: 'uses server-name-less chains when the name matches none',
    chains: [chain('empty'), chain('exact', { serverNames: ['api.example.com'] })],
    facts: { serverName: 'other.example.org', transportProtocol: 'tls' },
    want: 'empty',
  },
  {
    name: 'matches the transport protocol',
    chains: [
      chain('tls', { transportProtocol: 'tls' }),
      chain('raw', { transportProtocol: 'raw_buffer' }),
    ],
    facts: { transportProtocol: 'raw_buffer' },
    want: 'raw',
  },
  {
    name: 'takes the first client ALPN protocol that some chain names',
    chains: [
      chain('h2', { applicationProtocols: ['h2'] }),
      chain('http1', { applicationProtocols: ['http/1.1'] }),
      chain('none'),
    ],
    facts: { transportProtocol: 'tls', alpn: ['spdy', 'http/1.1', 'h2'] },
    want: 'http1',
  },
  {
    name: 'picks the longest source prefix',
    chains: [
      chain('src-empty'),
      chain('src/16', { sourcePrefixRanges: [{ address: '10.0.0.0', prefixLen: 16 }] }),
      chain('src/32', { sourcePrefixRanges: [{ address: '10.0.0.9', prefixLen: 32 }] }),
    ],
    facts: {},
    want: 'src/32',
  },
  {
    name: 'does not backtrack to a less specific port once a later criterion fails',
    chains: [chain('any'), chain('9080-tls', { destinationPort: 9080, transportProtocol: 'tls' })],
    defaultChain: chain('default'),
    facts: { transportProtocol: 'raw_buffer' },
    want: 'default',
  },
  {
    name: 'keeps the first of two chains with the same match',
    chains: [chain('first', { destinationPort: 9080 }), chain('second', { destinationPort: 9080 })],
    facts: {},
    want: 'first',
  },
  {
    name: 'PERMISSIVE: an Istio mTLS client gets the mTLS chain',
    chains: permissive(),
    facts: { transportProtocol: 'tls', alpn: ISTIO_ALPN },
    want: 'inbound|9080||-mtls',
  },
  {
    name: 'PERMISSIVE: a plaintext client gets the plaintext chain',
    chains: permissive(),
    facts: {},
    want: 'inbound|9080||',
  },
  {
    // As in Envoy: the `tls` transport narrowed the set to the mTLS chain, whose ALPN then fails.
    name: 'PERMISSIVE: TLS without Istio ALPN matches nothing (no backtracking to plaintext)',
    chains: permissive(),
    facts: { transportProtocol: 'tls', alpn: ['h2'] },
    want: undefined,
  },
  {
    name: 'STRICT: plaintext matches nothing',
    chains: permissive().slice(0, 1),
    facts: {},
    want: undefined,
  },
];

/** virtualInbound's chains for port 9080 as pilot sends them (testdata/sidecar-sample.json). */
function permissive(): FilterChain[] {
  return [
    chain(
      'inbound|9080||-mtls',
      { destinationPort: 9080, transportProtocol: 'tls', applicationProtocols: ISTIO_ALPN },
      httpHandler('inbound|9080||'),
      MESH_DOWNSTREAM_TLS,
    ),
    chain('inbound|9080||', { destinationPort: 9080 }, httpHandler('inbound|9080||')),
  ];
}

describe('selectFilterChain', () => {
  it.each(cases)('$name', ({ chains, defaultChain, facts, want }) => {
    const l: Listener = listener('l', { address: '0.0.0.0', port: 15006 }, chains, {
      ...(defaultChain ? { defaultFilterChain: defaultChain } : {}),
    });
    expect(selectFilterChain(l, { ...BASE, ...facts })?.name).toBe(want);
  });

  it('compiles a listener once and answers from the cache after', () => {
    const l = listener('l', { address: '0.0.0.0', port: 1 }, permissive());
    const a = selectFilterChain(l, BASE);
    expect(selectFilterChain(l, BASE)).toBe(a);
  });
});

describe('parseIp', () => {
  it.each([
    ['10.1.2.3', [0x0a010203]],
    ['255.255.255.255', [0xffffffff]],
    ['::ffff:10.1.2.3', [0x0a010203]],
    ['::1', [0, 0, 0, 1]],
    ['fd00:9::77', [0xfd000009, 0, 0, 0x77]],
    ['2001:db8::1.2.3.4', [0x20010db8, 0, 0, 0x01020304]],
    ['fe80::1%eth0', [0xfe800000, 0, 0, 1]],
  ])('parses %s', (text, words) => {
    expect(parseIp(text)).toEqual(words);
  });

  it.each(['', '1.2.3', '256.1.1.1', 'localhost', ':::'])('rejects %j', text => {
    expect(parseIp(text)).toBeUndefined();
  });
});
