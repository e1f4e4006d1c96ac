/**
 * `sail apply | get | delete | validate` (kubectl-style configuration verbs) and
 * `sail proxy-config` (what pilot sent each proxy, and what it ACKed).
 *
 * Files are parsed and checked here first, so errors name the file, document, line and field even
 * before the control plane is reached; pilot checks them again together with what it stores
 * (hosts claimed twice, subsets that must exist) and applies all of them or none.
 */
import type { Argv, CommandModule } from 'yargs';
import { stringify } from 'yaml';
import { InvalidInputError } from '../../common/errors';
import {
  type ConfigObject,
  KIND_INFO,
  type Kind,
  loadSources,
  lookupKind,
  validateDocuments,
  describeAcceptedKinds,
} from '../../pilot/config';
import { AdminClient } from '../admin-client';
import { adminOptions, type AdminArgs, printTable } from './admin-options';

const client = (a: AdminArgs) => new AdminClient({ server: a.server, adminDir: a['admin-dir'] });

interface ItemResult {
  kind: Kind;
  apiVersion: string;
  namespace: string;
  name: string;
  outcome: string;
}

/** `virtualservice.networking.istio.io/reviews` */
function resourceName(kind: Kind, name: string): string {
  const info = KIND_INFO[kind];
  return `${info.singular}.${info.group}/${name}`;
}

function printOutcomes(items: readonly ItemResult[], suffix = ''): void {
  for (const i of items)
    process.stdout.write(`${resourceName(i.kind, i.name)} ${i.outcome}${suffix}\n`);
}

function kindArg(value: string): Kind {
  const kind = lookupKind(value);
  if (!kind)
    throw new InvalidInputError(
      `unknown kind ${JSON.stringify(value)}; Sail serves ${describeAcceptedKinds()}`,
    );
  return kind;
}

/**
 * `-f` values as a list. The option is not a yargs array: yargs-parser does not let an array
 * option take `-` (stdin) as its value (`-f -` failed with "Unknown argument: -"); a repeated
 * plain option still collects every value (`-f a.yaml -f -`).
 */
const filenames = (v: string | string[]): string[] => [v].flat();

// ---------------------------------------------------------------------------------------------

interface ApplyArgs extends AdminArgs {
  filename: string[];
  'dry-run': boolean;
}

const applyCommand: CommandModule<object, ApplyArgs> = {
  command: 'apply',
  describe:
    'Create or update configuration from files: Istio YAML or JSON (all documents or none are applied)',
  builder: y =>
    adminOptions(y)
      .option('filename', {
        alias: 'f',
        type: 'string',
        coerce: filenames,
        demandOption: true,
        describe: 'File, directory (*.yaml, *.yml, *.json) or - for stdin; repeatable',
      })
      .option('dry-run', {
        type: 'boolean',
        default: false,
        describe: 'Validate against the stored configuration without storing anything',
      })
      .example('$0 apply -f samples/bookinfo/', 'Apply every file in a directory')
      .example('cat vs.yaml | $0 apply -f -', 'Apply from stdin') as unknown as Argv<ApplyArgs>,
  handler: async args => {
    const docs = await loadSources(args.filename);
    if (docs.length === 0) throw new InvalidInputError('no documents found in the given files');
    // Offline checks first: errors carry line numbers here. Pilot adds the cross-document
    // checks against what it stores.
    validateDocuments(docs, { crossDocument: false });
    const res = await client(args).request<{ items: ItemResult[] }>('POST', '/v1/config/apply', {
      documents: docs.map(d => ({
        source: d.source,
        index: d.index,
        basePath: d.basePath,
        raw: d.raw,
      })),
      dryRun: args['dry-run'],
    });
    printOutcomes(res.items, args['dry-run'] ? ' (dry run)' : '');
  },
};

// ---------------------------------------------------------------------------------------------

interface ValidateArgs {
  filename: string[];
}

const validateCommand: CommandModule<object, ValidateArgs> = {
  command: 'validate',
  describe: 'Check configuration files offline, like istioctl analyze (exit 2 when invalid)',
  builder: y =>
    y
      .option('filename', {
        alias: 'f',
        type: 'string',
        coerce: filenames,
        demandOption: true,
        describe: 'File, directory or - for stdin; repeatable',
      })
      .example(
        '$0 validate -f vs.yaml -f dr.yaml',
        'Check two files',
      ) as unknown as Argv<ValidateArgs>,
  handler: async args => {
    const docs = await loadSources(args.filename);
    const objects = validateDocuments(docs);
    for (const o of objects)
      process.stdout.write(`${resourceName(o.kind, o.metadata.name)} valid\n`);
    process.stdout.write(
      `${objects.length} document${objects.length === 1 ? '' : 's'} valid in ${args.filename.join(', ')}\n`,
    );
  },
};

// ---------------------------------------------------------------------------------------------

interface GetArgs extends AdminArgs {
  kind: string;
  name?: string;
  namespace: string;
  'all-namespaces': boolean;
  output: string;
}

