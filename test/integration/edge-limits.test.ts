/**
 * Every connection cap answered as the contract's table says (design.md §5), per protocol level, and freed
 * when clients leave: listener_full and global_full (rc 3 / 0x89), source_full (rc 3 / 0x97),
 * rate_limited and accept_queue_full (rc 3 / 0x9F). And the descriptor budget under a small open-file
 * limit. Real mosquitto behind the built CLI.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type net from 'node:net';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { lbYaml, type HealthSpec, type ListenerSpec } from '../helpers/lb-config.js';
import { startMosquitto, freePort, type Broker } from '../helpers/mosquitto.js';
import { startLb, stopAllLbs, sleep, waitReady, CLI, type LbProcess } from '../helpers/lb.js';
import mqttPacket from 'mqtt-packet';
import { connectPacket, connectRaw, exchange, parsePackets } from '../helpers/raw-client.js';
import { createTestPki } from '../helpers/tls-certs.js';
import { connectVia } from '../helpers/cluster.js';
import type { MqttClient } from 'mqtt';
import { rendezvousOrder } from '../../src/balancer/hash/rendezvous.js';

type Level = 3 | 4 | 5;

/** Send a CONNECT at `level`; resolve with the CONNACK code (return code or reason code) and the socket. */
async function connectAt(port: number, clientId: string, level: Level, waitMs = 3000, properties?: Record<string, unknown>): Promise<{ code: number | null; closed: boolean; socket: net.Socket }> {
  const s = await connectRaw(port);
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    let settled = false;
    const finish = (code: number | null, closed: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(t);
      resolve({ code, closed, socket: s });
    };
    const t = setTimeout(() => finish(null, false), waitMs);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const p = parsePackets(buf, level)[0];
      if (p?.cmd === 'connack') finish(level === 5 ? (p.reasonCode ?? 0) : (p.returnCode ?? 0), false);
    });
    s.on('error', () => {});
    s.on('close', () => finish(null, true));
    s.write(connectPacket({ clientId, protocolVersion: level, ...(properties === undefined ? {} : { properties }) }));
  });
}

/** Send an MQTT 5 CONNECT on an open socket: its CONNACK reason code, or null when closed (or silent for 3 s) without one. */
function connackCodeOf(s: net.Socket, clientId: string): Promise<number | null> {
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    const t = setTimeout(() => resolve(null), 3000);
    s.on('error', () => {});
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const p = parsePackets(buf, 5)[0];
      if (p?.cmd === 'connack') {
        clearTimeout(t);
        resolve(p.reasonCode ?? 0);
      }
    });
    s.on('close', () => {
      clearTimeout(t);
      resolve(null);
    });
    s.write(connectPacket({ clientId, protocolVersion: 5 }));
  });
}

/** A TLS client that sends its CONNECT once its handshake is done: the CONNACK's code, or null (closed, or 3 s). */
function tlsConnackCode(port: number, clientId: string, opened: net.Socket[]): Promise<number | null> {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(null), 3000);
    const s = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => s.write(connectPacket({ clientId })));
    opened.push(s);
    s.on('error', () => {});
    s.once('close', () => resolve(null));
    s.once('data', (d: Buffer) => {
      clearTimeout(t);
      resolve((parsePackets(d)[0] as mqttPacket.IConnackPacket | undefined)?.returnCode ?? null);
    });
  });
}

/** A refused client: the CONNACK code, and the LB closed the connection after it. */
async function refusedWith(port: number, clientId: string, level: Level): Promise<number | null> {
  const r = await connectAt(port, clientId, level);
  const closed = r.socket.destroyed || (await new Promise<boolean>((resolve) => {
    const t = setTimeout(() => resolve(false), 2000);
    r.socket.once('close', () => {
      clearTimeout(t);
      resolve(true);
    });
  }));
  r.socket.destroy();
  expect(closed, `${clientId}: closed after the CONNACK`).toBe(true);
  return r.code;
}

/** Holds a session open until `leave()` (DISCONNECT, then close). */
async function hold(port: number, clientId: string): Promise<{ leave(): Promise<void> }> {
  const r = await connectAt(port, clientId, 4);
  expect(r.code, `${clientId} connected`).toBe(0);
  return {
    async leave() {
      r.socket.end(Buffer.from([0xe0, 0x00]));
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          r.socket.destroy();
          resolve();
        }, 2000);
        r.socket.once('close', () => {
          clearTimeout(t);
          resolve();
        });
      });
      await sleep(150); // the LB sees both sides close
    },
  };
}

async function rejectedCount(admin: number, listener: string, reason: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
  const m = new RegExp(`mqtt_lb_connect_rejected_total\\{listener="${listener}",reason="${reason}"\\} (\\d+)`).exec(text);
  return m === null ? 0 : Number(m[1]);
}

let broker: Broker;
beforeAll(async () => {
  broker = await startMosquitto();
});
afterAll(async () => {
  await stopAllLbs();
  await broker?.stop();
});

async function startWith(o: { listeners?: Array<{ name: string; extra?: string; tls?: string }>; limits: string; fileLimit?: number }): Promise<{ lb: LbProcess; admin: number; ports: Record<string, number> }> {
  const admin = await freePort();
  const ports: Record<string, number> = {};
  const listeners: ListenerSpec[] = [];
  for (const l of o.listeners ?? [{ name: 'mqtt' }]) {
    ports[l.name] = await freePort();
    listeners.push({ ...l, port: ports[l.name]! });
  }
  const yaml = lbYaml({ listeners, admin, servers: [{ name: 'm1', port: broker.port }], health: { type: 'mqtt', interval: '500ms', timeout: '400ms', rise: 1, fall: 2 }, limits: o.limits });
  const lb = await startLb(yaml, { waitReady: `http://127.0.0.1:${admin}/readyz`, ...(o.fileLimit === undefined ? {} : { fileLimit: o.fileLimit }) });
  return { lb, admin, ports };
}

const LEVELS: Level[] = [3, 4, 5];

/** One refused CONNECT per level (`<idPrefix><level>`): rc 3 for 3.1/3.1.1, reason code `v5Code` for 5.0. */
async function expectRefusedAtEveryLevel(port: number, idPrefix: string, v5Code: number): Promise<void> {
  for (const level of LEVELS) expect(await refusedWith(port, `${idPrefix}${level}`, level), `level ${level}`).toBe(level === 5 ? v5Code : 3);
}

