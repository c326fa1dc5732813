/**
 * PROXY protocol headers a health probe sends first when the pool speaks PROXY to its servers
 * (haproxy proxy-protocol.txt): the probe is the LB's own connection, so it announces no client
 * address: v2 LOCAL, v1 UNKNOWN. Encoded once, by the same codec the sessions use.
 */
import { encodeFor } from '../proxy/proxy-protocol.js';

export const PROXY_V2_LOCAL = encodeFor('v2', null);
export const PROXY_V1_UNKNOWN = encodeFor('v1', null);

export function probeProxyHeader(mode: 'off' | 'v1' | 'v2'): Buffer | null {
  if (mode === 'v2') return PROXY_V2_LOCAL;
  if (mode === 'v1') return PROXY_V1_UNKNOWN;
  return null;
}
