/**
 * The cluster primary (workers > 1): forks the proxy workers, tells them the server states it decides
 * (health checks run once, here, so every worker routes a client ID the same way), sums their counters
 * for /metrics and /api/status, forwards reloads, and stops them in the contract's order.
 *
 * Scheduling between workers is node:cluster's: round-robin in the primary by default, or the kernel's
 * with NODE_CLUSTER_SCHED_POLICY=none (Node 20 has no reusePort for net).
 */
import cluster, { type Worker } from 'node:cluster';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { App } from '../app.js';
import type { LbConfig } from '../config/types.js';
import { ListenerStats } from '../proxy/context.js';
import { worstWindow, type LagWindow } from '../telemetry/loop-lag.js';
import type { Server } from '../balancer/server.js';
import { ErrorCodes, MqttLbError } from '../errors.js';
import type { ToPrimary, ToWorker, ServerStateWire, ListenerSnapshot, ServerSnapshot } from './messages.js';

const READY_TIMEOUT_MS = 15_000;
const RESPAWN_DELAY_MS = 1000;

interface WorkerSlot {
  index: number;
  worker: Worker;
  ready: boolean;
  listeners: ListenerSnapshot[];
  servers: ServerSnapshot[];
}

export class ClusterPrimary {
  private readonly app: App;
  private readonly log: Logger;
  private readonly count: number;
  private readonly slots = new Map<number, WorkerSlot>();
  private readonly watched = new WeakSet<Server>();
  private stopping = false;
  private statesQueued = false;
  /** The workers' worst loop lag since the last scrape took it. */
  private workerLag: LagWindow | null = null;

  constructor(app: App, count: number, log: Logger) {
    this.app = app;
    this.count = count;
    this.log = log;
  }

  /** Fork the workers and wait until every one has bound its listeners. */
  async start(): Promise<void> {
    const here = path.dirname(fileURLToPath(import.meta.url));
    cluster.setupPrimary({ exec: path.join(here, 'worker-main.js'), args: [], silent: false });
    this.watchServers();
    const readies: Array<Promise<void>> = [];
    for (let i = 0; i < this.count; i++) readies.push(this.fork(i));
    await Promise.all(readies);
    this.log.info({ workers: this.count, schedulingPolicy: cluster.schedulingPolicy === cluster.SCHED_RR ? 'round-robin' : 'kernel' }, 'workers started');
  }

