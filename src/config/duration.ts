/**
 * Durations in lb.yaml are strings with a unit: `250ms`, `2s`, `1.5s`, `1m`, `1h`.
 * A bare number is refused on purpose: `timeout: 2` could mean 2 ms or 2 s, and guessing wrong
 * turns a health check into a flood or a failover into a minute-long outage.
 */

const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

const DURATION_RE = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]+)$/;

export type DurationParse = { ok: true; ms: number } | { ok: false; error: string };

/**
 * Parses one duration; `value` is what YAML produced (a number there is the bare-number mistake). `secondsFirst`: a
 * key that came from keepalived (`failover`), whose bare numbers are seconds: that reading is offered first (a new
 * user's audit: `advertInterval: 1` was offered `1ms`, itself refused there).
 */
export function parseDuration(value: unknown, secondsFirst = false): DurationParse {
  if (typeof value === 'number') {
    const ms = `\`${value}ms\` (what HAProxy reads in a bare number)`;
    const s = `\`${value}s\` (as keepalived reads one)`;
    return { ok: false, error: `a bare number is not a duration: add a unit, e.g. ${secondsFirst ? `${s} or ${ms}` : `${ms} or ${s}`}` };
  }
  if (typeof value !== 'string') {
    return { ok: false, error: 'must be a duration such as `250ms`, `2s`, `1m` or `1h`' };
  }
  const text = value.trim();
  if (text === '') return { ok: false, error: 'an empty value is not a duration: use a number with a unit (ms, s, m, h), e.g. `2s`' };
  const m = DURATION_RE.exec(text);
  if (m === null && /^-\s*\d/.test(text)) return { ok: false, error: `\`${value}\`: a duration cannot be negative` };
  if (m === null) {
    return { ok: false, error: `\`${value}\` is not a duration: use a number with a unit (ms, s, m, h), e.g. \`2s\`` };
  }
  const amount = Number(m[1]);
  const unit = m[2]!;
  const factor = UNIT_MS[unit];
  if (factor === undefined) {
    return { ok: false, error: `unknown unit \`${unit}\` in \`${value}\`: use ms, s, m or h` };
  }
  // Round to dodge binary fractions (1.1s * 1000 = 1100.0000000000002), then demand whole milliseconds.
  const ms = Math.round(amount * factor * 1e6) / 1e6;
  if (!Number.isInteger(ms)) {
    return { ok: false, error: `\`${value}\` is not a whole number of milliseconds` };
  }
  if (!Number.isSafeInteger(ms)) {
    return { ok: false, error: `\`${value}\` is too large` };
  }
  return { ok: true, ms };
}

/** Like parseDuration but throws a RangeError: for code and tests that hold a literal. */
export function durationMs(text: string): number {
  const r = parseDuration(text);
  if (!r.ok) throw new RangeError(r.error);
  return r.ms;
}

/** The shortest exact spelling of `ms` with a unit, for messages and docs (1500 -> `1500ms`, 2000 -> `2s`). */
export function formatDuration(ms: number): string {
  if (ms !== 0 && ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms !== 0 && ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1_000 === 0) return `${ms / 1_000}s`;
  return `${ms}ms`;
}
