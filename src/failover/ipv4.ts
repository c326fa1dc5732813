/**
 * Strict IPv4 / CIDR / interface-name syntax for everything the failover code hands to `ip` and `arping`.
 * These values become command-line arguments (never through a shell), so they are validated with anchored
 * regexes: nothing may start with '-' (it would be read as an option) and nothing outside the grammar passes.
 */
import { INTERFACE_RE } from '../config/net-syntax.js';

/** Dotted quad, each part 0..255 without leading zeros (avoids octal ambiguity in some tools). */
const OCTET = '(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])';
const IPV4_RE = new RegExp(`^${OCTET}\\.${OCTET}\\.${OCTET}\\.${OCTET}$`);
const CIDR_RE = new RegExp(`^(${OCTET}\\.${OCTET}\\.${OCTET}\\.${OCTET})/(3[0-2]|[12][0-9]|[0-9])$`);

export interface Cidr {
  address: string;
  prefix: number;
}

export function isIpv4(s: string): boolean {
  return IPV4_RE.test(s);
}

/** The address as an unsigned 32-bit number (network byte order read as big-endian), or null. */
export function ipv4ToNumber(s: string): number | null {
  if (!IPV4_RE.test(s)) return null;
  const p = s.split('.');
  return ((Number(p[0]) << 24) >>> 0) + (Number(p[1]) << 16) + (Number(p[2]) << 8) + Number(p[3]);
}

export function parseCidr(s: string): Cidr | null {
  const m = CIDR_RE.exec(s);
  if (!m) return null;
  return { address: m[1]!, prefix: Number(m[2]) };
}

/** The addresses of every VIP of the failover instances (`192.0.2.10/24` -> `192.0.2.10`). */
export function vipAddresses(instances: ReadonlyArray<{ vips: readonly string[] }>): Set<string> {
  const out = new Set<string>();
  for (const i of instances) for (const v of i.vips) {
    const c = parseCidr(v);
    if (c !== null) out.add(c.address);
  }
  return out;
}

/**
 * Whether a socket's local address is one of `vips`. An IPv4 client of a dual-stack (`::`) listener has an
 * IPv4-mapped local address (`::ffff:192.0.2.10`).
 */
export function isVipAddress(vips: ReadonlySet<string>, local: string | undefined): boolean {
  if (local === undefined) return false;
  return vips.has(local.startsWith('::ffff:') ? local.slice(7) : local);
}

export function formatCidr(c: Cidr): string {
  return `${c.address}/${c.prefix}`;
}

export function isInterfaceName(s: string): boolean {
  return INTERFACE_RE.test(s);
}

/** Multicast range 224.0.0.0/4. */
export function isIpv4Multicast(s: string): boolean {
  const n = ipv4ToNumber(s);
  return n !== null && n >>> 28 === 0xe;
}

/**
 * Unsigned compare of two IPv4 addresses in network byte order (RFC 9568 §6.4.3: "unsigned integer comparison
 * of the IPvX addresses in network byte order"). Returns <0, 0, >0.
 */
export function compareIpv4(a: number, b: number): number {
  return a === b ? 0 : a > b ? 1 : -1;
}
