/**
 * CONNACK replies for refused clients (design.md §5 "Refusals speak MQTT").
 *
 * Every reply is built once at module load with mqtt-packet's `generate` and then shared: a refusal on
 * the hot path (a flood of clients while every server is down) allocates nothing. Callers must treat
 * the returned buffers as read-only (Node cannot freeze a Buffer); `socket.write` never modifies them.
 */
import { generate } from './mqtt-generate.js';
import { VBI_INCOMPLETE, readVbi, vbiBytes } from './variable-byte-integer.js';

export type RefusalReason =
  | 'no_server'
  | 'server_full'
  | 'listener_full'
  | 'global_full'
  | 'source_full'
  | 'rate_limited'
  | 'accept_queue_full'
  | 'shutting_down'
  | 'overloaded'
  | 'bad_protocol_level';

// MQTT 3.1 / 3.1.1 CONNACK return codes (3.1.1 §3.2.2.3; 3.1 uses the same values).
const RC_UNACCEPTABLE_PROTOCOL_VERSION = 1;
const RC_SERVER_UNAVAILABLE = 3;

// MQTT 5.0 CONNACK reason codes (§3.2.2.2).
const RC5_UNSUPPORTED_PROTOCOL_VERSION = 0x84;
const RC5_SERVER_UNAVAILABLE = 0x88;
const RC5_SERVER_BUSY = 0x89;
const RC5_QUOTA_EXCEEDED = 0x97;
const RC5_CONNECTION_RATE_EXCEEDED = 0x9f;

/** The design.md §5 table: reason → [3.1/3.1.1 return code, 5.0 reason code]. */
const CODES: Readonly<Record<RefusalReason, readonly [number, number]>> = {
  no_server: [RC_SERVER_UNAVAILABLE, RC5_SERVER_UNAVAILABLE],
  // The client's server (or, placed by load, every server) is at its maxConnections: busy, as a full listener.
  server_full: [RC_SERVER_UNAVAILABLE, RC5_SERVER_BUSY],
  listener_full: [RC_SERVER_UNAVAILABLE, RC5_SERVER_BUSY],
  global_full: [RC_SERVER_UNAVAILABLE, RC5_SERVER_BUSY],
  source_full: [RC_SERVER_UNAVAILABLE, RC5_QUOTA_EXCEEDED],
  rate_limited: [RC_SERVER_UNAVAILABLE, RC5_CONNECTION_RATE_EXCEEDED],
  accept_queue_full: [RC_SERVER_UNAVAILABLE, RC5_CONNECTION_RATE_EXCEEDED],
  // 0x8B "Server shutting down" is a DISCONNECT reason only [MQTT-3.2.2.2]: a CONNACK says unavailable.
  shutting_down: [RC_SERVER_UNAVAILABLE, RC5_SERVER_UNAVAILABLE],
  overloaded: [RC_SERVER_UNAVAILABLE, RC5_SERVER_BUSY],
  bad_protocol_level: [RC_UNACCEPTABLE_PROTOCOL_VERSION, RC5_UNSUPPORTED_PROTOCOL_VERSION],
};

/** Session Present must be 0 when the return code is non-zero ([MQTT-3.2.2-4] 3.1.1, [MQTT-3.2.2-6] 5.0). */
function buildV4(returnCode: number): Buffer {
  return generate({ cmd: 'connack', returnCode, sessionPresent: false }, { protocolVersion: 4 });
}

/** 5.0 CONNACK with an empty property section (`20 03 00 rc 00`). */
function buildV5(reasonCode: number): Buffer {
  return generate({ cmd: 'connack', reasonCode, sessionPresent: false, properties: {} }, { protocolVersion: 5 });
}

const V4_REPLIES = new Map<RefusalReason, Buffer>();
const V5_REPLIES = new Map<RefusalReason, Buffer>();
for (const reason of Object.keys(CODES) as RefusalReason[]) {
  const [v4Code, v5Code] = CODES[reason];
  V4_REPLIES.set(reason, buildV4(v4Code));
  V5_REPLIES.set(reason, buildV5(v5Code));
}

/**
 * The CONNACK to write before closing a refused client. Levels 3 and 4 share the 3.1.1 encoding
 * (`20 02 00 rc`), which 3.1 clients understand too.
 */
export function connackFor(reason: RefusalReason, level: 3 | 4 | 5): Buffer {
  return (level === 5 ? V5_REPLIES : V4_REPLIES).get(reason)!;
}

/** What the first bytes from a server say of the connection: accepted, refused (or not a CONNACK), or not yet known. */
export type ConnackVerdict = 'accepts' | 'refuses' | 'partial';

/**
 * How many bytes at the start of a 5.0 server's reply are whole AUTH packets (0xF0): enhanced authentication
 * [MQTT-4.12] has the server send AUTH before its CONNACK, as many times as the method needs. 0 before 5.0 (no AUTH
 * packet exists) and when the reply does not start with a whole one.
 */
export function leadingAuthBytes(bytes: Buffer, protocolLevel: number): number {
  if ((protocolLevel & 0x7f) !== 5) return 0;
  let at = 0;
  while (at < bytes.length && bytes[at] === 0xf0) {
    const end = packetEnd(bytes, at);
    if (end < 0) break;
    at = end;
  }
  return at;
}

