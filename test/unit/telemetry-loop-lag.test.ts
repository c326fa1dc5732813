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
