/**
 * Waiting for a first health verdict: when a pick is worth holding back (Pool.verdictWaitUntil, with the clock
 * injected), and the set of parked sessions (VerdictWaits: wake, deadlines, refusals) with driven timers.
 */
import { describe, expect, it } from 'vitest';
import { FIRST_VERDICT_MARGIN_MS, Pool } from '../../src/balancer/pool.js';
import type { Server } from '../../src/balancer/server.js';
import { VerdictWaits, type VerdictWaitClock, type VerdictWaiter } from '../../src/proxy/verdict-wait.js';
import type { RefusalReason } from '../../src/proxy/connack.js';
import { byName, clientId, poolConfig, type PoolSpec } from './balancer-fixtures.js';

const TIMEOUT = 1000; // healthConfig()'s health.timeout
const WINDOW = TIMEOUT + FIRST_VERDICT_MARGIN_MS;

/** A pool whose clock reads `t.now`; every server up and judged long ago, except those made pending. */
function poolAt(spec: PoolSpec, t: { now: number }): Pool {
  const pool = new Pool(poolConfig(spec), undefined, { now: () => t.now });
  for (const s of pool.servers) {
    s.setHealth('up');
    s.unknownSince = Number.NEGATIVE_INFINITY;
  }
  return pool;
}

function pending(server: Server, since: number): void {
  server.setHealth('unknown');
  server.unknownSince = since;
}

function waitFor(pool: Pool, key: string): number {
  const keys = { clientId: Buffer.from(key), username: null };
  return pool.verdictWaitUntil(pool.routingKey(keys), pool.candidates(keys));
}

/** The winner of `key` with every server of `spec` up. */
function ownerWithAllUp(spec: PoolSpec, key: string): string {
  return poolAt(spec, { now: 0 }).candidates({ clientId: Buffer.from(key), username: null })[0]!.name;
}

