/** A set of CIDRs (IPv4 and IPv6) for acceptProxyProtocol; IPv4-mapped IPv6 peers match IPv4 entries. */
import net from 'node:net';

export class CidrSet {
  private readonly list = new net.BlockList();

  constructor(cidrs: string[]) {
    for (const c of cidrs) {
      const [addr, prefixText] = c.split('/');
      const family = net.isIPv6(addr!) ? 'ipv6' : 'ipv4';
      const prefix = prefixText === undefined ? (family === 'ipv6' ? 128 : 32) : Number(prefixText);
      this.list.addSubnet(addr!, prefix, family);
    }
  }

  has(address: string): boolean {
    if (address.startsWith('::ffff:') && net.isIPv4(address.slice(7))) return this.list.check(address.slice(7), 'ipv4');
    if (net.isIPv4(address)) return this.list.check(address, 'ipv4');
    if (net.isIPv6(address)) return this.list.check(address, 'ipv6');
    return false;
  }
}
