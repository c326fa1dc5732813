/**
 * Evictor: closes queued sessions at a paced rate (see eviction-pacer.ts), for one pool.
 * Used by PoolReactions for `onServerDown: shutdown`, `onServerUp: rebalance` and admin drain/maint,
 * and by whoever needs paced closing otherwise (reload removing a server, shutdown).
 * A session is queued once; queuing it again only updates why. Whether an item is still due is asked
 * at its turn (`isDue`), so a server that came back meanwhile keeps its sessions and skipped items
 * cost no rate budget.
 */
import type { EvictReason, LiveSession, Server } from '../balancer/server.js';
import { EvictionPacer } from './eviction-pacer.js';
import { monotonicNow } from '../monotonic-clock.js';

export { EvictionPacer } from './eviction-pacer.js';

export interface EvictionItem {
  session: LiveSession;
  /** The server the session is on now (unknown for plain `evict(sessions)` lists). */
  server?: Server;
  reason: EvictReason;
  /** For `rebalance`: the server the session should end up on. */
  target?: Server;
}

export type TimerHandle = unknown;

/** Sessions per second; a function is read at every step, so a reload applies (0 or less = all at once). */
export type EvictRate = number | (() => number);

export interface EvictorOptions {
  /** Asked right before evicting an item; false = skip it (free). Default: always due. */
  isDue?: (item: EvictionItem) => boolean;
  /** Called after each eviction (metrics, logs). */
  onEvicted?: (item: EvictionItem) => void;
  now?: () => number;
  setTimer?: (fn: () => void, ms: number) => TimerHandle;
  clearTimer?: (handle: TimerHandle) => void;
}

/** An unref'd timeout: pending evictions (or reactions' timers, reactions.ts) alone must not keep a finished process alive. */
export const defaultSetTimer = (fn: () => void, ms: number): TimerHandle => {
  const t = setTimeout(fn, ms);
  t.unref();
  return t;
};
export const defaultClearTimer = (h: TimerHandle): void => clearTimeout(h as NodeJS.Timeout);

/** Compact the queue array once this many consumed slots pile up at its head. */
const COMPACT_AFTER = 1024;

export class Evictor {
  private readonly pacer = new EvictionPacer();
  /** Queue order; entries whose session is no longer in `items` were cancelled. */
  private queue: Array<LiveSession | undefined> = [];
  private head = 0;
  private readonly items = new Map<LiveSession, EvictionItem>();
  private timer: TimerHandle | null = null;
  private idleWaiters: Array<() => void> = [];
  private closed = false;
  private readonly now: () => number;
  private readonly setTimer: (fn: () => void, ms: number) => TimerHandle;
  private readonly clearTimer: (handle: TimerHandle) => void;
  private readonly rate: () => number;

  constructor(
    rate: EvictRate,
    private readonly defaultReason: EvictReason = 'shutdown',
    private readonly opts: EvictorOptions = {},
  ) {
    this.rate = typeof rate === 'function' ? rate : () => rate;
    this.now = opts.now ?? monotonicNow;
    this.setTimer = opts.setTimer ?? defaultSetTimer;
    this.clearTimer = opts.clearTimer ?? defaultClearTimer;
  }

  /** Sessions waiting for their turn. */
  get pending(): number {
    return this.items.size;
  }

  /** Queue sessions for closing with `reason` (default: the constructor's); returns how many were new. */
  evict(sessions: Iterable<LiveSession>, reason: EvictReason = this.defaultReason): number {
    const items: EvictionItem[] = [];
    for (const session of sessions) items.push({ session, reason });
    return this.enqueue(items);
  }

  /** Queue items; returns how many were new. Eviction starts on a timer, never inside this call. */
  enqueue(items: Iterable<EvictionItem>): number {
    if (this.closed) return 0;
    const wasIdle = this.items.size === 0;
    let added = 0;
    for (const item of items) {
      if (!this.items.has(item.session)) {
        this.queue.push(item.session);
        added++;
      }
      this.items.set(item.session, item);
    }
    if (this.items.size > 0) {
      if (wasIdle) this.pacer.startAfterIdle(this.now());
      if (this.timer === null) this.arm(0);
    }
    return added;
  }

  /** Drop queued items that match; returns how many. */
  cancel(match: (item: EvictionItem) => boolean): number {
    let n = 0;
    for (const [session, item] of this.items) {
      if (match(item)) {
        this.items.delete(session);
        n++;
      }
    }
    if (this.items.size === 0) this.becameIdle();
    return n;
  }

  /** Resolves when nothing is queued (at once if nothing is). */
  drained(): Promise<void> {
    if (this.items.size === 0 || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stop evicting and forget the queue. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.items.clear();
    this.becameIdle();
  }

  private arm(ms: number): void {
    this.timer = this.setTimer(this.step, ms);
  }

  private readonly step = (): void => {
    this.timer = null;
    if (this.closed) return;
    const now = this.now();
    const rate = this.rate();
    const allowed = this.pacer.available(now, rate);
    let evicted = 0;
    while (evicted < allowed && this.head < this.queue.length) {
      const session = this.queue[this.head];
      this.queue[this.head++] = undefined; // let it be collected
      const item = session && this.items.get(session);
      if (session === undefined || item === undefined) continue; // cancelled
      this.items.delete(session);
      if (this.opts.isDue && !this.opts.isDue(item)) continue;
      session.evict(item.reason);
      evicted++;
      this.opts.onEvicted?.(item);
    }
    this.pacer.consume(now, rate, evicted);
    this.compact();
    if (this.items.size === 0) {
      this.becameIdle();
      return;
    }
    this.arm(this.pacer.delayMs(now, rate));
  };

  private compact(): void {
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head >= COMPACT_AFTER && this.head * 2 >= this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }

  /** Only called with an empty `items`. */
  private becameIdle(): void {
    if (this.timer !== null) {
      this.clearTimer(this.timer);
      this.timer = null;
    }
    this.queue = [];
    this.head = 0;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}
