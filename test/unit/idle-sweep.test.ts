import { describe, expect, it } from 'vitest';
import type { EvictReason } from '../../src/balancer/server.js';
import { IdleSweep, type IdleWatched } from '../../src/proxy/idle-sweep.js';

class FakeSession implements IdleWatched {
  spliced = true;
  bytesIn = 100;
  bytesOut = 50;
  bytesQueued = 0;
  idleEpoch = -1;
  idleBytesIn = 0;
  idleBytesOut = 0;
  idleBytesQueued = 0;
  idleSweeps = 0;
  evicted: EvictReason[] = [];
  evict(reason: EvictReason): void {
    this.evicted.push(reason);
  }
}

/** A schedule the test drives: the sweep runs when the test says, at the period it was asked for. */
function manualSchedule(): { schedule: (sweep: () => void, everyMs: number) => () => void; running: () => boolean; period: () => number } {
  let running = false;
  let period = 0;
  return {
    schedule: (_sweep, everyMs) => {
      running = true;
      period = everyMs;
      return () => {
        running = false;
      };
    },
    running: () => running,
    period: () => period,
  };
}

function setUp(sessions: FakeSession[]): { sweep: IdleSweep; clock: ReturnType<typeof manualSchedule>; reports: Array<[number, number]> } {
  const clock = manualSchedule();
  const reports: Array<[number, number]> = [];
  const sweep = new IdleSweep(() => sessions, (count, timeoutMs) => reports.push([count, timeoutMs]), clock.schedule);
  return { sweep, clock, reports };
}

describe('IdleSweep', () => {
  it('sweeps every half of the timeout; 0 schedules nothing', () => {
    const { sweep, clock } = setUp([]);
    sweep.configure(0);
    expect(clock.running()).toBe(false);
    sweep.configure(60_000);
    expect(clock.running()).toBe(true);
    expect(clock.period()).toBe(30_000);
    sweep.configure(0);
    expect(clock.running()).toBe(false);
  });

  it('closes a session found unchanged at two sweeps in a row after the first look, with reason idle', () => {
    const s = new FakeSession();
    const { sweep, reports } = setUp([s]);
    sweep.configure(10_000);
    expect(sweep.sweep()).toBe(0); // first look: marked
    expect(sweep.sweep()).toBe(0); // unchanged once (5 s)
    expect(s.evicted).toEqual([]);
    expect(sweep.sweep()).toBe(1); // unchanged twice (10 s)
    expect(s.evicted).toEqual(['idle']);
    expect(reports).toEqual([[1, 10_000]]);
    expect(sweep.watched).toBe(0); // forgotten once closed
    // Its close still under way at the next sweep (the sockets close asynchronously): not evicted nor counted again.
    expect(sweep.sweep()).toBe(0);
    expect(s.evicted).toEqual(['idle']);
    expect(reports).toHaveLength(1);
  });

  it('any movement starts the count afresh: bytes read either way, or queued bytes taken by a slow reader', () => {
    const s = new FakeSession();
    const { sweep } = setUp([s]);
    sweep.configure(10_000);
    const moves: Array<() => void> = [() => (s.bytesIn += 1), () => (s.bytesOut += 1), () => (s.bytesQueued = 4096), () => (s.bytesQueued = 0)];
    sweep.sweep();
    for (const move of moves) {
      sweep.sweep(); // unchanged once
      move();
      sweep.sweep(); // changed: count restarts
      expect(s.evicted).toEqual([]);
    }
    sweep.sweep();
    expect(sweep.sweep()).toBe(1);
  });

  it('looks only at spliced sessions (the others have their own bounds)', () => {
    const s = new FakeSession();
    s.spliced = false;
    const { sweep } = setUp([s]);
    sweep.configure(2000);
    for (let i = 0; i < 5; i++) expect(sweep.sweep()).toBe(0);
    expect(sweep.watched).toBe(0);
    s.spliced = true;
    sweep.sweep();
    sweep.sweep();
    expect(sweep.sweep()).toBe(1);
  });

  it('forgets sessions that ended; a session is closed on its own schedule among busy ones', () => {
    const quiet = new FakeSession();
    const busy = new FakeSession();
    const gone = new FakeSession();
    const live = [quiet, busy, gone];
    const { sweep } = setUp(live);
    sweep.configure(4000);
    sweep.sweep();
    expect(sweep.watched).toBe(3);
    live.pop(); // `gone` ended
    busy.bytesOut += 10;
    sweep.sweep();
    expect(sweep.watched).toBe(2);
    busy.bytesIn += 10;
    expect(sweep.sweep()).toBe(1);
    expect(quiet.evicted).toEqual(['idle']);
    expect(busy.evicted).toEqual([]);
    expect(gone.evicted).toEqual([]);
  });

  it('a new timeout starts every count afresh; close() stops and is idempotent', () => {
    const s = new FakeSession();
    const { sweep, clock } = setUp([s]);
    sweep.configure(10_000);
    sweep.sweep();
    sweep.sweep(); // unchanged once
    sweep.configure(20_000); // a reload
    expect(clock.period()).toBe(10_000);
    expect(sweep.watched).toBe(0);
    sweep.sweep();
    expect(sweep.sweep()).toBe(0);
    sweep.configure(20_000); // the same value: nothing restarts
    expect(sweep.sweep()).toBe(1);
    sweep.close();
    sweep.close();
    expect(clock.running()).toBe(false);
  });
});
