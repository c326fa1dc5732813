/**
 * pools.<name>.serverConnackTimeout (src/proxy/connack-deadlines.ts): a routed client whose server sends nothing,
 * not even its CONNACK, is answered "server unavailable" (or closed, refuseWith: close) once the timeout passes,
 * rather than held until it gives up on its own; the server is probed at once. A server that answers within the
 * timeout, and a session that lives past it, are not touched.
 * Run alone after `npx tsc -p .` (the LB runs from dist/).
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { cleanupsAfterEach } from '../helpers/cleanups.js';
import { brokerFor, clientIdOn, startBrokers } from '../helpers/cluster.js';
import { delayedBroker, type DelayedBroker } from '../helpers/delayed-broker.js';
import { SOCKET_ENGINES, sleep, socketEngineOf, startLb, type LbProcess } from '../helpers/lb.js';
import { lbYaml, type HealthSpec } from '../helpers/lb-config.js';
import { freePort } from '../helpers/mosquitto.js';
import { msUntilServerState, serverState } from '../helpers/server-state.js';
import { collect, connectPacket, connectRaw, type Exchange } from '../helpers/raw-client.js';
import { metricSum } from '../helpers/metrics.js';

const cleanups = cleanupsAfterEach();

const PINGREQ = Buffer.from([0xc0, 0x00]);



/** An LB in front of one stand-in broker (`silent`: never answers a CONNECT), health checks off. */
async function lbBefore(broker: DelayedBroker, opts: { timeout: string; listener?: string; env?: NodeJS.ProcessEnv; limits?: string }): Promise<{ lb: LbProcess; port: number; admin: number }> {
  const port = await freePort();
  const admin = await freePort();
  const lb = await startLb(
    lbYaml({
      listeners: [{ port, extra: opts.listener }],
      admin,
      servers: [{ name: 'silent', port: broker.port }],
      health: { type: 'none' },
      pool: `    serverConnackTimeout: ${opts.timeout}\n`,
      log: '  level: info\n  sessions: true\n',
      limits: opts.limits,
    }),
    { waitReady: `http://127.0.0.1:${admin}/readyz`, env: opts.env },
  );
  return { lb, port, admin };
}

