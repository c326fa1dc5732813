import { describe, expect, it } from 'vitest';
import { generate, parser, type IConnectPacket, type Packet } from 'mqtt-packet';
import { scanConnect, type ConnectInfo, type ScanResult } from '../../src/proxy/connect-scanner.js';
import { isValidMqttUtf8 } from '../../src/proxy/connect-utf8.js';
import {
  buildConnect,
  encodeVarint,
  field,
  frame,
  hex,
  invalidVectors,
  MINIMAL_V4,
  notConnectFirstBytes,
  prop,
  section,
  userPropertyFlood,
  validVectors,
  withDeclaredLength,
  type Expect,
  type Vector,
} from '../fixtures/connect-vectors.js';
import { seededRandom } from '../fixtures/random.js';

const CAP = 262_144; // design.md §4 default limits.maxConnectBytes

function parseWithMqttPacket(bytes: Buffer): { packet: Packet | null; error: Error | null } {
  const p = parser();
  let packet: Packet | null = null;
  let error: Error | null = null;
  p.on('packet', (pk: Packet) => {
    packet ??= pk;
  });
  p.on('error', (e: Error) => {
    error ??= e;
  });
  p.parse(bytes);
  return { packet, error };
}

function describeResult(r: ScanResult): string {
  switch (r.kind) {
    case 'more':
      return 'more';
    case 'reject':
      return r.reason;
    case 'refuse':
      return `refuse ${r.replyLevel}`;
    case 'connect':
      return 'connect';
  }
}

function expectVerdict(result: ScanResult, want: Expect, name: string): void {
  if (typeof want === 'string') {
    expect(describeResult(result), name).toBe(want);
  } else if ('refuse' in want) {
    expect(result, name).toEqual({ kind: 'refuse', reason: 'bad_protocol_level', replyLevel: want.refuse });
  } else {
    expect(result.kind, name).toBe('connect');
    if (result.kind !== 'connect') return;
    const info = result.info;
    expect(info.clientId.equals(want.connect.clientId), name).toBe(true);
    if (want.connect.level !== undefined) expect(info.protocolLevel, name).toBe(want.connect.level);
    if (want.connect.packetLength !== undefined) expect(info.packetLength, name).toBe(want.connect.packetLength);
    if (want.connect.username !== undefined) {
      if (want.connect.username === null) expect(info.username, name).toBeNull();
      else expect(info.username?.equals(want.connect.username), name).toBe(true);
    }
  }
}

function sameResult(a: ScanResult, b: ScanResult): boolean {
  if (a.kind !== b.kind) return false;
  if (a.kind === 'connect' && b.kind === 'connect') {
    const x = a.info;
    const y = b.info;
    return (
      x.packetLength === y.packetLength &&
      x.headerLength === y.headerLength &&
      x.protocolLevel === y.protocolLevel &&
      x.bridge === y.bridge &&
      x.cleanStart === y.cleanStart &&
      x.keepalive === y.keepalive &&
      x.clientId.equals(y.clientId) &&
      (x.username === null ? y.username === null : y.username !== null && x.username.equals(y.username)) &&
      x.hasPassword === y.hasPassword &&
      x.hasWill === y.hasWill &&
      x.sessionExpiry === y.sessionExpiry &&
      x.flagsOffset === y.flagsOffset &&
      x.usernameOffset === y.usernameOffset &&
      x.usernameEnd === y.usernameEnd
    );
  }
  return describeResult(a) === describeResult(b);
}

function connectInfo(bytes: Buffer, cap = CAP): ConnectInfo {
  const r = scanConnect(bytes, cap);
  if (r.kind !== 'connect') throw new Error(`expected connect, got ${describeResult(r)}`);
  return r.info;
}

const SMALL = 2_000; // vectors up to this size get real two-chunk concatenation at every split point

