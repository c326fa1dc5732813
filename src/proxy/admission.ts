/**
 * Admission control after a CONNECT was read and before a server is dialled (design.md §4 limits):
 * per-source connection cap, per-source CONNECT rate, and the global accept rate with its queue. Before
 * that, from the start of each session, a cap on the connections per source that have not sent their
 * CONNECT yet (arrive()).
 * A reconnect storm thus reaches the brokers at a steady rate instead of all at once, and every
 * client is either served or told in MQTT why not (the listener and global caps are checked by the
 * session before it asks here).
 *
 * Decisions are made by TokenBucket (pure, injected clock); Admission only keeps the books and the one
 * timer that drains the queue while it is not empty.
 */
import type { LimitsConfig } from '../config/types.js';
import type { AdmissionTicket, RejectReason } from './context.js';
import { monotonicNow } from '../monotonic-clock.js';
import { CidrSet } from './cidr.js';
import { unmappedIPv4 } from '../ip-text.js';

/** A token bucket: `rate` tokens per second, at most `burst` stored; starts full. */
export class TokenBucket {
  private tokens: number;
  private last: number;
  constructor(
    public rate: number, // tokens per second, > 0
    public burst: number, // >= 1
    private readonly now: () => number,
  ) {
    this.tokens = burst;
    this.last = now();
  }

  private refill(): void {
    const t = this.now();
    if (t > this.last) {
      this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) * this.rate) / 1000);
      this.last = t;
    }
  }

  take(): boolean {
    this.refill();
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    return false;
  }

  /** Milliseconds until one token is available (0: now). */
  waitMs(): number {
    this.refill();
    // The epsilon absorbs float noise (0.996 tokens at 4/s is 1 ms away, not 2).
    return this.tokens >= 1 ? 0 : Math.ceil(((1 - this.tokens) * 1000) / this.rate - 1e-6);
  }

  /** True when the bucket is back at its burst: forgetting it changes nothing. */
  full(): boolean {
    this.refill();
    return this.tokens >= this.burst;
  }

  /** New rate/burst (reload) without refilling: a reload is not a way around the limit. */
  retune(rate: number, burst: number): void {
    this.refill();
    this.rate = rate;
    this.burst = burst;
    if (this.tokens > burst) this.tokens = burst;
  }
}

/**
 * Burst of the global accept rate: a tenth of a second's worth (at least one), so that towards the
 * brokers no second carries more than rate + rate/10 new sessions.
 */
export function acceptBurst(rate: number): number {
  return Math.max(1, Math.ceil(rate / 10));
}

/**
 * The per-source book key of a client address: an IPv4 host reaching a dual-stack (`[::]`) listener, or named
 * in a PROXY v2 TCP6 header, as `::ffff:a.b.c.d` is the host `a.b.c.d` of an IPv4 listener (as for the CIDRs
 * of acceptProxyProtocol and the PROXY header sent on).
 */
export function sourceKey(address: string): string {
  return unmappedIPv4(address);
}

/**
 * Burst of the per-source CONNECT rate: one second's worth, so "connectRate: 10" admits 10 CONNECTs at
 * once from one address (e.g. a gateway reconnecting its devices) and then 10 per second.
 */
export function sourceBurst(rate: number): number {
  return Math.max(1, Math.ceil(rate));
}

interface Queued {
  ticket: AdmissionTicket | null; // null: the session ended while waiting
  expires: number;
}

interface SourceBook {
  sessions: number;
  /** Connections that have not sent their CONNECT yet (arrive() to admit() or release()). */
  pending: number;
  bucket: TokenBucket | null;
}

interface Held {
  source: string | null; // per-source book key, null when no per-source limit applied
  queued: Queued | null;
  /** Counted in its source's `pending` (arrived, no CONNECT yet). */
  pending: boolean;
}