describe('a server that takes the CONNECT and never answers (serverConnackTimeout)', () => {
  for (const { engine, env } of SOCKET_ENGINES) {
    it(`answers its 3.1.1 and 5.0 clients server unavailable once the timeout passes, closes the server side, and counts them (${engine} sockets)`, async () => {
      const broker = await delayedBroker(null);
      cleanups.push(() => broker.close());
      const { lb, port, admin } = await lbBefore(broker, { timeout: '600ms', env });
      expect(await socketEngineOf(lb)).toBe(engine);

      const v4 = await connectRaw(port);
      // A PINGREQ pipelined behind the CONNECT: it has nowhere to go once the server side is closed.
      const sent4 = Date.now();
      v4.write(Buffer.concat([connectPacket({ clientId: 'silent-v4', keepalive: 0 }), PINGREQ]));
      const v5 = await connectRaw(port);
      const sent5 = Date.now();
      v5.write(connectPacket({ clientId: 'silent-v5', protocolVersion: 5, keepalive: 0 }));
      const collecting = Date.now();
      const [got4, got5] = await Promise.all([collect(v4, 4000), collect(v5, 4000)]);
      // From each CONNECT's write (v5's connect came between v4's write and the collect: 65 ms once, under load).
      got4.elapsedMs += collecting - sent4;
      got5.elapsedMs += collecting - sent5;
      // CONNACK 3 "server unavailable" [MQTT-3.2.2-6: Session Present 0 with a non-zero code], then our FIN.
      expect(got4.data.toString('hex')).toBe('20020003');
      expect(got5.data.toString('hex')).toBe('2003008800');
      expect(got4.closed && got5.closed).toBe(true);
      expect(got4.error).toBeNull();
      // Not before the timeout (from the CONNECT, a few ms after the connect), nor long after it.
      for (const got of [got4, got5]) {
        expect(got.elapsedMs).toBeGreaterThanOrEqual(550);
        expect(got.elapsedMs).toBeLessThan(3000);
      }
      expect(broker.clientIds).toEqual(expect.arrayContaining(['silent-v4', 'silent-v5']));
      for (let i = 0; i < 40 && broker.openSockets > 0; i++) await sleep(50);
      expect(broker.openSockets).toBe(0);

      const closed = await lb.waitForLog((l) => l.msg === 'session closed' && l.clientId === 'silent-v5');
      expect(closed).toMatchObject({ server: 'silent', reason: 'server_connack_timeout', bytesOut: 0 });
      const warn = await lb.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('server sent no CONNACK within serverConnackTimeout'));
      expect(warn).toMatchObject({ level: 40, pool: 'brokers', server: 'silent', serverConnackTimeoutMs: 600 });
      expect(await metricSum(admin, 'mqtt_lb_connect_rejected_total', { reason: 'server_connack_timeout' })).toBe(2);
      expect(await metricSum(admin, 'mqtt_lb_connections_total', { outcome: 'failed' })).toBe(2);
      expect(await metricSum(admin, 'mqtt_lb_connections_total', { outcome: 'proxied' })).toBe(2);
      expect(await metricSum(admin, 'mqtt_lb_connections_active', {})).toBe(0);
    });
  }

  it('closes the client without a CONNACK under refuseWith: close', async () => {
    const broker = await delayedBroker(null);
    cleanups.push(() => broker.close());
    const { port, admin } = await lbBefore(broker, { timeout: '400ms', listener: '    refuseWith: close\n' });
    const s = await connectRaw(port);
    s.write(connectPacket({ clientId: 'silent-close', keepalive: 0 }));
    const got = await collect(s, 4000);
    expect(got.closed).toBe(true);
    expect(got.data.length).toBe(0);
    expect(got.elapsedMs).toBeGreaterThanOrEqual(350);
    expect(await metricSum(admin, 'mqtt_lb_connect_rejected_total', { reason: 'server_connack_timeout' })).toBe(1);
  });

  // An audit: the stop path turned the deadlines off, and such clients waited out the whole drainTimeout, then got a
  // close without a CONNACK.
  it('still answers clients waiting for their CONNACK while a graceful stop drains the others', async () => {
    const broker = await delayedBroker(null);
    cleanups.push(() => broker.close());
    const { lb, port } = await lbBefore(broker, { timeout: '1s', limits: '  drainTimeout: 20s\n' });
    const clients = await Promise.all([0, 1, 2].map(() => connectRaw(port)));
    clients.forEach((c, i) => c.write(connectPacket({ clientId: `stopping-${i}`, keepalive: 0 })));
    const answers = Promise.all(clients.map((c) => collect(c, 8000)));
    await sleep(200);
    const stopAt = Date.now();
    const stopped = lb.stop(15_000);
    for (const got of await answers) {
      expect(got.data.toString('hex')).toBe('20020003');
      expect(got.closed).toBe(true);
    }
    expect(await stopped).toBe(0);
    // At their deadline, and the stop over soon after: not after drainTimeout.
    expect(Date.now() - stopAt).toBeLessThan(8000);
    expect(lb.logs.filter((l) => l.msg === 'session closed').map((l) => l.reason)).toEqual(['server_connack_timeout', 'server_connack_timeout', 'server_connack_timeout']);
  });

  it('a reload applies to sessions routed after it; one already waiting keeps the deadline it had', async () => {
    const broker = await delayedBroker(null);
    cleanups.push(() => broker.close());
    const { lb, port } = await lbBefore(broker, { timeout: '0s' });
    const before = await connectRaw(port);
    before.write(connectPacket({ clientId: 'before-reload', keepalive: 0 }));
    const beforeGot = collect(before, 2500);
    await sleep(200);
    lb.writeConfig(readFileSync(lb.configFile, 'utf8').replace('serverConnackTimeout: 0s', 'serverConnackTimeout: 500ms'));
    lb.reload();
    await lb.waitForLog((l) => l.msg === 'config reloaded');
    const after = await connectRaw(port);
    after.write(connectPacket({ clientId: 'after-reload', keepalive: 0 }));
    const afterGot = await collect(after, 3000);
    expect(afterGot.data.toString('hex')).toBe('20020003');
    expect(afterGot.elapsedMs).toBeGreaterThanOrEqual(450);
    // Routed with none: still waiting, as its client is, when the later one has been told.
    const got = await beforeGot;
    expect([got.closed, got.data.length]).toEqual([false, 0]);
  });

  it('waits as long as the client does with serverConnackTimeout: 0 (the default)', async () => {
    const broker = await delayedBroker(null);
    cleanups.push(() => broker.close());
    const { port, admin } = await lbBefore(broker, { timeout: '0s' });
    const s = await connectRaw(port);
    s.write(connectPacket({ clientId: 'silent-forever', keepalive: 0 }));
    const got = await collect(s, 1500);
    expect(got.closed).toBe(false);
    expect(got.data.length).toBe(0);
    expect(await metricSum(admin, 'mqtt_lb_connect_rejected_total', { reason: 'server_connack_timeout' })).toBe(0);
  });

  it('leaves alone a server that answers within the timeout, and sessions that live past it', async () => {
    const broker = await delayedBroker(250);
    cleanups.push(() => broker.close());
    const { port, admin } = await lbBefore(broker, { timeout: '600ms' });
    const s = await connectRaw(port);
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    s.write(connectPacket({ clientId: 'slow-but-there', keepalive: 0 }));
    await sleep(1500);
    // Its CONNACK after 250 ms, and nothing else: the session is still open well past 600 ms.
    expect(Buffer.concat(chunks).toString('hex')).toBe('20020000');
    expect(s.destroyed).toBe(false);
    s.destroy();
    expect(await metricSum(admin, 'mqtt_lb_connect_rejected_total', { reason: 'server_connack_timeout' })).toBe(0);
  });
});