describe('scanConnect: valid CONNECTs', () => {
  const vectors = validVectors();

  it.each(vectors.map((v) => [v.name, v] as const))('%s', (_name, v: Vector) => {
    expectVerdict(scanConnect(v.bytes, CAP), v.expect, v.name);
  });

  it('gives "more" for every proper prefix and the same result once complete (split at every offset)', () => {
    for (const v of vectors) {
      const whole = scanConnect(v.bytes, CAP);
      expect(whole.kind, v.name).toBe('connect');
      if (whole.kind !== 'connect') continue;
      const length = whole.info.packetLength;
      for (let k = 0; k < length; k++) {
        const first = scanConnect(v.bytes.subarray(0, k), CAP);
        if (first.kind !== 'more') expect.fail(`${v.name}: prefix ${k}/${length} gave ${describeResult(first)}`);
        if (v.bytes.length <= SMALL) {
          // The session's second call sees a new concatenated buffer: same verdict, same fields.
          const second = scanConnect(Buffer.concat([v.bytes.subarray(0, k), v.bytes.subarray(k)]), CAP);
          if (!sameResult(second, whole)) expect.fail(`${v.name}: split at ${k} gave ${describeResult(second)}`);
        }
      }
    }
  });

  it('gives the same result when fed byte by byte into a growing buffer (B38)', () => {
    for (const v of vectors) {
      const whole = scanConnect(v.bytes, CAP);
      const grow = Buffer.alloc(v.bytes.length);
      let verdict: ScanResult = { kind: 'more' };
      let delivered = 0;
      while (verdict.kind === 'more' && delivered < v.bytes.length) {
        grow[delivered] = v.bytes[delivered]!;
        delivered += 1;
        verdict = scanConnect(grow.subarray(0, delivered), CAP);
      }
      expect(sameResult(verdict, whole), v.name).toBe(true);
      if (whole.kind === 'connect') expect(delivered, v.name).toBe(whole.info.packetLength);
    }
  });

  it('ignores bytes pipelined after the CONNECT (B40)', () => {
    const trailer = hex('62 02 D3 01 E0 02 00 20 10 FF FF FF FF');
    for (const v of vectors) {
      const whole = scanConnect(v.bytes, CAP);
      if (whole.kind !== 'connect') continue;
      const connect = v.bytes.subarray(0, whole.info.packetLength);
      const withTrailer = scanConnect(Buffer.concat([connect, trailer]), CAP);
      expect(sameResult(withTrailer, whole), v.name).toBe(true);
    }
  });

  it('works on a buffer that is a slice of a larger pool (non-zero byteOffset)', () => {
    const pool = Buffer.alloc(4096, 0xff);
    MINIMAL_V4.copy(pool, 1000);
    const slice = pool.subarray(1000, 1000 + MINIMAL_V4.length);
    const info = connectInfo(slice);
    expect(info.clientId.toString()).toBe('p');
    // No copy: the client ID is a view on the caller's memory.
    expect(info.clientId.buffer).toBe(pool.buffer);
    expect(info.clientId.byteOffset).toBe(pool.byteOffset + 1000 + 14);
  });

  it('extracts every field', () => {
    const bytes = buildConnect({
      levelByte: 0x85,
      clean: false,
      keepalive: 0xfffe,
      properties: section(prop.u32(0x11, 0xfffffffe), prop.pair('a', 'b')),
      clientId: 'id',
      will: { topic: 't', payload: 'x', qos: 2 },
      password: 'secret',
    });
    const info = connectInfo(bytes);
    expect(info).toMatchObject({
      packetLength: bytes.length,
      headerLength: 2,
      protocolLevel: 5,
      bridge: true,
      cleanStart: false,
      keepalive: 0xfffe,
      username: null,
      hasPassword: true,
      hasWill: true,
      sessionExpiry: 0xfffffffe,
      flagsOffset: 2 + 6 + 1,
    });
    expect(info.clientId.toString()).toBe('id');
    // No username: the insertion point is right before the password field.
    expect(info.usernameEnd).toBe(info.usernameOffset);
    expect(bytes.subarray(info.usernameOffset).equals(field('secret'))).toBe(true);

    const v4 = connectInfo(buildConnect({ levelByte: 4, clientId: 'c', username: 'user', password: 'pw' }));
    expect(v4.sessionExpiry).toBe(0);
    expect(v4.bridge).toBe(false);
    expect(v4.cleanStart).toBe(true);
    expect(v4.username?.toString()).toBe('user');
    expect(v4.usernameEnd - v4.usernameOffset).toBe(2 + 4);
  });

  it('A1.5 Remaining Length split across reads (10 | 8D | 01 | rest)', () => {
    const bytes = buildConnect({ levelByte: 4, clientId: 'x'.repeat(129) });
    expect(bytes.subarray(0, 3).equals(hex('10 8D 01'))).toBe(true);
    for (const k of [1, 2, 3]) expect(scanConnect(bytes.subarray(0, k), CAP)).toEqual({ kind: 'more' });
    const info = connectInfo(bytes);
    expect(info.packetLength).toBe(3 + 141);
    expect(info.headerLength).toBe(3);
  });

  it('A1.3 the cap counts the whole packet: exactly cap passes, cap + 1 is too large', () => {
    const bytes = buildConnect({ levelByte: 4, clientId: 'a'.repeat(65_000) }); // mosquitto 01-connect-575314
    expect(connectInfo(bytes, bytes.length).packetLength).toBe(bytes.length);
    expect(scanConnect(bytes, bytes.length - 1)).toEqual({ kind: 'reject', reason: 'too_large' });
    // Decided from the fixed header alone, before the body arrives.
    expect(scanConnect(bytes.subarray(0, 4), bytes.length - 1)).toEqual({ kind: 'reject', reason: 'too_large' });
    expect(scanConnect(bytes.subarray(0, 4), bytes.length)).toEqual({ kind: 'more' });
  });

  it('A28 accepts 5,001 user properties (linear scan)', () => {
    const bytes = userPropertyFlood(5_001);
    const info = connectInfo(bytes);
    expect(info.clientId.toString()).toBe('flood');
    const { packet, error } = parseWithMqttPacket(bytes);
    expect(error).toBeNull();
    const values = (packet as IConnectPacket).properties?.userProperties?.k;
    expect(Array.isArray(values) ? values.length : 0).toBe(5_001);
    // A larger flood bounded only by the cap is handled too.
    expect(scanConnect(userPropertyFlood(37_000), CAP).kind).toBe('connect');
    expect(scanConnect(userPropertyFlood(38_000), CAP)).toEqual({ kind: 'reject', reason: 'too_large' });
  });
});

