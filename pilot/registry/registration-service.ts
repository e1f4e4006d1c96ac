/**
 * The server side of `sail.pilot.v1.Registration` (api/sail/pilot/v1/registration.proto): one
 * bidirectional stream per host. The first report registers the host's workload, later ones
 * report health or deregister; the stream's life is the workload's liveness (workloads.ts).
 */
import type * as grpc from '@grpc/grpc-js';
import type {
  HostFacts__Output,
  RegistrationHandlers,
  RegistrationStatus,
  WorkloadRegistration__Output,
  WorkloadReport__Output,
} from '../../api';
import { ClosedError, errorKind, getErrorMessage } from '../../common/errors';
import { peerCertificate, toStatus } from '../../common/grpc';
import type { Logger } from '../../common/logging';
import { prom } from '../../common/metrics';
import { Oid, parseCertificate, parseSpiffeId } from '../../common/pki';
import { pilotNotReady, registrationInvalid, registrationUnauthenticated } from '../errors';
import {
  type AuthenticatedPeer,
  type HostFacts,
  MAX_TEXT_BYTES,
  type RegisteredWorkload,
  type WorkloadEventType,
  type WorkloadRegistration,
  type WorkloadRegistry,
  type WorkloadSession,
} from './workloads';

/** A registration stream, as the server sees it. */
export type RegistrationCall = grpc.ServerDuplexStream<WorkloadReport__Output, RegistrationStatus>;

/** Who is calling; throws NotAuthenticatedError when the call proves no node. */
export type PeerResolver = (call: RegistrationCall) => AuthenticatedPeer;

/**
 * The node and SPIFFE ID of the call's TLS client certificate, as the CA issues them: subject
 * CN = node, one URI SAN spiffe://TD/ns/NS/sa/SA. TLS has already verified the chain against
 * the mesh roots.
 * @throws NotAuthenticatedError (PILOT_REGISTRATION_UNAUTHENTICATED) without a certificate, or
 *   one without a node or a SPIFFE ID
 */
export function certificatePeer(call: Parameters<typeof peerCertificate>[0]): AuthenticatedPeer {
  const der = peerCertificate(call);
  if (!der)
    throw registrationUnauthenticated(
      'no client certificate: register with the workload certificate the CA issued to this node',
    );
  let cert;
  try {
    cert = parseCertificate(der);
  } catch (err) {
    throw registrationUnauthenticated(
      `client certificate cannot be parsed: ${getErrorMessage(err)}`,
    );
  }
  const node = cert.subject.find(([oid]) => oid === Oid.commonName)?.[1] ?? cert.dnsNames[0];
  if (!node) throw registrationUnauthenticated('client certificate names no node (subject CN)');
  const spiffeIds = cert.uris.filter(u => parseSpiffeId(u) !== undefined);
  if (spiffeIds.length !== 1)
    throw registrationUnauthenticated(
      `client certificate of node ${node} carries ${spiffeIds.length} workload SPIFFE IDs; want exactly one`,
    );
  return { node, spiffeId: spiffeIds[0] as string };
}

/** `event` values of pilot_registration_events_total. */
export type RegistrationMetricEvent =
  WorkloadEventType | 'invalid' | 'denied' | 'unauthenticated' | 'error';

/** The registration metrics, on the component's prom Registry. */
export class RegistrationMetrics {
  readonly registered: prom.Gauge;
  readonly events: prom.Counter<'event'>;

  constructor(registry: prom.Registry, workloads: WorkloadRegistry) {
    this.registered = new prom.Gauge({
      name: 'pilot_registered_workloads',
      help: 'Workloads registered by their hosts, including those in their disconnect grace period',
      registers: [registry],
      collect() {
        this.set(workloads.size);
      },
    });
    this.events = new prom.Counter({
      name: 'pilot_registration_events_total',
      help: 'Host registration events: registered, replaced, healthy, unhealthy, disconnected, deregistered, expired, and refused registrations (invalid, denied, unauthenticated, error)',
      labelNames: ['event'],
      registers: [registry],
    });
    workloads.onEvent(ev => this.events.inc({ event: ev.type }));
  }

  /** Counts a refused registration or report. */
  refused(err: unknown): void {
    const kind = errorKind(err);
    const event: RegistrationMetricEvent =
      kind === 'invalid'
        ? 'invalid'
        : kind === 'denied'
          ? 'denied'
          : kind === 'unauthenticated'
            ? 'unauthenticated'
            : 'error';
    this.events.inc({ event });
  }
}

/** Dependencies of {@link createRegistrationHandlers}. */
export interface RegistrationServiceDeps {
  readonly logger: Logger;
  /** Where hosts register: a WorkloadRegistry, or anything holding one (MeshRegistry). */
  readonly registry: WorkloadRegistry | { readonly workloads: WorkloadRegistry };
  /** Who is calling. Default {@link certificatePeer}. */
  readonly peer?: PeerResolver;
  /** The prom Registry the metrics go on. */
  readonly metrics: prom.Registry;
}

function hostFromProto(h: HostFacts__Output | null): HostFacts | undefined {
  if (!h) return undefined;
  return {
    os: h.os,
    kernel: h.kernel,
    cpus: h.cpus,
    // uint64 arrives as a decimal string (longs: String); validation rejects unsafe integers.
    memoryBytes: Number(h.memoryBytes),
    hostname: h.hostname,
  };
}

