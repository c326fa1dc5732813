/**
 * Answering a client we will not route: CONNACK, then a graceful close that does not lose the CONNACK.
 *
 * If we closed with unread input in our receive buffer, the kernel would send RST and the client could lose
 * the CONNACK we just wrote. So: write, end() (FIN), then read and discard input until the client's FIN or
 * for at most LINGER_MS, then destroy. (Same reasoning as HAProxy's lingering close.)
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
  socket.removeAllListeners('data');
  socket.removeAllListeners('end');
  socket.on('data', discard);
  socket.once('end', onLingerEnd);
  socket.end(reply);
  socket.resume();
  const t = setTimeout(lingerExpired, LINGER_MS, socket);
  socket.once('close', () => clearTimeout(t));
}
