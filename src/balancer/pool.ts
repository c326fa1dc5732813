/**
 * A pool: its servers (runtime objects that survive reloads) and the strategy that orders them for
 * each new session. `candidates` is called once per routed CONNECT: it reads the servers' state,
 * hashes the key once, and allocates only the list it returns.
 * Eligibility (design.md §4): a server takes new sessions when `acceptsNew` (up, admin ready,
 * weight > 0); backup servers only while no non-backup server does.
 */
import type { PoolConfig } from '../config/types.js';
import { xxh64Into } from './hash/xxh64.js';
import { Ranking } from './ranking.js';
import { notePlacementChange, Server, serverPlace, type HealthState } from './server.js';
import { ServerTable, TIER_NONE, type Tier } from './server-table.js';
import { createPlacementStrategy } from './strategies/create.js';
import { rendezvousScore } from './hash/rendezvous.js';
import { rendezvousWinner, selectByRendezvous } from './strategies/rendezvous-hash.js';
import type { PlacementStrategy, RandomSource } from './strategies/strategy.js';
import { backoffCutoff, countBackedOff } from './dial-backoff.js';
import { ClientIdRegistry, takeoverKey, type ClientIdSharing, type ClientIdHolder } from './client-id-registry.js';

export interface RoutingKeys {
  clientId: Buffer;
  username: Buffer | null;
}

export interface PoolOptions {
  /** Uniform [0, 1) source for the `random` strategy; Math.random by default. */
  random?: RandomSource;
  /**
   * Keep removed servers that still have sessions, to take them back if a reload adds them again (default true).
   * Off in the cluster primary: its sessions live in the workers, whose counts reach only the servers in a pool.
   */
  keepDetached?: boolean;
  /** The clock of Server.unknownSince and of the dial back-off (performance.now()); tests inject one. */
  now?: () => number;
  /**
   * A server the picks leave out for its dial back-off (dial-backoff.ts), at most every 250 ms: the caller
   * probes it now, as the failed dials that the back-off spares would have, so that `fall` counts as fast.
   */
  onDeferred?: (server: Server) => void;
  /** A cluster worker's link to the other workers' client IDs (the takeover rule across workers); none otherwise. */
  clientIdSharing?: ClientIdSharing;
}

const EMPTY_KEY: Buffer = Buffer.alloc(0);

/**
 * What `candidates` returns when the server(s) the client may go to are at their `maxConnections` (refused with
 * `server_full`, where an empty list is `no_server`). Compare by identity.
 */
export const FULL_CANDIDATES: Server[] = Object.freeze([]) as unknown as Server[];

/** How long a routing key that `onServerUp: rebalance` moved may pass over its full server (its reconnect). */
export const REBALANCED_MEMORY_MS = 60_000;
/** At most this many such keys are remembered (the oldest go first). */
const REBALANCED_MAX = 100_000;

/**
 * How long past its health.timeout a server's first verdict may take to arrive: the probe's own timeout plus
 * scheduling (and, in a cluster worker, the primary's message). Bounds every wait for a first verdict.
 */
export const FIRST_VERDICT_MARGIN_MS = 500;

export class Pool {
  readonly name: string;
  config: PoolConfig;
  /** In config order. Replace only through `reconfigure` (the strategies index a snapshot of it). */
  servers: Server[];
  private table: ServerTable;
  private ranking: Ranking;
  private readonly random: RandomSource;
  private readonly keepDetached: boolean;
  private readonly now: () => number;
  private readonly onDeferred: ((server: Server) => void) | null;
  /** The `balance` strategy when it is keyless, else the hash strategy's `fallback`. */
  private placement: PlacementStrategy;
  private readonly keyHash = new Uint32Array(2);
  /**
   * Servers a reload removed while they still had sessions, by name. Their sessions keep running (a reload never
   * drops one); a reload that adds the name again takes the object back, so drain, maint and onServerDown reach
   * those sessions again. Dropped once their last session has ended.
   */
  private readonly detached = new Map<string, Server>();
  /** The client IDs of this pool's proxied sessions (client-id-registry.ts: the takeover rule across brokers). */
  readonly clientIds: ClientIdRegistry<ClientIdHolder>;
  /**
   * Routing keys (latin1) whose sessions `onServerUp: rebalance` closed to move them back to their server, and when
   * (now()); insertion order is time order. Only while some server has a maxConnections.
   */
  private readonly rebalanced = new Map<string, number>();

