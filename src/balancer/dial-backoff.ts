/**
 * A server whose dial just failed for a reason of its own (refused, reset, timed out, unreachable) is tried last
 * for DIAL_BACKOFF_MS: the next sessions go to the following candidates at once instead of each paying a failed
 * dial (or a whole serverConnectTimeout on a black hole) before its retry. So a dead server is dialled at most
 * about once a second (Sozu's `try_tcp_refused_backend_is_accounted_and_avoided`; nginx's max_fails /
 * fail_timeout), also with `health.type: none`, and until the health checks mark it down. Per process, not
 * shared: it is a guess from this process's own dials, and never removes a server (with every candidate backed
 * off, the order is kept).
 */
import type { Server } from './server.js';

export const DIAL_BACKOFF_MS = 1000;

/** After a server-caused dial failure. */
export function backOff(server: Server, now: number): void {
  server.dialBackoffUntil = now + DIAL_BACKOFF_MS;
}

/** After a dial that connected. */
export function clearBackOff(server: Server): void {
  if (server.dialBackoffUntil !== 0) server.dialBackoffUntil = 0;
}

/**
 * Moves the candidates still backed off behind the others, keeping each group's order (stable, in place). Reads
 * the clock only when some candidate has a back-off set.
 */
export function deferBackedOff(candidates: Server[], now: () => number): void {
  let t = -1;
  let kept = 0;
  let deferred: Server[] | null = null;
  for (let i = 0; i < candidates.length; i++) {
    const s = candidates[i]!;
    if (s.dialBackoffUntil !== 0) {
      if (t < 0) t = now();
      if (s.dialBackoffUntil > t) {
        (deferred ??= []).push(s);
        continue;
      }
    }
    candidates[kept++] = s;
  }
  if (deferred === null || kept === 0) return; // none backed off, or all (then nothing was moved: the order stands)
  for (let i = 0; i < deferred.length; i++) candidates[kept + i] = deferred[i]!;
}
