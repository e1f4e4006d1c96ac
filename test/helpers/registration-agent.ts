/**
 * A host's registration stream as a node agent keeps it (sail.pilot.v1.Registration over mTLS
 * with the host's workload certificate), for tests: registers, reports health, deregisters, or
 * just drops the stream; when pilot ends the stream (pilot restarting, network trouble) it
 * reconnects with backoff and registers again, with its last reported health.
 */
import * as grpc from '@grpc/grpc-js';
import {
  loadPilotProto,
  type RegistrationClient,
  type RegistrationStatus__Output,
  type WorkloadRegistration,
  type WorkloadReport,
} from '../../api';
import { Backoff, type BackoffOptions } from '../../common/backoff';
import { clientCredentials } from '../../common/grpc';
import { waitFor } from './wait-for';

export interface TestRegistrationAgentOptions {
  /** Pilot's mTLS address (`--pilot-listen`), HOST:PORT. */
  readonly address: string;
  /** The mesh roots (DATA_DIR/root-cert.pem of the control plane). */
  readonly rootsPem: string;
  /** The host's workload certificate (CN = node) and key. */
  readonly identity: { readonly certChainPem: string; readonly keyPem: string };
  readonly registration: WorkloadRegistration;
  readonly trustDomain?: string;
  /** Reconnection delays; default 100 ms doubling up to 1 s. */
  readonly backoff?: BackoffOptions;
}

type Call = grpc.ClientDuplexStream<WorkloadReport, RegistrationStatus__Output>;

export class TestRegistrationAgent {
  /** Every status pilot answered, across streams. */
  readonly statuses: RegistrationStatus__Output[] = [];
  /** How many streams pilot accepted a registration on (1 after start, +1 per reconnection). */
  registrations = 0;
  /** The end status of every stream, in order. */
  readonly ended: grpc.StatusObject[] = [];
  private readonly client: RegistrationClient;
  private readonly backoff: Backoff;
  private call: Call | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private held = false;
  private health: { healthy: boolean; message: string } | undefined;

  constructor(private readonly opts: TestRegistrationAgentOptions) {
    const td = opts.trustDomain ?? 'cluster.local';
    const Ctor = loadPilotProto().sail.pilot.v1.Registration;
    this.client = new Ctor(
      opts.address,
      clientCredentials(
        opts.rootsPem,
        `spiffe://${td}/ns/sail-system/sa/sail-control-plane`,
        opts.identity,
      ),
      // Come back quickly once pilot is back (grpc-js waits 1 s, then longer, by default).
      { 'grpc.initial_reconnect_backoff_ms': 100, 'grpc.max_reconnect_backoff_ms': 1000 },
    ) as unknown as RegistrationClient;
    this.backoff = new Backoff({ initialMs: 100, maxMs: 1000, ...opts.backoff });
  }

  get node(): string {
    return this.opts.registration.node ?? '';
  }

  /** True while a stream is open. */
  get connected(): boolean {
    return this.call !== undefined;
  }

  /** Opens the stream and resolves once pilot accepted the registration. */
  async start(timeoutMs = 10_000): Promise<void> {
    const before = this.registrations;
    this.connect();
    await this.waitRegistered(before + 1, timeoutMs);
  }

  /** Resolves once pilot has accepted `count` registrations of this agent in total. */
  async waitRegistered(count: number, timeoutMs = 10_000): Promise<void> {
    await waitFor(() => this.registrations >= count, {
      timeoutMs,
      intervalMs: 20,
      what: `registration #${count} of node ${this.node} (statuses: ${JSON.stringify(this.statuses.slice(-3))}, ended: ${JSON.stringify(this.ended.slice(-3).map(s => `${s.code} ${s.details}`))})`,
    });
  }

  /** Reports health and resolves with pilot's answer. */
  async reportHealth(healthy: boolean, message = ''): Promise<RegistrationStatus__Output> {
    this.health = { healthy, message };
    return this.send({ health: { healthy, message } });
  }

  /** Sends a clean deregistration, stops reconnecting and resolves once pilot ended the stream. */
  async deregister(reason = 'shutdown'): Promise<RegistrationStatus__Output> {
    this.stopped = true;
    clearTimeout(this.timer);
    const call = this.call;
    const answer = await this.send({ deregister: { reason } });
    if (call) {
      const ends = this.ended.length;
      await waitFor(() => this.ended.length > ends || this.call !== call, {
        timeoutMs: 5_000,
        what: `pilot ending the stream of node ${this.node} after deregister`,
      });
    }
    return answer;
  }

  /**
   * Stops reconnecting after the stream drops, until resumeReconnects() (to decide in a test who
   * reaches a restarted pilot first). Does not touch an open stream.
   */
  holdReconnects(): void {
    this.held = true;
  }

  /** Reconnects again, at once if the stream is down. */
  resumeReconnects(): void {
    this.held = false;
    if (!this.call && !this.stopped) {
      clearTimeout(this.timer);
      this.connect();
    }
  }

  /** Drops the stream without deregistering (an agent crash, a cut cable) and stops reconnecting. */
  cut(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.call?.cancel();
    this.call = undefined;
  }

  /** Drops the stream (if any) and closes the channel. */
  close(): void {
    this.cut();
    this.client.close();
  }

  private async send(report: WorkloadReport): Promise<RegistrationStatus__Output> {
    const call = this.call;
    if (!call) throw new Error(`node ${this.node}: no registration stream open`);
    const n = this.statuses.length;
    call.write(report);
    return waitFor(() => this.statuses[n], {
      timeoutMs: 5_000,
      what: `pilot's answer to ${Object.keys(report).join(',')} from node ${this.node}`,
    });
  }

  private connect(): void {
    if (this.stopped || this.held) return;
    const call = this.client.Connect();
    this.call = call;
    let accepted = false;
    call.on('data', (s: RegistrationStatus__Output) => {
      this.statuses.push(s);
      if (!accepted && s.accepted) {
        accepted = true;
        this.registrations++;
        this.backoff.reset();
      }
    });
    call.on('error', () => undefined); // the 'status' event below carries the outcome
    call.on('status', (s: grpc.StatusObject) => {
      this.ended.push(s);
      if (this.call !== call) return;
      this.call = undefined;
      call.end();
      if (!this.stopped && !this.held)
        this.timer = setTimeout(() => this.connect(), this.backoff.next());
    });
    call.write({
      registration: { ...this.opts.registration, ...(this.health ? { health: this.health } : {}) },
    });
  }
}
