/** The proxy's HTTP layer: HTTP/1.1, HTTP/2, gRPC and WebSocket through Envoy-style routes. */
export {
  DEFAULT_MAX_BUFFERED_REQUEST_BYTES,
  DefaultHttpConnectionManager,
  type HttpConnectionManagerOptions,
} from './connection-manager';
