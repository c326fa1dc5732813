/**
 * Sessions that wait, their CONNECT read and their client paused, for a server's first health verdict before
 * they are placed (Pool.verdictWaitUntil says when that is worth it), or for the pool a reload is adding (its
 * listener is bound before the reload commits). One set and one timer for all of them: any server state change
 * and every reload's end place them again (wake); the timer ends the wait of those whose deadline has passed.
 * Nothing here runs per packet, or at all while no server is waiting for its first verdict.
 */
import type { RefusalReason } from './connack.js';

/** What the waits see of a session (ClientSession). */
export interface VerdictWaiter {
  /** Until when it may wait (performance.now() time): set when it first parks, never moved later. */
  readonly verdictDeadline: number;
  /** Try to place it again: it is routed, parked again (before its deadline), or refused. */
  proceed(): void;
  refuse(reason: RefusalReason): void;
}

export interface VerdictWaitClock {
  now(): number;
  setTimer(fn: () => void, ms: number): unknown;
  clearTimer(handle: unknown): void;
  /** Run `fn` once the current event is done (setImmediate). */
  defer(fn: () => void): void;
}

const realClock: VerdictWaitClock = {
  now: () => performance.now(),
  setTimer: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimer: (handle) => clearTimeout(handle as NodeJS.Timeout),
  defer: (fn) => setImmediate(fn),
};

export class VerdictWaits {
  private readonly parked = new Set<VerdictWaiter>();
  private timer: unknown = null;
  private timerAt = Number.POSITIVE_INFINITY;
  private closedWith: RefusalReason | null = null;
  private wakeQueued = false;

  constructor(private readonly clock: VerdictWaitClock = realClock) {}

  get size(): number {
    return this.parked.size;
  }

  /** Hold `w` until a state change (wake) or its deadline. After close(), it is refused at once. */
  park(w: VerdictWaiter): void {
    if (this.closedWith !== null) {
      w.refuse(this.closedWith);
      return;
    }
    this.parked.add(w);
    if (w.verdictDeadline < this.timerAt) this.arm(w.verdictDeadline);
  }

  /** `w` ended (its client left, or it was refused): not kept until its deadline. */
  leave(w: VerdictWaiter): void {
    this.parked.delete(w);
  }

  /** A server changed state, or a reload ended: every waiting session is placed again (or parks again). */
  wake(): void {
    if (this.parked.size === 0) return;
    const waiting = [...this.parked];
    this.parked.clear();
    this.disarm();
    for (const w of waiting) w.proceed();
  }

  /**
   * wake(), once the current event is done: a state change is seen in the middle of the change that made it
   * (a reload replacing a pool's servers), when the pool is not yet fit to place anyone. Coalesced.
   */
  wakeSoon(): void {
    if (this.parked.size === 0 || this.wakeQueued) return;
    this.wakeQueued = true;
    this.clock.defer(() => {
      this.wakeQueued = false;
      this.wake();
    });
  }

  /** Refuse every waiting session (over the memory ceiling); returns how many. */
  refuseAll(reason: RefusalReason): number {
    const waiting = [...this.parked];
    this.parked.clear();
    this.disarm();
    for (const w of waiting) w.refuse(reason);
    return waiting.length;
  }

  /** Stopping: the waiting sessions are refused and any that would park later too. Idempotent. */
  close(reason: RefusalReason): void {
    this.closedWith ??= reason;
    this.refuseAll(this.closedWith);
  }

  private expire(): void {
    this.timer = null;
    this.timerAt = Number.POSITIVE_INFINITY;
    const now = this.clock.now();
    const due: VerdictWaiter[] = [];
    let next = Number.POSITIVE_INFINITY;
    for (const w of this.parked) {
      if (w.verdictDeadline <= now) due.push(w);
      else if (w.verdictDeadline < next) next = w.verdictDeadline;
    }
    for (const w of due) this.parked.delete(w);
    if (next !== Number.POSITIVE_INFINITY) this.arm(next);
    // Past its deadline a session does not park again: it is placed on what is known now, or refused.
    for (const w of due) w.proceed();
  }

  private arm(at: number): void {
    this.disarm();
    this.timerAt = at;
    // +1: a timer may fire a fraction of a millisecond early against performance.now().
    this.timer = this.clock.setTimer(() => this.expire(), Math.max(0, Math.ceil(at - this.clock.now())) + 1);
  }

  private disarm(): void {
    if (this.timer !== null) this.clock.clearTimer(this.timer);
    this.timer = null;
    this.timerAt = Number.POSITIVE_INFINITY;
  }
}