  constructor(config: PoolConfig, servers?: Server[], options: PoolOptions = {}) {
    this.name = config.name;
    this.config = config;
    this.clientIds = new ClientIdRegistry<ClientIdHolder>(config.name, options.clientIdSharing ?? null);
    this.servers = servers ?? config.servers.map((sc) => new Server(config.name, sc, initialHealth(config)));
    this.random = options.random ?? Math.random;
    this.keepDetached = options.keepDetached ?? true;
    this.now = options.now ?? (() => performance.now());
    this.onDeferred = options.onDeferred ?? null;
    this.table = new ServerTable(this.servers);
    this.ranking = new Ranking(this.table.size);
    this.placement = createPlacementStrategy(placementName(config), this.table, this.random);
  }

  /** True for client-id-hash and username-hash. */
  get hashed(): boolean {
    return this.config.balance === 'client-id-hash' || this.config.balance === 'username-hash';
  }

  /** The key this pool's strategy hashes: client ID or username bytes; empty = placed by the fallback. */
  routingKey(keys: RoutingKeys): Buffer {
    switch (this.config.balance) {
      case 'client-id-hash':
        // A zero-length client ID is legal [MQTT-3.1.3-6] but names no session: use the fallback.
        return keys.clientId.length > 0 ? keys.clientId : EMPTY_KEY;
      case 'username-hash':
        if (keys.username !== null && keys.username.length > 0) return keys.username;
        // No username: the client ID, not the fallback. Placed by load, one client ID reached another broker at each
        // connection, where the broker's takeover [MQTT-3.1.4-3] and its persistent session could not follow it (audit).
        return keys.clientId.length > 0 ? keys.clientId : EMPTY_KEY;
      default:
        return EMPTY_KEY;
    }
  }

  /**
   * Up to `retries + 1` distinct servers to try, in order; [] = no server can take a session now. Servers in
   * their dial back-off are left out while another of the tier can take it (dial-backoff.ts).
   *
   * Servers at their `maxConnections` (HAProxy's server `maxconn`): a keyless pick leaves them out, as HAProxy's
   * round robin and leastconn do. A hashed key stays with its server: when that server is full the client is refused
   * (FULL_CANDIDATES) rather than sent to another broker, where its persistent session is not (HAProxy would queue it
   * on that server; an MQTT session holds its slot for hours, so the queue would mostly time out). The exception is a
   * client whose own earlier session is on that server: the broker's takeover [MQTT-3.1.4-3] frees the slot it takes,
   * and a client reconnecting before its old connection is known dead must not be locked out of a full server.
   */
  candidates(keys: RoutingKeys): Server[] {
    const table = this.currentTable();
    const tier = table.tier();
    if (tier === TIER_NONE) return [];
    const key = this.routingKey(keys);
    if (key.length === 0) {
      const picked = this.pick(table, tier, key, true);
      return picked.length === 0 && table.fullInTier(tier) ? FULL_CANDIDATES : picked;
    }
    xxh64Into(key, this.keyHash);
    const picked = this.pick(table, tier, key, false);
    if (picked.length === 0) return picked;
    const first = picked[0]!;
    if (!first.full) return withoutFull(picked, 1); // a retry never goes to a full server
    // The first is the key's own server, unless that one is in its dial back-off and this one stands in for it.
    const own = first === table.servers[rendezvousWinner(table, tier, this.keyHash[0]!, this.keyHash[1]!)];
    if (own && this.holdsSessionOn(keys, first)) return withoutFull(picked, 1);
    // Closed by `onServerUp: rebalance` to come back here, but others took the room it counted on meanwhile: its
    // session ran on another server until just now, so it goes on down its order rather than being locked out.
    if (own && !this.wasRebalanced(key)) return FULL_CANDIDATES;
    const withRoom = this.pick(table, tier, key, true);
    return withRoom.length === 0 ? FULL_CANDIDATES : withRoom;
  }