describe('caps answered in MQTT and freed', () => {
  it('listener_full: rc 3 for 3.1/3.1.1, 0x89 for 5.0; a slot frees when its client leaves', async () => {
    const { lb, admin, ports } = await startWith({ listeners: [{ name: 'small', extra: '    maxConnections: 1\n' }], limits: '  clientConnectTimeout: 2s\n' });
    const port = ports.small!;
    const first = await hold(port, 'lf-holder');
    await expectRefusedAtEveryLevel(port, 'lf-', 0x89);
    await first.leave();
    const next = await hold(port, 'lf-next');
    await next.leave();
    expect(await rejectedCount(admin, 'small', 'listener_full')).toBe(3);
    await lb.stop();
  });

  it('a storm past a full listener is answered in MQTT, each client: none reset or dropped at accept while descriptors last', async () => {
    // An audit: with a listener of 5 full, 200 clients at once got 16 CONNACKs and 184 resets (Node's guard was the cap
    // + 16); and 66 silent connections locked every client out of a listener of 50 until they timed out.
    const { lb, admin, ports } = await startWith({ listeners: [{ name: 'small', extra: '    maxConnections: 5\n' }], limits: '  clientConnectTimeout: 5s\n' });
    const port = ports.small!;
    const holders = await Promise.all(Array.from({ length: 5 }, (_, i) => hold(port, `storm-holder-${i}`)));
    const silent = await Promise.all(Array.from({ length: 80 }, () => connectRaw(port)));
    try {
      const storm = await Promise.all(Array.from({ length: 200 }, (_, i) => connectAt(port, `storm-${i}`, i % 2 === 0 ? 4 : 5, 5000)));
      const codes = new Map<string, number>();
      for (const r of storm) {
        const k = r.code === null ? (r.closed ? 'closed unanswered' : 'no answer') : `code ${r.code}`;
        codes.set(k, (codes.get(k) ?? 0) + 1);
        r.socket.destroy();
      }
      expect(Object.fromEntries(codes)).toEqual({ 'code 3': 100, 'code 137': 100 }); // rc 3, 0x89
      expect(await rejectedCount(admin, 'small', 'listener_full')).toBe(200);
      expect(await rejectedCount(admin, 'small', 'accept_dropped')).toBe(0);
    } finally {
      for (const s of silent) s.destroy();
      for (const h of holders) await h.leave();
    }
    await lb.stop();
  });

  it('a CONNECT completed during the drain after SIGTERM is told shutting_down (rc 3 / 0x88), not routed to a broker', async () => {
    const { lb, admin, ports } = await startWith({ limits: '  clientConnectTimeout: 5s\n  drainTimeout: 3s\n' });
    const port = ports.mqtt!;
    const held = await hold(port, 'drain-holder'); // keeps the drain going
    const late = await Promise.all([4, 5].map(async (level) => ({ level, s: await connectRaw(port) })));
    const packets = late.map(({ level }) => connectPacket({ clientId: `late-${level}`, protocolVersion: level as Level }));
    for (const [i, { s }] of late.entries()) s.write(packets[i]!.subarray(0, 10)); // most of a CONNECT, not all
    const before = await rejectedCount(admin, 'mqtt', 'shutting_down');
    lb.proc.kill('SIGTERM');
    // One routed session drains; the two unfinished CONNECTs are said apart from it.
    expect(await lb.waitForLog((l) => l.msg === 'draining sessions')).toMatchObject({ sessions: 3, proxied: 1, connecting: 2 });
    const answers = await Promise.all(
      late.map(
        ({ s }, i) =>
          new Promise<Buffer>((resolve) => {
            const chunks: Buffer[] = [];
            const t = setTimeout(() => resolve(Buffer.concat(chunks)), 2000);
            s.on('data', (d: Buffer) => chunks.push(d));
            s.on('error', () => {});
            s.on('close', () => {
              clearTimeout(t);
              resolve(Buffer.concat(chunks));
            });
            s.write(packets[i]!.subarray(10));
          }),
      ),
    );
    expect([...answers[0]!]).toEqual([0x20, 0x02, 0x00, 0x03]);
    expect([...answers[1]!]).toEqual([0x20, 0x03, 0x00, 0x88, 0x00]);
    expect((await rejectedCount(admin, 'mqtt', 'shutting_down')) - before).toBe(2);
    expect(lb.logs.some((l) => l.msg === 'session routed' && String(l.clientId).startsWith('late-'))).toBe(false);
    await held.leave();
    expect(await lb.exited).toBe(0);
  });

  it('global_full: the cap counts all listeners together (0x89 / rc 3), freed when a client leaves', async () => {
    const { lb, admin, ports } = await startWith({ listeners: [{ name: 'a' }, { name: 'b' }], limits: '  clientConnectTimeout: 2s\n  maxConnections: 2\n' });
    const h1 = await hold(ports.a!, 'gf-a1');
    const h2 = await hold(ports.b!, 'gf-b1');
    await expectRefusedAtEveryLevel(ports.b!, 'gf-b-', 0x89);
    expect(await refusedWith(ports.a!, 'gf-a-4', 4)).toBe(3);
    await h1.leave();
    const h3 = await hold(ports.b!, 'gf-b2');
    expect(await rejectedCount(admin, 'b', 'global_full')).toBe(3);
    expect(await rejectedCount(admin, 'a', 'global_full')).toBe(1);
    await h2.leave();
    await h3.leave();
    await lb.stop();
  });

  it('global_full, not listener_full, where the open-file budget lowered the listener caps to the global cap', async () => {
    // Two listeners of the default cap do not fit 20,000 descriptors together: each is lowered to what it can hold,
    // the global cap of 1. The refusal is still the global cap's (an audit saw every one counted as listener_full).
    const { lb, admin, ports } = await startWith({ listeners: [{ name: 'a' }, { name: 'b' }], limits: '  clientConnectTimeout: 2s\n  maxConnections: 1\n' });
    const h1 = await hold(ports.a!, 'g1-a1');
    await expectRefusedAtEveryLevel(ports.a!, 'g1-a-', 0x89);
    expect(await rejectedCount(admin, 'a', 'global_full')).toBe(3);
    expect(await rejectedCount(admin, 'a', 'listener_full')).toBe(0);
    await h1.leave();
    await lb.stop();
  });

  it('empty_client_id_persistent counts the proxied sessions only: a refused one is not (metrics.md)', async () => {
    const { lb, admin, ports } = await startWith({ listeners: [{ name: 'small', extra: '    maxConnections: 1\n' }], limits: '  clientConnectTimeout: 2s\n' });
    const port = ports.small!;
    const persistent = { sessionExpiryInterval: 100 };
    const first = await hold(port, 'ep-holder');
    const full = await connectAt(port, '', 5, 3000, persistent);
    expect(full.code).toBe(0x89);
    full.socket.destroy();
    await first.leave();
    // Refused after the pick too: its only server in maintenance (no_server, 0x88).
    const setAdmin = async (state: string): Promise<void> => expect((await fetch(`http://127.0.0.1:${admin}/api/servers/brokers/m1/${state}`, { method: 'POST' })).status).toBe(200);
    await setAdmin('maint');
    const noServer = await connectAt(port, '', 5, 3000, persistent);
    expect(noServer.code).toBe(0x88);
    noServer.socket.destroy();
    expect(await rejectedCount(admin, 'small', 'empty_client_id_persistent')).toBe(0);
    await setAdmin('ready'); // back from maintenance: the next client waits for its first verdict
    const routed = await connectAt(port, '', 5, 3000, persistent);
    expect(routed.code).toBe(0);
    expect(await rejectedCount(admin, 'small', 'empty_client_id_persistent')).toBe(1);
    routed.socket.destroy();
    await lb.stop();
  });

  // A balancing audit: with username-hash, a client with a username is placed by it, and so is its reconnect with the
  // assigned ID: nothing to lose, yet it was counted.
  it('empty_client_id_persistent: not with username-hash and a username (placed by it, as its reconnect will be)', async () => {
    const [port, admin] = [await freePort(), await freePort()];
    const lb = await startLb(lbYaml({ port, admin, balance: 'username-hash', servers: [{ name: 'm1', port: broker.port }] }), { waitReady: `http://127.0.0.1:${admin}/readyz` });
    const persistent = { sessionExpiryInterval: 100 };
    for (const username of ['alice', undefined]) {
      const r = await exchange(port, [connectPacket({ clientId: '', protocolVersion: 5, clean: true, properties: persistent, ...(username === undefined ? {} : { username }) })], { waitMs: 1500 });
      expect(parsePackets(r.data, 5)[0]).toMatchObject({ cmd: 'connack', reasonCode: 0 });
    }
    // The one without a username, placed by the fallback: counted; the one with: not.
    expect(await rejectedCount(admin, 'mqtt', 'empty_client_id_persistent')).toBe(1);
    await lb.stop();
  });

  it('source_full: perSource.maxConnections answered 0x97 / rc 3, freed when the source has a session less', async () => {
    const { lb, admin, ports } = await startWith({ limits: '  clientConnectTimeout: 2s\n  perSource: { maxConnections: 2 }\n' });
    const port = ports.mqtt!;
    const h1 = await hold(port, 'sf-1');
    const h2 = await hold(port, 'sf-2');
    await expectRefusedAtEveryLevel(port, 'sf-x', 0x97);
    await h2.leave();
    const h3 = await hold(port, 'sf-3');
    expect(await refusedWith(port, 'sf-y', 5)).toBe(0x97);
    await h1.leave();
    await h3.leave();
    expect(await rejectedCount(admin, 'mqtt', 'source_full')).toBe(4);
    await lb.stop();
  });

  describe('servers[].maxConnections: server_full (rc 3 / 0x89)', () => {
    let second: Broker;
    beforeAll(async () => {
      second = await startMosquitto();
    });
    afterAll(async () => {
      await second?.stop();
    });

    async function startCapped(balance: string, caps: [number, number]): Promise<{ lb: LbProcess; admin: number; port: number }> {
      const [admin, port] = [await freePort(), await freePort()];
      const servers = [
        { name: 'm1', port: broker.port, maxConnections: caps[0] },
        { name: 'm2', port: second.port, maxConnections: caps[1] },
      ];
      const yaml = lbYaml({ port, admin, balance, servers, health: { type: 'mqtt', interval: '500ms', timeout: '400ms', rise: 1, fall: 2 }, limits: '  clientConnectTimeout: 2s\n' });
      return { lb: await startLb(yaml, { waitReady: `http://127.0.0.1:${admin}/readyz` }), admin, port };
    }

    /** Client IDs whose server by the hash is `server`, in a deterministic order. */
    function homedOn(server: string, prefix: string, n: number): string[] {
      const out: string[] = [];
      for (let i = 0; out.length < n && i < 10_000; i++) {
        const id = `${prefix}-${i}`;
        if (rendezvousOrder(Buffer.from(id), [{ name: 'm1', weight: 1 }, { name: 'm2', weight: 1 }])[0]!.name === server) out.push(id);
      }
      return out;
    }

    it('client-id-hash: a client whose server is full is refused, not sent to the other broker; its own reconnect gets through', async () => {
      const { lb, admin, port } = await startCapped('client-id-hash', [1, 0]);
      const [a, b] = homedOn('m1', 'cap', 2) as [string, string];
      const [c] = homedOn('m2', 'cap', 1) as [string];
      const first = await connectAt(port, a, 4);
      expect(first.code).toBe(0);
      // m1 is full: b is refused at every level (m2 has room, but b's session belongs on m1).
      for (const level of LEVELS) expect(await refusedWith(port, b, level), `level ${level}`).toBe(level === 5 ? 0x89 : 3);
      const other = await hold(port, c); // m2 has no cap
      // a again while its first connection is open: the broker takes its session over and frees the slot.
      const again = await connectAt(port, a, 4);
      expect(again.code).toBe(0);
      const firstClosed = first.socket.destroyed || (await new Promise<boolean>((resolve) => {
        const t = setTimeout(() => resolve(false), 3000);
        first.socket.once('close', () => {
          clearTimeout(t);
          resolve(true);
        });
      }));
      expect(firstClosed, 'the broker closed the older connection').toBe(true);
      await sleep(150);
      expect(await refusedWith(port, b, 4)).toBe(3); // still one session on m1
      again.socket.end(Buffer.from([0xe0, 0x00]));
      await sleep(300);
      const nowB = await hold(port, b);
      expect(await rejectedCount(admin, 'mqtt', 'server_full')).toBe(4);
      const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
      expect(text).toMatch(/^mqtt_lb_server_max_connections\{pool="brokers",server="m1"\} 1$/m);
      expect(text).toMatch(/^mqtt_lb_server_max_connections\{pool="brokers",server="m2"\} 0$/m);
      await nowB.leave();
      await other.leave();
      first.socket.destroy();
      again.socket.destroy();
      await lb.stop();
    });

    it('round-robin passes over a full server, and refuses with server_full only when every server is full', async () => {
      const { lb, admin, port } = await startCapped('round-robin', [1, 1]);
      const h1 = await hold(port, 'rr-1');
      const h2 = await hold(port, 'rr-2'); // the second goes to the other server whatever the rotation
      expect(await refusedWith(port, 'rr-3', 5)).toBe(0x89);
      expect(await refusedWith(port, 'rr-4', 4)).toBe(3);
      await h1.leave();
      const h3 = await hold(port, 'rr-5');
      expect(await rejectedCount(admin, 'mqtt', 'server_full')).toBe(2);
      for (const h of [h2, h3]) await h.leave();
      await lb.stop();
    });

    it('onServerUp: rebalance: the clients it moves back are not locked out when newcomers take the room first', async () => {
      const third = await startMosquitto();
      const old: MqttClient[] = [];
      const fresh: net.Socket[] = [];
      try {
        const [admin, port] = [await freePort(), await freePort()];
        const servers = [
          { name: 'm1', port: third.port, maxConnections: 3 },
          { name: 'm2', port: second.port },
        ];
        const yaml = lbYaml({ port, admin, servers, pool: '    onServerUp: rebalance\n    evictRate: 100\n', health: { type: 'mqtt', interval: '200ms', timeout: '150ms', rise: 1, fall: 1 }, limits: '  clientConnectTimeout: 2s\n' });
        const lb = await startLb(yaml, { waitReady: `http://127.0.0.1:${admin}/readyz` });
        const servers_ = async (): Promise<Record<string, { state: string; sessions: number }>> => {
          const st = (await (await fetch(`http://127.0.0.1:${admin}/api/status`)).json()) as { pools: Array<{ servers: Array<{ name: string; state: string; sessions: number }> }> };
          return Object.fromEntries(st.pools[0]!.servers.map((x) => [x.name, { state: x.state, sessions: x.sessions }]));
        };
        const until = async (what: string, ok: () => Promise<boolean>, ms = 5000): Promise<void> => {
          const end = Date.now() + ms;
          while (!(await ok())) {
            if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
            await sleep(25);
          }
        };
        await until('m1 up', async () => (await servers_()).m1!.state === 'up');
        third.pause();
        await until('m1 down', async () => (await servers_()).m1!.state === 'down');
        const [oldIds, freshIds] = [homedOn('m1', 'rb', 9).slice(0, 6), homedOn('m1', 'rb', 9).slice(6)];
        for (const clientId of oldIds) old.push(await connectVia(port, { clientId, reconnectPeriod: 1000, reconnectOnConnackError: true }));
        expect((await servers_()).m2!.sessions).toBe(6);
        third.resume();
        await until('m1 up again', async () => (await servers_()).m1!.state === 'up');
        // Newcomers of m1 arrive before the moved clients reconnect (1 s): they take the room the rebalance counted on.
        for (const clientId of freshIds) {
          const r = await connectAt(port, clientId, 4);
          fresh.push(r.socket);
          expect(r.code, clientId).toBe(0);
        }
        await until('the moved clients back', async () => old.every((c) => c.connected), 4000);
        const after = await servers_();
        expect(after.m1!.sessions).toBe(3);
        expect(after.m2!.sessions).toBe(6);
        expect(await rejectedCount(admin, 'mqtt', 'server_full')).toBe(0);
        await Promise.all(old.splice(0).map((c) => c.endAsync(true)));
        for (const f of fresh.splice(0)) f.destroy();
        await lb.stop();
      } finally {
        for (const c of old) c.end(true);
        for (const f of fresh) f.destroy();
        third.resume();
        await third.stop();
      }
    });
  });

  it('a reload that lowers a cap below the sessions held still answers new clients in MQTT, plain and TLS, not closed at accept', async () => {
    // An audit: with several listeners under an open-file limit, a listener's last guard after a reload that lowered
    // its cap is the new cap's room plus a share of the spare descriptors, below the sessions it still held, and
    // every new client was closed at accept (a reset to the client, accept_dropped) until enough had ended. Here:
    // caps of 80 lowered to 5 beside two listeners of 100 (from the new caps alone, guards of ~61 after the reload).
    const pki = createTestPki();
    const tls = `      cert: ${pki.serverCert}\n      key: ${pki.serverKey}\n`;
    const listeners = [{ name: 'mqtt', extra: '    maxConnections: 80\n' }, { name: 'tls', tls, extra: '    maxConnections: 80\n' }, { name: 'big1', extra: '    maxConnections: 100\n' }, { name: 'big2', extra: '    maxConnections: 100\n' }];
    const { lb, admin, ports } = await startWith({ listeners, limits: '  clientConnectTimeout: 3s\n  maxConnections: 200\n', fileLimit: 830 });
    expect(lb.logs.some((l) => l.msg === 'connection cap clamped')).toBe(false);
    const opened: net.Socket[] = [];
    const held: Array<{ leave(): Promise<void> }> = [];
    try {
      for (let i = 0; i < 80; i++) held.push(await hold(ports.mqtt!, `low-${i}`));
      for (let i = 0; i < 80; i++) expect(await tlsConnackCode(ports.tls!, `low-tls-${i}`, opened), `TLS session ${i}`).toBe(0);
      lb.writeConfig(readFileSync(lb.configFile, 'utf8').replaceAll('maxConnections: 80\n', 'maxConnections: 5\n'));
      lb.reload();
      await lb.waitForLog((l) => l.msg === 'config reloaded');
      const changed = lb.logs.filter((l) => l.msg === 'listener limits changed by reload' && (l.listener === 'mqtt' || l.listener === 'tls'));
      // The guard in effect: the sessions held and the lowered cap's room to refuse (the budget's own was below them).
      expect(changed.map((l) => Number(l.acceptGuard))).toEqual([80 + 16, 80 + 16]);
      for (let i = 0; i < 10; i++) expect(await refusedWith(ports.mqtt!, `low-new-${i}`, 5), `plain client ${i}`).toBe(0x89);
      const tlsCodes: Array<number | null> = [];
      for (let i = 0; i < 10; i++) tlsCodes.push(await tlsConnackCode(ports.tls!, `low-tls-new-${i}`, opened));
      expect(tlsCodes).toEqual(Array.from({ length: 10 }, () => 3));
      expect(await rejectedCount(admin, 'mqtt', 'accept_dropped')).toBe(0);
      expect(await rejectedCount(admin, 'tls', 'accept_dropped')).toBe(0);
      expect(await rejectedCount(admin, 'mqtt', 'listener_full')).toBe(10);
      expect(await rejectedCount(admin, 'tls', 'listener_full')).toBe(10);
      // Once the held sessions are gone, the lowered cap is what it says.
      for (const h of held.splice(0)) await h.leave();
      for (let i = 0; i < 5; i++) held.push(await hold(ports.mqtt!, `low-after-${i}`));
      expect(await refusedWith(ports.mqtt!, 'low-after-x', 4)).toBe(3);
    } finally {
      for (const h of held) await h.leave();
      for (const s of opened) s.destroy();
      await lb.stop();
      pki.cleanup();
    }
  });

  it('sessions a reload left above a lowered cap hold descriptors the new caps do not count: past them connections are closed at accept, the process never runs out', async () => {
    // A re-audit: 300 sessions on a listener lowered to 5 beside a big one under `ulimit -n 1500`; filling the big one
    // with connections that send no CONNECT ran the process out of descriptors (EMFILE on every listener).
    // Here: 100 sessions on `low` lowered to 5 under `ulimit -n 700` (506 descriptors beside the reserve, global cap
    // 240); `big` then takes the other 140 sessions and connections that send nothing up to its guard.
    const listeners = [{ name: 'low', extra: '    maxConnections: 100\n' }, { name: 'big', extra: '    maxConnections: 1000\n' }];
    const { lb, admin, ports } = await startWith({ listeners, limits: '  clientConnectTimeout: 20s\n  maxConnections: 1000\n', fileLimit: 700 });
    const held: Array<{ leave(): Promise<void> }> = [];
    const idle: net.Socket[] = [];
    try {
      for (let i = 0; i < 100; i++) held.push(await hold(ports.low!, `room-${i}`));
      lb.writeConfig(readFileSync(lb.configFile, 'utf8').replace('maxConnections: 100\n', 'maxConnections: 5\n'));
      lb.reload();
      await lb.waitForLog((l) => l.msg === 'config reloaded');
      for (let i = 0; i < 140; i++) held.push(await hold(ports.big!, `room-big-${i}`));
      for (let i = 0; i < 200; i++) idle.push(await connectRaw(ports.big!));
      await sleep(500);
      expect(lb.logs.filter((l) => l.msg === 'out of file descriptors: the listeners cannot accept' || l.msg === 'listener accept error')).toEqual([]);
      // Counted apart from the listener's own guard (session 31's note: both were `accept_dropped`).
      const line = lb.logs.find((l) => l.msg === 'connections closed at accept: client connections fill the open-file limit');
      expect(line).toMatchObject({ listener: 'big', descriptorRoom: 700 - 194 });
      expect(line!.inUse).toBeGreaterThanOrEqual(700 - 194);
      expect(await rejectedCount(admin, 'big', 'descriptors_exhausted')).toBeGreaterThan(0);
      // The reserve held: the admin port answers, and the probes (readyz needs a server up).
      expect((await fetch(`http://127.0.0.1:${admin}/readyz`)).status).toBe(200);
      // Room again once connections go (and a session, the global cap being full): a client of the big listener is served.
      for (const s of idle.splice(0, 100)) s.destroy();
      await held.pop()!.leave();
      await sleep(300);
      const again = await connectAt(ports.big!, 'room-after', 4);
      expect(again.code).toBe(0);
      again.socket.destroy();
    } finally {
      for (const s of idle) s.destroy();
      for (const h of held) await h.leave();
      await lb.stop();
    }
  });

  it('perSource.exempt: a listed address (a known NAT) is not held to perSource.maxConnections', async () => {
    const { lb, ports } = await startWith({ limits: '  clientConnectTimeout: 2s\n  perSource: { maxConnections: 1, exempt: [127.0.0.0/8] }\n' });
    const port = ports.mqtt!;
    const held = [await hold(port, 'ex-1'), await hold(port, 'ex-2'), await hold(port, 'ex-3')];
    for (const h of held) await h.leave();
    await lb.stop();
  });

  it('a reload that turns perSource.maxConnections on counts the sessions the address already holds', async () => {
    const { lb, ports } = await startWith({ limits: '  clientConnectTimeout: 2s\n' });
    const port = ports.mqtt!;
    const held = [await hold(port, 'rl-1'), await hold(port, 'rl-2'), await hold(port, 'rl-3')];
    lb.writeConfig(readFileSync(lb.configFile, 'utf8').replace('  clientConnectTimeout: 2s\n', '  clientConnectTimeout: 2s\n  perSource: { maxConnections: 2 }\n'));
    lb.reload();
    await lb.waitForLog((l) => l.msg === 'config reloaded');
    expect(await refusedWith(port, 'rl-x', 5)).toBe(0x97);
    for (const h of held.splice(0, 2)) await h.leave();
    const next = await hold(port, 'rl-4'); // 2 of 2 again
    await next.leave();
    for (const h of held) await h.leave();
    await lb.stop();
  });

  // Reliability cases 58 and 63: one address that opens connections and sends nothing must not hold the
  // listener's slots. Connections of one address still without a CONNECT are capped like its sessions; past
  // that they are closed at once (nothing was read that could be answered). Other addresses are unaffected.
  it('silent connections count against their address: past twice perSource.maxConnections closed at once, others unaffected', async () => {
    const { lb, admin, ports } = await startWith({ limits: '  clientConnectTimeout: 5s\n  perSource: { maxConnections: 3 }\n' });
    const port = ports.mqtt!;
    const opened: net.Socket[] = [];
    const open = (localAddress: string): Promise<net.Socket> => openFrom(port, localAddress, opened);
    try {
      const silent: net.Socket[] = [];
      for (let i = 0; i < 6; i++) silent.push(await open('127.0.0.1'));
      await sleep(200);
      const extra = await open('127.0.0.1');
      expect(await closedWithin(extra, 1500), 'the seventh silent connection is closed').toBe(true);
      for (const s of silent) expect(s.destroyed).toBe(false);
      // Another address gets in while the silent ones stay.
      const other = await open('127.0.0.2');
      const answered = new Promise<Buffer>((resolve) => other.once('data', resolve));
      other.write(connectPacket({ clientId: 'other-address' }));
      expect(parsePackets(await answered)[0]).toMatchObject({ cmd: 'connack', returnCode: 0 });
      // The silent ones leave: the address is served again.
      for (const s of silent) s.destroy();
      await sleep(200);
      const back = await connectAt(port, 'back-again', 4);
      opened.push(back.socket);
      expect(back.code).toBe(0);
      expect(await rejectedCount(admin, 'mqtt', 'source_full')).toBe(1);
    } finally {
      for (const s of opened) s.destroy();
      await lb.stop();
    }
  });

  it('on a TLS listener, handshakes count against their address too: past twice perSource.maxConnections closed before any TLS; given back when they end', async () => {
    const pki = createTestPki();
    const { lb, admin, ports } = await startWith({ listeners: [{ name: 'tls', tls: `      cert: ${pki.serverCert}\n      key: ${pki.serverKey}\n` }], limits: '  clientConnectTimeout: 5s\n  perSource: { maxConnections: 3 }\n' });
    const port = ports.tls!;
    const opened: net.Socket[] = [];
    const stalled = (localAddress: string): Promise<net.Socket> => openFrom(port, localAddress, opened);
    // A whole TLS client: handshake, CONNECT, the CONNACK's return code, then gone.
    const tlsSession = (localAddress: string, clientId: string): Promise<number | null> =>
      new Promise((resolve) => {
        const raw = netConnect({ host: '127.0.0.1', port, localAddress });
        raw.on('error', () => {});
        opened.push(raw);
        const s = tlsConnect({ socket: raw, rejectUnauthorized: false }, () => s.write(connectPacket({ clientId })));
        opened.push(s);
        s.on('error', () => resolve(null));
        s.once('close', () => resolve(null));
        s.once('data', (d: Buffer) => {
          resolve((parsePackets(d)[0] as mqttPacket.IConnackPacket | undefined)?.returnCode ?? null);
          s.destroy();
        });
      });
    try {
      // Sessions that came through the handshake give their place back: more of them, one after the other, than
      // the cap on connections without a CONNECT.
      for (let i = 0; i < 8; i++) expect(await tlsSession('127.0.0.1', `tls-seq-${i}`), `session ${i}`).toBe(0);
      const silent: net.Socket[] = [];
      for (let i = 0; i < 6; i++) silent.push(await stalled('127.0.0.1'));
      await sleep(200);
      const extra = await stalled('127.0.0.1');
      expect(await closedWithin(extra, 1500), 'the seventh handshake of one address is closed').toBe(true);
      expect(extra.bytesRead).toBe(0);
      for (const s of silent) expect(s.destroyed).toBe(false);
      expect(await tlsSession('127.0.0.2', 'tls-other-address')).toBe(0);
      for (const s of silent) s.destroy();
      await sleep(300);
      expect(await tlsSession('127.0.0.1', 'tls-back-again')).toBe(0);
      expect(await rejectedCount(admin, 'tls', 'source_full')).toBe(1);
    } finally {
      for (const s of opened) s.destroy();
      await lb.stop();
      pki.cleanup();
    }
  });

  it('clients that arrive together: the caps count sessions, not connections still sending their CONNECT', async () => {
    // Three connections first, then their three CONNECTs: under a cap of two, two are admitted and one refused.
    const together = async (port: number, prefix: string, localAddress?: string): Promise<Array<number | null>> => {
      const sockets = await Promise.all([0, 1, 2].map(() => new Promise<net.Socket>((resolve, reject) => {
        const s = netConnect({ host: '127.0.0.1', port, ...(localAddress !== undefined ? { localAddress } : {}) });
        s.once('connect', () => resolve(s));
        s.once('error', reject);
      })));
      await sleep(100);
      const codes = await Promise.all(sockets.map((s, i) => connackCodeOf(s, `${prefix}-${i}`)));
      for (const s of sockets) s.destroy();
      return codes.sort((a, b) => (a ?? -1) - (b ?? -1));
    };
    const global = await startWith({ limits: '  clientConnectTimeout: 2s\n  maxConnections: 2\n' });
    expect(await together(global.ports.mqtt!, 'tg')).toEqual([0, 0, 0x89]);
    await global.lb.stop();
    const listener = await startWith({ listeners: [{ name: 'small', extra: '    maxConnections: 2\n' }], limits: '  clientConnectTimeout: 2s\n' });
    expect(await together(listener.ports.small!, 'tl')).toEqual([0, 0, 0x89]);
    await listener.lb.stop();
    const source = await startWith({ limits: '  clientConnectTimeout: 2s\n  perSource: { maxConnections: 2 }\n' });
    expect(await together(source.ports.mqtt!, 'ts', '127.0.0.3')).toEqual([0, 0, 0x97]);
    await source.lb.stop();
  });

  it('rate_limited: perSource.connectRate answered 0x9F / rc 3, admitted again once the rate allows', async () => {
    const { lb, admin, ports } = await startWith({ limits: '  clientConnectTimeout: 2s\n  perSource: { connectRate: 1 }\n' });
    const port = ports.mqtt!;
    const h1 = await hold(port, 'rl-1');
    await expectRefusedAtEveryLevel(port, 'rl-x', 0x9f);
    await sleep(1100);
    const h2 = await hold(port, 'rl-2');
    await h1.leave();
    await h2.leave();
    expect(await rejectedCount(admin, 'mqtt', 'rate_limited')).toBe(3);
    await lb.stop();
  });

  it('rate_limited: a burst past the rate, all at once, is answered 0x9F too, not closed unanswered (a gateway reconnecting)', async () => {
    const { lb, admin, ports } = await startWith({ limits: '  clientConnectTimeout: 2s\n  perSource: { connectRate: 5 }\n' });
    const port = ports.mqtt!;
    // Eight connections open before any sends its CONNECT, then all CONNECTs at once.
    const sockets = await Promise.all(Array.from({ length: 8 }, () => connectRaw(port)));
    const answers = await Promise.all(sockets.map((s, i) => connackCodeOf(s, `burst-${i}`)));
    for (const s of sockets) s.destroy();
    expect(answers.filter((c) => c === 0)).toHaveLength(5);
    expect(answers.filter((c) => c === 0x9f)).toHaveLength(3);
    expect(await rejectedCount(admin, 'mqtt', 'rate_limited')).toBe(3);
    await lb.stop();
  });

  it('accept_queue_full: beyond acceptQueue refused 0x9F / rc 3; queued clients wait and get through at the rate', async () => {
    const { lb, admin, ports } = await startWith({ limits: '  clientConnectTimeout: 5s\n  acceptRate: 1\n  acceptQueue: 1\n' });
    const port = ports.mqtt!;
    const h1 = await hold(port, 'aq-1'); // the burst token
    const start = Date.now();
    const waiting = connectAt(port, 'aq-2', 5, 4000); // queued
    await sleep(100);
    await expectRefusedAtEveryLevel(port, 'aq-x', 0x9f);
    const w = await waiting;
    expect(w.code).toBe(0); // the broker's CONNACK, after waiting for a token
    expect(Date.now() - start).toBeGreaterThanOrEqual(500);
    w.socket.destroy();
    await h1.leave();
    expect(await rejectedCount(admin, 'mqtt', 'accept_queue_full')).toBe(3);
    await lb.stop();
  });

  it('SIGTERM tells the clients waiting in the accept queue at once: 0x88 / rc 3 (shutting_down), none let through', async () => {
    const { lb, ports } = await startWith({ limits: '  clientConnectTimeout: 8s\n  acceptRate: 0.2\n  acceptQueue: 10\n  drainTimeout: 3s\n' });
    const port = ports.mqtt!;
    const h1 = await hold(port, 'sd-1'); // the burst token
    const waiting = [connectAt(port, 'sd-5', 5, 6000), connectAt(port, 'sd-4', 4, 6000), connectAt(port, 'sd-3', 3, 6000)];
    await sleep(300);
    const stopAt = Date.now();
    const exited = lb.stop();
    const [r5, r4, r3] = await Promise.all(waiting);
    expect(Date.now() - stopAt).toBeLessThan(1500);
    expect([r5.code, r4.code, r3.code]).toEqual([0x88, 3, 3]);
    for (const r of [r5, r4, r3]) r.socket.destroy();
    await h1.leave();
    expect(await exited).toBe(0);
  });

  it.each(['tcp', 'tls'])('a queued client that closes (FIN) leaves the queue at once: its place and token go to the next, its CONNECT to no broker (%s)', async (front) => {
    // A token every 2 s; the first client takes the burst token, two more fill the queue, then give up.
    const pki = createTestPki();
    const tls = `      cert: ${pki.serverCert}\n      key: ${pki.serverKey}\n`;
    const { lb, admin, ports } = await startWith({ listeners: [{ name: 'mqtt' }, { name: 'tls', tls }], limits: '  clientConnectTimeout: 8s\n  acceptRate: 0.5\n  acceptQueue: 2\n' });
    const port = ports.mqtt!;
    const open = (): Promise<net.Socket> =>
      front === 'tcp'
        ? connectRaw(port)
        : new Promise((resolve, reject) => {
            const s = tlsConnect({ host: '127.0.0.1', port: ports.tls!, rejectUnauthorized: false }, () => resolve(s));
            s.once('error', reject);
          });
    const watcher = await connectVia(broker.port, { clientId: 'gone-watcher' });
    try {
      const wills: string[] = [];
      watcher.on('message', (topic) => wills.push(topic));
      await watcher.subscribeAsync('gone/#');
      const h1 = await hold(port, 'gone-0');
      const gone = await Promise.all([1, 2].map(() => open()));
      gone.forEach((s, i) => {
        s.on('error', () => {});
        s.write(connectPacket({ clientId: `gone-${i + 1}`, will: { topic: `gone/${i + 1}`, payload: 'offline' } }));
      });
      await sleep(300); // both queued
      const closedByLb = gone.map((s) => new Promise<boolean>((resolve) => {
        const t = setTimeout(() => resolve(false), 1500);
        s.once('close', () => {
          clearTimeout(t);
          resolve(true);
        });
      }));
      for (const s of gone) s.end();
      expect(await Promise.all(closedByLb)).toEqual([true, true]);
      // The queue is empty again: a newcomer waits (instead of accept_queue_full) and gets the next token.
      const next = await connectAt(port, 'gone-next', 4, 4000);
      expect(next.code).toBe(0);
      next.socket.destroy();
      await sleep(2300); // one more token: still nobody's Will
      expect(wills).toEqual([]);
      expect(await rejectedCount(admin, 'mqtt', 'accept_queue_full')).toBe(0);
      await h1.leave();
    } finally {
      await watcher.endAsync(true);
      await lb.stop();
      pki.cleanup();
    }
  });

  it('a queued client waits at most clientConnectTimeout, then is refused rate_limited (0x9F / rc 3)', async () => {
    const { lb, admin, ports } = await startWith({ limits: '  clientConnectTimeout: 600ms\n  acceptRate: 0.2\n  acceptQueue: 10\n' });
    const port = ports.mqtt!;
    const h1 = await hold(port, 'qe-1');
    const start = Date.now();
    const [r5, r4] = await Promise.all([connectAt(port, 'qe-5', 5, 4000), connectAt(port, 'qe-4', 4, 4000)]);
    const waited = Date.now() - start;
    expect(r5.code).toBe(0x9f);
    expect(r4.code).toBe(3);
    expect(waited).toBeGreaterThanOrEqual(550);
    expect(waited).toBeLessThan(3000); // well before the next token (5 s at 0.2/s)
    r5.socket.destroy();
    r4.socket.destroy();
    await h1.leave();
    expect(await rejectedCount(admin, 'mqtt', 'rate_limited')).toBe(2);
    await lb.stop();
  });
});

