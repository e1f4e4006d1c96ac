/**
 * The access log: one JSON line per HTTP request and per TCP connection, with the fields of
 * Envoy's default JSON access log format as Istio configures it (`start_time`, `method`, `path`,
 * `protocol`, `response_code`, `response_flags`, `bytes_received`, `bytes_sent`, `duration`,
 * `upstream_host`, `upstream_cluster`, `x_request_id`, `authority`,
 * `downstream_remote_address`, `route_name`, `user_agent`). Fields Envoy writes as null when
 * unknown are null here too. Lines go through their own pino instance, so they carry no level,
 * pid or component fields (only `"type":"access"`) and are not filtered by the log level.
 */
import pino from 'pino';
import type { Logger } from '../../common/logging';
import type { RequestRecord, TcpRecord } from '../types';

/**
 * A pino logger for access log lines: JSON with `"type":"access"` and no level/time/pid (the line
 * has its own `start_time`). `destination` defaults to stdout, written synchronously so lines never interleave
 * with the process log, which writes to the same descriptor.
 */
export function createAccessLogger(destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level: 'info',
      base: null,
      timestamp: false,
      messageKey: 'message',
      // Tags every line instead of a level: the process log shares stdout, and
      // `jq 'select(.type == "access")'` picks the access log out of the journal.
      formatters: { level: () => ({ type: 'access' }) },
    },
    destination ?? pino.destination({ dest: 1, sync: true }),
  );
}

const orNull = (s: string): string | null => (s === '' || s === '-' ? null : s);

/** Writes access log lines. */
export class AccessLog {
  constructor(private readonly logger: Logger) {}

  /** Logs one HTTP request. */
  request(r: RequestRecord): void {
    this.logger.info({
      start_time: new Date(r.startTime).toISOString(),
      method: orNull(r.method),
      path: orNull(r.path),
      protocol: r.protocol ?? (r.requestProtocol === 'grpc' ? 'HTTP/2' : 'HTTP/1.1'),
      response_code: r.responseCode,
      response_flags: r.responseFlags === '' ? '-' : r.responseFlags,
      bytes_received: r.requestBytes,
      bytes_sent: r.responseBytes,
      duration: Math.round(r.durationMs),
      upstream_host: orNull(r.upstreamHost),
      upstream_cluster: orNull(r.upstreamCluster),
      x_request_id: orNull(r.requestId),
      authority: orNull(r.authority),
      downstream_remote_address: orNull(r.downstreamRemote),
      route_name: orNull(r.routeName),
      user_agent: orNull(r.userAgent),
      grpc_status: r.grpcResponseStatus === '' ? null : r.grpcResponseStatus,
      upstream_service: r.labels.destinationService,
    });
  }

  /** Logs one TCP connection, when it closes. `nowMs` is the wall clock at close. */
  tcp(r: TcpRecord, nowMs: number): void {
    this.logger.info({
      start_time: new Date(nowMs - r.durationMs).toISOString(),
      method: null,
      path: null,
      protocol: null,
      response_code: 0,
      response_flags: r.responseFlags === '' ? '-' : r.responseFlags,
      bytes_received: r.receivedBytes,
      bytes_sent: r.sentBytes,
      duration: Math.round(r.durationMs),
      upstream_host: orNull(r.upstreamHost),
      upstream_cluster: orNull(r.upstreamCluster),
      x_request_id: null,
      authority: null,
      downstream_remote_address: orNull(r.downstreamRemote),
      route_name: null,
      user_agent: null,
      upstream_service: r.labels.destinationService,
    });
  }
}
