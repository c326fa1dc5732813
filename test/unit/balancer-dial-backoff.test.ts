import { describe, expect, it } from 'vitest';
import { backOff, backOffUntilAnswer, clearBackOff, DEFERRED_REPORT_GAP_MS, DIAL_BACKOFF_MS, serverAnswered } from '../../src/balancer/dial-backoff.js';
import { Pool } from '../../src/balancer/pool.js';
import type { Server } from '../../src/balancer/server.js';
import { allUp, byName, poolConfig, type PoolSpec } from './balancer-fixtures.js';

const NO_KEY = { clientId: Buffer.alloc(0), username: null };
const names = (list: Server[]): string[] => list.map((s) => s.name);

/** A pool of up servers on a clock the test moves, recording onDeferred. */
function setup(spec: PoolSpec): { pool: Pool; clock: { t: number }; deferred: string[] } {
  const clock = { t: 10_000 };
  const deferred: string[] = [];
  const pool = new Pool(poolConfig(spec), undefined, { now: () => clock.t, onDeferred: (s) => deferred.push(s.name) });
  allUp(pool.servers);
  return { pool, clock, deferred };
}

function tally(pool: Pool, picks: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (let i = 0; i < picks; i++) {
    const first = pool.candidates(NO_KEY)[0]!.name;
    out[first] = (out[first] ?? 0) + 1;
  }
  return out;
}

describe('dial back-off in Pool.candidates', () => {
  it('leaves a backed-off server out, even with retries: 0, for DIAL_BACKOFF_MS; a connect ends it at once', () => {
    const { pool, clock } = setup({ balance: 'round-robin', retries: 0, servers: ['a', 'b'] });
    const a = byName(pool.servers, 'a');
    backOff(a, clock.t);
    expect(Array.from({ length: 4 }, () => names(pool.candidates(NO_KEY)))).toEqual([['b'], ['b'], ['b'], ['b']]);
    clock.t += DIAL_BACKOFF_MS - 1;
    expect(names(pool.candidates(NO_KEY))).toEqual(['b']);
    clock.t += 1;
    expect(Object.keys(tally(pool, 2)).sort()).toEqual(['a', 'b']);
    backOff(a, clock.t);
    clearBackOff(a);
    expect(a.dialBackoffUntil).toBe(0);
    expect(Object.keys(tally(pool, 2)).sort()).toEqual(['a', 'b']);
  });

  it('round robin charges the turn to the server that takes the session: the others share the left-out one\'s turns by weight', () => {
    const even = setup({ balance: 'round-robin', servers: ['a', 'b', 'c'] });
    backOff(byName(even.pool.servers, 'a'), even.clock.t);
    expect(tally(even.pool, 300)).toEqual({ b: 150, c: 150 });
    const weighted = setup({ balance: 'round-robin', servers: ['a', { name: 'b', weight: 2 }, 'c', 'd'] });
    backOff(byName(weighted.pool.servers, 'b'), weighted.clock.t);
    expect(tally(weighted.pool, 999)).toEqual({ a: 333, c: 333, d: 333 });
  });

  it('least-connections and random leave it out too', () => {
    for (const balance of ['least-connections', 'random'] as const) {
      const { pool, clock } = setup({ balance, servers: ['a', 'b', 'c'] });
      backOff(byName(pool.servers, 'b'), clock.t);
      expect(Object.keys(tally(pool, 200)).sort(), balance).toEqual(['a', 'c']);
    }
  });

  it('a hash key whose home is backed off goes to the next server in its hash order, for the back-off only', () => {
    const { pool, clock } = setup({ retries: 1, servers: ['a', 'b', 'c'] });
    const keys = { clientId: Buffer.from('client-7'), username: null };
    const home = pool.candidates(keys);
    expect(home).toHaveLength(2);
    backOff(home[0]!, clock.t);
    const third = names(pool.servers).find((n) => n !== home[0]!.name && n !== home[1]!.name)!;
    expect(names(pool.candidates(keys))).toEqual([home[1]!.name, third]);
    clock.t += DIAL_BACKOFF_MS;
    expect(names(pool.candidates(keys))).toEqual(names(home));
  });

  it('leaves no one out when every server of the tier is backed off (the order is the usual one)', () => {
    const { pool, clock, deferred } = setup({ retries: 1, servers: ['a', 'b'] });
    const keys = { clientId: Buffer.from('client-7'), username: null };
    const usual = names(pool.candidates(keys));
    for (const s of pool.servers) backOff(s, clock.t);
    expect(names(pool.candidates(keys))).toEqual(usual);
    expect(deferred).toEqual([]);
  });

  it('a health verdict of up ends the back-off: a broker back from a restart gets its clients at once', () => {
    const { pool, clock } = setup({ retries: 0, servers: ['a', 'b'] });
    const keys = { clientId: Buffer.from('client-7'), username: null };
    const home = pool.candidates(keys)[0]!;
    backOff(home, clock.t);
    home.setHealth('down');
    home.setHealth('up');
    expect(names(pool.candidates(keys))).toEqual([home.name]);
    // Back to ready after a drain: the same.
    backOff(home, clock.t);
    home.setAdmin('drain');
    home.setAdmin('ready');
    expect(names(pool.candidates(keys))).toEqual([home.name]);
  });

  it('after a CONNACK that never came: out for as long as asked, a connect does not end it, an answer or a verdict of up does', () => {
    const { pool, clock } = setup({ balance: 'round-robin', retries: 0, servers: ['a', 'b'] });
    const a = byName(pool.servers, 'a');
    backOffUntilAnswer(a, clock.t, 5000);
    // A stopped broker's kernel still completes handshakes: another session's connect says nothing of it.
    clearBackOff(a);
    // A dial failure meanwhile does not shorten it.
    backOff(a, clock.t);
    expect(a.dialBackoffUntil).toBe(10_000 + 5000);
    clock.t += 4999;
    expect(names(pool.candidates(NO_KEY))).toEqual(['b']);
    serverAnswered(a);
    expect(a.dialBackoffUntil).toBe(0);
    expect(Object.keys(tally(pool, 2)).sort()).toEqual(['a', 'b']);
    backOffUntilAnswer(a, clock.t, 5000);
    a.setHealth('down');
    a.setHealth('up');
    expect([a.dialBackoffUntil, a.dialBackoffNeedsAnswer]).toEqual([0, false]);
    // A plain dial back-off again ends at a connect.
    backOff(a, clock.t);
    clearBackOff(a);
    expect(a.dialBackoffUntil).toBe(0);
  });

  it('reports a left-out server for a probe at most every DEFERRED_REPORT_GAP_MS', () => {
    const { pool, clock, deferred } = setup({ balance: 'least-connections', servers: ['a', 'b'] });
    backOff(byName(pool.servers, 'a'), clock.t);
    tally(pool, 50);
    expect(deferred).toEqual(['a']);
    clock.t += DEFERRED_REPORT_GAP_MS;
    tally(pool, 50);
    expect(deferred).toEqual(['a', 'a']);
  });
});
