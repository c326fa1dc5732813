import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  addressesOf,
  crc32c,
  encodeFor,
  encodeV1,
  encodeV2,
  parseProxyHeader,
  type ProxyAddresses,
  type ProxyParseResult,
} from '../../src/proxy/proxy-protocol.js';
import { startProxyAwareBroker, type ProxyAwareBroker } from '../helpers/proxy-server.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const ascii = (s: string): Buffer => Buffer.from(s, 'latin1');
const SIG = '0d0a0d0a000d0a515549540a';

function expectOk(r: ProxyParseResult): Extract<ProxyParseResult, { kind: 'ok' }> {
  if (r.kind !== 'ok') throw new Error(`expected ok, got ${JSON.stringify(r)}`);
  return r;
}

const V4: ProxyAddresses = { family: 'tcp4', srcAddress: '192.168.0.1', srcPort: 56324, dstAddress: '192.168.0.11', dstPort: 443 };
const V6: ProxyAddresses = { family: 'tcp6', srcAddress: '2001:db8::1', srcPort: 1234, dstAddress: '::1', dstPort: 1883 };

describe('encoding: byte-exact', () => {
  it('v1 TCP4 is the spec example line', () => {
    expect(encodeV1(V4).toString('latin1')).toBe('PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n');
  });

  it('v1 TCP6 and UNKNOWN', () => {
    expect(encodeV1(V6).toString('latin1')).toBe('PROXY TCP6 2001:db8::1 ::1 1234 1883\r\n');
    expect(encodeV1(null).toString('latin1')).toBe('PROXY UNKNOWN\r\n');
  });

  it('v2 LOCAL is signature, 0x20, UNSPEC, length 0', () => {
    expect(encodeV2(null).toString('hex')).toBe(`${SIG}20000000`);
    expect(encodeV2(null, { authority: 'ignored' }).toString('hex')).toBe(`${SIG}20000000`);
  });

  it('v2 TCP4 with an AUTHORITY TLV matches the HAProxy reg-test bytes', () => {
    const a: ProxyAddresses = { family: 'tcp4', srcAddress: '127.0.0.1', srcPort: 42, dstAddress: '127.0.0.1', dstPort: 1337 };
    expect(encodeV2(a, { authority: '12345' }).toString('hex')).toBe(
      hex(`${SIG} 21 11 0014 7f000001 7f000001 002a 0539 02 0005 3132333435`).toString('hex'),
    );
  });

  it('v2 TCP6 without TLVs', () => {
    expect(encodeV2(V6).toString('hex')).toBe(
      hex(`${SIG} 21 21 0024 20010db8000000000000000000000001 00000000000000000000000000000001 04d2 075b`).toString('hex'),
    );
  });

  it('v2 TCP4 with AUTHORITY and SSL (version, CN, verified)', () => {
    const a: ProxyAddresses = { family: 'tcp4', srcAddress: '10.1.2.3', srcPort: 40000, dstAddress: '10.0.0.1', dstPort: 8883 };
    const got = encodeV2(a, { authority: 'mqtt.example', sslVersion: 'TLSv1.3', sslCn: 'device-1', verified: true });
    expect(got.toString('hex')).toBe(
      hex(
        `${SIG} 21 11 0038 0a010203 0a000001 9c40 22b3
         02 000c 6d7174742e6578616d706c65
         20 001a 07 00000000 21 0007 544c5376312e33 22 0008 6465766963652d31`,
      ).toString('hex'),
    );
  });

  it('SSL client flags: SSL | CERT_CONN | CERT_SESS on a full handshake, SSL | CERT_SESS on a resumed session, SSL alone without a certificate', () => {
    const flags = (t: Parameters<typeof encodeV2>[1]): number => expectOk(parseProxyHeader(encodeV2(V4, t))).tlvs.sslClient!;
    expect(flags({ sslVersion: 'TLSv1.2', sslCn: 'd', verified: true })).toBe(0x07);
    expect(flags({ sslVersion: 'TLSv1.2', sslCn: 'd', verified: true, resumed: true })).toBe(0x05);
    expect(flags({ sslVersion: 'TLSv1.2', verified: false })).toBe(0x01);
    expect(flags({ sslVersion: 'TLSv1.2', verified: false, resumed: true })).toBe(0x01);
  });

  it('encodeFor picks the version; v1 ignores TLVs', () => {
    expect(encodeFor('v1', V4, { authority: 'x' })).toEqual(encodeV1(V4));
    expect(encodeFor('v2', V4, { authority: 'x' })).toEqual(encodeV2(V4, { authority: 'x' }));
    expect(encodeFor('v2', null)).toEqual(encodeV2(null));
  });

  it('canonicalises IPv6 text it emits', () => {
    const a: ProxyAddresses = { ...V6, srcAddress: '2001:DB8:0:0:0:0:0:1', dstAddress: '0:0:0:0:0:0:0:1' };
    expect(encodeV1(a).toString('latin1')).toBe('PROXY TCP6 2001:db8::1 ::1 1234 1883\r\n');
  });

  it('refuses to encode what it could not parse back', () => {
    expect(() => encodeV1({ ...V4, srcAddress: '2001:db8::1' })).toThrow(RangeError);
    expect(() => encodeV2({ ...V6, dstAddress: '10.0.0.1' })).toThrow(RangeError);
    expect(() => encodeV2({ ...V6, dstAddress: 'fe80::1%eth0' })).toThrow(RangeError);
    expect(() => encodeV1({ ...V4, srcPort: 65536 })).toThrow(RangeError);
    expect(() => encodeV2({ ...V4, dstPort: -1 })).toThrow(RangeError);
    expect(() => encodeV2({ ...V4, dstPort: 1.5 })).toThrow(RangeError);
    expect(() => encodeV1({ ...V4, srcAddress: '010.0.0.1' })).toThrow(RangeError);
    expect(() => encodeV2(V4, { authority: 'x'.repeat(5000) })).toThrow(RangeError);
  });
});

