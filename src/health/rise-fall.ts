/**
 * Rise/fall hysteresis with HAProxy semantics (`rise` consecutive passes to go up, `fall` consecutive
 * fails to go down; a pass resets the fail streak and a fail resets the pass streak).
 * One deliberate difference from HAProxy's start-up: from `unknown` the first result decides at once,
 * so a fresh server gets clients as soon as one probe passes, and never before.
 * Pure: state in, state out; the checker owns the state and reads rise/fall from the config each time,
 * so a reload applies to the next result.
 */
import type { HealthState } from '../balancer/server.js';

export interface RiseFallLimits {
  rise: number;
  fall: number;
}

export interface RiseFallState {
  readonly health: HealthState;
  /** Consecutive passes while down (towards `rise`). */
  readonly passes: number;
  /** Consecutive fails while up (towards `fall`). */
  readonly fails: number;
}

export function initialRiseFall(health: HealthState = 'unknown'): RiseFallState {
  return { health, passes: 0, fails: 0 };
}

/** The state after one probe result. Limits below 1 count as 1 (a single result decides). */
export function nextRiseFall(prev: RiseFallState, passed: boolean, limits: RiseFallLimits): RiseFallState {
  if (prev.health === 'unknown') return { health: passed ? 'up' : 'down', passes: 0, fails: 0 };
  const rise = Math.max(1, limits.rise);
  const fall = Math.max(1, limits.fall);
  if (prev.health === 'up') {
    if (passed) return prev.fails === 0 ? prev : { health: 'up', passes: 0, fails: 0 };
    const fails = prev.fails + 1;
    return fails >= fall ? { health: 'down', passes: 0, fails: 0 } : { health: 'up', passes: 0, fails };
  }
  // down
  if (!passed) return prev.passes === 0 ? prev : { health: 'down', passes: 0, fails: 0 };
  const passes = prev.passes + 1;
  return passes >= rise ? { health: 'up', passes: 0, fails: 0 } : { health: 'down', passes, fails: 0 };
}
