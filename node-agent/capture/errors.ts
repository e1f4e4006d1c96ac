/** The capture subsystem's coded errors (the lead lists them in docs/errors.md). */
import { SailError } from '../../common/errors';

/** Every code the capture subsystem defines. */
export const CAPTURE_ERROR_CODES = [
  'AGENT_CAPTURE_NO_IPTABLES',
  'AGENT_CAPTURE_APPLY_FAILED',
  'AGENT_CAPTURE_TPROXY_LISTEN_FAILED',
] as const;

/** One of CAPTURE_ERROR_CODES. */
export type CaptureErrorCode = (typeof CAPTURE_ERROR_CODES)[number];

/**
 * Capture could not be applied or removed: no iptables program runs (`AGENT_CAPTURE_NO_IPTABLES`),
 * or iptables-restore / ip refused the change (`AGENT_CAPTURE_APPLY_FAILED`; the message carries the
 * program's stderr and, for the usual causes, a hint), or the transparent socket TPROXY delivers
 * inbound connections to could not be opened (`AGENT_CAPTURE_TPROXY_LISTEN_FAILED`: not root, or
 * the inbound port taken). A failed install leaves no Sail rules.
 */
export class CaptureError extends SailError {
  declare readonly code: CaptureErrorCode;
  constructor(code: CaptureErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
