import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { EventEmitter } from 'node:events';
import { connect, createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import pino, { type Logger } from 'pino';
import { ErrorCodes, MqttLbError } from '../../src/errors.js';
import { authorizeAdmin, bearerMatches, hostOfHostHeader, isLoopbackHost, requestTarget } from '../../src/telemetry/admin-auth.js';
import { AdminConnections } from '../../src/telemetry/admin-connections.js';
import { AdminServer, parseServerPath } from '../../src/telemetry/admin-server.js';
import { Metrics } from '../../src/telemetry/metrics.js';
import {
  FakeSession,
  FakeSource,
  RecordingActions,
  adminConfig,
  failoverStatus,
  listenerStats,
  makeServer,
  parseExposition,
  silentLogger,
  value,
} from './telemetry-fixtures.js';

/** The /api/status example of design.md §6, verbatim. */
const CONTRACT_EXAMPLE = `{ "version": "0.1.0", "uptimeSeconds": 12.5,
  "failover": { "enabled": true, "instances": [ { "routerId": 51, "state": "master", "priority": 150,
                "vips": ["192.0.2.10/24"], "peer": { "address": "10.0.0.2", "state": "backup", "lastAdvertAgeMs": 40 } } ] },
  "listeners": [ { "name": "mqtt", "bind": "0.0.0.0:1883", "sessions": 812, "tls": false } ],
  "pools": [ { "name": "brokers", "balance": "client-id-hash", "servers": [
      { "name": "b1", "address": "10.0.0.11:1883", "state": "up", "admin": "ready", "weight": 1, "backup": false,
        "sessions": 405, "lastCheck": { "result": "ok", "ageMs": 800, "durationMs": 3 } } ] } ] }`;

const TOKEN = 's3cret-token';

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

/** node:http rather than fetch: full control of Host, Origin and Authorization. */
function call(port: number, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers, agent: false, timeout: 5000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end(body);
  });
}

function exampleSource(): FakeSource {
  const source = new FakeSource();
  source.version = '0.1.0';
  source.startedAt = Date.now() - 12_500;
  source.listenerList = [listenerStats('mqtt', { active: 812 })];
  const b1 = makeServer('brokers', 'b1', 'up', { address: '10.0.0.11:1883', host: '10.0.0.11', port: 1883 });
  for (let i = 0; i < 405; i++) b1.sessions.add(new FakeSession(1, 1, `c${i}`));
  b1.lastCheck = { result: 'ok', at: Date.now() - 800, durationMs: 3 };
  source.poolList = [{ name: 'brokers', balance: 'client-id-hash', servers: [b1] }];
  source.failoverStatus = failoverStatus('master');
  return source;
}

async function start(source: FakeSource, token: string | null = null, log: Logger = silentLogger()): Promise<{ admin: AdminServer; actions: RecordingActions; port: number }> {
  const metrics = new Metrics(source);
  const actions = new RecordingActions(source);
  const admin = new AdminServer({ config: adminConfig(token), source, actions, metrics, log });
  cleanups.push(() => metrics.close());
  cleanups.push(() => admin.close());
  await admin.listen();
  return { admin, actions, port: admin.port };
}

/** Same keys in the same order, same JSON types, recursively (arrays: element by element). */
function expectSameShape(actual: unknown, expected: unknown, path = '$'): void {
  if (Array.isArray(expected)) {
    expect(Array.isArray(actual), path).toBe(true);
    expect((actual as unknown[]).length, `${path}.length`).toBe(expected.length);
    expected.forEach((e, i) => expectSameShape((actual as unknown[])[i], e, `${path}[${i}]`));
    return;
  }
  if (expected !== null && typeof expected === 'object') {
    expect(actual !== null && typeof actual === 'object' && !Array.isArray(actual), path).toBe(true);
    expect(Object.keys(actual as object), `${path} keys`).toEqual(Object.keys(expected));
    for (const k of Object.keys(expected)) expectSameShape((actual as Record<string, unknown>)[k], (expected as Record<string, unknown>)[k], `${path}.${k}`);
    return;
  }
  expect(actual === null ? 'null' : typeof actual, path).toBe(expected === null ? 'null' : typeof expected);
}

