import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { GarpAnnouncer, type SendGarp } from '../../src/failover/garp.js';

describe('gratuitous ARP schedule', () => {
  let sent: Array<{ at: number; address: string; signal: AbortSignal }>;
  let send: SendGarp;
  beforeEach(() => {
    vi.useFakeTimers();
    sent = [];
    // Like arping -c 1: "runs" ~1 s, unless cancelled.
    send = (_iface, address, signal) => {
      sent.push({ at: Date.now(), address, signal });
      return new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 1000);
        signal.addEventListener('abort', () => {
          clearTimeout(t);
          resolve();
        });
      });
    };
  });
  afterEach(() => vi.useRealTimers());

  it('count announcements per VIP at interval, then a second burst after repeatAfter', async () => {
    const g = new GarpAnnouncer({ iface: 'eth0', count: 3, intervalMs: 200, repeatAfterMs: 5000 }, send);
    const t0 = Date.now();
    g.announce(['192.0.2.10', '192.0.2.11']);
    await vi.advanceTimersByTimeAsync(10_000);
    const offsets = (a: string) => sent.filter((s) => s.address === a).map((s) => s.at - t0);
    expect(offsets('192.0.2.10')).toEqual([0, 200, 400, 5000, 5200, 5400]);
    expect(offsets('192.0.2.11')).toEqual([0, 200, 400, 5000, 5200, 5400]);
  });

  it('does not wait for one arping to exit before starting the next (arping takes ~1 s)', async () => {
    const g = new GarpAnnouncer({ iface: 'eth0', count: 5, intervalMs: 100, repeatAfterMs: 0 }, send);
    g.announce(['192.0.2.10']);
    await vi.advanceTimersByTimeAsync(450);
    expect(sent).toHaveLength(5);
  });

  it('cancel() stops pending announcements and aborts running children', async () => {
    const g = new GarpAnnouncer({ iface: 'eth0', count: 3, intervalMs: 200, repeatAfterMs: 5000 }, send);
    g.announce(['192.0.2.10']);
    await vi.advanceTimersByTimeAsync(250);
    expect(sent).toHaveLength(2);
    g.cancel();
    expect(sent.every((s) => s.signal.aborted)).toBe(true);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(sent).toHaveLength(2);
    expect(g.pending).toBe(0);
    await g.idle();
  });

  it('announce() again restarts the schedule (on-demand re-announcement)', async () => {
    const g = new GarpAnnouncer({ iface: 'eth0', count: 2, intervalMs: 200, repeatAfterMs: 1000 }, send);
    const t0 = Date.now();
    g.announce(['192.0.2.10']);
    await vi.advanceTimersByTimeAsync(700);
    g.announce(['192.0.2.10']);
    await vi.advanceTimersByTimeAsync(5000);
    expect(sent.map((s) => s.at - t0)).toEqual([0, 200, 700, 900, 1700, 1900]);
  });

  it('refuses bad addresses', () => {
    const g = new GarpAnnouncer({ iface: 'eth0', count: 1, intervalMs: 200, repeatAfterMs: 0 }, send);
    expect(() => g.announce(['-h'])).toThrow(RangeError);
    expect(() => new GarpAnnouncer({ iface: '-i', count: 1, intervalMs: 1, repeatAfterMs: 0 }, send)).toThrow(RangeError);
  });
});
