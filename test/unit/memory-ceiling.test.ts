import { afterEach, describe, expect, it, vi } from 'vitest';
import { MemoryCeiling, ENTER_FRACTION, LEAVE_FRACTION } from '../../src/proxy/memory-ceiling.js';
import { OverloadGuard, SAMPLE_MS, COLLECT_EVERY_MS, collectGarbage, memoryInUse } from '../../src/proxy/overload-guard.js';

const MiB = 1024 * 1024;

describe('MemoryCeiling (limits.maxMemory, reliability case 64)', () => {
  it('enters at 95 % of the ceiling and leaves below 90 %, so one noisy sample does not flap it', () => {
    const c = new MemoryCeiling(200 * MiB);
    expect(ENTER_FRACTION).toBe(0.95);
    expect(LEAVE_FRACTION).toBe(0.9);
    expect(c.observe(189 * MiB)).toBeNull();
    expect(c.active).toBe(false);
    expect(c.observe(190 * MiB)).toBe('entered'); // exactly 95 %
    expect(c.active).toBe(true);
    expect(c.observe(250 * MiB)).toBeNull(); // still over: no second 'entered'
    expect(c.observe(181 * MiB)).toBeNull(); // between 90 and 95 %: stays overloaded
    expect(c.active).toBe(true);
    expect(c.observe(180 * MiB)).toBeNull(); // exactly 90 %: not below it yet
    expect(c.observe(179 * MiB)).toBe('left');
    expect(c.active).toBe(false);
    expect(c.observe(185 * MiB)).toBeNull(); // under 95 % again: not re-entered
    expect(c.inUse).toBe(185 * MiB);
  });

  it('0 is no ceiling: never enters, and a reload to 0 ends an overload at the next sample', () => {
    const off = new MemoryCeiling(0);
    expect(off.observe(Number.MAX_SAFE_INTEGER)).toBeNull();
    expect(off.active).toBe(false);

    const c = new MemoryCeiling(128 * MiB);
    expect(c.observe(127 * MiB)).toBe('entered');
    c.setLimit(0);
    expect(c.observe(127 * MiB)).toBe('left');
    expect(c.limit).toBe(0);
  });

  it('a reload to a higher ceiling ends the overload by the new numbers; to a lower one, enters', () => {
    const c = new MemoryCeiling(128 * MiB);
    expect(c.observe(125 * MiB)).toBe('entered');
    c.setLimit(256 * MiB);
    expect(c.observe(125 * MiB)).toBe('left');
    c.setLimit(128 * MiB);
    expect(c.observe(125 * MiB)).toBe('entered');
  });
});

