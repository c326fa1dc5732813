/**
 * Unsigned 64-bit arithmetic on (hi, lo) pairs of uint32 numbers, for the hashes in this folder.
 * Why not BigInt: every BigInt operation allocates, and the key hash runs on every CONNECT over
 * up to 65,535 bytes. Results go to the module-level register `r64` ([0] = high word, [1] = low word)
 * so nothing is allocated; callers copy them into locals straight away (the next operation
 * overwrites them). A Uint32Array rather than an object: its stores wrap modulo 2^32 for free and
 * never box a number (measured about 2x faster than object fields on V8 11).
 * Inputs are integers in [0, 2^32); every intermediate stays below 2^53, so double arithmetic is exact.
 */

/** Result register of the last operation: [high word, low word]. */
export const r64 = new Uint32Array(2);

const TWO_32 = 4294967296;

/** r64 = (aHi:aLo * bHi:bLo) mod 2^64. */
export function mul64(aHi: number, aLo: number, bHi: number, bLo: number): void {
  // aLo * bLo needs all 64 bits: Math.imul gives the low word; the high word comes from 16-bit
  // halves (each partial product < 2^32, exact in a double).
  const a0 = aLo & 0xffff;
  const a1 = aLo >>> 16;
  const b0 = bLo & 0xffff;
  const b1 = bLo >>> 16;
  const t = a0 * b0;
  const m1 = a1 * b0;
  const m2 = a0 * b1;
  const carries = (t >>> 16) + (m1 & 0xffff) + (m2 & 0xffff); // < 3 * 2^16
  const loHi = a1 * b1 + (m1 >>> 16) + (m2 >>> 16) + (carries >>> 16); // high word of aLo * bLo
  r64[1] = Math.imul(aLo, bLo);
  // The cross terms only matter mod 2^32: Math.imul gives exactly that; the store wraps the sum.
  r64[0] = loHi + Math.imul(aHi, bLo) + Math.imul(aLo, bHi);
}

/** r64 = (a + b) mod 2^64. */
export function add64(aHi: number, aLo: number, bHi: number, bLo: number): void {
  const lo = aLo + bLo;
  r64[1] = lo;
  r64[0] = aHi + bHi + (lo >= TWO_32 ? 1 : 0);
}

/** r64 = rotate-left(a, n) for 0 < n < 32. */
export function rotl64(hi: number, lo: number, n: number): void {
  r64[0] = (hi << n) | (lo >>> (32 - n));
  r64[1] = (lo << n) | (hi >>> (32 - n));
}

/** r64 = a ^ (a >>> n) for 0 < n < 32 (the xorshift step of the finalizers). */
export function xorShiftRight64(hi: number, lo: number, n: number): void {
  r64[1] = lo ^ ((lo >>> n) | (hi << (32 - n)));
  r64[0] = hi ^ (hi >>> n);
}

/** r64 = a ^ (a >>> n) for 32 <= n < 64. */
export function xorShiftRightHigh64(hi: number, lo: number, n: number): void {
  r64[1] = lo ^ (hi >>> (n - 32));
  r64[0] = hi;
}

/** A (hi, lo) pair as an unsigned BigInt: for tests, docs and logs, never on the hot path. */
export function toBigInt(hi: number, lo: number): bigint {
  return (BigInt(hi) << 32n) | BigInt(lo);
}

/** 16 lower-case hex digits, zero-padded. */
export function toHex64(hi: number, lo: number): string {
  return hi.toString(16).padStart(8, '0') + lo.toString(16).padStart(8, '0');
}
