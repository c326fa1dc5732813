/**
 * Which spacing applies to a server's next probe, after HAProxy's `inter`, `fastinter` and `downinter`:
 *  - up, no failure counted: `interval`;
 *  - in transition (up with failures counting towards `fall`, or down with passes counting towards `rise`), or
 *    with no verdict yet: `fastInterval`, so that a verdict in the making is confirmed or refuted sooner;
 *  - down, no pass counted: `downInterval`, so that a dead server costs little (a longer one) or is found back
 *    sooner (a shorter one).
 * null (the default) means `interval`, as in HAProxy. Pure: the checker reads the config each time, so a reload
 * applies to the next probe.
 */
import type { HealthConfig } from '../config/types.js';
import type { RiseFallState } from './rise-fall.js';

export type ProbeSpacing = Pick<HealthConfig, 'interval' | 'fastInterval' | 'downInterval'>;

export function probeInterval(state: RiseFallState, spacing: ProbeSpacing): number {
  if (state.health === 'up') return state.fails > 0 ? (spacing.fastInterval ?? spacing.interval) : spacing.interval;
  if (state.health === 'down') return state.passes > 0 ? (spacing.fastInterval ?? spacing.interval) : (spacing.downInterval ?? spacing.interval);
  return spacing.fastInterval ?? spacing.interval;
}