  /**
   * One pick for `key` (the key hash in keyHash when it is not empty): up to retries + 1 servers, best first, without
   * those left out for their dial back-off and, with `skipFull`, those at their maxConnections. A full server is
   * never one that "can take the session" for the back-off: it does not push a backed-off server out of the pick.
   */
  private pick(table: ServerTable, tier: Tier, key: Buffer, skipFull: boolean): Server[] {
    try {
      table.skipFull = true;
      table.backoffNow = countBackedOff(this.servers) === 0 ? 0 : backoffCutoff(table, tier, this.now(), this.onDeferred);
      table.skipFull = skipFull;
      this.ranking.begin(this.config.retries + 1);
      if (key.length > 0) selectByRendezvous(table, tier, this.keyHash[0]!, this.keyHash[1]!, this.ranking);
      else this.placement.select(table, tier, this.ranking);
    } finally {
      table.backoffNow = 0; // this pick only: owner() and the rebalance see every server
      table.skipFull = false;
    }
    return this.ranking.take();
  }

  /** `onServerUp: rebalance` has closed a session of this routing key to move it back to its server. */
  noteRebalanced(routingKey: Buffer): void {
    if (routingKey.length === 0 || !this.servers.some((s) => s.config.maxConnections > 0)) return;
    const now = this.now();
    for (const [k, at] of this.rebalanced) {
      if (now - at < REBALANCED_MEMORY_MS && this.rebalanced.size < REBALANCED_MAX) break;
      this.rebalanced.delete(k);
    }
    const key = routingKey.toString('latin1');
    this.rebalanced.delete(key); // to the end: insertion order stays time order
    this.rebalanced.set(key, now);
  }

  private wasRebalanced(routingKey: Buffer): boolean {
    if (this.rebalanced.size === 0) return false;
    const at = this.rebalanced.get(routingKey.toString('latin1'));
    return at !== undefined && this.now() - at < REBALANCED_MEMORY_MS;
  }

  /** Does the client (as `takeover` keys it) have a live session on `server` in this process (its new session would take it over)? */
  private holdsSessionOn(keys: RoutingKeys, server: Server): boolean {
    const key = takeoverKey(this.config.takeover, keys.clientId, keys.username);
    return key !== null && this.clientIds.holderOf(key)?.server === server;
  }

  /**
   * Until when (performance.now() time) a new session should wait for a server's first health verdict instead of
   * being placed now; 0 = place it now. A server whose state became 'unknown' less than health.timeout +
   * FIRST_VERDICT_MARGIN_MS ago (new, moved by a reload, back from maint; in a cluster worker, until the primary's
   * verdict arrives) is being judged at this moment. Waiting for it matters when `candidates` (this pool's pick
   * for the key, just made) is empty, which would refuse a client whose broker is fine, or when the key belongs to
   * that server, which would place a client's persistent session on another broker. HAProxy avoids the first by
   * assuming new servers up; a verdict costs a probe's round trip against a live broker. Bounded: a server still
   * unknown after its window (a probe that could not run here) no longer holds anyone.
   */
  verdictWaitUntil(key: Buffer, candidates: readonly Server[]): number {
    let until = 0;
    let now = -1;
    for (const s of this.servers) {
      if (s.state !== 'unknown' || s.config.weight === 0) continue;
      if (now < 0) now = this.now();
      const end = this.firstVerdictDue(s);
      if (end <= now || end <= until) continue;
      if (candidates.length === 0 || this.wouldOwn(s, key, candidates[0]!)) until = end;
    }
    return until;
  }

