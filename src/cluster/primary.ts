/**
 * The cluster primary (workers > 1): forks the proxy workers, tells them the server states it decides
 * (health checks run once, here, so every worker routes a client ID the same way), sums their counters
 * for /metrics and /api/status, forwards reloads, and stops them in the contract's order.
 *
 * Scheduling between workers (Node 20 has no reusePort for net): the kernel's by default, every worker accepting
 * on the shared listening socket; round robin in the primary with NODE_CLUSTER_SCHED_POLICY=rr (schedulingPolicy).
 */
import cluster, { type Worker } from 'node:cluster';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { reloadWhileStopping, type App } from '../app.js';
import type { LbConfig, ListenerConfig } from '../config/types.js';
import { bindsMayCollide } from '../config/net-syntax.js';
import { ListenerStats } from '../proxy/context.js';
import { effectiveMaxMemory } from './share.js';
import { explainHandOver, isAddressInUse, probeBind } from '../proxy/listener.js';
import { worstWindow, type LagWindow } from '../telemetry/loop-lag.js';
import { countersOf, sumCounters, type ProcessMetricsJson } from '../telemetry/process-metrics.js';
import type { Server } from '../balancer/server.js';
import { ErrorCodes, MqttLbError } from '../errors.js';
import type { ToPrimary, ToWorker, ServerStateWire, ListenerSnapshot, ServerSnapshot, OverloadSnapshot, TakeoverOrder } from './messages.js';
import { ClientIdLedger, type WorkerOrder } from './client-id-ledger.js';
import { serverStates } from './server-states.js';
import { WATCHDOG_TICK_MS, WorkerWatchdog, workerStallMs } from './worker-watchdog.js';
import { restartDelay } from '../restart-delay.js';
import type { WorkerCounts } from '../telemetry/source.js';
import { monotonicNow } from '../monotonic-clock.js';

const READY_TIMEOUT_MS = 15_000;
/** How long a worker may take to prepare a reload (bind its listeners). */
const RELOAD_PREPARE_TIMEOUT_MS = 15_000;
/** A worker closing its VIP sessions answers within its spread and its wait for the closes (App.releaseVipSessions); past this, the VIP goes regardless. */
const RELEASE_ANSWER_MARGIN_MS = 2500;

/** A listener a worker committed but has not reported yet: listening, nothing counted yet. */
function committedNotReported(lc: ListenerConfig): ListenerSnapshot {
  return { name: lc.name, bind: lc.bind, tls: lc.tls !== null, listening: true, acceptHealthy: true, active: 0, outcomes: { proxied: 0, rejected: 0, failed: 0 }, rejected: [], closed: [], told: [] };
}

/** Adds `counts` (by reason) into `sums`; returns `sums`. */
function addInto(sums: Map<string, number>, counts: Iterable<[string, number]>): Map<string, number> {
  for (const [reason, n] of counts) sums.set(reason, (sums.get(reason) ?? 0) + n);
  return sums;
}

/** Counts by reason, `a` and `b` added up. */
function addCounts(a: Array<[string, number]>, b: Array<[string, number]>): Array<[string, number]> {
  return [...addInto(new Map(a), b)];
}

/** The callback of every message to a worker: its failure is the worker's end, which 'exit' reports. */
function ignoreSendError(): void {}

interface WorkerSlot {
  index: number;
  worker: Worker;
  ready: boolean;
  /** The config it was last given (at start, or by a reload it took part in). */
  config: LbConfig | null;
  listeners: ListenerSnapshot[];
  servers: ServerSnapshot[];
  overload: OverloadSnapshot;
  /** A replacement for a worker that exited (not one of the first N). */
  respawned: boolean;
  /** It has sent a snapshot (what it has bound). */
  reported: boolean;
  /**
   * The listeners of the last reload it confirmed committing: bound and accepting in it, reported or not yet. A
   * snapshot it sent before that commit lacks the new ones, and /readyz must not call them unbound meanwhile.
   */
  committedListeners: ReadonlySet<string>;
  /** Its latest process and Node.js metrics. */
  processMetrics: ProcessMetricsJson | null;
  /** Restarts in a row that led to it, each after a crash loop or a failed start (0: the first start). */
  attempt: number;
  /** When it became ready (monotonic ms), or null. */
  readyAt: number | null;
  /** We sent it SIGKILL (the watchdog, a stop's timeout, a second signal while starting). */
  killedByUs: boolean;
}

