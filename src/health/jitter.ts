/**
 * Probe spacing with a little randomness, so that the probes of many servers (and of two LB hosts
 * started together) do not stay synchronised and hit a cluster in bursts.
 */

/** Default spread: up to ±10 % of the interval. */
export const DEFAULT_JITTER_FRACTION = 0.1;

/**
 * The next delay: `intervalMs` ± up to `fraction` of it, uniform, rounded to whole ms, never negative.
 * `random` returns [0, 1) like Math.random (injected for tests).
 */
export function jitteredDelay(
  intervalMs: number,
  random: () => number = Math.random,
  fraction: number = DEFAULT_JITTER_FRACTION,
): number {
  const spread = intervalMs * Math.min(Math.max(fraction, 0), 1);
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.max(0, Math.round(intervalMs - spread + 2 * spread * r));
}
