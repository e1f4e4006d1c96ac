/** The proxy supervisor's coded errors (listed under `## node-agent` in docs/errors.md). */
import { SailError } from '../../common/errors';

/** Codes defined by the supervisor; the node agent's registry (AGENT_ERROR_CODES) includes them. */
export const SUPERVISOR_ERROR_CODES = ['AGENT_PROXY_SPAWN_FAILED'] as const;

/**
 * The proxy process could not be started at all: the command does not exist or is not
 * executable (`SAIL_BINARY`, the agent's own path), the agent may not switch to the proxy user
 * (it is not root), or the config file cannot be written. start() rejects with it; after start,
 * the same failures are retried with backoff.
 */
export class ProxySpawnError extends SailError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('AGENT_PROXY_SPAWN_FAILED', message, options);
  }
}
