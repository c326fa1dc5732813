/**
 * The splitmix64 output finalizer (David Stafford's "Mix13" variant of MurmurHash3's fmix64),
 * as in java.util.SplittableRandom and Vigna's splitmix64.c:
 *   z = (z ^ (z >>> 30)) * 0xbf58476d1ce4e5b9
 *   z = (z ^ (z >>> 27)) * 0x94d049bb133111eb
 *   z =  z ^ (z >>> 31)
 * A bijection on 64-bit values with full avalanche (each input bit flips each output bit with
 * probability ~1/2). Stafford selected these constants as the best of his search on avalanche and
 * bit-independence, ahead of MurmurHash3's own fmix64.
 */
import { mul64, r64, xorShiftRight64 } from './uint64.js';

/** Writes mix64(hi:lo) to r64. */
export function mix64(hi: number, lo: number): void {
  xorShiftRight64(hi, lo, 30);
  mul64(r64[0]!, r64[1]!, 0xbf58476d, 0x1ce4e5b9);
  xorShiftRight64(r64[0]!, r64[1]!, 27);
  mul64(r64[0]!, r64[1]!, 0x94d049bb, 0x133111eb);
  xorShiftRight64(r64[0]!, r64[1]!, 31);
}
