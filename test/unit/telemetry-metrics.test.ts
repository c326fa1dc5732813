import { register as globalRegister } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { SERVER_STATES } from '../../src/balancer/server.js';
import { Metrics } from '../../src/telemetry/metrics.js';
import { REJECT_REASONS, SESSION_CLOSE_REASONS, TOLD_CLOSE_REASONS } from '../../src/telemetry/source.js';
import {
  FakeSession,
  FakeSource,
  failoverStatus,
  find,
  listenerStats,
  makeServer,
  parseExposition,
  value,
  type Exposition,
} from './telemetry-fixtures.js';

/** The contract table (design.md §6) plus the metrics named below it. */
const CONTRACT: Array<[name: string, type: string, labels: string[]]> = [
  ['mqtt_lb_connections_active', 'gauge', ['listener']],
  ['mqtt_lb_connections_total', 'counter', ['listener', 'outcome']],
  ['mqtt_lb_connect_rejected_total', 'counter', ['listener', 'reason']],
  ['mqtt_lb_server_up', 'gauge', ['pool', 'server']],
  ['mqtt_lb_server_sessions_active', 'gauge', ['pool', 'server']],
  ['mqtt_lb_server_bytes_total', 'counter', ['direction', 'pool', 'server']],
  ['mqtt_lb_health_checks_total', 'counter', ['pool', 'result', 'server']],
  ['mqtt_lb_health_check_duration_seconds', 'histogram', ['pool', 'server']],
  ['mqtt_lb_server_connect_duration_seconds', 'histogram', ['pool', 'server']],
  ['mqtt_lb_failover_state', 'gauge', ['state']],
  ['mqtt_lb_failover_transitions_total', 'counter', ['from', 'to']],
  ['mqtt_lb_server_state', 'gauge', ['pool', 'server', 'state']],
  ['mqtt_lb_config_reloads_total', 'counter', ['result']],
  ['mqtt_lb_build_info', 'gauge', ['version']],
  ['mqtt_lb_failover_adverts_dropped_total', 'counter', ['reason']],
  ['mqtt_lb_event_loop_lag_seconds', 'gauge', []],
  ['mqtt_lb_sessions_closed_total', 'counter', ['listener', 'reason']],
  ['mqtt_lb_disconnects_sent_total', 'counter', ['listener', 'reason']],
];

let metrics: Metrics | null = null;

afterEach(() => {
  metrics?.close();
  metrics = null;
});

function setup(): { source: FakeSource; m: Metrics } {
  const source = new FakeSource();
  source.listenerList = [listenerStats('mqtt')];
  source.poolList = [{ name: 'brokers', balance: 'client-id-hash', servers: [makeServer('brokers', 'b1'), makeServer('brokers', 'b2', 'down')] }];
  metrics = new Metrics(source);
  return { source, m: metrics };
}

async function scrape(m: Metrics): Promise<Exposition> {
  return parseExposition(await m.text());
}

