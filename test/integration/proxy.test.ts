/**
 * The proxy core end to end: the built `mqtt-lb` in front of real mosquitto brokers, real MQTT.js clients and
 * raw sockets for byte-exact cases (design.md §5, issue 2).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import net from 'node:net';
import mqttPacket from 'mqtt-packet';
import { startBrokers, brokerFor, connectVia, whichBroker, type NamedBroker } from '../helpers/cluster.js';
import { lbYaml, type HealthSpec, type ServerSpec } from '../helpers/lb-config.js';
import { freePort } from '../helpers/mosquitto.js';
import { startLb, stopAllLbs, sleep, type LbProcess } from '../helpers/lb.js';
import { exchange, connectPacket, parsePackets, connectRaw, collect } from '../helpers/raw-client.js';
import { isRunning } from '../helpers/processes.js';

/** Probes every 500 ms, down after one failure; a 1 s CONNECT deadline and a CONNECT size cap. */
const HEALTH: HealthSpec = { type: 'mqtt', interval: '500ms', timeout: '400ms', rise: 1, fall: 1 };
const LIMITS = '  clientConnectTimeout: 1s\n  maxConnectBytes: 100000\n';

function yamlFor(port: number, admin: number, servers: ServerSpec[], extra?: string): string {
  return lbYaml({ port, admin, servers, health: HEALTH, limits: LIMITS, extra });
}

describe('proxy core with real mosquitto', () => {
  let brokers: NamedBroker[];
  let lb: LbProcess;
  let port: number;

  beforeAll(async () => {
    brokers = await startBrokers(['b1', 'b2', 'b3']);
    port = await freePort();
    const admin = await freePort();
    lb = await startLb(yamlFor(port, admin, brokers), { waitReady: `http://127.0.0.1:${admin}/readyz` });
    // readyz needs one server up; wait until all three are up so picks are stable.
    await lb.waitForLog((l) => l.msg === 'server state changed' && l.server === 'b3' && l.to === 'up').catch(() => undefined);
    await sleep(600);
  });

  afterAll(async () => {
    await stopAllLbs();
    await Promise.all((brokers ?? []).map((b) => b.stop()));
  });

  it('keeps a client ID on the same broker over reconnects, and spreads IDs over brokers', async () => {
    const seen = new Map<string, string>();
    for (let i = 0; i < 12; i++) seen.set(`sticky-${i}`, await brokerFor(port, `sticky-${i}`));
    for (let round = 0; round < 2; round++) {
      for (const [id, broker] of seen) expect(await brokerFor(port, id)).toBe(broker);
    }
    expect(new Set(seen.values()).size).toBeGreaterThan(1);
  });

  it('routes the MQTT 3.1 CONNECTs mosquitto accepts from legacy clients (flags 3.1.1 made errors)', async () => {
    // From the differential audit against mosquitto: each got CONNACK 0 directly and was closed by the LB.
    for (const h of ['100f00064d51497364700382000a000170', '100f00064d514973647003c2000a000170', '100f00064d51497364700303000a000170', '100f00064d5149736470030a000a000170']) {
      const r = await exchange(port, [Buffer.from(h.replace('000170', '000171'), 'hex')], { waitMs: 1000 });
      expect([...r.data], h).toEqual([0x20, 0x02, 0x00, 0x00]);
    }
  });

  it('speaks MQTT 3.1, 3.1.1 and 5.0 through the LB: QoS 0/1/2 and retained messages', async () => {
    for (const protocolVersion of [3, 4, 5] as const) {
      const id = `proto-${protocolVersion}`;
      const sub = await connectVia(port, { clientId: id, protocolVersion, protocolId: protocolVersion === 3 ? 'MQIsdp' : 'MQTT' });
      const topic = `lbtest/proto/${protocolVersion}`;
      const got: Array<{ payload: string; qos: number }> = [];
      sub.on('message', (_t, payload, packet) => got.push({ payload: payload.toString(), qos: packet.qos }));
      await sub.subscribeAsync(topic, { qos: 2 });
      for (const qos of [0, 1, 2] as const) await sub.publishAsync(topic, `m${qos}`, { qos });
      const until = Date.now() + 5000;
      while (got.length < 3 && Date.now() < until) await sleep(20);
      expect(got.map((g) => g.payload).sort()).toEqual(['m0', 'm1', 'm2']);
      expect(got.find((g) => g.payload === 'm2')!.qos).toBe(2);
      // Retained: set through the LB, read back by a new connection with the same ID (same broker).
      await sub.publishAsync(`${topic}/retained`, 'kept', { qos: 1, retain: true });
      await sub.endAsync();
      const again = await connectVia(port, { clientId: id, protocolVersion, protocolId: protocolVersion === 3 ? 'MQIsdp' : 'MQTT' });
      const retained = await new Promise<string>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('no retained message')), 5000);
        again.on('message', (t2, p) => {
          if (t2 === `${topic}/retained`) {
            clearTimeout(t);
            resolve(p.toString());
          }
        });
        again.subscribe(`${topic}/retained`);
      });
      expect(retained).toBe('kept');
      await again.endAsync();
    }
  });

  it('forwards a CONNECT split into 1-byte segments and bytes pipelined after it, in order', async () => {
    const connect = connectPacket({ clientId: 'fragmented-client' });
    const subscribe = mqttPacket.generate({ cmd: 'subscribe', messageId: 7, subscriptions: [{ topic: 'lbtest/pipe', qos: 0 }] } as mqttPacket.ISubscribePacket);
    const publish = mqttPacket.generate({ cmd: 'publish', topic: 'lbtest/pipe', payload: Buffer.from('hello'), qos: 0, retain: false, dup: false } as mqttPacket.IPublishPacket);
    const segments = [...connect].map((b) => Buffer.from([b]));
    segments[segments.length - 1] = Buffer.concat([segments[segments.length - 1]!, subscribe, publish]);
    const r = await exchange(port, segments, { gapMs: 2, waitMs: 1500 });
    const packets = parsePackets(r.data);
    expect(packets.map((p) => p.cmd)).toEqual(['connack', 'suback', 'publish']);
    expect((packets[0] as mqttPacket.IConnackPacket).returnCode).toBe(0);
    expect((packets[2] as mqttPacket.IPublishPacket).payload.toString()).toBe('hello');
  });

  it('passes the bridge bit (level 0x84) and a 65,535-byte client ID', async () => {
    const bridge = connectPacket({ clientId: 'bridge-like' });
    bridge[2 + 2 + 4] = 0x84; // protocol level byte: after fixed header (2), name length (2), "MQTT" (4)
    const r1 = await exchange(port, [bridge], { waitMs: 800 });
    expect(parsePackets(r1.data)[0]).toMatchObject({ cmd: 'connack', returnCode: 0 });
    const longId = 'x'.repeat(65_535);
    const r2 = await exchange(port, [connectPacket({ clientId: longId })], { waitMs: 1500 });
    expect(parsePackets(r2.data)[0]).toMatchObject({ cmd: 'connack', returnCode: 0 });
  });

  it('answers an unsupported protocol level with CONNACK 1, and 0x84 for a v5-shaped request', async () => {
    const bad = connectPacket({ clientId: 'lvl' });
    bad[8] = 6;
    const r = await exchange(port, [bad], { waitMs: 1500 });
    expect([...r.data]).toEqual([0x20, 0x02, 0x00, 0x01]);
    expect(r.closed).toBe(true);
  });

  it('closes hostile first packets without an answer and without touching a server', async () => {
    const cases: Array<[string, Buffer]> = [
      ['pingreq first', Buffer.from([0xc0, 0x00])],
      ['TLS ClientHello', Buffer.from('160301020001000001fc0303', 'hex')],
      ['HTTP', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')],
      ['5-byte varint', Buffer.from('1080808080010004', 'hex')],
      ['flags nibble', Buffer.from('110d00044d5154540402000a000170', 'hex')],
      ['reserved flag', Buffer.from('100d00044d5154540403000a000170', 'hex')],
      ['excess byte', Buffer.from('100e00044d5154540402000a00017000', 'hex')],
      ['U+0000 in client id', Buffer.from('101000044d5154540402000a0004746f7000', 'hex')],
    ];
    for (const [name, bytes] of cases) {
      const r = await exchange(port, [bytes], { waitMs: 1500 });
      expect(r.data.length, name).toBe(0);
      expect(r.closed, name).toBe(true);
    }
    // A declared 268 MB CONNECT is refused from its fixed header, at once.
    const huge = await exchange(port, [Buffer.from('10ffffff7f00044d515454', 'hex')], { waitMs: 1500 });
    expect(huge.closed).toBe(true);
    expect(huge.elapsedMs).toBeLessThan(1000);
  });

  // design.md §5 (the contract): a CONNECT over maxConnectBytes is closed without an answer, at every version (5.0
  // has CONNACK 0x95 for it; answering was tried in session 32 and reverted: operators and acceptance tests rely on
  // the contract's table).
  it('a CONNECT over maxConnectBytes is closed without an answer, 5.0 as 3.1.1 (the contract)', async () => {
    const big5 = connectPacket({ clientId: 'big5', protocolVersion: 5, properties: { userProperties: { a: ['x'.repeat(60_000), 'y'.repeat(60_000)] } } });
    const big4 = connectPacket({ clientId: 'b'.repeat(65_000), username: 'u'.repeat(40_000) });
    for (const big of [big5, big4]) {
      expect(big.length).toBeGreaterThan(100_000);
      const r = await exchange(port, [big], { waitMs: 3000 });
      expect(r.data.length).toBe(0);
      expect(r.closed).toBe(true);
    }
  });

  // Reliability case 55: a client that half-closes right after its last packets still gets mosquitto's answers
  // to them (which it sends before it closes on the FIN), as when connected directly.
  it('a client that sends PUBLISH (QoS 1), SUBSCRIBE and its FIN at once gets the PUBACK and SUBACK, as directly', async () => {
    const connect = connectPacket({ clientId: 'half-closer' });
    const tail = Buffer.concat([
      mqttPacket.generate({ cmd: 'publish', topic: 'lbtest/half', payload: Buffer.from('x'), qos: 1, messageId: 1, retain: false, dup: false }),
      mqttPacket.generate({ cmd: 'subscribe', messageId: 2, subscriptions: [{ topic: 'lbtest/half', qos: 0 }] }),
    ]);
    const kinds = (data: Buffer): string[] => parsePackets(data).map((p) => p.cmd);
    const direct = await exchange(brokers[0]!.port, [connect, tail], { gapMs: 100, end: true, waitMs: 3000 });
    expect(kinds(direct.data)).toEqual(['connack', 'puback', 'suback']);
    for (let round = 0; round < 3; round++) {
      const viaLb = await exchange(port, [connect, tail], { gapMs: 100, end: true, waitMs: 3000 });
      expect(kinds(viaLb.data), `round ${round}`).toEqual(['connack', 'puback', 'suback']);
      expect(viaLb.closed).toBe(true);
      expect(viaLb.error).toBeNull();
    }
  });

  it('closes a CONNECT not finished within clientConnectTimeout (a byte-by-byte sender does not extend it)', async () => {
    const s = await connectRaw(port);
    const result = collect(s, 4000);
    const bytes = connectPacket({ clientId: 'slowloris' });
    for (let i = 0; i < bytes.length - 1 && !s.destroyed; i++) {
      s.write(bytes.subarray(i, i + 1));
      await sleep(150);
    }
    const r = await result;
    expect(r.closed).toBe(true);
    expect(r.data.length).toBe(0);
    expect(r.elapsedMs).toBeGreaterThanOrEqual(900);
    expect(r.elapsedMs).toBeLessThan(2500);
  });
});

