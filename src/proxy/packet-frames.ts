/**
 * Where a 5.0 server's packets begin and end in its byte stream towards the client, so that a session the balancer
 * closes can be told why with a DISCONNECT of its own, put between two of the server's packets and never inside one.
 *
 * Only the fixed headers are read (type, Remaining Length), and the first CONNACK's Reason Code: a DISCONNECT may go
 * to a client only after a CONNACK that accepted it [MQTT-3.14.0-1]. One object per 5.0 session, no allocation per
 * read; a read of N whole packets costs N header decodes.
 */

/** Packet types (the fixed header's high nibble) this needs to know. */
const CONNACK = 2;
const DISCONNECT = 14;

/** connackCode before the server's CONNACK began. */
const NO_CONNACK = -1;
/** connackCode inside the CONNACK, before its Reason Code (its second byte) has been read. */
const IN_CONNACK = -2;
/**
 * The one CONNACK Reason Code that accepts a 5.0 client (3.2.2.2): below 0x80 there is no other, and a 3.1.1-layout
 * refusal a broker of the older version sends (return code 1, unacceptable protocol version) must not read as one.
 */
const SUCCESS = 0;
/** connackCode for a CONNACK too short to hold a Reason Code: as a refusal. */
const SHORT_CONNACK = 0x100;

export class PacketFrames {
  /** Bytes of the current packet's body still to come. */
  private left = 0;
  /** Bytes of the current fixed header read so far; 0 outside one. */
  private headerRead = 0;
  /** The Remaining Length decoded so far, and the shift of its next byte. */
  private length = 0;
  private shift = 0;
  private type = 0;
  /** The type of the last whole packet (0 before the first). */
  lastType = 0;
  /** The first CONNACK's Reason Code, once read; NO_CONNACK or IN_CONNACK before. */
  connackCode = NO_CONNACK;
  /** A fifth Remaining Length byte came [MQTT-1.5.5]: nothing of this stream can be trusted to be a boundary again. */
  broken = false;

  /** Between two packets: a DISCONNECT written now would not land inside one. */
  get atBoundary(): boolean {
    return this.left === 0 && this.headerRead === 0 && !this.broken;
  }

  /**
   * The server has accepted the client's CONNECT (Reason Code 0) [MQTT-3.14.0-1] and not told it DISCONNECT itself [MQTT-3.14.4-1:
   * nothing after a DISCONNECT], and the stream is whole: a DISCONNECT of ours may follow a packet boundary.
   */
  get mayTell(): boolean {
    return this.connackCode === SUCCESS && this.lastType !== DISCONNECT && !this.broken;
  }

  /** Reads `chunk[from..to)`, the stream's next bytes. */
  advance(chunk: Buffer, from: number, to: number): void {
    this.scan(chunk, from, to, false);
  }

  /**
   * Reads `chunk[from..to)` up to the end of the packet in progress; returns the offset just past it, or `to` when
   * that packet goes on past this read (the rest is read as the stream's next bytes).
   */
  toEndOfPacket(chunk: Buffer, from: number, to: number): number {
    return this.scan(chunk, from, to, true);
  }

  private scan(chunk: Buffer, from: number, to: number, stopAtEnd: boolean): number {
    let i = from;
    while (i < to && !this.broken) {
      if (this.left > 0) {
        const take = Math.min(this.left, to - i);
        if (this.connackCode === IN_CONNACK) {
          // The Reason Code is the body's second byte, after the Connect Acknowledge Flags (3.2.2.2).
          const read = this.length - this.left;
          if (read + take > 1) this.connackCode = chunk[i + 1 - read]!;
        }
        this.left -= take;
        i += take;
        if (this.left === 0) {
          this.lastType = this.type;
          if (stopAtEnd) return i;
        }
        continue;
      }
      const byte = chunk[i++]!;
      if (this.headerRead === 0) {
        this.type = byte >> 4;
        this.headerRead = 1;
        this.length = 0;
        this.shift = 0;
        continue;
      }
      // Remaining Length: a Variable Byte Integer of at most four bytes [MQTT-1.5.5].
      this.length |= (byte & 0x7f) << this.shift;
      this.shift += 7;
      this.headerRead++;
      if ((byte & 0x80) !== 0) {
        if (this.headerRead === 5) this.broken = true;
        continue;
      }
      this.headerRead = 0;
      this.left = this.length;
      if (this.type === CONNACK && this.connackCode === NO_CONNACK) this.connackCode = this.length < 2 ? SHORT_CONNACK : IN_CONNACK;
      if (this.left === 0) {
        this.lastType = this.type;
        if (stopAtEnd) return i;
      }
    }
    return to;
  }
}
