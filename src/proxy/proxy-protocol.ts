/**
 * PROXY protocol v1 (text) and v2 (binary) codec, pure: no sockets, no clock, no logging.
 * Spec: HAProxy doc/proxy-protocol.txt ("the spec" below, section numbers from it).
 *
 * The parser is strict on purpose: the header decides which client address the LB believes, so anything
 * that does not exactly match the spec is rejected ("Any sequence which does not exactly match the
 * protocol must be discarded", §2.1), and as early as possible ("It is recommended to abort the
 * connection as soon as possible", §2.1): `more` is only answered while the bytes seen so far can still
 * become a valid header.
 */
import net from 'node:net';
import { canonicalIPv6, formatIPv4, formatIPv6, isIPv4Mapped, parseIPv6 } from '../ip-text.js';

export interface ProxyAddresses {
  family: 'tcp4' | 'tcp6';
  srcAddress: string;
  srcPort: number;
  dstAddress: string;
  dstPort: number;
}

export interface ProxyTlvs {
  /** SNI, PP2_TYPE_AUTHORITY (0x02). */
  authority?: string;
  /** Client certificate CN, PP2_TYPE_SSL (0x20) sub-TLV PP2_SUBTYPE_SSL_CN (0x22). */
  sslCn?: string;
  /** TLS version, PP2_TYPE_SSL sub-TLV PP2_SUBTYPE_SSL_VERSION (0x21), e.g. "TLSv1.3". */
  sslVersion?: string;
  /** Client presented a certificate and it verified. Present after parsing whenever an SSL TLV was. */
  verified?: boolean;
  /**
   * Encoding: the TLS session was resumed, so its certificate was presented on an earlier connection of the
   * session, not on this one (PP2_CLIENT_CERT_SESS without PP2_CLIENT_CERT_CONN, as HAProxy sends it).
   */
  resumed?: boolean;
  /** Parsing: the SSL TLV's `client` bit field (§2.2.6: PP2_CLIENT_SSL 0x01, _CERT_CONN 0x02, _CERT_SESS 0x04). */
  sslClient?: number;
}

export type ProxyParseResult =
  | { kind: 'more' }
  | { kind: 'invalid'; detail: string }
  | { kind: 'ok'; headerLength: number; local: boolean; addresses: ProxyAddresses | null; tlvs: ProxyTlvs };

/** Largest v2 address+TLV block we accept; real headers are well below an MSS (§2.2). */
export const MAX_V2_BLOCK_LENGTH = 4096;
/** "PROXY UNKNOWN ffff:…:ffff ffff:…:ffff 65535 65535\r\n" is 107 bytes, the v1 maximum (§2.1). */
export const MAX_V1_LINE_LENGTH = 107;

// §2.2: the 12-byte v2 signature; its NUL byte means it must never be handled as a C string.
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V2_FIXED_LENGTH = 16;
const V1_PREFIX = Buffer.from('PROXY ', 'latin1');
const CR = 0x0d;
const LF = 0x0a;

// §2.2 byte 13: version in the high nibble (must be 2), command in the low nibble.
const V2_VERSION = 0x2;
const CMD_LOCAL = 0x0;
const CMD_PROXY = 0x1;
// §2.2 byte 14: family (high nibble) and transport (low nibble); only these combinations are defined.
const FAM_UNSPEC = 0x00;
const FAM_TCP4 = 0x11;
const FAM_TCP6 = 0x21;
const DEFINED_FAMILY_BYTES = new Set([0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32]);
const ADDR_LEN_TCP4 = 12;
const ADDR_LEN_TCP6 = 36;

// §2.2 TLV types we interpret; every other type is skipped (§2.2: "A receiver may choose to skip over").
const PP2_TYPE_AUTHORITY = 0x02;
const PP2_TYPE_CRC32C = 0x03;
const PP2_TYPE_UNIQUE_ID = 0x05;
const PP2_TYPE_SSL = 0x20;
const PP2_SUBTYPE_SSL_VERSION = 0x21;
const PP2_SUBTYPE_SSL_CN = 0x22;
const PP2_CLIENT_SSL = 0x01;
const PP2_CLIENT_CERT_CONN = 0x02;
const PP2_CLIENT_CERT_SESS = 0x04;
const TLV_HEADER_LENGTH = 3;
const SSL_TLV_FIXED_LENGTH = 5; // client (1) + verify (4)
const MAX_UNIQUE_ID_LENGTH = 128; // §2.2.5 "up to 128 bytes"

