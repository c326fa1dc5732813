/** A set of CIDRs (IPv4 and IPv6) for acceptProxyProtocol; IPv4-mapped IPv6 peers match IPv4 entries. */
import net from 'node:net';
import { unmappedIPv4 } from '../ip-text.js';

export class CidrSet {
  private readonly list = new net.BlockList();

  /** Entries as validated by the config (`addr/prefix`, or a bare address for one host). */
  constructor(cidrs: string[]) {
    for (const c of cidrs) {
      const [addr, prefixText] = c.split('/');
      const family = net.isIPv6(addr!) ? 'ipv6' : 'ipv4';
      const prefix = prefixText === undefined ? (family === 'ipv6' ? 128 : 32) : Number(prefixText);
      this.list.addSubnet(addr!, prefix, family);
    }
  }

  /** Whether a peer address (as a socket reports it) is inside the set. Never throws. */
  has(address: string): boolean {
    // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d; a link-local peer may carry a zone id.
    const zone = address.indexOf('%');
    const a = unmappedIPv4(zone >= 0 ? address.slice(0, zone) : address);
    if (net.isIPv4(a)) return this.list.check(a, 'ipv4');
    if (net.isIPv6(a)) return this.list.check(a, 'ipv6');
    return false;
  }
}
