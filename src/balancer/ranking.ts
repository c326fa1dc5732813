/**
 * The best `limit` servers of one pick, kept sorted while the strategy offers them one by one.
 * Order: higher `primary` first; equal `primary`: lower `secondary` first; equal both: the one
 * offered first. Storage is preallocated per server table, so a pick allocates only the array it
 * returns (limit is retries + 1, a handful, so insertion is cheaper than any heap).
 */
import type { Server } from './server.js';

export class Ranking {
  private readonly picked: (Server | null)[];
  private readonly primary: Float64Array;
  private readonly secondary: Float64Array;
  private limit = 0;
  private count = 0;

  constructor(capacity: number) {
    this.picked = new Array<Server | null>(capacity).fill(null);
    this.primary = new Float64Array(capacity);
    this.secondary = new Float64Array(capacity);
  }

  /** Starts a pick that keeps at most `limit` servers (capped at the capacity). */
  begin(limit: number): void {
    this.limit = Math.max(0, Math.min(limit, this.picked.length));
    this.count = 0;
  }

  get size(): number {
    return this.count;
  }

  offer(server: Server, primary: number, secondary: number): void {
    let pos = this.count;
    // Walk up past every kept entry that ranks strictly below the newcomer.
    while (pos > 0) {
      const p = this.primary[pos - 1]!;
      if (p > primary || (p === primary && this.secondary[pos - 1]! <= secondary)) break;
      pos--;
    }
    if (pos >= this.limit) return;
    const last = this.count < this.limit ? this.count : this.limit - 1;
    for (let j = last; j > pos; j--) {
      this.picked[j] = this.picked[j - 1]!;
      this.primary[j] = this.primary[j - 1]!;
      this.secondary[j] = this.secondary[j - 1]!;
    }
    this.picked[pos] = server;
    this.primary[pos] = primary;
    this.secondary[pos] = secondary;
    if (this.count < this.limit) this.count++;
  }

  /** The kept servers, best first, as a new array; clears the references held for the pick. */
  take(): Server[] {
    const out = new Array<Server>(this.count);
    for (let j = 0; j < this.count; j++) {
      out[j] = this.picked[j]!;
      this.picked[j] = null;
    }
    this.count = 0;
    return out;
  }
}
