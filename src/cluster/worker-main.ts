/**
 * Entry point of a proxy worker process (workers > 1). Receives its config from the primary, runs the
 * listeners and sessions, applies the server states the primary decides (so every worker routes a client
 * ID the same way), and reports counters back every SNAPSHOT_MS.
 */
import cluster from 'node:cluster';
import type { Server } from '../balancer/server.js';
import { App, isReloadWhileStopping, type PreparedReload, type WorkerLink } from '../app.js';
import { ErrorCodes, MqttLbError } from '../errors.js';
import { createLogger, type Logger } from '../telemetry/logger.js';
import { LoopLagSampler } from '../telemetry/loop-lag.js';
import { PROCESS_METRICS_MS, createProcessRegistry } from '../telemetry/process-metrics.js';
import { installTestHooks } from '../test-hooks.js';
import { WarmUp } from '../warm-up.js';
import type { ToPrimary, ToWorker, ListenerSnapshot, ServerSnapshot, ServerStateWire } from './messages.js';
import { applyServerStates } from './server-states.js';
import { ClientIdExchange } from './client-id-exchange.js';
import { takenOverClientId } from '../proxy/session.js';
import { workerShare } from './share.js';
import { ignoreForeignSignals } from '../foreign-signals.js';

const SNAPSHOT_MS = 250;
/** How long a worker whose primary has gone waits for its last log line to be written. */
const PRIMARY_GONE_FLUSH_MS = 1_000;

function send(m: ToPrimary): void {
  // With a callback, a failed send (the primary has gone: EPIPE) is not thrown as an unhandled 'error'; the
  // 'disconnect' handler stops this worker.
  if (process.connected) process.send?.(m, undefined, undefined, ignoreSendError);
}

function ignoreSendError(): void {}

class PrimaryLink implements WorkerLink {
  connects: Array<[string, string, number]> = [];
  readonly clientIdSharing = new ClientIdExchange((events) => send({ t: 'client-ids', events }));
  probeRequest(server: Server): void {
    send({ t: 'probe', pool: server.pool, server: server.name });
  }
  connectSample(server: Server, seconds: number): void {
    this.connects.push([server.pool, server.name, seconds]);
  }
}

/** The proxy's own event loop: what the failover heartbeat is protected from, and what operators watch. */
const loopLag = new LoopLagSampler();
/** This worker's process and Node.js metrics, combined by the primary with the others' (process-metrics.ts). */
const processRegistry = createProcessRegistry(loopLag);

function sendProcessMetrics(): void {
  processRegistry.getMetricsAsJSON().then(
    (metrics) => send({ t: 'process-metrics', metrics }),
    () => {}, // a collector that failed: the primary keeps the previous values
  );
}

function snapshot(app: App, link: PrimaryLink): ToPrimary {
  const listeners: ListenerSnapshot[] = [];
  for (const l of app.listenerMap.values()) {
    const s = l.stats;
    listeners.push({ name: s.name, bind: s.bind, tls: s.tls, listening: l.listening, acceptHealthy: l.acceptHealthy, active: s.active, outcomes: { ...s.outcomes }, rejected: [...s.rejected], closed: [...s.closed], told: [...s.told] });
  }
  const servers: ServerSnapshot[] = [];
  for (const p of app.poolMap.values()) {
    for (const s of p.servers) servers.push({ pool: p.name, server: s.name, sessions: s.sessions.size, bytesIn: s.bytesIn(), bytesOut: s.bytesOut(), connectErrors: s.connectErrors });
  }
  const connects = link.connects;
  link.connects = [];
  const guard = app.overloadGuard;
  return { t: 'snapshot', listeners, servers, connects, lag: loopLag.takeWindow(), overload: { active: guard.active, inUseBytes: guard.inUseBytes } };
}

