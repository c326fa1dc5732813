/**
 * limits.idleTimeout (src/proxy/idle-sweep.ts): a routed session in which nothing moves either way for that long is
 * closed on both sides; one that moves, however slowly, is not. With both socket engines (plain TCP sessions run
 * on HandleSocket, TLS and PROXY ones on net.Socket).
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { startMosquitto, freePort, type Broker } from '../helpers/mosquitto.js';
import { lbYaml } from '../helpers/lb-config.js';
import { startLb, stopAllLbs, sleep, SOCKET_ENGINES, socketEngineOf, type LbProcess } from '../helpers/lb.js';
import { collect, connectRaw, connectPacket } from '../helpers/raw-client.js';
import { metricValue } from '../helpers/metrics.js';

const CONNACK = Buffer.from([0x20, 0x02, 0x00, 0x00]);

async function activeConnections(admin: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
  return Number(/^mqtt_lb_connections_active\{listener="mqtt"\} (\d+)/m.exec(text)?.[1] ?? NaN);
}

async function until(check: () => Promise<boolean> | boolean, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return true;
    await sleep(50);
  }
  return check();
}

/** A stand-in broker: CONNACK to the first bytes (the CONNECT, perhaps with more), then whatever `then` does. */
function fakeBroker(then: (socket: net.Socket, first: Buffer) => void): Promise<{ port: number; sockets: net.Socket[]; close(): Promise<void> }> {
  const sockets: net.Socket[] = [];
  const server = net.createServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => {});
    socket.once('data', (first: Buffer) => {
      socket.write(CONNACK);
      then(socket, first);
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () =>
      resolve({
        port: (server.address() as net.AddressInfo).port,
        sockets,
        close: () => {
          for (const s of sockets) s.destroy();
          return new Promise<void>((r) => server.close(() => r()));
        },
      }),
    );
  });
}

