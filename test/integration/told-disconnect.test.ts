/**
 * A 5.0 client the balancer closes is told why with a DISCONNECT (src/proxy/disconnect.ts, ClientSession.tell), put
 * between two of its server's packets (src/proxy/packet-frames.ts); a 3.1/3.1.1 client is closed as before (no
 * DISCONNECT from a server in those versions). Through the BUILT mqtt-lb, with real mosquitto brokers, and with a
 * stand-in broker where the test must hold a packet half-sent.
 */
import { spawn } from 'node:child_process';
import net from 'node:net';
import type { MqttClient, IDisconnectPacket } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { clientIdOn, connectVia, startBrokers, whichBroker, type NamedBroker } from '../helpers/cluster.js';
import { serverAction } from '../helpers/server-state.js';
import { lbYaml } from '../helpers/lb-config.js';
import { startLb, stopAllLbs, sleep, until, SOCKET_ENGINES, socketEngineOf, type LbProcess } from '../helpers/lb.js';
import { freePort } from '../helpers/mosquitto.js';
import { connectPacket, parsePackets, rawSession as openRawSession, type RawSession } from '../helpers/raw-client.js';
import mqttPacket from 'mqtt-packet';
import { value } from '../unit/telemetry-fixtures.js';
import { scrapeMetrics } from '../helpers/metrics.js';

const brokers: NamedBroker[] = [];
const cleanups: Array<() => Promise<void> | void> = [];
const clients: MqttClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.end(true);
  for (const c of cleanups.splice(0)) await c();
  await stopAllLbs();
  await Promise.all(brokers.splice(0).map((b) => b.stop()));
});

/** rawSession, closed after the test. */
async function rawSession(port: number, connect: Buffer): Promise<RawSession> {
  const s = await openRawSession(port, connect);
  cleanups.push(() => void s.socket.destroy());
  return s;
}

function packetsOf(data: Buffer): Array<[string, number | undefined]> {
  return parsePackets(data, 5).map((p) => [p.cmd, (p as { reasonCode?: number }).reasonCode]);
}

async function lbOver(servers: Array<{ name: string; port: number }>, options: { env?: NodeJS.ProcessEnv; limits?: string; health?: 'mqtt' | 'tcp'; listener?: string; balance?: string; level?: string } = {}): Promise<{ lb: LbProcess; port: number; admin: number }> {
  const [port, admin] = [await freePort(), await freePort()];
  const lb = await startLb(
    lbYaml({
      listeners: [{ port, ...(options.listener === undefined ? {} : { extra: options.listener }) }],
      admin,
      servers,
      ...(options.balance === undefined ? {} : { balance: options.balance }),
      pool: '    evictRate: 1000\n',
      health: { type: options.health ?? 'mqtt', interval: '200ms', timeout: '150ms', rise: 1, fall: 1 },
      ...(options.limits === undefined ? {} : { limits: options.limits }),
      log: `  level: ${options.level ?? 'info'}\n  sessions: true\n`,
    }),
    { waitReady: `http://127.0.0.1:${admin}/readyz`, env: options.env ?? {} },
  );
  return { lb, port, admin };
}

