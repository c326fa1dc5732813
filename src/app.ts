/**
 * The running balancer: builds pools, health checkers, listeners, the admin server and failover from one
 * LbConfig, reloads them in place, and stops them in the contract's order (design.md §3).
 */
import type { Logger } from 'pino';
import type { FailoverConfig, LbConfig, ListenerConfig } from './config/types.js';
import { planFailoverReload } from './failover/reload.js';
import { restartOnlyChanges } from './config/restart-only.js';
import { pendingConnectBound } from './config/defaults.js';
import { FIRST_VERDICT_MARGIN_MS, Pool } from './balancer/pool.js';
import { notePlacementChange, type Server, type AdminState, type EvictReason } from './balancer/server.js';
import type { ClientIdSharing } from './balancer/client-id-registry.js';
import { RateLimitedLog } from './failover/log.js';
import { serverNames } from './proxy/server-name-cache.js';
import { restoreAdminStates, saveAdminStates } from './balancer/admin-states.js';
import { HealthChecker, PROBE_NOW_MIN_GAP_MS } from './health/checker.js';
import { recheckGraceMs } from './health/recheck-grace.js';
import { PoolReactions } from './health/reactions.js';
import { Evictor } from './health/eviction.js';
import { Listener, explainHandOver, probeBind } from './proxy/listener.js';
import type { ProxyContext, ListenerStats } from './proxy/context.js';
import type { ClientSession } from './proxy/session.js';
import { budgetForConfig, clampsToSay, listenerCaps, movedByOnePercent, type ListenerCaps } from './proxy/fd-budget.js';
import { buildFront } from './proxy/front.js';
import { Admission } from './proxy/admission.js';
import { OverloadGuard } from './proxy/overload-guard.js';
import { IdleSweep } from './proxy/idle-sweep.js';
import { VerdictWaits } from './proxy/verdict-wait.js';
import { ConnackDeadlines, type ConnackWaiter } from './proxy/connack-deadlines.js';
import { Metrics } from './telemetry/metrics.js';
import { AdminServer } from './telemetry/admin-server.js';
import type { TelemetrySource, AdminActions, OverloadStatus, WorkerCounts } from './telemetry/source.js';
import type { LagWindow } from './telemetry/loop-lag.js';
import type { ProcessMetricsJson } from './telemetry/process-metrics.js';
import { IntakeAlert, poolIntake } from './balancer/intake-alert.js';
import { descriptorShortage } from './proxy/descriptor-check.js';
import { Failover, computeTracking } from './failover/index.js';
import { isVipAddress, vipAddresses } from './failover/ipv4.js';
import { VERSION } from './version.js';
import { ErrorCodes, MqttLbError } from './errors.js';
import { monotonicNow } from './monotonic-clock.js';
import { availableParallelism } from 'node:os';

type Fronts = ReturnType<typeof buildFront>;

/** What the fallible part of a reload bound (undone if it does not go ahead). */
interface Binds {
  opened: Map<string, Listener>;
  moved: Listener[];
  undo: Array<() => Promise<void>>;
}

/** A reload refused or undone because a stop has begun: no failure (run.ts and the workers say it is ignored). */
export function reloadWhileStopping(): MqttLbError {
  return new MqttLbError(ErrorCodes.RELOAD_WHILE_STOPPING, 'the balancer is stopping: reload ignored');
}

export function isReloadWhileStopping(err: unknown): err is MqttLbError {
  return err instanceof MqttLbError && err.code === ErrorCodes.RELOAD_WHILE_STOPPING;
}

/** A reload whose fallible part is done: apply the rest, or undo it. Each settles once. */
export interface PreparedReload {
  commit(): Promise<void>;
  abort(): Promise<void>;
}

const TRACK_INTERVAL_MS = 250;
/**
 * How long clients of a pool that a reload is adding may wait for its commit (then only for its servers' first
 * verdicts): as long as a cluster primary waits for its workers to prepare a reload (cluster/primary.ts).
 */
const PENDING_POOL_WAIT_MS = 15_000;

/** Polls `done` every 50 ms until it holds or the monotonic clock (monotonicNow) reaches `until`. */
async function waitUntil(done: () => boolean, until: number): Promise<void> {
  while (!done() && monotonicNow() < until) await new Promise((r) => setTimeout(r, 50));
}
/** After the drain, how long destroyed sessions get to finish closing (their sockets close asynchronously). */
const SESSION_CLOSE_WAIT_MS = 2000;
/**
 * Demoted without a stop, an instance's VIP sessions are closed at evictRate within this, the rest at once: both
 * hosts hold the VIP meanwhile (failover/heartbeat.ts RELEASE_BOUND_MS), so it stays short.
 */
const RELEASE_SPREAD_MS = 2000;

/**
 * single: everything in one process (workers: 1).
 * primary: health checks, admin server, metrics, failover; no listeners (workers: N).
 * worker: listeners and sessions; server states come from the primary.
 */
export type Role = 'single' | 'primary' | 'worker';

/** How a worker talks to its primary (see src/cluster/worker.ts). */
export interface WorkerLink {
  probeRequest(server: Server): void;
  connectSample(server: Server, seconds: number): void;
  /** Where the pools' client IDs are reported to the other workers (the takeover rule across workers). */
  readonly clientIdSharing: ClientIdSharing;
}