const MORE: ProxyParseResult = Object.freeze({ kind: 'more' });
const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function invalid(detail: string): ProxyParseResult {
  return { kind: 'invalid', detail };
}

// ───────────────────────────────────────────── parsing ─────────────────────────────────────────────

/** Strict parse of a v1 or v2 header at the start of buf (bytes after the header are not touched). */
export function parseProxyHeader(buf: Buffer): ProxyParseResult {
  if (buf.length === 0) return MORE;
  // §2.2 "Identifying the protocol version": v2 starts with \r, v1 with "PROXY"; anything else is dropped.
  if (buf[0] === V2_SIGNATURE[0]) return parseV2(buf);
  if (buf[0] === V1_PREFIX[0]) return parseV1(buf);
  return invalid('not a PROXY protocol header');
}

function parseV1(buf: Buffer): ProxyParseResult {
  const prefixSeen = Math.min(buf.length, V1_PREFIX.length);
  // Case-sensitive: "proxy" or "PROXY\t" is not the protocol (§2.1 "exactly … ( \x50 \x52 \x4F \x58 \x59 )").
  if (buf.compare(V1_PREFIX, 0, prefixSeen, 0, prefixSeen) !== 0) return invalid('v1: line does not start with "PROXY "');
  if (buf.length <= V1_PREFIX.length) return MORE;

  // The CR of the CRLF must sit at index <= 105 so the line stays within 107 bytes (§2.1).
  const lastCrIndex = MAX_V1_LINE_LENGTH - 2;
  const scanEnd = Math.min(buf.length, lastCrIndex + 1);
  for (let i = V1_PREFIX.length; i < scanEnd; i++) {
    const b = buf[i];
    if (b === LF) return invalid('v1: LF without CR'); // §2.1 "must not tolerate a single CR or LF"
    if (b !== CR) continue;
    const body = buf.toString('latin1', V1_PREFIX.length, i);
    const parsed = parseV1Body(body, i + 2);
    if (parsed.kind === 'invalid') return parsed;
    if (i + 1 >= buf.length) return MORE; // the LF has not arrived yet
    if (buf[i + 1] !== LF) return invalid('v1: CR not followed by LF');
    return parsed;
  }
  if (buf.length > lastCrIndex) return invalid('v1: no CRLF within 107 bytes');
  return checkV1BodyPrefix(buf.toString('latin1', V1_PREFIX.length));
}

/** A complete v1 line body (between "PROXY " and CRLF). */
function parseV1Body(body: string, headerLength: number): ProxyParseResult {
  // §2.1: for UNKNOWN "the receiver must ignore anything presented before the CRLF".
  if (body === 'UNKNOWN' || body.startsWith('UNKNOWN ')) {
    return { kind: 'ok', headerLength, local: true, addresses: null, tlvs: {} };
  }
  const fields = body.split(' ');
  if (fields.some((f) => f === '')) return invalid('v1: fields must be separated by exactly one space');
  if (fields.length !== 5) return invalid('v1: expected protocol, 2 addresses and 2 ports');
  const [proto, src, dst, srcPort, dstPort] = fields as [string, string, string, string, string];
  let family: 'tcp4' | 'tcp6';
  if (proto === 'TCP4') family = 'tcp4';
  else if (proto === 'TCP6') family = 'tcp6';
  else return invalid('v1: protocol must be TCP4, TCP6 or UNKNOWN');

  let srcAddress: string | null;
  let dstAddress: string | null;
  if (family === 'tcp4') {
    // net.isIPv4 refuses leading zeros, as §2.1 requires ("Heading zeroes are not permitted").
    srcAddress = net.isIPv4(src) ? src : null;
    dstAddress = net.isIPv4(dst) ? dst : null;
  } else {
    // Normalised so the same peer always reads the same (ACLs, logs, hashing).
    srcAddress = canonicalIPv6(src);
    dstAddress = canonicalIPv6(dst);
  }
  if (srcAddress === null) return invalid(`v1: bad ${family} source address`);
  if (dstAddress === null) return invalid(`v1: bad ${family} destination address`);
  const sp = parseV1Port(srcPort);
  if (sp === null) return invalid('v1: bad source port');
  const dp = parseV1Port(dstPort);
  if (dp === null) return invalid('v1: bad destination port');
  return {
    kind: 'ok',
    headerLength,
    local: false,
    addresses: { family, srcAddress, srcPort: sp, dstAddress, dstPort: dp },
    tlvs: {},
  };
}

