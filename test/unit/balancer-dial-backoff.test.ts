import { describe, expect, it } from 'vitest';
import { backOff, clearBackOff, deferBackedOff, DIAL_BACKOFF_MS } from '../../src/balancer/dial-backoff.js';
import { Pool } from '../../src/balancer/pool.js';
import { Server } from '../../src/balancer/server.js';
import { allUp, byName, poolConfig } from './balancer-fixtures.js';
import { serverConfig } from './health-fixtures.js';

const servers = (...names: string[]): Server[] => names.map((n) => new Server('brokers', serverConfig(n), 'up'));
const names = (list: Server[]): string[] => list.map((s) => s.name);

describe('dial back-off', () => {
  it('moves the servers backed off behind the others, each group in its order; none: untouched, clock unread', () => {
    const [a, b, c, d] = servers('a', 'b', 'c', 'd');
    let reads = 0;
    const now = (): number => {
      reads++;
      return 5000;
    };
    const list = [a!, b!, c!, d!];
    deferBackedOff(list, now);
    expect(names(list)).toEqual(['a', 'b', 'c', 'd']);
    expect(reads).toBe(0);
    backOff(a!, 4500);
    backOff(c!, 4600);
    deferBackedOff(list, now);
    expect(names(list)).toEqual(['b', 'd', 'a', 'c']);
    expect(reads).toBe(1);
  });

  it('lasts DIAL_BACKOFF_MS, and a dial that connects ends it at once', () => {
    const [a, b] = servers('a', 'b');
    backOff(a!, 1000);
    const at = (t: number): string[] => {
      const list = [a!, b!];
      deferBackedOff(list, () => t);
      return names(list);
    };
    expect(at(1000 + DIAL_BACKOFF_MS - 1)).toEqual(['b', 'a']);
    expect(at(1000 + DIAL_BACKOFF_MS)).toEqual(['a', 'b']);
    clearBackOff(a!);
    expect(a!.dialBackoffUntil).toBe(0);
    expect(at(1500)).toEqual(['a', 'b']);
  });

  it('keeps the order when every candidate is backed off (it never removes a server)', () => {
    const [a, b] = servers('a', 'b');
    backOff(a!, 0);
    backOff(b!, 0);
    const list = [b!, a!];
    deferBackedOff(list, () => 10);
    expect(names(list)).toEqual(['b', 'a']);
  });
});

describe('Pool.candidates with a dial back-off', () => {
  const NO_KEY = { clientId: Buffer.alloc(0), username: null };

  it('replaces a backed-off server even with retries: 0, and reports the best pick it put last', () => {
    let t = 10_000;
    const deferred: string[] = [];
    const pool = new Pool(poolConfig({ balance: 'round-robin', retries: 0, servers: ['a', 'b'] }), undefined, {
      now: () => t,
      onDeferred: (s) => deferred.push(s.name),
    });
    allUp(pool.servers);
    backOff(byName(pool.servers, 'a'), t);
    const picks = Array.from({ length: 4 }, () => names(pool.candidates(NO_KEY)));
    expect(picks).toEqual([['b'], ['b'], ['b'], ['b']]);
    expect(deferred).toEqual(['a', 'a']); // the picks where round robin chose a
    t += DIAL_BACKOFF_MS;
    expect(names(pool.candidates(NO_KEY)).length).toBe(1);
    expect(Array.from({ length: 2 }, () => names(pool.candidates(NO_KEY))[0]).sort()).toEqual(['a', 'b']);
  });

  it('moves a hash key off its backed-off home for the back-off only, keeping retries + 1 candidates', () => {
    const t = 0;
    const pool = new Pool(poolConfig({ retries: 1, servers: ['a', 'b', 'c'] }), undefined, { now: () => t });
    allUp(pool.servers);
    const keys = { clientId: Buffer.from('client-7'), username: null };
    const home = pool.candidates(keys);
    expect(home).toHaveLength(2);
    backOff(home[0]!, t);
    const during = pool.candidates(keys);
    expect(names(during)).toEqual([home[1]!.name, names(pool.servers).find((n) => n !== home[0]!.name && n !== home[1]!.name)]);
    clearBackOff(home[0]!);
    expect(names(pool.candidates(keys))).toEqual(names(home));
  });
});
