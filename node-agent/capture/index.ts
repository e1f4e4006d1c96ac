/** Traffic capture (issue 5, part A): iptables rules as data, backend detection, the Capture subsystem. */
export { Capture, CAPTURE_STATE_FILE, type TrafficCaptureOptions } from './capture';
export {
  detectBackend,
  detectIptables,
  execRunner,
  countRules,
  COMMAND_TIMEOUT_MS,
  type IptablesTools,
  type FamilyCommands,
} from './backend';
export {
  buildCaptureRules,
  renderRules,
  buildRestorePayload,
  parseInstalled,
  diffInstalled,
  validateCaptureSpec,
  inboundExcludedPorts,
  SAIL_CHAINS,
  SAIL_COMMENT,
  SAIL_PORTS,
  SSH_PORT,
  TPROXY_MARK,
  TPROXY_ROUTE_TABLE,
  type FamilyRules,
  type TableRules,
  type JumpRule,
  type InstalledTable,
} from './rules';
export { captureSpecFromSettings, DEFAULT_INBOUND_PORT, DEFAULT_OUTBOUND_PORT } from './spec';
export { lookupSystemUser, parsePasswdUser } from './system-user';
export { TPROXY_CHILD_FD, TproxySocket } from './tproxy-socket';
export { CaptureError, CAPTURE_ERROR_CODES, type CaptureErrorCode } from './errors';
export type {
  CaptureSpec,
  CaptureStatus,
  CaptureFamily,
  IptablesBackend,
  CommandResult,
  CommandRunner,
} from './types';
