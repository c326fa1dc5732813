/**
 * A tiny stand-in for a PROXY-aware MQTT broker (Debian's mosquitto 2.0.11 cannot read PROXY headers).
 * Every connection must start with a PROXY v1/v2 header (parsed with our own parser); then one MQTT
 * CONNECT is read and answered with CONNACK success; afterwards PINGREQ gets PINGRESP, DISCONNECT
 * closes, everything else is swallowed. Test-only: loopback by default.
 */
import net from 'node:net';
import type { Socket } from 'node:net';
import { parseProxyHeader, type ProxyParseResult } from '../../src/proxy/proxy-protocol.js';

export interface ProxyAwareBrokerConnection {
  header: ProxyParseResult;
  /** The whole CONNECT packet (fixed header included), exactly as received. */
  connect: Buffer;
}

export interface ProxyAwareBroker {
  port: number;
  /** One entry per connection that sent a valid header and a CONNECT, in arrival order. */
  connections: ProxyAwareBrokerConnection[];
  /** Connections closed by us (bad header, first packet not CONNECT) or by the peer inside the header. */
  rejected: Array<{ detail: string; bytes: Buffer }>;
  /** Resolves once `connections.length >= count`; rejects after timeoutMs. */
  waitForConnections(count: number, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

const CONNACK_V311 = Buffer.from([0x20, 0x02, 0x00, 0x00]);
const CONNACK_V5 = Buffer.from([0x20, 0x03, 0x00, 0x00, 0x00]); // reason code 0, property length 0
const PINGRESP = Buffer.from([0xd0, 0x00]);
const MQTT_V5_LEVEL = 5;
const CONNECT_BYTE = 0x10; // type 1 with reserved flags 0; the first packet must be CONNECT [MQTT-3.1.0-1]
const PINGREQ_TYPE = 0xc;
const DISCONNECT_TYPE = 0xe;

/** Fixed header of an MQTT packet at the start of buf: total length, or null if incomplete, or -1 if malformed. */
function mqttPacketLength(buf: Buffer): number | null {
  let value = 0;
  let multiplier = 1;
  for (let i = 1; i <= 4; i++) {
    if (i >= buf.length) return null;
    const b = buf[i]!;
    value += (b & 0x7f) * multiplier;
    if ((b & 0x80) === 0) return 1 + i + value;
    multiplier *= 128;
  }
  return -1; // Remaining Length is at most 4 bytes (MQTT v5 §1.5.5, v3.1.1 §2.2.3)
}

function protocolLevelOf(connect: Buffer, fixedHeaderLength: number): number {
  const nameLength = connect.readUInt16BE(fixedHeaderLength);
  return connect[fixedHeaderLength + 2 + nameLength] ?? 0;
}

export async function startProxyAwareBroker(opts: { port?: number; host?: string } = {}): Promise<ProxyAwareBroker> {
  const host = opts.host ?? '127.0.0.1';
  const sockets = new Set<Socket>();
  const connections: ProxyAwareBrokerConnection[] = [];
  const rejected: Array<{ detail: string; bytes: Buffer }> = [];
  const waiters = new Set<() => void>();

  const notify = (): void => {
    for (const w of [...waiters]) w();
  };

  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    let phase: 'header' | 'connect' | 'packets' = 'header';
    let buf: Buffer = Buffer.alloc(0);
    let header: ProxyParseResult | null = null;
    let skip = 0; // bytes of a packet body we do not care about still to come

    const reject = (detail: string): void => {
      rejected.push({ detail, bytes: Buffer.from(buf) });
      phase = 'packets';
      buf = Buffer.alloc(0);
      socket.destroy();
    };

    socket.on('close', () => {
      sockets.delete(socket);
      if (phase === 'header' && buf.length > 0) rejected.push({ detail: 'closed inside the PROXY header', bytes: Buffer.from(buf) });
    });

    socket.on('data', (chunk: Buffer) => {
      if (socket.destroyed) return;
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      if (phase === 'header') {
        const r = parseProxyHeader(buf);
        if (r.kind === 'more') return;
        if (r.kind === 'invalid') return reject(r.detail);
        header = r;
        buf = buf.subarray(r.headerLength);
        phase = 'connect';
      }
      if (phase === 'connect') {
        if (buf.length === 0) return;
        if (buf[0] !== CONNECT_BYTE) return reject('first packet is not CONNECT');
        const total = mqttPacketLength(buf);
        if (total === -1) return reject('malformed Remaining Length');
        if (total === null || buf.length < total) return;
        const connect = Buffer.from(buf.subarray(0, total));
        buf = buf.subarray(total);
        phase = 'packets';
        connections.push({ header: header!, connect });
        socket.write(protocolLevelOf(connect, connectFixedHeaderLength(connect)) === MQTT_V5_LEVEL ? CONNACK_V5 : CONNACK_V311);
        notify();
      }
      // phase === 'packets': frame packets, answer PINGREQ, close on DISCONNECT, ignore the rest.
      while (buf.length > 0) {
        if (skip > 0) {
          const n = Math.min(skip, buf.length);
          skip -= n;
          buf = buf.subarray(n);
          continue;
        }
        const total = mqttPacketLength(buf);
        if (total === null) break;
        if (total === -1) return reject('malformed Remaining Length');
        const type = buf[0]! >> 4;
        if (type === PINGREQ_TYPE) socket.write(PINGRESP);
        if (type === DISCONNECT_TYPE) {
          socket.end();
          return;
        }
        skip = total;
      }
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;

  let closing: Promise<void> | null = null;
  return {
    port,
    connections,
    rejected,
    waitForConnections(count: number, timeoutMs = 10_000): Promise<void> {
      if (connections.length >= count) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const check = (): void => {
          if (connections.length < count) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve();
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`proxy-aware broker: ${connections.length} of ${count} connections after ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.add(check);
      });
    },
    close(): Promise<void> {
      closing ??= new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      });
      return closing;
    },
  };
}

/** Length of the fixed header (type byte + Remaining Length bytes) of a complete packet. */
function connectFixedHeaderLength(packet: Buffer): number {
  let i = 1;
  while (i < 5 && (packet[i]! & 0x80) !== 0) i++;
  return i + 1;
}
