import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { CheckResult, Server } from '../../src/balancer/server.js';
import type { PoolConfig } from '../../src/config/types.js';
import { HealthChecker, PROBE_NOW_MIN_GAP_MS } from '../../src/health/checker.js';
import { DEFAULT_RECHECK_GRACE_MS as RECHECK_GRACE_MS } from '../../src/health/recheck-grace.js';
import type { ProbeOutcome } from '../../src/health/probe-outcome.js';
import { FakePool, logSink, makeServer, poolConfig } from './health-fixtures.js';

/** A scripted probe: per server a queue of results; records starts, concurrency and signals. */
class ScriptedProbe {
  results = new Map<string, CheckResult[]>();
  fallback: CheckResult = 'ok';
  latencyMs = 5;
  starts: Array<{ server: string; at: number }> = [];
  running = new Map<string, number>();
  maxConcurrent = 0;
  signals: AbortSignal[] = [];
  /** Per server, the detail its failures carry (default `scripted <result>`). */
  detailFor = new Map<string, string>();
  /** Per server, how long its probes take (default latencyMs). */
  latencyFor = new Map<string, number>();

  readonly probe = (server: Server, _pool: PoolConfig, signal: AbortSignal): Promise<ProbeOutcome> => {
    this.starts.push({ server: server.name, at: Date.now() });
    this.signals.push(signal);
    const n = (this.running.get(server.name) ?? 0) + 1;
    this.running.set(server.name, n);
    this.maxConcurrent = Math.max(this.maxConcurrent, n);
    const result = this.results.get(server.name)?.shift() ?? this.fallback;
    return new Promise((resolve) => {
      const done = (r: ProbeOutcome): void => {
        this.running.set(server.name, this.running.get(server.name)! - 1);
        resolve(r);
      };
      const latency = this.latencyFor.get(server.name) ?? this.latencyMs;
      const t = setTimeout(() => done({ result, durationMs: latency, detail: result === 'ok' ? undefined : (this.detailFor.get(server.name) ?? `scripted ${result}`) }), latency);
      signal.addEventListener('abort', () => {
        clearTimeout(t);
        done({ result: 'error', durationMs: 0, detail: 'aborted' });
      });
    });
  };

  startsOf(name: string): number[] {
    return this.starts.filter((s) => s.server === name).map((s) => s.at);
  }
}

function setup(health: Partial<PoolConfig['health']> = {}, names = ['a', 'b']) {
  const servers = names.map((n) => makeServer(n, 'unknown'));
  const pool = new FakePool(poolConfig({}, { interval: 1000, timeout: 500, ...health }), servers);
  const scripted = new ScriptedProbe();
  const { log, lines } = logSink();
  const results: Array<{ server: string; result: CheckResult }> = [];
  const checker = new HealthChecker(pool, {
    log,
    probe: scripted.probe,
    random: () => 0.5, // no jitter: exact intervals
    onResult: (s, r) => results.push({ server: s.name, result: r.result }),
  });
  const changes = () => lines.filter((l) => l.msg === 'server state changed');
  return { servers, pool, scripted, checker, lines, results, changes };
}

