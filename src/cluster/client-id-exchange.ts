/**
 * A worker's side of the takeover rule across workers (client-id-registry.ts): its pools' registries report each
 * client ID a session holds and gives back; the reports go to the primary in batches (one message per FLUSH_MS at
 * most, none while nothing happens), and the primary answers with the sessions to close (client-id-ledger.ts).
 *
 * A batch costs the CONNECT path nothing but an array push; a takeover across workers is applied within a flush and
 * a message round trip (a few tens of ms), where one within a worker is applied at the CONNACK.
 */
import type { ClientIdHolder, ClientIdRegistry, ClientIdSharing } from '../balancer/client-id-registry.js';
import type { ClientIdEvent, TakeoverOrder } from './messages.js';

/** How long reports may wait to be sent together. */
export const FLUSH_MS = 20;

/**
 * performance.now() is the host's monotonic clock (libuv's hrtime, as process.hrtime) less this process's start:
 * adding this offset gives the host clock, which every worker shares (the primary compares their claims on it).
 */
const HOST_CLOCK_OFFSET_MICROS = hostClockMicros() - performance.now() * 1000;

function hostClockMicros(): number {
  const [seconds, nanos] = process.hrtime();
  return seconds * 1e6 + nanos / 1e3;
}

export class ClientIdExchange implements ClientIdSharing {
  private pending: ClientIdEvent[] = [];
  private timer: NodeJS.Timeout | null = null;
  /** Per pool name: its registry in this process (a pool a reload adds again replaces it). */
  private readonly registries = new Map<string, ClientIdRegistry<ClientIdHolder>>();
  private closed = false;

  constructor(
    private readonly send: (events: ClientIdEvent[]) => void,
    private readonly flushMs = FLUSH_MS,
  ) {}

  attach(pool: string, registry: ClientIdRegistry<ClientIdHolder>): void {
    this.registries.set(pool, registry);
  }

  claimed(pool: string, id: string, serial: number, place: string, connectSentAt: number): void {
    this.queue(['claim', pool, id, serial, place, Math.round(HOST_CLOCK_OFFSET_MICROS + connectSentAt * 1000)]);
  }

  released(serial: number): void {
    this.queue(['release', serial]);
  }

  /** The sessions of this worker that the primary's orders name and that still hold their IDs under those serials. */
  displaced(orders: readonly TakeoverOrder[]): Array<{ pool: string; id: string; holder: ClientIdHolder; acceptedFirst: boolean; to: string }> {
    const found: Array<{ pool: string; id: string; holder: ClientIdHolder; acceptedFirst: boolean; to: string }> = [];
    for (const [pool, id, serial, acceptedFirst, to] of orders) {
      const holder = this.registries.get(pool)?.heldUnder(id, serial);
      if (holder !== undefined) found.push({ pool, id, holder, acceptedFirst, to });
    }
    return found;
  }

  /** Send what is pending now (also at a stop, so that the primary forgets what ended). */
  flush(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.pending.length === 0) return;
    const events = this.pending;
    this.pending = [];
    this.send(events);
  }

  /** Idempotent: nothing more is sent. */
  close(): void {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.pending = [];
  }

  private queue(event: ClientIdEvent): void {
    if (this.closed) return;
    this.pending.push(event);
    if (this.timer === null) {
      this.timer = setTimeout(flushExchange, this.flushMs, this);
      this.timer.unref();
    }
  }
}

function flushExchange(exchange: ClientIdExchange): void {
  exchange.flush();
}
