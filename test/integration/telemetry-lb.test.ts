/**
 * The telemetry contract (design.md §6) proven on the BUILT mqtt-lb, running as users run it, in front of
 * two real mosquitto brokers with real clients: /metrics values follow the live state, /api/status has the
 * contract's shape, /healthz and /readyz, `mqtt-lb status`, and the `log.sessions` access log (issue 5).
 *
 * Clients connect from 127.0.0.23 (any 127/8 address is loopback on Linux) and use client IDs with a
 * recognisable prefix, so the test can prove that neither ever reaches /metrics.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt, { type MqttClient } from 'mqtt';
import mqttPacket from 'mqtt-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SERVER_STATES } from '../../src/balancer/server.js';
import { CHECK_RESULTS, REJECT_REASONS } from '../../src/telemetry/source.js';
import { startBrokers, whichBroker, type NamedBroker } from '../helpers/cluster.js';
import { CLI, sleep, startLb, stopAllLbs, type LbProcess } from '../helpers/lb.js';
import { lbYaml, type HealthSpec } from '../helpers/lb-config.js';
import { freePort } from '../helpers/mosquitto.js';
import { connectPacket } from '../helpers/raw-client.js';
import { synDroppingPort } from '../helpers/syn-dropping-port.js';
import { familyOf, find, parseExposition, value, type Exposition } from '../unit/telemetry-fixtures.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const VERSION = (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

/** Source address of every test client: must never appear in /metrics. */
const CLIENT_ADDRESS = '127.0.0.23';
/** Prefix of every client ID used here: must never appear in /metrics. */
const ID_PREFIX = 'tlm-private-id-';
/**
 * Bounded wait for anything the LB does asynchronously (closes; probes every 300 ms, fall 2 so that one
 * slow probe on a loaded machine does not flip a live server).
 */
const WAIT_MS = 8_000;

const HEALTH: HealthSpec = { type: 'mqtt', interval: '300ms', timeout: '250ms', rise: 1, fall: 2 };
const LIMITS = '  clientConnectTimeout: 2s\n';

// ---- HTTP and exposition helpers -----------------------------------------------------------------

async function get(url: string): Promise<{ status: number; type: string; body: string }> {
  const r = await fetch(url, { signal: AbortSignal.timeout(5000) });
  return { status: r.status, type: r.headers.get('content-type') ?? '', body: await r.text() };
}

async function scrape(admin: number): Promise<{ text: string; exp: Exposition }> {
  const r = await get(`http://127.0.0.1:${admin}/metrics`);
  expect(r.status).toBe(200);
  expect(r.type).toMatch(/^text\/plain; version=0\.0\.4/);
  return { text: r.body, exp: parseExposition(r.body) };
}

function sum(exp: Exposition, name: string, labels: Record<string, string> = {}): number {
  return find(exp, name, labels).reduce((a, s) => a + s.value, 0);
}

/** Polls `probe` until `done` holds (bounded); returns the last value, failing with it otherwise. */
async function waitFor<T>(what: string, probe: () => Promise<T>, done: (v: T) => boolean, timeoutMs = WAIT_MS): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: T = await probe();
  while (!done(last)) {
    if (Date.now() > until) throw new Error(`${what}: not reached within ${timeoutMs} ms (last: ${JSON.stringify(last)})`);
    await sleep(100);
    last = await probe();
  }
  return last;
}

// ---- clients from CLIENT_ADDRESS -----------------------------------------------------------------

const openClients = new Set<MqttClient>();

/** An MQTT.js client whose TCP connection comes from CLIENT_ADDRESS. No keepalive: no PINGREQ traffic. */
function connectFrom(port: number, clientId: string): Promise<MqttClient> {
  const client = new mqtt.MqttClient(() => net.connect({ host: '127.0.0.1', port, localAddress: CLIENT_ADDRESS }), {
    clientId,
    protocolVersion: 4,
    keepalive: 0,
    reconnectPeriod: 0,
    connectTimeout: 5000,
  });
  openClients.add(client);
  client.on('error', () => undefined); // a broker killed under it: the test looks at the LB, not the client
  return new Promise((resolve, reject) => {
    client.once('connect', () => resolve(client));
    client.once('close', () => reject(new Error(`${clientId}: closed before CONNACK`)));
  });
}

async function endClient(c: MqttClient): Promise<void> {
  openClients.delete(c);
  await c.endAsync(true);
}

/** A raw socket from CLIENT_ADDRESS that counts every byte it receives. */
class RawClient {
  readonly sock: net.Socket;
  received = Buffer.alloc(0);
  closed = false;
  private constructor(sock: net.Socket) {
    this.sock = sock;
    sock.on('data', (d: Buffer) => (this.received = Buffer.concat([this.received, d])));
    sock.on('error', () => undefined);
    sock.on('close', () => (this.closed = true));
  }
  static open(port: number): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port, localAddress: CLIENT_ADDRESS, noDelay: true });
      s.once('connect', () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }
  async waitReceived(bytes: number): Promise<void> {
    await waitFor(`${bytes} bytes received`, async () => this.received.length, (n) => n >= bytes || this.closed);
    expect(this.received.length).toBe(bytes);
  }
  async waitClosed(): Promise<void> {
    await waitFor('socket closed', async () => this.closed, (c) => c);
  }
  destroy(): void {
    this.sock.destroy();
  }
}

const subscribePacket = (topic: string): Buffer =>
  mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 0 }] } as mqttPacket.ISubscribePacket);
const publishPacket = (topic: string, payload: Buffer): Buffer =>
  mqttPacket.generate({ cmd: 'publish', topic, payload, qos: 0, retain: false, dup: false } as mqttPacket.IPublishPacket);
const DISCONNECT = Buffer.from([0xe0, 0x00]);
const CONNACK_ACCEPTED = [0x20, 0x02, 0x00, 0x00];
const SUBACK_LENGTH = 5;

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 15_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null;
      resolve({ code, stdout, stderr });
    });
  });
}

// ---------------------------------------------------------------------------------------------------

let brokers: NamedBroker[] = [];

beforeAll(async () => {
  brokers = await startBrokers(['b1', 'b2']);
});

afterAll(async () => {
  await Promise.all([...openClients].map((c) => c.endAsync(true).catch(() => undefined)));
  openClients.clear();
  await stopAllLbs();
  await Promise.all(brokers.map((b) => b.stop()));
});

