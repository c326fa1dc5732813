/**
 * The takeover rule across workers [MQTT-3.1.4-3]: the primary's ledger of which worker holds which client ID on
 * which server (client-id-ledger.ts), and a worker's batching of its reports (client-id-exchange.ts).
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ClientIdLedger, ENDED_CHARS_KEPT, ENDED_CLAIMS_KEPT } from '../../src/cluster/client-id-ledger.js';
import { ClientIdExchange } from '../../src/cluster/client-id-exchange.js';
import { ClientIdRegistry } from '../../src/balancer/client-id-registry.js';
import type { ClientIdEvent } from '../../src/cluster/messages.js';
import type { Server } from '../../src/balancer/server.js';

const claim = (id: string, serial: number, server: string, at: number, pool = 'p'): ClientIdEvent => ['claim', pool, id, serial, server, at];
const release = (serial: number): ClientIdEvent => ['release', serial];

describe('ClientIdLedger (primary)', () => {
  it('a newer claim in another worker on another server closes the older session; on the same server the broker does it', () => {
    const ledger = new ClientIdLedger();
    expect(ledger.apply(1, [claim('c', 7, 'b1', 100)])).toEqual([]);
    // Accepted before the newer one (true): a 5.0 one gets the grace for its broker's DISCONNECT 0x8E (session.ts).
    expect(ledger.apply(2, [claim('c', 3, 'b2', 200)])).toEqual([{ worker: 1, order: ['p', 'c', 7, true, 'b2'] }]);
    // Now worker 2's session holds it: a third one on b2 in worker 1 is the broker's business.
    expect(ledger.apply(1, [claim('c', 8, 'b2', 300)])).toEqual([]);
    // ...and a fourth on b1 in worker 2 displaces worker 1's, the newest before it.
    expect(ledger.apply(2, [claim('c', 4, 'b1', 400)])).toEqual([{ worker: 1, order: ['p', 'c', 8, true, 'b1'] }]);
    expect(ledger.size).toBe(1);
    // The order names the newer session's server (the log line's `to`), from a place of name and address.
    expect(ledger.apply(1, [claim('z', 1, 'b1 10.0.0.1:1883', 100)])).toEqual([]);
    expect(ledger.apply(2, [claim('z', 2, 'b2 [fd00::2]:1883', 200)])).toEqual([{ worker: 1, order: ['p', 'z', 1, true, 'b2'] }]);
  });

  it('the older claim loses whichever report arrives first (reports are batched per worker)', () => {
    const ledger = new ClientIdLedger();
    expect(ledger.apply(2, [claim('c', 3, 'b2', 200)])).toEqual([]);
    // Worker 1's claim was made earlier, reported later: it is the one to close, at once (false: it was still waiting
    // for its CONNACK when the newer one was accepted).
    expect(ledger.apply(1, [claim('c', 7, 'b1', 100)])).toEqual([{ worker: 1, order: ['p', 'c', 7, false, 'b2'] }]);
    // Its release later changes nothing: worker 2 still holds the ID.
    ledger.apply(1, [release(7)]);
    expect(ledger.apply(1, [claim('c', 9, 'b1', 300)])).toEqual([{ worker: 2, order: ['p', 'c', 3, true, 'b1'] }]);
  });

  it('within one worker the worker decided already; a release forgets only its own claim', () => {
    const ledger = new ClientIdLedger();
    expect(ledger.apply(1, [claim('c', 1, 'b1', 100), claim('c', 2, 'b2', 200)])).toEqual([]);
    ledger.apply(1, [release(1)]); // displaced by its own newer session: not the holder
    expect(ledger.size).toBe(1);
    ledger.apply(2, [release(2)]); // another worker's serial 2: not this claim
    expect(ledger.size).toBe(1);
    ledger.apply(1, [release(2)]);
    expect(ledger.size).toBe(0);
    // Gone: a new claim elsewhere closes nothing.
    expect(ledger.apply(2, [claim('c', 5, 'b1', 300)])).toEqual([]);
  });

  it('the claim whose CONNECT went later wins, not the one reported later; a release names only its serial', () => {
    const ledger = new ClientIdLedger();
    ledger.apply(1, [claim('c', 1, 'b1', 500)]);
    // Worker 2's session was CONNECTed earlier (its CONNACK came later): it is the one to close.
    expect(ledger.apply(2, [claim('c', 1, 'b2', 400)])).toEqual([{ worker: 2, order: ['p', 'c', 1, false, 'b1'] }]);
    ledger.apply(2, [release(1)]);
    expect(ledger.size).toBe(1);
    ledger.apply(1, [release(1)]);
    expect(ledger.size).toBe(0);
  });

  it('an older claim reported after the newer session of its ID has ended (in another worker, on another server) is closed', () => {
    const ledger = new ClientIdLedger();
    ledger.apply(1, [claim('c', 1, 'b1', 500), release(1)]); // the newer session: accepted, and gone already
    // Its broker's CONNACK came late: the older session is closed as if the newer one were still there.
    expect(ledger.apply(2, [claim('c', 1, 'b2', 400)])).toEqual([{ worker: 2, order: ['p', 'c', 1, false, 'b1'] }]);
    expect(ledger.size).toBe(1); // held by its worker until it is closed
    ledger.apply(2, [release(1)]);
    expect(ledger.size).toBe(0);
    // Not when it is newer than the one that ended, on the ended one's server (the broker's business), or in the same
    // worker (its own registry closed it at the newer CONNACK), or in another pool.
    expect(ledger.apply(2, [claim('c', 2, 'b2', 600), release(2)])).toEqual([]);
    ledger.apply(1, [claim('d', 3, 'b1', 500), release(3)]);
    expect(ledger.apply(2, [claim('d', 4, 'b1', 400), release(4)])).toEqual([]);
    ledger.apply(1, [claim('e', 5, 'b1', 500), release(5)]);
    expect(ledger.apply(1, [claim('e', 6, 'b2', 400), release(6)])).toEqual([]);
    ledger.apply(1, [claim('f', 7, 'b1', 500), release(7)]);
    expect(ledger.apply(2, [claim('f', 8, 'b2', 400, 'other')])).toEqual([]);
  });

  it('an ended claim is replaced only by a newer one; a claim closed against it is recorded until its release (audit)', () => {
    const ledger = new ClientIdLedger();
    // G (worker 1, b1, 300) ended; C (worker 2, b1, 100), older, accepted late on the same broker, ended after it.
    ledger.apply(1, [claim('c', 1, 'b1', 300), release(1)]);
    expect(ledger.apply(2, [claim('c', 1, 'b1', 100), release(1)])).toEqual([]);
    // D (worker 2, b2, 200) is older than G: closed, though C ended last.
    expect(ledger.apply(2, [claim('c', 2, 'b2', 200)])).toEqual([{ worker: 2, order: ['p', 'c', 2, false, 'b1'] }]);
    ledger.apply(2, [release(2)]);
    expect(ledger.size).toBe(0);
    // P (worker 2, b1, 100) held, then replaced in its worker by Q (worker 2, b2, 200), which is closed against G: once
    // Q is released, nothing is left (P's claim went with Q's report, as for any claim that replaces another).
    ledger.apply(1, [claim('d', 3, 'b1', 300), release(3)]);
    ledger.apply(2, [claim('d', 4, 'b1', 100)]);
    expect(ledger.apply(2, [claim('d', 5, 'b2', 200)])).toEqual([{ worker: 2, order: ['p', 'd', 5, false, 'b1'] }]);
    ledger.apply(2, [release(5)]);
    expect(ledger.size).toBe(0);
  });

  it('remembers the last ENDED_CLAIMS_KEPT ends, the newest of each ID', () => {
    const ledger = new ClientIdLedger();
    ledger.apply(1, [claim('c', 1, 'b1', 100), release(1), claim('c', 2, 'b1', 500), release(2)]);
    for (let i = 0; i < ENDED_CLAIMS_KEPT - 1; i++) ledger.apply(1, [claim(`x${i}`, 10 + i, 'b1', 100), release(10 + i)]);
    expect(ledger.apply(2, [claim('c', 1, 'b2', 400), release(1)])).toEqual([{ worker: 2, order: ['p', 'c', 1, false, 'b1'] }]);
    ledger.apply(1, [claim('y', 5, 'b1', 100), release(5)]); // one end more: c's is forgotten
    expect(ledger.apply(2, [claim('c', 2, 'b2', 400), release(2)])).toEqual([]);
  });

  it('long client IDs: the ends remembered hold at most ENDED_CHARS_KEPT characters', () => {
    const ledger = new ClientIdLedger();
    const long = (i: number) => `${i}`.padEnd(60_000, '.');
    const fit = Math.floor(ENDED_CHARS_KEPT / (60_000 + 2));
    for (let i = 0; i <= fit; i++) ledger.apply(1, [claim(long(i), i + 1, 'b1', 500), release(i + 1)]);
    // The first end no longer fits beside the others; the second still does (orders compared by their serial).
    expect(ledger.apply(2, [claim(long(1), 2, 'b2', 400)]).map((o) => o.order[2])).toEqual([2]);
    expect(ledger.apply(2, [claim(long(0), 1, 'b2', 400)]).map((o) => o.order[2])).toEqual([]);
  });

  it('pools are separate; a worker that exits takes its claims with it', () => {
    const ledger = new ClientIdLedger();
    ledger.apply(1, [claim('c', 1, 'b1', 100, 'a'), claim('d', 2, 'b1', 100, 'a')]);
    expect(ledger.apply(2, [claim('c', 1, 'b2', 200, 'other')])).toEqual([]);
    ledger.forgetWorker(1);
    ledger.forgetWorker(1);
    expect(ledger.size).toBe(1);
    expect(ledger.apply(2, [claim('c', 2, 'b2', 300, 'a')])).toEqual([]);
    expect(ledger.size).toBe(2);
  });
});

describe('ClientIdExchange (worker)', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  const server = (name: string) => ({ name }) as Server;
  type Holder = { server: Server; connectSentAt: number; takenOver(): void };

  it('sends the reports of a burst in one message, in order, with a monotonic claim time; nothing while idle', () => {
    vi.useFakeTimers();
    const sent: ClientIdEvent[][] = [];
    const exchange = new ClientIdExchange((events) => sent.push(events), 20);
    const registry = new ClientIdRegistry<Holder>('p', exchange);
    const s1 = { server: server('b1'), connectSentAt: 1000, takenOver: vi.fn() };
    const s2 = { server: server('b2'), connectSentAt: 1001, takenOver: vi.fn() };
    registry.claim('a', s1);
    registry.claim('b', s2);
    registry.release('a', s1);
    expect(sent).toEqual([]);
    vi.advanceTimersByTime(20);
    expect(sent).toHaveLength(1);
    const [events] = sent;
    expect(events!.map((e) => (e[0] === 'claim' ? [e[0], e[2], e[3]] : e))).toEqual([
      ['claim', 'a', events![0]![3]],
      ['claim', 'b', events![1]![3]],
      ['release', events![0]![3]],
    ]);
    // The CONNECT times on the host's clock (process.hrtime), 1 ms apart as given.
    const [at1, at2] = [events![0]![5] as number, events![1]![5] as number];
    expect(at2 - at1).toBe(1000);
    vi.advanceTimersByTime(100);
    expect(sent).toHaveLength(1);
    exchange.close();
    exchange.close();
    registry.release('b', s2);
    exchange.flush();
    expect(sent).toHaveLength(1);
  });

  it('claim times are on the host monotonic clock, which every worker process shares (process.hrtime)', () => {
    const sent: ClientIdEvent[][] = [];
    const exchange = new ClientIdExchange((events) => sent.push(events));
    const registry = new ClientIdRegistry<Holder>('p', exchange);
    registry.claim('a', { server: server('b1'), connectSentAt: performance.now(), takenOver: vi.fn() });
    exchange.flush();
    const [seconds, nanos] = process.hrtime();
    const host = seconds * 1e6 + nanos / 1e3;
    const at = sent[0]![0]![5] as number;
    expect(at).toBeLessThanOrEqual(host + 1000);
    expect(host - at).toBeLessThan(1_000_000);
    exchange.close();
  });

  it('an order finds the session still holding the ID under that serial, in the named pool only', () => {
    const sent: ClientIdEvent[][] = [];
    const exchange = new ClientIdExchange((events) => sent.push(events));
    const registry = new ClientIdRegistry<Holder>('p', exchange);
    new ClientIdRegistry<Holder>('q', exchange);
    const s1 = { server: server('b1'), connectSentAt: 1, takenOver: vi.fn() };
    registry.claim('a', s1);
    exchange.flush();
    const serial = sent[0]![0]![3] as number;
    expect(exchange.displaced([['p', 'a', serial, true, 'b2']]).map((d) => [d.holder, d.acceptedFirst, d.to])).toEqual([[s1, true, 'b2']]);
    expect(exchange.displaced([['p', 'a', serial, false, 'b2']]).map((d) => d.acceptedFirst)).toEqual([false]);
    expect(exchange.displaced([['q', 'a', serial, true, 'b2'], ['p', 'a', serial + 1, true, 'b2'], ['gone', 'a', serial, true, 'b2']])).toEqual([]);
    exchange.close();
  });
});