describe('AdminServer endpoints', () => {
  it('answers /healthz, /readyz and HEAD', async () => {
    const source = exampleSource();
    const { port } = await start(source);
    let r = await call(port, 'GET', '/healthz');
    expect(r.status).toBe(200);
    expect(r.body).toBe('ok\n');
    r = await call(port, 'GET', '/readyz');
    expect([r.status, r.body]).toEqual([200, 'ready\n']);
    source.readiness = { ok: false, reason: 'pool brokers has no server up' };
    r = await call(port, 'GET', '/readyz');
    expect([r.status, r.body]).toEqual([503, 'pool brokers has no server up\n']);
    r = await call(port, 'HEAD', '/healthz');
    expect([r.status, r.body]).toEqual([200, '']);
    expect(r.headers['cache-control']).toBe('no-store');
  });

  it('serves /metrics in the Prometheus text format, read at scrape time', async () => {
    const source = exampleSource();
    const { port } = await start(source);
    let r = await call(port, 'GET', '/metrics');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    let exp = parseExposition(r.body);
    expect(value(exp, 'mqtt_lb_server_sessions_active', { pool: 'brokers', server: 'b1' })).toBe(405);
    expect(value(exp, 'mqtt_lb_connections_active', { listener: 'mqtt' })).toBe(812);
    source.poolList[0]!.servers[0]!.setHealth('down');
    r = await call(port, 'GET', '/metrics');
    exp = parseExposition(r.body);
    expect(value(exp, 'mqtt_lb_server_up', { pool: 'brokers', server: 'b1' })).toBe(0);
  });

  it('serves /api/status in exactly the contract shape', async () => {
    const { port } = await start(exampleSource());
    const r = await call(port, 'GET', '/api/status');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('application/json');
    const actual = JSON.parse(r.body) as Record<string, unknown>;
    const expected = JSON.parse(CONTRACT_EXAMPLE) as Record<string, unknown>;
    expectSameShape(actual, expected);
    // Values too, except those that depend on the clock.
    const uptime = actual.uptimeSeconds as number;
    expect(uptime).toBeGreaterThanOrEqual(12.5);
    expect(uptime).toBeLessThan(72.5);
    const ageMs = (actual as { pools: Array<{ servers: Array<{ lastCheck: { ageMs: number } }> }> }).pools[0]!.servers[0]!.lastCheck.ageMs;
    expect(ageMs).toBeGreaterThanOrEqual(800);
    expect(ageMs).toBeLessThan(60_800);
    const normalise = (o: Record<string, unknown>): unknown =>
      JSON.parse(JSON.stringify(o), (k, v: unknown) => (k === 'uptimeSeconds' || k === 'ageMs' ? 0 : v));
    expect(normalise(actual)).toEqual(normalise(expected));
  });

  it('says { enabled: false } without failover and lastCheck null before any check', async () => {
    const source = exampleSource();
    source.failoverStatus = null;
    source.poolList[0]!.servers.push(makeServer('brokers', 'b2', 'unknown'));
    const { port } = await start(source);
    const s = JSON.parse((await call(port, 'GET', '/api/status')).body) as {
      failover: unknown;
      pools: Array<{ servers: Array<{ name: string; state: string; lastCheck: unknown }> }>;
    };
    expect(s.failover).toEqual({ enabled: false });
    expect(s.pools[0]!.servers[1]).toMatchObject({ name: 'b2', state: 'unknown', lastCheck: null });
  });

  it('serves the status page with a strict CSP', async () => {
    const { port } = await start(exampleSource(), TOKEN);
    const r = await call(port, 'GET', '/');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(r.body).toContain('<title>mqtt-lb status</title>');
    expect(r.body).toContain('data-auth="token"');
    const csp = String(r.headers['content-security-policy']);
    expect(csp).toContain("default-src 'none'");
    expect(csp).toMatch(/script-src 'sha256-[A-Za-z0-9+/=]+'/);
    expect(csp).not.toContain('unsafe-inline');
    expect(r.body).not.toMatch(/<script[^>]+src=|<link[^>]+stylesheet|https?:\/\/(?!www\.w3\.org)/);
    // Fetched without JavaScript (curl: a new user's audit saw only `loading…`): where the same status is.
    expect(r.body).toMatch(/<noscript>[^]*href="api\/status"[^]*<\/noscript>/);
  });

  it('answers 404 for unknown paths and 405 for wrong methods', async () => {
    const { port } = await start(exampleSource());
    expect((await call(port, 'GET', '/nope')).status).toBe(404);
    expect((await call(port, 'GET', '/api/servers/brokers/b1')).status).toBe(404);
    expect((await call(port, 'POST', '/api/servers/brokers/b1/explode')).status).toBe(404);
    let r = await call(port, 'POST', '/metrics');
    expect(r.status).toBe(405);
    expect(r.headers.allow).toBe('GET, HEAD');
    r = await call(port, 'DELETE', '/api/status');
    expect(r.status).toBe(405);
    r = await call(port, 'GET', '/api/servers/brokers/b1/drain');
    expect(r.status).toBe(405);
    expect(r.headers.allow).toBe('POST');
  });

  it('ignores query strings on GET routes', async () => {
    const { port } = await start(exampleSource());
    expect((await call(port, 'GET', '/healthz?x=1')).status).toBe(200);
  });

  it('rejects oversized headers', async () => {
    const { port } = await start(exampleSource());
    const r = await call(port, 'GET', '/healthz', { 'x-big': 'a'.repeat(20_000) });
    expect(r.status).toBe(431);
  });

  it('closes a client that never finishes its headers', async () => {
    const { port } = await start(exampleSource());
    const sock = connect(port, '127.0.0.1');
    cleanups.push(() => void sock.destroy());
    await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
    sock.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n'); // and then nothing
    const ended = await new Promise<string>((resolve) => {
      let got = '';
      sock.on('data', (c: Buffer) => (got += c.toString()));
      sock.once('close', () => resolve(got));
      setTimeout(() => resolve('still open'), 12_000);
    });
    expect(ended).not.toBe('still open');
    expect(ended).toMatch(/^(HTTP\/1\.1 408|$)/);
  }, 20_000);
});