describe('scanConnect: invalid first packets (reliability-cases §A)', () => {
  const vectors = invalidVectors();

  it.each(vectors.map((v) => [v.name, v] as const))('%s', (_name, v: Vector) => {
    expectVerdict(scanConnect(v.bytes, CAP), v.expect, v.name);
  });

  it('every prefix gives "more" or the final verdict, and never changes after a verdict', () => {
    for (const v of vectors) {
      const final = scanConnect(v.bytes, CAP);
      let decided: ScanResult | null = null;
      for (let k = 0; k <= v.bytes.length; k++) {
        const r = scanConnect(v.bytes.subarray(0, k), CAP);
        if (decided !== null) {
          if (!sameResult(r, decided)) expect.fail(`${v.name}: prefix ${k} changed verdict to ${describeResult(r)}`);
        } else if (r.kind !== 'more') {
          if (!sameResult(r, final)) expect.fail(`${v.name}: prefix ${k} gave ${describeResult(r)}, final ${describeResult(final)}`);
          decided = r;
        }
      }
    }
  });

  it('A8/A9 a first byte that is not CONNECT is decided from that byte alone', () => {
    for (const b of notConnectFirstBytes()) {
      expect(scanConnect(b.subarray(0, 1), CAP), b.toString('hex')).toEqual({ kind: 'reject', reason: 'not_connect' });
      expect(scanConnect(b, CAP), b.toString('hex')).toEqual({ kind: 'reject', reason: 'not_connect' });
    }
    // Reserved flag bits set: decided with the version [MQTT-2.1.3-1] (3.1.1 [MQTT-2.2.2-2]); 3.1 has no such rule,
    // and mosquitto accepts such a 3.1 CONNECT (a differential fuzz).
    for (const first of [0x11, 0x12, 0x14, 0x16, 0x18, 0x1f]) {
      expect(scanConnect(Buffer.from([first]), CAP)).toEqual({ kind: 'more' });
      for (const version of [4, 5] as const) {
        const packet = generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clientId: 'flags', clean: true, keepalive: 30 });
        packet[0] = first;
        expect(scanConnect(packet, CAP), `0x${first.toString(16)} level ${version}`).toEqual({ kind: 'reject', reason: 'malformed' });
      }
      const v31 = generate({ cmd: 'connect', protocolId: 'MQIsdp', protocolVersion: 3, clientId: 'flags', clean: true, keepalive: 30 });
      v31[0] = first;
      expect(scanConnect(v31, CAP)).toMatchObject({ kind: 'connect', info: { protocolLevel: 3 } });
    }
    expect(scanConnect(Buffer.from('G'), CAP)).toEqual({ kind: 'reject', reason: 'not_connect' });
    expect(scanConnect(Buffer.from('P'), CAP)).toEqual({ kind: 'reject', reason: 'not_connect' });
    expect(scanConnect(Buffer.alloc(0), CAP)).toEqual({ kind: 'more' });
  });

  it('A13 a wrong protocol name is rejected before the body arrives', () => {
    // 64 KiB declared; the name is wrong in its 2nd byte: decided after 6 bytes, not 65,000.
    const bad = Buffer.concat([hex('10 80 80 04'), hex('00 04 4D 58')]);
    expect(scanConnect(bad.subarray(0, 7), CAP)).toEqual({ kind: 'more' });
    expect(scanConnect(bad, CAP)).toEqual({ kind: 'reject', reason: 'malformed' });
    expect(scanConnect(hex('10 80 80 04 00 05'), CAP)).toEqual({ kind: 'reject', reason: 'malformed' });
    expect(scanConnect(hex('10 80 80 04 01'), CAP)).toEqual({ kind: 'reject', reason: 'malformed' });
    expect(scanConnect(hex('10 80 80 04 00 06 4D 51 49 73 64'), CAP)).toEqual({ kind: 'more' });
  });

  it('validates the body only once it is complete (no re-parse on a growing buffer)', () => {
    // A 65 KB CONNECT whose only fault is the very last client-ID byte: every prefix must be "more",
    // which shows the body is not examined before the packet is whole.
    const id = Buffer.alloc(65_535, 0x61);
    id[id.length - 1] = 0xff;
    const bytes = buildConnect({ levelByte: 4, clientId: id });
    for (let k = 0; k < bytes.length; k++) {
      const r = scanConnect(bytes.subarray(0, k), CAP);
      if (r.kind !== 'more') expect.fail(`prefix ${k} gave ${describeResult(r)}`);
    }
    expect(scanConnect(bytes, CAP)).toEqual({ kind: 'reject', reason: 'malformed' });
  });

  it('binary fields are not UTF-8 checked (password, will payload, correlation/authentication data)', () => {
    const junk = hex('00 FF C0 AF ED A0 80');
    expect(scanConnect(buildConnect({ levelByte: 4, clientId: 'p', username: 'u', password: junk }), CAP).kind).toBe('connect');
    expect(scanConnect(buildConnect({ levelByte: 4, clientId: 'p', will: { topic: 't', payload: junk } }), CAP).kind).toBe('connect');
    const v5 = buildConnect({
      levelByte: 5,
      clientId: 'p',
      properties: section(prop.str(0x15, 'm'), prop.bin(0x16, junk)),
      will: { topic: 't', payload: junk, properties: section(prop.bin(0x09, junk)) },
    });
    expect(scanConnect(v5, CAP).kind).toBe('connect');
  });

  it('A19 password without username: malformed at 3/4, valid at 5', () => {
    expect(scanConnect(hex('10 10 00 04 4D 51 54 54 04 42 00 0A 00 01 70 00 01 70'), CAP).kind).toBe('reject');
    const v5 = hex('10 11 00 04 4D 51 54 54 05 42 00 0A 00 00 01 70 00 01 70');
    const info = connectInfo(v5);
    expect(info.hasPassword).toBe(true);
    expect(info.username).toBeNull();
  });
});

