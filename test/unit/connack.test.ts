import { describe, expect, it } from 'vitest';
import { parser, type IConnackPacket, type Packet } from 'mqtt-packet';
import { connackFor, type RefusalReason } from '../../src/proxy/connack.js';

function decode(bytes: Buffer, protocolVersion: 4 | 5): { packet: IConnackPacket; consumed: boolean } {
  const p = parser({ protocolVersion });
  const packets: Packet[] = [];
  const errors: Error[] = [];
  p.on('packet', (pk: Packet) => packets.push(pk));
  p.on('error', (e: Error) => errors.push(e));
  const left = p.parse(bytes);
  expect(errors).toEqual([]);
  expect(packets).toHaveLength(1);
  expect(packets[0]!.cmd).toBe('connack');
  return { packet: packets[0] as IConnackPacket, consumed: left === 0 };
}

// design.md §5: reason → [3.1/3.1.1 return code, 5.0 reason code].
const TABLE: Array<[RefusalReason, number, number]> = [
  ['no_server', 3, 0x88],
  ['listener_full', 3, 0x89],
  ['global_full', 3, 0x89],
  ['source_full', 3, 0x97],
  ['rate_limited', 3, 0x9f],
  ['accept_queue_full', 3, 0x9f],
  ['bad_protocol_level', 1, 0x84],
];

describe('connackFor', () => {
  it.each(TABLE)('%s: return code %i at 3.1/3.1.1, reason code %i at 5.0', (reason, v4Code, v5Code) => {
    for (const level of [3, 4] as const) {
      const bytes = connackFor(reason, level);
      expect(bytes.equals(Buffer.from([0x20, 0x02, 0x00, v4Code]))).toBe(true);
      const { packet, consumed } = decode(bytes, 4);
      expect(consumed).toBe(true);
      expect(packet.returnCode).toBe(v4Code);
      expect(packet.sessionPresent).toBe(false); // [MQTT-3.2.2-4]
    }
    const bytes = connackFor(reason, 5);
    // Empty property section: 20 03 00 rc 00.
    expect(bytes.equals(Buffer.from([0x20, 0x03, 0x00, v5Code, 0x00]))).toBe(true);
    const { packet, consumed } = decode(bytes, 5);
    expect(consumed).toBe(true);
    expect(packet.reasonCode).toBe(v5Code);
    expect(packet.sessionPresent).toBe(false); // [MQTT-3.2.2-6]
    expect(packet.properties).toBeUndefined();
  });

  it('returns the precomputed buffer (no allocation per refusal)', () => {
    expect(connackFor('no_server', 4)).toBe(connackFor('no_server', 4));
    expect(connackFor('no_server', 3)).toBe(connackFor('no_server', 4));
    expect(connackFor('no_server', 5)).toBe(connackFor('no_server', 5));
    expect(connackFor('listener_full', 5)).not.toBe(connackFor('global_full', 4));
  });
});