describe('Metrics exposition', () => {
  it('has every contract metric with its exact type and label names', async () => {
    const { source, m } = setup();
    source.failoverStatus = failoverStatus('master');
    m.healthCheck('brokers', 'b1', 'ok', 0.003);
    m.serverConnect('brokers', 'b1', 0.001);
    // Let the event-loop monitor take a sample so the lag gauge has a value.
    await new Promise((r) => setTimeout(r, 60));
    const exp = await scrape(m);
    for (const [name, type, labels] of CONTRACT) {
      expect(exp.types.get(name), name).toBe(type);
      expect(exp.help.get(name)?.length ?? 0, `${name} help`).toBeGreaterThan(10);
      const series = type === 'histogram' ? find(exp, `${name}_count`) : find(exp, name);
      expect(series.length, `${name} has samples`).toBeGreaterThan(0);
      for (const s of series) expect(Object.keys(s.labels).sort(), name).toEqual(labels);
    }
    expect(value(exp, 'mqtt_lb_build_info', { version: '0.1.0-test' })).toBe(1);
    expect(value(exp, 'mqtt_lb_event_loop_lag_seconds')).toBeGreaterThanOrEqual(0);
  });

  it('includes the process and Node.js default metrics', async () => {
    const { m } = setup();
    const exp = await scrape(m);
    expect(exp.types.get('process_cpu_user_seconds_total')).toBe('counter');
    expect(exp.types.get('nodejs_eventloop_lag_seconds')).toBe('gauge');
    expect(exp.types.get('nodejs_heap_size_used_bytes')).toBe('gauge');
  });

  it('uses a private registry: two instances coexist and the global registry stays empty', async () => {
    const { m } = setup();
    const other = new Metrics(new FakeSource());
    try {
      expect(await m.text()).toContain('mqtt_lb_build_info');
      expect(await other.text()).toContain('mqtt_lb_build_info');
      expect(await globalRegister.metrics()).not.toContain('mqtt_lb_');
    } finally {
      other.close();
    }
  });

  it('exports listener connections, outcomes and rejections by reason', async () => {
    const { source, m } = setup();
    const l = source.listenerList[0]!;
    l.active = 7;
    l.outcomes = { proxied: 100, rejected: 12, failed: 3 };
    l.rejected.set('no_server', 4).set('listener_full', 5).set('server_connect_failed', 3);
    let exp = await scrape(m);
    expect(value(exp, 'mqtt_lb_connections_active', { listener: 'mqtt' })).toBe(7);
    expect(value(exp, 'mqtt_lb_connections_total', { listener: 'mqtt', outcome: 'proxied' })).toBe(100);
    expect(value(exp, 'mqtt_lb_connections_total', { listener: 'mqtt', outcome: 'rejected' })).toBe(12);
    expect(value(exp, 'mqtt_lb_connections_total', { listener: 'mqtt', outcome: 'failed' })).toBe(3);
    expect(value(exp, 'mqtt_lb_connect_rejected_total', { listener: 'mqtt', reason: 'no_server' })).toBe(4);
    expect(value(exp, 'mqtt_lb_connect_rejected_total', { listener: 'mqtt', reason: 'listener_full' })).toBe(5);
    expect(value(exp, 'mqtt_lb_connect_rejected_total', { listener: 'mqtt', reason: 'server_connect_failed' })).toBe(3);
    // Every contract reason is there from the start, at 0 until it happens.
    for (const reason of REJECT_REASONS) expect(find(exp, 'mqtt_lb_connect_rejected_total', { reason })).toHaveLength(1);
    expect(value(exp, 'mqtt_lb_connect_rejected_total', { listener: 'mqtt', reason: 'too_large' })).toBe(0);

    // Values are read at each scrape, not cached.
    l.rejected.set('no_server', 9);
    l.active = 2;
    exp = await scrape(m);
    expect(value(exp, 'mqtt_lb_connect_rejected_total', { listener: 'mqtt', reason: 'no_server' })).toBe(9);
    expect(value(exp, 'mqtt_lb_connections_active', { listener: 'mqtt' })).toBe(2);
  });

  it('exports proxied sessions closed by reason, and the 5.0 ones told why with a DISCONNECT, every reason from the start', async () => {
    const { source, m } = setup();
    const l = source.listenerList[0]!;
    l.closed.set('client_closed', 40).set('drain', 6).set('shutdown', 2);
    l.told.set('drain', 4);
    let exp = await scrape(m);
    expect(value(exp, 'mqtt_lb_sessions_closed_total', { listener: 'mqtt', reason: 'client_closed' })).toBe(40);
    expect(value(exp, 'mqtt_lb_sessions_closed_total', { listener: 'mqtt', reason: 'drain' })).toBe(6);
    expect(value(exp, 'mqtt_lb_disconnects_sent_total', { listener: 'mqtt', reason: 'drain' })).toBe(4);
    expect(value(exp, 'mqtt_lb_disconnects_sent_total', { listener: 'mqtt', reason: 'shutdown' })).toBe(0);
    expect(find(exp, 'mqtt_lb_sessions_closed_total', {}).map((s) => s.labels.reason).sort()).toEqual([...SESSION_CLOSE_REASONS].sort());
    // Only the balancer's own closes can be told.
    expect(find(exp, 'mqtt_lb_disconnects_sent_total', {}).map((s) => s.labels.reason).sort()).toEqual([...TOLD_CLOSE_REASONS].sort());
    l.closed.set('client_closed', 41);
    exp = await scrape(m);
    expect(value(exp, 'mqtt_lb_sessions_closed_total', { listener: 'mqtt', reason: 'client_closed' })).toBe(41);
  });

  it('counts live sessions and includes their bytes', async () => {
    const { source, m } = setup();
    const b1 = source.poolList[0]!.servers[0]!;
    const sessions = Array.from({ length: 5 }, (_, i) => new FakeSession(100 + i, 1000 + i, `secret-client-${i}`));
    for (const s of sessions) b1.sessions.add(s);
    b1.closedBytesIn = 50;
    b1.closedBytesOut = 70;
    let exp = await scrape(m);
    expect(value(exp, 'mqtt_lb_server_sessions_active', { pool: 'brokers', server: 'b1' })).toBe(5);
    expect(value(exp, 'mqtt_lb_server_sessions_active', { pool: 'brokers', server: 'b2' })).toBe(0);
    expect(value(exp, 'mqtt_lb_server_bytes_total', { pool: 'brokers', server: 'b1', direction: 'in' })).toBe(50 + 100 + 101 + 102 + 103 + 104);
    expect(value(exp, 'mqtt_lb_server_bytes_total', { pool: 'brokers', server: 'b1', direction: 'out' })).toBe(70 + 1000 + 1001 + 1002 + 1003 + 1004);

    // A live session keeps moving bytes: the counter follows without any event.
    sessions[0]!.bytesIn += 1_000_000;
    exp = await scrape(m);
    expect(value(exp, 'mqtt_lb_server_bytes_total', { pool: 'brokers', server: 'b1', direction: 'in' })).toBe(50 + 510 + 1_000_000);

    // Closing a session moves its bytes to the closed totals: the counter does not go back.
    b1.sessionClosed(sessions[0]!);
    exp = await scrape(m);
    expect(value(exp, 'mqtt_lb_server_sessions_active', { pool: 'brokers', server: 'b1' })).toBe(4);
    expect(value(exp, 'mqtt_lb_server_bytes_total', { pool: 'brokers', server: 'b1', direction: 'in' })).toBe(50 + 510 + 1_000_000);
  });

  it('never puts client data in labels and keeps the series count independent of sessions', async () => {
    const { source, m } = setup();
    const before = (await scrape(m)).samples.filter((s) => s.name.startsWith('mqtt_lb_')).length;
    const b1 = source.poolList[0]!.servers[0]!;
    for (let i = 0; i < 1000; i++) b1.sessions.add(new FakeSession(1, 1, `client-id-${i}`));
    const text = await m.text();
    expect(text).not.toContain('client-id-');
    const after = parseExposition(text).samples.filter((s) => s.name.startsWith('mqtt_lb_')).length;
    expect(after).toBe(before);
  });

  it('exports server state one-hot and up only for up', async () => {
    const { source, m } = setup();
    const [b1, b2] = source.poolList[0]!.servers as [ReturnType<typeof makeServer>, ReturnType<typeof makeServer>];
    const stateOf = (exp: Exposition, server: string): string[] =>
      SERVER_STATES.filter((state) => value(exp, 'mqtt_lb_server_state', { pool: 'brokers', server, state }) === 1);

    let exp = await scrape(m);
    expect(find(exp, 'mqtt_lb_server_state', { server: 'b1' })).toHaveLength(SERVER_STATES.length);
    expect(stateOf(exp, 'b1')).toEqual(['up']);
    expect(stateOf(exp, 'b2')).toEqual(['down']);
    expect(value(exp, 'mqtt_lb_server_up', { pool: 'brokers', server: 'b1' })).toBe(1);
    expect(value(exp, 'mqtt_lb_server_up', { pool: 'brokers', server: 'b2' })).toBe(0);

    b1.setAdmin('drain'); // admin state masks health
    b2.setHealth('up');
    exp = await scrape(m);
    expect(stateOf(exp, 'b1')).toEqual(['drain']);
    expect(value(exp, 'mqtt_lb_server_up', { pool: 'brokers', server: 'b1' })).toBe(0);
    expect(stateOf(exp, 'b2')).toEqual(['up']);

    b1.setAdmin('maint');
    b2.setHealth('unknown');
    exp = await scrape(m);
    expect(stateOf(exp, 'b1')).toEqual(['maint']);
    expect(stateOf(exp, 'b2')).toEqual(['unknown']);
  });

  it('records health checks and connect durations per server', async () => {
    const { m } = setup();
    m.healthCheck('brokers', 'b1', 'ok', 0.002);
    m.healthCheck('brokers', 'b1', 'ok', 0.004);
    m.healthCheck('brokers', 'b1', 'timeout', 1.0);
    m.healthCheck('brokers', 'b2', 'refused', 0.0005);
    m.healthCheck('brokers', 'b2', 'error', Number.NaN); // counted, but no nonsense duration
    m.serverConnect('brokers', 'b1', 0.01);
    m.serverConnect('brokers', 'b1', -1); // ignored
    const exp = await scrape(m);
    const hc = (server: string, result: string): number => value(exp, 'mqtt_lb_health_checks_total', { pool: 'brokers', server, result });
    expect(hc('b1', 'ok')).toBe(2);
    expect(hc('b1', 'timeout')).toBe(1);
    expect(hc('b1', 'bad_connack')).toBe(0); // zero-initialised
    expect(hc('b2', 'refused')).toBe(1);
    expect(hc('b2', 'error')).toBe(1);
    const dur = (suffix: string, server: string): number =>
      value(exp, `mqtt_lb_health_check_duration_seconds${suffix}`, { pool: 'brokers', server });
    expect(dur('_count', 'b1')).toBe(3);
    expect(dur('_sum', 'b1')).toBeCloseTo(1.006, 6);
    expect(dur('_count', 'b2')).toBe(1);
    expect(value(exp, 'mqtt_lb_health_check_duration_seconds_bucket', { pool: 'brokers', server: 'b1', le: '0.005' })).toBe(2);
    expect(value(exp, 'mqtt_lb_health_check_duration_seconds_bucket', { pool: 'brokers', server: 'b1', le: '+Inf' })).toBe(3);
    expect(value(exp, 'mqtt_lb_server_connect_duration_seconds_count', { pool: 'brokers', server: 'b1' })).toBe(1);
    expect(value(exp, 'mqtt_lb_server_connect_duration_seconds_sum', { pool: 'brokers', server: 'b1' })).toBeCloseTo(0.01, 9);
  });

  it('drops every series of a server removed by a reload', async () => {
    const { source, m } = setup();
    const b2 = source.poolList[0]!.servers[1]!;
    b2.sessions.add(new FakeSession(5, 5));
    m.healthCheck('brokers', 'b2', 'refused', 0.001);
    m.serverConnect('brokers', 'b2', 0.001);
    let exp = await scrape(m);
    expect(exp.samples.some((s) => s.labels.server === 'b2')).toBe(true);

    source.poolList[0]!.servers = [source.poolList[0]!.servers[0]!];
    exp = await scrape(m);
    expect(exp.samples.filter((s) => s.labels.server === 'b2')).toEqual([]);
    expect(value(exp, 'mqtt_lb_server_up', { pool: 'brokers', server: 'b1' })).toBe(1);

    // A whole pool removed, then the server coming back: it starts again from zero.
    source.poolList = [];
    exp = await scrape(m);
    expect(exp.samples.filter((s) => s.labels.pool === 'brokers')).toEqual([]);
    source.poolList = [{ name: 'brokers', balance: 'round-robin', servers: [makeServer('brokers', 'b2')] }];
    exp = await scrape(m);
    expect(value(exp, 'mqtt_lb_health_checks_total', { pool: 'brokers', server: 'b2', result: 'refused' })).toBe(0);
    expect(find(exp, 'mqtt_lb_server_connect_duration_seconds_count', { server: 'b2' })).toEqual([]);
  });

  it('drops a removed listener', async () => {
    const { source, m } = setup();
    source.listenerList.push(listenerStats('mqtts', { tls: true, active: 3 }));
    let exp = await scrape(m);
    expect(value(exp, 'mqtt_lb_connections_active', { listener: 'mqtts' })).toBe(3);
    source.listenerList.pop();
    exp = await scrape(m);
    expect(exp.samples.filter((s) => s.labels.listener === 'mqtts')).toEqual([]);
  });

  it('exports the workers serving and their restarts with workers; nothing in a single process', async () => {
    const { source, m } = setup();
    let exp = await scrape(m);
    expect(find(exp, 'mqtt_lb_workers')).toEqual([]);
    expect(find(exp, 'mqtt_lb_worker_restarts_total')).toEqual([]);
    let counts = { serving: 2, restarts: 0, exits: 0 };
    source.workerCounts = () => counts;
    exp = await scrape(m);
    expect(value(exp, 'mqtt_lb_workers', {})).toBe(2);
    expect(value(exp, 'mqtt_lb_worker_restarts_total', {})).toBe(0);
    expect(exp.types.get('mqtt_lb_workers')).toBe('gauge');
    expect(exp.types.get('mqtt_lb_worker_restarts_total')).toBe('counter');
    counts = { serving: 1, restarts: 3, exits: 4 };
    exp = await scrape(m);
    expect(value(exp, 'mqtt_lb_workers', {})).toBe(1);
    expect(value(exp, 'mqtt_lb_worker_restarts_total', {})).toBe(3);
  });

  it('exports the failover role, transitions and dropped adverts; nothing when failover is off', async () => {
    const { source, m } = setup();
    let exp = await scrape(m);
    expect(find(exp, 'mqtt_lb_failover_state')).toEqual([]);
    expect(find(exp, 'mqtt_lb_failover_transitions_total')).toEqual([]);
    expect(exp.types.get('mqtt_lb_failover_state')).toBe('gauge');

    source.failoverStatus = failoverStatus('backup');
    exp = await scrape(m);
    expect(value(exp, 'mqtt_lb_failover_state', { state: 'backup' })).toBe(1);
    for (const state of ['init', 'master', 'fault']) expect(value(exp, 'mqtt_lb_failover_state', { state })).toBe(0);
    expect(value(exp, 'mqtt_lb_failover_instance_state', { router_id: '51', state: 'backup' })).toBe(1);
    expect(value(exp, 'mqtt_lb_failover_priority', { router_id: '51' })).toBe(150);
    // Every peer heard, each with one state at 1 (a silent one `unknown`).
    expect(value(exp, 'mqtt_lb_failover_peer_state', { router_id: '51', peer: '10.0.0.2', state: 'backup' })).toBe(1);
    expect(value(exp, 'mqtt_lb_failover_peer_state', { router_id: '51', peer: '10.0.0.2', state: 'unknown' })).toBe(0);
    expect(value(exp, 'mqtt_lb_failover_peer_state', { router_id: '51', peer: '10.0.0.3', state: 'unknown' })).toBe(1);
    expect(find(exp, 'mqtt_lb_failover_peer_state')).toHaveLength(8);
    expect(value(exp, 'mqtt_lb_failover_transitions_total', { from: 'backup', to: 'master' })).toBe(2);
    expect(value(exp, 'mqtt_lb_failover_transitions_total', { from: 'init', to: 'backup' })).toBe(1);
    expect(value(exp, 'mqtt_lb_failover_adverts_dropped_total', { reason: 'bad_hmac' })).toBe(3);
    expect(value(exp, 'mqtt_lb_failover_adverts_dropped_total', { reason: 'router_id' })).toBe(0);
    expect(value(exp, 'mqtt_lb_failover_adverts_dropped_total', { reason: 'malformed' })).toBe(7);
    expect(value(exp, 'mqtt_lb_failover_track_script_failing', { script: 'gateway' })).toBe(1);
    expect(value(exp, 'mqtt_lb_failover_track_script_failing', { script: 'upstream' })).toBe(0);

    source.failoverStatus.instances[0]!.state = 'master';
    source.failoverStatus.stats.transitions.set('master>fault', 1);
    exp = await scrape(m);
    expect(value(exp, 'mqtt_lb_failover_state', { state: 'master' })).toBe(1);
    expect(value(exp, 'mqtt_lb_failover_state', { state: 'backup' })).toBe(0);
    expect(value(exp, 'mqtt_lb_failover_transitions_total', { from: 'master', to: 'fault' })).toBe(1);
  });

  it('counts config reloads by result, both zero at start', async () => {
    const { m } = setup();
    let exp = await scrape(m);
    expect(value(exp, 'mqtt_lb_config_reloads_total', { result: 'ok' })).toBe(0);
    expect(value(exp, 'mqtt_lb_config_reloads_total', { result: 'error' })).toBe(0);
    m.configReload('ok');
    m.configReload('error');
    m.configReload('ok');
    exp = await scrape(m);
    expect(value(exp, 'mqtt_lb_config_reloads_total', { result: 'ok' })).toBe(2);
    expect(value(exp, 'mqtt_lb_config_reloads_total', { result: 'error' })).toBe(1);
  });

  it('exports readiness', async () => {
    const { source, m } = setup();
    expect(value(await scrape(m), 'mqtt_lb_ready')).toBe(1);
    source.readiness = { ok: false, reason: 'pool brokers has no server up' };
    expect(value(await scrape(m), 'mqtt_lb_ready')).toBe(0);
  });

  it('reports an event-loop stall in the lag gauges', async () => {
    const { m } = setup();
    // The monitor records the gap between two of its ticks: let it tick once before the stall.
    await new Promise((r) => setTimeout(r, 60));
    await m.text(); // start a fresh window
    const until = Date.now() + 150;
    while (Date.now() < until) {
      /* block the event loop on purpose */
    }
    // Give the delay monitor's timer a chance to record the late tick.
    await new Promise((r) => setTimeout(r, 60));
    const exp = await scrape(m);
    expect(value(exp, 'mqtt_lb_event_loop_lag_max_seconds')).toBeGreaterThan(0.1);
    expect(value(exp, 'mqtt_lb_event_loop_lag_seconds')).toBeGreaterThanOrEqual(0);
  });

  it('declares the Prometheus text content type', () => {
    const { m } = setup();
    expect(m.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
  });
});
