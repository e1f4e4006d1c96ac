import * as fs from 'node:fs';
import * as path from 'node:path';
import { InvalidInputError } from '../../common/errors';
import {
  buildCaptureRules,
  buildRestorePayload,
  diffInstalled,
  inboundExcludedPorts,
  parseCidr,
  parseInstalled,
  renderRules,
  validateCaptureSpec,
} from './rules';
import { testSpec } from './testing';
import type { CaptureSpec } from './types';

const BASE: CaptureSpec = testSpec(1337, 1338);

/** Golden files: testdata/<name>.golden; UPDATE_GOLDEN=1 rewrites them. */
function golden(name: string, actual: string): void {
  const file = path.join(__dirname, 'testdata', `${name}.golden`);
  if (process.env.UPDATE_GOLDEN === '1') {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, actual);
  }
  expect(actual).toBe(fs.readFileSync(file, 'utf8'));
}

/** The rule lines (without the comment) of one chain, for compact assertions. */
function chain(spec: CaptureSpec, family: 'ipv4' | 'ipv6', table: string, name: string): string[] {
  const t = buildCaptureRules(spec, family).tables.find(x => x.table === table);
  return (t?.rules ?? [])
    .filter(r => r.startsWith(`-A ${name} `))
    .map(r =>
      r
        .slice(`-A ${name} `.length)
        .replace(/(^| )-m comment --comment sail/, '')
        .trim(),
    );
}

describe('buildCaptureRules golden payloads', () => {
  it.each([
    { name: 'redirect-default', spec: BASE },
    {
      name: 'redirect-lists-dns',
      spec: {
        ...BASE,
        includeOutboundCidrs: '10.0.0.0/8,fd00::/8',
        excludeOutboundCidrs: '10.96.0.10,fd00:1::/64',
        includeInboundPorts: '9080,22,15006,9443',
        excludeInboundPorts: '22,9443',
        excludeOutboundPorts: '5432',
        dns: { port: 15053, nameservers: ['10.0.0.2', 'fd00::53'] },
      } satisfies CaptureSpec,
    },
    { name: 'tproxy', spec: { ...BASE, mode: 'tproxy' } satisfies CaptureSpec },
  ])('$name', ({ name, spec }) => {
    const text = ['ipv4', 'ipv6']
      .map(f => `# ${f}\n${renderRules(buildCaptureRules(spec, f as 'ipv4' | 'ipv6'))}`)
      .join('');
    golden(name, text);
  });
});