export class App implements TelemetrySource, AdminActions {
  readonly version = VERSION;
  readonly startedAt = Date.now();
  config: LbConfig;
  readonly log: Logger;
  readonly poolMap = new Map<string, Pool>();
  readonly listenerMap = new Map<string, Listener>();
  /** Listeners a reload removed while they still had sessions: a stop drains or evicts those too. */
  private readonly retiredListeners = new Set<Listener>();
  /** Pools a reload removed while they still had sessions; a reload that adds the name again takes them back. */
  private readonly detachedPools = new Map<string, Pool>();
  private readonly checkers = new Map<string, HealthChecker>();
  private readonly reactions = new Map<string, PoolReactions>();
  /** Pools a reload being prepared adds, with the end of their clients' wait (ProxyContext.poolPendingUntil). */
  private readonly pendingPools = new Map<string, number>();
  readonly ctx: ProxyContext;
  /** null in a worker: the primary serves metrics (workers send it their counters and lag). */
  readonly metrics: Metrics | null;
  readonly role: Role;
  /** primary: the workers' listener counters, summed, of the listeners every worker has bound (readiness). */
  readonly remoteListeners = new Map<string, ListenerStats>();
  /** primary: what metrics and status show: those, and any shown before while no worker serves it (primary.ts). */
  readonly shownListeners = new Map<string, ListenerStats>();
  /** primary: listeners a worker reports as not listening or not accepting (failover tracking). */
  readonly remoteListenerFaults = new Set<string>();
  /** primary: the workers' memory ceilings, combined (see src/cluster/primary.ts). */
  remoteOverload = { active: false, inUseBytes: 0, maxBytes: 0 };
  private readonly link: WorkerLink | null;
  private admin: AdminServer | null = null;
  private failoverRuntime: Failover | null = null;
  /**
   * The failover settings the runtime was started with: a reload does not change them (they need a restart,
   * operations.md), so tracking and the stop go on reading these, not the reloaded file's.
   */
  private failoverConfig: FailoverConfig | null = null;
  /** The config it started with: what the keys a reload does not apply run with (config/restart-only.ts). */
  private readonly startConfig: LbConfig;
  /** What `workers: auto` meant at start (CPU affinity may change while it runs: restart-only.ts). */
  private readonly startCores = availableParallelism();
  private admission: Admission;
  /** limits.maxMemory in a process with listeners (in the primary the workers' snapshots say it). */
  readonly overloadGuard: OverloadGuard;
  private trackTimer: NodeJS.Timeout | null = null;
  /** Alerts on a served pool whose servers are up but take no new session (drained, maint, weight 0). */
  private readonly intakeAlert: IntakeAlert;
  /** `unfinished CONNECTs hold limits.maxPendingConnectBytes ...`: at most once per 10 s, with the count left out. */
  private readonly pendingFullLog: RateLimitedLog;
  /** Dials that failed for want of a descriptor, memory or a local port (onDialFailure): once per 10 s per code. */
  private readonly localDialLog: RateLimitedLog;
  /** Sessions closed for pools.<name>.serverConnackTimeout (logConnackTimeouts): once per 10 s per server (per process). */
  private readonly connackTimeoutLog: RateLimitedLog;
  /** Each clamp the running config gave (its key) and the value it was said with (logClamped, clampsToSay). */
  private clampsSaid = new Map<string, number>();
  /** checkDescriptors' last finding: null, or why no descriptor could be opened. */
  private descriptorShortage: 'EMFILE' | 'ENFILE' | null = null;
  /** limits.idleTimeout over this process's sessions (none in the cluster primary: its workers sweep theirs). */
  private readonly idleSweep: IdleSweep;
  private stopping = false;
  private stopped: Promise<void> | null = null;
  private readonly privateBinds: boolean;
  /** While `beforeListeners` (the warm-up) runs: /readyz says so. */
  private warmingUp = false;
  /** While the listeners wait for the first health verdicts (firstVerdicts): /readyz says so. */
  private awaitingVerdicts = false;
  /**
   * While this host's own network is out (failover's 'network' event), and until the probes made afresh when it is
   * back have answered: the number of pools without a server up from before it went, used by the tracking instead.
   */
  private poolsWithoutServerHeld: number | null = null;
  /** The pools countPoolsWithoutServer counted last: one whose servers await a first verdict keeps its count. */
  private poolsCountedWithoutServer = new Set<string>();
  /** Counts the network's outs and returns: a release for an earlier return does nothing (onFailoverNetwork). */
  private networkEpoch = 0;
  /** This host's own network is out (failover's last 'network' event said so). */
  private networkOut = false;
  /** A stop came while starting (cutStartShort): the wait for the first verdicts ends at once. */
  private startCut = false;
  private endVerdictWait: (() => void) | null = null;
  /** start() has bound every configured listener (before that the listener map is still empty). */
  private listenersBound = false;

  /**
   * `privateBinds`: listeners bind their own sockets even in a node:cluster worker (`exclusive`), rather than
   * share the primary's: the warm-up's App (warm-up.ts), whose port-0 listener must not be one socket for all
   * workers.
   */
  constructor(config: LbConfig, log: Logger, role: Role = 'single', link: WorkerLink | null = null, options: { privateBinds?: boolean } = {}) {
    this.privateBinds = options.privateBinds ?? false;
    this.config = config;
    this.startConfig = config;
    this.log = log;
    this.role = role;
    this.link = link;
    this.intakeAlert = new IntakeAlert(log);
    this.pendingFullLog = new RateLimitedLog(log, 10_000, () => performance.now());
    this.localDialLog = new RateLimitedLog(log, 10_000, () => performance.now());
    this.connackTimeoutLog = new RateLimitedLog(log, 10_000, () => performance.now());
    // The process's name cache says when the resolver fails (not the warm-up's private copy, whose log is silent).
    if (!this.privateBinds) {
      const lookupLog = new RateLimitedLog(log, 10_000, () => performance.now());
      serverNames.onLookupFailed = (host, err, keptAnswer) => {
        if (keptAnswer) lookupLog.warn(`kept:${host}`, { host, err }, 'server name lookup failed: the last answer is used meanwhile (up to 30 s after it came)');
        else lookupLog.warn(`none:${host}`, { host, err }, 'server name lookup failed: dials and probes of it fail until it resolves');
      };
    }
    this.admission = new Admission(config.limits);
    const pools = this.poolMap;
    this.ctx = {
      log,
      limits: config.limits,
      logSessions: config.log.sessions,
      pool: (name) => pools.get(name),
      totalActive: 0,
      totalAdmitted: 0,
      maxConnections: config.limits.maxConnections,
      descriptorRoom: Number.POSITIVE_INFINITY,
      overloaded: false,
      pendingConnectBytes: 0,
      onPendingConnectBytesFull: () => {
        // The bound in effect (session.ts), not a value written below its floor.
        const limit = pendingConnectBound(this.ctx.limits);
        this.pendingFullLog.warn('full', { pendingBytes: this.ctx.pendingConnectBytes, limit }, 'unfinished CONNECTs hold limits.maxPendingConnectBytes: a client whose CONNECT needs more is closed');
      },
      connectGrowthBudget: Number.POSITIVE_INFINITY,
      remeasureConnectGrowthBudget: (bytes) => {
        const room = this.overloadGuard.headroomNow();
        this.ctx.connectGrowthBudget = room;
        if (bytes <= room) return true;
        this.overloadGuard.refused(bytes);
        return false;
      },
      onServerConnected: (server, seconds) => {
        if (this.link !== null) this.link.connectSample(server, seconds);
        else this.metrics?.serverConnect(server.pool, server.name, seconds);
      },
      onDialFailure: (server, serverCaused, localError) => {
        if (serverCaused) this.probeSoon(server);
        if (localError !== null) {
          this.localDialLog.warn(localError, { pool: server.pool, server: server.name, code: localError }, 'server dial failed here: this host is out of descriptors, memory or local ports, not the server (its clients are answered server unavailable)');
        }
      },
      onServerSilent: (server) => this.probeSoon(server),
      arrive: (ticket) => this.admission.arrive(ticket),
      admit: (ticket) => this.admission.admit(ticket),
      release: (ticket) => this.admission.release(ticket),
      verdictWaits: new VerdictWaits(),
      connackDeadlines: new ConnackDeadlines((sessions, timeoutMs) => this.logConnackTimeouts(sessions, timeoutMs)),
      poolPendingUntil: (name) => this.pendingPools.get(name) ?? 0,
    };
    this.metrics = role === 'worker' ? null : new Metrics(this);
    this.idleSweep = new IdleSweep(
      () => this.allSessions(),
      (sessions, timeoutMs) => this.log.info({ sessions, idleTimeoutMs: timeoutMs }, 'idle sessions closed (limits.idleTimeout)'),
    );
    this.overloadGuard = new OverloadGuard(config.limits.maxMemory, {
      entered: (inUse, max, refused) => this.overloadEntered(inUse, max, refused),
      left: (inUse, max) => this.overloadLeft(inUse, max),
      sampled: (headroom) => {
        this.ctx.connectGrowthBudget = headroom;
      },
    });
  }

