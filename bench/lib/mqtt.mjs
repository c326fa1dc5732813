/**
 * Prebuilt MQTT 3.1.1 (or 5.0: `level` 5, every property list empty) packets and a zero-copy frame counter for the
 * load generator.
 * Packets are built once per connection (CONNECT, SUBSCRIBE) or once per run (PUBLISH batches), so the
 * send path does no encoding at all: it writes the same immutable Buffer again and again.
 */

/** MQTT Remaining Length: 7 bits per byte, high bit = more bytes follow (spec 2.2.3). */
export function encodeRemainingLength(n) {
  const out = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return Buffer.from(out);
}

export function packet(typeAndFlags, body) {
  return Buffer.concat([Buffer.from([typeAndFlags]), encodeRemainingLength(body.length), body]);
}

export function utf8Field(s) {
  const b = Buffer.from(s, 'utf8');
  const out = Buffer.allocUnsafe(2 + b.length);
  out.writeUInt16BE(b.length, 0);
  b.copy(out, 2);
  return out;
}

/** A 5.0 packet's empty property list (Property Length 0); nothing at 3.1.1. */
function noProperties(level) {
  return level === 5 ? Buffer.from([0x00]) : Buffer.alloc(0);
}

/** CONNECT, protocol level `level`, clean session, keep-alive 0 (no broker-side timeout while connections are held). */
export function connectPacket(clientId, level = 4) {
  const variable = Buffer.from([0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, level, 0x02, 0x00, 0x00]);
  return packet(0x10, Buffer.concat([variable, noProperties(level), utf8Field(clientId)]));
}

export function subscribePacket(packetId, topicFilter, level = 4) {
  const id = Buffer.from([packetId >> 8, packetId & 0xff]);
  return packet(0x82, Buffer.concat([id, noProperties(level), utf8Field(topicFilter), Buffer.from([0x00])]));
}

/** PUBLISH QoS 0 (no packet identifier). */
export function publishPacket(topic, payload, level = 4) {
  return packet(0x30, Buffer.concat([utf8Field(topic), noProperties(level), payload]));
}

/** A PUBLISH body's payload offset from its topic's end: the Property Length's bytes and the properties at 5.0. */
export function propertiesLength(level, buf, at) {
  if (level !== 5) return 0;
  let len = 0;
  let mult = 1;
  let i = at;
  for (;;) {
    const b = buf[i++];
    len += (b & 0x7f) * mult;
    mult *= 128;
    if ((b & 0x80) === 0) return i - at + len;
  }
}

export const DISCONNECT = Buffer.from([0xe0, 0x00]);
export const CONNACK_TYPE = 2;
export const PUBLISH_TYPE = 3;
export const SUBACK_TYPE = 9;

/**
 * Counts MQTT packets in a byte stream without copying: bodies are skipped in bulk, only the 2-5 header
 * bytes of each packet are looked at. Headers split across reads are handled by the small state machine.
 * onPacket(type, chunk, bodyStart, bodyLength) is called only for packets whose body is wholly in one chunk
 * when `wantBodies` is set (the latency probe); otherwise counters only.
 */
export class FrameCounter {
  constructor() {
    this.publishes = 0;
    this.others = 0;
    this.lastOtherType = 0;
    this.skip = 0; // body bytes of the current packet still to skip
    this.stage = 0; // 0: expect type byte, 1: in remaining length
    this.type = 0;
    this.len = 0;
    this.mult = 1;
  }

  /** Counts the frames in chunk[start, end). Nothing is retained: the chunk may be a reused read buffer. */
  push(chunk, start = 0, end = chunk.length) {
    const n = end;
    let i = start;
    while (i < n) {
      if (this.skip > 0) {
        const left = n - i;
        if (this.skip >= left) {
          this.skip -= left;
          return;
        }
        i += this.skip;
        this.skip = 0;
        continue;
      }
      const b = chunk[i++];
      if (this.stage === 0) {
        this.type = b >> 4;
        this.len = 0;
        this.mult = 1;
        this.stage = 1;
        continue;
      }
      this.len += (b & 0x7f) * this.mult;
      this.mult *= 128;
      if ((b & 0x80) !== 0) continue;
      this.stage = 0;
      this.skip = this.len;
      if (this.type === PUBLISH_TYPE) this.publishes++;
      else {
        this.others++;
        this.lastOtherType = this.type;
      }
    }
  }
}

/**
 * Reassembles whole packets (for the latency probe, where the payload carries a timestamp). Only used at a
 * fixed, modest rate, so copying partial packets is fine here.
 */
export class PacketReader {
  constructor(onPacket) {
    this.onPacket = onPacket; // (type, buf, bodyOffset, bodyLength)
    this.pending = null;
  }

  push(chunk) {
    let buf = chunk;
    if (this.pending !== null) {
      buf = Buffer.concat([this.pending, chunk]);
      this.pending = null;
    }
    let i = 0;
    const n = buf.length;
    for (;;) {
      if (i >= n) return;
      let len = 0;
      let mult = 1;
      let j = i + 1;
      let complete = false;
      while (j < n) {
        const b = buf[j++];
        len += (b & 0x7f) * mult;
        mult *= 128;
        if ((b & 0x80) === 0) {
          complete = true;
          break;
        }
      }
      if (!complete || j + len > n) {
        this.pending = Buffer.from(buf.subarray(i));
        return;
      }
      this.onPacket(buf[i] >> 4, buf, j, len);
      i = j + len;
    }
  }
}
