/** `sail token create|list`: single-use join tokens, through the admin API. */
import type { Argv, CommandModule } from 'yargs';
import { AdminClient } from '../admin-client';
import { adminOptions, type AdminArgs, printTable, validateServiceAccounts } from './admin-options';

interface CreateArgs extends AdminArgs {
  node: string;
  sa: string[];
  ttl: string;
  output: string;
}

interface TokenInfo {
  token?: string;
  id: string;
  node: string;
  spiffeIds: string[];
  createdAt: string;
  expiresAt: string;
  usedAt?: string;
}

const create: CommandModule<object, CreateArgs> = {
  command: 'create',
  describe:
    'Create a single-use join token bound to a node and its service account(s); prints only the token',
  builder: y =>
    adminOptions(y)
      .option('node', {
        type: 'string',
        demandOption: true,
        describe: 'Node name the token is for (lowercase DNS-style name)',
      })
      .option('sa', {
        type: 'string',
        array: true,
        demandOption: true,
        describe: 'Service account NAMESPACE/NAME the node may hold; repeatable',
      })
      .option('ttl', {
        type: 'string',
        default: '1h',
        describe: 'How long the token can be used (it is also single-use)',
      })
      .option('output', {
        alias: 'o',
        type: 'string',
        choices: ['token', 'json'],
        default: 'token',
        describe: 'token: the token alone; json: everything',
      })
      .example(
        'TOKEN=$($0 token create --node vm-1 --sa default/reviews)',
        'Capture a token for `sail join`',
      ) as unknown as Argv<CreateArgs>,
  handler: async args => {
    validateServiceAccounts(args.sa);
    const client = new AdminClient({ server: args.server, adminDir: args['admin-dir'] });
    const res = await client.request<TokenInfo>('POST', '/v1/tokens', {
      node: args.node,
      serviceAccounts: args.sa,
      ttl: args.ttl,
    });
    process.stdout.write(
      args.output === 'json' ? JSON.stringify(res, null, 2) + '\n' : `${String(res.token)}\n`,
    );
  },
};

const list: CommandModule<object, AdminArgs> = {
  command: 'list',
  describe: 'List join tokens (never their secrets)',
  builder: y => adminOptions(y) as unknown as Argv<AdminArgs>,
  handler: async args => {
    const client = new AdminClient({ server: args.server, adminDir: args['admin-dir'] });
    const res = await client.request<{ tokens: TokenInfo[] }>('GET', '/v1/tokens');
    printTable(
      ['ID', 'NODE', 'IDENTITIES', 'EXPIRES', 'USED'],
      res.tokens.map(t => [t.id, t.node, t.spiffeIds.join(','), t.expiresAt, t.usedAt ?? '-']),
    );
  },
};

export const tokenCommand: CommandModule = {
  command: 'token <command>',
  describe: 'Manage join tokens',
  builder: y =>
    y
      .command(create as CommandModule)
      .command(list as CommandModule)
      .demandCommand(1),
  handler: () => undefined,
};