describe('HealthChecker', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date', 'performance'], now: 0 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it.each(['EMFILE', 'EADDRNOTAVAIL'])('a probe that could not open a socket here (%s) is recorded but is no verdict on the server', async (code) => {
    const { servers, scripted, checker, results, lines } = setup({ fall: 2 }, ['a']);
    checker.start();
    await vi.advanceTimersByTimeAsync(5);
    expect(servers[0]!.health).toBe('up');
    scripted.results.set('a', ['error', 'error', 'error']);
    scripted.detailFor.set('a', code);
    await vi.advanceTimersByTimeAsync(3000);
    expect(results.filter((r) => r.result === 'error')).toHaveLength(3); // the metrics still see them
    expect(servers[0]!.health).toBe('up');
    expect(lines.filter((l) => l.msg === 'health probe could not run here: no verdict')).toHaveLength(3);
    scripted.results.set('a', ['error', 'error']);
    scripted.detailFor.set('a', 'ECONNRESET'); // the server's doing: counts
    await vi.advanceTimersByTimeAsync(2000);
    expect(servers[0]!.health).toBe('down');
    await checker.close();
  });

  it('local errors are no verdict however long they last (a host out of ports for minutes marks no server down)', async () => {
    const { servers, scripted, checker, lines } = setup({ fall: 2 }, ['a']);
    checker.start();
    await vi.advanceTimersByTimeAsync(5);
    expect(servers[0]!.health).toBe('up');
    scripted.fallback = 'error';
    scripted.detailFor.set('a', 'EADDRNOTAVAIL');
    await vi.advanceTimersByTimeAsync(120_000);
    expect(servers[0]!.health).toBe('up');
    expect(lines.filter((l) => l.msg === 'health probe could not run here: no verdict').length).toBe(120);
    await checker.close();
  });

  // A health audit: an API key rotated in a healthUrl was taken for a move (`from` and `to` alike once masked), and the
  // new key's first 401 took the server down at once, without `fall`.
  it('a reload that changes only the credentials of a healthUrl is no move: the verdict stays, `fall` counts', async () => {
    const { servers, scripted, checker, lines, pool } = setup({ type: 'http', fall: 3, rise: 1 }, ['a']);
    servers[0]!.config = { ...servers[0]!.config, healthUrl: 'http://emqx:OLDKEY@127.0.0.1:18083/api/v5/status' };
    checker.start();
    await vi.advanceTimersByTimeAsync(10);
    expect(servers[0]!.health).toBe('up');
    servers[0]!.config = { ...servers[0]!.config, healthUrl: 'http://emqx:NEWKEY@127.0.0.1:18083/api/v5/status' };
    scripted.fallback = 'refused';
    checker.reconfigure(pool);
    expect(servers[0]!.health).toBe('up');
    expect(lines.filter((l) => l.msg === 'server moved: health checked anew')).toEqual([]);
    await vi.advanceTimersByTimeAsync(1100);
    expect(servers[0]!.health).toBe('up'); // one failure of three
    await checker.close();
  });

  // An ops audit: `mqtt` to `http` by reload dropped the verdict of each server with a healthUrl ("server moved"),
  // which went down at its first failed probe, without `fall` (configuration.md: the verdict is kept).
  it('a reload from one probe type to another keeps the verdict of a server with a healthUrl: `fall` counts; and back', async () => {
    const { servers, scripted, checker, lines, pool } = setup({ type: 'mqtt', fall: 3, rise: 1 }, ['a']);
    servers[0]!.config = { ...servers[0]!.config, healthUrl: 'http://127.0.0.1:18083/health' };
    checker.start();
    await vi.advanceTimersByTimeAsync(10);
    expect(servers[0]!.health).toBe('up');
    pool.config = { ...pool.config, health: { ...pool.config.health, type: 'http' } };
    scripted.fallback = 'http_status';
    checker.reconfigure(pool);
    expect(servers[0]!.health).toBe('up');
    await vi.advanceTimersByTimeAsync(2100);
    expect(servers[0]!.health).toBe('up'); // two failures of three
    await vi.advanceTimersByTimeAsync(1000);
    expect(servers[0]!.health).toBe('down');
    pool.config = { ...pool.config, health: { ...pool.config.health, type: 'tcp' } };
    checker.reconfigure(pool);
    expect(servers[0]!.health).toBe('down');
    expect(lines.filter((l) => l.msg === 'server moved: health checked anew')).toEqual([]);
    // Its healthUrl changed while probed by http: that is a move.
    pool.config = { ...pool.config, health: { ...pool.config.health, type: 'http' } };
    checker.reconfigure(pool);
    servers[0]!.config = { ...servers[0]!.config, healthUrl: 'http://127.0.0.1:18084/health' };
    checker.reconfigure(pool);
    expect(servers[0]!.health).toBe('unknown');
    expect(lines.filter((l) => l.msg === 'server moved: health checked anew').map((l) => l.to)).toEqual(['127.0.0.1:1883 http://127.0.0.1:18084/health']);
    await checker.close();
  });

  it("a healthUrl that moves is logged without its credentials and its query's values", async () => {
    const { servers, checker, lines, pool } = setup({ type: 'http', fall: 3, rise: 1 }, ['a']);
    servers[0]!.config = { ...servers[0]!.config, healthUrl: 'http://emqx:KEY1@127.0.0.1:18083/status?token=SECRET1' };
    checker.start();
    await vi.advanceTimersByTimeAsync(10);
    servers[0]!.config = { ...servers[0]!.config, healthUrl: 'http://emqx:KEY1@127.0.0.1:18084/status?token=SECRET2' };
    checker.reconfigure(pool);
    const moved = lines.filter((l) => l.msg === 'server moved: health checked anew');
    expect(moved.map((l) => [l.from, l.to])).toEqual([['127.0.0.1:1883 http://***@127.0.0.1:18083/status?token=***', '127.0.0.1:1883 http://***@127.0.0.1:18084/status?token=***']]);
    await checker.close();
  });

  it('a reload that moves a server (another address) drops its verdict: unknown until the new address is probed, at once', async () => {
    const { servers, scripted, checker, lines, pool } = setup({ fall: 3, rise: 2 }, ['a', 'b']);
    checker.start();
    await vi.advanceTimersByTimeAsync(10);
    expect(servers.map((s) => s.health)).toEqual(['up', 'up']);
    const before = scripted.startsOf('a').length;
    servers[0]!.config = { ...servers[0]!.config, address: '127.0.0.1:1999', port: 1999 };
    scripted.results.set('a', ['refused']);
    expect(servers[0]!.lastCheck).not.toBeNull();
    checker.reconfigure(pool);
    expect(servers[0]!.health).toBe('unknown'); // no new sessions on the old verdict
    expect(servers[0]!.lastCheck).toBeNull(); // nor a check result about the old address in /api/status
    expect(scripted.startsOf('a').length).toBe(before + 1); // probed at once
    await vi.advanceTimersByTimeAsync(10);
    expect(servers[0]!.health).toBe('down'); // one failure decides a first verdict (fall 3 counted from up would not)
    expect(servers[1]!.health).toBe('up');
    expect(lines.filter((l) => l.msg === 'server moved: health checked anew').map((l) => [l.server, l.from, l.to])).toEqual([['a', '127.0.0.1:1883', '127.0.0.1:1999']]);
    checker.reconfigure(pool); // same address again: nothing new
    expect(scripted.startsOf('a').length).toBe(before + 1);
    await checker.close();
  });

  it('at start, `pool has no server up` waits for every first verdict: a dead server answering first is no outage', async () => {
    const { servers, scripted, checker, lines } = setup({ fall: 1, rise: 1 }, ['dead', 'good']);
    const outages = () => lines.filter((l) => l.msg === 'pool has no server up: its clients are refused (CONNACK server unavailable)').length;
    scripted.results.set('dead', ['refused', 'refused', 'refused']);
    scripted.latencyFor.set('dead', 1);
    scripted.latencyFor.set('good', 30);
    checker.start();
    await vi.advanceTimersByTimeAsync(5);
    expect(servers.map((s) => s.health)).toEqual(['down', 'unknown']);
    await vi.advanceTimersByTimeAsync(40);
    expect(servers.map((s) => s.health)).toEqual(['down', 'up']);
    expect(outages()).toBe(0);
    scripted.results.set('good', ['refused']);
    await vi.advanceTimersByTimeAsync(1000);
    expect(servers.map((s) => s.health)).toEqual(['down', 'down']);
    expect(outages()).toBe(1);
    await checker.close();
  });

  it('logs `pool has no server up` once per outage, not once per server that goes down', async () => {
    const { servers, scripted, checker, lines } = setup({ fall: 1, rise: 1 }, ['a', 'b', 'c']);
    const outages = () => lines.filter((l) => l.msg === 'pool has no server up: its clients are refused (CONNACK server unavailable)').length;
    scripted.fallback = 'refused';
    checker.start();
    await vi.advanceTimersByTimeAsync(5);
    expect(servers.map((s) => s.health)).toEqual(['down', 'down', 'down']);
    expect(outages()).toBe(1);
    scripted.results.set('b', ['ok']);
    await vi.advanceTimersByTimeAsync(1000);
    expect(servers[1]!.health).toBe('up');
    // Its end said too (an admin audit: neither outage line had one), once.
    expect(lines.filter((l) => l.msg === 'pool has a server up again')).toMatchObject([{ level: 30, pool: 'brokers', server: 'b' }]);
    await vi.advanceTimersByTimeAsync(1000); // b refused again: a second outage
    expect(servers[1]!.health).toBe('down');
    expect(outages()).toBe(2);
    await checker.close();
  });

  // A health audit: dead, then a reload to `none` (held up: the pool serves), then back to probing with the broker
  // still dead: the second outage went unsaid.
  it('an outage after a spell of `health.type: none` is said again', async () => {
    const { servers, scripted, checker, lines, pool } = setup({ fall: 1, rise: 1 }, ['a']);
    const outages = () => lines.filter((l) => l.msg === 'pool has no server up: its clients are refused (CONNACK server unavailable)').length;
    scripted.fallback = 'refused';
    checker.start();
    await vi.advanceTimersByTimeAsync(5);
    expect(outages()).toBe(1);
    const probing = pool.config;
    pool.config = poolConfig({}, { type: 'none' });
    checker.reconfigure(pool);
    expect(servers[0]!.health).toBe('up');
    // That outage is over, and said (a re-audit: held up by `none`, it had no end line).
    expect(lines.filter((l) => l.msg === 'pool has a server up again')).toMatchObject([{ level: 30, pool: 'brokers', server: null }]);
    pool.config = probing;
    checker.reconfigure(pool);
    await vi.advanceTimersByTimeAsync(1100);
    expect(servers[0]!.health).toBe('down');
    expect(outages()).toBe(2);
    await checker.close();
  });

  it('probes every server at once at start, then every interval; first pass marks up', async () => {
    const { servers, scripted, checker, results } = setup();
    checker.start();
    checker.start(); // idempotent
    expect(scripted.starts.map((s) => s.server)).toEqual(['a', 'b']);
    await vi.advanceTimersByTimeAsync(5);
    expect(servers.map((s) => s.health)).toEqual(['up', 'up']);
    expect(servers[0]!.lastCheck).toMatchObject({ result: 'ok', durationMs: 5, at: 5 });
    await vi.advanceTimersByTimeAsync(3000);
    expect(scripted.startsOf('a')).toEqual([0, 1000, 2000, 3000]);
    expect(results.filter((r) => r.server === 'a')).toHaveLength(4);
    await checker.close();
  });

  it('a wall-clock step back (NTP, a restored VM) during a probe does not delay the next one', async () => {
    const { scripted, checker } = setup({}, ['a']);
    scripted.latencyMs = 300;
    checker.start();
    await vi.advanceTimersByTimeAsync(100);
    vi.setSystemTime(Date.now() - 3_600_000); // mid-probe: the wall clock goes back an hour, the monotonic one does not
    await vi.advanceTimersByTimeAsync(3000);
    expect(scripted.starts).toHaveLength(4); // at 0, 1000, 2000 and 3000 of the monotonic clock
    await checker.close();
  });

  it('applies rise/fall and logs each state change once', async () => {
    const { servers, scripted, checker, changes } = setup({}, ['a']);
    scripted.results.set('a', ['ok', 'timeout', 'refused', 'ok', 'timeout', 'timeout', 'bad_connack', 'ok', 'ok', 'ok']);
    checker.start();
    const seen: string[] = [];
    for (let i = 0; i < 10; i++) {
      await vi.advanceTimersByTimeAsync(i === 0 ? 5 : 1000);
      seen.push(servers[0]!.health);
    }
    expect(seen).toEqual(['up', 'up', 'up', 'up', 'up', 'up', 'down', 'down', 'up', 'up']);
    expect(changes().map((l) => [l.from, l.to, l.result, l.detail])).toEqual([
      ['unknown', 'up', 'ok', null],
      ['up', 'down', 'bad_connack', 'scripted bad_connack'],
      ['down', 'up', 'ok', null],
    ]);
    expect(changes()[0]).toMatchObject({ pool: 'brokers', server: 'a', level: 30 });
    await checker.close();
  });

  it('a first failure marks down at once (no clients before a pass)', async () => {
    const { servers, scripted, checker } = setup({}, ['a']);
    scripted.results.set('a', ['refused']);
    checker.start();
    await vi.advanceTimersByTimeAsync(5);
    expect(servers[0]!.health).toBe('down');
    await checker.close();
  });

  it('never runs two probes at once for a server, even when a probe outlasts the interval', async () => {
    const { scripted, checker } = setup({}, ['a']);
    scripted.latencyMs = 1500;
    checker.start();
    for (let i = 0; i < 10; i++) void checker.probeNow((checker as unknown as { pool: FakePool }).pool.servers[0]!);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(scripted.maxConcurrent).toBe(1);
    // start to start: max(interval, probe duration) (+1 ms: Node runs a 0 ms timer after 1 ms)
    const starts = scripted.startsOf('a');
    expect(starts.length).toBeGreaterThanOrEqual(6);
    for (let i = 1; i < starts.length; i++) {
      expect(starts[i]! - starts[i - 1]!).toBeGreaterThanOrEqual(1500);
      expect(starts[i]! - starts[i - 1]!).toBeLessThanOrEqual(1501);
    }
    await checker.close();
  });

  it('probeNow joins a running probe and otherwise runs one early, spaced by the minimum gap', async () => {
    const { servers, scripted, checker } = setup({}, ['a']);
    const a = servers[0]!;
    checker.start();
    const joined = checker.probeNow(a);
    expect(scripted.starts).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(5);
    await joined;
    // Too soon after the start at 0: deferred to 0 + gap.
    let done = false;
    void checker.probeNow(a).then(() => (done = true));
    await vi.advanceTimersByTimeAsync(PROBE_NOW_MIN_GAP_MS - 6);
    expect(scripted.starts).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1 + 5);
    expect(scripted.startsOf('a')).toEqual([0, PROBE_NOW_MIN_GAP_MS]);
    expect(done).toBe(true);
    // Later: runs at once, and the regular schedule continues from it.
    await vi.advanceTimersByTimeAsync(400);
    const at = Date.now();
    void checker.probeNow(a);
    expect(scripted.startsOf('a').at(-1)).toBe(at);
    await vi.advanceTimersByTimeAsync(1000);
    expect(scripted.startsOf('a').at(-1)).toBe(at + 1000);
    await checker.close();
  });

  it('does not probe a server in maint; back to ready, the first probe decides afresh', async () => {
    const { servers, scripted, checker, pool } = setup({}, ['a', 'b']);
    const [a] = servers as [Server, Server];
    a.setAdmin('maint');
    checker.start();
    await vi.advanceTimersByTimeAsync(3005);
    expect(scripted.startsOf('a')).toEqual([]);
    expect(scripted.startsOf('b').length).toBe(4);
    a.setAdmin('ready');
    expect(scripted.startsOf('a')).toEqual([3005]);
    await vi.advanceTimersByTimeAsync(5);
    expect(a.state).toBe('up');
    // Into maint mid-probe: the probe is aborted, health forgotten (hidden by maint).
    await vi.advanceTimersByTimeAsync(996);
    expect(scripted.running.get('a')).toBe(1);
    a.setAdmin('maint');
    expect(scripted.signals.at(-1)!.aborted).toBe(true);
    expect(a.health).toBe('unknown');
    await vi.advanceTimersByTimeAsync(5000);
    expect(scripted.startsOf('a')).toEqual([3005, 4005]);
    expect(pool.servers).toHaveLength(2);
    await checker.close();
  });

  it('health.type none: every server up, no probes', async () => {
    const { servers, scripted, checker, changes } = setup({ type: 'none' });
    checker.start();
    await vi.advanceTimersByTimeAsync(5000);
    expect(servers.map((s) => s.health)).toEqual(['up', 'up']);
    expect(scripted.starts).toHaveLength(0);
    expect(changes()).toHaveLength(2);
    await checker.close();
  });

  it('reconfigure: added servers are probed, removed ones are no longer, a shorter interval applies now', async () => {
    const { servers, scripted, checker, pool } = setup({}, ['a', 'b']);
    checker.start();
    await vi.advanceTimersByTimeAsync(500);
    const c = makeServer('c', 'unknown');
    pool.servers = [servers[0]!, c];
    pool.config = poolConfig({}, { interval: 200, timeout: 100 });
    checker.reconfigure(pool);
    expect(scripted.startsOf('c')).toEqual([500]);
    expect(servers[1]!.listenerCount('state')).toBe(0);
    await vi.advanceTimersByTimeAsync(1000);
    expect(scripted.startsOf('b')).toEqual([0]);
    expect(scripted.startsOf('a').length).toBeGreaterThanOrEqual(5); // every 200 ms now
    await checker.close();
  });

  it('reconfigure to type none holds servers up and stops probing', async () => {
    const { servers, scripted, checker, pool } = setup({}, ['a']);
    scripted.fallback = 'refused';
    checker.start();
    await vi.advanceTimersByTimeAsync(5);
    expect(servers[0]!.health).toBe('down');
    pool.config = poolConfig({}, { type: 'none' });
    checker.reconfigure(pool);
    expect(servers[0]!.health).toBe('up');
    const n = scripted.starts.length;
    await vi.advanceTimersByTimeAsync(5000);
    expect(scripted.starts.length).toBe(n);
    await checker.close();
  });

  it('reconfigure to type none after the pool already held the server up (as Pool.reconfigure does) still says so', async () => {
    const { servers, scripted, checker, pool, changes } = setup({}, ['a', 'b']);
    scripted.fallback = 'refused';
    checker.start();
    await vi.advanceTimersByTimeAsync(5);
    expect(servers.map((s) => s.health)).toEqual(['down', 'down']);
    const before = new Map(servers.map((s) => [s, s.health] as const));
    const logged = changes().length;
    pool.config = poolConfig({}, { type: 'none' });
    for (const s of servers) s.setHealth('up'); // what Pool.reconfigure does first
    checker.reconfigure(pool, before);
    const lines = changes().slice(logged);
    expect(lines.map((l) => [l.server, l.from, l.to, l.detail])).toEqual([
      ['a', 'down', 'up', 'health checks disabled'],
      ['b', 'down', 'up', 'health checks disabled'],
    ]);
    checker.reconfigure(pool, new Map(servers.map((s) => [s, s.health] as const))); // already up: nothing more
    expect(changes().length).toBe(logged + 2);
    await checker.close();
  });

  it('close() aborts running probes, stops all loops and is idempotent', async () => {
    const { servers, scripted, checker, results } = setup();
    checker.start();
    const closing = checker.close();
    expect(checker.close()).toBe(closing);
    expect(scripted.signals.every((s) => s.aborted)).toBe(true);
    await closing;
    await vi.advanceTimersByTimeAsync(10_000);
    expect(scripted.starts).toHaveLength(2);
    expect(results).toHaveLength(0); // cancelled probes are not results
    for (const s of servers) expect(s.listenerCount('state')).toBe(0);
    await checker.probeNow(servers[0]!); // resolves at once
  });

  it('a probe that throws counts as error and the loop goes on', async () => {
    const servers = [makeServer('a', 'unknown')];
    const pool = new FakePool(poolConfig({}, { interval: 1000 }), servers);
    const { log, lines } = logSink();
    let calls = 0;
    const checker = new HealthChecker(pool, {
      log,
      random: () => 0.5,
      probe: () => {
        calls++;
        throw new Error('boom');
      },
    });
    checker.start();
    await vi.advanceTimersByTimeAsync(2500);
    expect(calls).toBe(3);
    expect(servers[0]!.lastCheck?.result).toBe('error');
    expect(lines.some((l) => l.msg === 'health probe threw')).toBe(true);
    await checker.close();
  });

  it('fastInterval while a verdict is in the making, downInterval while down, interval otherwise (HAProxy fastinter / downinter)', async () => {
    const { servers, scripted, checker } = setup({ interval: 1000, fastInterval: 200, downInterval: 3000, timeout: 100, rise: 2, fall: 3 }, ['a']);
    scripted.results.set('a', ['ok', 'timeout', 'timeout', 'timeout', 'refused', 'ok', 'ok', 'ok']);
    checker.start();
    await vi.advanceTimersByTimeAsync(9000);
    // up at 0; failures at 1000 (interval), 1200 and 1400 (fastInterval: down); 4400 (downInterval); a pass at 7400,
    // the second at 7600 (fastInterval: up); then interval again.
    expect(scripted.startsOf('a')).toEqual([0, 1000, 1200, 1400, 4400, 7400, 7600, 8600]);
    expect(servers[0]!.health).toBe('up');
    await checker.close();
  });

  it('reconfigure: a shorter downInterval applies now to a server that is down', async () => {
    const { pool, scripted, checker } = setup({ interval: 1000, downInterval: 60_000 }, ['a']);
    scripted.fallback = 'refused';
    checker.start();
    await vi.advanceTimersByTimeAsync(5000);
    expect(scripted.startsOf('a')).toEqual([0]);
    pool.config = poolConfig({}, { interval: 1000, downInterval: 2000 });
    checker.reconfigure(pool);
    await vi.advanceTimersByTimeAsync(2000);
    expect(scripted.startsOf('a')).toEqual([0, 5000, 7000]); // overdue under the new spacing: at once, then every 2 s
    await checker.close();
  });

  describe('recheckAfterOutage (failover left FAULT: this host had no network)', () => {
    it('probes afresh what the outage judged: a server marked down during it takes its next result at once', async () => {
      const { servers, scripted, checker, results } = setup({ interval: 1000, fall: 1, rise: 2 }, ['a', 'b', 'c']);
      const [a, b, c] = servers as [Server, Server, Server];
      checker.start();
      await vi.advanceTimersByTimeAsync(5);
      expect(servers.map((s) => s.health)).toEqual(['up', 'up', 'up']);
      scripted.results.set('c', ['refused', 'refused']); // down before the outage (a verdict about c), and at 2000
      await vi.advanceTimersByTimeAsync(1000);
      expect(c.health).toBe('down');
      await vi.advanceTimersByTimeAsync(100);
      checker.outageBegan(); // at 1105
      await vi.advanceTimersByTimeAsync(100);
      checker.outageBegan(); // idempotent: the outage began at the first call
      scripted.results.set('a', ['timeout']); // down during it
      scripted.latencyFor.set('b', 800); // b's probe at 2000 hangs until 2800 (its SYN went nowhere)
      scripted.results.set('b', ['timeout']);
      await vi.advanceTimersByTimeAsync(800); // 2005
      scripted.latencyFor.delete('b');
      expect(a.health).toBe('down');
      expect(b.health).toBe('up');
      const before = results.length;
      await vi.advanceTimersByTimeAsync(95); // 2100: the carrier is back
      expect(checker.recheckAfterOutage()).toBe(3);
      expect(scripted.startsOf('a').at(-1)).toBe(2100);
      expect(scripted.startsOf('b').at(-1)).toBe(2100); // b's hanging probe abandoned and started anew
      expect(scripted.startsOf('c').at(-1)).toBe(2100);
      await vi.advanceTimersByTimeAsync(5);
      expect(a.health).toBe('up'); // one pass, not rise (2)
      expect(b.health).toBe('up'); // the abandoned probe's timeout never counted
      expect(c.health).toBe('down'); // down from before: one pass of rise 2
      expect(results.slice(before).map((r) => `${r.server} ${r.result}`).sort()).toEqual(['a ok', 'b ok', 'c ok']);
      expect(checker.recheckAfterOutage()).toBe(0); // a second instance leaving FAULT: nothing noted any more
      await vi.advanceTimersByTimeAsync(1000);
      expect(c.health).toBe('up');
      await checker.close();
    });

    it('forgets failures counted during the outage against a server still up; leaves settled servers and maint alone', async () => {
      const { servers, scripted, checker } = setup({ interval: 1000, fall: 3 }, ['a', 'b', 'm']);
      const [a, , m] = servers as [Server, Server, Server];
      checker.start();
      await vi.advanceTimersByTimeAsync(5);
      m.setAdmin('maint');
      expect(checker.recheckAfterOutage()).toBe(0); // no outage noted (a FAULT this process asked for)
      checker.outageBegan();
      scripted.results.set('a', ['timeout', 'timeout']);
      await vi.advanceTimersByTimeAsync(2000); // a: two failures of fall 3
      expect(a.health).toBe('up');
      expect(checker.recheckAfterOutage()).toBe(1); // a only: b is up with nothing counted and idle, m in maint
      await vi.advanceTimersByTimeAsync(5);
      scripted.results.set('a', ['timeout', 'timeout']);
      await vi.advanceTimersByTimeAsync(2000);
      expect(a.health).toBe('up'); // 2 failures after the recheck: the 2 before it were forgotten
      expect(scripted.startsOf('m')).toEqual([0]);
      await checker.close();
    });

    // A failover test: the link was back, but the ARP lookup begun while it was out failed 3 ms later, and the packets
    // queued behind it with it: the recheck probes got EHOSTUNREACH, the brokers went down and the VIP moved.
    it('for RECHECK_GRACE_MS after the network is back, a probe that fails as if the path were still out is made again, no verdict; settled() waits for the verdict', async () => {
      const { servers, scripted, checker, results, lines } = setup({ interval: 2000, fall: 1, rise: 2 }, ['a', 'b', 'c']);
      const [a, b, c] = servers as [Server, Server, Server];
      checker.start();
      await vi.advanceTimersByTimeAsync(5);
      checker.outageBegan();
      scripted.results.set('a', ['timeout']);
      await vi.advanceTimersByTimeAsync(2000); // 2005: a down during the outage
      expect(a.health).toBe('down');
      await vi.advanceTimersByTimeAsync(95); // 2100: back
      scripted.results.set('a', ['error', 'timeout', 'ok']);
      scripted.detailFor.set('a', 'EHOSTUNREACH');
      scripted.results.set('b', ['refused']); // an answer from b's host: the path works, a verdict at once
      scripted.results.set('c', ['timeout']);
      expect(checker.recheckAfterOutage()).toBe(1); // a only: b and c up, idle and with nothing counted
      let settled = false;
      void checker.settled(10_000).then(() => (settled = true));
      await vi.advanceTimersByTimeAsync(PROBE_NOW_MIN_GAP_MS + 1);
      expect(a.health).toBe('down'); // no verdict yet: down as before
      expect(scripted.startsOf('a').slice(-2)).toEqual([2100, 2100 + PROBE_NOW_MIN_GAP_MS]);
      expect(settled).toBe(false);
      await vi.advanceTimersByTimeAsync(PROBE_NOW_MIN_GAP_MS + 4);
      expect(scripted.startsOf('a').at(-1)).toBe(2100 + 2 * PROBE_NOW_MIN_GAP_MS);
      expect(a.health).toBe('up'); // the third: one pass, as after any outage
      expect(settled).toBe(true);
      expect(results.filter((r) => r.server === 'a').slice(-3).map((r) => r.result)).toEqual(['error', 'timeout', 'ok']); // the metrics see all three
      expect(lines.filter((l) => String(l.msg).startsWith('health probe failed while')).map((l) => `${String(l.result)} ${String(l.detail)}`)).toEqual(['error EHOSTUNREACH', 'timeout EHOSTUNREACH']);
      // b's regular probe at 4000, inside the window: refused is an answer, down at fall 1.
      await vi.advanceTimersByTimeAsync(4010 - Date.now());
      expect(b.health).toBe('down');
      // c's regular probe at 4000 times out, inside the window: made again, and its retry passes.
      expect(c.health).toBe('up');
      await vi.advanceTimersByTimeAsync(PROBE_NOW_MIN_GAP_MS);
      expect(scripted.startsOf('c').slice(-2)).toEqual([4000, 4000 + PROBE_NOW_MIN_GAP_MS]);
      expect(results.filter((r) => r.server === 'c').slice(-2).map((r) => r.result)).toEqual(['timeout', 'ok']);
      expect(c.health).toBe('up');
      await checker.close();
    });

    it('inside the window, a timeout after the connection was made is a verdict: a broker that took it and never answered is judged at once', async () => {
      const server = makeServer('a', 'unknown');
      const pool = new FakePool(poolConfig({}, { interval: 1000, timeout: 500, fall: 1, rise: 1 }), [server]);
      const { log } = logSink();
      let connected = false;
      const starts: number[] = [];
      const probe = (): Promise<ProbeOutcome> => {
        starts.push(Date.now());
        const outcome: ProbeOutcome = { result: 'timeout', durationMs: 500, detail: connected ? 'no answer within 500 ms' : 'no connection within 500 ms', ...(connected ? { connected: true } : {}) };
        return new Promise((resolve) => setTimeout(() => resolve(outcome), 500));
      };
      const checker = new HealthChecker(pool, { log, probe, random: () => 0.5 });
      checker.start();
      await vi.advanceTimersByTimeAsync(600);
      expect(server.health).toBe('down');
      checker.outageBegan();
      checker.recheckAfterOutage(); // at 600: no connection (its SYN went nowhere)
      let settled = false;
      void checker.settled(10_000).then(() => (settled = true));
      await vi.advanceTimersByTimeAsync(100);
      connected = true; // the probe made again from here connects, and its broker does not answer
      await vi.advanceTimersByTimeAsync(410); // 1110
      expect(starts.at(-1)).toBe(1101); // no connection: no verdict, made again at once (a timer of 0 runs 1 ms later here)
      expect(settled).toBe(false);
      await vi.advanceTimersByTimeAsync(500); // 1610: connected, no answer: a verdict (down), not made again
      expect(settled).toBe(true);
      await vi.advanceTimersByTimeAsync(390);
      expect(starts.filter((t) => t > 1101 && t < 2000)).toEqual([]);
      await checker.close();
    });

    it('inside the window, a probe that could not run here (EADDRNOTAVAIL: its address coming back) is made again too, and holds settled() until a verdict', async () => {
      const { servers, scripted, checker, lines } = setup({ interval: 5000, fall: 1, rise: 1 }, ['a']);
      const [a] = servers as [Server];
      checker.start();
      await vi.advanceTimersByTimeAsync(5);
      checker.outageBegan();
      scripted.results.set('a', ['timeout']);
      await vi.advanceTimersByTimeAsync(5000); // 5005: down during the outage
      expect(a.health).toBe('down');
      scripted.results.set('a', ['error', 'ok']);
      scripted.detailFor.set('a', 'EADDRNOTAVAIL');
      expect(checker.recheckAfterOutage()).toBe(1);
      let settled = false;
      void checker.settled(10_000).then(() => (settled = true));
      await vi.advanceTimersByTimeAsync(10);
      expect(settled).toBe(false); // no verdict: made again in 250 ms, not at the 5 s interval
      await vi.advanceTimersByTimeAsync(PROBE_NOW_MIN_GAP_MS);
      expect(scripted.startsOf('a').slice(-2)).toEqual([5005, 5005 + PROBE_NOW_MIN_GAP_MS]);
      expect(a.health).toBe('up');
      expect(settled).toBe(true);
      expect(lines.filter((l) => l.msg === 'health probe could not run here: no verdict')).toHaveLength(0); // said at debug
      await checker.close();
    });

    /** One server `a`, up, probed every second (timeout 500 ms, fall 1); an outage from 5 ms, over at 505. */
    async function upThroughOutage(graceMs?: number) {
      const { servers, scripted, checker } = setup({ interval: 1000, timeout: 500, fall: 1 }, ['a']);
      checker.start();
      await vi.advanceTimersByTimeAsync(5);
      checker.outageBegan();
      await vi.advanceTimersByTimeAsync(500);
      checker.recheckAfterOutage(graceMs); // at 505, a up and idle: no probe now
      return { a: servers[0]!, scripted, checker };
    }

    it('the window is the one given (a host whose neighbour lookups take longer): a path failure 4 s after the return is still made again under 6 s', async () => {
      const { a, scripted, checker } = await upThroughOutage(6000);
      await vi.advanceTimersByTimeAsync(3500); // 4005: past the default 3 s
      scripted.results.set('a', ['error', 'ok']);
      scripted.detailFor.set('a', 'EHOSTUNREACH');
      await vi.advanceTimersByTimeAsync(5300 - Date.now()); // the probe at 5000 fails, inside 6 s: made again at 5250, passes
      expect(scripted.startsOf('a').filter((t) => t >= 5000)).toEqual([5000, 5000 + PROBE_NOW_MIN_GAP_MS]);
      expect(a.health).toBe('up');
      await checker.close();
    });

    it('a path failure after RECHECK_GRACE_MS counts again, and one inside it is made again until the window has passed', async () => {
      const { a, scripted, checker } = await upThroughOutage();
      scripted.results.set('a', Array<CheckResult>(20).fill('timeout'));
      scripted.latencyFor.set('a', 500);
      let settled = false;
      void checker.settled(60_000).then(() => (settled = true));
      await vi.advanceTimersByTimeAsync(RECHECK_GRACE_MS); // 3505: probes from 1000 on time out and are made again
      expect(a.health).toBe('up');
      const inWindow = scripted.startsOf('a').filter((t) => t > 505 && t < 505 + RECHECK_GRACE_MS);
      // Each at once after the last one's timeout (a timer of 0 runs 1 ms later here).
      expect(inWindow.map((t, i) => t - 1000 - 500 * i)).toEqual([0, 1, 2, 3, 4]);
      await vi.advanceTimersByTimeAsync(600); // the probe at 3500, after the window, counts
      expect(a.health).toBe('down');
      expect(settled).toBe(true);
      await checker.close();
    });
  });
});