  /** One line per server for the sessions one expiry of serverConnackTimeout closed (session.ts connackOverdue). */
  private logConnackTimeouts(sessions: ConnackWaiter[], timeoutMs: number): void {
    const byServer = new Map<string, { pool: string; server: string; sessions: number }>();
    for (const s of sessions) {
      const key = `${s.server!.pool}\0${s.server!.name}`;
      const entry = byServer.get(key);
      if (entry === undefined) byServer.set(key, { pool: s.server!.pool, server: s.server!.name, sessions: 1 });
      else entry.sessions++;
    }
    for (const [key, fields] of byServer) {
      this.connackTimeoutLog.warn(key, { ...fields, serverConnackTimeoutMs: timeoutMs }, 'server sent no CONNACK within serverConnackTimeout: its clients are answered server unavailable');
    }
  }

  // ── the memory ceiling (reliability case 64) ────────────────────────────────────────────────────────────

  /** New connections are closed at accept from now on; clients still before their CONNECT go first. */
  private overloadEntered(inUseBytes: number, maxMemory: number, refusedConnectBytes: number): void {
    this.ctx.overloaded = true;
    let shed = 0;
    for (const l of this.sessionHolders()) shed += l.shedBeforeConnect();
    const refused = this.admission.refuseWaiting('overloaded') + this.ctx.verdictWaits.refuseAll('overloaded');
    this.log.warn({ inUseBytes, maxMemory, refusedConnectBytes, shedBeforeConnect: shed, refusedWaiting: refused }, 'memory ceiling reached: refusing new connections');
  }

  private overloadLeft(inUseBytes: number, maxMemory: number): void {
    this.ctx.overloaded = false;
    this.log.info({ inUseBytes, maxMemory }, 'memory below the ceiling again: accepting new connections');
  }

  // ── start ───────────────────────────────────────────────────────────────────────────────────────────────

  /**
   * `beforeListeners` runs after the admin port is bound and before any listener is: the warm-up (warm-up.ts).
   * Each listener's address is tried first (bound and closed again), so an address in use is reported at once,
   * not after it. When `abandon` then says so (a stop signal came meanwhile), no listener is bound and the
   * result is false: the caller stops the App.
   */
  async start(hooks: { beforeListeners?: () => Promise<unknown>; abandon?: () => boolean } = {}): Promise<boolean> {
    const config = this.config;
    for (const pc of Object.values(config.pools)) this.addPool(pc);
    // Before the first health checks (firstVerdicts): a server kept in maintenance is not probed.
    if (config.admin.stateFile !== null && this.role !== 'worker') restoreAdminStates(config.admin.stateFile, this.poolMap, this.log);
    const budget = this.sessionBudget(config);
    this.ctx.maxConnections = budget.globalMax;
    this.ctx.descriptorRoom = budget.descriptorRoom;
    this.logClamped(budget);

    if (config.failover !== null && this.role !== 'worker') {
      // The failover worker logs its own transitions ('failover state changed').
      this.failoverRuntime = new Failover(config.failover, this.log);
      this.failoverRuntime.onRelease = (vips, signal) => this.releaseVipSessions(new Set(vips), signal);
      this.failoverRuntime.on('network', this.onFailoverNetwork);
      this.failoverConfig = config.failover;
    }
    try {
      // The admin port first: /healthz answers during a warm-up, and /readyz says it is warming up.
      if (this.metrics !== null) {
        this.admin = new AdminServer({ config: config.admin, source: this, actions: this, metrics: this.metrics, log: this.log });
        await this.admin.listen();
      }
      // Each listener's address is tried first (bound and closed again): an address in use is reported at once,
      // not after the warm-up and the first health checks. A cluster worker's bind goes through the primary.
      if (this.role !== 'worker') for (const lc of config.listeners) await probeBind(lc);
      // Failover before the warm-up, held: BACKUP at most until the proxy serves (releaseFailover), while its
      // Master_Down_Interval runs. A host restarted after a crash then takes its VIP back as soon as its listeners are
      // bound, not a whole interval after (the failover benchmark: 2 s behind keepalived). A VIP taken before the
      // listeners are bound would refuse clients, and tracking would see them missing (a FAULT at every start).
      if (this.failoverRuntime !== null) await this.failoverRuntime.start({ held: true });
      if (hooks.beforeListeners !== undefined) {
        this.warmingUp = true;
        try {
          await hooks.beforeListeners();
        } finally {
          this.warmingUp = false;
        }
        // The warm-up kept the loop busy before any client could come: not lag anyone met.
        this.metrics?.discardLoopLag();
        if (hooks.abandon?.() === true) return false;
      }
      await this.firstVerdicts();
      if (hooks.abandon?.() === true) return false;
      for (const lc of this.ownListeners(config)) {
        await this.openListener(lc, listenerCaps(budget, lc.name, lc.maxConnections), this.frontFor(lc, config));
      }
      this.listenersBound = true;
      // Failover stays held: run.ts releases it once the proxy serves (with workers, every worker) and a reload that
      // came while starting is applied (its priority or preempt must decide the first election, not the file's).
    } catch (err) {
      await this.closeEverything();
      throw err;
    }
    if (this.role !== 'primary') {
      this.overloadGuard.start();
      this.idleSweep.configure(config.limits.idleTimeout);
    }
    this.trackTimer = setInterval(() => {
      this.checkDescriptors();
      this.track();
      this.checkIntake();
    }, TRACK_INTERVAL_MS);
    this.trackTimer.unref();
    return true;
  }

  /**
   * Health checks start, and the listeners wait for every server's first verdict (bounded by the longest
   * health.timeout): until a server has one it takes no session, so a client arriving first would be refused
   * (`no_server`) by a balancer whose brokers are all fine, or routed past its own server, which breaks
   * stickiness for it. HAProxy avoids this by assuming its servers up at start; we ask them first, which costs
   * the first probe's round trip (a few ms against a live broker, health.timeout against a silent one). After the
   * warm-up, whose busy loop would make probes time out. In the cluster primary, before the workers fork: each
   * gets the verdicts right after its config, before it binds (primary.ts).
   */
  private async firstVerdicts(): Promise<void> {
    if (this.checkers.size === 0 || this.startCut) return;
    const began = monotonicNow();
    for (const c of this.checkers.values()) c.start();
    const bound = this.verdictBound();
    this.awaitingVerdicts = true;
    try {
      const cut = new Promise<void>((resolve) => (this.endVerdictWait = resolve));
      await Promise.race([Promise.all([...this.checkers.values()].map((c) => c.settled(bound))), cut]);
    } finally {
      this.awaitingVerdicts = false;
      this.endVerdictWait = null;
    }
    if (this.startCut) {
      this.log.info({ ms: Math.round(monotonicNow() - began) }, 'first health checks cut short: stopping');
      return;
    }
    const states = { up: 0, down: 0, unknown: 0 };
    for (const p of this.poolMap.values()) for (const s of p.servers) if (s.admin !== 'maint') states[s.health]++;
    this.log.info({ ms: Math.round(monotonicNow() - began), ...states }, 'first health checks done');
  }

  /** A stop signal while starting (run.ts): the wait for the first health verdicts ends now (start's `abandon` then says so). */
  cutStartShort(): void {
    this.startCut = true;
    this.endVerdictWait?.();
  }

  /**
   * The proxy serves (its listeners are bound; the cluster primary: every worker's) and a reload that came while
   * starting is applied (run.ts): failover, started held, may make this host master now. Not once a stop has begun:
   * held, it never becomes master, and the stop resigns. The tracking goes first, so that a pool without a server up
   * lowers the priority before the election can act on it.
   */
  releaseFailover(): void {
    const fo = this.failoverRuntime;
    if (fo === null || !fo.isHeld || this.stopping) return;
    this.sendTracking(fo, this.failoverConfig!);
    fo.serving();
  }