  /**
   * Would a server still in its first verdict's window (as verdictWaitUntil reads it) take `key` from `current`
   * once up? `onServerUp: rebalance` then leaves the key's session where it is: a reload that turns health checks on
   * (from `none`) makes every server unknown at once, and the first to answer would otherwise own every key for the
   * milliseconds until the others answer (an admin audit: 24 of 235 sessions closed for nothing, the target a backup).
   * The pending server's own verdict reacts in turn (up: it takes back its keys; down: its sessions are handled as
   * `onServerDown` says).
   */
  pendingWouldTake(key: Buffer, current: Server): boolean {
    let now = -1;
    for (const s of this.servers) {
      if (s === current || s.state !== 'unknown' || s.config.weight === 0) continue;
      if (now < 0) now = this.now();
      if (this.firstVerdictDue(s) <= now) continue;
      if (this.wouldOwn(s, key, current)) return true;
    }
    return false;
  }

  /** Milliseconds until the last open first-verdict window of its servers (pendingWouldTake's) ends; 0 when none is open. */
  pendingVerdictMs(): number {
    let now = -1;
    let longest = 0;
    for (const s of this.servers) {
      if (s.state !== 'unknown' || s.config.weight === 0) continue;
      if (now < 0) now = this.now();
      longest = Math.max(longest, this.firstVerdictDue(s) - now);
    }
    return longest;
  }

  /** When a server that became unknown is due its first verdict: within a probe's timeout, and a margin. */
  private firstVerdictDue(s: Server): number {
    return s.unknownSince + this.config.health.timeout + FIRST_VERDICT_MARGIN_MS;
  }

  /** Would `pending`, once up, take `key` from `current` (the winner now)? Only with a hash strategy and a key. */
  private wouldOwn(pending: Server, key: Buffer, current: Server): boolean {
    if (!this.hashed || key.length === 0) return false;
    // Backup servers take sessions only while no non-backup server does (design.md §4).
    if (pending.config.backup !== current.config.backup) return !pending.config.backup;
    const table = this.currentTable();
    const p = table.servers.indexOf(pending);
    const c = table.servers.indexOf(current);
    if (p < 0 || c < 0) return false;
    xxh64Into(key, this.keyHash);
    const hi = this.keyHash[0]!;
    const lo = this.keyHash[1]!;
    const ps = rendezvousScore(hi, lo, table.nameHashHi[p]!, table.nameHashLo[p]!, pending.config.weight);
    const cs = rendezvousScore(hi, lo, table.nameHashHi[c]!, table.nameHashLo[c]!, current.config.weight);
    return ps > cs || (ps === cs && table.nameRank[p]! < table.nameRank[c]!);
  }

  /**
   * With a hash strategy: the server `routingKey` belongs to now among the eligible servers (for
   * onServerUp: rebalance). null for keyless strategies, an empty key, or no eligible server.
   */
  owner(routingKey: Buffer): Server | null {
    // Sessions placed by the fallback (empty key) or by a keyless strategy belong to no server.
    if (!this.hashed || routingKey.length === 0) return null;
    const table = this.currentTable();
    const tier = table.tier();
    if (tier === TIER_NONE) return null;
    xxh64Into(routingKey, this.keyHash);
    const i = rendezvousWinner(table, tier, this.keyHash[0]!, this.keyHash[1]!);
    return i < 0 ? null : table.servers[i]!;
  }

  /** The server of this name (its stable identity), if the pool has one. */
  server(name: string): Server | undefined {
    return this.servers.find((s) => s.name === name);
  }

