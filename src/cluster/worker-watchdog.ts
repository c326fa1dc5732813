/**
 * Which workers have gone silent. A ready worker reports to the primary every 250 ms (worker-main.ts
 * SNAPSHOT_MS); one that has sent nothing for `stallMs` has a blocked event loop (an endless loop, a stopped
 * process) while it holds sessions that no longer move: the primary kills it and restarts it, so its clients
 * are reset and reconnect at once instead of waiting for their keepalive to expire (HAProxy's watchdog ends
 * a process whose thread is stuck, too). Pure: the caller passes the clock.
 */

/** Silence that makes a worker stuck: 40 reports missed, far beyond any pause of a working event loop. */
export const WORKER_STALL_MS = 10_000;
/** How often the primary looks. */
export const WATCHDOG_TICK_MS = 1_000;

/** Test seam, as in test-hooks.ts: MQTT_LB_TEST_HOOKS=1 shortens the stall to 3 s. */
export function workerStallMs(env: NodeJS.ProcessEnv = process.env): number {
  return env['MQTT_LB_TEST_HOOKS'] === '1' ? 3_000 : WORKER_STALL_MS;
}

export class WorkerWatchdog {
  private readonly lastReport = new Map<number, number>();
  private lastTick: number;

  constructor(
    private readonly stallMs: number,
    now: number,
  ) {
    this.lastTick = now;
  }

  /** Worker `index` is ready, or sent a report. */
  reported(index: number, now: number): void {
    this.lastReport.set(index, now);
  }

  /** Worker `index` exited (or was killed): nothing to watch until a replacement is ready. */
  forget(index: number): void {
    this.lastReport.delete(index);
  }

  /**
   * Called every WATCHDOG_TICK_MS: the workers silent for `stallMs`, each with how long. A late tick means this
   * process was blocked itself, and the reports may be waiting unread in its pipes (timers run before I/O):
   * it judges no one and starts every count anew.
   */
  tick(now: number): Array<{ index: number; silentMs: number }> {
    const late = now - this.lastTick > 2 * WATCHDOG_TICK_MS;
    this.lastTick = now;
    const stalled: Array<{ index: number; silentMs: number }> = [];
    for (const [index, at] of this.lastReport) {
      if (late) this.lastReport.set(index, now);
      else if (now - at >= this.stallMs) stalled.push({ index, silentMs: Math.round(now - at) });
    }
    return stalled;
  }
}
