/**
 * The failover advert datagram (design.md §6b), big-endian, 62 bytes:
 *
 *   0  magic "MQLB"          4
 *   4  version = 1           1
 *   5  router id             1
 *   6  priority (0 = resign) 1
 *   7  flags                 1   bit 0: sender is MASTER, bit 1: sender in FAULT
 *   8  interval (cs)         2
 *  10  key id                4   first 4 bytes of SHA-256(key)
 *  14  boot epoch (ms)       8
 *  22  counter               8
 *  30  HMAC-SHA256          32   over bytes 0..29
 *
 * Node cannot see the IP TTL of a received datagram, so VRRP's TTL=255 "link-local only" check is impossible:
 * the HMAC and the (epoch, counter) replay window are what keep injected or replayed adverts out.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

export const ADVERT_LENGTH = 62;
export const ADVERT_VERSION = 1;
export const ADVERT_MAGIC = Buffer.from('MQLB', 'latin1');
export const FLAG_MASTER = 0x01;
export const FLAG_FAULT = 0x02;

const OFF_VERSION = 4;
const OFF_ROUTER_ID = 5;
const OFF_PRIORITY = 6;
const OFF_FLAGS = 7;
const OFF_INTERVAL = 8;
const OFF_KEY_ID = 10;
const OFF_EPOCH = 14;
const OFF_COUNTER = 22;
const OFF_HMAC = 30;
const U64_MAX = (1n << 64n) - 1n;

/** Metric label values of `mqtt_lb_failover_adverts_dropped_total{reason}` (design.md §6). */
export type DropReason = 'bad_hmac' | 'replay' | 'router_id' | 'malformed';
export const DROP_REASONS: readonly DropReason[] = ['bad_hmac', 'replay', 'router_id', 'malformed'];

export interface AdvertFields {
  routerId: number; // 1..255
  priority: number; // 0..255
  flags: number; // FLAG_MASTER | FLAG_FAULT
  intervalCs: number; // 1..65535 centiseconds
  bootEpoch: bigint; // sender's wall clock (ms) at start
  counter: bigint; // per boot, increasing
}

export type DecodeResult = { ok: true; advert: AdvertFields } | { ok: false; reason: DropReason };

/** First 4 bytes of SHA-256 of the key: lets a receiver tell "other key" from "tampered" without trying keys. */
export function keyIdOf(key: Buffer): Buffer {
  return createHash('sha256').update(key).digest().subarray(0, 4);
}

/** Advert interval in centiseconds as carried on the wire (rounded, clamped to the u16 field, never 0). */
export function intervalToCentiseconds(ms: number): number {
  return Math.min(0xffff, Math.max(1, Math.round(ms / 10)));
}

export class AdvertCodec {
  private readonly key: Buffer;
  readonly keyId: Buffer;

  constructor(key: Buffer) {
    if (key.length === 0) throw new RangeError('advert key must not be empty');
    this.key = Buffer.from(key);
    this.keyId = keyIdOf(this.key);
  }

  encode(f: AdvertFields): Buffer {
    checkInt('routerId', f.routerId, 1, 255);
    checkInt('priority', f.priority, 0, 255);
    checkInt('flags', f.flags, 0, 255);
    checkInt('intervalCs', f.intervalCs, 1, 0xffff);
    if (f.bootEpoch < 0n || f.bootEpoch > U64_MAX) throw new RangeError('bootEpoch out of u64 range');
    if (f.counter < 0n || f.counter > U64_MAX) throw new RangeError('counter out of u64 range');
    const buf = Buffer.allocUnsafe(ADVERT_LENGTH);
    ADVERT_MAGIC.copy(buf, 0);
    buf[OFF_VERSION] = ADVERT_VERSION;
    buf[OFF_ROUTER_ID] = f.routerId;
    buf[OFF_PRIORITY] = f.priority;
    buf[OFF_FLAGS] = f.flags;
    buf.writeUInt16BE(f.intervalCs, OFF_INTERVAL);
    this.keyId.copy(buf, OFF_KEY_ID);
    buf.writeBigUInt64BE(f.bootEpoch, OFF_EPOCH);
    buf.writeBigUInt64BE(f.counter, OFF_COUNTER);
    this.mac(buf).copy(buf, OFF_HMAC);
    return buf;
  }

  /**
   * Structure first (length, magic, version: `malformed`), then authenticity (key id, HMAC: `bad_hmac`),
   * then field sanity of an authentic datagram (`malformed`). Router id and replay are the receiver's checks.
   */
  decode(buf: Buffer): DecodeResult {
    if (buf.length !== ADVERT_LENGTH) return { ok: false, reason: 'malformed' };
    if (!buf.subarray(0, 4).equals(ADVERT_MAGIC)) return { ok: false, reason: 'malformed' };
    if (buf[OFF_VERSION] !== ADVERT_VERSION) return { ok: false, reason: 'malformed' };
    if (!timingSafeEqual(buf.subarray(OFF_KEY_ID, OFF_KEY_ID + 4), this.keyId)) return { ok: false, reason: 'bad_hmac' };
    if (!timingSafeEqual(buf.subarray(OFF_HMAC, ADVERT_LENGTH), this.mac(buf))) return { ok: false, reason: 'bad_hmac' };
    const routerId = buf[OFF_ROUTER_ID]!;
    const intervalCs = buf.readUInt16BE(OFF_INTERVAL);
    // An authentic advert with router id 0 or interval 0 cannot come from a correct sender.
    if (routerId === 0 || intervalCs === 0) return { ok: false, reason: 'malformed' };
    return {
      ok: true,
      advert: {
        routerId,
        priority: buf[OFF_PRIORITY]!,
        flags: buf[OFF_FLAGS]!,
        intervalCs,
        bootEpoch: buf.readBigUInt64BE(OFF_EPOCH),
        counter: buf.readBigUInt64BE(OFF_COUNTER),
      },
    };
  }

  private mac(buf: Buffer): Buffer {
    return createHmac('sha256', this.key).update(buf.subarray(0, OFF_HMAC)).digest();
  }
}

function checkInt(name: string, v: number, min: number, max: number): void {
  if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(`${name} must be an integer in ${min}..${max}, got ${v}`);
}
