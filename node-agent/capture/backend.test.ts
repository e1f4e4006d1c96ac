import { CaptureError } from './errors';
import { countRules, detectIptables } from './backend';
import type { CommandResult, CommandRunner } from './types';

const ok = (stdout = ''): CommandResult => ({ code: 0, stdout, stderr: '' });
const missing: CommandResult = { code: 127, stdout: '', stderr: 'spawn ENOENT' };

/** A host: what each program prints; anything not listed does not exist. */
function host(programs: Readonly<Partial<Record<string, CommandResult>>>): {
  run: CommandRunner;
  calls: string[];
} {
  const calls: string[] = [];
  const run: CommandRunner = (file, args) => {
    calls.push([file, ...args].join(' '));
    return Promise.resolve(programs[`${file} ${args.join(' ')}`.trim()] ?? missing);
  };
  return { run, calls };
}

const rules = (n: number) =>
  `*filter\n:INPUT ACCEPT [0:0]\n${'-A INPUT -j ACCEPT\n'.repeat(n)}COMMIT\n# Warning: legacy tables present\n`;
const both = (nft: string, legacy: string, extra: Record<string, CommandResult> = {}) => ({
  'iptables-nft --version': ok('iptables v1.8.9 (nf_tables)'),
  'iptables-legacy --version': ok('iptables v1.8.9 (legacy)'),
  'iptables-nft-save': ok(nft),
  'ip6tables-nft-save': ok(''),
  'iptables-legacy-save': ok(legacy),
  'ip6tables-legacy-save': ok(''),
  ...extra,
});

describe('detectIptables', () => {
  it.each([
    { name: 'both empty: nft', programs: both('', ''), backend: 'nft' },
    { name: 'rules only in legacy: legacy', programs: both('', rules(3)), backend: 'legacy' },
    { name: 'more rules in nft: nft', programs: both(rules(5), rules(2)), backend: 'nft' },
    { name: 'a tie: nft', programs: both(rules(2), rules(2)), backend: 'nft' },
    {
      name: 'ip6tables rules count too',
      programs: both('', rules(1), { 'ip6tables-legacy-save': ok(rules(2)) }),
      backend: 'legacy',
    },
    {
      name: "kubelet's hint chain in legacy wins over a count",
      programs: both(rules(9), '*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n'),
      backend: 'legacy',
    },
    {
      name: 'only iptables-nft installed',
      programs: { 'iptables-nft --version': ok('iptables v1.8.9 (nf_tables)') },
      backend: 'nft',
    },
    {
      name: 'only iptables-legacy installed',
      programs: { 'iptables-legacy --version': ok('iptables v1.8.9 (legacy)') },
      backend: 'legacy',
    },
  ])('$name', async ({ programs, backend }) => {
    const tools = await detectIptables(host(programs).run);
    expect(tools.backend).toBe(backend);
    expect(tools.ipv4.restore).toBe(`iptables-${backend}-restore`);
    expect(tools.ipv6.save).toBe(`ip6tables-${backend}-save`);
  });

  it.each([
    ['iptables v1.8.4 (nf_tables)', 'nft'],
    ['iptables v1.8.4 (legacy)', 'legacy'],
    ['iptables v1.4.21', 'legacy'],
  ])(
    'plain iptables only (RHEL style): %s → %s with unsuffixed programs',
    async (version, backend) => {
      const h = host({ 'iptables --version': ok(version) });
      const tools = await detectIptables(h.run);
      expect(tools.backend).toBe(backend);
      expect(tools.ipv4).toEqual({ save: 'iptables-save', restore: 'iptables-restore' });
      expect(tools.ipv6).toEqual({ save: 'ip6tables-save', restore: 'ip6tables-restore' });
    },
  );

  it('fails with AGENT_CAPTURE_NO_IPTABLES when nothing runs', async () => {
    const err = await detectIptables(host({}).run).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CaptureError);
    expect((err as CaptureError).code).toBe('AGENT_CAPTURE_NO_IPTABLES');
  });

  it('never asks legacy for one table (that would make the kernel create it)', async () => {
    const h = host(both('', ''));
    await detectIptables(h.run);
    expect(h.calls.filter(c => c.startsWith('iptables-legacy-save'))).toEqual([
      'iptables-legacy-save',
    ]);
  });

  it('counts only rule lines', () => {
    expect(countRules(rules(4))).toBe(4);
  });
});