describe('access log (log.sessions: true)', () => {
  let lb: LbProcess;
  let port: number;
  let admin: number;

  beforeAll(async () => {
    port = await freePort();
    admin = await freePort();
    lb = await startLb(lbYaml({ port, admin, servers: brokers, health: HEALTH, limits: LIMITS, log: '  level: info\n  sessions: true\n' }), {
      waitReady: `http://127.0.0.1:${admin}/readyz`,
    });
  });

  afterAll(async () => {
    await lb?.stop();
  });

  const closedLines = (clientId: string) => lb.logs.filter((l) => l.msg === 'session closed' && l.clientId === clientId);

  it('writes one info line per closed session: address, client ID, server, duration, bytes each way, reason', async () => {
    const clientId = `${ID_PREFIX}access-1`;
    const connect = connectPacket({ clientId, keepalive: 0 });
    const publish = publishPacket('tlm/access', Buffer.alloc(3000, 0x61));
    const c = await RawClient.open(port);
    const localPort = c.sock.localPort!;
    const openedAt = Date.now();
    c.sock.write(connect);
    await c.waitReceived(4);
    expect([...c.received]).toEqual(CONNACK_ACCEPTED);
    // Which server got it, from the LB's own view.
    const status = (await (await fetch(`http://127.0.0.1:${admin}/api/status`)).json()) as { pools: Array<{ servers: Array<{ name: string; sessions: number }> }> };
    const withSession = status.pools[0]!.servers.filter((s) => s.sessions === 1).map((s) => s.name);
    expect(withSession).toHaveLength(1);
    c.sock.write(publish);
    await sleep(1000);
    expect(closedLines(clientId)).toEqual([]); // nothing logged while the session lives
    c.sock.end(DISCONNECT);
    const heldMs = Date.now() - openedAt;
    const line = await lb.waitForLog((l) => l.msg === 'session closed' && l.clientId === clientId);
    await c.waitClosed();

    expect(line).toMatchObject({
      level: 30,
      listener: 'mqtt',
      client: `${CLIENT_ADDRESS}:${localPort}`,
      clientId,
      pool: 'brokers',
      server: withSession[0],
      bytesIn: connect.length + publish.length + DISCONNECT.length,
      bytesOut: CONNACK_ACCEPTED.length,
    });
    // The client sent DISCONNECT and FIN; the broker answers the DISCONNECT with its own FIN. The reason is
    // the first FIN the LB reads, and when both arrive in the same poll iteration either can be read first
    // (seen about 1 in 40 under load): both name a clean close, never an error.
    expect(['client_closed', 'server_closed']).toContain(line.reason);
    expect(typeof line.durationMs).toBe('number');
    // The LB accepted after our connect and logged after our close: about as long as we held it, less the
    // accept latency (generous slack for a loaded machine; an upper bound would be a speed assertion).
    expect(heldMs).toBeGreaterThanOrEqual(1000);
    expect(line.durationMs as number).toBeGreaterThanOrEqual(heldMs - 500);
    await sleep(200);
    expect(closedLines(clientId)).toHaveLength(1);
  });

  // An IPv6 audit: an IPv4 client of a dual-stack or IPv4-mapped listener was logged `::ffff:127.0.0.1`, beside
  // `127.0.0.1` on an IPv4 listener, where the per-source limits count both as one host.
  it('names an IPv4 client of an IPv6 socket (an IPv4-mapped bind) as the IPv4 address, in every line', async () => {
    const [mappedPort, mappedAdmin] = [await freePort(), await freePort()];
    const yaml = lbYaml({ port: mappedPort, admin: mappedAdmin, servers: brokers, health: HEALTH, limits: LIMITS, log: '  level: debug\n  sessions: true\n' });
    const mapped = await startLb(yaml.replace(`bind: 127.0.0.1:${mappedPort}`, `bind: "[::ffff:127.0.0.1]:${mappedPort}"`), { waitReady: `http://127.0.0.1:${mappedAdmin}/readyz` });
    try {
      const clientId = `${ID_PREFIX}mapped-1`;
      const c = await RawClient.open(mappedPort);
      const localPort = c.sock.localPort!;
      c.sock.write(connectPacket({ clientId, keepalive: 0 }));
      await c.waitReceived(4);
      c.sock.end(DISCONNECT);
      const closed = await mapped.waitForLog((l) => l.msg === 'session closed' && l.clientId === clientId);
      await c.waitClosed();
      expect(closed.client).toBe(`${CLIENT_ADDRESS}:${localPort}`);
      expect(mapped.logs.find((l) => l.msg === 'session routed' && l.clientId === clientId)).toMatchObject({ client: CLIENT_ADDRESS, port: localPort });
      // A rejected one too: a PUBLISH first, not a CONNECT [MQTT-3.1.0-1].
      const r = await RawClient.open(mappedPort);
      r.sock.write(Buffer.from([0x30, 0x00]));
      await r.waitClosed();
      expect((await mapped.waitForLog((l) => l.msg === 'connect rejected')).client).toBe(CLIENT_ADDRESS);
    } finally {
      await mapped.stop();
    }
  });

  it('logs at most 256 bytes of a long client ID, marked with …', async () => {
    const clientId = `${ID_PREFIX}long-${'x'.repeat(2000)}`;
    const c = await RawClient.open(port);
    c.sock.write(connectPacket({ clientId, keepalive: 0 }));
    await c.waitReceived(4);
    c.sock.end(DISCONNECT);
    const line = await lb.waitForLog((l) => l.msg === 'session closed' && typeof l.clientId === 'string' && l.clientId.startsWith(`${ID_PREFIX}long-`));
    await c.waitClosed();
    expect(line.clientId).toBe(`${clientId.slice(0, 256)}…`);
  });

  it('cuts a long client ID before a character, never inside one', async () => {
    // 254 ASCII bytes, then 3-byte characters: byte 256 falls inside the first of them (an audit saw U+FFFD there).
    const head = `${ID_PREFIX}cut-`;
    const clientId = `${head}${'y'.repeat(254 - head.length)}${'日'.repeat(20)}`;
    const c = await RawClient.open(port);
    c.sock.write(connectPacket({ clientId, keepalive: 0 }));
    await c.waitReceived(4);
    c.sock.end(DISCONNECT);
    const line = await lb.waitForLog((l) => l.msg === 'session closed' && typeof l.clientId === 'string' && l.clientId.startsWith(head));
    await c.waitClosed();
    expect(line.clientId).toBe(`${clientId.slice(0, 254)}…`);
  });

  it('gives the server as the closer when the broker ends the session', async () => {
    const clientId = `${ID_PREFIX}access-2`;
    const connect = connectPacket({ clientId, keepalive: 0 });
    const c = await RawClient.open(port);
    c.sock.write(connect);
    await c.waitReceived(4);
    // A second CONNECT is a protocol violation: the broker closes the connection [MQTT-3.1.0-2].
    c.sock.write(connect);
    await c.waitClosed();
    const line = await lb.waitForLog((l) => l.msg === 'session closed' && l.clientId === clientId);
    expect(line).toMatchObject({ level: 30, bytesIn: 2 * connect.length, bytesOut: 4, reason: 'server_closed' });
    expect(['b1', 'b2']).toContain(line.server);
    await sleep(200);
    expect(closedLines(clientId)).toHaveLength(1);
  });

  it('writes no line for a client that left while its server connect hung: it never reached a server', async () => {
    const cleanups: Array<() => Promise<void> | void> = [];
    try {
      const hung = await synDroppingPort(cleanups);
      const hungPort = await freePort();
      const hungAdmin = await freePort();
      const dialing = await startLb(
        lbYaml({ port: hungPort, admin: hungAdmin, servers: [{ name: 'hung', port: hung }], health: { type: 'none' }, pool: '    serverConnectTimeout: 5s\n', limits: LIMITS, log: '  level: info\n  sessions: true\n' }),
        { waitReady: `http://127.0.0.1:${hungAdmin}/readyz` },
      );
      cleanups.push(async () => {
        await dialing.stop();
      });
      const clientId = `${ID_PREFIX}left-while-dialing`;
      const c = await RawClient.open(hungPort);
      c.sock.write(connectPacket({ clientId, keepalive: 0 }));
      await sleep(500); // the LB is dialling the hung server (routing takes milliseconds; margin for a loaded machine)
      c.sock.resetAndDestroy();
      await waitFor('the LB to have no connection', async () => value((await scrape(hungAdmin)).exp, 'mqtt_lb_connections_active', { listener: 'mqtt' }) ?? -1, (n) => n === 0);
      await sleep(200);
      expect(dialing.logs.filter((l) => l.msg === 'session closed')).toEqual([]);
      expect(sum((await scrape(hungAdmin)).exp, 'mqtt_lb_connections_total', { outcome: 'proxied' })).toBe(0);
    } finally {
      while (cleanups.length > 0) await cleanups.pop()!();
    }
  });

  it('logs the sessions a stop closes at the end of the drain too, before `stopped`', async () => {
    const stopPort = await freePort();
    const stopAdmin = await freePort();
    const stopping = await startLb(
      lbYaml({ port: stopPort, admin: stopAdmin, servers: brokers, health: HEALTH, limits: `${LIMITS}  drainTimeout: 500ms\n`, log: '  level: info\n  sessions: true\n' }),
      { waitReady: `http://127.0.0.1:${stopAdmin}/readyz` },
    );
    const ids = [0, 1, 2].map((i) => `${ID_PREFIX}at-stop-${i}`);
    const held: RawClient[] = [];
    for (const clientId of ids) {
      const c = await RawClient.open(stopPort);
      c.sock.write(connectPacket({ clientId, keepalive: 0 }));
      await c.waitReceived(4);
      held.push(c);
    }
    expect(await stopping.stop()).toBe(0);
    const closed = stopping.logs.filter((l) => l.msg === 'session closed');
    expect(closed.map((l) => l.clientId).sort()).toEqual(ids);
    expect(closed.every((l) => l.reason === 'shutdown')).toBe(true);
    const stoppedAt = stopping.logs.findIndex((l) => l.msg === 'stopped');
    expect(stoppedAt).toBeGreaterThan(Math.max(...closed.map((l) => stopping.logs.indexOf(l))));
    for (const c of held) await c.waitClosed();
  });
});

