/**
 * `sail join`: prepares a host to join the mesh. Writes the agent config (commented YAML), the join
 * token (0600) and the control plane's root (`root-cert.pem`) into the config file's directory.
 * It starts nothing: `systemctl enable --now sail-node-agent` does.
 *
 * The root comes from a file (`--ca-root`), or from the CA itself checked against a fingerprint
 * the operator got out of band (`--ca-fingerprint`, trust on first use made safe): the bundle is
 * fetched over unverified TLS, the root whose SHA-256 matches is kept, and a second, verified
 * call proves the CA holds a serving certificate from that root.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeFileAtomic } from '../common/fs';
import { InvalidInputError, getErrorMessage } from '../common/errors';
import { parseHostPort } from '../common/config';
import { silentLogger } from '../common/logging';
import {
  fingerprintSha256,
  isValidName,
  isValidTrustDomain,
  parseCertificate,
  parseCertificatesPem,
  toPem,
} from '../common/pki';
import {
  CA_PORT,
  DEFAULT_CONFIG_FILE,
  DEFAULT_TRUST_DOMAIN,
  controlPlaneSpiffeId,
  isHost,
  isLabelKey,
  isLabelValue,
  parseNodeAgentConfig,
} from './config';
import { FingerprintMismatchError, JoinConfigExistsError } from './errors';
import {
  CaClient,
  DEFAULT_CA_REQUEST_TIMEOUT_MS,
  fetchTrustBundleUnverified,
} from './identity/ca-client';
import { workloadSpiffeId } from './identity/csr';
import type { WorkloadPort } from './options';

/** File names `sail join` writes next to the config file. */
export const JOIN_TOKEN_FILE = 'join-token';
export const JOIN_ROOT_CERT_FILE = 'root-cert.pem';

/** Inputs of {@link join}; flag names are given in error messages. */
export interface JoinOptions {
  /** `--control-plane`: host name or IP of the control plane (no port). */
  readonly controlPlane: string;
  /** `--token`: the join token from `sail token create`. */
  readonly token: string;
  /** `--ca-root`: PEM file with the control plane's root certificate(s). */
  readonly caRootFile?: string;
  /** `--ca-fingerprint`: SHA-256 of the root, hex (colons allowed, any case). */
  readonly caFingerprint?: string;
  /** `--node`: default the host name. */
  readonly nodeName?: string;
  readonly namespace?: string;
  readonly serviceAccount?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly ports?: readonly WorkloadPort[];
  /** `--config`: default DEFAULT_CONFIG_FILE. */
  readonly configFile?: string;
  /** `--trust-domain`: default the CA's (with --ca-fingerprint) or cluster.local. */
  readonly trustDomain?: string;
  /** `--ca-address`: HOST:PORT of the CA when it is not CONTROL_PLANE:15012. */
  readonly caAddress?: string;
  /** `--capture-mode`: how the agent captures traffic (default redirect). */
  readonly captureMode?: 'redirect' | 'tproxy' | 'none';
  /** `--force`: overwrite an existing config. */
  readonly force?: boolean;
  /** Deadline of each CA call. */
  readonly timeoutMs?: number;
  /** The host name (default os.hostname()); injectable for tests. */
  readonly hostname?: string;
  /** Time stamp for the config header; injectable for tests. */
  readonly now?: Date;
}

/** What {@link join} wrote and decided. */
export interface JoinResult {
  readonly configFile: string;
  readonly rootCertFile: string;
  readonly tokenFile: string;
  readonly nodeName: string;
  readonly trustDomain: string;
  readonly spiffeId: string;
  readonly caAddress: string;
  /** SHA-256 (lowercase hex) of each root written. */
  readonly rootFingerprints: readonly string[];
}

const PORT_NAME_RE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

function invalid(flag: string, message: string): InvalidInputError {
  return new InvalidInputError(`${flag}: ${message}`);
}

/**
 * Normalises a certificate fingerprint to 64 lowercase hex digits.
 * @throws InvalidInputError naming --ca-fingerprint when it is not a SHA-256 in hex
 */
export function parseFingerprint(text: string): string {
  const hex = text
    .trim()
    .replace(/^sha256[:=]/i, '')
    .replace(/[:\s]/g, '')
    .toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(hex)) {
    throw invalid(
      '--ca-fingerprint',
      `${JSON.stringify(text)} is not a SHA-256 fingerprint: want 64 hex digits, colons allowed`,
    );
  }
  return hex;
}

/**
 * Parses `--labels k=v,k2=v2` (the flag may repeat).
 * @throws InvalidInputError naming --labels
 */
