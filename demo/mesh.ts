/**
 * What the BookInfo demo's two topologies share: where the built programs are, the workloads
 * (service, version, service account), `sail apply`, and the interface the scenario
 * (demo/scenario.ts) drives: {@link BookinfoMesh}.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { hostExec } from '../test/helpers/mesh-lab';
import type { CallSummary } from './bookinfo-apps';
import { type Doc, NAMESPACE, SERVICE_PORT, type Service } from './mesh-config';

/** build/ (this file runs compiled, from build/demo/). */
const BUILD_DIR = __dirname.split(path.sep).includes('build')
  ? path.join(__dirname, '..')
  : path.join(__dirname, '..', 'build');
/** build/cli/sail.js */
export const SAIL_JS = path.join(BUILD_DIR, 'cli', 'sail.js');
/** build/demo/bookinfo-apps.js */
export const APPS_JS = path.join(BUILD_DIR, 'demo', 'bookinfo-apps.js');

/** One BookInfo workload: what it runs and the identity it holds. */
export interface Workload {
  /** Node (host) name, also the VM's namespace name in the root topology. */
  readonly node: string;
  /** The BookInfo service, or `sleep` for the client host (no service, no ports). */
  readonly service: Service | 'sleep';
  readonly version: string;
  /** Service account: Istio's `bookinfo-<service>`. */
  readonly sa: string;
}

/**
 * The six workloads. One node agent serves one workload (one identity, one set of labels), so
 * reviews v1, v2 and v3 are three hosts: six in all. No node is named like a service: the LAN
 * resolver knows every `NODE.lan`, and `search lan` would make `details` the details VM's LAN
 * address instead of the mesh name.
 */
export const WORKLOADS: readonly Workload[] = [
  { node: 'vmpage', service: 'productpage', version: 'v1', sa: 'bookinfo-productpage' },
  { node: 'vmdetails', service: 'details', version: 'v1', sa: 'bookinfo-details' },
  { node: 'vmrev1', service: 'reviews', version: 'v1', sa: 'bookinfo-reviews' },
  { node: 'vmrev2', service: 'reviews', version: 'v2', sa: 'bookinfo-reviews' },
  { node: 'vmrev3', service: 'reviews', version: 'v3', sa: 'bookinfo-reviews' },
  { node: 'vmratings', service: 'ratings', version: 'v1', sa: 'bookinfo-ratings' },
];

/**
 * The host the demo's "browser" (the `call` client) runs on, like Istio's `sleep` sample: a
 * meshed host with an identity and a proxy but no service of its own. (Calling productpage from
 * productpage's own host would need the proxy's connection to its own address to be captured
 * inbound, which Sail's capture does not do yet.)
 */
export const CLIENT: Workload = { node: 'vmsleep', service: 'sleep', version: 'v1', sa: 'sleep' };

/** Every host: the client, then the six workloads. */
export const HOSTS: readonly Workload[] = [CLIENT, ...WORKLOADS];

/** Options of {@link BookinfoMesh.call}. */
export interface CallOptions {
  readonly count: number;
  readonly headers?: Readonly<Record<string, string>>;
  /** Per call; default 10 s. */
  readonly timeoutMs?: number;
}

/**
 * The bookinfo-apps `call` command line for `opts`: GET productpage `count` times (through the
 * proxy at `via` in explicit mode), and the bound on how long it may take.
 */
export function callCommand(
  opts: CallOptions,
  via?: string,
): { argv: string[]; timeoutMs: number } {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  return {
    argv: [
      APPS_JS,
      'call',
      '--url',
      `http://productpage:${SERVICE_PORT}/productpage`,
      ...(via !== undefined ? ['--via', via] : []),
      '--count',
      String(opts.count),
      '--timeout-ms',
      String(timeoutMs),
      ...Object.entries(opts.headers ?? {}).flatMap(([k, v]) => ['--header', `${k}:${v}`]),
    ],
    timeoutMs: opts.count * timeoutMs + 10_000,
  };
}

/** A running BookInfo on Sail, whichever topology. */
export interface BookinfoMesh {
  /** 'namespaces' (root: VMs in network namespaces, capture) or 'loopback' (the fallback). */
  readonly kind: 'namespaces' | 'loopback';
  /** `sail apply -f` of the documents, through the control plane's admin socket. */
  apply(docs: readonly Doc[]): Promise<void>;
  /** GETs productpage `count` times from productpage's host, as a browser there would. */
  call(opts: CallOptions): Promise<CallSummary>;
  /** Lines telling the user how to call productpage, see metrics and status. */
  howTo(): string[];
  /** Stops everything and removes what was made. Idempotent. */
  close(): Promise<void>;
}