/** `count` sessions, `parallel` at a time: CONNECT, CONNACK, DISCONNECT, closed (each bounded by waitFor). */
async function churnSessions(port: number, count: number, idPrefix: string, parallel = 50): Promise<void> {
  for (let i = 0; i < count; i += parallel) {
    await Promise.all(
      Array.from({ length: Math.min(parallel, count - i) }, async (_, k) => {
        const c = await RawClient.open(port);
        c.sock.write(connectPacket({ clientId: `${idPrefix}${i + k}`, keepalive: 0 }));
        await c.waitReceived(4);
        c.sock.end(DISCONNECT);
        await c.waitClosed();
      }),
    );
  }
}

describe('a log reader that stops reading (stdout not drained)', () => {
  // 1,500 access-log lines (~330 bytes each) are ~500 KB: far more than the pipe (64 KiB), what the test's
  // reader buffers before it stops reading, and log.bufferBytes (64 KiB) hold. With synchronous writes the
  // first line that found the pipe full stopped the whole process.
  const SESSIONS = 1500;

  for (const workers of [1, 2]) {
    it(`stalls nothing: sessions go on, lines past log.bufferBytes are dropped, counted and reported when it reads again (workers: ${workers})`, async () => {
      const port = await freePort();
      const admin = await freePort();
      const lb = await startLb(
        lbYaml({ port, admin, servers: brokers, health: HEALTH, limits: LIMITS, log: '  level: info\n  sessions: true\n  bufferBytes: 65536\n', extra: `workers: ${workers}\n` }),
        { waitReady: `http://127.0.0.1:${admin}/readyz` },
      );
      try {
        lb.proc.stdout!.pause();
        await churnSessions(port, SESSIONS, `${ID_PREFIX}stalled-${workers}-`);
        await waitFor('dropped lines counted', async () => sum((await scrape(admin)).exp, 'mqtt_lb_log_lines_dropped_total'), (n) => n > 0);
        lb.proc.stdout!.resume();
        const reports = (): Array<Record<string, unknown>> => lb.logs.filter((l) => l.code === 'MQLB_LOG_LINES_DROPPED');
        await lb.waitForLog((l) => l.code === 'MQLB_LOG_LINES_DROPPED');
        const closed = (): number => lb.logs.filter((l) => l.msg === 'session closed' && String(l.clientId).startsWith(`${ID_PREFIX}stalled-`)).length;
        const reported = (): number => reports().reduce((a, l) => a + (l.dropped as number), 0);
        // Every session is either in the log or among the dropped, once what was queued has been written.
        await waitFor('every session logged or dropped', async () => closed() + reported(), (n) => n === SESSIONS);
        // The metric agrees (with workers, their counts reach the primary within a second).
        await waitFor('metric = reported', async () => sum((await scrape(admin)).exp, 'mqtt_lb_log_lines_dropped_total'), (n) => n === reported());
        expect(reports().every((l) => l.level === 40 && l.bufferBytes === 65536)).toBe(true);
        // Whole lines only, even with several processes writing to one pipe.
        expect(lb.logs.filter((l) => l.level === undefined)).toEqual([]);
      } finally {
        lb.proc.stdout!.resume();
        await lb.stop();
      }
    }, 60_000);
  }

  it('does not hold a stop: with a reader that never reads again the balancer exits within the flush bound (2 s)', async () => {
    const port = await freePort();
    const admin = await freePort();
    const lb = await startLb(lbYaml({ port, admin, servers: brokers, health: HEALTH, limits: `${LIMITS}  drainTimeout: 0s\n`, log: '  level: info\n  sessions: true\n  bufferBytes: 65536\n' }), {
      waitReady: `http://127.0.0.1:${admin}/readyz`,
    });
    try {
      lb.proc.stdout!.pause();
      await churnSessions(port, SESSIONS, `${ID_PREFIX}stuck-`);
      // Lines are queued behind the stuck reader (some already dropped): the flush at the stop has work to wait for.
      await waitFor('dropped lines counted', async () => sum((await scrape(admin)).exp, 'mqtt_lb_log_lines_dropped_total'), (n) => n > 0);
      lb.proc.kill('SIGTERM');
      const code = await Promise.race([lb.exited, sleep(10_000).then(() => 'still running')]);
      // The flush waits at most 2 s (log-stream.ts FLUSH_WAIT_MS); 10 s leaves the rest of the stop slack.
      expect(code).toBe(0);
    } finally {
      lb.proc.stdout!.resume();
      await lb.stop();
    }
  }, 60_000);
});

