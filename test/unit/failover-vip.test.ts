import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../src/errors.js';
import { compareIpv4, ipv4ToNumber, isInterfaceName, isIpv4Multicast, isVipAddress, parseCidr, vipAddresses } from '../../src/failover/ipv4.js';
import { computeTracking } from '../../src/failover/tracking.js';
import { addVip, hasAddress, parseIpAddrJson, parseIpLinks, removeVip, showInterface, vipEntries } from '../../src/failover/vip.js';

// `ip -j addr show dev eth0` as printed by iproute2 6.1 (trimmed), with a VIP as a secondary address.
const IP_JSON = JSON.stringify([
  {
    ifindex: 2,
    ifname: 'eth0',
    flags: ['BROADCAST', 'MULTICAST', 'UP', 'LOWER_UP'],
    operstate: 'UP',
    addr_info: [
      { family: 'inet', local: '10.231.7.12', prefixlen: 24, scope: 'global', label: 'eth0' },
      { family: 'inet', local: '10.231.7.10', prefixlen: 24, scope: 'global', secondary: true, label: 'eth0' },
      { family: 'inet6', local: 'fe80::1', prefixlen: 64, scope: 'link' },
    ],
  },
]);

describe('IPv4 syntax (arguments handed to ip/arping)', () => {
  it('parses strictly', () => {
    expect(ipv4ToNumber('10.0.0.1')).toBe(0x0a000001);
    expect(ipv4ToNumber('255.255.255.255')).toBe(0xffffffff);
    for (const bad of ['10.0.0', '10.0.0.256', '010.0.0.1', '-1.0.0.1', '10.0.0.1 ', ' 10.0.0.1', '1.2.3.4/24']) expect(ipv4ToNumber(bad), bad).toBeNull();
    expect(parseCidr('192.0.2.10/24')).toEqual({ address: '192.0.2.10', prefix: 24 });
    for (const bad of ['192.0.2.10', '192.0.2.10/33', '192.0.2.10/024', '-192.0.2.10/24', '192.0.2.10/24 dev lo']) expect(parseCidr(bad), bad).toBeNull();
  });
  it('interface names: no leading dash, no spaces, at most 15 bytes', () => {
    expect(isInterfaceName('eth0')).toBe(true);
    expect(isInterfaceName('bond0.100')).toBe(true);
    expect(isInterfaceName('enp0s31f6-long')).toBe(true);
    for (const bad of ['-eth0', '.eth0', 'eth 0', 'eth0;ls', 'a234567890123456', '', 'eth0/1']) expect(isInterfaceName(bad), bad).toBe(false);
  });
  it('unsigned compare and multicast range', () => {
    expect(compareIpv4(ipv4ToNumber('128.0.0.1')!, ipv4ToNumber('10.0.0.1')!)).toBe(1);
    expect(isIpv4Multicast('224.0.0.18')).toBe(true);
    expect(isIpv4Multicast('10.0.0.1')).toBe(false);
  });
});