export function parseLabelsFlag(values: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of values
    .flatMap(v => v.split(','))
    .map(s => s.trim())
    .filter(s => s !== '')) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw invalid('--labels', `${JSON.stringify(item)} is not KEY=VALUE`);
    const key = item.slice(0, eq);
    const value = item.slice(eq + 1);
    if (!isLabelKey(key))
      throw invalid(
        '--labels',
        `invalid label key ${JSON.stringify(key)}: want [prefix/]name, name at most 63 of [A-Za-z0-9-_.]`,
      );
    if (!isLabelValue(value))
      throw invalid(
        '--labels',
        `invalid value ${JSON.stringify(value)} for label ${key}: want at most 63 of [A-Za-z0-9-_.]`,
      );
    if (key in out) throw invalid('--labels', `label ${key} is given twice`);
    out[key] = value;
  }
  return out;
}

/**
 * Parses repeated `--port NAME:PORT`.
 * @throws InvalidInputError naming --port
 */
export function parsePortFlags(values: readonly string[]): WorkloadPort[] {
  const out: WorkloadPort[] = [];
  for (const v of values) {
    const m = /^([^:]+):(\d{1,5})$/.exec(v.trim());
    if (!m) throw invalid('--port', `${JSON.stringify(v)} is not NAME:PORT (e.g. http:9080)`);
    const name = m[1] as string;
    const port = Number(m[2]);
    if (!PORT_NAME_RE.test(name))
      throw invalid(
        '--port',
        `invalid port name ${JSON.stringify(name)}: want lowercase letters, digits and "-", e.g. http, grpc-api`,
      );
    if (port < 1 || port > 65535) throw invalid('--port', `port ${port} is out of range 1-65535`);
    if (out.some(p => p.name === name)) throw invalid('--port', `port name ${name} is given twice`);
    if (out.some(p => p.port === port)) throw invalid('--port', `port ${port} is given twice`);
    out.push({ name, port });
  }
  return out;
}

const q = (s: string) => JSON.stringify(s);

/** The config file `sail join` writes: YAML with comments, every string quoted. */
export function renderJoinConfig(v: {
  nodeName: string;
  trustDomain: string;
  controlPlane: string;
  caAddress?: string;
  rootCertFile: string;
  tokenFile: string;
  rootFingerprints: readonly string[];
  namespace: string;
  serviceAccount: string;
  labels: Readonly<Record<string, string>>;
  ports: readonly WorkloadPort[];
  captureMode?: 'redirect' | 'tproxy' | 'none';
  now: Date;
}): string {
  const fp = v.rootFingerprints.map(f => f.match(/../g)?.join(':') ?? f);
  const lines = [
    `# Sail node agent configuration, written by \`sail join\` at ${v.now.toISOString()}.`,
    '# Check edits with `sail node-agent --validate --config FILE`; every key is in docs/config.md.',
    '',
    '# The name the control plane knows this host by (the CN of its certificate).',
    `nodeName: ${q(v.nodeName)}`,
    '# SPIFFE trust domain of the mesh.',
    `trustDomain: ${q(v.trustDomain)}`,
    '',
    'controlPlane:',
    '  # The CA is reached on :15012, pilot on :15010 and mixer on :9091 of this host unless set below.',
    `  address: ${q(v.controlPlane)}`,
    ...(v.caAddress ? [`  caAddress: ${q(v.caAddress)}`] : []),
    `  # Trust anchor for the control plane; SHA-256 ${fp.join(', ')}.`,
    `  rootCertFile: ${q(v.rootCertFile)}`,
    '  # Single-use join token; the agent deletes it once it has its first certificate.',
    `  tokenFile: ${q(v.tokenFile)}`,
    '',
    'workload:',
    '  # The workload identity is spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>.',
    `  namespace: ${q(v.namespace)}`,
    `  serviceAccount: ${q(v.serviceAccount)}`,
    ...(Object.keys(v.labels).length > 0
      ? ['  labels:', ...Object.entries(v.labels).map(([k, val]) => `    ${q(k)}: ${q(val)}`)]
      : ['  labels: {}']),
    '  # Port names carry the protocol: http-, http2-, grpc-, tcp-, tls-, mongo-, redis-.',
    ...(v.ports.length > 0
      ? ['  ports:', ...v.ports.map(p => `    - { name: ${q(p.name)}, port: ${p.port} }`)]
      : ['  ports: []']),
    '',
    '# Traffic capture: redirect (nat REDIRECT), tproxy (inbound by TPROXY, no NAT) or none (no',
    '# iptables; applications dial the proxy on 127.0.0.1:PORT). docs/capture.md.',
    'capture:',
    `  mode: ${q(v.captureMode ?? 'redirect')}`,
    '',
    '# Workload certificate: renewed at half its lifetime; key.pem is 0600.',
    'certs:',
    '  dir: "/var/lib/sail/certs"',
    '  ttl: "24h"',
    '',
    'status:',
    '  listen: "127.0.0.1:15020"',
    '',
  ];
  return lines.join('\n');
}

