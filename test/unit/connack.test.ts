import { describe, expect, it } from 'vitest';
import { generate, parser, type IConnackPacket, type Packet } from 'mqtt-packet';
import { assignedClientId, connackFor, connackVerdict, leadingAuthBytes, type RefusalReason } from '../../src/proxy/connack.js';

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

describe('connackVerdict (a takeover across brokers waits for it)', () => {
  const gen = (packet: object, protocolVersion: 4 | 5) => generate({ cmd: 'connack', ...packet } as IConnackPacket, { protocolVersion });
  it('3.1 / 3.1.1: return code 0 accepts, any other refuses', () => {
    expect(connackVerdict(gen({ returnCode: 0, sessionPresent: true }, 4), 4)).toBe('accepts');
    expect(connackVerdict(gen({ returnCode: 0, sessionPresent: false }, 4), 3)).toBe('accepts');
    for (const rc of [1, 2, 3, 4, 5]) expect(connackVerdict(gen({ returnCode: rc, sessionPresent: false }, 4), 4)).toBe('refuses');
    // The bridge bit in the level byte changes nothing.
    expect(connackVerdict(gen({ returnCode: 0, sessionPresent: false }, 4), 0x84)).toBe('accepts');
  });

  it('5.0: reason code 0 accepts, also behind properties whose length needs a 2-byte remaining length', () => {
    expect(connackVerdict(gen({ reasonCode: 0, sessionPresent: false, properties: {} }, 5), 5)).toBe('accepts');
    const big = gen({ reasonCode: 0, sessionPresent: true, properties: { assignedClientIdentifier: 'x'.repeat(300), userProperties: { a: 'b' } } }, 5);
    expect(big[1]! & 0x80).toBe(0x80);
    expect(connackVerdict(big, 5)).toBe('accepts');
    expect(connackVerdict(gen({ reasonCode: 0x8c, sessionPresent: false, properties: {} }, 5), 5)).toBe('refuses');
    expect(connackVerdict(gen({ reasonCode: 0x87, sessionPresent: false, properties: { reasonString: 'no'.repeat(100) } }, 5), 0x85)).toBe('refuses');
  });

  it('fewer bytes than the code: partial, at every cut; the whole decides', () => {
    const v4 = gen({ returnCode: 0, sessionPresent: false }, 4);
    const v5 = gen({ reasonCode: 0, sessionPresent: false, properties: { assignedClientIdentifier: 'x'.repeat(300) } }, 5);
    for (let cut = 0; cut < 4; cut++) expect(connackVerdict(v4.subarray(0, cut), 4), `v4 cut ${cut}`).toBe('partial');
    for (let cut = 0; cut < 5; cut++) expect(connackVerdict(v5.subarray(0, cut), 5), `v5 cut ${cut}`).toBe('partial');
    expect(connackVerdict(v5.subarray(0, 5), 5)).toBe('accepts');
  });

  // A re-audit: the 3.1.1 code was read at a fixed offset, so a remaining length written longer than needed (which a
  // reader takes: only the sender is held to [MQTT-1.5.5-1]) had its flags byte read as the code.
  it('3.1.1 with a remaining length written in two bytes: the code after the flags, not the flags', () => {
    expect(connackVerdict(Buffer.from([0x20, 0x82, 0x00, 0x01, 0x00]), 4)).toBe('accepts');
    expect(connackVerdict(Buffer.from([0x20, 0x82, 0x00, 0x00, 0x05]), 4)).toBe('refuses');
    expect(connackVerdict(Buffer.from([0x20, 0x82, 0x00, 0x01]), 4)).toBe('partial');
  });

  it('not a CONNACK, or a remaining length of five bytes: refuses', () => {
    expect(connackVerdict(Buffer.from([0x30, 0x02, 0x00, 0x00]), 4)).toBe('refuses');
    expect(connackVerdict(Buffer.from([0xd0, 0x00]), 5)).toBe('refuses');
    expect(connackVerdict(Buffer.from([0x20, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00, 0x00]), 5)).toBe('refuses');
  });
});

