import { describe, expect, it } from 'vitest';
import { WATCHDOG_TICK_MS, WORKER_STALL_MS, WorkerWatchdog, workerStallMs } from '../../src/cluster/worker-watchdog.js';

/** Ticks every WATCHDOG_TICK_MS from `from` to `to` (inclusive), collecting what each tick reports. */
function tickUntil(w: WorkerWatchdog, from: number, to: number): Array<{ at: number; index: number; silentMs: number }> {
  const out: Array<{ at: number; index: number; silentMs: number }> = [];
  for (let t = from; t <= to; t += WATCHDOG_TICK_MS) for (const s of w.tick(t)) out.push({ at: t, ...s });
  return out;
}

describe('WorkerWatchdog', () => {
  it('names a worker once it has been silent for the stall time, not before, and not one that keeps reporting', () => {
    const w = new WorkerWatchdog(10_000, 0);
    w.reported(0, 0);
    w.reported(1, 0);
    const seen: Array<{ at: number; index: number; silentMs: number }> = [];
    for (let t = WATCHDOG_TICK_MS; t <= 12_000; t += WATCHDOG_TICK_MS) {
      w.reported(1, t - 250); // worker 1 reports every 250 ms
      for (const s of w.tick(t)) seen.push({ at: t, ...s });
    }
    expect(seen.filter((s) => s.index === 1)).toEqual([]);
    expect(seen.filter((s) => s.index === 0)[0]).toEqual({ at: 10_000, index: 0, silentMs: 10_000 });
  });

  it('watches nobody it was told to forget (an exited worker), until a replacement reports', () => {
    const w = new WorkerWatchdog(3_000, 0);
    w.reported(0, 0);
    w.forget(0);
    expect(tickUntil(w, WATCHDOG_TICK_MS, 20_000)).toEqual([]);
    w.reported(0, 20_000);
    expect(tickUntil(w, 21_000, 23_000).map((s) => s.at)).toEqual([23_000]);
  });

  it('a late tick (the primary itself was blocked, reports unread) judges no one and counts anew', () => {
    const w = new WorkerWatchdog(3_000, 0);
    w.reported(0, 0);
    expect(w.tick(1_000)).toEqual([]);
    // The primary's own loop stalls 5 s: the worker's reports sit in the pipe.
    expect(w.tick(6_000)).toEqual([]);
    // Counted from the late tick: silent for 3 s from there.
    expect(tickUntil(w, 7_000, 9_000).map((s) => s.at)).toEqual([9_000]);
  });

  it('is 10 s in production, 3 s only with the test hooks on', () => {
    expect(WORKER_STALL_MS).toBe(10_000);
    expect(workerStallMs({})).toBe(10_000);
    expect(workerStallMs({ MQTT_LB_TEST_HOOKS: '1' })).toBe(3_000);
  });
});
