/**
 * Event-loop lag as seen by a timer: every `intervalMs` a tick measures how late it runs.
 *
 * Our own timer rather than perf_hooks.monitorEventLoopDelay because resetting that monitor also
 * forgets its previous tick, so a stall spanning a scrape was lost; here each window starts with
 * nothing but the clock keeps running across windows.
 *
 * The same ticks also feed prom-client's `nodejs_eventloop_lag_*` gauges (process-metrics.ts) in place of
 * prom-client's own monitor, a second timer every 10 ms: an idle process wakes 50 times a second instead of 150.
 */
import { createHistogram, performance, type RecordableHistogram } from 'node:perf_hooks';

export const LAG_SAMPLE_MS = 20;

export interface LagWindow {
  /** Seconds. */
  p99: number;
  max: number;
}

/** The time between ticks (the interval plus the lag), in seconds: what Node's monitorEventLoopDelay reports. */
export interface IntervalWindow {
  min: number;
  max: number;
  mean: number;
  stddev: number;
  p50: number;
  p90: number;
  p99: number;
}

export class LoopLagSampler {
  private readonly hist: RecordableHistogram = createHistogram();
  /** Nanoseconds between ticks, in windows of their own (prom-client's gauges are collected on another schedule). */
  private readonly intervals: RecordableHistogram = createHistogram();
  private readonly intervalMs: number;
  private readonly now: () => number;
  private last: number;
  private timer: NodeJS.Timeout | null = null;

  /**
   * @param now milliseconds, monotonic (performance.now by default)
   * @param autoStart false in tests that drive tick() by hand
   */
  constructor(intervalMs = LAG_SAMPLE_MS, now: () => number = () => performance.now(), autoStart = true) {
    this.intervalMs = intervalMs;
    this.now = now;
    this.last = now();
    if (autoStart) {
      this.timer = setInterval(() => this.tick(), intervalMs);
      this.timer.unref(); // never what keeps the process alive
    }
  }

  tick(): void {
    const t = this.now();
    const sinceMs = t - this.last;
    this.last = t;
    // The histograms take integers >= 1: nanoseconds, with "on time" (or early) as 1 ns.
    this.hist.record(Math.max(1, Math.round((sinceMs - this.intervalMs) * 1e6)));
    this.intervals.record(Math.max(1, Math.round(sinceMs * 1e6)));
  }

  /** Lag since the previous call, then starts a new window; null when no tick happened meanwhile. */
  takeWindow(): LagWindow | null {
    if (this.hist.count === 0) return null;
    const w = { p99: this.hist.percentile(99) / 1e9, max: this.hist.max / 1e9 };
    this.hist.reset();
    return w;
  }

  /** The times between ticks since the previous call, then a new window; null when no tick happened meanwhile. */
  takeIntervalWindow(): IntervalWindow | null {
    const h = this.intervals;
    if (h.count === 0) return null;
    const w = {
      min: h.min / 1e9,
      max: h.max / 1e9,
      mean: h.mean / 1e9,
      stddev: h.stddev / 1e9,
      p50: h.percentile(50) / 1e9,
      p90: h.percentile(90) / 1e9,
      p99: h.percentile(99) / 1e9,
    };
    h.reset();
    return w;
  }

  /**
   * Forget everything so far, the tick in progress too: a new window from now. For a stall that nobody met (the
   * start's warm-up, before any client): takeWindow() alone would still report its last stretch at the next tick.
   */
  restart(): void {
    const t = this.now();
    // The Node.js gauges still see the stretch (as prom-client's own monitor did): only our lag forgets it.
    this.intervals.record(Math.max(1, Math.round((t - this.last) * 1e6)));
    this.hist.reset();
    this.last = t;
  }

  /** Idempotent. */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}

/** The worse of two windows (the proxy workers' and the primary's loops), either may be absent. */
export function worstWindow(a: LagWindow | null, b: LagWindow | null): LagWindow | null {
  if (a === null) return b;
  if (b === null) return a;
  return { p99: Math.max(a.p99, b.p99), max: Math.max(a.max, b.max) };
}
