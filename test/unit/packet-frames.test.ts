import { describe, expect, it } from 'vitest';
import { generate, type Packet } from 'mqtt-packet';
import { PacketFrames } from '../../src/proxy/packet-frames.js';
import { DisconnectCodes, disconnectCodeFor, disconnectPacket } from '../../src/proxy/disconnect.js';
import { parseWhole } from '../helpers/raw-client.js';

const v5 = { protocolVersion: 5 } as const;

function connack(reasonCode: number, properties: Record<string, unknown> = {}): Buffer {
  return generate({ cmd: 'connack', sessionPresent: false, reasonCode, properties } as Packet, v5);
}

function publish(bytes: number): Buffer {
  return generate({ cmd: 'publish', topic: 't/x', payload: Buffer.alloc(bytes, 7), qos: 0, dup: false, retain: false } as Packet, v5);
}

const auth = generate({ cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: 'SCRAM-SHA-1', authenticationData: Buffer.alloc(40, 1) } } as Packet, v5);
const pingresp = generate({ cmd: 'pingresp' } as Packet, v5);
const serverDisconnect = generate({ cmd: 'disconnect', reasonCode: 0x8e } as Packet, v5);

/** A stream of packets, with the offsets where each one ends. */
function stream(...packets: Buffer[]): { bytes: Buffer; ends: Set<number> } {
  const ends = new Set<number>();
  let at = 0;
  for (const p of packets) ends.add((at += p.length));
  return { bytes: Buffer.concat(packets), ends };
}

/** The stream fed in reads of `size` bytes: at each read's end, atBoundary must say whether a packet ended there. */
function feedInReads(frames: PacketFrames, bytes: Buffer, size: number, ends: Set<number>): void {
  for (let at = 0; at < bytes.length; at += size) {
    const to = Math.min(bytes.length, at + size);
    frames.advance(bytes, at, to);
    expect(frames.atBoundary, `after byte ${to} (reads of ${size})`).toBe(ends.has(to));
  }
}

describe('PacketFrames', () => {
  const { bytes, ends } = stream(auth, connack(0, { assignedClientIdentifier: 'a'.repeat(300) }), publish(20_000), pingresp, publish(100), publish(16_383), publish(0));

  it.each([1, 2, 3, 5, 7, 64, 1000, 65_536, bytes.length])('finds every packet end in reads of %i bytes (AUTH before the CONNACK, lengths of 1-3 bytes)', (size) => {
    const frames = new PacketFrames();
    expect(frames.atBoundary).toBe(true);
    expect(frames.mayTell).toBe(false); // no CONNACK yet [MQTT-3.14.0-1]
    feedInReads(frames, bytes, size, ends);
    expect(frames.connackCode).toBe(0);
    expect(frames.mayTell).toBe(true);
    expect(frames.lastType).toBe(3); // PUBLISH
  });

  it('reads the CONNACK Reason Code whatever read it comes in; a refusal or a short CONNACK never lets a DISCONNECT follow', () => {
    // Only 0x00 accepts (3.2.2.2); 0x01 is also what a 3.1.1 broker's refusal (unacceptable protocol version) reads as.
    for (const [code, may] of [[0x00, true], [0x01, false], [0x7f, false], [0x80, false], [0x87, false], [0x9c, false]] as const) {
      const bytes = connack(code, { reasonString: 'x'.repeat(150) });
      for (let cut = 0; cut <= bytes.length; cut++) {
        const frames = new PacketFrames();
        frames.advance(bytes, 0, cut);
        frames.advance(bytes, cut, bytes.length);
        expect(frames.connackCode, `code ${code}, cut at ${cut}`).toBe(code);
        expect(frames.mayTell).toBe(may);
      }
    }
    const older = new PacketFrames();
    older.advance(Buffer.from([0x20, 0x02, 0x00, 0x01]), 0, 4);
    expect(older.connackCode).toBe(1);
    expect(older.mayTell).toBe(false);
    const short = new PacketFrames();
    short.advance(Buffer.from([0x20, 0x01, 0x00]), 0, 3);
    expect(short.atBoundary).toBe(true);
    expect(short.mayTell).toBe(false);
  });

  it('only the first CONNACK counts', () => {
    const frames = new PacketFrames();
    const { bytes } = stream(connack(0), connack(0x87));
    frames.advance(bytes, 0, bytes.length);
    expect(frames.connackCode).toBe(0);
  });

  it('after the server\'s own DISCONNECT, nothing more is told [MQTT-3.14.4-1]', () => {
    const frames = new PacketFrames();
    const { bytes } = stream(connack(0), pingresp, serverDisconnect);
    frames.advance(bytes, 0, bytes.length);
    expect(frames.atBoundary).toBe(true);
    expect(frames.lastType).toBe(14);
    expect(frames.mayTell).toBe(false);
  });

  it('toEndOfPacket stops just past the packet in flight, wherever it began', () => {
    const big = publish(70_000);
    const { bytes } = stream(connack(0), big, pingresp, publish(10));
    const connackLength = connack(0).length;
    for (const start of [connackLength + 1, connackLength + 2, connackLength + 4, connackLength + 30_000, connackLength + big.length - 1]) {
      const frames = new PacketFrames();
      frames.advance(bytes, 0, start);
      expect(frames.atBoundary).toBe(false);
      // The rest of the big PUBLISH, then what follows it, in one read.
      const end = frames.toEndOfPacket(bytes, start, bytes.length);
      expect(end, `from ${start}`).toBe(connackLength + big.length);
      expect(frames.atBoundary).toBe(true);
    }
    // A read that ends inside the packet: all of it taken, still inside.
    const frames = new PacketFrames();
    frames.advance(bytes, 0, connackLength + 10);
    expect(frames.toEndOfPacket(bytes, connackLength + 10, connackLength + 500)).toBe(connackLength + 500);
    expect(frames.atBoundary).toBe(false);
  });

  it('a fifth Remaining Length byte breaks the stream for good: no boundary is trusted again [MQTT-1.5.5]', () => {
    const frames = new PacketFrames();
    const bad = Buffer.concat([connack(0), Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]), pingresp]);
    frames.advance(bad, 0, bad.length);
    expect(frames.broken).toBe(true);
    expect(frames.atBoundary).toBe(false);
    expect(frames.mayTell).toBe(false);
    expect(frames.toEndOfPacket(pingresp, 0, pingresp.length)).toBe(pingresp.length);
    expect(frames.atBoundary).toBe(false);
  });
});

describe('the DISCONNECT a 5.0 client is told', () => {
  it.each([
    ['server_down', DisconnectCodes.USE_ANOTHER_SERVER],
    ['rebalance', DisconnectCodes.USE_ANOTHER_SERVER],
    ['drain', DisconnectCodes.USE_ANOTHER_SERVER],
    ['failover', DisconnectCodes.USE_ANOTHER_SERVER],
    ['shutdown', DisconnectCodes.SERVER_SHUTTING_DOWN],
    ['idle', DisconnectCodes.KEEP_ALIVE_TIMEOUT],
    ['takeover', DisconnectCodes.SESSION_TAKEN_OVER],
  ] as const)('%s: Reason Code %i, a packet mqtt-packet parses whole', (reason, code) => {
    expect(disconnectCodeFor(reason)).toBe(code);
    expect(parseWhole(disconnectPacket(code), 5)).toEqual([expect.objectContaining({ cmd: 'disconnect', reasonCode: code })]);
  });
});
