/**
 * The Debian packages (`npm run package:deb`, packaging/deb/build.sh) and the systemd units
 * (systemd/): built from dist/sail when `npm run package:sea` has made it, else from a STAND-IN
 * (a shell script running build/cli/sail.js; the packages then say so in their description;
 * SAIL_DEB_TEST_STAND_IN=1 forces it).
 *
 * Shown: the build fails clearly without the executable; three packages with the right names,
 * control fields, files, modes, owners and conffiles; md5sums match the files; the shipped
 * node-agent.yaml is valid; lintian reports no errors and no warnings; `systemd-analyze verify`
 * is clean on the units as installed (and does flag a broken unit); the units carry the settings
 * the agent and the control plane depend on; the maintainer scripts pass `sh -n` and shellcheck;
 * the man page names every command of `sail --help`.
 *
 * Not shown here: installing them (that would create users on this machine). test/vm/ installs
 * them in booted Debian containers.
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { makeTmpDir } from '../helpers/tmp-dir';

const ROOT = path.join(__dirname, '..', '..');
const BUILD_SH = path.join(ROOT, 'packaging', 'deb', 'build.sh');
const DIST_BIN = path.join(ROOT, 'dist', 'sail');
const DIST_LIB = path.join(ROOT, 'dist', 'lib', 'sail');
const CLI_JS = path.join(ROOT, 'build', 'cli', 'sail.js');
const NATIVE = path.join(ROOT, 'build', 'common', 'native', 'sail_native.node');
const VERSION = (
  JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }
).version;
const PACKAGES = ['sail', 'sail-node-agent', 'sail-control-plane'] as const;
type Pkg = (typeof PACKAGES)[number];
const UNITS = ['sail-node-agent', 'sail-control-plane', 'sail-ca', 'sail-pilot'];
/** SAIL_DEB_TEST_STAND_IN=1 packages the stand-in even when dist/sail exists (quick runs). */
const FORCE_STAND_IN = process.env.SAIL_DEB_TEST_STAND_IN === '1';

const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const missing = ['dpkg-deb', 'lintian', 'systemd-analyze', 'node'].filter(t => !has(t));
const skipReason =
  process.platform !== 'linux'
    ? 'Debian packages are built on Linux only'
    : missing.length > 0
      ? `missing tools: ${missing.join(', ')} (apt-get install dpkg-dev lintian systemd)`
      : undefined;
if (skipReason) console.warn(`test/packaging/deb.test.ts skipped: ${skipReason}`);
const describeDeb = skipReason ? describe.skip : describe;

function run(cmd: string, args: string[], opts: { cwd?: string } = {}): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, ...opts });
}

function ok(cmd: string, args: string[], opts: { cwd?: string } = {}): string {
  const res = run(cmd, args, opts);
  if (res.status !== 0) {
    throw new Error(
      `${cmd} ${args.join(' ')} exited ${res.status ?? res.signal}:\n${res.stdout}\n${res.stderr}`,
    );
  }
  return res.stdout;
}

/** `[Section]` → key → values (a key may repeat) of a systemd unit file. */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      current = new Map();
      sections.set(header[1]!, current);
      continue;
    }
    const eq = line.indexOf('=');
    const key = line.slice(0, eq);
    current!.set(key, [...(current!.get(key) ?? []), line.slice(eq + 1)]);
  }
  return sections;
}

