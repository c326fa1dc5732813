/**
 * The stickiness hash, pinned: XXH64 against published vectors and an independent BigInt
 * implementation, the splitmix64 finalizer, the fdlibm log port against V8's Math.log, and the
 * golden vectors of docs/design/hashing.md. If any literal here has to change, every deployed LB
 * would route clients differently: that is a breaking change, not a test update.
 */
import { describe, expect, it } from 'vitest';
import { fdlibmLog } from '../../src/balancer/hash/fdlibm-log.js';
import { mix64 } from '../../src/balancer/hash/mix64.js';
import { combinedHash, rendezvousOrder, rendezvousScore } from '../../src/balancer/hash/rendezvous.js';
import { r64, toBigInt } from '../../src/balancer/hash/uint64.js';
import { xxh64 } from '../../src/balancer/hash/xxh64.js';
import { seededRandom } from './balancer-fixtures.js';

// ---- An independent, obviously-written reference (BigInt, straight from the XXH64 spec) ----
const M64 = (1n << 64n) - 1n;
const P1 = 0x9e3779b185ebca87n;
const P2 = 0xc2b2ae3d27d4eb4fn;
const P3 = 0x165667b19e3779f9n;
const P4 = 0x85ebca77c2b2ae63n;
const P5 = 0x27d4eb2f165667c5n;
const rotl = (x: bigint, r: bigint): bigint => ((x << r) | (x >> (64n - r))) & M64;
const round = (acc: bigint, input: bigint): bigint => (rotl((acc + input * P2) & M64, 31n) * P1) & M64;
const merge = (acc: bigint, v: bigint): bigint => (((acc ^ round(0n, v)) * P1) + P4) & M64;

function xxh64Reference(b: Uint8Array): bigint {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const len = b.length;
  let i = 0;
  let h: bigint;
  if (len >= 32) {
    let v1 = (P1 + P2) & M64;
    let v2 = P2;
    let v3 = 0n;
    let v4 = (0n - P1) & M64;
    for (; i + 32 <= len; i += 32) {
      v1 = round(v1, dv.getBigUint64(i, true));
      v2 = round(v2, dv.getBigUint64(i + 8, true));
      v3 = round(v3, dv.getBigUint64(i + 16, true));
      v4 = round(v4, dv.getBigUint64(i + 24, true));
    }
    h = (rotl(v1, 1n) + rotl(v2, 7n) + rotl(v3, 12n) + rotl(v4, 18n)) & M64;
    h = merge(merge(merge(merge(h, v1), v2), v3), v4);
  } else {
    h = P5;
  }
  h = (h + BigInt(len)) & M64;
  for (; i + 8 <= len; i += 8) h = (rotl(h ^ round(0n, dv.getBigUint64(i, true)), 27n) * P1 + P4) & M64;
  if (i + 4 <= len) {
    h = (rotl(h ^ ((BigInt(dv.getUint32(i, true)) * P1) & M64), 23n) * P2 + P3) & M64;
    i += 4;
  }
  for (; i < len; i++) h = (rotl(h ^ ((BigInt(b[i]!) * P5) & M64), 11n) * P1) & M64;
  h ^= h >> 33n;
  h = (h * P2) & M64;
  h ^= h >> 29n;
  h = (h * P3) & M64;
  return h ^ (h >> 32n);
}