const V1_PORT = /^[1-9][0-9]{0,4}$/;

/**
 * §2.1: decimal, no heading zeroes, at most 65535. Port 0 is refused although §2.1's range starts at 0: no TCP
 * connection has it, and mosquitto's 21-proxy-v1-bad vectors (reference catalogue #87) expect a close.
 */
function parseV1Port(s: string): number | null {
  if (!V1_PORT.test(s)) return null;
  const n = Number(s);
  return n <= 65535 ? n : null;
}

/** No CRLF yet: answer `more` only if this partial body can still become a valid line. */
function checkV1BodyPrefix(partial: string): ProxyParseResult {
  const fields = partial.split(' ');
  const proto = fields[0]!;
  if (fields.length === 1) {
    return isPrefixOfAny(proto, ['TCP4', 'TCP6', 'UNKNOWN']) ? MORE : invalid('v1: protocol must be TCP4, TCP6 or UNKNOWN');
  }
  if (proto === 'UNKNOWN') return MORE; // the rest of an UNKNOWN line is ignored
  if (proto !== 'TCP4' && proto !== 'TCP6') return invalid('v1: protocol must be TCP4, TCP6 or UNKNOWN');
  if (fields.length > 5) return invalid('v1: too many fields');
  const lastIndex = fields.length - 1;
  for (let i = 1; i < fields.length; i++) {
    const f = fields[i]!;
    const complete = i < lastIndex;
    if (complete && f === '') return invalid('v1: fields must be separated by exactly one space');
    const isAddress = i <= 2;
    let ok: boolean;
    if (isAddress) {
      if (proto === 'TCP4') ok = complete ? net.isIPv4(f) : isIPv4Prefix(f);
      else ok = complete ? canonicalIPv6(f) !== null : isIPv6Prefix(f);
    } else {
      ok = complete ? parseV1Port(f) !== null : f === '' || parseV1Port(f) !== null;
    }
    if (!ok) return invalid(isAddress ? `v1: bad ${proto === 'TCP4' ? 'tcp4' : 'tcp6'} address` : 'v1: bad port');
  }
  return MORE;
}

function isPrefixOfAny(s: string, words: readonly string[]): boolean {
  return words.some((w) => w.startsWith(s));
}

const IPV4_OCTET_PREFIX = /^(?:0|[1-9][0-9]{0,2})$/;

/** True if s can be extended into a dotted quad without heading zeroes. */
function isIPv4Prefix(s: string): boolean {
  const parts = s.split('.');
  if (parts.length > 4) return false;
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]!;
    if (p === '' && i === parts.length - 1) continue; // "1.2." waits for the next octet
    if (!IPV4_OCTET_PREFIX.test(p) || Number(p) > 255) return false;
  }
  return true;
}

const IPV6_CHARS = /^[0-9A-Fa-f:.]*$/;
const MAX_IPV6_TEXT = 'ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255'.length;

/** Cheap necessary conditions for a partial IPv6 text; the complete field is checked in full later. */
function isIPv6Prefix(s: string): boolean {
  if (s.length > MAX_IPV6_TEXT || !IPV6_CHARS.test(s) || s.includes(':::')) return false;
  if (s.indexOf('::') !== s.lastIndexOf('::')) return false;
  const dot = s.indexOf('.');
  if (dot >= 0 && s.lastIndexOf(':', dot) < 0) return false; // a dotted quad only ends an IPv6 address
  const hexPart = dot < 0 ? s : s.slice(0, s.lastIndexOf(':', dot) + 1);
  if (dot >= 0 && !isIPv4Prefix(s.slice(hexPart.length))) return false;
  return hexPart.split(':').every((g) => g.length <= 4);
}