  /** The connection caps that fit the open-file limit; throws MQLB_START_FD_LIMIT when not one session fits. */
  private sessionBudget(config: LbConfig): ReturnType<typeof budgetForConfig> {
    const budget = budgetForConfig(config);
    // The cluster primary holds no session; each worker checks its own share.
    if (budget.noRoom !== null && this.role !== 'primary') throw new MqttLbError(ErrorCodes.START_FD_LIMIT, budget.noRoom);
    return budget;
  }

  /**
   * At start, and at a reload that changes what is clamped: a cap above what the open-file limit allows runs lowered,
   * and the log says so (a soak audit saw the same lines at every reload). The cluster primary holds no session: each
   * worker clamps its own share and says so (with its index).
   */
  private logClamped(budget: ReturnType<typeof budgetForConfig>): void {
    if (this.role === 'primary') return;
    const { say, said } = clampsToSay(this.clampsSaid, budget);
    this.clampsSaid = said;
    // A cap written in the file and lowered is worth a warning; a default one sized to the limit, a note.
    for (const c of say) {
      if (c.written) this.log.warn({ detail: c.warning }, 'connection cap clamped');
      else this.log.info({ detail: c.warning }, 'connection cap clamped');
    }
  }

  /** The listeners this process serves: none in the cluster primary (its workers do). */
  private ownListeners(config: LbConfig): LbConfig['listeners'] {
    return this.role === 'primary' ? [] : config.listeners;
  }

  /** TLS/PROXY front and header builder, from the TLS material the config was loaded with. */
  private frontFor(lc: ListenerConfig, config: LbConfig): Fronts {
    // The timeout of the config being started or reloaded to, not this.config (still the old one while a
    // reload prepares): the TLS server's handshake timeout is fixed when it is built.
    return buildFront(lc, config.limits.clientConnectTimeout);
  }

  private async openListener(lc: ListenerConfig, caps: ListenerCaps, front: Fronts): Promise<void> {
    const l = new Listener(lc, this.ctx, caps);
    l.setFront(...front);
    l.exclusive = this.privateBinds;
    await l.listen();
    this.listenerMap.set(lc.name, l);
    this.logListenerStarted(l);
  }

  private logListenerStarted(l: Listener): void {
    const lc = l.config;
    this.log.info({ listener: lc.name, bind: lc.bind, pool: lc.pool, tls: lc.tls !== null, maxConnections: l.maxConnections, acceptGuard: l.acceptGuard }, 'listener started');
  }

  private addPool(pc: LbConfig['pools'][string]): void {
    // A pool an earlier reload removed while sessions still ran on it: taken back, with them (Pool.detached).
    const back = this.detachedPools.get(pc.name);
    this.detachedPools.delete(pc.name);
    if (back !== undefined) {
      back.reconfigure(pc);
      back.restart(); // nothing probed it meanwhile
    }
    // A server skipped for its dial back-off is probed as the failed dial it spares would have had it probed.
    const pool =
      back ??
      new Pool(pc, undefined, {
        keepDetached: this.role !== 'primary',
        onDeferred: (server) => this.ctx.onDialFailure(server, true, null),
        ...(this.link === null ? {} : { clientIdSharing: this.link.clientIdSharing }),
      });
    this.poolMap.set(pc.name, pool);
    // Workers get server states from the primary instead of probing (every worker routes alike).
    if (this.role !== 'worker') {
      const checker = new HealthChecker(pool, {
        log: this.log,
        onResult: (server, r) => this.metrics?.healthCheck(server.pool, server.name, r.result, r.durationMs / 1000),
      });
      this.checkers.set(pc.name, checker);
    }
    // Reactions close sessions; the primary holds none.
    if (this.role !== 'primary') {
      const verdictWaits = this.ctx.verdictWaits;
      this.reactions.set(pc.name, new PoolReactions(pool, { log: this.log, onStateChange: () => verdictWaits.wakeSoon() }));
    }
  }

  /**
   * Failover tracking: a listener that cannot accept → FAULT; each pool with no server up lowers the
   * priority. (The interface carrier is watched inside the failover worker itself.)
   */
  private track(): void {
    const fo = this.failoverRuntime;
    const fc = this.failoverConfig;
    // Stopping: the listeners were closed on purpose and resign() hands over; reporting them as failed
    // would turn the graceful hand-over into a FAULT (VIP dropped at once, before the eviction).
    // Held (starting): the listeners are not bound yet, which is no fault; releaseFailover() sends the first tracking.
    if (fo === null || fc === null || this.stopping || fo.isHeld) return;
    this.sendTracking(fo, fc);
  }

  /** The tracking now, to the heartbeat. */
  private sendTracking(fo: Failover, fc: FailoverConfig): void {
    fo.setTracking(this.tracking(fc));
  }

  /** What lowers this host's claim now: a listener that cannot accept, pools without a server up. */
  private tracking(fc: FailoverConfig): ReturnType<typeof computeTracking> {
    let listenerFailed = false;
    if (this.role === 'primary') {
      listenerFailed = this.remoteListenerFaults.size > 0;
    } else {
      for (const l of this.listenerMap.values()) if (!l.listening || !l.acceptHealthy) listenerFailed = true;
    }
    const poolsWithoutServer = this.poolsWithoutServerHeld ?? this.countPoolsWithoutServer();
    return computeTracking(fc.track, { listenerFailed, poolsWithoutServer });
  }

  /**
   * This host's network is out (the failover interface without its carrier, its own address gone): health probes
   * fail for it, not for the servers. When it is back, the servers judged meanwhile are probed afresh
   * (HealthChecker.recheckAfterOutage) rather than after `rise` intervals: the failover benchmark saw a failback after
   * a link cut wait for them (the pools' priority penalty). Told whatever the failover state: a track script may have
   * put the host in FAULT before the link went, and may keep it there after the link is back.
   */
  private readonly onFailoverNetwork = (out: boolean): void => {
    const epoch = ++this.networkEpoch;
    this.networkOut = out;
    if (out) {
      // The pool penalty stays as it was: what the probes find meanwhile is this host's outage, not the servers'.
      this.poolsWithoutServerHeld ??= this.countPoolsWithoutServer();
      for (const c of this.checkers.values()) c.outageBegan();
      return;
    }
    let probes = 0;
    const graceMs = recheckGraceMs(this.failoverConfig?.interface ?? null);
    for (const c of this.checkers.values()) probes += c.recheckAfterOutage(graceMs);
    if (probes > 0) this.log.info({ probes, graceMs }, 'failover interface back: probing afresh the servers judged while it was out');
    // Held until those probes have answered: servers marked down during the outage stay down until theirs does, and
    // a penalty applied for that moment would let the peer's next advert win the election.
    const release = (): void => {
      if (this.networkEpoch !== epoch) return; // out again meanwhile
      this.poolsWithoutServerHeld = null;
      this.track();
    };
    if (probes === 0) {
      release();
      return;
    }
    // A probe that fails as if the path were still out is made again for graceMs (checker.ts): the last one that
    // gives no verdict starts before the window ends and may take its timeout, the one made again after it (no sooner
    // than PROBE_NOW_MIN_GAP_MS after that start) its timeout too.
    const bound = graceMs + Math.max(PROBE_NOW_MIN_GAP_MS, this.longestHealthTimeout()) + this.verdictBound();
    void Promise.all([...this.checkers.values()].map((c) => c.settled(bound))).then(release);
  };