/**
 * How many connections of one address may be waiting for their CONNECT at once; 0 = no cap. A client sends
 * its CONNECT at once, so this is only reached by connections that stay silent (SlowITe, reliability cases 58
 * and 63): without it, per-source limits counted sessions only, and one address could hold every slot of a
 * listener for clientConnectTimeout, again and again. The cap follows the per-source limit that is set: twice
 * the connection cap, else twice one second of the CONNECT rate (its burst): clients that arrive together beyond
 * the limit still get their CONNACK (0x97, 0x9F) rather than a silent close (with one burst's worth, a gateway's
 * devices past the rate were closed unanswered: a docs audit).
 */
export function pendingCap(perSource: LimitsConfig['perSource']): number {
  if (perSource.maxConnections > 0) return 2 * perSource.maxConnections;
  if (perSource.connectRate > 0) return 2 * sourceBurst(perSource.connectRate);
  return 0;
}

const SOURCE_SWEEP_MS = 10_000;
/** Compact the queue array once this many entries were consumed at its head. */
const QUEUE_COMPACT_AT = 1024;

export class Admission {
  private limits: LimitsConfig;
  private readonly now: () => number;
  private accept: TokenBucket | null = null;
  private readonly queue: Queued[] = [];
  private queueHead = 0;
  private waiting = 0; // queue entries whose session still waits
  private timer: NodeJS.Timeout | null = null;
  private readonly sources = new Map<string, SourceBook>();
  private readonly held = new Map<AdmissionTicket, Held>();
  private sweeper: NodeJS.Timeout | null = null;
  private pendingCap = 0;
  /** limits.perSource.exempt: addresses no per-source limit applies to (null: none listed). */
  private exempt: CidrSet | null = null;
  /** close() was called: the balancer is stopping. */
  private closed = false;

  constructor(limits: LimitsConfig, now: () => number = monotonicNow) {
    this.limits = limits;
    this.now = now;
    this.reconfigure(limits);
  }

  reconfigure(limits: LimitsConfig): void {
    this.limits = limits;
    this.pendingCap = pendingCap(limits.perSource);
    this.exempt = limits.perSource.exempt.length === 0 ? null : new CidrSet(limits.perSource.exempt);
    if (limits.acceptRate > 0) {
      if (this.accept === null) this.accept = new TokenBucket(limits.acceptRate, acceptBurst(limits.acceptRate), this.now);
      else this.accept.retune(limits.acceptRate, acceptBurst(limits.acceptRate));
    } else {
      this.accept = null;
    }
    const rate = limits.perSource.connectRate;
    for (const book of this.sources.values()) {
      if (book.bucket === null) continue;
      if (rate > 0) book.bucket.retune(rate, sourceBurst(rate));
      else book.bucket = null;
    }
    if (this.sources.size > 0 || rate > 0) this.startSweeper();
    // Waiting clients see the new rate (or are all let through when the rate limit is gone).
    this.drain();
  }

  /**
   * After a reload: the live sessions admitted while no per-source count was kept (the limit was off, or their
   * address exempt) are counted now, or an address could hold its old sessions plus a new limit's worth. Those
   * already counted are left as they are.
   */
  adopt(admitted: Iterable<AdmissionTicket>): void {
    if (this.limits.perSource.maxConnections === 0) return;
    // Held without a source: they went through (or wait in) the accept queue while no count was kept.
    for (const [ticket, h] of this.held) {
      if (h.pending || h.source !== null || this.isExempt(ticket)) continue;
      h.source = sourceKey(ticket.remoteAddress);
      this.bookFor(h.source).sessions++;
    }
    for (const ticket of admitted) {
      if (this.held.has(ticket) || this.isExempt(ticket)) continue;
      const source = sourceKey(ticket.remoteAddress);
      this.bookFor(source);
      this.hold(ticket, source, null); // as admit() does
    }
  }

  /** Clients waiting for an accept token. */
  get queued(): number {
    return this.waiting;
  }

  /** Client addresses with books (for tests and the status page): bounded by live sessions + recent sources. */
  get trackedSources(): number {
    return this.sources.size;
  }

