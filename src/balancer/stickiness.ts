/**
 * Which CONNECTs hashing cannot keep sticky, for the `empty_client_id_persistent` count (design.md §5).
 * A zero-length client ID carries no key: the session is placed by the pool's fallback, and the
 * broker assigns the client an ID [MQTT-3.1.3-6] that it will present on its next connection, which
 * then hashes to wherever that ID belongs, usually another broker. That only loses something when
 * the client asked for session state that outlives the connection.
 */

export interface ConnectStickinessFacts {
  /** The CONNECT protocol level byte (the bridge bit 0x80 is ignored). */
  protocolLevel: number;
  clientIdLength: number;
  /** MQTT 5 Session Expiry Interval in seconds (property 0x11); absent = 0. Ignored before MQTT 5. */
  sessionExpiryInterval: number;
}

/**
 * True for an MQTT 5 CONNECT with an empty client ID and a Session Expiry Interval above 0: the
 * session is meant to survive a disconnect [MQTT-3.1.2-23] but the reconnect (with the assigned ID)
 * may reach another broker. Before MQTT 5 an empty ID is only allowed with CleanSession = 1
 * [MQTT-3.1.3-7] (the broker refuses it otherwise [MQTT-3.1.3-8]), so no session is lost there.
 */
export function isEmptyClientIdPersistent(c: ConnectStickinessFacts): boolean {
  return (c.protocolLevel & 0x7f) === 5 && c.clientIdLength === 0 && c.sessionExpiryInterval > 0;
}
