/**
 * Weighted rendezvous hashing (HRW), the stickiness rule of design.md §5. Byte-level spec and golden
 * vectors: docs/design/hashing.md. In short, for a key K and a server named N with weight w > 0:
 *   k = XXH64(K, seed 0)                      once per pick, over the raw key bytes
 *   n = XXH64(UTF-8 bytes of N, seed 0)       once per server name, cached
 *   h = mix64(k XOR n)                        splitmix64 finalizer
 *   u = (floor(h / 2^12) + 0.5) / 2^52        the top 52 bits, as a double strictly inside (0, 1)
 *   score = w / -ln(u)                        ln = fdlibm log; highest score wins,
 *                                             equal scores: the byte-wise smaller UTF-8 name wins
 * Why this shape: -ln(u) of a uniform u is Exp(1)-distributed, so w / -ln(u) is the largest for a
 * server with probability w / sum(w) (the "logarithmic method" of Schindelhauer & Schomaker, as in
 * Resch's weighted rendezvous). Scores depend only on (key, name, weight): adding or removing a
 * server changes no other server's score, which is why only the keys the new server wins move.
 */
import { fdlibmLog } from './fdlibm-log.js';
import { mix64 } from './mix64.js';
import { r64, toBigInt } from './uint64.js';
import { xxh64Into } from './xxh64.js';

const TWO_20 = 1048576;
const TWO_52 = 4503599627370496;

/**
 * The score of one server for one key, from the key's hash (hi, lo), the server name's hash
 * (hi, lo) and the server's weight (> 0). Deterministic to the last bit.
 */
export function rendezvousScore(keyHi: number, keyLo: number, nameHi: number, nameLo: number, weight: number): number {
  mix64((keyHi ^ nameHi) >>> 0, (keyLo ^ nameLo) >>> 0);
  // Top 52 bits: m < 2^52, so m + 0.5 and the division by 2^52 are exact, and u can be neither 0 nor 1.
  const m = r64[0]! * TWO_20 + (r64[1]! >>> 12);
  const u = (m + 0.5) / TWO_52;
  return weight / -fdlibmLog(u);
}

/** The byte-wise order of names used to break equal scores (and to give servers a stable rank). */
export function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** XXH64 of a server name's UTF-8 bytes, written to `out` as [hi, lo]. */
export function nameHashInto(name: string, out: Uint32Array): void {
  xxh64Into(Buffer.from(name, 'utf8'), out);
}

export interface WeightedName {
  readonly name: string;
  readonly weight: number;
}

export interface RankedName {
  readonly name: string;
  readonly weight: number;
  readonly score: number;
}

/**
 * Every server with weight > 0 ordered best first for `key` (the pick, then the retry order).
 * A plain, allocating reference of the rule for tooling, docs and tests; the pool uses the same
 * `rendezvousScore` with cached name hashes and no allocation.
 */
export function rendezvousOrder(key: Uint8Array, servers: readonly WeightedName[]): RankedName[] {
  const k = new Uint32Array(2);
  const n = new Uint32Array(2);
  xxh64Into(key, k);
  const ranked: RankedName[] = [];
  for (const s of servers) {
    if (!(s.weight > 0)) continue; // weight 0 = never picked
    nameHashInto(s.name, n);
    ranked.push({ name: s.name, weight: s.weight, score: rendezvousScore(k[0]!, k[1]!, n[0]!, n[1]!, s.weight) });
  }
  ranked.sort((a, b) => (a.score !== b.score ? b.score - a.score : compareNames(a.name, b.name)));
  return ranked;
}

/** The 64-bit combined hash mix64(XXH64(key) ^ XXH64(name)) as a BigInt (docs and golden tests). */
export function combinedHash(key: Uint8Array, name: string): bigint {
  const k = new Uint32Array(2);
  const n = new Uint32Array(2);
  xxh64Into(key, k);
  nameHashInto(name, n);
  mix64((k[0]! ^ n[0]!) >>> 0, (k[1]! ^ n[1]!) >>> 0);
  return toBigInt(r64[0]!, r64[1]!);
}
