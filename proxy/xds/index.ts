/** The proxy's xDS client: ADS to pilot → compiled ProxyConfig updates. */
export { DEFAULT_STATE_WRITE_INTERVAL_MS, XDS_NODE_CLUSTER, XdsClient } from './xds-client';
export { TYPE_URLS, XDS_KINDS, kindOfTypeUrl } from './resources';
export type {
  RawResource,
  RawResources,
  XdsAckInfo,
  XdsBackoffOptions,
  XdsClientOptions,
  XdsClientStatus,
  XdsNackInfo,
  XdsUpdate,
} from './types';