  /** A known NAT or gateway (limits.perSource.exempt): no book, no per-source limit. */
  private isExempt(ticket: AdmissionTicket): boolean {
    return this.exempt !== null && this.exempt.has(ticket.remoteAddress);
  }

  /**
   * A session starts, before its CONNECT: null to go on, or why it is closed at once, unanswered (the cap of
   * pendingCap() on its address is reached: nothing of it has been read that could be answered).
   */
  arrive(ticket: AdmissionTicket): RejectReason | null {
    if (this.pendingCap === 0 || this.isExempt(ticket)) return null;
    const source = sourceKey(ticket.remoteAddress);
    const book = this.bookFor(source);
    if (book.pending >= this.pendingCap) {
      this.forgetIfIdle(source, book);
      return this.limits.perSource.maxConnections > 0 ? 'source_full' : 'rate_limited';
    }
    book.pending++;
    this.held.set(ticket, { source, queued: null, pending: true });
    return null;
  }

  admit(ticket: AdmissionTicket): 'ok' | 'queued' | RejectReason {
    const earlier = this.held.get(ticket);
    if (earlier !== undefined) {
      if (!earlier.pending) return 'ok'; // asked twice: already holds its place
      // Its CONNECT came: no longer pending; admitted below like any other.
      this.held.delete(ticket);
      this.sources.get(earlier.source!)!.pending--;
    }
    // Stopping (close()): a CONNECT completed during the drain is told so, as the clients waiting in the queue are,
    // not routed to a broker (where it would take over its client ID's session, only to be closed at drainTimeout).
    if (this.closed) {
      if (earlier?.source != null) this.forgetIfIdle(earlier.source, this.sources.get(earlier.source)!);
      return 'shutting_down';
    }
    const { perSource } = this.limits;
    let source: string | null = null;
    if ((perSource.maxConnections > 0 || perSource.connectRate > 0) && !this.isExempt(ticket)) {
      source = sourceKey(ticket.remoteAddress);
      const book = this.bookFor(source);
      if (perSource.maxConnections > 0 && book.sessions >= perSource.maxConnections) {
        this.forgetIfIdle(source, book);
        return 'source_full';
      }
      if (perSource.connectRate > 0) {
        book.bucket ??= new TokenBucket(perSource.connectRate, sourceBurst(perSource.connectRate), this.now);
        if (!book.bucket.take()) return 'rate_limited';
      }
    }
    if (this.accept !== null && (this.waiting > 0 || !this.accept.take())) {
      // FIFO: while anyone waits, newcomers queue behind them even if a token just became free.
      if (this.waiting >= this.limits.acceptQueue) {
        if (source !== null) this.forgetIfIdle(source, this.sources.get(source)!);
        return 'accept_queue_full';
      }
      const entry: Queued = { ticket, expires: this.now() + this.limits.clientConnectTimeout };
      this.queue.push(entry);
      this.waiting++;
      this.hold(ticket, source, entry);
      this.schedule();
      return 'queued';
    }
    this.hold(ticket, source, null);
    return 'ok';
  }

  /** The session ended (whatever happened to it): give its per-source slot and queue place back. */
  release(ticket: AdmissionTicket): void {
    const h = this.held.get(ticket);
    if (h === undefined) return;
    this.held.delete(ticket);
    if (h.pending) {
      const book = this.sources.get(h.source!)!;
      book.pending--;
      this.forgetIfIdle(h.source!, book);
      return;
    }
    if (h.queued !== null && h.queued.ticket !== null) {
      h.queued.ticket = null;
      this.waiting--;
    }
    if (h.source !== null) {
      const book = this.sources.get(h.source);
      if (book !== undefined) {
        book.sessions--;
        this.forgetIfIdle(h.source, book);
      }
    }
  }

  private bookFor(source: string): SourceBook {
    let book = this.sources.get(source);
    if (book === undefined) {
      book = { sessions: 0, pending: 0, bucket: null };
      this.sources.set(source, book);
      this.startSweeper();
    }
    return book;
  }

