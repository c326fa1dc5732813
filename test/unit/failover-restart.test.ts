/**
 * Failover (main-thread side): a failover thread lost while running is started again, and a start that fails is
 * tried again with a doubling delay (capped), never given up. Driven without a thread: the spawn is replaced.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { FailoverConfig } from '../../src/config/types.js';
import { Failover } from '../../src/failover/index.js';
import { logSink } from './health-fixtures.js';

interface Inner {
  started: boolean;
  spawnWorker(): Promise<void>;
  removeAllVips(): Promise<void>;
  onWorkerLost(code: number): void;
}

afterEach(() => {
  vi.useRealTimers();
});

describe('Failover thread restart', () => {
  it('a restart that fails is tried again after 2, 4, 8 ... s (at most 30 s) until one succeeds', async () => {
    vi.useFakeTimers({ now: 0 });
    const { log, lines } = logSink();
    const fo = new Failover({} as FailoverConfig, log);
    const inner = fo as unknown as Inner;
    inner.started = true;
    const attempts: number[] = [];
    inner.spawnWorker = () => {
      attempts.push(Date.now());
      return attempts.length <= 6 ? Promise.reject(new Error('cannot bind UDP')) : Promise.resolve();
    };
    inner.removeAllVips = () => Promise.resolve();
    inner.onWorkerLost(1);
    await vi.advanceTimersByTimeAsync(200_000);
    // 1 s after the loss, then 2, 4, 8, 16, 30 (capped), 30 s after each failure; the seventh start succeeds.
    expect(attempts).toEqual([1000, 3000, 7000, 15_000, 31_000, 61_000, 91_000]);
    const failed = lines.filter((l) => l.msg === 'failover worker restart failed');
    expect(failed.map((l) => l.retryInMs)).toEqual([2000, 4000, 8000, 16_000, 30_000, 30_000]);
    expect(lines.filter((l) => l.msg === 'failover worker exited unexpectedly: removing VIPs, restarting')).toMatchObject([{ exitCode: 1 }]);
    await fo.close();
  });

  it('a close() stops the retries', async () => {
    vi.useFakeTimers({ now: 0 });
    const { log } = logSink();
    const fo = new Failover({} as FailoverConfig, log);
    const inner = fo as unknown as Inner;
    inner.started = true;
    let attempts = 0;
    inner.spawnWorker = () => {
      attempts++;
      return Promise.reject(new Error('cannot bind UDP'));
    };
    inner.removeAllVips = () => Promise.resolve();
    inner.onWorkerLost(1);
    await vi.advanceTimersByTimeAsync(3500); // attempts at 1 s and 3 s
    await fo.close();
    await vi.advanceTimersByTimeAsync(100_000);
    expect(attempts).toBe(2);
  });
});