/**
 * Two mosquittos behind an LB with `health` and `serverConnackTimeout`; b2, the home of a client ID, is then stopped
 * (SIGSTOP) and that client sends its CONNECT: what it got.
 */
async function clientOfStoppedBroker(health: HealthSpec, timeout: string, prefix: string): Promise<{ port: number; admin: number; id: string; got: Exchange }> {
  const brokers = await startBrokers(['b1', 'b2']);
  cleanups.push(() => Promise.all(brokers.map((b) => b.stop())).then(() => undefined));
  const port = await freePort();
  const admin = await freePort();
  const yaml = lbYaml({ port, admin, servers: brokers.map((b) => ({ name: b.name, port: b.port })), health, pool: `    serverConnackTimeout: ${timeout}\n` });
  await startLb(yaml, { waitReady: `http://127.0.0.1:${admin}/readyz` });
  const id = await clientIdOn(port, 'b2', prefix);
  const b2 = brokers[1]!;
  b2.pause();
  cleanups.push(() => b2.resume());
  const s = await connectRaw(port);
  s.write(connectPacket({ clientId: id, keepalive: 0 }));
  return { port, admin, id, got: await collect(s, 6000) };
}

describe('a stopped mosquitto (SIGSTOP) behind serverConnackTimeout', () => {
  it('gets its client answered server unavailable, is probed at once and marked down; the reconnect reaches the other broker', async () => {
    // Probes every 20 s: without the probe the timeout asks for, the stopped broker would stay up for the test.
    const { port, admin, id, got } = await clientOfStoppedBroker({ type: 'mqtt', interval: '20s', timeout: '400ms', rise: 1, fall: 1 }, '700ms', 'stopped-');
    expect(got.data.toString('hex')).toBe('20020003');
    expect(got.closed).toBe(true);
    const downAfter = await msUntilServerState(admin, 'b2', 'down', Date.now());
    expect(downAfter).toBeGreaterThanOrEqual(0);
    expect(downAfter).toBeLessThan(1500);
    // Its reconnect goes to b1 now, and is served there.
    expect(await brokerFor(port, id)).toBe('b1');
  });

  // An audit: left out for one second only, it took mqtt.js's reconnect (reconnectPeriod: 1 s) again, and under a TCP
  // health check, which a stopped broker passes, its clients were never served (5 timeouts in 16 s).
  it('with a TCP check it passes: left out for as long as it kept the client waiting, so the reconnect a second later is served elsewhere', async () => {
    const { port, admin, id, got } = await clientOfStoppedBroker({ type: 'tcp', interval: '500ms', timeout: '400ms', rise: 1, fall: 1 }, '2s', 'tcp-checked-');
    expect(got.data.toString('hex')).toBe('20020003');
    await sleep(1000);
    // Still up by its TCP check, but out of the picks: the reconnect is served by b1.
    expect(await serverState(admin, 'b2')).toBe('up');
    expect(await brokerFor(port, id, { connectTimeout: 3000, reconnectPeriod: 0 })).toBe('b1');
  });
});
