/**
 * The etcd store against a real etcd (/usr/bin/etcd, Debian's etcd-server): the shared contract
 * suite, then what only etcd has: two pilots, etcd going away and coming back, compaction, TLS.
 * Without the binary every test here fails with a message saying what to install.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { Etcd3 } from 'etcd3';
import { silentLogger } from '../../common/logging';
import { EtcdServer, freePort } from '../../test/helpers/etcd';
import { LogCapture } from '../../test/helpers/log-capture';
import { makeTmpDir } from '../../test/helpers/tmp-dir';
import { waitFor } from '../../test/helpers/wait-for';
import { ConfigConflictError } from '../errors';
import { EtcdStore, type EtcdStoreOptions, parseEtcdEndpoints } from './etcd-store';
import type { ConfigEvent } from './store';
import { describeConfigStore, makeObject } from './store-suite';

/** etcd start, kill and restart take seconds on a loaded machine. */
jest.setTimeout(60_000);

let etcd: EtcdServer;
let prefixCount = 0;

beforeAll(async () => {
  etcd = await EtcdServer.start();
});
afterAll(async () => {
  await etcd?.stop();
});

/** A prefix no other test uses, on the shared etcd. */
function freshPrefix(): string {
  return `/sail-test/${process.pid}/${prefixCount++}/`;
}

function storeOptions(prefix: string, extra: Partial<EtcdStoreOptions> = {}): EtcdStoreOptions {
  return { endpoints: [etcd.endpoint], prefix, logger: silentLogger(), ...extra };
}

describeConfigStore('EtcdStore', async () => {
  const prefix = freshPrefix();
  const open: EtcdStore[] = [];
  const make = async () => {
    const s = new EtcdStore(storeOptions(prefix));
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
    peer: make,
    cleanup: async () => {
      await Promise.all(open.map(s => s.close()));
    },
  };
});

/**
 * A TCP forwarder between one store and etcd whose link can be cut (etcd unreachable for that
 * store only) or slowed down (that store's watch lags behind the others).
 */
class CuttableProxy {
  private readonly sockets = new Set<net.Socket>();
  private cut = false;

  private constructor(
    private readonly server: net.Server,
    readonly endpoint: string,
    private readonly delayMs: number,
  ) {}

  /** A proxy to `target`; every chunk is held `delayMs` each way (order kept). */
  static async start(target: string, delayMs = 0): Promise<CuttableProxy> {
    const { hostname, port } = new URL(target);
    const server = net.createServer();
    const proxy = await new Promise<CuttableProxy>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const addr = server.address() as net.AddressInfo;
        resolve(new CuttableProxy(server, `http://127.0.0.1:${addr.port}`, delayMs));
      });
    });
    server.on('connection', client => {
      proxy.forward(client, hostname, Number(port));
    });
    return proxy;
  }

  private forward(client: net.Socket, host: string, port: number): void {
    if (this.cut) {
      client.destroy();
      return;
    }
    const upstream = net.connect(port, host);
    for (const [a, b] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      this.sockets.add(a);
      a.on('data', (chunk: Buffer) => {
        const send = () => {
          if (!b.destroyed) b.write(chunk);
        };
        // Timers of equal delay fire in the order they were set: the byte stream stays intact.
        if (this.delayMs > 0) setTimeout(send, this.delayMs);
        else send();
      });
      a.on('error', () => b.destroy());
      a.on('close', () => {
        this.sockets.delete(a);
        b.destroy();
      });
    }
  }

  /** Drops every connection and refuses new ones until `restore()`. */
  sever(): void {
    this.cut = true;
    for (const s of this.sockets) s.destroy();
  }

  restore(): void {
    this.cut = false;
  }

  async close(): Promise<void> {
    this.sever();
    await new Promise(resolve => this.server.close(resolve));
  }
}

function record(store: EtcdStore): ConfigEvent[][] {
  const calls: ConfigEvent[][] = [];
  store.watch(events => calls.push([...events]));
  return calls;
}