describe('admin port connections', () => {
  // Node's HTTP timeouts start with a request's first byte: connections that never send one stayed open, and
  // with server.maxConnections 128 of them kept /readyz and /metrics unreachable.
  it('past 128 connections, the longest idle one makes room: /readyz and /metrics stay reachable', async () => {
    const { port } = await start(exampleSource());
    const silent: Socket[] = [];
    for (let i = 0; i < 140; i++) {
      const sock = connect(port, '127.0.0.1');
      sock.on('error', () => {});
      cleanups.push(() => void sock.destroy());
      silent.push(sock);
      await new Promise<void>((resolve) => sock.once('connect', () => resolve()));
    }
    for (let i = 0; i < 10; i++) {
      expect((await call(port, 'GET', '/readyz')).status).toBe(200);
      expect((await call(port, 'GET', '/metrics')).status).toBe(200);
    }
    await new Promise((r) => setTimeout(r, 100));
    // The oldest silent connections were closed to make room, the newest are still open.
    expect(silent.slice(0, 12).every((s) => s.destroyed || s.readyState === 'closed')).toBe(true);
    expect(silent.slice(-50).every((s) => !s.destroyed)).toBe(true);
  });
});

describe('AdminConnections', () => {
  const sock = (): Socket => {
    const s = new EventEmitter() as unknown as Socket & { destroyed: boolean };
    s.destroyed = false;
    s.destroy = (() => {
      s.destroyed = true;
      s.emit('close');
      return s;
    }) as Socket['destroy'];
    return s;
  };

  it('closes the longest idle connection for a newcomer; busy ones stay; all busy: the newcomer is refused', () => {
    const gate = new AdminConnections(3);
    const [a, b, c, d, e] = [sock(), sock(), sock(), sock(), sock()];
    for (const s of [a, b, c]) expect(gate.admit(s)).toBe(true);
    gate.busy(a); // a request in progress on a
    expect(gate.admit(d)).toBe(true); // b, the longest idle, makes room
    expect([a.destroyed, b.destroyed, c.destroyed]).toEqual([false, true, false]);
    gate.done(a); // answered: idle again, now the most recent
    gate.busy(c);
    gate.busy(d);
    expect(gate.admit(e)).toBe(true); // a is the only idle one
    expect(a.destroyed).toBe(true);
    gate.busy(e);
    const f = sock();
    expect(gate.admit(f)).toBe(false); // c, d, e all busy
    expect(f.destroyed).toBe(true);
    expect(gate.size).toBe(3);
  });

  it('a connection with pipelined requests stays busy until the last is answered', () => {
    const gate = new AdminConnections(2);
    const [a, b, c, d] = [sock(), sock(), sock(), sock()];
    gate.admit(a);
    gate.admit(b);
    gate.busy(a);
    gate.busy(a); // a second request pipelined behind the first
    gate.done(a); // the first answered
    expect(gate.admit(c)).toBe(true); // b makes room, not a
    expect([a.destroyed, b.destroyed]).toEqual([false, true]);
    gate.busy(c);
    expect(gate.admit(d)).toBe(false);
    gate.done(a); // the second answered: a is idle now
    expect(gate.admit(sock())).toBe(true);
    expect(a.destroyed).toBe(true);
  });
});