  private fork(index: number): Promise<void> {
    const worker = cluster.fork({ MQTT_LB_WORKER_INDEX: String(index) });
    const slot: WorkerSlot = { index, worker, ready: false, listeners: [], servers: [] };
    this.slots.set(index, slot);
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new MqttLbError(ErrorCodes.START_BIND, `worker ${index} did not start within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS);
      worker.on('message', (m: ToPrimary) => {
        switch (m.t) {
          case 'hello':
            this.send(worker, { t: 'config', config: this.app.config, index, workers: this.count });
            return;
          case 'ready':
            slot.ready = true;
            clearTimeout(timer);
            this.send(worker, { t: 'states', states: this.states() });
            resolve();
            return;
          case 'fatal':
            clearTimeout(timer);
            reject(new MqttLbError((m.code as (typeof ErrorCodes)[keyof typeof ErrorCodes] | null) ?? ErrorCodes.START_BIND, m.message));
            return;
          case 'probe':
            this.app.probeNow(m.pool, m.server);
            return;
          case 'snapshot':
            slot.listeners = m.listeners;
            slot.servers = m.servers;
            for (const [pool, server, seconds] of m.connects) this.app.metrics?.serverConnect(pool, server, seconds);
            this.workerLag = worstWindow(this.workerLag, m.lag);
            this.aggregate();
            return;
        }
      });
      worker.on('exit', (code, signal) => {
        clearTimeout(timer);
        if (this.slots.get(index)?.worker === worker) this.slots.delete(index);
        this.aggregate();
        if (this.stopping) return;
        if (!slot.ready) {
          reject(new MqttLbError(ErrorCodes.START_BIND, `worker ${index} exited during start (code ${code}, signal ${signal})`));
          return;
        }
        // A worker died: its sessions are gone (clients reconnect); replace it like HAProxy's master does.
        this.log.error({ worker: index, code, signal }, 'worker exited: restarting it');
        setTimeout(() => {
          if (!this.stopping) this.fork(index).catch((err: unknown) => this.log.error({ err, worker: index }, 'worker restart failed'));
        }, RESPAWN_DELAY_MS).unref();
      });
    });
  }

  private send(worker: Worker, m: ToWorker): void {
    if (worker.isConnected()) worker.send(m);
  }

  private broadcast(m: ToWorker): void {
    for (const s of this.slots.values()) if (s.ready) this.send(s.worker, m);
  }

  private states(): ServerStateWire[] {
    const out: ServerStateWire[] = [];
    for (const p of this.app.poolMap.values()) {
      for (const s of p.servers) out.push({ pool: p.name, server: s.name, health: s.health, admin: s.admin, lastCheck: s.lastCheck });
    }
    return out;
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
      this.broadcast({ t: 'states', states: this.states() });
    });
  }

  /** Sum the workers' latest snapshots into the primary's view (listeners and per-server numbers). */
  private aggregate(): void {
    const listeners = new Map<string, ListenerStats>();
    for (const lc of this.app.config.listeners) {
      // A listener appears once every live worker reports it bound (readyz).
      const reports = [...this.slots.values()].map((s) => s.listeners.find((l) => l.name === lc.name));
      if (reports.length === 0 || reports.some((r) => r === undefined || !r.listening)) continue;
      const agg = new ListenerStats(lc.name, lc.bind, lc.tls !== null);
      for (const r of reports) {
        agg.active += r!.active;
        agg.outcomes.proxied += r!.outcomes.proxied;
        agg.outcomes.rejected += r!.outcomes.rejected;
        agg.outcomes.failed += r!.outcomes.failed;
        for (const [reason, n] of r!.rejected) agg.rejected.set(reason, (agg.rejected.get(reason) ?? 0) + n);
      }
      listeners.set(lc.name, agg);
    }
    this.app.remoteListeners.clear();
    for (const [k, v] of listeners) this.app.remoteListeners.set(k, v);
    for (const p of this.app.poolMap.values()) {
      for (const s of p.servers) {
        let sessions = 0;
        let bytesIn = 0;
        let bytesOut = 0;
        for (const slot of this.slots.values()) {
          const r = slot.servers.find((x) => x.pool === p.name && x.server === s.name);
          if (r === undefined) continue;
          sessions += r.sessions;
          bytesIn += r.bytesIn;
          bytesOut += r.bytesOut;
        }
        s.remote.sessions = sessions;
        s.remote.bytesIn = bytesIn;
        s.remote.bytesOut = bytesOut;
      }
    }
  }

  /** For the lag metric: the worst window since the previous call, then a new window. */
  takeWorkerLag(): LagWindow | null {
    const w = this.workerLag;
    this.workerLag = null;
    return w;
  }

  reload(config: LbConfig): void {
    this.watchServers();
    this.broadcast({ t: 'reload', config });
    this.queueStates();
  }

  /** Stop every worker (evicting at `evictRate` in total, or draining) and wait for them (bounded). */
  async stopWorkers(evictRate: number | null, timeoutMs: number): Promise<void> {
    this.stopping = true;
    const workers = [...this.slots.values()].map((s) => s.worker);
    const exits = workers.map((w) => new Promise<void>((resolve) => (w.isDead() ? resolve() : w.once('exit', () => resolve()))));
    const perWorker = evictRate === null ? null : evictRate / Math.max(1, workers.length);
    for (const w of workers) this.send(w, { t: 'stop', evictRate: perWorker });
    const timer = setTimeout(() => {
      for (const w of workers) if (!w.isDead()) w.process.kill('SIGKILL');
    }, timeoutMs);
    await Promise.all(exits);
    clearTimeout(timer);
  }
}