describe.each(SOCKET_ENGINES)('limits.idleTimeout ($engine sockets)', ({ engine, env }) => {
  let broker: Broker | null = null;
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    // Clients and stand-ins first: a balancer stopping with live sessions would drain them (limits.drainTimeout).
    for (const c of cleanups.splice(0)) await c();
    await stopAllLbs();
  });
  afterAll(async () => {
    await broker?.stop();
  });

  async function startWith(serverPort: number, limits: string, extra?: string, moreEnv: NodeJS.ProcessEnv = {}): Promise<{ lb: LbProcess; port: number; admin: number }> {
    const [port, admin] = [await freePort(), await freePort()];
    const yaml = lbYaml({ port, admin, servers: [{ name: 'b1', port: serverPort }], health: { type: 'tcp', interval: '1s' }, limits, log: '  level: info\n  sessions: true\n', extra });
    const lb = await startLb(yaml, { waitReady: `http://127.0.0.1:${admin}/readyz`, env: { ...env, ...moreEnv } });
    expect(await socketEngineOf(lb)).toBe(engine);
    return { lb, port, admin };
  }

  it('a silent session lives while the timeout is 0s, and a reload to 1s closes it within 1-1.5 s (+ the reload); a busy one stays', async () => {
    broker ??= await startMosquitto();
    const { lb, port, admin } = await startWith(broker.port, '  idleTimeout: 0s\n');
    // keepalive 0: mosquitto never closes it for silence, so only the balancer can.
    const silent = await connectRaw(port);
    silent.write(connectPacket({ clientId: 'idle-silent', keepalive: 0 }));
    const silentEnd = collect(silent, 15_000);
    const busy = await connectRaw(port);
    busy.on('data', () => {});
    busy.write(connectPacket({ clientId: 'idle-busy', keepalive: 0 }));
    const pinger = setInterval(() => busy.write(Buffer.from([0xc0, 0x00])), 200); // PINGREQ; mosquitto answers
    cleanups.push(() => {
      clearInterval(pinger);
      busy.destroy();
    });
    await sleep(2500);
    expect(await activeConnections(admin)).toBe(2);

    lb.writeConfig(readFileSync(lb.configFile, 'utf8').replace('idleTimeout: 0s', 'idleTimeout: 1s'));
    const reloadedAt = Date.now();
    lb.reload();
    await lb.waitForLog((l) => l.msg === 'config reloaded');
    const ended = await silentEnd;
    expect(ended.closed).toBe(true);
    const after = Date.now() - reloadedAt;
    expect(after).toBeGreaterThanOrEqual(900);
    expect(after).toBeLessThan(4000); // 1-1.5 s by design; a loaded CI machine is slower
    const line = await lb.waitForLog((l) => l.msg === 'session closed' && l.reason === 'idle');
    expect(line.clientId).toBe('idle-silent');
    const summary = await lb.waitForLog((l) => l.msg === 'idle sessions closed (limits.idleTimeout)');
    expect(summary).toMatchObject({ sessions: 1, idleTimeoutMs: 1000 });

    // The busy one moves every 200 ms: still there after three more timeouts.
    await sleep(3000);
    expect(busy.destroyed).toBe(false);
    expect(await activeConnections(admin)).toBe(1);
    expect(lb.logs.filter((l) => l.msg === 'session closed' && l.reason === 'idle')).toHaveLength(1);
  });

  it('with workers: 2, each worker sweeps its own sessions', async () => {
    broker ??= await startMosquitto();
    // Round robin: the four clients land on both workers in turn (the kernel's scheduling may put all on one).
    const { lb, admin } = await startWith(broker.port, '  idleTimeout: 1s\n', 'workers: 2\n', { NODE_CLUSTER_SCHED_POLICY: 'rr' });
    const port = Number(/bind: 127\.0\.0\.1:(\d+)/.exec(readFileSync(lb.configFile, 'utf8'))![1]);
    const clients = await Promise.all([0, 1, 2, 3].map(() => connectRaw(port)));
    const ends = clients.map((c, i) => {
      c.write(connectPacket({ clientId: `idle-worker-${i}`, keepalive: 0 }));
      return collect(c, 8000);
    });
    const results = await Promise.all(ends);
    expect(results.map((r) => r.closed)).toEqual([true, true, true, true]);
    // Each got its CONNACK first: the sessions were routed, then closed for silence.
    for (const r of results) expect(r.data.subarray(0, 2)).toEqual(Buffer.from([0x20, 0x02]));
    await lb.waitForLog((l) => l.msg === 'session closed' && l.reason === 'idle');
    // Both workers' sweeps did it.
    await lb.waitForLog(() => new Set(lb.logs.filter((l) => l.msg === 'idle sessions closed (limits.idleTimeout)').map((l) => l.worker)).size === 2);
    // The primary's /metrics sums the workers' counts (their snapshots come every 250 ms); 3.1.1: none told.
    expect(await until(async () => (await metricValue(admin, 'mqtt_lb_sessions_closed_total', { listener: 'mqtt', reason: 'idle' })) === 4, 3000)).toBe(true);
    expect(await metricValue(admin, 'mqtt_lb_disconnects_sent_total', { listener: 'mqtt', reason: 'idle' })).toBe(0);
  });

  it('a client that resets while paused behind a broker that stopped reading is let go (it went unnoticed before)', async () => {
    const stalled = await fakeBroker((socket) => socket.pause()); // answers CONNACK, then never reads again
    cleanups.push(() => stalled.close());
    const { lb, port, admin } = await startWith(stalled.port, '  idleTimeout: 1s\n');
    const client = await connectRaw(port);
    client.on('error', () => {});
    client.on('data', () => {});
    client.write(connectPacket({ clientId: 'idle-stalled', keepalive: 0 }));
    await sleep(300);
    // Fill every buffer on the way: the broker's, ours (the client gets paused), then the client's own.
    const block = Buffer.alloc(256 * 1024, 0x61);
    for (let i = 0; i < 64 && client.writableLength < 4 * 1024 * 1024; i++) client.write(block);
    await sleep(800);
    expect(await activeConnections(admin)).toBe(1);
    client.resetAndDestroy();
    expect(await until(async () => (await activeConnections(admin)) === 0, 5000)).toBe(true);
    expect(await until(() => stalled.sockets[0]!.destroyed || stalled.sockets[0]!.readableEnded, 2000)).toBe(true);
    const line = await lb.waitForLog((l) => l.msg === 'session closed' && l.clientId === 'idle-stalled');
    // The reset itself goes unseen while the client is not read: it is the sweep that ends the session.
    expect(line.reason).toBe('idle');
  });

  it('a transfer that outlasts the timeout in small steps is not cut; once silent the session goes, every byte delivered', async () => {
    let received = 0;
    const broker = await fakeBroker((socket, first) => {
      received += first.length;
      socket.on('data', (d: Buffer) => (received += d.length));
    });
    cleanups.push(() => broker.close());
    const { lb, port } = await startWith(broker.port, '  idleTimeout: 1s\n');
    const client = await connectRaw(port);
    client.on('error', () => {});
    client.on('data', () => {});
    const connect = connectPacket({ clientId: 'idle-steps', keepalive: 0 });
    client.write(connect);
    // 48 x 64 KiB, one every 60 ms: ~2.9 s of transfer, never 1 s without a byte.
    const block = Buffer.alloc(64 * 1024, 0x62);
    const total = 48 * block.length;
    const started = Date.now();
    for (let i = 0; i < 48; i++) {
      client.write(block);
      await sleep(60);
      expect(client.destroyed).toBe(false);
    }
    expect(Date.now() - started).toBeGreaterThan(2000);
    const line = await lb.waitForLog((l) => l.msg === 'session closed' && l.clientId === 'idle-steps', 5000);
    expect(line.reason).toBe('idle');
    expect(line.bytesIn).toBe(connect.length + total);
    expect(await until(() => received === connect.length + total, 2000)).toBe(true);
  });
});