/**
 * A worker that dies within this long of becoming ready is a crash loop (a client whose packets crash it, a
 * leak that kills it at once): its replacement waits longer each time, as a failed start's does, instead of
 * every 1.3 s for good. One that served longer is restarted after 1 s again.
 */
const CRASH_LOOP_MS = 30_000;

export class ClusterPrimary {
  private readonly app: App;
  private readonly log: Logger;
  private readonly count: number;
  private readonly slots = new Map<number, WorkerSlot>();
  /** Replacement workers that came to serve after one exited (mqtt_lb_worker_restarts_total). */
  private restarts = 0;
  /** Workers that exited unexpectedly (and are being replaced), since start. */
  private exits = 0;
  /** A stop signal came while starting: workers forked from now on skip their warm-up. */
  private warmUpsStopped = false;
  private readonly watched = new WeakSet<Server>();
  private stopping = false;
  private statesQueued = false;
  /** The workers' worst loop lag since the last scrape took it. */
  private workerLag: LagWindow | null = null;
  private reloadSeq = 0;
  /** Per worker index: the answer to the reload being prepared. */
  private readonly reloadWaiters = new Map<number, (error: string | null) => void>();
  /** Per worker index: the end of the wait for its commit or abort of the reload being settled. */
  private readonly settleWaiters = new Map<number, () => void>();
  private releaseSeq = 0;
  /** Per release id: the workers that have not answered yet, the function that ends the wait, and what was sent (to a worker ready meanwhile). */
  private readonly releases = new Map<number, { pending: Set<Worker>; done: () => void; message: ToWorker }>();
  /**
   * What workers that exited had counted (their last snapshot; active sessions left out), so that the summed
   * counters never go backwards when a worker is replaced (Prometheus counter semantics).
   */
  private readonly retiredListeners = new Map<string, ListenerSnapshot>();
  private readonly retiredServers = new Map<string, { bytesIn: number; bytesOut: number; connectErrors: number }>();
  /**
   * Process counters and histograms of workers that exited (process-metrics.ts countersOf): each is listed at
   * once, and folded into one summed entry soon after (the fold is asynchronous), so none is ever missing.
   */
  private retiredProcess: ProcessMetricsJson[] = [];
  private folding = false;
  /** Kills a worker whose event loop is stuck (worker-watchdog.ts), so that the exit handler restarts it. */
  private readonly watchdog = new WorkerWatchdog(workerStallMs(), performance.now());
  /** Which worker holds each client ID on which server: the takeover rule across workers (client-id-ledger.ts). */
  private readonly clientIds = new ClientIdLedger();
  private watchdogTimer: NodeJS.Timeout | null = null;

  constructor(app: App, count: number, log: Logger) {
    this.app = app;
    this.count = count;
    this.log = log;
  }

  /**
   * Fork the workers and wait until every one has bound its listeners: true. False when a stop signal came first and
   * a worker bound nothing (stopWarmUps): the stop follows (run.ts).
   */
  async start(): Promise<boolean> {
    const asked = process.env.NODE_CLUSTER_SCHED_POLICY;
    if (asked !== undefined && asked !== 'rr' && asked !== 'none') this.log.warn({ NODE_CLUSTER_SCHED_POLICY: asked }, 'NODE_CLUSTER_SCHED_POLICY is neither rr nor none: using the kernel\'s scheduling');
    cluster.schedulingPolicy = schedulingPolicy(asked);
    const here = path.dirname(fileURLToPath(import.meta.url));
    cluster.setupPrimary({ exec: path.join(here, 'worker-main.js'), args: [], silent: false });
    this.watchServers();
    const readies: Array<Promise<boolean>> = [];
    for (let i = 0; i < this.count; i++) readies.push(this.fork(i, false));
    if (!(await Promise.all(readies)).every(Boolean)) return false;
    this.log.info({ workers: this.count, schedulingPolicy: cluster.schedulingPolicy === cluster.SCHED_RR ? 'round-robin' : 'kernel' }, 'workers started');
    this.watchdogTimer = setInterval(() => this.killStuckWorkers(), WATCHDOG_TICK_MS);
    this.watchdogTimer.unref();
    return true;
  }

