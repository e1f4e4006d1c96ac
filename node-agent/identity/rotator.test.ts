/**
 * The rotator against a real in-process gRPC CA (test/helpers/test-ca.ts) over TLS on 127.0.0.1,
 * with the agent's timing on a FakeClock.
 *
 * Time: TLS checks the client certificate the agent presents against real time, while the CA
 * stamps certificates with the fake clock. The fake clock therefore starts 20 h before real time,
 * so every certificate the agent presents for renewal (issued at most ~12 h of fake time later)
 * is valid in real time too. openssl is run with -attime at the fake time.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { InvalidInputError, NotAuthorizedError, NotReadyError } from '../../common/errors';
import { FakeClock } from '../../test/helpers/fake-clock';
import { LogCapture } from '../../test/helpers/log-capture';
import { hasOpenssl, openssl } from '../../test/helpers/openssl';
import { TestCa } from '../../test/helpers/test-ca';
import { makeTmpDir } from '../../test/helpers/tmp-dir';
import { waitFor } from '../../test/helpers/wait-for';
import { CaClient } from './ca-client';
import { CertStore, type WorkloadIdentity } from './cert-store';
import { PendingKeyStore } from './keys';
import { type CertificateChange, CertRotator, type RotationErrorReason } from './rotator';

const H = 3600_000;
const NODE = 'vm-1';
const SPIFFE = 'spiffe://cluster.local/ns/default/sa/reviews';

interface Harness {
  readonly rotator: CertRotator;
  readonly client: CaClient;
  readonly changes: { identity: WorkloadIdentity; change: CertificateChange }[];
  readonly errors: RotationErrorReason[];
  readonly logs: LogCapture;
  /** Starts run(); stop() aborts it and waits for it to end. */
  run(): void;
  stop(): Promise<void>;
}

let tmp: { dir: string; cleanup: () => void };
let clock: FakeClock;
let ca: TestCa;
let harnesses: Harness[];
let paths: {
  root: string;
  token: string;
  certs: string;
  state: string;
  bootCert: string;
  bootKey: string;
};

beforeEach(async () => {
  tmp = makeTmpDir('sail-rotator-');
  clock = new FakeClock(Date.now() - 20 * H);
  ca = await TestCa.create({ clock });
  await ca.start(0);
  ca.assign(NODE, SPIFFE);
  harnesses = [];
  paths = {
    root: path.join(tmp.dir, 'etc', 'root-cert.pem'),
    token: path.join(tmp.dir, 'etc', 'join-token'),
    certs: path.join(tmp.dir, 'certs'),
    state: path.join(tmp.dir, 'state'),
    bootCert: path.join(tmp.dir, 'etc', 'bootstrap.pem'),
    bootKey: path.join(tmp.dir, 'etc', 'bootstrap-key.pem'),
  };
  fs.mkdirSync(path.dirname(paths.root), { recursive: true });
  fs.writeFileSync(paths.root, ca.rootPem);
  fs.writeFileSync(paths.token, `${ca.createToken(NODE)}\n`, { mode: 0o600 });
});

afterEach(async () => {
  for (const h of harnesses) await h.stop();
  await ca.stop();
  tmp.cleanup();
});

function makeRotator(opts: { bootstrap?: boolean; serviceAccount?: string } = {}): Harness {
  const logs = new LogCapture();
  const client = new CaClient({
    address: ca.address,
    serverSpiffeId: ca.serverSpiffeId,
    logger: logs.logger,
    requestTimeoutMs: 5_000,
    // Real-time reconnect backoff of grpc-js, kept short so a restarted CA is found quickly.
    reconnectBackoffMs: { initial: 20, max: 100 },
  });
  const rotator = new CertRotator({
    logger: logs.logger,
    clock,
    random: () => 0.5,
    nodeName: NODE,
    trustDomain: 'cluster.local',
    namespace: 'default',
    serviceAccount: opts.serviceAccount ?? 'reviews',
    ttlMs: 24 * H,
    keyAlgorithm: 'ec-p256',
    store: new CertStore({ dir: paths.certs }),
    pendingKeys: new PendingKeyStore(paths.state),
    ca: client,
    rootCertFile: paths.root,
    tokenFile: paths.token,
    ...(opts.bootstrap ? { bootstrap: { certFile: paths.bootCert, keyFile: paths.bootKey } } : {}),
    retryInitialMs: 1_000,
    retryMaxMs: 8_000,
  });
  const changes: Harness['changes'] = [];
  const errors: RotationErrorReason[] = [];
  rotator.onCertificateChanged((identity, change) => changes.push({ identity, change }));
  rotator.onRotationError(reason => errors.push(reason));
  const abort = new AbortController();
  let running: Promise<void> | undefined;
  const h: Harness = {
    rotator,
    client,
    changes,
    errors,
    logs,
    run: () => {
      running = rotator.run(abort.signal);
    },
    stop: async () => {
      abort.abort();
      await running;
      client.close();
    },
  };
  harnesses.push(h);
  return h;
}

