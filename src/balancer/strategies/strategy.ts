/**
 * A placement strategy that needs no key (round-robin, least-connections, random): it offers the
 * eligible servers of `tier` to `ranking`, best first, and updates its own state for the pick.
 * Used as a pool's `balance` or as the `fallback` of a hash strategy when the key is empty.
 * `reset` is called whenever the server table is rebuilt (construction, reload), so per-server
 * state indexed by table position never points at the wrong server.
 */
import type { FallbackStrategy } from '../../config/types.js';
import type { Ranking } from '../ranking.js';
import type { ServerTable, Tier } from '../server-table.js';

export interface PlacementStrategy {
  readonly name: FallbackStrategy;
  reset(table: ServerTable): void;
  /** Offers eligible servers to `ranking` (already begun with the pick's limit). */
  select(table: ServerTable, tier: Tier, ranking: Ranking): void;
}

/** Source of uniform numbers in [0, 1), injectable for tests. */
export type RandomSource = () => number;

/** (sessions + dials in flight) / weight: the load figure of least-connections and of the two random choices. */
export function loadOf(table: ServerTable, i: number): number {
  const s = table.servers[i]!;
  return (s.sessions.size + s.dialsInFlight) / s.config.weight;
}
