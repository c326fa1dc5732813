import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { AdminServer } from '../../src/telemetry/admin-server.js';
import { Metrics } from '../../src/telemetry/metrics.js';
import { fetchReadiness, fetchStatus, fetchWorkers, formatDuration, formatStatus, statusUrl } from '../../src/telemetry/status-client.js';
import { buildStatus, type StatusJson } from '../../src/telemetry/status-json.js';
import { FakeSession, FakeSource, RecordingActions, adminConfig, failoverStatus, listenerStats, makeServer, silentLogger } from './telemetry-fixtures.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

/** One instant for the whole file, so formatted ages are exact. */
const NOW = Date.now();

function source(): FakeSource {
  const s = new FakeSource();
  s.version = '0.1.0';
  s.startedAt = NOW - 3723_000;
  s.listenerList = [listenerStats('mqtt', { active: 12 }), listenerStats('mqtts', { bind: '0.0.0.0:8883', tls: true, active: 3 })];
  const b1 = makeServer('brokers', 'b1', 'up', { address: '10.0.0.11:1883' });
  for (let i = 0; i < 9; i++) b1.sessions.add(new FakeSession());
  b1.lastCheck = { result: 'ok', at: NOW - 800, durationMs: 3 };
  const b2 = makeServer('brokers', 'b2', 'down', { address: '10.0.0.12:1883' });
  b2.lastCheck = { result: 'timeout', at: NOW - 1500, durationMs: 1000 };
  const b3 = makeServer('brokers', 'b3', 'unknown', { address: '10.0.0.13:1883', backup: true });
  b3.setAdmin('maint');
  s.poolList = [{ name: 'brokers', balance: 'client-id-hash', servers: [b1, b2, b3] }];
  return s;
}

async function listenHttp(handler: Parameters<typeof createHttpServer>[1]): Promise<{ server: HttpServer; port: number }> {
  const server = createHttpServer(handler);
  cleanups.push(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as { port: number }).port };
}

/** A listening admin server (with its metrics) over `src`, closed after the test. */
async function startAdmin(src: FakeSource): Promise<AdminServer> {
  const metrics = new Metrics(src);
  cleanups.push(() => metrics.close());
  const admin = new AdminServer({ config: adminConfig(), source: src, actions: new RecordingActions(src), metrics, log: silentLogger() });
  cleanups.push(() => admin.close());
  await admin.listen();
  return admin;
}

