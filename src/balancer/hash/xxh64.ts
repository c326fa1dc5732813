/**
 * XXH64 (xxHash, 64-bit variant, seed 0) over raw bytes, in pure JS without allocation.
 * Chosen as the key hash because it is a published, frozen algorithm (xxhash.h, "XXH64 spec" in
 * doc/xxhash_spec.md of Cyan4973/xxHash) with implementations in every language, so another tool
 * can reproduce our routing by calling its own xxh64(bytes, seed=0); it passes SMHasher.
 * Byte order: lanes are read little-endian whatever the host, as the specification requires.
 */
import { add64, mul64, r64, rotl64, toBigInt, xorShiftRight64, xorShiftRightHigh64 } from './uint64.js';

// The five XXH64 primes, as (hi, lo) uint32 halves.
const P1H = 0x9e3779b1, P1L = 0x85ebca87;
const P2H = 0xc2b2ae3d, P2L = 0x27d4eb4f;
const P3H = 0x165667b1, P3L = 0x9e3779f9;
const P4H = 0x85ebca77, P4L = 0xc2b2ae63;
const P5H = 0x27d4eb2f, P5L = 0x165667c5;

function readU32LE(b: Uint8Array, i: number): number {
  return (b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24)) >>> 0;
}

/** r64 = round(acc, lane) = rotl(acc + lane * P2, 31) * P1, lane read at b[i..i+8). */
function roundAt(accHi: number, accLo: number, b: Uint8Array, i: number): void {
  mul64(readU32LE(b, i + 4), readU32LE(b, i), P2H, P2L);
  add64(accHi, accLo, r64[0]!, r64[1]!);
  rotl64(r64[0]!, r64[1]!, 31);
  mul64(r64[0]!, r64[1]!, P1H, P1L);
}

/** r64 = round(0, v) = rotl(v * P2, 31) * P1. */
function roundZero(vHi: number, vLo: number): void {
  mul64(vHi, vLo, P2H, P2L);
  rotl64(r64[0]!, r64[1]!, 31);
  mul64(r64[0]!, r64[1]!, P1H, P1L);
}

/** r64 = (acc ^ round(0, v)) * P1 + P4. */
function mergeRound(accHi: number, accLo: number, vHi: number, vLo: number): void {
  roundZero(vHi, vLo);
  mul64((accHi ^ r64[0]!) >>> 0, (accLo ^ r64[1]!) >>> 0, P1H, P1L);
  add64(r64[0]!, r64[1]!, P4H, P4L);
}

/**
 * XXH64(bytes, seed = 0). Writes the hash to `out` as [hi, lo] (uint32 halves).
 */
export function xxh64Into(b: Uint8Array, out: Uint32Array): void {
  const len = b.length;
  let i = 0;
  let hHi: number, hLo: number;
  if (len >= 32) {
    // seed = 0: v1 = P1 + P2, v2 = P2, v3 = 0, v4 = -P1 (all mod 2^64).
    add64(P1H, P1L, P2H, P2L);
    let v1h = r64[0]!, v1l = r64[1]!;
    let v2h = P2H, v2l = P2L;
    let v3h = 0, v3l = 0;
    // -P1 mod 2^64 = ~P1 + 1
    add64(~P1H >>> 0, ~P1L >>> 0, 0, 1);
    let v4h = r64[0]!, v4l = r64[1]!;
    const limit = len - 32;
    while (i <= limit) {
      roundAt(v1h, v1l, b, i); v1h = r64[0]!; v1l = r64[1]!;
      roundAt(v2h, v2l, b, i + 8); v2h = r64[0]!; v2l = r64[1]!;
      roundAt(v3h, v3l, b, i + 16); v3h = r64[0]!; v3l = r64[1]!;
      roundAt(v4h, v4l, b, i + 24); v4h = r64[0]!; v4l = r64[1]!;
      i += 32;
    }
    rotl64(v1h, v1l, 1);
    let aH = r64[0]!, aL = r64[1]!;
    rotl64(v2h, v2l, 7);
    add64(aH, aL, r64[0]!, r64[1]!); aH = r64[0]!; aL = r64[1]!;
    rotl64(v3h, v3l, 12);
    add64(aH, aL, r64[0]!, r64[1]!); aH = r64[0]!; aL = r64[1]!;
    rotl64(v4h, v4l, 18);
    add64(aH, aL, r64[0]!, r64[1]!); aH = r64[0]!; aL = r64[1]!;
    mergeRound(aH, aL, v1h, v1l); aH = r64[0]!; aL = r64[1]!;
    mergeRound(aH, aL, v2h, v2l); aH = r64[0]!; aL = r64[1]!;
    mergeRound(aH, aL, v3h, v3l); aH = r64[0]!; aL = r64[1]!;
    mergeRound(aH, aL, v4h, v4l);
    hHi = r64[0]!; hLo = r64[1]!;
  } else {
    hHi = P5H; hLo = P5L; // seed + P5
  }
  // h += length (as a 64-bit value; a Buffer is far below 2^53 bytes)
  add64(hHi, hLo, Math.floor(len / 4294967296) >>> 0, len >>> 0);
  hHi = r64[0]!; hLo = r64[1]!;

  // Remaining 8-byte lanes: h = rotl(h ^ round(0, lane), 27) * P1 + P4
  while (i + 8 <= len) {
    roundZero(readU32LE(b, i + 4), readU32LE(b, i));
    rotl64((hHi ^ r64[0]!) >>> 0, (hLo ^ r64[1]!) >>> 0, 27);
    mul64(r64[0]!, r64[1]!, P1H, P1L);
    add64(r64[0]!, r64[1]!, P4H, P4L);
    hHi = r64[0]!; hLo = r64[1]!;
    i += 8;
  }
  // A remaining 4-byte lane: h = rotl(h ^ (lane32 * P1), 23) * P2 + P3
  if (i + 4 <= len) {
    mul64(0, readU32LE(b, i), P1H, P1L);
    rotl64((hHi ^ r64[0]!) >>> 0, (hLo ^ r64[1]!) >>> 0, 23);
    mul64(r64[0]!, r64[1]!, P2H, P2L);
    add64(r64[0]!, r64[1]!, P3H, P3L);
    hHi = r64[0]!; hLo = r64[1]!;
    i += 4;
  }
  // Remaining single bytes: h = rotl(h ^ (byte * P5), 11) * P1
  while (i < len) {
    mul64(0, b[i]!, P5H, P5L);
    rotl64((hHi ^ r64[0]!) >>> 0, (hLo ^ r64[1]!) >>> 0, 11);
    mul64(r64[0]!, r64[1]!, P1H, P1L);
    hHi = r64[0]!; hLo = r64[1]!;
    i += 1;
  }
  // Avalanche: h ^= h >> 33; h *= P2; h ^= h >> 29; h *= P3; h ^= h >> 32
  xorShiftRightHigh64(hHi, hLo, 33);
  mul64(r64[0]!, r64[1]!, P2H, P2L);
  xorShiftRight64(r64[0]!, r64[1]!, 29);
  mul64(r64[0]!, r64[1]!, P3H, P3L);
  xorShiftRightHigh64(r64[0]!, r64[1]!, 32);
  out[0] = r64[0]!;
  out[1] = r64[1]!;
}

const scratch = new Uint32Array(2);

/** XXH64(bytes, seed = 0) as an unsigned BigInt (tests, docs, tooling; allocates). */
export function xxh64(bytes: Uint8Array): bigint {
  xxh64Into(bytes, scratch);
  return toBigInt(scratch[0]!, scratch[1]!);
}
