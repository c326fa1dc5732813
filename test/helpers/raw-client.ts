/** A raw TCP MQTT client for byte-exact tests: send chosen bytes (optionally in segments), read what comes back. */
import net from 'node:net';
import mqttPacket from 'mqtt-packet';
import { expect } from 'vitest';

export interface Exchange {
  data: Buffer;
  /** The LB closed the connection (FIN or RST) within the wait. */
  closed: boolean;
  error: string | null;
  elapsedMs: number;
}

export function connectRaw(port: number, host = '127.0.0.1'): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, host);
    s.setNoDelay(true);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Collect everything received until the socket closes or `waitMs` passes (then the socket is destroyed). */
export function collect(s: net.Socket, waitMs: number): Promise<Exchange> {
  const start = Date.now();
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let error: string | null = null;
    const done = (closed: boolean): void => {
      clearTimeout(t);
      s.removeAllListeners('data');
      resolve({ data: Buffer.concat(chunks), closed, error, elapsedMs: Date.now() - start });
      s.destroy();
    };
    const t = setTimeout(() => done(false), waitMs);
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', (e: NodeJS.ErrnoException) => {
      error = e.code ?? e.message;
    });
    s.on('close', () => done(true));
  });
}

/** Send `segments` with `gapMs` between them, then collect. */
export async function exchange(port: number, segments: Buffer[], opts: { gapMs?: number; waitMs?: number; end?: boolean } = {}): Promise<Exchange> {
  const s = await connectRaw(port);
  const result = collect(s, opts.waitMs ?? 2000);
  for (let i = 0; i < segments.length; i++) {
    if (s.destroyed) break;
    s.write(segments[i]!);
    if (opts.gapMs !== undefined && i < segments.length - 1) await new Promise((r) => setTimeout(r, opts.gapMs));
  }
  if (opts.end === true && !s.destroyed) s.end();
  return result;
}

/** A raw client that sends `connect` and stays open: all it has received so far, and whether its connection closed. */
export interface RawSession {
  socket: net.Socket;
  data(): Buffer;
  closed(): boolean;
  /** The socket error's code, if one came (ECONNRESET: the LB reset the connection). */
  error(): string | null;
}

export async function rawSession(port: number, connect: Buffer): Promise<RawSession> {
  const socket = await connectRaw(port);
  let data = Buffer.alloc(0);
  let closed = false;
  let error: string | null = null;
  socket.on('data', (d: Buffer) => (data = Buffer.concat([data, d])));
  socket.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
  socket.on('close', () => (closed = true));
  socket.write(connect);
  return { socket, data: () => data, closed: () => closed, error: () => error };
}

export function connectPacket(opts: { clientId: string; protocolVersion?: 3 | 4 | 5; clean?: boolean; username?: string; password?: string; properties?: Record<string, unknown>; keepalive?: number; will?: { topic: string; payload: string } }): Buffer {
  const v = opts.protocolVersion ?? 4;
  return mqttPacket.generate({
    cmd: 'connect',
    protocolId: v === 3 ? 'MQIsdp' : 'MQTT',
    protocolVersion: v,
    clean: opts.clean ?? true,
    clientId: opts.clientId,
    keepalive: opts.keepalive ?? 30,
    ...(opts.username !== undefined ? { username: opts.username } : {}),
    ...(opts.password !== undefined ? { password: Buffer.from(opts.password) } : {}),
    ...(opts.properties !== undefined ? { properties: opts.properties } : {}),
    ...(opts.will !== undefined ? { will: { topic: opts.will.topic, payload: Buffer.from(opts.will.payload), qos: 0, retain: false } } : {}),
  } as mqttPacket.IConnectPacket);
}

/** Parse every packet in `data` (with the protocol version the client spoke). */
/** The packets in `data`, which must parse whole: no parser error, no byte left over. */
export function parseWhole(data: Buffer, protocolVersion: 3 | 4 | 5 = 4): mqttPacket.Packet[] {
  const parser = mqttPacket.parser({ protocolVersion });
  const out: mqttPacket.Packet[] = [];
  const errors: Error[] = [];
  parser.on('packet', (p) => out.push(p));
  parser.on('error', (e: Error) => errors.push(e));
  expect(parser.parse(data)).toBe(0);
  expect(errors).toEqual([]);
  return out;
}

export function parsePackets(data: Buffer, protocolVersion: 3 | 4 | 5 = 4): mqttPacket.Packet[] {
  const parser = mqttPacket.parser({ protocolVersion });
  const out: mqttPacket.Packet[] = [];
  parser.on('packet', (p) => out.push(p));
  parser.parse(data);
  return out;
}
