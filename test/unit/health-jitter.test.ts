import { describe, expect, it } from 'vitest';
import { DEFAULT_JITTER_FRACTION, jitteredDelay } from '../../src/health/jitter.js';

describe('jitteredDelay', () => {
  it('stays within ±10 % of the interval for the extremes of the RNG', () => {
    expect(jitteredDelay(2000, () => 0)).toBe(1800);
    expect(jitteredDelay(2000, () => 0.999999)).toBe(2200);
    expect(jitteredDelay(2000, () => 0.5)).toBe(2000);
  });

  it('stays within bounds for many random draws and actually varies', () => {
    const seen = new Set<number>();
    for (let i = 0; i < 1000; i++) {
      const d = jitteredDelay(1000, Math.random);
      expect(d).toBeGreaterThanOrEqual(1000 * (1 - DEFAULT_JITTER_FRACTION));
      expect(d).toBeLessThanOrEqual(1000 * (1 + DEFAULT_JITTER_FRACTION));
      seen.add(d);
    }
    expect(seen.size).toBeGreaterThan(50);
  });

  it('honours a custom fraction, clamps a bad RNG and never goes negative', () => {
    expect(jitteredDelay(100, () => 0, 0.5)).toBe(50);
    expect(jitteredDelay(100, () => 7, 0.5)).toBe(150);
    expect(jitteredDelay(100, () => -3, 2)).toBe(0);
    expect(jitteredDelay(0, () => 0.3)).toBe(0);
  });

  it('with fraction 0 returns the interval', () => {
    expect(jitteredDelay(1234, () => 0.9, 0)).toBe(1234);
  });
});
