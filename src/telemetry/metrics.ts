/**
 * Every metric of the telemetry contract (design.md §6), in a private prom-client registry.
 *
 * Two kinds of metric live here:
 * - snapshots of live state (connections, sessions, bytes, server state, failover): the data path keeps
 *   plain numbers and `collect()` copies them into the registry at scrape time, so nothing of ours runs
 *   per packet. Snapshot counters are absolute values read from the app's own counters; they are exposed
 *   with `# TYPE ... counter` (see SnapshotCounter).
 * - events reported by the app at most once per connection or per probe (`serverConnect`,
 *   `healthCheck`, `configReload`), kept in ordinary prom-client counters and histograms, except the
 *   per-connection connect duration (series-histogram.ts: no label hashing per observation).
 *
 * Servers removed by a reload disappear from the exposition: snapshots are rebuilt from scratch on every
 * collect, and event series of servers no longer in any pool are removed then.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { SERVER_STATES, type CheckResult, type Server } from '../balancer/server.js';
import {
  ADVERT_DROP_REASONS,
  CHECK_RESULTS,
  FAILOVER_STATES,
  PEER_VIEW_STATES,
  REJECT_REASONS,
  SESSION_CLOSE_REASONS,
  TOLD_CLOSE_REASONS,
  type TelemetrySource,
} from './source.js';
import { LoopLagSampler, worstWindow } from './loop-lag.js';
import { SeriesHistogram, type HistogramSeries } from './series-histogram.js';
import { CombinedProcessMetrics, createProcessRegistry } from './process-metrics.js';

/** A server's event series: probe results seen, and its connect-duration series once it has one. */
interface ServerEvents {
  results: Set<CheckResult>;
  connect: HistogramSeries | null;
}

type GaugeConfig<T extends string> = ConstructorParameters<typeof Gauge<T>>[0];

/**
 * A counter whose absolute value is copied from the app at scrape time. prom-client's Counter can only
 * `inc`, so this is a Gauge (which can `set`) that declares itself a counter in the exposition and
 * to cluster aggregation (which then sums it across workers).
 */
class SnapshotCounter<T extends string> extends Gauge<T> {
  constructor(config: GaugeConfig<T>) {
    super(config);
    (this as unknown as { type: string }).type = 'counter';
  }
}

/** Health check and server connect durations: 1 ms .. 10 s covers every sane timeout. */
const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** How often the event-loop lag sampler ticks. */

export type ConfigReloadResult = 'ok' | 'error';

export class Metrics {
  private readonly source: TelemetrySource;
  private readonly registry = new Registry();
  /** prom-client's default metrics; with workers combined with theirs at scrape time. */
  private readonly processMetrics: CombinedProcessMetrics;
  private readonly loopLagSampler = new LoopLagSampler();
  private closed = false;

  /** pool -> server -> its event series, to remove those of servers a reload removed. */
  private readonly eventSeries = new Map<string, Map<string, ServerEvents>>();

  private readonly buildInfo: Gauge<'version'>;
  private readonly ready: Gauge<string>;
  private readonly connectionsActive: Gauge<'listener'>;
  private readonly connectionsTotal: SnapshotCounter<'listener' | 'outcome'>;
  private readonly connectRejected: SnapshotCounter<'listener' | 'reason'>;
  private readonly sessionsClosed: SnapshotCounter<'listener' | 'reason'>;
  private readonly disconnectsSent: SnapshotCounter<'listener' | 'reason'>;
  private readonly serverUp: Gauge<'pool' | 'server'>;
  private readonly serverState: Gauge<'pool' | 'server' | 'state'>;
  private readonly serverSessions: Gauge<'pool' | 'server'>;
  private readonly serverMaxConnections: Gauge<'pool' | 'server'>;
  private readonly serverBytes: SnapshotCounter<'pool' | 'server' | 'direction'>;
  private readonly serverConnectErrors: SnapshotCounter<'pool' | 'server'>;
  private readonly healthChecks: Counter<'pool' | 'server' | 'result'>;
  private readonly healthDuration: Histogram<'pool' | 'server'>;
  private readonly connectDuration: SeriesHistogram<'pool' | 'server'>;
  private readonly failoverState: Gauge<'state'>;
  private readonly failoverInstanceState: Gauge<'router_id' | 'state'>;
  private readonly failoverPriority: Gauge<'router_id'>;
  private readonly failoverPeerState: Gauge<'router_id' | 'peer' | 'state'>;
  private readonly failoverTransitions: SnapshotCounter<'from' | 'to'>;
  private readonly failoverTrackScriptFailing: Gauge<'script'>;
  private readonly advertsDropped: SnapshotCounter<'reason'>;
  private readonly configReloads: Counter<'result'>;
  private readonly loopLag: Gauge<string>;
  private readonly overloaded: Gauge<string>;
  private readonly memoryInUse: Gauge<string>;
  private readonly memoryMax: Gauge<string>;
  private readonly loopLagMax: Gauge<string>;

