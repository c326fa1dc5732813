/**
 * Bounded scanner for the first packet of a client connection (the CONNECT).
 *
 * The session calls `scanConnect` with every byte received so far. The function is stateless and cheap
 * on a growing buffer: the fixed header (1 byte + at most 4 length bytes) and the protocol-name prefix
 * are looked at on each call (constant work), and the body is validated exactly once, when the whole
 * packet is present. So a CONNECT delivered byte by byte costs O(n) in total, and a declared size above
 * `maxConnectBytes` is refused from the header alone, before anything is buffered.
 *
 * What is validated is everything the spec calls a Malformed Packet or a Protocol Error in a CONNECT
 * (framing, flags, property grammar, UTF-8). Semantic decisions that belong to the broker (authentication,
 * client-ID policy, empty client ID with CleanSession=0 at 3.1.1, topic rules for the will topic, payload
 * format of the will payload) are left to the broker: those CONNECTs pass.
 *
 * Rule numbers are MQTT 5.0 unless marked 3.1.1. Never throws: every read is bounds-checked first.
 */
import { isValidMqttUtf8 } from './connect-utf8.js';
import { VBI_INCOMPLETE, VBI_MALFORMED, readVbi, vbiBytes } from './variable-byte-integer.js';

export type RejectReason = 'malformed' | 'not_connect' | 'too_large';

export interface ConnectInfo {
  /** Whole CONNECT including the fixed header; bytes after it in the buffer are pipelined packets. */
  packetLength: number;
  /** Fixed header size: 1 type byte + 1..4 Remaining Length bytes (the body starts here). */
  headerLength: number;
  /** Level byte with the bridge bit removed. */
  protocolLevel: 3 | 4 | 5;
  /** The level byte had 0x80 set (mosquitto bridges send 0x83/0x84). */
  bridge: boolean;
  cleanStart: boolean;
  keepalive: number;
  /** Raw client-ID bytes, a subarray of the scanned buffer (no copy). May be empty. */
  clientId: Buffer;
  /** Raw username bytes (subarray), or null when the username flag is clear. */
  username: Buffer | null;
  hasPassword: boolean;
  hasWill: boolean;
  /** MQTT 5 Session Expiry Interval (property 0x11); 0 when absent or not MQTT 5. */
  sessionExpiry: number;
  /** Offset of the Connect Flags byte. */
  flagsOffset: number;
  /**
   * Offset of the username field (its 2-byte length prefix), or, when there is no username, the offset
   * where it would be inserted (right after the will payload / client ID, before any password).
   */
  usernameOffset: number;
  /** Offset just past the username field; equals `usernameOffset` when there is no username. */
  usernameEnd: number;
}

export type ScanResult =
  | { kind: 'more' }
  | { kind: 'reject'; reason: RejectReason }
  | { kind: 'refuse'; reason: 'bad_protocol_level'; replyLevel: 4 | 5 }
  | { kind: 'connect'; info: ConnectInfo };

// Shared verdict objects: repeated "more" calls on a growing buffer allocate nothing.
const MORE: ScanResult = Object.freeze({ kind: 'more' });
const MALFORMED: ScanResult = Object.freeze({ kind: 'reject', reason: 'malformed' });
const NOT_CONNECT: ScanResult = Object.freeze({ kind: 'reject', reason: 'not_connect' });
const TOO_LARGE: ScanResult = Object.freeze({ kind: 'reject', reason: 'too_large' });
const REFUSE_LEVEL_4: ScanResult = Object.freeze({ kind: 'refuse', reason: 'bad_protocol_level', replyLevel: 4 });

const CONNECT_TYPE = 1;
const NAME_MQTT = [0x4d, 0x51, 0x54, 0x54]; // "MQTT"
const NAME_MQISDP = [0x4d, 0x51, 0x49, 0x73, 0x64, 0x70]; // "MQIsdp"

// Connect Flags bits (§3.1.2.3).
const FLAG_RESERVED = 0x01;
const FLAG_CLEAN = 0x02;
const FLAG_WILL = 0x04;
const FLAG_WILL_QOS = 0x18;
const FLAG_WILL_RETAIN = 0x20;
const FLAG_PASSWORD = 0x40;
const FLAG_USERNAME = 0x80;