describe('EtcdStore', () => {
  const open: { close(): Promise<void> | void }[] = [];
  afterEach(async () => {
    for (const o of open.splice(0).reverse()) await o.close();
  });

  async function started(opts: EtcdStoreOptions): Promise<EtcdStore> {
    const s = new EtcdStore(opts);
    open.push(s);
    await s.start();
    return s;
  }

  function client(): Etcd3 {
    const c = new Etcd3({ hosts: [etcd.endpoint] });
    open.push(c);
    return c;
  }

  it('keeps one JSON value per object under the prefix, its resourceVersion the mod_revision', async () => {
    const prefix = freshPrefix();
    const store = await started(storeOptions(prefix));
    const { put } = await store.write({ put: [makeObject('ServiceEntry', 'prod', 'web')] });
    const kv = (await client().get(`${prefix}ServiceEntry/prod/web`).exec()).kvs[0];
    expect(kv?.mod_revision).toBe(put[0]?.metadata.resourceVersion);
    const value = JSON.parse(kv?.value.toString('utf8') ?? '') as Record<string, unknown>;
    expect(value).toEqual({
      apiVersion: 'networking.istio.io/v1',
      kind: 'ServiceEntry',
      metadata: {
        name: 'web',
        namespace: 'prod',
        creationTimestamp: put[0]?.metadata.creationTimestamp,
        generation: 1,
      },
      spec: { hosts: ['web.example.com'] },
    });
  });

  it('uses /sail/config/ by default and adds a missing final slash', () => {
    expect(
      new EtcdStore({ endpoints: ['http://127.0.0.1:2379'], logger: silentLogger() }).prefix,
    ).toBe('/sail/config/');
    expect(
      new EtcdStore({ endpoints: ['http://127.0.0.1:2379'], prefix: '/x', logger: silentLogger() })
        .prefix,
    ).toBe('/x/');
  });

  it('sees writes made directly in etcd (another pilot version, etcdctl) as one batch per transaction', async () => {
    const prefix = freshPrefix();
    const store = await started(storeOptions(prefix));
    const calls = record(store);
    const c = client();
    const a = JSON.stringify(makeObject('ServiceEntry', 'default', 'a'));
    const b = JSON.stringify(makeObject('Gateway', 'default', 'b'));
    await c
      .if(`${prefix}ServiceEntry/default/a`, 'Mod', '==', 0)
      .then(
        c.put(`${prefix}ServiceEntry/default/a`).value(a),
        c.put(`${prefix}Gateway/default/b`).value(b),
      )
      .commit();
    await waitFor(() => calls.length === 1, { what: 'the watch event', timeoutMs: 1000 });
    expect(calls[0]?.map(e => `${e.type} ${e.object.kind}`)).toEqual([
      'added ServiceEntry',
      'added Gateway',
    ]);
    expect(store.list().map(o => o.metadata.name)).toEqual(['a', 'b']);
  });

  it('refuses to start when a value under the prefix is not a config object, naming the key', async () => {
    const prefix = freshPrefix();
    await client().put(`${prefix}ServiceEntry/default/a`).value('{"kind":');
    const store = new EtcdStore(storeOptions(prefix));
    open.push(store);
    const err = await store.start().catch((e: unknown) => e);
    expect((err as Error).message).toContain(
      `etcd key ${prefix}ServiceEntry/default/a does not hold a config object`,
    );
    expect(store.ready).toBe(false);
  });

  it('logs and ignores a malformed value arriving by watch, keeping the last good version', async () => {
    const prefix = freshPrefix();
    const log = new LogCapture();
    const store = await started(storeOptions(prefix, { logger: log.logger }));
    const { put } = await store.write({ put: [makeObject('ServiceEntry', 'default', 'a')] });
    const c = client();
    await c.put(`${prefix}ServiceEntry/default/a`).value('not json');
    await c.put(`${prefix}Pod/default/x`).value('{}');
    await waitFor(
      () => log.find('Ignoring a malformed config value in etcd', 'error').length === 2,
      {
        what: 'two error logs',
      },
    );
    expect(store.get({ kind: 'ServiceEntry', namespace: 'default', name: 'a' })).toEqual(put[0]);
    expect(log.text()).toContain(`${prefix}Pod/default/x`);
  });

  it('accepts as many changes as etcd --max-txn-ops allows, and refuses more with a clear error', async () => {
    const prefix = freshPrefix();
    const store = await started(storeOptions(prefix));
    const objs = (n: number, p: string) =>
      Array.from({ length: n }, (_, i) =>
        makeObject('WorkloadEntry', 'default', `${p}${i}`, { address: `10.0.0.${i % 250}` }),
      );
    const ok = await store.write({ put: objs(128, 'w') });
    expect(ok.put).toHaveLength(128);
    const err = await store.write({ put: objs(129, 'x') }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'PILOT_STORE_BATCH_TOO_LARGE' });
    expect((err as Error).message).toContain('changes 129 objects');
    expect(store.list()).toHaveLength(128);
  });

  it('fails start quickly with PILOT_STORE_UNAVAILABLE when etcd cannot be reached', async () => {
    const port = await freePort();
    const store = new EtcdStore({
      endpoints: [`http://127.0.0.1:${port}`],
      logger: silentLogger(),
      dialTimeoutMs: 500,
    });
    open.push(store);
    const t0 = Date.now();
    const err = await store.start().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'PILOT_STORE_UNAVAILABLE' });
    expect((err as Error).message).toContain(`http://127.0.0.1:${port}`);
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  it.each([
    [[], 'at least one URL'],
    [['127.0.0.1:2379'], 'http://host:port'],
    [['http://127.0.0.1'], 'must be http://host:port'],
    [['http://127.0.0.1:2379/v3'], 'no path'],
    [['http://a:1', 'https://b:2'], 'not a mix'],
  ])('rejects endpoints %j', (endpoints, message) => {
    expect(() => new EtcdStore({ endpoints, logger: silentLogger() })).toThrow(message);
  });

  it('parses a comma-separated --etcd-endpoints value', () => {
    expect(parseEtcdEndpoints('http://a:2379, http://b:2379')).toEqual([
      'http://a:2379',
      'http://b:2379',
    ]);
  });

  it('rejects TLS files with http endpoints, and a certificate without its key', () => {
    expect(
      () =>
        new EtcdStore({ endpoints: ['http://a:1'], tls: { ca: 'ca.pem' }, logger: silentLogger() }),
    ).toThrow('TLS files are set but the etcd endpoints are http://');
    expect(
      () =>
        new EtcdStore({
          endpoints: ['https://a:1'],
          tls: { ca: 'ca.pem', cert: 'c.pem' },
          logger: silentLogger(),
        }),
    ).toThrow('both the client certificate and its key');
  });

  it('serves reads but refuses writes while etcd is down, and recovers when it is back', async () => {
    const prefix = freshPrefix();
    const log = new LogCapture();
    const store = await started(storeOptions(prefix, { logger: log.logger, dialTimeoutMs: 1000 }));
    const other = await started(storeOptions(prefix));
    const { put } = await store.write({ put: [makeObject('ServiceEntry', 'default', 'a')] });
    const calls = record(store);

    await etcd.kill();
    await waitFor(() => !store.ready, { what: 'the store to notice etcd is down' });
    expect(
      log.find('Lost connection to etcd; serving the last known config, refusing writes', 'warn'),
    ).toHaveLength(1);
    expect(store.list()).toEqual(put);
    const err = await store
      .write({ put: [makeObject('ServiceEntry', 'default', 'b')] })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'PILOT_STORE_UNAVAILABLE' });
    expect((err as Error).message).toContain(etcd.endpoint);

    await etcd.restart();
    await waitFor(() => store.ready && other.ready, {
      what: 'both stores to reconnect',
      timeoutMs: 20_000,
      intervalMs: 50,
    });
    expect(log.find('Reconnected to etcd', 'info')).toHaveLength(1);
    // The other pilot's write reaches this one through the re-established watch...
    const { put: fromOther } = await other.write({ put: [makeObject('Gateway', 'default', 'g')] });
    await waitFor(() => calls.length === 1, {
      what: 'the event after the restart',
      timeoutMs: 1000,
    });
    expect(calls[0]).toEqual([{ type: 'added', object: fromOther[0] }]);
    // ...and this one writes again.
    const res = await store.write({ put: [makeObject('ServiceEntry', 'default', 'b')] });
    expect(res.putOutcome).toEqual(['created']);
  });

  it('reloads everything after missing compacted revisions, announcing the difference as one batch', async () => {
    const prefix = freshPrefix();
    const proxy = await CuttableProxy.start(etcd.endpoint);
    open.push(proxy);
    const log = new LogCapture();
    const store = await started({
      endpoints: [proxy.endpoint],
      prefix,
      logger: log.logger,
      dialTimeoutMs: 1000,
    });
    const other = await started(storeOptions(prefix));
    const { put } = await other.write({
      put: [
        makeObject('ServiceEntry', 'default', 'keep'),
        makeObject('ServiceEntry', 'default', 'gone'),
        makeObject('ServiceEntry', 'default', 'edit'),
      ],
    });
    await waitFor(() => store.list().length === 3, {
      what: 'the first store to load',
      timeoutMs: 1000,
    });
    const calls = record(store);

    proxy.sever();
    await waitFor(() => !store.ready, { what: 'the cut to be noticed' });
    const { put: later } = await other.write({
      put: [
        makeObject('ServiceEntry', 'default', 'new'),
        makeObject('ServiceEntry', 'default', 'edit', { hosts: ['e2'] }),
      ],
      delete: [{ kind: 'ServiceEntry', namespace: 'default', name: 'gone' }],
    });
    // Compact away everything the cut-off store has not seen, so its watch cannot resume: up to
    // a later write elsewhere (etcd keeps the compaction revision itself).
    const c = client();
    const elsewhere = await c.put(`${freshPrefix()}unrelated`).value('x').exec();
    expect(Number(elsewhere.header.revision)).toBeGreaterThan(
      Number(later[0]?.metadata.resourceVersion),
    );
    await c.kv.compact({ revision: elsewhere.header.revision, physical: true });
    proxy.restore();

    await waitFor(() => log.find('Reloaded the config from etcd', 'info').length === 1, {
      what: 'the reload',
      timeoutMs: 20_000,
      intervalMs: 50,
    });
    expect(store.ready).toBe(true);
    expect(store.list()).toEqual(other.list());
    expect(calls).toHaveLength(1);
    expect(calls[0]?.map(e => `${e.type} ${e.object.metadata.name}`).sort()).toEqual([
      'added new',
      'deleted gone',
      'updated edit',
    ]);
    expect(calls[0]?.find(e => e.type === 'deleted')?.object).toEqual(put[1]);
    // The new watch works.
    await other.write({ put: [makeObject('Gateway', 'default', 'after')] });
    await waitFor(() => calls.length === 2, { what: 'an event after the reload', timeoutMs: 1000 });
  });

  it('plans a write again when its cache was behind etcd, then applies or reports the conflict', async () => {
    const prefix = freshPrefix();
    // The slow store hears about changes 200 ms late, so it plans against an old cache.
    const slowLink = await CuttableProxy.start(etcd.endpoint, 200);
    open.push(slowLink);
    const log = new LogCapture();
    const slow = await started({ endpoints: [slowLink.endpoint], prefix, logger: log.logger });
    const fast = await started(storeOptions(prefix));
    const [v1] = (await fast.write({ put: [makeObject('ServiceEntry', 'default', 'a')] })).put;
    if (!v1) throw new Error('no object');
    await waitFor(() => slow.list().length === 1, {
      what: 'the slow store to load v1',
    });

    await fast.write({ put: [makeObject('ServiceEntry', 'default', 'a', { hosts: ['v2'] })] });
    expect(slow.list()).toEqual([v1]); // still v1: its compare will fail
    const blind = await slow.write({
      put: [makeObject('ServiceEntry', 'default', 'a', { hosts: ['v3'] })],
    });
    expect(log.find('Config write lost a race; retrying', 'debug')).toHaveLength(1);
    expect(blind.putOutcome).toEqual(['configured']);
    expect(blind.put[0]?.metadata.generation).toBe(3);
    expect(blind.put[0]?.spec).toEqual({ hosts: ['v3'] });

    // The same race with a resourceVersion: once caught up, the version is gone.
    const [v4] = (
      await fast.write({ put: [makeObject('ServiceEntry', 'default', 'a', { hosts: ['v4'] })] })
    ).put;
    const stale = slow.list()[0];
    if (!stale || !v4) throw new Error('no object');
    expect(stale.spec).toEqual({ hosts: ['v3'] });
    await expect(
      slow.write({ put: [{ ...stale, spec: { hosts: ['v5'] } as never }] }),
    ).rejects.toBeInstanceOf(ConfigConflictError);
    expect(log.find('Config write lost a race; retrying', 'debug')).toHaveLength(2);
    expect(slow.list()).toEqual([v4]);
    expect(fast.list()).toEqual([v4]);
  });

  it('talks to etcd over mutual TLS', async () => {
    const tmp = makeTmpDir('sail-etcd-tls-');
    open.push({ close: () => tmp.cleanup() });
    const f = (name: string) => path.join(tmp.dir, name);
    const run = (args: string[]) => execFileSync('openssl', args, { cwd: tmp.dir, stdio: 'pipe' });
    run([
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      'ca.key',
      '-out',
      'ca.pem',
      '-subj',
      '/CN=test etcd CA',
      '-days',
      '1',
    ]);
    for (const [name, ext] of [
      ['server', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth'],
      ['client', 'extendedKeyUsage=clientAuth'],
    ] as const) {
      fs.writeFileSync(f(`${name}.ext`), `${ext}\n`);
      run([
        'req',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        `${name}.key`,
        '-out',
        `${name}.csr`,
        '-subj',
        `/CN=${name}`,
      ]);
      run([
        'x509',
        '-req',
        '-in',
        `${name}.csr`,
        '-CA',
        'ca.pem',
        '-CAkey',
        'ca.key',
        '-CAcreateserial',
        '-out',
        `${name}.pem`,
        '-days',
        '1',
        '-extfile',
        `${name}.ext`,
      ]);
    }
    const secure = await EtcdServer.start({
      tls: {
        cert: f('server.pem'),
        key: f('server.key'),
        clientCa: f('ca.pem'),
        ca: f('ca.pem'),
        clientCert: f('client.pem'),
        clientKey: f('client.key'),
      },
    });
    open.push({ close: () => secure.stop() });
    expect(secure.endpoint.startsWith('https://')).toBe(true);
    const store = await started({
      endpoints: [secure.endpoint],
      prefix: '/sail/config/',
      tls: { ca: f('ca.pem'), cert: f('client.pem'), key: f('client.key') },
      logger: silentLogger(),
    });
    const res = await store.write({ put: [makeObject('ServiceEntry', 'default', 'a')] });
    expect(res.putOutcome).toEqual(['created']);
    // Without a client certificate etcd refuses the connection.
    const refused = new EtcdStore({
      endpoints: [secure.endpoint],
      tls: { ca: f('ca.pem') },
      logger: silentLogger(),
      dialTimeoutMs: 1000,
    });
    open.push(refused);
    await expect(refused.start()).rejects.toMatchObject({ code: 'PILOT_STORE_UNAVAILABLE' });
    // A missing TLS file is named.
    const missing = new EtcdStore({
      endpoints: [secure.endpoint],
      tls: { ca: f('nope.pem') },
      logger: silentLogger(),
    });
    open.push(missing);
    await expect(missing.start()).rejects.toThrow(
      `failed to read etcd TLS CA file ${f('nope.pem')}`,
    );
  });
});
