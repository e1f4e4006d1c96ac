/** The supervised proxy: runs `sail proxy` as a child of the node agent (issue 5). */
export {
  DEFAULT_RESTART_INITIAL_MS,
  DEFAULT_RESTART_MAX_MS,
  DEFAULT_RESTART_RESET_AFTER_MS,
  DEFAULT_STOP_GRACE_MS,
  type ProxyExit,
  type ProxyState,
  type ProxyStatus,
  ProxySupervisor,
  type ProxySupervisorOptions,
} from './proxy-supervisor';
export type { XdsStatus } from './admin-probe';
export { ProxySpawnError, SUPERVISOR_ERROR_CODES } from './errors';
export { PID_FILE_NAME } from './pid-file';
export { isSingleExecutable, SAIL_BINARY_ENV, selfCommand } from './self-command';
