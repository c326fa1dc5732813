/**
 * `client-id-hash` and `username-hash`: weighted rendezvous hashing over the key bytes
 * (design.md §5; the rule itself is in ../hash/rendezvous.ts). Stateless: the pick depends only on
 * the key, the server names and weights, and which servers are eligible, never on list order or
 * on history, so two LB hosts with the same config agree without talking.
 * Retry candidates: the next-highest scores, i.e. where the key goes if the winner were gone.
 */
import { rendezvousScore } from '../hash/rendezvous.js';
import type { Ranking } from '../ranking.js';
import type { ServerTable, Tier } from '../server-table.js';

/** Offers every eligible server to `ranking` by score for the key hash (hi, lo); ties: smaller name. */
export function selectByRendezvous(table: ServerTable, tier: Tier, keyHi: number, keyLo: number, ranking: Ranking): void {
  for (let i = 0; i < table.size; i++) {
    if (!table.eligible(i, tier)) continue;
    const score = rendezvousScore(keyHi, keyLo, table.nameHashHi[i]!, table.nameHashLo[i]!, table.servers[i]!.config.weight);
    ranking.offer(table.servers[i]!, score, table.nameRank[i]!);
  }
}

/** Index of the eligible server with the highest score for the key hash, or -1. */
export function rendezvousWinner(table: ServerTable, tier: Tier, keyHi: number, keyLo: number): number {
  let best = -1;
  let bestScore = 0;
  for (let i = 0; i < table.size; i++) {
    if (!table.eligible(i, tier)) continue;
    const score = rendezvousScore(keyHi, keyLo, table.nameHashHi[i]!, table.nameHashLo[i]!, table.servers[i]!.config.weight);
    if (best < 0 || score > bestScore || (score === bestScore && table.nameRank[i]! < table.nameRank[best]!)) {
      best = i;
      bestScore = score;
    }
  }
  return best;
}
