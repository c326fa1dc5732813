import { describe, expect, it } from 'vitest';
import { probeInterval, type ProbeSpacing } from '../../src/health/probe-interval.js';
import { initialRiseFall, nextRiseFall, type RiseFallState } from '../../src/health/rise-fall.js';

const SPACING: ProbeSpacing = { interval: 2000, fastInterval: 500, downInterval: 10_000 };
const LIMITS = { rise: 2, fall: 3 };

/** The state after a pass/fail string ('P'/'F') from `unknown`. */
function after(sequence: string): RiseFallState {
  let state = initialRiseFall();
  for (const c of sequence) state = nextRiseFall(state, c === 'P', LIMITS);
  return state;
}

describe('probeInterval (HAProxy inter / fastinter / downinter)', () => {
  it.each([
    ['', 'no verdict yet', 500],
    ['P', 'up, nothing counted', 2000],
    ['PF', 'up, one failure towards fall', 500],
    ['PFF', 'up, two failures towards fall', 500],
    ['PFFP', 'up again after a pass: the failures are forgotten', 2000],
    ['PFFF', 'down (fall reached)', 10_000],
    ['F', 'down (first verdict)', 10_000],
    ['FP', 'down, one pass towards rise', 500],
    ['FPF', 'down, the pass forgotten by a failure', 10_000],
    ['FPP', 'up (rise reached)', 2000],
  ])('%s: %s -> %i ms', (sequence, _what, expected) => {
    expect(probeInterval(after(sequence), SPACING)).toBe(expected);
  });

  it('null fastInterval / downInterval mean interval, as in HAProxy', () => {
    const plain: ProbeSpacing = { interval: 2000, fastInterval: null, downInterval: null };
    for (const sequence of ['', 'P', 'PF', 'PFFF', 'FP']) expect(probeInterval(after(sequence), plain)).toBe(2000);
    expect(probeInterval(after('F'), { ...plain, fastInterval: 300 })).toBe(2000); // down, nothing counted: downInterval (null)
    expect(probeInterval(after('FP'), { ...plain, downInterval: 9000 })).toBe(2000); // in transition: fastInterval (null)
  });
});