  /** How long a round of probes may take to answer: the longest health.timeout, and a margin. */
  private verdictBound(): number {
    return this.longestHealthTimeout() + FIRST_VERDICT_MARGIN_MS;
  }

  private longestHealthTimeout(): number {
    return Math.max(...[...this.poolMap.values()].map((p) => p.config.health.timeout));
  }

  private countPoolsWithoutServer(): number {
    const counted = new Set<string>();
    for (const p of this.servedPools()) {
      if (p.servers.some((s) => s.health === 'up')) continue;
      // A server a reload added (or back from maint) awaits its first probe, which answers within its timeout: until
      // then the pool is counted as it was (a failover re-audit: a reload that gave a pool only new servers took the
      // pool weight off the master's priority for the 0.8 s their first probe took, and the VIP moved away and back;
      // the next re-audit: a pool without a server given new dead ones lost its penalty meanwhile, the VIP came back
      // and left again). The verdict's state change tracks again; a verdict that never comes, the periodic track.
      if (p.pendingVerdictMs() > 0 && !this.poolsCountedWithoutServer.has(p.name)) continue;
      counted.add(p.name);
    }
    this.poolsCountedWithoutServer = counted;
    return counted.size;
  }

  // ── reload ──────────────────────────────────────────────────────────────────────────────────────────────

  /**
   * Apply a new, already validated config. Established sessions are never dropped; admin states survive. A
   * reload that fails (a certificate that cannot be read, an address in use) changes nothing: everything that
   * can fail is done first (prepareReload) and undone on failure, and only then is the rest applied.
   */
  async reload(next: LbConfig): Promise<void> {
    const prepared = await this.prepareReload(next);
    await prepared.commit();
  }

  /**
   * The fallible part of a reload: every listener's front (reads certificates), every new or moved bind. The
   * result applies the rest (commit) or undoes it (abort); a workers' primary asks every worker to prepare
   * before any of them commits, so a reload one worker cannot take is taken by none.
   */
  async prepareReload(next: LbConfig): Promise<PreparedReload> {
    // Once stopping, a reload would open listeners again.
    if (this.stopping) throw reloadWhileStopping();
    const fronts = new Map<string, Fronts>();
    for (const lc of this.ownListeners(next)) fronts.set(lc.name, this.frontFor(lc, next));
    // More servers keep more descriptors for probes: a reload must not leave room for no session either.
    const budget = this.sessionBudget(next);
    this.markPendingPools(next);
    let binds: Binds;
    try {
      binds = await this.bindListeners(next, budget, fronts);
    } catch (err) {
      this.reloadEnded();
      throw err;
    }
    let settled = false;
    return {
      commit: async () => {
        if (settled) return;
        settled = true;
        // A stop that began while this reload waited (for the binds, or for the other workers) wins.
        try {
          if (this.stopping) {
            await this.closeBinds(binds);
            throw reloadWhileStopping();
          }
          await this.applyReload(next, budget, fronts, binds.opened);
          // Server names are resolved anew after a reload, as HAProxy and nginx do (server-name-cache.ts).
          serverNames.refreshAll();
        } finally {
          this.reloadEnded();
        }
      },
      abort: async () => {
        if (settled) return;
        settled = true;
        try {
          if (this.stopping) await this.closeBinds(binds);
          else await this.undoBinds(binds);
        } finally {
          this.reloadEnded();
        }
      },
    };
  }

  /**
   * The pools `next` adds: a listener for one is bound before the reload commits, and its first clients wait for
   * the pool (then for its servers' first verdicts) instead of being refused for a pool that is a moment away.
   */
  private markPendingPools(next: LbConfig): void {
    if (this.role === 'primary') return;
    const now = performance.now();
    for (const pc of Object.values(next.pools)) {
      if (!this.poolMap.has(pc.name)) this.pendingPools.set(pc.name, now + PENDING_POOL_WAIT_MS + pc.health.timeout + FIRST_VERDICT_MARGIN_MS);
    }
  }

  /**
   * The reload committed (the pools exist), was undone or failed: waiting clients look again. After every reload,
   * not only one that added a pool: one that removed the server they wait for, or set its weight to 0, changes no
   * server's state, and they would sit out their window for a verdict nobody will give.
   */
  private reloadEnded(): void {
    this.pendingPools.clear();
    this.ctx.verdictWaits.wakeSoon();
  }