/** mqtt-packet's refusals of the 3.1.1 rules that MQTT 3.1 does not have (connect-scanner.ts, `v31`). */
const LENIENT_31_REFUSALS = /^(Connect flag bit 0 must be 0|Will Retain Flag must be set to zero|Will QoS must be set to zero|Cannot parse username|Cannot parse password|Invalid header flag bits, must be 0x0 for connect packet)/;

describe('scanConnect: MQTT 3.1 clients get what mosquitto gives them (differential audit)', () => {
  // Each accepted by mosquitto 2.0 with CONNACK 0 at level 3; 3.1.1 made them errors, 3.1 did not.
  const lenient: Array<[string, string, string | null]> = [
    ['username flag, no username field', '100f00064d51497364700382000a000170', null],
    ['username and password flags, neither field', '100f00064d514973647003c2000a000170', null],
    ['username and password flags, password missing', '101200064d514973647003c2000a000170000175', 'u'],
    ['username and password flags, username cut short', '101300064d514973647003c2000a00017000057501', null],
    ['username not valid UTF-8 (Latin-1 byte)', '101300064d51497364700382000a000170000275fc', 'u\ufffd'],
    ['reserved connect flag bit 0', '100f00064d51497364700303000a000170', null],
    ['Will QoS without the Will flag', '100f00064d5149736470030a000a000170', null],
    ['Will Retain without the Will flag', '100f00064d51497364700322000a000170', null],
  ];
  it.each(lenient)('%s: routed at level 3, still malformed as 3.1.1', (_name, hexBytes, username) => {
    const bytes = Buffer.from(hexBytes, 'hex');
    const r = scanConnect(bytes, CAP);
    if (r.kind !== 'connect') expect.fail(`level 3 gave ${describeResult(r)}`);
    expect(r.info.protocolLevel).toBe(3);
    expect(r.info.clientId.toString()).toBe('p');
    expect(r.info.username === null ? null : r.info.username.toString()).toBe(username);
    expect(r.info.packetLength).toBe(bytes.length);
    // The same body under 3.1.1's name and level: its rules apply.
    const v4 = Buffer.concat([Buffer.from([0x10, bytes[1]! - 2, 0x00, 0x04]), Buffer.from('MQTT'), Buffer.from([0x04]), bytes.subarray(11)]);
    expect(describeResult(scanConnect(v4, CAP))).toBe('malformed');
  });

  it('keeps what no version allows: Will QoS 3, a password without a username', () => {
    for (const h of ['100f00064d5149736470031c000a000170', '100f00064d51497364700342000a000170']) {
      expect(describeResult(scanConnect(Buffer.from(h, 'hex'), CAP)), h).toBe('malformed');
    }
  });

  it('5.0: a Will Payload Format Indicator other than 0/1 is the broker\'s to judge (no Protocol Error is named)', () => {
    const bytes = buildConnect({ levelByte: 5, clientId: 'p', will: { topic: 't', payload: 'x', properties: section(prop.byte(0x01, 2)) } });
    expect(scanConnect(bytes, CAP).kind).toBe('connect');
  });
});

