import { describe, expect, it } from 'vitest';
import type { HealthState } from '../../src/balancer/server.js';
import { initialRiseFall, nextRiseFall, type RiseFallLimits, type RiseFallState } from '../../src/health/rise-fall.js';

/** Feed a pass/fail string ('P'/'F') and return the health after each result. */
function run(sequence: string, limits: RiseFallLimits, start: RiseFallState = initialRiseFall()): HealthState[] {
  let state = start;
  const out: HealthState[] = [];
  for (const c of sequence) {
    state = nextRiseFall(state, c === 'P', limits);
    out.push(state.health);
  }
  return out;
}

const HAPROXY: RiseFallLimits = { rise: 2, fall: 3 };

describe('rise/fall', () => {
  it('from unknown, a first pass decides up at once', () => {
    expect(run('P', HAPROXY)).toEqual(['up']);
  });

  it('from unknown, a first fail decides down at once', () => {
    expect(run('F', HAPROXY)).toEqual(['down']);
  });

  it('takes `fall` consecutive fails to go down', () => {
    expect(run('PFFF', HAPROXY)).toEqual(['up', 'up', 'up', 'down']);
  });

  it('takes `rise` consecutive passes to go up', () => {
    expect(run('FPP', HAPROXY)).toEqual(['down', 'down', 'up']);
  });

  it('alternating fail, pass never marks an up server down (fall=3)', () => {
    // The gobetween regression (style-models.md): F,P,F,P,F must not reach three fails.
    const seq = run('P' + 'FP'.repeat(20) + 'F', HAPROXY);
    expect(seq.every((h) => h === 'up')).toBe(true);
  });

  it('alternating pass, fail never marks a down server up (rise=2)', () => {
    const seq = run('F' + 'PF'.repeat(20), HAPROXY);
    expect(seq.every((h) => h === 'down')).toBe(true);
  });

  it('a pass resets the fail streak', () => {
    expect(run('PFFPFF', HAPROXY)).toEqual(['up', 'up', 'up', 'up', 'up', 'up']);
    expect(run('PFFPFFF', HAPROXY).at(-1)).toBe('down');
  });

  it('a fail resets the pass streak', () => {
    expect(run('FPFP', { rise: 2, fall: 1 })).toEqual(['down', 'down', 'down', 'down']);
  });

  it('rise=1 / fall=1 flip on every result after the first', () => {
    expect(run('PFPF', { rise: 1, fall: 1 })).toEqual(['up', 'down', 'up', 'down']);
  });

  it('limits below 1 behave as 1', () => {
    expect(run('PF', { rise: 0, fall: 0 })).toEqual(['up', 'down']);
  });

  it('starts from a known state without the first-result shortcut', () => {
    expect(run('F', HAPROXY, initialRiseFall('up'))).toEqual(['up']);
    expect(run('P', HAPROXY, initialRiseFall('down'))).toEqual(['down']);
  });

  it('applies changed limits to the next result (reload)', () => {
    let s = initialRiseFall('up');
    s = nextRiseFall(s, false, { rise: 2, fall: 5 });
    s = nextRiseFall(s, false, { rise: 2, fall: 5 });
    expect(s.health).toBe('up');
    s = nextRiseFall(s, false, { rise: 2, fall: 3 });
    expect(s.health).toBe('down');
  });

  it('returns the same object when nothing changes (no churn at steady state)', () => {
    const up = initialRiseFall('up');
    expect(nextRiseFall(up, true, HAPROXY)).toBe(up);
  });
});
