/** MQTT's Variable Byte Integer (src/proxy/variable-byte-integer.ts): the one decoder of the proxy and the probes. */
import { describe, expect, it } from 'vitest';
import { VBI_INCOMPLETE, VBI_MALFORMED, readVbi, vbiBytes } from '../../src/proxy/variable-byte-integer.js';

const bytes = (hex: string): Buffer => Buffer.from(hex.replace(/ /g, ''), 'hex');

function read(hex: string, at = 0, minimal = true, end?: number): [number, number] {
  const b = bytes(hex);
  const value = readVbi(b, at, end ?? b.length, minimal);
  return [value, value >= 0 ? vbiBytes : 0];
}

describe('readVbi', () => {
  // MQTT 5.0 §1.5.5 table 1-1 (3.1.1 §2.2.3 table 2.4): the bounds of each length.
  it.each([
    ['00', 0, 1],
    ['7f', 127, 1],
    ['80 01', 128, 2],
    ['ff 7f', 16_383, 2],
    ['80 80 01', 16_384, 3],
    ['ff ff 7f', 2_097_151, 3],
    ['80 80 80 01', 2_097_152, 4],
    ['ff ff ff 7f', 268_435_455, 4],
  ])('%s is %d in %d byte(s)', (hex, value, length) => {
    expect(read(hex)).toEqual([value, length]);
  });

  it('reads from an offset, and stops at `end`, not at the buffer', () => {
    expect(read('10 c1 02 00', 1)).toEqual([321, 2]);
    expect(read('10 c1 02 00', 1, true, 2)).toEqual([VBI_INCOMPLETE, 0]);
  });

  it('is incomplete while every byte so far has bit 7 set, up to the fourth', () => {
    for (const hex of ['', '80', '80 80', 'ff ff ff']) expect(read(hex)[0]).toBe(VBI_INCOMPLETE);
  });

  it('is malformed when a fifth byte would follow, whether it has come or not [MQTT-1.5.5]', () => {
    expect(read('80 80 80 80')[0]).toBe(VBI_MALFORMED);
    expect(read('ff ff ff ff 01')[0]).toBe(VBI_MALFORMED);
  });

  it('refuses a longer encoding than needed only when asked to be minimal [MQTT-1.5.5-1]', () => {
    for (const hex of ['80 00', '80 80 00', 'ff 80 80 00']) {
      expect(read(hex, 0, true)[0]).toBe(VBI_MALFORMED);
      expect(read(hex, 0, false)[0]).toBeGreaterThanOrEqual(0);
    }
    expect(read('80 00', 0, false)).toEqual([0, 2]);
    expect(read('ff 80 00', 0, false)).toEqual([127, 3]);
  });
});
