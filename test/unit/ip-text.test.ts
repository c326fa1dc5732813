import { describe, expect, it } from 'vitest';
import { canonicalIPv6, ipv6Network, unmappedIPv4 } from '../../src/ip-text.js';

describe('ipv6Network', () => {
  it('clears the bits below the prefix and writes the result canonically', () => {
    expect(ipv6Network('fd00::1', 64)).toBe('fd00::');
    expect(ipv6Network('fd00::1', 8)).toBe('fd00::');
    expect(ipv6Network('fdff:1:2:3::1', 12)).toBe('fdf0::');
    expect(ipv6Network('2001:DB8::1:0:0:1', 80)).toBe('2001:db8:0:0:1::');
    expect(ipv6Network('::2', 64)).toBe('::');
    expect(ipv6Network('::ffff:10.1.2.3', 120)).toBe('::ffff:10.1.2.0');
  });

  it('leaves a network (or a /128 host) as it is, in canonical form', () => {
    expect(ipv6Network('fd00::', 8)).toBe(canonicalIPv6('fd00::'));
    expect(ipv6Network('2001:0db8:0000::0001', 128)).toBe('2001:db8::1');
    expect(ipv6Network('::', 0)).toBe('::');
  });

  it('is null for what is not IPv6 (or carries a zone id)', () => {
    expect(ipv6Network('10.0.0.1', 8)).toBeNull();
    expect(ipv6Network('fe80::1%eth0', 64)).toBeNull();
  });
});

describe('unmappedIPv4', () => {
  it('writes an IPv4-mapped address as the IPv4 address, anything else as given', () => {
    expect(unmappedIPv4('::ffff:127.0.0.1')).toBe('127.0.0.1');
    expect(unmappedIPv4('127.0.0.1')).toBe('127.0.0.1');
    expect(unmappedIPv4('::1')).toBe('::1');
    expect(unmappedIPv4('::ffff:7f00:1')).toBe('::ffff:7f00:1'); // not how a socket reports it
    expect(unmappedIPv4('::ffff:not-an-address')).toBe('::ffff:not-an-address');
    expect(unmappedIPv4('')).toBe('');
  });
});
