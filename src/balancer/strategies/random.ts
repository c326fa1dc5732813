/**
 * Random with two choices ("power of two choices", as HAProxy's `balance random(2)`): draw two
 * distinct eligible servers with probability proportional to weight, keep the one with the lower
 * load (loadOf: (sessions + 1) / weight, 0 when idle; equal: the first drawn). Two draws avoid both the herd behaviour of pure
 * least-connections across several LB processes and the imbalance of a single random draw.
 * Retry candidates: the other drawn server, then the rest by load (ties: byte-wise name order).
 */
import type { Ranking } from '../ranking.js';
import type { ServerTable, Tier } from '../server-table.js';
import { loadOf, type PlacementStrategy, type RandomSource } from './strategy.js';

export class PowerOfTwoChoices implements PlacementStrategy {
  readonly name = 'random' as const;
  private readonly random: RandomSource;

  constructor(random: RandomSource) {
    this.random = random;
  }

  reset(_table: ServerTable): void {}

  select(table: ServerTable, tier: Tier, ranking: Ranking): void {
    let total = 0;
    for (let i = 0; i < table.size; i++) if (table.eligible(i, tier)) total += table.servers[i]!.config.weight;
    if (total <= 0) return;
    const first = this.draw(table, tier, total, -1);
    const second = this.draw(table, tier, total - table.servers[first]!.config.weight, first);
    let winner = first;
    let runnerUp = second;
    if (second >= 0 && loadOf(table, second) < loadOf(table, first)) {
      winner = second;
      runnerUp = first;
    }
    ranking.offer(table.servers[winner]!, Infinity, 0);
    if (runnerUp >= 0) ranking.offer(table.servers[runnerUp]!, Number.MAX_VALUE, 0);
    for (let i = 0; i < table.size; i++) {
      if (i === first || i === second || !table.eligible(i, tier)) continue;
      ranking.offer(table.servers[i]!, -loadOf(table, i), table.nameRank[i]!);
    }
  }

  /** One weighted draw among eligible servers other than `exclude`; -1 when none is left. */
  private draw(table: ServerTable, tier: Tier, total: number, exclude: number): number {
    if (total <= 0) return -1;
    let r = this.random() * total;
    let last = -1;
    for (let i = 0; i < table.size; i++) {
      if (i === exclude || !table.eligible(i, tier)) continue;
      last = i;
      r -= table.servers[i]!.config.weight;
      if (r < 0) return i;
    }
    return last; // rounding left r at >= 0 after the last server: it is the last one
  }
}