describe('admin answers at a bounded share of the event loop', () => {
  /** An admin connection that counts the answers it reads. */
  async function adminConnection(admin: number): Promise<{ sock: net.Socket; answered: () => number; closed: () => boolean }> {
    const sock = new net.Socket();
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.connect(admin, '127.0.0.1', () => resolve());
    });
    sock.on('error', () => undefined);
    let answered = 0;
    let closed = false;
    sock.on('data', (d: Buffer) => (answered += d.toString('latin1').split('HTTP/1.1 200').length - 1));
    sock.on('close', () => (closed = true));
    return { sock, answered: () => answered, closed: () => closed };
  }
  const request = (path: string): string => `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`;

  it('pipelined floods of GET /metrics and /api/status mark no server down and keep sessions coming', async () => {
    // Before: every pipelined request was rendered back to back (~1.5 ms each here) and an answer held for each:
    // stalls of seconds in which probes timed out (timeout 250 ms, fall 2) and servers went down.
    const port = await freePort();
    const admin = await freePort();
    const lb = await startLb(lbYaml({ port, admin, servers: brokers, health: HEALTH, limits: LIMITS }), { waitReady: `http://127.0.0.1:${admin}/readyz` });
    const conns: Array<Awaited<ReturnType<typeof adminConnection>>> = [];
    try {
      await waitFor('both servers up', async () => (await scrape(admin)).exp, (e) => sum(e, 'mqtt_lb_server_up') === 2);
      const downs = (): number => lb.logs.filter((l) => l.msg === 'server state changed' && l.to === 'down').length;
      // 3,000 on one connection: closed past 16 in progress.
      const deep = await adminConnection(admin);
      conns.push(deep);
      deep.sock.write(request('/metrics').repeat(1500) + request('/api/status').repeat(1500));
      await waitFor('deep pipeline closed', async () => deep.closed(), (c) => c);
      expect(deep.answered()).toBeLessThanOrEqual(16);
      // 100 connections × 16 (within the cap): 1,600 answers, built a few times and shared.
      for (let i = 0; i < 100; i++) conns.push(await adminConnection(admin));
      for (const c of conns.slice(1)) c.sock.write(request('/metrics').repeat(8) + request('/api/status').repeat(8));
      // Sessions keep being set up meanwhile.
      for (let i = 0; i < 5; i++) {
        const c = await RawClient.open(port);
        c.sock.write(connectPacket({ clientId: `${ID_PREFIX}flood-${i}`, keepalive: 0 }));
        await c.waitReceived(4);
        c.sock.end(DISCONNECT);
        await c.waitClosed();
        await sleep(200);
      }
      await waitFor('every pipelined request answered', async () => conns.slice(1).reduce((a, c) => a + c.answered(), 0), (n) => n === 1600, 30_000);
      expect(downs()).toBe(0);
      await waitFor('proxied count', async () => sum((await scrape(admin)).exp, 'mqtt_lb_connections_total', { outcome: 'proxied' }), (n) => n >= 5);
    } finally {
      for (const c of conns) c.sock.destroy();
      await lb.stop();
    }
  }, 60_000);
});