/** CreateCertificate calls the CA answered, as [attestation, status] pairs. */
const creates = () => ca.calls.filter(c => c.method === 'CreateCertificate');

/** Waits until the loop sleeps, then returns how long it means to sleep. */
async function idleFor(): Promise<number> {
  await clock.waitForSleepers(1);
  return clock.nextSleepInMs as number;
}

/** Drives fake time from sleep to sleep until `cond` holds (a bounded number of real-time polls). */
async function advanceUntil(cond: () => boolean, what: string): Promise<void> {
  await waitFor(
    () => {
      if (cond()) return true;
      if (clock.pendingSleeps > 0) clock.advanceToNextSleep();
      return false;
    },
    { timeoutMs: 10_000, intervalMs: 20, what },
  );
}

describe('CertRotator against a real CA', () => {
  it('attests with the join token, then renews at half the lifetime with the current certificate', async () => {
    const h = makeRotator();
    expect(await h.rotator.loadFromDisk()).toBeUndefined();
    h.run();
    const first = await h.rotator.waitForIdentity(new AbortController().signal);

    // First attestation: the token, once; then the token file is gone and so is the pending key.
    expect(creates().map(c => [c.attestation, c.code])).toEqual([['token', 0]]);
    expect(first.spiffeId).toBe(SPIFFE);
    expect(h.changes.map(c => c.change)).toEqual([{ source: 'ca', attestation: 'token' }]);
    expect(fs.existsSync(paths.token)).toBe(false);
    expect(fs.existsSync(path.join(paths.state, 'pending-key.pem'))).toBe(false);

    // The files: key 0600, chain verified by the real openssl against root-cert.pem.
    const store = new CertStore({ dir: paths.certs });
    expect(fs.statSync(store.paths.key).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(store.paths.root, 'utf8')).toBe(ca.rootPem);
    if (hasOpenssl()) {
      const attime = String(Math.floor(clock.now() / 1000));
      const r = openssl([
        'verify',
        '-attime',
        attime,
        '-CAfile',
        store.paths.root,
        store.paths.certChain,
      ]);
      expect(r).toEqual({ status: 0, output: `${store.paths.certChain}: OK\n` });
    } else {
      console.warn('openssl not found; skipping openssl verify');
    }
    const rotated = h.logs.find('Rotated workload certificate', 'info');
    expect(rotated).toEqual([
      expect.objectContaining({
        spiffeId: SPIFFE,
        serial: first.serialHex,
        notAfter: first.notAfter.toISOString(),
        attestation: 'token',
      }),
    ]);

    // It sleeps until half the lifetime (24 h + 60 s of backdating): 12 h - 30 s from issue.
    const delay = await idleFor();
    expect(delay).toBeGreaterThan(12 * H - 32_000);
    expect(delay).toBeLessThanOrEqual(12 * H - 29_000);
    expect(creates()).toHaveLength(1);

    clock.advanceToNextSleep();
    await waitFor(() => h.changes.length === 2, { what: 'renewal' });
    const second = h.changes[1]!.identity;
    expect(h.changes[1]!.change).toEqual({ source: 'ca', attestation: 'certificate' });
    expect(creates().map(c => [c.attestation, c.code])).toEqual([
      ['token', 0],
      ['certificate', 0],
    ]);
    // A renewal is a new key, not just a new certificate.
    expect(creates()[1]!.keyHash).not.toBe(creates()[0]!.keyHash);
    expect(second.serialHex).not.toBe(first.serialHex);
    expect(h.rotator.current()?.serialHex).toBe(second.serialHex);
    expect((await store.load(clock.now())).serialHex).toBe(second.serialHex);
    // Keys never reach the logs.
    expect(h.logs.text()).not.toContain('PRIVATE KEY');
  });

  it('retries with capped backoff while the CA is down and renews once it is back', async () => {
    const h = makeRotator();
    h.run();
    const first = await h.rotator.waitForIdentity(new AbortController().signal);
    await idleFor();
    const port = ca.address.split(':')[1];

    await ca.stop();
    clock.advanceToNextSleep(); // the renewal point: the first attempt fails at once
    const delays: number[] = [];
    for (let i = 0; i < 6; i++) {
      delays.push(await idleFor());
      clock.advanceToNextSleep();
    }
    // Backoff of 1 s doubling to the 8 s cap, half-jittered (random 0.5 → 75 % of the base).
    expect(delays).toEqual([750, 1500, 3000, 6000, 6000, 6000]);
    await waitFor(() => h.errors.length >= 7, { what: 'seventh failure' });
    expect(new Set(h.errors)).toEqual(new Set(['unavailable']));
    // Degraded but self-healing while the certificate is valid: warn, not error.
    const warned = h.logs.find('Could not renew workload certificate; will retry', 'warn');
    expect(warned.length).toBeGreaterThanOrEqual(7);
    expect(warned[0]).toMatchObject({
      reason: 'unavailable',
      attempt: 1,
      delayMs: 750,
      expired: false,
    });
    expect(h.rotator.current()?.serialHex).toBe(first.serialHex);

    await ca.start(Number(port)); // same port, as a restarted CA
    await advanceUntil(() => h.changes.length === 2, 'renewal after the CA came back');
    expect(h.changes[1]!.change).toEqual({ source: 'ca', attestation: 'certificate' });
    expect(creates().at(-1)).toMatchObject({ attestation: 'certificate', code: 0 });
    // Back to the normal schedule: the next sleep is the half-life of the new certificate.
    expect(await idleFor()).toBeGreaterThan(11 * H);
  });

  it('reuses a valid certificate from disk after a restart, without a token, ready at once', async () => {
    const h1 = makeRotator();
    h1.run();
    const first = await h1.rotator.waitForIdentity(new AbortController().signal);
    await idleFor();
    await h1.stop();
    expect(fs.existsSync(paths.token)).toBe(false);
    const callsBefore = ca.calls.length;

    const h2 = makeRotator();
    const loaded = await h2.rotator.loadFromDisk();
    expect(loaded?.serialHex).toBe(first.serialHex);
    expect(h2.rotator.current()?.serialHex).toBe(first.serialHex);
    expect(h2.changes.map(c => c.change)).toEqual([{ source: 'disk' }]);
    expect(h2.logs.find('Loaded workload certificate from disk', 'info')).toHaveLength(1);
    h2.run();
    expect(await idleFor()).toBeGreaterThan(11 * H);
    expect(ca.calls.length).toBe(callsBefore);

    // And it renews with that certificate when the time comes.
    clock.advanceToNextSleep();
    await waitFor(() => h2.changes.length === 2, { what: 'renewal' });
    expect(creates().at(-1)).toMatchObject({ attestation: 'certificate', code: 0 });
  });

  it('renews into the configured identity when the stored certificate carries another', async () => {
    const h1 = makeRotator();
    h1.run();
    await h1.rotator.waitForIdentity(new AbortController().signal);
    await idleFor();
    await h1.stop();

    ca.assign(NODE, SPIFFE, 'spiffe://cluster.local/ns/default/sa/ratings');
    const h2 = makeRotator({ serviceAccount: 'ratings' });
    expect((await h2.rotator.loadFromDisk())?.spiffeId).toBe(SPIFFE);
    expect(h2.rotator.current()).toBeUndefined(); // not the identity asked for: not ready
    expect(h2.logs.find('Workload certificate on disk has another identity', 'warn')).toHaveLength(
      1,
    );
    h2.run();
    const id = await h2.rotator.waitForIdentity(new AbortController().signal);
    expect(id.spiffeId).toBe('spiffe://cluster.local/ns/default/sa/ratings');
    // The old certificate still authenticated the node.
    expect(creates().at(-1)).toMatchObject({ attestation: 'certificate', code: 0 });
  });

  it('retries a token with the same key after a lost answer, which the CA accepts', async () => {
    ca.loseNextAnswer();
    const h = makeRotator();
    h.run();
    await idleFor(); // backoff after the lost answer
    expect(h.errors).toEqual(['unavailable']);
    expect(fs.existsSync(path.join(paths.state, 'pending-key.pem'))).toBe(true);
    expect(fs.statSync(path.join(paths.state, 'pending-key.pem')).mode & 0o777).toBe(0o600);
    clock.advanceToNextSleep();
    await h.rotator.waitForIdentity(new AbortController().signal);
    const [lost, retried] = creates();
    expect(lost).toMatchObject({ attestation: 'token', code: 14 });
    expect(retried).toMatchObject({ attestation: 'token', code: 0, keyHash: lost!.keyHash });
  });

  it('starts over with a fresh key when the CA rejects the request itself', async () => {
    ca.failNext(new InvalidInputError('key too weak', { code: 'CA_CSR_INVALID' }));
    const h = makeRotator();
    h.run();
    await idleFor();
    expect(h.errors).toEqual(['invalid_request']);
    clock.advanceToNextSleep();
    await h.rotator.waitForIdentity(new AbortController().signal);
    const [rejected, accepted] = creates();
    expect(rejected).toMatchObject({ code: 3, caCode: 'CA_CSR_INVALID' });
    expect(accepted!.keyHash).not.toBe(rejected!.keyHash);
  });

  it('re-attests with the bootstrap certificate when renewal is refused', async () => {
    const boot = await ca.issueBootstrapCert(NODE);
    fs.writeFileSync(paths.bootCert, boot.certPem);
    fs.writeFileSync(paths.bootKey, boot.keyPem, { mode: 0o600 });
    fs.rmSync(paths.token);
    const h = makeRotator({ bootstrap: true });
    h.run();
    await h.rotator.waitForIdentity(new AbortController().signal);
    expect(creates().map(c => c.attestation)).toEqual(['bootstrap']);

    await idleFor();
    ca.failNext(new NotAuthorizedError('node certificate revoked', { code: 'CA_NODE_UNKNOWN' }));
    clock.advanceToNextSleep();
    await waitFor(() => h.changes.length === 2, {
      what: 'renewal through the bootstrap certificate',
    });
    expect(creates().map(c => [c.attestation, c.caCode])).toEqual([
      ['bootstrap', undefined],
      ['certificate', 'CA_NODE_UNKNOWN'],
      ['bootstrap', undefined],
    ]);
    expect(h.changes[1]!.change).toEqual({ source: 'ca', attestation: 'bootstrap' });
    expect(h.logs.find('CA refused credentials; trying the next kind', 'warn')[0]).toMatchObject({
      attestation: 'certificate',
      code: 'CA_NODE_UNKNOWN',
    });
  });

  it('after its certificate expired with nothing to attest with, picks up a new token', async () => {
    const h = makeRotator();
    h.run();
    const first = await h.rotator.waitForIdentity(new AbortController().signal);
    await idleFor();
    await ca.stop();
    // Jump past expiry in one go: the renewal attempt fails (CA down), and then the certificate is gone.
    clock.advance(first.notAfter.getTime() - clock.now() + 1);
    await idleFor();
    expect(h.rotator.current()).toBeUndefined();
    await ca.start(Number(ca.address.split(':')[1]));
    clock.advanceToNextSleep();
    await waitFor(() => h.errors.includes('no_credentials'), { what: 'no-credentials failure' });
    const expired = h.logs.find('Could not obtain workload certificate; will retry', 'error');
    expect(expired.at(-1)).toMatchObject({ reason: 'no_credentials', expired: true });

    // An operator drops a new token into the file; the next attempt uses it.
    fs.writeFileSync(paths.token, ca.createToken(NODE), { mode: 0o600 });
    await advanceUntil(() => h.changes.length === 2, 'attestation with the new token');
    expect(h.changes[1]!.change).toEqual({ source: 'ca', attestation: 'token' });
    expect(h.rotator.current()).toBeDefined();
    expect(fs.existsSync(paths.token)).toBe(false);
  });

  it('reports a missing trust anchor and recovers when it appears', async () => {
    fs.rmSync(paths.root);
    const h = makeRotator();
    h.run();
    await idleFor();
    expect(h.errors).toEqual(['no_root']);
    expect(
      h.logs.find('Could not obtain workload certificate; will retry', 'error')[0],
    ).toMatchObject({ reason: 'no_root' });
    fs.writeFileSync(paths.root, ca.rootPem);
    clock.advanceToNextSleep();
    await h.rotator.waitForIdentity(new AbortController().signal);
    expect(creates().map(c => c.attestation)).toEqual(['token']);
  });

  it('refuses to talk to a server that is not the CA it trusts', async () => {
    const other = await TestCa.create({ clock });
    fs.writeFileSync(paths.root, other.rootPem); // trust another mesh's root
    const h = makeRotator();
    h.run();
    await idleFor();
    expect(h.errors).toEqual(['unavailable']);
    expect(ca.calls).toHaveLength(0);
  });

  it('keeps retrying, without spinning, while the CA refuses a used token', async () => {
    const h = makeRotator();
    ca.failNext(new NotAuthorizedError('join token already used', { code: 'CA_TOKEN_USED' }));
    ca.failNext(new NotReadyError('busy'));
    h.run();
    expect(await idleFor()).toBe(750);
    clock.advanceToNextSleep();
    expect(await idleFor()).toBe(1500);
    expect(h.errors).toEqual(['refused', 'unavailable']);
    expect(
      h.logs.find('Could not obtain workload certificate; will retry', 'error')[0],
    ).toMatchObject({ code: 'CA_TOKEN_USED' });
    clock.advanceToNextSleep();
    await h.rotator.waitForIdentity(new AbortController().signal);
  });
});
