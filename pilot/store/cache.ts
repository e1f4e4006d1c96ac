/**
 * The in-memory side both stores share: the current objects (frozen, read by everyone), the list
 * order and filters, and the watch listeners.
 */
import type { Logger } from '../../common/logging';
import type { ConfigKey, ConfigObject } from '../config/types';
import type { ConfigEvent, ListOptions } from './store';
import { compareObjects, objectKey } from './write-plan';

/** The current objects by {@link objectKey}, with a sorted view rebuilt lazily after a change. */
export class ConfigCache {
  private readonly objects = new Map<string, ConfigObject>();
  /** Every object in list order; undefined after a change until the next list(). */
  private sorted: ConfigObject[] | undefined;

  get size(): number {
    return this.objects.size;
  }

  get(key: ConfigKey): ConfigObject | undefined {
    return this.objects.get(objectKey(key));
  }

  /** By {@link objectKey}. */
  getByKey(key: string): ConfigObject | undefined {
    return this.objects.get(key);
  }

  /** Sorted by kind (KINDS order), namespace, name; filtered by kind and namespace when given. */
  list(options: ListOptions = {}): ConfigObject[] {
    this.sorted ??= [...this.objects.values()].sort(compareObjects);
    const { kind, namespace } = options;
    if (kind === undefined && namespace === undefined) return [...this.sorted];
    return this.sorted.filter(
      o =>
        (kind === undefined || o.kind === kind) &&
        (namespace === undefined || o.metadata.namespace === namespace),
    );
  }

  /** Stores `obj` (already frozen) under its key. */
  set(obj: ConfigObject): void {
    this.objects.set(objectKey({ kind: obj.kind, ...obj.metadata }), obj);
    this.sorted = undefined;
  }

  delete(key: string): void {
    if (this.objects.delete(key)) this.sorted = undefined;
  }

  /** Every key, for a full resync. */
  keys(): string[] {
    return [...this.objects.keys()];
  }
}

/** Watch listeners; a listener that throws is logged and does not stop the others. */
export class Listeners {
  private readonly listeners = new Set<(events: readonly ConfigEvent[]) => void>();

  constructor(private readonly log: Logger) {}

  /** Adds `listener`; returns its unsubscribe function (idempotent). */
  add(listener: (events: readonly ConfigEvent[]) => void): () => void {
    // A wrapper per call, so one function subscribed twice gets two independent subscriptions.
    const entry = (events: readonly ConfigEvent[]) => {
      listener(events);
    };
    this.listeners.add(entry);
    return () => {
      this.listeners.delete(entry);
    };
  }

  /** Delivers one batch of events to every listener (nothing for an empty batch). */
  emit(events: readonly ConfigEvent[]): void {
    if (events.length === 0) return;
    const frozen = Object.freeze([...events]);
    for (const listener of [...this.listeners]) {
      try {
        listener(frozen);
      } catch (err) {
        // The change is committed whatever a listener does; a broken listener must not undo
        // that or starve the others, but someone has to fix it.
        this.log.error({ err }, 'Config watch listener threw');
      }
    }
  }
}