export function scanConnect(buf: Buffer, maxConnectBytes: number): ScanResult {
  const available = buf.length;
  if (available === 0) return MORE;

  const first = buf[0]!;
  if (first >> 4 !== CONNECT_TYPE) return NOT_CONNECT; // [MQTT-3.1.0-1] first packet must be CONNECT
  // Its reserved flag bits are checked with the version (validateConnect): 3.1 has no such rule.

  // Remaining Length: Variable Byte Integer, at most 4 bytes [MQTT-1.5.5], minimal encoding [MQTT-1.5.5-1].
  const remaining = readVbi(buf, 1, available, true);
  if (remaining === VBI_INCOMPLETE) return MORE;
  if (remaining === VBI_MALFORMED) return MALFORMED;
  const headerLength = 1 + vbiBytes;
  const packetLength = headerLength + remaining;
  if (packetLength > maxConnectBytes) return TOO_LARGE; // decided on the header, nothing buffered

  if (available < packetLength) {
    // Constant-time early check of what has arrived of the protocol name, so garbage is dropped at once.
    return protocolNamePrefixPlausible(buf, headerLength, available) ? MORE : MALFORMED;
  }
  return validateConnect(buf, headerLength, packetLength);
}

/**
 * True when the bytes present of the protocol name field could still become "MQTT" or "MQIsdp".
 * Only called while the packet is incomplete, so every byte looked at lies inside the packet.
 */
function protocolNamePrefixPlausible(buf: Buffer, bodyStart: number, available: number): boolean {
  const present = available - bodyStart;
  if (present >= 1 && buf[bodyStart] !== 0) return false; // name length high byte
  if (present < 2) return true;
  const nameLength = buf[bodyStart + 1]!;
  const name = nameLength === 4 ? NAME_MQTT : nameLength === 6 ? NAME_MQISDP : null;
  if (name === null) return false; // [MQTT-3.1.2-1]
  const check = Math.min(present - 2, nameLength);
  for (let i = 0; i < check; i++) {
    if (buf[bodyStart + 2 + i] !== name[i]) return false;
  }
  return true;
}

function nameEquals(buf: Buffer, at: number, name: readonly number[]): boolean {
  for (let i = 0; i < name.length; i++) {
    if (buf[at + i] !== name[i]) return false;
  }
  return true;
}

