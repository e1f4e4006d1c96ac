/**
 * Which iptables backend to program, detected the way kubernetes-sigs/iptables-wrappers does
 * (pkg/xtables/detect.go and the older iptables-wrapper-installer.sh): use whichever of nft and
 * legacy already holds rules, so Sail never splits a host's rules across two backends (the
 * failure Kuma users hit on Ubuntu 22.04, peers.md §5.1). Hosts with only a plain `iptables`
 * (RHEL 8 style, no -nft/-legacy names) are handled by reading `iptables --version`.
 */
import { execFile } from 'node:child_process';
import { CaptureError } from './errors';
import type { CaptureFamily, CommandResult, CommandRunner, IptablesBackend } from './types';

/** Bound on one iptables command: a hung iptables-restore (istio/istio#29249) must not hang the agent. */
export const COMMAND_TIMEOUT_MS = 30_000;

/** The programs of one backend for one family. */
export interface FamilyCommands {
  readonly save: string;
  readonly restore: string;
}

/** A detected backend and the programs to run for it. */
export interface IptablesTools {
  readonly backend: IptablesBackend;
  readonly ipv4: FamilyCommands;
  readonly ipv6: FamilyCommands;
  /** Why this backend was chosen, for the log. */
  readonly reason: string;
}

/**
 * The default runner: execFile (no shell), stdin from `input`, bounded by COMMAND_TIMEOUT_MS.
 * Never rejects: a missing program is code 127, a timeout or signal code 1.
 */
export const execRunner: CommandRunner = (file, args, input) =>
  new Promise<CommandResult>(resolve => {
    const child = execFile(
      file,
      [...args],
      { encoding: 'utf8', timeout: COMMAND_TIMEOUT_MS, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (!err) {
          resolve({ code: 0, stdout, stderr });
          return;
        }
        const e = err as NodeJS.ErrnoException & { code?: unknown };
        const code = e.code === 'ENOENT' ? 127 : typeof e.code === 'number' ? e.code : 1;
        resolve({ code, stdout, stderr: stderr || e.message });
      },
    );
    // EPIPE when the program exits without reading its input is reported through the exit code.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(input ?? '');
  });

const KUBELET_CHAINS = /^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY)\b/m;

/** Rules (`-A` lines) in iptables-save output. */
export function countRules(saveOutput: string): number {
  return saveOutput.split('\n').filter(l => l.startsWith('-')).length;
}

function toolsFor(backend: IptablesBackend, suffixed: boolean, reason: string): IptablesTools {
  const s = suffixed ? `-${backend}` : '';
  return {
    backend,
    ipv4: { save: `iptables${s}-save`, restore: `iptables${s}-restore` },
    ipv6: { save: `ip6tables${s}-save`, restore: `ip6tables${s}-restore` },
    reason,
  };
}

/**
 * Detects the backend:
 * 1. only one of `iptables-nft`/`iptables-legacy` works → that one;
 * 2. both: kubelet's hint chains decide when present; otherwise the backend with more rules
 *    (iptables + ip6tables) wins, and nft on a tie (both empty included);
 * 3. neither: plain `iptables --version` says `(nf_tables)` → nft, otherwise (`(legacy)`, or a
 *    version before 1.8 that has no suffix at all) → legacy.
 * @throws CaptureError AGENT_CAPTURE_NO_IPTABLES when no iptables program runs at all
 */
export async function detectIptables(run: CommandRunner): Promise<IptablesTools> {
  const [nft, legacy] = await Promise.all([
    run('iptables-nft', ['--version']),
    run('iptables-legacy', ['--version']),
  ]);
  if (nft.code === 0 && legacy.code !== 0) return toolsFor('nft', true, 'only iptables-nft runs');
  if (legacy.code === 0 && nft.code !== 0) {
    return toolsFor('legacy', true, 'only iptables-legacy runs');
  }
  if (nft.code !== 0 && legacy.code !== 0) {
    const plain = await run('iptables', ['--version']);
    if (plain.code !== 0) {
      throw new CaptureError(
        'AGENT_CAPTURE_NO_IPTABLES',
        `no iptables found (iptables-nft, iptables-legacy and iptables all failed: ${plain.stderr.trim()}); install the iptables package`,
      );
    }
    const backend: IptablesBackend = plain.stdout.includes('(nf_tables)') ? 'nft' : 'legacy';
    return toolsFor(backend, false, `iptables --version: ${plain.stdout.trim()}`);
  }
  const saves = await Promise.all([
    run('iptables-nft-save', []),
    run('ip6tables-nft-save', []),
    run('iptables-legacy-save', []),
    run('ip6tables-legacy-save', []),
  ]);
  const text = (r: CommandResult) => (r.code === 0 ? r.stdout : '');
  const nftText = text(saves[0]) + text(saves[1]);
  const legacyText = text(saves[2]) + text(saves[3]);
  if (KUBELET_CHAINS.test(nftText)) return toolsFor('nft', true, 'kubelet hint chains in nft');
  if (KUBELET_CHAINS.test(legacyText)) {
    return toolsFor('legacy', true, 'kubelet hint chains in legacy');
  }
  const nftRules = countRules(nftText);
  const legacyRules = countRules(legacyText);
  const reason = `rules: nft ${nftRules}, legacy ${legacyRules}`;
  return legacyRules > nftRules ? toolsFor('legacy', true, reason) : toolsFor('nft', true, reason);
}

/** The backend Sail would program on this host (see {@link detectIptables}). */
export async function detectBackend(run: CommandRunner = execRunner): Promise<IptablesBackend> {
  return (await detectIptables(run)).backend;
}

/** The programs of `tools` for `family`. */
export function commandsFor(tools: IptablesTools, family: CaptureFamily): FamilyCommands {
  return family === 'ipv4' ? tools.ipv4 : tools.ipv6;
}
