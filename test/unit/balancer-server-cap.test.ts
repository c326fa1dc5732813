/**
 * servers[].maxConnections: which servers a pick offers when some are at their cap. A hashed key stays with its
 * server (refused with FULL_CANDIDATES while it is full, unless the client's own session is there); keyless picks
 * pass over full servers; retries never go to one; the rebalance moves back only what fits.
 */
import { describe, expect, it } from 'vitest';
import { FULL_CANDIDATES, Pool } from '../../src/balancer/pool.js';
import { sessionKey, type ClientIdHolder } from '../../src/balancer/client-id-registry.js';
import type { Server } from '../../src/balancer/server.js';
import { rebalanceStillDue, sessionsToRebalance } from '../../src/health/rebalance.js';
import { addSessions, allUp, byName, clientId, FakeSession, names, poolConfig, type PoolSpec } from './balancer-fixtures.js';

function upPool(spec: PoolSpec): Pool {
  const pool = new Pool(poolConfig(spec));
  allUp(pool.servers);
  return pool;
}

function keys(id: string | Buffer): { clientId: Buffer; username: null } {
  return { clientId: typeof id === 'string' ? Buffer.from(id) : id, username: null };
}

/** A client ID whose home (first candidate) is `server`, and the rest of its order. */
function idHomedOn(pool: Pool, server: string): Buffer {
  for (let i = 0; i < 10_000; i++) {
    const id = clientId(i);
    if (pool.candidates(keys(id))[0]?.name === server) return id;
  }
  throw new Error(`no client ID homed on ${server}`);
}

describe('servers[].maxConnections: hashed keys', () => {
  it('refuses a client whose own server is full instead of sending it to another broker', () => {
    const pool = upPool({ servers: [{ name: 'b1', maxConnections: 2 }, 'b2', 'b3'] });
    const id = idHomedOn(pool, 'b1');
    const b1 = byName(pool.servers, 'b1');
    addSessions(b1, 1);
    expect(names(pool.candidates(keys(id)))[0]).toBe('b1');
    b1.dialsInFlight++; // a dial in flight counts: two clients arriving together cannot both take the last slot
    expect(b1.full).toBe(true);
    expect(pool.candidates(keys(id))).toBe(FULL_CANDIDATES);
    b1.dialsInFlight--;
    expect(names(pool.candidates(keys(id)))[0]).toBe('b1');
  });

  it('lets a client through to a full server that holds its own earlier session (the broker takes it over)', () => {
    const pool = upPool({ servers: [{ name: 'b1', maxConnections: 1 }, 'b2'] });
    const id = idHomedOn(pool, 'b1');
    const b1 = byName(pool.servers, 'b1');
    const old: ClientIdHolder = { server: b1, connectSentAt: 1, takenOver: () => undefined };
    addSessions(b1, 1);
    expect(pool.candidates(keys(id))).toBe(FULL_CANDIDATES);
    const key = sessionKey(id, null);
    pool.clientIds.claim(key, old);
    expect(names(pool.candidates(keys(id)))[0]).toBe('b1');
    // Another user's session of that client ID is not its own (the takeover is per user: client-id-registry.ts).
    expect(pool.candidates({ clientId: id, username: Buffer.from('mallory') })).toBe(FULL_CANDIDATES);
    // Its session on another server does not count: that one is not the one freeing b1's slot.
    const other: ClientIdHolder = { server: byName(pool.servers, 'b2'), connectSentAt: 2, takenOver: () => undefined };
    pool.clientIds.release(key, old);
    pool.clientIds.claim(key, other);
    expect(pool.candidates(keys(id))).toBe(FULL_CANDIDATES);
  });

  it('leaves full servers out of the retries, keeping the order of the rest', () => {
    const pool = upPool({ servers: ['b1', { name: 'b2', maxConnections: 1 }, 'b3', 'b4'], retries: 3 });
    const id = idHomedOn(pool, 'b1');
    const order = names(pool.candidates(keys(id)));
    expect(order).toHaveLength(4);
    addSessions(byName(pool.servers, 'b2'), 1);
    expect(names(pool.candidates(keys(id)))).toEqual(order.filter((n) => n !== 'b2'));
  });

  it('a cap of 0 is no cap', () => {
    const pool = upPool({ servers: [{ name: 'b1', maxConnections: 0 }] });
    addSessions(byName(pool.servers, 'b1'), 50_000);
    expect(byName(pool.servers, 'b1').full).toBe(false);
    expect(names(pool.candidates(keys('anyone')))).toEqual(['b1']);
  });

  it('a full server is still up: backups are not used for it', () => {
    const pool = upPool({ servers: [{ name: 'b1', maxConnections: 1 }, { name: 'spare', backup: true }] });
    addSessions(byName(pool.servers, 'b1'), 1);
    expect(pool.candidates(keys('c1'))).toBe(FULL_CANDIDATES);
  });
});

