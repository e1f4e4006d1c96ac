import * as fs from 'node:fs';
import * as path from 'node:path';
import { silentLogger } from '../../common/logging';
import { makeTmpDir } from '../../test/helpers/tmp-dir';
import { LogCapture } from '../../test/helpers/log-capture';
import { FileStore, FILE_STORE_PATH } from './file-store';
import type { ConfigStore } from './store';
import { describeConfigStore, makeObject } from './store-suite';

describeConfigStore('FileStore', async () => {
  const tmp = makeTmpDir('sail-file-store-');
  const open: ConfigStore[] = [];
  const make = async () => {
    const s = new FileStore({ dataDir: tmp.dir, logger: silentLogger() });
    open.push(s);
    await s.start();
    return s;
  };
  let current = await make();
  return {
    store: current,
    restart: async () => {
      await current.close();
      current = await make();
      return current;
    },
    cleanup: async () => {
      await Promise.all(open.map(s => s.close()));
      tmp.cleanup();
    },
  };
});

describe('FileStore', () => {
  let tmp: { dir: string; cleanup: () => void };
  let file: string;
  beforeEach(() => {
    tmp = makeTmpDir('sail-file-store-');
    file = path.join(tmp.dir, FILE_STORE_PATH);
  });
  afterEach(() => tmp.cleanup());

  async function started(logger = silentLogger()): Promise<FileStore> {
    const s = new FileStore({ dataDir: tmp.dir, logger });
    await s.start();
    return s;
  }

  it('keeps its snapshot in DATA_DIR/config/store.json, private to pilot, one object per line', async () => {
    const s = await started();
    await s.write({
      put: [makeObject('ServiceEntry', 'default', 'a'), makeObject('Gateway', 'default', 'g')],
    });
    await s.close();
    expect(s.file).toBe(file);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
    const lines = fs.readFileSync(file, 'utf8').trimEnd().split('\n');
    expect(lines).toHaveLength(4);
    expect(JSON.parse(fs.readFileSync(file, 'utf8'))).toMatchObject({
      format: 'sail-config-store/v1',
      revision: 1,
      objects: [{ kind: 'ServiceEntry' }, { kind: 'Gateway' }],
    });
  });

  it('leaves the file untouched by a write that fails or changes nothing', async () => {
    const s = await started();
    await s.write({ put: [makeObject('ServiceEntry', 'default', 'a')] });
    const before = fs.readFileSync(file, 'utf8');
    const mtime = fs.statSync(file).mtimeMs;
    await s.write({ put: [makeObject('ServiceEntry', 'default', 'a')] });
    await expect(
      s.write({ delete: [{ kind: 'Gateway', namespace: 'x', name: 'y' }] }),
    ).rejects.toThrow();
    expect(fs.readFileSync(file, 'utf8')).toBe(before);
    expect(fs.statSync(file).mtimeMs).toBe(mtime);
    await s.close();
  });

  it('refuses to start over a corrupt snapshot, naming the file', async () => {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, '{"format":"sail-config-store/v1","revision":3,"objects":[\n{"kind":');
    const s = new FileStore({ dataDir: tmp.dir, logger: silentLogger() });
    const err = await s.start().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toContain(file);
    expect((err as Error).message).toContain('not valid JSON');
    expect(s.ready).toBe(false);
    // Nothing was overwritten.
    expect(fs.readFileSync(file, 'utf8')).toContain('"revision":3');
  });

  it.each([
    ['another format', { format: 'x', revision: 0, objects: [] }, 'format is "x"'],
    [
      'a bad revision',
      { format: 'sail-config-store/v1', revision: -1, objects: [] },
      'revision -1',
    ],
    [
      'an unknown kind',
      {
        format: 'sail-config-store/v1',
        revision: 1,
        objects: [{ ...makeObject('ServiceEntry', 'a', 'b'), kind: 'Pod' }],
      },
      'objects[0]: kind "Pod"',
    ],
    [
      'a version above the revision',
      {
        format: 'sail-config-store/v1',
        revision: 1,
        objects: [
          {
            ...makeObject('ServiceEntry', 'a', 'b'),
            metadata: { name: 'b', namespace: 'a', resourceVersion: '2' },
          },
        ],
      },
      'objects[0]: metadata.resourceVersion "2"',
    ],
    [
      'a duplicate',
      {
        format: 'sail-config-store/v1',
        revision: 1,
        objects: [1, 2].map(() => ({
          ...makeObject('ServiceEntry', 'a', 'b'),
          metadata: { name: 'b', namespace: 'a', resourceVersion: '1' },
        })),
      },
      'objects[1]: ServiceEntry a/b appears twice',
    ],
  ])('rejects a snapshot with %s', async (_name, content, message) => {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, JSON.stringify(content));
    const err = await new FileStore({ dataDir: tmp.dir, logger: silentLogger() })
      .start()
      .catch((e: unknown) => e);
    expect((err as Error).message).toContain(`config store file ${file} is corrupt: ${message}`);
  });

  it('ignores a write cut short by a crash (its temporary file) and removes it', async () => {
    const s = await started();
    await s.write({ put: [makeObject('ServiceEntry', 'default', 'a')] });
    await s.close();
    // What writeFileAtomic leaves when the process dies before its rename.
    const tmpFile = path.join(path.dirname(file), '.store.json.0123456789ab.tmp');
    fs.writeFileSync(tmpFile, '{"format":"sail-config-store/v1","revision":2,"obj');
    const log = new LogCapture();
    const again = await started(log.logger);
    expect(again.list().map(o => o.metadata.name)).toEqual(['a']);
    expect(fs.existsSync(tmpFile)).toBe(false);
    expect(log.find('Removed unfinished config write', 'info')).toHaveLength(1);
    expect(log.find('Loaded config store', 'info')[0]).toMatchObject({ objects: 1, revision: 1 });
    await again.close();
  });

  it('stores nothing and announces nothing when the snapshot cannot be written', async () => {
    const s = await started();
    await s.write({ put: [makeObject('ServiceEntry', 'default', 'a')] });
    const calls: unknown[] = [];
    s.watch(events => calls.push(events));
    // A directory where the snapshot goes: the rename fails (even for root, unlike permissions).
    fs.rmSync(file);
    fs.mkdirSync(file);
    const err = await s
      .write({ put: [makeObject('ServiceEntry', 'default', 'b')] })
      .catch((e: unknown) => e);
    expect((err as Error).message).toContain(`failed to write config store file ${file}`);
    expect(s.list().map(o => o.metadata.name)).toEqual(['a']);
    expect(calls).toEqual([]);
    // No temporary file is left behind, and the store works again once the disk does.
    expect(fs.readdirSync(path.dirname(file))).toEqual(['store.json']);
    fs.rmdirSync(file);
    const ok = await s.write({ put: [makeObject('ServiceEntry', 'default', 'b')] });
    expect(ok.put[0]?.metadata.resourceVersion).toBe('2');
    await s.close();
  });

  it('refuses writes before start and a second start', async () => {
    const s = new FileStore({ dataDir: tmp.dir, logger: silentLogger() });
    expect(s.ready).toBe(false);
    await expect(s.write({})).rejects.toMatchObject({ code: 'PILOT_NOT_READY' });
    await s.start();
    await expect(s.start()).rejects.toMatchObject({ code: 'COMMON_ALREADY_STARTED' });
    await s.close();
    expect(s.ready).toBe(false);
  });
});