describe('determinism across LB processes', () => {
  let brokers: NamedBroker[];
  beforeAll(async () => {
    brokers = await startBrokers(['alpha', 'bravo', 'charlie', 'delta']);
  });
  afterAll(async () => {
    await stopAllLbs();
    await Promise.all((brokers ?? []).map((b) => b.stop()));
  });

  it('two LBs with the servers listed in different orders route every client ID identically; adding a server moves only IDs to it', async () => {
    const [p1, a1, p2, a2] = [await freePort(), await freePort(), await freePort(), await freePort()];
    const three = brokers.slice(0, 3);
    const lb1 = await startLb(yamlFor(p1, a1, three), { waitReady: `http://127.0.0.1:${a1}/readyz` });
    const lb2 = await startLb(yamlFor(p2, a2, [...three].reverse()), { waitReady: `http://127.0.0.1:${a2}/readyz` });
    await sleep(1200); // every server up on both
    const ids = Array.from({ length: 24 }, (_, i) => `device-${i}-${(i * 7919).toString(36)}`);
    const before = new Map<string, string>();
    for (const id of ids) {
      const via1 = await brokerFor(p1, id);
      const via2 = await brokerFor(p2, id);
      expect(via2, id).toBe(via1);
      before.set(id, via1);
    }
    // Add a fourth server to lb1 by reload: IDs either stay or move to the new server.
    lb1.writeConfig(yamlFor(p1, a1, brokers));
    lb1.reload();
    await lb1.waitForLog((l) => l.msg === 'config reloaded');
    await lb1.waitForLog((l) => l.msg === 'server state changed' && l.server === 'delta' && l.to === 'up');
    let moved = 0;
    for (const id of ids) {
      const now = await brokerFor(p1, id);
      if (now !== before.get(id)) {
        expect(now, id).toBe('delta');
        moved++;
      }
    }
    expect(moved).toBeGreaterThan(0);
    expect(moved).toBeLessThan(ids.length / 2);
    await lb1.stop();
    await lb2.stop();
  });
});

describe('refusals in MQTT', () => {
  afterAll(async () => {
    await stopAllLbs();
  });

  it('answers rc 3 / 0x88 when no server is up, also with a pipelined SUBSCRIBE', async () => {
    const [port, admin, dead] = [await freePort(), await freePort(), await freePort()];
    const lb = await startLb(yamlFor(port, admin, [{ name: 'dead', port: dead }]), { waitPort: port });
    await lb.waitForLog((l) => l.msg === 'server state changed' && l.to === 'down');
    const sub = mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'a', qos: 0 }] } as mqttPacket.ISubscribePacket);
    const v4 = await exchange(port, [Buffer.concat([connectPacket({ clientId: 'c4' }), sub])], { waitMs: 2000 });
    expect([...v4.data]).toEqual([0x20, 0x02, 0x00, 0x03]);
    expect(v4.closed).toBe(true);
    const v5 = await exchange(port, [Buffer.concat([connectPacket({ clientId: 'c5', protocolVersion: 5 }), sub])], { waitMs: 2000 });
    expect(parsePackets(v5.data, 5)[0]).toMatchObject({ cmd: 'connack', reasonCode: 0x88 });
    const v3 = await exchange(port, [connectPacket({ clientId: 'c3', protocolVersion: 3 })], { waitMs: 2000 });
    expect([...v3.data]).toEqual([0x20, 0x02, 0x00, 0x03]);
    const metrics = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
    expect(metrics).toMatch(/mqtt_lb_connect_rejected_total\{listener="mqtt",reason="no_server"\} 3/);
    await lb.stop();
  });

  it('answers listener_full with rc 3 / 0x89 and frees the slot when a client leaves', async () => {
    const brokers = await startBrokers(['only']);
    try {
      const [port, admin] = [await freePort(), await freePort()];
      const yaml = lbYaml({ listeners: [{ port, extra: '    maxConnections: 1\n' }], admin, servers: brokers, health: HEALTH, limits: LIMITS });
      const lb = await startLb(yaml, { waitReady: `http://127.0.0.1:${admin}/readyz` });
      const first = await connectVia(port, { clientId: 'first' });
      const v4 = await exchange(port, [connectPacket({ clientId: 'second' })], { waitMs: 2000 });
      expect([...v4.data]).toEqual([0x20, 0x02, 0x00, 0x03]);
      const v5 = await exchange(port, [connectPacket({ clientId: 'second5', protocolVersion: 5 })], { waitMs: 2000 });
      expect(parsePackets(v5.data, 5)[0]).toMatchObject({ cmd: 'connack', reasonCode: 0x89 });
      await first.endAsync();
      await sleep(200);
      const again = await connectVia(port, { clientId: 'second' });
      expect(await whichBroker(again)).toBe('only');
      await again.endAsync();
      await lb.stop();
    } finally {
      await Promise.all(brokers.map((b) => b.stop()));
    }
  });
});

