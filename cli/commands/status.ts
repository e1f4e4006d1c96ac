/**
 * `sail status`: what the node agent on this host is doing, from its status server (:15020
 * `/status`): identity and expiry, registration and health, the proxy and its pilot connection
 * with the config versions it ACKed, capture, DNS and the proxyless xDS relay. Exit 0 when the
 * host is ready, 1 when it is not or the agent does not answer.
 */
import * as http from 'node:http';
import type { Argv, CommandModule } from 'yargs';
import { parseHostPort } from '../../common/config';
import { InvalidInputError } from '../../common/errors';

interface StatusArgs {
  agent: string;
  output: string;
}

const DEFAULT_AGENT = '127.0.0.1:15020';

/** The agent does not answer (exit 1). */
function agentUnreachable(address: string, cause: string): Error {
  return new Error(
    `cannot reach the node agent's status server at ${address}: ${cause} (is sail-node-agent running? see \`systemctl status sail-node-agent\`; set --agent if status.listen is not the default)`,
  );
}

function fetchStatus(address: string, timeoutMs = 5_000): Promise<Record<string, unknown>> {
  const hp = parseHostPort(address);
  if (!hp || hp.port === 0)
    throw new InvalidInputError(
      `--agent: want HOST:PORT of the agent's status server, got ${JSON.stringify(address)}`,
    );
  return new Promise((resolve, reject) => {
    const req = http.get(
      { host: hp.host, port: hp.port, path: '/status', timeout: timeoutMs },
      res => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          try {
            resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>);
          } catch {
            reject(agentUnreachable(address, `HTTP ${res.statusCode}, not JSON`));
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', err => reject(agentUnreachable(address, err.message)));
  });
}

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj | undefined =>
  v !== null && typeof v === 'object' ? (v as Obj) : undefined;

function duration(seconds: number): string {
  if (seconds >= 86_400)
    return `${Math.floor(seconds / 86_400)}d${Math.floor((seconds % 86_400) / 3600)}h`;
  if (seconds >= 3600) return `${Math.floor(seconds / 3600)}h${Math.floor((seconds % 3600) / 60)}m`;
  if (seconds >= 60) return `${Math.floor(seconds / 60)}m${seconds % 60}s`;
  return `${seconds}s`;
}

/** The human form of `/status`. */
export function renderStatus(s: Obj): string {
  const lines: string[] = [];
  const row = (k: string, v: string) => lines.push(`${`${k}:`.padEnd(14)}${v}`);
  row('Node', `${String(s.node ?? '?')}  ${s.ready ? 'READY' : 'NOT READY'}`);
  row('Address', `${String(s.address ?? '-')}  (node id ${String(s.nodeId ?? '-')})`);
  row(
    'Identity',
    s.spiffeId
      ? `${String(s.spiffeId)}, expires ${String(s.notAfter)} (in ${duration(Number(s.secondsLeft ?? 0))})`
      : 'none yet (waiting for the CA)',
  );
  const reg = obj(s.registration);
  row(
    'Registration',
    reg
      ? `${reg.registered ? 'registered' : reg.connected ? 'connecting' : 'not connected to pilot'}` +
          (reg.healthy === undefined ? '' : reg.healthy ? ', healthy' : ', UNHEALTHY') +
          (reg.lastMessage ? ` (${String(reg.lastMessage)})` : '')
      : '-',
  );
  const proxy = obj(s.proxy);
  if (proxy) {
    const xds = obj(proxy.xds);
    const exit = obj(proxy.lastExit);
    row(
      'Proxy',
      `${String(proxy.state)}${proxy.pid ? ` (pid ${String(proxy.pid)})` : ''}, ${String(proxy.restarts ?? 0)} restarts` +
        (exit ? `, last exit ${String(exit.code ?? exit.signal)} at ${String(exit.at)}` : ''),
    );
    if (xds) {
      row('Pilot', xds.connected ? 'connected' : 'NOT CONNECTED (serving the last config)');
      const versions = obj(xds.versions) ?? {};
      for (const [type, version] of Object.entries(versions))
        row(
          `  ${type.replace(/^type\.googleapis\.com\/envoy\.config\.\w+\.v3\./, '')}`,
          `ACKed version ${String(version)}`,
        );
    }
  } else row('Proxy', 'disabled (identity only)');
  const capture = obj(s.capture);
  if (capture) {
    if (capture.mode === 'none')
      row('Capture', 'off (explicit mode: applications dial 127.0.0.1:PORT)');
    else
      row(
        'Capture',
        `${String(capture.mode)} via iptables-${String(capture.backend)}, ` +
          (capture.installed
            ? capture.upToDate
              ? 'installed'
              : `installed but DIFFERENT: ${(capture.differences as string[] | undefined)?.join('; ')}`
            : 'not installed'),
      );
  }
  const dns = obj(s.dns);
  row(
    'DNS',
    dns
      ? `${String(dns.listen)}, ${String(dns.names)} mesh names, forwarding to ${((dns.upstreams as string[] | undefined) ?? []).join(', ') || 'nothing'}`
      : 'off',
  );
  const pl = obj(s.proxyless);
  row(
    'Proxyless',
    pl
      ? `xDS on unix://${String(pl.socket)} (${String(pl.streams)} streams), bootstrap ${String(pl.bootstrapFile)}`
      : 'off',
  );
  return `${lines.join('\n')}\n`;
}

export const statusCommand: CommandModule<object, StatusArgs> = {
  command: 'status',
  describe:
    "Show this host's mesh state from its node agent: identity, registration, proxy, pilot connection, capture, DNS",
  builder: y =>
    y
      .option('agent', {
        type: 'string',
        default: DEFAULT_AGENT,
        describe: "The node agent's status server (status.listen in node-agent.yaml)",
      })
      .option('output', {
        alias: 'o',
        type: 'string',
        choices: ['text', 'json'],
        default: 'text',
        describe: 'Output format',
      })
      .example('$0 status', 'Is this host meshed?')
      .example(
        '$0 status -o json | jq .proxy.xds',
        'What config the proxy ACKed',
      ) as unknown as Argv<StatusArgs>,
  handler: async args => {
    const status = await fetchStatus(args.agent);
    process.stdout.write(
      args.output === 'json' ? `${JSON.stringify(status, null, 2)}\n` : renderStatus(status),
    );
    if (!status.ready) process.exitCode = 1;
  },
};