describe.each(SOCKET_ENGINES)('a session the balancer closes ($engine sockets)', ({ engine, env }) => {
  it('drain: a 5.0 client is told DISCONNECT 0x9C (Use another server) and reconnects elsewhere; a 3.1.1 client on the same broker is closed with nothing more', async () => {
    brokers.push(...(await startBrokers(['b1', 'b2'])));
    const { lb, port, admin } = await lbOver(
      brokers.map((b) => ({ name: b.name, port: b.port })),
      { env },
    );
    expect(await socketEngineOf(lb)).toBe(engine);
    const id5 = await clientIdOn(port, 'b1', 'told-v5-');
    const id4 = await clientIdOn(port, 'b1', 'told-v4-');

    const v5 = await connectVia(port, { clientId: id5, protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 60 } });
    clients.push(v5);
    expect(await whichBroker(v5)).toBe('b1');
    const told: IDisconnectPacket[] = [];
    let v5Closed = false;
    v5.on('disconnect', (p) => told.push(p));
    v5.on('close', () => (v5Closed = true));
    const v4 = await rawSession(port, connectPacket({ clientId: id4, protocolVersion: 4 }));
    await until('the 3.1.1 CONNACK', () => v4.data().length >= 4, 3000);

    await serverAction(admin, 'b1', 'drain');
    await until('both closed', () => v5Closed && v4.closed(), 5000);
    expect(told.map((p) => p.reasonCode)).toEqual([0x9c]);
    // 3.1.1 has no DISCONNECT from a server: the CONNACK, then the close.
    expect([...v4.data()]).toEqual([0x20, 0x02, 0x00, 0x00]);

    // (clientIdOn's own sessions of these IDs closed earlier: `client_closed`.)
    const line5 = await lb.waitForLog((l) => l.msg === 'session closed' && l.clientId === id5 && l.reason === 'drain', 2000);
    expect(line5).toMatchObject({ disconnect: 0x9c, server: 'b1' });
    const line4 = await lb.waitForLog((l) => l.msg === 'session closed' && l.clientId === id4 && l.reason === 'drain', 2000);
    expect(line4).not.toHaveProperty('disconnect');
    // Both counted as closed for the drain, the 5.0 one as told too.
    const exp = await scrapeMetrics(admin);
    expect(value(exp, 'mqtt_lb_sessions_closed_total', { reason: 'drain' })).toBe(2);
    expect(value(exp, 'mqtt_lb_disconnects_sent_total', { reason: 'drain' })).toBe(1);
    expect(value(exp, 'mqtt_lb_sessions_closed_total', { reason: 'client_closed' })).toBe(lb.logs.filter((l) => l.msg === 'session closed' && l.reason === 'client_closed').length);

    // Told to use another server, it is placed on one: b2.
    const again = await connectVia(port, { clientId: id5, protocolVersion: 5, clean: false });
    clients.push(again);
    expect(await whichBroker(again)).toBe('b2');
  }, 30_000);
});

describe('the DISCONNECT for each way the balancer closes a 5.0 session', () => {
  it('stop: past drainTimeout, 0x8B (Server shutting down)', async () => {
    brokers.push(...(await startBrokers(['b1'])));
    const { lb, port } = await lbOver([{ name: 'b1', port: brokers[0]!.port }], { limits: '  drainTimeout: 300ms\n' });
    const s = await rawSession(port, connectPacket({ clientId: 'told-stop', protocolVersion: 5 }));
    await until('the CONNACK', () => packetsOf(s.data()).length === 1, 3000);
    expect(await lb.stop()).toBe(0);
    await until('the close', s.closed, 3000);
    expect(packetsOf(s.data())).toEqual([
      ['connack', 0],
      ['disconnect', 0x8b],
    ]);
  }, 30_000);

  it('limits.idleTimeout: 0x8D (Keep Alive timeout)', async () => {
    brokers.push(...(await startBrokers(['b1'])));
    const { lb, port } = await lbOver([{ name: 'b1', port: brokers[0]!.port }], { limits: '  idleTimeout: 1s\n' });
    const s = await rawSession(port, connectPacket({ clientId: 'told-idle', protocolVersion: 5, keepalive: 0 }));
    await until('the close', s.closed, 4000);
    expect(packetsOf(s.data())).toEqual([
      ['connack', 0],
      ['disconnect', 0x8d],
    ]);
    expect((await lb.waitForLog((l) => l.msg === 'session closed' && l.clientId === 'told-idle', 2000)).disconnect).toBe(0x8d);
  }, 30_000);

  it('a session evicted before its CONNACK is closed untold: no DISCONNECT before a CONNACK that accepted it [MQTT-3.14.0-1]', async () => {
    // The stand-in answers nothing until told: the session is evicted (drain) while it waits for its CONNACK.
    const broker = await standIn();
    const { port, admin } = await lbOver([{ name: 'slow', port: broker.port }], { health: 'tcp' });
    const s = await rawSession(port, connectPacket({ clientId: 'told-early', protocolVersion: 5 }));
    await until('the CONNECT at the stand-in', () => broker.sockets.length === 1, 3000);
    await serverAction(admin, 'slow', 'drain');
    await until('the close', s.closed, 3000);
    expect(s.data().length).toBe(0);
  }, 30_000);
});