describe('buildCaptureRules semantics', () => {
  it.each([
    {
      name: '"*" captures all outbound after the exclusions',
      spec: { ...BASE, excludeOutboundCidrs: '10.1.0.0/16' },
      last: ['-d 10.1.0.0/16 -j RETURN', '-p tcp -j SAIL_REDIRECT'],
    },
    {
      name: 'an empty include captures no outbound (Istio 1.0: empty means off)',
      spec: { ...BASE, includeOutboundCidrs: '' },
      last: ['-o lo -j RETURN', '-d 127.0.0.1/32 -j RETURN'],
    },
    {
      name: 'a list captures only its CIDRs, excludes first',
      spec: { ...BASE, includeOutboundCidrs: '10.0.0.0/8', excludeOutboundCidrs: '10.0.0.1' },
      last: ['-d 10.0.0.1/32 -j RETURN', '-d 10.0.0.0/8 -p tcp -j SAIL_REDIRECT'],
    },
  ])('$name', ({ spec, last }) => {
    const rules = chain(spec, 'ipv4', 'nat', 'SAIL_OUTPUT');
    expect(rules.slice(-last.length)).toEqual(last);
  });

  it("leaves connections older than the rules alone, sends the proxy's calls to this host's own address inbound, then excludes the proxy uid and gid, DNS right after", () => {
    const spec = { ...BASE, dns: { port: 15053, nameservers: ['127.0.0.53'] } };
    expect(chain(spec, 'ipv4', 'nat', 'SAIL_OUTPUT').slice(0, 6)).toEqual([
      '-p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -j RETURN',
      '! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1337 -j SAIL_INBOUND',
      '-m owner --uid-owner 1337 -j RETURN',
      '-m owner --gid-owner 1338 -j RETURN',
      '-d 127.0.0.53/32 -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053',
      '-d 127.0.0.53/32 -p tcp -m tcp --dport 53 -j REDIRECT --to-ports 15053',
    ]);
  });

  it('never captures SSH or Sail ports inbound, even when listed', () => {
    const spec = { ...BASE, includeInboundPorts: '22,15020,9080', excludeInboundPorts: '' };
    const rules = chain(spec, 'ipv4', 'nat', 'SAIL_INBOUND');
    expect(rules.filter(r => r.endsWith('SAIL_IN_REDIRECT'))).toEqual([
      '-p tcp -m tcp --dport 9080 -j SAIL_IN_REDIRECT',
    ]);
    expect(rules[0]).toBe('-p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -j RETURN');
    expect(rules[1]).toBe('-p tcp -m tcp --dport 22 -j RETURN');
    expect(inboundExcludedPorts(spec)).toEqual([
      22, 15000, 15001, 15006, 15010, 15012, 15014, 15020, 15053, 15090,
    ]);
  });

  it('installs no inbound chain or jump when includeInboundPorts is empty', () => {
    const r = buildCaptureRules({ ...BASE, includeInboundPorts: '' }, 'ipv4');
    const nat = r.tables[0]!;
    expect(nat.chains).not.toContain('SAIL_INBOUND');
    expect(nat.jumps.map(j => j.chain)).toEqual(['OUTPUT']);
    expect(r.tables).toHaveLength(1);
  });

  it('puts IPv6 nameservers and CIDRs only in the ip6tables rules', () => {
    const spec = {
      ...BASE,
      excludeOutboundCidrs: '10.0.0.0/8,FD00:0:0::/8',
      dns: { port: 15053, nameservers: ['10.0.0.2', 'fd00::53'] },
    };
    const v4 = chain(spec, 'ipv4', 'nat', 'SAIL_OUTPUT').join('\n');
    const v6 = chain(spec, 'ipv6', 'nat', 'SAIL_OUTPUT').join('\n');
    expect(v4).toContain('-d 10.0.0.2/32');
    expect(v4).not.toContain('fd00');
    expect(v6).toContain('-d fd00::53/128');
    expect(v6).toContain('-d fd00::/8 -j RETURN');
    expect(v6).toContain('-d ::1/128 -j RETURN');
    expect(v6).not.toContain('10.0.0');
  });

  it('adds the udp/53 jump only when there are nameservers of the family', () => {
    const spec = { ...BASE, dns: { port: 15053, nameservers: ['10.0.0.2'] } };
    expect(buildCaptureRules(spec, 'ipv4').tables[0]!.jumps).toHaveLength(3);
    expect(buildCaptureRules(spec, 'ipv6').tables[0]!.jumps).toHaveLength(2);
  });

  it('every rule carries the sail comment', () => {
    for (const mode of ['redirect', 'tproxy'] as const) {
      for (const t of buildCaptureRules({ ...BASE, mode }, 'ipv4').tables) {
        for (const line of [...t.rules, ...t.jumps.map(j => j.spec)]) {
          expect(line).toContain('-m comment --comment sail');
        }
      }
    }
  });
});

