#!/usr/bin/env node
/**
 * `sail`: one binary, one subcommand per role and verb (DESIGN §3.1). Exit codes: 0 ok,
 * 1 runtime failure, 2 bad usage or invalid input.
 */
import yargs, { type CommandModule } from 'yargs';
import type * as CaModule from './commands/ca';
import type * as PilotModule from './commands/pilot';
import type * as TokenModule from './commands/token';
import type * as NodeModule from './commands/node';
import type * as JoinModule from './commands/join';
import type * as NodeAgentModule from './commands/node-agent';
import type * as ProxyModule from './commands/proxy';
import type * as StatusModule from './commands/status';
import type * as CaptureModule from './commands/capture';
import type * as ConfigModule from './commands/config';
import { EXIT_USAGE, reportCliError } from './errors';
import { SAIL_VERSION } from './version';

type AnyCommand = CommandModule<object, never>;
type Loader = () => AnyCommand | readonly AnyCommand[];

/**
 * Every top-level command and how to load its module. Only the command being run is loaded (all
 * of them for `sail --help` or an unknown command): a node agent does not carry the CA, pilot and
 * the proxy in memory, and every command starts faster.
 */
/* eslint-disable @typescript-eslint/no-require-imports -- loaded on demand, typed by the imports above */
const COMMANDS: Readonly<Record<string, Loader>> = {
  'control-plane': () =>
    (require('./commands/ca') as typeof CaModule).controlPlaneCommand as AnyCommand,
  ca: () => (require('./commands/ca') as typeof CaModule).caCommand as AnyCommand,
  pilot: () => (require('./commands/pilot') as typeof PilotModule).pilotCommand as AnyCommand,
  token: () => (require('./commands/token') as typeof TokenModule).tokenCommand as AnyCommand,
  node: () => (require('./commands/node') as typeof NodeModule).nodeCommand as AnyCommand,
  join: () => (require('./commands/join') as typeof JoinModule).joinCommand as AnyCommand,
  'node-agent': () =>
    (require('./commands/node-agent') as typeof NodeAgentModule).nodeAgentCommand as AnyCommand,
  proxy: () => (require('./commands/proxy') as typeof ProxyModule).proxyCommand as AnyCommand,
  status: () => (require('./commands/status') as typeof StatusModule).statusCommand as AnyCommand,
  capture: () =>
    (require('./commands/capture') as typeof CaptureModule).captureCommand as AnyCommand,
  ...Object.fromEntries(
    ['apply', 'validate', 'get', 'delete', 'proxy-config'].map(name => [
      name,
      () =>
        (require('./commands/config') as typeof ConfigModule)
          .configCommands as readonly AnyCommand[],
    ]),
  ),
};
/* eslint-enable @typescript-eslint/no-require-imports */

/** The command modules argv needs: the named command's, or every one. */
function commandsFor(argv: readonly string[]): AnyCommand[] {
  const name = argv.find(a => !a.startsWith('-'));
  const loaders =
    name !== undefined && COMMANDS[name] ? [COMMANDS[name]] : [...new Set(Object.values(COMMANDS))];
  return [...new Set(loaders.flatMap(load => load()))];
}

export async function main(argv: string[]): Promise<void> {
  const parser = yargs(argv)
    .scriptName('sail')
    .usage(
      '$0 <command> [options]\n\nSail: a service mesh for virtual machines and physical hosts.',
    )
    .command(commandsFor(argv))
    .command('version', 'Print the version', {}, () => {
      process.stdout.write(`sail ${SAIL_VERSION} (node ${process.version})\n`);
    })
    .demandCommand(1, 'name a command; see sail --help')
    .strict()
    .recommendCommands()
    .help()
    .alias('help', 'h')
    .version(SAIL_VERSION)
    .wrap(Math.min(110, process.stdout.columns || 110))
    .fail((msg, err, y) => {
      if (err) throw err;
      process.stderr.write(`${y.help() && ''}sail: ${msg}\nRun with --help for usage.\n`);
      process.exit(EXIT_USAGE);
    });
  await parser.parseAsync();
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    reportCliError(err);
  });
}