/**
 * A stand-in broker whose sockets the test writes to itself (a packet can be held half-sent); `received[i]`: all that
 * socket i has read (the CONNECT first); `ended[i]`: its FIN came (half-open: the stand-in does not close on it).
 */
async function standIn(): Promise<{ port: number; sockets: net.Socket[]; received: Buffer[]; ended: boolean[] }> {
  const sockets: net.Socket[] = [];
  const received: Buffer[] = [];
  const ended: boolean[] = [];
  const all = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    // Half-open: a health probe's FIN does not close it, so each one is destroyed at the end.
    all.add(socket);
    socket.on('close', () => all.delete(socket));
    socket.on('error', () => {});
    socket.once('data', (first: Buffer) => {
      const i = sockets.push(socket) - 1;
      received[i] = first;
      socket.on('data', (d: Buffer) => (received[i] = Buffer.concat([received[i]!, d])));
      socket.on('end', () => (ended[i] = true));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  cleanups.push(() => {
    for (const s of all) s.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return { port: (server.address() as net.AddressInfo).port, sockets, received, ended };
}

describe('a packet on its way to the client when the session is closed', () => {
  const connack = mqttPacket.generate({ cmd: 'connack', sessionPresent: false, reasonCode: 0, properties: {} } as mqttPacket.Packet, { protocolVersion: 5 });
  const big = mqttPacket.generate({ cmd: 'publish', topic: 'a/b', payload: Buffer.alloc(5000, 0x41), qos: 0, dup: false, retain: false } as mqttPacket.Packet, { protocolVersion: 5 });
  const pingresp = Buffer.from([0xd0, 0x00]);
  const pingreq = Buffer.from([0xc0, 0x00]);

  /** A 5.0 session whose stand-in broker has sent its CONNACK and the first `sent` bytes of `packet`, then drained. */
  async function halfSent(packet = big, sent = 1000): Promise<{ lb: LbProcess; admin: number; s: RawSession; server: net.Socket; atServer: () => number; serverSawFin: () => boolean }> {
    const broker = await standIn();
    const { lb, port, admin } = await lbOver([{ name: 'half', port: broker.port }], { health: 'tcp' });
    const connect = connectPacket({ clientId: 'told-half', protocolVersion: 5 });
    const s = await rawSession(port, connect);
    await until('the CONNECT at the stand-in', () => broker.sockets.length === 1, 3000);
    const server = broker.sockets[0]!;
    server.write(Buffer.concat([connack, packet.subarray(0, sent)]));
    await until('the first bytes at the client', () => s.data().length === connack.length + sent, 3000);
    await serverAction(admin, 'half', 'drain');
    // What the client sends from here reaches the stand-in or not: counted past its CONNECT.
    return { lb, admin, s, server, atServer: () => broker.received[0]!.length - connect.length, serverSawFin: () => broker.ended[0] === true };
  }

  it('the DISCONNECT waits for the packet\'s last byte; what the server sends after it, and the client meanwhile, is not passed on', async () => {
    const { lb, s, server, atServer } = await halfSent();
    s.socket.write(pingreq);
    await sleep(300);
    expect(s.closed()).toBe(false);
    expect(s.data().length).toBe(connack.length + 1000);
    // The rest of the PUBLISH and a PINGRESP behind it, in one write.
    server.write(Buffer.concat([big.subarray(1000), pingresp]));
    await until('the close', s.closed, 3000);
    expect(packetsOf(s.data())).toEqual([
      ['connack', 0],
      ['publish', undefined],
      ['disconnect', 0x9c],
    ]);
    expect(s.error()).toBeNull();
    // The client counts as closed from the drain on: its PINGREQ went nowhere.
    expect(atServer()).toBe(0);
    expect((await lb.waitForLog((l) => l.msg === 'session closed' && l.clientId === 'told-half', 2000)).disconnect).toBe(0x9c);
  }, 30_000);

  it('a packet that does not end within a second: closed untold, with a reset (its last packet is cut short), no byte put inside it', async () => {
    const { lb, s } = await halfSent();
    const drainedAt = Date.now();
    await until('the close', s.closed, 4000);
    const waited = Date.now() - drainedAt;
    expect(waited).toBeGreaterThanOrEqual(800);
    expect(s.data().length).toBe(connack.length + 1000);
    expect(s.error()).toBe('ECONNRESET');
    const line = await lb.waitForLog((l) => l.msg === 'session closed' && l.clientId === 'told-half', 2000);
    expect(line.reason).toBe('drain');
    expect(line).not.toHaveProperty('disconnect');
  }, 30_000);

  // A re-audit: the client's FIN went on to the broker while the DISCONNECT waited; mosquitto closes on it, which cut
  // the packet short and ended the client's stream with a FIN.
  it('the client\'s FIN while the DISCONNECT waits does not reach the broker: the packet ends, then the DISCONNECT', async () => {
    const { s, server, serverSawFin } = await halfSent();
    s.socket.end();
    await sleep(300);
    expect(serverSawFin()).toBe(false);
    server.write(big.subarray(1000));
    await until('the close', s.closed, 3000);
    expect(packetsOf(s.data())).toEqual([
      ['connack', 0],
      ['publish', undefined],
      ['disconnect', 0x9c],
    ]);
  }, 30_000);

  it('the broker\'s FIN, or a second close, while the DISCONNECT waits: the packet is cut short, so the client is reset', async () => {
    const first = await halfSent();
    first.server.end();
    await until('the close', first.s.closed, 3000);
    expect(first.s.data().length).toBe(connack.length + 1000);
    expect(first.s.error()).toBe('ECONNRESET');
    expect(await first.lb.stop()).toBe(0);

    const second = await halfSent();
    await serverAction(second.admin, 'half', 'maint');
    await until('the close', second.s.closed, 3000);
    expect(second.s.data().length).toBe(connack.length + 1000);
    expect(second.s.error()).toBe('ECONNRESET');
  }, 30_000);

  it('the packet in flight is the broker\'s own DISCONNECT: nothing follows it [MQTT-3.14.4-1]', async () => {
    const own = Buffer.from([0xe0, 0x02, 0x8e, 0x00]);
    const { lb, s, server } = await halfSent(own, 1);
    await sleep(100);
    server.write(own.subarray(1));
    await until('the close', s.closed, 3000);
    expect(packetsOf(s.data())).toEqual([
      ['connack', 0],
      ['disconnect', 0x8e],
    ]);
    expect(s.error()).toBeNull();
    const line = await lb.waitForLog((l) => l.msg === 'session closed' && l.clientId === 'told-half', 2000);
    expect(line.reason).toBe('drain');
    expect(line).not.toHaveProperty('disconnect');
  }, 30_000);
});

describe('listeners[].evictWith and the takeover', () => {
  it('evictWith: close: a drained 5.0 client sees the close alone (libmosquitto clients stop on any DISCONNECT)', async () => {
    brokers.push(...(await startBrokers(['b1'])));
    const { lb, port, admin } = await lbOver([{ name: 'b1', port: brokers[0]!.port }], { listener: '    evictWith: close\n' });
    const s = await rawSession(port, connectPacket({ clientId: 'told-not', protocolVersion: 5 }));
    await until('the CONNACK', () => packetsOf(s.data()).length === 1, 3000);
    await serverAction(admin, 'b1', 'drain');
    await until('the close', s.closed, 3000);
    expect(packetsOf(s.data())).toEqual([['connack', 0]]);
    const line = await lb.waitForLog((l) => l.msg === 'session closed' && l.clientId === 'told-not', 2000);
    expect(line.reason).toBe('drain');
    expect(line).not.toHaveProperty('disconnect');
  }, 30_000);

  // An audit: libmosquitto (mosquitto_sub -V 5) stops for good on any DISCONNECT from a server; after a close it
  // reconnects. So with the default its drained clients stay away, and `evictWith: close` is the setting for them.
  it.each([
    ['disconnect', false],
    ['close', true],
  ] as const)('evictWith: %s: a real mosquitto_sub -V 5 on a drained broker reconnects: %s', async (evictWith, reconnects) => {
    brokers.push(...(await startBrokers(['b1', 'b2'])));
    const { port, admin } = await lbOver(brokers.map((b) => ({ name: b.name, port: b.port })), { listener: `    evictWith: ${evictWith}\n` });
    const id = await clientIdOn(port, 'b1', `told-sub-${evictWith}-`);
    // Line-buffered: its -d lines are printf'd, held in a block buffer on a pipe until it exits.
    const sub = spawn('stdbuf', ['-oL', 'mosquitto_sub', '-V', '5', '-h', '127.0.0.1', '-p', String(port), '-i', id, '-t', 'lbtest/x', '-d'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let exited = false;
    sub.stdout.on('data', (d: Buffer) => (out += d.toString()));
    sub.stderr.on('data', (d: Buffer) => (out += d.toString()));
    sub.on('exit', () => (exited = true));
    cleanups.push(() => void (exited || sub.kill('SIGKILL')));
    const connacks = (): number => out.split('received CONNACK').length - 1;
    await until('mosquitto_sub connected', () => connacks() === 1, 5000);
    await serverAction(admin, 'b1', 'drain');
    if (reconnects) {
      await until('mosquitto_sub connected again', () => connacks() === 2, 8000);
      expect(exited).toBe(false);
    } else {
      await until('mosquitto_sub exited', () => exited, 5000);
      expect(out).toContain('DISCONNECT');
      expect(connacks()).toBe(1);
    }
  }, 30_000);

  it('a session in its takeover grace that a drain closes is told 0x8E (Session taken over), not 0x9C: its client ID lives on the other broker', async () => {
    brokers.push(...(await startBrokers(['b1', 'b2'])));
    // Round robin: the same client ID's second session lands on the other broker, which knows nothing of the first.
    const { lb, port, admin } = await lbOver(brokers.map((b) => ({ name: b.name, port: b.port })), { balance: 'round-robin', level: 'debug' });
    const connect = connectPacket({ clientId: 'told-race', protocolVersion: 5 });
    const older = await rawSession(port, connect);
    await until('the older CONNACK', () => packetsOf(older.data()).length === 1, 3000);
    const olderServer = (await lb.waitForLog((l) => l.msg === 'session routed' && l.clientId === 'told-race', 2000)).server as string;
    const newer = await rawSession(port, connect);
    await until('the newer CONNACK', () => packetsOf(newer.data()).length === 1, 3000);
    // Within the 200 ms grace (TAKEOVER_GRACE_MS) the older session's broker is drained.
    await serverAction(admin, olderServer, 'drain');
    await until('the older closed', older.closed, 3000);
    expect(packetsOf(older.data())).toEqual([
      ['connack', 0],
      ['disconnect', 0x8e],
    ]);
    const line = await lb.waitForLog((l) => l.msg === 'session closed' && l.clientId === 'told-race' && l.server === olderServer, 2000);
    expect(line).toMatchObject({ reason: 'takeover', disconnect: 0x8e });
    expect(newer.closed()).toBe(false);
  }, 30_000);
});
