/**
 * Health probes and the checker against real sockets: mosquitto via test/helpers/mosquitto.ts, plus tiny
 * node servers for the cases a broker cannot produce on demand (silent port, fixed CONNACK code, PROXY).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqttPacket from 'mqtt-packet';
import { afterEach, describe, expect, it } from 'vitest';
import { Server, type CheckResult } from '../../src/balancer/server.js';
import type { PoolConfig } from '../../src/config/types.js';
import { HealthChecker } from '../../src/health/checker.js';
import { probeHttp, requestParts } from '../../src/health/http.js';
import { probeMqtt, type MqttProbeOptions } from '../../src/health/mqtt.js';
import { PROXY_V1_UNKNOWN, PROXY_V2_LOCAL } from '../../src/health/proxy-header.js';
import { probeTcp } from '../../src/health/tcp.js';
import { freePort, startMosquitto, type Broker } from '../helpers/mosquitto.js';
import { sleep } from '../helpers/lb.js';
import { synDroppingPort } from '../helpers/syn-dropping-port.js';
import { logSink, poolConfig, serverConfig } from '../unit/health-fixtures.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length > 0) {
    try {
      await cleanups.pop()!();
    } catch {
      // keep cleaning up
    }
  }
});

async function broker(opts?: Parameters<typeof startMosquitto>[0]): Promise<Broker> {
  const b = await startMosquitto(opts);
  cleanups.push(() => b.stop());
  return b;
}

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'mqtt-lb-health-test-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A TCP server on 127.0.0.1:0 running `onConnection`; closed (with its sockets) after the test. */
async function tinyServer(onConnection: (socket: net.Socket) => void): Promise<number> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    onConnection(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  );
  return (server.address() as net.AddressInfo).port;
}

async function waitFor(cond: () => boolean, timeoutMs: number, stepMs = 20): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  return cond();
}

const mqttOpts = (over: Partial<MqttProbeOptions> = {}): MqttProbeOptions => ({
  timeout: 1000,
  version: 4,
  clientId: 'mqtt-lb-health-test',
  username: null,
  password: null,
  proxyProtocol: 'off',
  ...over,
});

function checkerFor(port: number, health: Partial<PoolConfig['health']>, hostname = 'test-host', pool: Partial<PoolConfig> = {}) {
  const config = poolConfig(pool, { interval: 300, timeout: 200, rise: 2, fall: 2, ...health });
  const server = new Server('brokers', serverConfig('b1', port));
  const { log, lines } = logSink();
  const results: Array<{ result: CheckResult; at: number }> = [];
  const checker = new HealthChecker(
    { name: 'brokers', config, servers: [server] },
    { log, hostname, onResult: (_s, r) => results.push({ result: r.result, at: Date.now() }) },
  );
  cleanups.push(() => checker.close());
  return { server, checker, lines, results };
}