function parseV2(buf: Buffer): ProxyParseResult {
  const signatureSeen = Math.min(buf.length, V2_SIGNATURE.length);
  if (buf.compare(V2_SIGNATURE, 0, signatureSeen, 0, signatureSeen) !== 0) return invalid('v2: bad signature');
  if (buf.length <= V2_SIGNATURE.length) return MORE;

  const verCmd = buf[12]!;
  if (verCmd >> 4 !== V2_VERSION) return invalid('v2: version must be 2'); // §2.2 "must only accept this value"
  const command = verCmd & 0x0f;
  if (command !== CMD_LOCAL && command !== CMD_PROXY) return invalid('v2: command must be LOCAL or PROXY');
  if (buf.length < 14) return MORE;

  const fam = buf[13]!;
  if (!DEFINED_FAMILY_BYTES.has(fam)) return invalid('v2: undefined address family/transport'); // §2.2 "must be rejected"
  // PROXY must carry a TCP address we can use; UNSPEC/UDP/UNIX are allowed to be refused (§2.2 "or to reject it").
  if (command === CMD_PROXY && fam !== FAM_TCP4 && fam !== FAM_TCP6) return invalid('v2: PROXY command needs TCP over IPv4 or IPv6');
  if (buf.length < V2_FIXED_LENGTH) return MORE;

  const blockLength = buf.readUInt16BE(14);
  if (blockLength > MAX_V2_BLOCK_LENGTH) return invalid('v2: header length over 4096');
  const headerLength = V2_FIXED_LENGTH + blockLength;

  if (command === CMD_LOCAL) {
    // §2.2: LOCAL "must accept … and discard the protocol block including the family"; the length
    // must still be honoured ("must not assume zero is presented for LOCAL connections").
    if (buf.length < headerLength) return MORE;
    return { kind: 'ok', headerLength, local: true, addresses: null, tlvs: {} };
  }

  const addrLength = fam === FAM_TCP4 ? ADDR_LEN_TCP4 : ADDR_LEN_TCP6;
  if (blockLength < addrLength) return invalid('v2: header length too short for the address family');

  // Walk the TLV chain over what has arrived, bounded by the header end rather than by the buffer
  // (HAProxy BUG/MAJOR "proxy_protocol: Properly validate TLV lengths"), so a bad chain fails early.
  const available = Math.min(buf.length, headerLength);
  let offset = V2_FIXED_LENGTH + addrLength;
  while (offset < headerLength) {
    if (headerLength - offset < TLV_HEADER_LENGTH) return invalid('v2: stray bytes after the last TLV');
    if (offset + TLV_HEADER_LENGTH > available) return MORE;
    const next = offset + TLV_HEADER_LENGTH + buf.readUInt16BE(offset + 1);
    if (next > headerLength) return invalid('v2: TLV runs past the header end');
    offset = next;
  }
  if (buf.length < headerLength) return MORE;

  const header = buf.subarray(0, headerLength);
  const addresses = decodeV2Addresses(header, fam === FAM_TCP4);
  const tlvs: ProxyTlvs = {};
  const tlvError = decodeTlvs(header, V2_FIXED_LENGTH + addrLength, tlvs);
  if (tlvError !== null) return invalid(tlvError);
  // As in v1 (parseV1Port): no TCP connection has port 0.
  if (addresses.srcPort === 0 || addresses.dstPort === 0) return invalid('v2: port 0');
  return { kind: 'ok', headerLength, local: false, addresses, tlvs };
}

function decodeV2Addresses(header: Buffer, ipv4: boolean): ProxyAddresses {
  const a = V2_FIXED_LENGTH;
  if (ipv4) {
    return {
      family: 'tcp4',
      srcAddress: formatIPv4(header, a),
      dstAddress: formatIPv4(header, a + 4),
      srcPort: header.readUInt16BE(a + 8),
      dstPort: header.readUInt16BE(a + 10),
    };
  }
  return {
    family: 'tcp6',
    srcAddress: formatIPv6(header, a),
    dstAddress: formatIPv6(header, a + 16),
    srcPort: header.readUInt16BE(a + 32),
    dstPort: header.readUInt16BE(a + 34),
  };
}

