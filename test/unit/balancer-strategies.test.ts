/**
 * The keyless strategies through the Pool: smooth weighted round robin, least connections with
 * fake sessions, and random (two choices) with a seeded random source.
 */
import { describe, expect, it } from 'vitest';
import { Pool } from '../../src/balancer/pool.js';
import { addSessions, allUp, byName, FakeSession, names, poolConfig, seededRandom, type PoolSpec } from './balancer-fixtures.js';

const NO_KEY = { clientId: Buffer.alloc(0), username: null };

function upPool(spec: PoolSpec, random?: () => number): Pool {
  const pool = new Pool(poolConfig(spec), undefined, random === undefined ? {} : { random });
  allUp(pool.servers);
  return pool;
}

function firstPicks(pool: Pool, n: number): string[] {
  return Array.from({ length: n }, () => pool.candidates(NO_KEY)[0]!.name);
}

describe('round-robin (smooth weighted)', () => {
  it('interleaves weights 5:1:1 as a a b a c a a, and repeats', () => {
    const pool = upPool({ balance: 'round-robin', servers: [{ name: 'a', weight: 5 }, 'b', 'c'] });
    expect(firstPicks(pool, 14).join(' ')).toBe('a a b a c a a a a b a c a a');
  });

  it('gives each server exactly its weight per cycle', () => {
    const pool = upPool({ balance: 'round-robin', servers: [{ name: 'x', weight: 3 }, { name: 'y', weight: 2 }, { name: 'z', weight: 1 }] });
    const picks = firstPicks(pool, 600);
    expect(picks.filter((p) => p === 'x')).toHaveLength(300);
    expect(picks.filter((p) => p === 'y')).toHaveLength(200);
    expect(picks.filter((p) => p === 'z')).toHaveLength(100);
  });

  it('runs the same sequence whatever the list order (ties go to the smaller name)', () => {
    const a = upPool({ balance: 'round-robin', servers: ['b1', 'b2', { name: 'b3', weight: 2 }] });
    const b = upPool({ balance: 'round-robin', servers: [{ name: 'b3', weight: 2 }, 'b2', 'b1'] });
    expect(firstPicks(b, 20)).toEqual(firstPicks(a, 20));
  });

  it('skips servers that cannot take sessions and offers the others as retries in rotation order', () => {
    const pool = upPool({ balance: 'round-robin', retries: 3, servers: ['b1', 'b2', 'b3', 'b4'] });
    byName(pool.servers, 'b2').setHealth('down');
    const lists = Array.from({ length: 3 }, () => names(pool.candidates(NO_KEY)));
    expect(lists).toEqual([
      ['b1', 'b3', 'b4'],
      ['b3', 'b4', 'b1'],
      ['b4', 'b1', 'b3'],
    ]);
  });
});

describe('least-connections', () => {
  it('picks the fewest sessions per unit of weight and orders retries by load', () => {
    const pool = upPool({ balance: 'least-connections', retries: 3, servers: ['b1', 'b2', { name: 'b3', weight: 4 }, 'b4'] });
    addSessions(byName(pool.servers, 'b1'), 3); // 3 / 1
    addSessions(byName(pool.servers, 'b2'), 1); // 1 / 1
    addSessions(byName(pool.servers, 'b3'), 2); // 2 / 4 = 0.5
    addSessions(byName(pool.servers, 'b4'), 2); // 2 / 1
    expect(names(pool.candidates(NO_KEY))).toEqual(['b3', 'b2', 'b4', 'b1']);
  });

  it('fills servers evenly as sessions arrive', () => {
    const pool = upPool({ balance: 'least-connections', servers: ['b1', 'b2', { name: 'b3', weight: 2 }] });
    for (let i = 0; i < 400; i++) addSessions(pool.candidates(NO_KEY)[0]!, 1);
    expect(pool.servers.map((s) => s.sessions.size)).toEqual([100, 100, 200]);
  });

  it('counts dials in flight as load: a burst of picks before any connect completes follows the weights', () => {
    const pool = upPool({ balance: 'least-connections', servers: ['b1', 'b2', { name: 'b3', weight: 2 }] });
    for (let i = 0; i < 400; i++) pool.candidates(NO_KEY)[0]!.dialsInFlight++; // as ClientSession.dial does
    expect(pool.servers.map((s) => s.dialsInFlight)).toEqual([100, 100, 200]);
  });

  it('rotates among equally loaded servers', () => {
    const pool = upPool({ balance: 'least-connections', servers: ['b1', 'b2', 'b3'] });
    // Nothing is added between picks (sessions not yet counted): equals must still rotate.
    expect(firstPicks(pool, 6)).toEqual(['b1', 'b2', 'b3', 'b1', 'b2', 'b3']);
    addSessions(byName(pool.servers, 'b2'), 1);
    expect(firstPicks(pool, 4)).toEqual(['b1', 'b3', 'b1', 'b3']);
  });
});