describe('fetchStatus', () => {
  it('reads /api/status from a running admin server', async () => {
    const src = source();
    src.failoverStatus = failoverStatus('backup');
    const admin = await startAdmin(src);
    const got = await fetchStatus(`http://127.0.0.1:${admin.port}`);
    const want = buildStatus(src);
    const stripClock = (s: StatusJson): unknown => JSON.parse(JSON.stringify(s), (k, v: unknown) => (k === 'uptimeSeconds' || k === 'ageMs' ? 0 : v));
    expect(stripClock(got)).toEqual(stripClock(want));
    // Without a scheme, as `mqtt-lb status --admin 127.0.0.1:9883` would be typed.
    expect((await fetchStatus(`127.0.0.1:${admin.port}`)).version).toBe('0.1.0');
  });

  it('reads /readyz beside it: ready, or why not; null when there is no usable answer', async () => {
    const src = source();
    const admin = await startAdmin(src);
    expect(await fetchReadiness(`127.0.0.1:${admin.port}`)).toEqual({ ok: true });
    src.readiness = { ok: false, reason: 'stopping' };
    expect(await fetchReadiness(`http://127.0.0.1:${admin.port}/`)).toEqual({ ok: false, reason: 'stopping' });
    const { port } = await listenHttp((_req, res) => res.writeHead(404).end('no such page'));
    expect(await fetchReadiness(`http://127.0.0.1:${port}`)).toBeNull();
  });

  // An older audit: `mqtt-lb status` said nothing about workers. /api/status keeps the contract's keys; /metrics has them.
  it('reads the workers from /metrics beside it: serving and restarted; null with one process', async () => {
    const src = source();
    const admin = await startAdmin(src);
    expect(await fetchWorkers(`127.0.0.1:${admin.port}`)).toBeNull();
    src.workerCounts = () => ({ serving: 2, restarts: 1, exits: 1 });
    expect(await fetchWorkers(`http://127.0.0.1:${admin.port}/`)).toEqual({ serving: 2, restarts: 1 });
    const { port } = await listenHttp((_req, res) => res.writeHead(404).end('no such page'));
    expect(await fetchWorkers(`http://127.0.0.1:${port}`)).toBeNull();
  });

  it('fails clearly when nothing listens', async () => {
    const tcp: TcpServer = createTcpServer();
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
    const port = (tcp.address() as { port: number }).port;
    await new Promise<void>((r) => tcp.close(() => r()));
    await expect(fetchStatus(`http://127.0.0.1:${port}`)).rejects.toThrow(/cannot reach the mqtt-lb admin server at http:\/\/127\.0\.0\.1:\d+\/api\/status/);
  });

  it('fails on a non-200 answer and on a non-status document', async () => {
    const { port } = await listenHttp((req, res) => {
      if (req.url === '/a/api/status') res.writeHead(503).end('not ready');
      else if (req.url === '/esc/api/status') res.writeHead(500).end('\u001b[2Jgone');
      else if (req.url === '/web/api/status') res.writeHead(404).end(`<!DOCTYPE html>\n<html>\n${'<p>Not found</p>\n'.repeat(40)}</html>\n`);
      else res.writeHead(200, { 'content-type': 'application/json' }).end('{"hello":1}');
    });
    await expect(fetchStatus(`http://127.0.0.1:${port}/a`)).rejects.toThrow(/HTTP 503: not ready$/);
    // Another web server's page (a wrong port) is not printed to the terminal.
    await expect(fetchStatus(`http://127.0.0.1:${port}/web`)).rejects.toThrow(/HTTP 404 \(an HTML page: is this the admin port of mqtt-lb\?\)$/);
    await expect(fetchStatus(`http://127.0.0.1:${port}`)).rejects.toThrow(/did not answer an mqtt-lb status document/);
    await expect(fetchStatus(`http://127.0.0.1:${port}/esc`)).rejects.toThrow(/HTTP 500: \\x1b\[2Jgone$/);
  });

  it('gives up after its timeout when the server never answers', async () => {
    const sockets = new Set<Socket>();
    const tcp: TcpServer = createTcpServer((s) => sockets.add(s)); // accepts, never answers
    cleanups.push(() => new Promise<void>((r) => { for (const s of sockets) s.destroy(); tcp.close(() => r()); }));
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
    const port = (tcp.address() as { port: number }).port;
    await expect(fetchStatus(`http://127.0.0.1:${port}`, 300)).rejects.toThrow(/cannot reach/);
  });

  it('stops reading an answer past 16 MiB (another program at that address), with an error saying so', async () => {
    const chunk = Buffer.alloc(1024 * 1024, 0x20);
    const { port } = await listenHttp((_req, res) => {
      let sent = 0;
      res.writeHead(200, { 'content-type': 'application/json' });
      const more = (): void => {
        // Bounded: far past the cap, in case the client kept reading.
        while (sent < 64 * 1024 * 1024) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', more);
        }
        res.end();
      };
      res.on('close', () => (sent = Infinity));
      more();
    });
    await expect(fetchStatus(`http://127.0.0.1:${port}`, 5000)).rejects.toThrow(`http://127.0.0.1:${port}/api/status answered more than 16 MiB`);
    expect(await fetchReadiness(`http://127.0.0.1:${port}`, 5000)).toBeNull();
  });
});

