/**
 * The memory ceiling (limits.maxMemory, reliability case 64): the decision, as a pure function of samples.
 *
 * At 95 % of the ceiling the balancer is overloaded: it stops taking new connections and sheds the ones that
 * have not sent their CONNECT yet (Envoy's overload manager stops accepting at 95 % of its heap). It recovers
 * below 90 %: the gap keeps one noisy sample from flapping it (the measure moves by tens of MiB under heavy
 * traffic as garbage buffers wait for the next scavenge; bench/README.md has the numbers).
 *
 * What is measured: V8's heap in use plus the memory of Buffers (process.memoryUsage `heapUsed + external`).
 * That is what grows with what clients send (pre-CONNECT buffers, held reads, write queues to slow peers) and
 * what a freed buffer lowers at once. The resident set would also count what malloc keeps after a surge, so a
 * balancer could stay "overloaded" with nothing left to shed. Fixed costs per connection (kernel and libuv
 * structures, TLS state) are bounded by the connection caps instead.
 */

export const ENTER_FRACTION = 0.95;
export const LEAVE_FRACTION = 0.9;

export type CeilingChange = 'entered' | 'left' | null;

export class MemoryCeiling {
  private max: number;
  private overloaded = false;
  private lastInUse = 0;

  /** `max` in bytes; 0 = no ceiling. */
  constructor(max: number) {
    this.max = max;
  }

  get active(): boolean {
    return this.overloaded;
  }

  get limit(): number {
    return this.max;
  }

  get inUse(): number {
    return this.lastInUse;
  }

  /**
   * A new sample: whether this one entered or left the overloaded state. `refusedBytes`: what unfinished CONNECTs
   * were refused since the last sample for want of headroom, measured when each was refused (overload-guard.ts).
   * Any is the ceiling reached, even when this sample, taken after the refusals freed their buffers and perhaps a
   * collection, reads less: waiting for the sample to agree let a flood be whittled down one refusal at a time while
   * the overload's other actions (the accept queue told, handshakes shed) never came.
   */
  observe(inUseBytes: number, refusedBytes = 0): CeilingChange {
    this.lastInUse = inUseBytes;
    if (this.max <= 0) return this.leave();
    if (!this.overloaded && (inUseBytes >= this.max * ENTER_FRACTION || refusedBytes > 0)) {
      this.overloaded = true;
      return 'entered';
    }
    if (this.overloaded && inUseBytes < this.max * LEAVE_FRACTION) return this.leave();
    return null;
  }

  /** A reload changed the ceiling: the next sample decides with it (0 ends an overload there). */
  setLimit(max: number): void {
    this.max = max;
  }

  private leave(): CeilingChange {
    if (!this.overloaded) return null;
    this.overloaded = false;
    return 'left';
  }
}
