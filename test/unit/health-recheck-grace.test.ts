import { describe, expect, it } from 'vitest';
import { DEFAULT_RECHECK_GRACE_MS, MAX_RECHECK_GRACE_MS, recheckGraceMs, type SettingReader } from '../../src/health/recheck-grace.js';

/** A /proc/sys/net/<family>/neigh/<dir>/<name> reader over a table; a missing entry throws, as a missing file does. */
function procOf(table: Record<string, string>): SettingReader {
  return (path) => {
    const v = table[path];
    if (v === undefined) throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
    return v;
  };
}

function neigh(family: 'ipv4' | 'ipv6', dir: string, mcast: number, app: number, retransMs: number): Record<string, string> {
  const base = `/proc/sys/net/${family}/neigh/${dir}`;
  return { [`${base}/mcast_solicit`]: `${mcast}\n`, [`${base}/app_solicit`]: `${app}\n`, [`${base}/retrans_time_ms`]: `${retransMs}\n` };
}

describe('recheckGraceMs: the neighbour lookup time of the failover interface', () => {
  it("Linux's defaults (3 × 1000 ms) give 3 s", () => {
    expect(recheckGraceMs('eth0', procOf({ ...neigh('ipv4', 'eth0', 3, 0, 1000), ...neigh('ipv6', 'eth0', 3, 0, 1000) }))).toBe(3000);
  });

  it('raised settings lengthen it; the longer of IPv4 and IPv6 counts, app_solicit included', () => {
    expect(recheckGraceMs('eth0', procOf({ ...neigh('ipv4', 'eth0', 5, 1, 1500), ...neigh('ipv6', 'eth0', 3, 0, 1000) }))).toBe(9000);
    expect(recheckGraceMs('eth0', procOf({ ...neigh('ipv4', 'eth0', 3, 0, 1000), ...neigh('ipv6', 'eth0', 4, 0, 2000) }))).toBe(8000);
  });

  it("an interface without its own entry reads `default`'s", () => {
    expect(recheckGraceMs('bond0', procOf(neigh('ipv4', 'default', 6, 0, 1000)))).toBe(6000);
  });

  it('never shorter than the default, never longer than the cap', () => {
    expect(recheckGraceMs('eth0', procOf(neigh('ipv4', 'eth0', 1, 0, 100)))).toBe(DEFAULT_RECHECK_GRACE_MS);
    expect(recheckGraceMs('eth0', procOf(neigh('ipv4', 'eth0', 10, 0, 60_000)))).toBe(MAX_RECHECK_GRACE_MS);
  });

  it('nothing readable (no /proc, a garbled value) or no failover interface: the default', () => {
    expect(recheckGraceMs('eth0', procOf({}))).toBe(DEFAULT_RECHECK_GRACE_MS);
    expect(recheckGraceMs('eth0', procOf({ ...neigh('ipv4', 'eth0', 3, 0, 1000), '/proc/sys/net/ipv4/neigh/eth0/retrans_time_ms': 'x\n' }))).toBe(DEFAULT_RECHECK_GRACE_MS);
    expect(recheckGraceMs(null, procOf(neigh('ipv4', 'default', 9, 0, 1000)))).toBe(DEFAULT_RECHECK_GRACE_MS);
  });

  it('reads this machine (Linux) without throwing', () => {
    const ms = recheckGraceMs('lo');
    expect(ms).toBeGreaterThanOrEqual(DEFAULT_RECHECK_GRACE_MS);
    expect(ms).toBeLessThanOrEqual(MAX_RECHECK_GRACE_MS);
  });
});
