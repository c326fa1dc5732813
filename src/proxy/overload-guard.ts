/**
 * Samples the memory in use against limits.maxMemory (memory-ceiling.ts decides) and tells the app when the
 * balancer becomes overloaded or recovers. One timer per process, not per session; off when the ceiling is 0.
 *
 * Shedding frees buffers only for the garbage collector, and V8 may not collect for a long while once the
 * process is quiet (its external-memory trigger moves up with the live memory it last saw): the measure would
 * stay over the ceiling with nothing left to shed. So while overloaded the guard runs a full collection before
 * it measures, at most every COLLECT_EVERY_MS (a pause of a few milliseconds for a heap of tens of MiB), the
 * way Envoy's overload manager has a "shrink heap" action.
 */
import v8 from 'node:v8';
import vm from 'node:vm';
import { ENTER_FRACTION, MemoryCeiling } from './memory-ceiling.js';
import { monotonicNow } from '../monotonic-clock.js';

/**
 * How often memory is sampled. A flood of large unfinished CONNECTs can grow memory by up to its bandwidth per
 * period (about 100 MB in 100 ms over loopback); process.memoryUsage() costs tens of microseconds.
 */
export const SAMPLE_MS = 100;

/** While overloaded, a full collection before the sample at most this often. */
export const COLLECT_EVERY_MS = 2000;

/**
 * V8's heap in use plus the memory of ArrayBuffers (every Buffer): what the ceiling compares (memory-ceiling.ts
 * says why not RSS). `arrayBuffers` rather than `external`: with concurrent GC, `external` is brought down only
 * at the collection after the one that freed the buffers.
 */
