/** pools.<name>.serverConnackTimeout's queues (src/proxy/connack-deadlines.ts), on an injected clock and timer. */
import { describe, expect, it } from 'vitest';
import { ConnackDeadlines, type ConnackWaiter } from '../../src/proxy/connack-deadlines.js';

class FakeTimers {
  now = 0;
  private pending: Array<{ at: number; fire: () => void; live: boolean }> = [];
  readonly schedule = (fire: () => void, delayMs: number): (() => void) => {
    const t = { at: this.now + delayMs, fire, live: true };
    this.pending.push(t);
    return () => {
      t.live = false;
    };
  };
  get armed(): number[] {
    return this.pending.filter((t) => t.live).map((t) => t.at);
  }
  /** Move the clock to `to`, firing what falls due on the way, in order. */
  advance(to: number): void {
    for (;;) {
      const due = this.pending.filter((t) => t.live && t.at <= to).sort((a, b) => a.at - b.at)[0];
      if (due === undefined) break;
      this.now = due.at;
      due.live = false;
      due.fire();
    }
    this.now = to;
  }
}

class Waiter implements ConnackWaiter {
  connackDueAt = 0;
  connackPrev: ConnackWaiter | null = null;
  connackNext: ConnackWaiter | null = null;
  connackQueue: object | null = null;
  overdueAt: number | null = null;
  constructor(
    readonly name: string,
    private readonly timers: FakeTimers,
    private readonly closes = true,
  ) {}
  get server(): { pool: string; name: string } {
    return { pool: 'p', name: this.name };
  }
  connackOverdue(): boolean {
    this.overdueAt = this.timers.now;
    return this.closes;
  }
}

function setup(): { timers: FakeTimers; deadlines: ConnackDeadlines; batches: Array<{ names: string[]; timeoutMs: number }> } {
  const timers = new FakeTimers();
  const batches: Array<{ names: string[]; timeoutMs: number }> = [];
  const deadlines = new ConnackDeadlines(
    (sessions, timeoutMs) => batches.push({ names: sessions.map((s) => s.server!.name), timeoutMs }),
    () => timers.now,
    timers.schedule,
  );
  return { timers, deadlines, batches };
}

describe('ConnackDeadlines', () => {
  it('makes each waiter overdue at its own deadline, with one timer per timeout value', () => {
    const { timers, deadlines, batches } = setup();
    const a = new Waiter('a', timers);
    const b = new Waiter('b', timers);
    deadlines.add(a, 1000);
    timers.advance(300);
    deadlines.add(b, 1000);
    expect(deadlines.waiting).toBe(2);
    expect(timers.armed).toEqual([1000]);
    timers.advance(999);
    expect(a.overdueAt).toBeNull();
    timers.advance(1000);
    expect(a.overdueAt).toBe(1000);
    expect(b.overdueAt).toBeNull();
    // Re-armed for the next head.
    expect(timers.armed).toEqual([1300]);
    timers.advance(1300);
    expect(b.overdueAt).toBe(1300);
    expect(batches).toEqual([
      { names: ['a'], timeoutMs: 1000 },
      { names: ['b'], timeoutMs: 1000 },
    ]);
    expect(deadlines.waiting).toBe(0);
    expect(timers.armed).toEqual([]);
  });

  it('forgets a waiter removed (answered or ended) from the head, the middle or the tail; removing twice is harmless', () => {
    const { timers, deadlines, batches } = setup();
    const ws = ['w0', 'w1', 'w2', 'w3', 'w4'].map((n) => new Waiter(n, timers));
    for (const w of ws) {
      deadlines.add(w, 500);
      timers.advance(timers.now + 10);
    }
    deadlines.remove(ws[0]!);
    deadlines.remove(ws[2]!);
    deadlines.remove(ws[4]!);
    deadlines.remove(ws[2]!);
    expect(deadlines.waiting).toBe(2);
    for (const w of [ws[0]!, ws[2]!, ws[4]!]) expect([w.connackQueue, w.connackPrev, w.connackNext]).toEqual([null, null, null]);
    timers.advance(2000);
    expect(ws.map((w) => w.overdueAt)).toEqual([null, 510, null, 530, null]);
    expect(batches.flatMap((b) => b.names)).toEqual(['w1', 'w3']);
  });

  it('keeps timeouts apart: a shorter one added later fires first', () => {
    const { timers, deadlines } = setup();
    const slow = new Waiter('slow', timers);
    const fast = new Waiter('fast', timers);
    deadlines.add(slow, 10_000);
    deadlines.add(fast, 100);
    timers.advance(100);
    expect(fast.overdueAt).toBe(100);
    expect(slow.overdueAt).toBeNull();
    timers.advance(10_000);
    expect(slow.overdueAt).toBe(10_000);
  });

  it('gives every waiter due at one expiry in one batch, leaving out those that were ending already', () => {
    const { timers, deadlines, batches } = setup();
    const ws = [new Waiter('a', timers), new Waiter('b', timers, false), new Waiter('c', timers)];
    for (const w of ws) deadlines.add(w, 200);
    timers.advance(200);
    expect(ws.every((w) => w.overdueAt === 200)).toBe(true);
    expect(batches).toEqual([{ names: ['a', 'c'], timeoutMs: 200 }]);
  });

  it('re-arms when its timer finds the head not yet due, and stays quiet once every waiter was answered', () => {
    const { timers, deadlines, batches } = setup();
    const a = new Waiter('a', timers);
    deadlines.add(a, 1000);
    deadlines.remove(a);
    timers.advance(500);
    const b = new Waiter('b', timers);
    deadlines.add(b, 1000); // the timer armed for `a` (at 1000) is still the queue's
    expect(timers.armed).toEqual([1000]);
    timers.advance(1000);
    expect(b.overdueAt).toBeNull();
    expect(timers.armed).toEqual([1500]);
    deadlines.remove(b);
    timers.advance(5000);
    expect(b.overdueAt).toBeNull();
    expect(batches).toEqual([]);
    expect(timers.armed).toEqual([]);
  });

  it('close() stops the timers and forgets every waiter (idempotent)', () => {
    const { timers, deadlines, batches } = setup();
    const a = new Waiter('a', timers);
    deadlines.add(a, 100);
    deadlines.close();
    deadlines.close();
    expect(deadlines.waiting).toBe(0);
    expect(a.connackQueue).toBeNull();
    timers.advance(1000);
    expect(a.overdueAt).toBeNull();
    expect(batches).toEqual([]);
  });
});