describe('scanConnect: truncation (A12 automated)', () => {
  const seeds = validVectors().filter((v) => v.bytes.length <= SMALL);

  it('never throws for every prefix, with the original, a corrected or a wrong declared length', () => {
    let cases = 0;
    for (const v of seeds) {
      const info = connectInfo(v.bytes);
      const packet = v.bytes.subarray(0, info.packetLength);
      const body = packet.subarray(info.headerLength);
      for (let k = 0; k < packet.length; k++) {
        // Original declared length: still a valid prefix, so "more".
        expect(describeResult(scanConnect(packet.subarray(0, k), CAP))).toBe('more');
        // Declared length corrected to the truncated body: fields run short, always malformed.
        if (k < body.length) {
          const truncated = frame(body.subarray(0, k));
          // MQTT 3.1: a username or password cut short is ignored (as mosquitto does), so the CONNECT still routes.
          const lenient = info.protocolLevel === 3 && info.username !== null && k >= info.usernameOffset - info.headerLength;
          const got = scanConnect(truncated, CAP);
          if (lenient ? got.kind !== 'connect' : describeResult(got) !== 'malformed') {
            expect.fail(`${v.name}: truncated body ${k}: want ${lenient ? 'connect' : 'malformed'}, got ${describeResult(got)}`);
          }
        }
        cases += 2;
      }
      // Declared length 1..3 too long (with extra bytes present) or too short: malformed (A10, A11).
      for (const delta of [1, 2, 3]) {
        const longer = withDeclaredLength(Buffer.concat([packet, Buffer.alloc(delta)]), body.length + delta);
        expect(describeResult(scanConnect(longer, CAP)), `${v.name} +${delta}`).toBe('malformed');
        if (body.length - delta >= 0) {
          const shorter = withDeclaredLength(packet, body.length - delta);
          const lenient = info.protocolLevel === 3 && info.username !== null && body.length - delta >= info.usernameOffset - info.headerLength;
          const got = scanConnect(shorter, CAP);
          if (lenient) expect(got.kind, `${v.name} -${delta}`).toBe('connect');
          else expect(describeResult(got), `${v.name} -${delta}`).toBe('malformed');
        }
      }
    }
    expect(cases).toBeGreaterThan(1000);
  });
});

