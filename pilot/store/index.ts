/**
 * Pilot's config stores: the contract (`store.ts`), the embedded file store (the default) and the
 * etcd store, and `createStore` to pick one from the `--store` flags.
 */
import type { Logger } from '../../common/logging';
import { EtcdStore, type EtcdTlsOptions } from './etcd-store';
import { FileStore } from './file-store';
import type { ConfigStore } from './store';

export type { ConfigEvent, ConfigStore, ListOptions, WriteBatch, WriteResult } from './store';
export { FileStore, FILE_STORE_PATH, type FileStoreOptions } from './file-store';
export {
  DEFAULT_ETCD_DIAL_TIMEOUT_MS,
  DEFAULT_ETCD_MAX_TXN_OPS,
  DEFAULT_ETCD_PREFIX,
  EtcdStore,
  parseEtcdEndpoints,
  type EtcdStoreOptions,
  type EtcdTlsOptions,
} from './etcd-store';

/** Which store to use: `--store file` (with pilot's data directory) or `--store etcd`. */
export type StoreOptions =
  | { readonly type: 'file'; readonly dataDir: string }
  | {
      readonly type: 'etcd';
      /** `--etcd-endpoints`: one or more `http(s)://host:port` (see parseEtcdEndpoints). */
      readonly endpoints: readonly string[];
      /** `--etcd-prefix`; DEFAULT_ETCD_PREFIX by default. */
      readonly prefix?: string;
      readonly tls?: EtcdTlsOptions;
      readonly dialTimeoutMs?: number;
      readonly maxTxnOps?: number;
    };

/**
 * Builds (does not start) the store `options` name.
 * @throws ConfigError for bad etcd endpoints, prefix or TLS settings
 */
export function createStore(options: StoreOptions, logger: Logger): ConfigStore {
  switch (options.type) {
    case 'file':
      return new FileStore({ dataDir: options.dataDir, logger });
    case 'etcd': {
      const { type: _type, ...etcd } = options;
      return new EtcdStore({ ...etcd, logger });
    }
  }
}
