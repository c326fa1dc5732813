/**
 * Event-loop lag as seen by a timer: every `intervalMs` a tick measures how late it runs.
 *
 * Our own timer rather than perf_hooks.monitorEventLoopDelay because resetting that monitor also
 * forgets its previous tick, so a stall spanning a scrape was lost; here each window starts with
 * nothing but the clock keeps running across windows.
 */
import { createHistogram, performance, type RecordableHistogram } from 'node:perf_hooks';

export interface LagWindow {
  /** Seconds. */
  p99: number;
  max: number;
}

export class LoopLagSampler {
  private readonly hist: RecordableHistogram = createHistogram();
  private readonly intervalMs: number;
  private readonly now: () => number;
  private last: number;
  private timer: NodeJS.Timeout | null = null;

  /**
   * @param now milliseconds, monotonic (performance.now by default)
   * @param autoStart false in tests that drive tick() by hand
   */
  constructor(intervalMs = 20, now: () => number = () => performance.now(), autoStart = true) {
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
    const lateMs = t - this.last - this.intervalMs;
    this.last = t;
    // The histogram takes integers >= 1: nanoseconds, with "on time" (or early) as 1 ns.
    this.hist.record(Math.max(1, Math.round(lateMs * 1e6)));
  }

  /** Lag since the previous call, then starts a new window; null when no tick happened meanwhile. */
  takeWindow(): LagWindow | null {
    if (this.hist.count === 0) return null;
    const w = { p99: this.hist.percentile(99) / 1e9, max: this.hist.max / 1e9 };
    this.hist.reset();
    return w;
  }

  /**
   * Forget everything so far, the tick in progress too: a new window from now. For a stall that nobody met (the
   * start's warm-up, before any client): takeWindow() alone would still report its last stretch at the next tick.
   */
  restart(): void {
    this.hist.reset();
    this.last = this.now();
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