/**
 * A CONNECT valid as far as it goes (client ID, will topic and message, username: 60,000 bytes each) whose last
 * 1,000 bytes never come: the balancer must buffer ~260 KB for it until clientConnectTimeout.
 */
function unfinishedLargeConnect(): Buffer {
  const field = (n: number, fill: number): Buffer => {
    const b = Buffer.alloc(n + 2, fill);
    b.writeUInt16BE(n, 0);
    return b;
  };
  // Protocol name MQTT, level 4, flags: username, password, will, clean session; keepalive 60.
  const variable = Buffer.from([0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0xc6, 0x00, 0x3c]);
  const body = Buffer.concat([variable, field(60_000, 0x61), field(60_000, 0x62), field(60_000, 0x63), field(60_000, 0x75), field(20_000, 0x70)]);
  const n = body.length;
  const header = Buffer.from([0x10, (n & 0x7f) | 0x80, ((n >> 7) & 0x7f) | 0x80, n >> 14]);
  return Buffer.concat([header, body.subarray(0, n - 1000)]);
}

/** A connection from `localAddress` that sends nothing (kept in `opened`, for the test's cleanup). */
function openFrom(port: number, localAddress: string, opened: net.Socket[]): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = netConnect({ host: '127.0.0.1', port, localAddress });
    opened.push(s);
    s.on('error', () => {});
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Whether the balancer closes `s` within `ms`. */
function closedWithin(s: net.Socket, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    if (s.destroyed) return resolve(true);
    const t = setTimeout(() => resolve(false), ms);
    s.once('close', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

/** A CONNECT with a username of `bytes` bytes whose last 100 bytes never come. */
function unfinishedConnectOf(bytes: number): Buffer {
  const username = Buffer.alloc(bytes + 2, 0x75);
  username.writeUInt16BE(bytes, 0);
  // Protocol name MQTT, level 4, flags: username, clean session; keepalive 60; client ID "x".
  const body = Buffer.concat([Buffer.from([0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x82, 0x00, 0x3c, 0x00, 0x01, 0x78]), username]);
  const n = body.length;
  const header = Buffer.from([0x10, (n & 0x7f) | 0x80, ((n >> 7) & 0x7f) | 0x80, n >> 14]);
  return Buffer.concat([header, body.subarray(0, n - 100)]);
}

/** `count` clients that each send unfinishedLargeConnect(); counts the ones the balancer closed. */
async function floodUnfinished(port: number, count: number): Promise<{ sockets: net.Socket[]; closedByLb(): number }> {
  const packet = unfinishedLargeConnect();
  const sockets: net.Socket[] = [];
  let closed = 0;
  for (let i = 0; i < count; i++) {
    const s = netConnect(port, '127.0.0.1');
    s.on('error', () => {});
    s.on('close', () => closed++);
    s.write(packet);
    sockets.push(s);
    if (i % 50 === 49) await sleep(10);
  }
  return { sockets, closedByLb: () => closed };
}

/**
 * Like floodUnfinished(), but all `count` connections are opened, and `accepted()` waits for the balancer to have
 * taken them, before any of them sends: when the ceiling is crossed every one is a connection without its CONNECT
 * (shed), none is still in the listen backlog to be accepted as a new client once the shedding freed memory.
 */
async function floodUnfinishedAccepted(port: number, count: number, accepted: () => Promise<void>): Promise<{ sockets: net.Socket[]; closedByLb(): number }> {
  const packet = unfinishedLargeConnect();
  const sockets: net.Socket[] = [];
  let closed = 0;
  for (let i = 0; i < count; i += 50) {
    const batch = await Promise.all(Array.from({ length: Math.min(50, count - i) }, () => connectRaw(port)));
    for (const s of batch) {
      s.on('error', () => {});
      s.on('close', () => closed++);
    }
    sockets.push(...batch);
  }
  await accepted();
  for (const s of sockets) s.write(packet);
  return { sockets, closedByLb: () => closed };
}

async function metricValue(admin: number, line: RegExp): Promise<number | null> {
  const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
  const m = line.exec(text);
  return m === null ? null : Number(m[1]);
}

async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

describe('connections that send nothing, at the last guard', () => {
  const DISPLACED_LINE = 'connections still waiting for their CONNECT closed for new ones: the listener is at its last guard';
  /** Where the silent connections come from: another loopback address than the clients' (127.0.0.1). */
  const SILENT_FROM = '127.0.0.2';

  /** One connection from `from` that sends nothing; its index is added to `closed` when the LB closes it. */
  function silentOne(port: number, from: string, closed: number[], index: number): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const s = netConnect({ port, host: '127.0.0.1', localAddress: from });
      s.once('connect', () => resolve(s));
      s.once('error', reject);
      s.on('error', () => {});
      s.on('close', () => closed.push(index));
    });
  }

  /** Opens `n` connections from SILENT_FROM that send nothing, one after another. */
  async function openSilent(port: number, n: number, closed: number[]): Promise<net.Socket[]> {
    const out: net.Socket[] = [];
    for (let i = 0; i < n; i++) out.push(await silentOne(port, SILENT_FROM, closed, i));
    return out;
  }

  function guardOf(lb: LbProcess, listener: string): number {
    const line = lb.logs.find((l) => l.msg === 'listener started' && l.listener === listener);
    return Number(line?.acceptGuard);
  }

  /** Listener `tls` (cap 4) beside `others`, under an open-file limit of 320: a guard of a few dozen. */
  async function withTlsListener(others: Array<{ name: string; extra?: string }> = []): Promise<Awaited<ReturnType<typeof startWith>> & { port: number; guard: number; close(sockets: net.Socket[]): Promise<void> }> {
    const pki = createTestPki();
    const tls = `      cert: ${pki.serverCert}\n      key: ${pki.serverKey}\n`;
    const started = await startWith({ listeners: [{ name: 'tls', tls, extra: '    maxConnections: 4\n' }, ...others], limits: '  clientConnectTimeout: 20s\n', fileLimit: 320 });
    /** The test's sockets, the balancer, the certificates. */
    const close = async (sockets: net.Socket[]): Promise<void> => {
      for (const s of sockets) s.destroy();
      await started.lb.stop();
      pki.cleanup();
    };
    return { ...started, port: started.ports.tls!, guard: guardOf(started.lb, 'tls'), close };
  }

  it('a client takes the place of the connection that has waited longest for its CONNECT, once it has waited 2 s; before that, or from that address, it is closed at accept', async () => {
    // A security review: one address opening connections that send nothing, each reopened as clientConnectTimeout
    // closed it, kept every new client out of the listener.
    const { lb, admin, ports } = await startWith({ listeners: [{ name: 'small', extra: '    maxConnections: 4\n' }], limits: '  clientConnectTimeout: 20s\n', fileLimit: 320 });
    const port = ports.small!;
    const guard = guardOf(lb, 'small');
    expect(guard).toBeGreaterThanOrEqual(20);
    expect(guard).toBeLessThan(200);
    const closed: number[] = [];
    const openedAt = Date.now();
    const silent = await openSilent(port, guard, closed);
    const opened: net.Socket[] = [];
    try {
      await sleep(200);
      expect(closed).toEqual([]);
      // Not 2 s yet: the guard holds, as before (a storm of real clients must not displace itself).
      expect(Date.now() - openedAt, 'the guard filled in time for this step').toBeLessThan(1800);
      const early = await connectAt(port, 'early', 4, 2000);
      opened.push(early.socket);
      expect(early).toMatchObject({ code: null, closed: true });
      expect(await rejectedCount(admin, 'small', 'accept_dropped')).toBe(1);
      expect(closed).toEqual([]);

      await sleep(Math.max(0, openedAt + 2200 - Date.now()));
      // From the silent connections' own address: its old ones are not displaced by its new one (closed at accept).
      const own: number[] = [];
      opened.push(await silentOne(port, SILENT_FROM, own, 0));
      await sleep(200);
      expect(own).toEqual([0]);
      expect(closed).toEqual([]);
      expect(await rejectedCount(admin, 'small', 'accept_dropped')).toBe(2);

      const first = await connectAt(port, 'displacer-1', 4);
      opened.push(first.socket);
      expect(first.code).toBe(0);
      const second = await connectAt(port, 'displacer-2', 5);
      opened.push(second.socket);
      expect(second.code).toBe(0);
      await sleep(100);
      // The two that waited longest, oldest first; the others still wait.
      expect(closed).toEqual([0, 1]);
      expect(await rejectedCount(admin, 'small', 'displaced')).toBe(2);
      expect(await rejectedCount(admin, 'small', 'accept_dropped')).toBe(2);
      const line = lb.logs.find((l) => l.msg === DISPLACED_LINE);
      expect(line).toMatchObject({ level: 40, listener: 'small', acceptGuard: guard });
      expect(Number(line!.waitedMs)).toBeGreaterThanOrEqual(2000);
      // One line per 10 s at most: the second was counted, not logged again.
      expect(lb.logs.filter((l) => l.msg === DISPLACED_LINE)).toHaveLength(1);
    } finally {
      for (const s of [...silent, ...opened]) s.destroy();
      await lb.stop();
    }
  });

  it('an address that reopens each closed connection at once holds no slot a client of another address needs', async () => {
    // A displacement audit: such an address took back every slot the moment it aged (0-2 of 30 clients got in).
    const { lb, ports } = await startWith({ listeners: [{ name: 'small', extra: '    maxConnections: 4\n' }], limits: '  clientConnectTimeout: 20s\n', fileLimit: 320 });
    const port = ports.small!;
    const guard = guardOf(lb, 'small');
    const sockets = new Set<net.Socket>();
    let attacking = true;
    const attacker = async (): Promise<void> => {
      while (attacking) {
        const s = await silentOne(port, SILENT_FROM, [], 0).catch(() => null);
        if (s === null) continue;
        sockets.add(s);
        // Reopened as soon as this one is closed.
        await new Promise<void>((resolve) => s.once('close', () => resolve()));
        sockets.delete(s);
      }
    };
    const running = Array.from({ length: guard + 20 }, () => attacker());
    try {
      await sleep(2500);
      let served = 0;
      for (let i = 0; i < 10; i++) {
        const r = await connectAt(port, `client-${i}`, 4, 3000);
        if (r.code === 0) served++;
        r.socket.destroy();
        await sleep(100);
      }
      expect(served).toBe(10);
    } finally {
      attacking = false;
      for (const s of sockets) s.destroy();
      await Promise.race([Promise.all(running), sleep(3000)]);
      for (const s of sockets) s.destroy();
      await lb.stop();
    }
  });

  it('on a TLS listener: a connection that never starts its handshake, or that finished it and sends no CONNECT, whichever waited longer at its step', async () => {
    const { admin, port, guard, close } = await withTlsListener();
    expect(guard).toBeLessThan(200);
    const opened: net.Socket[] = [];
    let silent: net.Socket[] = [];
    try {
      // First: a finished handshake and no CONNECT (a session reading its CONNECT).
      let handshakeOnlyClosed = false;
      const handshakeOnly = await new Promise<net.Socket>((resolve, reject) => {
        // tls.connect passes `localAddress` on to net.connect; its options type does not name it.
        const s = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...{ localAddress: SILENT_FROM } }, () => resolve(s));
        s.once('error', reject);
      });
      opened.push(handshakeOnly);
      handshakeOnly.on('close', () => (handshakeOnlyClosed = true));
      handshakeOnly.on('error', () => {});
      // Its handshake done on the balancer's side too (TLS 1.3: the client's Finished comes after its callback).
      await sleep(100);
      // Then connections that never send a byte of TLS, to the guard.
      const closed: number[] = [];
      silent = await openSilent(port, guard - 1, closed);
      await sleep(2300);
      expect(handshakeOnlyClosed).toBe(false);
      expect(await tlsConnackCode(port, 'tls-displacer-1', opened)).toBe(0);
      await sleep(100);
      expect(handshakeOnlyClosed).toBe(true);
      expect(closed).toEqual([]);
      expect(await tlsConnackCode(port, 'tls-displacer-2', opened)).toBe(0);
      await sleep(100);
      expect(closed).toEqual([0]);
      expect(await rejectedCount(admin, 'tls', 'displaced')).toBe(2);
      expect(await rejectedCount(admin, 'tls', 'accept_dropped')).toBe(0);
    } finally {
      await close([...silent, ...opened]);
    }
  });

  it('on a TLS listener, a connection that has just finished a slow handshake has not waited at its step: an older silent one goes first', async () => {
    // A displacement audit: sessions were judged by their accept, so one that had just finished its handshake could be
    // taken for the longest waiting while others had waited longer at their step.
    const { admin, port, guard, close } = await withTlsListener();
    const opened: net.Socket[] = [];
    let silent: net.Socket[] = [];
    try {
      // Accepted first, its handshake only after 2 s.
      const slowClosed: number[] = [];
      const slow = await silentOne(port, SILENT_FROM, slowClosed, 0);
      opened.push(slow);
      const closed: number[] = [];
      silent = await openSilent(port, guard - 1, closed);
      await sleep(2200);
      const slowTls = await new Promise<net.Socket>((resolve, reject) => {
        const t = tlsConnect({ socket: slow, rejectUnauthorized: false }, () => resolve(t));
        t.once('error', reject);
      });
      opened.push(slowTls);
      await sleep(150);
      expect(await tlsConnackCode(port, 'newcomer', opened)).toBe(0);
      await sleep(100);
      expect(slowClosed).toEqual([]);
      expect(closed).toEqual([0]);
      expect(await rejectedCount(admin, 'tls', 'displaced')).toBe(1);
    } finally {
      await close([...silent, ...opened]);
    }
  });

  it('on a TLS listener whose guard a reload lowered below the connections it holds: the new client is let in, not dropped after displacing one', async () => {
    // A displacement audit: Node's own count, still above the lowered guard, closed the client whose place had been made.
    const { lb, admin, port, guard, close } = await withTlsListener([{ name: 'big', extra: '    maxConnections: 4\n' }]);
    const closed: number[] = [];
    const silent = await openSilent(port, guard, closed);
    const opened: net.Socket[] = [];
    try {
      // Every one accepted by the balancer before the reload lowers its guard.
      await sleep(300);
      expect(closed).toEqual([]);
      lb.writeConfig(readFileSync(lb.configFile, 'utf8').replace(/(name: big\n(?:.*\n)*?    maxConnections: )4/, '$1100'));
      lb.reload();
      await lb.waitForLog((l) => l.msg === 'config reloaded');
      const changed = lb.logs.find((l) => l.msg === 'listener limits changed by reload' && l.listener === 'tls');
      expect(Number(changed?.acceptGuard)).toBeLessThan(guard - 1);
      await sleep(2300);
      expect(await tlsConnackCode(port, 'after-reload', opened)).toBe(0);
      expect(await rejectedCount(admin, 'tls', 'displaced')).toBe(1);
      expect(await rejectedCount(admin, 'tls', 'accept_dropped')).toBe(0);
      expect(closed).toEqual([0]);
    } finally {
      await close([...silent, ...opened]);
    }
  });
});

