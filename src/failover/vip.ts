/**
 * Moving the virtual IP with iproute2 (vrrp-facts §9.2): `ip addr add|del VIP/PREFIX dev IFACE` and
 * `ip -j addr show dev IFACE`, each via runCommand (command.ts) with validated arguments and a kill timeout.
 *  - add: "Address already assigned" (extended ack) / "File exists" (older `RTNETLINK answers:`) = present.
 *  - del: "Address not found" / "Cannot assign" (and a vanished device) = already absent.
 *  - presence compares address AND prefix length: 10.0.0.5/32 and 10.0.0.5/24 are different entries (hasAddress,
 *    for a master's own VIPs); a VIP that must go goes as configured and as a /32 of its address (vipEntries).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { ErrorCodes, MqttLbError } from '../errors.js';
import { describeResult, runCommand } from './command.js';
import { formatCidr, isInterfaceName, parseCidr, type Cidr } from './ipv4.js';

export const IP_COMMAND = 'ip';
/** `ip` answers in a few ms; a hung netlink call must not hold the VIP queue forever. */
export const IP_TIMEOUT_MS = 5000;

export interface InterfaceInfo {
  name: string;
  /** The kernel's interface index: a new one means the interface was deleted and made again. */
  index: number | null;
  /** Administratively up and carrier present (LOWER_UP). */
  carrier: boolean;
  /** IPv4 addresses on the interface, in kernel order (the primary first). */
  addresses: Array<Cidr & { secondary: boolean }>;
}

export function checkInterfaceName(iface: string): void {
  if (!isInterfaceName(iface)) throw new MqttLbError(ErrorCodes.FAILOVER_COMMAND, `failover.interface "${iface}" is not a valid interface name`);
}

export function checkVip(vip: string): Cidr {
  const c = parseCidr(vip);
  if (c === null) throw new MqttLbError(ErrorCodes.FAILOVER_COMMAND, `failover VIP "${vip}" is not an IPv4 address with a prefix length (e.g. 192.0.2.10/24)`);
  return c;
}

interface IpJsonAddr {
  family?: string;
  local?: string;
  prefixlen?: number;
  secondary?: boolean;
}
interface IpJsonLink {
  ifindex?: number;
  ifname?: string;
  flags?: string[];
  addr_info?: IpJsonAddr[];
}

/** Parses `ip -j addr show [dev IFACE]` output: every interface in it (exported for tests). */
export function parseIpLinks(json: string): InterfaceInfo[] {
  const links = JSON.parse(json) as IpJsonLink[];
  if (!Array.isArray(links)) return [];
  return links.map((link) => {
    const flags = link.flags ?? [];
    const addresses: InterfaceInfo['addresses'] = [];
    for (const a of link.addr_info ?? []) {
      if (a.family !== 'inet' || typeof a.local !== 'string' || typeof a.prefixlen !== 'number') continue;
      addresses.push({ address: a.local, prefix: a.prefixlen, secondary: a.secondary === true });
    }
    const index = typeof link.ifindex === 'number' ? link.ifindex : null;
    return { name: link.ifname ?? '', index, carrier: flags.includes('UP') && flags.includes('LOWER_UP'), addresses };
  });
}

/** Parses `ip -j addr show dev IFACE` output (exported for tests). */
export function parseIpAddrJson(json: string, iface: string): InterfaceInfo {
  const links = parseIpLinks(json);
  const link = links.find((l) => l.name === iface) ?? links[0];
  if (link === undefined) throw new MqttLbError(ErrorCodes.FAILOVER_COMMAND, `ip -j addr show dev ${iface}: no such interface in the output`);
  return { ...link, name: iface };
}

/** The kernel has a network interface of this name (Linux: /sys/class/net). */
export function interfaceExists(iface: string): boolean {
  return isInterfaceName(iface) && existsSync(`/sys/class/net/${iface}`);
}

export async function showInterface(iface: string): Promise<InterfaceInfo> {
  checkInterfaceName(iface);
  const args = ['-j', 'addr', 'show', 'dev', iface];
  const r = await runCommand(IP_COMMAND, args, { timeoutMs: IP_TIMEOUT_MS });
  if (r.code !== 0) throw new MqttLbError(ErrorCodes.FAILOVER_COMMAND, describeResult(IP_COMMAND, args, r));
  try {
    return parseIpAddrJson(r.stdout, iface);
  } catch (err) {
    if (err instanceof MqttLbError) throw err;
    throw new MqttLbError(ErrorCodes.FAILOVER_COMMAND, `ip -j addr show dev ${iface}: unreadable output`, { cause: err });
  }
}

