/** System user lookup from /etc/passwd (the proxy's `sail-proxy` user, made by the package's postinst). */
import * as fs from 'node:fs';

/**
 * The uid and primary gid of user `name` in `passwdText` (the /etc/passwd format:
 * `name:x:uid:gid:gecos:home:shell`), or undefined when there is no such user.
 */
export function parsePasswdUser(
  passwdText: string,
  name: string,
): { uid: number; gid: number } | undefined {
  for (const line of passwdText.split('\n')) {
    if (line.startsWith('#')) continue;
    const [user, , uid, gid] = line.split(':');
    if (user !== name || uid === undefined || gid === undefined) continue;
    if (!/^\d+$/.test(uid) || !/^\d+$/.test(gid)) continue;
    return { uid: Number(uid), gid: Number(gid) };
  }
  return undefined;
}

/**
 * Looks user `name` up in `passwdFile` (default /etc/passwd; NSS sources such as LDAP are not
 * consulted: a system user is always local). Undefined when absent or the file is unreadable.
 */
export function lookupSystemUser(
  name: string,
  passwdFile = '/etc/passwd',
): { uid: number; gid: number } | undefined {
  let text: string;
  try {
    text = fs.readFileSync(passwdFile, 'utf8');
  } catch {
    return undefined;
  }
  return parsePasswdUser(text, name);
}