describe('round trips', () => {
  const cases: Array<[string, Buffer, ProxyAddresses | null, object]> = [
    ['v1 tcp4', encodeV1(V4), V4, {}],
    ['v1 tcp6', encodeV1(V6), V6, {}],
    ['v1 unknown', encodeV1(null), null, {}],
    ['v2 tcp4', encodeV2(V4), V4, {}],
    ['v2 tcp6', encodeV2(V6), V6, {}],
    ['v2 local', encodeV2(null), null, {}],
    ['v2 tcp4 + authority', encodeV2(V4, { authority: 'broker.example.com' }), V4, { authority: 'broker.example.com' }],
    [
      'v2 tcp6 + all TLVs',
      encodeV2(V6, { authority: 'ü.example', sslVersion: 'TLSv1.2', sslCn: 'Gerät 7', verified: true }),
      V6,
      { authority: 'ü.example', sslVersion: 'TLSv1.2', sslCn: 'Gerät 7', verified: true, sslClient: 0x07 },
    ],
    ['v2 tls without client cert', encodeV2(V4, { sslVersion: 'TLSv1.3', verified: false }), V4, { sslVersion: 'TLSv1.3', verified: false, sslClient: 0x01 }],
    ['v2 empty tlvs object', encodeV2(V4, {}), V4, {}],
    [
      'v2 extreme ports',
      encodeV2({ ...V4, srcPort: 1, dstPort: 65535 }),
      { ...V4, srcPort: 1, dstPort: 65535 },
      {},
    ],
  ];

  it.each(cases)('%s', (_name, bytes, addresses, tlvs) => {
    const r = expectOk(parseProxyHeader(bytes));
    expect(r.headerLength).toBe(bytes.length);
    expect(r.addresses).toEqual(addresses);
    expect(r.local).toBe(addresses === null);
    expect(r.tlvs).toEqual(tlvs);
  });

  it('every strict prefix of a valid header is `more`', () => {
    const valid = [
      ...cases.map((c) => c[1]),
      ascii('PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n'),
      ascii('PROXY TCP6 ::ffff:192.0.2.5 ::ffff:127.0.0.1 6275 1234\r\n'),
      ascii('PROXY TCP4 0.0.0.0 255.255.255.255 1 65535\r\n'),
      ascii('PROXY UNKNOWN anything at all\r\n'),
      hex(`${SIG} 20 11 000c 01020304 05060708 0001 0002`),
      hex(`${SIG} 21 11 0014 7f000001 7f000001 002a 0539 02 0005 3132333435`),
    ];
    for (const header of valid) {
      expectOk(parseProxyHeader(header));
      for (let k = 0; k < header.length; k++) {
        const r = parseProxyHeader(header.subarray(0, k));
        expect(r, `${header.toString('hex')} prefix ${k}`).toEqual({ kind: 'more' });
      }
    }
  });

  it('bytes after the header are not consumed nor modified', () => {
    const payload = hex('100c00044d5154540402003c0000'); // an MQTT CONNECT
    for (const header of [encodeV1(V4), encodeV1(null), encodeV2(V6, { authority: 'a' }), encodeV2(null)]) {
      const buf = Buffer.concat([header, payload]);
      const before = Buffer.from(buf);
      const r = expectOk(parseProxyHeader(buf));
      expect(r.headerLength).toBe(header.length);
      expect(buf.subarray(r.headerLength)).toEqual(payload);
      expect(buf).toEqual(before);
    }
  });

  it('IPv6 text from v2 bytes reads like Node socket addresses', () => {
    const samples = ['::', '::1', '::2', '1::', '2001:db8::1', '2001:db8:0:0:1:0:0:1', '1:0:0:1:0:0:0:1', '0:0:0:0:0:1:0:0', '::ffff:7f00:1',
      '::102:304', 'fe80::abcd:ef01:2345:6789', '2001:0db8:85a3:0000:0000:8a2e:0370:7334', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff',
      '1:2:3:4:5:6:7:0', '0:1:2:3:4:5:6:7', '::ffff:0:0', '64:ff9b::c000:221'];
    for (const s of samples) {
      const r = expectOk(parseProxyHeader(encodeV2({ ...V6, srcAddress: s })));
      expect(r.addresses!.srcAddress, s).toBe(new net.SocketAddress({ address: s, family: 'ipv6' }).address);
    }
  });

  it('v1 TCP6 addresses are normalised like v2 ones', () => {
    const r = expectOk(parseProxyHeader(ascii('PROXY TCP6 2001:DB8:0:0:0:0:0:1 0:0:0:0:0:ffff:7f00:1 1 2\r\n')));
    expect(r.addresses).toEqual({ family: 'tcp6', srcAddress: '2001:db8::1', srcPort: 1, dstAddress: '::ffff:127.0.0.1', dstPort: 2 });
  });
});

