/**
 * A server's runtime view: health (set by src/health), admin state (set by the admin API),
 * and its live sessions (added/removed by src/proxy). Pure data plus a change event;
 * decisions about it live in the strategies and the health checker.
 */
import { EventEmitter } from 'node:events';
import { withoutCredentials } from '../config/net-syntax.js';
import type { ServerConfig } from '../config/types.js';
import { clearAnyBackOff } from './dial-backoff.js';

export type HealthState = 'unknown' | 'up' | 'down';
export type AdminState = 'ready' | 'drain' | 'maint';
/** As exported in metrics and /api/status (contract §6). */
export type ServerState = 'unknown' | 'up' | 'down' | 'drain' | 'maint';
export const SERVER_STATES: readonly ServerState[] = ['unknown', 'up', 'down', 'drain', 'maint'];

export type CheckResult = 'ok' | 'timeout' | 'refused' | 'bad_connack' | 'http_status' | 'error';

export interface LastCheck {
  result: CheckResult;
  at: number; // Date.now() of completion
  durationMs: number;
}

/** Why the LB itself closed a live session (access log and eviction accounting). */
export type EvictReason = 'server_down' | 'rebalance' | 'drain' | 'shutdown' | 'idle' | 'failover' | 'takeover';

/** What the balancer and the health checker need from a proxied session. */
export interface LiveSession {
  /** Client-to-server bytes so far (CONNECT included). */
  readonly bytesIn: number;
  /** Server-to-client bytes so far. */
  readonly bytesOut: number;
  /** The raw hash key the session was routed with (client ID or username bytes); empty = routed by fallback. */
  readonly routingKey: Buffer;
  /** Close both sides now. Idempotent. */
  evict(reason: EvictReason): void;
  /** The server address it was dialled to (a reload may move the server since); absent: the current one. */
  readonly serverAddress?: string;
}

export interface ServerStateChange {
  server: Server;
  from: ServerState;
  to: ServerState;
}

/**
 * Where a server's sessions and probes go: its address, and its healthUrl when the probes use it (type http).
 * A reload that changes it has moved the server: its health verdict was about the old place. The healthUrl's
 * credentials are not part of the place: rotating an API key moves nothing (a health audit: the verdict was dropped,
 * and `fall` skipped, for a new key).
 */
export function serverPlace(config: ServerConfig, healthType: string): string {
  return healthType !== 'http' || config.healthUrl === null ? config.address : `${config.address} ${withoutCredentials(config.healthUrl)}`;
}

/**
 * Changes that can move where a new session goes: a server's state (health or admin) and a reload of a pool. A
 * session reads the count when it dials and again when its dial connects (session.ts placementGone): unchanged, the
 * rule, nothing about its server can have moved, at the cost of one number read; changed, it looks.
 */
let placementChanges = 0;

/** How many placement changes this process has seen (its value means nothing; a difference does). */
export function placementChangeCount(): number {
  return placementChanges;
}

/** A change that can move where a new session goes, other than a server's state (which counts itself): a reload. */
export function notePlacementChange(): void {
  placementChanges++;
}

export class Server extends EventEmitter {
  readonly pool: string;
  config: ServerConfig;
  private healthState: HealthState;
  private adminState: AdminState = 'ready';
  readonly sessions = new Set<LiveSession>();
  /**
   * Sessions of this process dialling this server now (not in `sessions` until connected): load too, as HAProxy
   * counts a connection from its assignment, or a burst would all go to the server that looked emptiest.
   */
  dialsInFlight = 0;
  /** Until when (monotonic ms) the picks of this process leave it out after a failed dial; 0 = not (dial-backoff.ts). */
  dialBackoffUntil = 0;
  /**
   * When (monotonic ms) it last came back to taking sessions as a non-backup (up, ready, or so by a reload: the
   * returns `onServerUp: rebalance` acts on; PoolReactions.serverReturned). A dial in flight meanwhile is placed again
   * for it (session.ts placementGone).
   */
  returnedAt = Number.NEGATIVE_INFINITY;
  /** The back-off is for a CONNACK that never came (session.ts connackOverdue): a TCP connect does not end it (dial-backoff.ts). */
  dialBackoffNeedsAnswer = false;
  /** When it was last reported for a probe while left out (dial-backoff.ts backoffCutoff). */
  deferredReportAt = Number.NEGATIVE_INFINITY;
  /** When a session of this process last reported it silent (session.ts reportSilentServer). */
  silentReportAt = Number.NEGATIVE_INFINITY;
  /** Totals of sessions already closed; live sessions are added at read time. */
  closedBytesIn = 0;
  closedBytesOut = 0;
  lastCheck: LastCheck | null = null;
  /**
   * When its state last became 'unknown' (performance.now(): created, moved by a reload, back from maint), or
   * -Infinity. A first verdict is then due within a probe's timeout: routing may wait for it (Pool.verdictWaitUntil).
   */
  unknownSince = Number.NEGATIVE_INFINITY;
  /**
   * Sessions held by worker processes (workers > 1): the primary routes nothing itself and learns these
   * from the workers' periodic snapshots. Always zero in a single process or in a worker.
   */
  readonly remote = { sessions: 0, bytesIn: 0, bytesOut: 0, connectErrors: 0 };
  /** Dials of this process to it that failed (refused, reset, timed out, unresolved): HAProxy's `econ`. */
  connectErrors = 0;

