/**
 * Admission control after a CONNECT was read and before a server is dialled (design.md §4 limits):
 * per-source connection cap, per-source CONNECT rate, and the global accept rate with its queue.
 * A reconnect storm thus reaches the brokers at a steady rate instead of all at once, and every
 * client is either served or told in MQTT why not.
 *
 * Decisions are made by TokenBucket (pure, injected clock); this class only keeps the books and the
 * one timer that drains the queue while it is not empty.
 */
import type { LimitsConfig } from '../config/types.js';
import type { AdmissionTicket, RejectReason } from './context.js';

export class TokenBucket {
  private tokens: number;
  private last: number;
  constructor(
    public rate: number, // tokens per second, > 0
    public burst: number,
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

  /** Milliseconds until one token is available. */
  waitMs(): number {
    this.refill();
    return this.tokens >= 1 ? 0 : Math.ceil(((1 - this.tokens) * 1000) / this.rate);
  }
}

/** Burst of a rate limit: a tenth of a second's worth, at least one. */
function burstFor(rate: number): number {
  return Math.max(1, Math.ceil(rate / 10));
}

interface Queued {
  ticket: AdmissionTicket;
  expires: number;
}

interface SourceBook {
  sessions: number;
  bucket: TokenBucket | null;
}

const SOURCE_SWEEP_MS = 10_000;

export class Admission {
  private limits: LimitsConfig;
  private readonly now: () => number;
  private accept: TokenBucket | null = null;
  private readonly queue: Queued[] = [];
  private queueHead = 0;
  private timer: NodeJS.Timeout | null = null;
  private readonly sources = new Map<string, SourceBook>();
  private readonly admitted = new WeakSet<AdmissionTicket>();
  private sweeper: NodeJS.Timeout | null = null;

  constructor(limits: LimitsConfig, now: () => number = Date.now) {
    this.limits = limits;
    this.now = now;
    this.reconfigure(limits);
  }

  reconfigure(limits: LimitsConfig): void {
    this.limits = limits;
    if (limits.acceptRate > 0) {
      if (this.accept === null) this.accept = new TokenBucket(limits.acceptRate, burstFor(limits.acceptRate), this.now);
      else {
        this.accept.rate = limits.acceptRate;
        this.accept.burst = burstFor(limits.acceptRate);
      }
    } else {
      this.accept = null;
      this.drain();
    }
    for (const book of this.sources.values()) book.bucket = null; // rebuilt lazily with the new rate
    if (limits.perSource.connectRate > 0 && this.sweeper === null) {
      this.sweeper = setInterval(() => this.sweep(), SOURCE_SWEEP_MS);
      this.sweeper.unref();
    }
  }

  get queued(): number {
    return this.queue.length - this.queueHead;
  }

  admit(ticket: AdmissionTicket): 'ok' | 'queued' | RejectReason {
    const { perSource } = this.limits;
    const key = ticket.remoteAddress;
    let book = this.sources.get(key);
    if (perSource.maxConnections > 0 || perSource.connectRate > 0) {
      if (book === undefined) {
        book = { sessions: 0, bucket: null };
        this.sources.set(key, book);
      }
      if (perSource.maxConnections > 0 && book.sessions >= perSource.maxConnections) return 'source_full';
      if (perSource.connectRate > 0) {
        book.bucket ??= new TokenBucket(perSource.connectRate, burstFor(perSource.connectRate), this.now);
        if (!book.bucket.take()) return 'rate_limited';
      }
    }
    if (this.accept !== null && (this.queued > 0 || !this.accept.take())) {
      if (this.queued >= this.limits.acceptQueue) return 'accept_queue_full';
      this.queue.push({ ticket, expires: this.now() + this.limits.clientConnectTimeout });
      this.hold(ticket, book);
      this.schedule();
      return 'queued';
    }
    this.hold(ticket, book);
    return 'ok';
  }

  private hold(ticket: AdmissionTicket, book: SourceBook | undefined): void {
    if (book !== undefined) book.sessions++;
    this.admitted.add(ticket);
  }

  /** The session ended (whatever happened to it): give its per-source slot back. */
  release(ticket: AdmissionTicket): void {
    if (!this.admitted.has(ticket)) return;
    this.admitted.delete(ticket);
    const book = this.sources.get(ticket.remoteAddress);
    if (book !== undefined) {
      book.sessions--;
      if (book.sessions <= 0 && book.bucket === null) this.sources.delete(ticket.remoteAddress);
    }
  }

  private schedule(): void {
    if (this.timer !== null || this.queued === 0) return;
    const wait = this.accept === null ? 0 : this.accept.waitMs();
    this.timer = setTimeout(() => {
      this.timer = null;
      this.drain();
    }, Math.max(1, wait));
  }

  private drain(): void {
    const t = this.now();
    while (this.queueHead < this.queue.length) {
      const q = this.queue[this.queueHead]!;
      if (q.ticket.closed) {
        this.queueHead++;
        continue;
      }
      if (q.expires <= t) {
        this.queueHead++;
        q.ticket.refuse('rate_limited');
        continue;
      }
      if (this.accept !== null && !this.accept.take()) break;
      this.queueHead++;
      q.ticket.proceed();
    }
    if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue.splice(0, this.queueHead);
      this.queueHead = 0;
    }
    this.schedule();
  }

  /** Forget idle sources whose rate bucket is full again. */
  private sweep(): void {
    for (const [key, book] of this.sources) {
      if (book.sessions <= 0 && (book.bucket === null || book.bucket.waitMs() === 0)) this.sources.delete(key);
    }
  }

  close(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    if (this.sweeper !== null) clearInterval(this.sweeper);
    this.timer = null;
    this.sweeper = null;
    for (let i = this.queueHead; i < this.queue.length; i++) this.queue[i]!.ticket.refuse('rate_limited');
    this.queue.length = 0;
    this.queueHead = 0;
  }
}
