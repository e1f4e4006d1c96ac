#!/usr/bin/env node
/**
 * `sail`: one binary, one subcommand per role and verb (DESIGN §3.1). Exit codes: 0 ok,
 * 1 runtime failure, 2 bad usage or invalid input.
 */
import yargs from 'yargs';
import { caCommand, controlPlaneCommand } from './commands/ca';
import { captureCommand } from './commands/capture';
import { configCommands } from './commands/config';
import { pilotCommand } from './commands/pilot';
import { joinCommand } from './commands/join';
import { nodeAgentCommand } from './commands/node-agent';
import { nodeCommand } from './commands/node';
import { proxyCommand } from './commands/proxy';
import { statusCommand } from './commands/status';
import { tokenCommand } from './commands/token';
import { EXIT_USAGE, reportCliError } from './errors';
import { SAIL_VERSION } from './version';

export async function main(argv: string[]): Promise<void> {
  const parser = yargs(argv)
    .scriptName('sail')
    .usage(
      '$0 <command> [options]\n\nSail: a service mesh for virtual machines and physical hosts.',
    )
    .command(controlPlaneCommand as never)
    .command(caCommand as never)
    .command(pilotCommand as never)
    .command(tokenCommand)
    .command(nodeCommand)
    .command(joinCommand as never)
    .command(nodeAgentCommand as never)
    .command(captureCommand as never)
    .command(proxyCommand as never)
    .command(statusCommand as never)
    .command(configCommands.map(c => c as never))
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
