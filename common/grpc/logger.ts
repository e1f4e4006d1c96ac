/** Routes grpc-js's own log lines through pino, so every line a process prints is JSON. */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../logging';

/** Installs the adapter; grpc-js has one global logger, so the last call wins. */
export function routeGrpcLogs(log: Logger): void {
  const child = log.child({ component: 'grpc' });
  grpc.setLogger({
    error: (...args: unknown[]) => child.warn({ grpc: args.map(String).join(' ') }, 'grpc-js'),
    info: (...args: unknown[]) => child.debug({ grpc: args.map(String).join(' ') }, 'grpc-js'),
    debug: (...args: unknown[]) => child.debug({ grpc: args.map(String).join(' ') }, 'grpc-js'),
  });
  grpc.setLogVerbosity(grpc.logVerbosity.ERROR);
}