describe('validateCaptureSpec', () => {
  it.each([
    {
      name: 'a bad CIDR',
      spec: { ...BASE, includeOutboundCidrs: '10.0.0.0/33' },
      field: 'capture.includeOutboundCidrs',
    },
    {
      name: '"*" in an exclude list',
      spec: { ...BASE, excludeOutboundCidrs: '*' },
      field: 'capture.excludeOutboundCidrs',
    },
    {
      name: 'port 0',
      spec: { ...BASE, includeInboundPorts: '0' },
      field: 'capture.includeInboundPorts',
    },
    {
      name: 'a port name',
      spec: { ...BASE, excludeInboundPorts: 'ssh' },
      field: 'capture.excludeInboundPorts',
    },
    {
      name: 'a bad outbound port',
      spec: { ...BASE, excludeOutboundPorts: '70000' },
      field: 'capture.excludeOutboundPorts',
    },
    { name: 'a negative uid', spec: { ...BASE, proxyUid: -1 }, field: 'proxyUid' },
    {
      name: 'a bad nameserver',
      spec: { ...BASE, dns: { port: 15053, nameservers: ['dns.local'] } },
      field: 'dns.nameservers',
    },
    { name: 'a bad mode', spec: { ...BASE, mode: 'none' as 'redirect' }, field: 'capture.mode' },
  ])('rejects $name naming $field', ({ spec, field }) => {
    expect(() => validateCaptureSpec(spec)).toThrow(InvalidInputError);
    expect(() => validateCaptureSpec(spec)).toThrow(new RegExp(`^${field.replace('.', '\\.')}: `));
  });

  it.each([
    ['10.1.2.3/8', '10.0.0.0/8'],
    ['10.1.2.3', '10.1.2.3/32'],
    ['0.0.0.0/0', '0.0.0.0/0'],
    ['FD00:0:0::1/8', 'fd00::/8'],
    ['fd00::1', 'fd00::1/128'],
    ['::ffff:10.0.0.1/128', '::ffff:a00:1/128'],
  ])('writes %s as iptables-save does: %s', (input, want) => {
    expect(parseCidr('x', input).text).toBe(want);
  });
});

const SAVE_WITH_SAIL = `# Generated by iptables-save v1.8.9 (nf_tables)
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [10:600]
:DOCKER - [0:0]
:SAIL_OUTPUT - [0:0]
:SAIL_REDIRECT - [0:0]
:SAIL_OLD - [0:0]
-A PREROUTING -p tcp -m comment --comment sail -j SAIL_INBOUND
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -p tcp -m comment --comment sail -j SAIL_OUTPUT
-A OUTPUT -d 1.2.3.4/32 -j DOCKER
-A SAIL_OUTPUT -m comment --comment sail -j SAIL_REDIRECT
-A SAIL_REDIRECT -p tcp -m comment --comment sail -j REDIRECT --to-ports 15001
COMMIT
*filter
:INPUT ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
`;

describe('parseInstalled and buildRestorePayload', () => {
  it('finds Sail chains, rules and jumps, and nothing of others', () => {
    const [nat, ...rest] = parseInstalled(SAVE_WITH_SAIL);
    expect(rest).toEqual([]);
    expect(nat!.table).toBe('nat');
    expect(nat!.chains).toEqual(['SAIL_OUTPUT', 'SAIL_REDIRECT', 'SAIL_OLD']);
    expect(nat!.jumps.map(j => j.chain)).toEqual(['PREROUTING', 'OUTPUT']);
    expect(nat!.rules).toHaveLength(2);
  });

  it('removal deletes the jumps, then flushes and deletes every Sail chain', () => {
    expect(buildRestorePayload(parseInstalled(SAVE_WITH_SAIL), undefined)).toBe(
      [
        '*nat',
        '-D PREROUTING -p tcp -m comment --comment sail -j SAIL_INBOUND',
        '-D OUTPUT -p tcp -m comment --comment sail -j SAIL_OUTPUT',
        '-F SAIL_OUTPUT',
        '-F SAIL_REDIRECT',
        '-F SAIL_OLD',
        '-X SAIL_OUTPUT',
        '-X SAIL_REDIRECT',
        '-X SAIL_OLD',
        'COMMIT',
        '',
      ].join('\n'),
    );
  });

  it('install over leftovers declares only new chains, reuses existing ones, drops stale ones', () => {
    const payload = buildRestorePayload(
      parseInstalled(SAVE_WITH_SAIL),
      buildCaptureRules({ ...BASE, includeInboundPorts: '' }, 'ipv4'),
    );
    const lines = payload.split('\n');
    expect(lines).toContain(':SAIL_IN_REDIRECT - [0:0]');
    expect(lines).not.toContain(':SAIL_OUTPUT - [0:0]');
    expect(lines).toContain('-X SAIL_OLD');
    expect(lines).not.toContain('-X SAIL_OUTPUT');
    expect(lines.indexOf('-F SAIL_OUTPUT')).toBeLessThan(
      lines.indexOf('-I OUTPUT 1 -p tcp -m comment --comment sail -j SAIL_OUTPUT'),
    );
  });

  it('is empty when there is nothing of Sail to remove (no table gets created)', () => {
    expect(
      buildRestorePayload(parseInstalled('*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n'), undefined),
    ).toBe('');
  });
});

