/**
 * Natural logarithm, a port of fdlibm 5.3 `__ieee754_log` (e_log.c, Sun Microsystems 1993;
 * the same code is Java's StrictMath.log and V8's Math.log via base/ieee754.cc).
 * Why our own copy instead of Math.log: ECMAScript leaves Math.log's rounding to the implementation,
 * and the rendezvous score must be bit-identical on every host, runtime and version (and reproducible
 * in another language). This function uses only IEEE 754 +, -, *, / on doubles, which every conforming
 * platform rounds the same way, so its result is fixed.
 * Error < 1 ulp. Input here is always a normal number in (0, 1); the special cases are kept anyway.
 * Checked bit-for-bit against V8's Math.log over millions of inputs (test/unit/balancer-hash.test.ts).
 */

const ln2Hi = 6.93147180369123816490e-1; // 0x3fe62e42 fee00000
const ln2Lo = 1.90821492927058770002e-10; // 0x3dea39ef 35793c76
const two54 = 1.8014398509481984e16; // 0x43500000 00000000
const Lg1 = 6.666666666666735130e-1; // 0x3fe55555 55555593
const Lg2 = 3.999999999940941908e-1; // 0x3fd99999 9997fa04
const Lg3 = 2.857142874366239149e-1; // 0x3fd24924 94229359
const Lg4 = 2.222219843214978396e-1; // 0x3fcc71c5 1d8e78af
const Lg5 = 1.818357216161805012e-1; // 0x3fc74664 96cb03de
const Lg6 = 1.531383769920937332e-1; // 0x3fc39a09 d078c69f
const Lg7 = 1.479819860511658591e-1; // 0x3fc2f112 df3e5244

// One shared view for reading the high 32-bit word of a double (found once: host byte order).
const f64 = new Float64Array(1);
const u32 = new Uint32Array(f64.buffer);
f64[0] = 1; // 0x3ff00000 00000000
const HI = u32[1] === 0x3ff00000 ? 1 : 0;
const LO = 1 - HI;

// POW2[1100 + e] = 2^e for e in [-1074, 1023] (exact: powers of two are representable down to 2^-1074).
const POW2 = new Float64Array(1100 + 1024);
for (let e = -1074; e <= 1023; e++) POW2[1100 + e] = Math.pow(2, e);

export function fdlibmLog(xIn: number): number {
  let x = xIn;
  f64[0] = x;
  let hx = u32[HI]! | 0; // signed, as the C code's int
  let k = 0;
  if (hx < 0x00100000) {
    // x < 2^-1022
    if (((hx & 0x7fffffff) | u32[LO]!) === 0) return -Infinity; // log(+-0)
    if (hx < 0) return NaN; // log(negative)
    k -= 54;
    x *= two54; // subnormal: scale up
    f64[0] = x;
    hx = u32[HI]! | 0;
  }
  if (hx >= 0x7ff00000) return x + x; // Inf or NaN
  const e = (hx >> 20) - 1023;
  hx &= 0x000fffff;
  const i0 = (hx + 0x95f64) & 0x100000;
  // fdlibm sets the exponent field to 0x3ff (or 0x3fe when i0 is set) to normalize x or x/2 into
  // [sqrt(2)/2, sqrt(2)). Multiplying by the exact power of two gives the same bits without a store.
  const shift = e + (i0 >> 20);
  x *= POW2[1100 - shift]!;
  k += shift;
  const f = x - 1.0;
  let dk: number;
  if ((0x000fffff & (2 + hx)) < 3) {
    // -2^-20 <= f < 2^-20
    if (f === 0) {
      if (k === 0) return 0;
      dk = k;
      return dk * ln2Hi + dk * ln2Lo;
    }
    const R = f * f * (0.5 - 0.33333333333333333 * f);
    if (k === 0) return f - R;
    dk = k;
    return dk * ln2Hi - (R - dk * ln2Lo - f);
  }
  const s = f / (2.0 + f);
  dk = k;
  const z = s * s;
  let i = hx - 0x6147a;
  const w = z * z;
  const j = 0x6b851 - hx;
  const t1 = w * (Lg2 + w * (Lg4 + w * Lg6));
  const t2 = z * (Lg1 + w * (Lg3 + w * (Lg5 + w * Lg7)));
  i |= j;
  const R = t2 + t1;
  if (i > 0) {
    const hfsq = 0.5 * f * f;
    if (k === 0) return f - (hfsq - s * (hfsq + R));
    return dk * ln2Hi - (hfsq - (s * (hfsq + R) + dk * ln2Lo) - f);
  }
  if (k === 0) return f - s * (f - R);
  return dk * ln2Hi - (s * (f - R) - dk * ln2Lo - f);
}