function age(ts: string | undefined): string {
  if (!ts) return '-';
  const s = Math.max(0, Math.floor((Date.now() - Date.parse(ts)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

const str = (v: unknown): string =>
  typeof v === 'string' ? v : v === undefined ? '' : JSON.stringify(v);

/** The kubectl-like summary column of each kind. */
function summary(o: ConfigObject): [string, string] {
  const spec = o.spec as unknown as Record<string, unknown>;
  const list = (v: unknown) => (Array.isArray(v) ? (v as unknown[]).map(str).join(',') : '');
  switch (o.kind) {
    case 'VirtualService':
      return ['HOSTS', `[${list(spec.hosts)}]`];
    case 'DestinationRule':
      return ['HOST', str(spec.host)];
    case 'ServiceEntry':
      return ['HOSTS', `[${list(spec.hosts)}]`];
    case 'WorkloadEntry':
      return ['ADDRESS', str(spec.address)];
    case 'Gateway':
      return ['SERVERS', String(Array.isArray(spec.servers) ? spec.servers.length : 0)];
    case 'PeerAuthentication': {
      const mtls = spec.mtls as { mode?: string } | undefined;
      return ['MODE', mtls?.mode ?? 'UNSET'];
    }
    case 'AuthorizationPolicy':
      return ['ACTION', str(spec.action ?? 'ALLOW')];
    default:
      return ['', ''];
  }
}

const getCommand: CommandModule<object, GetArgs> = {
  command: 'get <kind> [name]',
  describe:
    'Show stored configuration (kinds: virtualservices/vs, destinationrules/dr, serviceentries/se, ...)',
  builder: y =>
    adminOptions(y)
      .positional('kind', {
        type: 'string',
        demandOption: true,
        describe: 'Kind, plural or short name',
      })
      .positional('name', { type: 'string', describe: 'One object by name' })
      .option('namespace', {
        alias: 'n',
        type: 'string',
        default: 'default',
        describe: 'Namespace',
      })
      .option('all-namespaces', {
        alias: 'A',
        type: 'boolean',
        default: false,
        describe: 'Every namespace',
      })
      .option('output', {
        alias: 'o',
        type: 'string',
        choices: ['table', 'yaml', 'json'],
        default: 'table',
        describe: 'Output format',
      })
      .example('$0 get vs -A', 'Every VirtualService')
      .example(
        '$0 get dr reviews -n default -o yaml',
        'One DestinationRule as YAML',
      ) as unknown as Argv<GetArgs>,
  handler: async args => {
    const kind = kindArg(args.kind);
    const q = new URLSearchParams({ kind });
    if (!args['all-namespaces'] || args.name !== undefined) q.set('namespace', args.namespace);
    if (args.name !== undefined) q.set('name', args.name);
    const res = await client(args).request<{ items: ConfigObject[] }>(
      'GET',
      `/v1/config?${q.toString()}`,
    );
    const items = res.items;
    if (args.output === 'json') {
      const out = args.name !== undefined ? items[0] : { apiVersion: 'v1', kind: 'List', items };
      process.stdout.write(JSON.stringify(out, null, 2) + '\n');
      return;
    }
    if (args.output === 'yaml') {
      process.stdout.write(items.map(o => stringify(o)).join('---\n'));
      return;
    }
    if (items.length === 0) {
      process.stderr.write(
        `No resources found${args['all-namespaces'] ? '' : ` in ${args.namespace} namespace`}.\n`,
      );
      return;
    }
    const [col] = summary(items[0]!);
    const header = [
      ...(args['all-namespaces'] ? ['NAMESPACE'] : []),
      'NAME',
      ...(col ? [col] : []),
      'AGE',
    ];
    printTable(
      header,
      items.map(o => [
        ...(args['all-namespaces'] ? [o.metadata.namespace] : []),
        o.metadata.name,
        ...(col ? [summary(o)[1]] : []),
        age(o.metadata.creationTimestamp),
      ]),
    );
  },
};

// ---------------------------------------------------------------------------------------------

interface DeleteArgs extends AdminArgs {
  kind?: string;
  names?: string[];
  filename?: string[];
  namespace: string;
  'ignore-not-found': boolean;
  force: boolean;
}

const deleteCommand: CommandModule<object, DeleteArgs> = {
  command: 'delete [kind] [names..]',
  describe: 'Delete configuration by kind and name, or everything the files name (-f)',
  builder: y =>
    adminOptions(y)
      .positional('kind', { type: 'string', describe: 'Kind, plural or short name' })
      .positional('names', { type: 'string', array: true, describe: 'Names' })
      .option('filename', {
        alias: 'f',
        type: 'string',
        coerce: filenames,
        describe: 'Delete the objects these files define; repeatable',
      })
      .option('namespace', {
        alias: 'n',
        type: 'string',
        default: 'default',
        describe: 'Namespace',
      })
      .option('force', {
        type: 'boolean',
        default: false,
        describe:
          'Delete even when stored objects still refer to it (e.g. a VirtualService routing to its subsets)',
      })
      .option('ignore-not-found', {
        type: 'boolean',
        default: false,
        describe: 'Succeed when an object does not exist',
      })
      .example('$0 delete vs reviews', 'Delete one VirtualService')
      .example(
        '$0 delete -f samples/bookinfo/',
        'Delete what the files define',
      ) as unknown as Argv<DeleteArgs>,
  handler: async args => {
    let keys: { kind: Kind; namespace: string; name: string }[];
    if (args.filename?.length) {
      if (args.kind !== undefined)
        throw new InvalidInputError('give either -f FILE or KIND NAME..., not both');
      // Only the names matter: deleting one file of a set (a VirtualService without the
      // DestinationRule its subsets come from) must not fail the cross-document checks.
      const objects = validateDocuments(await loadSources(args.filename), {
        crossDocument: false,
      });
      keys = objects.map(o => ({
        kind: o.kind,
        namespace: o.metadata.namespace,
        name: o.metadata.name,
      }));
    } else {
      if (args.kind === undefined || !args.names?.length)
        throw new InvalidInputError('name what to delete: KIND NAME... or -f FILE');
      const kind = kindArg(args.kind);
      keys = args.names.map(name => ({ kind, namespace: args.namespace, name }));
    }
    if (keys.length === 0) throw new InvalidInputError('nothing to delete');
    const res = await client(args).request<{ items: ItemResult[] }>('POST', '/v1/config/delete', {
      keys,
      ignoreNotFound: args['ignore-not-found'],
      force: args.force,
    });
    printOutcomes(res.items);
  },
};

// ---------------------------------------------------------------------------------------------

interface ProxyConfigArgs extends AdminArgs {
  node: string;
  type?: string;
  output: string;
}

interface ConnectionInfo {
  connectionId: string;
  nodeId: string;
  node: string;
  namespace: string;
  type: string;
  spiffeId?: string;
  peerAddress: string;
  connectedAt: string;
  protocol: string;
  resources: Record<
    string,
    {
      subscribed: string[] | '*';
      versionSent?: string;
      versionAcked?: string;
      nack?: { version: string; message: string; at: string };
      resources: Record<string, unknown>[];
    }
  >;
}

const TYPES = ['clusters', 'endpoints', 'listeners', 'routes'];

const resourceLabel = (r: Record<string, unknown>) => str(r.name ?? r.clusterName ?? '?');

const proxyConfigCommand: CommandModule<object, ProxyConfigArgs> = {
  command: 'proxy-config <node>',
  describe: "What pilot last sent a node's xDS clients, and what they ACKed or rejected",
  builder: y =>
    adminOptions(y)
      .positional('node', {
        type: 'string',
        demandOption: true,
        describe: 'Node name (its certificate CN) or xDS node id',
      })
      .option('type', {
        type: 'string',
        choices: TYPES,
        describe: 'Show the resources of one type in full',
      })
      .option('output', {
        alias: 'o',
        type: 'string',
        choices: ['table', 'json', 'yaml'],
        default: 'table',
        describe: 'Output format',
      }) as unknown as Argv<ProxyConfigArgs>,
  handler: async args => {
    const q = new URLSearchParams({ node: args.node });
    const res = await client(args).request<{ items: ConnectionInfo[] }>(
      'GET',
      `/v1/proxy-config?${q.toString()}`,
    );
    if (args.type) {
      const resources = res.items.flatMap(c => c.resources[args.type!]?.resources ?? []);
      // One type in full: JSON (as in a config dump) unless YAML is asked for.
      if (resources.length === 0) process.stderr.write(`No ${args.type} sent to ${args.node}.\n`);
      else if (args.output === 'yaml') process.stdout.write(stringify(resources));
      else process.stdout.write(JSON.stringify(resources, null, 2) + '\n');
      return;
    }
    if (args.output === 'json') {
      process.stdout.write(JSON.stringify(res.items, null, 2) + '\n');
      return;
    }
    if (args.output === 'yaml') {
      process.stdout.write(stringify(res.items));
      return;
    }
    for (const c of res.items) {
      process.stdout.write(
        `NODE ${c.node} (${c.nodeId}) ${c.type}, namespace ${c.namespace}, ${c.protocol} stream from ${c.peerAddress}` +
          `${c.spiffeId ? `, ${c.spiffeId}` : ', not authenticated'}, connected ${c.connectedAt}\n`,
      );
      printTable(
        ['TYPE', 'SENT', 'ACKED', 'STATUS', 'RESOURCES'],
        TYPES.filter(t => c.resources[t]).map(t => {
          const w = c.resources[t]!;
          const status = w.nack
            ? `NACK: ${w.nack.message}`
            : w.versionAcked === w.versionSent
              ? 'ACKED'
              : 'SENT';
          const names = w.resources.map(resourceLabel);
          return [
            t,
            w.versionSent ?? '-',
            w.versionAcked ?? '-',
            status,
            names.length > 4
              ? `${names.slice(0, 4).join(',')},… (${names.length})`
              : names.join(','),
          ];
        }),
      );
    }
  },
};

export const configCommands = [
  applyCommand,
  getCommand,
  deleteCommand,
  validateCommand,
  proxyConfigCommand,
] as const;
