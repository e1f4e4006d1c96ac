import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { type FileSetEntry, writeFileAtomic, writeFileAtomicSync, writeFileSetAtomic } from './fs';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sail-fs-test-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const modeOf = (file: string): number => fs.statSync(file).mode & 0o777;

/** Runs `fn` with a restrictive umask, so tests see that modes are set explicitly. */
async function withUmask<T>(mask: number, fn: () => Promise<T> | T): Promise<T> {
  const old = process.umask(mask);
  try {
    return await fn();
  } finally {
    process.umask(old);
  }
}

describe.each([
  { name: 'writeFileAtomic', write: writeFileAtomic },
  {
    name: 'writeFileAtomicSync',
    // async, so a synchronous throw becomes a rejection like writeFileAtomic's
    write: async (file: string, data: string | Buffer, mode?: number) => {
      writeFileAtomicSync(file, data, mode);
    },
  },
])('$name', ({ write }) => {
  it('writes the data with mode 0644 by default', async () => {
    const file = path.join(dir, 'root-cert.pem');
    await write(file, 'hello');
    expect(fs.readFileSync(file, 'utf8')).toBe('hello');
    expect(modeOf(file)).toBe(0o644);
  });

  it.each([0o600, 0o640, 0o644, 0o755])('sets mode %o whatever the umask', async mode => {
    const file = path.join(dir, 'key.pem');
    await withUmask(0o077, () => write(file, Buffer.from([1, 2, 3]), mode));
    expect(modeOf(file)).toBe(mode);
    expect(fs.readFileSync(file).equals(Buffer.from([1, 2, 3]))).toBe(true);
  });

  it('replaces an existing file, taking the new mode', async () => {
    const file = path.join(dir, 'key.pem');
    fs.writeFileSync(file, 'old', { mode: 0o644 });
    await write(file, 'new', 0o600);
    expect(fs.readFileSync(file, 'utf8')).toBe('new');
    expect(modeOf(file)).toBe(0o600);
  });

  it('replaces the file in one rename: an open reader keeps the old contents', async () => {
    const file = path.join(dir, 'cert.pem');
    fs.writeFileSync(file, 'old');
    const fd = fs.openSync(file, 'r');
    try {
      await write(file, 'new');
      expect(fs.readFileSync(fd, 'utf8')).toBe('old');
      expect(fs.readFileSync(file, 'utf8')).toBe('new');
    } finally {
      fs.closeSync(fd);
    }
  });

  it('leaves no temporary files behind', async () => {
    const file = path.join(dir, 'a.txt');
    for (let i = 0; i < 5; i++) await write(file, `v${i}`);
    expect(fs.readdirSync(dir)).toEqual(['a.txt']);
  });

  it('fails when the directory does not exist', async () => {
    await expect(write(path.join(dir, 'missing', 'a.txt'), 'x')).rejects.toThrow(/ENOENT/);
  });
});

describe('writeFileAtomic failure cleanup', () => {
  it('removes its temporary file when the rename fails', async () => {
    const target = path.join(dir, 'taken');
    fs.mkdirSync(path.join(target, 'child'), { recursive: true }); // a non-empty directory cannot be renamed over
    await expect(writeFileAtomic(target, 'x')).rejects.toThrow();
    expect(fs.readdirSync(dir)).toEqual(['taken']);
  });

  // Known bug (reported): writeFileAtomicSync does not remove its temporary file when the rename
  // fails, unlike writeFileAtomic. Flip to `it` once fixed.
  it('writeFileAtomicSync also removes its temporary file when the rename fails', () => {
    const target = path.join(dir, 'taken');
    fs.mkdirSync(path.join(target, 'child'), { recursive: true });
    expect(() => writeFileAtomicSync(target, 'x')).toThrow();
    expect(fs.readdirSync(dir)).toEqual(['taken']);
  });
});