describe('limits.maxPendingConnectBytes: what unfinished CONNECTs may hold together', () => {
  it('clients that send most of a large CONNECT and stall are closed past the bound (overloaded); small CONNECTs pass; the bytes come back when they leave', async () => {
    // 8 MiB: about 32 of these ~259 KB CONNECTs (each held in a 256 KiB buffer). Without the bound 60 of them held
    // 15 MB here, and at the default caps 20,000 could hold 5 GB (security audit).
    const { lb, admin, ports } = await startWith({ limits: '  clientConnectTimeout: 60s\n  maxPendingConnectBytes: 8388608\n' });
    const port = ports.mqtt!;
    const flooded: net.Socket[] = [];
    try {
      const flood = await floodUnfinished(port, 60);
      flooded.push(...flood.sockets);
      await until('the connections past the bound closed', async () => (await rejectedCount(admin, 'mqtt', 'overloaded')) >= 28);
      await sleep(300);
      const closed = flood.closedByLb();
      expect(closed).toBeGreaterThanOrEqual(28);
      expect(closed).toBeLessThanOrEqual(44);
      expect(await rejectedCount(admin, 'mqtt', 'overloaded')).toBe(closed);
      // A client whose CONNECT fits its first buffer is not held to the bound.
      const small = await connectAt(port, 'small-while-full', 4);
      expect(small.code).toBe(0);
      small.socket.destroy();
      // Filled to the last 64 KiB: ~60 KB unfinished CONNECTs until one no longer fits.
      const fillers: net.Socket[] = [];
      for (let i = 0; i < 10; i++) {
        const s = await connectRaw(port);
        s.on('error', () => {});
        s.write(unfinishedConnectOf(60_000));
        fillers.push(s);
      }
      flooded.push(...fillers);
      await until('a filler closed', async () => (await rejectedCount(admin, 'mqtt', 'overloaded')) > closed);
      const overloaded = await rejectedCount(admin, 'mqtt', 'overloaded');
      // Nor one whose CONNECT comes whole with 60 KB pipelined behind it (the buffer grows for the PUBLISH).
      const publish = mqttPacket.generate({ cmd: 'publish', topic: 't', payload: Buffer.alloc(60_000, 1), qos: 0, retain: false, dup: false } as mqttPacket.IPublishPacket);
      const piped = await connectRaw(port);
      flooded.push(piped);
      const answer = new Promise<Buffer>((resolve) => {
        piped.once('data', resolve);
        piped.once('close', () => resolve(Buffer.alloc(0)));
      });
      piped.write(Buffer.concat([connectPacket({ clientId: 'pipelined-while-full' }), publish]));
      expect(parsePackets(await answer)[0]).toMatchObject({ cmd: 'connack', returnCode: 0 });
      expect(await rejectedCount(admin, 'mqtt', 'overloaded')).toBe(overloaded);
      for (const s of fillers) s.destroy();
      // Said once (at most every 10 s), not once per client.
      expect(lb.logs.filter((l) => l.msg === 'unfinished CONNECTs hold limits.maxPendingConnectBytes: a client whose CONNECT needs more is closed')).toHaveLength(1);

      // They leave: what they held is free again, for as many as before.
      for (const s of flood.sockets) s.destroy();
      await sleep(500);
      const again = await floodUnfinished(port, 20);
      flooded.push(...again.sockets);
      await sleep(1000);
      expect(again.closedByLb()).toBe(0);
      expect(await rejectedCount(admin, 'mqtt', 'overloaded')).toBe(overloaded);
    } finally {
      for (const s of flooded) s.destroy();
      await lb.stop();
    }
  });
});