/** Progress output (stdout, one line). */
export type Say = (line: string) => void;

/** `sail apply --server unix://DATA_DIR/admin.sock -f FILE` of `docs` (written to `dir`). */
export async function sailApply(dataDir: string, dir: string, docs: readonly Doc[]): Promise<void> {
  const file = path.join(dir, `apply-${Date.now()}-${Math.random().toString(16).slice(2)}.yaml`);
  fs.writeFileSync(file, docs.map(d => YAML.stringify(d)).join('---\n'));
  const r = await hostExec(process.execPath, [
    SAIL_JS,
    'apply',
    '--server',
    `unix://${path.join(dataDir, 'admin.sock')}`,
    '-f',
    file,
  ]);
  if (r.code !== 0) throw new Error(`sail apply -f ${file} exited ${r.code}: ${r.stderr.trim()}`);
}

/** `sail token create` for a workload's node and service account; resolves with the token. */
export async function createToken(dataDir: string, w: Workload): Promise<string> {
  const r = await hostExec(process.execPath, [
    SAIL_JS,
    'token',
    'create',
    '--server',
    `unix://${path.join(dataDir, 'admin.sock')}`,
    '--node',
    w.node,
    '--sa',
    `${NAMESPACE}/${w.sa}`,
  ]);
  if (r.code !== 0) throw new Error(`sail token create --node ${w.node}: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

/** The arguments of `sail join` for a workload (what an operator types on the VM). */
export function joinArgs(opts: {
  readonly w: Workload;
  readonly controlPlane: string;
  readonly token: string;
  readonly rootCert: string;
  /** The workload's http port; none for the client host. */
  readonly port?: number;
  readonly config: string;
}): string[] {
  const { w } = opts;
  return [
    SAIL_JS,
    'join',
    '--control-plane',
    opts.controlPlane,
    '--token',
    opts.token,
    '--ca-root',
    opts.rootCert,
    '--node',
    w.node,
    '--namespace',
    NAMESPACE,
    '--service-account',
    w.sa,
    '--labels',
    `app=${w.service},version=${w.version}`,
    ...(opts.port !== undefined ? ['--port', `http:${opts.port}`] : []),
    '--config',
    opts.config,
  ];
}

/**
 * Reads the agent config `sail join` wrote and writes `FILE.demo.yaml` beside it with `patch`
 * merged one level deep (what a demo host needs: its own directories, fast probes).
 */
export function patchAgentConfig(file: string, patch: Record<string, unknown>): string {
  const doc = YAML.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  const merged: Record<string, unknown> = { ...doc };
  for (const [k, v] of Object.entries(patch)) {
    const old = doc[k];
    merged[k] =
      v && typeof v === 'object' && !Array.isArray(v) && old && typeof old === 'object'
        ? { ...(old as Record<string, unknown>), ...(v as Record<string, unknown>) }
        : v;
  }
  const out = file.replace(/\.yaml$/, '.demo.yaml');
  fs.writeFileSync(out, YAML.stringify(merged));
  return out;
}

/** The control plane's ports. */
export interface ControlPlanePorts {
  readonly ca: number;
  readonly pilot: number;
  readonly admin: number;
}

/** The well-known ones. */
export const CONTROL_PLANE_PORTS: ControlPlanePorts = { ca: 15012, pilot: 15010, admin: 15014 };

/** The control plane's arguments (fast pushes, short grace: a demo, not production). */
export function controlPlaneArgs(
  dataDir: string,
  ip: string,
  ports: ControlPlanePorts = CONTROL_PLANE_PORTS,
): string[] {
  return [
    SAIL_JS,
    'control-plane',
    '--data-dir',
    dataDir,
    '--ca-listen',
    `${ip}:${ports.ca}`,
    '--pilot-listen',
    `${ip}:${ports.pilot}`,
    '--admin-listen',
    `${ip}:${ports.admin}`,
    '--debounce-after',
    '10ms',
    '--debounce-max',
    '100ms',
    '--workload-grace',
    '5s',
  ];
}

/** Parses the `call` client's output. */
export function parseCallSummary(stdout: string, stderr: string, code: number): CallSummary {
  try {
    return JSON.parse(stdout.trim().split('\n').pop() ?? '') as CallSummary;
  } catch {
    throw new Error(`the productpage client failed (exit ${code}): ${stderr.trim()}${stdout}`);
  }
}
