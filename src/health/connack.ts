/**
 * Reads the broker's answer to the probe's CONNECT. Pure: bytes in, verdict out.
 * Only what a health check needs: is the first packet a well-formed CONNACK, and does it say success.
 */
import { VBI_INCOMPLETE, readVbi, vbiBytes } from '../proxy/variable-byte-integer.js';

export type ConnackVerdict =
  | { kind: 'incomplete' }
  | { kind: 'accepted' }
  | { kind: 'refused'; detail: string }
  | { kind: 'malformed'; detail: string };

const INCOMPLETE: ConnackVerdict = { kind: 'incomplete' };
const ACCEPTED: ConnackVerdict = { kind: 'accepted' };
const CONNACK_FIRST_BYTE = 0x20; // type 2, flags 0000 [MQTT-2.2.2-1]

/**
 * Largest CONNACK read whole (v5 properties may carry a reason string and user properties); a longer one is judged on
 * its flags and reason code alone (a 5.0 audit: a broker whose CONNACK carried 76 KB of user properties was marked
 * down, while its clients were served).
 */
export const MAX_CONNACK_BYTES = 65_536;

/**
 * Decide on the bytes received so far (from the start of the connection).
 * `version` is the protocol level the probe sent: 3, 4 or 5.
 */
export function readConnack(buf: Buffer, version: 3 | 4 | 5): ConnackVerdict {
  if (buf.length === 0) return INCOMPLETE;
  // [MQTT-3.2.0-1] the first packet from the server MUST be CONNACK.
  if (buf[0] !== CONNACK_FIRST_BYTE) {
    return { kind: 'malformed', detail: `first packet is not CONNACK (byte 0x${buf[0]!.toString(16).padStart(2, '0')})` };
  }
  // Remaining Length: variable byte integer, at most 4 bytes (MQTT 3.1.1 §2.2.3, [MQTT-1.5.5-1]).
  const remaining = readVbi(buf, 1, buf.length, false);
  if (remaining === VBI_INCOMPLETE) return INCOMPLETE;
  if (remaining < 0) return { kind: 'malformed', detail: 'remaining length longer than 4 bytes' };
  const pos = 1 + vbiBytes;
  if (version < 5 && remaining !== 2) {
    // MQTT 3.1 / 3.1.1 §3.2.1: the variable header is exactly 2 bytes, no payload.
    return { kind: 'malformed', detail: `CONNACK remaining length ${remaining}, expected 2` };
  }
  if (remaining < 2) return { kind: 'malformed', detail: `CONNACK remaining length ${remaining}` };
  const whole = pos + remaining <= MAX_CONNACK_BYTES;
  if (buf.length < (whole ? pos + remaining : pos + 2)) return INCOMPLETE;
  if (whole && version === 5 && remaining > 2) {
    // The property length, then the properties, fill the rest exactly: a CONNACK has no payload (v5 §3.2.3).
    const properties = readVbi(buf, pos + 2, pos + remaining, false);
    if (properties < 0 || pos + 2 + vbiBytes + properties !== pos + remaining) {
      return { kind: 'malformed', detail: 'CONNACK property length does not match its remaining length' };
    }
  }
  const flags = buf[pos]!;
  const code = buf[pos + 1]!;
  // Bits 7-1 of the acknowledge flags are reserved and MUST be 0 (v5 [MQTT-3.2.2-1]; 3.1.1 §3.2.2.1).
  if ((flags & 0xfe) !== 0) return { kind: 'malformed', detail: `CONNACK flags 0x${flags.toString(16)}` };
  // 3.1.1 §3.2.2.3: return code 0 = accepted; v5 §3.2.2.2: reason code 0x00 = Success, anything else refuses.
  if (code === 0) return ACCEPTED;
  const name = (version < 5 ? RETURN_CODES : REASON_CODES).get(code);
  const said = version < 5 ? `CONNACK return code ${code}` : `CONNACK reason code 0x${code.toString(16).padStart(2, '0')}`;
  return { kind: 'refused', detail: name === undefined ? said : `${said} (${name})` };
}

/**
 * What a refusal means, with what to do where it is the probe's own doing (a new user's audit: a broker that wants a
 * login gave `CONNACK return code 5` and nothing more). MQTT 3.1.1 §3.2.2.3.
 */
const PROBE_CREDENTIALS = 'set or check the pool\'s health.mqtt.username and password';
const RETURN_CODES: ReadonlyMap<number, string> = new Map([
  [1, 'unacceptable protocol version: set the pool\'s health.mqtt.version'],
  [2, 'identifier rejected: set the pool\'s health.mqtt.clientId'],
  [3, 'server unavailable'],
  [4, `bad user name or password: ${PROBE_CREDENTIALS}`],
  [5, `not authorized: ${PROBE_CREDENTIALS}, or allow the probe's client ID`],
]);
/** MQTT 5.0 §3.2.2.2, the ones a probe may meet. */
const REASON_CODES: ReadonlyMap<number, string> = new Map([
  [0x80, 'unspecified error'],
  [0x81, 'malformed packet'],
  [0x82, 'protocol error'],
  [0x83, 'implementation specific error'],
  [0x84, 'unsupported protocol version: set the pool\'s health.mqtt.version'],
  [0x85, 'client identifier not valid: set the pool\'s health.mqtt.clientId'],
  [0x86, `bad user name or password: ${PROBE_CREDENTIALS}`],
  [0x87, `not authorized: ${PROBE_CREDENTIALS}, or allow the probe's client ID`],
  [0x88, 'server unavailable'],
  [0x89, 'server busy'],
  [0x8a, 'banned'],
  [0x8c, 'bad authentication method'],
  [0x97, 'quota exceeded'],
  [0x9f, 'connection rate exceeded'],
]);
