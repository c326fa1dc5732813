/**
 * A server's host name, resolved at most once a second per name for the sessions' dials and the health probes,
 * instead of a lookup at every dial and probe. Why: a `getaddrinfo` answered from /etc/hosts costs ~28 µs of CPU on
 * the libuv thread pool plus one more entry into JavaScript (a fifth of a connection's CPU: 184 -> 152 µs, bench/
 * README.md session 25), and a name that /etc/hosts does not hold is a DNS query per client: a reconnect storm of
 * 5,000 clients would be 5,000 queries. HAProxy resolves at start (with `resolvers`, it keeps a good answer 10 s by
 * default); Envoy's strict DNS refreshes every 5 s. One second keeps us close to "resolved at each dial": a broker
 * that moves to a new address is found within about a second.
 *
 * - An answer younger than FRESH_MS is used as it is.
 * - Older, but younger than SERVE_WHILE_REFRESHING_MS: used, and one lookup refreshes it in the background
 *   (a steady stream of dials never waits for the resolver).
 * - Older still (nothing dialled that name for a while), or no answer yet: the dial waits for the lookup; all
 *   dials of that name wait for the same one. With an answer held, no longer than SLOW_LOOKUP_MS.
 * - A lookup that fails, or is slow, leaves the last answer in use while it is younger than HOLD_ON_ERROR_MS
 *   (HAProxy's resolvers keep a name 30 s after a failed resolution by default), so that a resolver outage is not
 *   at once a broker outage, for the sessions nor for the probes (a probe of a name it cannot resolve would mark
 *   the server down). Past it, or with no answer ever, the dials fail with the lookup's error, kept for FRESH_MS.
 * - `expire(host)` (a server-caused dial failure) and `refreshAll()` (a reload): the next dials wait for a fresh
 *   answer, as after a quiet spell (no longer than SLOW_LOOKUP_MS while an answer is held).
 * - While the resolver fails, a name is asked at most once a second.
 *
 * Sessions and probes share the process's cache (`serverNames`), so a probe's verdict is about the address the
 * sessions are sent to.
 */
import type { LookupAddress, LookupOptions } from 'node:dns';
import { monotonicNow } from '../monotonic-clock.js';
import { UV_EAI_NONAME, errnoError, lookupAll, type AddressesCallback, type ResolveName } from './handle-socket.js';

export const FRESH_MS = 1000;
export const SERVE_WHILE_REFRESHING_MS = 5000;
export const HOLD_ON_ERROR_MS = 30_000;
/**
 * A lookup slower than this, with an answer held (under HOLD_ON_ERROR_MS old), counts as the resolver being out:
 * the dials waiting for it get the held answer, and later ones do not wait. /etc/hosts answers in well under 1 ms,
 * a DNS server on the LAN in a few; a resolver that drops queries takes its whole timeout (5 s per try in glibc),
 * which the dials' own timeout (`serverConnectTimeout`) would otherwise spend waiting.
 */
export const SLOW_LOOKUP_MS = 250;
/** Names kept at most (a reload can rename servers; each name is a few hundred bytes). */
const MAX_NAMES = 1024;

/** A lookup's failure, for a log line: the name, the error, and whether an answer held from before is used meanwhile. */
export type LookupFailed = (host: string, err: NodeJS.ErrnoException, keptAnswer: boolean) => void;

interface Entry {
  /** The last successful answer, and when it came (monotonic ms). */
  addresses: LookupAddress[] | null;
  answeredAt: number;
  /** The last lookup's error while no answer is held; when the last lookup failed. */
  error: NodeJS.ErrnoException | null;
  failedAt: number;
  /** The last lookup failed while an answer was held (the resolver is out: that answer serves without waiting). */
  refreshFailed: boolean;
  /** A dial to the held answer failed for a reason of the server's (expire), or a reload: the next dials wait for a new one. */
  expired: boolean;
  lookupInFlight: boolean;
  lookupStartedAt: number;
  /** Dials waiting for the lookup in flight. */
  waiting: AddressesCallback[];
  /** Hands the held answer to the waiting dials once the lookup has taken SLOW_LOOKUP_MS. */
  slowTimer: NodeJS.Timeout | null;
}

export class ServerNameCache {
  private readonly entries = new Map<string, Entry>();
  /** Set by the application (a rate-limited warn line); none in tests that do not ask. */
  onLookupFailed: LookupFailed | null = null;

  constructor(
    private readonly lookup: ResolveName = lookupAll,
    private readonly now: () => number = monotonicNow,
  ) {}

