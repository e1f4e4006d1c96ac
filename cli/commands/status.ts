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
import type { HostMeshStatus, ReadinessReport } from '../../node-agent';

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

function fetchStatus(address: string, timeoutMs = 5_000): Promise<StatusDocument> {
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
            resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as StatusDocument);
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

/** The `/status` document: readiness, the node name and the mesh side (HostMeshStatus). */
export type StatusDocument = ReadinessReport & { node?: string } & Partial<HostMeshStatus>;

function duration(seconds: number): string {
  if (seconds >= 86_400)
    return `${Math.floor(seconds / 86_400)}d${Math.floor((seconds % 86_400) / 3600)}h`;
  if (seconds >= 3600) return `${Math.floor(seconds / 3600)}h${Math.floor((seconds % 3600) / 60)}m`;
  if (seconds >= 60) return `${Math.floor(seconds / 60)}m${seconds % 60}s`;
  return `${seconds}s`;
}

/** `type.googleapis.com/envoy.config.listener.v3.Listener` → `Listener`. */
const shortType = (typeUrl: string) => typeUrl.slice(typeUrl.lastIndexOf('.') + 1);

/** `, 2 workers` (`, 1 of 2 workers` while one restarts) for a `--concurrency` proxy. */
function workersText(w: { concurrency: number; live: number } | undefined): string {
  if (!w) return '';
  return w.live === w.concurrency
    ? `, ${w.concurrency} workers`
    : `, ${w.live} of ${w.concurrency} workers`;
}

/** The human form of `/status`. */
export function renderStatus(s: StatusDocument): string {
  const lines: string[] = [];
  const row = (k: string, v: string) => lines.push(`${`${k}:`.padEnd(14)}${v}`);
  row('Node', `${s.node ?? '?'}  ${s.ready ? 'READY' : 'NOT READY'}`);
  row('Address', `${s.address ?? '-'}  (node id ${s.nodeId ?? '-'})`);
  row(
    'Identity',
    s.spiffeId
      ? `${s.spiffeId}, expires ${s.notAfter ?? '?'} (in ${duration(s.secondsLeft)})`
      : 'none yet (waiting for the CA)',
  );
  const reg = s.registration;
  let regText = '-';
  if (reg) {
    regText = reg.registered
      ? 'registered'
      : reg.connected
        ? 'connecting'
        : 'not connected to pilot';
    if (reg.healthy !== undefined) regText += reg.healthy ? ', healthy' : ', UNHEALTHY';
    if (reg.lastMessage) regText += ` (${reg.lastMessage})`;
  }
  row('Registration', regText);
  const proxy = s.proxy;
  if (proxy) {
    const exit = proxy.lastExit;
    row(
      'Proxy',
      `${proxy.state}${proxy.pid !== undefined ? ` (pid ${proxy.pid}${workersText(proxy.workers)})` : ''}, ${proxy.restarts} restarts` +
        (exit ? `, last exit ${exit.code ?? exit.signal ?? '?'} at ${exit.at}` : ''),
    );
    if (proxy.xds) {
      row('Pilot', proxy.xds.connected ? 'connected' : 'NOT CONNECTED (serving the last config)');
      for (const [type, version] of Object.entries(proxy.xds.versions))
        row(`  ${shortType(type)}`, `ACKed version ${version}`);
    }
  } else row('Proxy', 'disabled (identity only)');
  const capture = s.capture;
  if (capture) {
    if (!('backend' in capture))
      row('Capture', 'off (explicit mode: applications dial 127.0.0.1:PORT)');
    else {
      const state = !capture.installed
        ? 'not installed'
        : capture.upToDate
          ? 'installed'
          : `installed but DIFFERENT: ${capture.differences.join('; ')}`;
      row('Capture', `${capture.mode} via iptables-${capture.backend}, ${state}`);
    }
  }
  const dns = s.dns;
  row(
    'DNS',
    dns
      ? `${dns.listen}, ${dns.names} mesh names (${dns.table.connected ? 'from pilot' : `pilot not connected; from ${dns.table.source}`}), forwarding to ${dns.upstreams.join(', ') || 'nothing'}`
      : 'off',
  );
  const pl = s.proxyless;
  row(
    'Proxyless',
    pl
      ? `xDS on unix://${pl.socket} (${pl.streams} streams), bootstrap ${pl.bootstrapFile}`
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
