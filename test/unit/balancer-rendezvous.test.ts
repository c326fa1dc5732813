/**
 * Properties of client-id-hash placement through the Pool (design.md §5): independence from list
 * order and from process state, spread (equal and weighted), minimal disruption when a server is
 * added or removed, and independence of the per-server scores. Keys are deterministic, so every
 * count below is fixed; tolerances are several standard deviations wide.
 */
import { describe, expect, it } from 'vitest';
import { Pool } from '../../src/balancer/pool.js';
import type { ServerSpec } from './balancer-fixtures.js';
import { allUp, addSessions, byName, clientId, names, poolConfig, seededRandom, shuffled } from './balancer-fixtures.js';

function upPool(servers: ServerSpec[], retries = 2): Pool {
  const pool = new Pool(poolConfig({ balance: 'client-id-hash', servers, retries }));
  allUp(pool.servers);
  return pool;
}

function winner(pool: Pool, key: Buffer): string {
  const c = pool.candidates({ clientId: key, username: null });
  return c[0]!.name;
}

function countWinners(pool: Pool, n: number): Map<string, number> {
  const counts = new Map<string, number>();
  for (const s of pool.servers) counts.set(s.name, 0);
  for (let i = 0; i < n; i++) {
    const w = winner(pool, clientId(i));
    counts.set(w, counts.get(w)! + 1);
  }
  return counts;
}

const FIVE: ServerSpec[] = ['b1', 'b2', 'b3', 'b4', 'b5'].map((name) => ({ name }));

describe('client-id-hash: order and state independence', () => {
  it('gives identical candidate lists for 10k keys whatever the server list order', () => {
    const specs: ServerSpec[] = [
      { name: 'b1', weight: 1 },
      { name: 'b2', weight: 2 },
      { name: 'b3', weight: 1 },
      { name: 'emqx-4', weight: 3 },
      { name: 'b5', weight: 1 },
    ];
    const reference = upPool(specs);
    const random = seededRandom(10);
    const others = [1, 2, 3].map(() => upPool(shuffled(specs, random)));
    expect(others.map((p) => names(p.servers))).not.toContainEqual(names(reference.servers));
    for (let i = 0; i < 10_000; i++) {
      const expected = names(reference.candidates({ clientId: clientId(i), username: null }));
      expect(expected).toHaveLength(3);
      for (const p of others) expect(names(p.candidates({ clientId: clientId(i), username: null }))).toEqual(expected);
    }
  });

  it('does not depend on process state: live sessions, earlier picks and a second instance', () => {
    const a = upPool(FIVE);
    const b = upPool(FIVE);
    const before = Array.from({ length: 2000 }, (_, i) => winner(a, clientId(i)));
    // Load a up unevenly and pick a lot: a hash strategy must not care.
    addSessions(byName(a.servers, 'b2'), 500);
    addSessions(byName(a.servers, 'b4'), 50);
    for (let i = 0; i < 5000; i++) a.candidates({ clientId: Buffer.alloc(0), username: null });
    for (let i = 0; i < 2000; i++) {
      expect(winner(a, clientId(i))).toBe(before[i]);
      expect(winner(b, clientId(i))).toBe(before[i]);
    }
  });
});

describe('client-id-hash: distribution', () => {
  it('spreads 100k keys over 5 equal servers within ±3% of an even share each', () => {
    const counts = countWinners(upPool(FIVE), 100_000);
    for (const [name, c] of counts) {
      expect(c, name).toBeGreaterThanOrEqual(20_000 * 0.97);
      expect(c, name).toBeLessThanOrEqual(20_000 * 1.03);
    }
  });

  it('spreads keys in proportion to weights 1:2:3 (within ±3% of each expected share)', () => {
    const pool = upPool([
      { name: 'light', weight: 1 },
      { name: 'medium', weight: 2 },
      { name: 'heavy', weight: 3 },
    ]);
    const n = 60_000;
    const counts = countWinners(pool, n);
    const expected: Record<string, number> = { light: n / 6, medium: (2 * n) / 6, heavy: (3 * n) / 6 };
    for (const [name, c] of counts) {
      expect(c, name).toBeGreaterThanOrEqual(expected[name]! * 0.97);
      expect(c, name).toBeLessThanOrEqual(expected[name]! * 1.03);
    }
  });

  it('ranks 3 equal servers in each of the 6 possible orders about equally often (independent scores)', () => {
    const pool = upPool(['x', 'y', 'z'].map((name) => ({ name })));
    const n = 60_000;
    const orders = new Map<string, number>();
    for (let i = 0; i < n; i++) {
      const o = names(pool.candidates({ clientId: clientId(i), username: null })).join('');
      orders.set(o, (orders.get(o) ?? 0) + 1);
    }
    expect(orders.size).toBe(6);
    for (const [o, c] of orders) {
      expect(c, o).toBeGreaterThan((n / 6) * 0.95);
      expect(c, o).toBeLessThan((n / 6) * 1.05);
    }
  });
});

