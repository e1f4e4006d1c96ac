import * as fs from 'node:fs';
import * as path from 'node:path';
import { InvalidInputError } from '../common/errors';
import { silentLogger } from '../common/logging';
import { fingerprintSha256 } from '../common/pki';
import { TestCa } from '../test/helpers/test-ca';
import { makeTmpDir } from '../test/helpers/tmp-dir';
import { loadNodeAgentConfig } from './config';
import { FingerprintMismatchError, JoinConfigExistsError } from './errors';
import {
  type JoinOptions,
  join,
  PACKAGED_SAMPLE_MARKER,
  parseFingerprint,
  parseLabelsFlag,
  parsePortFlags,
} from './join';
import { NodeAgent } from './node-agent';

let tmp: { dir: string; cleanup: () => void };
let ca: TestCa;
let configFile: string;
let rootFile: string;

beforeAll(async () => {
  ca = await TestCa.create({ trustDomain: 'example.org' });
  await ca.start(0);
  ca.assign('vm-1', 'spiffe://example.org/ns/shop/sa/reviews');
});
afterAll(async () => {
  await ca.stop();
});
beforeEach(() => {
  tmp = makeTmpDir('sail-join-');
  configFile = path.join(tmp.dir, 'etc', 'node-agent.yaml');
  rootFile = path.join(tmp.dir, 'ca-root.pem');
  fs.writeFileSync(rootFile, ca.rootPem);
});
afterEach(() => tmp.cleanup());

const base = (): JoinOptions => ({
  controlPlane: '127.0.0.1',
  caAddress: ca.address,
  token: 'tok-123',
  caRootFile: rootFile,
  nodeName: 'vm-1',
  configFile,
  hostname: 'host-a',
  now: new Date(Date.UTC(2026, 0, 1)),
});

/** Rejects with the error, or fails the test when it resolves. */
async function failure(p: Promise<unknown>): Promise<Error> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (err: unknown) => err as Error,
  );
}

