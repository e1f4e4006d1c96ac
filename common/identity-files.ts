/**
 * A workload identity's directory (DESIGN §3.3), as the node agent writes it and the proxy, the
 * gRPC bootstrap and applications read it: Istio's three file names, replaced together through
 * the AtomicWriter `..data` symlink (common/fs writeFileSetAtomic).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FILE_SET_DATA_LINK } from './fs';

export const CERT_CHAIN_FILE = 'cert-chain.pem';
export const KEY_FILE = 'key.pem';
export const ROOT_CERT_FILE = 'root-cert.pem';

/** The three files of one identity version; undefined for a file that is not there. */
export interface IdentityFileTexts {
  readonly certChainPem: string | undefined;
  readonly keyPem: string | undefined;
  readonly rootsPem: string | undefined;
}

/** A file's text, or undefined when it does not exist. @throws any other read error */
async function readOptional(file: string): Promise<string | undefined> {
  try {
    return await fs.promises.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * Reads the three files of `dir` from one version: through the `..data` target when the
 * AtomicWriter layout is there (so parts of two rotations are never mixed), else the visible
 * names (files written by hand).
 * @throws any read error other than a missing file
 */
export async function readIdentityFiles(dir: string): Promise<IdentityFileTexts> {
  const version = await versionDir(dir);
  const [certChainPem, keyPem, rootsPem] = await Promise.all([
    readOptional(path.join(version, CERT_CHAIN_FILE)),
    readOptional(path.join(version, KEY_FILE)),
    readOptional(path.join(version, ROOT_CERT_FILE)),
  ]);
  return { certChainPem, keyPem, rootsPem };
}

/**
 * One file of `dir` (a name above), from the current version; undefined when it is not there.
 * @throws any read error other than a missing file
 */
export async function readIdentityFile(dir: string, name: string): Promise<string | undefined> {
  return readOptional(path.join(await versionDir(dir), name));
}

/** The `..data` target of `dir` when the AtomicWriter layout is there, else `dir` itself. */
async function versionDir(dir: string): Promise<string> {
  try {
    return path.resolve(dir, await fs.promises.readlink(path.join(dir, FILE_SET_DATA_LINK)));
  } catch {
    return dir; // no `..data` link: the visible names (files written by hand)
  }
}
