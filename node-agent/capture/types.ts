/** The capture subsystem's contract types (issue 5 contracts, part A). */

/**
 * What traffic the host sends through the proxy: the node agent's capture settings resolved into
 * numbers. Lists follow Istio 1.0: `*` means all, an empty string means none, and exclusions are
 * evaluated before inclusions.
 */
export interface CaptureSpec {
  /** Inbound interception: nat REDIRECT (the default) or mangle TPROXY. `none` never reaches Capture. */
  readonly mode: 'redirect' | 'tproxy';
  /** The proxy's uid: its own connections are never captured (they would loop). */
  readonly proxyUid: number;
  /** The proxy's gid: the agent runs with it too, so its connections are not captured either. */
  readonly proxyGid: number;
  /** Where captured outbound connections go (the proxy's virtualOutbound listener, 15001). */
  readonly outboundPort: number;
  /** Where captured inbound connections go (the proxy's virtualInbound listener, 15006). */
  readonly inboundPort: number;
  /** Outbound destinations to capture: `*`, `""` or `10.0.0.0/8,fd00::/8`. */
  readonly includeOutboundCidrs: string;
  /** Outbound destinations never captured: `""` or a CIDR list. */
  readonly excludeOutboundCidrs: string;
  /** Inbound ports to capture: `*`, `""` or `9080,9443`. */
  readonly includeInboundPorts: string;
  /** Inbound ports never captured (default `22`); SSH and Sail's own ports are always excluded. */
  readonly excludeInboundPorts: string;
  /** Outbound destination ports never captured: `""` (default) or a port list. */
  readonly excludeOutboundPorts?: string;
  /** DNS capture: udp+tcp port 53 to these nameserver IPs → REDIRECT to 127.0.0.1:dns.port. Absent: no DNS capture. */
  readonly dns?: { readonly port: number; readonly nameservers: readonly string[] };
  /** 'auto': ip6tables too when the host has IPv6 (an ip6tables backend works). */
  readonly ipv6: 'auto' | boolean;
}

/** Which kernel interface the iptables tools program. */
export type IptablesBackend = 'nft' | 'legacy';

/** An address family: `ipv4` is programmed with iptables, `ipv6` with ip6tables. */
export type CaptureFamily = 'ipv4' | 'ipv6';

/** What {@link Capture.verify} found; shown by `sail capture verify` and `sail status`. */
export interface CaptureStatus {
  /** Our chains exist. */
  readonly installed: boolean;
  /** The installed rules are exactly the rules the spec produces. */
  readonly upToDate: boolean;
  readonly backend: IptablesBackend;
  readonly families: readonly CaptureFamily[];
  /** Human-readable, one line each; empty when upToDate. */
  readonly differences: readonly string[];
}

/** The outcome of one command. `code` is 127 when the program does not exist. */
export interface CommandResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs one program (no shell) with optional standard input. Every iptables, ip6tables and ip
 * command of the capture subsystem goes through one of these, so unit tests can record the argv
 * and the payloads (like Istio's DependenciesStub) and e2e tests can run them in a namespace.
 */
export type CommandRunner = (
  file: string,
  args: readonly string[],
  input?: string,
) => Promise<CommandResult>;
