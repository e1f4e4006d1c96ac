/**
 * Pilot with real processes and the real CLI: `sail control-plane` (file store) driven by
 * `sail apply | get | delete | validate | proxy-config`, a restart on the same data dir, and two
 * `sail pilot` replicas on one real etcd. xDS is checked with a raw ADS client on the plaintext
 * listener.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { parse as parseYaml } from 'yaml';
import { EtcdServer } from '../helpers/etcd';
import { sail, type SailResult, socketGet } from '../helpers/sail-cli';
import { SailProcess, sailBuilt } from '../helpers/sail-process';
import { TestCa } from '../helpers/test-ca';
import { makeTmpDir } from '../helpers/tmp-dir';
import { waitFor } from '../helpers/wait-for';
import { AdsTestClient, type DecodedResponse } from '../helpers/xds-client';

const run = sailBuilt() ? describe : describe.skip;
if (!sailBuilt()) console.warn('pilot test skipped: run `npm run build` first (npm test does)');

const CDS = 'type.googleapis.com/envoy.config.cluster.v3.Cluster';
const NODE_ID = 'sidecar~10.0.0.5~vm-1.default~default.svc.cluster.local';
const cluster = (host: string, subset = '') =>
  `outbound|9080|${subset}|${host}.default.svc.cluster.local`;

const SE_REVIEWS = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports:
    - number: 9080
      name: http
      protocol: HTTP
  resolution: STATIC
  endpoints:
    - address: 10.0.0.10
      labels: {version: v1}
    - address: 10.0.0.11
      labels: {version: v2}
`;

const DR_REVIEWS = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
    - name: v1
      labels: {version: v1}
    - name: v2
      labels: {version: v2}
`;

const vsReviews = (w1: number, w2: number) => `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
    - route:
        - destination: {host: reviews, subset: v1}
          weight: ${w1}
        - destination: {host: reviews, subset: v2}
          weight: ${w2}
`;

const seFor = (name: string, ip: string) => `apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: ${name}
spec:
  hosts: [${name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports:
    - {number: 9080, name: http, protocol: HTTP}
  resolution: STATIC
  endpoints:
    - address: ${ip}
`;

/** A VirtualService that passes the local check but names a subset nothing defines. */
const VS_NO_SUBSET = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts: [ratings]
  http:
    - route:
        - destination: {host: ratings, subset: v9}
`;

const DR_RATINGS = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: ratings
spec:
  host: ratings
  subsets:
    - name: v1
      labels: {version: v1}
`;

const VS_RATINGS_V1 = VS_NO_SUBSET.replace('subset: v9', 'subset: v1');

const VS_DETAILS_SHOP = `apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: details
  namespace: shop
spec:
  hosts: [details]
  http:
    - route:
        - destination: {host: details}
`;

/**
 * Document 1 has a misspelt field (`weigth`) in the route item starting on {@link badLine} (the
 * line reported is that of the mapping holding the unknown field).
 */
const BAD_BATCH = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: good-one
spec:
  host: good-one
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bad
spec:
  hosts: [bad]
  http:
    - route:
        - destination: {host: bad}
          weight: 80
        - destination: {host: bad2}
          weigth: 20
`;
const badLine = BAD_BATCH.split('\n').findIndex(l => l.includes('{host: bad2}')) + 1;

const UNKNOWN_KIND = `apiVersion: networking.istio.io/v1
kind: Frobnicator
metadata: {name: x}
spec: {}
`;

/** A minimal raw CDS subscriber on a plaintext xDS address. */
function cdsClient(address: string): AdsTestClient {
  return new AdsTestClient(address, grpc.credentials.createInsecure(), { id: NODE_ID });
}

const names = (r: DecodedResponse) => r.resources.map(c => String(c.name));

/** Reads responses until one satisfies `cond` (intermediate pushes are ACKed). */
async function nextMatching(
  client: AdsTestClient,
  cond: (r: DecodedResponse) => boolean,
  timeoutMs = 5_000,
): Promise<DecodedResponse> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await client.next(Math.max(1, deadline - Date.now()));
    if (cond(r)) return r;
    client.ack(r);
  }
}

const expectExit = (r: SailResult, status: number) => {
  if (r.status !== status)
    throw new Error(`exit ${r.status}, want ${status}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
};