  /**
   * The addresses of `host`: synchronously when an answer (or a recent error) is at hand, else once the
   * lookup ends. Callers treat the array as read-only: it is shared by every dial until the next answer.
   */
  resolve(host: string, callback: AddressesCallback): void {
    let entry = this.entries.get(host);
    if (entry === undefined) {
      if (this.entries.size >= MAX_NAMES) this.forgetIdle();
      entry = { addresses: null, answeredAt: 0, error: null, failedAt: 0, refreshFailed: false, expired: false, lookupInFlight: false, lookupStartedAt: 0, waiting: [], slowTimer: null };
      this.entries.set(host, entry);
    }
    const now = this.now();
    if (entry.addresses !== null) {
      const age = now - entry.answeredAt;
      // The resolver failed or is slow: the held answer serves at once (what expire() asked for cannot be had).
      const resolverOut = entry.refreshFailed || (entry.lookupInFlight && now - entry.lookupStartedAt >= SLOW_LOOKUP_MS);
      if (!entry.expired && age < FRESH_MS) return callback(null, entry.addresses);
      if ((!entry.expired && age < SERVE_WHILE_REFRESHING_MS) || (resolverOut && age < HOLD_ON_ERROR_MS)) {
        this.startLookup(host, entry);
        return callback(null, entry.addresses);
      }
    } else if (entry.error !== null && now - entry.failedAt < FRESH_MS) {
      return callback(entry.error, []);
    }
    entry.waiting.push(callback);
    this.startLookup(host, entry);
    // After a quiet spell, an expire() or a reload the dial waits for a fresh answer, but not for a resolver that
    // does not answer: then the held answer serves (a broker restarting must not wait out the resolver's timeout).
    if (entry.slowTimer === null && entry.addresses !== null && now - entry.answeredAt < HOLD_ON_ERROR_MS) {
      const waitingFor = entry;
      entry.slowTimer = setTimeout(() => this.slowLookup(waitingFor), Math.max(0, SLOW_LOOKUP_MS - (now - entry.lookupStartedAt)));
      entry.slowTimer.unref();
    }
  }

  /** The next dial of `host` waits for a fresh answer (its last answer may be why the dial failed). */
  expire(host: string): void {
    const entry = this.entries.get(host);
    if (entry === undefined) return;
    entry.expired = true;
    entry.failedAt = -Infinity;
  }

  /**
   * A reload: every name is asked anew at its next dial, as HAProxy and nginx resolve again when they reload; the
   * held answers still serve if the resolver fails or is slow (a reload during a resolver outage changes nothing).
   */
  refreshAll(): void {
    for (const entry of this.entries.values()) entry.expired = true;
  }

  /** Names held (for tests). */
  get size(): number {
    return this.entries.size;
  }

  private startLookup(host: string, entry: Entry): void {
    if (entry.lookupInFlight) return;
    // While the resolver fails, once a second per name at most (dials served from the hold would otherwise each ask
    // again: 468 queries for 150 dials in 3 s, an audit measured). Dials waiting for an answer always get a lookup.
    if (entry.refreshFailed && entry.waiting.length === 0 && this.now() - entry.failedAt < FRESH_MS) return;
    entry.lookupInFlight = true;
    entry.lookupStartedAt = this.now();
    this.lookup(host, (err, addresses) => this.answered(host, entry, err, addresses));
  }

  private slowLookup(entry: Entry): void {
    entry.slowTimer = null;
    if (!entry.lookupInFlight || entry.addresses === null || this.now() - entry.answeredAt >= HOLD_ON_ERROR_MS) return;
    this.flush(entry);
  }

  private answered(host: string, entry: Entry, err: NodeJS.ErrnoException | null, addresses: LookupAddress[]): void {
    entry.lookupInFlight = false;
    if (entry.slowTimer !== null) {
      clearTimeout(entry.slowTimer);
      entry.slowTimer = null;
    }
    const now = this.now();
    if (err === null && addresses.length > 0) {
      entry.addresses = addresses;
      entry.answeredAt = now;
      entry.error = null;
      entry.refreshFailed = false;
      entry.expired = false;
    } else {
      const failure = err ?? errnoError(UV_EAI_NONAME, 'getaddrinfo', host);
      const kept = entry.addresses !== null && now - entry.answeredAt < HOLD_ON_ERROR_MS;
      if (kept) {
        // Within the hold: the last answer stays, used at once by the next dials; asked again once a second.
        entry.refreshFailed = true;
        entry.expired = false;
        entry.failedAt = now;
      } else {
        entry.addresses = null;
        entry.error = failure;
        entry.failedAt = now;
        entry.refreshFailed = false;
        entry.expired = false;
      }
      this.onLookupFailed?.(host, failure, kept);
    }
    this.flush(entry);
  }

  /** The waiting dials get what is held now: an answer, or the error. */
  private flush(entry: Entry): void {
    const waiting = entry.waiting;
    if (waiting.length === 0) return;
    entry.waiting = [];
    for (const callback of waiting) {
      if (entry.addresses !== null) callback(null, entry.addresses);
      else callback(entry.error, []);
    }
  }

  /** Room for a new name: drop those no lookup is running for (a reload renamed them away, most likely). */
  private forgetIdle(): void {
    for (const [host, entry] of this.entries) if (!entry.lookupInFlight) this.entries.delete(host);
  }
}

/** The process's cache: the session dials' and the health probes'. */
export const serverNames = new ServerNameCache();

/** HandleSocket's `resolve` for session dials. */
export function resolveServerName(host: string, callback: AddressesCallback): void {
  serverNames.resolve(host, callback);
}

/**
 * net.connect's `lookup` (session dials on the net.Socket engine, MQTT_LB_SOCKETS=net; the health probes): the
 * same cache, answered asynchronously as dns.lookup is, in the shape net asks for (all addresses, or the first).
 */
export function lookupServerName(host: string, options: LookupOptions, callback: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void): void {
  serverNames.resolve(host, (err, addresses) => {
    const family = options.family === 4 || options.family === 6 ? options.family : 0;
    const usable = family === 0 ? addresses : addresses.filter((a) => a.family === family);
    process.nextTick(() => {
      if (err !== null) callback(err, options.all === true ? [] : '');
      else if (usable.length === 0) callback(errnoError(UV_EAI_NONAME, 'getaddrinfo', host), options.all === true ? [] : '');
      else if (options.all === true) callback(null, usable);
      else callback(null, usable[0]!.address, usable[0]!.family);
    });
  });
}
