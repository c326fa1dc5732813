/**
 * The server states a cluster primary sends its workers (src/cluster/server-states.ts): applied as they are
 * where the worker has the server at the place they were judged at, and only the admin state where a reload
 * moved it (a snapshot from before the move must not mark the new place up before it was probed).
 */
import { describe, expect, it } from 'vitest';
import { Pool } from '../../src/balancer/pool.js';
import { applyServerStates, serverStates } from '../../src/cluster/server-states.js';
import { byName, poolConfig, type PoolSpec } from './balancer-fixtures.js';

const BEFORE: PoolSpec = { servers: [{ name: 'b1', host: '10.0.0.1' }, { name: 'b2', host: '10.0.0.2' }] };
const MOVED: PoolSpec = { servers: [{ name: 'b1', host: '10.0.0.1' }, { name: 'b2', host: '10.0.0.9' }] };

function pools(...list: Pool[]): Map<string, Pool> {
  return new Map(list.map((p) => [p.name, p]));
}

describe('server states from the primary to a worker', () => {
  it('a worker with the same config takes every health, admin state and last check', () => {
    const primary = new Pool(poolConfig(BEFORE));
    byName(primary.servers, 'b1').setHealth('up');
    byName(primary.servers, 'b2').setHealth('down');
    byName(primary.servers, 'b2').setAdmin('drain');
    byName(primary.servers, 'b1').lastCheck = { result: 'ok', at: 1, durationMs: 2 };
    const worker = new Pool(poolConfig(BEFORE));
    applyServerStates(pools(worker), serverStates([primary]));
    expect(worker.servers.map((s) => [s.name, s.health, s.admin, s.lastCheck])).toEqual([
      ['b1', 'up', 'ready', { result: 'ok', at: 1, durationMs: 2 }],
      ['b2', 'down', 'drain', null],
    ]);
  });

  it('a snapshot from before a move leaves the moved server unknown in a worker that has moved it (admin applied)', () => {
    const primary = new Pool(poolConfig(BEFORE));
    for (const s of primary.servers) s.setHealth('up');
    byName(primary.servers, 'b2').setAdmin('drain');
    const stale = serverStates([primary]);
    const worker = new Pool(poolConfig(BEFORE));
    applyServerStates(pools(worker), stale);
    worker.reconfigure(poolConfig(MOVED)); // the worker's reload step: b2 unknown at its new place
    applyServerStates(pools(worker), stale); // re-applied after the step (worker-main.ts)
    expect(worker.servers.map((s) => [s.name, s.health, s.admin])).toEqual([
      ['b1', 'up', 'ready'],
      ['b2', 'unknown', 'drain'],
    ]);
  });

  it('a snapshot from after the move waits for the worker to move it too', () => {
    const primary = new Pool(poolConfig(MOVED));
    for (const s of primary.servers) s.setHealth('up');
    const fresh = serverStates([primary]);
    const worker = new Pool(poolConfig(BEFORE));
    byName(worker.servers, 'b2').setHealth('down');
    applyServerStates(pools(worker), fresh); // its reload step still queued: about another address
    expect(byName(worker.servers, 'b2').health).toBe('down');
    worker.reconfigure(poolConfig(MOVED));
    applyServerStates(pools(worker), fresh);
    expect(byName(worker.servers, 'b2').health).toBe('up');
  });

  it('states of pools or servers the worker does not have are skipped', () => {
    const primary = new Pool(poolConfig({ name: 'other', servers: ['x1'] }));
    primary.servers[0]!.setHealth('up');
    const worker = new Pool(poolConfig(BEFORE));
    expect(() => applyServerStates(pools(worker), serverStates([primary]))).not.toThrow();
    expect(worker.servers.map((s) => s.health)).toEqual(['unknown', 'unknown']);
  });
});