export function memoryInUse(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

let fullCollection: (() => void) | null | undefined;

/**
 * A full garbage collection now. `gc` exists only with --expose-gc (the launcher does not set it); otherwise
 * the flag is set now and a new context's `gc` is taken: V8 installs it in contexts created after the flag.
 * Returns false where neither works.
 */
export function collectGarbage(): boolean {
  if (fullCollection === undefined) {
    const global = (globalThis as { gc?: unknown }).gc;
    if (typeof global === 'function') {
      fullCollection = global as () => void;
    } else {
      try {
        v8.setFlagsFromString('--expose-gc');
        const gc: unknown = vm.runInNewContext('gc');
        fullCollection = typeof gc === 'function' ? (gc as () => void) : null;
      } catch {
        fullCollection = null;
      }
    }
  }
  if (fullCollection === null) return false;
  fullCollection();
  return true;
}

export interface OverloadActions {
  /** `refusedBytes`: what unfinished CONNECTs were refused since the last sample, for want of headroom. */
  entered(inUseBytes: number, maxBytes: number, refusedBytes: number): void;
  left(inUseBytes: number, maxBytes: number): void;
  /** After every sample: what memory may still grow by before the ceiling is reached (headroomBytes). */
  sampled?(headroomBytes: number): void;
}

export class OverloadGuard {
  private readonly ceiling: MemoryCeiling;
  private readonly actions: OverloadActions;
  private readonly measure: () => number;
  private readonly collect: () => unknown;
  private readonly now: () => number;
  private readonly intervalMs: number;
  private timer: NodeJS.Timeout | null = null;
  private soon: NodeJS.Immediate | null = null;
  /** Allocations refused for want of headroom since the last sample (refused()). */
  private refusedBytes = 0;
  /** While overloaded: when the next sample may run a full collection first. */
  private nextCollectAt = 0;
  private started = false;
  private closed = false;

  constructor(
    maxBytes: number,
    actions: OverloadActions,
    hooks: { measure?: () => number; collect?: () => unknown; now?: () => number; intervalMs?: number } = {},
  ) {
    this.ceiling = new MemoryCeiling(maxBytes);
    this.actions = actions;
    this.measure = hooks.measure ?? memoryInUse;
    this.collect = hooks.collect ?? collectGarbage;
    this.now = hooks.now ?? monotonicNow;
    this.intervalMs = hooks.intervalMs ?? SAMPLE_MS;
  }

  get active(): boolean {
    return this.ceiling.active;
  }

  get maxBytes(): number {
    return this.ceiling.limit;
  }

  /**
   * Bytes from the latest sample up to where the ceiling is reached (95 % of it); Infinity without a ceiling.
   * Unfinished CONNECTs grow within it between samples (session.ts memoryFor): a flood of them otherwise grew
   * memory by its bandwidth per sample period, to 175 % of the ceiling in an audit (900 clients each sending 150 KB
   * of a CONNECT, the pending bound off).
   */
  get headroomBytes(): number {
    return this.headroomAbove(this.ceiling.inUse);
  }

  /**
   * headroomBytes measured now (tens of microseconds), without a decision: the caller may be a session that entering
   * the overload would shed. Infinity without a ceiling or before start.
   */
  headroomNow(): number {
    return this.timer === null ? Number.POSITIVE_INFINITY : this.headroomAbove(this.measure());
  }

  /** From `inUse` bytes up to where the ceiling is reached; Infinity without a ceiling. */
  private headroomAbove(inUse: number): number {
    if (this.ceiling.limit <= 0) return Number.POSITIVE_INFINITY;
    return Math.max(0, this.ceiling.limit * ENTER_FRACTION - inUse);
  }

  /** The latest sample while the guard runs; measured now when it does not (no ceiling set). */
  get inUseBytes(): number {
    return this.timer !== null ? this.ceiling.inUse : this.measure();
  }

  start(): void {
    if (this.closed) return;
    this.started = true;
    this.arm();
  }

  /** A reload: the new ceiling applies from the next sample; 0 stops sampling and ends an overload now. */
  reconfigure(maxBytes: number): void {
    this.ceiling.setLimit(maxBytes);
    if (this.closed || !this.started) return;
    if (maxBytes <= 0) this.sample();
    this.arm();
  }

  /**
   * An unfinished CONNECT was refused `bytes` for want of headroom measured then (headroomNow): memory would have
   * reached the ceiling. One sample on the next turn of the event loop (however often asked meanwhile; none when not
   * sampling) enters the overload (MemoryCeiling.observe), unless already in it.
   */
  refused(bytes: number): void {
    if (this.timer === null) return;
    this.refusedBytes += bytes;
    if (this.soon === null) this.soon = setImmediate(takeSample, this);
  }

  /** Take one sample now (the timer calls this). */
  sample(): void {
    if (this.soon !== null) {
      clearImmediate(this.soon);
      this.soon = null;
    }
    if (this.ceiling.active && this.now() >= this.nextCollectAt) {
      this.collect();
      this.nextCollectAt = this.now() + COLLECT_EVERY_MS;
    }
    const inUse = this.measure();
    const refusedBytes = this.refusedBytes;
    this.refusedBytes = 0;
    const change = this.ceiling.observe(inUse, refusedBytes);
    if (change === 'entered') {
      this.actions.entered(inUse, this.ceiling.limit, refusedBytes);
      // What was shed is garbage now: the next sample collects it first, then measures.
      this.nextCollectAt = 0;
    } else if (change === 'left') {
      this.actions.left(inUse, this.ceiling.limit);
    }
    this.actions.sampled?.(this.headroomBytes);
  }

  /** Stops sampling. Idempotent. */
  close(): void {
    this.closed = true;
    this.disarm();
  }

  private arm(): void {
    if (this.ceiling.limit <= 0) {
      this.disarm();
      return;
    }
    if (this.timer !== null) return;
    this.timer = setInterval(takeSample, this.intervalMs, this);
    this.timer.unref();
    this.sample();
  }

  private disarm(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    if (this.soon !== null) clearImmediate(this.soon);
    this.soon = null;
    this.refusedBytes = 0;
  }
}

/** The timer's and refused()'s callback. */
function takeSample(guard: OverloadGuard): void {
  guard.sample();
}
