/**
 * The capture subsystem: installs, verifies and removes Sail's iptables rules (rules.ts) with the
 * detected backend (backend.ts). Each install or removal is ONE `iptables-restore --noflush`
 * transaction per family that first deletes whatever Sail left behind (a crash, an older version)
 * and then adds the current rules, so the host is never half-captured and a restart after a crash
 * needs no manual cleanup (istio/istio#52961).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { getErrorMessage } from '../../common/errors';
import { writeFileAtomic } from '../../common/fs';
import type { Lifecycle } from '../../common/lifecycle';
import type { Logger } from '../../common/logging';
import { prom } from '../../common/metrics';
import { commandsFor, detectIptables, execRunner, type IptablesTools } from './backend';
import { CaptureError } from './errors';
import {
  buildCaptureRules,
  buildRestorePayload,
  diffInstalled,
  parseInstalled,
  renderRules,
  TPROXY_MARK,
  TPROXY_ROUTE_TABLE,
  validateCaptureSpec,
  type FamilyRules,
} from './rules';
import type {
  CaptureFamily,
  CaptureSpec,
  CaptureStatus,
  CommandResult,
  CommandRunner,
  IptablesBackend,
} from './types';

/** The file in stateDir that records what was installed, so removal finds it after a restart. */
export const CAPTURE_STATE_FILE = 'capture-state.json';

/** Options of {@link Capture}. */
export interface TrafficCaptureOptions {
  readonly spec: CaptureSpec;
  /** The subsystem makes a child of it. */
  readonly logger: Logger;
  /** Where `sail_agent_capture_*` metrics are registered; absent: not registered. */
  readonly registry?: prom.Registry;
  /** Where capture-state.json is kept (the agent's state directory); absent: not kept. */
  readonly stateDir?: string;
  /** Runs every iptables/ip command; a namespace-entering runner in e2e tests. Default execRunner. */
  readonly runner?: CommandRunner;
}

/** What capture-state.json holds. */
interface CaptureState {
  readonly backend: IptablesBackend;
  readonly families: readonly CaptureFamily[];
  readonly tproxy: boolean;
}

const FAMILY_FLAG: Record<CaptureFamily, string> = { ipv4: 'inet', ipv6: 'inet6' };

/** Recognisable failures, with what to do about them (peers.md §5.1). */
function hintFor(stderr: string): string {
  if (/Couldn't load match .?owner|Permission denied|you must be root/i.test(stderr)) {
    return ' (run as root with CAP_NET_ADMIN; the owner match needs the xt_owner kernel module)';
  }
  if (/can't initialize iptables table|Table does not exist/i.test(stderr)) {
    return ' (the kernel lacks this table for the backend: check `lsmod | grep -e nf_tables -e ip_tables` and try the other backend)';
  }
  if (/xtables lock/i.test(stderr)) return ' (another program holds the xtables lock; retry)';
  return '';
}

/**
 * Traffic capture for one host (contract A). Not safe to share between processes; within one
 * process, operations are serialised. `start()` installs, `close()` removes (idempotent).
 */
export class Capture implements Lifecycle {
  private readonly spec: CaptureSpec;
  private readonly log: Logger;
  private readonly run: CommandRunner;
  private readonly stateFile: string | undefined;
  private readonly metrics: {
    installed: prom.Gauge;
    operations: prom.Counter<'operation' | 'outcome'>;
    rules: prom.Gauge<'family'>;
  };
  /** The detected backend, once (detection reads every table; the answer does not change under us). */
  private tools: Promise<IptablesTools> | undefined;
  /** Serialises install/remove/verify. */
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;
  /** This instance installed rules (a reinstall then replaces its own rules, not a crash's). */
  private installedHere = false;

