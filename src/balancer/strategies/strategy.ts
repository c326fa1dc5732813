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

/**
 * The load figure of least-connections and of the two random choices, HAProxy's leastconn key: 0 for a server with
 * nothing (sessions and dials in flight), else (that + 1) / weight, the load it would carry with this client too.
 * Without the `+ 1`, a light server level with a heavy one took every client that came while the heavy one had one
 * more in flight (its load rises by 1/weight, the light one's by 1): a balancing audit saw a weight-1 broker beside
 * one of 256 take half of the short-lived clients. Idle servers tie at 0 (the strategies share those by weight),
 * rather than the heaviest always winning.
 */
export function loadOf(table: ServerTable, i: number): number {
  const s = table.servers[i]!;
  const inFlight = s.sessions.size + s.dialsInFlight;
  return inFlight === 0 ? 0 : (inFlight + 1) / s.config.weight;
}
