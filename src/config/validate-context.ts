/**
 * What the section validators share: the reader, the directory relative paths are resolved against,
 * and the files the config names (checked for existence afterwards, only when asked: validation stays pure).
 */
import { isAbsolute, resolve } from 'node:path';
import { formatCidr, parseCidr, type Cidr } from './net-syntax.js';
import { ipv4ToNumber } from '../failover/ipv4.js';
import { canonicalIPv6, ipv6Network } from '../ip-text.js';
import type { ConfigReader, MapReader, Slot } from './yaml-reader.js';

export type FileUse = 'read' | 'execute' | 'state';

export interface FileRef {
  /** Offset and key path of the value naming the file, for the problem if it is missing. */
  at: number;
  path: string;
  /** As written, and absolute. */
  written: string;
  resolved: string;
  /**
   * What the file is for: `read` (certificates, keys), `execute` (failover.notify), `state` (admin.stateFile:
   * written by mqtt-lb, so it may not exist yet, but its directory must, writable).
   */
  use: FileUse;
}

/**
 * A value only this host can judge (load.ts checkHost): a failover peer address (not one of this host's own) or
 * the failover interface (there, with an IPv4 address).
 */
export interface HostRef {
  at: number;
  path: string;
  kind: 'peer' | 'interface';
  value: string;
}

export class ValidationContext {
  readonly files: FileRef[] = [];
  readonly hostRefs: HostRef[] = [];

  constructor(
    readonly r: ConfigReader,
    readonly baseDir: string,
  ) {}

  /** A file path value: resolved against the config file's directory and remembered for the existence check. */
  filePath(slot: Slot, use: FileUse = 'read'): string | undefined {
    const written = this.r.string(slot, {
      pattern: /^[^\0\n\r]+$/,
      rule: 'a file path cannot contain NUL or line breaks',
    });
    if (written === undefined) return undefined;
    const resolved = isAbsolute(written) ? resolve(written) : resolve(this.baseDir, written);
    this.files.push({ at: slot.at, path: slot.path, written, resolved, use });
    return resolved;
  }

  /** A valid value that only this host can judge, remembered for the host check (load.ts checkHost). */
  hostValue(kind: HostRef['kind'], slot: Slot, value: string): void {
    this.hostRefs.push({ at: slot.at, path: slot.path, kind, value });
  }
}

/** A list of CIDRs at `key` of `m` (a bare address is one host: /32, /128), normalised; `fallback` when absent or null. */
export function readCidrList(r: ConfigReader, m: MapReader, key: string, fallback: readonly string[]): string[] {
  const slot = m.get(key);
  if (slot === undefined || r.isNull(slot)) return [...fallback];
  const cidrs: string[] = [];
  for (const item of r.list(slot) ?? []) {
    const c = r.parsed(item, parseCidr);
    if (c === undefined) continue;
    cidrs.push(formatCidr(c));
    // A PROXY audit: `0.0.0.0/0` passed in silence, and `10.0.0.1/8` too.
    if (c.prefix === 0) r.warn(item, key === 'acceptProxyProtocol' ? EVERY_SOURCE_TRUSTED : EVERY_SOURCE_EXEMPT);
    if (c.prefix > 0 && hasHostBits(c)) r.warn(item, `\`${formatCidr(c)}\` has host bits set: it means the network \`${networkOf(c)}/${c.prefix}\``);
  }
  return cidrs;
}

const EVERY_SOURCE_TRUSTED = 'trusts every address: any client may then declare any source in a PROXY header, and perSource limits and `exempt` read the declared one; list your load balancers\' addresses';
const EVERY_SOURCE_EXEMPT = 'exempts every address from the perSource limits, which then limit nothing';

/**
 * Whether bits below the prefix are set (`10.0.0.1/8`; `fd00::1/64`: an audit trusted a PROXY header from `::1` after
 * `::2/64` passed in silence). A zone id (`fe80::1%eth0`) is not part of the address.
 */
function hasHostBits(c: Cidr): boolean {
  if (c.family === 4) return ipv4Network(c.address, c.prefix) !== c.address;
  const bare = withoutZone(c.address);
  return ipv6Network(bare, c.prefix) !== canonicalIPv6(bare);
}

/** The network of `c` as the warning shows it (IPv6 canonical, with its zone id). */
function networkOf(c: Cidr): string {
  if (c.family === 4) return ipv4Network(c.address, c.prefix);
  const zone = c.address.indexOf('%');
  return `${ipv6Network(withoutZone(c.address), c.prefix)}${zone < 0 ? '' : c.address.slice(zone)}`;
}

function withoutZone(address: string): string {
  const zone = address.indexOf('%');
  return zone < 0 ? address : address.slice(0, zone);
}

/** The network address of an IPv4 address under a prefix (`10.0.0.1`, 8 -> `10.0.0.0`). */
function ipv4Network(address: string, prefix: number): string {
  const n = ipv4ToNumber(address)!; // parseCidr has judged it
  const size = 2 ** (32 - prefix);
  const network = Math.floor(n / size) * size;
  return [24, 16, 8, 0].map((shift) => Math.floor(network / 2 ** shift) % 256).join('.');
}
