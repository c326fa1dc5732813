/**
 * Strict UTF-8 validation of MQTT "UTF-8 Encoded String" bytes, in place (no decoding, no allocation).
 *
 * Rejected, because the spec makes them malformed:
 *  - ill-formed UTF-8: stray continuation bytes, overlong forms (C0/C1, E0 80..9F, F0 80..8F), truncated
 *    sequences, code points above U+10FFFF                                   [MQTT-1.5.4-1]
 *  - UTF-16 surrogates U+D800..U+DFFF (ED A0..BF)                             [MQTT-1.5.4-1]
 *  - U+0000                                                                  [MQTT-1.5.4-2]
 *
 * Accepted (policy): control characters U+0001..U+001F and U+007F..U+009F, and non-characters such as
 * U+FFFF. MQTT 5 §1.5.4 only says a receiver MAY treat them as malformed; we are a transparent proxy and
 * leave that decision to the broker. A leading U+FEFF (EF BB BF) is a valid code point: it is neither
 * rejected nor stripped [MQTT-1.5.4-3] (we never rewrite string bytes anyway).
 */
export function isValidMqttUtf8(buf: Uint8Array, start: number, end: number): boolean {
  let i = start;
  while (i < end) {
    const b0 = buf[i]!;
    if (b0 < 0x80) {
      if (b0 === 0) return false; // U+0000 [MQTT-1.5.4-2]
      i += 1;
      continue;
    }
    if (b0 < 0xc2) return false; // continuation byte as lead, or overlong 2-byte lead C0/C1
    if (b0 < 0xe0) {
      if (i + 1 >= end) return false; // truncated
      if ((buf[i + 1]! & 0xc0) !== 0x80) return false;
      i += 2;
      continue;
    }
    if (b0 < 0xf0) {
      if (i + 2 >= end) return false; // truncated
      const b1 = buf[i + 1]!;
      // E0 needs A0..BF (else overlong); ED needs 80..9F (else a surrogate U+D800..U+DFFF).
      const lo = b0 === 0xe0 ? 0xa0 : 0x80;
      const hi = b0 === 0xed ? 0x9f : 0xbf;
      if (b1 < lo || b1 > hi) return false;
      if ((buf[i + 2]! & 0xc0) !== 0x80) return false;
      i += 3;
      continue;
    }
    if (b0 < 0xf5) {
      if (i + 3 >= end) return false; // truncated
      const b1 = buf[i + 1]!;
      // F0 needs 90..BF (else overlong); F4 needs 80..8F (else above U+10FFFF).
      const lo = b0 === 0xf0 ? 0x90 : 0x80;
      const hi = b0 === 0xf4 ? 0x8f : 0xbf;
      if (b1 < lo || b1 > hi) return false;
      if ((buf[i + 2]! & 0xc0) !== 0x80) return false;
      if ((buf[i + 3]! & 0xc0) !== 0x80) return false;
      i += 4;
      continue;
    }
    return false; // F5..FF never appear in UTF-8
  }
  return true;
}