  constructor(source: TelemetrySource) {
    this.source = source;
    const registers = [this.registry];

    this.buildInfo = new Gauge({
      name: 'mqtt_lb_build_info',
      help: 'Always 1; the version label says which mqtt-lb is running.',
      labelNames: ['version'],
      registers,
    });
    this.buildInfo.set({ version: source.version }, 1);

    this.ready = new Gauge({
      name: 'mqtt_lb_ready',
      help: '1 when /readyz answers 200 (listeners bound and every pool a listener uses has a server taking new sessions), else 0.',
      registers,
    });

    this.connectionsActive = new Gauge({
      name: 'mqtt_lb_connections_active',
      help: 'Client connections currently open on the listener.',
      labelNames: ['listener'],
      registers,
    });
    this.connectionsTotal = new SnapshotCounter({
      name: 'mqtt_lb_connections_total',
      help: 'Client connections ended or routed, by outcome: proxied, rejected (refused with a CONNACK or closed for a reason), failed (server dial or session broke after routing).',
      labelNames: ['listener', 'outcome'],
      registers,
    });
    this.connectRejected = new SnapshotCounter({
      name: 'mqtt_lb_connect_rejected_total',
      help: 'Client connections refused or closed before reaching a server, by reason.',
      labelNames: ['listener', 'reason'],
      registers,
    });
    this.sessionsClosed = new SnapshotCounter({
      name: 'mqtt_lb_sessions_closed_total',
      help: 'Proxied sessions ended, by reason: their client or server closed (client_closed, server_closed) or broke (client_error, server_error), no CONNACK from the server (server_connack_timeout), or the balancer closed them (server_down, rebalance, drain, failover, shutdown, takeover, idle).',
      labelNames: ['listener', 'reason'],
      registers,
    });
    this.disconnectsSent = new SnapshotCounter({
      name: 'mqtt_lb_disconnects_sent_total',
      help: 'MQTT 5.0 sessions the balancer closed that it told why with a DISCONNECT first, by reason (the Reason Code follows it).',
      labelNames: ['listener', 'reason'],
      registers,
    });

    this.serverUp = new Gauge({
      name: 'mqtt_lb_server_up',
      help: '1 when the server state is up, else 0.',
      labelNames: ['pool', 'server'],
      registers,
    });
    this.serverState = new Gauge({
      name: 'mqtt_lb_server_state',
      help: 'Server state: 1 for the current one of unknown, up, down, drain, maint; 0 for the others.',
      labelNames: ['pool', 'server', 'state'],
      registers,
    });
    this.serverSessions = new Gauge({
      name: 'mqtt_lb_server_sessions_active',
      help: 'Client sessions currently proxied to the server.',
      labelNames: ['pool', 'server'],
      registers,
    });
    this.serverMaxConnections = new Gauge({
      name: 'mqtt_lb_server_max_connections',
      help: 'The server\'s maxConnections from lb.yaml (0 = no cap): sessions_active at this value refuses its new clients (server_full).',
      labelNames: ['pool', 'server'],
      registers,
    });
    this.serverBytes = new SnapshotCounter({
      name: 'mqtt_lb_server_bytes_total',
      help: 'Bytes proxied, including sessions still open: in = client to server, out = server to client.',
      labelNames: ['pool', 'server', 'direction'],
      registers,
    });
    this.serverConnectErrors = new SnapshotCounter({
      name: 'mqtt_lb_server_connect_errors_total',
      help: 'Dials to the server for a client session that failed (refused, reset, timed out, unresolved), retried or not.',
      labelNames: ['pool', 'server'],
      registers,
    });

    this.healthChecks = new Counter({
      name: 'mqtt_lb_health_checks_total',
      help: 'Health probes completed, by result: ok, timeout, refused, bad_connack, http_status, error.',
      labelNames: ['pool', 'server', 'result'],
      registers,
    });
    this.healthDuration = new Histogram({
      name: 'mqtt_lb_health_check_duration_seconds',
      help: 'Duration of health probes, whatever their result.',
      labelNames: ['pool', 'server'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    // Observed once per proxied connection: a series kept per server instead of prom-client's label hashing.
    this.connectDuration = new SeriesHistogram({
      name: 'mqtt_lb_server_connect_duration_seconds',
      help: 'Time to establish the TCP connection to a server for a client session.',
      labelNames: ['pool', 'server'],
      buckets: DURATION_BUCKETS,
      registers,
    });

    this.failoverState = new Gauge({
      name: 'mqtt_lb_failover_state',
      help: 'Failover role: 1 for the current one of init, backup, master, fault (with several instances: how many are in that state). Absent when failover is off.',
      labelNames: ['state'],
      registers,
    });
    this.failoverInstanceState = new Gauge({
      name: 'mqtt_lb_failover_instance_state',
      help: 'Failover role per VRRP instance: 1 for the current state, 0 for the others.',
      labelNames: ['router_id', 'state'],
      registers,
    });
    this.failoverPriority = new Gauge({
      name: 'mqtt_lb_failover_priority',
      help: 'Priority advertised by the instance (configured priority minus tracking penalties).',
      labelNames: ['router_id'],
      registers,
    });
    this.failoverPeerState = new Gauge({
      name: 'mqtt_lb_failover_peer_state',
      help: 'Each failover peer heard since the start, per instance: 1 for the state of its last advert (backup, master, fault), or unknown once it has been silent for longer than a Master_Down_Interval.',
      labelNames: ['router_id', 'peer', 'state'],
      registers,
    });
    this.failoverTransitions = new SnapshotCounter({
      name: 'mqtt_lb_failover_transitions_total',
      help: 'Failover state transitions, by from and to state.',
      labelNames: ['from', 'to'],
      registers,
    });
    this.failoverTrackScriptFailing = new Gauge({
      name: 'mqtt_lb_failover_track_script_failing',
      help: 'Each failover.track.scripts entry: 1 while it fails (FAULT with weight 0, else the priority lowered by its weight), 0 while it passes.',
      labelNames: ['script'],
      registers,
    });
    this.advertsDropped = new SnapshotCounter({
      name: 'mqtt_lb_failover_adverts_dropped_total',
      help: 'Failover adverts received and dropped, by reason: bad_hmac, replay, router_id, malformed.',
      labelNames: ['reason'],
      registers,
    });

    this.configReloads = new Counter({
      name: 'mqtt_lb_config_reloads_total',
      help: 'Configuration reloads (SIGHUP), by result: ok, or error (the running configuration was kept).',
      labelNames: ['result'],
      registers,
    });
    this.configReloads.inc({ result: 'ok' }, 0);
    this.configReloads.inc({ result: 'error' }, 0);

    this.loopLag = new Gauge({
      name: 'mqtt_lb_event_loop_lag_seconds',
      help: '99th percentile of the event-loop lag (how late a 20 ms timer runs) since the previous scrape; with workers, the worst of the primary and the proxy workers.',
      registers,
    });
    this.loopLagMax = new Gauge({
      name: 'mqtt_lb_event_loop_lag_max_seconds',
      help: 'Largest event-loop lag (how late a 20 ms timer runs) since the previous scrape; with workers, the worst of all processes.',
      registers,
    });
    this.processMetrics = new CombinedProcessMetrics(createProcessRegistry(this.loopLagSampler));

    this.overloaded = new Gauge({
      name: 'mqtt_lb_overloaded',
      help: '1 from when the memory in use reaches 95 % of limits.maxMemory until it is below 90 % (new connections are closed at accept), else 0; with workers, 1 when any worker is.',
      registers,
    });
    this.memoryInUse = new Gauge({
      name: 'mqtt_lb_memory_in_use_bytes',
      help: 'What limits.maxMemory is compared with: JavaScript heap in use plus Buffers (with workers, summed over the proxy workers).',
      registers,
    });
    this.memoryMax = new Gauge({
      name: 'mqtt_lb_memory_max_bytes',
      help: 'The memory ceiling in bytes (limits.maxMemory; with workers, the sum of their shares, each at least 64 MiB); 0 = no ceiling.',
      registers,
    });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** Prometheus text exposition, read from the live state now. */
  async text(): Promise<string> {
    this.collect();
    const own = await this.registry.metrics();
    return own + (await this.processMetrics.text(this.source.workerProcessMetrics?.() ?? []));
  }

  // ---- events, at most once per connection or per probe --------------------------------------

  /** A client session's server connection was established after `seconds`. */
  serverConnect(pool: string, server: string, seconds: number): void {
    if (!isDuration(seconds)) return;
    const events = this.noteSeries(pool, server);
    (events.connect ??= this.connectDuration.series({ pool, server })).observe(seconds);
  }

  /** One health probe finished. */
  healthCheck(pool: string, server: string, result: CheckResult, seconds: number): void {
    this.noteSeries(pool, server).results.add(result);
    this.healthChecks.inc({ pool, server, result });
    if (isDuration(seconds)) this.healthDuration.observe({ pool, server }, seconds);
  }

  configReload(result: ConfigReloadResult): void {
    this.configReloads.inc({ result });
  }

  /** Stops the event-loop lag sampler. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.loopLagSampler.close();
  }

  // ---- scrape time ----------------------------------------------------------------------------

  /**
   * `workers` > 1 only (no samples otherwise, as failover's when off): registered at the first scrape that has
   * workers, since prom-client exports an unlabelled metric from its creation on, at 0.
   */
  private workerMetrics: { serving: Gauge<string>; restarts: SnapshotCounter<string> } | null = null;

  private collectWorkers(): void {
    const counts = this.source.workerCounts?.();
    if (counts === undefined) return;
    this.workerMetrics ??= {
      serving: new Gauge({ name: 'mqtt_lb_workers', help: 'Proxy worker processes serving now (workers > 1 only; of the configured number).', registers: [this.registry] }),
      restarts: new SnapshotCounter({
        name: 'mqtt_lb_worker_restarts_total',
        help: 'Proxy workers started again after one exited (a crash, the OOM killer, the watchdog), counted when the replacement serves (workers > 1 only).',
        registers: [this.registry],
      }),
    };
    this.workerMetrics.serving.set(counts.serving);
    this.workerMetrics.restarts.set(counts.restarts);
  }

  /** Copy the live state into the registry. Called by text(); cheap enough for every scrape. */
  collect(): void {
    this.collectWorkers();
    const ready = this.source.ready();
    this.ready.set(ready.ok ? 1 : 0);
    this.collectListeners();
    const live = this.collectServers();
    this.pruneEventSeries(live);
    this.collectFailover();
    this.collectLoopLag();
    const overload = this.source.overload();
    this.overloaded.set(overload.active ? 1 : 0);
    this.memoryInUse.set(overload.memoryInUseBytes);
    this.memoryMax.set(overload.maxMemoryBytes);
  }

  private collectListeners(): void {
    this.connectionsActive.reset();
    this.connectionsTotal.reset();
    this.connectRejected.reset();
    this.sessionsClosed.reset();
    this.disconnectsSent.reset();
    for (const l of this.source.listeners()) {
      const listener = l.name;
      this.connectionsActive.set({ listener }, l.active);
      this.connectionsTotal.set({ listener, outcome: 'proxied' }, l.outcomes.proxied);
      this.connectionsTotal.set({ listener, outcome: 'rejected' }, l.outcomes.rejected);
      this.connectionsTotal.set({ listener, outcome: 'failed' }, l.outcomes.failed);
      // Every known reason exported from the start, so the first rejection of a kind shows in rate().
      for (const reason of REJECT_REASONS) this.connectRejected.set({ listener, reason }, l.rejected.get(reason) ?? 0);
      for (const [reason, n] of l.rejected) {
        if (!(REJECT_REASONS as readonly string[]).includes(reason)) this.connectRejected.set({ listener, reason }, n);
      }
      for (const reason of SESSION_CLOSE_REASONS) this.sessionsClosed.set({ listener, reason }, l.closed.get(reason) ?? 0);
      for (const reason of TOLD_CLOSE_REASONS) this.disconnectsSent.set({ listener, reason }, l.told.get(reason) ?? 0);
    }
  }

  /** Returns the live servers as pool -> names, for pruning. */
  private collectServers(): Map<string, Set<string>> {
    this.serverUp.reset();
    this.serverState.reset();
    this.serverSessions.reset();
    this.serverMaxConnections.reset();
    this.serverBytes.reset();
    this.serverConnectErrors.reset();
    const live = new Map<string, Set<string>>();
    for (const p of this.source.pools()) {
      const names = new Set<string>();
      live.set(p.name, names);
      for (const s of p.servers) {
        names.add(s.name);
        this.collectServer(p.name, s);
      }
    }
    return live;
  }

  private collectServer(pool: string, s: Server): void {
    const server = s.name;
    const state = s.state;
    this.serverUp.set({ pool, server }, state === 'up' ? 1 : 0);
    for (const st of SERVER_STATES) this.serverState.set({ pool, server, state: st }, st === state ? 1 : 0);
    this.serverSessions.set({ pool, server }, s.sessionCount);
    this.serverMaxConnections.set({ pool, server }, s.config.maxConnections);
    this.serverBytes.set({ pool, server, direction: 'in' }, s.bytesIn());
    this.serverBytes.set({ pool, server, direction: 'out' }, s.bytesOut());
    this.serverConnectErrors.set({ pool, server }, s.connectErrorCount);
    // Zero-initialised so that the first probe result of each kind is visible to increase().
    const { results } = this.noteSeries(pool, server);
    for (const result of CHECK_RESULTS) {
      if (!results.has(result)) {
        results.add(result);
        this.healthChecks.inc({ pool, server, result }, 0);
      }
    }
  }

  private noteSeries(pool: string, server: string): ServerEvents {
    let servers = this.eventSeries.get(pool);
    if (!servers) {
      servers = new Map();
      this.eventSeries.set(pool, servers);
    }
    let events = servers.get(server);
    if (!events) {
      events = { results: new Set(), connect: null };
      servers.set(server, events);
    }
    return events;
  }

  private pruneEventSeries(live: Map<string, Set<string>>): void {
    for (const [pool, servers] of this.eventSeries) {
      const liveNames = live.get(pool);
      for (const [server, { results }] of servers) {
        if (liveNames?.has(server)) continue;
        for (const result of results) this.healthChecks.remove({ pool, server, result });
        this.healthDuration.remove({ pool, server });
        this.connectDuration.remove({ pool, server });
        servers.delete(server);
      }
      if (servers.size === 0) this.eventSeries.delete(pool);
    }
  }

  private collectFailover(): void {
    this.failoverState.reset();
    this.failoverInstanceState.reset();
    this.failoverPriority.reset();
    this.failoverPeerState.reset();
    this.failoverTransitions.reset();
    this.failoverTrackScriptFailing.reset();
    this.advertsDropped.reset();
    const f = this.source.failover();
    if (!f) return;
    for (const state of FAILOVER_STATES) {
      this.failoverState.set({ state }, f.instances.filter((i) => i.state === state).length);
    }
    for (const i of f.instances) {
      const router_id = String(i.routerId);
      for (const state of FAILOVER_STATES) this.failoverInstanceState.set({ router_id, state }, i.state === state ? 1 : 0);
      this.failoverPriority.set({ router_id }, i.priority);
      for (const p of i.peers) for (const state of PEER_VIEW_STATES) this.failoverPeerState.set({ router_id, peer: p.address, state }, p.state === state ? 1 : 0);
    }
    for (const [key, n] of f.stats.transitions) {
      const sep = key.indexOf('>');
      if (sep <= 0) continue;
      this.failoverTransitions.set({ from: key.slice(0, sep), to: key.slice(sep + 1) }, n);
    }
    for (const reason of ADVERT_DROP_REASONS) this.advertsDropped.set({ reason }, f.stats.dropped[reason] ?? 0);
    for (const [script, failing] of f.stats.trackScripts) this.failoverTrackScriptFailing.set({ script }, failing ? 1 : 0);
  }

  /** Forget the lag measured so far (the start's warm-up, before any client: src/warm-up.ts). */
  discardLoopLag(): void {
    this.loopLagSampler.restart();
  }

  private collectLoopLag(): void {
    const w = worstWindow(this.loopLagSampler.takeWindow(), this.source.workerLoopLag?.() ?? null);
    // Two scrapes within one sampling period: keep the previous values rather than report 0.
    if (!w) return;
    this.loopLag.set(w.p99);
    this.loopLagMax.set(w.max);
  }
}

function isDuration(seconds: number): boolean {
  return Number.isFinite(seconds) && seconds >= 0;
}
