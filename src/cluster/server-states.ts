/**
 * The server states the cluster primary decides and every worker applies (so that every worker routes a client
 * ID alike): written from the primary's pools, applied to a worker's. Each carries the place it was judged at:
 * a worker whose config has the server elsewhere (a reload moved it, and the snapshot is from before the move,
 * or from after it while this worker's own reload step is still queued) keeps the health it has ('unknown' after
 * the move: its clients wait for the verdict at the new place) rather than take one about another address.
 */
import type { Pool } from '../balancer/pool.js';
import { serverPlace } from '../balancer/server.js';
import type { ServerStateWire } from './messages.js';

export function serverStates(pools: Iterable<Pool>): ServerStateWire[] {
  const out: ServerStateWire[] = [];
  for (const p of pools) {
    for (const s of p.servers) {
      out.push({ pool: p.name, server: s.name, place: serverPlace(s.config, p.config.health.type), health: s.health, admin: s.admin, lastCheck: s.lastCheck });
    }
  }
  return out;
}

export function applyServerStates(pools: ReadonlyMap<string, Pool>, states: readonly ServerStateWire[]): void {
  for (const st of states) {
    const pool = pools.get(st.pool);
    const server = pool?.server(st.server);
    if (pool === undefined || server === undefined) continue;
    // Admin states are about the name, whatever its address.
    server.setAdmin(st.admin);
    if (serverPlace(server.config, pool.config.health.type) !== st.place) continue;
    server.lastCheck = st.lastCheck;
    server.setHealth(st.health);
  }
}