describe('statusUrl', () => {
  it('accepts the usual ways to write the admin address', () => {
    expect(statusUrl('http://127.0.0.1:9883').href).toBe('http://127.0.0.1:9883/api/status');
    expect(statusUrl('http://127.0.0.1:9883/').href).toBe('http://127.0.0.1:9883/api/status');
    expect(statusUrl('127.0.0.1:9883').href).toBe('http://127.0.0.1:9883/api/status');
    expect(statusUrl('https://lb.example/mqtt-lb').href).toBe('https://lb.example/mqtt-lb/api/status');
    expect(statusUrl('[::1]:9883').href).toBe('http://[::1]:9883/api/status');
    // The endpoint itself, as one would give it to curl: not /api/status/api/status.
    expect(statusUrl('http://127.0.0.1:9883/api/status').href).toBe('http://127.0.0.1:9883/api/status');
    expect(statusUrl('127.0.0.1:9883/api/status/').href).toBe('http://127.0.0.1:9883/api/status');
  });

  it("a bare host means the admin server's default port (9883), not http's 80; a URL with a scheme is taken as written", () => {
    expect(statusUrl('127.0.0.1').href).toBe('http://127.0.0.1:9883/api/status');
    expect(statusUrl('lb1.example').href).toBe('http://lb1.example:9883/api/status');
    expect(statusUrl('[::1]').href).toBe('http://[::1]:9883/api/status');
    // A bare IPv6 address is a host too (an IPv6 audit: `--admin ::1` was refused).
    expect(statusUrl('::1').href).toBe('http://[::1]:9883/api/status');
    expect(statusUrl('fd00::5').href).toBe('http://[fd00::5]:9883/api/status');
    expect(statusUrl('127.0.0.1:80').href).toBe('http://127.0.0.1/api/status');
    expect(statusUrl('http://127.0.0.1').href).toBe('http://127.0.0.1/api/status');
  });

  it('refuses what no admin server can be: another scheme, no host', () => {
    expect(() => statusUrl('ftp://127.0.0.1:9883')).toThrow('not an admin URL: ftp://127.0.0.1:9883');
    expect(() => statusUrl('http://')).toThrow('not an admin URL');
  });
});

