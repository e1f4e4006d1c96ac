/**
 * The config store contract: where validated documents live. Two implementations pass one shared
 * suite (`store-suite.ts`): the embedded file store (the default; one pilot) and the etcd store
 * (replicated pilots that see each other's writes).
 */
import type { Lifecycle } from '../../common/lifecycle';
import type { ConfigKey, ConfigObject, Kind } from '../config/types';

/** One change, as watchers see it. */
export interface ConfigEvent {
  readonly type: 'added' | 'updated' | 'deleted';
  /** The object after the change (for `deleted`, the last stored version). */
  readonly object: ConfigObject;
}

export interface ListOptions {
  readonly kind?: Kind;
  readonly namespace?: string;
}

/** A write of several objects that succeeds or fails as a whole. */
export interface WriteBatch {
  /** Created or replaced. metadata.resourceVersion, when set, must match the stored one (else conflict). */
  readonly put?: readonly ConfigObject[];
  readonly delete?: readonly ConfigKey[];
}

export interface WriteResult {
  /** The stored objects with their new metadata, in `put` order. */
  readonly put: readonly ConfigObject[];
  /** Per `put` entry: created, configured (changed) or unchanged (same spec/labels/annotations: no new version, no event). */
  readonly putOutcome: readonly ('created' | 'configured' | 'unchanged')[];
  /** The deleted objects, in `delete` order. A key that does not exist fails the batch with StoreNotFoundError. */
  readonly deleted: readonly ConfigObject[];
}

export interface ConfigStore extends Lifecycle {
  /** `file` or `etcd`, for logs and metrics. */
  readonly type: string;
  /** True once the initial load/sync is complete (pilot's /readyz waits on it). */
  readonly ready: boolean;
  get(key: ConfigKey): ConfigObject | undefined;
  /** Sorted by kind (KINDS order), namespace, name. */
  list(options?: ListOptions): ConfigObject[];
  /**
   * Applies a batch atomically: either every put and delete is stored, or none is (and the
   * error says which object failed and why). Emits one event per changed object after commit.
   */
  write(batch: WriteBatch): Promise<WriteResult>;
  /**
   * Calls `listener` with the events of every committed change, including changes made by other
   * processes (etcd). Events for one batch are delivered together, in one call. Returns an
   * unsubscribe function.
   */
  watch(listener: (events: readonly ConfigEvent[]) => void): () => void;
}
