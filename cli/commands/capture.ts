/**
 * `sail capture install|remove|verify|show`: the node agent's traffic capture, by hand. The agent
 * installs capture itself at start and removes it at stop; these verbs are for operators (and the
 * package's prerm): inspect what Sail would install, check it, or take it out.
 * Exit codes: 0 ok, 1 failure (verify: not installed or not up to date), 2 invalid input.
 */
import * as net from 'node:net';
import * as path from 'node:path';
import pino from 'pino';
import type { Argv, CommandModule } from 'yargs';
import { InvalidInputError } from '../../common/errors';
import { createRootLogger } from '../../common/logging';
import { DEFAULT_CONFIG_FILE, loadNodeAgentConfig } from '../../node-agent/config';
import {
  Capture,
  captureSpecFromSettings,
  lookupSystemUser,
  type CaptureSpec,
} from '../../node-agent/capture';
import type { NodeAgentSettings } from '../../node-agent/options';
import { captureNameservers } from '../../node-agent/host-mesh';
import { EXIT_FAILURE } from '../errors';

/** The proxy's system user, made by the package's postinst. */
export const DEFAULT_PROXY_USER = 'sail-proxy';

const VERBS = ['install', 'remove', 'verify', 'show'] as const;
type Verb = (typeof VERBS)[number];

interface CaptureArgs {
  verb: Verb;
  config: string;
  'proxy-user': string;
  'proxy-uid'?: number;
  'proxy-gid'?: number;
  nameservers?: string;
  json: boolean;
}

function proxyIds(args: CaptureArgs, required: boolean): { uid: number; gid: number } {
  const uid = args['proxy-uid'];
  const gid = args['proxy-gid'];
  for (const [flag, v] of [
    ['--proxy-uid', uid],
    ['--proxy-gid', gid],
  ] as const) {
    if (v !== undefined && (!Number.isInteger(v) || v < 0)) {
      throw new InvalidInputError(`${flag}: ${String(v)} is not a uid/gid number`);
    }
  }
  if (uid !== undefined || gid !== undefined) {
    if (uid === undefined || gid === undefined) {
      throw new InvalidInputError(
        `${uid === undefined ? '--proxy-uid' : '--proxy-gid'}: required with ${uid === undefined ? '--proxy-gid' : '--proxy-uid'}`,
      );
    }
    return { uid, gid };
  }
  const user = lookupSystemUser(args['proxy-user']);
  if (user) return user;
  if (!required) return { uid: 0, gid: 0 }; // removal does not depend on the ids
  throw new InvalidInputError(
    `--proxy-user: no user ${JSON.stringify(args['proxy-user'])} in /etc/passwd; create it (the sail package does) or pass --proxy-uid and --proxy-gid`,
  );
}

function nameserversFor(args: CaptureArgs, settings: NodeAgentSettings): string[] | undefined {
  if (args.nameservers !== undefined) {
    const list = args.nameservers
      .split(',')
      .map(s => s.trim())
      .filter(s => s !== '');
    for (const ns of list) {
      if (net.isIP(ns) === 0) {
        throw new InvalidInputError(`--nameservers: ${JSON.stringify(ns)} is not an IP address`);
      }
    }
    return list;
  }
  return captureNameservers(settings);
}

export const captureCommand: CommandModule<object, CaptureArgs> = {
  command: 'capture <verb>',
  describe: 'Traffic capture (iptables): install, remove, verify or show the rules of this host',
  builder: y =>
    y
      .positional('verb', {
        choices: VERBS as unknown as string[],
        describe:
          'install: apply (replacing any earlier Sail rules); remove: take every Sail rule out; verify: compare with the config (exit 1 when different); show: print the iptables-restore payloads',
      })
      .option('config', {
        type: 'string',
        default: DEFAULT_CONFIG_FILE,
        describe: 'Node agent config file (its capture and dns sections are used)',
      })
      .option('proxy-user', {
        type: 'string',
        default: DEFAULT_PROXY_USER,
        describe: 'The proxy user whose uid and gid are never captured (looked up in /etc/passwd)',
      })
      .option('proxy-uid', { type: 'number', describe: 'The proxy uid (instead of --proxy-user)' })
      .option('proxy-gid', { type: 'number', describe: 'The proxy gid (instead of --proxy-user)' })
      .option('nameservers', {
        type: 'string',
        describe:
          'Comma-separated resolvers whose port 53 is captured to the agent DNS (default: /etc/resolv.conf when dns.enabled)',
      })
      .option('json', {
        type: 'boolean',
        default: false,
        describe: 'verify: print the status as JSON',
      })
      .example('$0 capture show', 'Print the rules Sail would install')
      .example('$0 capture verify', 'Check the installed rules (exit 1 when not up to date)')
      .example('$0 capture remove', 'Remove every Sail rule') as unknown as Argv<CaptureArgs>,
  handler: async args => {
    const configFile = path.resolve(args.config);
    const { settings } = loadNodeAgentConfig(configFile);
    const off = settings.capture.mode === 'none';
    if (off && args.verb !== 'remove') {
      throw new InvalidInputError(
        `${configFile}: capture.mode: none; there are no capture rules to ${args.verb}`,
      );
    }
    // Removal only needs to find Sail's rules; with mode none it still removes leftovers.
    const effective: NodeAgentSettings = off
      ? { ...settings, capture: { ...settings.capture, mode: 'redirect' } }
      : settings;
    const spec: CaptureSpec = captureSpecFromSettings(
      effective,
      proxyIds(args, args.verb !== 'remove'),
      nameserversFor(args, settings),
    );
    // Logs go to stderr: stdout carries the payloads and the status.
    const logger = createRootLogger('warn', pino.destination({ dest: 2, sync: true }));
    const capture = new Capture({ spec, logger, stateDir: settings.stateDir });
    switch (args.verb) {
      case 'show': {
        const p = capture.render();
        process.stdout.write(`# iptables-restore --noflush (IPv4)\n${p.ipv4}`);
        if (p.ipv6 !== undefined) {
          process.stdout.write(
            `# ip6tables-restore --noflush (IPv6${spec.ipv6 === 'auto' ? ', when the host has ip6tables' : ''})\n${p.ipv6}`,
          );
        }
        return;
      }
      case 'install':
        await capture.install();
        process.stdout.write('capture installed\n');
        return;
      case 'remove':
        await capture.remove();
        process.stdout.write('capture removed\n');
        return;
      case 'verify': {
        const status = await capture.verify();
        if (args.json) process.stdout.write(`${JSON.stringify(status, null, 2)}\n`);
        else {
          const state = status.upToDate
            ? 'installed and up to date'
            : status.installed
              ? 'installed, NOT up to date'
              : 'not installed';
          process.stdout.write(
            `capture: ${state} (backend ${status.backend}, ${status.families.join(' and ')})\n`,
          );
          for (const d of status.differences) process.stdout.write(`  ${d}\n`);
        }
        if (!status.upToDate) process.exitCode = EXIT_FAILURE;
        return;
      }
    }
  },
};