describe('formatStatus', () => {
  it('prints role, listeners, pools and servers as aligned tables', () => {
    const text = formatStatus(buildStatus(source(), NOW));
    const lines = text.split('\n');
    expect(lines[0]).toBe('mqtt-lb 0.1.0  up 1h 2m  role standalone (failover off)');
    expect(text).not.toContain('FAILOVER');
    expect(text).toContain('LISTENERS\nNAME   BIND          TLS  SESSIONS\nmqtt   0.0.0.0:1883  no         12\nmqtts  0.0.0.0:8883  yes         3\n');
    expect(text).toContain('POOL brokers  client-id-hash  1/3 up');
    const b1 = lines.find((l) => l.startsWith('b1 '))!;
    expect(b1.split(/\s{2,}/)).toEqual(['b1', '10.0.0.11:1883', 'up', 'ready', '1', '9', 'ok 3ms, 800ms ago']);
    const b2 = lines.find((l) => l.startsWith('b2 '))!;
    expect(b2.split(/\s{2,}/)).toEqual(['b2', '10.0.0.12:1883', 'down', 'ready', '1', '0', 'timeout 1000ms, 1.5s ago']);
    const b3 = lines.find((l) => l.startsWith('b3 '))!;
    expect(b3.split(/\s{2,}/)).toEqual(['b3 (backup)', '10.0.0.13:1883', 'maint', 'maint', '1', '0', 'never']);
    // Columns line up: every row of the server table starts its ADDRESS column at the same offset.
    const header = lines.find((l) => l.startsWith('SERVER'))!;
    const col = header.indexOf('ADDRESS');
    for (const l of [b1, b2, b3]) expect(l.slice(col, col + 3)).toBe('10.');
  });

  it('says on its first line whether the instance is ready, when /readyz was read', () => {
    const status = buildStatus(source(), NOW);
    expect(formatStatus(status, { ok: true }).split('\n')[0]).toBe('mqtt-lb 0.1.0  up 1h 2m  role standalone (failover off)  ready');
    expect(formatStatus(status, { ok: false, reason: 'stopping' }).split('\n')[0]).toBe('mqtt-lb 0.1.0  up 1h 2m  role standalone (failover off)  NOT READY: stopping');
  });

  it('says on its first line how many workers serve, when there are workers', () => {
    const status = buildStatus(source(), NOW);
    expect(formatStatus(status, { ok: true }, { serving: 2, restarts: 0 }).split('\n')[0]).toBe('mqtt-lb 0.1.0  up 1h 2m  role standalone (failover off)  workers 2 serving  ready');
    expect(formatStatus(status, null, { serving: 1, restarts: 3 }).split('\n')[0]).toBe('mqtt-lb 0.1.0  up 1h 2m  role standalone (failover off)  workers 1 serving, 3 restarted');
  });

  it('shows control characters in what the server sent as \\xNN (a wrong or intercepted endpoint must not drive the terminal)', () => {
    const status = buildStatus(source(), NOW);
    status.version = '\u001b]0;pwned\u0007';
    status.pools[0]!.servers[0]!.name = 'b1\u001b[2J';
    const text = formatStatus(status, { ok: false, reason: 'x\u009by' });
    expect(text).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/);
    expect(text.split('\n')[0]).toBe('mqtt-lb \\x1b]0;pwned\\x07  up 1h 2m  role standalone (failover off)  NOT READY: x\\x9by');
    expect(text).toMatch(/\nb1\\x1b\[2J\s+10\.0\.0\.11:1883/);
    // Bidirectional-text controls would reorder what the line shows; a number where text belongs is shown as text.
    status.pools[0]!.servers[0]!.name = 'b1\u202egnp.exe';
    (status.pools[0]!.servers[1] as unknown as { name: number }).name = 7;
    const shown = formatStatus(status);
    expect(shown).toContain('b1\\u{202e}gnp.exe');
    expect(shown).toMatch(/\n7\s+10\.0\.0\.12:1883/);
    // Zero-width and separator characters; a last check that is text; a duration no server sends.
    status.pools[0]!.servers[0]!.name = 'b\u200b1\u2028\ufeff';
    (status.pools[0]!.servers[1] as unknown as { lastCheck: string }).lastCheck = 'weird';
    status.uptimeSeconds = 1e308;
    const odd = formatStatus(status);
    expect(odd).toContain('b\\u{200b}1\\u{2028}\\u{feff}');
    // Characters that hide text: a soft hyphen, an interlinear annotation mark, a tag character (outside the BMP).
    status.pools[0]!.servers[0]!.name = 'b\u00ad1\ufff9\u{e0041}';
    expect(formatStatus(status)).toContain('b\\u{ad}1\\u{fff9}\\u{e0041}');
    expect(odd).toMatch(/\n7 .*weird\n/);
    expect(odd.split('\n')[0]).toContain('up 1e+308s');
    expect(odd).not.toContain('NaN');
  });

  it('shows the failover role and peer', () => {
    const src = source();
    src.failoverStatus = failoverStatus('master');
    const text = formatStatus(buildStatus(src, NOW));
    expect(text.split('\n')[0]).toContain('role master');
    expect(text).toMatch(/FAILOVER\nROUTER\s+STATE\s+PRIORITY\s+VIPS\s+PEER\s+PEER STATE\s+LAST ADVERT\n51\s+master\s+150\s+192\.0\.2\.10\/24\s+10\.0\.0\.2\s+backup\s+40ms ago\n/);
  });

  it('formats durations', () => {
    expect(formatDuration(0)).toBe('0s');
    expect(formatDuration(59.9)).toBe('59s');
    expect(formatDuration(61)).toBe('1m 1s');
    expect(formatDuration(3 * 86400 + 7200)).toBe('3d 2h');
  });
});
