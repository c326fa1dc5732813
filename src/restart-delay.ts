/**
 * How long to wait before restart attempt `attempt` (0 = the first) of something that died and is started again
 * (a cluster worker, the failover thread): 1 s, doubling after each failed attempt, at most 30 s. Never given up:
 * what keeps it from starting (a port taken, an interface gone for a while) may pass.
 */
export function restartDelay(attempt: number): number {
  return Math.min(RESTART_MAX_DELAY_MS, RESTART_DELAY_MS * 2 ** attempt);
}

const RESTART_DELAY_MS = 1000;
const RESTART_MAX_DELAY_MS = 30_000;