/** Reads `--ca-root`: one or more CA certificates in PEM. */
function readRootFile(file: string): string[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw invalid(
      '--ca-root',
      `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? getErrorMessage(err)}`,
    );
  }
  let ders: Buffer[];
  try {
    ders = parseCertificatesPem(text);
  } catch (err) {
    throw invalid('--ca-root', `${file} is not valid PEM: ${getErrorMessage(err)}`);
  }
  if (ders.length === 0) throw invalid('--ca-root', `${file} holds no PEM certificate`);
  ders.forEach((der, i) => {
    let isCa: boolean;
    try {
      isCa = parseCertificate(der).isCa;
    } catch (err) {
      throw invalid(
        '--ca-root',
        `certificate ${i + 1} in ${file} is malformed: ${getErrorMessage(err)}`,
      );
    }
    if (!isCa)
      throw invalid('--ca-root', `certificate ${i + 1} in ${file} is not a CA certificate`);
  });
  return ders.map(d => toPem('CERTIFICATE', d));
}

/**
 * Fetches the CA's bundle without verification, keeps the root matching `fingerprint`, then
 * proves the CA serves a certificate from that root with a verified call.
 * @throws FingerprintMismatchError when no root matches; InvalidInputError for a trust domain
 *   clash; CaRequestError when the CA cannot be reached
 */
async function fetchRootByFingerprint(
  caAddress: string,
  fingerprint: string,
  trustDomain: string | undefined,
  timeoutMs: number,
): Promise<{ rootPem: string; trustDomain: string }> {
  const bundle = await fetchTrustBundleUnverified(caAddress, timeoutMs);
  const served: string[] = [];
  let match: string | undefined;
  for (const pem of bundle.rootCerts) {
    for (const der of parseCertificatesPem(pem)) {
      const fp = fingerprintSha256(der);
      served.push(fp);
      if (fp === fingerprint) match = toPem('CERTIFICATE', der);
    }
  }
  if (!match) {
    throw new FingerprintMismatchError(
      `no root certificate of the CA at ${caAddress} has SHA-256 ${fingerprint}; it serves ${served.join(', ') || 'none'}`,
    );
  }
  if (trustDomain && bundle.trustDomain && bundle.trustDomain !== trustDomain) {
    throw invalid(
      '--trust-domain',
      `the CA at ${caAddress} serves trust domain ${bundle.trustDomain}, not ${trustDomain}`,
    );
  }
  const td = trustDomain ?? (bundle.trustDomain || DEFAULT_TRUST_DOMAIN);
  // Only the matching root is trusted: a bundle from an unverified connection could carry extras.
  const client = new CaClient({
    address: caAddress,
    serverSpiffeId: controlPlaneSpiffeId(td),
    logger: silentLogger(),
    requestTimeoutMs: timeoutMs,
  });
  try {
    client.setCredentials({ rootsPem: match });
    await client.getTrustBundle();
  } catch (err) {
    throw new FingerprintMismatchError(
      `the CA at ${caAddress} did not prove it holds a certificate for ${controlPlaneSpiffeId(td)} from root ${fingerprint}: ${getErrorMessage(err)}`,
    );
  } finally {
    client.close();
  }
  return { rootPem: match, trustDomain: td };
}

/** The first line of the sample config the sail-node-agent package installs (packaging/deb). */
export const PACKAGED_SAMPLE_MARKER = '# sail-node-agent: packaged sample';

/** True when `file` is the package's untouched-by-join sample, which `sail join` may replace. */
function isPackagedSample(file: string): boolean {
  try {
    return fs.readFileSync(file, 'utf8').startsWith(PACKAGED_SAMPLE_MARKER);
  } catch {
    return false;
  }
}

/**
 * Validates the inputs, obtains the root, and writes root, token and config (config last, so its
 * presence means the join finished).
 * @throws InvalidInputError (exit 2) naming the flag at fault; JoinConfigExistsError without
 *   --force; FingerprintMismatchError; CaRequestError when the CA cannot be reached
 */