/** What iptables-save prints after the install payload of `spec`, with other rules around. */
function savedAfterInstall(spec: CaptureSpec): string {
  const r = buildCaptureRules(spec, 'ipv4');
  return r.tables
    .map(t =>
      [
        `*${t.table}`,
        ':PREROUTING ACCEPT [0:0]',
        ':OUTPUT ACCEPT [0:0]',
        ...t.chains.map(c => `:${c} - [0:0]`),
        ...t.jumps.map(j => `-A ${j.chain} ${j.spec}`),
        '-A OUTPUT -j DOCKER',
        ...t.rules,
        'COMMIT',
      ].join('\n'),
    )
    .join('\n');
}

describe('diffInstalled', () => {
  const rules = buildCaptureRules(BASE, 'ipv4');

  it('finds no difference right after install', () => {
    expect(diffInstalled('ipv4', parseInstalled(savedAfterInstall(BASE)), rules)).toEqual([]);
  });

  it('reports a rule of a different spec, by chain', () => {
    const other = savedAfterInstall({ ...BASE, proxyGid: 99 });
    expect(diffInstalled('ipv4', parseInstalled(other), rules)).toEqual([
      'ipv4 nat SAIL_OUTPUT: missing rule: -A SAIL_OUTPUT -m comment --comment sail -m owner --gid-owner 1338 -j RETURN',
      'ipv4 nat SAIL_OUTPUT: unexpected rule: -A SAIL_OUTPUT -m comment --comment sail -m owner --gid-owner 99 -j RETURN',
    ]);
  });

  it('reports a missing chain and its jump', () => {
    const save = savedAfterInstall(BASE)
      .split('\n')
      .filter(l => !l.includes('SAIL_INBOUND'))
      .join('\n');
    const diff = diffInstalled('ipv4', parseInstalled(save), rules);
    expect(diff).toContain('ipv4 nat: chain SAIL_INBOUND is missing');
    expect(diff.some(d => d.startsWith('ipv4 nat: missing jump: -A PREROUTING'))).toBe(true);
  });

  it('reports a jump that is no longer first in its chain', () => {
    const save = savedAfterInstall(BASE).replace(
      '-A PREROUTING -p tcp',
      '-A PREROUTING -j DOCKER\n-A PREROUTING -p tcp',
    );
    expect(diffInstalled('ipv4', parseInstalled(save), rules)).toEqual([
      "ipv4 nat: Sail's jumps are not the first rules of PREROUTING (another rule was inserted before them)",
    ]);
  });

  it('reports reordered rules', () => {
    const save = savedAfterInstall(BASE);
    const lines = save.split('\n');
    const i = lines.findIndex(l => l.includes('--uid-owner'));
    [lines[i], lines[i + 1]] = [lines[i + 1]!, lines[i]!];
    expect(diffInstalled('ipv4', parseInstalled(lines.join('\n')), rules)).toEqual([
      'ipv4 nat SAIL_OUTPUT: rules are in a different order (or duplicated)',
    ]);
  });

  it('reports leftovers of the other mode', () => {
    const tproxy = savedAfterInstall({ ...BASE, mode: 'tproxy' });
    const diff = diffInstalled('ipv4', parseInstalled(tproxy), rules);
    expect(diff).toContain('ipv4 mangle: unexpected chain SAIL_TPROXY');
  });
});
