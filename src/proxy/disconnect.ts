/**
 * The DISCONNECT a 5.0 client gets when the balancer itself closes its session (ClientSession.evict), so that it is
 * told why rather than reset: what a broker would send in its place (MQTT 5.0 §3.14.2.1). 3.1/3.1.1 have no
 * DISCONNECT from the server: those sessions are closed without one.
 */
import type { EvictReason } from '../balancer/server.js';

/** Reason Codes of MQTT 5.0 §3.14.2.1 used here. */
export const DisconnectCodes = {
  /** Server shutting down. */
  SERVER_SHUTTING_DOWN: 0x8b,
  /** Keep Alive timeout: the nearest code to our idle timeout (nothing went either way for limits.idleTimeout). */
  KEEP_ALIVE_TIMEOUT: 0x8d,
  /** Session taken over: [MQTT-3.1.4-3] applied across brokers, as one broker tells it. */
  SESSION_TAKEN_OVER: 0x8e,
  /** Use another server: its broker left (down, drained, rebalanced) or this host lost its VIP; a reconnect is placed again. */
  USE_ANOTHER_SERVER: 0x9c,
} as const;

const CODE_OF: Record<EvictReason, number> = {
  server_down: DisconnectCodes.USE_ANOTHER_SERVER,
  rebalance: DisconnectCodes.USE_ANOTHER_SERVER,
  drain: DisconnectCodes.USE_ANOTHER_SERVER,
  failover: DisconnectCodes.USE_ANOTHER_SERVER,
  shutdown: DisconnectCodes.SERVER_SHUTTING_DOWN,
  idle: DisconnectCodes.KEEP_ALIVE_TIMEOUT,
  takeover: DisconnectCodes.SESSION_TAKEN_OVER,
};

/**
 * DISCONNECT with the Reason Code and an empty property list (Remaining Length 2): no Reason String, which could
 * exceed a small Maximum Packet Size the client asked for [MQTT-3.1.2-25]. Built once per code.
 */
const PACKETS = new Map<number, Buffer>(Object.values(CODE_OF).map((code) => [code, Buffer.from([0xe0, 0x02, code, 0x00])]));

export function disconnectCodeFor(reason: EvictReason): number {
  return CODE_OF[reason];
}

export function disconnectPacket(code: number): Buffer {
  return PACKETS.get(code)!;
}
