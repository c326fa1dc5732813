/**
 * Admission control (src/proxy/admission.ts): the token bucket with an injected clock, per-source caps and
 * rates, the accept-rate queue (FIFO, bounded, expiring), and release of everything a session held.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Admission, TokenBucket, acceptBurst, pendingCap, sourceBurst, sourceKey } from '../../src/proxy/admission.js';
import type { AdmissionTicket, RejectReason } from '../../src/proxy/context.js';
import type { LimitsConfig } from '../../src/config/types.js';

function limits(over: Partial<Omit<LimitsConfig, 'perSource'>> & { perSource?: Partial<LimitsConfig['perSource']> } = {}): LimitsConfig {
  return {
    clientConnectTimeout: 10_000,
    maxConnectBytes: 262_144,
    maxConnections: 20_000,
    acceptRate: 0,
    acceptQueue: 1000,
    drainTimeout: 30_000,
    idleTimeout: 0,
    maxMemory: 0,
    maxPendingConnectBytes: 67_108_864,
    ...over,
    perSource: { maxConnections: 0, connectRate: 0, exempt: [], ...over.perSource },
  };
}

class Ticket implements AdmissionTicket {
  readonly events: Array<'proceed' | RejectReason> = [];
  closed = false;
  constructor(readonly remoteAddress = '192.0.2.1') {}
  proceed(): void {
    this.events.push('proceed');
  }
  refuse(reason: RejectReason): void {
    this.events.push(reason);
    this.closed = true;
  }
}

describe('TokenBucket', () => {
  it('starts full, gives `burst` tokens at once, then one per 1/rate s', () => {
    let now = 1000;
    const b = new TokenBucket(4, 2, () => now);
    expect(b.take()).toBe(true);
    expect(b.take()).toBe(true);
    expect(b.take()).toBe(false);
    expect(b.waitMs()).toBe(250);
    now += 249;
    expect(b.take()).toBe(false);
    expect(b.waitMs()).toBe(1);
    now += 1;
    expect(b.take()).toBe(true);
    expect(b.take()).toBe(false);
  });

  it('never stores more than burst, however long it was idle', () => {
    let now = 0;
    const b = new TokenBucket(100, 3, () => now);
    for (let i = 0; i < 3; i++) b.take();
    now += 3_600_000;
    expect(b.full()).toBe(true);
    let taken = 0;
    while (b.take()) taken++;
    expect(taken).toBe(3);
  });

  it('handles rates below one per second', () => {
    let now = 0;
    const b = new TokenBucket(0.5, 1, () => now);
    expect(b.take()).toBe(true);
    expect(b.waitMs()).toBe(2000);
    now += 1999;
    expect(b.take()).toBe(false);
    now += 1;
    expect(b.take()).toBe(true);
  });

  it('does not run backwards when the clock does', () => {
    let now = 10_000;
    const b = new TokenBucket(1, 1, () => now);
    expect(b.take()).toBe(true);
    now = 5_000;
    expect(b.take()).toBe(false);
    now = 11_000;
    expect(b.take()).toBe(true);
  });

  it('retune keeps spent tokens spent (a reload is no way around the limit)', () => {
    let now = 0;
    const b = new TokenBucket(10, 10, () => now);
    for (let i = 0; i < 10; i++) expect(b.take()).toBe(true);
    b.retune(100, 20);
    expect(b.take()).toBe(false);
    now += 10;
    expect(b.take()).toBe(true);
    b.retune(1, 1);
    now += 60_000;
    expect(b.take()).toBe(true);
    expect(b.take()).toBe(false);
  });

  it('bursts: global accept a tenth of a second, per source a whole second', () => {
    expect(acceptBurst(400)).toBe(40);
    expect(acceptBurst(5)).toBe(1);
    expect(acceptBurst(0.2)).toBe(1);
    expect(sourceBurst(10)).toBe(10);
    expect(sourceBurst(0.5)).toBe(1);
  });
});

describe('Admission', () => {
  let admission: Admission | null = null;
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 });
  });
  afterEach(() => {
    admission?.close();
    admission = null;
    vi.useRealTimers();
  });
  const make = (l: LimitsConfig): Admission => (admission = new Admission(l, () => Date.now()));

  it('without limits admits everyone and keeps no books', () => {
    const a = make(limits());
    for (let i = 0; i < 100; i++) expect(a.admit(new Ticket(`10.0.0.${i}`))).toBe('ok');
    expect(a.trackedSources).toBe(0);
    expect(a.queued).toBe(0);
  });

  it('perSource.exempt: a known NAT has neither limit nor book; others keep both (IPv4-mapped peers match)', () => {
    const a = make(limits({ perSource: { maxConnections: 1, connectRate: 1, exempt: ['10.0.0.0/8', '2001:db8::/32'] } }));
    for (let i = 0; i < 20; i++) {
      for (const address of ['10.1.2.3', '::ffff:10.1.2.3', '2001:db8::7']) {
        const t = new Ticket(address);
        expect(a.arrive(t)).toBeNull();
        expect(a.admit(t)).toBe('ok');
      }
    }
    expect(a.trackedSources).toBe(0);
    expect(a.admit(new Ticket('192.0.2.9'))).toBe('ok');
    expect(a.admit(new Ticket('192.0.2.9'))).toBe('source_full');
    expect(a.trackedSources).toBe(1);
  });

  it('a reload that turns perSource.maxConnections on (or ends an exemption) counts the sessions already admitted', () => {
    const a = make(limits());
    const old = [new Ticket('10.0.0.1'), new Ticket('10.0.0.1'), new Ticket('10.0.0.1')];
    for (const t of old) expect(a.admit(t)).toBe('ok');
    expect(a.trackedSources).toBe(0); // no limit: no book
    a.reconfigure(limits({ perSource: { maxConnections: 2 } }));
    a.adopt(old);
    a.adopt(old); // idempotent
    expect(a.admit(new Ticket('10.0.0.1'))).toBe('source_full');
    a.release(old[0]!);
    expect(a.admit(new Ticket('10.0.0.1'))).toBe('source_full'); // 2 of 2 still
    a.release(old[1]!);
    expect(a.admit(new Ticket('10.0.0.1'))).toBe('ok');
    // Exempt, then not: the same.
    const b = make(limits({ perSource: { maxConnections: 1, exempt: ['10.0.0.2'] } }));
    const gateway = [new Ticket('10.0.0.2'), new Ticket('10.0.0.2')];
    for (const t of gateway) expect(b.admit(t)).toBe('ok');
    b.reconfigure(limits({ perSource: { maxConnections: 1 } }));
    b.adopt(gateway);
    expect(b.admit(new Ticket('10.0.0.2'))).toBe('source_full');
  });

  it('adopt() also counts the sessions that went through the accept queue, and those still waiting in it', () => {
    const a = make(limits({ acceptRate: 1, acceptQueue: 10 }));
    const through = [new Ticket('10.0.0.3'), new Ticket('10.0.0.3'), new Ticket('10.0.0.3')];
    expect(through.map((t) => a.admit(t))).toEqual(['ok', 'queued', 'queued']);
    vi.advanceTimersByTime(1000); // one of the two queued goes through; the other still waits
    expect(through.map((t) => t.events.length)).toEqual([0, 1, 0]);
    a.reconfigure(limits({ acceptRate: 1, acceptQueue: 10, perSource: { maxConnections: 3 } }));
    a.adopt([through[0]!, through[1]!]);
    vi.advanceTimersByTime(1000);
    expect(through[2]!.events).toEqual(['proceed']);
    vi.advanceTimersByTime(5000);
    expect(a.admit(new Ticket('10.0.0.3'))).toBe('source_full'); // 3 of 3
  });

  it('per-source cap: source_full at the cap, other sources unaffected, freed by release', () => {
    const a = make(limits({ perSource: { maxConnections: 2 } }));
    const t1 = new Ticket('10.0.0.1');
    const t2 = new Ticket('10.0.0.1');
    expect(a.admit(t1)).toBe('ok');
    expect(a.admit(t2)).toBe('ok');
    expect(a.admit(new Ticket('10.0.0.1'))).toBe('source_full');
    expect(a.admit(new Ticket('10.0.0.2'))).toBe('ok');
    a.release(t1);
    a.release(t1); // twice: harmless
    a.release(new Ticket('10.0.0.1')); // never admitted: harmless
    expect(a.admit(new Ticket('10.0.0.1'))).toBe('ok');
    expect(a.admit(new Ticket('10.0.0.1'))).toBe('source_full');
  });

  it('an IPv4 host is one source whether it reaches an IPv4 or a dual-stack listener (::ffff:a.b.c.d)', () => {
    const a = make(limits({ perSource: { maxConnections: 1 } }));
    expect(a.admit(new Ticket('10.50.0.1'))).toBe('ok');
    expect(a.admit(new Ticket('::ffff:10.50.0.1'))).toBe('source_full');
    const b = new Ticket('::ffff:10.50.0.2');
    expect(a.arrive(b)).toBeNull();
    expect(a.admit(b)).toBe('ok');
    expect(a.admit(new Ticket('10.50.0.2'))).toBe('source_full');
    expect(a.trackedSources).toBe(2);
    expect(sourceKey('::ffff:192.0.2.7')).toBe('192.0.2.7');
    expect(sourceKey('::ffff:c000:207')).toBe('::ffff:c000:207'); // not the dotted form Node and PROXY headers give
    expect(sourceKey('2001:db8::1')).toBe('2001:db8::1');
  });

  // Reliability cases 58 and 63: silent connections (no CONNECT) count against their address from the start.
  it('connections still without a CONNECT are capped per source (twice maxConnections); a CONNECT or a close frees the place', () => {
    const a = make(limits({ perSource: { maxConnections: 1 } }));
    const silent = [new Ticket('10.0.0.1'), new Ticket('10.0.0.1')];
    for (const t of silent) expect(a.arrive(t)).toBeNull();
    expect(a.arrive(new Ticket('10.0.0.1'))).toBe('source_full');
    expect(a.arrive(new Ticket('10.0.0.2'))).toBeNull(); // other addresses unaffected
    // One of them sends its CONNECT: it is a session now (the session cap still applies), its pending place is free.
    expect(a.admit(silent[0]!)).toBe('ok');
    const third = new Ticket('10.0.0.1');
    expect(a.arrive(third)).toBeNull();
    expect(a.arrive(new Ticket('10.0.0.1'))).toBe('source_full');
    expect(a.admit(third)).toBe('source_full'); // one session already: answered 0x97
    a.release(third);
    expect(a.admit(silent[1]!)).toBe('source_full');
    a.release(silent[1]!);
    // Silent ones that leave give their place back, and the book is forgotten when nothing is left.
    a.release(silent[0]!);
    expect(a.trackedSources).toBe(1); // 10.0.0.2 still pending
  });

  it('pending cap: twice the connection cap, else twice a second of the CONNECT rate, else none', () => {
    expect(pendingCap({ maxConnections: 3, connectRate: 50, exempt: [] })).toBe(6);
    expect(pendingCap({ maxConnections: 0, connectRate: 2.5, exempt: [] })).toBe(2 * sourceBurst(2.5));
    expect(pendingCap({ maxConnections: 0, connectRate: 0, exempt: [] })).toBe(0);
    const rateOnly = make(limits({ perSource: { connectRate: 1 } }));
    expect(rateOnly.arrive(new Ticket())).toBeNull();
    expect(rateOnly.arrive(new Ticket())).toBeNull();
    expect(rateOnly.arrive(new Ticket())).toBe('rate_limited');
    rateOnly.close();
    const none = make(limits());
    for (let i = 0; i < 50; i++) expect(none.arrive(new Ticket())).toBeNull();
    expect(none.trackedSources).toBe(0);
  });

  it('forgets a source once its sessions are gone (no growth with many addresses)', () => {
    const a = make(limits({ perSource: { maxConnections: 1 } }));
    const tickets = Array.from({ length: 500 }, (_, i) => new Ticket(`10.1.${i >> 8}.${i & 255}`));
    for (const t of tickets) expect(a.admit(t)).toBe('ok');
    expect(a.trackedSources).toBe(500);
    for (const t of tickets) a.release(t);
    expect(a.trackedSources).toBe(0);
  });

  it('per-source CONNECT rate: a second of burst, then rate_limited, refilled with time; idle sources swept', () => {
    const a = make(limits({ perSource: { connectRate: 2 } }));
    const held: Ticket[] = [];
    for (let i = 0; i < 2; i++) {
      const t = new Ticket('10.0.0.9');
      held.push(t);
      expect(a.admit(t)).toBe('ok');
    }
    expect(a.admit(new Ticket('10.0.0.9'))).toBe('rate_limited');
    const other = new Ticket('10.0.0.8');
    held.push(other);
    expect(a.admit(other)).toBe('ok'); // its own bucket
    vi.advanceTimersByTime(500);
    const refilled = new Ticket('10.0.0.9');
    held.push(refilled);
    expect(a.admit(refilled)).toBe('ok');
    expect(a.admit(new Ticket('10.0.0.9'))).toBe('rate_limited');
    for (const t of held) a.release(t);
    expect(a.trackedSources).toBeGreaterThan(0); // buckets not yet full again
    vi.advanceTimersByTime(20_000); // two sweeps
    expect(a.trackedSources).toBe(0);
  });

  it('accept rate: burst at once, the rest queued FIFO and let through at the rate, queue bounded', () => {
    const a = make(limits({ acceptRate: 10, acceptQueue: 3 }));
    const first = new Ticket();
    expect(a.admit(first)).toBe('ok'); // burst of 1 (a tenth of 10/s)
    const waiting = [new Ticket(), new Ticket(), new Ticket()];
    for (const t of waiting) expect(a.admit(t)).toBe('queued');
    expect(a.queued).toBe(3);
    expect(a.admit(new Ticket())).toBe('accept_queue_full');
    vi.advanceTimersByTime(99);
    expect(waiting.map((t) => t.events.length)).toEqual([0, 0, 0]);
    vi.advanceTimersByTime(1);
    expect(waiting.map((t) => t.events)).toEqual([['proceed'], [], []]);
    vi.advanceTimersByTime(200);
    expect(waiting.map((t) => t.events)).toEqual([['proceed'], ['proceed'], ['proceed']]);
    expect(a.queued).toBe(0);
  });

  it('accept rate on the default (monotonic) clock: a wall-clock step back does not stall the queue', () => {
    const a = (admission = new Admission(limits({ acceptRate: 10, acceptQueue: 3 })));
    expect(a.admit(new Ticket())).toBe('ok');
    const waiting = [new Ticket(), new Ticket()];
    for (const t of waiting) expect(a.admit(t)).toBe('queued');
    vi.setSystemTime(Date.now() - 3_600_000); // NTP or a restored VM: the wall clock goes back an hour
    vi.advanceTimersByTime(200);
    expect(waiting.map((t) => t.events)).toEqual([['proceed'], ['proceed']]);
  });

  it('newcomers queue behind waiting clients even when a token is free', () => {
    const a = make(limits({ acceptRate: 10, acceptQueue: 10 }));
    expect(a.admit(new Ticket())).toBe('ok');
    const early = new Ticket();
    expect(a.admit(early)).toBe('queued');
    // Time passes without the timer running yet (a busy event loop): a token exists, but early is first.
    vi.setSystemTime(Date.now() + 100);
    const late = new Ticket();
    expect(a.admit(late)).toBe('queued');
    vi.advanceTimersByTime(100); // the timer fires: one token (burst 1), for the first in line
    expect(early.events).toEqual(['proceed']);
    expect(late.events).toEqual([]);
    vi.advanceTimersByTime(100);
    expect(late.events).toEqual(['proceed']);
  });

  it('a queued client waits at most clientConnectTimeout, then is refused rate_limited (not at the next token)', () => {
    const a = make(limits({ acceptRate: 1, acceptQueue: 10, clientConnectTimeout: 250 }));
    expect(a.admit(new Ticket())).toBe('ok');
    const t = new Ticket();
    expect(a.admit(t)).toBe('queued');
    vi.advanceTimersByTime(249);
    expect(t.events).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(t.events).toEqual(['rate_limited']);
    expect(a.queued).toBe(0);
  });

  it('a client that leaves while queued gives its place back and is never called', () => {
    const a = make(limits({ acceptRate: 10, acceptQueue: 2 }));
    expect(a.admit(new Ticket())).toBe('ok');
    const gone = new Ticket();
    const next = new Ticket();
    expect(a.admit(gone)).toBe('queued');
    expect(a.admit(next)).toBe('queued');
    expect(a.admit(new Ticket())).toBe('accept_queue_full');
    a.release(gone);
    expect(a.queued).toBe(1);
    const third = new Ticket();
    expect(a.admit(third)).toBe('queued');
    vi.advanceTimersByTime(100);
    expect(gone.events).toEqual([]);
    expect(next.events).toEqual(['proceed']);
    vi.advanceTimersByTime(100);
    expect(third.events).toEqual(['proceed']);
  });

  it('a queued client holds its per-source slot until released', () => {
    const a = make(limits({ acceptRate: 10, acceptQueue: 10, perSource: { maxConnections: 2 } }));
    const t1 = new Ticket('10.0.0.5');
    const t2 = new Ticket('10.0.0.5');
    expect(a.admit(t1)).toBe('ok');
    expect(a.admit(t2)).toBe('queued');
    expect(a.admit(new Ticket('10.0.0.5'))).toBe('source_full');
    a.release(t2);
    expect(a.admit(new Ticket('10.0.0.5'))).toBe('queued');
  });

  it('refused at a full queue: the source book does not linger', () => {
    const a = make(limits({ acceptRate: 10, acceptQueue: 0, perSource: { maxConnections: 5 } }));
    const t = new Ticket('10.0.0.1');
    expect(a.admit(t)).toBe('ok');
    expect(a.admit(new Ticket('10.0.0.2'))).toBe('accept_queue_full');
    expect(a.trackedSources).toBe(1);
    a.release(t);
    expect(a.trackedSources).toBe(0);
  });

  it('reload: dropping the accept rate lets every waiting client through at once; a new rate applies to the queue', () => {
    const l = limits({ acceptRate: 1, acceptQueue: 10 });
    const a = make(l);
    expect(a.admit(new Ticket())).toBe('ok');
    const waiting = [new Ticket(), new Ticket(), new Ticket()];
    for (const t of waiting) expect(a.admit(t)).toBe('queued');
    a.reconfigure({ ...l, acceptRate: 20 }); // 50 ms per token, burst 2 (but no tokens stored)
    vi.advanceTimersByTime(50);
    expect(waiting.filter((t) => t.events.length > 0)).toHaveLength(1);
    a.reconfigure({ ...l, acceptRate: 0 });
    expect(waiting.map((t) => t.events)).toEqual([['proceed'], ['proceed'], ['proceed']]);
    expect(a.queued).toBe(0);
  });

  it('close refuses waiting clients (the balancer is stopping: shutting_down) and stops its timers; idempotent', () => {
    const a = make(limits({ acceptRate: 1, acceptQueue: 10 }));
    expect(a.admit(new Ticket())).toBe('ok');
    const t = new Ticket();
    expect(a.admit(t)).toBe('queued');
    a.close();
    a.close();
    expect(t.events).toEqual(['shutting_down']);
    expect(vi.getTimerCount()).toBe(0);
    // A CONNECT read after close() that would have to wait is refused at once, and no timer comes back.
    expect(a.admit(new Ticket())).toBe('shutting_down');
    expect(vi.getTimerCount()).toBe(0);
  });

  it('after close, every CONNECT is told shutting_down, also without a rate or a per-source limit, and one that arrived before gives back its place', () => {
    // A limits audit: a CONNECT completed during the drain was routed to a broker (taking over its client ID's
    // session there, closed again at drainTimeout), while clients waiting in the queue were told the balancer stops.
    const plain = make(limits());
    plain.close();
    expect(plain.admit(new Ticket())).toBe('shutting_down');
    const perSource = make(limits({ perSource: { maxConnections: 1 } }));
    const early = new Ticket();
    expect(perSource.arrive(early)).toBeNull(); // its PROXY header or TLS handshake: pending on its address
    perSource.close();
    expect(perSource.admit(early)).toBe('shutting_down');
    perSource.release(early);
    expect(perSource.trackedSources).toBe(0);
  });

  it('refuseWaiting (over the memory ceiling) refuses every waiting client with the reason; the queue keeps working after', () => {
    const a = make(limits({ acceptRate: 1, acceptQueue: 10 }));
    expect(a.admit(new Ticket())).toBe('ok');
    const waiting = [new Ticket(), new Ticket(), new Ticket()];
    for (const t of waiting) expect(a.admit(t)).toBe('queued');
    expect(a.refuseWaiting('overloaded')).toBe(3);
    expect(waiting.map((t) => t.events)).toEqual([['overloaded'], ['overloaded'], ['overloaded']]);
    expect(a.queued).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
    expect(a.refuseWaiting('overloaded')).toBe(0);
    // Not a stop: a later client still waits for its token and gets it.
    const later = new Ticket();
    expect(a.admit(later)).toBe('queued');
    vi.advanceTimersByTime(1000);
    expect(later.events).toEqual(['proceed']);
  });

  it('paces a storm: over any window of 1 s no more than rate + burst proceed', () => {
    const rate = 400;
    const a = make(limits({ acceptRate: rate, acceptQueue: 5000, clientConnectTimeout: 60_000 }));
    const start = Date.now();
    const times: number[] = [];
    const tickets = Array.from({ length: 3000 }, () => {
      const t = new Ticket();
      t.proceed = () => times.push(Date.now() - start);
      return t;
    });
    for (const t of tickets) {
      const v = a.admit(t);
      if (v === 'ok') t.proceed();
      else expect(v).toBe('queued');
    }
    vi.advanceTimersByTime(10_000);
    expect(times).toHaveLength(3000);
    let peak = 0;
    for (let i = 0, j = 0; i < times.length; i++) {
      while (times[i]! - times[j]! >= 1000) j++;
      peak = Math.max(peak, i - j + 1);
    }
    expect(peak).toBeLessThanOrEqual(rate + acceptBurst(rate));
    expect(times[times.length - 1]!).toBeGreaterThanOrEqual(((3000 - acceptBurst(rate)) / rate) * 1000 - 5);
  });
});