  private killStuckWorkers(): void {
    const stalled = this.watchdog.tick(performance.now());
    if (this.stopping) return;
    for (const { index, silentMs } of stalled) {
      const slot = this.slots.get(index);
      this.watchdog.forget(index);
      if (slot === undefined || !slot.ready) continue;
      this.log.error({ worker: index, workerPid: slot.worker.process.pid, silentMs }, 'worker unresponsive: killing it (it is restarted)');
      this.kill(slot);
    }
  }

  /** Resolves true once the worker serves, false if a stop came first (it bound nothing, or exited). */
  private fork(index: number, respawned: boolean, attempt = 0): Promise<boolean> {
    const worker = cluster.fork({ MQTT_LB_WORKER_INDEX: String(index) });
    const slot: WorkerSlot = {
      index,
      worker,
      ready: false,
      config: null,
      listeners: [],
      servers: [],
      overload: { active: false, inUseBytes: 0 },
      respawned,
      reported: false,
      committedListeners: new Set(),
      processMetrics: null,
      attempt,
      readyAt: null,
      killedByUs: false,
    };
    this.slots.set(index, slot);
    return new Promise<boolean>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.kill(slot);
        reject(new MqttLbError(ErrorCodes.START_BIND, `worker ${index} did not start within ${READY_TIMEOUT_MS} ms`));
      }, READY_TIMEOUT_MS);
      worker.on('message', (m: ToPrimary) => {
        switch (m.t) {
          case 'hello':
            if (this.stopping) {
              // Forked just before the stop (a replacement for a worker that died): its 'stop' may have come before
              // it listened, and been lost. It starts nothing.
              this.send(worker, { t: 'stop', evictRate: null });
              return;
            }
            slot.config = this.app.config;
            this.send(worker, { t: 'config', config: this.app.config, index, workers: this.count, warmUp: !respawned && !this.warmUpsStopped });
            // Before it binds: a worker that knew no verdict would refuse its first clients (App.firstVerdicts).
            this.send(worker, { t: 'states', states: this.states() });
            return;
          case 'ready':
            slot.ready = true;
            slot.readyAt = monotonicNow();
            clearTimeout(timer);
            this.watchdog.reported(index, performance.now());
            if (respawned) {
              this.restarts++;
              this.log.info({ worker: index, workerPid: worker.process.pid }, 'worker restarted');
            }
            // A reload committed while it started: it runs the config it was given; bring it up to date.
            this.catchUp(slot);
            this.send(worker, { t: 'states', states: this.states() });
            // A VIP release under way (a replacement worker that bound while it ran): its sessions on the VIP too.
            for (const r of this.releases.values()) {
              r.pending.add(worker);
              this.send(worker, r.message);
            }
            resolve(true);
            return;
          case 'abandoned':
            clearTimeout(timer);
            resolve(false);
            return;
          case 'fatal':
            clearTimeout(timer);
            reject(new MqttLbError((m.code as (typeof ErrorCodes)[keyof typeof ErrorCodes] | null) ?? ErrorCodes.START_BIND, m.message));
            return;
          case 'probe':
            this.app.probeNow(m.pool, m.server);
            return;
          case 'vips-released':
            this.workerReleased(m.id, worker);
            return;
          case 'reload-prepared':
            if (m.id === this.reloadSeq) this.reloadWaiters.get(index)?.(m.error);
            return;
          case 'reload-settled':
            if (m.id === this.reloadSeq) this.settleWaiters.get(index)?.();
            return;
          case 'process-metrics':
            slot.processMetrics = m.metrics;
            return;
          case 'client-ids':
            // By cluster worker id, never reused: a replacement worker's serials start again at 1.
            this.sendTakeovers(this.clientIds.apply(worker.id, m.events));
            return;
          case 'snapshot':
            this.watchdog.reported(index, performance.now());
            slot.listeners = m.listeners;
            slot.servers = m.servers;
            slot.overload = m.overload;
            slot.reported = true;
            for (const [pool, server, seconds] of m.connects) this.app.metrics?.serverConnect(pool, server, seconds);
            this.workerLag = worstWindow(this.workerLag, m.lag);
            this.aggregate();
            return;
        }
      });
      worker.on('exit', (code, signal) => {
        clearTimeout(timer);
        // A dead worker refuses nothing: it takes no part in the reload, and its replacement starts with the
        // primary's config and is caught up with a reload committed meanwhile (catchUp).
        this.reloadWaiters.get(index)?.(null);
        this.settleWaiters.get(index)?.();
        for (const id of [...this.releases.keys()]) this.workerReleased(id, worker);
        this.clientIds.forgetWorker(worker.id);
        // Outside a stop, the connections it held broke with it: counted as failed (its last report, < 1 s old).
        const broken = !this.stopping && slot.ready ? slot.listeners.reduce((n, l) => n + l.active, 0) : 0;
        if (this.slots.get(index)?.worker === worker) {
          this.slots.delete(index);
          this.watchdog.forget(index);
          this.retire(slot, broken > 0);
        }
        this.aggregate();
        if (this.stopping) {
          // Not the exit the stop asked for (code 0), nor a kill of ours (the stop's timeout, a second signal): it
          // died meanwhile, its sessions closed at once instead of drained. Said, as HAProxy's master does.
          if (code !== 0 && !slot.killedByUs) this.log.warn({ worker: index, exitCode: code, signal }, 'worker exited during the stop: its sessions closed at once');
          if (!slot.ready) resolve(false); // it never served: whoever waits for its start is told (no-op once settled)
          return;
        }
        if (!slot.ready) {
          reject(new MqttLbError(ErrorCodes.START_BIND, `worker ${index} exited during start (code ${code}, signal ${signal})`));
          return;
        }
        // A worker died: its sessions are gone (clients reconnect); replace it like HAProxy's master does.
        const attempt = slot.readyAt !== null && monotonicNow() - slot.readyAt < CRASH_LOOP_MS ? slot.attempt : 0;
        this.exits++;
        this.log.error({ worker: index, exitCode: code, signal, sessions: broken, retryInMs: restartDelay(attempt) }, 'worker exited: restarting it');
        this.respawn(index, attempt);
      });
    });
  }

  /** Fork worker `index` again after a delay; a failed start is retried with a doubling delay, never given up. */
  private respawn(index: number, attempt: number): void {
    setTimeout(() => {
      if (this.stopping) return;
      // The replacement counts as the next attempt: should it die soon after it serves, it waits longer.
      this.fork(index, true, attempt + 1).catch((err: unknown) => {
        if (this.stopping) return;
        this.log.error({ err, worker: index, retryInMs: restartDelay(attempt + 1) }, 'worker restart failed');
        this.respawn(index, attempt + 1);
      });
    }, restartDelay(attempt)).unref();
  }

  /** The primary's orders from one batch of client ID reports, one message per worker concerned. */
  private sendTakeovers(orders: WorkerOrder[]): void {
    if (orders.length === 0) return;
    const byWorker = new Map<number, TakeoverOrder[]>();
    for (const { worker, order } of orders) {
      const list = byWorker.get(worker);
      if (list === undefined) byWorker.set(worker, [order]);
      else list.push(order);
    }
    for (const [id, list] of byWorker) {
      const worker = cluster.workers?.[id];
      if (worker !== undefined) this.send(worker, { t: 'takeovers', orders: list });
    }
  }

  /** Keep what an exited worker counted (see retiredListeners); `broken`: it died serving, its connections with it. */
  private retire(slot: WorkerSlot, broken: boolean): void {
    for (const l of slot.listeners) {
      const r = this.retiredListeners.get(l.name) ?? { ...l, active: 0, outcomes: { proxied: 0, rejected: 0, failed: 0 }, rejected: [], closed: [], told: [] };
      r.outcomes.proxied += l.outcomes.proxied;
      r.outcomes.rejected += l.outcomes.rejected;
      r.outcomes.failed += l.outcomes.failed + (broken ? l.active : 0);
      r.rejected = addCounts(r.rejected, l.rejected);
      r.closed = addCounts(r.closed, l.closed);
      r.told = addCounts(r.told, l.told);
      this.retiredListeners.set(l.name, r);
    }
    for (const sv of slot.servers) {
      const key = `${sv.pool}\0${sv.server}`;
      const r = this.retiredServers.get(key) ?? { bytesIn: 0, bytesOut: 0, connectErrors: 0 };
      r.bytesIn += sv.bytesIn;
      r.bytesOut += sv.bytesOut;
      r.connectErrors += sv.connectErrors;
      this.retiredServers.set(key, r);
    }
    if (slot.processMetrics !== null) {
      this.retiredProcess.push(countersOf(slot.processMetrics));
      this.foldRetiredProcess();
    }
  }

  private foldRetiredProcess(): void {
    if (this.folding || this.retiredProcess.length < 2) return;
    this.folding = true;
    const parts = [...this.retiredProcess];
    sumCounters(parts).then(
      (summed) => {
        // Entries retired meanwhile stay behind the folded one.
        this.retiredProcess = [summed, ...this.retiredProcess.slice(parts.length)];
        this.folding = false;
        this.foldRetiredProcess();
      },
      (err: unknown) => {
        // Left unfolded (and no further folds tried): the entries are still all counted.
        this.log.warn({ err }, "could not fold exited workers' process counters");
      },
    );
  }

  /** A stop signal while starting: every worker still warming up cuts its warm-up short, later ones skip it (run.ts). */
  stopWarmUps(): void {
    this.warmUpsStopped = true;
    for (const s of this.slots.values()) if (!s.ready) this.send(s.worker, { t: 'warm-up-stop' });
  }

  private send(worker: Worker, m: ToWorker): void {
    // With a callback, a failed write (the worker exiting: EPIPE, a closed channel) comes to it rather than as an
    // 'error' event, which nothing else handles: a reload's catch-up racing a stop crashed the primary with exit 1
    // (and, as failover master, left its VIP on the interface). The worker's 'exit' is what tells of its end.
    if (worker.isConnected()) worker.send(m, undefined, undefined, ignoreSendError);
  }

  private broadcast(m: ToWorker): void {
    for (const s of this.slots.values()) if (s.ready) this.send(s.worker, m);
  }

  private states(): ServerStateWire[] {
    return serverStates(this.app.poolMap.values());
  }

  /** Push every state change to the workers at once (coalesced per tick). */
  private watchServers(): void {
    for (const p of this.app.poolMap.values()) {
      for (const s of p.servers) {
        if (this.watched.has(s)) continue;
        this.watched.add(s);
        s.on('state', () => this.queueStates());
      }
    }
  }

  private queueStates(): void {
    if (this.statesQueued) return;
    this.statesQueued = true;
    setImmediate(() => {
      this.statesQueued = false;
      // Starting workers too (they have their config, and bind with the verdicts they know).
      const m: ToWorker = { t: 'states', states: this.states() };
      for (const s of this.slots.values()) if (s.config !== null) this.send(s.worker, m);
    });
  }

  /** Sum the workers' latest snapshots into the primary's view (listeners and per-server numbers). */
  private aggregate(): void {
    const listeners = new Map<string, ListenerStats>();
    const shown = new Map<string, ListenerStats>();
    for (const lc of this.app.config.listeners) {
      // A listener appears once every worker reports it bound (readyz). A replacement for a worker that exited
      // counts from its first report: until then the others serve, and it does not hide them.
      // A worker whose latest snapshot predates the reload that added the listener: bound there since its commit.
      const reports = [...this.slots.values()]
        .filter((s) => s.reported || !s.respawned)
        .map((s) => s.listeners.find((l) => l.name === lc.name) ?? (s.committedListeners.has(lc.name) ? committedNotReported(lc) : undefined));
      const bound = reports.length > 0 && reports.every((r) => r !== undefined && r.listening);
      // Not bound everywhere: not ready. Still shown (metrics, status) once it has been, with what is known: with
      // every worker dead and its replacements not serving yet, the dead ones' totals and no session, rather than a
      // gap in the dashboards.
      if (!bound && !this.app.shownListeners.has(lc.name)) continue;
      const agg = new ListenerStats(lc.name, lc.bind, lc.tls !== null);
      const retired = this.retiredListeners.get(lc.name);
      for (const r of retired === undefined ? reports : [...reports, retired]) {
        if (r === undefined) continue;
        agg.active += r.active;
        agg.outcomes.proxied += r.outcomes.proxied;
        agg.outcomes.rejected += r.outcomes.rejected;
        agg.outcomes.failed += r.outcomes.failed;
        addInto(agg.rejected, r.rejected);
        addInto(agg.closed, r.closed);
        addInto(agg.told, r.told);
      }
      shown.set(lc.name, agg);
      if (bound) listeners.set(lc.name, agg);
    }
    this.app.remoteListeners.clear();
    for (const [k, v] of listeners) this.app.remoteListeners.set(k, v);
    this.app.shownListeners.clear();
    for (const [k, v] of shown) this.app.shownListeners.set(k, v);
    // What failover tracking reads: a listener a worker reports as not listening or not accepting. A listener
    // not reported yet (just added by a reload, a worker's first snapshot still to come) is not a failure: the
    // reload bound it in every worker before it was committed.
    // With no worker serving at all (every one dead or restarting), every listener has failed.
    this.app.remoteListenerFaults.clear();
    let serving = false;
    for (const slot of this.slots.values()) {
      serving ||= slot.ready;
      if (!slot.reported) continue;
      for (const l of slot.listeners) if ((!l.listening || !l.acceptHealthy) && this.app.config.listeners.some((lc) => lc.name === l.name)) this.app.remoteListenerFaults.add(l.name);
    }
    if (!serving) for (const lc of this.app.config.listeners) this.app.remoteListenerFaults.add(lc.name);
    // Over the ceiling when any worker is (it refuses its share of new clients); memory is the workers' sum.
    const overload = { active: false, inUseBytes: 0, maxBytes: effectiveMaxMemory(this.app.config, this.count) };
    for (const slot of this.slots.values()) {
      overload.active ||= slot.overload.active;
      overload.inUseBytes += slot.overload.inUseBytes;
    }
    this.app.remoteOverload = overload;
    for (const p of this.app.poolMap.values()) {
      for (const s of p.servers) {
        let sessions = 0;
        const retired = this.retiredServers.get(`${p.name}\0${s.name}`);
        let bytesIn = retired?.bytesIn ?? 0;
        let bytesOut = retired?.bytesOut ?? 0;
        let connectErrors = retired?.connectErrors ?? 0;
        for (const slot of this.slots.values()) {
          const r = slot.servers.find((x) => x.pool === p.name && x.server === s.name);
          if (r === undefined) continue;
          sessions += r.sessions;
          bytesIn += r.bytesIn;
          bytesOut += r.bytesOut;
          connectErrors += r.connectErrors;
        }
        s.remote.sessions = sessions;
        s.remote.bytesIn = bytesIn;
        s.remote.bytesOut = bytesOut;
        s.remote.connectErrors = connectErrors;
      }
    }
  }

  /** The live workers' latest process and Node.js metrics, and the counters of those that exited. */
  processMetrics(): ProcessMetricsJson[] {
    const out: ProcessMetricsJson[] = [];
    for (const slot of this.slots.values()) if (slot.processMetrics !== null) out.push(slot.processMetrics);
    out.push(...this.retiredProcess);
    return out;
  }

  /** For the lag metric: the worst window since the previous call, then a new window. */
  takeWorkerLag(): LagWindow | null {
    const w = this.workerLag;
    this.workerLag = null;
    return w;
  }

  /**
   * A reload in two phases, so that the workers and the primary never run different files: the primary and
   * every worker prepare it (a worker binds what the new file needs); only when all could do they all commit
   * it. When one cannot (an address in use), all abort, and the error names the worker.
   */
  async reload(config: LbConfig): Promise<void> {
    await this.probeNewAddresses(config);
    const own = await this.app.prepareReload(config);
    const id = ++this.reloadSeq;
    const workers = [...this.slots.values()].filter((s) => s.ready);
    const answers = workers.map(
      (slot) =>
        new Promise<string | null>((resolve) => {
          const timer = setTimeout(() => resolve(`worker ${slot.index} did not answer within ${RELOAD_PREPARE_TIMEOUT_MS} ms`), RELOAD_PREPARE_TIMEOUT_MS);
          this.reloadWaiters.set(slot.index, (error) => {
            clearTimeout(timer);
            this.reloadWaiters.delete(slot.index);
            resolve(error === null ? null : `worker ${slot.index}: ${error}`);
          });
          this.send(slot.worker, { t: 'reload', config, id });
        }),
    );
    const errors = (await Promise.all(answers)).filter((e): e is string => e !== null);
    if (errors.length > 0) {
      const settled = this.settled(workers, id, 'reload-abort');
      await own.abort();
      await settled;
      // A stop that began meanwhile is why the workers refused it: no failure to report (run.ts logs it as ignored).
      if (this.stopping || this.app.isStopping) throw reloadWhileStopping();
      throw new MqttLbError(ErrorCodes.RELOAD_WORKER, errors.join('; '));
    }
    for (const slot of workers) slot.config = config;
    const settled = this.settled(workers, id, 'reload-commit', new Set(config.listeners.map((l) => l.name)));
    await own.commit();
    // The new servers' first verdicts go to the workers as they come, not after the wait below (their clients wait
    // for them); a worker that has not applied the reload yet keeps health judged elsewhere out (server-states.ts).
    this.watchServers();
    this.queueStates();
    // Done only once every worker has applied it: what it removed is closed (a reload right after that adds a
    // listener back on the same address must not find it still held), and status and metrics show the new file.
    await settled;
    if (this.stopping) return; // the workers are going: nothing to catch up
    this.aggregate(); // the listeners it added count as bound now, not at the next snapshots
    // Workers that became ready while this reload was prepared took no part in it.
    for (const slot of this.slots.values()) if (slot.ready) this.catchUp(slot);
    this.watchServers();
    this.queueStates();
  }

  /** Sends `t` for reload `id` to `workers`; resolves once each has settled it, exited, or not within the bound. */
  private settled(workers: readonly WorkerSlot[], id: number, t: 'reload-commit' | 'reload-abort', listeners?: ReadonlySet<string>): Promise<void> {
    return Promise.all(
      workers.map(
        (slot) =>
          new Promise<void>((resolve) => {
            if (slot.worker.isDead()) return resolve();
            let timedOut = false;
            const done = (): void => {
              clearTimeout(timer);
              if (this.settleWaiters.get(slot.index) === done) this.settleWaiters.delete(slot.index);
              // Confirmed (not the timeout below): a commit's listeners are bound and accepting in it.
              if (listeners !== undefined && !timedOut) slot.committedListeners = listeners;
              resolve();
            };
            const timer = setTimeout(() => {
              this.log.warn({ worker: slot.index, ms: RELOAD_PREPARE_TIMEOUT_MS }, 'config reload: a worker did not confirm it in time');
              timedOut = true;
              done();
            }, RELOAD_PREPARE_TIMEOUT_MS);
            this.settleWaiters.set(slot.index, done);
            this.send(slot.worker, { t, id });
          }),
      ),
    ).then(() => undefined);
  }

  /**
   * Every address the reload adds or moves a listener to, bound once here first (listener.ts probeBind says why
   * a worker must not be the one to find it in use). This includes a listener's move onto an address its own
   * socket holds (localhost for 127.0.0.1, a wildcard): a single process closes its old socket to make way, but
   * here that socket is the primary's shared handle, held for every worker, so the move cannot work and is
   * refused. The probe can still lose a race with another program.
   */
  private async probeNewAddresses(config: LbConfig): Promise<void> {
    const running = this.app.config.listeners;
    for (const lc of config.listeners) {
      const now = running.find((r) => r.name === lc.name);
      if (now !== undefined && now.bind === lc.bind) continue;
      try {
        await probeBind(lc);
      } catch (err) {
        if (now !== undefined && bindsMayCollide(now.address, lc.address) && isAddressInUse(err)) {
          throw new MqttLbError(
            ErrorCodes.START_BIND,
            `${(err as Error).message} (held by this listener at ${now.bind} until the reload is applied; with workers the old socket cannot make way: move it through another port in two reloads, or restart)`,
            { cause: err },
          );
        }
        throw explainHandOver(err, lc, running);
      }
    }
  }

  /** A ready worker that runs an older config than the primary's (it started during a reload) is reloaded. */
  private catchUp(slot: WorkerSlot): void {
    if (slot.config === this.app.config) return;
    slot.config = this.app.config;
    this.send(slot.worker, { t: 'reconfigure', config: this.app.config });
  }

  /**
   * Failover demoted this host's instance: every serving worker closes its sessions on `vips` (evictRate shared
   * among them); resolves once all have answered, or after `spreadMs` plus a margin.
   */
  releaseVips(vips: string[], evictRate: number, spreadMs: number, signal: AbortSignal | null): Promise<void> {
    const workers = [...this.slots.values()].filter((s) => s.ready).map((s) => s.worker);
    if (workers.length === 0 || signal?.aborted === true) return Promise.resolve();
    const id = ++this.releaseSeq;
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => done(), spreadMs + RELEASE_ANSWER_MARGIN_MS);
      const cancel = (): void => {
        const r = this.releases.get(id);
        if (r !== undefined) for (const w of r.pending) this.send(w, { t: 'release-vips-cancel', id });
        done();
      };
      signal?.addEventListener('abort', cancel, { once: true });
      const done = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', cancel);
        this.releases.delete(id);
        resolve();
      };
      const m: ToWorker = { t: 'release-vips', id, vips, evictRate: evictRate / workers.length, spreadMs };
      this.releases.set(id, { pending: new Set(workers), done, message: m });
      for (const w of workers) this.send(w, m);
    });
  }

  private workerReleased(id: number, worker: Worker): void {
    const r = this.releases.get(id);
    if (r === undefined || !r.pending.delete(worker)) return;
    if (r.pending.size === 0) r.done();
  }

  /** Exiting at once (a second stop signal while starting): the workers go first, with nothing to drain yet. */
  killWorkers(): void {
    this.stopping = true;
    for (const slot of this.slots.values()) if (!slot.worker.isDead()) this.kill(slot);
  }

  /** For the metrics: workers serving now, and replacements that came to serve since start. */
  workerCounts(): WorkerCounts {
    let serving = 0;
    for (const slot of this.slots.values()) if (slot.ready && !slot.worker.isDead()) serving++;
    return { serving, restarts: this.restarts, exits: this.exits };
  }

  private kill(slot: WorkerSlot): void {
    slot.killedByUs = true;
    slot.worker.process.kill('SIGKILL');
  }

  /** A second stop signal: every worker closes its sessions now. */
  destroySessions(): void {
    this.broadcast({ t: 'destroy' });
  }

  /** Stop every worker (evicting at `evictRate` in total, or draining) and wait for them (bounded). */
  async stopWorkers(evictRate: number | null, timeoutMs: number): Promise<void> {
    this.stopping = true;
    if (this.watchdogTimer !== null) clearInterval(this.watchdogTimer);
    const slots = [...this.slots.values()];
    const exits = slots.map(({ worker: w }) => new Promise<void>((resolve) => (w.isDead() ? resolve() : w.once('exit', () => resolve()))));
    const perWorker = evictRate === null ? null : evictRate / Math.max(1, slots.length);
    for (const slot of slots) this.send(slot.worker, { t: 'stop', evictRate: perWorker });
    const timer = setTimeout(() => {
      for (const slot of slots) {
        if (slot.worker.isDead()) continue;
        this.log.warn({ workerPid: slot.worker.process.pid, ms: timeoutMs }, 'worker did not stop in time: killing it');
        this.kill(slot);
      }
    }, timeoutMs);
    await Promise.all(exits);
    clearTimeout(timer);
  }
}

/**
 * The kernel's scheduling unless NODE_CLUSTER_SCHED_POLICY=rr asks for node:cluster's round robin (Node's own default
 * on Linux). Round robin hands every connection from the primary to a worker over IPC: two to three times the CPU
 * per connection setup (bench/README.md, two workers: 230 against 110 µs and 5,373 against 8,912 conn/s in session
 * 5, 390 against 135 µs and 3,513 against 7,534 conn/s in session 15), and a
 * connection that reaches a listener while a reload removes it can be left unanswered, its socket held in the
 * primary for good (Node's RoundRobinHandle re-queues a connection the last worker declined after it closed the
 * listening handle; nodejs/node#21746). With the kernel's, each worker accepts for itself, whichever wins: spread
 * over two workers here 883/1117 to 1079/921 of 2,000 connections arriving 50 at a time (round robin 944/1056 to
 * 1005/995), wider in a storm (357/643 of 1,000 at once): each worker's share of the caps fills sooner.
 */
export function schedulingPolicy(env: string | undefined): number {
  return env === 'rr' ? cluster.SCHED_RR : cluster.SCHED_NONE;
}