// ---- Differential testing against mqtt-packet -----------------------------------------------------------

function randomString(rand: () => number, maxCodePoints: number): string {
  const n = Math.floor(rand() * (maxCodePoints + 1));
  let s = '';
  for (let i = 0; i < n; i++) {
    const pick = rand();
    let cp: number;
    if (pick < 0.7) cp = 0x20 + Math.floor(rand() * 0x5f);
    else if (pick < 0.75) cp = 0x01 + Math.floor(rand() * 0x1f); // control characters: accepted by policy
    else if (pick < 0.85) cp = 0x80 + Math.floor(rand() * 0x780);
    else if (pick < 0.95) {
      cp = 0x800 + Math.floor(rand() * 0xf800);
      if (cp >= 0xd800 && cp <= 0xdfff) cp = 0xfeff; // no surrogates
    } else cp = 0x10000 + Math.floor(rand() * 0x100000);
    s += String.fromCodePoint(cp);
  }
  return s;
}

function randomBytes(rand: () => number, max: number): Buffer {
  const b = Buffer.alloc(Math.floor(rand() * (max + 1)));
  for (let i = 0; i < b.length; i++) b[i] = Math.floor(rand() * 256);
  return b;
}

function randomUserProperties(rand: () => number): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const n = 1 + Math.floor(rand() * 4);
  for (let i = 0; i < n; i++) {
    const key = `k${randomString(rand, 5)}`;
    out[key] = rand() < 0.3 ? [randomString(rand, 5), randomString(rand, 5)] : randomString(rand, 8);
  }
  return out;
}

function randomConnectPacket(rand: () => number): IConnectPacket {
  const version = ([3, 4, 5] as const)[Math.floor(rand() * 3)]!;
  const long = rand() < 0.05;
  let clientId = randomString(rand, long ? 400 : 30);
  if (version === 3 && clientId === '') clientId = 'v3';
  let clean = rand() < 0.5;
  if (clientId === '' && !clean) clean = true; // mqtt-packet refuses to generate that combination
  const packet: IConnectPacket = {
    cmd: 'connect',
    protocolId: version === 3 ? 'MQIsdp' : 'MQTT',
    protocolVersion: version,
    clean,
    keepalive: Math.floor(rand() * 65_536),
    clientId,
  };
  if (version !== 5 && rand() < 0.2) (packet as IConnectPacket & { bridgeMode?: boolean }).bridgeMode = true;
  if (version === 5 && rand() < 0.7) {
    const properties: NonNullable<IConnectPacket['properties']> = {};
    if (rand() < 0.5) properties.sessionExpiryInterval = Math.floor(rand() * 0x100000000);
    if (rand() < 0.3) properties.receiveMaximum = 1 + Math.floor(rand() * 65_535);
    if (rand() < 0.3) properties.maximumPacketSize = 1 + Math.floor(rand() * 0xfffffffe);
    if (rand() < 0.3) properties.topicAliasMaximum = Math.floor(rand() * 65_536);
    if (rand() < 0.3) properties.requestResponseInformation = rand() < 0.5;
    if (rand() < 0.3) properties.requestProblemInformation = rand() < 0.5;
    if (rand() < 0.3) properties.userProperties = randomUserProperties(rand);
    if (rand() < 0.2) {
      properties.authenticationMethod = randomString(rand, 10);
      if (rand() < 0.5) properties.authenticationData = randomBytes(rand, 20);
    }
    packet.properties = properties;
  }
  if (rand() < 0.4) {
    const will: NonNullable<IConnectPacket['will']> = {
      topic: `t${randomString(rand, 20)}`,
      payload: randomBytes(rand, 40),
      qos: Math.floor(rand() * 3) as 0 | 1 | 2,
      retain: rand() < 0.5,
    };
    if (version === 5 && rand() < 0.6) {
      const wp: NonNullable<NonNullable<IConnectPacket['will']>['properties']> = {};
      if (rand() < 0.4) wp.willDelayInterval = Math.floor(rand() * 0x100000000);
      if (rand() < 0.4) wp.payloadFormatIndicator = rand() < 0.5;
      if (rand() < 0.4) wp.messageExpiryInterval = Math.floor(rand() * 0x100000000);
      if (rand() < 0.4) wp.contentType = randomString(rand, 10);
      if (rand() < 0.4) wp.responseTopic = `r${randomString(rand, 10)}`;
      if (rand() < 0.4) wp.correlationData = randomBytes(rand, 10);
      if (rand() < 0.3) wp.userProperties = randomUserProperties(rand);
      will.properties = wp;
    }
    packet.will = will;
  }
  if (rand() < 0.5) {
    packet.username = randomString(rand, 20);
    if (rand() < 0.6) packet.password = randomBytes(rand, 20);
  }
  return packet;
}

