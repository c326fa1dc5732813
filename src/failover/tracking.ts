/**
 * What the application feeds into `Failover.setTracking()` (design.md §4 `failover.track`):
 *  - a listener that cannot accept → FAULT (resign: the peer should serve), when `track.listeners`;
 *  - each pool with no server up lowers the priority by `track.pools.weight` — never FAULT: with every broker
 *    down, someone must still hold the VIP and answer CONNACK "server unavailable".
 * Interface carrier (`track.interface`) is watched by the heartbeat worker itself.
 */
import type { FailoverConfig } from '../config/types.js';

export interface TrackingInput {
  /** Some listener cannot accept connections (bind lost, accept errors). */
  listenerFailed: boolean;
  /** Number of pools with no server up. */
  poolsWithoutServer: number;
}

export function computeTracking(track: FailoverConfig['track'], input: TrackingInput): { fault: boolean; priorityPenalty: number } {
  return {
    fault: track.listeners && input.listenerFailed,
    priorityPenalty: Math.max(0, track.pools.weight) * Math.max(0, input.poolsWithoutServer),
  };
}
