/**
 * Gratuitous ARP on our own timer (vrrp-facts §9.3): iputils `arping` takes whole seconds for `-i` and ~1 s to
 * exit even with `-c 1`, so each announcement is one `arping -q -U -c 1 -I IFACE VIP` child, started every
 * `interval`, `count` times per VIP, then once more after `repeatAfter` (keepalived's second GARP set).
 * Children run in the background with a kill timeout: nothing here ever blocks the advert loop.
 * `announceOnce()` sends one now without touching the schedule (a heal). `cancel()` stops pending bursts and kills
 * running children (on leaving MASTER).
 */
import { setMaxListeners } from 'node:events';
import { describeResult, runCommand } from './command.js';
import { isInterfaceName, isIpv4 } from './ipv4.js';
import { RateLimitedLog, type LogSink } from './log.js';

export const ARPING_COMMAND = 'arping';
/** arping -c 1 exits after ~1 s; give it room, then SIGKILL. */
export const ARPING_TIMEOUT_MS = 3000;

export interface GarpOptions {
  iface: string;
  count: number;
  intervalMs: number;
  /** 0 = no second burst. */
  repeatAfterMs: number;
}

/** Sends one announcement; injectable for tests. Resolves when the child ended (never rejects). */
export type SendGarp = (iface: string, address: string, signal: AbortSignal) => Promise<void>;

export function arpingSender(log: LogSink): SendGarp {
  // Once per 10 s per VIP (`suppressed` counts the rest): without arping, each burst said it 5 times (a re-audit).
  const failLog = new RateLimitedLog(log, 10_000, () => performance.now());
  return async (iface, address, signal) => {
    const args = ['-q', '-U', '-c', '1', '-I', iface, address];
    const r = await runCommand(ARPING_COMMAND, args, { timeoutMs: ARPING_TIMEOUT_MS, signal });
    // iputils exit codes for -U changed between versions (iputils#247): only a failure to run is worth a warning.
    if (r.spawnError !== null || r.timedOut) failLog.warn(address, { iface, address, detail: describeResult(ARPING_COMMAND, args, r) }, 'gratuitous ARP failed');
  };
}

/**
 * One signal cancels every running child, and each child listens on it until it exits (runCommand removes its
 * listener then). The defaults keep about five children per VIP running at once, so a few VIPs pass Node's
 * default of ten listeners, and Node would log a "possible memory leak" on every failover. The number is
 * bounded (at most count x VIPs per burst, each child ended by the kill timeout), so the limit is lifted for
 * this signal only.
 */
function newCanceller(): AbortController {
  const c = new AbortController();
  setMaxListeners(0, c.signal);
  return c;
}

export class GarpAnnouncer {
  private timers = new Set<NodeJS.Timeout>();
  private abort = newCanceller();
  private readonly running = new Set<Promise<void>>();

  constructor(
    private o: GarpOptions,
    private readonly send: SendGarp,
  ) {
    if (!isInterfaceName(o.iface)) throw new RangeError(`invalid interface name ${o.iface}`);
  }

  /** A reload: the count, spacing and repeat of the next bursts (those scheduled already keep theirs). */
  configure(c: { count: number; intervalMs: number; repeatAfterMs: number }): void {
    this.o = { ...this.o, count: c.count, intervalMs: c.intervalMs, repeatAfterMs: c.repeatAfterMs };
  }

  /** Starts a burst now (replacing any pending schedule) and schedules the repeat burst. */
  announce(addresses: readonly string[]): void {
    this.cancelTimers();
    checkAddresses(addresses);
    if (addresses.length === 0 || this.o.count <= 0) return;
    this.burst(addresses, 0);
    if (this.o.repeatAfterMs > 0) this.burst(addresses, this.o.repeatAfterMs);
  }

  /** One announcement per address now, leaving the scheduled bursts as they are (a heal: FailoverAction 'reannounce'). */
  announceOnce(addresses: readonly string[]): void {
    checkAddresses(addresses);
    if (addresses.length > 0 && this.o.count > 0) this.at(0, addresses);
  }

  /** Stops pending announcements and kills running arping children. */
  cancel(): void {
    this.cancelTimers();
    this.abort.abort();
    this.abort = newCanceller();
  }

  /** Resolves when every running child has ended (for a clean shutdown). */
  async idle(): Promise<void> {
    await Promise.all([...this.running]);
  }

  get pending(): number {
    return this.timers.size;
  }

  private burst(addresses: readonly string[], startMs: number): void {
    for (let i = 0; i < this.o.count; i++) this.at(startMs + i * this.o.intervalMs, addresses);
  }

  private at(delayMs: number, addresses: readonly string[]): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      const signal = this.abort.signal;
      for (const a of addresses) {
        const p = this.send(this.o.iface, a, signal).finally(() => this.running.delete(p));
        this.running.add(p);
      }
    }, delayMs);
    t.unref?.();
    this.timers.add(t);
  }

  private cancelTimers(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }
}

/** Every address an IPv4 literal: arping takes them as arguments. */
function checkAddresses(addresses: readonly string[]): void {
  for (const a of addresses) if (!isIpv4(a)) throw new RangeError(`invalid IPv4 address ${a}`);
}