  /**
   * Reload: keeps Server objects by name (health, admin state and live sessions survive), creates new
   * ones ('unknown', or 'up' with health.type none), updates configs. Returns the removed servers;
   * their live sessions are not closed here, and a later reload that adds the name again takes them back.
   */
  reconfigure(config: PoolConfig): Server[] {
    if (config.name !== this.name) throw new Error(`pool "${this.name}" cannot be reconfigured as "${config.name}"`);
    notePlacementChange();
    const byName = new Map<string, Server>();
    for (const s of this.servers) byName.set(s.name, s);
    for (const [name, s] of this.detached) if (s.sessionCount === 0) this.detached.delete(name);
    const next: Server[] = [];
    for (const sc of config.servers) {
      const kept = byName.get(sc.name);
      if (kept === undefined) {
        const back = this.detached.get(sc.name);
        this.detached.delete(sc.name);
        if (back !== undefined) back.reattach(sc, initialHealth(config));
        next.push(back ?? new Server(config.name, sc, initialHealth(config)));
        continue;
      }
      byName.delete(sc.name);
      // Moved: the verdict was about the old place. Every process (the workers too, before the primary's probe of
      // the new place reaches them) stops sending new sessions there.
      const moved = serverPlace(kept.config, config.health.type) !== serverPlace(sc, config.health.type);
      kept.config = sc;
      // With health checks turned off nothing else will ever mark a kept server up. Turned on again, the `up` that
      // `none` made up is no verdict: the first probe decides, as for a new server (an audit saw a dead server kept
      // up for fall x interval after the reload).
      if (config.health.type === 'none') kept.setHealth('up');
      else if (moved || this.config.health.type === 'none') kept.restartVerdict();
      next.push(kept);
    }
    const removed = [...byName.values()];
    if (this.keepDetached) for (const s of removed) if (s.sessionCount > 0) this.detached.set(s.name, s);
    const placementChanged = placementName(config) !== placementName(this.config);
    this.config = config;
    this.servers = next;
    this.rebuild();
    if (placementChanged) this.placement = createPlacementStrategy(placementName(config), this.table, this.random);
    return removed;
  }

  /** How many sessions run on its servers, those a reload removed included. */
  sessionCount(): number {
    let n = 0;
    for (const s of this.servers) n += s.sessionCount;
    for (const s of this.detached.values()) n += s.sessionCount;
    return n;
  }

  /** Live sessions on any of its servers, those a reload removed included. */
  hasSessions(): boolean {
    for (const s of this.servers) if (s.sessionCount > 0) return true;
    for (const s of this.detached.values()) if (s.sessionCount > 0) return true;
    return false;
  }

  /** A pool a reload adds again after an earlier one removed it: every server starts as a new one would. */
  restart(): void {
    for (const s of this.servers) s.reattach(s.config, initialHealth(this.config));
  }

  /** The table for this pick; rebuilt if `servers` was replaced or resized behind our back. */
  private currentTable(): ServerTable {
    if (this.table.servers.length !== this.servers.length || !sameServers(this.table.servers, this.servers)) this.rebuild();
    return this.table;
  }

  private rebuild(): void {
    this.table = new ServerTable(this.servers);
    this.ranking = new Ranking(this.table.size);
    this.placement.reset(this.table);
  }
}

/** `picked` without the full servers from index `from` on; the same array when there are none (the common case). */
function withoutFull(picked: Server[], from: number): Server[] {
  for (let i = from; i < picked.length; i++) if (picked[i]!.full) return picked.filter((s, j) => j < from || !s.full);
  return picked;
}

function initialHealth(config: PoolConfig): HealthState {
  return config.health.type === 'none' ? 'up' : 'unknown';
}

function placementName(config: PoolConfig): PoolConfig['fallback'] {
  return config.balance === 'client-id-hash' || config.balance === 'username-hash' ? config.fallback : config.balance;
}

function sameServers(a: readonly Server[], b: readonly Server[]): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
