/**
 * The alert for a pool that takes no new session although some of its servers are up: every server up is drained,
 * in maintenance or of weight 0, so every new client of the pool is refused (CONNACK server unavailable) just as
 * when no server is up. HealthChecker logs that other case (`pool has no server up`) when the last server goes
 * down; this one covers what the admin state and weights do, which no probe sees (drain b1, then b2 dies: b1 is still
 * up). Once per outage per pool, as HAProxy alerts once when a backend has no server left.
 */
import type { Logger } from 'pino';
import type { Server } from './server.js';

/** What it reads of a pool. */
export interface IntakePool {
  readonly name: string;
  readonly servers: readonly Server[];
}

/**
 * Whether a pool can place a new session: `open` (some server takes one: up, ready, weight > 0, what CONNACK
 * no_server is measured against), `no_server_up`, or `held` (servers are up, but drained, in maintenance or of
 * weight 0). /readyz (App.ready) and this alert read it alike.
 */
export function poolIntake(servers: readonly Server[]): 'open' | 'no_server_up' | 'held' {
  if (servers.some((s) => s.acceptsNew)) return 'open';
  return servers.some((s) => s.health === 'up') ? 'held' : 'no_server_up';
}

export class IntakeAlert {
  /** Pools whose outage has been logged, until a server takes new sessions again. */
  private readonly closed = new Set<string>();

  constructor(private readonly log: Logger) {}

  /**
   * Called periodically and after admin changes; logs each pool that has just lost its intake. `noServerUpLogged`:
   * whether the pool's health checker has said `pool has no server up` for its current outage.
   */
  check(pools: Iterable<IntakePool>, noServerUpLogged: (pool: string) => boolean = () => false): void {
    const seen = new Set<string>();
    for (const p of pools) {
      seen.add(p.name);
      const intake = poolIntake(p.servers);
      // Open: no outage. No server up: the health checker's line, which a probe that finds the last server down
      // writes. Not when servers in maintenance (never probed) are part of it and no probe said it (the last server
      // up put in maintenance, or all of them): an audit saw such a pool refuse every client with no line at all.
      const maintOutage = intake === 'no_server_up' && p.servers.some((s) => s.admin === 'maint') && !noServerUpLogged(p.name);
      if (intake === 'open' || (intake === 'no_server_up' && !maintOutage)) {
        // Its outage is over (open), or became the health checker's to say (its last server up went down).
        if (this.closed.delete(p.name) && intake === 'open') this.log.info({ pool: p.name }, 'pool takes new sessions again: its clients are served');
        continue;
      }
      if (this.closed.has(p.name)) continue;
      this.closed.add(p.name);
      const up = p.servers.filter((s) => s.health === 'up');
      const names = (list: readonly Server[], pick: (s: Server) => boolean) => list.filter(pick).map((s) => s.name);
      this.log.error(
        {
          pool: p.name,
          drained: names(up, (s) => s.admin === 'drain'),
          // Not probed in maintenance, so never `up`: listed from all the servers.
          maint: names(p.servers, (s) => s.admin === 'maint'),
          weight0: names(up, (s) => s.admin === 'ready' && s.config.weight === 0),
        },
        'pool takes no new sessions: its clients are refused (CONNACK server unavailable)',
      );
    }
    // A pool a reload removed (or no listener serves any more) starts afresh if it comes back.
    for (const name of this.closed) if (!seen.has(name)) this.closed.delete(name);
  }
}
