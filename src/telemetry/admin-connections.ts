/**
 * The admin port's connection cap. Node's `server.maxConnections` closes every connection past the cap, so
 * 128 connections that never send a request (Node's HTTP timeouts only start with the first byte) kept
 * /readyz and /metrics unreachable for as long as they stayed open. Past the cap, the connection that has
 * been idle longest (no request in progress: a keep-alive between requests, one that never sent anything,
 * a slowloris still in its headers) is closed to make room; a newcomer is refused only when every connection
 * is busy with a request, and those are bounded by the request timeout.
 */
import type { Socket } from 'node:net';

/**
 * Enough for Prometheus, a few browsers and scripts; past it the longest idle one makes room. The descriptor
 * budget keeps this many free (fd-budget.ts), so the admin port cannot starve health probes.
 */
export const ADMIN_MAX_CONNECTIONS = 128;

/**
 * Requests in progress on one connection (pipelined: sent before the answers were read). Node parses every
 * request of a read at once and holds an answer for each until the client reads: 3,000 `GET /metrics` in one
 * 126 KB write held 3,000 answers (tens of MB per connection, times 128 connections). No scraper or browser
 * pipelines; a connection past this many is closed.
 */
export const ADMIN_MAX_PIPELINED = 16;

export class AdminConnections {
  private readonly max: number;
  private open = 0;
  /** Connections with no request in progress, the longest idle first (a Set keeps insertion order). */
  private readonly idle = new Set<Socket>();
  /** Requests in progress per connection (pipelined requests arrive before the first is answered). */
  private readonly inProgress = new Map<Socket, number>();
  /** Connections with answers waiting to be sent: bytes the kernel had taken, and since when (sweepStuck). */
  private readonly sending = new Map<Socket, { dispatched: number; since: number }>();

  constructor(max: number) {
    this.max = max;
  }

  /** A new connection: true to serve it (perhaps after closing the longest idle one), false when refused. */
  admit(socket: Socket): boolean {
    if (this.open >= this.max) {
      const oldest = this.idle.values().next();
      if (oldest.done === true) {
        socket.destroy();
        return false;
      }
      this.idle.delete(oldest.value);
      oldest.value.destroy();
    }
    this.open++;
    this.idle.add(socket);
    socket.once('close', () => {
      this.open--;
      this.idle.delete(socket);
      this.inProgress.delete(socket);
      this.sending.delete(socket);
    });
    return true;
  }

  /**
   * A request arrived on it: not to be closed for room until every request on it is answered. False (and the
   * connection is closed) past ADMIN_MAX_PIPELINED requests in progress.
   */
  busy(socket: Socket): boolean {
    this.idle.delete(socket);
    const n = (this.inProgress.get(socket) ?? 0) + 1;
    if (n > ADMIN_MAX_PIPELINED) {
      socket.destroy();
      return false;
    }
    this.inProgress.set(socket, n);
    return true;
  }

  /** One of its requests was answered: idle again (the most recently used) when none is left. */
  done(socket: Socket): void {
    const left = (this.inProgress.get(socket) ?? 1) - 1;
    if (left > 0) {
      this.inProgress.set(socket, left);
      return;
    }
    this.inProgress.delete(socket);
    if (!socket.destroyed) this.idle.add(socket);
  }

  /**
   * Closes each connection to which nothing could be sent for `timeoutMs` while answers wait in this process (its
   * client reads nothing, or pipelines and never reads); `now` in ms. What is measured is the kernel taking bytes: with
   * its send buffer full (~3 MB here) Linux takes more only once about a third has drained, so a client that reads
   * but slower than ~50 KB/s behind several MB of pipelined answers counts as stuck too (a re-audit: 4 KB every
   * 0.2 s). A scraper that asks one answer at a time is never near that. Node's own socket timeout does not do it:
   * http clears it whenever a keep-alive connection starts a new request.
   */
  sweepStuck(now: number, timeoutMs: number): void {
    for (const socket of this.inProgress.keys()) {
      if (socket.writableLength === 0) {
        this.sending.delete(socket);
        continue;
      }
      // bytesWritten counts what is still queued too: what the kernel took is the rest.
      const dispatched = socket.bytesWritten - socket.writableLength;
      const seen = this.sending.get(socket);
      if (seen === undefined || seen.dispatched !== dispatched) this.sending.set(socket, { dispatched, since: now });
      else if (now - seen.since >= timeoutMs) socket.destroy();
    }
  }

  get size(): number {
    return this.open;
  }
}
