/** The pure parts of the JIT warm-up (src/warm-up.ts): its CONNECT packets and how many sessions a wave holds. */
import { describe, expect, it } from 'vitest';
import mqttPacket from 'mqtt-packet';
import { waveSize, warmUpConnect } from '../../src/warm-up.js';

function parse(buf: Buffer, protocolVersion: 4 | 5): mqttPacket.Packet[] {
  const parser = mqttPacket.parser({ protocolVersion });
  const out: mqttPacket.Packet[] = [];
  parser.on('packet', (p) => out.push(p));
  parser.on('error', (err) => {
    throw err;
  });
  parser.parse(buf);
  return out;
}

describe('warm-up', () => {
  it('sends well-formed CONNECTs at MQTT 3.1.1 and 5.0 (clean session, keep-alive 60 s)', () => {
    for (const version of [4, 5] as const) {
      const packets = parse(warmUpConnect('mqtt-lb-warm-up-99999', version), version);
      expect(packets).toHaveLength(1);
      expect(packets[0]).toMatchObject({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clean: true, keepalive: 60, clientId: 'mqtt-lb-warm-up-99999' });
    }
    // The stand-in broker reads the protocol level at byte 8 (one-byte Remaining Length).
    expect(warmUpConnect('x', 5)[8]).toBe(5);
    expect(warmUpConnect('x', 4)[8]).toBe(4);
  });

  it('holds at most 500 sessions at once, fewer when the open-file limit is low (4 descriptors each), none without room', () => {
    expect(waveSize(20_000, 256)).toBe(500);
    expect(waveSize(1024, 256)).toBe(192);
    expect(waveSize(384, 256)).toBe(32);
    expect(waveSize(1024, 1000)).toBe(6);
    expect(waveSize(256, 256)).toBe(0);
    expect(waveSize(100, 256)).toBe(0);
    expect(waveSize(null, 256)).toBe(32);
  });
});