/** Where the packet at `at` ends, or -1 when its fixed header or body is not all there (or is malformed). */
function packetEnd(bytes: Buffer, at: number): number {
  const length = readVbi(bytes, at + 1, bytes.length, false);
  if (length < 0) return -1;
  const end = at + 1 + vbiBytes + length;
  return end <= bytes.length ? end : -1;
}

/**
 * Reads the start of a server's reply as far as the CONNACK's return code: 0 accepts (3.1 / 3.1.1: `20 02 xx 00`;
 * 5.0: `20`, the remaining length as a variable byte integer, the acknowledge flags, then reason code `00`). Fewer
 * bytes than that (the network may split even a 4-byte CONNACK) are 'partial': the caller waits for more.
 */
export function connackVerdict(bytes: Buffer, protocolLevel: number): ConnackVerdict {
  if (bytes.length === 0) return 'partial';
  // An AUTH packet not all there yet (the caller skips whole ones: leadingAuthBytes): the CONNACK comes after it.
  if (bytes[0] === 0xf0 && (protocolLevel & 0x7f) === 5) return 'partial';
  if (bytes[0] !== 0x20) return 'refuses';
  // The remaining length: all there, and at most 4 bytes (a fifth: malformed).
  const length = readVbi(bytes, 1, bytes.length, false);
  if (length === VBI_INCOMPLETE) return 'partial';
  if (length < 0) return 'refuses';
  // The acknowledge flags, then the code, right after the remaining length: one byte of it as a rule (2, or 5.0's
  // properties up to 127 bytes), more when the broker wrote it longer than needed (a re-audit: the flags were read
  // as the code at a fixed offset).
  const codeAt = 1 + vbiBytes + 1;
  if (codeAt >= bytes.length) return 'partial';
  return bytes[codeAt] === 0 ? 'accepts' : 'refuses';
}

/** A CONNACK longer than this is not read for its Assigned Client Identifier (assignedClientId): it is held whole. */
const MAX_READ_CONNACK_BYTES = 65_536;

/** CONNACK properties by how their value is written [MQTT-3.2.2.3]: bytes of a fixed size, or 'string' (2-byte length). */
const CONNACK_PROPERTY_SIZES: ReadonlyMap<number, number | 'string' | 'pair'> = new Map<number, number | 'string' | 'pair'>([
  [0x11, 4], // Session Expiry Interval
  [0x12, 'string'], // Assigned Client Identifier
  [0x13, 2], // Server Keep Alive
  [0x15, 'string'], // Authentication Method
  [0x16, 'string'], // Authentication Data (binary data: the same 2-byte length)
  [0x1a, 'string'], // Response Information
  [0x1c, 'string'], // Server Reference
  [0x1f, 'string'], // Reason String
  [0x21, 2], // Receive Maximum
  [0x22, 2], // Topic Alias Maximum
  [0x24, 1], // Maximum QoS
  [0x25, 1], // Retain Available
  [0x26, 'pair'], // User Property
  [0x27, 4], // Maximum Packet Size
  [0x28, 1], // Wildcard Subscription Available
  [0x29, 1], // Subscription Identifier Available
  [0x2a, 1], // Shared Subscription Available
]);

/**
 * The Assigned Client Identifier of the 5.0 CONNACK at the start of `bytes` (whole AUTH packets skipped already): the
 * ID a broker gave a client that sent an empty one [MQTT-3.2.2-16]. 'partial' while the CONNACK is not all there; null
 * when it has none, is malformed, or is longer than MAX_READ_CONNACK_BYTES.
 */
export function assignedClientId(bytes: Buffer): Buffer | null | 'partial' {
  if (bytes.length === 0) return 'partial';
  if (bytes[0] !== 0x20) return null;
  const length = readVbi(bytes, 1, bytes.length, false);
  if (length === VBI_INCOMPLETE) return 'partial';
  if (length < 0 || length > MAX_READ_CONNACK_BYTES) return null;
  const bodyAt = 1 + vbiBytes;
  const end = bodyAt + length;
  if (end > bytes.length) return 'partial';
  // Acknowledge flags and reason code, then the property length (within the CONNACK: a cut one is malformed).
  const properties = readVbi(bytes, bodyAt + 2, end, false);
  if (properties < 0) return null;
  const propertiesEnd = bodyAt + 2 + vbiBytes + properties;
  if (propertiesEnd > end) return null;
  let at = bodyAt + 2 + vbiBytes;
  while (at < propertiesEnd) {
    const id = bytes[at++]!;
    const size = CONNACK_PROPERTY_SIZES.get(id);
    if (size === undefined) return null; // not a CONNACK property (identifiers above 0x7F included): malformed
    if (typeof size === 'number') {
      at += size;
      continue;
    }
    if (at + 2 > propertiesEnd) return null;
    const valueLength = bytes.readUInt16BE(at);
    if (id === 0x12) return at + 2 + valueLength <= propertiesEnd ? bytes.subarray(at + 2, at + 2 + valueLength) : null;
    at += 2 + valueLength;
    if (size === 'pair') {
      if (at + 2 > propertiesEnd) return null;
      at += 2 + bytes.readUInt16BE(at);
    }
  }
  return null;
}

