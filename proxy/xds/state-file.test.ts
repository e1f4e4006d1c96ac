import * as fs from 'node:fs';
import * as path from 'node:path';
import { makeTmpDir } from '../../test/helpers/tmp-dir';
import { parseStateSnapshot, readStateFile, writeStateFile } from './state-file';
import type { StateSnapshot } from './xds-state';

const NOW = '2026-01-01T00:00:00.000Z';
const good = (): Record<string, unknown> => ({
  format: 1,
  nodeId: 'n',
  savedAt: NOW,
  versions: { clusters: '3' },
  resources: {
    clusters: [{ name: 'c', version: '3', lastUpdated: NOW, resource: { name: 'c' } }],
  },
});

describe('parseStateSnapshot', () => {
  it('reads a snapshot, filling kinds it does not mention', () => {
    expect(parseStateSnapshot(JSON.stringify(good()))).toEqual({
      format: 1,
      nodeId: 'n',
      savedAt: NOW,
      versions: { clusters: '3', endpoints: '', listeners: '', routes: '' },
      resources: {
        clusters: [{ name: 'c', version: '3', lastUpdated: NOW, resource: { name: 'c' } }],
        endpoints: [],
        listeners: [],
        routes: [],
      },
    });
  });

  const with_ = (patch: (o: Record<string, unknown>) => void) => {
    const o = good();
    patch(o);
    return JSON.stringify(o);
  };
  it.each([
    { name: 'rejects text that is not JSON', text: '{"format":', error: 'state file is not JSON' },
    { name: 'rejects a list', text: '[]', error: 'state file: want an object' },
    {
      name: 'rejects another format',
      text: with_(o => (o.format = 2)),
      error: 'state file: format 2 is not 1',
    },
    {
      name: 'rejects a resource list that is not a list',
      text: with_(o => (o.resources = { routes: {} })),
      error: 'state file: resources.routes: want a list',
    },
    {
      name: 'rejects a resource without a name',
      text: with_(
        o => (o.resources = { listeners: [{ version: '1', lastUpdated: NOW, resource: {} }] }),
      ),
      error: 'state file: resources.listeners[0].name: want a name',
    },
    {
      name: 'rejects a bad time',
      text: with_(
        o =>
          (o.resources = {
            clusters: [{ name: 'c', version: '1', lastUpdated: 'yesterday', resource: {} }],
          }),
      ),
      error: 'state file: resources.clusters[0].lastUpdated: want an ISO 8601 time',
    },
  ])('$name', ({ text, error }) => {
    expect(() => parseStateSnapshot(text)).toThrow(error);
  });
});

describe('state file I/O', () => {
  const tmp = makeTmpDir('sail-xds-state-');
  afterAll(() => tmp.cleanup());

  it('reads nothing when there is no file, and reads back what it wrote (mode 0600, directory created)', async () => {
    const file = path.join(tmp.dir, 'state', 'proxy-xds.json');
    expect(await readStateFile(file)).toBeUndefined();
    const snapshot = parseStateSnapshot(JSON.stringify(good())) as StateSnapshot;
    await writeStateFile(file, snapshot);
    expect(await readStateFile(file)).toEqual(snapshot);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.readdirSync(path.dirname(file))).toEqual(['proxy-xds.json']);
    expect(fs.statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
  });
});