/** Interprets the TLVs of a complete header whose chain is already known to fill it exactly. */
function decodeTlvs(header: Buffer, start: number, out: ProxyTlvs): string | null {
  let crcValueOffset = -1;
  let sslSeen = false;
  for (let offset = start; offset < header.length; ) {
    const type = header[offset]!;
    const valueStart = offset + TLV_HEADER_LENGTH;
    const valueEnd = valueStart + header.readUInt16BE(offset + 1);
    offset = valueEnd;
    switch (type) {
      case PP2_TYPE_AUTHORITY: {
        const s = decodeUtf8(header, valueStart, valueEnd); // §2.2.2 "UTF8-encoded string"
        if (s === null) return 'v2: AUTHORITY TLV is not valid UTF-8';
        if (out.authority === undefined) out.authority = s;
        break;
      }
      case PP2_TYPE_CRC32C:
        if (valueEnd - valueStart !== 4) return 'v2: CRC32C TLV must be 4 bytes';
        if (crcValueOffset >= 0) return 'v2: more than one CRC32C TLV';
        crcValueOffset = valueStart;
        break;
      case PP2_TYPE_UNIQUE_ID:
        if (valueEnd - valueStart > MAX_UNIQUE_ID_LENGTH) return 'v2: UNIQUE_ID TLV longer than 128 bytes';
        break;
      case PP2_TYPE_SSL: {
        const err = decodeSslTlv(header, valueStart, valueEnd, sslSeen ? {} : out);
        if (err !== null) return err;
        sslSeen = true;
        break;
      }
      default:
        break; // ALPN, NOOP, NETNS and unregistered types: skipped
    }
  }
  // §2.2.3: the receiver "MUST treat the TCP connection providing the header as invalid" on mismatch.
  if (crcValueOffset >= 0 && !crcMatches(header, crcValueOffset)) return 'v2: CRC32C mismatch';
  return null;
}

/** §2.2.6 pp2_tlv_ssl: client (1), verify (4), then sub-TLVs that must exactly fill the value. */
function decodeSslTlv(header: Buffer, start: number, end: number, out: ProxyTlvs): string | null {
  if (end - start < SSL_TLV_FIXED_LENGTH) return 'v2: SSL TLV shorter than 5 bytes';
  const client = header[start]!;
  const verify = header.readUInt32BE(start + 1);
  let version: string | undefined;
  let cn: string | undefined;
  for (let offset = start + SSL_TLV_FIXED_LENGTH; offset < end; ) {
    if (end - offset < TLV_HEADER_LENGTH) return 'v2: stray bytes after the last SSL sub-TLV';
    const type = header[offset]!;
    const valueStart = offset + TLV_HEADER_LENGTH;
    const valueEnd = valueStart + header.readUInt16BE(offset + 1);
    if (valueEnd > end) return 'v2: SSL sub-TLV runs past the SSL TLV end';
    offset = valueEnd;
    if (type === PP2_SUBTYPE_SSL_VERSION && version === undefined) {
      const s = decodeUtf8(header, valueStart, valueEnd);
      if (s === null || !isAscii(s)) return 'v2: SSL version is not US-ASCII'; // §2.2.6 "US-ASCII string"
      version = s;
    } else if (type === PP2_SUBTYPE_SSL_CN && cn === undefined) {
      const s = decodeUtf8(header, valueStart, valueEnd); // §2.2.6 CN "in UTF8"
      if (s === null) return 'v2: SSL CN is not valid UTF-8';
      cn = s;
    }
  }
  if (version !== undefined) out.sslVersion = version;
  if (cn !== undefined) out.sslCn = cn;
  out.sslClient = client;
  // §2.2.6: verify is zero "if the client presented a certificate and it was successfully verified".
  out.verified = verify === 0 && (client & (PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS)) !== 0;
  return null;
}

function decodeUtf8(buf: Buffer, start: number, end: number): string | null {
  try {
    return strictUtf8.decode(buf.subarray(start, end));
  } catch {
    return null;
  }
}

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false;
  return true;
}

function crcMatches(header: Buffer, crcValueOffset: number): boolean {
  const received = header.readUInt32BE(crcValueOffset);
  // §2.2.3: computed over the whole header with the checksum field set to zero.
  const copy = Buffer.from(header);
  copy.writeUInt32BE(0, crcValueOffset);
  return crc32c(copy) === received;
}

