/**
 * Least connections: the lowest load wins (loadOf: HAProxy's key, (sessions + 1) / weight, 0 when idle).
 * Equal loads go by smooth weighted round robin among them (as round-robin.ts, over the tied servers only), so that
 * servers level by weight share arrivals by weight (a balancing audit: weights 1:2:3 at rest took serial clients
 * 200/200/200 with an even rotation), and a burst of clients arriving before their sessions are counted is spread.
 * Retry candidates: the others by load (ties: byte-wise name order).
 */
import type { Ranking } from '../ranking.js';
import type { ServerTable, Tier } from '../server-table.js';
import { loadOf, type PlacementStrategy } from './strategy.js';

export class LeastConnections implements PlacementStrategy {
  readonly name = 'least-connections' as const;
  /** Smooth weighted round robin's current weights, for the tie-break among the least loaded. */
  private current: Float64Array;

  constructor(table?: ServerTable) {
    this.current = new Float64Array(table?.size ?? 0);
  }

  reset(table: ServerTable): void {
    this.current = new Float64Array(table.size);
  }

  select(table: ServerTable, tier: Tier, ranking: Ranking): void {
    const n = table.size;
    if (n === 0) return;
    if (this.current.length !== n) this.current = new Float64Array(n);
    let least = Infinity;
    for (let i = 0; i < n; i++) if (table.eligible(i, tier)) least = Math.min(least, loadOf(table, i));
    if (least === Infinity) return;
    const current = this.current;
    const rank = table.nameRank;
    let total = 0;
    let winner = -1;
    for (let i = 0; i < n; i++) {
      if (!table.eligible(i, tier) || loadOf(table, i) !== least) continue;
      const w = table.servers[i]!.config.weight;
      current[i] = current[i]! + w;
      total += w;
      if (winner < 0 || current[i]! > current[winner]! || (current[i] === current[winner] && rank[i]! < rank[winner]!)) winner = i;
    }
    current[winner] = current[winner]! - total;
    ranking.offer(table.servers[winner]!, Infinity, 0);
    for (let i = 0; i < n; i++) {
      if (i !== winner && table.eligible(i, tier)) ranking.offer(table.servers[i]!, -loadOf(table, i), rank[i]!);
    }
  }
}