  constructor(opts: TrafficCaptureOptions) {
    this.spec = opts.spec;
    this.log = opts.logger.child({ subsystem: 'capture' });
    this.run = opts.runner ?? execRunner;
    this.stateFile =
      opts.stateDir === undefined ? undefined : path.join(opts.stateDir, CAPTURE_STATE_FILE);
    const registers = opts.registry ? [opts.registry] : [];
    this.metrics = {
      installed: new prom.Gauge({
        name: 'sail_agent_capture_installed',
        help: '1 when Sail installed its traffic capture rules and has not removed them',
        registers,
      }),
      operations: new prom.Counter({
        name: 'sail_agent_capture_operations_total',
        help: 'Capture installs and removals, by operation (install, remove) and outcome (ok, error)',
        labelNames: ['operation', 'outcome'],
        registers,
      }),
      rules: new prom.Gauge({
        name: 'sail_agent_capture_rules',
        help: 'Rules Sail installed, by address family',
        labelNames: ['family'],
        registers,
      }),
    };
  }

  /** Installs capture (removing stale Sail rules first). */
  start(): Promise<void> {
    return this.install();
  }

  /** Removes capture; idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.remove();
  }

  /** The iptables-restore payload(s) that install would apply, for `sail capture show`. */
  render(): { ipv4: string; ipv6?: string } {
    const ipv4 = renderRules(buildCaptureRules(this.spec, 'ipv4'));
    if (this.spec.ipv6 === false) return { ipv4 };
    return { ipv4, ipv6: renderRules(buildCaptureRules(this.spec, 'ipv6')) };
  }

  /**
   * Removes any Sail rules and installs the spec's, one transaction per family. If a later family
   * fails, the earlier ones are removed again, so a failed install leaves no Sail rules.
   * @throws InvalidInputError for an invalid spec, CaptureError when iptables refuses
   */
  install(): Promise<void> {
    return this.serial(async () => {
      validateCaptureSpec(this.spec);
      const tools = await this.detect();
      const families = await this.families(tools);
      const done: CaptureFamily[] = [];
      try {
        for (const family of families) {
          const rules = buildCaptureRules(this.spec, family);
          const stale = await this.applyFamily(tools, family, rules);
          if (stale && !this.installedHere) {
            this.log.warn(
              { family, backend: tools.backend },
              'Replaced Sail rules left by an earlier run',
            );
          }
          done.push(family);
          this.metrics.rules.set(
            { family },
            rules.tables.reduce((n, t) => n + t.rules.length + t.jumps.length, 0),
          );
        }
        if (this.spec.mode === 'tproxy') {
          for (const family of families) await this.addTproxyRoute(family);
        }
        await this.writeState({
          backend: tools.backend,
          families,
          tproxy: this.spec.mode === 'tproxy',
        });
      } catch (err) {
        this.metrics.operations.inc({ operation: 'install', outcome: 'error' });
        for (const family of done) {
          await this.removeFamily(tools, family).catch((e: unknown) => {
            // Already failing; the original error is the one to report.
            this.log.error({ err: e, family }, 'Could not roll back capture rules');
          });
        }
        if (this.spec.mode === 'tproxy') {
          for (const family of families) await this.removeTproxyRoute(family);
        }
        throw err;
      }
      this.installedHere = true;
      this.metrics.installed.set(1);
      this.metrics.operations.inc({ operation: 'install', outcome: 'ok' });
      this.log.info(
        {
          backend: tools.backend,
          reason: tools.reason,
          families,
          mode: this.spec.mode,
        },
        'Installed traffic capture',
      );
    });
  }

  /**
   * Removes every Sail rule, chain, policy rule and route (in the detected backend and in the one
   * recorded at install, if different). Other rules are untouched, so iptables-save is as before.
   * @throws CaptureError when iptables refuses
   */
  remove(): Promise<void> {
    return this.serial(async () => {
      try {
        const tools = await this.detect();
        const state = this.readState();
        const toolSets = [tools];
        if (state && state.backend !== tools.backend) {
          toolSets.push(await this.toolsFor(state.backend, tools));
        }
        let removed = false;
        for (const t of toolSets) {
          for (const family of await this.families(t, true)) {
            removed = (await this.removeFamily(t, family)) || removed;
          }
        }
        if (this.spec.mode === 'tproxy' || state?.tproxy) {
          for (const family of ['ipv4', 'ipv6'] as const) await this.removeTproxyRoute(family);
        }
        if (this.stateFile) await fs.promises.rm(this.stateFile, { force: true });
        this.installedHere = false;
        this.metrics.installed.set(0);
        this.metrics.rules.reset();
        this.metrics.operations.inc({ operation: 'remove', outcome: 'ok' });
        this.log.info({ removed }, 'Removed traffic capture');
      } catch (err) {
        this.metrics.operations.inc({ operation: 'remove', outcome: 'error' });
        throw err;
      }
    });
  }