export async function join(opts: JoinOptions): Promise<JoinResult> {
  // Validate every flag before touching the network or the disk.
  if (!isHost(opts.controlPlane)) {
    const hint = parseHostPort(opts.controlPlane) ? '; give the port with --ca-address' : '';
    throw invalid(
      '--control-plane',
      `${JSON.stringify(opts.controlPlane)} is not a host name or IP address${hint}`,
    );
  }
  const token = opts.token.trim();
  if (token === '' || /\s/.test(token) || token.length > 4096)
    throw invalid('--token', 'want the token printed by `sail token create`');
  if ((opts.caRootFile === undefined) === (opts.caFingerprint === undefined)) {
    throw invalid(
      '--ca-root',
      'give exactly one of --ca-root FILE or --ca-fingerprint SHA256, so the control plane can be verified',
    );
  }
  const fingerprint =
    opts.caFingerprint !== undefined ? parseFingerprint(opts.caFingerprint) : undefined;
  const hostname = (opts.hostname ?? os.hostname()).toLowerCase();
  const nodeName = opts.nodeName ?? hostname;
  if (!isValidName(nodeName)) {
    throw invalid(
      '--node',
      opts.nodeName === undefined
        ? `the host name ${JSON.stringify(hostname)} is not a valid node name; pass --node`
        : `invalid node name ${JSON.stringify(nodeName)}: want lowercase letters, digits, '-' and '.'`,
    );
  }
  const namespace = opts.namespace ?? 'default';
  if (!isValidName(namespace))
    throw invalid('--namespace', `invalid namespace ${JSON.stringify(namespace)}`);
  const serviceAccount = opts.serviceAccount ?? 'default';
  if (!isValidName(serviceAccount))
    throw invalid('--service-account', `invalid service account ${JSON.stringify(serviceAccount)}`);
  if (opts.trustDomain !== undefined && !isValidTrustDomain(opts.trustDomain)) {
    throw invalid('--trust-domain', `invalid trust domain ${JSON.stringify(opts.trustDomain)}`);
  }
  if (opts.caAddress !== undefined && !((parseHostPort(opts.caAddress)?.port ?? 0) > 0)) {
    throw invalid('--ca-address', `${JSON.stringify(opts.caAddress)} is not HOST:PORT`);
  }
  const configFile = path.resolve(opts.configFile ?? DEFAULT_CONFIG_FILE);
  if (fs.existsSync(configFile) && !opts.force && !isPackagedSample(configFile))
    throw new JoinConfigExistsError(configFile);
  const dir = path.dirname(configFile);
  const rootCertFile = path.join(dir, JOIN_ROOT_CERT_FILE);
  const tokenFile = path.join(dir, JOIN_TOKEN_FILE);
  const caAddress =
    opts.caAddress ??
    (net.isIPv6(opts.controlPlane)
      ? `[${opts.controlPlane}]:${CA_PORT}`
      : `${opts.controlPlane}:${CA_PORT}`);

  let roots: string[];
  let trustDomain: string;
  if (fingerprint !== undefined) {
    const fetched = await fetchRootByFingerprint(
      caAddress,
      fingerprint,
      opts.trustDomain,
      opts.timeoutMs ?? DEFAULT_CA_REQUEST_TIMEOUT_MS,
    );
    roots = [fetched.rootPem];
    trustDomain = fetched.trustDomain;
  } else {
    roots = readRootFile(opts.caRootFile as string);
    trustDomain = opts.trustDomain ?? DEFAULT_TRUST_DOMAIN;
  }
  const rootFingerprints = roots.map(pem =>
    fingerprintSha256(parseCertificatesPem(pem)[0] as Buffer),
  );
  const text = renderJoinConfig({
    nodeName,
    trustDomain,
    controlPlane: opts.controlPlane,
    ...(opts.caAddress !== undefined ? { caAddress: opts.caAddress } : {}),
    rootCertFile,
    tokenFile,
    rootFingerprints,
    namespace,
    serviceAccount,
    labels: opts.labels ?? {},
    ports: opts.ports ?? [],
    ...(opts.captureMode !== undefined ? { captureMode: opts.captureMode } : {}),
    now: opts.now ?? new Date(),
  });
  // What we write must load: the same code path as `sail node-agent --validate`.
  parseNodeAgentConfig(configFile, text, { hostname });

  await fs.promises.mkdir(dir, { recursive: true, mode: 0o755 });
  await writeFileAtomic(rootCertFile, roots.join(''), 0o644);
  await writeFileAtomic(tokenFile, `${token}\n`, 0o600);
  await writeFileAtomic(configFile, text, 0o644);
  return {
    configFile,
    rootCertFile,
    tokenFile,
    nodeName,
    trustDomain,
    spiffeId: workloadSpiffeId({ trustDomain, namespace, serviceAccount }),
    caAddress,
    rootFingerprints,
  };
}