describe('Pool.verdictWaitUntil', () => {
  it('is 0 while every server has a verdict, whatever it is', () => {
    const t = { now: 10_000 };
    const pool = poolAt({ servers: ['b1', 'b2', 'b3'] }, t);
    byName(pool.servers, 'b2').setHealth('down');
    for (let i = 0; i < 200; i++) expect(waitFor(pool, clientId(i).toString())).toBe(0);
  });

  it('holds a client with no candidate while a server waits for its first verdict, until its window ends', () => {
    const t = { now: 10_000 };
    const pool = poolAt({ servers: ['b1', 'b2'] }, t);
    byName(pool.servers, 'b1').setHealth('down');
    pending(byName(pool.servers, 'b2'), 9_900);
    expect(waitFor(pool, 'c1')).toBe(9_900 + WINDOW);
    t.now = 9_900 + WINDOW; // the window is over: a server still unknown holds no one (a probe that cannot run here)
    expect(waitFor(pool, 'c1')).toBe(0);
  });

  it('holds a hashed client whose key the pending server would own, and only those', () => {
    const spec: PoolSpec = { servers: ['b1', 'b2', 'b3'] };
    const t = { now: 5_000 };
    const pool = poolAt(spec, t);
    pending(byName(pool.servers, 'b3'), 4_000);
    let held = 0;
    for (let i = 0; i < 400; i++) {
      const key = clientId(i).toString();
      const until = waitFor(pool, key);
      expect(until, key).toBe(ownerWithAllUp(spec, key) === 'b3' ? 4_000 + WINDOW : 0);
      if (until > 0) held++;
    }
    // About a third of the keys belong to b3.
    expect(held).toBeGreaterThan(80);
    expect(held).toBeLessThan(200);
  });

  it('does not hold a client placed by a keyless strategy or by the fallback (empty key) while others can take it', () => {
    const t = { now: 5_000 };
    const rr = poolAt({ servers: ['b1', 'b2'], balance: 'round-robin' }, t);
    pending(byName(rr.servers, 'b2'), 4_900);
    for (let i = 0; i < 50; i++) expect(waitFor(rr, clientId(i).toString())).toBe(0);
    const hashed = poolAt({ servers: ['b1', 'b2'] }, t);
    pending(byName(hashed.servers, 'b2'), 4_900);
    expect(waitFor(hashed, '')).toBe(0);
  });

  it('holds clients served by backups while a non-backup server is pending, not the other way round', () => {
    const t = { now: 5_000 };
    const pool = poolAt({ servers: ['main', { name: 'spare', backup: true }] }, t);
    pending(byName(pool.servers, 'main'), 4_900);
    expect(waitFor(pool, 'c1')).toBe(4_900 + WINDOW); // the backup would take it now; main would once judged
    const other = poolAt({ servers: ['main', { name: 'spare', backup: true }] }, t);
    pending(byName(other.servers, 'spare'), 4_900);
    for (let i = 0; i < 50; i++) expect(waitFor(other, clientId(i).toString())).toBe(0);
  });

  it('ignores servers in maintenance, draining or of weight 0', () => {
    const t = { now: 5_000 };
    const pool = poolAt({ servers: ['b1', 'b2', 'b3', { name: 'zero', weight: 0 }] }, t);
    byName(pool.servers, 'b1').setHealth('down');
    for (const name of ['b2', 'b3', 'zero']) pending(byName(pool.servers, name), 4_900);
    byName(pool.servers, 'b2').setAdmin('maint');
    byName(pool.servers, 'b3').setAdmin('drain');
    expect(waitFor(pool, 'c1')).toBe(0);
  });

  it('a server coming back from maintenance starts a new window (its probe runs at once)', () => {
    const pool = new Pool(poolConfig({ servers: ['b1'] }));
    const s = byName(pool.servers, 'b1');
    s.setAdmin('maint');
    s.unknownSince = 0;
    const before = performance.now();
    s.setAdmin('ready');
    expect(s.state).toBe('unknown');
    expect(s.unknownSince).toBeGreaterThanOrEqual(before);
    expect(pool.verdictWaitUntil(Buffer.from('c'), [])).toBeGreaterThan(before + TIMEOUT);
  });
});

/** Timers and deferred calls run only when the test says so. */
function drivenClock(): VerdictWaitClock & { t: number; timers: Array<{ at: number; fn: () => void; live: boolean }>; deferred: Array<() => void>; advance(ms: number): void } {
  const c = {
    t: 0,
    timers: [] as Array<{ at: number; fn: () => void; live: boolean }>,
    deferred: [] as Array<() => void>,
    now: () => c.t,
    setTimer: (fn: () => void, ms: number) => {
      const timer = { at: c.t + ms, fn, live: true };
      c.timers.push(timer);
      return timer;
    },
    clearTimer: (h: unknown) => {
      (h as { live: boolean }).live = false;
    },
    defer: (fn: () => void) => c.deferred.push(fn),
    advance(ms: number) {
      c.t += ms;
      for (const timer of [...c.timers]) {
        if (timer.live && timer.at <= c.t) {
          timer.live = false;
          timer.fn();
        }
      }
    },
  };
  return c;
}

/** A session stand-in: parks again on proceed() while `due()` says so and its deadline has not passed. */
class Waiter implements VerdictWaiter {
  placed = 0;
  refused: RefusalReason | null = null;
  verdictDeadline: number;
  constructor(
    private readonly waits: VerdictWaits,
    private readonly clock: { now(): number },
    deadline: number,
    public due: () => boolean = () => true,
  ) {
    this.verdictDeadline = deadline;
  }
  proceed(): void {
    if (this.due() && this.clock.now() < this.verdictDeadline) this.waits.park(this);
    else this.placed++;
  }
  refuse(reason: RefusalReason): void {
    this.refused = reason;
  }
}