/**
 * The interface whose kernel index is `index`, under whatever name it has now, or null if none has it. A renamed
 * interface (`ip link set eth0 name eth9`) keeps its index and every address, a VIP on it included, which still
 * answers ARP although no command names `eth0` any more (a failover audit: a host in FAULT after a rename kept its
 * VIP beside the new master's, and kept it after its stop).
 */
export async function showInterfaceByIndex(index: number): Promise<InterfaceInfo | null> {
  const args = ['-j', 'addr', 'show'];
  const r = await runCommand(IP_COMMAND, args, { timeoutMs: IP_TIMEOUT_MS });
  if (r.code !== 0) throw new MqttLbError(ErrorCodes.FAILOVER_COMMAND, describeResult(IP_COMMAND, args, r));
  try {
    return parseIpLinks(r.stdout).find((l) => l.index === index) ?? null;
  } catch (err) {
    throw new MqttLbError(ErrorCodes.FAILOVER_COMMAND, 'ip -j addr show: unreadable output', { cause: err });
  }
}

/**
 * The interface's addresses when every one of them is a VIP (`vipAddresses`), else none: then one of them is most
 * likely the host's own address listed as a VIP, which no start may take as its own and no removal may take away.
 */
export function onlyVipAddresses(info: InterfaceInfo, vipAddresses: ReadonlySet<string>): InterfaceInfo['addresses'] {
  return info.addresses.every((a) => vipAddresses.has(a.address)) ? info.addresses : [];
}

export function hasAddress(info: InterfaceInfo, c: Cidr): boolean {
  return info.addresses.some((a) => a.address === c.address && a.prefix === c.prefix);
}

/**
 * The VIP's entries on the interface: as configured, and as a /32, keepalived's reading of an address written
 * without a length (left by a keepalived it replaced, or added by hand so), which answers ARP as well as the
 * configured /24 (a failover audit: a /32 stayed on a backup, and both hosts answered for the VIP). Not the address
 * in any other length: that may be this host's own (a re-audit: a VIP configured as X/32 on a host that owns X/24
 * took the host's X/24 away).
 */
export function vipEntries(info: InterfaceInfo, c: Cidr): Cidr[] {
  const found: Cidr[] = [];
  for (const a of info.addresses) if (a.address === c.address && (a.prefix === c.prefix || a.prefix === 32)) found.push({ address: a.address, prefix: a.prefix });
  return found;
}

export async function addVip(iface: string, vip: string): Promise<'added' | 'present'> {
  checkInterfaceName(iface);
  const c = checkVip(vip);
  const args = ['addr', 'add', formatCidr(c), 'dev', iface];
  const r = await runCommand(IP_COMMAND, args, { timeoutMs: IP_TIMEOUT_MS });
  if (r.code === 0) return 'added';
  if (r.code === 2 && /already assigned|File exists/i.test(r.stderr)) return 'present';
  throw new MqttLbError(ErrorCodes.FAILOVER_COMMAND, describeResult(IP_COMMAND, args, r));
}

export async function removeVip(iface: string, vip: string): Promise<'removed' | 'absent'> {
  checkInterfaceName(iface);
  const c = checkVip(vip);
  const args = ['addr', 'del', formatCidr(c), 'dev', iface];
  const r = await runCommand(IP_COMMAND, args, { timeoutMs: IP_TIMEOUT_MS });
  if (r.code === 0) return 'removed';
  if (r.code !== null && /Address not found|Cannot assign|Cannot find device|does not exist/i.test(r.stderr)) return 'absent';
  throw new MqttLbError(ErrorCodes.FAILOVER_COMMAND, describeResult(IP_COMMAND, args, r));
}

/**
 * `net.ipv4.conf.IFACE.promote_secondaries` = 1 (keepalived's `promote_secondaries` option; vrrp-facts §9 row 20).
 * Without it, removing an interface's primary address removes every secondary of its subnet with it: once the
 * host's own address has been gone and come back (a DHCP renewal, `netplan apply`), our re-added VIP is the
 * primary and the host's address a secondary, and the next VIP removal (a stop, a demotion) took the host's
 * address too. With it, the kernel promotes the secondary instead. 'set' when we changed it.
 */
export function ensurePromoteSecondaries(iface: string): 'set' | 'already' {
  checkInterfaceName(iface);
  const path = `/proc/sys/net/ipv4/conf/${iface}/promote_secondaries`;
  if (readFileSync(path, 'utf8').trim() === '1') return 'already';
  writeFileSync(path, '1\n');
  return 'set';
}