  private async applyReload(next: LbConfig, budget: ReturnType<typeof budgetForConfig>, fronts: Map<string, Fronts>, opened: Map<string, Listener>): Promise<void> {
    const prev = this.config;
    this.config = next;
    this.logClamped(budget);
    this.ctx.limits = next.limits;
    this.ctx.logSessions = next.log.sessions;
    this.log.level = next.log.level;
    this.admission.reconfigure(next.limits);
    this.admission.adopt(this.admittedSessions());
    this.overloadGuard.reconfigure(next.limits.maxMemory);
    if (this.role !== 'primary') this.idleSweep.configure(next.limits.idleTimeout);

    for (const [name, pool] of this.detachedPools) if (!pool.hasSessions()) this.detachedPools.delete(name);
    for (const [name, pool] of this.poolMap) {
      const pc = next.pools[name];
      if (pc === undefined) {
        // Pool gone: stop checking; its live sessions continue until they end (those still dialling look again).
        notePlacementChange();
        void this.checkers.get(name)?.close();
        this.reactions.get(name)?.close();
        this.checkers.delete(name);
        this.reactions.delete(name);
        this.poolMap.delete(name);
        const sessions = this.role === 'primary' ? 0 : pool.sessionCount();
        if (sessions > 0) {
          this.detachedPools.set(name, pool);
          // A pool renamed by a reload is one removed and one added: the new one's servers are new objects, so its
          // status shows them empty and a drain of them closes none of these (an audit found an operator could take
          // a broker down believing it empty). Said, so that the sessions are not forgotten.
          this.log.warn({ pool: name, sessions }, 'pool removed while sessions run on it: they continue, out of the status, metrics and drains of any pool');
        }
        continue;
      }
      const checker = this.checkers.get(name);
      // Turned off, health checks leave every server up (Pool.reconfigure): the checker logs it from what it was.
      const healthBefore = checker !== undefined && pc.health.type === 'none' ? new Map(pool.servers.map((s) => [s, s.health] as const)) : undefined;
      // Turned on, the `up` that `none` held is no verdict (Pool.reconfigure): said, as every other change of state
      // (an ops audit: the next line read `from: unknown` with no line for the step from up).
      const heldUp = checker !== undefined && pool.config.health.type === 'none' && pc.health.type !== 'none' ? new Set(pool.servers) : null;
      const removed = pool.reconfigure(pc);
      for (const s of pool.servers) {
        if (heldUp?.has(s) === true && s.health === 'unknown') {
          this.log.info({ pool: name, server: s.name, from: 'up', to: 'unknown', result: null, detail: 'health checks enabled: its first probe decides' }, 'server state changed');
        }
      }
      // As for a removed pool: its sessions run on out of sight, and the totals drop with no other word (a soak audit).
      // Said by whoever holds them (each worker, with workers).
      if (this.role !== 'primary') {
        for (const s of removed) {
          if (s.sessionCount > 0) this.log.warn({ pool: name, server: s.name, sessions: s.sessionCount }, 'server removed while sessions run on it: they continue, out of the status, metrics and drains until it is added again');
        }
      }
      checker?.reconfigure(pool, healthBefore);
      this.reactions.get(name)?.reconfigure(pool);
    }
    for (const pc of Object.values(next.pools)) {
      if (!this.poolMap.has(pc.name)) {
        this.addPool(pc);
        const checker = this.checkers.get(pc.name);
        // Added while this host's network is out: what its first probes find is this host's outage too, and they are
        // made afresh when it is back (onFailoverNetwork; an audit: such a pool was left out of the recheck).
        if (this.networkOut) checker?.outageBegan();
        checker?.start();
      }
    }
    // The file follows the config: a removed server's state goes (re-added, it comes back ready), a new path is written.
    this.saveAdminStates();

    this.ctx.maxConnections = budget.globalMax;
    this.ctx.descriptorRoom = budget.descriptorRoom;
    for (const [name, l] of this.listenerMap) {
      const lc = next.listeners.find((x) => x.name === name);
      if (lc === undefined) {
        await l.stopAccepting();
        this.listenerMap.delete(name);
        this.retire(l);
        this.log.info({ listener: name }, 'listener stopped by reload');
        continue;
      }
      const moved = l.config.bind !== lc.bind;
      const before = { maxConnections: l.maxConnections, acceptGuard: l.acceptGuard };
      l.reconfigure(lc, listenerCaps(budget, name, lc.maxConnections));
      l.setFront(...fronts.get(name)!);
      if (moved) this.log.info({ listener: name, bind: lc.bind }, 'listener moved by reload');
      // The guard follows the descriptor budget, so a change elsewhere (another listener, pool sizes) moves it too.
      if (before.maxConnections !== l.maxConnections || movedByOnePercent(before.acceptGuard, l.acceptGuard)) {
        this.log.info({ listener: name, maxConnections: l.maxConnections, acceptGuard: l.acceptGuard, was: before }, 'listener limits changed by reload');
      }
    }
    for (const [name, l] of opened) {
      this.listenerMap.set(name, l);
      this.logListenerStarted(l);
    }
    if (prev.admin.token !== next.admin.token) this.admin?.setToken(next.admin.token);
    if (this.role !== 'worker') {
      // Against what runs (not the previous file): a change that needs a restart stays unapplied, and is said again,
      // until then; priorities, preempt, preemptDelay, track, garp and notify are applied now (reload.ts).
      const plan = planFailoverReload(this.failoverConfig, next.failover);
      if (plan.applied.length > 0 && plan.next !== null) {
        this.failoverConfig = plan.next;
        this.failoverRuntime?.reconfigure(plan.next);
        this.log.info({ keys: plan.applied }, 'failover settings reloaded');
        // A new tracking weight counts now, not at the next tick.
        this.track();
      }
      if (plan.restartOnly.length > 0) this.log.warn({ keys: plan.restartOnly }, 'failover settings change needs a restart: running with the settings it started with');
      for (const c of restartOnlyChanges(this.startConfig, next, this.startCores)) this.log.warn({ running: c.running, file: c.file }, `${c.key} change needs a restart`);
    }
  }

  /**
   * Binds every new listener and moves every listener whose bind changed. On a failure, what was done is
   * undone (new listeners closed, moved ones bound where they were) and the error rethrown; a stop that began
   * meanwhile closes them instead. New listeners accept from the moment they are bound, under the running
   * config until the reload is committed.
   */
  private async bindListeners(next: LbConfig, budget: ReturnType<typeof budgetForConfig>, fronts: Map<string, Fronts>): Promise<Binds> {
    const binds: Binds = { opened: new Map(), moved: [], undo: [] };
    let current: ListenerConfig | null = null;
    try {
      for (const lc of this.ownListeners(next)) {
        current = lc;
        const running = this.listenerMap.get(lc.name);
        if (running === undefined) {
          const l = new Listener(lc, this.ctx, listenerCaps(budget, lc.name, lc.maxConnections));
          l.setFront(...fronts.get(lc.name)!);
          binds.opened.set(lc.name, l);
          await l.listen();
          binds.undo.push(() => l.stopAccepting());
        } else if (running.config.bind !== lc.bind) {
          binds.moved.push(running);
          binds.undo.push(await running.moveTo(lc));
        }
        if (this.stopping) throw reloadWhileStopping();
      }
    } catch (err) {
      if (this.stopping) await this.closeBinds(binds);
      else await this.undoBinds(binds);
      throw current === null || this.stopping ? err : explainHandOver(err, current, [...this.listenerMap.values()].map((l) => l.config));
    }
    return binds;
  }

  /** A reload that does not go ahead: new listeners closed, moved ones bound where they were. */
  private async undoBinds(binds: Binds): Promise<void> {
    for (const step of [...binds.undo].reverse()) {
      await step().catch((e: unknown) => this.log.error({ err: e }, 'reload: could not restore a listener'));
    }
    for (const l of binds.opened.values()) this.retire(l);
  }

  /** The stop began during a reload: every listener it bound or moved stops accepting (the stop closed the rest). */
  private async closeBinds(binds: Binds): Promise<void> {
    for (const l of [...binds.opened.values(), ...binds.moved]) await l.stopAccepting();
    for (const l of binds.opened.values()) this.retire(l);
  }

  /** Listeners retired by reloads whose sessions still run (tests, and a bound on what is kept). */
  get retiredListenerCount(): number {
    return this.retiredListeners.size;
  }

  /**
   * A listener no longer in listenerMap (removed by a reload, or opened by one that did not go ahead) whose
   * sessions continue: a stop still drains or evicts them. Forgotten when its last session ends.
   */
  private retire(l: Listener): void {
    // Kept while it has sessions or connections still in its front: a stop or the memory ceiling reaches them.
    if (l.sessions.size === 0 && l.inFront.size === 0) return;
    this.retiredListeners.add(l);
    l.onEmpty = () => this.retiredListeners.delete(l);
  }

  // ── stop ────────────────────────────────────────────────────────────────────────────────────────────────

  /** primary: the proxy workers' worst loop lag since the previous call; set by ClusterPrimary. */
  workerLoopLag?: () => LagWindow | null;

  /** primary: the proxy workers' latest process and Node.js metrics; set by ClusterPrimary. */
  workerProcessMetrics?: () => ProcessMetricsJson[];

  /** primary: workers serving and restarted (mqtt_lb_workers, mqtt_lb_worker_restarts_total); set by ClusterPrimary. */
  workerCounts?: () => WorkerCounts;

  /** primary: stops the workers (evicting at a total rate, or draining); set by ClusterPrimary. */
  stopWorkers: ((evictRate: number | null, timeoutMs: number) => Promise<void>) | null = null;
  /** Cluster primary: the workers close their sessions on these VIPs (run.ts: primary.releaseVips). */
  releaseInWorkers: ((vips: string[], evictRate: number, spreadMs: number, signal: AbortSignal | null) => Promise<void>) | null = null;