  private forgetIfIdle(source: string, book: SourceBook): void {
    if (book.sessions <= 0 && book.pending <= 0 && (book.bucket === null || book.bucket.full())) this.sources.delete(source);
  }

  private hold(ticket: AdmissionTicket, source: string | null, queued: Queued | null): void {
    // Without a per-source limit or a queue place there is nothing to give back: nothing is kept (the usual
    // case, and one Map entry and object fewer per connection).
    if (source === null && queued === null) return;
    if (source !== null) this.sources.get(source)!.sessions++;
    this.held.set(ticket, { source, queued, pending: false });
  }

  /** One timer while anyone waits: at the next token, or at the head's expiry if that comes first. */
  private schedule(): void {
    if (this.timer !== null || this.waiting === 0) return;
    const head = this.firstWaiting();
    if (head === null) return;
    const tokenIn = this.accept === null ? 0 : this.accept.waitMs();
    const expiresIn = head.expires - this.now();
    this.timer = setTimeout(onQueueTimer, Math.max(1, Math.min(tokenIn, expiresIn)), this);
  }

  private firstWaiting(): Queued | null {
    while (this.queueHead < this.queue.length && this.queue[this.queueHead]!.ticket === null) this.queueHead++;
    return this.queueHead < this.queue.length ? this.queue[this.queueHead]! : null;
  }

  timerFired(): void {
    this.timer = null;
    this.drain();
  }

  /** Let waiting clients through while tokens last; refuse those that waited past clientConnectTimeout. */
  private drain(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const t = this.now();
    for (let head = this.firstWaiting(); head !== null; head = this.firstWaiting()) {
      const ticket = head.ticket!;
      if (head.expires <= t) {
        this.dequeue(head);
        ticket.refuse('rate_limited');
        continue;
      }
      if (this.accept !== null && !this.accept.take()) break;
      this.dequeue(head);
      ticket.proceed();
    }
    if (this.queueHead >= QUEUE_COMPACT_AT || this.queueHead === this.queue.length) {
      this.queue.splice(0, this.queueHead);
      this.queueHead = 0;
    }
    this.schedule();
  }

  private dequeue(entry: Queued): void {
    const h = this.held.get(entry.ticket!);
    if (h !== undefined) h.queued = null;
    entry.ticket = null;
    this.waiting--;
    this.queueHead++;
  }

  private startSweeper(): void {
    if (this.sweeper !== null) return;
    this.sweeper = setInterval(onSweep, SOURCE_SWEEP_MS, this);
    this.sweeper.unref();
  }

  /** Forget idle sources whose rate bucket is full again (their books hold nothing). */
  sweep(): void {
    for (const [key, book] of this.sources) this.forgetIfIdle(key, book);
    if (this.sources.size === 0 && this.limits.perSource.connectRate === 0 && this.sweeper !== null) {
      clearInterval(this.sweeper);
      this.sweeper = null;
    }
  }

  /** Stop timers; clients still waiting are refused, told the balancer is stopping. Idempotent. */
  close(): void {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    if (this.sweeper !== null) clearInterval(this.sweeper);
    this.timer = null;
    this.sweeper = null;
    this.refuseWaiting('shutting_down');
  }

  /** Refuse every client waiting for an accept token (stopping, or over the memory ceiling); returns how many. */
  refuseWaiting(reason: 'shutting_down' | 'overloaded'): number {
    let refused = 0;
    for (let head = this.firstWaiting(); head !== null; head = this.firstWaiting()) {
      const ticket = head.ticket!;
      this.dequeue(head);
      ticket.refuse(reason);
      refused++;
    }
    this.queue.length = 0;
    this.queueHead = 0;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    return refused;
  }
}

function onQueueTimer(a: Admission): void {
  a.timerFired();
}

function onSweep(a: Admission): void {
  a.sweep();
}