describe('admin API', () => {
  it('with a token: 401 without or with a wrong one, 200 with it', async () => {
    const source = exampleSource();
    const { port, actions } = await start(source, TOKEN);
    let r = await call(port, 'POST', '/api/servers/brokers/b1/drain');
    expect(r.status).toBe(401);
    expect(r.headers['www-authenticate']).toMatch(/^Bearer/);
    r = await call(port, 'POST', '/api/servers/brokers/b1/drain', { authorization: 'Bearer wrong' });
    expect(r.status).toBe(401);
    r = await call(port, 'POST', '/api/servers/brokers/b1/drain', { authorization: `Basic ${TOKEN}` });
    expect(r.status).toBe(401);
    expect(actions.calls).toEqual([]);

    r = await call(port, 'POST', '/api/servers/brokers/b1/drain', { authorization: `Bearer ${TOKEN}` }, 'ignored body');
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual({ pool: 'brokers', server: 'b1', admin: 'drain', state: 'drain' });
    expect(actions.calls).toEqual([{ pool: 'brokers', server: 'b1', state: 'drain' }]);
    expect(source.poolList[0]!.servers[0]!.state).toBe('drain');

    for (const state of ['maint', 'ready'] as const) {
      r = await call(port, 'POST', `/api/servers/brokers/b1/${state}`, { authorization: `Bearer ${TOKEN}` });
      expect(r.status).toBe(200);
      expect(source.poolList[0]!.servers[0]!.admin).toBe(state);
    }
  });

  it('applies a token changed by a reload', async () => {
    const { admin, port, actions } = await start(exampleSource(), null);
    expect((await call(port, 'POST', '/api/servers/brokers/b1/drain')).status).toBe(200);
    admin.setToken(TOKEN);
    expect((await call(port, 'POST', '/api/servers/brokers/b1/ready')).status).toBe(401);
    expect((await call(port, 'GET', '/')).body).toContain('data-auth="token"');
    expect((await call(port, 'POST', '/api/servers/brokers/b1/ready', { authorization: `Bearer ${TOKEN}` })).status).toBe(200);
    admin.setToken(null);
    expect((await call(port, 'GET', '/')).body).toContain('data-auth="none"');
    expect(actions.calls.map((c) => c.state)).toEqual(['drain', 'ready']);
  });

  it('logs refused requests at most once per 10 s per status, counting the rest (a caller retrying in a loop must not fill the disk)', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
    const { port } = await start(exampleSource(), TOKEN, log);
    for (let i = 0; i < 20; i++) expect((await call(port, 'POST', '/api/servers/brokers/b1/drain', { authorization: 'Bearer wrong' })).status).toBe(401);
    expect((await call(port, 'POST', '/api/servers/brokers/b1/drain', { origin: 'http://evil.example', authorization: `Bearer ${TOKEN}` })).status).toBe(403);
    const refused = lines.filter((l) => l.msg === 'admin request refused');
    expect(refused.map((l) => l.status)).toEqual([401, 403]);
    expect(refused[0]).toMatchObject({ pool: 'brokers', server: 'b1', action: 'drain', from: '127.0.0.1' });
  });

  it('answers 404 for an unknown pool or server, after authentication', async () => {
    const { port, actions } = await start(exampleSource(), TOKEN);
    const auth = { authorization: `Bearer ${TOKEN}` };
    expect(await call(port, 'POST', '/api/servers/brokers/nope/drain', auth)).toMatchObject({ status: 404, body: 'no server nope in pool brokers\n' });
    expect(await call(port, 'POST', '/api/servers/nope/b1/drain', auth)).toMatchObject({ status: 404, body: 'no pool nope\n' });
    expect((await call(port, 'POST', '/api/servers/nope/b1/drain')).status).toBe(401);
    expect((await call(port, 'POST', '/api/servers/brokers/%E0%A4%A/drain', auth)).status).toBe(404);
    expect(actions.calls).toEqual([]);
  });

  it('decodes URL-encoded pool and server names', async () => {
    const source = exampleSource();
    source.poolList.push({ name: 'eu west', balance: 'round-robin', servers: [makeServer('eu west', 'b/1')] });
    const { port, actions } = await start(source, TOKEN);
    const r = await call(port, 'POST', '/api/servers/eu%20west/b%2F1/maint', { authorization: `Bearer ${TOKEN}` });
    expect(r.status).toBe(200);
    expect(actions.calls).toEqual([{ pool: 'eu west', server: 'b/1', state: 'maint' }]);
  });

  it('without a token on a loopback bind: allowed, but not cross-site nor to a foreign Host', async () => {
    const { port, actions } = await start(exampleSource(), null);
    const host = `127.0.0.1:${port}`;
    expect((await call(port, 'POST', '/api/servers/brokers/b1/drain')).status).toBe(200);
    expect((await call(port, 'POST', '/api/servers/brokers/b1/ready', { host: `localhost:${port}` })).status).toBe(200);
    expect((await call(port, 'POST', '/api/servers/brokers/b1/drain', { origin: `http://${host}`, 'sec-fetch-site': 'same-origin' })).status).toBe(200);
    expect(actions.calls).toHaveLength(3);

    // DNS rebinding: a name that resolves to 127.0.0.1 but is not ours.
    expect((await call(port, 'POST', '/api/servers/brokers/b1/maint', { host: `evil.example:${port}` })).status).toBe(403);
    // CSRF from a web page.
    expect((await call(port, 'POST', '/api/servers/brokers/b1/maint', { origin: 'http://evil.example' })).status).toBe(403);
    expect((await call(port, 'POST', '/api/servers/brokers/b1/maint', { 'sec-fetch-site': 'cross-site' })).status).toBe(403);
    expect((await call(port, 'POST', '/api/servers/brokers/b1/maint', { origin: 'null' })).status).toBe(403);
    expect(actions.calls).toHaveLength(3);
  });

  it('on a loopback bind, reads too answer only a loopback Host (DNS rebinding); two Host headers are a 400', async () => {
    const { port } = await start(exampleSource(), TOKEN);
    for (const path of ['/api/status', '/metrics', '/', '/readyz']) {
      expect((await call(port, 'GET', path, { host: `localhost:${port}` })).status, path).not.toBe(403);
      const r = await call(port, 'GET', path, { host: `rebound.example:${port}` });
      expect(r.status, path).toBe(403);
      expect(r.body).not.toContain('10.0.0.11');
    }
    // With a token too (it guards the actions, not the reads).
    expect((await call(port, 'POST', '/api/servers/brokers/b1/drain', { host: `rebound.example:${port}`, authorization: `Bearer ${TOKEN}` })).status).toBe(403);
    const raw = await new Promise<string>((resolve, reject) => {
      const sock = connect(port, '127.0.0.1', () => sock.write(`GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nHost: evil.example\r\nConnection: close\r\n\r\n`));
      let got = '';
      sock.on('data', (d: Buffer) => (got += d.toString()));
      sock.on('end', () => resolve(got));
      sock.on('error', reject);
    });
    expect(raw).toMatch(/^HTTP\/1\.1 400/);
  });
});

