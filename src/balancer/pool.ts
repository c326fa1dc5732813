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
import { Server, serverPlace, type HealthState } from './server.js';
import { ServerTable, TIER_NONE } from './server-table.js';
import { createPlacementStrategy } from './strategies/create.js';
import { rendezvousWinner, selectByRendezvous } from './strategies/rendezvous-hash.js';
import type { PlacementStrategy, RandomSource } from './strategies/strategy.js';

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
}

const EMPTY_KEY: Buffer = Buffer.alloc(0);

export class Pool {
  readonly name: string;
  config: PoolConfig;
  /** In config order. Replace only through `reconfigure` (the strategies index a snapshot of it). */
  servers: Server[];
  private table: ServerTable;
  private ranking: Ranking;
  private readonly random: RandomSource;
  private readonly keepDetached: boolean;
  /** The `balance` strategy when it is keyless, else the hash strategy's `fallback`. */
  private placement: PlacementStrategy;
  private readonly keyHash = new Uint32Array(2);
  /**
   * Servers a reload removed while they still had sessions, by name. Their sessions keep running (a reload never
   * drops one); a reload that adds the name again takes the object back, so drain, maint and onServerDown reach
   * those sessions again. Dropped once their last session has ended.
   */
  private readonly detached = new Map<string, Server>();

  constructor(config: PoolConfig, servers?: Server[], options: PoolOptions = {}) {
    this.name = config.name;
    this.config = config;
    this.servers = servers ?? config.servers.map((sc) => new Server(config.name, sc, initialHealth(config)));
    this.random = options.random ?? Math.random;
    this.keepDetached = options.keepDetached ?? true;
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
        return keys.username !== null && keys.username.length > 0 ? keys.username : EMPTY_KEY;
      default:
        return EMPTY_KEY;
    }
  }

  /** Up to `retries + 1` distinct servers to try, in order; [] = no server can take a session now. */
  candidates(keys: RoutingKeys): Server[] {
    const table = this.currentTable();
    const tier = table.tier();
    if (tier === TIER_NONE) return [];
    this.ranking.begin(this.config.retries + 1);
    const key = this.routingKey(keys);
    if (key.length > 0) {
      xxh64Into(key, this.keyHash);
      selectByRendezvous(table, tier, this.keyHash[0]!, this.keyHash[1]!, this.ranking);
    } else {
      this.placement.select(table, tier, this.ranking);
    }
    return this.ranking.take();
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

  /**
   * Reload: keeps Server objects by name (health, admin state and live sessions survive), creates new
   * ones ('unknown', or 'up' with health.type none), updates configs. Returns the removed servers;
   * their live sessions are not closed here, and a later reload that adds the name again takes them back.
   */
  reconfigure(config: PoolConfig): Server[] {
    if (config.name !== this.name) throw new Error(`pool "${this.name}" cannot be reconfigured as "${config.name}"`);
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
      // With health checks turned off nothing else will ever mark a kept server up.
      if (config.health.type === 'none') kept.setHealth('up');
      else if (moved) kept.setHealth('unknown');
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