  /**
   * A failover instance stopped being master without a stop (preempted, a split brain lost, FAULT): the sessions
   * whose client connected to one of its VIPs are closed before the VIP goes (design.md §3; the heartbeat waits
   * for this, bounded), or their clients would sit on dead connections, unaware, until their keepalive. At the
   * pools' evictRate within RELEASE_SPREAD_MS, then the rest and any accepted on the VIP meanwhile at once
   * (the new master's gratuitous ARP moves the clients; until then some still reach us). `signal`: this host is
   * master again (failover/index.ts): what is not closed yet stays.
   */
  async releaseVipSessions(vips: ReadonlySet<string>, signal: AbortSignal | null = null, evictRate = this.largestEvictRate(), spreadMs = RELEASE_SPREAD_MS): Promise<void> {
    if (this.releaseInWorkers !== null) {
      await this.releaseInWorkers([...vips], evictRate, spreadMs, signal);
      return;
    }
    const onVip = (s: ClientSession): boolean => isVipAddress(vips, s.clientLocalAddress);
    const sessions = [...this.allSessions()].filter(onVip);
    this.log.info({ sessions: sessions.length, evictRate }, 'failover: closing the sessions on the VIP');
    await this.evictPaced(sessions, evictRate, 'failover', monotonicNow() + spreadMs, signal);
    if (signal?.aborted === true) {
      this.log.info({ closed: sessions.filter((s) => s.closed).length, of: sessions.length }, 'failover: master again: the sessions on the VIP not closed yet stay');
      return;
    }
    await this.evictNow(onVip, 'failover');
  }

  private largestEvictRate(): number {
    return Math.max(...[...this.poolMap.values()].map((p) => p.config.evictRate));
  }

  /** Closes `sessions` at `evictRate` until all have closed, `until` passes or `signal` aborts (no more from then). */
  private async evictPaced(sessions: readonly ClientSession[], evictRate: number, reason: EvictReason, until: number, signal: AbortSignal | null = null): Promise<void> {
    if (sessions.length === 0) return;
    const evictor = new Evictor(evictRate, reason);
    const stopEvicting = (): void => evictor.close();
    signal?.addEventListener('abort', stopEvicting, { once: true });
    evictor.evict(sessions);
    await waitUntil(() => signal?.aborted === true || sessions.every((s) => s.closed), until);
    signal?.removeEventListener('abort', stopEvicting);
    evictor.close();
  }

  /** Closes at once every open session `match` picks, then waits (bounded) until their sockets have closed. */
  private async evictNow(match: (s: ClientSession) => boolean, reason: EvictReason): Promise<void> {
    const now = [...this.allSessions()].filter((s) => !s.closed && match(s));
    for (const s of now) s.evict(reason);
    await waitUntil(() => now.every((s) => s.closed), monotonicNow() + SESSION_CLOSE_WAIT_MS);
  }

  /** A stop has begun (SIGTERM/SIGINT): a reload is refused from now on (reloadWhileStopping). */
  get isStopping(): boolean {
    return this.stopping;
  }

  /**
   * Graceful stop (SIGTERM/SIGINT), in the contract's order. Idempotent.
   * `evictRate`: close sessions at this rate instead of letting them drain (a worker told by its primary).
   */
  stop(opts: { evictRate?: number } = {}): Promise<void> {
    this.stopped ??= this.runStop(opts.evictRate ?? null);
    return this.stopped;
  }

  private async runStop(requestedRate: number | null): Promise<void> {
    this.stopping = true; // /readyz turns 503
    this.log.info({}, 'stopping: no new connections');
    await Promise.all([...this.listenerMap.values()].map((l) => l.stopAccepting()));
    // Clients waiting for an accept slot are told now (CONNACK "server unavailable"), not let through later.
    this.admission.close();
    this.ctx.verdictWaits.close('shutting_down');
    // (Not the CONNACK deadlines: sessions still waiting for their server's CONNACK are told at their deadline
    // while the others drain, not left to drainTimeout; closeEverything stops them at the end.)
    const fo = this.failoverRuntime;
    if (fo !== null && fo.isMaster()) {
      // Bounded; at once when no peer could take over (none heard recently, in FAULT, or stopping too): Failover.resign().
      await fo.resign(Math.max(1000, (this.failoverConfig?.advertInterval ?? 100) * 20));
    } else {
      // A backup says at once that it stops: a master stopping at the same time need not wait for it.
      fo?.announceStop();
    }
    // Clients that reached us through a VIP cannot drain once the address moves: close them at evictRate,
    // so their reconnects land on the peer spread out rather than all at once. Others may drain.
    const evictRate = requestedRate ?? (fo !== null ? this.largestEvictRate() : null);
    const drainTimeout = this.config.limits.drainTimeout;
    if (this.stopWorkers !== null) await this.stopWorkers(evictRate, drainTimeout + 5000);
    const sessions = [...this.allSessions()];
    if (evictRate !== null && sessions.length > 0) {
      // With failover, only the sessions whose client connected to a VIP (design.md §3); the rest drain. A worker
      // closes all of its sessions: the VIP is the primary's, removed once every worker has stopped, so sessions
      // left to drain there would keep both hosts holding the VIP for as long.
      const until = monotonicNow() + drainTimeout;
      const vips = this.role === 'single' && this.failoverConfig !== null ? vipAddresses(this.failoverConfig.instances) : null;
      const onVip = (s: ClientSession): boolean => vips === null || isVipAddress(vips, s.clientLocalAddress);
      const evicted = sessions.filter(onVip);
      if (vips === null) this.log.info({ sessions: sessions.length, evictRate, drainTimeoutMs: drainTimeout }, 'closing sessions at evictRate');
      else this.log.info({ sessions: sessions.length, onVip: evicted.length, evictRate, drainTimeoutMs: drainTimeout }, 'closing VIP sessions at evictRate, draining the others');
      await this.evictPaced(evicted, evictRate, 'shutdown', until);
      if (vips !== null && fo !== null) {
        // Past drainTimeout (or sessions that finished their TLS handshake or PROXY header since): close what is
        // still on a VIP now, while the address is here for their FINs; then the VIP goes, not after the others.
        await this.evictNow(onVip, 'shutdown');
        await fo.close();
      }
      await this.waitForSessions(until - monotonicNow());
    } else if (sessions.length > 0) {
      // `sessions` counts every open client connection; `proxied` those routed to a server, `connecting` those
      // not yet spliced to a server (TLS handshake, PROXY header, CONNECT, dial: bounded by their own timeouts).
      const proxied = sessions.reduce((n, s) => (s.spliced ? n + 1 : n), 0);
      this.log.info({ sessions: sessions.length, proxied, connecting: sessions.length - proxied, drainTimeoutMs: drainTimeout }, 'draining sessions');
      await this.waitForSessions(drainTimeout);
    }
    this.destroyAllSessions();
    // The sockets close asynchronously; their sessions end (and write their access-log line) once both sides
    // have: wait for that, bounded, rather than exit with those lines unwritten.
    await this.waitForSessions(SESSION_CLOSE_WAIT_MS);
    await this.closeEverything();
    this.log.info({}, 'stopped');
  }

  /** Close every session now (a second stop signal, or past the drain). */
  destroyAllSessions(): void {
    for (const l of this.sessionHolders()) l.destroyAll();
  }

  private sessionHolders(): Listener[] {
    return [...this.listenerMap.values(), ...this.retiredListeners];
  }

