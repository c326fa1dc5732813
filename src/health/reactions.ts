/**
 * PoolReactions: what a pool does to live sessions when a server changes state (design §4):
 *   to down,  onServerDown: shutdown  -> evict that server's sessions (reason server_down)
 *   to up,    onServerUp: rebalance   -> evict sessions on other servers whose key it now owns (rebalance)
 *   to drain or maint (admin)         -> evict that server's sessions (reason drain)
 *   a reload that makes a server take sessions as a non-backup (weight 0 -> more, backup -> not, or added
 *   already up with health.type none) -> as to up: a return without a state change
 * all through one paced Evictor per pool (evictRate). The pool config is read at each event and each
 * eviction step, so a reload applies at once.
 */
import type { Logger } from 'pino';
import type { EvictReason, Server, ServerStateChange } from '../balancer/server.js';
import { defaultClearTimer, defaultSetTimer, Evictor, type EvictionItem, type EvictorOptions } from './eviction.js';
import type { ReactingPool } from './pool-view.js';
import { rebalanceStillDue, sessionsToRebalance } from './rebalance.js';
import { monotonicNow } from '../monotonic-clock.js';

export interface PoolReactionsDeps {
  log: Logger;
  onEvicted?: (item: EvictionItem) => void;
  /** Any of the pool's servers changed state (sessions waiting for a first verdict look again). */
  onStateChange?: (change: ServerStateChange) => void;
  /** Clock and timers for the evictor (tests). */
  now?: EvictorOptions['now'];
  setTimer?: EvictorOptions['setTimer'];
  clearTimer?: EvictorOptions['clearTimer'];
}

export class PoolReactions {
  private pool: ReactingPool;
  private readonly evictor: Evictor;
  private readonly subscribed = new Set<Server>();
  /** Per server, whether it took new sessions as a non-backup when last seen (a state change or a reload). */
  private readonly serving = new Map<Server, boolean>();
  /**
   * Servers that returned while others awaited their first verdict: their rebalance left those others' keys alone
   * (Pool.pendingWouldTake), so it runs again once no verdict is due (a re-audit: the pending server found down, its
   * keys stayed off their owner for good).
   */
  private readonly returnedWhilePending = new Set<Server>();
  private verdictTimer: unknown = null;
  private readonly setTimer: NonNullable<EvictorOptions['setTimer']>;
  private readonly clearTimer: NonNullable<EvictorOptions['clearTimer']>;
  private closed = false;

  constructor(
    pool: ReactingPool,
    private readonly deps: PoolReactionsDeps,
  ) {
    this.pool = pool;
    const opts: EvictorOptions = { isDue: (item) => this.isDue(item), onEvicted: (item) => this.evicted(item) };
    if (deps.now) opts.now = deps.now;
    if (deps.setTimer) opts.setTimer = deps.setTimer;
    if (deps.clearTimer) opts.clearTimer = deps.clearTimer;
    this.evictor = new Evictor(() => this.pool.config.evictRate, 'drain', opts);
    this.setTimer = deps.setTimer ?? defaultSetTimer;
    this.clearTimer = deps.clearTimer ?? defaultClearTimer;
    this.subscribe();
    for (const server of pool.servers) this.serving.set(server, servesAsPrimary(server));
  }

  /** After a reload: follow the pool's current servers (and config, read live). */
  reconfigure(pool: ReactingPool = this.pool): void {
    if (this.closed) return;
    this.pool = pool;
    this.subscribe();
    // A removed server's sessions continue, out of drains (the `server removed while sessions run on it` line): a
    // drain or shutdown queued before the reload stops with it (a reload audit saw it close 73 of them after).
    const current = new Set(pool.servers);
    this.evictor.cancel((item) => item.server !== undefined && !current.has(item.server));
    for (const server of this.serving.keys()) if (!current.has(server)) this.serving.delete(server);
    for (const server of pool.servers) {
      if (this.serving.get(server) !== true && servesAsPrimary(server)) this.serverReturned(server);
      this.serving.set(server, servesAsPrimary(server));
    }
  }

  /** Paced eviction of all of a server's sessions (also for shutdown). */
  evictAll(server: Server, reason: EvictReason): number {
    if (this.closed || server.sessions.size === 0) return 0;
    const items: EvictionItem[] = [];
    // The server's health says nothing about sessions at an address a reload moved it from.
    const address = reason === 'server_down' ? server.config.address : undefined;
    for (const session of server.sessions) {
      if (address === undefined || session.serverAddress === undefined || session.serverAddress === address) items.push({ session, server, reason });
    }
    const n = this.evictor.enqueue(items);
    if (n > 0) this.deps.log.info({ pool: this.pool.name, server: server.name, reason, sessions: n }, 'evicting sessions');
    return n;
  }