describe('reload and stop', () => {
  afterAll(async () => {
    await stopAllLbs();
  });

  it('SIGHUP keeps established sessions; an invalid file keeps the running config; SIGTERM exits 0', async () => {
    const brokers = await startBrokers(['r1', 'r2']);
    try {
      const [port, admin] = [await freePort(), await freePort()];
      const lb = await startLb(yamlFor(port, admin, brokers.slice(0, 1)), { waitReady: `http://127.0.0.1:${admin}/readyz` });
      const client = await connectVia(port, { clientId: 'survivor' });
      expect(await whichBroker(client)).toBe('r1');
      let closed = false;
      client.on('close', () => (closed = true));
      const started = await lb.waitForLog((l) => l.msg === 'listener started');
      // The reload also caps the listener: its new cap and last guard are said, as the start said them.
      lb.writeConfig(lbYaml({ listeners: [{ port, extra: '    maxConnections: 40\n' }], admin, servers: brokers, health: HEALTH, limits: LIMITS }));
      lb.reload();
      await lb.waitForLog((l) => l.msg === 'config reloaded');
      const limits = await lb.waitForLog((l) => l.msg === 'listener limits changed by reload');
      expect(limits).toMatchObject({ listener: 'mqtt', maxConnections: 40, was: { maxConnections: started.maxConnections, acceptGuard: started.acceptGuard } });
      expect(limits.acceptGuard).toBeGreaterThanOrEqual(40 + 16);
      expect(limits.acceptGuard).not.toBe(started.acceptGuard);
      // r1 removed while `survivor` runs on it: said, and the session goes on.
      lb.writeConfig(yamlFor(port, admin, brokers.slice(1)));
      lb.reload();
      expect(await lb.waitForLog((l) => l.msg === 'server removed while sessions run on it: they continue, out of the status, metrics and drains until it is added again')).toMatchObject({
        level: 40,
        pool: 'brokers',
        server: 'r1',
        sessions: 1,
      });
      lb.writeConfig('listeners: [\n');
      lb.reload();
      const rejected = await lb.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('config reload rejected'));
      expect(rejected.code).toBe('MQLB_CONFIG_INVALID'); // docs/errors.md: the code is on the log line
      await client.publishAsync('lbtest/alive', 'yes', { qos: 1 });
      expect(closed).toBe(false);
      const stopping = lb.stop();
      await sleep(200);
      await client.endAsync();
      expect(await stopping).toBe(0);
    } finally {
      await Promise.all(brokers.map((b) => b.stop()));
    }
  });
});

describe('reload that moves a listener', () => {
  afterAll(async () => {
    await stopAllLbs();
  });

  /** The next log line with this message, from the lines after `mark` on. */
  const nextLog = (lb: LbProcess, mark: number, msg: string): Promise<Record<string, unknown>> =>
    lb.waitForLog((l) => lb.logs.indexOf(l) >= mark && typeof l.msg === 'string' && l.msg.startsWith(msg));

  const refused = (port: number): Promise<boolean> =>
    new Promise((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.once('connect', () => {
        s.destroy();
        resolve(false);
      });
      s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
    });

  it('onto a port in use changes nothing and keeps serving; onto a free port it moves, and sessions stay', async () => {
    const brokers = await startBrokers(['m1']);
    const blocker = net.createServer();
    try {
      const [port, admin, taken] = [await freePort(), await freePort(), await freePort()];
      await new Promise<void>((r) => blocker.listen({ host: '127.0.0.1', port: taken }, r));
      const lb = await startLb(yamlFor(port, admin, brokers), { waitReady: `http://127.0.0.1:${admin}/readyz` });
      const held = await connectVia(port, { clientId: 'held-over-moves' });
      let closed = false;
      held.on('close', () => (closed = true));

      let mark = lb.logs.length;
      lb.writeConfig(yamlFor(taken, admin, brokers));
      lb.reload();
      const failed = await nextLog(lb, mark, 'config reload failed');
      expect(JSON.stringify(failed)).toContain('EADDRINUSE');
      // Still serving where it was, and ready says so truthfully.
      const stayed = await connectVia(port, { clientId: 'after-failed-move' });
      expect(await whichBroker(stayed)).toBe('m1');
      await stayed.endAsync();
      expect((await fetch(`http://127.0.0.1:${admin}/readyz`)).status).toBe(200);

      await new Promise<void>((r) => blocker.close(() => r()));
      const moved = await freePort();
      mark = lb.logs.length;
      lb.writeConfig(yamlFor(moved, admin, brokers));
      lb.reload();
      await nextLog(lb, mark, 'config reloaded');
      const fresh = await connectVia(moved, { clientId: 'after-move' });
      expect(await whichBroker(fresh)).toBe('m1');
      await fresh.endAsync();
      expect(await refused(port)).toBe(true);
      await held.publishAsync('lbtest/alive', 'yes', { qos: 1 });
      expect(closed).toBe(false);
      const status = (await (await fetch(`http://127.0.0.1:${admin}/api/status`)).json()) as { listeners: Array<{ name: string; bind: string; sessions: number }> };
      expect(status.listeners).toEqual([{ name: 'mqtt', bind: `127.0.0.1:${moved}`, sessions: 1, tls: false }]);
      await held.endAsync();
      expect(await lb.stop()).toBe(0);
    } finally {
      blocker.close();
      await Promise.all(brokers.map((b) => b.stop()));
    }
  });

  it('a rename that keeps the address is refused, saying which listener holds it and to use two reloads', async () => {
    const brokers = await startBrokers(['m4']);
    try {
      const [port, admin] = [await freePort(), await freePort()];
      const lb = await startLb(yamlFor(port, admin, brokers), { waitReady: `http://127.0.0.1:${admin}/readyz` });
      lb.writeConfig(lbYaml({ listeners: [{ name: 'renamed', port }], admin, servers: brokers, health: HEALTH, limits: LIMITS }));
      lb.reload();
      const failed = await lb.waitForLog((l) => l.msg === 'config reload failed: keeping the running config');
      expect(JSON.stringify(failed)).toContain('held by listener mqtt until this reload is applied: hand an address over in two reloads');
      const still = await connectVia(port, { clientId: 'after-refused-rename' });
      expect(await whichBroker(still)).toBe('m4');
      await still.endAsync();
      expect(await lb.stop()).toBe(0);
    } finally {
      await Promise.all(brokers.map((b) => b.stop()));
    }
  });

  it('a reload of a config replaced by a FIFO is refused at once: the balancer keeps serving (it froze until a writer came)', async () => {
    const brokers = await startBrokers(['m5']);
    try {
      const [port, admin] = [await freePort(), await freePort()];
      const lb = await startLb(yamlFor(port, admin, brokers), { waitReady: `http://127.0.0.1:${admin}/readyz` });
      rmSync(lb.configFile);
      execFileSync('mkfifo', [lb.configFile]);
      lb.reload();
      const failed = await lb.waitForLog((l) => l.msg === 'config reload failed: keeping the running config');
      expect(JSON.stringify(failed)).toContain('not a regular file');
      // Serving all along: the admin port and a new session.
      expect((await fetch(`http://127.0.0.1:${admin}/healthz`, { signal: AbortSignal.timeout(2000) })).status).toBe(200);
      const still = await connectVia(port, { clientId: 'after-fifo-reload' });
      expect(await whichBroker(still)).toBe('m5');
      await still.endAsync();
      expect(await lb.stop()).toBe(0);
    } finally {
      await Promise.all(brokers.map((b) => b.stop()));
    }
  });

  it('a SIGHUP after SIGTERM is ignored: no listener opens while the balancer drains', async () => {
    const brokers = await startBrokers(['m3']);
    try {
      const [port, admin, extra] = [await freePort(), await freePort(), await freePort()];
      const lb = await startLb(yamlFor(port, admin, brokers), { waitReady: `http://127.0.0.1:${admin}/readyz` });
      const held = await connectVia(port, { clientId: 'held-while-stopping' });
      const exited = lb.stop();
      await lb.waitForLog((l) => l.msg === 'draining sessions');
      lb.writeConfig(lbYaml({ listeners: [{ port }, { name: 'late', port: extra }], admin, servers: brokers, health: HEALTH, limits: LIMITS }));
      lb.reload();
      const ignored = await lb.waitForLog((l) => l.msg === 'config reload ignored: stopping');
      expect(ignored).toMatchObject({ level: 40, code: 'MQLB_RELOAD_WHILE_STOPPING' });
      expect(await refused(extra)).toBe(true);
      await held.endAsync();
      expect(await exited).toBe(0);
    } finally {
      await Promise.all(brokers.map((b) => b.stop()));
    }
  });

  it('onto the address it holds under another name (localhost for 127.0.0.1): the old socket makes way', async (ctx) => {
    const probe = net.createServer();
    const resolved = await new Promise<string>((r) => probe.listen({ host: 'localhost', port: 0 }, () => r((probe.address() as net.AddressInfo).address)));
    probe.close();
    if (resolved !== '127.0.0.1') ctx.skip(`localhost resolves to ${resolved} here, not 127.0.0.1`);
    const brokers = await startBrokers(['m2']);
    try {
      const [port, admin] = [await freePort(), await freePort()];
      const lb = await startLb(yamlFor(port, admin, brokers), { waitReady: `http://127.0.0.1:${admin}/readyz` });
      const held = await connectVia(port, { clientId: 'held-over-rename' });
      const mark = lb.logs.length;
      lb.writeConfig(yamlFor(port, admin, brokers).replace(`bind: 127.0.0.1:${port}`, `bind: localhost:${port}`));
      lb.reload();
      await nextLog(lb, mark, 'config reloaded');
      expect(await lb.waitForLog((l) => l.msg === 'listener moved by reload')).toMatchObject({ bind: `localhost:${port}` });
      const fresh = await connectVia(port, { clientId: 'after-rename' });
      expect(await whichBroker(fresh)).toBe('m2');
      await fresh.endAsync();
      await held.publishAsync('lbtest/alive', 'yes', { qos: 1 });
      await held.endAsync();
      expect(await lb.stop()).toBe(0);
    } finally {
      await Promise.all(brokers.map((b) => b.stop()));
    }
  });
});

