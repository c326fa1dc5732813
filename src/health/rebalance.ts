/**
 * `onServerUp: rebalance`: when a server returns, the sessions that belong to it by hash and sit on other
 * servers are the ones to move back. Sessions routed by fallback (empty routing key) have no home, so
 * they are never moved. Pure selection over the pool's current sessions.
 */
import type { Server } from '../balancer/server.js';
import type { EvictionItem } from './eviction.js';
import type { ReactingPool } from './pool-view.js';

export function sessionsToRebalance(pool: ReactingPool, returning: Server): EvictionItem[] {
  const items: EvictionItem[] = [];
  if (!returning.acceptsNew) return items;
  for (const other of pool.servers) {
    if (other === returning) continue;
    for (const session of other.sessions) {
      if (session.routingKey.length === 0) continue;
      if (pool.owner(session.routingKey) === returning) {
        items.push({ session, server: other, reason: 'rebalance', target: returning });
      }
    }
  }
  return items;
}

/** Still worth moving at its turn: the target still takes sessions and still owns the key. */
export function rebalanceStillDue(pool: ReactingPool, item: EvictionItem): boolean {
  const target = item.target;
  if (!target || target === item.server || !target.acceptsNew) return false;
  return pool.owner(item.session.routingKey) === target;
}
