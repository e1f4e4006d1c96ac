/** TLS for the proxy: the workload certificate from the agent's files, contexts and peer checks. */
export {
  DEFAULT_TLS_POLL_INTERVAL_MS,
  FileTlsProvider,
  type FileTlsProviderOptions,
  serverSocketOptions,
} from './file-tls-provider';
export { matchString } from './peer';