run('sail control-plane: configuration verbs and proxy-config', () => {
  const tmp = makeTmpDir('sail-pilot-it-');
  const dataDir = path.join(tmp.dir, 'cp');
  const cfgDir = path.join(tmp.dir, 'cfg');
  const file = (name: string, text?: string) => {
    const p = path.join(tmp.dir, name);
    if (text !== undefined) fs.writeFileSync(p, text);
    return p;
  };
  const env = { SAIL_SERVER: `unix://${path.join(dataDir, 'admin.sock')}` };
  const cli = (args: string[], input?: string) =>
    sail(args, { env, ...(input !== undefined ? { input } : {}) });
  const startCp = () =>
    new SailProcess([
      'control-plane',
      '--data-dir',
      dataDir,
      '--ca-listen',
      '127.0.0.1:0',
      '--pilot-listen',
      '127.0.0.1:0',
      '--admin-listen',
      '',
      '--xds-plaintext-listen',
      '127.0.0.1:0',
    ]);
  let cp: SailProcess;
  let ads: AdsTestClient | undefined;

  beforeAll(() => {
    fs.mkdirSync(cfgDir);
    fs.writeFileSync(path.join(cfgDir, 'se.yaml'), SE_REVIEWS);
    fs.writeFileSync(path.join(cfgDir, 'dr.yaml'), DR_REVIEWS);
    fs.writeFileSync(path.join(cfgDir, 'vs.yaml'), vsReviews(80, 20));
    fs.writeFileSync(path.join(cfgDir, 'notes.txt'), 'not configuration: skipped in a directory');
  });

  afterAll(async () => {
    ads?.close();
    const code = await cp?.stop();
    tmp.cleanup();
    expect(code).toBe(0);
  });

  it('answers /readyz only once pilot is started, and then ready', async () => {
    cp = startCp();
    const socket = path.join(dataDir, 'admin.sock');
    // Poll from the moment of spawn: nothing may answer "ready" before pilot has loaded.
    const answers: { status: number; text: string }[] = [];
    await waitFor(
      async () => {
        const a = await socketGet(socket, '/readyz');
        answers.push(a);
        return a.status === 200;
      },
      { timeoutMs: 20_000, intervalMs: 20, what: '/readyz 200 on the admin socket' },
    );
    expect(answers.every(a => a.status === 200 && a.text === 'ready\n')).toBe(true);
    // The socket (and so /readyz) comes up only after pilot logged that it is ready.
    await cp.waitForLog('Admin socket listening');
    const msgs = cp.lines.map(l => l.msg);
    const readyAt = msgs.indexOf('Pilot ready');
    const socketAt = msgs.indexOf('Admin socket listening');
    expect(readyAt).toBeGreaterThanOrEqual(0);
    expect(socketAt).toBeGreaterThan(readyAt);
    expect(await socketGet(socket, '/healthz')).toEqual({ status: 200, text: 'ok\n' });
  });

  it('applies a directory, then reports unchanged and configured like kubectl', async () => {
    const first = await cli(['apply', '-f', cfgDir]);
    expectExit(first, 0);
    expect(first.stdout).toBe(
      [
        'destinationrule.networking.istio.io/reviews created',
        'serviceentry.networking.istio.io/reviews created',
        'virtualservice.networking.istio.io/reviews created',
        '',
      ].join('\n'),
    );
    const getVs = async () => {
      const r = await cli(['get', 'vs', 'reviews', '-o', 'json']);
      expectExit(r, 0);
      return JSON.parse(r.stdout) as {
        spec: { http: { route: { weight: number }[] }[] };
        metadata: { resourceVersion: string };
      };
    };
    const v1 = (await getVs()).metadata.resourceVersion;
    const again = await cli(['apply', '-f', cfgDir]);
    expectExit(again, 0);
    expect(again.stdout).toContain('virtualservice.networking.istio.io/reviews unchanged\n');
    expect(again.stdout).not.toMatch(/created|configured/);
    expect((await getVs()).metadata.resourceVersion).toBe(v1);

    // The VirtualService alone: its subsets come from the stored DestinationRule.
    fs.writeFileSync(path.join(cfgDir, 'vs.yaml'), vsReviews(50, 50));
    const edited = await cli(['apply', '-f', path.join(cfgDir, 'vs.yaml')]);
    expectExit(edited, 0);
    expect(edited.stdout).toBe('virtualservice.networking.istio.io/reviews configured\n');
    const vs = await getVs();
    expect(vs.spec.http[0]!.route.map(r => r.weight)).toEqual([50, 50]);
    expect(vs.metadata.resourceVersion).not.toBe(v1);
  });

  it('refuses an invalid file with exit 2, naming file, document, field and line, storing nothing', async () => {
    const bad = file('bad.yaml', BAD_BATCH);
    const r = await cli(['apply', '-f', bad]);
    expectExit(r, 2);
    expect(r.stderr).toContain(
      `${bad}#1 (VirtualService default/bad): spec.http[0].route[1]: unknown field "weigth"`,
    );
    expect(r.stderr).toContain(`(line ${badLine})`);
    expect(r.stdout).toBe('');
    // All or nothing: the valid DestinationRule of the same batch was not stored.
    const dr = await cli(['get', 'dr', 'good-one']);
    expectExit(dr, 1);
    expect(dr.stderr).toContain('destinationrule "good-one" not found in namespace default');
  });

  it('has pilot refuse a subset no DestinationRule defines, though the local check passes', async () => {
    const f = file('ratings-vs.yaml', VS_NO_SUBSET);
    // Local check only (no server there): it passes and the CLI goes on to contact pilot.
    const offline = await sail(['apply', '-f', f], {
      env: { SAIL_SERVER: `unix://${path.join(tmp.dir, 'nobody.sock')}` },
    });
    expectExit(offline, 1);
    expect(offline.stderr).toContain('cannot reach the control plane');

    const r = await cli(['apply', '-f', f]);
    expectExit(r, 2);
    expect(r.stderr).toContain(
      `${f}#0 (VirtualService default/ratings): spec.http[0].route[0].destination.subset: subset "v9" is not defined`,
    );

    // Pilot's refusal is all or nothing too: a DestinationRule in the same call is not stored.
    const batch = file('ratings-batch.yaml', `${DR_RATINGS}---\n${VS_NO_SUBSET}`);
    const both = await cli(['apply', '-f', batch]);
    expectExit(both, 2);
    expect(both.stderr).toContain('subset "v9" is not defined');
    expect(both.stderr).toContain('defines v1');
    expectExit(await cli(['get', 'dr', 'ratings']), 1);
    expectExit(await cli(['get', 'vs', 'ratings']), 1);
  });

  it('applies from stdin, and validates without storing on --dry-run', async () => {
    const r = await cli(['apply', '-f', '-'], VS_DETAILS_SHOP);
    expectExit(r, 0);
    expect(r.stdout).toBe('virtualservice.networking.istio.io/details created\n');

    const dry = await cli(['apply', '--dry-run', '-f', '-'], seFor('dry', '10.0.0.30'));
    expectExit(dry, 0);
    expect(dry.stdout).toBe('serviceentry.networking.istio.io/dry validated (dry run)\n');
    const get = await cli(['get', 'se', 'dry']);
    expectExit(get, 1);
    expect(get.stderr).toContain('serviceentry "dry" not found in namespace default');
  });

  it('gets objects as a table, YAML and JSON', async () => {
    const all = await cli(['get', 'vs', '-A']);
    expectExit(all, 0);
    const rows = all.stdout.trim().split('\n');
    expect(rows[0]).toMatch(/^NAMESPACE\s+NAME\s+HOSTS\s+AGE$/);
    expect(rows.slice(1).map(l => l.split(/\s+/).slice(0, 3))).toEqual(
      expect.arrayContaining([
        ['default', 'reviews', '[reviews]'],
        ['shop', 'details', '[details]'],
      ]),
    );
    expect(rows).toHaveLength(3);
    // Without -A: the default namespace only.
    const ns = await cli(['get', 'virtualservices']);
    expect(ns.stdout).toContain('reviews');
    expect(ns.stdout).not.toContain('details');

    const yaml = await cli(['get', 'vs', 'reviews', '-o', 'yaml']);
    expectExit(yaml, 0);
    const obj = parseYaml(yaml.stdout) as { metadata: { resourceVersion?: unknown } };
    expect(obj).toMatchObject({
      apiVersion: 'networking.istio.io/v1',
      kind: 'VirtualService',
      metadata: { name: 'reviews', namespace: 'default' },
      spec: { hosts: ['reviews'] },
    });
    expect(typeof obj.metadata.resourceVersion).toBe('string');

    const json = await cli(['get', 'vs', 'details', '-n', 'shop', '-o', 'json']);
    expectExit(json, 0);
    expect(JSON.parse(json.stdout)).toMatchObject({
      apiVersion: 'networking.istio.io/v1alpha3',
      kind: 'VirtualService',
      metadata: { name: 'details', namespace: 'shop' },
    });
    const list = JSON.parse((await cli(['get', 'dr', '-A', '-o', 'json'])).stdout) as {
      kind: string;
      items: { metadata: { name: string } }[];
    };
    expect(list.kind).toBe('List');
    expect(list.items.map(i => i.metadata.name)).toEqual(['reviews']);

    const missing = await cli(['get', 'vs', 'nope']);
    expectExit(missing, 1);
    expect(missing.stderr).toBe('sail: virtualservice "nope" not found in namespace default\n');
  });

  it('deletes by name and by file; a missing object exits 1 unless --ignore-not-found', async () => {
    const del = await cli(['delete', 'vs', 'details', '-n', 'shop']);
    expectExit(del, 0);
    expect(del.stdout).toBe('virtualservice.networking.istio.io/details deleted\n');
    expectExit(await cli(['get', 'vs', 'details', '-n', 'shop']), 1);

    const again = await cli(['delete', 'vs', 'details', '-n', 'shop']);
    expectExit(again, 1);
    expect(again.stderr).toContain('virtualservice "details" not found in namespace shop');
    const ignored = await cli(['delete', 'vs', 'details', '-n', 'shop', '--ignore-not-found']);
    expectExit(ignored, 0);
    expect(ignored.stdout).toBe('');

    // Deleting one file of a set: the VirtualService goes though its subsets' rule stays.
    const dr = file('temp-dr.yaml', DR_RATINGS);
    const vs = file('temp-vs.yaml', VS_RATINGS_V1);
    const applied = await cli(['apply', '-f', dr, '-f', vs]);
    expectExit(applied, 0);
    expect(applied.stdout).toBe(
      'destinationrule.networking.istio.io/ratings created\n' +
        'virtualservice.networking.istio.io/ratings created\n',
    );
    // The rule cannot go while the VirtualService routes to its subsets, unless forced.
    const inUse = await cli(['delete', '-f', dr]);
    expectExit(inUse, 2);
    expect(inUse.stderr).toContain('would leave the stored configuration invalid');
    expect(inUse.stderr).toContain('subset "v1" is not defined');
    expectExit(await cli(['get', 'dr', 'ratings']), 0);
    const byFile = await cli(['delete', '-f', vs]);
    expectExit(byFile, 0);
    expect(byFile.stdout).toBe('virtualservice.networking.istio.io/ratings deleted\n');
    expectExit(await cli(['get', 'vs', 'ratings']), 1);
    expectExit(await cli(['get', 'dr', 'ratings']), 0);
    expectExit(await cli(['delete', '-f', dr]), 0);
    expectExit(await cli(['get', 'dr', 'ratings']), 1);
  });

  it('refuses an unknown kind with exit 2', async () => {
    const f = file('unknown.yaml', UNKNOWN_KIND);
    for (const args of [
      ['apply', '-f', f],
      ['validate', '-f', f],
    ]) {
      const r = await cli(args);
      expectExit(r, 2);
      expect(r.stderr).toContain(
        `${f}#0 (Frobnicator default/x): kind: unknown kind "Frobnicator"`,
      );
    }
    const get = await cli(['get', 'frobnicators']);
    expectExit(get, 2);
    expect(get.stderr).toContain('unknown kind "frobnicators"');
  });

  it('shows what a node ACKed and NACKed with proxy-config', async () => {
    const started = cp.lines.find(
      l => typeof l.msg === 'string' && l.msg.startsWith('Pilot xDS plaintext'),
    );
    const address = String(started?.address);
    expect(address).toMatch(/^127\.0\.0\.1:\d+$/);
    ads = cdsClient(address);
    ads.request({ typeUrl: CDS });
    const first = await ads.next();
    expect(names(first)).toEqual(
      expect.arrayContaining([
        cluster('reviews'),
        cluster('reviews', 'v1'),
        cluster('reviews', 'v2'),
      ]),
    );
    ads.ack(first);

    const acked = await waitFor(
      async () => {
        const r = await cli(['proxy-config', 'vm-1']);
        return r.status === 0 && /^clusters\s.*\sACKED\s/m.test(r.stdout) ? r : undefined;
      },
      { timeoutMs: 5_000, intervalMs: 100, what: 'proxy-config to show the CDS ACK' },
    );
    expect(acked.stdout).toContain(`(${NODE_ID}) sidecar, namespace default`);
    expect(acked.stdout).toMatch(
      new RegExp(`^clusters\\s+${first.versionInfo}\\s+${first.versionInfo}\\s+ACKED\\s`, 'm'),
    );

    // A newer push (a new service), rejected by the client.
    expectExit(
      await cli(['apply', '-f', file('ratings-se.yaml', seFor('ratings', '10.0.0.20'))]),
      0,
    );
    const second = await nextMatching(ads, r => names(r).includes(cluster('ratings')));
    expect(second.versionInfo).not.toBe(first.versionInfo);
    ads.request({
      typeUrl: CDS,
      versionInfo: first.versionInfo,
      responseNonce: second.nonce,
      errorDetail: { code: 3, message: 'cluster ratings rejected by the test' },
    });
    const nacked = await waitFor(
      async () => {
        const r = await cli(['proxy-config', 'vm-1']);
        return r.stdout.includes('NACK: cluster ratings rejected by the test') ? r : undefined;
      },
      { timeoutMs: 5_000, intervalMs: 100, what: 'proxy-config to show the NACK' },
    );
    expect(nacked.stdout).toMatch(
      new RegExp(`^clusters\\s+${second.versionInfo}\\s+${first.versionInfo}\\s+NACK: `, 'm'),
    );

    // The clusters in full, by node id.
    const full = await cli(['proxy-config', NODE_ID, '--type', 'clusters']);
    expectExit(full, 0);
    const clusters = JSON.parse(full.stdout) as { name: string; type?: string }[];
    expect(clusters.map(c => c.name)).toEqual(
      expect.arrayContaining([cluster('reviews'), cluster('reviews', 'v2'), cluster('ratings')]),
    );

    const unknown = await cli(['proxy-config', 'vm-404']);
    expectExit(unknown, 1);
    expect(unknown.stderr).toContain('no xDS client of node "vm-404" is connected');
  });

  it('keeps objects and resource versions across a restart on the same data dir', async () => {
    const dump = async () => {
      const out: Record<string, unknown> = {};
      for (const kind of ['vs', 'dr', 'se']) {
        const r = await cli(['get', kind, '-A', '-o', 'json']);
        expectExit(r, 0);
        out[kind] = (JSON.parse(r.stdout) as { items: unknown[] }).items;
      }
      return out;
    };
    const before = await dump();
    expect((before.se as unknown[]).length).toBe(2); // reviews, ratings
    ads?.close();
    ads = undefined;
    expect(await cp.stop()).toBe(0);
    cp = startCp();
    await cp.waitForLog('Admin socket listening', 20_000);
    expect(cp.logs('Pilot ready')[0]).toMatchObject({ objects: 4 });
    const after = await dump();
    expect(after).toEqual(before);
    const vs = (after.vs as { metadata: { resourceVersion?: string } }[])[0];
    expect(vs?.metadata.resourceVersion).toMatch(/^\d+$/);
  });
});