/** The proto registration as the registry's type (validation happens in the registry). */
export function registrationFromProto(r: WorkloadRegistration__Output): WorkloadRegistration {
  const host = hostFromProto(r.host);
  return {
    node: r.node,
    namespace: r.namespace,
    ...(r.serviceAccount ? { serviceAccount: r.serviceAccount } : {}),
    address: r.address,
    labels: { ...r.labels },
    ports: r.ports.map(p => ({ name: p.name, port: p.port })),
    ...(host ? { host } : {}),
    ...(r.group ? { group: r.group } : {}),
    ...(r.health ? { health: { healthy: r.health.healthy, message: r.health.message } } : {}),
  };
}

function healthText(w: RegisteredWorkload): string {
  const state = w.healthy ? 'healthy' : 'unhealthy';
  return w.healthMessage ? `${state}: ${w.healthMessage}` : state;
}

/**
 * Builds the grpc-js handlers of the Registration service. Every failure ends the stream with a
 * status from `toStatus` (INVALID_ARGUMENT, PERMISSION_DENIED, UNAUTHENTICATED); a stream that
 * ends for any reason other than `deregister` leaves its workload to the grace period.
 */
export function createRegistrationHandlers(deps: RegistrationServiceDeps): RegistrationHandlers {
  const workloads = 'workloads' in deps.registry ? deps.registry.workloads : deps.registry;
  const resolvePeer = deps.peer ?? certificatePeer;
  const log = deps.logger.child({ component: 'pilot', subsystem: 'registration' });
  const metrics = new RegistrationMetrics(deps.metrics, workloads);

  const connect = (call: RegistrationCall): void => {
    const peerAddr = call.getPeer();
    let session: WorkloadSession | undefined;
    /** `NAMESPACE/NODE` of this stream's last accepted registration. */
    let workloadName = '';
    let finished = false;

    const send = (status: RegistrationStatus): void => {
      if (!finished) call.write(status);
    };
    /** Ends the stream with an error status; the workload (if any) enters its grace period. */
    const fail = (cause: unknown): void => {
      if (finished) return;
      finished = true;
      // A registry closed under a live stream: pilot is stopping, the agent retries elsewhere.
      const err = cause instanceof ClosedError ? pilotNotReady('pilot is shutting down') : cause;
      metrics.refused(err);
      session?.disconnect(`stream failed: ${getErrorMessage(err)}`);
      call.emit('error', toStatus(err, log, 'Connect'));
    };
    /** Ends the stream with OK. */
    const end = (): void => {
      if (finished) return;
      finished = true;
      call.end();
    };
    /** The client went away (cancelled, connection lost, or half-closed without deregistering). */
    const gone = (reason: string) => () => {
      session?.disconnect(reason);
      end();
    };

    let peer: AuthenticatedPeer;
    try {
      peer = resolvePeer(call);
    } catch (err) {
      fail(err);
      return;
    }

    const attach = (s: WorkloadSession): void => {
      session = s;
      s.onReplaced = () => {
        log.warn(
          { node: peer.node, peer: peerAddr },
          'Registration replaced by a newer stream of the same node; ending the old one',
        );
        send({
          accepted: false,
          workload: workloadName,
          message: `replaced by a newer registration of node ${peer.node}`,
        });
        end();
      };
    };

    const handle = (msg: WorkloadReport__Output): void => {
      switch (msg.report) {
        case 'registration': {
          if (!msg.registration) throw registrationInvalid('registration is empty');
          const reg = registrationFromProto(msg.registration);
          let w: RegisteredWorkload;
          if (session?.active) {
            w = session.reregister(reg);
          } else {
            const s = workloads.register(reg, peer);
            attach(s);
            w = s.workload as RegisteredWorkload;
          }
          workloadName = w.name;
          log.debug({ node: w.node, peer: peerAddr }, 'Registration accepted');
          send({ accepted: true, workload: w.name, message: `registered; ${healthText(w)}` });
          return;
        }
        case 'health': {
          if (!session)
            throw registrationInvalid('the first report of a stream must be a registration');
          const w = session.reportHealth({
            healthy: msg.health?.healthy ?? false,
            message: msg.health?.message ?? '',
          });
          if (!w) {
            send({
              accepted: false,
              workload: workloadName,
              message: 'registration no longer held',
            });
            end();
            return;
          }
          send({ accepted: true, workload: w.name, message: healthText(w) });
          return;
        }
        case 'deregister': {
          if (!session)
            throw registrationInvalid('the first report of a stream must be a registration');
          const reason = msg.deregister?.reason ?? '';
          if (Buffer.byteLength(reason) > MAX_TEXT_BYTES)
            throw registrationInvalid(
              `deregister.reason is ${Buffer.byteLength(reason)} bytes; the limit is ${MAX_TEXT_BYTES}`,
            );
          const w = session.deregister(reason || 'deregistered');
          send({
            accepted: w !== undefined,
            workload: w?.name ?? workloadName,
            message: 'deregistered',
          });
          end();
          return;
        }
        case undefined:
          throw registrationInvalid('report is empty: set registration, health or deregister');
      }
    };

    call.on('data', (msg: WorkloadReport__Output) => {
      if (finished) return;
      try {
        handle(msg);
      } catch (err) {
        fail(err);
      }
    });
    call.on('end', gone('client closed the stream'));
    call.on('cancelled', gone('stream cancelled or connection lost'));
    call.on('close', gone('stream closed'));
  };

  return { Connect: connect };
}