describe('ip -j addr parsing', () => {
  it('reads carrier and IPv4 addresses with prefix and secondary flag', () => {
    const info = parseIpAddrJson(IP_JSON, 'eth0');
    expect(info.carrier).toBe(true);
    expect(info.index).toBe(2); // a new index = the interface was deleted and made again (heartbeat.ts poll)
    expect(info.addresses).toEqual([
      { address: '10.231.7.12', prefix: 24, secondary: false },
      { address: '10.231.7.10', prefix: 24, secondary: true },
    ]);
  });
  it('presence compares the address AND the prefix length', () => {
    const info = parseIpAddrJson(IP_JSON, 'eth0');
    expect(hasAddress(info, { address: '10.231.7.10', prefix: 24 })).toBe(true);
    expect(hasAddress(info, { address: '10.231.7.10', prefix: 32 })).toBe(false);
  });
  it('a VIP that must go is found as configured and as a /32 (keepalived\'s reading of no length), not in other lengths', () => {
    const j = JSON.parse(IP_JSON) as Array<{ addr_info: Array<Record<string, unknown>> }>;
    j[0]!.addr_info.push({ family: 'inet', local: '10.231.7.10', prefixlen: 32, scope: 'global', label: 'eth0' });
    // The same address in another length may be this host's own: never taken for the VIP.
    j[0]!.addr_info.push({ family: 'inet', local: '10.231.7.10', prefixlen: 28, scope: 'global', label: 'eth0' });
    const info = parseIpAddrJson(JSON.stringify(j), 'eth0');
    expect(vipEntries(info, { address: '10.231.7.10', prefix: 24 })).toEqual([
      { address: '10.231.7.10', prefix: 24 },
      { address: '10.231.7.10', prefix: 32 },
    ]);
    expect(vipEntries(info, { address: '10.231.7.11', prefix: 24 })).toEqual([]);
  });
  it('`ip -j addr show` of every interface: each by its name and index (a renamed interface is found by its index)', () => {
    const all = JSON.stringify([
      { ifindex: 1, ifname: 'lo', flags: ['LOOPBACK', 'UP', 'LOWER_UP'], addr_info: [{ family: 'inet', local: '127.0.0.1', prefixlen: 8 }] },
      ...(JSON.parse(IP_JSON) as Array<Record<string, unknown>>).map((l) => ({ ...l, ifname: 'eth9' })),
    ]);
    const links = parseIpLinks(all);
    expect(links.map((l) => [l.name, l.index])).toEqual([
      ['lo', 1],
      ['eth9', 2],
    ]);
    expect(links.find((l) => l.index === 2)?.addresses.map((a) => a.address)).toEqual(['10.231.7.12', '10.231.7.10']);
    expect(parseIpLinks('{}')).toEqual([]);
  });
  it('no carrier when LOWER_UP is missing', () => {
    const j = JSON.parse(IP_JSON) as Array<{ flags: string[] }>;
    j[0]!.flags = ['NO-CARRIER', 'BROADCAST', 'MULTICAST', 'UP'];
    expect(parseIpAddrJson(JSON.stringify(j), 'eth0').carrier).toBe(false);
  });
});

describe('VIP commands refuse bad arguments before running anything', () => {
  it('rejects option-looking or malformed values with FAILOVER_COMMAND', async () => {
    await expect(addVip('-eth0', '10.0.0.1/24')).rejects.toMatchObject({ code: ErrorCodes.FAILOVER_COMMAND });
    await expect(addVip('eth0', '-10.0.0.1/24')).rejects.toMatchObject({ code: ErrorCodes.FAILOVER_COMMAND });
    await expect(removeVip('eth0', '10.0.0.1')).rejects.toMatchObject({ code: ErrorCodes.FAILOVER_COMMAND });
    await expect(showInterface('eth0 up')).rejects.toMatchObject({ code: ErrorCodes.FAILOVER_COMMAND });
  });
});

describe('tracking inputs (failover.track)', () => {
  const track = { listeners: true, interface: true, pools: { weight: 50 }, scripts: [] };
  it('a failed listener is a FAULT, pools without servers lower the priority', () => {
    expect(computeTracking(track, { listenerFailed: true, poolsWithoutServer: 0 })).toEqual({ fault: true, priorityPenalty: 0 });
    expect(computeTracking(track, { listenerFailed: false, poolsWithoutServer: 2 })).toEqual({ fault: false, priorityPenalty: 100 });
    expect(computeTracking({ ...track, listeners: false }, { listenerFailed: true, poolsWithoutServer: 0 }).fault).toBe(false);
  });
});

describe('which sessions are on a VIP (the stop evicts those, design.md §3)', () => {
  const vips = vipAddresses([{ vips: ['192.0.2.10/24', '192.0.2.11/32'] }, { vips: ['198.51.100.7/24'] }]);

  it('collects the addresses of every instance, without prefix lengths', () => {
    expect([...vips].sort()).toEqual(['192.0.2.10', '192.0.2.11', '198.51.100.7']);
  });

  it('matches a local address, IPv4-mapped too (a dual-stack listener); nothing else', () => {
    expect(isVipAddress(vips, '192.0.2.10')).toBe(true);
    expect(isVipAddress(vips, '::ffff:198.51.100.7')).toBe(true);
    expect(isVipAddress(vips, '192.0.2.12')).toBe(false); // the host's own address in the same subnet
    expect(isVipAddress(vips, '::1')).toBe(false);
    expect(isVipAddress(vips, undefined)).toBe(false); // a socket already closed
  });
});
