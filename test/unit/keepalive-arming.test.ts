import { describe, expect, it } from 'vitest';
import { KeepAliveArming, type KeepAliveSocket } from '../../src/proxy/keepalive-arming.js';

class FakeSocket implements KeepAliveSocket {
  destroyed = false;
  armed: Array<[boolean, number]> = [];
  setKeepAlive(enable: boolean, initialDelayMs: number): void {
    this.armed.push([enable, initialDelayMs]);
  }
}

/** A schedule the test drives: records the period and whether the timer runs. */
function manualSchedule(): { schedule: (tick: () => void, everyMs: number) => () => void; running: () => boolean; period: () => number; starts: () => number } {
  let running = false;
  let period = 0;
  let starts = 0;
  return {
    schedule: (_tick, everyMs) => {
      running = true;
      period = everyMs;
      starts++;
      return () => {
        running = false;
      };
    },
    running: () => running,
    period: () => period,
    starts: () => starts,
  };
}

describe('KeepAliveArming', () => {
  it('arms a socket on the second tick after it joined, with the idle delay, once', () => {
    const clock = manualSchedule();
    const arming = new KeepAliveArming(10_000, 60_000, clock.schedule);
    const s = new FakeSocket();
    arming.add(s);
    expect(clock.running()).toBe(true);
    expect(clock.period()).toBe(10_000);
    arming.tick(); // now 0-10 s old: not yet
    expect(s.armed).toEqual([]);
    arming.tick(); // now 10-20 s old
    expect(s.armed).toEqual([[true, 60_000]]);
    arming.tick();
    expect(s.armed).toHaveLength(1);
    expect(arming.pending).toBe(0);
  });

  it('never arms a socket that closed first (deleted in either generation)', () => {
    const arming = new KeepAliveArming(10_000, 60_000, manualSchedule().schedule);
    const young = new FakeSocket();
    const aging = new FakeSocket();
    arming.add(aging);
    arming.tick();
    arming.add(young);
    arming.delete(aging);
    arming.delete(young);
    arming.delete(young); // idempotent
    arming.tick();
    arming.tick();
    expect(aging.armed).toEqual([]);
    expect(young.armed).toEqual([]);
  });

  it('skips a socket destroyed without being deleted', () => {
    const arming = new KeepAliveArming(10_000, 60_000, manualSchedule().schedule);
    const s = new FakeSocket();
    arming.add(s);
    arming.tick();
    s.destroyed = true;
    arming.tick();
    expect(s.armed).toEqual([]);
  });

  it('keeps generations apart: each socket waits at least one full period', () => {
    const arming = new KeepAliveArming(10_000, 60_000, manualSchedule().schedule);
    const first = new FakeSocket();
    const second = new FakeSocket();
    arming.add(first);
    arming.tick();
    arming.add(second);
    arming.tick();
    expect(first.armed).toHaveLength(1);
    expect(second.armed).toHaveLength(0);
    arming.tick();
    expect(second.armed).toHaveLength(1);
  });

  it('stops its timer when nothing is left to arm and starts it again for the next socket', () => {
    const clock = manualSchedule();
    const arming = new KeepAliveArming(10_000, 60_000, clock.schedule);
    arming.add(new FakeSocket());
    arming.tick();
    expect(clock.running()).toBe(true);
    arming.tick();
    expect(clock.running()).toBe(false);
    arming.add(new FakeSocket());
    expect(clock.running()).toBe(true);
    expect(clock.starts()).toBe(2);
  });

  it('close() stops the timer and forgets every socket (idempotent)', () => {
    const clock = manualSchedule();
    const arming = new KeepAliveArming(10_000, 60_000, clock.schedule);
    const s = new FakeSocket();
    arming.add(s);
    arming.close();
    arming.close();
    expect(clock.running()).toBe(false);
    expect(arming.pending).toBe(0);
    arming.tick();
    expect(s.armed).toEqual([]);
  });
});
