/**
 * App.releaseVipSessions, in process with a real mosquitto and no network namespace: what a failover instance
 * demoted without a stop asks of the proxy before its VIP goes (failover/heartbeat.ts release). 127.0.0.1 stands
 * in for the VIP; the whole exchange with two hosts is test/netns/failover-lb.test.ts ("preempted, ...").
 */
import net from 'node:net';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { App } from '../../src/app.js';
import { parseConfig } from '../../src/config/load.js';
import type { LbConfig } from '../../src/config/types.js';
import { freePort, startMosquitto, type Broker } from '../helpers/mosquitto.js';
import { connectPacket } from '../helpers/raw-client.js';
import { sleep } from '../helpers/lb.js';

const VIP = new Set(['127.0.0.1']);

let broker: Broker;
beforeAll(async () => {
  broker = await startMosquitto();
});
afterAll(async () => {
  await broker?.stop();
});

function config(port: number, admin: number, evictRate: number): LbConfig {
  const yaml = `listeners:
  - name: mqtt
    bind: 127.0.0.1:${port}
    pool: brokers
pools:
  brokers:
    evictRate: ${evictRate}
    servers:
      - name: m1
        address: 127.0.0.1:${broker.port}
    health:
      type: none
admin:
  bind: 127.0.0.1:${admin}
log:
  sessions: true
warmUp: 0
`;
  const out = parseConfig(yaml, '/tmp/lb.yaml');
  if (out.config === null) throw new Error(JSON.stringify(out.problems));
  return out.config;
}

/** A session that got its CONNACK; `closed` resolves when the balancer closes it. */
async function session(port: number, clientId: string): Promise<{ socket: net.Socket; closed: Promise<void> }> {
  const socket = net.connect({ host: '127.0.0.1', port });
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  const answered = new Promise<void>((resolve) => socket.once('data', () => resolve()));
  socket.write(connectPacket({ clientId, keepalive: 0 }));
  await answered;
  socket.on('data', () => {});
  return { socket, closed };
}

describe('App.releaseVipSessions (a demoted failover master closes the sessions on its VIP)', () => {
  let app: App | null = null;
  const lines: Array<Record<string, unknown>> = [];
  const sockets: net.Socket[] = [];
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy();
    await app?.stop();
    app = null;
    lines.length = 0;
  });

  async function start(evictRate: number): Promise<number> {
    const port = await freePort();
    const log = pino({ level: 'info' }, { write: (l: string) => lines.push(JSON.parse(l) as Record<string, unknown>) });
    app = new App(config(port, await freePort(), evictRate), log);
    await app.start();
    return port;
  }

  it('closes every session on the VIP, spread at evictRate, then at once what is left after the spread', async () => {
    const port = await start(10); // 10/s: 20 sessions would take 2 s; the spread below is 500 ms
    const held = await Promise.all(Array.from({ length: 20 }, (_, i) => session(port, `release-${i}`)));
    sockets.push(...held.map((h) => h.socket));
    const began = Date.now();
    await app!.releaseVipSessions(VIP, null, 10, 500);
    const ms = Date.now() - began;
    await Promise.all(held.map((h) => h.closed));
    expect(ms).toBeGreaterThanOrEqual(450); // it did pace, for the spread
    expect(ms).toBeLessThan(3000);
    const closedLines = lines.filter((l) => l.msg === 'session closed');
    expect(closedLines).toHaveLength(20);
    expect(new Set(closedLines.map((l) => l.reason))).toEqual(new Set(['failover']));
    expect(lines.find((l) => l.msg === 'failover: closing the sessions on the VIP')).toMatchObject({ sessions: 20, evictRate: 10 });
  });

  it('sessions on another local address are not touched', async () => {
    const port = await start(500);
    const held = await session(port, 'release-other');
    sockets.push(held.socket);
    await app!.releaseVipSessions(new Set(['192.0.2.10']), null, 500, 500);
    await sleep(200);
    expect(held.socket.destroyed).toBe(false);
    expect(lines.filter((l) => l.msg === 'session closed')).toHaveLength(0);
  });

  it('master again (the signal aborts): what is not closed yet stays, and so do sessions that came meanwhile', async () => {
    const port = await start(5); // one every 200 ms
    const held = await Promise.all(Array.from({ length: 10 }, (_, i) => session(port, `kept-${i}`)));
    sockets.push(...held.map((h) => h.socket));
    const abort = new AbortController();
    const releasing = app!.releaseVipSessions(VIP, abort.signal, 5, 2000);
    await sleep(300);
    const newcomer = await session(port, 'kept-newcomer');
    sockets.push(newcomer.socket);
    abort.abort();
    await releasing;
    await sleep(2500); // past the spread: no late pass closes the rest
    const open = held.filter((h) => !h.socket.destroyed).length;
    expect(open).toBeGreaterThanOrEqual(8); // one every 200 ms for 300 ms, and none after the abort
    expect(open).toBeLessThan(10); // some were closed before the abort
    expect(newcomer.socket.destroyed).toBe(false);
    expect(lines.find((l) => l.msg === 'failover: master again: the sessions on the VIP not closed yet stay')).toBeDefined();
  });
});
