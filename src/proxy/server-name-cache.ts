/**
 * A server's host name, resolved for the sessions' dials at most once a second per name instead of at every
 * dial. Why: a `getaddrinfo` answered from /etc/hosts costs ~28 µs of CPU on the libuv thread pool plus one
 * more entry into JavaScript, a third of our whole connection setup (~90 µs), and a name that /etc/hosts does
 * not hold is a DNS query per client: a reconnect storm of 5,000 clients would be 5,000 queries. HAProxy
 * resolves at start (with `resolvers`, it keeps a good answer 10 s by default); Envoy's strict DNS refreshes
 * every 5 s. One second keeps us close to "resolved at each dial" (what docs/configuration.md promised
 * before): a broker that moves to a new address is found within about a second.
 *
 * - An answer younger than FRESH_MS is used as it is.
 * - Older, but younger than SERVE_WHILE_REFRESHING_MS: used, and one lookup refreshes it in the background
 *   (a steady stream of dials never waits for the resolver).
 * - Older still (nothing dialled that name for a while), or no answer yet: the dial waits for the lookup; all
 *   dials of that name wait for the same one.
 * - A lookup that fails keeps the last answer while it is younger than HOLD_ON_ERROR_MS (HAProxy's resolvers
 *   keep a name 30 s after a failed resolution by default), used at once meanwhile, so that a resolver outage
 *   is not at once a broker outage (nor a wait per dial for a resolver that times out); past it, or with no
 *   answer ever, the dials fail with the lookup's error (as before), and that error is kept for FRESH_MS.
 * - `expire(host)` (a server-caused dial failure): the next dial refreshes the answer at once.
 *
 * Health probes still resolve at every probe (they are few, and say where the name points now).
 */
import type { LookupAddress, LookupOptions } from 'node:dns';
import { monotonicNow } from '../monotonic-clock.js';
import { UV_EAI_NONAME, errnoError, lookupAll, type AddressesCallback, type ResolveName } from './handle-socket.js';

export const FRESH_MS = 1000;
export const SERVE_WHILE_REFRESHING_MS = 5000;
export const HOLD_ON_ERROR_MS = 30_000;
/** Names kept at most (a reload can rename servers; each name is a few hundred bytes). */
const MAX_NAMES = 1024;

interface Entry {
  /** The last successful answer, and when it came (monotonic ms). */
  addresses: LookupAddress[] | null;
  answeredAt: number;
  /** The last lookup's error while no answer is held, and when it came. */
  error: NodeJS.ErrnoException | null;
  failedAt: number;
  /** The last lookup failed while an answer was held (the resolver is out: that answer serves without waiting). */
  refreshFailed: boolean;
  lookupInFlight: boolean;
  /** Dials waiting for the lookup in flight. */
  waiting: AddressesCallback[];
}

export class ServerNameCache {
  private readonly entries = new Map<string, Entry>();

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
      entry = { addresses: null, answeredAt: 0, error: null, failedAt: 0, refreshFailed: false, lookupInFlight: false, waiting: [] };
      this.entries.set(host, entry);
    }
    const now = this.now();
    if (entry.addresses !== null) {
      const age = now - entry.answeredAt;
      if (age < FRESH_MS) return callback(null, entry.addresses);
      if (age < SERVE_WHILE_REFRESHING_MS || (entry.refreshFailed && age < HOLD_ON_ERROR_MS)) {
        this.startLookup(host, entry);
        return callback(null, entry.addresses);
      }
    } else if (entry.error !== null && now - entry.failedAt < FRESH_MS) {
      return callback(entry.error, []);
    }
    entry.waiting.push(callback);
    this.startLookup(host, entry);
  }

  /** The next dial of `host` asks the resolver again (its last answer may be why the dial failed). */
  expire(host: string): void {
    const entry = this.entries.get(host);
    if (entry === undefined) return;
    // The old answer still serves while the new lookup runs, and if it fails (within HOLD_ON_ERROR_MS of when
    // it came), so only the age used for freshness moves.
    entry.answeredAt = Math.min(entry.answeredAt, this.now() - FRESH_MS);
    entry.failedAt = -Infinity;
  }

  /** Names held (for tests). */
  get size(): number {
    return this.entries.size;
  }

  private startLookup(host: string, entry: Entry): void {
    if (entry.lookupInFlight) return;
    entry.lookupInFlight = true;
    this.lookup(host, (err, addresses) => this.answered(host, entry, err, addresses));
  }

  private answered(host: string, entry: Entry, err: NodeJS.ErrnoException | null, addresses: LookupAddress[]): void {
    entry.lookupInFlight = false;
    const now = this.now();
    if (err === null && addresses.length > 0) {
      entry.addresses = addresses;
      entry.answeredAt = now;
      entry.error = null;
      entry.refreshFailed = false;
    } else if (entry.addresses === null || now - entry.answeredAt >= HOLD_ON_ERROR_MS) {
      entry.addresses = null;
      entry.error = err ?? errnoError(UV_EAI_NONAME, 'getaddrinfo', host);
      entry.failedAt = now;
      entry.refreshFailed = false;
    } else {
      // Within the hold: the last answer stays, used at once by the next dials, each asking again (one at a time).
      entry.refreshFailed = true;
    }
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

/** The process's cache for session dials. */
export const serverNames = new ServerNameCache();

/** HandleSocket's `resolve` for session dials. */
export function resolveServerName(host: string, callback: AddressesCallback): void {
  serverNames.resolve(host, callback);
}

/**
 * net.connect's `lookup` for session dials on the net.Socket engine (MQTT_LB_SOCKETS=net): the same cache,
 * answered asynchronously as dns.lookup is, in the shape net asks for (all addresses, or the first one).
 */
export function lookupServerNameForNet(host: string, options: LookupOptions, callback: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void): void {
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