  private *allSessions(): Generator<ClientSession> {
    for (const l of this.sessionHolders()) yield* l.sessions;
  }

  /** The sessions past admission (holding a connection slot): what per-source limits count. */
  private *admittedSessions(): Generator<ClientSession> {
    for (const s of this.allSessions()) if (s.admitted) yield s;
  }

  /** Open client connections, with those still sending their CONNECT. */
  activeSessions(): number {
    let n = 0;
    for (const l of this.sessionHolders()) n += l.sessions.size;
    return n;
  }

  private waitForSessions(timeoutMs: number): Promise<void> {
    return waitUntil(() => this.activeSessions() === 0, monotonicNow() + timeoutMs);
  }

  private async closeEverything(): Promise<void> {
    if (this.trackTimer !== null) clearInterval(this.trackTimer);
    this.trackTimer = null;
    this.overloadGuard.close();
    this.idleSweep.close();
    await Promise.all([...this.checkers.values()].map((c) => c.close()));
    for (const r of this.reactions.values()) r.close();
    await Promise.all([...this.listenerMap.values()].map((l) => l.stopAccepting()));
    this.admission.close();
    this.ctx.verdictWaits.close('shutting_down');
    this.ctx.connackDeadlines.close();
    if (this.failoverRuntime !== null) await this.failoverRuntime.close();
    if (this.admin !== null) await this.admin.close();
    this.metrics?.close();
  }

  // ── TelemetrySource / AdminActions ──────────────────────────────────────────────────────────────────────

  listeners(): ListenerStats[] {
    if (this.role === 'primary') return [...this.shownListeners.values()];
    return [...this.listenerMap.values()].map((l) => l.stats);
  }

  pools(): Array<{ name: string; balance: string; servers: Server[] }> {
    return [...this.poolMap.values()].map((p) => ({ name: p.name, balance: p.config.balance, servers: p.servers }));
  }

  failover() {
    const fo = this.failoverRuntime;
    if (fo === null) return null;
    return { instances: fo.status(), stats: fo.stats() };
  }

  overload(): OverloadStatus {
    if (this.role === 'primary') {
      const o = this.remoteOverload;
      return { active: o.active, memoryInUseBytes: o.inUseBytes, maxMemoryBytes: o.maxBytes };
    }
    return { active: this.overloaded(), memoryInUseBytes: this.overloadGuard.inUseBytes, maxMemoryBytes: this.config.limits.maxMemory };
  }

  private overloaded(): boolean {
    return this.role === 'primary' ? this.remoteOverload.active : this.overloadGuard.active;
  }

  ready(): { ok: true } | { ok: false; reason: string } {
    if (this.stopping) return { ok: false, reason: 'stopping' };
    if (this.overloaded()) return { ok: false, reason: 'overloaded: memory in use reached 95 % of limits.maxMemory; new connections are refused until it is below 90 %' };
    if (this.warmingUp) return { ok: false, reason: 'warming up: the listeners are bound once it ends (warmUp)' };
    if (this.awaitingVerdicts) return { ok: false, reason: 'starting: the listeners are bound once every server has its first health verdict' };
    for (const l of this.listenerMap.values()) if (!l.listening) return { ok: false, reason: `listener ${l.config.name} not bound` };
    if (this.role === 'primary') {
      // No worker serving after they had (all exited, replacements starting): said as such, not as a start.
      const counts = this.workerCounts?.();
      if (counts !== undefined && counts.serving === 0 && counts.exits > 0) return { ok: false, reason: 'no worker serving: every worker exited, replacements are starting' };
      for (const lc of this.config.listeners) if (!this.remoteListeners.has(lc.name)) return { ok: false, reason: `listener ${lc.name} not bound by the workers yet` };
    } else if (!this.listenersBound) {
      // Before start() has bound them the map above is empty (a reload changes it in steps: not judged by it).
      return { ok: false, reason: 'starting: the listeners are not bound yet' };
    }
    for (const p of this.servedPools()) {
      const intake = poolIntake(p.servers);
      if (intake === 'open') continue;
      if (intake === 'no_server_up') {
        // A server in maintenance is not probed (its health is unknown meanwhile): say so, it is the likely reason.
        const maint = p.servers.filter((s) => s.admin === 'maint').map((s) => s.name);
        return { ok: false, reason: `pool ${p.name} has no server up${maint.length > 0 ? ` (in maintenance: ${maint.join(', ')})` : ''}` };
      }
      return { ok: false, reason: `pool ${p.name} has no server taking new sessions (every server up is drained, in maintenance or of weight 0)` };
    }
    return { ok: true };
  }

  /**
   * A process with listeners that cannot open a descriptor cannot accept (descriptor-check.ts says why nothing else
   * tells): its listeners count as not accepting (failover `track.listeners`: FAULT) until it can again.
   */
  private checkDescriptors(): void {
    if (this.role === 'primary' || this.listenerMap.size === 0) return;
    const shortage = descriptorShortage();
    // Every tick: a listener a reload added meanwhile is marked too.
    for (const l of this.listenerMap.values()) l.outOfDescriptors = shortage !== null;
    if (shortage === this.descriptorShortage) return;
    this.descriptorShortage = shortage;
    const listeners = [...this.listenerMap.keys()];
    if (shortage !== null) this.log.error({ code: shortage, listeners }, 'out of file descriptors: the listeners cannot accept');
    else this.log.info({ listeners }, 'file descriptors available again: the listeners accept');
  }

  /** The health checker logs a pool without a server up; this, one whose servers up take no new session. */
  private checkIntake(): void {
    if (this.role !== 'worker') this.intakeAlert.check(this.servedPools(), (pool) => this.checkers.get(pool)?.noServerUpSaid ?? false);
  }

  /**
   * The pools some listener sends clients to. A pool no listener uses (`check` warns of it) serves nobody: its
   * outage must not take a working host out of its load balancer's rotation (/readyz) or lower its VRRP priority.
   */
  private *servedPools(): Iterable<Pool> {
    const used = new Set(this.config.listeners.map((l) => l.pool));
    for (const p of this.poolMap.values()) if (used.has(p.name)) yield p;
  }

  /** A probe of `server` now, not at its interval: by the primary's checker when this is a worker. */
  private probeSoon(server: Server): void {
    if (this.link !== null) this.link.probeRequest(server);
    else this.checkers.get(server.pool)?.probeNow(server);
  }

  /** An immediate probe of one server (a worker's dial to it failed). */
  probeNow(pool: string, server: string): void {
    const s = this.poolMap.get(pool)?.server(server);
    if (s !== undefined) this.checkers.get(pool)?.probeNow(s);
  }

  setServerAdmin(pool: string, server: string, state: AdminState): boolean {
    const s = this.poolMap.get(pool)?.server(server);
    if (s === undefined) return false;
    const was = s.admin;
    const changed = was !== state;
    s.setAdmin(state);
    // `was`: a repeated action (idempotent: no eviction, no save) is told apart from a change (an admin audit).
    this.log.info({ pool, server, admin: state, was }, 'server admin state set');
    if (changed) {
      this.saveAdminStates();
      this.checkIntake();
    }
    return true;
  }

  private saveAdminStates(): void {
    const file = this.config.admin.stateFile;
    if (file !== null && this.role !== 'worker') saveAdminStates(file, this.poolMap, this.log);
  }
}
