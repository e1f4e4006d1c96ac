/**
 * The last-known-good xDS state on disk: the raw ACKed resources of every kind with their versions,
 * as JSON, so a proxy that restarts while pilot is down serves its last configuration at once.
 * Written atomically (a crash leaves the old file or the new one, never half of one).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../../common/fs';
import type { XdsKind } from '../model';
import { XDS_KINDS } from './resources';
import type { SnapshotResource, StateSnapshot } from './xds-state';

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Parses a state file's text.
 * @throws Error naming the first field that is wrong (a corrupt or foreign file)
 */
export function parseStateSnapshot(text: string): StateSnapshot {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error('state file is not JSON', { cause: err });
  }
  if (!isObject(json)) throw new Error('state file: want an object');
  if (json.format !== 1) throw new Error(`state file: format ${String(json.format)} is not 1`);
  if (typeof json.nodeId !== 'string') throw new Error('state file: nodeId: want a string');
  const versions = json.versions;
  const resources = json.resources;
  if (!isObject(versions)) throw new Error('state file: versions: want an object');
  if (!isObject(resources)) throw new Error('state file: resources: want an object');
  const outVersions = {} as Record<XdsKind, string>;
  const outResources = {} as Record<XdsKind, SnapshotResource[]>;
  for (const kind of XDS_KINDS) {
    const v = versions[kind] ?? '';
    if (typeof v !== 'string') throw new Error(`state file: versions.${kind}: want a string`);
    outVersions[kind] = v;
    const list = resources[kind] ?? [];
    if (!Array.isArray(list)) throw new Error(`state file: resources.${kind}: want a list`);
    outResources[kind] = list.map((r: unknown, i) => {
      const where = `state file: resources.${kind}[${i}]`;
      if (!isObject(r)) throw new Error(`${where}: want an object`);
      if (typeof r.name !== 'string' || r.name === '')
        throw new Error(`${where}.name: want a name`);
      if (typeof r.version !== 'string') throw new Error(`${where}.version: want a string`);
      if (typeof r.lastUpdated !== 'string' || Number.isNaN(Date.parse(r.lastUpdated)))
        throw new Error(`${where}.lastUpdated: want an ISO 8601 time`);
      if (!isObject(r.resource)) throw new Error(`${where}.resource: want an object`);
      return { name: r.name, version: r.version, lastUpdated: r.lastUpdated, resource: r.resource };
    });
  }
  return {
    format: 1,
    nodeId: json.nodeId,
    savedAt: typeof json.savedAt === 'string' ? json.savedAt : '',
    versions: outVersions,
    resources: outResources,
  };
}

/**
 * Reads and parses the state file; undefined when there is none.
 * @throws Error when it exists but cannot be read or parsed
 */
export async function readStateFile(file: string): Promise<StateSnapshot | undefined> {
  let text: string;
  try {
    text = await fs.promises.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`cannot read xds state file ${file}`, { cause: err });
  }
  return parseStateSnapshot(text);
}

/**
 * Writes the state file atomically (0600: it describes the mesh's topology), creating its
 * directory (0700) when missing.
 */
export async function writeStateFile(file: string, snapshot: StateSnapshot): Promise<void> {
  await fs.promises.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  await writeFileAtomic(file, JSON.stringify(snapshot), 0o600);
}
