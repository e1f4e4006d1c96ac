/**
 * The one test suite every {@link ConfigStore} passes (file-store.test.ts and etcd-store.test.ts
 * run it): the contract in store.ts, checked through the public interface only. It uses jest's
 * globals, so only test files may call it.
 */
import { ConfigConflictError, ConfigInvalidError, ConfigNotFoundError } from '../errors';
import type { ConfigKey, ConfigObject, Kind } from '../config/types';
import type { ConfigEvent, ConfigStore } from './store';

/** What a suite run needs from one implementation, made fresh (empty) for every test. */
export interface StoreUnderTest {
  /** A started, empty store. */
  readonly store: ConfigStore;
  /**
   * Closes the current store and starts a new one on the same data (same directory, same etcd
   * prefix): the persistence tests run only when given.
   */
  readonly restart?: () => Promise<ConfigStore>;
  /**
   * Starts another store on the same data while the first one keeps running (two pilots on one
   * etcd): the peer tests run only when given. The suite closes what it returns.
   */
  readonly peer?: () => Promise<ConfigStore>;
  /** Closes whatever is still open and removes the data. */
  readonly cleanup: () => Promise<void>;
}

/** How long a peer may take to see a change through its watch ("well under a second"). */
const PEER_PROPAGATION_MS = 1_000;

/** A minimal object of `kind` (the store treats spec as opaque JSON). */
export function makeObject(
  kind: Kind,
  namespace: string,
  name: string,
  spec: Record<string, unknown> = { hosts: [`${name}.example.com`] },
  extra: { labels?: Record<string, string>; annotations?: Record<string, string> } = {},
): ConfigObject {
  return {
    apiVersion:
      kind.endsWith('Policy') || kind === 'PeerAuthentication'
        ? 'security.istio.io/v1'
        : 'networking.istio.io/v1',
    kind,
    metadata: { name, namespace, ...extra },
    spec: spec as never,
  } as ConfigObject;
}

function keyOf(o: ConfigObject): ConfigKey {
  return { kind: o.kind, namespace: o.metadata.namespace, name: o.metadata.name };
}

/** `Kind ns/name` of each object, to compare lists readably. */
function names(objs: readonly ConfigObject[]): string[] {
  return objs.map(o => `${o.kind} ${o.metadata.namespace}/${o.metadata.name}`);
}

function rv(o: ConfigObject | undefined): number {
  const v = o?.metadata.resourceVersion;
  if (v === undefined || !/^[0-9]+$/.test(v)) throw new Error(`bad resourceVersion ${String(v)}`);
  return Number(v);
}

/** Records every watch call; `calls` are the batches, in delivery order. */
function recordWatch(store: ConfigStore): { calls: ConfigEvent[][]; stop: () => void } {
  const calls: ConfigEvent[][] = [];
  const stop = store.watch(events => calls.push([...events]));
  return { calls, stop };
}

async function waitFor(cond: () => boolean, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await new Promise(r => setTimeout(r, 5));
  }
}

