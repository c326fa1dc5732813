import { describe, expect, it } from 'vitest';
import { backOff, clearBackOff, deferBackedOff, DIAL_BACKOFF_MS } from '../../src/balancer/dial-backoff.js';
import { Server } from '../../src/balancer/server.js';
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