/** Full, single validation of a complete CONNECT occupying buf[bodyStart - headerLength, end). */
function validateConnect(buf: Buffer, bodyStart: number, end: number): ScanResult {
  let p = bodyStart;

  // Protocol Name [MQTT-3.1.2-1]: "MQTT" (3.1.1, 5.0) or "MQIsdp" (3.1).
  if (end - p < 2) return MALFORMED;
  const nameLength = (buf[p]! << 8) | buf[p + 1]!;
  p += 2;
  if (end - p < nameLength) return MALFORMED;
  const isMqtt = nameLength === 4 && nameEquals(buf, p, NAME_MQTT);
  const isMqisdp = nameLength === 6 && nameEquals(buf, p, NAME_MQISDP);
  if (!isMqtt && !isMqisdp) return MALFORMED;
  p += nameLength;

  // Protocol Level [MQTT-3.1.2-2]: a recognised name with an unsupported level (or a name/level
  // mismatch) is answered with CONNACK 1 / 0x84 rather than dropped. The rest of the packet of an
  // unknown version has an unknown layout, so it is not looked at.
  if (p >= end) return MALFORMED;
  const levelByte = buf[p]!;
  p += 1;
  const level = levelByte & 0x7f; // 0x80 = bridge bit (mosquitto), not part of the level
  if (!((isMqtt && (level === 4 || level === 5)) || (isMqisdp && level === 3))) {
    // The 3.1.1 layout (return code 1), as mosquitto answers: the client's version is the one thing unknown here, and
    // `MQIsdp` is 3.1's whatever level comes with it. A 5.0 client is never refused here (level 5 passes above), so
    // design.md's 0x84 reply, whose layout only a level-5 client reads, has no case.
    return REFUSE_LEVEL_4;
  }
  const v5 = level === 5;
  // MQTT 3.1 (IBM's specification, `MQIsdp`) has no numbered conformance rules, and brokers accept from its
  // clients what 3.1.1 made errors (mosquitto: "Username flag given, but no username. Ignore."). A balancer
  // stricter than the broker would lock out legacy clients that reach the broker directly (HAProxy had to
  // stop dropping 3.1 clients, its issue #1600), so for 3.1 the rules below that 3.1.1 introduced are not applied.
  const v31 = isMqisdp;
  // [MQTT-2.1.3-1] (3.1.1: [MQTT-2.2.2-2]) the reserved flag bits of CONNECT are 0. Not in 3.1: mosquitto accepts
  // a 3.1 CONNECT with them set (a differential fuzz: `12 17 00 06 MQIsdp 03 ...` got CONNACK 0 from it).
  if (!v31 && (buf[0]! & 0x0f) !== 0) return MALFORMED;

  // Connect Flags.
  if (p >= end) return MALFORMED;
  const flags = buf[p]!;
  const flagsOffset = p;
  p += 1;
  if (!v31 && (flags & FLAG_RESERVED) !== 0) return MALFORMED; // [MQTT-3.1.2-3]
  const hasWill = (flags & FLAG_WILL) !== 0;
  const willQos = (flags & FLAG_WILL_QOS) >> 3;
  if (!v31 && !hasWill && willQos !== 0) return MALFORMED; // [MQTT-3.1.2-11] (3.1.1: [MQTT-3.1.2-13])
  if (!v31 && !hasWill && (flags & FLAG_WILL_RETAIN) !== 0) return MALFORMED; // [MQTT-3.1.2-13] (3.1.1: -15)
  if (willQos === 3) return MALFORMED; // [MQTT-3.1.2-12] (3.1.1: [MQTT-3.1.2-14]); no version has a QoS 3
  const hasUsername = (flags & FLAG_USERNAME) !== 0;
  let hasPassword = (flags & FLAG_PASSWORD) !== 0;
  // 3.1 and 3.1.1 forbid a password without a username (3.1.1 [MQTT-3.1.2-22]); 5.0 allows it (§3.1.2.9).
  if (!v5 && hasPassword && !hasUsername) return MALFORMED;

  // Keep Alive: two bytes.
  if (end - p < 2) return MALFORMED;
  const keepalive = (buf[p]! << 8) | buf[p + 1]!;
  p += 2;

  // CONNECT Properties (5.0 only) [§3.1.2.11].
  let sessionExpiry = 0;
  if (v5) {
    p = scanProperties(buf, p, end, CONNECT_PROPERTIES);
    if (p < 0) return MALFORMED;
    sessionExpiry = scratchSessionExpiry;
  }

  // Payload, in this order [MQTT-3.1.3-1]: Client Identifier, Will Properties, Will Topic, Will Payload,
  // User Name, Password. Each field's presence is fixed by its flag [MQTT-3.1.2-9/-16/-17/-18/-19].
  const clientIdStart = p + 2;
  p = skipUtf8String(buf, p, end); // [MQTT-3.1.3-3] present; [MQTT-3.1.3-4] UTF-8. Zero length is allowed.
  if (p < 0) return MALFORMED;
  const clientIdEnd = p;

  if (hasWill) {
    if (v5) {
      p = scanProperties(buf, p, end, WILL_PROPERTIES); // [§3.1.3.2]
      if (p < 0) return MALFORMED;
    }
    p = skipUtf8String(buf, p, end); // Will Topic [MQTT-3.1.3-11]
    if (p < 0) return MALFORMED;
    p = skipBinary(buf, p, end); // Will Payload: binary data (Payload Format Indicator is the broker's concern)
    if (p < 0) return MALFORMED;
  }

  const usernameOffset = p;
  let username: Buffer | null = null;
  if (hasUsername) {
    // 3.1: a username that is missing or cut short is no username (nor is a password after it), and its bytes
    // are not checked as UTF-8 (the broker's to judge); 3.1.1 and 5.0: [MQTT-3.1.3-12], [MQTT-1.5.4-1].
    const next = v31 ? skipBinary(buf, p, end) : skipUtf8String(buf, p, end);
    if (next >= 0) {
      username = buf.subarray(usernameOffset + 2, next);
      p = next;
    } else if (v31) {
      hasPassword = false;
      p = end;
    } else {
      return MALFORMED;
    }
  }
  const usernameEnd = p;

  if (hasPassword) {
    const next = skipBinary(buf, p, end);
    if (next >= 0) {
      p = next;
    } else if (v31) {
      hasPassword = false; // 3.1: a password missing or cut short is ignored (mosquitto)
      p = end;
    } else {
      return MALFORMED;
    }
  }

  // The fields must consume exactly the Remaining Length: extra bytes mean a flag/field mismatch.
  if (p !== end) return MALFORMED;

  return {
    kind: 'connect',
    info: {
      packetLength: end,
      headerLength: bodyStart,
      protocolLevel: level as 3 | 4 | 5,
      bridge: (levelByte & 0x80) !== 0,
      cleanStart: (flags & FLAG_CLEAN) !== 0,
      keepalive,
      clientId: buf.subarray(clientIdStart, clientIdEnd),
      username,
      hasPassword,
      hasWill,
      sessionExpiry,
      flagsOffset,
      usernameOffset,
      usernameEnd,
    },
  };
}

