/**
 * A pool's servers plus what the strategies precompute about them: each name's hash (for rendezvous
 * hashing) and each name's rank in byte-wise name order (for deterministic tie-breaks). Built once
 * per (re)configuration, so a pick never hashes a name or allocates.
 * Also the eligibility rule of design.md §4: backup servers take sessions only while no non-backup
 * server accepts new sessions.
 */
import { compareNames, nameHashInto } from './hash/rendezvous.js';
import type { Server } from './server.js';

/** Which servers may take a new session right now (numbers, so a pick allocates nothing). */
export type Tier = typeof TIER_NONE | typeof TIER_PRIMARY | typeof TIER_BACKUP;
/** No server accepts new sessions. */
export const TIER_NONE = 0;
/** At least one non-backup server accepts: only non-backup servers are eligible. */
export const TIER_PRIMARY = 1;
/** No non-backup server accepts but a backup does: only backup servers are eligible. */
export const TIER_BACKUP = 2;

export class ServerTable {
  readonly servers: readonly Server[];
  /** XXH64 of each server name's UTF-8 bytes, high and low halves. */
  readonly nameHashHi: Uint32Array;
  readonly nameHashLo: Uint32Array;
  /** 0 for the byte-wise smallest name, n-1 for the largest (names are unique within a pool). */
  readonly nameRank: Int32Array;
  /**
   * Set by Pool.candidates for one pick when it leaves out the servers in their dial back-off (dial-backoff.ts):
   * the pick's time, and eligible() is false for a server backed off past it. 0 = no server is left out.
   */
  backoffNow = 0;
  /** Set by Pool.candidates for one keyless pick: eligible() is false for a server at its maxConnections. */
  skipFull = false;

  constructor(servers: readonly Server[]) {
    const n = servers.length;
    this.servers = servers.slice();
    this.nameHashHi = new Uint32Array(n);
    this.nameHashLo = new Uint32Array(n);
    this.nameRank = new Int32Array(n);
    const pair = new Uint32Array(2);
    for (let i = 0; i < n; i++) {
      nameHashInto(servers[i]!.name, pair);
      this.nameHashHi[i] = pair[0]!;
      this.nameHashLo[i] = pair[1]!;
    }
    const byName = servers.map((s, i) => ({ name: s.name, i }));
    byName.sort((a, b) => compareNames(a.name, b.name));
    byName.forEach((e, rank) => {
      this.nameRank[e.i] = rank;
    });
  }

  get size(): number {
    return this.servers.length;
  }

  /** Decides the tier for this pick. O(n), no allocation. */
  tier(): Tier {
    let backupAccepts = false;
    for (const s of this.servers) {
      if (!s.acceptsNew) continue;
      if (!s.config.backup) return TIER_PRIMARY;
      backupAccepts = true;
    }
    return backupAccepts ? TIER_BACKUP : TIER_NONE;
  }

  /** May server `i` take a new session in this tier (and this pick: backoffNow)? */
  eligible(i: number, tier: Tier): boolean {
    const s = this.servers[i]!;
    return inTier(s, tier) && (this.backoffNow === 0 || s.dialBackoffUntil <= this.backoffNow) && !(this.skipFull && s.full);
  }

  /** Does a server of `tier` take sessions but sit at its maxConnections (why a keyless pick came back empty)? */
  fullInTier(tier: Tier): boolean {
    for (const s of this.servers) if (inTier(s, tier) && s.full) return true;
    return false;
  }
}

/** The server takes new sessions and belongs to `tier` (backup servers only in TIER_BACKUP). */
function inTier(s: Server, tier: Tier): boolean {
  return s.acceptsNew && s.config.backup === (tier === TIER_BACKUP);
}
