/**
 * L7 probe: CONNECT -> CONNACK success within the timeout, then DISCONNECT (contract §5: a port that
 * accepts TCP but never answers CONNECT is not up).
 * Clean session / clean start with no session expiry, so a probe never leaves a session behind on the
 * broker (3.1.1 [MQTT-3.1.2-6], v5 [MQTT-3.1.2-4] and Session Expiry Interval absent = 0).
 */
import type { IConnectPacket } from 'mqtt-packet';
import { generate } from '../proxy/mqtt-generate.js';
import { errorDetail, type ProbeOutcome, type SocketTarget } from './probe-outcome.js';
import { MAX_CONNACK_BYTES, readConnack } from './connack.js';
import { probeProxyHeader } from './proxy-header.js';
import { endGracefully, runSocketProbe } from './socket-probe.js';

export interface MqttProbeOptions {
  timeout: number; // ms, for connect + CONNACK together
  version: 3 | 4 | 5;
  clientId: string;
  username: string | null;
  password: string | null;
  /** The pool's `sendProxyProtocol`: the probe goes to the traffic port, so it must speak the same way. */
  proxyProtocol: 'off' | 'v1' | 'v2';
  /** Keep Alive sent in CONNECT, seconds (the probe is gone long before it matters). */
  keepalive?: number;
}

const DEFAULT_KEEPALIVE_S = 10;
/** DISCONNECT, remaining length 0 (v5: reason 0x00 Normal disconnection may be omitted, §3.14.2.1). */
const DISCONNECT = Buffer.from([0xe0, 0x00]);

/** The bytes the probe sends on connect: optional PROXY header, then CONNECT, in one write. */
export function probeConnectBytes(opts: MqttProbeOptions): Buffer {
  const packet: IConnectPacket = {
    cmd: 'connect',
    protocolId: opts.version === 3 ? 'MQIsdp' : 'MQTT', // 3.1 uses "MQIsdp" level 3; 3.1.1/5 "MQTT"
    protocolVersion: opts.version,
    clean: true,
    keepalive: opts.keepalive ?? DEFAULT_KEEPALIVE_S,
    clientId: opts.clientId,
  };
  // [MQTT-3.1.2-22] (3.1.1): a password without a username is not allowed, so the password rides only with one.
  // MQTT 5 allows it (§3.1.2.9), but mqtt-packet does not: it is written with an empty username, then cut.
  const passwordOnly = opts.version === 5 && opts.username === null && opts.password !== null;
  if (opts.username !== null || passwordOnly) {
    packet.username = opts.username ?? '';
    if (opts.password !== null) packet.password = Buffer.from(opts.password, 'utf8');
  }
  if (opts.version === 5) packet.properties = {};
  const generated = generate(packet, { protocolVersion: opts.version });
  const connect = passwordOnly ? withoutEmptyUsername(generated, Buffer.byteLength(opts.password!, 'utf8')) : generated;
  const header = probeProxyHeader(opts.proxyProtocol);
  return header ? Buffer.concat([header, connect]) : connect;
}

/**
 * A CONNECT written with an empty username right before its password (the last field): the username flag
 * cleared and its two length bytes removed, the remaining length re-encoded.
 */
function withoutEmptyUsername(connect: Buffer, passwordBytes: number): Buffer {
  let i = 1;
  while (connect[i]! & 0x80) i++;
  const body = connect.subarray(i + 1);
  const flagsAt = 2 + 4 + 1; // protocol name "MQTT", protocol level
  const usernameAt = body.length - (2 + passwordBytes) - 2;
  const out = Buffer.concat([body.subarray(0, usernameAt), body.subarray(usernameAt + 2)]);
  out[flagsAt] = out[flagsAt]! & ~0x80; // User Name Flag [MQTT-3.1.2-16]
  const lengthBytes: number[] = [];
  let n = out.length;
  do {
    lengthBytes.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
    n >>>= 7;
  } while (n > 0);
  return Buffer.concat([Buffer.from([connect[0]!, ...lengthBytes]), out]);
}

export function probeMqtt(target: SocketTarget, opts: MqttProbeOptions, signal?: AbortSignal): Promise<ProbeOutcome> {
  let firstBytes: Buffer;
  try {
    firstBytes = probeConnectBytes(opts);
  } catch (err) {
    // mqtt-packet refuses to encode (e.g. an invalid configured client ID): a result, never a rejection
    return Promise.resolve({ result: 'error', durationMs: 0, detail: errorDetail(err) });
  }
  let received: Buffer = Buffer.alloc(0);
  return runSocketProbe(target, opts.timeout, signal, {
    onConnect(probe) {
      probe.socket.write(firstBytes);
    },
    onData(probe, chunk) {
      received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
      const verdict = readConnack(received, opts.version);
      switch (verdict.kind) {
        case 'incomplete':
          // A CONNACK past MAX_CONNACK_BYTES is judged on its first bytes: more than that and still undecided is none.
          if (received.length > MAX_CONNACK_BYTES) probe.settle('bad_connack', 'answer larger than any CONNACK');
          return;
        case 'accepted':
          probe.settle('ok', undefined, true);
          // [MQTT-3.14.4-1] after DISCONNECT the client closes the network connection.
          endGracefully(probe.socket, DISCONNECT);
          return;
        case 'refused':
        case 'malformed':
          probe.settle('bad_connack', verdict.detail);
          return;
      }
    },
    onEnd(probe) {
      probe.settle('bad_connack', 'connection closed before CONNACK');
    },
  });
}