function mix64Reference(z0: bigint): bigint {
  let z = ((z0 ^ (z0 >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
  return z ^ (z >> 31n);
}

function scoreReference(key: Uint8Array, name: string, weight: number): number {
  const h = mix64Reference(xxh64Reference(key) ^ xxh64Reference(Buffer.from(name, 'utf8')));
  const u = (Number(h >> 12n) + 0.5) / 2 ** 52;
  return weight / -Math.log(u);
}

function mix64Big(x: bigint): bigint {
  mix64(Number(x >> 32n), Number(x & 0xffffffffn));
  return toBigInt(r64[0]!, r64[1]!);
}

function randomBytes(random: () => number, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(random() * 256);
  return b;
}

/** The 65,535-byte client ID of the golden table: byte i = i mod 256. */
function longKey(): Buffer {
  const b = Buffer.alloc(65535);
  for (let i = 0; i < b.length; i++) b[i] = i & 0xff;
  return b;
}

const hex = (x: bigint): string => x.toString(16).padStart(16, '0');

describe('XXH64 (seed 0)', () => {
  // Published vectors: XXH64 of the first n characters of "0123456789:;<=>?@ABC...", seed 0
  // (the same table appears in several xxHash ports' test suites), plus the xxhsum classics.
  const ladder = '0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnop';
  const published: [number, string][] = [
    [0, 'ef46db3751d8e999'],
    [1, '633457081244afec'],
    [3, '1c2dcb4b9024d73d'],
    [4, '4c33072b45647dcb'],
    [7, '97ee4fe4a0ff4dfa'],
    [8, 'e4ba22a49ad89d3f'],
    [12, '884e66bb5a00411d'],
    [16, '6ff4eb62bcec6586'],
    [31, 'c506e23012915790'],
    [32, '96ee2fa935fdd556'],
    [33, 'a5cdc6940c6fde9e'],
    [35, 'fd098b56c5c25e83'],
    [63, '7daf8f9fdbd4e518'],
    [64, '3fe627fabdb30aea'],
    [65, 'eddce6ec01f7e595'],
  ];
  it.each(published)('matches the published value for a %i-byte input', (n, expected) => {
    expect(hex(xxh64(Buffer.from(ladder.slice(0, n), 'latin1')))).toBe(expected);
  });

  it('matches the classic "a" and "abc" values', () => {
    expect(hex(xxh64(Buffer.from('a')))).toBe('d24ec4f1a98c6e5b');
    expect(hex(xxh64(Buffer.from('abc')))).toBe('44bc2cf5ad770999');
  });

  it('agrees with the BigInt reference on every length 0..300 and on large inputs', () => {
    const random = seededRandom(1);
    for (let n = 0; n <= 300; n++) {
      const b = randomBytes(random, n);
      expect(hex(xxh64(b)), `length ${n}`).toBe(hex(xxh64Reference(b)));
    }
    for (const n of [1000, 4099, 65535]) {
      const b = randomBytes(random, n);
      expect(hex(xxh64(b)), `length ${n}`).toBe(hex(xxh64Reference(b)));
    }
  });

  it('hashes a sub-view of a larger buffer by its own bytes only (byteOffset respected)', () => {
    const whole = Buffer.from('xxxxsensor-0001yyyy');
    expect(xxh64(whole.subarray(4, 15))).toBe(xxh64(Buffer.from('sensor-0001')));
  });
});

describe('mix64 (splitmix64 finalizer)', () => {
  it('gives splitmix64(seed 0) first output 0xe220a8397b1dcdaf', () => {
    // splitmix64 adds the golden gamma 0x9e3779b97f4a7c15 to the state, then finalizes.
    expect(hex(mix64Big(0x9e3779b97f4a7c15n))).toBe('e220a8397b1dcdaf');
  });

  it('agrees with the BigInt reference', () => {
    const random = seededRandom(2);
    for (let i = 0; i < 2000; i++) {
      const x = (BigInt(Math.floor(random() * 2 ** 32)) << 32n) | BigInt(Math.floor(random() * 2 ** 32));
      expect(mix64Big(x)).toBe(mix64Reference(x));
    }
    expect(mix64Big(0n)).toBe(0n);
    expect(mix64Big(M64)).toBe(mix64Reference(M64));
  });
});

describe('fdlibmLog', () => {
  it('is bit-identical to V8 Math.log (the same fdlibm algorithm) across the ranges we use and beyond', () => {
    const random = seededRandom(3);
    const f64 = new Float64Array(1);
    const u32 = new Uint32Array(f64.buffer);
    const mismatches: number[] = [];
    const check = (x: number): void => {
      if (!Object.is(fdlibmLog(x), Math.log(x)) && mismatches.length < 5) mismatches.push(x);
    };
    for (let i = 0; i < 200_000; i++) check((Math.floor(random() * 2 ** 52) + 0.5) / 2 ** 52); // our u values
    for (let i = 0; i < 50_000; i++) check(1 - random() * 2 ** -20); // the |f| < 2^-20 branch
    for (let i = 0; i < 50_000; i++) {
      u32[0] = Math.floor(random() * 2 ** 32);
      u32[1] = Math.floor(random() * 2 ** 32);
      check(f64[0]!); // any bit pattern: subnormals, huge, negative, NaN
    }
    for (const x of [0, -0, -1, Infinity, -Infinity, NaN, 1, 2, 0.5, 5e-324, 1e-310, Number.MAX_VALUE, 2 ** -53, 1 - 2 ** -53]) check(x);
    expect(mismatches).toEqual([]);
  });
});

describe('rendezvous score', () => {
  it('pins name hashes, combined hashes and scores for the key "sensor-0001"', () => {
    const key = Buffer.from('sensor-0001');
    expect(hex(xxh64(key))).toBe('376e0986f965f7d0');
    const pinned: [string, string, string, number][] = [
      // name, XXH64(name), mix64(XXH64(key) ^ XXH64(name)), score at weight 1
      ['b1', '1a56c676fcd14c62', '727d2c232c5112b4', 1.2427005457675495],
      ['b2', '289b930bd77ec5d4', 'ffcd89aa6a821a76', 1298.2135001429338],
      ['b3', '6fb930b2295b748b', 'dedda372f7003c53', 7.214603343592776],
      ['emqx-2', '2da3ba157cde9bd3', 'e458904fa104dcd0', 8.747710014763205],
    ];
    for (const [name, nameHash, combined, score] of pinned) {
      expect(hex(xxh64(Buffer.from(name))), name).toBe(nameHash);
      expect(hex(combinedHash(key, name)), name).toBe(combined);
      expect(rendezvousOrder(key, [{ name, weight: 1 }])[0]!.score, name).toBe(score);
    }
  });

  it('agrees with the BigInt + Math.log reference for random keys, names and weights', () => {
    const random = seededRandom(4);
    for (let i = 0; i < 500; i++) {
      const key = randomBytes(random, Math.floor(random() * 80));
      const name = `srv-${Math.floor(random() * 1e6)}`;
      const weight = 1 + Math.floor(random() * 10);
      const order = rendezvousOrder(key, [{ name, weight }]);
      expect(order[0]!.score).toBe(scoreReference(key, name, weight));
    }
  });

  it('is proportional to the weight for the same key and name', () => {
    const s1 = rendezvousScore(0x12345678, 0x9abcdef0, 0x0badcafe, 0xdeadbeef, 1);
    const s3 = rendezvousScore(0x12345678, 0x9abcdef0, 0x0badcafe, 0xdeadbeef, 3);
    expect(s3).toBe(3 * s1);
    expect(s1).toBeGreaterThan(0);
  });

  it('keeps u strictly inside (0, 1) at both extremes of the combined hash', () => {
    // mix64(0) = 0: a key hash equal to the name hash gives the smallest u = 0.5 / 2^52.
    const low = rendezvousScore(0x01020304, 0x05060708, 0x01020304, 0x05060708, 1);
    expect(low).toBe(1 / -Math.log(0.5 / 2 ** 52));
    // The largest u, from a combined hash of all ones, is (2^52 - 0.5) / 2^52: still below 1.
    const top = (2 ** 52 - 1 + 0.5) / 2 ** 52;
    expect(top).toBeLessThan(1);
    expect(fdlibmLog(top)).toBeLessThan(0);
  });
});

describe('golden vectors (docs/design/hashing.md)', () => {
  const equal = [
    { name: 'b1', weight: 1 },
    { name: 'b2', weight: 1 },
    { name: 'b3', weight: 1 },
  ];
  const weighted = [
    { name: 'emqx-1', weight: 1 },
    { name: 'emqx-2', weight: 1 },
    { name: 'emqx-3', weight: 2 },
    { name: 'vernemq-a', weight: 3 },
    { name: 'spare', weight: 0 },
  ];
  // key, XXH64(key), order over b1..b3 (weights 1), order over the weighted set (spare has weight 0)
  const golden: [string, Buffer, string, string[], string[]][] = [
    ['ASCII', Buffer.from('sensor-0001'), '376e0986f965f7d0', ['b2', 'b3', 'b1'], ['emqx-2', 'vernemq-a', 'emqx-3', 'emqx-1']],
    ['one byte', Buffer.from('a'), 'd24ec4f1a98c6e5b', ['b2', 'b1', 'b3'], ['emqx-2', 'emqx-3', 'emqx-1', 'vernemq-a']],
    ['UTF-8 2-byte', Buffer.from('température-capteur-7'), '0c35395d06bc50a6', ['b2', 'b1', 'b3'], ['emqx-3', 'vernemq-a', 'emqx-1', 'emqx-2']],
    ['UTF-8 3-byte', Buffer.from('客户端-42'), '5618ac14d743c11d', ['b1', 'b3', 'b2'], ['emqx-2', 'emqx-1', 'emqx-3', 'vernemq-a']],
    ['UTF-8 4-byte', Buffer.from('🚀rocket'), 'c466c85dd7458d3a', ['b3', 'b2', 'b1'], ['emqx-3', 'vernemq-a', 'emqx-1', 'emqx-2']],
    ['topic characters', Buffer.from('device/7#+'), 'cef5c5f00751a28f', ['b1', 'b2', 'b3'], ['emqx-2', 'emqx-3', 'vernemq-a', 'emqx-1']],
    ['34 bytes (one stripe)', Buffer.from('0123456789abcdef0123456789abcdef-x'), '401af636d6b8ea01', ['b3', 'b2', 'b1'], ['vernemq-a', 'emqx-3', 'emqx-2', 'emqx-1']],
    ['65,535 bytes', longKey(), 'b7c999350714bf38', ['b1', 'b3', 'b2'], ['emqx-3', 'vernemq-a', 'emqx-1', 'emqx-2']],
  ];

  it.each(golden)('%s', (_label, key, keyHash, equalOrder, weightedOrder) => {
    expect(hex(xxh64(key))).toBe(keyHash);
    expect(rendezvousOrder(key, equal).map((r) => r.name)).toEqual(equalOrder);
    expect(rendezvousOrder(key, weighted).map((r) => r.name)).toEqual(weightedOrder);
  });

  it('never ranks a weight-0 server', () => {
    for (const [, key] of golden) expect(rendezvousOrder(key, weighted).some((r) => r.name === 'spare')).toBe(false);
  });

});