describe('VerdictWaits', () => {
  it('wakes every parked session on a state change; those still due park again', () => {
    const clock = drivenClock();
    const waits = new VerdictWaits(clock);
    let verdict = false;
    const a = new Waiter(waits, clock, 1_500, () => !verdict);
    const b = new Waiter(waits, clock, 1_500, () => !verdict);
    waits.park(a);
    waits.park(b);
    waits.wake();
    expect([a.placed, b.placed, waits.size]).toEqual([0, 0, 2]);
    verdict = true;
    waits.wakeSoon();
    waits.wakeSoon(); // coalesced
    expect(clock.deferred).toHaveLength(1);
    clock.deferred.shift()!();
    expect([a.placed, b.placed, waits.size]).toEqual([1, 1, 0]);
  });

  it('places each session at its own deadline when no verdict comes, then stops its timer', () => {
    const clock = drivenClock();
    const waits = new VerdictWaits(clock);
    const early = new Waiter(waits, clock, 1_000);
    const late = new Waiter(waits, clock, 3_000);
    waits.park(late);
    waits.park(early);
    clock.advance(999);
    expect(early.placed).toBe(0);
    clock.advance(2);
    expect([early.placed, late.placed, waits.size]).toEqual([1, 0, 1]);
    clock.advance(2_000);
    expect([early.placed, late.placed, waits.size]).toEqual([1, 1, 0]);
    expect(clock.timers.filter((t) => t.live)).toHaveLength(0);
  });

  it('a session that left is not placed later', () => {
    const clock = drivenClock();
    const waits = new VerdictWaits(clock);
    const gone = new Waiter(waits, clock, 1_000);
    waits.park(gone);
    waits.leave(gone);
    clock.advance(2_000);
    waits.wake();
    expect(gone.placed).toBe(0);
  });

  it('refuses the waiting sessions over the memory ceiling, and every one at and after close', () => {
    const clock = drivenClock();
    const waits = new VerdictWaits(clock);
    const a = new Waiter(waits, clock, 1_000);
    waits.park(a);
    expect(waits.refuseAll('overloaded')).toBe(1);
    expect(a.refused).toBe('overloaded');
    const b = new Waiter(waits, clock, 1_000);
    waits.park(b);
    waits.close('shutting_down');
    waits.close('overloaded'); // idempotent: the first reason stays
    expect(b.refused).toBe('shutting_down');
    const c = new Waiter(waits, clock, 1_000);
    waits.park(c);
    expect([c.refused, waits.size]).toEqual(['shutting_down', 0]);
    clock.advance(5_000);
    expect([a.placed, b.placed, c.placed]).toEqual([0, 0, 0]);
  });
});

describe('a server moved again before its first verdict at the new place', () => {
  it('gets a new window: its clients wait for the probe of the latest place, not the rest of the first one', () => {
    const spec: PoolSpec = { servers: [{ name: 'b1', host: '10.0.0.1' }, { name: 'b2', host: '10.0.0.2' }] };
    const pool = new Pool(poolConfig(spec));
    for (const s of pool.servers) s.setHealth('up');
    const b2 = byName(pool.servers, 'b2');
    pool.reconfigure(poolConfig({ servers: [{ name: 'b1', host: '10.0.0.1' }, { name: 'b2', host: '10.0.0.3' }] }));
    expect(b2.health).toBe('unknown');
    b2.unknownSince -= 10_000; // the first move long ago: its window is over
    const key = Array.from({ length: 200 }, (_, i) => clientId(i)).find((k) => ownerWithAllUp(spec, k.toString()) === 'b2')!;
    const keys = { clientId: key, username: null };
    expect(pool.verdictWaitUntil(key, pool.candidates(keys))).toBe(0);
    const before = performance.now();
    pool.reconfigure(poolConfig({ servers: [{ name: 'b1', host: '10.0.0.1' }, { name: 'b2', host: '10.0.0.4' }] }));
    expect(b2.unknownSince).toBeGreaterThanOrEqual(before);
    expect(pool.verdictWaitUntil(key, pool.candidates(keys))).toBeGreaterThan(before + TIMEOUT);
  });
});
