/** `sail node register|list|remove`: which identities each node may hold. */
import type { Argv, CommandModule } from 'yargs';
import { AdminClient } from '../admin-client';
import { adminOptions, type AdminArgs, printTable, validateServiceAccounts } from './admin-options';

interface NodeEntry {
  name: string;
  spiffeIds: string[];
  lastIssuedAt?: string;
  lastAttestation?: string;
}

interface RegisterArgs extends AdminArgs {
  name: string;
  sa: string[];
}

interface NameArgs extends AdminArgs {
  name: string;
}

const client = (a: AdminArgs) => new AdminClient({ server: a.server, adminDir: a['admin-dir'] });

const register: CommandModule<object, RegisterArgs> = {
  command: 'register <name>',
  describe: 'Create or replace a node entry (for nodes that attest with a bootstrap certificate)',
  builder: y =>
    adminOptions(y)
      .positional('name', {
        type: 'string',
        demandOption: true,
        describe: 'Node name (the CN of its bootstrap certificate)',
      })
      .option('sa', {
        type: 'string',
        array: true,
        demandOption: true,
        describe: 'Service account NAMESPACE/NAME; repeatable',
      }) as unknown as Argv<RegisterArgs>,
  handler: async args => {
    validateServiceAccounts(args.sa);
    const e = await client(args).request<NodeEntry>(
      'PUT',
      `/v1/nodes/${encodeURIComponent(args.name)}`,
      { serviceAccounts: args.sa },
    );
    process.stdout.write(`node/${e.name} registered: ${e.spiffeIds.join(', ')}\n`);
  },
};

const list: CommandModule<object, AdminArgs> = {
  command: 'list',
  describe: 'List node entries',
  builder: y => adminOptions(y) as unknown as Argv<AdminArgs>,
  handler: async args => {
    const res = await client(args).request<{ nodes: NodeEntry[] }>('GET', '/v1/nodes');
    printTable(
      ['NAME', 'IDENTITIES', 'LAST ISSUED', 'ATTESTATION'],
      res.nodes.map(n => [
        n.name,
        n.spiffeIds.join(','),
        n.lastIssuedAt ?? '-',
        n.lastAttestation ?? '-',
      ]),
    );
  },
};

const remove: CommandModule<object, NameArgs> = {
  command: 'remove <name>',
  describe: 'Remove a node: its certificates can no longer be renewed and its tokens stop working',
  builder: y =>
    adminOptions(y).positional('name', {
      type: 'string',
      demandOption: true,
    }) as unknown as Argv<NameArgs>,
  handler: async args => {
    await client(args).request('DELETE', `/v1/nodes/${encodeURIComponent(args.name)}`);
    process.stdout.write(`node/${args.name} removed\n`);
  },
};

export const nodeCommand: CommandModule = {
  command: 'node <command>',
  describe: 'Manage node entries (which identities each host may hold)',
  builder: y =>
    y
      .command(register as CommandModule)
      .command(list as CommandModule)
      .command(remove as CommandModule)
      .demandCommand(1),
  handler: () => undefined,
};
