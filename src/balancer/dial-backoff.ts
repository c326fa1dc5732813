/**
 * A server whose dial just failed for a reason of its own (refused, reset, timed out, unreachable) is left out
 * of the picks for DIAL_BACKOFF_MS while another server of its tier can take the session: the next sessions go
 * to the others at once instead of each paying a failed dial (or a whole serverConnectTimeout on a black hole)
 * before its retry. So a dead server is dialled at most about once a second (Sozu's
 * `try_tcp_refused_backend_is_accounted_and_avoided`; nginx's max_fails / fail_timeout), also with
 * `health.type: none`, and until the health checks mark it down. Left out, not put last, so that a strategy
 * charges its turn to the server that takes the session (round robin's weights). Per process, not shared: it
 * is a guess from this process's own dials, and it never leaves a tier empty.
 */
import type { ServerTable, Tier } from './server-table.js';
import type { Server } from './server.js';

export const DIAL_BACKOFF_MS = 1000;
/**
 * How often a server left out is reported for a probe (Pool's onDeferred), at most: the health checker's extra
 * probes are as far apart (PROBE_NOW_MIN_GAP_MS), and with workers each report is a message to the primary.
 */
export const DEFERRED_REPORT_GAP_MS = 250;

/** After a server-caused dial failure; `ms` longer for a server that kept a client waiting longer (serverConnackTimeout). */
export function backOff(server: Server, now: number, ms: number = DIAL_BACKOFF_MS): void {
  server.dialBackoffUntil = Math.max(server.dialBackoffUntil, now + ms);
}

/**
 * After a CONNACK that never came (pools.<name>.serverConnackTimeout): left out for `ms`, and a dial that connects
 * does not end it (a stopped broker's kernel still completes handshakes); its answer to a session does (serverAnswered).
 */
export function backOffUntilAnswer(server: Server, now: number, ms: number): void {
  backOff(server, now, ms);
  server.dialBackoffNeedsAnswer = true;
}

/** After a dial that connected: unless the back-off waits for an MQTT answer (backOffUntilAnswer). */
export function clearBackOff(server: Server): void {
  if (server.dialBackoffUntil !== 0 && !server.dialBackoffNeedsAnswer) server.dialBackoffUntil = 0;
}

/** The server sent a session its first bytes (its CONNACK): a back-off for a silent one ends. */
export function serverAnswered(server: Server): void {
  if (server.dialBackoffNeedsAnswer) clearAnyBackOff(server);
}

/** A verdict of up, an admin `ready`, an answer: whatever the back-off was for. */
export function clearAnyBackOff(server: Server): void {
  server.dialBackoffUntil = 0;
  server.dialBackoffNeedsAnswer = false;
}

/** Servers with a dial back-off set, expired or not (no clock read). */
export function countBackedOff(servers: readonly Server[]): number {
  let n = 0;
  for (let i = 0; i < servers.length; i++) if (servers[i]!.dialBackoffUntil !== 0) n++;
  return n;
}

/**
 * The time to leave out the servers of `tier` backed off past it (ServerTable.backoffNow), or 0 when none is,
 * or when every eligible one is (then no one is left out). `report` hears of each server left out, at most once
 * per DEFERRED_REPORT_GAP_MS.
 */
export function backoffCutoff(table: ServerTable, tier: Tier, now: number, report: ((server: Server) => void) | null): number {
  let kept = 0;
  let left = 0;
  for (let i = 0; i < table.size; i++) {
    if (!table.eligible(i, tier)) continue;
    if (table.servers[i]!.dialBackoffUntil > now) left++;
    else kept++;
  }
  if (left === 0 || kept === 0) return 0;
  if (report !== null) {
    for (let i = 0; i < table.size; i++) {
      const s = table.servers[i]!;
      if (s.dialBackoffUntil <= now || !table.eligible(i, tier) || now - s.deferredReportAt < DEFERRED_REPORT_GAP_MS) continue;
      s.deferredReportAt = now;
      report(s);
    }
  }
  return now;
}
