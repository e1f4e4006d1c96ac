/**
 * Registered workloads across a pilot restart. Registrations live in pilot's memory (the hosts'
 * streams are their liveness), so a restarted pilot would start with none and send every proxy
 * that reconnects empty endpoints until the hosts have registered again. Instead pilot writes the
 * workloads it holds when it stops, and takes them back when it starts
 * (WorkloadRegistry.restore): they stay for a grace period, as if their streams had just dropped.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../../common/fs';
import { registrationInvalid } from '../errors';
import type { HostFacts, RegisteredWorkload, WorkloadPortSpec } from './workloads';

/** Where the snapshot goes, relative to pilot's data directory. */
export const WORKLOAD_SNAPSHOT_PATH = path.join('registry', 'workloads.json');

const VERSION = 1;

/** Writes `workloads` to `file` atomically (mode 0600, directory created 0700). */
export async function saveWorkloadSnapshot(
  file: string,
  workloads: readonly RegisteredWorkload[],
  now = new Date(),
): Promise<void> {
  await fs.promises.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const doc = { version: VERSION, savedAt: now.toISOString(), workloads };
  await writeFileAtomic(file, JSON.stringify(doc, null, 1) + '\n', 0o600);
}

/**
 * Reads the snapshot at `file` and removes it (a snapshot is used once: a pilot that crashes
 * later must not bring back workloads that left since). Nothing there: `[]`.
 * @throws InvalidInputError (PILOT_REGISTRATION_INVALID) naming the file and the field at fault
 *   when the file is not a snapshot; the file is removed all the same
 */
export async function takeWorkloadSnapshot(file: string): Promise<RegisteredWorkload[]> {
  let text: string;
  try {
    text = await fs.promises.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  await fs.promises.rm(file, { force: true });
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw registrationInvalid(`${file}: not JSON: ${(err as Error).message}`);
  }
  const top = record(doc, file, '');
  if (top.version !== VERSION)
    throw registrationInvalid(`${file}: version: ${JSON.stringify(top.version)} is not ${VERSION}`);
  if (!Array.isArray(top.workloads)) throw registrationInvalid(`${file}: workloads: want a list`);
  return top.workloads.map((w, i) => workloadOf(w, file, `workloads[${i}]`));
}

function record(v: unknown, file: string, at: string): Record<string, unknown> {
  if (!v || typeof v !== 'object' || Array.isArray(v))
    throw registrationInvalid(`${file}: ${at || 'document'}: want an object`);
  return v as Record<string, unknown>;
}

function workloadOf(v: unknown, file: string, at: string): RegisteredWorkload {
  const w = record(v, file, at);
  const fail = (field: string, want: string): never => {
    throw registrationInvalid(
      `${file}: ${at}.${field}: want ${want}, got ${JSON.stringify(w[field]) ?? 'nothing'}`,
    );
  };
  const str = (field: string): string =>
    typeof w[field] === 'string' ? w[field] : fail(field, 'a string');
  const optStr = (field: string): string | undefined =>
    w[field] === undefined ? undefined : str(field);
  const num = (field: string): number =>
    typeof w[field] === 'number' && Number.isFinite(w[field]) ? w[field] : fail(field, 'a number');

  const labels = record(w.labels, file, `${at}.labels`);
  for (const [k, x] of Object.entries(labels))
    if (typeof x !== 'string') fail(`labels[${JSON.stringify(k)}]`, 'a string');
  if (!Array.isArray(w.ports)) fail('ports', 'a list');
  const ports: WorkloadPortSpec[] = (w.ports as unknown[]).map((p, i) => {
    const port = record(p, file, `${at}.ports[${i}]`);
    if (typeof port.name !== 'string' || typeof port.port !== 'number')
      fail(`ports[${i}]`, '{name, port}');
    return { name: port.name as string, port: port.port as number };
  });
  let host: HostFacts | undefined;
  if (w.host !== undefined) {
    const h = record(w.host, file, `${at}.host`);
    const ok =
      typeof h.os === 'string' &&
      typeof h.kernel === 'string' &&
      typeof h.cpus === 'number' &&
      typeof h.memoryBytes === 'number' &&
      typeof h.hostname === 'string';
    if (!ok) fail('host', '{os, kernel, cpus, memoryBytes, hostname}');
    host = {
      os: h.os as string,
      kernel: h.kernel as string,
      cpus: h.cpus as number,
      memoryBytes: h.memoryBytes as number,
      hostname: h.hostname as string,
    };
  }
  if (typeof w.healthy !== 'boolean') fail('healthy', 'true or false');
  const group = optStr('group');
  const locality = optStr('locality');
  const network = optStr('network');
  return {
    name: str('name'),
    node: str('node'),
    namespace: str('namespace'),
    serviceAccount: str('serviceAccount'),
    spiffeId: str('spiffeId'),
    address: str('address'),
    labels: labels as Record<string, string>,
    ports,
    ...(host ? { host } : {}),
    ...(group !== undefined ? { group } : {}),
    ...(locality !== undefined ? { locality } : {}),
    ...(network !== undefined ? { network } : {}),
    weight: num('weight'),
    healthy: w.healthy as boolean,
    healthMessage: str('healthMessage'),
    connected: false,
    registeredAtMs: num('registeredAtMs'),
  };
}