describe('scanConnect: differential against mqtt-packet', () => {
  it('accepts 3,000 random valid CONNECTs generated by mqtt-packet and extracts the same fields', () => {
    const rand = seededRandom(0x5eed);
    for (let i = 0; i < 3_000; i++) {
      const packet = randomConnectPacket(rand);
      const bytes = generate(packet);
      const r = scanConnect(bytes, CAP);
      if (r.kind !== 'connect') expect.fail(`#${i} ${bytes.toString('hex')}: ${describeResult(r)}`);
      const info = r.info;
      const bridge = (packet as IConnectPacket & { bridgeMode?: boolean }).bridgeMode === true;
      expect(info.packetLength).toBe(bytes.length);
      expect(info.protocolLevel).toBe(packet.protocolVersion);
      expect(info.bridge).toBe(bridge);
      expect(info.cleanStart).toBe(packet.clean);
      expect(info.keepalive).toBe(packet.keepalive);
      expect(info.clientId.equals(Buffer.from(packet.clientId, 'utf8'))).toBe(true);
      if (packet.username === undefined) expect(info.username).toBeNull();
      else expect(info.username?.equals(Buffer.from(packet.username, 'utf8'))).toBe(true);
      expect(info.hasPassword).toBe(packet.password !== undefined);
      expect(info.hasWill).toBe(packet.will !== undefined);
      expect(info.sessionExpiry).toBe(packet.properties?.sessionExpiryInterval ?? 0);

      // And mqtt-packet reads back what we accepted.
      const parsed = parseWithMqttPacket(bytes);
      expect(parsed.error).toBeNull();
      expect((parsed.packet as IConnectPacket).clientId).toBe(packet.clientId);
    }
  });

  it('mutation fuzz: never throws; whenever it says connect, mqtt-packet parses the same packet', () => {
    const rand = seededRandom(0xf022);
    const seeds: Buffer[] = validVectors()
      .filter((v) => v.bytes.length <= SMALL)
      .map((v) => v.bytes);
    for (let i = 0; i < 300; i++) seeds.push(generate(randomConnectPacket(rand)));
    const tally = { more: 0, malformed: 0, not_connect: 0, too_large: 0, refuse: 0, connect: 0, lenient31: 0 };
    for (let i = 0; i < 40_000; i++) {
      const seed = seeds[Math.floor(rand() * seeds.length)]!;
      const m = Buffer.from(seed);
      let mutated: Buffer = m;
      const op = rand();
      if (op < 0.5) {
        const flips = 1 + Math.floor(rand() * 3);
        for (let f = 0; f < flips; f++) m[Math.floor(rand() * m.length)] = Math.floor(rand() * 256);
      } else if (op < 0.6) {
        const at = Math.floor(rand() * m.length);
        mutated = Buffer.concat([m.subarray(0, at), Buffer.from([Math.floor(rand() * 256)]), m.subarray(at)]);
      } else if (op < 0.7) {
        const at = Math.floor(rand() * m.length);
        mutated = Buffer.concat([m.subarray(0, at), m.subarray(at + 1)]);
      } else if (op < 0.8) {
        mutated = m.subarray(0, Math.floor(rand() * m.length));
      } else if (op < 0.9) {
        // Keep the body, lie about its length (or fix it up after a mutation).
        const body = withDeclaredLength(m, 0).subarray(2);
        body[Math.floor(rand() * body.length)] = Math.floor(rand() * 256);
        const declared = rand() < 0.5 ? body.length : Math.floor(rand() * (body.length + 8));
        mutated = Buffer.concat([Buffer.from([0x10]), encodeVarint(declared), body]);
      } else {
        // Flip a bit in the flags / level / property area where the rules live.
        const at = Math.min(m.length - 1, 2 + Math.floor(rand() * 16));
        m[at] = m[at]! ^ (1 << Math.floor(rand() * 8));
      }
      const r = scanConnect(mutated, CAP);
      if (r.kind === 'reject') tally[r.reason] += 1;
      else tally[r.kind] += 1;
      if (r.kind === 'more') expect(mutated.length).toBeLessThan(CAP);
      if (r.kind === 'connect') {
        const packet = mutated.subarray(0, r.info.packetLength);
        const parsed = parseWithMqttPacket(packet);
        if (parsed.error !== null || parsed.packet === null) {
          // mqtt-packet holds 3.1 to 3.1.1's rules; the scanner follows mosquitto there (the describe above):
          // only those refusals are let through, any other at level 3 still fails the test.
          if (r.info.protocolLevel === 3 && LENIENT_31_REFUSALS.test(parsed.error?.message ?? '')) {
            tally.lenient31 += 1;
            continue;
          }
          expect.fail(`scanner accepted what mqtt-packet refuses: ${packet.toString('hex')} ${parsed.error?.message}`);
        }
        const decoded = parsed.packet as IConnectPacket;
        expect(decoded.clientId).toBe(r.info.clientId.toString('utf8'));
        expect(decoded.username ?? null).toBe(r.info.username === null ? null : r.info.username.toString('utf8'));
        expect(decoded.clean).toBe(r.info.cleanStart);
        expect(decoded.keepalive).toBe(r.info.keepalive);
      }
    }
    // The fuzz must exercise both sides, or it proves nothing.
    expect(tally.connect).toBeGreaterThan(1_000);
    expect(tally.malformed).toBeGreaterThan(1_000);
    expect(tally.more).toBeGreaterThan(100);
  });
});

