/**
 * PROXY protocol headers a health probe sends first when the pool speaks PROXY to its servers
 * (haproxy proxy-protocol.txt): the probe is the LB's own connection, so it announces no client address.
 */

/** v2: 12-byte signature, version 2 + command LOCAL (0x20), family/transport UNSPEC (0x00), length 0. */
export const PROXY_V2_LOCAL = Buffer.from([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x20, 0x00, 0x00, 0x00,
]);

/** v1: "UNKNOWN" (the receiver must then ignore the rest of the line and use the real connection). */
export const PROXY_V1_UNKNOWN = Buffer.from('PROXY UNKNOWN\r\n', 'latin1');

export function probeProxyHeader(mode: 'off' | 'v1' | 'v2'): Buffer | null {
  if (mode === 'v2') return PROXY_V2_LOCAL;
  if (mode === 'v1') return PROXY_V1_UNKNOWN;
  return null;
}