describe('leadingAuthBytes (MQTT 5 enhanced authentication: AUTH packets before the CONNACK)', () => {
  const auth = generate({ cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: 'SCRAM-SHA-1', authenticationData: Buffer.alloc(200, 7) } } as Packet, { protocolVersion: 5 });
  const connack = generate({ cmd: 'connack', reasonCode: 0, sessionPresent: false, properties: {} } as IConnackPacket, { protocolVersion: 5 });

  it('counts whole AUTH packets at the start, however many; what follows is the CONNACK that decides', () => {
    const reply = Buffer.concat([auth, auth, connack]);
    expect(leadingAuthBytes(reply, 5)).toBe(2 * auth.length);
    expect(connackVerdict(reply.subarray(leadingAuthBytes(reply, 5)), 5)).toBe('accepts');
    expect(leadingAuthBytes(connack, 5)).toBe(0);
  });

  it('an AUTH packet not all there yet is not counted (the caller waits); none before 5.0', () => {
    for (let cut = 1; cut < auth.length; cut++) expect(leadingAuthBytes(auth.subarray(0, cut), 5), `cut ${cut}`).toBe(0);
    expect(leadingAuthBytes(Buffer.concat([auth, auth.subarray(0, 3)]), 5)).toBe(auth.length);
    expect(leadingAuthBytes(auth, 4)).toBe(0);
    expect(leadingAuthBytes(Buffer.alloc(0), 5)).toBe(0);
    // What is left after the whole ones: an AUTH packet still coming is no refusal (5.0), the CONNACK follows it.
    for (let cut = 1; cut < auth.length; cut++) expect(connackVerdict(auth.subarray(0, cut), 5), `cut ${cut}`).toBe('partial');
    expect(connackVerdict(auth.subarray(0, 2), 4)).toBe('refuses');
  });
});

describe('assignedClientId (a 5.0 client with an empty client ID claims the one its broker assigned)', () => {
  const gen = (properties: object) => generate({ cmd: 'connack', reasonCode: 0, sessionPresent: false, properties } as IConnackPacket, { protocolVersion: 5 });

  it('finds it among every other CONNACK property, before or after it', () => {
    const all = {
      sessionExpiryInterval: 60,
      receiveMaximum: 20,
      maximumQoS: 1,
      retainAvailable: true,
      maximumPacketSize: 1 << 20,
      topicAliasMaximum: 10,
      reasonString: 'welcome',
      userProperties: { a: 'b', 'ü': 'long value'.repeat(30) },
      wildcardSubscriptionAvailable: true,
      subscriptionIdentifiersAvailable: true,
      sharedSubscriptionAvailable: false,
      serverKeepAlive: 30,
      responseInformation: 'r/',
      serverReference: 'other:1883',
      authenticationMethod: 'SCRAM-SHA-1',
      authenticationData: Buffer.alloc(40, 1),
    };
    expect(assignedClientId(gen({ ...all, assignedClientIdentifier: 'auto-5A1F' }))?.toString()).toBe('auto-5A1F');
    expect(assignedClientId(gen({ assignedClientIdentifier: 'ünïcode-ID' }))?.toString()).toBe('ünïcode-ID');
    expect(assignedClientId(gen(all))).toBeNull();
    expect(assignedClientId(gen({}))).toBeNull();
  });

  it('partial at every cut before the CONNACK ends; the bytes after it are not its business', () => {
    const whole = gen({ reasonString: 'x'.repeat(200), assignedClientIdentifier: 'auto-1' });
    for (let cut = 0; cut < whole.length; cut++) expect(assignedClientId(whole.subarray(0, cut)), `cut ${cut}`).toBe('partial');
    expect(assignedClientId(Buffer.concat([whole, Buffer.from([0x30, 0x03, 0x00, 0x01, 0x61])]))?.toString()).toBe('auto-1');
  });

  it('malformed or unknown properties, or a CONNACK longer than it reads: none', () => {
    // Property 0x01 (Payload Format Indicator) belongs to PUBLISH, not CONNACK.
    expect(assignedClientId(Buffer.from([0x20, 0x05, 0x00, 0x00, 0x02, 0x01, 0x01]))).toBeNull();
    // A string property whose length runs past the properties.
    expect(assignedClientId(Buffer.from([0x20, 0x07, 0x00, 0x00, 0x04, 0x12, 0x00, 0x09, 0x61]))).toBeNull();
    expect(assignedClientId(Buffer.from([0x30, 0x02, 0x00, 0x00]))).toBeNull();
    expect(assignedClientId(gen({ reasonString: 'x'.repeat(65_535), userProperties: { a: 'y'.repeat(10_000) }, assignedClientIdentifier: 'late' }))).toBeNull();
  });
});
