import type { LookupAddress } from 'node:dns';
import { describe, expect, it, vi } from 'vitest';
import type { AddressesCallback } from '../../src/proxy/handle-socket.js';
import { FRESH_MS, HOLD_ON_ERROR_MS, SERVE_WHILE_REFRESHING_MS, SLOW_LOOKUP_MS, ServerNameCache } from '../../src/proxy/server-name-cache.js';

const A: LookupAddress[] = [{ address: '10.0.0.1', family: 4 }];
const B: LookupAddress[] = [{ address: '10.0.0.2', family: 4 }, { address: 'fd00::2', family: 6 }];

function failure(code: string): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(`getaddrinfo ${code} broker.test`);
  err.code = code;
  return err;
}

/** A cache over a resolver the test answers by hand, on a clock the test moves. */
function setup() {
  const clock = { t: 50_000 };
  const pending: Array<{ host: string; answer: AddressesCallback }> = [];
  const cache = new ServerNameCache((host, answer) => pending.push({ host, answer }), () => clock.t);
  const results: string[] = [];
  const dial = (host = 'broker.test'): void =>
    cache.resolve(host, (err, addresses) => results.push(err === null ? addresses.map((a) => a.address).join(',') : `error ${err.code}`));
  /** Answers the oldest lookup in flight. */
  const answer = (err: NodeJS.ErrnoException | null, addresses: LookupAddress[] = []): void => pending.shift()!.answer(err, addresses);
  return { cache, clock, pending, results, dial, answer };
}

