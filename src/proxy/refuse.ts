/**
 * Closing without losing what we wrote: answering a client we will not route (CONNACK, then close), and
 * closing one side of a session after the other side closed cleanly (session.ts closeSide).
 *
 * If we closed with unread input in our receive buffer, the kernel would send RST, and an RST discards what
 * it had not sent yet: the CONNACK we just wrote, or a client's last bytes on their way to the server. So:
 * end() (FIN after everything queued), then read and discard input until the peer's FIN or for a bounded
 * time, then destroy. (Same reasoning as HAProxy's lingering close.)
 */
import type { ProxySocket } from './proxy-socket.js';

export const LINGER_MS = 1000;

function discard(): void {}

function onLingerEnd(this: ProxySocket): void {
  this.destroy();
}

function lingerExpired(socket: ProxySocket): void {
  socket.destroy();
}

/** Write `reply` (may be null: close without an answer), end, linger, destroy. */
export function closeWithReply(socket: ProxySocket, reply: Buffer | null): void {
  if (socket.destroyed) return;
  if (reply === null) {
    socket.destroy();
    return;
  }
  lingeringClose(socket, reply, LINGER_MS);
}

/** End (after `reply`, if any), read and drop input until the peer's FIN, destroy then or after `lingerMs`. */
export function lingeringClose(socket: ProxySocket, reply: Buffer | null, lingerMs: number): void {
  beginLinger(socket, reply);
  // Absolute, not net.Socket's idle timeout: the discarded reads would keep re-arming that one.
  const t = setTimeout(lingerExpired, lingerMs, socket);
  socket.once('close', () => clearTimeout(t));
}

/**
 * lingeringClose without the bound: the caller destroys the socket when its own deadline passes (a session
 * keeps that timer itself, so ending a session allocates no closure or once() wrapper).
 */
export function beginLinger(socket: ProxySocket, reply: Buffer | null): void {
  socket.removeAllListeners('end');
  // 'end' comes at most once: a plain listener, no once() wrapper.
  socket.on('end', onLingerEnd);
  if (reply === null) socket.end();
  else socket.end(reply);
  // After end(): resuming may deliver a FIN the socket held while paused, and onLingerEnd destroys it.
  dropInput(socket);
}

/** Read and discard whatever `socket` still sends (nothing of it goes anywhere), in place of its 'data' listeners. */
export function dropInput(socket: ProxySocket): void {
  socket.removeAllListeners('data');
  socket.on('data', discard);
  // It may be paused, e.g. by backpressure from a side that has closed and will send no 'drain'.
  socket.resume();
}