function main(): void {
  let app: App | null = null;
  let log: Logger | null = null;
  let workers = 1;
  let index = 0;
  /** Reloads prepared here and waiting for the primary's commit or abort. */
  const prepared = new Map<number, PreparedReload>();
  /**
   * Reload steps run one after the other, in the order the primary sent them: a commit finishes (its new
   * listeners are in place) before the next prepare looks at what is bound, and a prepare has answered before
   * its commit or abort arrives (the primary waits for every answer).
   */
  let reloadSteps: Promise<void> = Promise.resolve();
  /**
   * The primary's latest server states (a full snapshot each time). Applied on arrival, and again after each
   * reload step: a step that moves a server resets it to unknown here (Pool.reconfigure), and a snapshot that
   * arrived while the step waited its turn must not be overtaken by that reset for good.
   */
  let lastStates: ServerStateWire[] | null = null;
  const applyStates = (): void => {
    if (app === null || lastStates === null) return;
    applyServerStates(app.poolMap, lastStates);
  };
  const inOrder = (step: () => Promise<void>): void => {
    // The chain must survive a failing step: a rejected link would skip every later step.
    reloadSteps = reloadSteps
      .then(step)
      .then(applyStates)
      .catch((err: unknown) => app?.log.error({ err }, 'reload step failed in this worker'));
  };
  const link = new PrimaryLink();
  /** VIP releases under way (release-vips), by id: cancelled when the primary is master again. */
  const releases = new Map<number, AbortController>();
  let timer: NodeJS.Timeout | null = null;
  let processTimer: NodeJS.Timeout | null = null;
  let warmUp: WarmUp | null = null;
  /** A stop came while starting ('warm-up-stop', or 'stop' itself): the start binds nothing (App.start's abandon). */
  let startAbandoned = false;
  /** App.start has settled: from then on a 'stop' stops the App; before, it waits for the start to settle. */
  let started = false;
  /** A 'stop' that came while starting, applied once the start has settled. */
  let stopWhenStarted: { evictRate: number | null } | null = null;
  const abandonStart = (): void => {
    startAbandoned = true;
    void warmUp?.close();
    app?.cutStartShort();
  };
  // The primary coordinates stopping; a terminal's Ctrl-C reaches the whole process group.
  process.on('SIGINT', () => {});
  process.on('SIGTERM', () => {});
  process.on('SIGHUP', () => {});
  // And SIGUSR1 (Node's inspector), SIGUSR2, SIGQUIT, SIGALRM: ignored; the primary, which gets them too, says so.
  ignoreForeignSignals({ silent: true });

  const stop = (evictRate: number | null): void => {
    if (app === null) process.exit(0);
    if (timer !== null) clearInterval(timer);
    if (processTimer !== null) clearInterval(processTimer);
    void app.stop(evictRate === null ? {} : { evictRate }).then(() => {
      send(snapshot(app!, link));
      link.clientIdSharing.flush();
      link.clientIdSharing.close();
      // The access-log lines of the last sessions are still queued (log-stream.ts): bounded wait for them.
      log!.flush(() => process.exit(0));
    });
  };

  // The primary gone without a stop (SIGKILL, a crash): node:cluster exits a worker at once, silently and with
  // status 0, right after this event. Say so first, as HAProxy's workers do when their master dies; the
  // sessions go with the process (no one is left to restart or report to it, and the next start needs the port).
  let primaryGone = false;
  cluster.worker?.on('disconnect', () => {
    const worker = cluster.worker;
    if (worker === undefined || worker.exitedAfterDisconnect === true) return;
    if (log === null) process.exit(1);
    worker.exitedAfterDisconnect = true; // held until the line is out
    primaryGone = true;
    log.error({ sessions: app?.activeSessions() ?? 0 }, 'primary process gone: worker exiting, its sessions closed');
    setTimeout(() => process.exit(1), PRIMARY_GONE_FLUSH_MS);
    log.flush(() => process.exit(1));
  });
  process.on('disconnect', () => {
    if (!primaryGone) stop(null);
  });
  process.on('message', (m: ToWorker) => {
    switch (m.t) {
      case 'config': {
        workers = m.workers;
        index = m.index;
        log = createLogger(m.config.log).child({ worker: m.index });
        installTestHooks(log);
        app = new App(workerShare(m.config, workers, index), log, 'worker', link);
        const runner = m.warmUp && !startAbandoned && app.config.warmUp > 0 ? new WarmUp(app.config, log) : null;
        warmUp = runner;
        if (startAbandoned) app.cutStartShort();
        const abandon = (): boolean => startAbandoned;
        app.start(runner === null ? { abandon } : { beforeListeners: () => runner.run(), abandon }).then(
          (served) => {
            started = true;
            // Not served: a stop came while starting and nothing was bound, so no worker serves for a moment after
            // the stop signal (operations.md, warm-up). It stops with the primary's 'stop' (run.ts sends it next),
            // or now if that came already.
            send({ t: served ? 'ready' : 'abandoned' });
            if (stopWhenStarted !== null) {
              // Bound or not: it stops now, as its siblings do.
              stop(stopWhenStarted.evictRate);
              return;
            }
            if (!served) return;
            // The warm-up kept the loop busy before any client could come: not lag anyone met.
            if (runner !== null) loopLag.restart();
            send(snapshot(app!, link));
            timer = setInterval(() => send(snapshot(app!, link)), SNAPSHOT_MS);
            sendProcessMetrics();
            processTimer = setInterval(sendProcessMetrics, PROCESS_METRICS_MS);
          },
          (err: unknown) => {
            send({ t: 'fatal', message: (err as Error).message, code: err instanceof MqttLbError ? err.code : null });
            setImmediate(() => process.exit(2));
          },
        );
        return;
      }
      case 'warm-up-stop':
        abandonStart();
        return;
      case 'states': {
        lastStates = m.states;
        applyStates();
        return;
      }
      case 'reload': {
        if (app === null) return;
        const running = app;
        const { id, config } = m;
        // Phase one: bind what the new file needs, apply nothing yet; the primary decides for all workers.
        inOrder(async () => {
          try {
            prepared.set(id, await running.prepareReload(workerShare(config, workers, index)));
            send({ t: 'reload-prepared', id, error: null });
          } catch (err) {
            if (isReloadWhileStopping(err)) running.log.warn({ code: ErrorCodes.RELOAD_WHILE_STOPPING }, 'config reload ignored: stopping');
            else running.log.error({ err }, 'config reload failed in this worker: keeping the running config');
            send({ t: 'reload-prepared', id, error: err instanceof Error ? err.message : String(err) });
          }
        });
        return;
      }
      case 'reload-commit':
      case 'reload-abort': {
        const { id, t } = m;
        inOrder(async () => {
          const p = prepared.get(id);
          prepared.delete(id);
          try {
            // Undefined: this worker's prepare failed, nothing to settle.
            if (p !== undefined) await (t === 'reload-commit' ? p.commit() : p.abort());
          } catch (err) {
            // A stop that began after the prepare wins (App.prepareReload's commit): nothing went wrong.
            if (isReloadWhileStopping(err)) app?.log.warn({ code: ErrorCodes.RELOAD_WHILE_STOPPING }, 'config reload ignored: stopping');
            else app?.log.error({ err }, 'config reload: could not settle in this worker');
          }
          send({ t: 'reload-settled', id });
        });
        return;
      }
      case 'reconfigure': {
        if (app === null) return;
        const running = app;
        const { config } = m;
        inOrder(async () => {
          try {
            await running.reload(workerShare(config, workers, index));
          } catch (err) {
            running.log.error({ err }, 'config catch-up failed in this worker: keeping the running config');
          }
        });
        return;
      }
      case 'destroy':
        app?.destroyAllSessions();
        return;
      case 'release-vips': {
        const { id } = m;
        const abort = new AbortController();
        releases.set(id, abort);
        const done = (): void => {
          releases.delete(id);
          send({ t: 'vips-released', id });
        };
        if (app === null) done();
        else
          app.releaseVipSessions(new Set(m.vips), abort.signal, m.evictRate, m.spreadMs).then(done, (err: unknown) => {
            app?.log.error({ err }, 'closing the VIP sessions failed in this worker');
            done();
          });
        return;
      }
      case 'takeovers':
        // Another worker's newer session of these client IDs runs on another server now [MQTT-3.1.4-3].
        for (const { pool, id, holder, acceptedFirst, to } of link.clientIdSharing.displaced(m.orders)) {
          if (log?.isLevelEnabled('debug') === true) {
            log.debug({ pool, from: holder.server?.name, to, clientId: takenOverClientId(holder, id) }, 'client ID connected again on another server in another worker: closing its older session');
          }
          // Accepted before the newer one (a 5.0 one gets the grace for its broker's DISCONNECT 0x8E), or reported after
          // it: waiting for its CONNACK when the newer one was accepted, closed at once as within a worker (a re-audit).
          holder.takenOver(acceptedFirst);
        }
        return;
      case 'release-vips-cancel':
        releases.get(m.id)?.abort();
        return;
      case 'stop':
        if (app !== null && !started) {
          // Starting (a replacement for a worker that died, when the stop came): stop once the start has settled,
          // binding nothing if it can still be cut short. Stopping the App now would race its start, which would
          // then bind its listeners and serve until the primary's kill.
          stopWhenStarted = { evictRate: m.evictRate };
          abandonStart();
          return;
        }
        stop(m.evictRate);
        return;
    }
  });
  send({ t: 'hello' });
}

main();
