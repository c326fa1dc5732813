import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { COMMAND_ENV, runCommand } from '../../src/failover/command.js';
import { arpingSender, GarpAnnouncer, type SendGarp } from '../../src/failover/garp.js';

describe('gratuitous ARP schedule', () => {
  let sent: Array<{ at: number; address: string; signal: AbortSignal }>;
  let send: SendGarp;
  beforeEach(() => {
    vi.useFakeTimers();
    sent = [];
    // Like arping -c 1: "runs" ~1 s, unless cancelled.
    send = (_iface, address, signal) => {
      sent.push({ at: Date.now(), address, signal });
      // Its abort listener goes when it ends, as execFile's does.
      return new Promise<void>((resolve) => {
        const onAbort = (): void => {
          clearTimeout(t);
          resolve();
        };
        const t = setTimeout(() => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        }, 1000);
        signal.addEventListener('abort', onAbort, { once: true });
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

  it('announceOnce() sends one per VIP now and leaves the scheduled bursts alone (a heal, no tail of its own)', async () => {
    const g = new GarpAnnouncer({ iface: 'eth0', count: 3, intervalMs: 200, repeatAfterMs: 5000 }, send);
    const t0 = Date.now();
    g.announce(['192.0.2.10']);
    await vi.advanceTimersByTimeAsync(100);
    g.announceOnce(['192.0.2.10']);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(sent.map((s) => s.at - t0)).toEqual([0, 100, 200, 400, 5000, 5200, 5400]);
    sent = [];
    const t1 = Date.now();
    g.announceOnce(['192.0.2.10', '192.0.2.11']); // alone: one each, nothing after
    await vi.advanceTimersByTimeAsync(10_000);
    expect(sent.map((s) => `${s.at - t1} ${s.address}`)).toEqual(['0 192.0.2.10', '0 192.0.2.11']);
    expect(() => g.announceOnce(['not-an-address'])).toThrow(RangeError);
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

describe('gratuitous ARP children', () => {
  // The defaults (5 per VIP, 200 ms apart, ~1 s each) keep about 5 children per VIP running at once, all
  // cancellable through one AbortSignal: with three VIPs Node warned of a "possible EventTarget memory leak".
  it('many running at once, on real child processes, raise no listener-leak warning; cancel() ends them all', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error): void => void warnings.push(`${w.name}: ${w.message}`);
    process.on('warning', onWarning);
    let started = 0;
    const send: SendGarp = async (_iface, _address, signal) => {
      started++;
      await runCommand('sleep', ['5'], { timeoutMs: 10_000, signal });
    };
    const g = new GarpAnnouncer({ iface: 'eth0', count: 5, intervalMs: 20, repeatAfterMs: 0 }, send);
    try {
      g.announce(['192.0.2.10', '192.0.2.11', '192.0.2.12']);
      for (let i = 0; i < 100 && started < 15; i++) await new Promise((r) => setTimeout(r, 20));
      expect(started).toBe(15);
      const t0 = Date.now();
      g.cancel();
      await g.idle();
      expect(Date.now() - t0, 'cancel() killed the children').toBeLessThan(2000);
      // process.emitWarning delivers on a later tick.
      await new Promise((r) => setImmediate(r));
      expect(warnings.filter((w) => w.startsWith('MaxListenersExceededWarning'))).toEqual([]);
    } finally {
      // No child outlives the test, even when an expectation failed before cancel().
      g.cancel();
      await g.idle();
      process.off('warning', onWarning);
    }
  });
});

describe('arpingSender', () => {
  // A re-audit: without arping on PATH, each takeover's burst said `gratuitous ARP failed` five times.
  it('says a failure to run arping once per 10 s per address, the rest counted', async () => {
    const lines: Array<{ obj: Record<string, unknown>; msg: string }> = [];
    const log = { warn: (obj: object, msg: string) => lines.push({ obj: obj as Record<string, unknown>, msg }), error: () => {}, info: () => {}, debug: () => {} };
    // The commands' environment is taken at load (command.ts): no arping on its PATH for this test.
    const env = COMMAND_ENV as Record<string, string | undefined>;
    const path = env['PATH'];
    env['PATH'] = '/nonexistent-mqtt-lb-test';
    try {
      const send = arpingSender(log as unknown as Parameters<typeof arpingSender>[0]);
      for (let i = 0; i < 5; i++) await send('eth0', '192.0.2.10', new AbortController().signal);
      await send('eth0', '192.0.2.11', new AbortController().signal);
    } finally {
      env['PATH'] = path;
    }
    expect(lines.map((l) => [l.msg, l.obj.address])).toEqual([
      ['gratuitous ARP failed', '192.0.2.10'],
      ['gratuitous ARP failed', '192.0.2.11'],
    ]);
  });
});
