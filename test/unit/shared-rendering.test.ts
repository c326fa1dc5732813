import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { IDLE_FACTOR, MAX_WAIT_MS, RenderBudget, SharedRendering } from '../../src/telemetry/shared-rendering.js';

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

/** A build that takes `costMs` of the (fake) clock and returns its sequence number. */
function rendering(costMs: number): { r: SharedRendering<number>; builds: () => number } {
  let n = 0;
  const r = new SharedRendering(
    () => {
      vi.setSystemTime(Date.now() + costMs);
      return ++n;
    },
    () => Date.now(),
  );
  return { r, builds: () => n };
}

/** Settles `p` while the fake clock runs (bounded). */
async function settle<T>(p: Promise<T>): Promise<T> {
  let done = false;
  let value: T | undefined;
  let error: unknown = null;
  p.then(
    (v) => ((done = true), (value = v)),
    (e: unknown) => ((done = true), (error = e)),
  );
  for (let i = 0; i < 100 && !done; i++) await vi.advanceTimersByTimeAsync(1);
  if (!done) throw new Error('did not settle');
  if (error !== null) throw error;
  return value as T;
}

describe('SharedRendering', () => {
  it('builds at once when idle: every answer is read after its request', async () => {
    const { r, builds } = rendering(1);
    expect(await settle(r.get())).toBe(1);
    vi.advanceTimersByTime(1000);
    expect(await settle(r.get())).toBe(2);
    expect(builds()).toBe(2);
  });

  it('after a build, waits IDLE_FACTOR times its duration before the next: a flood gets a bounded share of the loop', async () => {
    const { r } = rendering(2);
    const t0 = Date.now();
    expect(await settle(r.get())).toBe(1);
    const second = r.get();
    expect(await settle(second)).toBe(2);
    // Built no earlier than 2 ms (first build) + 20 ms (idle) after the start.
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2 + 2 * IDLE_FACTOR + 2);
  });

  it('requests before a build starts share it; a request during a build waits for the next one', async () => {
    let release!: () => void;
    let n = 0;
    const r = new SharedRendering(async () => {
      n++;
      await new Promise<void>((resolve) => (release = resolve));
      return n;
    });
    const early = [r.get(), r.get(), r.get()];
    await vi.advanceTimersByTimeAsync(0); // the build has started
    const during = r.get();
    release();
    expect(await Promise.all(early)).toEqual([1, 1, 1]);
    await vi.advanceTimersByTimeAsync(MAX_WAIT_MS);
    release();
    expect(await settle(during)).toBe(2);
    expect(n).toBe(2);
  });

  it('waits at most MAX_WAIT_MS after an expensive build', async () => {
    const { r } = rendering(500);
    await settle(r.get());
    const t = Date.now();
    const p = r.get();
    let done = false;
    void p.then(() => (done = true));
    await vi.advanceTimersByTimeAsync(MAX_WAIT_MS - 10);
    expect(done).toBe(false); // 500 ms × IDLE_FACTOR would be 5 s: capped
    expect(await settle(p)).toBe(2);
    expect(Date.now() - t).toBeLessThanOrEqual(MAX_WAIT_MS + 500 + 5);
  });

  it('two renderings with one budget: a build of either delays the next of the other', async () => {
    const budget = new RenderBudget();
    const costly = (n: number) => new SharedRendering(() => (vi.setSystemTime(Date.now() + 2), n), () => Date.now(), budget);
    const a = costly(1);
    const b = costly(2);
    const t0 = Date.now();
    expect(await settle(a.get())).toBe(1);
    expect(await settle(b.get())).toBe(2);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2 + 2 * IDLE_FACTOR + 2);
  });

  it('a failed build fails the requests that shared it; the next request builds again', async () => {
    let fail = true;
    const r = new SharedRendering(() => {
      if (fail) throw new Error('collect failed');
      return 'ok';
    });
    await expect(settle(r.get())).rejects.toThrow('collect failed');
    fail = false;
    expect(await settle(r.get())).toBe('ok');
  });
});