/** Registers the shared ConfigStore tests for one implementation. */
export function describeConfigStore(name: string, makeStore: () => Promise<StoreUnderTest>): void {
  describe(`${name} (ConfigStore contract)`, () => {
    let t: StoreUnderTest;
    let store: ConfigStore;

    beforeEach(async () => {
      t = await makeStore();
      store = t.store;
    });
    afterEach(async () => {
      await t.cleanup();
    });

    it('is ready once started and starts empty', () => {
      expect(store.ready).toBe(true);
      expect(store.list()).toEqual([]);
      expect(typeof store.type).toBe('string');
    });

    it('creates objects with store metadata and gets them back', async () => {
      const before = Date.now();
      const se = makeObject(
        'ServiceEntry',
        'default',
        'web',
        { hosts: ['web.example.com'] },
        {
          labels: { app: 'web' },
        },
      );
      const res = await store.write({ put: [se] });
      expect(res.putOutcome).toEqual(['created']);
      expect(res.deleted).toEqual([]);
      const stored = res.put[0];
      expect(stored?.metadata).toMatchObject({
        name: 'web',
        namespace: 'default',
        labels: { app: 'web' },
        generation: 1,
      });
      expect(rv(stored)).toBeGreaterThan(0);
      const created = Date.parse(stored?.metadata.creationTimestamp ?? '');
      expect(created).toBeGreaterThanOrEqual(before - 1000);
      expect(created).toBeLessThanOrEqual(Date.now() + 1000);
      expect(stored?.spec).toEqual({ hosts: ['web.example.com'] });
      expect(store.get(keyOf(se))).toEqual(stored);
      expect(
        store.get({ kind: 'ServiceEntry', namespace: 'default', name: 'nope' }),
      ).toBeUndefined();
      expect(store.get({ kind: 'Gateway', namespace: 'default', name: 'web' })).toBeUndefined();
      // The caller's object is not the stored one, and is left as it was.
      expect(se.metadata.resourceVersion).toBeUndefined();
    });

    it('lists by kind order, namespace and name, with kind and namespace filters', async () => {
      await store.write({
        put: [
          makeObject('VirtualService', 'b', 'z'),
          makeObject('ServiceEntry', 'b', 'a'),
          makeObject('AuthorizationPolicy', 'a', 'a'),
          makeObject('VirtualService', 'a', 'y'),
          makeObject('ServiceEntry', 'a', 'b'),
          makeObject('ServiceEntry', 'a', 'a'),
          makeObject('DestinationRule', 'a', 'a'),
        ],
      });
      expect(names(store.list())).toEqual([
        'ServiceEntry a/a',
        'ServiceEntry a/b',
        'ServiceEntry b/a',
        'DestinationRule a/a',
        'VirtualService a/y',
        'VirtualService b/z',
        'AuthorizationPolicy a/a',
      ]);
      expect(names(store.list({ kind: 'ServiceEntry' }))).toEqual([
        'ServiceEntry a/a',
        'ServiceEntry a/b',
        'ServiceEntry b/a',
      ]);
      expect(names(store.list({ namespace: 'b' }))).toEqual([
        'ServiceEntry b/a',
        'VirtualService b/z',
      ]);
      expect(names(store.list({ kind: 'VirtualService', namespace: 'a' }))).toEqual([
        'VirtualService a/y',
      ]);
      expect(store.list({ kind: 'Sidecar' })).toEqual([]);
    });

    it('gives every object of one batch the same new resourceVersion, higher than before', async () => {
      const a = await store.write({ put: [makeObject('ServiceEntry', 'default', 'a')] });
      const b = await store.write({
        put: [makeObject('ServiceEntry', 'default', 'b'), makeObject('Gateway', 'default', 'g')],
      });
      expect(rv(b.put[0])).toBeGreaterThan(rv(a.put[0]));
      expect(rv(b.put[1])).toBe(rv(b.put[0]));
    });

    it('reports configured for a changed spec: new version, next generation, same creation time', async () => {
      const [first] = (await store.write({ put: [makeObject('ServiceEntry', 'default', 'web')] }))
        .put;
      const res = await store.write({
        put: [makeObject('ServiceEntry', 'default', 'web', { hosts: ['other.example.com'] })],
      });
      expect(res.putOutcome).toEqual(['configured']);
      const second = res.put[0];
      expect(rv(second)).toBeGreaterThan(rv(first));
      expect(second?.metadata.generation).toBe(2);
      expect(second?.metadata.creationTimestamp).toBe(first?.metadata.creationTimestamp);
      expect(store.get(keyOf(makeObject('ServiceEntry', 'default', 'web')))?.spec).toEqual({
        hosts: ['other.example.com'],
      });
    });

    it('reports configured for a label or annotation change without bumping generation', async () => {
      await store.write({ put: [makeObject('ServiceEntry', 'default', 'web')] });
      const labelled = await store.write({
        put: [makeObject('ServiceEntry', 'default', 'web', undefined, { labels: { a: '1' } })],
      });
      expect(labelled.putOutcome).toEqual(['configured']);
      expect(labelled.put[0]?.metadata.generation).toBe(1);
      const annotated = await store.write({
        put: [
          makeObject('ServiceEntry', 'default', 'web', undefined, {
            labels: { a: '1' },
            annotations: { note: 'x' },
          }),
        ],
      });
      expect(annotated.putOutcome).toEqual(['configured']);
      expect(rv(annotated.put[0])).toBeGreaterThan(rv(labelled.put[0]));
      expect(annotated.put[0]?.metadata.annotations).toEqual({ note: 'x' });
    });

    it('reports unchanged for the same spec, labels and annotations: no new version, no event', async () => {
      const spec = {
        hosts: ['a.example.com'],
        ports: [{ number: 80, name: 'http', protocol: 'HTTP' }],
      };
      const [first] = (
        await store.write({
          put: [makeObject('ServiceEntry', 'default', 'web', spec, { labels: { a: '1', b: '2' } })],
        })
      ).put;
      const w = recordWatch(store);
      // Same content, keys in another order, an empty annotation map, another apiVersion.
      const again = makeObject(
        'ServiceEntry',
        'default',
        'web',
        { ports: [{ protocol: 'HTTP', name: 'http', number: 80 }], hosts: ['a.example.com'] },
        { labels: { b: '2', a: '1' }, annotations: {} },
      );
      again.apiVersion = 'networking.istio.io/v1beta1';
      const res = await store.write({ put: [again] });
      expect(res.putOutcome).toEqual(['unchanged']);
      expect(res.put[0]).toEqual(first);
      expect(store.get(keyOf(again))).toEqual(first);
      // A batch of only unchanged objects still checks resourceVersion.
      await expect(
        store.write({
          put: [{ ...again, metadata: { ...again.metadata, resourceVersion: '999999' } }],
        }),
      ).rejects.toBeInstanceOf(ConfigConflictError);
      // The next real change gets the next version: nothing was committed in between.
      const b = await store.write({ put: [makeObject('Gateway', 'default', 'g')] });
      expect(w.calls.map(c => c.map(e => `${e.type} ${e.object.metadata.name}`))).toEqual([
        ['added g'],
      ]);
      expect(rv(b.put[0])).toBeGreaterThan(rv(first));
      w.stop();
    });

    it('mixes outcomes in one batch, in put order', async () => {
      await store.write({
        put: [
          makeObject('ServiceEntry', 'default', 'same'),
          makeObject('ServiceEntry', 'default', 'changed'),
        ],
      });
      const res = await store.write({
        put: [
          makeObject('ServiceEntry', 'default', 'new'),
          makeObject('ServiceEntry', 'default', 'same'),
          makeObject('ServiceEntry', 'default', 'changed', { hosts: ['x.example.com'] }),
        ],
      });
      expect(res.putOutcome).toEqual(['created', 'unchanged', 'configured']);
      expect(names(res.put)).toEqual([
        'ServiceEntry default/new',
        'ServiceEntry default/same',
        'ServiceEntry default/changed',
      ]);
    });

    it('accepts a put naming the stored resourceVersion and rejects a stale one as a conflict', async () => {
      const [v1] = (await store.write({ put: [makeObject('ServiceEntry', 'default', 'web')] })).put;
      if (!v1) throw new Error('no object');
      const edit = (hosts: string[], version: string | undefined): ConfigObject => ({
        ...v1,
        metadata: { ...v1.metadata, resourceVersion: version },
        spec: { hosts } as never,
      });
      const ok = await store.write({ put: [edit(['b.example.com'], v1.metadata.resourceVersion)] });
      expect(ok.putOutcome).toEqual(['configured']);
      const w = recordWatch(store);
      const err = await store
        .write({
          put: [
            makeObject('Gateway', 'default', 'g'),
            edit(['c.example.com'], v1.metadata.resourceVersion),
          ],
        })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConfigConflictError);
      expect((err as ConfigConflictError).code).toBe('PILOT_CONFIG_CONFLICT');
      expect((err as Error).message).toContain('ServiceEntry default/web');
      expect((err as Error).message).toContain(String(v1.metadata.resourceVersion));
      // Nothing of the failed batch is stored or announced.
      expect(store.get({ kind: 'Gateway', namespace: 'default', name: 'g' })).toBeUndefined();
      expect(store.get(keyOf(v1))?.spec).toEqual({ hosts: ['b.example.com'] });
      // A resourceVersion for an object that does not exist is a conflict too (it was deleted).
      await expect(
        store.write({
          put: [
            {
              ...makeObject('ServiceEntry', 'default', 'gone'),
              metadata: { name: 'gone', namespace: 'default', resourceVersion: '1' },
            },
          ],
        }),
      ).rejects.toBeInstanceOf(ConfigConflictError);
      expect(w.calls).toEqual([]);
      w.stop();
    });

    it('deletes objects, returning the last stored version', async () => {
      const { put } = await store.write({
        put: [
          makeObject('ServiceEntry', 'default', 'a'),
          makeObject('ServiceEntry', 'default', 'b'),
        ],
      });
      const w = recordWatch(store);
      const res = await store.write({
        delete: [keyOf(makeObject('ServiceEntry', 'default', 'a'))],
      });
      expect(res.deleted).toEqual([put[0]]);
      expect(res.put).toEqual([]);
      expect(store.get({ kind: 'ServiceEntry', namespace: 'default', name: 'a' })).toBeUndefined();
      expect(names(store.list())).toEqual(['ServiceEntry default/b']);
      expect(w.calls).toEqual([[{ type: 'deleted', object: put[0] }]]);
      // Created again: a fresh object (generation 1) with a version above every earlier one.
      const again = await store.write({ put: [makeObject('ServiceEntry', 'default', 'a')] });
      expect(again.putOutcome).toEqual(['created']);
      expect(again.put[0]?.metadata.generation).toBe(1);
      expect(rv(again.put[0])).toBeGreaterThan(rv(put[1]));
      w.stop();
    });

    it('fails a whole batch with ConfigNotFoundError when a delete names a missing object', async () => {
      await store.write({
        put: [
          makeObject('ServiceEntry', 'default', 'a'),
          makeObject('ServiceEntry', 'default', 'c'),
        ],
      });
      const w = recordWatch(store);
      const err = await store
        .write({
          put: [
            makeObject('Gateway', 'default', 'g'),
            makeObject('ServiceEntry', 'default', 'a', { hosts: ['z'] }),
          ],
          delete: [
            { kind: 'ServiceEntry', namespace: 'default', name: 'c' },
            { kind: 'VirtualService', namespace: 'prod', name: 'missing' },
          ],
        })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConfigNotFoundError);
      expect((err as ConfigNotFoundError).code).toBe('PILOT_CONFIG_NOT_FOUND');
      expect((err as Error).message).toContain('VirtualService prod/missing');
      expect(names(store.list())).toEqual(['ServiceEntry default/a', 'ServiceEntry default/c']);
      expect(store.get({ kind: 'ServiceEntry', namespace: 'default', name: 'a' })?.spec).toEqual({
        hosts: ['a.example.com'],
      });
      // Give a watch-driven store time to deliver anything it (wrongly) committed.
      await new Promise(r => setTimeout(r, 100));
      expect(w.calls).toEqual([]);
      w.stop();
    });

    it('rejects an object twice in one batch, or put and deleted together', async () => {
      await expect(
        store.write({
          put: [
            makeObject('ServiceEntry', 'default', 'a'),
            makeObject('ServiceEntry', 'default', 'a'),
          ],
        }),
      ).rejects.toBeInstanceOf(ConfigInvalidError);
      await store.write({ put: [makeObject('ServiceEntry', 'default', 'b')] });
      await expect(
        store.write({
          put: [makeObject('ServiceEntry', 'default', 'b')],
          delete: [{ kind: 'ServiceEntry', namespace: 'default', name: 'b' }],
        }),
      ).rejects.toBeInstanceOf(ConfigInvalidError);
      expect(names(store.list())).toEqual(['ServiceEntry default/b']);
    });

    it('rejects names the store cannot key', async () => {
      const bad = makeObject('ServiceEntry', 'default', 'a/b');
      const err = await store.write({ put: [bad] }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConfigInvalidError);
      expect((err as Error).message).toContain('metadata.name');
      expect(store.list()).toEqual([]);
    });

    it('delivers one watch call per batch, in commit order, until unsubscribed', async () => {
      const w = recordWatch(store);
      const other = recordWatch(store);
      other.stop();
      const r1 = await store.write({
        put: [
          makeObject('ServiceEntry', 'default', 'a'),
          makeObject('DestinationRule', 'default', 'a'),
        ],
      });
      const r2 = await store.write({
        put: [makeObject('ServiceEntry', 'default', 'a', { hosts: ['b'] })],
        delete: [{ kind: 'DestinationRule', namespace: 'default', name: 'a' }],
      });
      await waitFor(() => w.calls.length >= 2, 'two watch calls', 2_000);
      expect(w.calls).toEqual([
        [
          { type: 'added', object: r1.put[0] },
          { type: 'added', object: r1.put[1] },
        ],
        [
          { type: 'updated', object: r2.put[0] },
          { type: 'deleted', object: r1.put[1] },
        ],
      ]);
      expect(other.calls).toEqual([]);
      w.stop();
      await store.write({ put: [makeObject('Gateway', 'default', 'g')] });
      await new Promise(r => setTimeout(r, 100));
      expect(w.calls).toHaveLength(2);
    });

    it('keeps delivering to other listeners when one throws', async () => {
      const throwing = store.watch(() => {
        throw new Error('listener bug');
      });
      const w = recordWatch(store);
      await store.write({ put: [makeObject('ServiceEntry', 'default', 'a')] });
      await waitFor(() => w.calls.length === 1, 'the second listener', 2_000);
      expect(store.get({ kind: 'ServiceEntry', namespace: 'default', name: 'a' })).toBeDefined();
      throwing();
      w.stop();
    });

    it('serializes concurrent writes: distinct, increasing versions, nothing lost', async () => {
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          store.write({ put: [makeObject('ServiceEntry', 'default', `s${i}`)] }),
        ),
      );
      const versions = results.map(r => rv(r.put[0]));
      expect(new Set(versions).size).toBe(10);
      expect(store.list()).toHaveLength(10);
    });

    it('hands out frozen objects, so a reader cannot change the store', async () => {
      await store.write({ put: [makeObject('ServiceEntry', 'default', 'a')] });
      const got = store.get({ kind: 'ServiceEntry', namespace: 'default', name: 'a' });
      expect(Object.isFrozen(got)).toBe(true);
      expect(Object.isFrozen(got?.metadata)).toBe(true);
      expect(Object.isFrozen(got?.spec)).toBe(true);
    });

    it('closes idempotently and refuses writes after close', async () => {
      await Promise.all([store.close(), store.close()]);
      await store.close();
      await expect(
        store.write({ put: [makeObject('ServiceEntry', 'default', 'a')] }),
      ).rejects.toMatchObject({
        code: 'COMMON_CLOSED',
      });
    });

    describe('persistence', () => {
      it('keeps objects, versions and metadata across a restart, and versions keep growing', async () => {
        if (!t.restart) return; // this implementation has no restart (checked by its own tests)
        await store.write({
          put: [
            makeObject('ServiceEntry', 'default', 'a', undefined, { labels: { x: 'y' } }),
            makeObject('VirtualService', 'prod', 'v'),
          ],
        });
        await store.write({ put: [makeObject('ServiceEntry', 'default', 'a', { hosts: ['b'] })] });
        await store.write({ put: [makeObject('Gateway', 'default', 'g')] });
        await store.write({ delete: [{ kind: 'Gateway', namespace: 'default', name: 'g' }] });
        const before = store.list();
        const highest = Math.max(...before.map(rv));

        const reopened = await t.restart();
        expect(reopened.ready).toBe(true);
        expect(reopened.list()).toEqual(before);
        const next = await reopened.write({ put: [makeObject('Sidecar', 'default', 's')] });
        // Above every version handed out before, the deleted Gateway's included.
        expect(rv(next.put[0])).toBeGreaterThan(highest + 1);
        // Versions read before the restart still work for optimistic concurrency.
        const first = before[0];
        if (!first) throw new Error('nothing stored');
        const same = await reopened.write({ put: [first] });
        expect(same.putOutcome).toEqual(['unchanged']);
        expect(same.put[0]).toEqual(first);
      });
    });

    describe('peers', () => {
      it("sees another store's writes through its watch, one call per batch", async () => {
        if (!t.peer) return; // single-process store
        const peer = await t.peer();
        try {
          const w = recordWatch(peer);
          const r1 = await store.write({
            put: [
              makeObject('ServiceEntry', 'default', 'a'),
              makeObject('DestinationRule', 'default', 'a'),
            ],
          });
          await waitFor(
            () => w.calls.length === 1,
            'the peer to see the first write',
            PEER_PROPAGATION_MS,
          );
          expect(w.calls[0]).toEqual([
            { type: 'added', object: r1.put[0] },
            { type: 'added', object: r1.put[1] },
          ]);
          expect(peer.list()).toEqual(store.list());
          const r2 = await store.write({
            delete: [{ kind: 'DestinationRule', namespace: 'default', name: 'a' }],
          });
          await waitFor(
            () => w.calls.length === 2,
            'the peer to see the delete',
            PEER_PROPAGATION_MS,
          );
          expect(w.calls[1]).toEqual([{ type: 'deleted', object: r2.deleted[0] }]);
          expect(peer.list()).toEqual(store.list());
          w.stop();
        } finally {
          await peer.close();
        }
      });

      it('detects a conflict between two stores and lets a blind write win', async () => {
        if (!t.peer) return;
        const peer = await t.peer();
        try {
          const [v1] = (await store.write({ put: [makeObject('ServiceEntry', 'default', 'a')] }))
            .put;
          if (!v1) throw new Error('no object');
          await waitFor(
            () => peer.get(keyOf(v1)) !== undefined,
            'the peer to see v1',
            PEER_PROPAGATION_MS,
          );
          // Both read v1; the first writer wins...
          await store.write({ put: [{ ...v1, spec: { hosts: ['first'] } as never }] });
          // ...and the second, naming v1, gets a conflict even if its cache had not caught up.
          await expect(
            peer.write({ put: [{ ...v1, spec: { hosts: ['second'] } as never }] }),
          ).rejects.toBeInstanceOf(ConfigConflictError);
          // Without a resourceVersion, the peer's write applies over the newer state.
          const blind = makeObject('ServiceEntry', 'default', 'a', { hosts: ['third'] });
          const res = await peer.write({ put: [blind] });
          expect(res.putOutcome).toEqual(['configured']);
          expect(res.put[0]?.metadata.generation).toBe(3);
          await waitFor(
            () =>
              JSON.stringify(store.get(keyOf(v1))?.spec) === JSON.stringify({ hosts: ['third'] }),
            'the first store to see the blind write',
            PEER_PROPAGATION_MS,
          );
        } finally {
          await peer.close();
        }
      });
    });
  });
}
