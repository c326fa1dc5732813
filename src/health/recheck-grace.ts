/**
 * How long after this host's network comes back a probe that fails as if its path were still out is made again
 * rather than counted (HealthChecker.recheckAfterOutage). A neighbour (ARP, NDP) lookup begun during the outage
 * fails only after its last solicitation has gone unanswered, `mcast_solicit + app_solicit` retransmits of
 * `retrans_time_ms` each, and the packets queued behind it fail with it: read from the failover interface's
 * settings (IPv4 and IPv6, the longer), so that a host that raised them is covered too.
 */
import { readFileSync } from 'node:fs';

/** Linux's defaults: 3 solicitations, a second apart. */
export const DEFAULT_RECHECK_GRACE_MS = 3000;
/** However the neighbour settings read, no longer than this: the failover pool penalty is held meanwhile. */
export const MAX_RECHECK_GRACE_MS = 30_000;

/** Reads one setting's text, or throws (no such interface, no /proc). */
export type SettingReader = (path: string) => string;

const readSetting: SettingReader = (path) => readFileSync(path, 'utf8');

/** The neighbour lookup time of `iface` (its own settings, else `default`'s) in ms; null when unreadable. */
function lookupMs(family: 'ipv4' | 'ipv6', iface: string, read: SettingReader): number | null {
  for (const dir of [iface, 'default']) {
    try {
      const value = (name: string): number => {
        const n = Number(read(`/proc/sys/net/${family}/neigh/${dir}/${name}`).trim());
        if (!Number.isFinite(n) || n < 0) throw new Error(`${name}: not a count`);
        return n;
      };
      return (value('mcast_solicit') + value('app_solicit')) * value('retrans_time_ms');
    } catch {
      // the next place, or none
    }
  }
  return null;
}

/**
 * The recheck window for the failover interface `iface`: at least DEFAULT_RECHECK_GRACE_MS, at most
 * MAX_RECHECK_GRACE_MS; DEFAULT_RECHECK_GRACE_MS when nothing can be read (no failover interface, not Linux).
 */
export function recheckGraceMs(iface: string | null, read: SettingReader = readSetting): number {
  if (iface === null) return DEFAULT_RECHECK_GRACE_MS;
  const longest = Math.max(lookupMs('ipv4', iface, read) ?? 0, lookupMs('ipv6', iface, read) ?? 0);
  return Math.min(MAX_RECHECK_GRACE_MS, Math.max(DEFAULT_RECHECK_GRACE_MS, longest));
}