/**
 * Short-lived clients one after another, each still there when the next arrives (an overlap of one): the picks.
 * A balancing audit saw a weight-1 broker beside one of 256, at the same load per weight, take half of them.
 */
function overlappingPicks(pool: Pool, n: number): string[] {
  const picks: string[] = [];
  let previous: { server: Pool['servers'][number]; session: FakeSession } | null = null;
  for (let i = 0; i < n; i++) {
    const server = pool.candidates(NO_KEY)[0]!;
    const session = new FakeSession();
    server.sessions.add(session);
    if (previous !== null) previous.server.sessions.delete(previous.session);
    previous = { server, session };
    picks.push(server.name);
  }
  return picks;
}

describe('least-connections and random by weight (a balancing audit)', () => {
  it('least-connections: idle servers share serial arrivals by weight (1:2:3), not evenly', () => {
    const pool = upPool({ balance: 'least-connections', servers: ['b1', { name: 'b2', weight: 2 }, { name: 'b3', weight: 3 }] });
    const picks = firstPicks(pool, 600);
    expect(['b1', 'b2', 'b3'].map((n) => picks.filter((p) => p === n).length)).toEqual([100, 200, 300]);
  });

  it.each(['least-connections', 'random'] as const)('%s: a light server level with a heavy one per weight takes its share, not every overlapping client', (balance) => {
    const pool = upPool({ balance, servers: ['b1', { name: 'b2', weight: 256 }] }, seededRandom(5));
    addSessions(byName(pool.servers, 'b1'), 8); // 8 / 1
    addSessions(byName(pool.servers, 'b2'), 2048); // 2048 / 256
    const picks = overlappingPicks(pool, 300);
    expect(picks.filter((p) => p === 'b1').length).toBeLessThanOrEqual(3); // ~1/257 of them by weight
  });
});

describe('random (two choices)', () => {
  it('is reproducible with a seeded random source', () => {
    const spec: PoolSpec = { balance: 'random', retries: 4, servers: ['b1', 'b2', 'b3', 'b4', 'b5'] };
    const a = upPool(spec, seededRandom(42));
    const b = upPool(spec, seededRandom(42));
    const listsA = Array.from({ length: 50 }, () => names(a.candidates(NO_KEY)));
    const listsB = Array.from({ length: 50 }, () => names(b.candidates(NO_KEY)));
    expect(listsA).toEqual(listsB);
    expect(new Set(listsA.map((l) => l[0])).size).toBeGreaterThan(1);
  });

  it('keeps the less loaded of the two servers it draws', () => {
    // 0.1 draws b1 (first fifth), 0.9 then draws from the four left: b5 (last quarter).
    const draws = [0.1, 0.9];
    let k = 0;
    const pool = upPool({ balance: 'random', retries: 4, servers: ['b1', 'b2', 'b3', 'b4', 'b5'] }, () => draws[k++ % 2]!);
    addSessions(byName(pool.servers, 'b1'), 3);
    addSessions(byName(pool.servers, 'b5'), 1);
    addSessions(byName(pool.servers, 'b2'), 2);
    // b5 wins (1 < 3), b1 is the runner-up, then the rest by load: b3, b4 (0), b2 (2).
    expect(names(pool.candidates(NO_KEY))).toEqual(['b5', 'b1', 'b3', 'b4', 'b2']);
    addSessions(byName(pool.servers, 'b5'), 5);
    expect(names(pool.candidates(NO_KEY)).slice(0, 2)).toEqual(['b1', 'b5']);
  });

  it('draws in proportion to weight when loads are equal', () => {
    const pool = upPool({ balance: 'random', servers: [{ name: 'w1', weight: 1 }, { name: 'w3', weight: 3 }] }, seededRandom(7));
    const picks = firstPicks(pool, 20_000);
    const share = picks.filter((p) => p === 'w3').length / picks.length;
    expect(share).toBeGreaterThan(0.73);
    expect(share).toBeLessThan(0.77);
  });

  it('spreads sessions evenly when they are counted', () => {
    const pool = upPool({ balance: 'random', servers: ['b1', 'b2', 'b3', 'b4'] }, seededRandom(9));
    for (let i = 0; i < 4000; i++) addSessions(pool.candidates(NO_KEY)[0]!, 1);
    for (const s of pool.servers) {
      expect(s.sessions.size, s.name).toBeGreaterThan(950);
      expect(s.sessions.size, s.name).toBeLessThan(1050);
    }
  });
});