/** Skips a UTF-8 Encoded String (u16 length + bytes) after validating it; returns the next offset or -1. */
function skipUtf8String(buf: Buffer, p: number, end: number): number {
  if (end - p < 2) return -1;
  const length = (buf[p]! << 8) | buf[p + 1]!;
  const start = p + 2;
  const stop = start + length;
  if (stop > end) return -1; // string would run past the packet (or property section) end
  return isValidMqttUtf8(buf, start, stop) ? stop : -1; // [MQTT-1.5.4-1/-2]
}

/** Skips Binary Data (u16 length + bytes); returns the next offset or -1. */
function skipBinary(buf: Buffer, p: number, end: number): number {
  if (end - p < 2) return -1;
  const stop = p + 2 + ((buf[p]! << 8) | buf[p + 1]!);
  return stop > end ? -1 : stop;
}

// ---- MQTT 5 properties ------------------------------------------------------------------------------

/** How a property's value is encoded and constrained (values stored in the lookup tables below). */
const PropertyKind = {
  NotAllowed: 0,
  Byte01: 1, // Byte whose only legal values are 0 and 1
  U16: 2,
  U16NonZero: 3,
  U32: 4,
  U32NonZero: 5,
  Utf8: 6,
  Binary: 7,
  Utf8Pair: 8, // User Property: repeatable
  Byte: 9, // Byte of any value
} as const;
type PropertyKind = (typeof PropertyKind)[keyof typeof PropertyKind];

// Identifier → kind, for the two places properties occur before routing. Every identifier not listed is
// a Malformed Packet / Protocol Error here [§2.2.2.2]: never "need more data".
const CONNECT_PROPERTIES = propertyTable([
  [0x11, PropertyKind.U32], // Session Expiry Interval
  [0x21, PropertyKind.U16NonZero], // Receive Maximum: 0 is a Protocol Error [§3.1.2.11.3]
  [0x27, PropertyKind.U32NonZero], // Maximum Packet Size: 0 is a Protocol Error [§3.1.2.11.4]
  [0x22, PropertyKind.U16], // Topic Alias Maximum
  [0x19, PropertyKind.Byte01], // Request Response Information: 0/1 [§3.1.2.11.6]
  [0x17, PropertyKind.Byte01], // Request Problem Information: 0/1 [§3.1.2.11.7]
  [0x26, PropertyKind.Utf8Pair], // User Property (may repeat)
  [0x15, PropertyKind.Utf8], // Authentication Method
  [0x16, PropertyKind.Binary], // Authentication Data (needs Authentication Method [§3.1.2.11.10])
]);
const WILL_PROPERTIES = propertyTable([
  [0x18, PropertyKind.U32], // Will Delay Interval
  // Payload Format Indicator: 0 and 1 are defined [§3.1.3.2.3], but unlike 0x17/0x19 no other value is named a
  // Protocol Error: the broker's to judge (mosquitto accepts 2).
  [0x01, PropertyKind.Byte],
  [0x02, PropertyKind.U32], // Message Expiry Interval
  [0x03, PropertyKind.Utf8], // Content Type
  [0x08, PropertyKind.Utf8], // Response Topic
  [0x09, PropertyKind.Binary], // Correlation Data
  [0x26, PropertyKind.Utf8Pair], // User Property (may repeat)
]);