describe('absolute-form request targets (RFC 9112 §3.2.2)', () => {
  it('are served, and their authority, not the Host header, is the host checked', async () => {
    const { port, actions } = await start(exampleSource(), null);
    const metrics = await call(port, 'GET', `http://127.0.0.1:${port}/metrics?x=1`);
    expect(metrics.status).toBe(200);
    expect(metrics.body).toContain('mqtt_lb_');
    expect((await call(port, 'GET', `HTTP://localhost:${port}/api/status`, { host: `localhost:${port}` })).status).toBe(200);
    expect((await call(port, 'POST', `http://[::1]:${port}/api/servers/brokers/b1/drain`, { host: `127.0.0.1:${port}` })).status).toBe(200);
    expect(actions.calls).toHaveLength(1);

    // A rebinding page cannot hide behind a loopback Host header, nor a loopback target behind a foreign one.
    expect((await call(port, 'GET', `http://rebound.example:${port}/api/status`, { host: `127.0.0.1:${port}` })).status).toBe(403);
    expect((await call(port, 'POST', `http://rebound.example:${port}/api/servers/brokers/b1/maint`, { host: `127.0.0.1:${port}` })).status).toBe(403);
    expect((await call(port, 'GET', `http://127.0.0.1:${port}/api/status`, { host: `rebound.example:${port}` })).status).toBe(200);
    expect(actions.calls).toHaveLength(1);

    expect((await call(port, 'GET', `ftp://127.0.0.1:${port}/metrics`)).status).toBe(400);
  });

  it('parses origin and absolute forms', () => {
    expect(requestTarget('/metrics?a=1', 'h:1')).toEqual({ path: '/metrics', host: 'h:1' });
    expect(requestTarget(undefined, undefined)).toEqual({ path: '/', host: undefined });
    expect(requestTarget('http://127.0.0.1:9883', 'x')).toEqual({ path: '/', host: '127.0.0.1:9883' });
    expect(requestTarget('https://[::1]:9883/api/status?q', 'x')).toEqual({ path: '/api/status', host: '[::1]:9883' });
    expect(requestTarget('http://LocalHost/readyz', 'x')).toEqual({ path: '/readyz', host: 'localhost' });
    expect(requestTarget('file:///etc/passwd', 'x')).toBeNull();
    expect(requestTarget('garbage', 'x')).toBeNull();
    expect(requestTarget('*', 'x')).toBeNull();
    expect(requestTarget('http:/metrics', 'x')).toBeNull();
    expect(requestTarget('http://user@evil.example@127.0.0.1:9883/metrics', 'x')).toBeNull();
    expect(requestTarget('http://127.0.0.1/metrics#frag', 'x')).toBeNull();
    // A bracketed host followed by more than a port is no loopback name.
    expect(isLoopbackHost(hostOfHostHeader('[::1]evil.example'))).toBe(false);
    expect(isLoopbackHost(hostOfHostHeader('[::1]:9883'))).toBe(true);
    // As written, like an origin form: /a/../metrics is no route either way.
    expect(requestTarget('http://127.0.0.1/a/../metrics', 'x')).toEqual({ path: '/a/../metrics', host: '127.0.0.1' });
  });
});