describe('metrics, status API, probes and `mqtt-lb status` on a running LB', () => {
  let lb: LbProcess;
  let port: number;
  let admin: number;
  let adminUrl: string;
  const clients: Array<{ id: string; client: MqttClient; broker: string }> = [];

  beforeAll(async () => {
    port = await freePort();
    admin = await freePort();
    adminUrl = `http://127.0.0.1:${admin}`;
    // No `sessions:` under log: the access log must be off by default.
    lb = await startLb(lbYaml({ port, admin, servers: brokers, health: HEALTH, limits: LIMITS }), { waitReady: `${adminUrl}/readyz` });
    // readyz needs one server up: wait for both, so that every client can land on either.
    await waitFor('both servers up', async () => (await scrape(admin)).exp, (e) => sum(e, 'mqtt_lb_server_up') === 2);
  });

  afterAll(async () => {
    await lb?.stop();
  });

  it('serves a well-formed exposition with every contract metric, typed as the contract says', async () => {
    const { exp } = await scrape(admin);
    const contract: Record<string, string> = {
      mqtt_lb_connections_active: 'gauge',
      mqtt_lb_connections_total: 'counter',
      mqtt_lb_connect_rejected_total: 'counter',
      mqtt_lb_server_up: 'gauge',
      mqtt_lb_server_sessions_active: 'gauge',
      mqtt_lb_server_bytes_total: 'counter',
      mqtt_lb_health_checks_total: 'counter',
      mqtt_lb_health_check_duration_seconds: 'histogram',
      mqtt_lb_server_connect_duration_seconds: 'histogram',
      mqtt_lb_failover_state: 'gauge',
      mqtt_lb_failover_transitions_total: 'counter',
      mqtt_lb_server_state: 'gauge',
      mqtt_lb_config_reloads_total: 'counter',
      mqtt_lb_build_info: 'gauge',
      mqtt_lb_failover_adverts_dropped_total: 'counter',
      mqtt_lb_event_loop_lag_seconds: 'gauge',
    };
    for (const [name, type] of Object.entries(contract)) {
      expect(exp.types.get(name), name).toBe(type);
      expect(exp.help.get(name), name).toBeTruthy();
    }
    // Every sample belongs to a declared family (prom-client's defaults included).
    for (const s of exp.samples) expect(exp.types.has(familyOf(s.name, exp.types)), s.name).toBe(true);
    expect(value(exp, 'mqtt_lb_build_info', { version: VERSION })).toBe(1);
    expect(find(exp, 'mqtt_lb_build_info')).toHaveLength(1);
    expect(find(exp, 'process_cpu_seconds_total').length + find(exp, 'process_cpu_user_seconds_total').length).toBeGreaterThan(0);
    expect(find(exp, 'nodejs_heap_size_used_bytes')).toHaveLength(1);

    // Label sets: every outcome, every reason and every probe result from the start (rate() sees the first).
    for (const outcome of ['proxied', 'rejected', 'failed']) expect(find(exp, 'mqtt_lb_connections_total', { listener: 'mqtt', outcome }), outcome).toHaveLength(1);
    for (const reason of REJECT_REASONS) expect(find(exp, 'mqtt_lb_connect_rejected_total', { listener: 'mqtt', reason }), reason).toHaveLength(1);
    for (const server of ['b1', 'b2']) {
      for (const result of CHECK_RESULTS) expect(find(exp, 'mqtt_lb_health_checks_total', { pool: 'brokers', server, result })).toHaveLength(1);
      for (const state of SERVER_STATES) expect(find(exp, 'mqtt_lb_server_state', { pool: 'brokers', server, state })).toHaveLength(1);
      for (const direction of ['in', 'out']) expect(find(exp, 'mqtt_lb_server_bytes_total', { pool: 'brokers', server, direction })).toHaveLength(1);
      expect(value(exp, 'mqtt_lb_server_up', { pool: 'brokers', server })).toBe(1);
      expect(value(exp, 'mqtt_lb_server_state', { pool: 'brokers', server, state: 'up' })).toBe(1);
    }
    // Failover is off: its state gauge has no sample rather than a misleading one.
    expect(find(exp, 'mqtt_lb_failover_state')).toEqual([]);
    expect(value(exp, 'mqtt_lb_config_reloads_total', { result: 'ok' })).toBe(0);
  });

  it('counts health checks by result, consistently with their duration histogram', async () => {
    const before = (await scrape(admin)).exp;
    const after = await waitFor(
      'more probes',
      async () => (await scrape(admin)).exp,
      (e) => ['b1', 'b2'].every((server) => value(e, 'mqtt_lb_health_checks_total', { server, result: 'ok' }) >= value(before, 'mqtt_lb_health_checks_total', { server, result: 'ok' }) + 2),
    );
    for (const server of ['b1', 'b2']) {
      const total = sum(after, 'mqtt_lb_health_checks_total', { pool: 'brokers', server });
      // Live brokers answer: nothing is refused (a probe may time out on a loaded machine, that is all).
      expect(value(after, 'mqtt_lb_health_checks_total', { server, result: 'refused' })).toBe(0);
      expect(value(after, 'mqtt_lb_health_checks_total', { server, result: 'bad_connack' })).toBe(0);
      expect(value(after, 'mqtt_lb_health_check_duration_seconds_count', { pool: 'brokers', server })).toBe(total);
      expect(value(after, 'mqtt_lb_health_check_duration_seconds_bucket', { pool: 'brokers', server, le: '+Inf' })).toBe(total);
    }
  });

  it('follows connections: 5 clients → 5 active, per-server sessions sum to 5; 2 leave → 3; proxied grows by exactly 5', async () => {
    const before = (await scrape(admin)).exp;
    const proxiedBefore = value(before, 'mqtt_lb_connections_total', { listener: 'mqtt', outcome: 'proxied' });
    expect(value(before, 'mqtt_lb_connections_active', { listener: 'mqtt' })).toBe(0);
    expect(sum(before, 'mqtt_lb_server_sessions_active')).toBe(0);

    for (let i = 0; i < 5; i++) {
      const id = `${ID_PREFIX}gauge-${i}`;
      const client = await connectFrom(port, id);
      clients.push({ id, client, broker: await whichBroker(client) });
    }
    const perBroker = (name: string): number => clients.filter((c) => c.broker === name).length;

    let exp = (await scrape(admin)).exp;
    expect(value(exp, 'mqtt_lb_connections_active', { listener: 'mqtt' })).toBe(5);
    expect(sum(exp, 'mqtt_lb_server_sessions_active', { pool: 'brokers' })).toBe(5);
    for (const server of ['b1', 'b2']) expect(value(exp, 'mqtt_lb_server_sessions_active', { pool: 'brokers', server }), server).toBe(perBroker(server));
    expect(value(exp, 'mqtt_lb_connections_total', { listener: 'mqtt', outcome: 'proxied' })).toBe(proxiedBefore + 5);
    expect(value(exp, 'mqtt_lb_connections_total', { listener: 'mqtt', outcome: 'rejected' })).toBe(0);
    expect(value(exp, 'mqtt_lb_connections_total', { listener: 'mqtt', outcome: 'failed' })).toBe(0);
    // One server connect observed per proxied session.
    expect(sum(exp, 'mqtt_lb_server_connect_duration_seconds_count')).toBe(proxiedBefore + 5);

    const leaving = clients.splice(0, 2);
    for (const c of leaving) await endClient(c.client);
    exp = await waitFor('3 active', async () => (await scrape(admin)).exp, (e) => value(e, 'mqtt_lb_connections_active', { listener: 'mqtt' }) === 3);
    expect(sum(exp, 'mqtt_lb_server_sessions_active', { pool: 'brokers' })).toBe(3);
    for (const server of ['b1', 'b2']) expect(value(exp, 'mqtt_lb_server_sessions_active', { pool: 'brokers', server }), server).toBe(perBroker(server));
    // Closing sessions is not connecting: proxied does not move.
    expect(value(exp, 'mqtt_lb_connections_total', { listener: 'mqtt', outcome: 'proxied' })).toBe(proxiedBefore + 5);

    // /api/status tells the same story.
    const status = (await (await fetch(`${adminUrl}/api/status`)).json()) as StatusDoc;
    expect(status.listeners[0]!.sessions).toBe(3);
    for (const s of status.pools[0]!.servers) expect(s.sessions, s.name).toBe(perBroker(s.name));
  });

  it('counts bytes per server and direction exactly, live sessions included, and keeps them after the close', async () => {
    const before = (await scrape(admin)).exp;
    const bytes = (e: Exposition, server: string, direction: 'in' | 'out'): number => value(e, 'mqtt_lb_server_bytes_total', { pool: 'brokers', server, direction });

    const topic = 'tlm/bytes';
    const connect = connectPacket({ clientId: `${ID_PREFIX}bytes`, keepalive: 0 });
    const subscribe = subscribePacket(topic);
    const publish = publishPacket(topic, Buffer.alloc(10_000, 0x5a));
    const c = await RawClient.open(port);
    try {
      c.sock.write(connect);
      await c.waitReceived(4);
      c.sock.write(subscribe);
      await c.waitReceived(4 + SUBACK_LENGTH);
      // QoS 0 to our own subscription: the broker sends the very same PUBLISH back.
      c.sock.write(publish);
      await c.waitReceived(4 + SUBACK_LENGTH + publish.length);

      const sentIn = connect.length + subscribe.length + publish.length;
      const sentOut = 4 + SUBACK_LENGTH + publish.length;
      const live = (await scrape(admin)).exp;
      const moved = ['b1', 'b2'].filter((s) => bytes(live, s, 'in') !== bytes(before, s, 'in'));
      expect(moved).toHaveLength(1); // the session's server, and only it
      const server = moved[0]!;
      const other = server === 'b1' ? 'b2' : 'b1';
      expect(bytes(live, server, 'in') - bytes(before, server, 'in')).toBe(sentIn);
      expect(bytes(live, server, 'out') - bytes(before, server, 'out')).toBe(sentOut);
      expect(bytes(live, other, 'in')).toBe(bytes(before, other, 'in'));
      expect(bytes(live, other, 'out')).toBe(bytes(before, other, 'out'));

      c.sock.end(DISCONNECT);
      await c.waitClosed();
      const after = await waitFor('session gone', async () => (await scrape(admin)).exp, (e) => value(e, 'mqtt_lb_connections_active', { listener: 'mqtt' }) === 3);
      // The closed session's bytes stay in the counter (plus the DISCONNECT): counters never go back.
      expect(bytes(after, server, 'in') - bytes(before, server, 'in')).toBe(sentIn + DISCONNECT.length);
      expect(bytes(after, server, 'out') - bytes(before, server, 'out')).toBe(sentOut);
    } finally {
      c.destroy();
    }
  });

  it('serves /api/status with exactly the contract shape, /healthz 200 and /readyz 200', async () => {
    const r = await get(`${adminUrl}/api/status`);
    expect(r.status).toBe(200);
    expect(r.type).toMatch(/^application\/json/);
    const s = JSON.parse(r.body) as StatusDoc;
    expectStatusShape(s);
    expect(s.version).toBe(VERSION);
    expect(s.failover).toEqual({ enabled: false });
    expect(s.listeners).toEqual([{ name: 'mqtt', bind: `127.0.0.1:${port}`, sessions: 3, tls: false }]);
    expect(s.pools.map((p) => [p.name, p.balance])).toEqual([['brokers', 'client-id-hash']]);
    const servers = s.pools[0]!.servers;
    expect(servers.map((x) => x.name)).toEqual(['b1', 'b2']);
    for (const [i, x] of servers.entries()) {
      expect(x).toMatchObject({ address: `127.0.0.1:${brokers[i]!.port}`, state: 'up', admin: 'ready', weight: 1, backup: false });
      expect(x.lastCheck).not.toBeNull();
      expect(x.lastCheck!.result).toBe('ok');
      expect(x.lastCheck!.ageMs).toBeLessThan(WAIT_MS); // probed every 300 ms
    }
    await sleep(50);
    const later = JSON.parse((await get(`${adminUrl}/api/status`)).body) as StatusDoc;
    expect(later.uptimeSeconds).toBeGreaterThan(s.uptimeSeconds);

    const healthz = await get(`${adminUrl}/healthz`);
    expect(healthz.status).toBe(200);
    const readyz = await get(`${adminUrl}/readyz`);
    expect(readyz.status).toBe(200);
    expect((await scrape(admin)).exp.samples.find((x) => x.name === 'mqtt_lb_ready')?.value).toBe(1);
  });

  it('`mqtt-lb status --admin URL` prints listeners, pools, servers with state and sessions', async () => {
    const r = await runCli(['status', '--admin', adminUrl]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines[0]).toMatch(new RegExp(`^mqtt-lb ${VERSION.replace(/\./g, '\\.')}  up \\d+s  role standalone \\(failover off\\)  ready$`));
    expect(lines).toContain('LISTENERS');
    expect(lines.some((l) => new RegExp(`^mqtt\\s+127\\.0\\.0\\.1:${port}\\s+no\\s+3$`).test(l))).toBe(true);
    expect(lines).toContain('POOL brokers  client-id-hash  2/2 up');
    for (const [i, b] of brokers.entries()) {
      const sessions = clients.filter((c) => c.broker === b.name).length;
      const row = lines.find((l) => l.startsWith(`${b.name} `));
      expect(row, b.name).toBeDefined();
      expect(row!.split(/\s{2,}/).slice(0, 6)).toEqual([b.name, `127.0.0.1:${brokers[i]!.port}`, 'up', 'ready', '1', String(sessions)]);
      expect(row).toMatch(/ok \d+ms, [\d.]+m?s ago$/);
    }
  });

  it('`mqtt-lb status` against a closed port exits non-zero with a clear message', async () => {
    const closed = await freePort();
    const r = await runCli(['status', '--admin', `http://127.0.0.1:${closed}`]);
    expect(r.code).not.toBe(0);
    expect(r.code).not.toBeNull(); // exited, not killed by the timeout
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain(`cannot reach the mqtt-lb admin server at http://127.0.0.1:${closed}/api/status`);
    expect(r.stderr).toContain('ECONNREFUSED');
    expect(r.stderr.split('\n').filter(Boolean)).toHaveLength(1); // one line, no stack trace
    // An address given: no hint about giving one.
    expect(r.stderr).not.toContain('give `--config FILE`');
  });

  // A new user's audit: `mqtt-lb status` at the default address, the balancer on another admin.bind.
  it('`mqtt-lb status` at the default address that nothing answers says how to give another', async () => {
    const r = await runCli(['status']);
    // Nothing of the tests listens on 9883; should anything else, it answers or refuses in its own way.
    if (r.stderr.includes('cannot reach the mqtt-lb admin server at http://127.0.0.1:9883/api/status: connect ECONNREFUSED')) {
      expect(r.stderr).toContain('(is it running? with another admin.bind, give `--config FILE` or `--admin URL`)');
      expect(r.code).toBe(2);
    } else {
      expect(r.code).not.toBeNull();
    }
  });

  it('counts a malformed first packet and a non-CONNECT first packet as rejections, by reason', async () => {
    const before = (await scrape(admin)).exp;
    const rejected = (e: Exposition, reason: string): number => value(e, 'mqtt_lb_connect_rejected_total', { listener: 'mqtt', reason });
    const outcome = (e: Exposition, o: string): number => value(e, 'mqtt_lb_connections_total', { listener: 'mqtt', outcome: o });

    for (const first of [Buffer.from('1080808080010004', 'hex') /* 5-byte remaining length [MQTT-2.2.3] */, Buffer.from([0xc0, 0x00]) /* PINGREQ first [MQTT-3.1.0-1] */]) {
      const c = await RawClient.open(port);
      c.sock.write(first);
      await c.waitClosed();
      expect(c.received.length).toBe(0); // closed without an answer
    }
    const after = await waitFor('3 active again', async () => (await scrape(admin)).exp, (e) => value(e, 'mqtt_lb_connections_active', { listener: 'mqtt' }) === 3);
    expect(rejected(after, 'malformed') - rejected(before, 'malformed')).toBe(1);
    expect(rejected(after, 'not_connect') - rejected(before, 'not_connect')).toBe(1);
    expect(sum(after, 'mqtt_lb_connect_rejected_total') - sum(before, 'mqtt_lb_connect_rejected_total')).toBe(2);
    expect(outcome(after, 'rejected') - outcome(before, 'rejected')).toBe(2);
    expect(outcome(after, 'proxied')).toBe(outcome(before, 'proxied'));
    // Neither reached a server.
    expect(sum(after, 'mqtt_lb_server_connect_duration_seconds_count')).toBe(sum(before, 'mqtt_lb_server_connect_duration_seconds_count'));
  });

  it('counts config reloads by result (SIGHUP), and a rejected file keeps the running config', async () => {
    const reloads = (e: Exposition, result: string): number => value(e, 'mqtt_lb_config_reloads_total', { result });
    const before = (await scrape(admin)).exp;
    const good = readFileSync(lb.configFile, 'utf8');
    lb.reload();
    await waitFor('reload ok counted', async () => (await scrape(admin)).exp, (e) => reloads(e, 'ok') === reloads(before, 'ok') + 1);
    lb.writeConfig(good.replace('balance: client-id-hash', 'balance: no-such-strategy'));
    try {
      lb.reload();
      const after = await waitFor('reload error counted', async () => (await scrape(admin)).exp, (e) => reloads(e, 'error') === reloads(before, 'error') + 1);
      expect(reloads(after, 'ok')).toBe(reloads(before, 'ok') + 1);
    } finally {
      lb.writeConfig(good);
    }
    const status = JSON.parse((await get(`${adminUrl}/api/status`)).body) as StatusDoc;
    expect(status.pools[0]!.balance).toBe('client-id-hash');
    expect(status.listeners[0]!.sessions).toBe(3); // a reload never drops a session
    expect((await get(`${adminUrl}/readyz`)).status).toBe(200);
  });

  it('never exposes a client ID or a client address in /metrics', async () => {
    const { text } = await scrape(admin);
    expect(text).not.toContain(ID_PREFIX);
    expect(text).not.toContain(CLIENT_ADDRESS);
    expect(text).not.toMatch(/127\.0\.0\.\d+/); // nor any address at all: labels are names
    for (const c of clients) expect(text).not.toContain(c.id);
  });

  it('shows a killed server as down (up 0, state down), counts its failed probes, and stays ready with one left', async () => {
    for (const c of clients.splice(0)) await endClient(c.client);
    const before = (await scrape(admin)).exp;
    const b2 = brokers.find((b) => b.name === 'b2')!;
    b2.kill('SIGKILL');

    const exp = await waitFor('b2 down', async () => (await scrape(admin)).exp, (e) => value(e, 'mqtt_lb_server_up', { server: 'b2' }) === 0);
    expect(value(exp, 'mqtt_lb_server_state', { pool: 'brokers', server: 'b2', state: 'down' })).toBe(1);
    for (const state of SERVER_STATES.filter((x) => x !== 'down')) expect(value(exp, 'mqtt_lb_server_state', { pool: 'brokers', server: 'b2', state }), state).toBe(0);
    expect(value(exp, 'mqtt_lb_server_up', { server: 'b1' })).toBe(1);
    const refused = (e: Exposition): number => value(e, 'mqtt_lb_health_checks_total', { server: 'b2', result: 'refused' });
    expect(refused(exp)).toBeGreaterThan(refused(before));
    expect(refused(before)).toBe(0);

    const status = JSON.parse((await get(`${adminUrl}/api/status`)).body) as StatusDoc;
    expectStatusShape(status);
    const s2 = status.pools[0]!.servers.find((x) => x.name === 'b2')!;
    expect(s2.state).toBe('down');
    expect(s2.lastCheck?.result).toBe('refused');
    expect((await get(`${adminUrl}/readyz`)).status).toBe(200);

    const cli = await runCli(['status', '--admin', adminUrl]);
    expect(cli.code).toBe(0);
    expect(cli.stdout).toContain('POOL brokers  client-id-hash  1/2 up');
    expect(cli.stdout).toMatch(/^b2\s{2,}127\.0\.0\.1:\d+\s{2,}down\s{2,}ready\s/m);
  });

  it('with every server down: /readyz 503 with the reason, and a CONNECT is answered "server unavailable" and counted', async () => {
    // A frozen broker (SIGSTOP): the kernel still accepts TCP, but no CONNACK comes: probes time out.
    const b1 = brokers.find((b) => b.name === 'b1')!;
    const timeouts = (e: Exposition): number => value(e, 'mqtt_lb_health_checks_total', { server: 'b1', result: 'timeout' });
    const t0 = timeouts((await scrape(admin)).exp);
    b1.pause();
    const down = await waitFor('b1 down', async () => (await scrape(admin)).exp, (e) => value(e, 'mqtt_lb_server_up', { server: 'b1' }) === 0);
    expect(timeouts(down) - t0).toBeGreaterThanOrEqual(2); // fall: 2
    expect(value(down, 'mqtt_lb_server_state', { pool: 'brokers', server: 'b1', state: 'down' })).toBe(1);
    const statusB1 = (JSON.parse((await get(`${adminUrl}/api/status`)).body) as StatusDoc).pools[0]!.servers.find((x) => x.name === 'b1')!;
    expect(statusB1.lastCheck?.result).toBe('timeout');

    const readyz = await get(`${adminUrl}/readyz`);
    expect(readyz.status).toBe(503);
    expect(readyz.body.trim()).toBe('pool brokers has no server up');
    expect((await get(`${adminUrl}/healthz`)).status).toBe(200); // alive all the same

    const before = (await scrape(admin)).exp;
    expect(value(before, 'mqtt_lb_ready')).toBe(0);
    const c = await RawClient.open(port);
    c.sock.write(connectPacket({ clientId: `${ID_PREFIX}nobody-home` }));
    await c.waitClosed();
    expect([...c.received]).toEqual([0x20, 0x02, 0x00, 0x03]); // CONNACK 3 server unavailable (3.1.1)
    const after = await waitFor('0 active', async () => (await scrape(admin)).exp, (e) => value(e, 'mqtt_lb_connections_active', { listener: 'mqtt' }) === 0);
    const d = (name: string, labels: Record<string, string>): number => value(after, name, labels) - value(before, name, labels);
    expect(d('mqtt_lb_connect_rejected_total', { listener: 'mqtt', reason: 'no_server' })).toBe(1);
    expect(d('mqtt_lb_connections_total', { listener: 'mqtt', outcome: 'rejected' })).toBe(1);
    expect(d('mqtt_lb_connections_total', { listener: 'mqtt', outcome: 'proxied' })).toBe(0);
    expect(d('mqtt_lb_connect_rejected_total', { listener: 'mqtt', reason: 'server_connect_failed' })).toBe(0);
  });

  it('writes no access-log line when log.sessions is not set', () => {
    // Sessions were opened and closed above (MQTT.js clients, raw clients, brokers killed).
    expect(lb.logs.some((l) => l.msg === 'server state changed' || l.msg === 'listener started')).toBe(true);
    expect(lb.logs.filter((l) => l.msg === 'session closed')).toEqual([]);
  });
});

