import * as fs from 'node:fs';
import * as path from 'node:path';
import { makeTmpDir } from '../../test/helpers/tmp-dir';
import { lookupSystemUser, parsePasswdUser } from './system-user';

const PASSWD = `root:x:0:0:root:/root:/bin/bash
# a comment
sail-proxy:x:998:997:Sail proxy:/var/lib/sail:/usr/sbin/nologin
broken:x:abc:1::/:/bin/false
`;

describe('system users', () => {
  it.each([
    ['sail-proxy', { uid: 998, gid: 997 }],
    ['root', { uid: 0, gid: 0 }],
    ['nobody-here', undefined],
    ['broken', undefined],
    ['sail', undefined],
  ])('parses %s', (name, want) => {
    expect(parsePasswdUser(PASSWD, name)).toEqual(want);
  });

  it('reads a passwd file, and answers undefined when it is missing', () => {
    const tmp = makeTmpDir('sail-passwd-');
    try {
      const file = path.join(tmp.dir, 'passwd');
      fs.writeFileSync(file, PASSWD);
      expect(lookupSystemUser('sail-proxy', file)).toEqual({ uid: 998, gid: 997 });
      expect(lookupSystemUser('sail-proxy', path.join(tmp.dir, 'none'))).toBeUndefined();
    } finally {
      tmp.cleanup();
    }
  });
});
