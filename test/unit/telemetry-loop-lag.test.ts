import { describe, expect, it } from 'vitest';
import { LoopLagSampler } from '../../src/telemetry/loop-lag.js';

describe('LoopLagSampler (manual clock)', () => {
  it('measures how late each tick runs, per window', () => {
    let t = 1000;
    const s = new LoopLagSampler(20, () => t, false);
    expect(s.takeWindow()).toBeNull();

    t += 20; // on time
    s.tick();
    t += 20;
    s.tick();
    t += 170; // 150 ms late: a stall
    s.tick();
    const w = s.takeWindow()!;
    expect(w.max).toBeCloseTo(0.15, 3);
    expect(w.p99).toBeCloseTo(0.15, 3);

    // The next window starts empty but the clock carries on: a stall spanning the window edge counts.
    expect(s.takeWindow()).toBeNull();
    t += 520;
    s.tick();
    expect(s.takeWindow()!.max).toBeCloseTo(0.5, 3);
  });

  it('treats early or on-time ticks as no lag', () => {
    let t = 0;
    const s = new LoopLagSampler(20, () => t, false);
    t += 19;
    s.tick();
    t += 20;
    s.tick();
    const w = s.takeWindow()!;
    expect(w.max).toBeLessThan(1e-6);
    expect(w.p99).toBeLessThan(1e-6);
    s.close();
    s.close();
  });
});

describe('LoopLagSampler: times between ticks (for nodejs_eventloop_lag_*)', () => {
  it('keeps its own windows, and a restart forgets the lag but not the stretch', () => {
    let t = 0;
    const s = new LoopLagSampler(20, () => t, false);
    expect(s.takeIntervalWindow()).toBeNull();
    t += 20;
    s.tick();
    t += 60;
    s.tick();
    expect(s.takeWindow()!.max).toBeCloseTo(0.04, 3); // taking the lag window leaves the intervals
    const w = s.takeIntervalWindow()!;
    expect(w.min).toBeCloseTo(0.02, 3);
    expect(w.max).toBeCloseTo(0.06, 3);
    expect(w.mean).toBeCloseTo(0.04, 3);
    expect(s.takeIntervalWindow()).toBeNull();

    t += 500; // the start's warm-up, say
    s.restart();
    t += 20;
    s.tick();
    expect(s.takeWindow()!.max).toBeLessThan(1e-6);
    expect(s.takeIntervalWindow()!.max).toBeCloseTo(0.5, 3);
    s.close();
  });
});

describe('worstWindow', () => {
  it('takes the worse of the primary and the workers per field, either may be absent', async () => {
    const { worstWindow } = await import('../../src/telemetry/loop-lag.js');
    expect(worstWindow(null, null)).toBeNull();
    expect(worstWindow({ p99: 0.01, max: 0.02 }, null)).toEqual({ p99: 0.01, max: 0.02 });
    expect(worstWindow(null, { p99: 0.5, max: 0.6 })).toEqual({ p99: 0.5, max: 0.6 });
    expect(worstWindow({ p99: 0.01, max: 0.9 }, { p99: 0.5, max: 0.6 })).toEqual({ p99: 0.5, max: 0.9 });
  });
});

describe('LoopLagSampler: a slower tick while the loop is idle', () => {
  function sampler() {
    let t = 0;
    let busy = 0;
    const asked: number[] = [];
    const s = new LoopLagSampler(20, () => t, false, () => {
      asked.push(t);
      return busy;
    });
    const advance = (ms: number) => {
      t += ms;
      s.tick();
    };
    return { s, advance, asked, setBusy: (f: number) => (busy = f) };
  }

  it('ticks every 100 ms after a second under 2 % busy, and its lag is measured against 100 ms', () => {
    const { s, advance, asked, setBusy } = sampler();
    setBusy(0.019);
    for (let i = 0; i < 49; i++) advance(20);
    expect(asked).toEqual([]); // a busy loop asks once a second, not per tick
    expect(s.intervalMs).toBe(20);
    advance(20);
    expect(asked).toEqual([1000]);
    expect(s.intervalMs).toBe(100);
    s.takeWindow();
    s.takeIntervalWindow();

    advance(100); // on time
    advance(103); // 3 ms late: still idle
    expect(s.intervalMs).toBe(100);
    const w = s.takeWindow()!;
    expect(w.max).toBeCloseTo(0.003, 4);
    // The nodejs_eventloop_lag_* intervals read as a 20 ms timer's would, whatever the interval now.
    const iw = s.takeIntervalWindow()!;
    expect(iw.min).toBeCloseTo(0.02, 4);
    expect(iw.max).toBeCloseTo(0.023, 4);
  });

  it('stays at 20 ms while the loop is busy from 2 %', () => {
    const { s, advance, asked, setBusy } = sampler();
    setBusy(0.02);
    for (let i = 0; i < 200; i++) advance(20);
    expect(asked).toEqual([1000, 2000, 3000, 4000]);
    expect(s.intervalMs).toBe(20);
  });

  it('goes back to 20 ms at the first idle tick that finds 5 % busy, or a lag of 5 ms', () => {
    const { s, advance, asked, setBusy } = sampler();
    setBusy(0);
    for (let i = 0; i < 50; i++) advance(20);
    expect(s.intervalMs).toBe(100);
    setBusy(0.049);
    advance(100);
    expect(s.intervalMs).toBe(100);
    setBusy(0.05);
    advance(100);
    expect(s.intervalMs).toBe(20);
    expect(asked.at(-1)).toBe(1200);

    // Busy again: the next idle check is a second after the switch, not sooner.
    setBusy(0);
    for (let i = 0; i < 49; i++) advance(20);
    expect(s.intervalMs).toBe(20);
    advance(20);
    expect(s.intervalMs).toBe(100);

    // A stall that delays an idle tick: busy again whatever the utilization says.
    advance(100 + 4.9);
    expect(s.intervalMs).toBe(100);
    advance(100 + 250);
    expect(s.intervalMs).toBe(20);
    expect(s.takeWindow()!.max).toBeCloseTo(0.25, 3);
  });

  it('never slows a sampler that already ticks at 100 ms or more', () => {
    let t = 0;
    const s = new LoopLagSampler(100, () => t, false, () => 0);
    for (let i = 0; i < 30; i++) {
      t += 100;
      s.tick();
    }
    expect(s.intervalMs).toBe(100);
  });
});

describe('LoopLagSampler: its own timer', () => {
  it('switches its real timer to 100 ms when the loop is idle, and close() stops it', async () => {
    const s = new LoopLagSampler(20, undefined, true, () => 0);
    try {
      const deadline = Date.now() + 3000;
      while (s.intervalMs !== 100 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(s.intervalMs).toBe(100);
      s.takeWindow();
      await new Promise((r) => setTimeout(r, 450));
      const w = s.takeWindow();
      expect(w).not.toBeNull(); // it still ticks
    } finally {
      s.close();
      s.close();
    }
    s.takeWindow();
    await new Promise((r) => setTimeout(r, 250));
    expect(s.takeWindow()).toBeNull();
  });
});