const AUTHENTICATION_METHOD = 0x15;
const AUTHENTICATION_DATA = 0x16;
const SESSION_EXPIRY = 0x11;
const USER_PROPERTY = 0x26;

function propertyTable(entries: ReadonlyArray<readonly [number, PropertyKind]>): Uint8Array {
  const table = new Uint8Array(128); // identifiers are single-byte VBIs below 0x80
  for (const [id, kind] of entries) table[id] = kind;
  return table;
}

// Second result of scanProperties (a module-level scratch slot: the scan is synchronous, and this avoids
// allocating a result object per call).
let scratchSessionExpiry = 0;

/**
 * Validates a property section (VBI length + properties) starting at `p`, all reads bounded by the
 * section's own end (never the client-ID bytes after it). Returns the offset after the section or -1.
 * Sets `scratchSessionExpiry` (0 when absent).
 */
function scanProperties(buf: Buffer, p: number, end: number, table: Uint8Array): number {
  scratchSessionExpiry = 0;

  // Property Length: VBI, max 4 bytes, minimal [MQTT-1.5.5-1].
  const length = readVbi(buf, p, end, true);
  if (length < 0) return -1;
  p += vbiBytes;
  const sectionEnd = p + length;
  if (sectionEnd > end) return -1; // property length larger than the rest of the packet

  // Seen identifiers (all below 0x40): two 32-bit masks, to refuse duplicates of non-repeatable ones.
  let seenLow = 0;
  let seenHigh = 0;
  while (p < sectionEnd) {
    const id = buf[p]!;
    p += 1;
    // An identifier byte >= 0x80 would be a multi-byte VBI: no such identifier exists.
    const kind = id < 0x80 ? table[id]! : PropertyKind.NotAllowed;
    if (kind === PropertyKind.NotAllowed) return -1;
    if (id !== USER_PROPERTY) {
      // "It is a Protocol Error to include <property> more than once" (§3.1.2.11.x, §3.1.3.2.x).
      const bit = 1 << (id & 31);
      if (id < 32) {
        if ((seenLow & bit) !== 0) return -1;
        seenLow |= bit;
      } else {
        if ((seenHigh & bit) !== 0) return -1;
        seenHigh |= bit;
      }
    }
    switch (kind) {
      case PropertyKind.Byte01: {
        if (p >= sectionEnd) return -1;
        if (buf[p]! > 1) return -1;
        p += 1;
        break;
      }
      case PropertyKind.Byte: {
        if (p >= sectionEnd) return -1;
        p += 1;
        break;
      }
      case PropertyKind.U16:
      case PropertyKind.U16NonZero: {
        if (sectionEnd - p < 2) return -1;
        if (kind === PropertyKind.U16NonZero && buf[p] === 0 && buf[p + 1] === 0) return -1;
        p += 2;
        break;
      }
      case PropertyKind.U32:
      case PropertyKind.U32NonZero: {
        if (sectionEnd - p < 4) return -1;
        const value = buf[p]! * 0x1000000 + ((buf[p + 1]! << 16) | (buf[p + 2]! << 8) | buf[p + 3]!);
        if (kind === PropertyKind.U32NonZero && value === 0) return -1;
        if (id === SESSION_EXPIRY) scratchSessionExpiry = value;
        p += 4;
        break;
      }
      case PropertyKind.Utf8: {
        p = skipUtf8String(buf, p, sectionEnd);
        if (p < 0) return -1;
        break;
      }
      case PropertyKind.Binary: {
        p = skipBinary(buf, p, sectionEnd);
        if (p < 0) return -1;
        break;
      }
      case PropertyKind.Utf8Pair: {
        p = skipUtf8String(buf, p, sectionEnd); // name
        if (p < 0) return -1;
        p = skipUtf8String(buf, p, sectionEnd); // value
        if (p < 0) return -1;
        break;
      }
    }
  }
  // Authentication Data without Authentication Method is a Protocol Error [§3.1.2.11.10].
  if ((seenLow & (1 << AUTHENTICATION_DATA)) !== 0 && (seenLow & (1 << AUTHENTICATION_METHOD)) === 0) {
    scratchSessionExpiry = 0;
    return -1;
  }
  return p;
}
