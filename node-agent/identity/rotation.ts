/**
 * When to renew a certificate: the pure policy, split from the loop that acts on it (spire's
 * `rotationutil`). Istio renewed at 50 % of the lifetime; so do we, spread by a little jitter so a
 * fleet that joined together does not renew together.
 */

/** Fraction of the lifetime after which a certificate is renewed. */
export const ROTATION_FRACTION = 0.5;
/** Spread of the rotation point: ±10 % of the half-lifetime mark. */
export const ROTATION_JITTER = 0.1;

/** True once half of the certificate's lifetime (notBefore to notAfter, epoch ms) has passed. */
export function shouldRotate(nowMs: number, notBeforeMs: number, notAfterMs: number): boolean {
  return nowMs >= notBeforeMs + (notAfterMs - notBeforeMs) * ROTATION_FRACTION;
}

/** True once the certificate is no longer valid. */
export function isExpired(nowMs: number, notAfterMs: number): boolean {
  return nowMs >= notAfterMs;
}

/**
 * Milliseconds from `nowMs` until the certificate should be renewed: the half-lifetime point moved
 * by up to ±10 % of itself (`random` returns a number in [0, 1); 0.5 means no jitter). Never
 * negative: a certificate already past its point is renewed at once.
 */
export function nextRotationDelayMs(
  nowMs: number,
  notBeforeMs: number,
  notAfterMs: number,
  random: () => number,
): number {
  const half = Math.max(0, notAfterMs - notBeforeMs) * ROTATION_FRACTION;
  const jitter = (random() * 2 - 1) * ROTATION_JITTER;
  const rotateAt = notBeforeMs + half * (1 + jitter);
  return Math.max(0, Math.round(rotateAt - nowMs));
}
