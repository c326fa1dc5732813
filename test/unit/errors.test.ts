/** The error catalogue: codes are unique, stable in form, and every one is documented (docs-as-tests). */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, ConfigError, formatProblem, MqttLbError } from '../../src/errors.js';

describe('error catalogue', () => {
  const codes = Object.values(ErrorCodes);
  it('codes are unique and MQLB_ prefixed', () => {
    expect(new Set(codes).size).toBe(codes.length);
    for (const c of codes) expect(c).toMatch(/^MQLB_[A-Z_]+$/);
  });
  it('every code is documented in docs/errors.md, and nothing else is', () => {
    const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
    const documented = [...doc.matchAll(/`(MQLB_[A-Z_]+)`/g)].map((m) => m[1]);
    expect(new Set(documented)).toEqual(new Set(codes));
  });
  it('ConfigError carries every problem, formatted as FILE:LINE:COL path: message', () => {
    const p = { file: 'lb.yaml', line: 3, col: 5, path: 'pools.a.retries', message: 'must be an integer' };
    const e = new ConfigError([p, { ...p, line: 9 }]);
    expect(e).toBeInstanceOf(MqttLbError);
    expect(e.code).toBe('MQLB_CONFIG_INVALID');
    expect(formatProblem(p)).toBe('lb.yaml:3:5 pools.a.retries: must be an integer');
    expect(e.message.split('\n')).toHaveLength(2);
  });
  it('a problem stays on one line: control characters, DEL, NEL and the Unicode line separators are escaped', () => {
    const p = { file: 'lb.yaml', line: 1, col: 1, path: 'a\rb\nc\u007fd', message: 'x\u0085y\u2028z\u2029\t' };
    expect(formatProblem(p)).toBe('lb.yaml:1:1 a\\rb\\nc\\u007fd: x\\u0085y\\u2028z\\u2029\\t');
    expect(formatProblem({ ...p, file: '/tmp/x\ny.yaml', path: 'a', message: 'b' })).toBe('/tmp/x\\ny.yaml:1:1 a: b');
  });
});