  constructor(pool: string, config: ServerConfig, initialHealth: HealthState = 'unknown') {
    super();
    this.pool = pool;
    this.config = config;
    this.healthState = initialHealth;
    if (initialHealth === 'unknown') this.unknownSince = performance.now();
  }

  get name(): string {
    return this.config.name;
  }
  get health(): HealthState {
    return this.healthState;
  }
  get admin(): AdminState {
    return this.adminState;
  }

  /** The single exported state: admin states mask health. */
  get state(): ServerState {
    if (this.adminState !== 'ready') return this.adminState;
    return this.healthState;
  }

  /** May receive new sessions. */
  get acceptsNew(): boolean {
    return this.healthState === 'up' && this.adminState === 'ready' && this.config.weight > 0;
  }

  setHealth(next: HealthState): void {
    if (next === this.healthState) return;
    const from = this.state;
    this.healthState = next;
    // A verdict of up (a broker back after a restart) outweighs the guess from dials that failed before it went
    // down: its returning clients (onServerUp: rebalance) must not be sent elsewhere for what is left of it.
    if (next === 'up') clearAnyBackOff(this);
    this.emitChange(from);
  }

  /**
   * Its verdict no longer holds (a reload moved it: another address): 'unknown', and a new window for the first
   * verdict at the new place even if it was already unknown (moved again before its first probe there answered).
   */
  restartVerdict(): void {
    this.setHealth('unknown');
    this.unknownSince = performance.now();
  }

  setAdmin(next: AdminState): void {
    if (next === this.adminState) return;
    const from = this.state;
    this.adminState = next;
    if (next === 'ready') clearAnyBackOff(this); // as a verdict of up: it takes its clients again at once
    this.emitChange(from);
  }

  private emitChange(from: ServerState): void {
    const to = this.state;
    if (to === 'unknown' && from !== to) this.unknownSince = performance.now();
    if (from === to) return;
    placementChanges++;
    this.emit('state', { server: this, from, to } satisfies ServerStateChange);
  }

  /**
   * A reload adds this server again after an earlier one removed it (Pool.detached): configured anew, with the
   * health a new server starts with and admin `ready`; its sessions are still its own. Not a state change:
   * the server was not in the pool.
   */
  reattach(config: ServerConfig, initialHealth: HealthState): void {
    this.config = config;
    this.healthState = initialHealth;
    this.adminState = 'ready';
    this.lastCheck = null;
    if (initialHealth === 'unknown') this.unknownSince = performance.now();
  }

  /**
   * What is left of its `maxConnections` after this process's sessions and dials in flight (with workers, each worker
   * has its share of the cap); Infinity with no cap (0). At or below 0 when the cap is reached (a reload may lower it).
   */
  get room(): number {
    const cap = this.config.maxConnections;
    return cap > 0 ? cap - this.sessions.size - this.dialsInFlight : Infinity;
  }

  /** At its `maxConnections` (room). Never with no cap. */
  get full(): boolean {
    return this.room <= 0;
  }

  /** Live sessions, local and (in the primary) in workers. */
  get sessionCount(): number {
    return this.sessions.size + this.remote.sessions;
  }

  bytesIn(): number {
    let n = this.closedBytesIn + this.remote.bytesIn;
    for (const s of this.sessions) n += s.bytesIn;
    return n;
  }

  /** Failed dials, local and (in the primary) in workers. */
  get connectErrorCount(): number {
    return this.connectErrors + this.remote.connectErrors;
  }

  bytesOut(): number {
    let n = this.closedBytesOut + this.remote.bytesOut;
    for (const s of this.sessions) n += s.bytesOut;
    return n;
  }

  /** Called by the proxy when a session ends. */
  sessionClosed(s: LiveSession): void {
    if (this.sessions.delete(s)) {
      this.closedBytesIn += s.bytesIn;
      this.closedBytesOut += s.bytesOut;
    }
  }
}