describe('memory ceiling (limits.maxMemory, reliability case 64)', () => {
  const MAX = 128 * 1024 * 1024;
  const FLOOD = 700; // ~180 MB of unfinished CONNECTs against a 128 MiB ceiling

  it('over it: unfinished CONNECTs and TLS handshakes are shed, newcomers closed at accept, routed sessions keep working; below it again: clients served', async () => {
    const pki = createTestPki();
    const tls = `      cert: ${pki.serverCert}\n      key: ${pki.serverKey}\n`;
    const { lb, admin, ports } = await startWith({ listeners: [{ name: 'mqtt' }, { name: 'tls', tls }, { name: 'gone', tls }], limits: `  clientConnectTimeout: 60s\n  maxMemory: ${MAX}\n  maxPendingConnectBytes: 0\n` });
    const port = ports.mqtt!;
    const flooded: net.Socket[] = [];
    try {
      // A TLS listener removed by a reload while two connections are still in their handshake: those too.
      const orphans = await Promise.all([0, 1].map(() => connectRaw(ports.gone!)));
      flooded.push(...orphans);
      let orphansClosed = 0;
      for (const o of orphans) {
        o.on('error', () => {});
        o.on('close', () => orphansClosed++);
      }
      const mark = lb.logs.length;
      lb.writeConfig(readFileSync(lb.configFile, 'utf8').replace(/ {2}- name: gone\n[\s\S]*?(?= {2}- name: |pools:)/, ''));
      lb.reload();
      await lb.waitForLog((l) => lb.logs.indexOf(l) >= mark && l.msg === 'config reloaded');
      // Silent connections on the TLS listener: still in their handshake, not sessions yet.
      const handshaking = await Promise.all([0, 1, 2].map(() => connectRaw(ports.tls!)));
      flooded.push(...handshaking);
      let handshakingClosed = 0;
      for (const h of handshaking) {
        h.on('error', () => {});
        h.on('close', () => handshakingClosed++);
      }
      expect(await metricValue(admin, /^mqtt_lb_memory_max_bytes (\d+)/m)).toBe(MAX);
      expect(await metricValue(admin, /^mqtt_lb_overloaded (\d+)/m)).toBe(0);
      // A routed session, subscribed to its own topic.
      const routed = await connectAt(port, 'mem-routed', 4);
      expect(routed.code).toBe(0);
      const received: Buffer[] = [];
      routed.socket.on('data', (d: Buffer) => received.push(d));
      routed.socket.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'mem/t', qos: 0 }] }));
      await until('SUBACK', () => parsePackets(Buffer.concat(received)).some((p) => p.cmd === 'suback'));

      const flood = await floodUnfinished(port, FLOOD);
      flooded.push(...flood.sockets);
      // Long before clientConnectTimeout (60 s) each is shed or closed at accept; unless, on a loaded machine, the
      // flood arrived slowly enough that memory fell below 90 % (freed by the shedding) before its last part: those
      // are accepted again, and stay while they hold less than the ceiling. So: every one closed, or the rest
      // open and counted by the balancer with it no longer overloaded.
      const active = (): Promise<number | null> => metricValue(admin, /^mqtt_lb_connections_active\{listener="mqtt"\} (\d+)/m);
      await until(
        'the flood closed by the balancer, or the rest accepted after the ceiling cleared',
        async () => flood.closedByLb() === FLOOD || ((await metricValue(admin, /^mqtt_lb_overloaded (\d+)/m)) === 0 && (await active()) === FLOOD - flood.closedByLb() + 1),
        20_000,
      );
      const shed = flood.closedByLb();
      expect(shed).toBeGreaterThan(FLOOD / 2);
      expect(lb.logs.some((l) => l.msg === 'memory ceiling reached: refusing new connections')).toBe(true);
      expect(await rejectedCount(admin, 'mqtt', 'overloaded')).toBe(shed);
      for (const s of flood.sockets) s.destroy();
      expect(await rejectedCount(admin, 'mqtt', 'timeout')).toBe(0);
      await until('the TLS handshakes shed', () => handshakingClosed === 3 && orphansClosed === 2);
      expect(await rejectedCount(admin, 'tls', 'overloaded')).toBe(3);

      // The routed session never noticed.
      received.length = 0;
      routed.socket.write(mqttPacket.generate({ cmd: 'publish', topic: 'mem/t', payload: Buffer.from('still here'), qos: 0, dup: false, retain: false }));
      await until('the PUBLISH back', () => parsePackets(Buffer.concat(received)).some((p) => p.cmd === 'publish' && String(p.payload) === 'still here'));

      // Memory freed: the ceiling is left and a new client reaches the broker.
      await until('mqtt_lb_overloaded 0', async () => (await metricValue(admin, /^mqtt_lb_overloaded (\d+)/m)) === 0);
      await until('memory below 90 % of the ceiling', async () => ((await metricValue(admin, /^mqtt_lb_memory_in_use_bytes (\d+)/m)) ?? MAX) < MAX * 0.9);
      const fresh = await connectAt(port, 'mem-fresh', 5);
      expect(fresh.code).toBe(0);
      fresh.socket.destroy();
      expect((await fetch(`http://127.0.0.1:${admin}/readyz`)).status).toBe(200);
      routed.socket.destroy();
    } finally {
      for (const s of flooded) s.destroy();
      await lb.stop();
      pki.cleanup();
    }
  });

  // An audit: 900 clients each sending 150 KB of a CONNECT with the pending bound off took memory in use to 224 MiB
  // against a 128 MiB ceiling, sampled every 100 ms: each buffer grew between two samples unchecked.
  it('with the pending bound off, a flood of unfinished CONNECTs grows memory only up to the ceiling, not past it by what arrives between two samples', async () => {
    const { lb, admin, ports } = await startWith({ limits: `  clientConnectTimeout: 60s\n  maxMemory: ${MAX}\n  maxPendingConnectBytes: 0\n` });
    const flooded: net.Socket[] = [];
    let peak = 0;
    let polling = true;
    const poller = (async () => {
      while (polling) {
        peak = Math.max(peak, (await metricValue(admin, /^mqtt_lb_memory_in_use_bytes (\d+)/m)) ?? 0);
        await sleep(10);
      }
    })();
    try {
      const flood = await floodUnfinished(ports.mqtt!, FLOOD);
      flooded.push(...flood.sockets);
      const active = (): Promise<number | null> => metricValue(admin, /^mqtt_lb_connections_active\{listener="mqtt"\} (\d+)/m);
      await until(
        'the flood closed by the balancer, or the rest held below the ceiling',
        async () => flood.closedByLb() === FLOOD || ((await metricValue(admin, /^mqtt_lb_overloaded (\d+)/m)) === 0 && (await active()) === FLOOD - flood.closedByLb()),
        20_000,
      );
      await sleep(300);
      polling = false;
      await poller;
      const shed = flood.closedByLb();
      console.log(`[edge-limits] ceiling ${MAX / 2 ** 20} MiB: peak in use ${(peak / 2 ** 20).toFixed(1)} MiB, ${shed} of ${FLOOD} closed`);
      // The ceiling was reached (by what the refused CONNECTs asked for, if not by what was taken): some were shed.
      expect(lb.logs.some((l) => l.msg === 'memory ceiling reached: refusing new connections')).toBe(true);
      expect(shed).toBeGreaterThan(0);
      expect(await rejectedCount(admin, 'mqtt', 'overloaded')).toBe(shed);
      expect(peak).toBeLessThan(MAX);
    } finally {
      polling = false;
      await poller;
      for (const s of flooded) s.destroy();
      await lb.stop();
    }
  });

  // The re-audit of the fix above: counting every allocation since the last sample, frees not, refused a burst of
  // legitimate large CONNECTs with memory at 44-82 % of the ceiling. Past that count memory is measured again.
  it('a burst of legitimately large CONNECTs well below the ceiling is served whole: no refusal, no overload', async () => {
    const { lb, admin, ports } = await startWith({ limits: `  clientConnectTimeout: 60s\n  maxMemory: ${MAX}\n  maxPendingConnectBytes: 0\n` });
    const CLIENTS = Number(process.env.BIG_CLIENTS ?? 200);
    const sockets: net.Socket[] = [];
    try {
      const answers = await Promise.all(
        Array.from({ length: CLIENTS }, async (_, i) => {
          const s = await connectRaw(ports.mqtt!);
          sockets.push(s);
          s.on('error', () => {});
          // ~180 KB: a 60,000-byte user name, password and Will payload (each field has a 2-byte length).
          const packet = mqttPacket.generate({
            cmd: 'connect',
            clientId: `big-${i}`,
            protocolId: 'MQTT',
            protocolVersion: 4,
            clean: true,
            keepalive: 60,
            username: 'u'.repeat(60_000),
            password: Buffer.alloc(60_000, 0x70),
            will: { topic: 'w', payload: Buffer.alloc(60_000, 0x61), qos: 0, retain: false },
          } as mqttPacket.IConnectPacket);
          return new Promise<number | null>((resolve) => {
            let buf = Buffer.alloc(0);
            const t = setTimeout(() => resolve(null), 20_000);
            s.on('data', (d: Buffer) => {
              buf = Buffer.concat([buf, d]);
              const p = parsePackets(buf)[0] as mqttPacket.IConnackPacket | undefined;
              if (p?.cmd === 'connack') {
                clearTimeout(t);
                resolve(p.returnCode ?? null);
              }
            });
            s.on('close', () => {
              clearTimeout(t);
              resolve(null);
            });
            s.write(packet);
          });
        }),
      );
      expect(answers.filter((a) => a !== 0)).toEqual([]);
      expect(await rejectedCount(admin, 'mqtt', 'overloaded')).toBe(0);
      expect(lb.logs.filter((l) => l.msg === 'memory ceiling reached: refusing new connections')).toEqual([]);
    } finally {
      for (const s of sockets) s.destroy();
      await lb.stop();
    }
  });

  it('clients waiting in the accept queue when it is crossed are told: rc 3 for 3.1/3.1.1, 0x89 for 5.0 (overloaded)', async () => {
    // One accept token per 100 s: the first client passes, the next ones wait in the queue.
    const { lb, admin, ports } = await startWith({ limits: `  clientConnectTimeout: 60s\n  maxMemory: ${MAX}\n  maxPendingConnectBytes: 0\n  acceptRate: 0.01\n  acceptQueue: 10\n` });
    const port = ports.mqtt!;
    const flooded: net.Socket[] = [];
    try {
      const first = await connectAt(port, 'mem-q-first', 4);
      expect(first.code).toBe(0);
      const waiting = LEVELS.map((level) => connectAt(port, `mem-q-${level}`, level, 30_000));
      const active = async (): Promise<number | null> => metricValue(admin, /^mqtt_lb_connections_active\{listener="mqtt"\} (\d+)/m);
      await until('the three waiting clients accepted', async () => (await active()) === 1 + LEVELS.length);
      // They sent their CONNECT as they connected: queued long before the balancer has read the ~120 MB that cross
      // the ceiling from the flood, which sends only after this.
      // The flood sends only once the balancer holds all of it: the crossing then sheds every one of it. Sent while
      // it connects, on a loaded machine the balancer may still be accepting it when the shedding (with the full
      // collection after it) brings memory below 90 % within one or two samples; the tail left in the listen
      // backlog is then accepted as new clients and stays, below the ceiling, until clientConnectTimeout (60 s).
      const flood = await floodUnfinishedAccepted(port, FLOOD, () =>
        until('the flood accepted by the balancer', async () => (await active()) === 1 + LEVELS.length + FLOOD),
      );
      flooded.push(...flood.sockets);
      const answers = await Promise.all(waiting);
      expect(answers.map((a) => a.code)).toEqual([3, 3, 0x89]);
      for (const a of answers) a.socket.destroy();
      await until('the flood closed by the balancer', () => flood.closedByLb() === FLOOD, 20_000);
      expect(await rejectedCount(admin, 'mqtt', 'overloaded')).toBe(FLOOD + 3);
      first.socket.destroy();
    } finally {
      for (const s of flooded) s.destroy();
      await lb.stop();
    }
  });
});

