/**
 * Pacing for session eviction: at most `rate` evictions per second, spread evenly (one every 1000/rate ms),
 * so that a server going down or coming back does not make all its clients reconnect in the same instant
 * (EMQX `conn-evict-rate`, reliability case 8: reconnect storms). Pure, with time passed in.
 *
 * It is a token bucket of depth one plus a small catch-up allowance: a timer that fires late may do the
 * evictions it missed (up to `catchUpMs` worth), but an idle pacer banks no credit.
 */

export const DEFAULT_CATCH_UP_MS = 50;

export class EvictionPacer {
  /** Time (ms) at which the next eviction is allowed. */
  private nextAt = Number.NEGATIVE_INFINITY;

  constructor(private readonly catchUpMs: number = DEFAULT_CATCH_UP_MS) {}

  /** Rates that are 0, negative, NaN or infinite mean "no pacing" (all at once). */
  static isUnlimited(rate: number): boolean {
    return !(rate > 0) || !Number.isFinite(rate);
  }

  /** Work arrives after an idle period: the first eviction may run at once, without banked credit. */
  startAfterIdle(now: number): void {
    if (this.nextAt < now) this.nextAt = now;
  }

  /** How many evictions are allowed at `now` (Infinity when unlimited). Does not consume. */
  available(now: number, rate: number): number {
    if (EvictionPacer.isUnlimited(rate)) return Number.POSITIVE_INFINITY;
    const spacing = 1000 / rate;
    const from = Math.max(this.nextAt, now - this.catchUpMs);
    if (from > now) return 0;
    return Math.floor((now - from) / spacing) + 1;
  }

  /** Record `count` evictions done at `now`. */
  consume(now: number, rate: number, count: number): void {
    if (count <= 0 || EvictionPacer.isUnlimited(rate)) return;
    const from = Math.max(this.nextAt, now - this.catchUpMs);
    this.nextAt = from + count * (1000 / rate);
  }

  /** Milliseconds until the next eviction is allowed (0 = now). */
  delayMs(now: number, rate: number): number {
    if (EvictionPacer.isUnlimited(rate)) return 0;
    return Math.max(0, Math.ceil(this.nextAt - now));
  }
}