describe('servers[].maxConnections: keyless picks', () => {
  for (const balance of ['round-robin', 'least-connections', 'random'] as const) {
    it(`${balance} passes over a full server, and refuses with server_full when all are full`, () => {
      const pool = upPool({ balance, servers: [{ name: 'b1', maxConnections: 1 }, { name: 'b2', maxConnections: 2 }], retries: 1 });
      const b1 = byName(pool.servers, 'b1');
      const b2 = byName(pool.servers, 'b2');
      addSessions(b1, 1);
      for (let i = 0; i < 5; i++) expect(names(pool.candidates(keys(`c${i}`)))).toEqual(['b2']);
      addSessions(b2, 2);
      expect(pool.candidates(keys('c9'))).toBe(FULL_CANDIDATES);
      b2.sessions.clear();
      expect(names(pool.candidates(keys('c10')))).toEqual(['b2']);
    });
  }

  it('the fallback for an empty client ID passes over full servers too', () => {
    const pool = upPool({ servers: [{ name: 'b1', maxConnections: 1 }, 'b2'] });
    addSessions(byName(pool.servers, 'b1'), 1);
    for (let i = 0; i < 4; i++) expect(names(pool.candidates(keys(Buffer.alloc(0))))).toEqual(['b2']);
  });

  it('an empty pick for no server up stays no_server, not server_full', () => {
    const pool = new Pool(poolConfig({ balance: 'round-robin', servers: [{ name: 'b1', maxConnections: 1 }] }));
    expect(pool.candidates(keys('c'))).not.toBe(FULL_CANDIDATES);
    expect(pool.candidates(keys('c'))).toEqual([]);
  });
});

describe('servers[].maxConnections with the dial back-off', () => {
  it('keyless: a full server does not push a backed-off one out of the pick (it is the only one with room)', () => {
    for (const balance of ['round-robin', 'least-connections', 'random'] as const) {
      const pool = new Pool(poolConfig({ balance, servers: [{ name: 'b1', maxConnections: 1 }, 'b2'] }), undefined, { now: () => 5000 });
      allUp(pool.servers);
      addSessions(byName(pool.servers, 'b1'), 1);
      byName(pool.servers, 'b2').dialBackoffUntil = 6000;
      expect(names(pool.candidates(keys('c1'))), balance).toEqual(['b2']);
    }
  });

  it('hashed: a full server that stands in for a backed-off home does not refuse the client', () => {
    const pool = new Pool(poolConfig({ servers: ['b1', 'b2', 'b3'], retries: 2 }), undefined, { now: () => 5000 });
    allUp(pool.servers);
    const id = idHomedOn(pool, 'b1');
    const order = names(pool.candidates(keys(id)));
    const [home, second, third] = order as [string, string, string];
    byName(pool.servers, home).dialBackoffUntil = 6000;
    byName(pool.servers, second).config = { ...byName(pool.servers, second).config, maxConnections: 1 };
    addSessions(byName(pool.servers, second), 1);
    // The home is backed off and the next is full: the third, which has room.
    expect(names(pool.candidates(keys(id)))).toEqual([third]);
    // No other server with room either: the back-off leaves no one out, and the home is tried.
    byName(pool.servers, third).config = { ...byName(pool.servers, third).config, maxConnections: 1 };
    addSessions(byName(pool.servers, third), 1);
    expect(names(pool.candidates(keys(id)))).toEqual([home]);
  });
});