describe('descriptor budget', () => {
  it('out of descriptors at run time (the limit lowered under it): said at once, and said again when they are back', async () => {
    // libuv answers EMFILE at accept by closing the waiting connections itself: no accept error ever reaches the
    // listener, and failover's track.listeners saw a healthy one (a failover audit). The tracking tick now opens a
    // descriptor to find out.
    const [port, admin] = [await freePort(), await freePort()];
    const lb = await startLb(lbYaml({ port, admin, servers: [{ name: 'm1', port: broker.port }] }), { waitReady: `http://127.0.0.1:${admin}/readyz` });
    const pid = lb.proc.pid!;
    const limit = (soft: number): void => {
      const r = spawnSync('prlimit', ['--pid', String(pid), `--nofile=${soft}:20000`], { encoding: 'utf8', timeout: 5000 });
      expect(r.status, r.stderr).toBe(0);
    };
    const inUse = readdirSync(`/proc/${pid}/fd`).length;
    limit(inUse - 5); // below what it holds: every open fails
    try {
      const line = await lb.waitForLog((l) => l.msg === 'out of file descriptors: the listeners cannot accept', 3000);
      expect(line).toMatchObject({ level: 50, code: 'EMFILE', listeners: ['mqtt'] });
    } finally {
      limit(20_000);
    }
    await lb.waitForLog((l) => l.msg === 'file descriptors available again: the listeners accept', 3000);
    expect(lb.logs.filter((l) => l.msg === 'out of file descriptors: the listeners cannot accept')).toHaveLength(1);
    const ok = await connectAt(port, 'after-the-shortage', 4);
    expect(ok.code).toBe(0);
    ok.socket.destroy();
    await lb.stop();
  });

  // A limits audit: out of descriptors while dialling, the broker took the blame (mqtt_lb_server_connect_errors_total)
  // and nothing was logged above debug.
  it('a dial that fails for want of a descriptor is this host\'s failure: not counted against the server, said at warn', async () => {
    const [port, admin] = [await freePort(), await freePort()];
    const health: HealthSpec = { type: 'tcp', interval: '30s', timeout: '1s', rise: 1, fall: 1 };
    const lb = await startLb(lbYaml({ port, admin, servers: [{ name: 'm1', port: broker.port }], health }), { waitReady: `http://127.0.0.1:${admin}/readyz` });
    const pid = lb.proc.pid!;
    const limit = (soft: number): void => {
      const r = spawnSync('prlimit', ['--pid', String(pid), `--nofile=${soft}:20000`], { encoding: 'utf8', timeout: 5000 });
      expect(r.status, r.stderr).toBe(0);
    };
    const errors = async (): Promise<number> => {
      const m = /mqtt_lb_server_connect_errors_total\{pool="brokers",server="m1"\} (\d+)/.exec(await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text());
      return m === null ? 0 : Number(m[1]);
    };
    const before = await errors();
    const answers: Array<number | null> = [];
    try {
      // Room for the client's socket, none for the server's: the limit bounds descriptor numbers, and a new one takes
      // the lowest free number, so the limit is one past the first free number (looked up afresh before each try: a
      // keep-alive socket of the metrics scrape may close meanwhile). A few tries: the descriptor check opens
      // /dev/null every 250 ms, and may hold that number for a moment.
      for (let i = 0; i < 5 && !lb.logs.some((l) => l.msg?.toString().startsWith('server dial failed here')); i++) {
        const open = new Set(readdirSync(`/proc/${pid}/fd`).map(Number));
        let firstFree = 0;
        while (open.has(firstFree)) firstFree++;
        limit(firstFree + 1);
        const r = await connectAt(port, `no-fd-${i}`, 4);
        answers.push(r.code);
        r.socket.destroy();
        await sleep(300);
      }
    } finally {
      limit(20_000);
    }
    const line = await lb.waitForLog((l) => l.msg === 'server dial failed here: this host is out of descriptors, memory or local ports, not the server (its clients are answered server unavailable)', 2000);
    expect(line).toMatchObject({ level: 40, code: 'EMFILE', pool: 'brokers', server: 'm1' });
    expect(answers).toContain(3);
    expect(await errors()).toBe(before);
    const ok = await connectAt(port, 'fd-back', 4);
    expect(ok.code).toBe(0);
    ok.socket.destroy();
    await lb.stop();
  });

  it('under a 384 open-file limit: caps clamped at start, the excess refused in MQTT, Node drops past its guard (counted), admin and probes keep room', async () => {
    const [port, admin] = [await freePort(), await freePort()];
    const dir = mkdtempSync(path.join(tmpdir(), 'mqtt-lb-fd-'));
    const file = path.join(dir, 'lb.yaml');
    const health: HealthSpec = { type: 'mqtt', interval: '300ms', timeout: '250ms', rise: 1, fall: 2 };
    writeFileSync(file, lbYaml({ port, admin, servers: [{ name: 'm1', port: broker.port }], health, limits: '  clientConnectTimeout: 3s\n' }));
    // `mqtt-lb check` from a shell with that limit reports the clamping (exit 0): the default caps as notes.
    const check = spawnSync('sh', ['-c', 'ulimit -n 384 && exec "$0" "$@"', process.execPath, CLI, 'check', '--config', file], { encoding: 'utf8', timeout: 20_000 });
    expect(check.status).toBe(0);
    expect(check.stderr).toMatch(/^note: limits\.maxConnections 20000 clamped to 90: the open-file limit is 384/m);
    expect(check.stderr).toMatch(/^note: listeners\[0\]\.maxConnections \(listener mqtt\) 10000 lowered to 87: /m);
    expect(check.stderr).not.toMatch(/^warning: /m);
    // The LB under its own open-file limit (the test process keeps its own).
    const proc = spawn('sh', ['-c', 'ulimit -n 384 && exec "$0" "$@"', process.execPath, CLI, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    const logs: Array<Record<string, unknown>> = [];
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      for (let nl = out.indexOf('\n'); nl >= 0; nl = out.indexOf('\n')) {
        try {
          logs.push(JSON.parse(out.slice(0, nl)) as Record<string, unknown>);
        } catch {
          // not JSON
        }
        out = out.slice(nl + 1);
      }
    });
    const held: net.Socket[] = [];
    try {
      await waitReady(`http://127.0.0.1:${admin}/readyz`);
      // Default caps sized to the limit: said at info (as HAProxy sizes its default maxconn, without a word).
      expect(logs.filter((l) => l.msg === 'connection cap clamped').map((l) => l.level)).toEqual([30, 30]);
      const clamped = logs.filter((l) => l.msg === 'connection cap clamped').map((l) => String(l.detail));
      expect(clamped.some((d) => /^limits\.maxConnections 20000 clamped to 90: the open-file limit is 384/.test(d))).toBe(true);
      const listenerCap = clamped.map((d) => /^listeners\[0\]\.maxConnections \(listener mqtt\) 10000 (?:clamped|lowered) to (\d+)/.exec(d)).find((m) => m !== null);
      expect(listenerCap).toBeDefined();
      const cap = Number(listenerCap![1]);
      expect(cap).toBe(87);

      // One at a time, so that each CONNECT sees only settled sessions.
      let ok = 0;
      const refusals: Array<number | null> = [];
      for (let i = 0; i < cap + 10; i++) {
        const r = await connectAt(port, `fd-${i}`, 4);
        if (r.code === 0) {
          ok++;
          held.push(r.socket);
        } else {
          refusals.push(r.code);
          r.socket.destroy();
        }
      }
      expect(ok).toBe(cap);
      expect(refusals).toEqual(Array.from({ length: 10 }, () => 3));
      // Full, yet the admin port answers and health probes still reach the broker (readyz needs a server up).
      const ready = await fetch(`http://127.0.0.1:${admin}/readyz`);
      expect(ready.status).toBe(200);
      await sleep(1200); // refused clients' lingering closes are over

      // Past Node's server.maxConnections (the last guard: the cap, room to refuse, and what the descriptor budget leaves)
      // connections are dropped at accept, and counted.
      const hard = Number(logs.find((l) => l.msg === 'listener started')!.acceptGuard);
      expect(hard).toBeGreaterThanOrEqual(cap + 16);
      expect(hard).toBeLessThan(384 - 87); // beside a server socket per session under the global cap
      const idle = await Promise.all(Array.from({ length: hard - cap + 14 }, () => connectRaw(port)));
      held.push(...idle);
      await sleep(300);
      const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
      expect(/mqtt_lb_connect_rejected_total\{listener="mqtt",reason="accept_dropped"\} (\d+)/.exec(text)?.[1]).toBe('14');
      expect(/mqtt_lb_connect_rejected_total\{listener="mqtt",reason="listener_full"\} (\d+)/.exec(text)?.[1]).toBe('10');
      // Said once for the 14 (at most once per 10 s), not only counted.
      const dropLines = logs.filter((l) => l.msg === 'connections closed at accept: the listener is past its last guard');
      expect(dropLines).toHaveLength(1);
      expect(dropLines[0]).toMatchObject({ level: 40, listener: 'mqtt', acceptGuard: hard, maxConnections: cap });
      expect((await fetch(`http://127.0.0.1:${admin}/readyz`)).status).toBe(200);
      expect(logs.some((l) => l.msg === 'listener accept error')).toBe(false);

      // Everything freed when the clients leave.
      for (const s of held) s.destroy();
      held.length = 0;
      await sleep(300);
      const again = await connectAt(port, 'fd-again', 5);
      expect(again.code).toBe(0);
      again.socket.destroy();

      // A reload to a cap still above the limit is clamped too, and says so as the start did.
      writeFileSync(file, lbYaml({ port, admin, servers: [{ name: 'm1', port: broker.port }], health, limits: '  clientConnectTimeout: 3s\n  maxConnections: 30000\n' }));
      proc.kill('SIGHUP');
      const until = Date.now() + 5000;
      while (!logs.some((l) => l.msg === 'config reloaded') && Date.now() < until) await sleep(50);
      // Written in the file now: a warning.
      expect(logs.filter((l) => l.msg === 'connection cap clamped' && /^limits\.maxConnections 30000 clamped to 90/.test(String(l.detail))).map((l) => l.level)).toEqual([40]);
      // The same file again: the same clamps, not said again (a soak saw them at every reload).
      const said = logs.filter((l) => l.msg === 'connection cap clamped').length;
      proc.kill('SIGHUP');
      const until2 = Date.now() + 5000;
      while (logs.filter((l) => l.msg === 'config reloaded').length < 2 && Date.now() < until2) await sleep(50);
      expect(logs.filter((l) => l.msg === 'config reloaded')).toHaveLength(2);
      expect(logs.filter((l) => l.msg === 'connection cap clamped')).toHaveLength(said);
    } finally {
      for (const s of held) s.destroy();
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await new Promise((r) => (proc.exitCode !== null || proc.signalCode !== null ? r(null) : proc.once('exit', r)));
      clearTimeout(t);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