describeDeb('Debian packages and systemd units', () => {
  let tmp: { dir: string; cleanup: () => void };
  let out: string;
  let installRoot: string;
  let standIn = false;
  const deb = (pkg: Pkg) => path.join(out, `${pkg}_${VERSION}_amd64.deb`);

  beforeAll(() => {
    tmp = makeTmpDir('sail-deb-test-');
    out = path.join(tmp.dir, 'out');
    let bin = DIST_BIN;
    let lib = DIST_LIB;
    const args: string[] = [];
    if (FORCE_STAND_IN || !fs.existsSync(DIST_BIN) || !fs.existsSync(DIST_LIB)) {
      standIn = true;
      console.warn(
        `test/packaging/deb.test.ts: ${FORCE_STAND_IN ? 'SAIL_DEB_TEST_STAND_IN=1' : 'dist/sail is missing (run `npm run package:sea`)'}: packaging a STAND-IN script instead of the real executable`,
      );
      const dir = path.join(tmp.dir, 'stand-in');
      bin = path.join(dir, 'sail');
      lib = path.join(dir, 'lib');
      fs.mkdirSync(path.join(lib, 'proto'), { recursive: true });
      fs.writeFileSync(
        bin,
        `#!/bin/sh\n# STAND-IN for the Sail single executable (tests only).\nexec node ${CLI_JS} "$@"\n`,
        { mode: 0o755 },
      );
      fs.cpSync(path.join(ROOT, 'api', 'sail'), path.join(lib, 'proto', 'sail'), {
        recursive: true,
      });
      if (fs.existsSync(NATIVE)) fs.copyFileSync(NATIVE, path.join(lib, 'sail_native.node'));
      args.push('--stand-in');
    }
    ok(BUILD_SH, ['--bin', bin, '--lib', lib, '--out', out, ...args]);
    installRoot = path.join(tmp.dir, 'root');
    for (const pkg of PACKAGES) ok('dpkg-deb', ['-x', deb(pkg), installRoot]);
  }, 180_000);

  afterAll(() => tmp?.cleanup());

  it('refuses to build without the executable, naming npm run package:sea', () => {
    const res = run(BUILD_SH, ['--bin', path.join(tmp.dir, 'nope'), '--out', tmp.dir]);
    expect(res.status).toBe(1);
    expect(res.stderr).toContain('npm run package:sea');
    const script = path.join(tmp.dir, 'script');
    fs.writeFileSync(script, '#!/bin/sh\n', { mode: 0o755 });
    const notElf = run(BUILD_SH, ['--bin', script, '--lib', tmp.dir, '--out', tmp.dir]);
    expect(notElf.status).toBe(1);
    expect(notElf.stderr).toContain('--stand-in');
  });

  it('builds three packages named PACKAGE_VERSION_amd64.deb', () => {
    expect(fs.readdirSync(out).sort()).toEqual(
      PACKAGES.map(p => `${p}_${VERSION}_amd64.deb`).sort(),
    );
    if (standIn) console.warn('deb.test.ts: these packages hold a STAND-IN /usr/bin/sail');
  });

  it.each(PACKAGES)('%s has complete control fields', pkg => {
    const field = (name: string) => ok('dpkg-deb', ['-f', deb(pkg), name]).trim();
    expect(field('Package')).toBe(pkg);
    expect(field('Source')).toBe('sail');
    expect(field('Version')).toBe(VERSION);
    expect(field('Architecture')).toBe('amd64');
    expect(field('Maintainer')).toMatch(/^.+ <[^@\s]+@[^@\s]+>$/);
    expect(field('Section')).toBe('net');
    expect(field('Priority')).toBe('optional');
    expect(Number(field('Installed-Size'))).toBeGreaterThan(0);
    const description = field('Description').split('\n');
    expect(description[0]).toMatch(/^service mesh for virtual machines: /);
    expect(description.length).toBeGreaterThan(5); // a long description
    expect(field('Description').includes('STAND-IN')).toBe(standIn);
    const depends = field('Depends');
    if (pkg === 'sail') {
      if (!standIn) expect(depends).toMatch(/libc6 \(>= [\d.]+\)/);
    } else {
      expect(depends.split(', ')).toEqual(
        expect.arrayContaining([`sail (= ${VERSION})`, 'adduser']),
      );
    }
    if (pkg === 'sail-node-agent') {
      expect(depends.split(', ')).toEqual(expect.arrayContaining(['iptables', 'iproute2']));
    }
  });

  it('installs the files each package owns, root-owned, with the right modes', () => {
    const contents = (pkg: Pkg) =>
      new Map(
        ok('dpkg-deb', ['--contents', deb(pkg)])
          .trim()
          .split('\n')
          .map(l => {
            const [mode, owner, , , , ...rest] = l.split(/\s+/);
            return [rest.join(' ').replace(/^\.\//, '/'), `${mode} ${owner}`] as const;
          }),
      );
    const sail = contents('sail');
    expect(sail.get('/usr/bin/sail')).toBe('-rwxr-xr-x root/root');
    expect(sail.get('/usr/share/man/man1/sail.1.gz')).toBe('-rw-r--r-- root/root');
    expect(sail.get('/usr/lib/sail/proto/sail/ca/v1/ca.proto')).toBe('-rw-r--r-- root/root');
    if (!standIn || fs.existsSync(NATIVE)) {
      expect(sail.get('/usr/lib/sail/sail_native.node')).toBe('-rw-r--r-- root/root');
    }
    const agent = contents('sail-node-agent');
    expect(agent.get('/etc/sail/node-agent.yaml')).toBe('-rw-r--r-- root/root');
    expect(agent.get('/lib/systemd/system/sail-node-agent.service')).toBe('-rw-r--r-- root/root');
    const cp = contents('sail-control-plane');
    for (const unit of ['sail-control-plane', 'sail-ca', 'sail-pilot']) {
      expect(cp.get(`/lib/systemd/system/${unit}.service`)).toBe('-rw-r--r-- root/root');
      expect(cp.get(`/etc/default/${unit}`)).toBe('-rw-r--r-- root/root');
    }
    for (const [pkg, files] of [
      ['sail', sail],
      ['sail-node-agent', agent],
      ['sail-control-plane', cp],
    ] as const) {
      expect(files.get(`/usr/share/doc/${pkg}/copyright`)).toBe('-rw-r--r-- root/root');
      expect(files.get(`/usr/share/doc/${pkg}/changelog.gz`)).toBe('-rw-r--r-- root/root');
      for (const [p, modeOwner] of files) {
        expect(`${p} ${modeOwner.split(' ')[1]}`).toBe(`${p} root/root`);
      }
    }
    // Only the sail package ships /usr/bin/sail: the other two are co-installable.
    expect(agent.has('/usr/bin/sail')).toBe(false);
    expect(cp.has('/usr/bin/sail')).toBe(false);
  });

  it('declares conffiles and executable maintainer scripts', () => {
    const control = (pkg: Pkg) => {
      const dir = path.join(tmp.dir, 'control', pkg);
      fs.mkdirSync(path.dirname(dir), { recursive: true });
      ok('dpkg-deb', ['-e', deb(pkg), dir]);
      return dir;
    };
    const agent = control('sail-node-agent');
    expect(fs.readFileSync(path.join(agent, 'conffiles'), 'utf8')).toBe(
      '/etc/sail/node-agent.yaml\n',
    );
    const cp = control('sail-control-plane');
    expect(fs.readFileSync(path.join(cp, 'conffiles'), 'utf8')).toBe(
      [
        '/etc/default/sail-ca',
        '/etc/default/sail-control-plane',
        '/etc/default/sail-pilot',
        '',
      ].join('\n'),
    );
    for (const dir of [agent, cp]) {
      for (const script of ['postinst', 'prerm', 'postrm']) {
        expect((fs.statSync(path.join(dir, script)).mode & 0o777).toString(8)).toBe('755');
      }
    }
    const sail = control('sail');
    expect(fs.existsSync(path.join(sail, 'postinst'))).toBe(false);
    expect(fs.existsSync(path.join(sail, 'conffiles'))).toBe(false);
  });

  it.each(PACKAGES)('%s md5sums match its files', pkg => {
    const dir = path.join(tmp.dir, 'md5', pkg);
    fs.mkdirSync(dir, { recursive: true });
    ok('dpkg-deb', ['-e', deb(pkg), path.join(dir, 'DEBIAN')]);
    ok('dpkg-deb', ['-x', deb(pkg), dir]);
    const sums = fs.readFileSync(path.join(dir, 'DEBIAN', 'md5sums'), 'utf8');
    const files = ok('find', ['.', '-path', './DEBIAN', '-prune', '-o', '-type', 'f', '-print'], {
      cwd: dir,
    })
      .trim()
      .split('\n')
      .map(f => f.replace(/^\.\//, ''))
      .sort();
    expect(
      sums
        .trim()
        .split('\n')
        .map(l => l.slice(34))
        .sort(),
    ).toEqual(files);
    ok('md5sum', ['--check', '--quiet', 'DEBIAN/md5sums'], { cwd: dir });
  });

  it('ships a valid node-agent.yaml marked as the packaged sample', () => {
    const conf = path.join(installRoot, 'etc', 'sail', 'node-agent.yaml');
    expect(fs.readFileSync(conf, 'utf8').split('\n')[0]).toMatch(
      /^# sail-node-agent: packaged sample, this host has not joined yet\./,
    );
    const sail = standIn ? ['node', CLI_JS] : [DIST_BIN];
    if (standIn && !fs.existsSync(CLI_JS)) return; // nothing to validate with
    const res = run(sail[0]!, [...sail.slice(1), 'node-agent', '--validate', '--config', conf]);
    expect(`${res.status} ${res.stdout}${res.stderr}`).toMatch(/^0 .*valid/);
  });

  it('lintian reports no errors and no warnings', () => {
    const res = run('lintian', ['--fail-on', 'none', ...PACKAGES.map(deb)]);
    const tags = `${res.stdout}${res.stderr}`.split('\n').filter(l => /^[EW]: /.test(l));
    expect(tags).toEqual([]);
  }, 120_000);

  it('systemd-analyze verify is clean on the installed units, and flags a broken one', () => {
    // A root with the host's units (targets), the packages' files and /bin/sh (ExecReload).
    const root = path.join(tmp.dir, 'verify-root');
    fs.cpSync(installRoot, root, { recursive: true });
    fs.cpSync('/lib/systemd/system', path.join(root, 'lib', 'systemd', 'system'), {
      recursive: true,
      force: false,
      errorOnExist: false,
      dereference: false,
    });
    fs.mkdirSync(path.join(root, 'bin'), { recursive: true });
    fs.copyFileSync('/bin/sh', path.join(root, 'bin', 'sh'));
    fs.chmodSync(path.join(root, 'bin', 'sh'), 0o755);
    const verify = (units: string[]) =>
      run('systemd-analyze', [
        'verify',
        '--man=no',
        '--generators=no',
        `--root=${root}`,
        ...units.map(u => `${u}.service`),
      ]);
    const res = verify(UNITS);
    expect(`${res.status} ${res.stdout}${res.stderr}`).toBe('0 ');

    const broken = path.join(root, 'lib', 'systemd', 'system', 'sail-broken.service');
    fs.writeFileSync(
      broken,
      fs
        .readFileSync(path.join(ROOT, 'systemd', 'sail-ca.service'), 'utf8')
        .replace('ExecStart=/usr/bin/sail', 'ExecStart=/usr/bin/no-such-sail')
        .replace('[Service]', '[Service]\nNotAKey=1'),
    );
    const bad = verify(['sail-broken']);
    expect(`${bad.stdout}${bad.stderr}`).toContain("Unknown key 'NotAKey'");
    expect(`${bad.stdout}${bad.stderr}`).toContain('/usr/bin/no-such-sail');
    // The man page named by Documentation= is in the sail package.
    expect(fs.existsSync(path.join(installRoot, 'usr', 'share', 'man', 'man1', 'sail.1.gz'))).toBe(
      true,
    );
  });

  it('the units carry what the agent and the control plane depend on', () => {
    const unit = (name: string) =>
      parseUnit(fs.readFileSync(path.join(ROOT, 'systemd', `${name}.service`), 'utf8'));
    const caps = (u: Map<string, Map<string, string[]>>) =>
      (u.get('Service')!.get('CapabilityBoundingSet') ?? ['<unset>']).join(' ').split(/\s+/).sort();
    for (const name of UNITS) {
      const u = unit(name);
      const svc = u.get('Service')!;
      expect(u.get('Unit')!.get('After')).toEqual(['network-online.target']);
      expect(u.get('Unit')!.get('Wants')).toEqual(['network-online.target']);
      expect(u.get('Unit')!.get('StartLimitIntervalSec')).toEqual(['60']);
      expect(u.get('Unit')!.get('StartLimitBurst')).toEqual(['5']);
      expect(svc.get('Type')).toEqual(['notify']);
      expect(svc.get('NotifyAccess')).toEqual(['all']); // systemd-notify is a child process
      expect(svc.get('Restart')).toEqual(['always']);
      expect(svc.get('KillMode')).toEqual(['mixed']);
      expect(svc.get('NoNewPrivileges')).toEqual(['yes']);
      expect(svc.get('ProtectSystem')).toEqual(['strict']);
      expect(svc.get('SystemCallFilter')).toEqual(['@system-service']);
      expect(svc.get('SystemCallErrorNumber')).toEqual(['EPERM']);
      expect(svc.get('ProtectHome')).toEqual(['yes']);
      expect(svc.get('PrivateTmp')).toEqual(['yes']);
      expect(svc.get('StandardOutput')).toEqual(['journal']);
      expect(svc.get('SyslogIdentifier')).toEqual([name]);
      expect(svc.get('ExecStart')![0]).toMatch(/^\/usr\/bin\/sail /);
      expect(u.get('Install')!.get('WantedBy')).toEqual(['multi-user.target']);
    }
    const agent = unit('sail-node-agent').get('Service')!;
    expect(agent.get('ExecStart')).toEqual([
      '/usr/bin/sail node-agent --config /etc/sail/node-agent.yaml',
    ]);
    expect(agent.get('ExecStopPost')).toEqual([
      '-/usr/bin/sail capture remove --config /etc/sail/node-agent.yaml',
    ]);
    expect(agent.get('Group')).toEqual(['sail-proxy']); // capture exempts this group
    expect(agent.get('User')).toBeUndefined(); // root: iptables
    // Above proxy.stopGrace (20 s), so the agent drains the proxy before SIGKILL.
    expect(Number(agent.get('TimeoutStopSec')![0])).toBeGreaterThan(20);
    expect(agent.get('RuntimeDirectory')).toEqual(['sail']);
    // StateDirectory= would chown /var/lib/sail recursively (the proxy's key, the CA's data).
    expect(agent.get('StateDirectory')).toBeUndefined();
    expect(agent.get('ReadWritePaths')![0]!.split(' ')).toEqual(
      expect.arrayContaining(['/var/lib/sail', '/etc/sail']),
    );
    expect(caps(unit('sail-node-agent'))).toEqual(
      [
        'CAP_CHOWN',
        'CAP_DAC_OVERRIDE',
        'CAP_FOWNER',
        'CAP_KILL',
        'CAP_NET_ADMIN',
        'CAP_NET_RAW',
        'CAP_SETGID',
        'CAP_SETUID',
      ].sort(),
    );
    for (const name of ['sail-control-plane', 'sail-ca', 'sail-pilot']) {
      const u = unit(name);
      expect(caps(u)).toEqual(['']); // no capabilities at all
      expect(u.get('Service')!.get('User')).toEqual(['sail-cp']);
      expect(u.get('Service')!.get('StateDirectory')).toEqual(['sail/control-plane']);
      expect(u.get('Service')!.get('StateDirectoryMode')).toEqual(['0700']);
      expect(u.get('Service')!.get('ExecStart')![0]).toContain(
        '--data-dir /var/lib/sail/control-plane',
      );
    }
    expect(unit('sail-control-plane').get('Unit')!.get('Conflicts')).toEqual([
      'sail-ca.service sail-pilot.service',
    ]);
  });

  it('maintainer scripts are POSIX sh with set -e, and shellcheck-clean', () => {
    const dir = path.join(ROOT, 'packaging', 'deb');
    const scripts = ['sail-node-agent', 'sail-control-plane'].flatMap(p =>
      ['postinst', 'prerm', 'postrm'].map(s => path.join(dir, p, s)),
    );
    for (const s of scripts) {
      const text = fs.readFileSync(s, 'utf8');
      expect(text.startsWith('#!/bin/sh\n')).toBe(true);
      expect(text).toMatch(/^set -e$/m);
      ok('sh', ['-n', s]);
    }
    if (has('shellcheck')) ok('shellcheck', [...scripts, BUILD_SH]);
    else console.warn('deb.test.ts: shellcheck is not installed; scripts not shellchecked');
  });

  it('the man page names every command of sail --help', () => {
    const sail = fs.existsSync(DIST_BIN) ? [DIST_BIN] : ['node', CLI_JS];
    if (!fs.existsSync(DIST_BIN) && !fs.existsSync(CLI_JS)) return; // nothing to ask
    const help = ok(sail[0]!, [...sail.slice(1), '--help']);
    const commands = [...help.matchAll(/^ {2}sail ([a-z-]+)/gm)].map(m => m[1]!);
    expect(commands.length).toBeGreaterThan(10);
    const man = fs
      .readFileSync(path.join(ROOT, 'packaging', 'deb', 'sail.1'), 'utf8')
      .replace(/\\-/g, '-');
    const documented = [...man.matchAll(/^\.B ([a-z-]+)/gm)].map(m => m[1]!);
    const missingFromMan = commands.filter(
      c => !documented.includes(c) && !new RegExp(`\\| ?\\\\fB ?${c}\\b`).test(man),
    );
    expect(missingFromMan).toEqual([]);
  });
});