describe('writeFileSetAtomic', () => {
  const set = (version: string): FileSetEntry[] => [
    { name: 'cert-chain.pem', data: `cert ${version}`, mode: 0o644 },
    { name: 'key.pem', data: `key ${version}`, mode: 0o600 },
    { name: 'root-cert.pem', data: Buffer.from(`root ${version}`), mode: 0o644 },
  ];
  const read = (certs: string) =>
    ['cert-chain.pem', 'key.pem', 'root-cert.pem'].map(n =>
      fs.readFileSync(path.join(certs, n), 'utf8'),
    );
  /** The version directories (`..<timestamp>`) other than the `..data` link. */
  const versions = (certs: string) =>
    fs.readdirSync(certs).filter(e => e.startsWith('..') && e !== '..data');

  it('creates the directory and writes every file with its mode', async () => {
    const certs = path.join(dir, 'var', 'certs');
    await withUmask(0o077, () => writeFileSetAtomic(certs, set('1')));
    expect(read(certs)).toEqual(['cert 1', 'key 1', 'root 1']);
    expect(modeOf(path.join(certs, 'key.pem'))).toBe(0o600);
    expect(modeOf(path.join(certs, 'cert-chain.pem'))).toBe(0o644);
    expect(modeOf(certs)).toBe(0o755 & ~0o077);
  });

  it('uses the Kubernetes AtomicWriter layout: names link through ..data to one version directory', async () => {
    const certs = path.join(dir, 'certs');
    await writeFileSetAtomic(certs, set('1'));
    expect(fs.readlinkSync(path.join(certs, 'key.pem'))).toBe(path.join('..data', 'key.pem'));
    const [version] = versions(certs);
    expect(version).toBeDefined();
    expect(fs.readlinkSync(path.join(certs, '..data'))).toBe(version);
    expect(fs.readdirSync(path.join(certs, version!)).sort()).toEqual([
      'cert-chain.pem',
      'key.pem',
      'root-cert.pem',
    ]);
  });

  it('swaps every file at once and removes the old version', async () => {
    const certs = path.join(dir, 'certs');
    await writeFileSetAtomic(certs, set('1'));
    const [first] = versions(certs);
    // A reader that resolved ..data before the swap keeps a consistent old set.
    const pinned = fs.realpathSync(path.join(certs, '..data'));
    await writeFileSetAtomic(certs, set('2'));
    expect(read(certs)).toEqual(['cert 2', 'key 2', 'root 2']);
    expect(versions(certs)).toHaveLength(1);
    expect(versions(certs)).not.toContain(first);
    expect(fs.existsSync(pinned)).toBe(false);
  });

  it('after many rotations keeps exactly one version and no temporary links', async () => {
    const certs = path.join(dir, 'certs');
    for (let i = 0; i < 10; i++) {
      await writeFileSetAtomic(certs, set(String(i)));
      expect(read(certs)).toEqual([`cert ${i}`, `key ${i}`, `root ${i}`]);
    }
    const entries = fs.readdirSync(certs).sort();
    expect(entries).toHaveLength(5);
    expect(entries.filter(e => !e.startsWith('..'))).toEqual([
      'cert-chain.pem',
      'key.pem',
      'root-cert.pem',
    ]);
    expect(entries).toContain('..data');
    expect(fs.realpathSync(path.join(certs, '..data'))).toBe(
      path.join(fs.realpathSync(certs), versions(certs)[0]!),
    );
  });

  it('leaves files it does not manage alone', async () => {
    const certs = path.join(dir, 'certs');
    fs.mkdirSync(certs);
    fs.writeFileSync(path.join(certs, 'README'), 'mine');
    await writeFileSetAtomic(certs, set('1'));
    await writeFileSetAtomic(certs, set('2'));
    expect(fs.readFileSync(path.join(certs, 'README'), 'utf8')).toBe('mine');
  });

  it('sets the owner of the files and the version directory', async () => {
    if (process.getuid?.() !== 0) {
      console.warn('fs.test.ts: skipping the chown check: needs root');
      return;
    }
    const certs = path.join(dir, 'certs');
    await writeFileSetAtomic(certs, set('1'), { uid: 65534, gid: 65534 });
    const key = fs.statSync(path.join(certs, 'key.pem'));
    expect([key.uid, key.gid]).toEqual([65534, 65534]);
    const version = fs.statSync(path.join(certs, versions(certs)[0]!));
    expect([version.uid, version.gid]).toEqual([65534, 65534]);
  });
});