describe('servers[].maxConnections: onServerUp rebalance', () => {
  function homedSessions(pool: Pool, on: Server, home: string, n: number): FakeSession[] {
    const out: FakeSession[] = [];
    for (let i = 0; out.length < n && i < 100_000; i++) {
      const id = clientId(i);
      if (pool.owner(id)?.name === home) {
        const s = new FakeSession(id);
        on.sessions.add(s);
        out.push(s);
      }
    }
    return out;
  }

  it('moves back no more sessions than the returning server has room for, and none once it is full', () => {
    const pool = upPool({ servers: [{ name: 'b1', maxConnections: 3 }, 'b2'] });
    const b1 = byName(pool.servers, 'b1');
    const b2 = byName(pool.servers, 'b2');
    homedSessions(pool, b2, 'b1', 5);
    addSessions(b1, 1);
    const items = sessionsToRebalance(pool, b1);
    expect(items).toHaveLength(2);
    expect(items.every((it) => rebalanceStillDue(pool, it))).toBe(true);
    addSessions(b1, 2);
    expect(rebalanceStillDue(pool, items[0]!)).toBe(false);
    expect(sessionsToRebalance(pool, b1)).toEqual([]);
  });

  it('a client the rebalance closed, back at its server filled meanwhile by others, goes on down its order (for 60 s)', () => {
    let t = 1000;
    const pool = new Pool(poolConfig({ servers: [{ name: 'b1', maxConnections: 1 }, 'b2', 'b3'] }), undefined, { now: () => t });
    allUp(pool.servers);
    const id = idHomedOn(pool, 'b1');
    const order = names(pool.candidates(keys(id)));
    addSessions(byName(pool.servers, 'b1'), 1); // a newcomer took the room the rebalance counted on
    expect(pool.candidates(keys(id))).toBe(FULL_CANDIDATES);
    pool.noteRebalanced(id);
    expect(names(pool.candidates(keys(id)))).toEqual(order.slice(1));
    t += 59_999;
    expect(names(pool.candidates(keys(id)))).toEqual(order.slice(1));
    t += 1;
    expect(pool.candidates(keys(id))).toBe(FULL_CANDIDATES);
    // Its other servers full too: refused all the same, never above a cap.
    pool.noteRebalanced(id);
    for (const n of order.slice(1)) byName(pool.servers, n).config = { ...byName(pool.servers, n).config, maxConnections: 1 };
    for (const n of order.slice(1)) addSessions(byName(pool.servers, n), 1);
    expect(pool.candidates(keys(id))).toBe(FULL_CANDIDATES);
  });

  it('a rebalanced client with retries: 0 (a pick of one) still finds the next server with room', () => {
    let t = 1000;
    const pool = new Pool(poolConfig({ servers: [{ name: 'b1', maxConnections: 1 }, 'b2', 'b3'], retries: 0 }), undefined, { now: () => t });
    allUp(pool.servers);
    const id = idHomedOn(pool, 'b1');
    const order = names(pool.candidates({ clientId: id, username: null }));
    expect(order).toEqual(['b1']);
    addSessions(byName(pool.servers, 'b1'), 1);
    pool.noteRebalanced(id);
    const next = names(pool.candidates(keys(id)));
    expect(next).toHaveLength(1);
    expect(next[0]).not.toBe('b1');
  });

  it('remembers rebalanced keys only while some server has a cap', () => {
    const pool = upPool({ servers: ['b1', 'b2'] });
    pool.noteRebalanced(Buffer.from('k'));
    expect((pool as unknown as { rebalanced: Map<string, number> }).rebalanced.size).toBe(0);
  });

  it('without a cap, moves back every session that belongs to the returning server', () => {
    const pool = upPool({ servers: ['b1', 'b2'] });
    homedSessions(pool, byName(pool.servers, 'b2'), 'b1', 5);
    expect(sessionsToRebalance(pool, byName(pool.servers, 'b1'))).toHaveLength(5);
  });
});
