import { describe, expect, it } from 'vitest';
import { durationMs, formatDuration, parseDuration } from '../../src/config/duration.js';

describe('parseDuration', () => {
  it.each([
    ['250ms', 250],
    ['2s', 2_000],
    ['1m', 60_000],
    ['1h', 3_600_000],
    ['1.5s', 1_500],
    ['1.1s', 1_100], // 1.1 * 1000 is 1100.0000000000002 in binary floating point
    ['0s', 0],
    ['0ms', 0],
    [' 3s ', 3_000],
    ['0.5m', 30_000],
  ])('%s is %d ms', (text, ms) => {
    expect(parseDuration(text)).toEqual({ ok: true, ms });
  });

  it('refuses a bare number and says to add a unit', () => {
    expect(parseDuration(2)).toEqual({
      ok: false,
      error: 'a bare number is not a duration: add a unit, e.g. `2ms` (what HAProxy reads in a bare number) or `2s` (as keepalived reads one)',
    });
    expect(parseDuration('2').ok).toBe(false);
    // A keepalived key (failover): its bare numbers are seconds, offered first.
    expect(parseDuration(1, true)).toEqual({
      ok: false,
      error: 'a bare number is not a duration: add a unit, e.g. `1s` (as keepalived reads one) or `1ms` (what HAProxy reads in a bare number)',
    });
  });

  it('refuses unknown units, naming the allowed ones', () => {
    expect(parseDuration('2sec')).toEqual({ ok: false, error: 'unknown unit `sec` in `2sec`: use ms, s, m or h' });
    expect(parseDuration('2d').ok).toBe(false);
    expect(parseDuration('2S').ok).toBe(false);
  });

  it.each(['', 's', '-1s', '1e3ms', '1s500ms', 'fast', '.5s', '1.s'])('refuses %j', (text) => {
    expect(parseDuration(text).ok).toBe(false);
  });

  it('says a negative duration is negative, not that it is no duration', () => {
    expect(parseDuration('-1s')).toEqual({ ok: false, error: '`-1s`: a duration cannot be negative' });
    expect(parseDuration('- 5ms')).toEqual({ ok: false, error: '`- 5ms`: a duration cannot be negative' });
  });

  it('refuses fractions of a millisecond', () => {
    expect(parseDuration('1.5ms')).toEqual({ ok: false, error: '`1.5ms` is not a whole number of milliseconds' });
  });

  it('refuses values that are not strings', () => {
    expect(parseDuration(null).ok).toBe(false);
    expect(parseDuration(true).ok).toBe(false);
  });

  it('durationMs throws on a bad value', () => {
    expect(durationMs('100ms')).toBe(100);
    expect(() => durationMs('100')).toThrow(RangeError);
  });
});

describe('formatDuration', () => {
  it.each([
    [0, '0s'],
    [250, '250ms'],
    [1_500, '1500ms'],
    [2_000, '2s'],
    [90_000, '90s'],
    [120_000, '2m'],
    [7_200_000, '2h'],
  ])('%d ms is %s, and parses back', (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
    expect(durationMs(text)).toBe(ms);
  });
});