describe('isValidMqttUtf8', () => {
  it('agrees with a fatal TextDecoder (minus U+0000) on random byte strings', () => {
    const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
    const rand = seededRandom(7);
    for (let i = 0; i < 20_000; i++) {
      // Bias towards bytes that form multi-byte sequences.
      const b = Buffer.alloc(1 + Math.floor(rand() * 8));
      for (let j = 0; j < b.length; j++) {
        const r = rand();
        b[j] = r < 0.3 ? 0x80 + Math.floor(rand() * 0x40) : r < 0.6 ? 0xc0 + Math.floor(rand() * 0x40) : Math.floor(rand() * 256);
      }
      let expected: boolean;
      try {
        decoder.decode(b);
        expected = !b.includes(0);
      } catch {
        expected = false;
      }
      if (isValidMqttUtf8(b, 0, b.length) !== expected) expect.fail(`disagree on ${b.toString('hex')}`);
    }
  });

  it('checks only the given range', () => {
    const b = hex('FF 61 62 FF');
    expect(isValidMqttUtf8(b, 1, 3)).toBe(true);
    expect(isValidMqttUtf8(b, 0, 3)).toBe(false);
    expect(isValidMqttUtf8(hex('E2 82 AC'), 0, 2)).toBe(false); // truncated by the range end
  });
});