describe('valid edge cases', () => {
  it('v1 line of exactly 107 bytes is accepted, 108 is not', () => {
    const prefix = 'PROXY UNKNOWN ';
    const at107 = ascii(prefix + 'f'.repeat(107 - prefix.length - 2) + '\r\n');
    expect(at107.length).toBe(107);
    expect(expectOk(parseProxyHeader(at107)).headerLength).toBe(107);
    const at108 = ascii(prefix + 'f'.repeat(108 - prefix.length - 2) + '\r\n');
    expect(parseProxyHeader(at108)).toMatchObject({ kind: 'invalid' });
  });

  it('v1 worst-case TCP6 line (104 bytes) is accepted', () => {
    const line = ascii('PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n');
    expect(line.length).toBe(104);
    expect(expectOk(parseProxyHeader(line)).headerLength).toBe(104);
  });

  it('v1 port 0 is refused, as source or destination, whole or cut after the 0 (catalogue #87, mosquitto)', () => {
    expect(parseProxyHeader(ascii('PROXY TCP4 192.0.2.5 127.0.0.1 0 1234\r\n'))).toMatchObject({ kind: 'invalid' });
    expect(parseProxyHeader(ascii('PROXY TCP4 192.0.2.5 127.0.0.1 1234 0\r\n'))).toMatchObject({ kind: 'invalid' });
    expect(parseProxyHeader(ascii('PROXY TCP6 ::1 ::1 0 1\r\n'))).toMatchObject({ kind: 'invalid' });
    expect(parseProxyHeader(ascii('PROXY TCP4 192.0.2.5 127.0.0.1 0'))).toMatchObject({ kind: 'invalid' });
    expect(expectOk(parseProxyHeader(ascii('PROXY TCP4 192.0.2.5 127.0.0.1 1 65535\r\n'))).addresses?.srcPort).toBe(1);
  });

  it('v2 LOCAL with an address block is accepted and the block skipped (length is honoured)', () => {
    const buf = hex(`${SIG} 20 11 000c 01020304 05060708 0001 0002 ff`);
    expect(expectOk(parseProxyHeader(buf))).toEqual({ kind: 'ok', headerLength: 28, local: true, addresses: null, tlvs: {} });
  });

  it('v2 LOCAL with UNSPEC and a non-zero length skips the block', () => {
    expect(expectOk(parseProxyHeader(hex(`${SIG} 20 00 0003 040000`))).headerLength).toBe(19);
  });

  it('unknown, NOOP, ALPN and long TLVs are skipped', () => {
    const body = `7f000001 7f000001 002a 0539 e0 0002 abcd 04 0000 01 0008 ${Buffer.from('mqtt/5.0').toString('hex')} 02 0001 61 e1 01f5 ${'00'.repeat(501)}`;
    const len = hex(body).length;
    const r = expectOk(parseProxyHeader(hex(`${SIG} 21 11 ${len.toString(16).padStart(4, '0')} ${body}`)));
    expect(r.tlvs).toEqual({ authority: 'a' });
    expect(r.headerLength).toBe(16 + len);
  });

  it('a TLV after the header end is payload, not header (HAProxy reg-test c2)', () => {
    const buf = hex(`${SIG} 21 11 0014 7f000001 7f000001 002a 0539 02 0005 3132333435 02 0005 3534333231`);
    const r = expectOk(parseProxyHeader(buf));
    expect(r.headerLength).toBe(36);
    expect(r.tlvs).toEqual({ authority: '12345' });
    expect(r.addresses).toEqual({ family: 'tcp4', srcAddress: '127.0.0.1', srcPort: 42, dstAddress: '127.0.0.1', dstPort: 1337 });
  });

  it('the first AUTHORITY wins', () => {
    const r = expectOk(parseProxyHeader(hex(`${SIG} 21 11 0014 7f000001 7f000001 002a 0539 02 0001 61 02 0001 62`)));
    expect(r.tlvs.authority).toBe('a');
  });

  it('SSL TLV: verify 0 without a certificate flag is not "verified"; CERT_SESS counts', () => {
    const noCert = expectOk(parseProxyHeader(hex(`${SIG} 21 11 0014 7f000001 7f000001 002a 0539 20 0005 01 00000000`)));
    expect(noCert.tlvs).toEqual({ verified: false, sslClient: 0x01 });
    const sess = expectOk(parseProxyHeader(hex(`${SIG} 21 11 0014 7f000001 7f000001 002a 0539 20 0005 05 00000000`)));
    expect(sess.tlvs).toEqual({ verified: true, sslClient: 0x05 });
    const failed = expectOk(parseProxyHeader(hex(`${SIG} 21 11 0014 7f000001 7f000001 002a 0539 20 0005 03 00000001`)));
    expect(failed.tlvs).toEqual({ verified: false, sslClient: 0x03 });
  });

  it('UNIQUE_ID of 128 bytes is accepted', () => {
    const body = `7f000001 7f000001 002a 0539 05 0080 ${'ab'.repeat(128)}`;
    expectOk(parseProxyHeader(hex(`${SIG} 21 11 ${hex(body).length.toString(16).padStart(4, '0')} ${body}`)));
  });
});