describe('OverloadGuard: samples on a timer, tells the app once per change', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  function guardWith(max: number, start = 0) {
    const events: string[] = [];
    let inUse = start;
    const guard = new OverloadGuard(
      max,
      { entered: (u, m) => events.push(`entered ${u / MiB} of ${m / MiB}`), left: (u, m) => events.push(`left ${u / MiB} of ${m / MiB}`) },
      { measure: () => inUse, collect: () => events.push('collect') },
    );
    return { guard, events, set: (mib: number) => (inUse = mib * MiB) };
  }

  it('samples at start and every SAMPLE_MS; entered/left once each; close stops it (idempotent)', () => {
    vi.useFakeTimers();
    const { guard, events, set } = guardWith(100 * MiB, 96 * MiB);
    guard.start();
    expect(events).toEqual(['entered 96 of 100']); // the first sample is taken at start
    expect(guard.active).toBe(true);
    vi.advanceTimersByTime(SAMPLE_MS * 3);
    // What was shed is collected before the next sample, then not again for COLLECT_EVERY_MS.
    expect(events).toEqual(['entered 96 of 100', 'collect']);
    set(89);
    vi.advanceTimersByTime(SAMPLE_MS);
    expect(events).toEqual(['entered 96 of 100', 'collect', 'left 89 of 100']);
    expect(guard.inUseBytes).toBe(89 * MiB);
    guard.close();
    guard.close();
    set(99);
    vi.advanceTimersByTime(SAMPLE_MS * 5);
    expect(events).toHaveLength(3);
    expect(guard.active).toBe(false);
  });

  it('tells its headroom (up to 95 % of the ceiling) after each sample; an allocation refused for want of it enters the overload on the next turn', () => {
    vi.useFakeTimers();
    const headrooms: number[] = [];
    const events: string[] = [];
    let inUse = 50 * MiB;
    const guard = new OverloadGuard(
      100 * MiB,
      { entered: (u, _m, r) => events.push(`entered ${u / MiB} refused ${r / MiB}`), left: (u) => events.push(`left ${u / MiB}`), sampled: (h) => headrooms.push(h / MiB) },
      { measure: () => inUse, collect: () => {} },
    );
    expect(guard.headroomBytes).toBe(95 * MiB); // nothing sampled yet
    guard.refused(MiB); // not sampling yet: nothing
    vi.advanceTimersByTime(0);
    expect(headrooms).toEqual([]);
    guard.start();
    expect(headrooms).toEqual([45]);
    inUse = 90 * MiB;
    vi.advanceTimersByTime(SAMPLE_MS);
    expect(headrooms).toEqual([45, 5]);
    expect(events).toEqual([]);
    // Refused for want of room measured then: the ceiling is reached, though the sample, after the refusals freed
    // their buffers, reads 88.
    inUse = 88 * MiB;
    guard.refused(2 * MiB);
    guard.refused(2 * MiB); // asked twice: one sample, with both
    expect(events).toEqual([]);
    vi.advanceTimersByTime(0);
    expect(events).toEqual(['entered 88 refused 4']);
    expect(guard.inUseBytes).toBe(88 * MiB);
    expect(headrooms.at(-1)).toBe(7);
    inUse = 85 * MiB;
    vi.advanceTimersByTime(SAMPLE_MS); // what was refused counts once: below 90 % it is left
    expect(events).toEqual(['entered 88 refused 4', 'left 85']);
    inUse = 99 * MiB;
    vi.advanceTimersByTime(SAMPLE_MS);
    expect(headrooms.at(-1)).toBe(0); // past it: none left
    guard.reconfigure(0);
    expect(headrooms.at(-1)).toBe(Number.POSITIVE_INFINITY); // no ceiling: no bound
    const samples = headrooms.length;
    guard.refused(MiB);
    vi.advanceTimersByTime(SAMPLE_MS);
    expect(headrooms).toHaveLength(samples);
    guard.close();
  });

  it('headroomNow measures at once and decides nothing; Infinity without a ceiling or before start', () => {
    vi.useFakeTimers();
    const events: string[] = [];
    let inUse = 50 * MiB;
    const guard = new OverloadGuard(100 * MiB, { entered: () => events.push('entered'), left: () => events.push('left') }, { measure: () => inUse, collect: () => {} });
    expect(guard.headroomNow()).toBe(Number.POSITIVE_INFINITY);
    guard.start();
    inUse = 80 * MiB;
    expect(guard.headroomNow()).toBe(15 * MiB);
    inUse = 99 * MiB;
    expect(guard.headroomNow()).toBe(0);
    expect(events).toEqual([]);
    expect(guard.inUseBytes).toBe(50 * MiB); // the metric shows samples only
    guard.reconfigure(0);
    expect(guard.headroomNow()).toBe(Number.POSITIVE_INFINITY);
    guard.close();
  });

  it('with no ceiling it runs no timer and measures on demand; a reload arms and disarms it', () => {
    vi.useFakeTimers();
    const { guard, events, set } = guardWith(0, 500 * MiB);
    guard.start();
    expect(vi.getTimerCount()).toBe(0);
    expect(guard.inUseBytes).toBe(500 * MiB); // measured now, for the metric
    guard.reconfigure(400 * MiB);
    expect(vi.getTimerCount()).toBe(1);
    expect(events).toEqual(['entered 500 of 400']);
    set(600);
    guard.reconfigure(0); // ceiling removed: the overload ends at once, sampling stops
    expect(events).toEqual(['entered 500 of 400', 'collect', 'left 600 of 0']);
    expect(vi.getTimerCount()).toBe(0);
    guard.close();
  });

  it('while overloaded a full collection runs before a sample at most every COLLECT_EVERY_MS; none when not overloaded', () => {
    vi.useFakeTimers();
    const { guard, events, set } = guardWith(100 * MiB, 50 * MiB);
    guard.start();
    vi.advanceTimersByTime(COLLECT_EVERY_MS * 2);
    expect(events).toEqual([]);
    set(99);
    vi.advanceTimersByTime(SAMPLE_MS); // entered
    vi.advanceTimersByTime(SAMPLE_MS); // collects, still over
    vi.advanceTimersByTime(COLLECT_EVERY_MS - SAMPLE_MS);
    expect(events).toEqual(['entered 99 of 100', 'collect']);
    vi.advanceTimersByTime(SAMPLE_MS);
    expect(events).toEqual(['entered 99 of 100', 'collect', 'collect']);
    guard.close();
  });

  it('collectGarbage really frees dropped Buffers, and memoryInUse sees it', async () => {
    // 100 MiB held, then dropped: at least 60 MiB must be seen freed. (With 50 MiB and a 40 MiB bar, what the
    // test runner itself allocated meanwhile in a fully loaded CI run once left 34.5 MB.)
    let held: Buffer[] | null = Array.from({ length: 400 }, () => Buffer.alloc(256 * 1024, 1));
    expect(collectGarbage()).toBe(true);
    const before = memoryInUse();
    expect(held.length).toBe(400);
    held = null;
    expect(collectGarbage()).toBe(true);
    await new Promise((r) => setTimeout(r, 50));
    collectGarbage();
    expect(before - memoryInUse()).toBeGreaterThan(60 * MiB);
  });

  it('reconfigure before start only records the ceiling; after close it never arms', () => {
    vi.useFakeTimers();
    const { guard, events } = guardWith(0, 500 * MiB);
    guard.reconfigure(128 * MiB);
    expect(vi.getTimerCount()).toBe(0);
    expect(events).toEqual([]);
    guard.close();
    guard.start();
    guard.reconfigure(256 * MiB);
    expect(vi.getTimerCount()).toBe(0);
    expect(events).toEqual([]);
  });
});