describe('mqtt probe', () => {
  it.each([3, 4, 5] as const)('is ok against mosquitto with MQTT level %i', async (version) => {
    const b = await broker();
    const r = await probeMqtt(b, mqttOpts({ version, clientId: version === 3 ? 'mqttlb-v3-probe' : 'mqtt-lb-health-test-v' + version }));
    expect(r).toMatchObject({ result: 'ok' });
    expect(r.durationMs).toBeGreaterThanOrEqual(0);
  });

  it('is refused on a closed port', async () => {
    const port = await freePort();
    expect(await probeMqtt({ host: '127.0.0.1', port }, mqttOpts())).toMatchObject({ result: 'refused' });
  });

  it('times out on a port that accepts TCP but never answers CONNECT', async () => {
    let connected = 0;
    const port = await tinyServer(() => connected++);
    const r = await probeMqtt({ host: '127.0.0.1', port }, mqttOpts({ timeout: 300 }));
    expect(r.result).toBe('timeout');
    expect(connected).toBe(1);
    expect(r.durationMs).toBeGreaterThanOrEqual(290);
  });

  it('is bad_connack when mosquitto refuses (allow_anonymous false, empty password_file)', async () => {
    const dir = tempDir();
    const pw = join(dir, 'passwd');
    writeFileSync(pw, '');
    const b = await broker({ extraConfig: `allow_anonymous false\npassword_file ${pw}` });
    const anon = await probeMqtt(b, mqttOpts());
    expect(anon).toMatchObject({ result: 'bad_connack', detail: "CONNACK return code 5 (not authorized: set or check the pool's health.mqtt.username and password, or allow the probe's client ID)" });
    const withUser = await probeMqtt(b, mqttOpts({ username: 'nobody', password: 'wrong', version: 5 }));
    expect(withUser.result).toBe('bad_connack');
    expect(withUser.detail).toMatch(/^CONNACK reason code 0x8[67] \((bad user name or password|not authorized): set or check the pool's health\.mqtt\.username and password/);
  });

  // A 5.0 audit: a broker whose CONNACK carried 76 KB of user properties was marked down, its clients served.
  it('is ok for a 5.0 CONNACK longer than 64 KiB (judged on its code), and refused on its code', async () => {
    const big = (code: number) => {
      const userProperties: Record<string, string> = {};
      for (let i = 0; i < 700; i++) userProperties[`key-${i}`] = 'v'.repeat(100);
      return mqttPacket.generate({ cmd: 'connack', reasonCode: code, sessionPresent: false, properties: { userProperties } } as mqttPacket.IConnackPacket, { protocolVersion: 5 });
    };
    expect(big(0).length).toBeGreaterThan(70_000);
    const ok = await tinyServer((s) => s.once('data', () => s.write(big(0))));
    expect(await probeMqtt({ host: '127.0.0.1', port: ok }, mqttOpts({ version: 5 }))).toMatchObject({ result: 'ok' });
    const refused = await tinyServer((s) => s.once('data', () => s.end(big(0x87))));
    expect(await probeMqtt({ host: '127.0.0.1', port: refused }, mqttOpts({ version: 5 }))).toMatchObject({ result: 'bad_connack', detail: expect.stringMatching(/^CONNACK reason code 0x87/) });
  });

  it('is bad_connack for a server answering return code 5, and for one closing without answer', async () => {
    const rc5 = await tinyServer((s) => s.once('data', () => s.end(Buffer.from([0x20, 0x02, 0x00, 0x05]))));
    expect(await probeMqtt({ host: '127.0.0.1', port: rc5 }, mqttOpts())).toMatchObject({ result: 'bad_connack', detail: "CONNACK return code 5 (not authorized: set or check the pool's health.mqtt.username and password, or allow the probe's client ID)" });
    const closer = await tinyServer((s) => s.once('data', () => s.end()));
    expect(await probeMqtt({ host: '127.0.0.1', port: closer }, mqttOpts())).toMatchObject({ result: 'bad_connack' });
    const http = await tinyServer((s) => s.once('data', () => s.end('HTTP/1.1 400 Bad Request\r\n\r\n')));
    expect(await probeMqtt({ host: '127.0.0.1', port: http }, mqttOpts())).toMatchObject({ result: 'bad_connack' });
  });

  it('sends the PROXY v2 LOCAL header first, then CONNECT, then DISCONNECT', async () => {
    const received: Buffer[] = [];
    let ended!: () => void;
    const gotEnd = new Promise<void>((r) => (ended = r));
    const port = await tinyServer((s) => {
      let answered = false;
      s.on('data', (chunk: Buffer) => {
        received.push(chunk);
        const all = Buffer.concat(received);
        if (!answered && all.length > PROXY_V2_LOCAL.length + 2) {
          answered = true;
          s.write(Buffer.from([0x20, 0x02, 0x00, 0x00]));
        }
      });
      s.on('end', () => {
        s.end();
        ended();
      });
    });
    const r = await probeMqtt({ host: '127.0.0.1', port }, mqttOpts({ proxyProtocol: 'v2' }));
    expect(r.result).toBe('ok');
    await gotEnd;
    const all = Buffer.concat(received);
    expect(all.subarray(0, 16)).toEqual(PROXY_V2_LOCAL);
    expect(all[16]).toBe(0x10); // CONNECT
    expect(all.subarray(-2)).toEqual(Buffer.from([0xe0, 0x00])); // DISCONNECT
  });

  it('resolves promptly when aborted from outside', async () => {
    const port = await tinyServer(() => undefined);
    const ac = new AbortController();
    const pending = probeMqtt({ host: '127.0.0.1', port }, mqttOpts({ timeout: 10_000 }), ac.signal);
    setTimeout(() => ac.abort(), 50);
    expect(await pending).toMatchObject({ result: 'error', detail: 'aborted' });
  });
});

describe('tcp probe', () => {
  it('is ok against a listening port and refused on a closed one', async () => {
    const b = await broker();
    expect(await probeTcp(b, { timeout: 1000 })).toMatchObject({ result: 'ok' });
    const port = await freePort();
    expect(await probeTcp({ host: '127.0.0.1', port }, { timeout: 1000 })).toMatchObject({ result: 'refused' });
  });

  it("sends the pool's PROXY header (v2 LOCAL, v1 UNKNOWN) before its FIN, and nothing without one", async () => {
    const received: Buffer[] = [];
    const server = net.createServer((sock) => {
      const chunks: Buffer[] = [];
      sock.on('data', (d: Buffer) => chunks.push(d));
      sock.on('end', () => {
        received.push(Buffer.concat(chunks));
        sock.end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    const target = { host: '127.0.0.1', port: (server.address() as net.AddressInfo).port };
    for (const mode of ['v2', 'v1', 'off'] as const) expect(await probeTcp(target, { timeout: 1000, proxyProtocol: mode })).toMatchObject({ result: 'ok' });
    expect(await waitFor(() => received.length === 3, 2000)).toBe(true);
    expect(received).toEqual([PROXY_V2_LOCAL, PROXY_V1_UNKNOWN, Buffer.alloc(0)]);
  });

  it('turns unusable input into an error result, never a rejection', async () => {
    expect(await probeTcp({ host: '127.0.0.1', port: 70_000 }, { timeout: 1000 })).toMatchObject({ result: 'error' });
    expect(await probeMqtt({ host: '127.0.0.1', port: 1 }, mqttOpts({ version: 3, clientId: '' }))).toMatchObject({ result: 'error' });
  });
});

describe('http probe', () => {
  /** Connections the last httpServer() accepted: one per probe, also one that timed out. */
  let accepted = 0;
  async function httpServer(handler: http.RequestListener): Promise<number> {
    const server = http.createServer(handler);
    accepted = 0;
    server.on('connection', () => accepted++);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(
      () =>
        new Promise<void>((r) => {
          server.closeAllConnections();
          server.close(() => r());
        }),
    );
    return (server.address() as net.AddressInfo).port;
  }

  it('credentials in the URL go as a Basic Authorization header, not in the request line', async () => {
    const seen: Array<{ url: string | undefined; authorization: string | undefined }> = [];
    const port = await httpServer((req, res) => {
      seen.push({ url: req.url, authorization: req.headers.authorization });
      res.statusCode = req.headers.authorization === `Basic ${Buffer.from('api key:s3cr:t').toString('base64')}` ? 200 : 401;
      res.end();
    });
    expect(await probeHttp({ url: `http://api%20key:s3cr%3At@127.0.0.1:${port}/api/v5/status?x=1` }, { timeout: 300 })).toMatchObject({ result: 'ok' });
    expect(await probeHttp({ url: `http://127.0.0.1:${port}/api/v5/status` }, { timeout: 300 })).toMatchObject({ result: 'http_status', detail: 'HTTP 401' });
    expect(seen).toEqual([
      { url: '/api/v5/status?x=1', authorization: `Basic ${Buffer.from('api key:s3cr:t').toString('base64')}` },
      { url: '/api/v5/status', authorization: undefined },
    ]);
    // A bare % is not percent-encoding: kept as written, and the rest still decoded.
    const basic = (url: string): string => Buffer.from(requestParts(url).headers['authorization']!.slice(6), 'base64').toString('utf8');
    expect(basic('http://u:p%w%20d@127.0.0.1/')).toBe('u:p%w d');
    expect(basic('http://us%zz:%E2%82%AC@127.0.0.1/')).toBe('us%zz:€');
    expect(requestParts('http://127.0.0.1/a@b').headers['authorization']).toBeUndefined();
  });

  it('maps 2xx to ok, other statuses to http_status, silence and a stalled body to timeout, closed port to refused', async () => {
    const port = await httpServer((req, res) => {
      if (req.url === '/ok') res.end('fine');
      else if (req.url === '/busy') {
        res.statusCode = 503;
        res.end('x'.repeat(100_000)); // more than the probe reads: must still settle
      } else if (req.url === '/silent') {
        // never answer
      } else if (req.url === '/stalls') {
        // 200 and a promised body that stops after one byte
        res.writeHead(200, { 'content-length': '1000' });
        res.write('x');
      } else {
        res.statusCode = 404;
        res.end();
      }
    });
    const url = (p: string) => ({ url: `http://127.0.0.1:${port}${p}` });
    expect(await probeHttp(url('/ok'), { timeout: 300 })).toMatchObject({ result: 'ok' });
    expect(await probeHttp(url('/busy'), { timeout: 300 })).toMatchObject({ result: 'http_status', detail: 'HTTP 503' });
    expect(await probeHttp(url('/nope'), { timeout: 300 })).toMatchObject({ result: 'http_status', detail: 'HTTP 404' });
    expect(await probeHttp(url('/silent'), { timeout: 300 })).toMatchObject({ result: 'timeout' });
    expect(await probeHttp(url('/stalls'), { timeout: 300 })).toMatchObject({ result: 'timeout' });
    // One connection per probe: none dialled again after a timed-out one (undici re-dials after an abort).
    await sleep(200);
    expect(accepted).toBe(5);
    const closed = await freePort();
    expect(await probeHttp({ url: `http://127.0.0.1:${closed}/` }, { timeout: 300 })).toMatchObject({ result: 'refused' });
  });

  it('a timeout says whether the connection was made (the recheck after an outage): connected to a server that never answers; not connected to a port that drops SYNs', async () => {
    const port = await httpServer(() => undefined); // never answers
    expect(await probeHttp({ url: `http://127.0.0.1:${port}/` }, { timeout: 300 })).toMatchObject({ result: 'timeout', connected: true, detail: 'no answer within 300 ms' });
    const dropping = await synDroppingPort(cleanups);
    const r = await probeHttp({ url: `http://127.0.0.1:${dropping}/` }, { timeout: 300 });
    expect(r).toMatchObject({ result: 'timeout', detail: 'no connection within 300 ms' });
    expect(r.connected).toBeUndefined();
  });

  // A re-audit: undici runs its headers and body timeouts on a 499 ms tick, and set to the probe's own timeout they
  // fired early now and then: 2 of 8 silent-server probes at 800 ms read as not connected, 2 of 8 stalled 200s as ok.
  it("undici's own timers never decide before the probe's deadline: a silent server is always `no answer` once connected, a stalled 200 never ok", async () => {
    const port = await httpServer((req, res) => {
      if (req.url === '/stalls') {
        res.writeHead(200, { 'content-length': '100' });
        res.write('xx');
      }
      // else never answer
    });
    // Started 110 ms apart: each meets undici's timer tick at another phase.
    const staggered = (path: string) =>
      Promise.all([0, 1, 2, 3, 4, 5, 6, 7].map(async (i) => {
        await sleep(i * 110);
        return probeHttp({ url: `http://127.0.0.1:${port}${path}` }, { timeout: 800 });
      }));
    const [silent, stalled] = await Promise.all([staggered('/silent'), staggered('/stalls')]);
    for (const r of silent) expect(r).toMatchObject({ result: 'timeout', connected: true, detail: 'no answer within 800 ms' });
    for (const r of stalled) expect(r).toMatchObject({ result: 'timeout', connected: true, detail: 'body not complete within 800 ms' });
  });

  it('close() does not wait for a probe still connecting to a host that drops SYNs (undici ignores the abort there)', async () => {
    const port = await synDroppingPort(cleanups);
    const { checker } = checkerFor(1883, { type: 'http', http: { port, path: '/health' }, interval: 10_000, timeout: 6000 });
    checker.start();
    await sleep(300); // the probe is in its TCP connect
    const startedAt = Date.now();
    await checker.close();
    expect(Date.now() - startedAt).toBeLessThan(2000); // not the 6 s probe timeout
  });

  it('drives the checker: 503 marks down, then 200 brings it up after `rise` passes', async () => {
    let status = 503;
    let requests = 0;
    const port = await httpServer((_req, res) => {
      requests++;
      res.statusCode = status;
      res.end();
    });
    const { server, checker, results, lines } = checkerFor(1883, { type: 'http', http: { port, path: '/health' }, rise: 3 });
    checker.start();
    expect(await waitFor(() => server.health === 'down', 2000)).toBe(true);
    expect(results[0]!.result).toBe('http_status');
    status = 200;
    const okFrom = results.length;
    expect(await waitFor(() => server.health === 'up', 5000)).toBe(true);
    // up exactly at the third consecutive pass (some probes may have been in flight at the switch)
    const after = results.slice(okFrom).map((r) => r.result);
    expect(after.slice(-3)).toEqual(['ok', 'ok', 'ok']);
    // A server lost is a warning, one back is info; the pool left without a server is an error.
    expect(lines.filter((l) => l.msg === 'server state changed').map((l) => [l.from, l.to, l.level])).toEqual([
      ['unknown', 'down', 40],
      ['down', 'up', 30],
    ]);
    expect(lines.filter((l) => l.level === 50).map((l) => [l.pool, l.msg])).toEqual([['brokers', 'pool has no server up: its clients are refused (CONNACK server unavailable)']]);
    expect(requests).toBeGreaterThanOrEqual(4);
  });
});

// The recheck after this host's network outage (checker.ts) makes a timed-out probe again only when its connection was
// never made: a timeout once connected is the server's.
describe('a timeout says whether the connection was made', () => {
  it('mqtt and tcp: connected to a server that never answers; not connected to a port that drops SYNs', async () => {
    const silent = await tinyServer(() => undefined);
    expect(await probeMqtt({ host: '127.0.0.1', port: silent }, mqttOpts({ timeout: 300 }))).toMatchObject({ result: 'timeout', connected: true });
    const dropping = await synDroppingPort(cleanups);
    const notConnected = await probeMqtt({ host: '127.0.0.1', port: dropping }, mqttOpts({ timeout: 300 }));
    expect(notConnected.result).toBe('timeout');
    expect(notConnected.connected).toBeUndefined();
    const tcp = await probeTcp({ host: '127.0.0.1', port: dropping }, { timeout: 300 });
    expect(tcp.result).toBe('timeout');
    expect(tcp.connected).toBeUndefined();
  });
});

describe('checker against mosquitto', () => {
  it('a frozen (SIGSTOP) broker turns down after fall probes time out, and back up after SIGCONT', async () => {
    const b = await broker();
    const interval = 300;
    const timeout = 200;
    const fall = 2;
    const { server, checker, results } = checkerFor(b.port, { type: 'mqtt', interval, timeout, fall, rise: 2 });
    checker.start();
    expect(await waitFor(() => server.health === 'up', 3000)).toBe(true);

    // Note how many results had been seen when the server turned down.
    let resultsAtDown = -1;
    server.on('state', (c: { to: string }) => {
      if (c.to === 'down') resultsAtDown = results.length;
    });
    b.pause();
    const frozenAt = Date.now();
    const bound = fall * interval * 1.1 + timeout; // jitter is ±10 %
    expect(await waitFor(() => server.health === 'down', bound + 2000)).toBe(true);
    expect(Date.now() - frozenAt).toBeLessThan(bound + 2000);
    // It turned down on the `fall`-th consecutive timeout, not on the first one.
    const upTo = results.slice(0, resultsAtDown).map((r) => r.result);
    expect(upTo.slice(-fall)).toEqual(Array(fall).fill('timeout'));
    expect(upTo.at(-fall - 1)).toBe('ok');

    b.resume();
    expect(await waitFor(() => server.health === 'up', 5000)).toBe(true);
    expect(results.at(-1)!.result).toBe('ok');
  });

  it('two checkers (two LB hosts) probing one broker concurrently both stay up, with distinct client IDs', async () => {
    const dir = tempDir();
    const logFile = join(dir, 'mosquitto.log');
    const b = await broker({ extraConfig: `log_dest file ${logFile}\nlog_type all\nconnection_messages true` });
    // A generous timeout: this test is about client IDs, not speed.
    const one = checkerFor(b.port, { type: 'mqtt', interval: 100, timeout: 2000 }, 'lb-one');
    const two = checkerFor(b.port, { type: 'mqtt', interval: 100, timeout: 2000 }, 'lb-two');
    one.checker.start();
    two.checker.start();
    await new Promise((r) => setTimeout(r, 2000));
    await one.checker.close();
    await two.checker.close();
    for (const c of [one, two]) {
      expect(c.server.health).toBe('up');
      expect(c.results.length).toBeGreaterThanOrEqual(5);
      expect(c.results.every((r) => r.result === 'ok')).toBe(true);
    }
    const log = readFileSync(logFile, 'utf8');
    expect(log).toContain('mqtt-lb-health-lb-one-b1');
    expect(log).toContain('mqtt-lb-health-lb-two-b1');
    expect(log).not.toMatch(/already connected, closing old connection/);
  });

  it("health.port: the tcp and mqtt probes go to that port at the server's host, with no PROXY header", async () => {
    const b = await broker();
    const closedPort = await freePort();
    for (const type of ['mqtt', 'tcp'] as const) {
      // Traffic port closed, probe port served by mosquitto. The pool sends PROXY v2 to its servers, and
      // mosquitto (no PROXY support) would close on one: only a probe without it comes back ok.
      const probedElsewhere = checkerFor(closedPort, { type, port: b.port }, 'test-host', { sendProxyProtocol: 'v2' });
      probedElsewhere.checker.start();
      expect(await waitFor(() => probedElsewhere.server.health === 'up', 3000), type).toBe(true);
      expect(probedElsewhere.server.lastCheck?.result).toBe('ok');
      await probedElsewhere.checker.close();

      // And the other way round: the traffic port is mosquitto, the probe port closed.
      const probeClosed = checkerFor(b.port, { type, port: closedPort });
      probeClosed.checker.start();
      expect(await waitFor(() => probeClosed.server.health === 'down', 3000), type).toBe(true);
      expect(probeClosed.server.lastCheck?.result).toBe('refused');
      await probeClosed.checker.close();
    }
    // A probe port equal to the traffic port is the traffic port: the pool's PROXY header goes there as before.
    const same = checkerFor(b.port, { type: 'mqtt', port: b.port }, 'test-host', { sendProxyProtocol: 'v2' });
    same.checker.start();
    expect(await waitFor(() => same.server.health === 'down', 3000)).toBe(true);
    expect(same.server.lastCheck?.result).not.toBe('ok');
  });

  it('probeNow on a refused server records a result at once', async () => {
    const port = await freePort();
    const { server, checker } = checkerFor(port, { type: 'mqtt', interval: 60_000, timeout: 200 });
    checker.start();
    expect(await waitFor(() => server.health === 'down', 2000)).toBe(true);
    const first = server.lastCheck!.at;
    await new Promise((r) => setTimeout(r, 300));
    await checker.probeNow(server);
    expect(server.lastCheck!.at).toBeGreaterThan(first);
    expect(server.lastCheck!.result).toBe('refused');
  });

  it('a restarted broker on the same port is probed ok again', async () => {
    const b = await broker();
    const { server, checker } = checkerFor(b.port, { type: 'mqtt' });
    checker.start();
    expect(await waitFor(() => server.health === 'up', 3000)).toBe(true);
    const port = b.port;
    b.kill('SIGKILL');
    expect(await waitFor(() => server.health === 'down', 3000)).toBe(true);
    await b.restart();
    expect(b.port).toBe(port);
    expect(await waitFor(() => server.health === 'up', 3000)).toBe(true);
  });
});