describe('CRC32C', () => {
  it('matches the standard check value', () => {
    expect(crc32c(ascii('123456789'))).toBe(0xe3069283);
    expect(crc32c(Buffer.alloc(0))).toBe(0);
  });

  function withCrc(): Buffer {
    const base = encodeV2(V4, { authority: 'x' });
    const buf = Buffer.concat([base, hex('03 0004 00000000')]);
    buf.writeUInt16BE(buf.length - 16, 14);
    buf.writeUInt32BE(crc32c(buf), buf.length - 4);
    return buf;
  }

  it('a correct checksum is accepted', () => {
    const buf = withCrc();
    const r = expectOk(parseProxyHeader(buf));
    expect(r.headerLength).toBe(buf.length);
    expect(r.tlvs).toEqual({ authority: 'x' });
  });

  it('a corrupted header or checksum is rejected', () => {
    const addr = withCrc();
    addr[19] ^= 0x01; // last byte of the source address
    expect(parseProxyHeader(addr)).toEqual({ kind: 'invalid', detail: 'v2: CRC32C mismatch' });
    const sum = withCrc();
    sum[sum.length - 1] ^= 0x80;
    expect(parseProxyHeader(sum)).toEqual({ kind: 'invalid', detail: 'v2: CRC32C mismatch' });
  });

  it('a CRC32C TLV of the wrong size is rejected', () => {
    expect(parseProxyHeader(hex(`${SIG} 21 11 0012 7f000001 7f000001 002a 0539 03 0003 000000`))).toMatchObject({ kind: 'invalid' });
  });
});