describe('client-id-hash: minimal disruption', () => {
  const N = 60_000;

  it('adding a 6th server moves only keys to it, about 1/6 of them', () => {
    const five = upPool(FIVE);
    const six = upPool([...FIVE, { name: 'b6' }]);
    let moved = 0;
    for (let i = 0; i < N; i++) {
      const before = winner(five, clientId(i));
      const after = winner(six, clientId(i));
      if (before === after) continue;
      expect(after).toBe('b6');
      moved++;
    }
    expect(moved / N).toBeGreaterThan((1 / 6) * 0.95);
    expect(moved / N).toBeLessThan((1 / 6) * 1.05);
  });

  it('adding a server at runtime (reconfigure) moves the same keys as a fresh pool would', () => {
    const pool = upPool(FIVE);
    const fresh = upPool([...FIVE, { name: 'b6' }]);
    pool.reconfigure(poolConfig({ balance: 'client-id-hash', servers: [{ name: 'b6' }, ...FIVE] }));
    allUp(pool.servers);
    for (let i = 0; i < 5000; i++) expect(winner(pool, clientId(i))).toBe(winner(fresh, clientId(i)));
  });

  it('removing (or losing) one server moves only its keys, spread evenly over the rest', () => {
    const pool = upPool(FIVE);
    const before = Array.from({ length: N }, (_, i) => winner(pool, clientId(i)));
    byName(pool.servers, 'b3').setHealth('down');
    const landed = new Map<string, number>();
    let orphans = 0;
    for (let i = 0; i < N; i++) {
      const after = winner(pool, clientId(i));
      if (before[i] !== 'b3') {
        expect(after).toBe(before[i]);
        continue;
      }
      orphans++;
      expect(after).not.toBe('b3');
      landed.set(after, (landed.get(after) ?? 0) + 1);
    }
    expect(landed.size).toBe(4);
    for (const [name, c] of landed) {
      expect(c / orphans, name).toBeGreaterThan(0.25 * 0.9);
      expect(c / orphans, name).toBeLessThan(0.25 * 1.1);
    }
  });

  it("a key's first retry candidate is where it goes when its server is gone", () => {
    const pool = upPool(FIVE);
    const plans = Array.from({ length: 3000 }, (_, i) => names(pool.candidates({ clientId: clientId(i), username: null })));
    for (let i = 0; i < plans.length; i++) {
      const [first, second] = plans[i]!;
      const s = byName(pool.servers, first!);
      s.setAdmin('maint');
      expect(winner(pool, clientId(i))).toBe(second);
      s.setAdmin('ready');
    }
  });

  it('changing one weight moves keys only between that server and the others, in the right direction', () => {
    const pool = upPool(FIVE);
    const before = Array.from({ length: N }, (_, i) => winner(pool, clientId(i)));
    pool.reconfigure(poolConfig({ balance: 'client-id-hash', servers: FIVE.map((s) => (s.name === 'b1' ? { ...s, weight: 2 } : s)) }));
    let gained = 0;
    for (let i = 0; i < N; i++) {
      const after = winner(pool, clientId(i));
      if (after === before[i]) continue;
      expect(after).toBe('b1'); // a heavier b1 only takes keys, never gives any away
      gained++;
    }
    // b1 goes from 1/5 to 2/6 of the keys.
    expect(gained / N).toBeGreaterThan((2 / 6 - 1 / 5) * 0.9);
    expect(gained / N).toBeLessThan((2 / 6 - 1 / 5) * 1.1);
  });
});
