/**
 * MQTT's Variable Byte Integer [MQTT-1.5.5] (3.1.1 §2.2.3, the Remaining Length): seven bits per byte, least
 * significant group first, bit 7 set on every byte but the last, at most four bytes. The one decoder behind the
 * CONNECT scanner (remaining and property lengths), the sessions' CONNACK readers and the health probe's.
 *
 * Allocation-free, for the scanner that runs on every read of a CONNECT: the value is returned, and how many
 * bytes it took is left in `vbiBytes`, to be read right after the call.
 */

/** The bytes end before the integer does: wait for more. */
export const VBI_INCOMPLETE = -1;
/** A fifth byte would follow, or (minimal) the value had a shorter encoding [MQTT-1.5.5-1]. */
export const VBI_MALFORMED = -2;

/** How many bytes the last readVbi() that returned a value (>= 0) took. */
export let vbiBytes = 0;

/**
 * The integer starting at `at`, read no further than `end`: its value, or VBI_INCOMPLETE / VBI_MALFORMED.
 * `minimal`: refuse an encoding longer than needed (a last byte of 0 after others), as [MQTT-1.5.5-1] requires of
 * a sender; the CONNECT scanner holds clients to it, the CONNACK readers take what the broker sent.
 */
export function readVbi(buf: Uint8Array, at: number, end: number, minimal: boolean): number {
  let value = 0;
  let multiplier = 1;
  for (let i = 0; i < 4; i++) {
    if (at + i >= end) return VBI_INCOMPLETE;
    const byte = buf[at + i]!;
    value += (byte & 0x7f) * multiplier;
    if ((byte & 0x80) === 0) {
      if (minimal && byte === 0 && i > 0) return VBI_MALFORMED;
      vbiBytes = i + 1;
      return value;
    }
    multiplier *= 128;
  }
  return VBI_MALFORMED;
}
