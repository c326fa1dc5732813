/**
 * HealthChecker: the probe loops of one pool. Per server: one loop, never two probes at once, the first
 * probe at start, then every `health.interval` (± jitter, measured start to start; `fastInterval` while a verdict
 * is in the making and `downInterval` while down: probe-interval.ts); each result goes
 * through rise/fall into `server.setHealth` and `server.lastCheck`. Admin `maint` pauses a server's loop
 * (no probes) and forgets its health, so on return to ready the first probe decides again.
 * `health.type: none` probes nothing and holds every server up.
 */
import os from 'node:os';
import type { Logger } from 'pino';
import { serverPlace, type CheckResult, type HealthState, type Server, type ServerStateChange } from '../balancer/server.js';
import { jitteredDelay } from './jitter.js';
import type { CheckedPool } from './pool-view.js';
import { errorDetail, type ProbeOutcome } from './probe-outcome.js';
import { probeInterval } from './probe-interval.js';
import { probeServer, type ServerProbe } from './probe-server.js';
import { initialRiseFall, nextRiseFall, type RiseFallState } from './rise-fall.js';
import { monotonicNow } from '../monotonic-clock.js';
import { DEFAULT_RECHECK_GRACE_MS } from './recheck-grace.js';
import { urlForLog } from '../config/net-syntax.js';
import type { ServerConfig } from '../config/types.js';

/**
 * A probe that failed for one of these never reached the server: this process is out of descriptors or memory,
 * or this host of ephemeral ports (EADDRNOTAVAIL: the sessions hold them all).
 */
const LOCAL_ERRORS = new Set(['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM', 'EADDRNOTAVAIL']);

/** A probe that failed for one of these (or timed out) may have been lost on this host's own path to the server. */
const PATH_ERRORS = new Set(['EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN', 'EHOSTDOWN']);

export interface HealthCheckerDeps {
  log: Logger;
  /** Wall clock for `lastCheck.at`, which people read (default Date.now). */
  now?: () => number;
  /** Monotonic clock for the probes' spacing (default monotonicNow: a wall-clock step must not delay a probe). */
  clock?: () => number;
  /** Every completed probe (not the cancelled ones): feeds the health metrics. */
  onResult?: (server: Server, r: { result: CheckResult; durationMs: number }) => void;
  /** This host's name for the default MQTT probe client ID (default os.hostname()). */
  hostname?: string;
  /** [0, 1) source for the interval jitter (default Math.random). */
  random?: () => number;
  /** Replaces the real probes (tests). */
  probe?: ServerProbe;
}

/** probeNow() runs an extra probe no sooner than this after the previous one started (or the interval, if shorter). */
export const PROBE_NOW_MIN_GAP_MS = 250;

class ServerLoop {
  riseFall: RiseFallState;
  timer: NodeJS.Timeout | null = null;
  dueAt = Number.POSITIVE_INFINITY;
  /** The running probe, identified by its controller. */
  current: AbortController | null = null;
  inFlight: Promise<void> | null = null;
  lastStartAt = Number.NEGATIVE_INFINITY;
  /** clock() when riseFall last changed its health (a verdict, not a count). */
  verdictAt = Number.NEGATIVE_INFINITY;
  /** probeNow() callers waiting for the next probe to finish. */
  waiters: Array<() => void> = [];
  /** Admin maint: no probes. */
  paused = false;
  /**
   * settled() callers waiting for a verdict the recheck after an outage is still making (its probe runs, or one that
   * failed within the recheck's window is to be made again); null: no such verdict awaited.
   */
  verdictWaiters: Array<() => void> | null = null;

  /**
   * The server's config this loop probes by: a reload that changes where it is probed (serverPlace, both read under
   * the new probe type, as Pool.reconfigure does) starts a new loop.
   */
  config: ServerConfig;

  constructor(readonly server: Server) {
    this.riseFall = initialRiseFall(server.health);
    this.config = server.config;
  }
}

export class HealthChecker {
  private pool: CheckedPool;
  private readonly loops = new Map<Server, ServerLoop>();
  private started = false;
  private closed = false;
  /** `pool has no server up` was logged for the current outage. */
  private noServerUpLogged = false;

