import { describe, expect, it } from 'vitest';
import { generate, type IConnectPacket } from 'mqtt-packet';
import { parseWhole } from '../helpers/raw-client.js';
import { scanConnect, type ConnectInfo } from '../../src/proxy/connect-scanner.js';
import { cnUsernameProblem, rewriteUsername } from '../../src/proxy/connect-rewrite.js';
import { buildConnect, hex } from '../fixtures/connect-vectors.js';

const CAP = 1_000_000;

function decode(bytes: Buffer): IConnectPacket {
  const packets = parseWhole(bytes);
  expect(packets).toHaveLength(1);
  return packets[0] as IConnectPacket;
}

function scan(bytes: Buffer): ConnectInfo {
  const r = scanConnect(bytes, CAP);
  if (r.kind !== 'connect') throw new Error(`not a valid CONNECT: ${JSON.stringify(r)}`);
  return r.info;
}

type Variant = { name: string; packet: IConnectPacket };

/** v3/4/5 × bridge × existing username (none, empty, set) × password × will × properties. */
function variants(): Variant[] {
  const out: Variant[] = [];
  for (const version of [3, 4, 5] as const) {
    for (const bridge of version === 5 ? [false] : [false, true]) {
      for (const username of [undefined, '', 'old-user', 'ü'.repeat(100)]) {
        for (const password of [undefined, Buffer.from([0, 1, 0xff])]) {
          if (password !== undefined && username === undefined) continue; // generated separately for v5
          for (const withWill of [false, true]) {
            const packet: IConnectPacket = {
              cmd: 'connect',
              protocolId: version === 3 ? 'MQIsdp' : 'MQTT',
              protocolVersion: version,
              clean: !withWill,
              keepalive: 1234,
              clientId: `client-${version}`,
            };
            if (bridge) (packet as IConnectPacket & { bridgeMode?: boolean }).bridgeMode = true;
            if (username !== undefined) packet.username = username;
            if (password !== undefined) packet.password = password;
            if (version === 5) {
              packet.properties = {
                sessionExpiryInterval: 600,
                receiveMaximum: 10,
                userProperties: { a: 'b', c: ['d', 'e'] },
                authenticationMethod: 'm',
                authenticationData: Buffer.from([9, 8]),
              };
            }
            if (withWill) {
              packet.will = { topic: 'will/topic', payload: Buffer.from('gone'), qos: 1, retain: true };
              if (version === 5) {
                packet.will.properties = { willDelayInterval: 5, contentType: 'text/plain', correlationData: Buffer.from([1]) };
              }
            }
            const name = `v${version}${bridge ? ' bridge' : ''} username=${JSON.stringify(username?.slice(0, 10))} password=${password !== undefined} will=${withWill}`;
            out.push({ name, packet });
          }
        }
      }
    }
  }
  return out;
}

const NEW_USERNAMES = ['CN=device-1', '', 'ü漢字😀', 'x'.repeat(200), 'y'.repeat(65_535)];

/** Everything mqtt-packet decodes, minus what a username rewrite changes. */
function comparable(p: IConnectPacket): Record<string, unknown> {
  const { username: _u, length: _l, ...rest } = p as IConnectPacket & { length?: number };
  return JSON.parse(JSON.stringify(rest, (_k, v: unknown) => (Buffer.isBuffer(v) ? v.toString('hex') : v))) as Record<string, unknown>;
}

