/**
 * Least connections: the fewest live sessions per unit of weight (sessions / weight) wins.
 * Equal loads rotate: the scan starts one past the previous winner, and among equals the first
 * reached wins, so a burst of clients arriving before their sessions are counted is spread
 * instead of all landing on one server. Retry candidates: the others by load, in the same scan order.
 */
import type { Ranking } from '../ranking.js';
import type { ServerTable, Tier } from '../server-table.js';
import { loadOf, type PlacementStrategy } from './strategy.js';

export class LeastConnections implements PlacementStrategy {
  readonly name = 'least-connections' as const;
  private cursor = 0;

  reset(_table: ServerTable): void {
    this.cursor = 0;
  }

  select(table: ServerTable, tier: Tier, ranking: Ranking): void {
    const n = table.size;
    if (n === 0) return;
    const start = this.cursor % n;
    let winner = -1;
    let winnerLoad = Infinity;
    for (let step = 0; step < n; step++) {
      const i = start + step < n ? start + step : start + step - n;
      if (!table.eligible(i, tier)) continue;
      const load = loadOf(table, i);
      if (winner < 0 || load < winnerLoad) {
        winner = i;
        winnerLoad = load;
      }
      ranking.offer(table.servers[i]!, -load, step);
    }
    if (winner >= 0) this.cursor = winner + 1;
  }
}