  /** Sessions still queued for eviction. */
  get pending(): number {
    return this.evictor.pending;
  }

  /** Resolves when no eviction is queued. */
  drained(): Promise<void> {
    return this.evictor.drained();
  }

  /** Unsubscribe and stop evicting. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const server of this.subscribed) server.off('state', this.onState);
    this.subscribed.clear();
    this.serving.clear();
    this.returnedWhilePending.clear();
    if (this.verdictTimer !== null) this.clearTimer(this.verdictTimer);
    this.verdictTimer = null;
    this.evictor.close();
  }

  private subscribe(): void {
    const current = new Set(this.pool.servers);
    for (const server of this.subscribed) {
      if (!current.has(server)) {
        server.off('state', this.onState);
        this.subscribed.delete(server);
        this.serving.delete(server);
      }
    }
    for (const server of current) {
      if (!this.subscribed.has(server)) {
        server.on('state', this.onState);
        this.subscribed.add(server);
      }
    }
  }

  private readonly onState = (change: ServerStateChange): void => {
    if (this.closed) return;
    this.deps.onStateChange?.(change);
    this.react(change);
    if (change.from === 'unknown') this.afterFirstVerdict();
  };

  private react(change: ServerStateChange): void {
    const { server, to } = change;
    this.serving.set(server, servesAsPrimary(server));
    const config = this.pool.config;
    if (to === 'drain' || to === 'maint') {
      this.evictAll(server, 'drain');
      return;
    }
    // Back to ready: its queued drain evictions are void (isDue would skip them too; this frees the queue).
    this.evictor.cancel((item) => item.server === server && item.reason === 'drain');
    if (to === 'down') {
      if (config.onServerDown === 'shutdown') this.evictAll(server, 'server_down');
      return;
    }
    if (to === 'up') {
      this.evictor.cancel((item) => item.server === server && item.reason === 'server_down');
      this.serverReturned(server);
    }
  }

  /** A first verdict came (or a window ended): once none is due, the returns it held back run again. */
  private afterFirstVerdict(): void {
    if (this.returnedWhilePending.size === 0) return;
    const due = this.pool.pendingVerdictMs();
    if (due > 0) {
      this.armVerdictTimer(due);
      return;
    }
    const returned = [...this.returnedWhilePending];
    this.returnedWhilePending.clear();
    for (const server of returned) if (this.pool.servers.includes(server) && servesAsPrimary(server)) this.serverReturned(server);
  }

  /** Also when no verdict comes at all (a probe that cannot run here): the window's end. */
  private armVerdictTimer(ms: number): void {
    if (this.verdictTimer !== null) this.clearTimer(this.verdictTimer);
    this.verdictTimer = this.setTimer(() => {
      this.verdictTimer = null;
      if (!this.closed) this.afterFirstVerdict();
    }, ms + 1);
  }

  /** onServerUp: rebalance moves to `server` what belongs to it (sessionsToRebalance). */
  private serverReturned(server: Server): void {
    server.returnedAt = monotonicNow();
    if (this.pool.config.onServerUp !== 'rebalance') return;
    const due = this.pool.pendingVerdictMs();
    if (due > 0) {
      this.returnedWhilePending.add(server);
      this.armVerdictTimer(due);
    }
    const items = sessionsToRebalance(this.pool, server);
    if (this.evictor.enqueue(items) === 0) return;
    // One line per server the sessions are closed on (`server`, as on the other eviction lines), `to` where they
    // belong: a log query by `server` finds it (one line naming `b1,b2` matched neither).
    const perServer = new Map<string, number>();
    for (const i of items) perServer.set(i.server!.name, (perServer.get(i.server!.name) ?? 0) + 1);
    for (const [from, sessions] of perServer) this.deps.log.info({ pool: this.pool.name, server: from, to: server.name, reason: 'rebalance', sessions }, 'evicting sessions');
  }

  private evicted(item: EvictionItem): void {
    if (item.reason === 'rebalance') this.pool.noteRebalanced(item.session.routingKey);
    this.deps.onEvicted?.(item);
  }

  private isDue(item: EvictionItem): boolean {
    const server = item.server;
    if (server === undefined) return true;
    if (!server.sessions.has(item.session)) return false; // already gone
    switch (item.reason) {
      case 'server_down':
        return server.health !== 'up';
      case 'drain':
        return server.admin !== 'ready';
      case 'rebalance':
        return rebalanceStillDue(this.pool, item);
      default:
        return true; // shutdown: unconditional
    }
  }
}

/** Takes new sessions and is not a backup: what a returning server is for `onServerUp`. */
function servesAsPrimary(server: Server): boolean {
  return server.acceptsNew && !server.config.backup;
}