  /** `pool has no server up` was logged for the current outage (IntakeAlert does not say it again). */
  get noServerUpSaid(): boolean {
    return this.noServerUpLogged;
  }
  private closing: Promise<void> | null = null;
  /** clock() when this host's own network went out (outageBegan), until recheckAfterOutage; null: none noted. */
  private outageSince: number | null = null;
  /** clock() until which a probe may fail on this host's path still settling after an outage (recheckAfterOutage). */
  private pathSettlesUntil = Number.NEGATIVE_INFINITY;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly clock: () => number;
  private readonly random: () => number;
  private readonly probe: ServerProbe;

  constructor(
    pool: CheckedPool,
    private readonly deps: HealthCheckerDeps,
  ) {
    this.pool = pool;
    this.log = deps.log;
    this.now = deps.now ?? Date.now;
    this.clock = deps.clock ?? monotonicNow;
    this.random = deps.random ?? Math.random;
    const context = { hostname: deps.hostname ?? os.hostname() };
    this.probe = deps.probe ?? ((server, config, signal) => probeServer(server, config, context, signal));
  }

  /** Begin probing (first probe of every server at once). Idempotent. */
  start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    this.sync();
  }

  /**
   * A reload: follow the pool's new server list and config. `healthBefore`: each server's health before the pool
   * took the new config, which already holds its servers up when health checks are turned off (Pool.reconfigure):
   * the change is logged from what it was.
   */
  reconfigure(pool: CheckedPool, healthBefore?: ReadonlyMap<Server, HealthState>): void {
    if (this.closed) return;
    this.pool = pool;
    if (!this.started) return;
    this.sync(healthBefore);
    // A shortened interval applies now rather than after the wait armed under the old one.
    const now = this.clock();
    for (const loop of this.loops.values()) {
      if (loop.timer !== null && loop.dueAt - now > probeInterval(loop.riseFall, pool.config.health)) this.scheduleNext(loop);
    }
  }

  /**
   * An extra probe now (a session's dial to this server failed). Coalesced: joins a running probe, and
   * never starts one sooner than PROBE_NOW_MIN_GAP_MS after the previous start. Resolves when that
   * probe has been recorded (at once if the server is not being probed).
   */
  probeNow(server: Server): Promise<void> {
    const loop = this.loops.get(server);
    if (!loop || loop.paused || this.closed) return Promise.resolve();
    if (loop.inFlight) return loop.inFlight;
    const waiting = new Promise<void>((resolve) => loop.waiters.push(resolve));
    const now = this.clock();
    const earliest = this.soonestNextStart(loop);
    if (earliest <= now) this.runProbe(loop);
    else if (loop.dueAt > earliest) this.arm(loop, earliest - now);
    return waiting;
  }

  /**
   * This host's own network is out (failover entered FAULT: the interface lost its carrier): verdicts from now on
   * may be about this host, not the servers. Noted until recheckAfterOutage. Idempotent.
   */
  outageBegan(): void {
    if (!this.closed && this.outageSince === null) this.outageSince = this.clock();
  }

  /**
   * The outage is over: every server whose verdict the outage may have made is probed afresh, now. A server marked
   * down during it takes its next result at once, as at start (the outage would otherwise hold it out for `rise`
   * probes), and failures counted against a server still up are forgotten; a server down from before keeps its
   * rise count. A probe still running from before is abandoned without a verdict (its SYN may have gone nowhere,
   * and its timeout would count a failure against a server that is fine), also on a server that is up. For `graceMs`
   * from now (recheck-grace.ts: the neighbour lookups begun during the outage fail meanwhile, and the connects queued
   * behind them), a probe of any server that fails as if this host's path were still out (a timeout before a
   * connection, no route, no local address) is made again rather than counted: a failover test saw a recheck probe
   * get EHOSTUNREACH 3 ms after the link was back, mark the pool's brokers down and the VIP move away and back.
   * Returns how many probes it started; 0 when no outage was noted (several failover instances leave FAULT together).
   */
  recheckAfterOutage(graceMs = DEFAULT_RECHECK_GRACE_MS): number {
    const since = this.outageSince;
    this.outageSince = null;
    if (since === null || this.closed || !this.started) return 0;
    this.pathSettlesUntil = this.clock() + graceMs;
    let started = 0;
    for (const loop of this.loops.values()) {
      if (loop.paused) continue;
      const rf = loop.riseFall;
      if (rf.health === 'down' && loop.verdictAt >= since) loop.riseFall = initialRiseFall('unknown');
      else if (rf.health === 'up' && rf.fails > 0) loop.riseFall = initialRiseFall('up');
      else if (rf.health === 'up' && loop.current === null) continue;
      loop.current?.abort();
      loop.verdictWaiters ??= [];
      this.runProbe(loop);
      started++;
    }
    return started;
  }

  /**
   * Resolves once every probe running now has been recorded (right after start(): every server's first verdict) and
   * every verdict a recheck after an outage is making has come (its window, then up to two probe timeouts: the
   * last probe started in the window and the one made again after it), or after `boundMs`, whichever is first. Never
   * rejects. Probes end by their own timeout; the bound is a guard.
   */
  settled(boundMs: number): Promise<void> {
    const running: Array<Promise<void>> = [];
    for (const loop of this.loops.values()) {
      const waiters = loop.verdictWaiters;
      if (waiters !== null) running.push(new Promise<void>((resolve) => waiters.push(resolve)));
      else if (loop.inFlight !== null) running.push(loop.inFlight);
    }
    if (running.length === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const guard = setTimeout(resolve, boundMs);
      void Promise.all(running).then(() => {
        clearTimeout(guard);
        resolve();
      });
    });
  }

  /** Stop all loops and cancel running probes; resolves when they have settled. Idempotent. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closed = true;
    const settling: Promise<void>[] = [];
    for (const loop of [...this.loops.values()]) {
      if (loop.inFlight) settling.push(loop.inFlight);
      this.dropLoop(loop);
    }
    // An HTTP probe aborted here destroys its client at once, a connect in progress included (http.ts).
    this.closing = Promise.all(settling).then(() => undefined);
    return this.closing;
  }

  /** Bring the loops in line with the pool's servers and health type. */
  private sync(healthBefore?: ReadonlyMap<Server, HealthState>): void {
    const servers = new Set(this.pool.servers);
    const probing = this.pool.config.health.type !== 'none';
    for (const loop of [...this.loops.values()]) {
      if (!probing || !servers.has(loop.server)) {
        this.dropLoop(loop);
        continue;
      }
      // Under one type for both: a reload from one probe type to another alone keeps the verdict, and the new probes
      // count from it (an audit: `mqtt` to `http` dropped the verdict of every server with a healthUrl, which then
      // went down at its first failed probe, without `fall`).
      const type = this.pool.config.health.type;
      const [was, place] = [serverPlace(loop.config, type), serverPlace(loop.server.config, type)];
      loop.config = loop.server.config;
      if (was !== place) {
        // A reload moved the server (another address or healthUrl): the old verdict says nothing about the new
        // place. No new sessions until its first probe, at once, says up (its sessions at the old address stay:
        // reactions.ts does not evict them for the new address's health).
        this.dropLoop(loop);
        this.log.info({ pool: this.pool.name, server: loop.server.name, from: urlForLog(was), to: urlForLog(place) }, 'server moved: health checked anew');
        loop.server.restartVerdict();
        loop.server.lastCheck = null;
      }
    }
    for (const server of servers) {
      if (!probing) this.holdUp(server, healthBefore?.get(server) ?? server.health);
      else if (!this.loops.has(server)) this.addLoop(server);
    }
    // Held up (`none`): the outage, if one was said, is over; the next one is said again (a health audit: after a
    // reload to `none` and back with the broker still dead, `pool has no server up` was not said).
    if (!probing && servers.size > 0) this.outageOver(null);
  }

  /** The outage `pool has no server up` said, if one was, is over: its end said too, once. */
  private outageOver(server: Server | null): void {
    if (this.noServerUpLogged) this.log.info({ pool: this.pool.name, server: server?.name ?? null }, 'pool has a server up again');
    this.noServerUpLogged = false;
  }

  private addLoop(server: Server): void {
    const loop = new ServerLoop(server);
    this.loops.set(server, loop);
    server.on('state', this.onServerState);
    if (server.admin === 'maint') loop.paused = true;
    else this.runProbe(loop);
  }

  private dropLoop(loop: ServerLoop): void {
    this.loops.delete(loop.server);
    loop.server.off('state', this.onServerState);
    this.disarm(loop);
    loop.current?.abort();
    this.releaseWaiters(loop);
    this.releaseVerdictWaiters(loop);
  }

  /** `health.type: none`: the server counts as up, always. `from`: its health before (a reload may have set it up). */
  private holdUp(server: Server, from: HealthState): void {
    if (server.health !== 'up') server.setHealth('up');
    if (from === 'up') return;
    this.log.info({ pool: this.pool.name, server: server.name, from, to: 'up', result: null, detail: 'health checks disabled' }, 'server state changed');
  }

  private readonly onServerState = (change: ServerStateChange): void => {
    const loop = this.loops.get(change.server);
    if (!loop || this.closed) return;
    const inMaint = change.server.admin === 'maint';
    if (inMaint && !loop.paused) {
      loop.paused = true;
      this.disarm(loop);
      loop.current?.abort();
      this.releaseWaiters(loop);
      this.releaseVerdictWaiters(loop);
      // Health seen before maintenance says nothing about after it; hidden by `maint` meanwhile.
      loop.riseFall = initialRiseFall('unknown');
      change.server.setHealth('unknown');
    } else if (!inMaint && loop.paused) {
      loop.paused = false;
      this.runProbe(loop);
    }
  };

  private runProbe(loop: ServerLoop): void {
    this.disarm(loop);
    const controller = new AbortController();
    loop.current = controller;
    loop.lastStartAt = this.clock();
    let probing: Promise<ProbeOutcome>;
    try {
      probing = this.probe(loop.server, this.pool.config, controller.signal);
    } catch (err) {
      probing = Promise.reject(err);
    }
    const inFlight = probing
      .catch((err: unknown): ProbeOutcome => {
        this.log.error({ err, pool: this.pool.name, server: loop.server.name }, 'health probe threw');
        return { result: 'error', durationMs: 0, detail: errorDetail(err) };
      })
      .then((outcome) => this.finishProbe(loop, controller, outcome));
    if (loop.current === controller) loop.inFlight = inFlight;
  }

  private finishProbe(loop: ServerLoop, controller: AbortController, outcome: ProbeOutcome): void {
    if (loop.current !== controller) return; // superseded after an abort
    loop.current = null;
    loop.inFlight = null;
    if (controller.signal.aborted || this.closed || loop.paused || this.loops.get(loop.server) !== loop) {
      this.releaseWaiters(loop);
      return;
    }
    const verdict = this.record(loop, outcome);
    this.releaseWaiters(loop);
    if (verdict) {
      this.releaseVerdictWaiters(loop);
      this.scheduleNext(loop);
      return;
    }
    // Made again soon, as probeNow() would: this host's path to the server may still be settling.
    loop.verdictWaiters ??= [];
    this.arm(loop, Math.max(0, this.soonestNextStart(loop) - this.clock()));
  }

  /** The soonest an extra probe may start: PROBE_NOW_MIN_GAP_MS (or the interval, if shorter) after the last start. */
  private soonestNextStart(loop: ServerLoop): number {
    return loop.lastStartAt + Math.min(PROBE_NOW_MIN_GAP_MS, probeInterval(loop.riseFall, this.pool.config.health));
  }

  /**
   * Whether `outcome` failed as a probe does whose packets never left this host or never came back, or that could not
   * run here (LOCAL_ERRORS: EADDRNOTAVAIL while this host's address comes back, say).
   */
  private static failedOnPath(outcome: ProbeOutcome): boolean {
    // A timeout with the connection established (no CONNACK, no HTTP answer) is the server's: the path worked.
    if (outcome.result === 'timeout') return outcome.connected !== true;
    const detail = outcome.detail ?? '';
    return outcome.result === 'error' && (PATH_ERRORS.has(detail) || LOCAL_ERRORS.has(detail));
  }

  /** Records `outcome`; returns false when it is no verdict for the moment (this host's path may still be settling). */
  private record(loop: ServerLoop, outcome: ProbeOutcome): boolean {
    const server = loop.server;
    server.lastCheck = { result: outcome.result, at: this.now(), durationMs: outcome.durationMs };
    if (this.deps.onResult) {
      try {
        this.deps.onResult(server, { result: outcome.result, durationMs: outcome.durationMs });
      } catch (err) {
        this.log.error({ err, pool: this.pool.name, server: server.name }, 'health result hook threw');
      }
    }
    if (loop.lastStartAt < this.pathSettlesUntil && HealthChecker.failedOnPath(outcome)) {
      this.log.debug({ pool: this.pool.name, server: server.name, result: outcome.result, detail: outcome.detail ?? null }, "health probe failed while this host's network comes back: no verdict, probed again");
      return false;
    }
    if (outcome.result === 'error' && LOCAL_ERRORS.has(outcome.detail ?? '')) {
      // This host could not open a socket: says nothing about the server, so no rise/fall step (issue 3: local
      // errors never count against a server; a host out of descriptors or ports for minutes must not mark every
      // server down and, with onServerDown: shutdown, close every session). The price: a server that only
      // this host cannot reach (an IPv6 address with IPv6 turned off) keeps its last verdict, with this warning
      // at every probe.
      this.log.warn({ pool: this.pool.name, server: server.name, detail: outcome.detail }, 'health probe could not run here: no verdict');
      return true;
    }
    const before = loop.riseFall.health;
    loop.riseFall = nextRiseFall(loop.riseFall, outcome.result === 'ok', this.pool.config.health);
    const to = loop.riseFall.health;
    if (to !== before) loop.verdictAt = this.clock();
    const from = server.health;
    if (to === from) return true;
    server.setHealth(to);
    const line = { pool: this.pool.name, server: server.name, from, to, result: outcome.result, detail: outcome.detail ?? null };
    // A server lost is worth a warning (HAProxy alerts on it too); one coming up is routine.
    if (to === 'down') this.log.warn(line, 'server state changed');
    else this.log.info(line, 'server state changed');
    // Once per outage: from the first verdict that leaves no server up until one is up again. At start, not
    // before every server probed has had its first verdict (a dead server answers before a live one).
    const anyUp = this.pool.servers.some((s) => s.health === 'up');
    const firstVerdictsDue = this.pool.servers.some((s) => s.health === 'unknown' && s.admin !== 'maint');
    if (anyUp) {
      // Said, so that an alert on the error line has an end. Not "served": the server up may be drained (then
      // IntakeAlert says `pool takes no new sessions`, and its own end when the pool serves again).
      this.outageOver(server);
    } else if (to === 'down' && !firstVerdictsDue && !this.noServerUpLogged) {
      this.noServerUpLogged = true;
      this.log.error({ pool: this.pool.name }, 'pool has no server up: its clients are refused (CONNACK server unavailable)');
    }
    return true;
  }

  private scheduleNext(loop: ServerLoop): void {
    const sinceStart = this.clock() - loop.lastStartAt;
    this.arm(loop, Math.max(0, jitteredDelay(probeInterval(loop.riseFall, this.pool.config.health), this.random) - sinceStart));
  }

  private arm(loop: ServerLoop, delayMs: number): void {
    this.disarm(loop);
    loop.dueAt = this.clock() + delayMs;
    loop.timer = setTimeout(this.onTimer, delayMs, loop);
    loop.timer.unref();
  }

  private disarm(loop: ServerLoop): void {
    if (loop.timer !== null) clearTimeout(loop.timer);
    loop.timer = null;
    loop.dueAt = Number.POSITIVE_INFINITY;
  }

  private readonly onTimer = (loop: ServerLoop): void => {
    loop.timer = null;
    loop.dueAt = Number.POSITIVE_INFINITY;
    if (this.closed || loop.paused || loop.inFlight || this.loops.get(loop.server) !== loop) return;
    this.runProbe(loop);
  };

  private releaseVerdictWaiters(loop: ServerLoop): void {
    const waiters = loop.verdictWaiters;
    loop.verdictWaiters = null;
    if (waiters !== null) for (const resolve of waiters) resolve();
  }

  private releaseWaiters(loop: ServerLoop): void {
    if (loop.waiters.length === 0) return;
    const waiters = loop.waiters;
    loop.waiters = [];
    for (const resolve of waiters) resolve();
  }
}