// ───────────────────────────────────────────── encoding ────────────────────────────────────────────

/** v1 line; null → "PROXY UNKNOWN\r\n" (use the real connection endpoints). Throws RangeError on bad input. */
export function encodeV1(a: ProxyAddresses | null): Buffer {
  if (a === null) return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
  const { src, dst } = checkedAddressText(a);
  const proto = a.family === 'tcp4' ? 'TCP4' : 'TCP6';
  return Buffer.from(`PROXY ${proto} ${src} ${dst} ${a.srcPort} ${a.dstPort}\r\n`, 'latin1');
}

/**
 * v2 header; null → LOCAL command, family UNSPEC, length 0 (tlvs are then not sent: the receiver
 * discards a LOCAL block anyway). Throws RangeError on bad input.
 */
export function encodeV2(a: ProxyAddresses | null, tlvs?: ProxyTlvs): Buffer {
  if (a === null) return writeV2Fixed(Buffer.alloc(V2_FIXED_LENGTH), CMD_LOCAL, FAM_UNSPEC, 0);
  const { src, dst } = checkedAddressText(a);
  const ipv4 = a.family === 'tcp4';
  const addrLength = ipv4 ? ADDR_LEN_TCP4 : ADDR_LEN_TCP6;
  const tlvBytes = tlvs === undefined ? null : encodeTlvs(tlvs);
  const blockLength = addrLength + (tlvBytes === null ? 0 : tlvBytes.length);
  if (blockLength > MAX_V2_BLOCK_LENGTH) throw new RangeError('PROXY v2 header would exceed 4096 bytes');
  const out = Buffer.alloc(V2_FIXED_LENGTH + blockLength);
  writeV2Fixed(out, CMD_PROXY, ipv4 ? FAM_TCP4 : FAM_TCP6, blockLength);
  let o = V2_FIXED_LENGTH;
  if (ipv4) {
    o = writeIPv4(out, o, src);
    o = writeIPv4(out, o, dst);
  } else {
    o = writeIPv6(out, o, src);
    o = writeIPv6(out, o, dst);
  }
  o = out.writeUInt16BE(a.srcPort, o);
  o = out.writeUInt16BE(a.dstPort, o);
  if (tlvBytes !== null) tlvBytes.copy(out, o);
  return out;
}

export function encodeFor(version: 'v1' | 'v2', a: ProxyAddresses | null, tlvs?: ProxyTlvs): Buffer {
  return version === 'v1' ? encodeV1(a) : encodeV2(a, tlvs);
}

function writeV2Fixed(out: Buffer, command: number, fam: number, blockLength: number): Buffer {
  V2_SIGNATURE.copy(out, 0);
  out[12] = (V2_VERSION << 4) | command;
  out[13] = fam;
  out.writeUInt16BE(blockLength, 14);
  return out;
}

function encodeTlvs(t: ProxyTlvs): Buffer {
  const parts: Buffer[] = [];
  if (t.authority !== undefined) parts.push(tlv(PP2_TYPE_AUTHORITY, Buffer.from(t.authority, 'utf8')));
  if (t.sslCn !== undefined || t.sslVersion !== undefined || t.verified !== undefined) {
    const fixed = Buffer.alloc(SSL_TLV_FIXED_LENGTH);
    const hasCert = t.verified === true || t.sslCn !== undefined;
    // §2.2.6: CERT_SESS "at least once over the TLS session this connection belongs to", CERT_CONN "over the
    // current connection": a resumed session's certificate came on an earlier one.
    fixed[0] = PP2_CLIENT_SSL | (hasCert ? PP2_CLIENT_CERT_SESS | (t.resumed === true ? 0 : PP2_CLIENT_CERT_CONN) : 0);
    fixed.writeUInt32BE(t.verified === true ? 0 : 1, 1); // non-zero = no certificate or not verified
    const sub: Buffer[] = [fixed];
    if (t.sslVersion !== undefined) {
      if (!isAscii(t.sslVersion)) throw new RangeError('PROXY v2 SSL version must be US-ASCII');
      sub.push(tlv(PP2_SUBTYPE_SSL_VERSION, Buffer.from(t.sslVersion, 'latin1')));
    }
    if (t.sslCn !== undefined) sub.push(tlv(PP2_SUBTYPE_SSL_CN, Buffer.from(t.sslCn, 'utf8')));
    parts.push(tlv(PP2_TYPE_SSL, Buffer.concat(sub)));
  }
  return Buffer.concat(parts);
}

