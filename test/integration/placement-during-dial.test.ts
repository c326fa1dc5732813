/**
 * A session whose dial is in flight when its server stops taking sessions (a drain, a maint, a reload that removes
 * it, `onServerUp: rebalance` giving its key back to another server) is placed again at its connect, its CONNECT not
 * yet sent, as a CONNECT arriving then would be: the evictions of those events reach only connected sessions, and an
 * audit found such dials land on the server afterwards and stay (session.ts placementGone).
 * Run alone after `npx tsc -p .` (the LB runs from dist/).
 */
import { describe, expect, it } from 'vitest';
import { cleanupsAfterEach } from '../helpers/cleanups.js';
import type { MqttClient } from 'mqtt';
import { clientIdOn, connectVia, startBrokers, whichBroker, type NamedBroker } from '../helpers/cluster.js';
import { sleep, startLb } from '../helpers/lb.js';
import { serverAction } from '../helpers/server-state.js';
import { lbYaml, type ServerSpec } from '../helpers/lb-config.js';
import { freePort } from '../helpers/mosquitto.js';
import { stallingRelay, type StallingRelay } from '../helpers/stalling-relay.js';

const cleanups = cleanupsAfterEach();

async function connectErrors(adminPort: number, server: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`, { signal: AbortSignal.timeout(2000) })).text();
  const m = new RegExp(`^mqtt_lb_server_connect_errors_total\\{[^}]*server="${server}"[^}]*\\} (\\d+)`, 'm').exec(text);
  return m === null ? 0 : Number(m[1]);
}

async function sessionsPerServer(adminPort: number): Promise<Record<string, number>> {
  const r = await fetch(`http://127.0.0.1:${adminPort}/api/status`, { signal: AbortSignal.timeout(2000) });
  const doc = (await r.json()) as { pools: Array<{ servers: Array<{ name: string; sessions: number }> }> };
  return Object.fromEntries(doc.pools[0]!.servers.map((s) => [s.name, s.sessions]));
}

/**
 * Brokers `a` and `b`; the LB's server `a` is broker a, its server `b` broker b behind a relay whose handshakes can
 * be stalled. Health checks off (a probe would stall too).
 */
async function setup(poolKeys = ''): Promise<{ port: number; adminPort: number; relay: StallingRelay; yaml: (servers: ServerSpec[]) => string; servers: ServerSpec[]; lb: Awaited<ReturnType<typeof startLb>>; brokers: NamedBroker[] }> {
  const brokers = await startBrokers(['a', 'b']);
  cleanups.push(() => Promise.all(brokers.map((b) => b.stop())).then(() => undefined));
  const relay = await stallingRelay(brokers[1]!.port, cleanups);
  const port = await freePort();
  const adminPort = await freePort();
  const servers: ServerSpec[] = [
    { name: 'a', port: brokers[0]!.port },
    { name: 'b', port: relay.port },
  ];
  const yaml = (list: ServerSpec[]): string =>
    lbYaml({ port, admin: adminPort, servers: list, health: { type: 'none' }, pool: `    serverConnectTimeout: 10s\n${poolKeys}`, limits: '  drainTimeout: 1s\n', log: '  level: debug\n' });
  const lb = await startLb(yaml(servers), { waitReady: `http://127.0.0.1:${adminPort}/readyz` });
  return { port, adminPort, relay, yaml, servers, lb, brokers };
}

/** A client of `clientId` whose dial to server b is in flight (b's relay stalled) when this returns; `client` settles at its CONNACK. */
async function dialingToStalledB(port: number, relay: StallingRelay, clientId: string): Promise<{ client: Promise<MqttClient> }> {
  await relay.stall();
  const client = connectVia(port, { clientId, connectTimeout: 9000 });
  client.then((c) => cleanups.push(() => c.endAsync(true)), () => undefined);
  await sleep(300);
  return { client };
}