/**
 * One broker `name` and, with workers: 2, the config with the main listener and, when `withX`, a listener `x` on
 * `xPort` that reloads add and remove. The caller stops `brokers`.
 */
async function flappingListenerSetup(name: string): Promise<{ brokers: NamedBroker[]; port: number; xPort: number; admin: number; yaml: (withX: boolean) => string }> {
  const brokers = await startBrokers([name]);
  const [port, xPort, admin] = [await freePort(), await freePort(), await freePort()];
  const yaml = (withX: boolean): string =>
    lbYaml({ listeners: withX ? [{ port }, { name: 'x', port: xPort }] : [{ port }], admin, servers: [{ name, port: brokers[0]!.port }], extra: 'workers: 2\n' });
  return { brokers, port, xPort, admin, yaml };
}

/** After a test that stops worker processes: resumes those still stopped, then stops the balancers and the brokers. */
async function resumeAndStop(stopped: number[], brokers: NamedBroker[]): Promise<void> {
  for (const pid of stopped) {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // gone meanwhile (the primary's watchdog kills a worker stopped too long): the cleanup below must still run
    }
  }
  await stopAllLbs();
  await Promise.all(brokers.map((b) => b.stop()));
}

describe('workers: 2 (node:cluster)', () => {
  afterAll(async () => {
    await stopAllLbs();
  });

  it('a SIGHUP or SIGTERM while the workers start is applied once they serve, not the default action (exit 129/143)', async () => {
    const brokers = await startBrokers(['s1']);
    try {
      const [port, admin] = [await freePort(), await freePort()];
      const adminListening = (l: Record<string, unknown>): boolean => l.msg === 'admin server listening';
      // SIGHUP during the start: reloaded once started, and running.
      const hup = await startLb(yamlFor(port, admin, brokers, 'workers: 2\n'));
      await hup.waitForLog(adminListening, 15_000);
      expect(hup.logs.some((l) => l.msg === 'mqtt-lb started')).toBe(false);
      hup.proc.kill('SIGHUP');
      await hup.waitForLog((l) => l.msg === 'config reload requested while starting: applying it once started');
      await hup.waitForLog((l) => l.msg === 'config reloaded', 20_000);
      expect(hup.proc.exitCode).toBe(null);
      expect(await brokerFor(port, 'during-start')).toBe('s1');
      expect(await hup.stop()).toBe(0);
      // SIGTERM during the start: a clean stop once started, exit 0, no worker crashing on a gone primary.
      const term = await startLb(yamlFor(port, admin, brokers, 'workers: 2\n'));
      await term.waitForLog(adminListening, 15_000);
      term.proc.kill('SIGTERM');
      const code = await Promise.race([term.exited, sleep(30_000).then(() => 'still running')]);
      expect(code).toBe(0);
      expect(term.logs.some((l) => l.msg === 'stop requested while starting: stopping once started')).toBe(true);
      expect(term.logs.some((l) => l.msg === 'stopped')).toBe(true);
      expect(term.stderr.join('')).not.toMatch(/EPIPE/);
      await term.stop();
    } finally {
      await Promise.all(brokers.map((b) => b.stop()));
    }
  }, 90_000);

  // A reload that moves a server resets it to unknown in each worker's pool. A worker busy when the primary's
  // states (up again) arrived applied them before its own reload step, and the reset then left the server unknown
  // in that worker for good: half the clients got CONNACK 3. A worker stopped for 300 ms just after the SIGHUP
  // reproduced it at once (the second review's race).
  it('a reload that moves a server: every worker routes to it again, also one that was busy during the reload', async () => {
    const brokers = await startBrokers(['mv-a', 'mv-b']);
    try {
      const [port, admin] = [await freePort(), await freePort()];
      const yamlWith = (b: NamedBroker): string => yamlFor(port, admin, [{ name: 'b1', port: b.port }], 'workers: 2\n');
      // Round robin: the primary deals the clients below to both workers in turn (the kernel's scheduling, the
      // default, may give all eight to one).
      const lb = await startLb(yamlWith(brokers[0]!), { waitReady: `http://127.0.0.1:${admin}/readyz`, env: { NODE_CLUSTER_SCHED_POLICY: 'rr' } });
      const workerPids = workerPidsOf(lb.proc.pid!);
      expect(workerPids).toHaveLength(2);
      for (let round = 0; round < 4; round++) {
        const to = brokers[(round + 1) % 2]!;
        const reloads = lb.logs.filter((l) => l.msg === 'config reloaded').length;
        lb.writeConfig(yamlWith(to));
        lb.reload();
        await sleep(1 + (round % 2));
        const busy = workerPids[round % 2]!;
        process.kill(busy, 'SIGSTOP');
        await sleep(300);
        process.kill(busy, 'SIGCONT');
        await lb.waitForLog(() => lb.logs.filter((l) => l.msg === 'config reloaded').length > reloads, 10_000);
        await sleep(500); // the move's first probe, and its states to the workers
        // The primary deals connections to the workers in turn: eight clients reach both.
        for (let i = 0; i < 8; i++) expect(await brokerFor(port, `mv-${round}-${i}`), `round ${round}, client ${i}`).toBe(to.name);
      }
      expect(await lb.stop()).toBe(0);
    } finally {
      await Promise.all(brokers.map((b) => b.stop()));
    }
  }, 90_000);

  it('every worker routes a client ID like a single process does; the primary serves aggregated metrics and stops cleanly', async () => {
    const brokers = await startBrokers(['w1', 'w2', 'w3']);
    try {
      const [p1, a1, p2, a2] = [await freePort(), await freePort(), await freePort(), await freePort()];
      const single = await startLb(yamlFor(p1, a1, brokers), { waitReady: `http://127.0.0.1:${a1}/readyz` });
      const multi = await startLb(yamlFor(p2, a2, brokers, 'workers: 2\n'), {
        waitReady: `http://127.0.0.1:${a2}/readyz`,
        env: { MQTT_LB_TEST_HOOKS: '1' },
      });
      await sleep(1200);
      const ids = Array.from({ length: 16 }, (_, i) => `cluster-dev-${i}`);
      for (const id of ids) expect(await brokerFor(p2, id), id).toBe(await brokerFor(p1, id));
      const held = await Promise.all([0, 1, 2, 3, 4].map((i) => connectVia(p2, { clientId: `held-${i}` })));
      await sleep(700); // worker snapshots reach the primary every 250 ms
      const metrics = await (await fetch(`http://127.0.0.1:${a2}/metrics`)).text();
      expect(metrics).toMatch(/mqtt_lb_connections_active\{listener="mqtt"\} 5\b/);
      const proxied = /mqtt_lb_connections_total\{listener="mqtt",outcome="proxied"\} (\d+)/.exec(metrics);
      expect(Number(proxied?.[1])).toBe(ids.length + 5);
      const status = (await (await fetch(`http://127.0.0.1:${a2}/api/status`)).json()) as { pools: Array<{ servers: Array<{ sessions: number }> }> };
      expect(status.pools[0]!.servers.reduce((n, s) => n + s.sessions, 0)).toBe(5);
      // The lag metric shows the proxy workers' loops, not only the primary's: block one worker for 500 ms.
      const workerPids = workerPidsOf(multi.proc.pid!);
      expect(workerPids).toHaveLength(2);
      // Process metrics cover the workers too (sums of their memory), not only the primary.
      const rssOf = (pid: number): number => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
      await sleep(1100); // workers send their process metrics every second
      const processText = await (await fetch(`http://127.0.0.1:${a2}/metrics`)).text();
      const exportedRss = Number(/^process_resident_memory_bytes (\d+)/m.exec(processText)?.[1]);
      const allRss = [multi.proc.pid!, ...workerPids].reduce((n, pid) => n + rssOf(pid), 0);
      expect(exportedRss).toBeGreaterThan(allRss * 0.8);
      expect(exportedRss).toBeLessThan(allRss * 1.2);
      expect(processText.match(/^process_start_time_seconds /gm)).toHaveLength(1);
      await fetch(`http://127.0.0.1:${a2}/metrics`); // start a new lag window
      process.kill(workerPids[0]!, 'SIGUSR2');
      await sleep(1200); // the block, then the worker's next snapshot
      const lagText = await (await fetch(`http://127.0.0.1:${a2}/metrics`)).text();
      const lagMax = Number(/^mqtt_lb_event_loop_lag_max_seconds (\S+)$/m.exec(lagText)?.[1]);
      // An idle loop's timer ticks every 100 ms: a 500 ms block makes it 400-500 ms late.
      expect(lagMax).toBeGreaterThan(0.35);
      const stopping = multi.stop();
      await sleep(300);
      await Promise.all(held.map((c) => c.endAsync()));
      expect(await stopping).toBe(0);
      await single.stop();
    } finally {
      await Promise.all(brokers.map((b) => b.stop()));
    }
  });
  it('a reload onto an address in use is taken by none; a worker restarted after it binds; a dead worker is restarted and its counts stay; a second SIGTERM closes sessions', async () => {
    const brokers = await startBrokers(['k1', 'k2']);
    const blocker = net.createServer();
    try {
      const [port, admin, taken] = [await freePort(), await freePort(), await freePort()];
      await new Promise<void>((r) => blocker.listen({ host: '127.0.0.1', port: taken }, r));
      const limits = `${LIMITS}  drainTimeout: 30s\n`;
      const yaml = (listeners: Array<{ name?: string; port: number }>, servers: typeof brokers): string =>
        lbYaml({ listeners, admin, servers, health: HEALTH, limits, extra: 'workers: 2\n' });
      const lb = await startLb(yaml([{ port }], brokers.slice(0, 1)), { waitReady: `http://127.0.0.1:${admin}/readyz` });
      const serverNames = async (): Promise<string[]> => {
        const st = (await (await fetch(`http://127.0.0.1:${admin}/api/status`)).json()) as { pools: Array<{ servers: Array<{ name: string }> }> };
        return st.pools[0]!.servers.map((x) => x.name);
      };

      // A new listener on an address in use, and a second server: no worker and not the primary apply it. The
      // primary finds the address in use before any worker tries (a failed listen in a worker would leave its
      // node:cluster handle key out of step with a restarted worker's: checked below, where one is restarted).
      let mark = lb.logs.length;
      lb.writeConfig(yaml([{ port }, { name: 'extra', port: taken }], brokers));
      lb.reload();
      const failed = await lb.waitForLog((l) => lb.logs.indexOf(l) >= mark && l.msg === 'config reload failed: keeping the running config');
      expect(JSON.stringify(failed)).toMatch(/listener extra: cannot bind 127\.0\.0\.1:\d+: EADDRINUSE/);
      expect(lb.logs.some((l) => l.msg === 'listener started' && l.listener === 'extra')).toBe(false);
      expect(await serverNames()).toEqual(['k1']);
      await sleep(600);
      expect((await fetch(`http://127.0.0.1:${admin}/readyz`)).status).toBe(200);
      for (let i = 0; i < 4; i++) expect(await brokerFor(port, `kept-${i}`)).toBe('k1');

      // The address is free again: the same file is taken by all.
      await new Promise<void>((r) => blocker.close(() => r()));
      mark = lb.logs.length;
      lb.reload();
      await lb.waitForLog((l) => lb.logs.indexOf(l) >= mark && l.msg === 'config reloaded');
      expect(await serverNames()).toEqual(['k1', 'k2']);
      const viaExtra = await connectVia(taken, { clientId: 'via-extra' });
      await viaExtra.endAsync();

      // Moving a listener onto an address its own socket holds (127.0.0.1 -> 0.0.0.0, same port) cannot work with
      // workers (the socket is the primary's, held for all of them): refused by the primary, before any worker.
      const before = yaml([{ port }, { name: 'extra', port: taken }], brokers);
      mark = lb.logs.length;
      lb.writeConfig(before.replace(`bind: 127.0.0.1:${port}`, `bind: 0.0.0.0:${port}`));
      lb.reload();
      const overlap = await lb.waitForLog((l) => lb.logs.indexOf(l) >= mark && l.msg === 'config reload failed: keeping the running config');
      expect(JSON.stringify(overlap)).toContain('with workers the old socket cannot make way');
      lb.writeConfig(before);

      // A worker dies: the summed counters keep what it had counted, and it is replaced.
      await sleep(700); // worker snapshots every 250 ms
      const proxied = async (): Promise<number> => {
        const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
        return Number(/mqtt_lb_connections_total\{listener="mqtt",outcome="proxied"\} (\d+)/.exec(text)?.[1]);
      };
      const cpuSeconds = async (): Promise<number> => {
        const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
        return Number(/^process_cpu_seconds_total (\S+)$/m.exec(text)?.[1]);
      };
      const proxiedBefore = await proxied();
      expect(proxiedBefore).toBeGreaterThanOrEqual(4);
      const cpuBefore = await cpuSeconds();
      expect(cpuBefore).toBeGreaterThan(0);
      const failedCount = async (): Promise<number> => {
        const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
        return Number(/mqtt_lb_connections_total\{listener="mqtt",outcome="failed"\} (\d+)/.exec(text)?.[1]);
      };
      // Held sessions, spread over both workers: those on the dead one break with it, counted as failed.
      const heldClients = await Promise.all(Array.from({ length: 8 }, (_, i) => connectVia(port, { clientId: `held-${i}` })));
      let brokenClients = 0;
      for (const c of heldClients) {
        c.on('error', () => {});
        c.once('close', () => brokenClients++);
      }
      await sleep(700); // in the workers' snapshots
      const failedBefore = await failedCount();
      const workerPids = (): number[] => workerPidsOf(lb.proc.pid!);
      // The worker holding more of them (sockets: two per session), so that the count below is not trivially 0.
      const isSocket = (link: string): boolean => {
        try {
          return readlinkSync(link).startsWith('socket:');
        } catch {
          return false; // closed meanwhile
        }
      };
      const sockets = (pid: number): number => readdirSync(`/proc/${pid}/fd`).filter((fd) => isSocket(`/proc/${pid}/fd/${fd}`)).length;
      const [victim] = workerPids().sort((a, b) => sockets(b) - sockets(a));
      process.kill(victim!, 'SIGKILL');
      const exited = await lb.waitForLog((l) => l.msg === 'worker exited: restarting it');
      expect(await proxied()).toBeGreaterThanOrEqual(proxiedBefore);
      await sleep(300);
      expect(exited.sessions).toBe(brokenClients);
      expect(brokenClients).toBeGreaterThan(0);
      expect(await failedCount()).toBe(failedBefore + brokenClients);
      for (const c of heldClients) c.end(true);
      // While its replacement starts, the other worker serves: the listener stays in the metrics and ready.
      const until = Date.now() + 10_000;
      let samples = 0;
      while (Date.now() < until && !(workerPids().length === 2 && !workerPids().includes(victim!))) {
        expect(await proxied()).toBeGreaterThanOrEqual(proxiedBefore);
        expect((await fetch(`http://127.0.0.1:${admin}/readyz`)).status).toBe(200);
        // What the dead worker had spent stays in the combined process counters.
        expect(await cpuSeconds()).toBeGreaterThanOrEqual(cpuBefore);
        samples++;
        await sleep(50);
      }
      expect(samples).toBeGreaterThan(0);
      // And right after the replacement is up (its first snapshot is sent at ready).
      for (let i = 0; i < 10; i++) {
        expect(await proxied()).toBeGreaterThanOrEqual(proxiedBefore);
        expect((await fetch(`http://127.0.0.1:${admin}/readyz`)).status).toBe(200);
        await sleep(50);
      }
      expect(workerPids()).toHaveLength(2);
      await sleep(700);
      expect(await proxied()).toBeGreaterThanOrEqual(proxiedBefore);

      // SIGTERM drains (up to 30 s); a second SIGTERM closes the sessions in the workers now.
      const held = await connectVia(port, { clientId: 'held-at-stop' });
      held.on('error', () => {});
      const heldClosed = new Promise<void>((r) => held.once('close', () => r()));
      const stopStartedAt = Date.now();
      lb.proc.kill('SIGTERM');
      await lb.waitForLog((l) => l.msg === 'draining sessions' || l.msg === 'stop requested');
      await sleep(500);
      lb.proc.kill('SIGTERM');
      await heldClosed;
      expect(await lb.exited).toBe(0);
      expect(Date.now() - stopStartedAt).toBeLessThan(10_000);
      held.end();
    } finally {
      blocker.close();
      await stopAllLbs();
      await Promise.all(brokers.map((b) => b.stop()));
    }
  }, 60_000);

  it('a worker whose event loop is stuck (SIGSTOP) is killed and restarted, and its clients are reset to reconnect', async () => {
    const brokers = await startBrokers(['w1']);
    const stopped: number[] = [];
    try {
      const [port, admin] = [await freePort(), await freePort()];
      const yaml = lbYaml({ port, admin, servers: brokers, health: HEALTH, limits: LIMITS, extra: 'workers: 2\n' });
      // The test hooks shorten the watchdog's stall from 10 s to 3 s (worker-watchdog.ts).
      const lb = await startLb(yaml, { waitReady: `http://127.0.0.1:${admin}/readyz`, env: { MQTT_LB_TEST_HOOKS: '1', NODE_CLUSTER_SCHED_POLICY: 'rr' } });
      // Round robin: two clients, one on each worker.
      const clients = [await connectVia(port, { clientId: 'stuck-a' }), await connectVia(port, { clientId: 'stuck-b' })];
      const closedAt: number[] = [];
      for (const c of clients) c.on('close', () => closedAt.push(Date.now()));
      const [victim] = workerPidsOf(lb.proc.pid!);
      process.kill(victim!, 'SIGSTOP');
      stopped.push(victim!);
      const stoppedAt = Date.now();
      const line = await lb.waitForLog((l) => l.msg === 'worker unresponsive: killing it (it is restarted)', 15_000);
      stopped.pop(); // killed: nothing to resume, whatever fails below
      expect(line).toMatchObject({ worker: expect.any(Number), workerPid: victim });
      expect(line.silentMs as number).toBeGreaterThanOrEqual(3000);
      expect(Date.now() - stoppedAt).toBeLessThan(8000);
      await lb.waitForLog((l) => l.msg === 'worker restarted', 15_000);
      expect(() => process.kill(victim!, 0)).toThrow(); // gone (SIGKILL ends a stopped process)
      // The stuck worker's client was reset when the process died; the other one is untouched, and still talks.
      const until = Date.now() + 5000;
      while (closedAt.length < 1 && Date.now() < until) await sleep(50);
      await sleep(500);
      expect(closedAt).toHaveLength(1);
      const alive = clients.find((c) => c.connected)!;
      await alive.publishAsync('watchdog/still-talks', 'yes', { qos: 1 });
      expect((await fetch(`http://127.0.0.1:${admin}/readyz`)).status).toBe(200);
      for (const c of clients) c.end(true);
      expect(await lb.stop()).toBe(0);
    } finally {
      await resumeAndStop(stopped, brokers);
    }
  }, 60_000);

  // A worker that crashed soon after each restart was restarted every ~1.3 s for good (a client whose packets crash it).
  it('a worker that dies soon after its restart waits longer for the next one (1 s, then 2 s)', async () => {
    const brokers = await startBrokers(['r1']);
    try {
      const [port, admin] = [await freePort(), await freePort()];
      const lb = await startLb(lbYaml({ port, admin, servers: brokers, health: HEALTH, limits: LIMITS, extra: 'workers: 2\n' }), { waitReady: `http://127.0.0.1:${admin}/readyz` });
      const workers = (): number[] => workerPidsOf(lb.proc.pid!);
      const before = workers();
      const exited = (): Array<Record<string, unknown>> => lb.logs.filter((l) => l.msg === 'worker exited: restarting it');
      process.kill(before[0]!, 'SIGKILL');
      await lb.waitForLog((l) => l.msg === 'worker restarted');
      const replacement = workers().find((p) => !before.includes(p))!;
      process.kill(replacement, 'SIGKILL'); // dies again at once: a crash loop
      await lb.waitForLog((l) => l.msg === 'worker restarted' && lb.logs.filter((x) => x.msg === 'worker restarted').length >= 2, 10_000);
      expect(exited().map((l) => l.retryInMs)).toEqual([1000, 2000]);
      // The operator sees it without the log: both restarts counted, both workers serving again.
      const metrics = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
      expect(metrics).toMatch(/^mqtt_lb_worker_restarts_total 2$/m);
      expect(metrics).toMatch(/^mqtt_lb_workers 2$/m);
      expect(await lb.stop()).toBe(0);
    } finally {
      await resumeAndStop([], brokers);
    }
  }, 60_000);

  // node:cluster exits a worker whose primary has gone at once, with status 0 and no word: the log had nothing.
  it('when the primary is killed, every worker says so and exits, its sessions closed', async () => {
    const brokers = await startBrokers(['g1']);
    let workerPids: number[] = [];
    try {
      const [port, admin] = [await freePort(), await freePort()];
      const lb = await startLb(lbYaml({ port, admin, servers: brokers, health: HEALTH, limits: LIMITS, extra: 'workers: 2\n' }), {
        waitReady: `http://127.0.0.1:${admin}/readyz`,
        env: { NODE_CLUSTER_SCHED_POLICY: 'rr' },
      });
      workerPids = workerPidsOf(lb.proc.pid!);
      const clients = [await connectVia(port, { clientId: 'orphan-a' }), await connectVia(port, { clientId: 'orphan-b' })];
      let closed = 0;
      for (const c of clients) c.on('close', () => closed++);
      const mark = lb.logs.length;
      process.kill(lb.proc.pid!, 'SIGKILL');
      for (let i = 0; i < 2; i++) {
        await lb.waitForLog((l) => l.msg === 'primary process gone: worker exiting, its sessions closed' && lb.logs.indexOf(l) >= mark && lb.logs.filter((x) => x.msg === l.msg).length > i, 5_000);
      }
      const gone = lb.logs.filter((l) => l.msg === 'primary process gone: worker exiting, its sessions closed');
      expect(gone.map((l) => l.worker).sort()).toEqual([0, 1]);
      expect(gone.map((l) => l.sessions)).toEqual([1, 1]);
      const until = Date.now() + 5_000;
      while (Date.now() < until && (workerPids.some(isRunning) || closed < 2)) await sleep(50);
      expect(workerPids.filter(isRunning)).toEqual([]);
      expect(closed).toBeGreaterThanOrEqual(2);
      for (const c of clients) c.end(true);
    } finally {
      // Only those still running: an exited worker's pid may already be another process's.
      for (const pid of workerPids.filter(isRunning)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
      await resumeAndStop([], brokers);
    }
  }, 60_000);

  it('every worker dead at once: /readyz 503, and the listener stays in /metrics and /api/status with its counts until they are back', async () => {
    const brokers = await startBrokers(['z1']);
    try {
      const [port, admin] = [await freePort(), await freePort()];
      const lb = await startLb(lbYaml({ port, admin, servers: brokers, health: HEALTH, limits: LIMITS, extra: 'workers: 2\n' }), {
        waitReady: `http://127.0.0.1:${admin}/readyz`,
      });
      for (let i = 0; i < 4; i++) await (await connectVia(port, { clientId: `counted-${i}` })).endAsync();
      await sleep(700); // worker snapshots every 250 ms
      const scrape = async (): Promise<{ proxied: number | null; listeners: string[]; ready: number; reason: string }> => {
        const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
        const m = /mqtt_lb_connections_total\{listener="mqtt",outcome="proxied"\} (\d+)/.exec(text);
        const status = (await (await fetch(`http://127.0.0.1:${admin}/api/status`)).json()) as { listeners: Array<{ name: string }> };
        const readyz = await fetch(`http://127.0.0.1:${admin}/readyz`);
        return { proxied: m === null ? null : Number(m[1]), listeners: status.listeners.map((l) => l.name), ready: readyz.status, reason: await readyz.text() };
      };
      const before = await scrape();
      expect(before.proxied).toBeGreaterThanOrEqual(4);
      const pids = workerPidsOf(lb.proc.pid!);
      for (const pid of pids) process.kill(pid, 'SIGKILL');
      // Both exits handled (each logs its restart), the replacements not serving yet (1 s delay).
      for (let i = 0; i < 2; i++) await lb.waitForLog((l) => l.msg === 'worker exited: restarting it' && lb.logs.filter((x) => x.msg === l.msg).length > i, 5_000);
      const during = await scrape();
      expect(during.ready).toBe(503);
      // Said as what it is, not as a start (a workers audit: `listener mqtt not bound by the workers yet`).
      expect(during.reason).toContain('no worker serving: every worker exited, replacements are starting');
      expect(during.listeners).toEqual(['mqtt']); // an audit saw `"listeners": []` and every listener series gone
      expect(during.proxied).toBeGreaterThanOrEqual(before.proxied!);
      await lb.waitForLog((l) => l.msg === 'worker restarted', 10_000);
      expect(await lb.stop()).toBe(0);
    } finally {
      await resumeAndStop([], brokers);
    }
  }, 60_000);

  it('a worker killed during a graceful stop is said (warn), not restarted, and the stop still exits 0', async () => {
    const brokers = await startBrokers(['k1']);
    try {
      const [port, admin] = [await freePort(), await freePort()];
      const lb = await startLb(lbYaml({ port, admin, servers: brokers, health: HEALTH, limits: '  drainTimeout: 3s\n', extra: 'workers: 2\n' }), {
        waitReady: `http://127.0.0.1:${admin}/readyz`,
      });
      const workerPids = workerPidsOf(lb.proc.pid!);
      const client = await connectVia(port, { clientId: 'held-through-the-stop' }); // the drain lasts
      lb.proc.kill('SIGTERM');
      await lb.waitForLog((l) => l.msg === 'stop requested', 5_000);
      process.kill(workerPids[0]!, 'SIGKILL');
      const line = await lb.waitForLog((l) => l.msg === 'worker exited during the stop: its sessions closed at once', 5_000);
      expect(line).toMatchObject({ level: 40, signal: 'SIGKILL' });
      expect(await lb.exited).toBe(0);
      expect(lb.logs.filter((l) => l.msg === 'worker exited: restarting it' || l.msg === 'worker exited during the stop: its sessions closed at once')).toHaveLength(1);
      client.end(true);
    } finally {
      await resumeAndStop([], brokers);
    }
  }, 60_000);

  it('a stop while a replacement worker is still starting: it binds nothing, and the stop waits for no kill', async () => {
    const brokers = await startBrokers(['r1']);
    let replacement: number | null = null;
    try {
      const [port, admin] = [await freePort(), await freePort()];
      const lb = await startLb(lbYaml({ port, admin, servers: brokers, health: HEALTH, limits: '  drainTimeout: 3s\n', extra: 'workers: 2\n' }), {
        waitReady: `http://127.0.0.1:${admin}/readyz`,
      });
      const [victim, sibling] = workerPidsOf(lb.proc.pid!);
      process.kill(victim!, 'SIGKILL');
      await lb.waitForLog((l) => l.msg === 'worker exited: restarting it', 5_000);
      // Forked 1 s later: frozen as soon as it exists, still loading its modules, so the stop reaches it while it
      // starts (an audit: the stop's message was lost, and the replacement served until the kill 8 s later).
      const until = Date.now() + 5_000;
      while (replacement === null && Date.now() < until) {
        const fresh = workerPidsOf(lb.proc.pid!).find((pid) => pid !== victim && pid !== sibling);
        if (fresh === undefined) await sleep(5);
        else {
          process.kill(fresh, 'SIGSTOP');
          replacement = fresh;
        }
      }
      expect(replacement).not.toBeNull();
      const mark = lb.logs.length;
      lb.proc.kill('SIGTERM');
      await lb.waitForLog((l) => l.msg === 'stop requested', 5_000);
      await sleep(300); // the primary's stop goes out to both workers meanwhile
      process.kill(replacement!, 'SIGCONT');
      expect(await lb.exited).toBe(0);
      const after = lb.logs.slice(mark);
      expect(after.filter((l) => l.msg === 'listener started' || l.msg === 'worker restarted')).toEqual([]);
      expect(after.filter((l) => l.msg === 'worker did not stop in time: killing it')).toEqual([]);
    } finally {
      if (replacement !== null && isRunning(replacement)) {
        try {
          process.kill(replacement, 'SIGCONT');
          process.kill(replacement, 'SIGKILL');
        } catch {
          // gone meanwhile
        }
      }
      await resumeAndStop([], brokers);
    }
  }, 60_000);

  // A worker restarted while a reload waits for the others gets the running config at start and takes no part in
  // the reload: once the reload is committed, the primary brings it up to date.
  it('a worker that starts during a reload is brought up to the reloaded config', async () => {
    const brokers = await startBrokers(['c1']);
    const stopped: number[] = [];
    try {
      const [port, added, admin] = [await freePort(), await freePort(), await freePort()];
      const yaml = (listeners: Array<{ name?: string; port: number }>): string =>
        lbYaml({ listeners, admin, servers: brokers, health: HEALTH, limits: LIMITS, extra: 'workers: 2\n' });
      const lb = await startLb(yaml([{ port }]), { waitReady: `http://127.0.0.1:${admin}/readyz` });
      const [first, second] = workerPidsOf(lb.proc.pid!);
      const mark = lb.logs.length;
      process.kill(first!, 'SIGKILL'); // restarted after 1 s
      await sleep(100);
      process.kill(second!, 'SIGSTOP'); // keeps the reload waiting past that restart
      stopped.push(second!);
      lb.writeConfig(yaml([{ port }, { name: 'added', port: added }]));
      lb.reload();
      // The restarted worker is up (the stopped one cannot log) while the reload still waits for the other.
      await lb.waitForLog((l) => l.msg === 'listener started' && lb.logs.indexOf(l) >= mark);
      await sleep(300);
      expect(lb.logs.slice(mark).some((l) => l.msg === 'config reloaded')).toBe(false);
      process.kill(second!, 'SIGCONT');
      stopped.pop();
      await lb.waitForLog((l) => l.msg === 'config reloaded');
      const until = Date.now() + 10_000;
      let status = 0;
      while (Date.now() < until && (status = (await fetch(`http://127.0.0.1:${admin}/readyz`)).status) !== 200) await sleep(200);
      expect(status).toBe(200);
      const st = (await (await fetch(`http://127.0.0.1:${admin}/api/status`)).json()) as { listeners: Array<{ name: string }> };
      expect(st.listeners.map((l) => l.name).sort()).toEqual(['added', 'mqtt']);
      // Both workers serve the added listener: a few connections land on each.
      for (let i = 0; i < 6; i++) {
        const c = await connectVia(added, { clientId: `catch-up-${i}` });
        await c.endAsync();
      }
      expect(await lb.stop()).toBe(0);
    } finally {
      await resumeAndStop(stopped, brokers);
    }
  }, 60_000);

  // A worker that died while a reload waited for its answer counted as refusing it: the whole reload failed
  // (MQLB_RELOAD_WORKER "worker 1 exited"), and the replacement then ran the old file until the next SIGHUP.
  it('a worker that dies while a reload waits for it does not refuse the reload; its replacement runs the new file', async () => {
    const brokers = await startBrokers(['d1']);
    const stopped: number[] = [];
    try {
      const [port, added, admin] = [await freePort(), await freePort(), await freePort()];
      const yaml = (listeners: Array<{ name?: string; port: number }>): string =>
        lbYaml({ listeners, admin, servers: brokers, health: HEALTH, limits: LIMITS, extra: 'workers: 2\n' });
      const lb = await startLb(yaml([{ port }]), { waitReady: `http://127.0.0.1:${admin}/readyz` });
      const [, victim] = workerPidsOf(lb.proc.pid!);
      const mark = lb.logs.length;
      process.kill(victim!, 'SIGSTOP'); // the reload waits for its answer...
      stopped.push(victim!);
      lb.writeConfig(yaml([{ port }, { name: 'added', port: added }]));
      lb.reload();
      await sleep(300);
      process.kill(victim!, 'SIGKILL'); // ...and it dies meanwhile
      stopped.pop();
      const outcome = await lb.waitForLog((l) => (l.msg === 'config reloaded' || l.msg === 'config reload failed: keeping the running config') && lb.logs.indexOf(l) >= mark);
      expect(outcome.msg).toBe('config reloaded');
      await lb.waitForLog((l) => l.msg === 'worker restarted' && lb.logs.indexOf(l) >= mark);
      // A listener is shown once every worker reports it bound: the replacement too.
      let names: string[] = [];
      for (const until = Date.now() + 5_000; Date.now() < until && names.length < 2; await sleep(200)) {
        const st = (await (await fetch(`http://127.0.0.1:${admin}/api/status`)).json()) as { listeners: Array<{ name: string }> };
        names = st.listeners.map((l) => l.name).sort();
      }
      expect(names).toEqual(['added', 'mqtt']);
      // Every worker, the replacement included, serves the added listener.
      for (let i = 0; i < 8; i++) {
        const c = await connectVia(added, { clientId: `died-in-reload-${i}` });
        await c.endAsync();
      }
      expect(await lb.stop()).toBe(0);
    } finally {
      await resumeAndStop(stopped, brokers);
    }
  }, 60_000);

  // The primary logged 'config reloaded' as soon as it had sent the commit, while the workers were still closing what
  // the reload removed: the next reload, adding a listener back on its address, found it held (EADDRINUSE) in ~4 %
  // of back-to-back reloads (16 of 380 in the audit's bursts). A reload now ends once every worker has settled it:
  // when 'config reloaded' is logged, a removed listener's address refuses connections.
  it('a reload that removes a listener ends once the workers have closed it; adding it back at once works', async () => {
    const { brokers, xPort, admin, yaml } = await flappingListenerSetup('rb1');
    try {
      const lb = await startLb(yaml(true), { waitReady: `http://127.0.0.1:${admin}/readyz` });
      const reloaded = (): number => lb.logs.filter((l) => l.msg === 'config reloaded' || l.msg === 'config reload failed').length;
      const accepts = (): Promise<boolean> =>
        new Promise((resolve) => {
          const c = net.connect(xPort, '127.0.0.1');
          c.once('connect', () => {
            c.destroy();
            resolve(true);
          });
          c.once('error', () => resolve(false));
        });
      const stillOpen: number[] = [];
      for (let round = 0; round < 8; round++) {
        for (const withX of [false, true]) {
          const before = reloaded();
          lb.writeConfig(yaml(withX));
          lb.reload();
          await lb.waitForLog(() => reloaded() > before, 15_000);
          if (!withX && (await accepts())) stillOpen.push(round);
        }
      }
      expect(lb.logs.filter((l) => l.msg === 'config reload failed').map((l) => JSON.stringify(l).slice(0, 300))).toEqual([]);
      expect(stillOpen).toEqual([]);
      expect(await brokerFor(xPort, 'after-rounds')).toBe('rb1');
      expect(await lb.stop()).toBe(0);
    } finally {
      await Promise.all(brokers.map((b) => b.stop()));
    }
  }, 90_000);

  it('/readyz stays 200 through a reload that adds a listener: bound in every worker before the commit, not unbound until their next snapshots', async () => {
    const { brokers, admin, yaml } = await flappingListenerSetup('rz1');
    try {
      const lb = await startLb(yaml(false), { waitReady: `http://127.0.0.1:${admin}/readyz` });
      const answers: string[] = [];
      for (let round = 0; round < 3; round++) {
        for (const withX of [true, false]) {
          const before = lb.logs.filter((l) => l.msg === 'config reloaded').length;
          lb.writeConfig(yaml(withX));
          lb.reload();
          await lb.waitForLog(() => lb.logs.filter((l) => l.msg === 'config reloaded').length > before, 15_000);
          // The workers' snapshots come every 250 ms: an audit saw 503 `listener x not bound by the workers yet` for
          // 70-250 ms after each reload that added one.
          for (let i = 0; i < 15; i++) {
            const r = await fetch(`http://127.0.0.1:${admin}/readyz`, { signal: AbortSignal.timeout(2000) });
            if (r.status !== 200) answers.push(`round ${round} +x=${withX}: ${r.status} ${await r.text()}`);
            else await r.text();
            await sleep(20);
          }
        }
      }
      expect(answers).toEqual([]);
      expect(await lb.stop()).toBe(0);
    } finally {
      await Promise.all(brokers.map((b) => b.stop()));
    }
  }, 60_000);

  // node:cluster's round robin (Node's default on Linux) leaves a connection unanswered, its socket held in the
  // primary for good, when the last worker declines it after closing the listening handle (a reload that removes
  // the listener; nodejs/node#21746): 6-11 of 1,000-5,500 connections in the audit's 15 s of listener flapping. The
  // kernel's scheduling is the default with workers now; NODE_CLUSTER_SCHED_POLICY=rr still selects round robin.
  it('a listener added and removed by reloads while clients connect to it: every client is answered, the primary keeps no socket', async () => {
    const { brokers, xPort, admin, yaml } = await flappingListenerSetup('fl1');
    try {
      const lb = await startLb(yaml(false), { waitReady: `http://127.0.0.1:${admin}/readyz` });
      expect(lb.logs.find((l) => l.msg === 'workers started')).toMatchObject({ schedulingPolicy: 'kernel' });
      const fdsBefore = readdirSync(`/proc/${lb.proc.pid}/fd`).length;
      /** One client: CONNECT, then its answer (CONNACK, close or reset) within 5 s, or 'none'. */
      const attempt = (id: string): Promise<'connack' | 'closed' | 'refused' | 'none'> =>
        new Promise((resolve) => {
          const c = net.connect(xPort, '127.0.0.1');
          let connected = false;
          const done = (r: 'connack' | 'closed' | 'refused' | 'none'): void => {
            clearTimeout(t);
            c.destroy();
            resolve(r);
          };
          const t = setTimeout(() => done('none'), 5000);
          c.once('connect', () => {
            connected = true;
            c.write(connectPacket({ clientId: id }));
          });
          c.once('data', () => done('connack'));
          c.once('error', () => undefined);
          c.once('close', () => done(connected ? 'closed' : 'refused'));
        });
      const outcomes = { connack: 0, closed: 0, refused: 0, none: 0 };
      let running = true;
      let seq = 0;
      const clients = Array.from({ length: 6 }, async () => {
        while (running) {
          const r = await attempt(`flap-${seq++}`);
          outcomes[r]++;
          if (r === 'refused') await sleep(3);
        }
      });
      const until = Date.now() + 6000;
      for (let n = 0; Date.now() < until; n++) {
        lb.writeConfig(yaml(n % 2 === 0));
        lb.reload();
        await sleep(100 + (n % 3) * 100);
      }
      lb.writeConfig(yaml(false));
      lb.reload();
      await sleep(1000);
      running = false;
      await Promise.all(clients);
      expect(outcomes.connack).toBeGreaterThan(100);
      expect(outcomes.none).toBe(0);
      await sleep(500);
      expect(readdirSync(`/proc/${lb.proc.pid}/fd`).length).toBeLessThanOrEqual(fdsBefore + 1);
      expect(await lb.stop()).toBe(0);
      // Round robin is still there for whoever asks for it.
      const rr = await startLb(yaml(false), { waitReady: `http://127.0.0.1:${admin}/readyz`, env: { NODE_CLUSTER_SCHED_POLICY: 'rr' } });
      expect(rr.logs.find((l) => l.msg === 'workers started')).toMatchObject({ schedulingPolicy: 'round-robin' });
      expect(await rr.stop()).toBe(0);
    } finally {
      await Promise.all(brokers.map((b) => b.stop()));
    }
  }, 90_000);
});

/** The worker processes of a primary (its children). */
function workerPidsOf(primaryPid: number): number[] {
  return execFileSync('pgrep', ['-P', String(primaryPid)], { encoding: 'utf8' }).trim().split('\n').filter(Boolean).map(Number);
}