// ---- /api/status shape (design.md §6) ------------------------------------------------------------

interface StatusDoc {
  version: string;
  uptimeSeconds: number;
  failover: { enabled: boolean };
  listeners: Array<{ name: string; bind: string; sessions: number; tls: boolean }>;
  pools: Array<{
    name: string;
    balance: string;
    servers: Array<{
      name: string;
      address: string;
      state: string;
      admin: string;
      weight: number;
      backup: boolean;
      sessions: number;
      lastCheck: { result: string; ageMs: number; durationMs: number } | null;
    }>;
  }>;
}

const count = (v: unknown): boolean => Number.isInteger(v) && (v as number) >= 0;

function expectStatusShape(s: StatusDoc): void {
  expect(Object.keys(s)).toEqual(['version', 'uptimeSeconds', 'failover', 'listeners', 'pools']);
  expect(typeof s.version).toBe('string');
  expect(typeof s.uptimeSeconds === 'number' && Number.isFinite(s.uptimeSeconds) && s.uptimeSeconds >= 0).toBe(true);
  expect(typeof s.failover.enabled).toBe('boolean');
  if (!s.failover.enabled) expect(s.failover).toEqual({ enabled: false });
  expect(Array.isArray(s.listeners)).toBe(true);
  for (const l of s.listeners) {
    expect(Object.keys(l)).toEqual(['name', 'bind', 'sessions', 'tls']);
    expect([typeof l.name, typeof l.bind, typeof l.tls]).toEqual(['string', 'string', 'boolean']);
    expect(count(l.sessions)).toBe(true);
  }
  expect(Array.isArray(s.pools)).toBe(true);
  for (const p of s.pools) {
    expect(Object.keys(p)).toEqual(['name', 'balance', 'servers']);
    expect([typeof p.name, typeof p.balance]).toEqual(['string', 'string']);
    for (const x of p.servers) {
      expect(Object.keys(x)).toEqual(['name', 'address', 'state', 'admin', 'weight', 'backup', 'sessions', 'lastCheck']);
      expect([typeof x.name, typeof x.address, typeof x.weight, typeof x.backup]).toEqual(['string', 'string', 'number', 'boolean']);
      expect(SERVER_STATES).toContain(x.state);
      expect(['ready', 'drain', 'maint']).toContain(x.admin);
      expect(count(x.sessions)).toBe(true);
      if (x.lastCheck !== null) {
        expect(Object.keys(x.lastCheck)).toEqual(['result', 'ageMs', 'durationMs']);
        expect(CHECK_RESULTS).toContain(x.lastCheck.result);
        expect(count(x.lastCheck.ageMs) && count(x.lastCheck.durationMs)).toBe(true);
      }
    }
  }
}