function tlv(type: number, value: Buffer): Buffer {
  if (value.length > 0xffff) throw new RangeError('PROXY v2 TLV value longer than 65535 bytes');
  const out = Buffer.alloc(TLV_HEADER_LENGTH + value.length);
  out[0] = type;
  out.writeUInt16BE(value.length, 1);
  value.copy(out, TLV_HEADER_LENGTH);
  return out;
}

/** Validates an address pair for its family and returns the texts to emit (IPv6 canonicalised). */
function checkedAddressText(a: ProxyAddresses): { src: string; dst: string } {
  if (!isPort(a.srcPort) || !isPort(a.dstPort)) throw new RangeError('PROXY header ports must be integers 0..65535');
  if (a.family === 'tcp4') {
    if (!net.isIPv4(a.srcAddress) || !net.isIPv4(a.dstAddress)) throw new RangeError('PROXY tcp4 header needs IPv4 addresses');
    return { src: a.srcAddress, dst: a.dstAddress };
  }
  if (a.family !== 'tcp6') throw new RangeError('PROXY header family must be tcp4 or tcp6');
  const src = canonicalIPv6(a.srcAddress);
  const dst = canonicalIPv6(a.dstAddress);
  if (src === null || dst === null) throw new RangeError('PROXY tcp6 header needs IPv6 addresses');
  return { src, dst };
}

function isPort(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= 65535;
}

// ─────────────────────────────────────── addresses of a socket ─────────────────────────────────────

/**
 * The address pair of an accepted socket as a PROXY header states it. IPv4-mapped IPv6 addresses
 * (::ffff:1.2.3.4, what a dual-stack listener reports for IPv4 clients) become tcp4; if only one side
 * is IPv4 the other is mapped so both share a family. Zone ids (%eth0) cannot be expressed and are
 * dropped. Throws RangeError for anything that is not an IP address or port.
 */
export function addressesOf(remoteAddress: string, remotePort: number, localAddress: string, localPort: number): ProxyAddresses {
  if (!isPort(remotePort) || !isPort(localPort)) throw new RangeError('ports must be integers 0..65535');
  const src = classify(remoteAddress);
  const dst = classify(localAddress);
  if (src === null) throw new RangeError(`not an IP address: ${remoteAddress}`);
  if (dst === null) throw new RangeError(`not an IP address: ${localAddress}`);
  if (src.v4 && dst.v4) return { family: 'tcp4', srcAddress: src.text, srcPort: remotePort, dstAddress: dst.text, dstPort: localPort };
  return {
    family: 'tcp6',
    srcAddress: src.v4 ? `::ffff:${src.text}` : src.text,
    srcPort: remotePort,
    dstAddress: dst.v4 ? `::ffff:${dst.text}` : dst.text,
    dstPort: localPort,
  };
}

function classify(address: string): { v4: boolean; text: string } | null {
  if (net.isIPv4(address)) return { v4: true, text: address };
  const zone = address.indexOf('%');
  const bytes = parseIPv6(zone < 0 ? address : address.slice(0, zone));
  if (bytes === null) return null;
  if (isIPv4Mapped(bytes)) return { v4: true, text: formatIPv4(bytes, 12) };
  return { v4: false, text: formatIPv6(bytes, 0) };
}

// ───────────────────────────────────────── IP text <-> bytes ───────────────────────────────────────

function writeIPv4(out: Buffer, at: number, text: string): number {
  const parts = text.split('.');
  for (let i = 0; i < 4; i++) out[at + i] = Number(parts[i]);
  return at + 4;
}

function writeIPv6(out: Buffer, at: number, text: string): number {
  out.set(parseIPv6(text)!, at);
  return at + 16;
}

// ──────────────────────────────────────────────── CRC32C ───────────────────────────────────────────

const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1; // Castagnoli, reflected
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC32C (Castagnoli, RFC 4960 appendix B) as PP2_TYPE_CRC32C uses it. */
export function crc32c(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (let i = 0; i < data.length; i++) crc = CRC32C_TABLE[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}
