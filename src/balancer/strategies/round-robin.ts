/**
 * Smooth weighted round robin, as nginx's ngx_http_upstream_get_peer: on each pick every eligible
 * server's current weight grows by its weight, the largest current weight wins and drops by the
 * total. Weights 5,1,1 give a a b a c a a: interleaved, never bursts. Equal current weights go to
 * the byte-wise smaller name (not list order), so every LB host runs the same sequence.
 * Retry candidates: the other eligible servers by current weight after the pick, i.e. the order
 * the rotation would reach them. A reload (new server table) restarts the rotation, as in nginx.
 */
import type { Ranking } from '../ranking.js';
import type { ServerTable, Tier } from '../server-table.js';
import type { PlacementStrategy } from './strategy.js';

export class SmoothWeightedRoundRobin implements PlacementStrategy {
  readonly name = 'round-robin' as const;
  private current: Float64Array;

  constructor(table: ServerTable) {
    this.current = new Float64Array(table.size);
  }

  reset(table: ServerTable): void {
    this.current = new Float64Array(table.size);
  }

  select(table: ServerTable, tier: Tier, ranking: Ranking): void {
    const current = this.current;
    const rank = table.nameRank;
    let total = 0;
    let best = -1;
    for (let i = 0; i < table.size; i++) {
      if (!table.eligible(i, tier)) continue;
      const w = table.servers[i]!.config.weight;
      current[i] = current[i]! + w;
      total += w;
      if (best < 0 || current[i]! > current[best]! || (current[i] === current[best] && rank[i]! < rank[best]!)) best = i;
    }
    if (best < 0) return;
    current[best] = current[best]! - total;
    ranking.offer(table.servers[best]!, Infinity, 0);
    for (let i = 0; i < table.size; i++) {
      if (i !== best && table.eligible(i, tier)) ranking.offer(table.servers[i]!, current[i]!, rank[i]!);
    }
  }
}