describe('failed dials per server (mqtt_lb_server_connect_errors_total, HAProxy econ)', () => {
  afterAll(async () => {
    await stopAllLbs();
  });

  for (const workers of [1, 2]) {
    it(`counts a refused dial against its server, with the client told server unavailable (workers: ${workers})`, async () => {
      const [port, admin, dead] = [await freePort(), await freePort(), await freePort()];
      // Nothing listens on `dead`; without probes it stays a candidate, so a client's dial is what finds it refused.
      const lb = await startLb(
        lbYaml({ port, admin, servers: [{ name: 'gone', port: dead }], health: { type: 'none' }, pool: '    retries: 0\n', limits: LIMITS, extra: `workers: ${workers}\n` }),
        { waitReady: `http://127.0.0.1:${admin}/readyz` },
      );
      const before = (await scrape(admin)).exp;
      expect(value(before, 'mqtt_lb_server_connect_errors_total', { pool: 'brokers', server: 'gone' })).toBe(0);
      const c = await RawClient.open(port);
      c.sock.write(connectPacket({ clientId: `dial-fails-${workers}` }));
      await c.waitReceived(4);
      expect([...c.received]).toEqual([0x20, 0x02, 0x00, 0x03]); // server unavailable
      c.destroy();
      const after = await waitFor('the failed dial counted', async () => (await scrape(admin)).exp, (e) => value(e, 'mqtt_lb_server_connect_errors_total', { pool: 'brokers', server: 'gone' }) === 1);
      expect(after.types.get('mqtt_lb_server_connect_errors_total')).toBe('counter');
      expect(value(after, 'mqtt_lb_connect_rejected_total', { listener: 'mqtt', reason: 'server_connect_failed' })).toBe(1);
      await lb.stop();
    });
  }
});