describe('invalid headers', () => {
  const v1Bad: Array<[string, string]> = [
    // mosquitto test/broker/21-proxy-v1-bad.py (its port-0 vectors excepted, see above)
    ['bad transport', 'PROXY TCP3 192.0.2.5 127.0.0.1 6275 1234\r\n'],
    ['too long', 'PROXY TCP4 192.0.2.5 127.0.0.1 6275 1234' + ' '.repeat(67) + '\r\n'],
    ['tcp4 missing dport', 'PROXY TCP4 192.0.2.5 127.0.0.1 6275\r\n'],
    ['tcp4 missing sport', 'PROXY TCP4 192.0.2.5 127.0.0.1\r\n'],
    ['tcp4 missing daddr', 'PROXY TCP4 192.0.2.5\r\n'],
    ['tcp4 missing saddr', 'PROXY TCP4 \r\n'],
    ['tcp4 dport 65536', 'PROXY TCP4 192.0.2.5 127.0.0.1 6275 65536\r\n'],
    ['tcp4 sport 65536', 'PROXY TCP4 192.0.2.5 127.0.0.1 65536 1234\r\n'],
    ['tcp4 daddr 256', 'PROXY TCP4 192.0.2.5 127.0.0.256 6275 1234\r\n'],
    ['tcp4 saddr 256', 'PROXY TCP4 192.0.2.256 127.0.0.1 6275 1234\r\n'],
    ['tcp6 missing dport', 'PROXY TCP6 192.0.2.5 127.0.0.1 6275\r\n'],
    ['tcp6 missing sport', 'PROXY TCP6 192.0.2.5 127.0.0.1\r\n'],
    ['tcp6 missing daddr', 'PROXY TCP6 192.0.2.5\r\n'],
    ['tcp6 missing saddr', 'PROXY TCP6 \r\n'],
    ['tcp6 with ipv4 addresses', 'PROXY TCP6 192.0.2.5 127.0.0.1 6275 1234\r\n'],
    // strictness of §2.1
    ['double space after PROXY', 'PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n'],
    ['double space between addresses', 'PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n'],
    ['trailing space', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n'],
    ['tab separator', 'PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n'],
    ['six fields', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n'],
    ['lowercase proxy', 'proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n'],
    ['lowercase protocol', 'PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n'],
    ['port with heading zero', 'PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n'],
    ['port with sign', 'PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n'],
    ['port in exponent form', 'PROXY TCP4 1.2.3.4 5.6.7.8 1e3 2\r\n'],
    ['port 99999', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n'],
    ['port 6 digits', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 100000\r\n'],
    ['octet with heading zero', 'PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n'],
    ['three octets', 'PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n'],
    ['five octets', 'PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n'],
    ['tcp4 with ipv6 address', 'PROXY TCP4 ::1 5.6.7.8 1 2\r\n'],
    ['ipv6 with zone id', 'PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n'],
    ['ipv6 with two gaps', 'PROXY TCP6 1::2::3 ::1 1 2\r\n'],
    ['ipv6 group of 5 digits', 'PROXY TCP6 00000::1 ::1 1 2\r\n'],
    ['ipv6 in brackets', 'PROXY TCP6 [::1] ::1 1 2\r\n'],
    ['LF only', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n'],
    ['UNKNOWN line ended by LF only', 'PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\n'],
    ['CR only, then data', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\x10'],
    ['CR CR LF', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n'],
    ['UNKNOWN glued to junk', 'PROXY UNKNOWNX\r\n'],
    ['empty protocol', 'PROXY \r\n'],
    ['PROXY without space', 'PROXY\r\n'],
    ['no CRLF in 107 bytes', 'PROXY UNKNOWN ' + 'a'.repeat(200)],
  ];

  it.each(v1Bad)('v1: %s', (_name, line) => {
    expect(parseProxyHeader(ascii(line))).toMatchObject({ kind: 'invalid' });
  });

  const v2Bad: Array<[string, string]> = [
    // mosquitto test/broker/21-proxy-v2-bad-header.py
    ['bad magic', `0d0a0d0a000d0a515549540b 21 01 000c 00000000 00000000 0000 0000`],
    ['version 3', `${SIG} 31 01 000c 00000000 00000000 0000 0000`],
    ['command 3', `${SIG} 23 01 000c 00000000 00000000 0000 0000`],
    ['PROXY with UNSPEC family', `${SIG} 21 00 000c 00000000 00000000 0000 0000`],
    ['tcp4 length 11', `${SIG} 21 11 000b 00000000 00000000 0000 0000`],
    ['tcp4 length 0', `${SIG} 21 11 0000 c0000205 00000000 1883 0000`],
    ['tcp6 length 11', `${SIG} 21 21 000b 00000000 00000000 0000 0000`],
    ['tcp6 length 0', `${SIG} 21 21 0000 00000000 00000000 0000 0000`],
    ['unix length 0', `${SIG} 21 31 0000 00000000 00000000 0000 0000`],
    ['short SSL TLV', `${SIG} 21 11 0010 00000000 00000000 0000 0000 20 0001 21 00`],
    [
      'SSL TLV longer than the header',
      `${SIG} 21 11 0010 c0000205 00000000 1883 0000 20 0019 05 00000000 21 0007 544c5376312e33 23 0008 70717273747576`,
    ],
    [
      'SSL sub-TLV longer than the SSL TLV',
      `${SIG} 21 11 0028 c0000205 00000000 1883 0000 20 0019 05 00000000 21 0007 544c5376312e33 23 000a 70717273747576`,
    ],
    // HAProxy reg-tests/connection/proxy_protocol_tlv_validation.vtc c3, c4
    ['TLV past the header end (payload fused)', `${SIG} 21 11 0014 7f000001 7f000001 002a 0539 02 000a 31323334353132333435`],
    ['TLVs not ending at the header end', `${SIG} 21 11 0014 7f000001 7f000001 002a 0539 02 0004 31323334 474554`],
    // more strictness
    ['version 1', `${SIG} 11 11 000c 00000000 00000000 0000 0000`],
    ['command 2', `${SIG} 22 11 000c 00000000 00000000 0000 0000`],
    ['command 0xf', `${SIG} 2f 11 000c 00000000 00000000 0000 0000`],
    ['UDP over IPv4', `${SIG} 21 12 000c 00000000 00000000 0000 0000`],
    ['UDP over IPv6', `${SIG} 21 22 0024 ${'00'.repeat(36)}`],
    ['unix stream with a full block', `${SIG} 21 31 00d8 ${'00'.repeat(216)}`],
    ['undefined family 0x13', `${SIG} 21 13 000c 00000000 00000000 0000 0000`],
    ['undefined family 0x41', `${SIG} 21 41 000c 00000000 00000000 0000 0000`],
    ['LOCAL with undefined family', `${SIG} 20 44 0000`],
    ['oversize length', `${SIG} 21 11 1001 ${'00'.repeat(4097)}`],
    ['max length 0xffff', `${SIG} 21 11 ffff`],
    ['truncated TLV header (2 stray bytes)', `${SIG} 21 11 000e 7f000001 7f000001 002a 0539 02 00`],
    ['one stray byte after the addresses', `${SIG} 21 11 000d 7f000001 7f000001 002a 0539 00`],
    ['stray bytes after the last SSL sub-TLV', `${SIG} 21 11 0015 7f000001 7f000001 002a 0539 20 0006 01 00000001 21`],
    ['AUTHORITY not UTF-8', `${SIG} 21 11 0011 7f000001 7f000001 002a 0539 02 0002 c328`],
    ['SSL version not ASCII', `${SIG} 21 11 0019 7f000001 7f000001 002a 0539 20 000a 01 00000001 21 0002 c3a9`],
    ['SSL CN not UTF-8', `${SIG} 21 11 0018 7f000001 7f000001 002a 0539 20 0009 03 00000000 22 0001 ff`],
    ['UNIQUE_ID over 128 bytes', `${SIG} 21 11 0090 7f000001 7f000001 002a 0539 05 0081 ${'ab'.repeat(129)}`],
    ['two CRC32C TLVs', `${SIG} 21 11 001a 7f000001 7f000001 002a 0539 03 0004 00000000 03 0004 00000000`],
    ['source port 0 (as v1: no TCP connection has it)', `${SIG} 21 11 000c 7f000001 7f000001 0000 0539`],
    ['destination port 0', `${SIG} 21 21 0024 ${'00'.repeat(15)}01 ${'00'.repeat(15)}01 002a 0000`],
  ];

  it.each(v2Bad)('v2: %s', (_name, h) => {
    expect(parseProxyHeader(hex(h))).toMatchObject({ kind: 'invalid' });
  });

  it('garbage that is neither signature is invalid from its first byte', () => {
    for (const first of [0x10, 0x20, 0x70 /* p */, 0x16 /* TLS */, 0x47 /* G */, 0x00, 0x0a]) {
      expect(parseProxyHeader(Buffer.from([first])), first.toString(16)).toMatchObject({ kind: 'invalid' });
    }
  });
});

describe('invalid is decided as early as possible', () => {
  const early: Array<[string, Buffer]> = [
    ['v1 prefix mismatch at byte 3', ascii('PRX')],
    ['v1 "PROXY" followed by tab', ascii('PROXY\t')],
    ['v1 unknown protocol before its end', ascii('PROXY TCP5')],
    ['v1 protocol not followed by space', ascii('PROXY TCP44')],
    ['v1 octet over 255 before the next space', ascii('PROXY TCP4 1.2.3.256')],
    ['v1 octet with heading zero', ascii('PROXY TCP4 01')],
    ['v1 ipv6 text in a TCP4 line', ascii('PROXY TCP4 ::')],
    ['v1 ipv4 text in a TCP6 line', ascii('PROXY TCP6 1.2')],
    ['v1 double space', ascii('PROXY TCP4 1.2.3.4  ')],
    ['v1 port over 65535 before CRLF', ascii('PROXY TCP4 1.2.3.4 5.6.7.8 65536')],
    ['v1 port with heading zero before CRLF', ascii('PROXY TCP4 1.2.3.4 5.6.7.8 1 00')],
    ['v1 sixth field', ascii('PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ')],
    ['v1 bad line then CR (LF still to come)', ascii('PROXY TCP4 1.2.3.4 5.6.7.8 1\r')],
    ['v1 106 bytes without CR', ascii('PROXY UNKNOWN ' + 'a'.repeat(92))],
    ['v2 signature mismatch at byte 5', hex('0d0a0d0a01')],
    ['v2 version nibble', hex(`${SIG} 31`)],
    ['v2 family byte', hex(`${SIG} 21 00`)],
    ['v2 oversize length before the block', hex(`${SIG} 21 11 2000`)],
    ['v2 length too short for tcp6 before the block', hex(`${SIG} 21 21 000c`)],
    ['v2 TLV past end before the header arrived', hex(`${SIG} 21 11 0014 7f000001 7f000001 002a 0539 02 000a 31`)],
  ];

  it.each(early)('%s', (_name, buf) => {
    expect(parseProxyHeader(buf)).toMatchObject({ kind: 'invalid' });
  });

  it('105 bytes of a v1 UNKNOWN line without CR is still `more`, 106 is not', () => {
    expect(parseProxyHeader(ascii('PROXY UNKNOWN ' + 'a'.repeat(91)))).toEqual({ kind: 'more' });
    expect(parseProxyHeader(ascii('PROXY UNKNOWN ' + 'a'.repeat(91) + '\r'))).toEqual({ kind: 'more' });
  });

  it('v2 header declared longer than the data is `more` (the caller times out or sees EOF)', () => {
    expect(parseProxyHeader(hex(`${SIG} 21 11 0014 7f000001 7f000001 002a 0539 02 00`))).toEqual({ kind: 'more' });
  });
});

describe('robustness', () => {
  /** Deterministic PRNG (mulberry32) so a failure reproduces. */
  function rng(seed: number): () => number {
    return () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  function checkSane(buf: Buffer): void {
    const r = parseProxyHeader(buf); // must never throw (mosquitto #3435: over-read on v2 input)
    if (r.kind === 'ok') {
      expect(r.headerLength).toBeGreaterThan(0);
      expect(r.headerLength).toBeLessThanOrEqual(buf.length);
    }
  }

  it('never throws on mutated valid headers, and never claims bytes it does not have', () => {
    const next = rng(1883);
    const seeds = [
      encodeV1(V4), encodeV1(V6), encodeV1(null), encodeV2(V4), encodeV2(null),
      encodeV2(V6, { authority: 'a.example', sslVersion: 'TLSv1.3', sslCn: 'cn', verified: true }),
    ];
    for (let n = 0; n < 20_000; n++) {
      const buf = Buffer.from(seeds[n % seeds.length]!);
      const flips = 1 + Math.floor(next() * 3);
      for (let f = 0; f < flips; f++) buf[Math.floor(next() * buf.length)] = Math.floor(next() * 256);
      const cut = next() < 0.3 ? Math.floor(next() * buf.length) : buf.length;
      checkSane(buf.subarray(0, cut));
    }
  });

  it('never throws on random bytes after a valid signature', () => {
    const next = rng(8883);
    for (let n = 0; n < 5_000; n++) {
      const tail = Buffer.alloc(Math.floor(next() * 120));
      for (let i = 0; i < tail.length; i++) tail[i] = Math.floor(next() * 256);
      checkSane(Buffer.concat([hex(SIG), tail]));
      checkSane(Buffer.concat([ascii('PROXY '), tail]));
    }
  });
});

describe('addressesOf', () => {
  it('IPv4-mapped IPv6 on both sides becomes tcp4', () => {
    expect(addressesOf('::ffff:10.0.0.1', 50000, '::ffff:10.0.0.2', 1883)).toEqual({
      family: 'tcp4', srcAddress: '10.0.0.1', srcPort: 50000, dstAddress: '10.0.0.2', dstPort: 1883,
    });
    expect(addressesOf('::FFFF:7f00:1', 1, '127.0.0.1', 2)).toMatchObject({ family: 'tcp4', srcAddress: '127.0.0.1' });
  });

  it('plain IPv4 stays tcp4, IPv6 is tcp6 and canonical', () => {
    expect(addressesOf('10.0.0.1', 1, '10.0.0.2', 2)).toEqual({ family: 'tcp4', srcAddress: '10.0.0.1', srcPort: 1, dstAddress: '10.0.0.2', dstPort: 2 });
    expect(addressesOf('2001:DB8:0::1', 1, '::1', 2)).toEqual({ family: 'tcp6', srcAddress: '2001:db8::1', srcPort: 1, dstAddress: '::1', dstPort: 2 });
  });

  it('mixed families are expressed as tcp6 with the IPv4 side mapped', () => {
    expect(addressesOf('::ffff:10.0.0.1', 1, '2001:db8::2', 2)).toEqual({
      family: 'tcp6', srcAddress: '::ffff:10.0.0.1', srcPort: 1, dstAddress: '2001:db8::2', dstPort: 2,
    });
    expect(addressesOf('2001:db8::1', 1, '10.0.0.2', 2)).toMatchObject({ family: 'tcp6', dstAddress: '::ffff:10.0.0.2' });
  });

  it('zone ids are dropped', () => {
    expect(addressesOf('fe80::1%eth0', 1, 'fe80::2%eth0', 2)).toMatchObject({ family: 'tcp6', srcAddress: 'fe80::1', dstAddress: 'fe80::2' });
  });

  it('the result always encodes and parses back', () => {
    for (const [r, l] of [['::ffff:10.0.0.1', '2001:db8::2'], ['fe80::1%lo', '::1'], ['::ffff:1.2.3.4', '::ffff:5.6.7.8']] as const) {
      const a = addressesOf(r, 1234, l, 1883);
      expect(expectOk(parseProxyHeader(encodeV1(a))).addresses).toEqual(a);
      expect(expectOk(parseProxyHeader(encodeV2(a))).addresses).toEqual(a);
    }
  });

  it('throws on non-addresses and bad ports', () => {
    expect(() => addressesOf('', 1, '10.0.0.1', 2)).toThrow(RangeError);
    expect(() => addressesOf('10.0.0.1', 1, 'localhost', 2)).toThrow(RangeError);
    expect(() => addressesOf('10.0.0.1', -1, '10.0.0.2', 2)).toThrow(RangeError);
    expect(() => addressesOf('10.0.0.1', 1, '10.0.0.2', 65536)).toThrow(RangeError);
  });
});

describe('test helper: PROXY-aware broker', () => {
  let broker: ProxyAwareBroker | null = null;
  const sockets: net.Socket[] = [];

  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy();
    await broker?.close();
    broker = null;
  });

  function connect(port: number): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1');
      sockets.push(s);
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
  }

  /** Reads exactly n bytes, or fails after a bounded wait. */
  function readBytes(s: net.Socket, n: number, timeoutMs = 5000): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      let got = Buffer.alloc(0);
      const timer = setTimeout(() => done(new Error(`read ${got.length} of ${n} bytes`)), timeoutMs);
      const onData = (c: Buffer): void => {
        got = Buffer.concat([got, c]);
        if (got.length >= n) done(null);
      };
      const onEnd = (): void => done(new Error(`closed after ${got.length} of ${n} bytes`));
      function done(err: Error | null): void {
        clearTimeout(timer);
        s.off('data', onData);
        s.off('close', onEnd);
        if (err) reject(err);
        else resolve(got);
      }
      s.on('data', onData);
      s.on('close', onEnd);
    });
  }

  function closed(s: net.Socket, timeoutMs = 5000): Promise<void> {
    return new Promise((resolve, reject) => {
      if (s.destroyed) return resolve();
      const timer = setTimeout(() => reject(new Error('socket still open')), timeoutMs);
      s.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      s.resume();
    });
  }

  const CONNECT_V4 = hex('10 0c 0004 4d515454 04 02 003c 0000');
  const CONNECT_V5 = hex('10 0d 0004 4d515454 05 02 003c 00 0000');

  it('answers a v3.1.1 CONNECT behind a v2 header, then PINGREQ, and records both', async () => {
    broker = await startProxyAwareBroker();
    const s = await connect(broker.port);
    const header = encodeV2(V4, { authority: 'sni.example' });
    // header and CONNECT split at an awkward place, as TCP may deliver them
    const all = Buffer.concat([header, CONNECT_V4]);
    s.write(all.subarray(0, 20));
    await new Promise((r) => setTimeout(r, 20));
    s.write(all.subarray(20));
    expect(await readBytes(s, 4)).toEqual(hex('20020000'));
    s.write(hex('c000'));
    expect(await readBytes(s, 2)).toEqual(hex('d000'));
    await broker.waitForConnections(1);
    expect(broker.connections).toHaveLength(1);
    expect(broker.connections[0]!.connect).toEqual(CONNECT_V4);
    expect(expectOk(broker.connections[0]!.header)).toMatchObject({ addresses: V4, tlvs: { authority: 'sni.example' }, local: false });
    expect(s.destroyed).toBe(false);
  });

  it('answers a v5 CONNECT behind a v1 header with a v5 CONNACK', async () => {
    broker = await startProxyAwareBroker();
    const s = await connect(broker.port);
    s.write(Buffer.concat([encodeV1(V6), CONNECT_V5]));
    expect(await readBytes(s, 5)).toEqual(hex('2003000000'));
    await broker.waitForConnections(1);
    expect(expectOk(broker.connections[0]!.header).addresses).toEqual(V6);
  });

  it('accepts a LOCAL header (health probe) and records it', async () => {
    broker = await startProxyAwareBroker();
    const s = await connect(broker.port);
    s.write(Buffer.concat([encodeV2(null), CONNECT_V4]));
    expect(await readBytes(s, 4)).toEqual(hex('20020000'));
    await broker.waitForConnections(1);
    expect(expectOk(broker.connections[0]!.header)).toMatchObject({ local: true, addresses: null });
  });

  it('closes a connection without a valid header and records why', async () => {
    broker = await startProxyAwareBroker();
    const s = await connect(broker.port);
    s.write(CONNECT_V4);
    await closed(s);
    expect(broker.connections).toHaveLength(0);
    expect(broker.rejected).toHaveLength(1);
    expect(broker.rejected[0]!.bytes).toEqual(CONNECT_V4);
  });

  it('waitForConnections fails after its bound', async () => {
    broker = await startProxyAwareBroker();
    await expect(broker.waitForConnections(1, 50)).rejects.toThrow(/0 of 1/);
  });

  it('close() is idempotent and ends open connections', async () => {
    broker = await startProxyAwareBroker();
    const s = await connect(broker.port);
    s.write(Buffer.concat([encodeV1(V4), CONNECT_V4]));
    await readBytes(s, 4);
    const gone = closed(s);
    await Promise.all([broker.close(), broker.close()]);
    await gone;
  });
});
