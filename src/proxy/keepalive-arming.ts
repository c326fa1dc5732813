/**
 * TCP keepalive on broker connections, armed once a session has lasted a while.
 *
 * Keepalive finds a peer that vanished without a FIN after a minute or more of silence; a session that ends
 * within seconds (a reconnect storm, a connect-publish-disconnect device) never needs it. Arming it costs four
 * setsockopt calls (libuv sets SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT), measured at ~7% of
 * the CPU of a whole proxied connection (bench/README.md, "What changed"). The client side costs nothing: its
 * options come from the listening socket (listener.ts). So a broker socket joins the *young* generation when
 * its session is spliced; every `ageMs` the *aging* generation (sockets between ageMs and 2 x ageMs old) is
 * armed and the young one takes its place. Per session that is one Set insert and one delete instead of four
 * system calls, and no timer of its own. HAProxy arms server-side keepalive only with `option srvtcpka`.
 */
import { unrefInterval } from './unref-interval.js';

/** The part of a socket this needs: net.Socket's signature (HandleSocket has the same). */
export interface KeepAliveSocket {
  readonly destroyed: boolean;
  setKeepAlive(enable: boolean, initialDelayMs: number): unknown;
}

export class KeepAliveArming {
  private young = new Set<KeepAliveSocket>();
  private aging = new Set<KeepAliveSocket>();
  private stopTimer: (() => void) | null = null;

  /**
   * `ageMs`: how long a socket waits (between ageMs and twice that); `idleMs`: TCP_KEEPIDLE once armed.
   * `schedule` starts the periodic tick and returns its stop function (injected by tests).
   */
  constructor(
    private readonly ageMs: number,
    private readonly idleMs: number,
    private readonly schedule: (tick: () => void, everyMs: number) => () => void = unrefInterval,
  ) {}

  /** The session was spliced: arm its broker socket after ageMs if it is still open then. */
  add(socket: KeepAliveSocket): void {
    this.young.add(socket);
    if (this.stopTimer === null) this.stopTimer = this.schedule(() => this.tick(), this.ageMs);
  }

  /** The socket closed: forget it (idempotent). */
  delete(socket: KeepAliveSocket): void {
    if (!this.young.delete(socket)) this.aging.delete(socket);
  }

  /** Sockets not armed yet. */
  get pending(): number {
    return this.young.size + this.aging.size;
  }

  /** Arm the aging generation; the young one ages. The timer stops when nothing is left to arm. */
  tick(): void {
    for (const socket of this.aging) if (!socket.destroyed) socket.setKeepAlive(true, this.idleMs);
    const armed = this.aging;
    armed.clear();
    this.aging = this.young;
    this.young = armed;
    if (this.aging.size === 0) this.stop();
  }

  /** Stop the timer and forget every socket (idempotent). */
  close(): void {
    this.stop();
    this.young.clear();
    this.aging.clear();
  }

  private stop(): void {
    if (this.stopTimer !== null) {
      this.stopTimer();
      this.stopTimer = null;
    }
  }
}