describe('join', () => {
  it('writes a config that loads, the token 0600 and the root, and starts nothing', async () => {
    const res = await join({
      ...base(),
      trustDomain: 'example.org',
      namespace: 'shop',
      serviceAccount: 'reviews',
      labels: { app: 'reviews', version: 'v1' },
      ports: [{ name: 'http', port: 9080 }],
    });
    const dir = path.dirname(configFile);
    expect(res).toEqual({
      configFile,
      rootCertFile: path.join(dir, 'root-cert.pem'),
      tokenFile: path.join(dir, 'join-token'),
      nodeName: 'vm-1',
      trustDomain: 'example.org',
      spiffeId: 'spiffe://example.org/ns/shop/sa/reviews',
      caAddress: ca.address,
      rootFingerprints: [fingerprintSha256(ca.rootDer)],
    });
    expect(fs.readFileSync(res.tokenFile, 'utf8')).toBe('tok-123\n');
    expect(fs.statSync(res.tokenFile).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(res.rootCertFile, 'utf8')).toBe(ca.rootPem);
    expect(fs.readdirSync(dir).sort()).toEqual(['join-token', 'node-agent.yaml', 'root-cert.pem']);

    const text = fs.readFileSync(configFile, 'utf8');
    expect(text).toMatch(/^# Sail node agent configuration, written by `sail join`/);
    expect(text).toContain(
      `# Trust anchor for the control plane; SHA-256 ${fingerprintSha256(ca.rootDer).match(/../g)!.join(':')}.`,
    );
    const { settings } = loadNodeAgentConfig(configFile);
    expect(settings).toMatchObject({
      nodeName: 'vm-1',
      trustDomain: 'example.org',
      controlPlane: {
        caAddress: ca.address,
        pilotAddress: '127.0.0.1:15010',
        rootCertFile: res.rootCertFile,
        tokenFile: res.tokenFile,
      },
      workload: {
        namespace: 'shop',
        serviceAccount: 'reviews',
        labels: { app: 'reviews', version: 'v1' },
        ports: [{ name: 'http', port: 9080 }],
      },
      capture: { mode: 'redirect' },
    });
  });

  it('writes the capture mode it is given (--capture-mode tproxy)', async () => {
    await join({ ...base(), captureMode: 'tproxy' });
    expect(fs.readFileSync(configFile, 'utf8')).toContain('capture:\n  mode: "tproxy"\n');
    expect(loadNodeAgentConfig(configFile).settings.capture.mode).toBe('tproxy');
  });

  it('refuses to overwrite an existing config without --force', async () => {
    await join(base());
    const err = await failure(join({ ...base(), token: 'other' }));
    expect(err).toBeInstanceOf(JoinConfigExistsError);
    expect(err).toBeInstanceOf(InvalidInputError); // exit code 2
    expect(err.message).toBe(
      `config file ${configFile} already exists; pass --force to overwrite it`,
    );
    expect(fs.readFileSync(path.join(path.dirname(configFile), 'join-token'), 'utf8')).toBe(
      'tok-123\n',
    );
    await join({ ...base(), token: 'other', force: true });
    expect(fs.readFileSync(path.join(path.dirname(configFile), 'join-token'), 'utf8')).toBe(
      'other\n',
    );
  });

  it("replaces the sail-node-agent package's sample config without --force", async () => {
    fs.mkdirSync(path.dirname(configFile), { recursive: true });
    fs.writeFileSync(
      configFile,
      `${PACKAGED_SAMPLE_MARKER}, this host has not joined yet.\nx: 1\n`,
    );
    await join(base());
    expect(fs.readFileSync(configFile, 'utf8')).not.toContain(PACKAGED_SAMPLE_MARKER);
    expect(loadNodeAgentConfig(configFile).settings.nodeName).toBe(base().nodeName);
  });

  it('fetches the root from the CA and checks it against the fingerprint (colons, any case)', async () => {
    const fp = fingerprintSha256(ca.rootDer).toUpperCase().match(/../g)!.join(':');
    const { caRootFile: _, ...noRoot } = base();
    const res = await join({ ...noRoot, caFingerprint: fp });
    expect(res.trustDomain).toBe('example.org'); // learned from the CA
    expect(fs.readFileSync(res.rootCertFile, 'utf8')).toBe(ca.rootPem);
    expect(loadNodeAgentConfig(configFile).settings.trustDomain).toBe('example.org');
  });

  it('refuses a CA whose roots do not match the fingerprint, writing nothing', async () => {
    const { caRootFile: _, ...noRoot } = base();
    const err = await failure(join({ ...noRoot, caFingerprint: 'ab'.repeat(32) }));
    expect(err).toBeInstanceOf(FingerprintMismatchError);
    expect(err.message).toContain(`it serves ${fingerprintSha256(ca.rootDer)}`);
    expect(fs.existsSync(path.dirname(configFile))).toBe(false);
  });

  it('refuses a trust domain that differs from the CA', async () => {
    const { caRootFile: _, ...noRoot } = base();
    const err = await failure(
      join({
        ...noRoot,
        caFingerprint: fingerprintSha256(ca.rootDer),
        trustDomain: 'cluster.local',
      }),
    );
    expect(err).toBeInstanceOf(InvalidInputError);
    expect(err.message).toContain('--trust-domain: the CA at');
  });

  it('writes a config with which the agent joins', async () => {
    const token = ca.createToken('vm-1');
    const { caRootFile: _, ...noRoot } = base();
    await join({
      ...noRoot,
      token,
      caFingerprint: fingerprintSha256(ca.rootDer),
      namespace: 'shop',
      serviceAccount: 'reviews',
    });
    const { settings } = loadNodeAgentConfig(configFile);
    const agent = new NodeAgent({
      ...settings,
      certs: { ...settings.certs, dir: path.join(tmp.dir, 'certs') },
      stateDir: path.join(tmp.dir, 'state'),
      runDir: path.join(tmp.dir, 'run'),
      status: { listen: '127.0.0.1:0' },
      // Identity only: no pilot here, and capture must never touch the machine running the tests.
      proxy: { ...settings.proxy, enabled: false },
      capture: { ...settings.capture, mode: 'none' },
      dns: { ...settings.dns, enabled: false },
      proxyless: { ...settings.proxyless, enabled: false },
      logger: silentLogger(),
      processMetrics: false,
    });
    try {
      await agent.start();
      expect(agent.identity?.spiffeId).toBe('spiffe://example.org/ns/shop/sa/reviews');
      expect(fs.existsSync(settings.controlPlane.tokenFile)).toBe(false);
    } finally {
      await agent.close();
    }
  });

  const notCa = () => {
    const f = path.join(tmp.dir, 'leaf.pem');
    return ca
      .issueWorkloadCert({
        node: 'x',
        spiffeId: 'spiffe://example.org/ns/a/sa/b',
        notBeforeMs: Date.now(),
        notAfterMs: Date.now() + 60_000,
      })
      .then(c => {
        fs.writeFileSync(f, c.certChainPem);
        return f;
      });
  };
  const invalid: {
    name: string;
    opts: () => Promise<Partial<JoinOptions>> | Partial<JoinOptions>;
    message: string;
  }[] = [
    {
      name: 'a control plane with a port',
      opts: () => ({ controlPlane: '10.0.0.1:15012' }),
      message:
        '--control-plane: "10.0.0.1:15012" is not a host name or IP address; give the port with --ca-address',
    },
    {
      name: 'an empty token',
      opts: () => ({ token: ' ' }),
      message: '--token: want the token printed by `sail token create`',
    },
    {
      name: 'both root options',
      opts: () => ({ caFingerprint: 'ab'.repeat(32) }),
      message: '--ca-root: give exactly one of --ca-root FILE or --ca-fingerprint SHA256',
    },
    {
      name: 'no root option',
      opts: () => ({ caRootFile: undefined }),
      message: '--ca-root: give exactly one of',
    },
    {
      name: 'a short fingerprint',
      opts: () => ({ caRootFile: undefined, caFingerprint: 'abcd' }),
      message: '--ca-fingerprint: "abcd" is not a SHA-256 fingerprint',
    },
    {
      name: 'a bad node name',
      opts: () => ({ nodeName: 'VM_1' }),
      message: '--node: invalid node name "VM_1"',
    },
    {
      name: 'a host name that is no node name',
      opts: () => ({ nodeName: undefined, hostname: 'my_host' }),
      message: '--node: the host name "my_host" is not a valid node name; pass --node',
    },
    {
      name: 'a bad namespace',
      opts: () => ({ namespace: 'Shop' }),
      message: '--namespace: invalid namespace "Shop"',
    },
    {
      name: 'a bad service account',
      opts: () => ({ serviceAccount: 'a/b' }),
      message: '--service-account: invalid service account "a/b"',
    },
    {
      name: 'a bad trust domain',
      opts: () => ({ trustDomain: 'Example Org' }),
      message: '--trust-domain: invalid trust domain',
    },
    {
      name: 'a bad CA address',
      opts: () => ({ caAddress: '10.0.0.1' }),
      message: '--ca-address: "10.0.0.1" is not HOST:PORT',
    },
    {
      name: 'a missing root file',
      opts: () => ({ caRootFile: '/nonexistent.pem' }),
      message: '--ca-root: cannot read /nonexistent.pem: ENOENT',
    },
    {
      name: 'a root file that is not a CA',
      opts: async () => ({ caRootFile: await notCa() }),
      message: 'is not a CA certificate',
    },
  ];
  it.each(invalid)('rejects $name, naming the flag', async ({ opts, message }) => {
    const err = await failure(join({ ...base(), ...(await opts()) }));
    expect(err).toBeInstanceOf(InvalidInputError);
    expect(err.message).toContain(message);
    expect(fs.existsSync(configFile)).toBe(false);
  });
});

describe('flag parsers', () => {
  it('parses fingerprints with colons, a prefix and any case', () => {
    const hex = 'ab'.repeat(32);
    expect(parseFingerprint(hex.toUpperCase().match(/../g)!.join(':'))).toBe(hex);
    expect(parseFingerprint(`sha256:${hex}`)).toBe(hex);
    expect(() => parseFingerprint('zz'.repeat(32))).toThrow('--ca-fingerprint');
  });

  it.each([
    { input: ['app=reviews,version=v1'], want: { app: 'reviews', version: 'v1' } },
    { input: ['app=reviews', 'version=v1'], want: { app: 'reviews', version: 'v1' } },
    { input: ['example.com/team=a, empty='], want: { 'example.com/team': 'a', empty: '' } },
    { input: [], want: {} },
  ])('parses labels $input', ({ input, want }) => {
    expect(parseLabelsFlag(input)).toEqual(want);
  });

  it.each([
    { input: ['app'], message: '--labels: "app" is not KEY=VALUE' },
    { input: ['a=1,a=2'], message: '--labels: label a is given twice' },
    { input: ['bad key=1'], message: '--labels: invalid label key "bad key"' },
    { input: ['a=bad value'], message: '--labels: invalid value "bad value" for label a' },
  ])('rejects labels $input', ({ input, message }) => {
    expect(() => parseLabelsFlag(input)).toThrow(message);
  });

  it('parses ports and rejects bad ones', () => {
    expect(parsePortFlags(['http:9080', 'grpc-api:9090'])).toEqual([
      { name: 'http', port: 9080 },
      { name: 'grpc-api', port: 9090 },
    ]);
    expect(() => parsePortFlags(['9080'])).toThrow('--port: "9080" is not NAME:PORT');
    expect(() => parsePortFlags(['http:0'])).toThrow('--port: port 0 is out of range');
    expect(() => parsePortFlags(['HTTP:80'])).toThrow('--port: invalid port name "HTTP"');
    expect(() => parsePortFlags(['http:80', 'http:81'])).toThrow(
      '--port: port name http is given twice',
    );
  });
});
