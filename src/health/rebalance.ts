/**
 * `onServerUp: rebalance`: when a server returns, the sessions that belong to it by hash and sit on other
 * servers are the ones to move back. Sessions without a hash home (round-robin, least-connections, random,
 * or placed by the fallback: empty routing key) move only off a backup, once a non-backup server takes
 * sessions again (HAProxy's `on-marked-up shutdown-backup-sessions`): the strategy places them anew.
 * Pure selection over the pool's current sessions.
 *
 * A key a server still awaiting its first verdict would own stays where it is until that verdict (Pool.pendingWouldTake).
 *
 * A returning server with a `maxConnections` gets back no more sessions than it has room for, and none once it is
 * full: a session moved to a full server would be refused there (`server_full`) instead of running where it was.
 */
import type { Server } from '../balancer/server.js';
import type { EvictionItem } from './eviction.js';
import type { ReactingPool } from './pool-view.js';

export function sessionsToRebalance(pool: ReactingPool, returning: Server): EvictionItem[] {
  const items: EvictionItem[] = [];
  if (!returning.acceptsNew) return items;
  const room = returning.room;
  const perServer: EvictionItem[][] = [];
  for (const other of pool.servers) {
    if (other === returning) continue;
    const offBackup = other.config.backup && !returning.config.backup;
    const list: EvictionItem[] = [];
    for (const session of other.sessions) {
      if (list.length >= room) break;
      if (session.routingKey.length === 0) {
        if (offBackup) list.push({ session, server: other, reason: 'rebalance', target: returning });
        continue;
      }
      if (ownedBy(pool, session.routingKey, returning)) list.push({ session, server: other, reason: 'rebalance', target: returning });
    }
    if (list.length > 0) perServer.push(list);
  }
  // Taken in turn from each server, so that a cap (the returning server's room) relieves every server a little, not the
  // first in the list alone (a balancing audit: all 50 moves of a capped rebalance came from one broker).
  for (let i = 0; items.length < room; i++) {
    let taken = false;
    for (const list of perServer) {
      if (i >= list.length) continue;
      items.push(list[i]!);
      taken = true;
      if (items.length >= room) break;
    }
    if (!taken) break;
  }
  return items;
}

/** Still worth moving at its turn: the target still takes sessions and still owns the key (or, homeless, the session is still on a backup). */
export function rebalanceStillDue(pool: ReactingPool, item: EvictionItem): boolean {
  const target = item.target;
  if (!target || target === item.server || !target.acceptsNew || target.full) return false;
  if (item.session.routingKey.length === 0) return item.server?.config.backup === true;
  return ownedBy(pool, item.session.routingKey, target);
}

/** `key` belongs to `server` now, and no server awaiting its first verdict would take it (Pool.pendingWouldTake). */
function ownedBy(pool: ReactingPool, key: Buffer, server: Server): boolean {
  return pool.owner(key) === server && !pool.pendingWouldTake(key, server);
}