run('sail validate (offline)', () => {
  const tmp = makeTmpDir('sail-validate-it-');
  afterAll(() => tmp.cleanup());
  // No server anywhere: validate must not need one.
  const env = { SAIL_SERVER: `unix://${path.join(tmp.dir, 'none.sock')}` };

  it('exits 0 for a consistent set and 2 for a bad one', async () => {
    const dir = path.join(tmp.dir, 'ok');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'a-se.yaml'), SE_REVIEWS);
    fs.writeFileSync(path.join(dir, 'b-dr.yaml'), DR_REVIEWS);
    fs.writeFileSync(path.join(dir, 'c-vs.yaml'), vsReviews(80, 20));
    const ok = await sail(['validate', '-f', dir], { env });
    expectExit(ok, 0);
    expect(ok.stdout).toContain('virtualservice.networking.istio.io/reviews valid\n');
    expect(ok.stdout).toContain(`3 documents valid in ${dir}\n`);

    // Offline, the whole set is checked: subsets must be defined in the files given.
    const vsOnly = await sail(['validate', '-f', path.join(dir, 'c-vs.yaml')], { env });
    expectExit(vsOnly, 2);
    expect(vsOnly.stderr).toContain('subset "v1" is not defined');

    const bad = path.join(tmp.dir, 'bad.yaml');
    fs.writeFileSync(bad, BAD_BATCH);
    const r = await sail(['validate', '-f', bad], { env });
    expectExit(r, 2);
    expect(r.stderr).toContain(`${bad}#1 (VirtualService default/bad): spec.http[0].route[1]`);
    expect(r.stderr).toContain(`(line ${badLine})`);

    const stdin = await sail(['validate', '-f', '-'], { env, input: vsReviews(90, 20) });
    expectExit(stdin, 2);
    expect(stdin.stderr).toContain(
      '-#0 (VirtualService default/reviews): spec.http[0].route: weights sum to 110, want 100 (line 8)',
    );
  });
});

