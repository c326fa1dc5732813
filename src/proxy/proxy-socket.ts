/**
 * What a session needs from a socket: the subset of net.Socket that session.ts, refuse.ts and the PROXY
 * header builder use. Two implementations satisfy it: net.Socket itself (TLS, PROXY-protocol fronts, and
 * the fallback) and HandleSocket (handle-socket.ts), the lighter one used for plain TCP.
 *
 * Events: 'data' (Buffer), 'end' (peer's FIN), 'drain', 'connect' (dialled sockets), 'error' (Error with
 * `code`), then always 'close' (hadError).
 */
import { TLSSocket } from 'node:tls';

export interface ProxySocket {
  readonly destroyed: boolean;
  readonly bytesRead: number;
  /** Bytes written but not yet taken by the kernel (queued behind a slow reader). */
  readonly writableLength: number;
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
  readonly localAddress?: string | undefined;
  readonly localPort?: number | undefined;
  /** False: the peer's FIN is answered with ours at once. True: ours waits for end() (half-close). */
  allowHalfOpen: boolean;
  /** False when the caller should wait for 'drain' before writing more. */
  write(data: Buffer): boolean;
  /** FIN once everything queued is written. */
  end(): unknown;
  /** Send `data`, then FIN. */
  end(data: Buffer): unknown;
  destroy(): unknown;
  /** Close with RST. net.Socket's throws on a TLS socket: call resetOrDestroy() instead. */
  resetAndDestroy(): unknown;
  /** TCP keepalive (delay in milliseconds), as net.Socket. */
  setKeepAlive(enable: boolean, initialDelayMs: number): unknown;
  pause(): unknown;
  resume(): unknown;
  // Event payloads differ per event, as in net.Socket.
  on(event: string, listener: (...args: any[]) => void): unknown;
  once(event: string, listener: (...args: any[]) => void): unknown;
  removeListener(event: string, listener: (...args: any[]) => void): unknown;
  removeAllListeners(event?: string): unknown;
}

/**
 * Close with RST where the socket can. A TLS socket's handle is TLS over TCP, and net.Socket#resetAndDestroy
 * throws ERR_INVALID_HANDLE_TYPE on it (a broker's reset under a TLS client once took the process down through
 * it): such a socket is destroyed instead, without close_notify, which its peer's TLS stack reports as an
 * abrupt end.
 */
export function resetOrDestroy(sock: ProxySocket): void {
  if (sock instanceof TLSSocket) sock.destroy();
  else sock.resetAndDestroy();
}
