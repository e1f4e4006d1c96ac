/** gRPC helpers shared by servers and clients. */
export * from './credentials';
export * from './logger';
export * from './status';
