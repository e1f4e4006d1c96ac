/** The proxy's listeners: bound sockets, original destination, chain selection, TLS, TCP proxy. */
export {
  type BindingPlan,
  type ListenerCounters,
  ListenerManager,
  type ListenerManagerOptions,
  SNIFF_TIMEOUT_MS,
  TLS_HANDSHAKE_TIMEOUT_MS,
  VIRTUAL_INBOUND,
  VIRTUAL_OUTBOUND,
} from './listener-manager';
export { type ConnectionFacts, selectFilterChain } from './chain-match';
export { type ClientHelloResult, parseClientHello } from './client-hello';
export { DEFAULT_TCP_IDLE_TIMEOUT_MS, TcpProxy, type TcpProxyOptions } from './tcp-proxy';