describe('rewriteUsername', () => {
  it.each(variants().map((v) => [v.name, v] as const))('%s', (_name, v: Variant) => {
    const original = generate(v.packet);
    const info = scan(original);
    const before = decode(original);
    for (const newName of NEW_USERNAMES) {
      const rewritten = rewriteUsername(original, info, Buffer.from(newName, 'utf8'));
      expect(rewritten).not.toBeNull();
      if (rewritten === null) return;

      // mqtt-packet sees the same CONNECT with the new username.
      const after = decode(rewritten);
      expect(after.username).toBe(newName);
      expect(comparable(after)).toEqual(comparable(before));

      // Our scanner accepts it and agrees field by field.
      const again = scan(rewritten);
      expect(again.packetLength).toBe(rewritten.length);
      expect(again.username?.toString('utf8')).toBe(newName);
      expect(again.clientId.equals(info.clientId)).toBe(true);
      expect(again.protocolLevel).toBe(info.protocolLevel);
      expect(again.bridge).toBe(info.bridge);
      expect(again.hasPassword).toBe(info.hasPassword);
      expect(again.hasWill).toBe(info.hasWill);
      expect(again.sessionExpiry).toBe(info.sessionExpiry);

      // Byte-identical outside the header, the flags byte and the username field.
      const oldBody = original.subarray(info.headerLength);
      const newBody = rewritten.subarray(again.headerLength);
      const flagsAt = info.flagsOffset - info.headerLength;
      expect(newBody.subarray(0, flagsAt).equals(oldBody.subarray(0, flagsAt))).toBe(true);
      expect(newBody[flagsAt]).toBe(oldBody[flagsAt]! | 0x80);
      const userAt = info.usernameOffset - info.headerLength;
      expect(newBody.subarray(flagsAt + 1, userAt).equals(oldBody.subarray(flagsAt + 1, userAt))).toBe(true);
      expect(rewritten.subarray(again.usernameEnd).equals(original.subarray(info.usernameEnd))).toBe(true);
    }
  });

  it('inserts a username before an existing password at 5.0 (password without username)', () => {
    const original = buildConnect({ levelByte: 5, clientId: 'c', password: 'pw' });
    const info = scan(original);
    const rewritten = rewriteUsername(original, info, Buffer.from('cn'));
    expect(rewritten).not.toBeNull();
    const after = decode(rewritten!);
    expect(after.username).toBe('cn');
    expect(after.password?.toString()).toBe('pw');
    expect(after.clientId).toBe('c');
  });

  it('MQTT 3.1 with a username and password flag but neither field (accepted, as mosquitto does): a valid CONNECT with the username only', () => {
    const packet = hex('100f00064d514973647003c2000a000170');
    const out = rewriteUsername(packet, scan(packet), Buffer.from('device-42'))!;
    const decoded = decode(out);
    expect(decoded).toMatchObject({ protocolId: 'MQIsdp', protocolVersion: 3, clientId: 'p', username: 'device-42' });
    expect(decoded.password).toBeUndefined();
    expect(out[11]! & 0xc0).toBe(0x80); // username flag set, password flag cleared
  });

  it('MQTT 3.1 with a username and a password flag but no password field: the rewrite has no password flag', () => {
    const packet = hex('101200064d514973647003c2000a000170000175');
    const info = scan(packet);
    expect(info.hasPassword).toBe(false);
    const out = rewriteUsername(packet, info, Buffer.from('cn'))!;
    expect(decode(out)).toMatchObject({ protocolId: 'MQIsdp', clientId: 'p', username: 'cn' });
    expect(out[11]! & 0xc0).toBe(0x80);
  });

  it('re-encodes the Remaining Length when it grows past a varint boundary', () => {
    const original = buildConnect({ levelByte: 4, clientId: 'c'.repeat(100) }); // RL 112: 1 byte
    const info = scan(original);
    expect(info.headerLength).toBe(2);
    const rewritten = rewriteUsername(original, info, Buffer.from('u'.repeat(20_000)))!;
    const again = scan(rewritten);
    expect(again.headerLength).toBe(4); // 20,114: 3 bytes, minimal
    expect(rewritten.length).toBe(original.length + 2 + 20_000 + 2);
  });

  it('leaves pipelined bytes out of the result and never modifies the input', () => {
    const trailer = hex('C0 00 E0 00');
    const input = Buffer.concat([buildConnect({ levelByte: 4, clientId: 'c', username: 'old' }), trailer]);
    const copy = Buffer.from(input);
    const info = scan(input);
    const rewritten = rewriteUsername(input, info, Buffer.from('new'))!;
    expect(input.equals(copy)).toBe(true);
    expect(rewritten.length).toBe(info.packetLength);
    expect(decode(rewritten).username).toBe('new');
  });

  it('returns null for a username over 65,535 bytes or not valid MQTT UTF-8', () => {
    const original = buildConnect({ levelByte: 4, clientId: 'c' });
    const info = scan(original);
    expect(rewriteUsername(original, info, Buffer.alloc(65_536, 0x61))).toBeNull();
    expect(rewriteUsername(original, info, hex('61 00'))).toBeNull();
    expect(rewriteUsername(original, info, hex('ED A0 80'))).toBeNull();
    expect(rewriteUsername(original, info, hex('C0 AF'))).toBeNull();
    expect(rewriteUsername(original.subarray(0, original.length - 1), info, Buffer.from('u'))).toBeNull();
  });

  it('returns null when the result would exceed the 268,435,455-byte Remaining Length', () => {
    // A CONNECT of the largest legal size, described by hand (the content is not re-validated).
    const maxRemaining = 268_435_455;
    const big = Buffer.allocUnsafe(5 + maxRemaining);
    const info: ConnectInfo = {
      packetLength: 5 + maxRemaining,
      headerLength: 5,
      protocolLevel: 4,
      bridge: false,
      cleanStart: true,
      keepalive: 0,
      clientId: Buffer.alloc(0),
      username: Buffer.alloc(3),
      hasPassword: false,
      hasWill: false,
      sessionExpiry: 0,
      flagsOffset: 12,
      usernameOffset: 5 + maxRemaining - 5, // existing 5-byte username field at the end
      usernameEnd: 5 + maxRemaining,
    };
    expect(rewriteUsername(big, info, Buffer.from('abcd'))).toBeNull(); // 1 byte over
    const exact = rewriteUsername(big, info, Buffer.from('abc')); // same size: fits exactly
    expect(exact?.length).toBe(5 + maxRemaining);
    expect(exact?.subarray(0, 5).equals(hex('10 FF FF FF 7F'))).toBe(true);
  });
});

describe('cnUsernameProblem: which certificate CNs can be a username', () => {
  it('accepts any non-empty MQTT string up to 65,535 bytes: ASCII, UTF-8, control characters (left to the broker)', () => {
    for (const cn of ['device-42', 'Gerät 7', '设备', 'a\nb', 'x'.repeat(65_535), '\u{1F600}']) expect(cnUsernameProblem(Buffer.from(cn, 'utf8'))).toBeNull();
  });

  it('refuses an empty CN, one holding U+0000 [MQTT-1.5.4-2], and one over 65,535 bytes', () => {
    expect(cnUsernameProblem(Buffer.alloc(0))).toBe('the CN is empty');
    expect(cnUsernameProblem(Buffer.from('ab\u0000cd', 'utf8'))).toMatch(/U\+0000/);
    expect(cnUsernameProblem(Buffer.from('x'.repeat(65_536), 'utf8'))).toBe('the CN is longer than 65,535 bytes');
    // 21,846 three-byte characters: 65,538 bytes, though only 21,846 characters.
    expect(cnUsernameProblem(Buffer.from('设'.repeat(21_846), 'utf8'))).toBe('the CN is longer than 65,535 bytes');
  });
});
