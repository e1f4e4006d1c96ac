import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { silentLogger } from '../../common/logging';
import { prom } from '../../common/metrics';
import { NameTableClient } from './name-table-client';
import type { NameTableEntry } from './names';

describe('NameTableClient state file', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sail-dns-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  function client(stateFile: string, tables: ReadonlyMap<string, NameTableEntry>[]) {
    return new NameTableClient({
      logger: silentLogger(),
      registry: new prom.Registry(),
      // Never reached: without an identity the client only waits.
      pilotAddress: '127.0.0.1:1',
      pilotSpiffeId: 'spiffe://cluster.local/ns/sail-system/sa/control-plane',
      nodeId: 'sidecar~10.0.0.5~vm-1.default~default.svc.cluster.local',
      identity: () => undefined,
      stateFile,
      onTable: t => tables.push(t),
    });
  }

  it('hands the last known table to onTable at start, without pilot', async () => {
    const file = path.join(dir, 'dns-table.json');
    fs.writeFileSync(
      file,
      JSON.stringify({
        format: 1,
        version: '7',
        savedAt: '2024-01-01T00:00:00.000Z',
        table: {
          'reviews.default.svc.cluster.local': {
            ips: ['10.0.0.1'],
            shortname: 'reviews',
            namespace: 'default',
          },
        },
      }),
    );
    const tables: ReadonlyMap<string, NameTableEntry>[] = [];
    const c = client(file, tables);
    await c.start();
    expect(tables).toHaveLength(1);
    expect(tables[0]!.get('reviews.default.svc.cluster.local')).toEqual({
      ips: ['10.0.0.1'],
      shortname: 'reviews',
      namespace: 'default',
    });
    expect(c.status()).toMatchObject({
      connected: false,
      source: 'state-file',
      version: '7',
      names: 1,
    });
    await c.close();
    await c.close();
  });

  it.each([
    ['not JSON', '{'],
    ['another format', JSON.stringify({ format: 2, table: {} })],
    ['a bad IP', JSON.stringify({ format: 1, version: '1', table: { 'a.b': { ips: ['nope'] } } })],
  ])('ignores a state file with %s, and a missing one', async (_what, text) => {
    const file = path.join(dir, 'dns-table.json');
    fs.writeFileSync(file, text);
    const tables: ReadonlyMap<string, NameTableEntry>[] = [];
    const c = client(file, tables);
    await c.start();
    expect(tables).toHaveLength(0);
    expect(c.status().source).toBe('none');
    await c.close();
    const missing = client(path.join(dir, 'none.json'), tables);
    await missing.start();
    await missing.close();
    expect(tables).toHaveLength(0);
  });
});
