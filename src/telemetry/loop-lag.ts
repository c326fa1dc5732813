/**
 * Event-loop lag as seen by a timer: every `intervalMs` a tick measures how late it runs.
 *
 * Our own timer rather than perf_hooks.monitorEventLoopDelay because resetting that monitor also
 * forgets its previous tick, so a stall spanning a scrape was lost; here each window starts with
 * nothing but the clock keeps running across windows.
 *
 * The same ticks also feed prom-client's `nodejs_eventloop_lag_*` gauges (process-metrics.ts) in place of
 * prom-client's own monitor, a second timer every 10 ms.
 *
 * While the loop is idle (busy under 2 % of a second) the timer ticks every 100 ms instead of 20: on this kind of
 * VM each wake of an idle process costs 100-140 µs of CPU (the system call and the entry into JavaScript), so 50
 * wakes a second were most of an idle balancer's CPU. A tick that finds the loop busy (5 % of its interval) or
 * late by 5 ms goes back to 20 ms at once. An idle loop has no queue for lag to build in; what is lost is a stall
 * shorter than 100 ms that falls between two ticks (at 20 ms, only a stall under 20 ms could).
 */
import { createHistogram, performance, type RecordableHistogram } from 'node:perf_hooks';

export const LAG_SAMPLE_MS = 20;
/** The tick's interval while the loop is idle. */
export const IDLE_SAMPLE_MS = 100;
/** Busy under this fraction of a second: idle. */
const IDLE_BELOW = 0.02;
/** Busy from this fraction of an idle tick's interval, or late by this much: busy again. */
const BUSY_FROM = 0.05;
const BUSY_LAG_MS = 5;
/** How often a busy loop asks whether it has become idle. */
const IDLE_CHECK_MS = 1000;

/** The fraction of the time since the previous call that the event loop spent running callbacks (ELU). */
export type BusyFraction = () => number;

function eventLoopBusyFraction(): BusyFraction {
  let previous = performance.eventLoopUtilization();
  return () => {
    const current = performance.eventLoopUtilization();
    const u = performance.eventLoopUtilization(current, previous).utilization;
    previous = current;
    return u;
  };
}

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
  /** The busy interval; the timer's interval is this or IDLE_SAMPLE_MS. */
  private readonly busyIntervalMs: number;
  private readonly now: () => number;
  private readonly busyFraction: BusyFraction;
  private readonly autoStart: boolean;
  private currentIntervalMs: number;
  private last: number;
  /** When a busy loop last asked busyFraction(). */
  private lastIdleCheck: number;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;

  /**
   * @param now milliseconds, monotonic (performance.now by default)
   * @param autoStart false in tests that drive tick() by hand
   * @param busyFraction the loop's utilization since the previous call (performance.eventLoopUtilization by default)
   */
  constructor(intervalMs = LAG_SAMPLE_MS, now: () => number = () => performance.now(), autoStart = true, busyFraction?: BusyFraction) {
    this.busyIntervalMs = intervalMs;
    this.currentIntervalMs = intervalMs;
    this.now = now;
    this.busyFraction = busyFraction ?? eventLoopBusyFraction();
    this.autoStart = autoStart;
    this.last = now();
    this.lastIdleCheck = this.last;
    this.arm();
  }

  /** The timer's interval now: 20 ms, or 100 ms while the loop is idle. */
  get intervalMs(): number {
    return this.currentIntervalMs;
  }

  tick(): void {
    const t = this.now();
    const lagMs = t - this.last - this.currentIntervalMs;
    this.last = t;
    // The histograms take integers >= 1: nanoseconds, with "on time" (or early) as 1 ns. The intervals are those of
    // a 20 ms timer whatever the timer's interval is now (what the nodejs_eventloop_lag_* gauges have always read).
    this.hist.record(Math.max(1, Math.round(lagMs * 1e6)));
    this.intervals.record(Math.max(1, Math.round((lagMs + this.busyIntervalMs) * 1e6)));
    this.adapt(t, lagMs);
  }

  private adapt(t: number, lagMs: number): void {
    if (this.busyIntervalMs >= IDLE_SAMPLE_MS) return; // already as slow as idle
    if (this.currentIntervalMs === this.busyIntervalMs) {
      if (t - this.lastIdleCheck < IDLE_CHECK_MS) return;
      this.lastIdleCheck = t;
      if (this.busyFraction() < IDLE_BELOW) this.switchTo(IDLE_SAMPLE_MS);
    } else if (lagMs >= BUSY_LAG_MS || this.busyFraction() >= BUSY_FROM) {
      this.lastIdleCheck = t;
      this.switchTo(this.busyIntervalMs);
    }
  }

  private switchTo(ms: number): void {
    if (ms === this.currentIntervalMs) return;
    this.currentIntervalMs = ms;
    this.arm();
  }

  private arm(): void {
    if (!this.autoStart || this.closed) return;
    if (this.timer) clearInterval(this.timer);
    this.timer = setInterval(() => this.tick(), this.currentIntervalMs);
    this.timer.unref(); // never what keeps the process alive
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
    this.intervals.record(Math.max(1, Math.round((t - this.last - this.currentIntervalMs + this.busyIntervalMs) * 1e6)));
    this.hist.reset();
    this.last = t;
  }

  /** Idempotent. */
  close(): void {
    this.closed = true;
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