run('replicated pilots on one etcd', () => {
  const tmp = makeTmpDir('sail-pilot-etcd-');
  const certDir = path.join(tmp.dir, 'certs');
  const d1 = path.join(tmp.dir, 'p1');
  const d2 = path.join(tmp.dir, 'p2');
  let etcd: EtcdServer | undefined;
  let p1: SailProcess | undefined;
  let p2: SailProcess | undefined;
  let ads: AdsTestClient | undefined;
  const at = (dir: string) => ({ SAIL_SERVER: `unix://${path.join(dir, 'admin.sock')}` });
  const pilotArgs = (dataDir: string, endpoints: string) => [
    'pilot',
    '--store',
    'etcd',
    '--etcd-endpoints',
    endpoints,
    '--cert-dir',
    certDir,
    '--listen',
    '127.0.0.1:0',
    '--admin-listen',
    '',
    '--xds-plaintext-listen',
    '127.0.0.1:0',
    '--data-dir',
    dataDir,
  ];

  beforeAll(async () => {
    const ca = await TestCa.create();
    const now = Date.now();
    const cert = await ca.issueWorkloadCert({
      node: 'pilot',
      spiffeId: 'spiffe://cluster.local/ns/sail-system/sa/sail-control-plane',
      notBeforeMs: now - 60_000,
      notAfterMs: now + 3600_000,
    });
    for (const d of [certDir, d1, d2]) fs.mkdirSync(d, { mode: 0o700 });
    fs.writeFileSync(path.join(certDir, 'cert-chain.pem'), cert.certChainPem);
    fs.writeFileSync(path.join(certDir, 'key.pem'), cert.keyPem, { mode: 0o600 });
    fs.writeFileSync(path.join(certDir, 'root-cert.pem'), ca.rootPem);
    etcd = await EtcdServer.start();
    p1 = new SailProcess(pilotArgs(d1, etcd.endpoint));
    p2 = new SailProcess(pilotArgs(d2, etcd.endpoint));
    await Promise.all([
      p1.waitForLog('Admin socket listening', 20_000),
      p2.waitForLog('Admin socket listening', 20_000),
    ]);
  });

  afterAll(async () => {
    ads?.close();
    const codes = await Promise.all([p1?.stop(), p2?.stop()]);
    await etcd?.stop();
    tmp.cleanup();
    expect(codes).toEqual([0, 0]);
  });

  it('serves a change applied to one pilot from the other: get and xDS', async () => {
    expect(p1!.logs('Pilot ready')[0]).toMatchObject({ store: 'etcd' });
    const plain = p2!.lines.find(
      l => typeof l.msg === 'string' && l.msg.startsWith('Pilot xDS plaintext'),
    );
    ads = cdsClient(String(plain?.address));
    ads.request({ typeUrl: CDS });
    const first = await ads.next();
    expect(names(first)).not.toContain(cluster('payments'));
    ads.ack(first);

    const f = path.join(tmp.dir, 'payments.yaml');
    fs.writeFileSync(f, seFor('payments', '10.0.0.50'));
    const applied = await sail(['apply', '-f', f], { env: at(d1) });
    expectExit(applied, 0);
    expect(applied.stdout).toBe('serviceentry.networking.istio.io/payments created\n');
    const appliedAt = Date.now();

    // Pilot 2 pushes the new cluster to its client, within a couple of seconds.
    const pushed = await nextMatching(ads, r => names(r).includes(cluster('payments')), 3_000);
    const pushMs = Date.now() - appliedAt;
    ads.ack(pushed);
    expect(pushMs).toBeLessThan(2_500);

    const got = await waitFor(
      async () => {
        const r = await sail(['get', 'se', 'payments', '-o', 'json'], { env: at(d2) });
        return r.status === 0 ? r : undefined;
      },
      { timeoutMs: 3_000, intervalMs: 50, what: 'pilot 2 to see the ServiceEntry' },
    );
    const obj = JSON.parse(got.stdout) as { metadata: { name: string; resourceVersion: string } };
    expect(obj.metadata.name).toBe('payments');
    const onP1 = JSON.parse(
      (await sail(['get', 'se', 'payments', '-o', 'json'], { env: at(d1) })).stdout,
    ) as { metadata: { resourceVersion: string } };
    expect(obj.metadata.resourceVersion).toBe(onP1.metadata.resourceVersion);

    // And back: a delete on pilot 2 reaches pilot 1.
    expectExit(await sail(['delete', 'se', 'payments'], { env: at(d2) }), 0);
    await waitFor(
      async () => (await sail(['get', 'se', 'payments'], { env: at(d1) })).status === 1,
      { timeoutMs: 3_000, intervalMs: 50, what: 'pilot 1 to see the delete' },
    );
  });

  it('exits 2 on a missing --cert-dir file and on --store etcd without endpoints', async () => {
    const partial = path.join(tmp.dir, 'partial-certs');
    fs.mkdirSync(partial);
    fs.copyFileSync(path.join(certDir, 'cert-chain.pem'), path.join(partial, 'cert-chain.pem'));
    fs.copyFileSync(path.join(certDir, 'root-cert.pem'), path.join(partial, 'root-cert.pem'));
    const dataDir = path.join(tmp.dir, 'p3');
    const missing = await sail([
      'pilot',
      '--cert-dir',
      partial,
      '--data-dir',
      dataDir,
      '--listen',
      '127.0.0.1:0',
      '--admin-listen',
      '',
    ]);
    expectExit(missing, 2);
    expect(missing.stderr).toContain(`${path.join(partial, 'key.pem')}: ENOENT`);

    const noEndpoints = await sail([
      'pilot',
      '--store',
      'etcd',
      '--cert-dir',
      certDir,
      '--data-dir',
      dataDir,
      '--listen',
      '127.0.0.1:0',
      '--admin-listen',
      '',
    ]);
    expectExit(noEndpoints, 2);
    expect(noEndpoints.stderr).toContain('--store etcd needs --etcd-endpoints');
  });
});
