/**
 * The slice of a pool (src/balancer/pool.ts) that health checking and the reactions use. Declared here
 * so src/health depends on a shape, not on the balancer's implementation.
 */
import type { Server } from '../balancer/server.js';
import type { PoolConfig } from '../config/types.js';

export interface CheckedPool {
  readonly name: string;
  /** Re-read on every use: a reload replaces it. */
  readonly config: PoolConfig;
  readonly servers: readonly Server[];
}

export interface ReactingPool extends CheckedPool {
  /** The server a routing key belongs to now (healthy servers only); null when none or not hash-balanced. */
  owner(routingKey: Buffer): Server | null;
  /** A server awaiting its first health verdict would take this key from `current` once up (Pool.pendingWouldTake). */
  pendingWouldTake(routingKey: Buffer, current: Server): boolean;
  /** Milliseconds until the last server awaiting its first verdict is due it; 0 when none awaits one (Pool.pendingVerdictMs). */
  pendingVerdictMs(): number;
  /** `onServerUp: rebalance` closed a session of this key to move it back (a full server lets it pass on). */
  noteRebalanced(routingKey: Buffer): void;
}