  /** Compares the installed rules with the spec's; never changes anything. */
  verify(): Promise<CaptureStatus> {
    return this.serial(async () => {
      const tools = await this.detect();
      const families = await this.families(tools);
      const differences: string[] = [];
      let installed = false;
      for (const family of families) {
        const save = await this.mustRun(commandsFor(tools, family).save, []);
        const have = parseInstalled(save.stdout);
        const chains = have.some(t => t.chains.length > 0);
        installed ||= chains;
        if (!chains && have.length === 0) {
          differences.push(`${family}: Sail's rules are not installed`);
          continue;
        }
        differences.push(...diffInstalled(family, have, buildCaptureRules(this.spec, family)));
      }
      if (this.spec.mode === 'tproxy' && installed) {
        for (const family of families) differences.push(...(await this.checkTproxyRoute(family)));
      }
      return {
        installed,
        upToDate: installed && differences.length === 0,
        backend: tools.backend,
        families,
        differences,
      };
    });
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private detect(): Promise<IptablesTools> {
    this.tools ??= detectIptables(this.run).catch((err: unknown) => {
      this.tools = undefined;
      throw err;
    });
    return this.tools;
  }

  /** The programs of `backend`, named the way the detected ones are (suffixed or plain). */
  private toolsFor(backend: IptablesBackend, like: IptablesTools): Promise<IptablesTools> {
    const suffixed = like.ipv4.save.includes('-nft-') || like.ipv4.save.includes('-legacy-');
    const s = suffixed ? `-${backend}` : '';
    return Promise.resolve({
      backend,
      ipv4: { save: `iptables${s}-save`, restore: `iptables${s}-restore` },
      ipv6: { save: `ip6tables${s}-save`, restore: `ip6tables${s}-restore` },
      reason: 'recorded at install',
    });
  }

  /**
   * The families to program: IPv4 always; IPv6 when spec.ipv6 is true, or 'auto' and
   * ip6tables-save runs. `lenient`: for removal, IPv6 whenever ip6tables-save runs.
   */
  private async families(tools: IptablesTools, lenient = false): Promise<CaptureFamily[]> {
    if (this.spec.ipv6 === false && !lenient) return ['ipv4'];
    if (this.spec.ipv6 === true && !lenient) return ['ipv4', 'ipv6'];
    const probe = await this.run(tools.ipv6.save, []);
    return probe.code === 0 ? ['ipv4', 'ipv6'] : ['ipv4'];
  }

  /** One transaction: stale Sail state out, `rules` in. Returns true when there was stale state. */
  private async applyFamily(
    tools: IptablesTools,
    family: CaptureFamily,
    rules: FamilyRules,
  ): Promise<boolean> {
    const cmds = commandsFor(tools, family);
    const save = await this.mustRun(cmds.save, []);
    const installed = parseInstalled(save.stdout);
    await this.restore(cmds.restore, buildRestorePayload(installed, rules), family);
    return installed.length > 0;
  }

  /** Removes Sail's rules of one family; returns true when there were any. */
  private async removeFamily(tools: IptablesTools, family: CaptureFamily): Promise<boolean> {
    const cmds = commandsFor(tools, family);
    const save = await this.run(cmds.save, []);
    if (save.code !== 0) return false; // no such backend/family here: nothing of ours either
    const installed = parseInstalled(save.stdout);
    const payload = buildRestorePayload(installed, undefined);
    if (payload === '') return false;
    await this.restore(cmds.restore, payload, family);
    return true;
  }

  private async restore(program: string, payload: string, family: CaptureFamily): Promise<void> {
    this.log.debug({ family, program, payload }, 'Applying iptables-restore payload');
    let r = await this.run(program, ['--noflush', '--wait', '10'], payload);
    if (r.code !== 0 && /unrecognized option|invalid option/i.test(r.stderr)) {
      // iptables before 1.6.2 (RHEL 7) has no --wait for restore.
      r = await this.run(program, ['--noflush'], payload);
    }
    if (r.code !== 0) {
      throw new CaptureError(
        'AGENT_CAPTURE_APPLY_FAILED',
        `${program} --noflush failed for ${family} (exit ${r.code}): ${r.stderr.trim()}${hintFor(r.stderr)}`,
      );
    }
  }

  private async mustRun(program: string, args: readonly string[]): Promise<CommandResult> {
    const r = await this.run(program, args);
    if (r.code !== 0) {
      throw new CaptureError(
        r.code === 127 ? 'AGENT_CAPTURE_NO_IPTABLES' : 'AGENT_CAPTURE_APPLY_FAILED',
        `${[program, ...args].join(' ')} failed (exit ${r.code}): ${r.stderr.trim()}${hintFor(r.stderr)}`,
      );
    }
    return r;
  }

  /** TPROXY delivery: packets marked 1337 are routed to the local stack (Istio 1.0). Idempotent. */
  private async addTproxyRoute(family: CaptureFamily): Promise<void> {
    const f = ['-f', FAMILY_FLAG[family]];
    await this.removeTproxyRule(family);
    await this.mustRun('ip', [...f, 'rule', 'add', ...this.ruleSelector()]);
    await this.mustRun('ip', [...f, 'route', 'replace', ...this.routeSpec()]);
  }

  private async removeTproxyRoute(family: CaptureFamily): Promise<void> {
    await this.removeTproxyRule(family);
    // Absent already is fine: removal is idempotent.
    await this.run('ip', ['-f', FAMILY_FLAG[family], 'route', 'del', ...this.routeSpec()]);
  }

  private async removeTproxyRule(family: CaptureFamily): Promise<void> {
    // `ip rule add` does not deduplicate; delete every copy (bounded) until none is left.
    for (let i = 0; i < 16; i++) {
      const r = await this.run('ip', [
        '-f',
        FAMILY_FLAG[family],
        'rule',
        'del',
        ...this.ruleSelector(),
      ]);
      if (r.code !== 0) return;
    }
  }

  private ruleSelector(): string[] {
    return ['fwmark', String(TPROXY_MARK), 'lookup', String(TPROXY_ROUTE_TABLE)];
  }

  private routeSpec(): string[] {
    return ['local', 'default', 'dev', 'lo', 'table', String(TPROXY_ROUTE_TABLE)];
  }

  private async checkTproxyRoute(family: CaptureFamily): Promise<string[]> {
    const f = ['-f', FAMILY_FLAG[family]];
    const out: string[] = [];
    const rules = await this.run('ip', [...f, 'rule', 'show']);
    const mark = `fwmark 0x${TPROXY_MARK.toString(16)} lookup ${TPROXY_ROUTE_TABLE}`;
    if (!rules.stdout.includes(mark)) out.push(`${family}: ip rule "${mark}" is missing`);
    const routes = await this.run('ip', [
      ...f,
      'route',
      'show',
      'table',
      String(TPROXY_ROUTE_TABLE),
    ]);
    if (!/^local default dev lo\b/m.test(routes.stdout)) {
      out.push(`${family}: route "local default dev lo table ${TPROXY_ROUTE_TABLE}" is missing`);
    }
    return out;
  }

  private readState(): CaptureState | undefined {
    if (!this.stateFile) return undefined;
    try {
      return JSON.parse(fs.readFileSync(this.stateFile, 'utf8')) as CaptureState;
    } catch (err) {
      // Absent after a clean removal; unreadable means we fall back to the detected backend.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.log.warn({ err, path: this.stateFile }, 'Ignoring unreadable capture state');
      }
      return undefined;
    }
  }

  private async writeState(state: CaptureState): Promise<void> {
    if (!this.stateFile) return;
    try {
      await fs.promises.mkdir(path.dirname(this.stateFile), { recursive: true });
      await writeFileAtomic(this.stateFile, `${JSON.stringify(state)}\n`, 0o644);
    } catch (err) {
      // Only an aid for removal after a backend change; the rules themselves are installed.
      this.log.warn(
        { err: getErrorMessage(err), path: this.stateFile },
        'Could not write capture state',
      );
    }
  }
}
