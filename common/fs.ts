/** File writes that a crash cannot leave half-done. */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * Writes `data` to `file` atomically: a temporary file in the same directory, fsync, then rename.
 * `mode` applies from creation, so a secret is never readable by others even for a moment.
 */
export async function writeFileAtomic(
  file: string,
  data: string | Buffer,
  mode = 0o644,
): Promise<void> {
  const tmp = path.join(
    path.dirname(file),
    `.${path.basename(file)}.${crypto.randomBytes(6).toString('hex')}.tmp`,
  );
  const fh = await fs.promises.open(tmp, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.chmod(mode); // the umask may have narrowed it
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await fs.promises.rename(tmp, file);
  } catch (err) {
    await fs.promises.rm(tmp, { force: true });
    throw err;
  }
}

/** Synchronous twin of writeFileAtomic, for CLI commands that write a few small files. */
export function writeFileAtomicSync(file: string, data: string | Buffer, mode = 0o644): void {
  const tmp = path.join(
    path.dirname(file),
    `.${path.basename(file)}.${crypto.randomBytes(6).toString('hex')}.tmp`,
  );
  const fd = fs.openSync(tmp, 'wx', mode);
  try {
    fs.writeFileSync(fd, data);
    fs.fchmodSync(fd, mode);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  try {
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

/** One file of a set written by writeFileSetAtomic. */
export interface FileSetEntry {
  readonly name: string;
  readonly data: string | Buffer;
  readonly mode: number;
}

/** The AtomicWriter symlink through which the visible names of a file set point. */
export const FILE_SET_DATA_LINK = '..data';
const DATA_LINK = FILE_SET_DATA_LINK;

/**
 * Replaces a set of files in `dir` so that readers see either the whole old set or the whole new
 * one, never a key from one and a certificate from the other. This is the Kubernetes AtomicWriter
 * layout: files go into a fresh `..<timestamp>` directory, the `..data` symlink is swapped to it
 * with one rename, and each visible name is a symlink through `..data`. Old versions are removed.
 */
export async function writeFileSetAtomic(
  dir: string,
  files: readonly FileSetEntry[],
  owner?: { uid: number; gid: number },
): Promise<void> {
  await fs.promises.mkdir(dir, { recursive: true, mode: 0o755 });
  const version = `..${new Date().toISOString().replace(/[:.]/g, '_')}.${crypto.randomBytes(4).toString('hex')}`;
  const versionDir = path.join(dir, version);
  await fs.promises.mkdir(versionDir, { mode: 0o755 });
  for (const f of files) {
    const target = path.join(versionDir, f.name);
    await fs.promises.writeFile(target, f.data, { mode: f.mode, flag: 'wx' });
    await fs.promises.chmod(target, f.mode);
    if (owner) await fs.promises.chown(target, owner.uid, owner.gid);
  }
  if (owner) await fs.promises.chown(versionDir, owner.uid, owner.gid);
  const tmpLink = path.join(dir, `..data_tmp.${crypto.randomBytes(4).toString('hex')}`);
  await fs.promises.symlink(version, tmpLink);
  await fs.promises.rename(tmpLink, path.join(dir, DATA_LINK));
  for (const f of files) {
    const visible = path.join(dir, f.name);
    const want = path.join(DATA_LINK, f.name);
    const current = await fs.promises.readlink(visible).catch(() => undefined);
    if (current === want) continue;
    const tmp = path.join(dir, `.${f.name}.${crypto.randomBytes(4).toString('hex')}.lnk`);
    await fs.promises.symlink(want, tmp);
    await fs.promises.rename(tmp, visible);
  }
  for (const entry of await fs.promises.readdir(dir)) {
    if (entry.startsWith('..') && entry !== DATA_LINK && entry !== version) {
      await fs.promises.rm(path.join(dir, entry), { recursive: true, force: true });
    }
  }
}