describe('ServerNameCache', () => {
  it('asks the resolver once for dials that arrive together, then answers from memory until FRESH_MS', () => {
    const { clock, pending, results, dial, answer } = setup();
    dial();
    dial();
    dial();
    expect(pending).toHaveLength(1);
    expect(results).toEqual([]);
    answer(null, A);
    expect(results).toEqual(['10.0.0.1', '10.0.0.1', '10.0.0.1']);
    clock.t += FRESH_MS - 1;
    dial();
    expect(results).toHaveLength(4);
    expect(pending).toHaveLength(0);
  });

  it('past FRESH_MS a dial gets the last answer at once while one lookup refreshes it; the next dials get the new one', () => {
    const { clock, pending, results, dial, answer } = setup();
    dial();
    answer(null, A);
    clock.t += FRESH_MS;
    dial();
    dial();
    expect(results).toEqual(['10.0.0.1', '10.0.0.1', '10.0.0.1']);
    expect(pending).toHaveLength(1);
    answer(null, B);
    expect(results).toHaveLength(3); // nobody waited for it
    dial();
    expect(results.at(-1)).toBe('10.0.0.2,fd00::2');
  });

  it('an answer older than SERVE_WHILE_REFRESHING_MS (nothing dialled for a while) is not used: the dial waits for a fresh one', () => {
    const { clock, pending, results, dial, answer } = setup();
    dial();
    answer(null, A);
    clock.t += SERVE_WHILE_REFRESHING_MS;
    dial();
    expect(results).toEqual(['10.0.0.1']);
    expect(pending).toHaveLength(1);
    answer(null, B);
    expect(results).toEqual(['10.0.0.1', '10.0.0.2,fd00::2']);
  });

  it('a failed refresh keeps the last answer for HOLD_ON_ERROR_MS after it came; then dials fail with the lookup error', () => {
    const { clock, pending, results, dial, answer } = setup();
    dial();
    answer(null, A);
    clock.t += SERVE_WHILE_REFRESHING_MS;
    dial();
    answer(failure('EAI_AGAIN'));
    expect(results).toEqual(['10.0.0.1', '10.0.0.1']);
    // Held: later dials get it at once; the resolver is asked again once a second.
    clock.t += 1;
    dial();
    dial();
    expect(results).toEqual(['10.0.0.1', '10.0.0.1', '10.0.0.1', '10.0.0.1']);
    expect(pending).toHaveLength(0);
    clock.t += FRESH_MS;
    dial();
    expect(pending).toHaveLength(1);
    answer(failure('EAI_AGAIN'));
    clock.t = 50_000 + HOLD_ON_ERROR_MS;
    dial();
    expect(results).toHaveLength(5); // past the hold: it waits for the lookup
    answer(failure('EAI_AGAIN'));
    expect(results.at(-1)).toBe('error EAI_AGAIN');
    // The error itself is kept for FRESH_MS: no lookup per dial while the resolver fails.
    dial();
    expect(results.at(-1)).toBe('error EAI_AGAIN');
    expect(pending).toHaveLength(0);
    clock.t += FRESH_MS;
    dial();
    expect(pending).toHaveLength(1);
    answer(null, B);
    expect(results.at(-1)).toBe('10.0.0.2,fd00::2');
  });

  it('a first lookup that fails, or finds no address, fails the dials waiting for it', () => {
    const { pending, results, dial, answer } = setup();
    dial();
    dial('other.test');
    answer(failure('ENOTFOUND'));
    answer(null, []);
    expect(results).toEqual(['error ENOTFOUND', 'error EAI_NONAME']); // as HandleSocket names an empty answer
    expect(pending).toHaveLength(0);
  });

  it('expire(): the next dials wait for a fresh answer (the held one just failed); a failed lookup falls back to it', () => {
    const { cache, pending, results, dial, answer } = setup();
    dial();
    answer(null, A);
    cache.expire('broker.test');
    cache.expire('never-dialled.test');
    dial();
    dial();
    expect(results).toEqual(['10.0.0.1']);
    expect(pending).toHaveLength(1);
    answer(null, B);
    expect(results).toEqual(['10.0.0.1', '10.0.0.2,fd00::2', '10.0.0.2,fd00::2']);
    cache.expire('broker.test');
    dial();
    answer(failure('EAI_AGAIN'));
    expect(results.at(-1)).toBe('10.0.0.2,fd00::2');
  });

  it('expire() after a failed lookup: the next dial asks again instead of getting the kept error', () => {
    const { cache, pending, results, dial, answer } = setup();
    dial();
    answer(failure('ENOTFOUND'));
    cache.expire('broker.test');
    dial();
    expect(pending).toHaveLength(1);
    answer(null, A);
    expect(results).toEqual(['error ENOTFOUND', '10.0.0.1']);
  });

  it('a slow resolver: after SLOW_LOOKUP_MS the waiting dials get the held answer, and later ones do not wait', () => {
    vi.useFakeTimers();
    try {
      const { clock, pending, results, dial, answer } = setup();
      dial();
      answer(null, A);
      clock.t += SERVE_WHILE_REFRESHING_MS; // a quiet spell: the next dial waits for a fresh answer...
      dial();
      expect(results).toEqual(['10.0.0.1']);
      clock.t += SLOW_LOOKUP_MS;
      vi.advanceTimersByTime(SLOW_LOOKUP_MS);
      expect(results).toEqual(['10.0.0.1', '10.0.0.1']); // ...but not for a resolver that does not answer
      dial();
      expect(results).toHaveLength(3); // at once, while the lookup still runs
      expect(pending).toHaveLength(1);
      answer(null, B);
      dial();
      expect(results.at(-1)).toBe('10.0.0.2,fd00::2');
    } finally {
      vi.useRealTimers();
    }
  });

  it('tells of each failed lookup, and whether a held answer serves meanwhile', () => {
    const { cache, clock, results, dial, answer } = setup();
    const told: string[] = [];
    cache.onLookupFailed = (host, err, kept) => told.push(`${host} ${err.code} ${kept ? 'kept' : 'none'}`);
    dial('other.test');
    answer(failure('ENOTFOUND'));
    dial();
    answer(null, A);
    clock.t += FRESH_MS;
    dial();
    answer(failure('EAI_AGAIN'));
    expect(told).toEqual(['other.test ENOTFOUND none', 'broker.test EAI_AGAIN kept']);
    expect(results).toEqual(['error ENOTFOUND', '10.0.0.1', '10.0.0.1']);
  });

  it('refreshAll() (a reload): every name is asked anew at its next dial; during a resolver outage the held answer serves at once', () => {
    const { cache, clock, pending, results, dial, answer } = setup();
    dial();
    answer(null, A);
    cache.refreshAll();
    dial();
    expect(pending).toHaveLength(1);
    answer(null, B);
    expect(results).toEqual(['10.0.0.1', '10.0.0.2,fd00::2']);
    clock.t += FRESH_MS;
    dial();
    answer(failure('EAI_AGAIN')); // the resolver is out
    cache.refreshAll();
    dial();
    expect(results.at(-1)).toBe('10.0.0.2,fd00::2'); // at once
  });

  it('expire() with a slow resolver: the dials wait SLOW_LOOKUP_MS at most, then get the held answer (a restarting broker)', () => {
    vi.useFakeTimers();
    try {
      const { cache, clock, pending, results, dial, answer } = setup();
      dial();
      answer(null, A);
      cache.expire('broker.test');
      dial();
      expect(results).toEqual(['10.0.0.1']);
      clock.t += SLOW_LOOKUP_MS;
      vi.advanceTimersByTime(SLOW_LOOKUP_MS);
      expect(results).toEqual(['10.0.0.1', '10.0.0.1']);
      dial(); // the lookup still runs: at once
      expect(results).toHaveLength(3);
      expect(pending).toHaveLength(1);
    } finally {
      vi.useRealTimers();
    }
  });

  it('while the resolver fails, the dials served from the hold ask it once a second at most', () => {
    const { clock, pending, results, dial, answer } = setup();
    dial();
    answer(null, A);
    clock.t += FRESH_MS;
    dial();
    answer(failure('EAI_AGAIN'));
    for (let i = 0; i < 20; i++) {
      clock.t += 10;
      dial();
    }
    expect(pending).toHaveLength(0); // 200 ms after the failure: no new lookup
    expect(results).toHaveLength(22);
    clock.t += FRESH_MS;
    dial();
    expect(pending).toHaveLength(1);
  });

  it('keeps each name apart, and makes room past 1,024 names by dropping those not being looked up', () => {
    const { cache, pending, results, dial, answer } = setup();
    for (let i = 0; i < 1024; i++) {
      dial(`b${i}.test`);
      answer(null, [{ address: `10.1.${i >> 8}.${i & 255}`, family: 4 }]);
    }
    expect(cache.size).toBe(1024);
    expect(results.slice(0, 2)).toEqual(['10.1.0.0', '10.1.0.1']);
    dial('in-flight.test'); // pending, kept
    expect(cache.size).toBe(1);
    dial('next.test');
    expect(cache.size).toBe(2);
    expect(pending.map((p) => p.host)).toEqual(['in-flight.test', 'next.test']);
  });
});