describe('AdminServer lifecycle', () => {
  it('rejects with START_BIND when the port is taken', async () => {
    const blocker: TcpServer = createTcpServer();
    cleanups.push(() => new Promise<void>((r) => blocker.close(() => r())));
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const port = (blocker.address() as { port: number }).port;
    const source = exampleSource();
    const metrics = new Metrics(source);
    cleanups.push(() => metrics.close());
    const config = { bind: `127.0.0.1:${port}`, address: { host: '127.0.0.1', port }, token: null, stateFile: null };
    const admin = new AdminServer({ config, source, actions: new RecordingActions(source), metrics, log: silentLogger() });
    cleanups.push(() => admin.close());
    const err = await admin.listen().then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(MqttLbError);
    expect((err as MqttLbError).code).toBe(ErrorCodes.START_BIND);
    expect((err as MqttLbError).message).toContain(`127.0.0.1:${port}`);
  });

  it('scrapers that pipeline GET /metrics and never read share one copy of each answer, and are closed after the send timeout', async () => {
    // An audit: 40 such connections with a 2.5 MB /metrics held ~380 MB until they left, and the memory ceiling then
    // refused every MQTT client.
    const source = exampleSource();
    // The exposition of a large balancer (~1,000 servers), built in no time: every answer is ready at once.
    const size = 2_500_000;
    const metrics = { text: async () => '#'.repeat(size - 1) + '\n', contentType: 'text/plain; version=0.0.4; charset=utf-8' } as unknown as Metrics;
    const admin = new AdminServer({ config: adminConfig(), source, actions: new RecordingActions(source), metrics, log: silentLogger(), sendTimeoutMs: 800 });
    cleanups.push(() => admin.close());
    await admin.listen();
    const before = process.memoryUsage().arrayBuffers;
    const socks = Array.from({ length: 10 }, () => {
      const sock = connect(admin.port, '127.0.0.1');
      sock.pause(); // reads nothing
      sock.on('error', () => {});
      // More than the kernel's buffers take (~10 MB on loopback): the rest waits in the admin server.
      sock.write('GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'.repeat(10));
      return sock;
    });
    cleanups.push(() => socks.forEach((x) => x.destroy()));
    await new Promise((r) => setTimeout(r, 400));
    // 100 answers of >2 MB each are written; what stays in this process is a few builds' worth, not one per answer.
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(6 * size);
    // Past the send timeout the server has closed them: reading now, each gets what the kernel held, then the end,
    // never all its answers.
    await new Promise((r) => setTimeout(r, 1500));
    const received = await Promise.all(
      socks.map(
        (sock) =>
          new Promise<number>((resolve) => {
            let bytes = 0;
            const t = setTimeout(() => resolve(-1), 5000);
            sock.on('data', (d: Buffer) => (bytes += d.length));
            sock.once('close', () => {
              clearTimeout(t);
              resolve(bytes);
            });
            sock.resume();
          }),
      ),
    );
    for (const bytes of received) {
      expect(bytes).toBeGreaterThanOrEqual(0); // closed, not still open after 5 s
      expect(bytes).toBeLessThan(10 * size);
    }
  });

  it('close() is idempotent, also before listen(), and frees the port', async () => {
    const source = exampleSource();
    const metrics = new Metrics(source);
    cleanups.push(() => metrics.close());
    const never = new AdminServer({ config: adminConfig(), source, actions: new RecordingActions(source), metrics, log: silentLogger() });
    await never.close();
    await never.close();

    const { admin, port } = await start(source);
    // A keep-alive connection must not hold close() up.
    const sock = connect(port, '127.0.0.1');
    cleanups.push(() => void sock.destroy());
    await new Promise<void>((r) => sock.once('connect', r));
    await Promise.all([admin.close(), admin.close()]);
    await admin.close();
    await expect(call(port, 'GET', '/healthz')).rejects.toThrow(/ECONNREFUSED/);
  });
});