describe('a dial in flight when its server stops taking sessions is placed again at its connect', () => {
  it('drain: the client reaches the other server; the drained one has no session', async () => {
    const { port, adminPort, relay, lb } = await setup();
    const clientId = await clientIdOn(port, 'b', 'drain-');
    const pending = await dialingToStalledB(port, relay, clientId);
    await serverAction(adminPort, 'b', 'drain');
    relay.release();
    const client = await pending.client;
    expect(await whichBroker(client)).toBe('a');
    expect(await sessionsPerServer(adminPort)).toEqual({ a: 1, b: 0 });
    expect(lb.logs.some((l) => l.msg === 'session placed again: its server changed while it was dialled' && l.server === 'b')).toBe(true);
  });

  it('a reload that removes the server: the client reaches the other server (not one out of every view)', async () => {
    const { port, adminPort, relay, yaml, servers, lb } = await setup();
    const clientId = await clientIdOn(port, 'b', 'removed-');
    const pending = await dialingToStalledB(port, relay, clientId);
    lb.writeConfig(yaml(servers.filter((s) => s.name !== 'b')));
    lb.reload();
    await lb.waitForLog((l) => l.msg === 'config reloaded', 5000);
    relay.release();
    const client = await pending.client;
    expect(await whichBroker(client)).toBe('a');
    expect(await sessionsPerServer(adminPort)).toEqual({ a: 1 });
  });

  it('onServerUp: rebalance: a server back from maint takes the key its dial elsewhere was for', async () => {
    const { port, adminPort, relay } = await setup('    onServerUp: rebalance\n');
    const clientId = await clientIdOn(port, 'a', 'home-');
    await serverAction(adminPort, 'a', 'maint');
    // With a in maint, the client's dial goes to b (stalled); a comes back meanwhile.
    const pending = await dialingToStalledB(port, relay, clientId);
    await serverAction(adminPort, 'a', 'ready');
    relay.release();
    const client = await pending.client;
    expect(await whichBroker(client)).toBe('a');
    expect(await sessionsPerServer(adminPort)).toEqual({ a: 1, b: 0 });
  });

  it('onServerUp: rebalance to an owner at its maxConnections: the dial is kept (the owner would refuse the client)', async () => {
    const { port, adminPort, relay, lb, yaml, servers } = await setup('    onServerUp: rebalance\n');
    lb.writeConfig(yaml(servers.map((s) => (s.name === 'a' ? { ...s, maxConnections: 1 } : s))));
    lb.reload();
    await lb.waitForLog((l) => l.msg === 'config reloaded', 5000);
    const [clientId, other] = [await clientIdOn(port, 'a', 'full-home-'), await clientIdOn(port, 'a', 'full-other-')];
    await serverAction(adminPort, 'a', 'maint');
    const pending = await dialingToStalledB(port, relay, clientId);
    await serverAction(adminPort, 'a', 'ready');
    // Another client of a takes its one place before the dial to b connects.
    const taker = await connectVia(port, { clientId: other });
    cleanups.push(() => taker.endAsync(true));
    expect(await whichBroker(taker)).toBe('a');
    relay.release();
    const client = await pending.client;
    expect(await whichBroker(client)).toBe('b');
    expect(await sessionsPerServer(adminPort)).toEqual({ a: 1, b: 1 });
  });

  it('a reload that moves the server to another address, or sets its weight to 0: placed again (the new address; the other server)', async () => {
    const { port, adminPort, relay, yaml, servers, lb, brokers } = await setup();
    const moved = await clientIdOn(port, 'b', 'moved-');
    const pending = await dialingToStalledB(port, relay, moved);
    // b is now broker a's port: a client arriving now reaches broker a through server b.
    lb.writeConfig(yaml(servers.map((s) => (s.name === 'b' ? { ...s, port: brokers[0]!.port } : s))));
    lb.reload();
    await lb.waitForLog((l) => l.msg === 'config reloaded', 5000);
    relay.release();
    const client = await pending.client;
    expect(await whichBroker(client)).toBe('a');
    expect(await sessionsPerServer(adminPort)).toEqual({ a: 0, b: 1 });
    await client.endAsync(true);

    lb.writeConfig(yaml(servers));
    lb.reload();
    await lb.waitForLog((l) => l.msg === 'config reloaded' && lb.logs.filter((x) => x.msg === 'config reloaded').length === 2, 5000);
    const weightless = await clientIdOn(port, 'b', 'weightless-');
    const pending2 = await dialingToStalledB(port, relay, weightless);
    lb.writeConfig(yaml(servers.map((s) => (s.name === 'b' ? { ...s, weight: 0 } : s))));
    lb.reload();
    await lb.waitForLog((l) => l.msg === 'config reloaded' && lb.logs.filter((x) => x.msg === 'config reloaded').length === 3, 5000);
    relay.release();
    expect(await whichBroker(await pending2.client)).toBe('a');
  });

  // A re-audit: under rebalance, any change (here a reload that changes nothing) sent a dial that was a retry after its
  // dead owner back to that owner, refused again.
  it('onServerUp: rebalance: a retry after a dead owner is kept across a change that brings no server back', async () => {
    const { port, adminPort, relay, yaml, servers, lb, brokers } = await setup('    onServerUp: rebalance\n    retries: 1\n');
    const clientId = await clientIdOn(port, 'a', 'retry-');
    await brokers[0]!.stop(); // its port refuses now; with health checks off, a stays up
    const pending = await dialingToStalledB(port, relay, clientId);
    expect(await connectErrors(adminPort, 'a')).toBe(1);
    await sleep(1200); // past the refused server's dial back-off
    lb.writeConfig(yaml(servers));
    lb.reload();
    await lb.waitForLog((l) => l.msg === 'config reloaded', 5000);
    relay.release();
    expect(await whichBroker(await pending.client)).toBe('b');
    expect(await connectErrors(adminPort, 'a')).toBe(1);
    expect(lb.logs.some((l) => l.msg === 'session placed again: its server changed while it was dialled')).toBe(false);
  });

  it('a change that leaves its server as it was: the dial is kept', async () => {
    const { port, adminPort, relay } = await setup();
    const clientId = await clientIdOn(port, 'b', 'kept-');
    const pending = await dialingToStalledB(port, relay, clientId);
    await serverAction(adminPort, 'a', 'drain');
    relay.release();
    const client = await pending.client;
    expect(await whichBroker(client)).toBe('b');
    expect(await sessionsPerServer(adminPort)).toEqual({ a: 0, b: 1 });
  });
});
