import { describe, expect, it, vi } from 'vitest';
import { Evictor, EvictionPacer } from '../../src/health/eviction.js';
import { fakeSession, ManualClock, type FakeSession } from './health-fixtures.js';

function evictor(clock: ManualClock, rate: number | (() => number), isDue?: (s: FakeSession) => boolean): Evictor {
  return new Evictor(rate, 'shutdown', {
    now: clock.now,
    setTimer: clock.setTimer,
    clearTimer: clock.clearTimer,
    ...(isDue ? { isDue: (item) => isDue(item.session as FakeSession) } : {}),
  });
}

describe('Evictor on its default clocks', () => {
  it('paces on the monotonic clock: a wall-clock step back (NTP, a restored VM) does not stop the evictions', () => {
    vi.useFakeTimers({ now: 1_000_000 });
    try {
      const clock = new ManualClock(); // only marks when each session was evicted
      const ev = new Evictor(10, 'shutdown');
      const sessions = Array.from({ length: 3 }, () => fakeSession(clock));
      ev.evict(sessions);
      vi.advanceTimersByTime(1);
      vi.setSystemTime(Date.now() - 3_600_000);
      vi.advanceTimersByTime(500);
      expect(sessions.filter((s) => s.evictedAt !== null)).toHaveLength(3);
      ev.close();
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('EvictionPacer', () => {
  it('allows one at once after idle, then one per 1000/rate ms', () => {
    const p = new EvictionPacer();
    p.startAfterIdle(1000);
    expect(p.available(1000, 10)).toBe(1);
    p.consume(1000, 10, 1);
    expect(p.available(1050, 10)).toBe(0);
    expect(p.delayMs(1050, 10)).toBe(50);
    expect(p.available(1100, 10)).toBe(1);
  });

  it('lets a late timer catch up, but only by the bounded allowance', () => {
    const p = new EvictionPacer(50);
    p.startAfterIdle(0);
    p.consume(0, 100, 1); // next at 10
    expect(p.available(40, 100)).toBe(4); // 10, 20, 30, 40
    expect(p.available(10_000, 100)).toBe(6); // at most 50 ms of credit (+1)
  });

  it('banks no credit while idle', () => {
    const p = new EvictionPacer(50);
    p.startAfterIdle(0);
    p.consume(0, 100, 1);
    p.startAfterIdle(60_000);
    expect(p.available(60_000, 100)).toBe(1);
  });

  it('treats 0, negative, NaN and Infinity as unlimited', () => {
    const p = new EvictionPacer();
    for (const r of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(p.available(0, r)).toBe(Number.POSITIVE_INFINITY);
      expect(p.delayMs(0, r)).toBe(0);
    }
  });
});

describe('Evictor', () => {
  it('closes N sessions at rate R in about N/R seconds, evenly spaced', () => {
    const clock = new ManualClock();
    clock.t = 5000;
    const ev = evictor(clock, 50); // one every 20 ms
    const sessions = Array.from({ length: 100 }, () => fakeSession(clock));
    expect(ev.evict(sessions)).toBe(100);
    expect(sessions.every((s) => s.evictedAt === null)).toBe(true); // never inside evict()
    clock.advanceTo(5000 + 10_000);
    const times = sessions.map((s) => s.evictedAt!);
    expect(times.every((t) => t !== null)).toBe(true);
    expect(times[0]).toBe(5000);
    expect(times.at(-1)! - times[0]!).toBe(99 * 20); // (N-1)/R s
    for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!).toBe(20);
    expect(sessions.every((s) => s.evictReason === 'shutdown')).toBe(true);
    expect(ev.pending).toBe(0);
    expect(clock.pendingTimers).toBe(0);
  });

  it('keeps the average rate when its timers fire late', () => {
    const clock = new ManualClock();
    const ev = evictor(clock, 100); // every 10 ms
    const sessions = Array.from({ length: 200 }, () => fakeSession(clock));
    ev.evict(sessions);
    clock.advanceTo(60_000, 7); // every timer 7 ms late
    const last = Math.max(...sessions.map((s) => s.evictedAt!));
    // 200 at 100/s is ~2 s: lateness is absorbed by catch-up, not added per eviction.
    expect(last).toBeGreaterThanOrEqual(1990);
    expect(last).toBeLessThan(2100);
    // and never more than the catch-up allowance in one instant
    const perInstant = new Map<number, number>();
    for (const s of sessions) perInstant.set(s.evictedAt!, (perInstant.get(s.evictedAt!) ?? 0) + 1);
    expect(Math.max(...perInstant.values())).toBeLessThanOrEqual(6);
  });

  it('skips items no longer due without spending rate on them', () => {
    const clock = new ManualClock();
    const sessions = Array.from({ length: 10 }, () => fakeSession(clock));
    const skip = new Set(sessions.filter((_, i) => i % 2 === 1));
    const ev = evictor(clock, 10, (s) => !skip.has(s)); // every 100 ms
    ev.evict(sessions);
    clock.advanceTo(10_000);
    const done = sessions.filter((s) => s.evictedAt !== null);
    expect(done).toHaveLength(5);
    expect(done.map((s) => s.evictedAt)).toEqual([0, 100, 200, 300, 400]);
  });

  it('queues a session once; queuing it again updates the reason', () => {
    const clock = new ManualClock();
    const ev = evictor(clock, 1000);
    const s = fakeSession(clock);
    expect(ev.evict([s], 'server_down')).toBe(1);
    expect(ev.evict([s], 'drain')).toBe(0);
    expect(ev.pending).toBe(1);
    clock.advanceTo(10);
    expect(s.evictReason).toBe('drain');
  });

  it('re-reads a rate function at every step', () => {
    const clock = new ManualClock();
    let rate = 10;
    const ev = evictor(clock, () => rate);
    const sessions = Array.from({ length: 4 }, () => fakeSession(clock));
    ev.evict(sessions);
    clock.advanceTo(0); // first at once; next due at 100
    rate = 1; // reload: the next step paces at the new rate
    clock.advanceTo(100);
    expect(sessions[1]!.evictedAt).toBe(100);
    clock.advanceTo(1099);
    expect(sessions[2]!.evictedAt).toBeNull();
    clock.advanceTo(1100);
    expect(sessions[2]!.evictedAt).toBe(1100);
  });

  it('evicts everything in one step when the rate is unlimited (0)', () => {
    const clock = new ManualClock();
    const ev = evictor(clock, 0);
    const sessions = Array.from({ length: 1000 }, () => fakeSession(clock));
    ev.evict(sessions);
    clock.advanceTo(0);
    expect(sessions.every((s) => s.evictedAt === 0)).toBe(true);
  });

  it('cancel() drops matching items; drained() resolves when the queue empties', async () => {
    const clock = new ManualClock();
    const ev = evictor(clock, 10);
    const sessions = Array.from({ length: 3 }, () => fakeSession(clock));
    ev.evict(sessions);
    let drained = false;
    void ev.drained().then(() => (drained = true));
    expect(ev.cancel((item) => item.session === sessions[2])).toBe(1);
    clock.advanceTo(99); // evicted the first; the second is due at 100
    await Promise.resolve();
    expect(drained).toBe(false);
    clock.advanceTo(100);
    await Promise.resolve();
    expect(drained).toBe(true);
    expect(sessions[2]!.evictedAt).toBeNull();
    await ev.drained(); // at once when empty
  });

  it('close() stops evicting, forgets the queue, releases waiters and is idempotent', async () => {
    const clock = new ManualClock();
    const ev = evictor(clock, 10);
    const sessions = Array.from({ length: 5 }, () => fakeSession(clock));
    ev.evict(sessions);
    clock.advanceTo(0);
    const waiting = ev.drained();
    ev.close();
    ev.close();
    await waiting;
    clock.advanceTo(10_000);
    expect(sessions.filter((s) => s.evictedAt !== null)).toHaveLength(1);
    expect(clock.pendingTimers).toBe(0);
    expect(ev.evict([fakeSession(clock)])).toBe(0);
  });

  it('compacts its queue on long runs and still evicts each session exactly once', () => {
    const clock = new ManualClock();
    const ev = evictor(clock, 1000);
    const sessions = Array.from({ length: 5000 }, () => fakeSession(clock));
    ev.evict(sessions);
    clock.advanceTo(2500);
    ev.evict(Array.from({ length: 10 }, () => fakeSession(clock)));
    clock.advanceTo(20_000);
    expect(sessions.every((s) => s.evictedAt !== null)).toBe(true);
    expect(ev.pending).toBe(0);
  });
});
