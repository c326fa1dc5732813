/**
 * Rewrites the username of a validated CONNECT (TLS `certAsUsername`: the verified certificate's
 * subject CN becomes the username). Everything else is copied byte for byte; only the Remaining Length
 * is re-encoded (its size may change) and the User Name flag is set.
 */
import type { ConnectInfo } from './connect-scanner.js';
import { isValidMqttUtf8 } from './connect-utf8.js';

const MAX_REMAINING_LENGTH = 268_435_455; // largest 4-byte Variable Byte Integer [§1.5.5]
const MAX_STRING_BYTES = 0xffff; // u16 length prefix [§1.5.4]
const FLAG_USERNAME = 0x80;
const FLAG_PASSWORD = 0x40;

function varintSize(value: number): number {
  return value < 0x80 ? 1 : value < 0x4000 ? 2 : value < 0x200000 ? 3 : 4;
}

/**
 * Why a verified certificate's subject CN (UTF-8) cannot be the username, or null if it can. Checked at the
 * handshake, so that such a client is refused as a certificate problem, not as a malformed CONNECT: an MQTT string
 * holds at most 65,535 bytes of valid UTF-8 without U+0000 [MQTT-1.5.4-1/-2], and an empty CN names nobody (it
 * would replace the client's username with an empty one).
 */
export function cnUsernameProblem(cn: Buffer): string | null {
  if (cn.length === 0) return 'the CN is empty';
  if (cn.length > MAX_STRING_BYTES) return 'the CN is longer than 65,535 bytes';
  if (!isValidMqttUtf8(cn, 0, cn.length)) return 'the CN is not a valid MQTT string (it holds U+0000)';
  return null;
}

/**
 * Returns a new buffer holding only the rewritten CONNECT (bytes pipelined after it in `packet` are
 * not included: forward `packet.subarray(info.packetLength)` after it). `info` must come from
 * `scanConnect` on this same `packet`.
 *
 * Returns null, without throwing, when the username is longer than 65,535 bytes or is not a valid MQTT
 * UTF-8 string (the result must stay a valid CONNECT [MQTT-1.5.4-1/-2]), when the result would exceed
 * the 268,435,455-byte Remaining Length limit, or when `packet` is shorter than `info` says.
 */
export function rewriteUsername(packet: Buffer, info: ConnectInfo, username: Buffer): Buffer | null {
  if (username.length > MAX_STRING_BYTES) return null;
  if (!isValidMqttUtf8(username, 0, username.length)) return null;
  if (packet.length < info.packetLength) return null;

  const oldBody = info.packetLength - info.headerLength;
  const oldField = info.usernameEnd - info.usernameOffset;
  const newRemaining = oldBody - oldField + 2 + username.length;
  if (newRemaining > MAX_REMAINING_LENGTH) return null;

  const headerLength = 1 + varintSize(newRemaining);
  const out = Buffer.allocUnsafe(headerLength + newRemaining);

  // Fixed header: CONNECT type, flags 0 [MQTT-2.1.3-1], minimal Remaining Length [MQTT-1.5.5-1].
  out[0] = 0x10;
  let w = 1;
  let value = newRemaining;
  do {
    let byte = value % 128;
    value = Math.floor(value / 128);
    if (value > 0) byte |= 0x80;
    out[w++] = byte;
  } while (value > 0);

  // Variable header up to the flags, flags with the User Name flag set, then up to the username field.
  w += packet.copy(out, w, info.headerLength, info.flagsOffset);
  // A 3.1 password flag whose password was missing (ignored by the scanner, as by brokers) is cleared: the result
  // has no password, and says so.
  out[w++] = (packet[info.flagsOffset]! | FLAG_USERNAME) & (info.hasPassword ? 0xff : ~FLAG_PASSWORD & 0xff);
  w += packet.copy(out, w, info.flagsOffset + 1, info.usernameOffset);

  // The new username field; a password (if any) follows it, as the spec orders them [MQTT-3.1.3-1].
  out[w++] = username.length >> 8;
  out[w++] = username.length & 0xff;
  w += username.copy(out, w);

  packet.copy(out, w, info.usernameEnd, info.packetLength);
  return out;
}
