/**
 * Failover (main-thread side, src/failover/index.ts) and the heartbeat's 'release': the proxy is asked to close
 * the sessions on the VIPs of an instance demoted without a stop; its answer ('released') lets the VIPs go.
 * Driven without a heartbeat thread: its messages are fed in, what would be posted to it is recorded.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { FailoverConfig } from '../../src/config/types.js';
import { Failover } from '../../src/failover/index.js';
import type { MainToWorker, WorkerToMain } from '../../src/failover/messages.js';

interface Driven {
  fo: Failover;
  posted: MainToWorker[];
  feed(m: WorkerToMain): void;
  lose(): void;
}

function driven(): Driven {
  const fo = new Failover({} as FailoverConfig, pino({ level: 'silent' }));
  const posted: MainToWorker[] = [];
  const inner = fo as unknown as { post(m: MainToWorker): void; onMessage(m: WorkerToMain): void; onWorkerLost(code: number): void };
  inner.post = (m) => posted.push(m);
  return { fo, posted, feed: (m) => inner.onMessage(m), lose: () => inner.onWorkerLost(1) };
}

const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 0));

/** An onRelease the test ends by hand; records the VIPs and the signal it was given. */
function manualRelease(fo: Failover): { calls: Array<{ vips: string[]; signal: AbortSignal }>; finish(): void } {
  const calls: Array<{ vips: string[]; signal: AbortSignal }> = [];
  const finishers: Array<() => void> = [];
  fo.onRelease = (vips, signal) => {
    calls.push({ vips, signal });
    return new Promise<void>((resolve) => finishers.push(resolve));
  };
  return { calls, finish: () => finishers.splice(0).forEach((f) => f()) };
}

describe('Failover release (a demoted master closes its VIP sessions before the VIP goes)', () => {
  it('asks the proxy, and answers released with the same seq once it is done', async () => {
    const d = driven();
    const r = manualRelease(d.fo);
    d.feed({ type: 'release', routerId: 51, vips: ['192.0.2.10'], seq: 7 });
    expect(r.calls.map((c) => c.vips)).toEqual([['192.0.2.10']]);
    await settle();
    expect(d.posted).toEqual([]); // not before the proxy is done
    r.finish();
    await settle();
    expect(d.posted).toEqual([{ type: 'released', seq: 7 }]);
  });

  it('without a proxy listening, answers at once', async () => {
    const d = driven();
    d.feed({ type: 'release', routerId: 51, vips: ['192.0.2.10'], seq: 1 });
    await settle();
    expect(d.posted).toEqual([{ type: 'released', seq: 1 }]);
  });

  it('master again: the release of that instance is aborted (the rest stay) and not answered; another instance\'s goes on', async () => {
    const d = driven();
    const r = manualRelease(d.fo);
    d.feed({ type: 'release', routerId: 51, vips: ['192.0.2.10'], seq: 1 });
    d.feed({ type: 'release', routerId: 52, vips: ['192.0.2.20'], seq: 2 });
    d.feed({ type: 'state', routerId: 51, from: 'backup', to: 'master', at: Date.now() });
    expect(r.calls[0]!.signal.aborted).toBe(true);
    expect(r.calls[1]!.signal.aborted).toBe(false);
    r.finish();
    await settle();
    expect(d.posted).toEqual([{ type: 'released', seq: 2 }]);
  });

  it('a lost heartbeat thread: the closing goes on (not aborted), and its answer does not reach the next thread', async () => {
    const d = driven();
    const r = manualRelease(d.fo);
    d.feed({ type: 'release', routerId: 51, vips: ['192.0.2.10'], seq: 1 });
    d.lose();
    expect(r.calls[0]!.signal.aborted).toBe(false);
    r.finish();
    await settle();
    // A new thread numbers its releases from 1 again: an answer for seq 1 would end its own first release early.
    expect(d.posted).toEqual([]);
  });
});