describe('admin auth decisions', () => {
  it('recognises loopback hosts', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', '::1', 'localhost', 'LOCALHOST', '::ffff:127.0.0.1', 'a.localhost']) expect(isLoopbackHost(h), h).toBe(true);
    // However IPv6 writes them (an IPv6 audit: these were turned away).
    for (const h of ['0:0:0:0:0:0:0:1', '0::1', '::ffff:7f00:1', '::FFFF:127.0.0.1']) expect(isLoopbackHost(h), h).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', '128.0.0.1', 'evil.example', '127.0.0.1.evil.example', '', '::2', '::ffff:10.0.0.1', 'fe80::1%25lo', '::127.0.0.1']) expect(isLoopbackHost(h), h).toBe(false);
  });

  it('takes the host out of a Host header', () => {
    expect(hostOfHostHeader('127.0.0.1:9883')).toBe('127.0.0.1');
    expect(hostOfHostHeader('[::1]:9883')).toBe('::1');
    expect(hostOfHostHeader('localhost')).toBe('localhost');
    expect(hostOfHostHeader('::1')).toBe('::1');
  });

  it('compares bearer tokens exactly', () => {
    expect(bearerMatches('Bearer abc', 'abc')).toBe(true);
    expect(bearerMatches('bearer abc', 'abc')).toBe(true);
    expect(bearerMatches('Bearer abcd', 'abc')).toBe(false);
    expect(bearerMatches('Bearer ab', 'abc')).toBe(false);
    expect(bearerMatches('Bearer', 'abc')).toBe(false);
    expect(bearerMatches(undefined, 'abc')).toBe(false);
  });

  it('refuses the token-less API on a non-loopback bind', () => {
    const d = authorizeAdmin({ host: '10.0.0.1:9883' }, { token: null, loopbackBind: false });
    expect(d).toMatchObject({ ok: false, status: 403 });
    expect(authorizeAdmin({ host: '10.0.0.1:9883', authorization: 'Bearer t' }, { token: 't', loopbackBind: false })).toEqual({ ok: true });
  });

  it('same origin is the same scheme, host and port, however the default port is written (the admin port on 80)', () => {
    const opts = { token: null, loopbackBind: true };
    const from = (origin: string, host: string) => authorizeAdmin({ origin, host }, opts).ok;
    expect(from('http://127.0.0.1', '127.0.0.1:80')).toBe(true);
    expect(from('http://127.0.0.1:80', '127.0.0.1')).toBe(true);
    expect(from('http://LOCALHOST:9883', 'localhost:9883')).toBe(true);
    expect(from('http://[::1]', '[::1]:80')).toBe(true);
    expect(from('https://127.0.0.1', '127.0.0.1:443')).toBe(true);
    expect(from('http://127.0.0.1:8080', '127.0.0.1:80')).toBe(false);
    expect(from('http://127.0.0.1', '127.0.0.1:443')).toBe(false);
    expect(from('http://127.0.0.1.evil.example', '127.0.0.1')).toBe(false);
    expect(from('ftp://127.0.0.1', '127.0.0.1')).toBe(false);
    expect(from('http://127.0.0.1', '127.0.0.1/x')).toBe(false);
  });

  it('parses admin API paths', () => {
    expect(parseServerPath('/api/servers/brokers/b1/drain')).toEqual({ pool: 'brokers', server: 'b1', action: 'drain' });
    expect(parseServerPath('/api/servers/brokers/b1/ready')).toMatchObject({ action: 'ready' });
    expect(parseServerPath('/api/servers/brokers/b1/maint')).toMatchObject({ action: 'maint' });
    expect(parseServerPath('/api/servers/brokers/b1/up')).toBeNull();
    expect(parseServerPath('/api/servers/brokers//drain')).toBeNull();
    expect(parseServerPath('/api/servers/brokers/b1/drain/x')).toBeNull();
    expect(parseServerPath('/api/servers/%ZZ/b1/drain')).toBeNull();
  });
});
